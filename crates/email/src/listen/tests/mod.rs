//! Listener tests over real TCP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dialogue;
mod limits;
mod tls;

use super::{Envelope, ListenerSettings, MailSink, Protocol, RcptVerdict, Reply, serve};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Accepts `*@support.test`; answers DATA with `replies` (per recipient,
/// 250 for the rest) and keeps what it got.
#[derive(Default)]
pub(super) struct TestSink {
    pub replies: Mutex<Vec<Reply>>,
    pub got: Mutex<Vec<(Envelope, Vec<u8>)>>,
}

impl TestSink {
    pub fn with_replies(replies: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(replies),
            ..Self::default()
        })
    }

    pub fn got(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.got.lock().unwrap().clone()
    }
}

impl MailSink for TestSink {
    fn recipient(&self, address: &str) -> RcptVerdict {
        if address.ends_with("@support.test") {
            RcptVerdict::Accept
        } else if address.starts_with("busy@") {
            RcptVerdict::Refuse(Reply::new(450, "4.2.1", "busy"))
        } else {
            RcptVerdict::Unknown
        }
    }

    fn deliver<'a>(&'a self, envelope: &'a Envelope, data: &'a [u8]) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            self.got
                .lock()
                .unwrap()
                .push((envelope.clone(), data.to_vec()));
            let configured = self.replies.lock().unwrap().clone();
            (0..envelope.recipients.len())
                .map(|i| {
                    configured
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| Reply::ok("stored"))
                })
                .collect()
        })
    }
}

pub(super) fn settings(protocol: Protocol) -> ListenerSettings {
    ListenerSettings {
        name: "test".into(),
        protocol,
        hostname: "mx.test".into(),
        max_message_bytes: 10_000,
        max_recipients: 100,
        command_timeout: Duration::from_secs(10),
        max_sessions: 10,
        max_session: Duration::from_secs(60),
        tls: None,
        require_tls: false,
        budget: ListenerSettings::budget(1 << 20),
    }
}

/// A running listener.
pub(super) struct Server {
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub(super) async fn start(settings: ListenerSettings, sink: Arc<TestSink>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, Arc::new(settings), sink, shutdown.clone()));
    Server {
        address,
        shutdown,
        task,
    }
}

/// A line-oriented client; every read is bounded by 5 s.
pub(super) struct Client<S> {
    pub io: BufReader<S>,
}

impl Client<TcpStream> {
    /// Connects and reads the greeting.
    pub async fn connect(server: &Server) -> Self {
        let mut c = Self::raw(server).await;
        let greeting = c.reply().await;
        assert!(greeting[0].starts_with("220 mx.test "), "{greeting:?}");
        c
    }

    pub async fn raw(server: &Server) -> Self {
        Client {
            io: BufReader::new(TcpStream::connect(server.address).await.unwrap()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One line without CRLF; "" at EOF.
    pub async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.io.read_line(&mut line))
            .await
            .expect("a reply within 5 s")
            .unwrap();
        assert!(
            line.is_empty() || line.ends_with("\r\n"),
            "no CRLF: {line:?}"
        );
        line.trim_end_matches("\r\n").to_owned()
    }

    /// One reply: its lines ("250-..." up to "250 ...").
    pub async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let last = line.len() < 4 || line.as_bytes()[3] == b' ';
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// LHLO; returns the reply's lines.
    pub async fn lhlo(&mut self) -> Vec<String> {
        self.send("LHLO client.test\r\n").await;
        let reply = self.reply().await;
        assert!(reply.last().unwrap().starts_with("250 "), "{reply:?}");
        reply
    }

    /// EHLO; returns the reply's lines.
    pub async fn ehlo(&mut self) -> Vec<String> {
        self.send("EHLO client.test\r\n").await;
        let reply = self.reply().await;
        assert!(reply.last().unwrap().starts_with("250 "), "{reply:?}");
        reply
    }

    /// Sends a command, returns the (last line of the) reply.
    pub async fn cmd(&mut self, command: &str) -> String {
        self.send(&format!("{command}\r\n")).await;
        self.reply().await.pop().unwrap_or_default()
    }

    /// Asserts the reply to `command` starts with `expected`.
    pub async fn expect(&mut self, command: &str, expected: &str) {
        let reply = self.cmd(command).await;
        assert!(
            reply.starts_with(expected),
            "{command}: expected {expected}, got {reply:?}"
        );
    }
}
