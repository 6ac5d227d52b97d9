//! One visitor websocket.
//!
//! A writer task owns the socket's sending half and drains a bounded queue
//! (`send_buffer` frames); the session task reads frames, answers them,
//! and wakes up when the hub rings (read the log after the last entry
//! sent), when the hub has an event (another tab's conversation, the agent
//! typing), and on timers (ping, routing state). A client that leaves the
//! queue full for [`SLOW_READER`] is dropped (no close frame: it reads
//! none); the writer also gives up a frame the client does not take
//! within [`SLOW_READER`], and
//! once the session has ended it gets [`WRITER_GRACE`] to send what is
//! queued before it is stopped (so no socket outlives its session).

use crate::Shared;
use crate::hub::HubEvent;
use crate::limits::Bucket;
use crate::protocol::{self, Attachment, ClientFrame, ServerFrame, VERSION};
use crate::token::{Session, random_id};
use crate::uploads::{attachment_line, split_attachments};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use metrics::counter;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{LiveEvent, LiveKind};
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, InboundEvent, IntakeError,
    IntakeOutcome, MAX_CUSTOMER_NAME_BYTES, Timestamp,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

/// How long a full send queue is tolerated before the client is closed,
/// and how long the writer waits for the client to take one frame.
const SLOW_READER: Duration = Duration::from_secs(5);
/// How long the writer may go on once the session has ended (the queued
/// frames, then the close frame); then it is stopped.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Offline forms one session may send.
const OFFLINE_FORMS: u32 = 3;
/// Rejected frames in a row before a session is closed.
const STRIKES: u32 = 20;
/// How long a client may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(30);
/// Log entries read per round.
const PAGE: usize = 100;

/// What the writer task sends.
#[derive(Debug)]
enum Out {
    Text(String),
    Ping,
    Close(u16, &'static str),
}

/// A frame from the client.
#[derive(Debug)]
enum Incoming {
    Text(String),
    /// Refused as a text frame that does not parse would be: charged to
    /// the allowances and struck.
    Binary,
    /// Ping or pong: nothing to answer.
    Control,
}

/// Why the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client went away (or closed).
    Gone,
    Close(u16, &'static str),
    /// The client does not read: the queue stayed full.
    Slow,
}

/// What the visitor said in the pre-chat form.
#[derive(Debug, Clone, Default)]
struct Prechat {
    name: Option<String>,
    email: Option<String>,
    topic: Option<String>,
}

/// What the session last told the client about routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    /// The agent (id, display name) announced as joined.
    agent: Option<(String, String)>,
    position: Option<u32>,
    waiting: bool,
    closed: bool,
}

struct Conn {
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    /// `None` when the server does not know the peer.
    ip: Option<IpAddr>,
    /// This socket's keep-alive pings (`rate_per_session` a minute).
    bucket: Bucket,
    strikes: u32,
}

/// A session after a successful `hello`.
struct Active {
    session: Session,
    customer: CustomerIdentity,
    language: Option<String>,
    conv: Option<(ConversationId, ContactId)>,
    /// The last log entry sent (`-`: none).
    cursor: String,
    prechat: Prechat,
    seen: Seen,
    /// Agent ids → display names, for messages' `name`.
    names: HashMap<String, String>,
    /// When routing is asked next.
    poll_at: Instant,
    /// Offline forms stored for this session.
    offline_forms: u32,
    /// The last read of the conversation log failed (warned once).
    log_unreadable: bool,
}

/// Serves one websocket until it closes.
pub async fn serve(shared: Arc<Shared>, socket: WebSocket, ip: Option<IpAddr>, origin: String) {
    let span = info_span!("chat_session", source = %shared.ctx.name, visitor = tracing::field::Empty,
        conversation_id = tracing::field::Empty, contact_id = tracing::field::Empty);
    async move {
        counter!("switchboard_chat_connections_total").increment(1);
        let (sink, stream) = socket.split();
        let (out, rx) = mpsc::channel(shared.config.send_buffer.max(1));
        let writer = tokio::spawn(write(sink, rx).in_current_span());
        let mut conn = Conn {
            bucket: Bucket::new(shared.config.rate_per_session),
            shared,
            out,
            ip,
            strikes: 0,
        };
        let end = conn.run(stream, &origin).await;
        // Every end counted by why: a flood of sockets that never say
        // hello, or are closed for refused frames, shows here.
        let why = match &end {
            End::Slow => "slow_reader",
            End::Close(_, reason) => reason,
            End::Gone => "gone",
        };
        counter!("switchboard_chat_closed_total", "reason" => why).increment(1);
        match end {
            End::Slow => {
                counter!("switchboard_chat_rejected_total", "reason" => "slow_reader").increment(1);
                writer.abort();
            }
            End::Close(code, reason) => {
                let _ = conn.out.try_send(Out::Close(code, reason));
                drop(conn);
                finish(writer).await;
            }
            End::Gone => {
                drop(conn);
                finish(writer).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Lets the writer send what is queued (the close frame last) for
/// [`WRITER_GRACE`], then stops it. Dropping its handle instead would
/// leave a writer blocked on a client that does not read holding the
/// socket for ever.
async fn finish(mut writer: JoinHandle<()>) {
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        debug!("The client did not take the last frames; the socket is dropped.");
        writer.abort();
        // Wait for the task to go, and the socket with it.
        let _ = writer.await;
    }
}

async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
) {
    while let Some(out) = rx.recv().await {
        let (message, last) = match out {
            Out::Text(text) => (Message::Text(text.into()), false),
            Out::Ping => (Message::Ping(Default::default()), false),
            Out::Close(code, reason) => (
                Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })),
                true,
            ),
        };
        match tokio::time::timeout(SLOW_READER, sink.send(message)).await {
            Ok(Ok(())) if !last => {}
            Ok(_) => break,
            Err(_) => {
                // The client does not read: the socket goes (the session
                // finds its queue closed).
                counter!("switchboard_chat_rejected_total", "reason" => "slow_reader").increment(1);
                debug!("The client did not take a frame in time; the socket is dropped.");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(SLOW_READER, sink.close()).await;
}

/// Reads a websocket message; `Err` ends the session.
fn incoming(message: Option<Result<Message, axum::Error>>) -> Result<Incoming, End> {
    match message {
        None => Err(End::Gone),
        Some(Err(error)) => {
            let text = error.to_string();
            if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                counter!("switchboard_chat_rejected_total", "reason" => "too_large").increment(1);
                Err(End::Close(1009, "frame too large"))
            } else if text.contains("UTF-8") {
                // A text frame that is not UTF-8 (RFC 6455 7.4.1: 1007).
                counter!("switchboard_chat_rejected_total", "reason" => "bad_utf8").increment(1);
                Err(End::Close(1007, "text frames must be UTF-8"))
            } else if text.contains("protocol error") && !text.contains("without closing handshake")
            {
                // (A connection that just went away, e.g. a proxy closing
                // it when the browser left, is not a violation: "gone".)
                // Reserved bits, an unmasked frame, an unknown opcode, a
                // fragmented control frame (RFC 6455 7.4.1: 1002).
                counter!("switchboard_chat_rejected_total", "reason" => "protocol").increment(1);
                debug!(%error, "Chat socket closed: a protocol error.");
                Err(End::Close(1002, "protocol error"))
            } else {
                debug!(%error, "Chat socket error.");
                Err(End::Gone)
            }
        }
        Some(Ok(Message::Text(text))) => Ok(Incoming::Text(text.as_str().to_owned())),
        Some(Ok(Message::Binary(_))) => Ok(Incoming::Binary),
        Some(Ok(Message::Close(_))) => Err(End::Gone),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Incoming::Control),
    }
}

/// Parses a client frame; `None` is a binary frame (refused the same way).
fn parse(text: Option<&str>) -> Result<ClientFrame, String> {
    text.map_or_else(|| Err("text frames only".to_owned()), protocol::parse)
}

type Stream = futures::stream::SplitStream<WebSocket>;

impl Conn {
    /// Queues a frame; `Err(End::Slow)` when the client stopped reading.
    async fn send(&self, frame: &ServerFrame) -> Result<(), End> {
        let Ok(mut text) = serde_json::to_string(frame) else {
            return Ok(());
        };
        // The socket counts the frame's header too (up to 14 bytes).
        let limit = crate::http::write_limit(&self.shared.config).saturating_sub(14);
        if text.len() > limit {
            // The socket would refuse it and end, and every resume would
            // stop at it again: a message goes out cut, anything else not.
            counter!("switchboard_chat_rejected_total", "reason" => "frame_too_large").increment(1);
            warn!(
                bytes = text.len(),
                limit, "A frame too large for the socket; a message's text is cut."
            );
            let ServerFrame::Message { text: long, .. } = frame else {
                return Ok(());
            };
            let mut cut = frame.clone();
            if let ServerFrame::Message { text: short, .. } = &mut cut {
                // Escaping makes a byte at most six.
                *short = format!("{} […]", switchboard_core::clip(long, limit / 8));
            }
            let Ok(shorter) = serde_json::to_string(&cut) else {
                return Ok(());
            };
            text = shorter;
        }
        match tokio::time::timeout(SLOW_READER, self.out.send(Out::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Slow),
        }
    }

    async fn refuse(&self, code: &'static str, message: &str) -> Result<(), End> {
        counter!("switchboard_chat_rejected_total", "reason" => code).increment(1);
        self.send(&ServerFrame::error(code, message)).await
    }

    /// Charges one frame: a keep-alive ping to this socket's allowance
    /// alone, anything else to the visitor's (shared by all their sockets
    /// on this instance: a reconnect or a second tab used to start with a
    /// full allowance) and the address's.
    fn allowed(&mut self, visitor: &str, ping: bool) -> bool {
        if ping {
            return self.bucket.take(std::time::Instant::now());
        }
        self.shared.per_visitor.take(visitor)
            && self.ip.is_none_or(|ip| self.shared.per_ip.take(&ip))
    }

    async fn run(&mut self, mut stream: Stream, origin: &str) -> End {
        let hello_deadline = Instant::now() + HELLO_WITHIN;
        // Before hello.
        let (mut active, after) = loop {
            let message = tokio::select! {
                () = self.shared.ctx.shutdown.cancelled() => return End::Close(1001, "server going away"),
                () = tokio::time::sleep_until(hello_deadline) => return End::Close(1008, "no hello"),
                m = stream.next() => m,
            };
            let text = match incoming(message) {
                Ok(Incoming::Text(t)) => Some(t),
                Ok(Incoming::Binary) => None,
                Ok(Incoming::Control) => continue,
                Err(end) => return end,
            };
            match self.hello(text.as_deref(), origin).await {
                Ok(Some(started)) => break started,
                Ok(None) => {
                    self.strikes += 1;
                    if self.strikes > STRIKES {
                        return End::Close(1008, "too many refused frames");
                    }
                }
                Err(end) => return end,
            }
        };
        self.strikes = 0;
        let span = tracing::Span::current();
        span.record("visitor", active.session.visitor.as_str());
        let (link, mut events) = self.shared.hub.register(&active.session.visitor);
        let bell = link.bell.clone();
        if let Some((conv, contact)) = active.conv {
            self.shared.hub.follow(&link, &conv, &contact);
            span.record("conversation_id", conv.to_string());
            span.record("contact_id", contact.to_string());
        }
        let end = self
            .active(&mut active, &mut stream, &mut events, &bell, &link, after)
            .await;
        self.shared.hub.unregister(&link);
        info!(?end, "Chat session ended.");
        end
    }

    #[allow(clippy::too_many_arguments)]
    async fn active(
        &mut self,
        active: &mut Active,
        stream: &mut Stream,
        events: &mut mpsc::Receiver<HubEvent>,
        bell: &tokio::sync::Notify,
        link: &crate::hub::Link,
        after: Option<String>,
    ) -> End {
        let config = &self.shared.config;
        let ping_every = Duration::from_secs(config.ping_interval_secs);
        let idle_limit = Duration::from_secs(config.idle_timeout_secs);
        if let Some(after) = after {
            active.cursor = after;
        }
        if let Err(end) = self.catch_up(active).await {
            return end;
        }
        if let Err(end) = self.poll_route(active, link).await {
            return end;
        }
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        active.poll_at = Instant::now() + self.poll_interval(active);
        loop {
            let step: Result<(), End> = tokio::select! {
                () = self.shared.ctx.shutdown.cancelled() => return End::Close(1001, "server going away"),
                () = bell.notified() => self.catch_up(active).await,
                Some(event) = events.recv() => self.hub_event(active, link, event).await,
                message = stream.next() => match incoming(message) {
                    Ok(Incoming::Text(text)) => {
                        last_heard = Instant::now();
                        self.frame(active, link, Some(&text)).await
                    }
                    // Refused: not a sign of a client that is still there.
                    Ok(Incoming::Binary) => self.frame(active, link, None).await,
                    Ok(Incoming::Control) => {
                        last_heard = Instant::now();
                        Ok(())
                    }
                    Err(end) => Err(end),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle_limit {
                        return End::Close(1001, "idle");
                    }
                    match self.out.try_send(Out::Ping) {
                        Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Gone),
                        _ => Ok(()),
                    }
                }
                () = tokio::time::sleep_until(active.poll_at) => {
                    let r = self.poll_route(active, link).await;
                    active.poll_at = Instant::now() + self.poll_interval(active);
                    r
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Every 2 s while waiting for an agent, every 10 s otherwise.
    fn poll_interval(&self, active: &Active) -> Duration {
        if active.seen.waiting {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        }
    }

    /// Handles `hello` (`None`: a binary frame): `Ok(None)` when refused
    /// (the client may try again).
    async fn hello(
        &self,
        text: Option<&str>,
        origin: &str,
    ) -> Result<Option<(Active, Option<String>)>, End> {
        if !self.allowed_hello() {
            self.refuse("rate_limited", "too many frames; slow down")
                .await?;
            return Ok(None);
        }
        let frame = match parse(text) {
            Ok(f) => f,
            Err(e) => {
                // A hello of another version may have fields this one does
                // not know: it is told the version, not `bad_frame`, so
                // that it can fall back rather than retry for ever.
                if let Some(v) = hello_version(text)
                    && v != u64::from(VERSION)
                {
                    self.refuse(
                        "unsupported_version",
                        &format!("this server speaks version {VERSION}"),
                    )
                    .await?;
                } else {
                    self.refuse("bad_frame", &e).await?;
                }
                return Ok(None);
            }
        };
        let ClientFrame::Hello {
            v,
            widget,
            token,
            locale,
            after,
            conversation: last,
        } = frame
        else {
            if matches!(frame, ClientFrame::Ping {}) {
                self.send(&ServerFrame::Pong).await?;
            } else {
                self.refuse("bad_frame", "say hello first").await?;
            }
            return Ok(None);
        };
        if v != VERSION {
            self.refuse(
                "unsupported_version",
                &format!("this server speaks version {VERSION}"),
            )
            .await?;
            return Ok(None);
        }
        let Some(widget_config) = self.shared.config.widget(&widget) else {
            self.refuse("bad_frame", "unknown widget").await?;
            return Ok(None);
        };
        if !widget_config.origins.iter().any(|o| o == origin) {
            counter!("switchboard_chat_rejected_total", "reason" => "origin").increment(1);
            return Err(End::Close(1008, "origin not allowed for this widget"));
        }
        let after = match after {
            Some(a) if !protocol::seq_ok(&a) => {
                self.refuse("bad_frame", "after must be a seq").await?;
                return Ok(None);
            }
            other => other,
        };
        let now = Timestamp::now().as_millis();
        let visitor = match token {
            Some(token) => match self.shared.tokens.check(&token, &widget, now) {
                Ok(session) => session.visitor,
                Err(error) => {
                    debug!(%error, "Session token refused.");
                    self.refuse("bad_session", "the session is not valid; start a new one")
                        .await?;
                    return Ok(None);
                }
            },
            None => random_id(),
        };
        let session = Session {
            widget: widget.clone(),
            visitor,
            expires_at: now + self.shared.config.session_ttl_secs * 1000,
        };
        let customer = match CustomerIdentity::new("visitor", &session.visitor) {
            Ok(c) => c,
            Err(_) => {
                self.refuse("bad_session", "the session is not valid; start a new one")
                    .await?;
                return Ok(None);
            }
        };
        let conv = match self
            .shared
            .ctx
            .conversations
            .open_conversation(&self.shared.ctx.name, &customer)
            .await
        {
            Ok(conv) => conv,
            Err(error) => {
                debug!(%error, "Cannot look up the visitor's conversation.");
                self.refuse("unavailable", "try again shortly").await?;
                return Ok(None);
            }
        };
        // No open conversation, but the widget was in one: it closed while
        // the visitor was away. Resumed all the same (when it is theirs),
        // so that the replies before the close, and the close, arrive.
        let named = last.is_some();
        let last: Option<ConversationId> = last.and_then(|c| c.parse().ok());
        let conv = match (conv, &after, last) {
            (None, Some(_), Some(last)) => match self
                .shared
                .ctx
                .conversations
                .customer_conversation(&self.shared.ctx.name, &customer, &last)
                .await
            {
                Ok(Some(contact)) => Some((last, contact)),
                Ok(None) => None,
                Err(error) => {
                    debug!(%error, "Cannot look up the visitor's last conversation.");
                    self.refuse("unavailable", "try again shortly").await?;
                    return Ok(None);
                }
            },
            (conv, _, _) => conv,
        };
        // `after` is a place in the conversation the client names (a v1
        // client from before `conversation` names none: the open one). In
        // another one (it closed, and the visitor opened a new one in
        // another tab), or in none (a conversation this session attaches
        // to later), every message is new to this client.
        let after = match (&conv, last) {
            (None, _) => None,
            (Some((open, _)), Some(last)) if *open != last => None,
            (Some(_), None) if named => None,
            _ => after,
        };
        // Without an agent who could answer now, a new visitor is offered
        // the offline form (when one is configured); a routing error counts
        // as "someone may": the chat still queues.
        let online = match self
            .shared
            .ctx
            .routing
            .agents_available(ChannelKind::Chat)
            .await
        {
            Ok(online) => online,
            Err(error) => {
                debug!(%error, "Cannot tell whether agents are available.");
                true
            }
        };
        let form = match (conv.is_some(), online, self.shared.config.offline.is_some()) {
            (true, _, _) => None,
            (false, false, true) => Some("offline"),
            (false, _, _) => Some("prechat"),
        };
        self.send(&ServerFrame::Welcome {
            v: VERSION,
            token: self.shared.tokens.issue(&session),
            expires_at: session.expires_at,
            visitor: session.visitor.clone(),
            conversation: conv.map(|(c, _)| c.to_string()),
            online,
            form,
            max_frame_bytes: self.shared.config.max_frame_bytes,
        })
        .await?;
        counter!("switchboard_chat_sessions_opened_total").increment(1);
        Ok(Some((
            Active {
                session,
                customer,
                language: protocol::language(locale.as_deref()),
                conv,
                cursor: "-".into(),
                prechat: Prechat::default(),
                seen: Seen::default(),
                names: HashMap::new(),
                poll_at: Instant::now(),
                offline_forms: 0,
                log_unreadable: false,
            },
            after,
        )))
    }

    fn allowed_hello(&self) -> bool {
        self.ip.is_none_or(|ip| self.shared.per_ip.take(&ip))
    }

    /// Sends every `in`/`out` entry after the cursor, in order.
    async fn catch_up(&self, active: &mut Active) -> Result<(), End> {
        let Some((conv, _)) = active.conv else {
            return Ok(());
        };
        loop {
            let entries = match self
                .shared
                .ctx
                .conversations
                .entries_after(&conv, &active.cursor, PAGE)
                .await
            {
                Ok(e) => e,
                Err(error) => {
                    // The next bell or poll tries again.
                    counter!("switchboard_chat_log_read_errors_total").increment(1);
                    if active.log_unreadable {
                        debug!(%error, conversation_id = %conv, cursor = %active.cursor,
                            "Still cannot read the conversation log.");
                    } else {
                        warn!(%error, conversation_id = %conv, cursor = %active.cursor,
                            "Cannot read the conversation log; trying again at the next doorbell or poll.");
                    }
                    active.log_unreadable = true;
                    return Ok(());
                }
            };
            active.log_unreadable = false;
            let full = entries.len() == PAGE;
            // A reply from an agent not announced yet (the routing poll has
            // not seen the assignment): announce them first, so the visitor
            // sees who joined and their name on the reply.
            let unknown = |active: &Active| -> Vec<String> {
                let mut authors: Vec<String> = entries
                    .iter()
                    .filter(|e| e.dir == "out")
                    .filter_map(|e| {
                        serde_json::from_str::<serde_json::Value>(&e.msg)
                            .ok()
                            .and_then(|v| v.get("author")?.as_str().map(str::to_owned))
                    })
                    .filter(|a| a != "switchboard" && !active.names.contains_key(a))
                    .collect();
                authors.sort();
                authors.dedup();
                authors
            };
            // A close waits until the page is sent: it comes after the
            // conversation's last messages, never before.
            if !unknown(active).is_empty()
                && let Some((_, contact)) = active.conv
            {
                self.announce_route(active, contact, false).await?;
            }
            // Replies of agents who no longer hold the contact (a transfer,
            // a reload after it): their names from routing, not their ids.
            for author in unknown(active) {
                let name = match self.shared.ctx.routing.agent_name(&author).await {
                    Ok(Some(name)) => name,
                    Ok(None) => continue,
                    Err(error) => {
                        debug!(%error, agent_id = %author, "Cannot look up an agent's name.");
                        continue;
                    }
                };
                active.names.insert(author, name);
            }
            for entry in entries {
                active.cursor = entry.seq.clone();
                if let Some(frame) = message_frame(active, &entry) {
                    self.send(&frame).await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn hub_event(
        &self,
        active: &mut Active,
        link: &crate::hub::Link,
        event: HubEvent,
    ) -> Result<(), End> {
        match event {
            HubEvent::Attach(conv, contact) => {
                if active.conv.map(|(c, _)| c) != Some(conv) {
                    if let Some((_, old)) = active.conv {
                        // The conversation shown ended before the session
                        // saw it (the visitor wrote right after the close,
                        // before the routing poll): its last messages and
                        // its close first, so that the visitor gets the
                        // agent's last words, the closing notice and the
                        // rating form, not a new queue position under the
                        // old agent's name.
                        if !active.seen.closed {
                            self.catch_up(active).await?;
                            self.announce_route(active, old, true).await?;
                        }
                        // Routing may not say so yet (a close ends the
                        // conversation first, routing a moment later), but
                        // a new conversation opens only once the old one
                        // ended: it is closed for the visitor either way.
                        if !active.seen.closed {
                            let conversation =
                                active.conv.map(|(c, _)| c.to_string()).unwrap_or_default();
                            self.send(&ServerFrame::Closed {
                                reason: "agent",
                                conversation,
                            })
                            .await?;
                        }
                        active.cursor = "-".into();
                        active.seen = Seen::default();
                    }
                    active.conv = Some((conv, contact));
                    // Tell the visitor where they are at once.
                    active.poll_at = Instant::now();
                    self.shared.hub.follow(link, &conv, &contact);
                    self.catch_up(active).await?;
                }
                Ok(())
            }
            HubEvent::Typing { on, name } => self.send(&ServerFrame::Typing { on, name }).await,
            HubEvent::Read { seq } => self.send(&ServerFrame::Read { seq }).await,
        }
    }

    /// The agent and queue state from routing, announced when it changes.
    async fn poll_route(&self, active: &mut Active, link: &crate::hub::Link) -> Result<(), End> {
        // Another tab (perhaps on another instance) may have started a
        // conversation: the first, or the next after the one shown closed.
        if (active.conv.is_none() || active.seen.closed)
            && let Ok(Some((conv, contact))) = self
                .shared
                .ctx
                .conversations
                .open_conversation(&self.shared.ctx.name, &active.customer)
                .await
            && active.conv.map(|(c, _)| c) != Some(conv)
        {
            return self
                .hub_event(active, link, HubEvent::Attach(conv, contact))
                .await;
        }
        let Some((_, contact)) = active.conv else {
            return Ok(());
        };
        // A doorbell may have been lost: the log is the truth.
        self.catch_up(active).await?;
        self.announce_route(active, contact, true).await
    }

    /// Reads the contact's routing state and tells the visitor what changed
    /// (agent joined or left, queue position, and with `closing` closed).
    async fn announce_route(
        &self,
        active: &mut Active,
        contact: ContactId,
        closing: bool,
    ) -> Result<(), End> {
        let routing = &self.shared.ctx.routing;
        let view = match routing.route(&contact).await {
            Ok(v) => v,
            Err(error) => {
                debug!(%error, contact_id = %contact, "Cannot read the routing state.");
                return Ok(());
            }
        };
        let (state, agent) = match &view {
            // Not routed yet: waiting for all the visitor can tell.
            None => ("waiting", None),
            Some(v) => (
                v.state.as_str(),
                v.agent.clone().map(|a| {
                    let name = v.agent_name.clone().unwrap_or_else(|| a.clone());
                    (a, name)
                }),
            ),
        };
        match state {
            "assigned" => {
                active.seen.waiting = false;
                // The widget clears its queue line when an agent joins: a
                // later wait (a transfer back to a queue) tells the
                // position again, even the same one.
                active.seen.position = None;
                if active.seen.agent != agent {
                    if let Some((_, name)) = active.seen.agent.take() {
                        self.send(&ServerFrame::Agent {
                            state: "left",
                            name,
                        })
                        .await?;
                    }
                    if let Some((id, name)) = &agent {
                        active.names.insert(id.clone(), name.clone());
                        self.send(&ServerFrame::Agent {
                            state: "joined",
                            name: name.clone(),
                        })
                        .await?;
                    }
                    active.seen.agent = agent;
                }
            }
            "closed" if !closing => {}
            "closed" => {
                active.seen.waiting = false;
                if !active.seen.closed {
                    active.seen.closed = true;
                    active.seen.agent = None;
                    let conversation = active.conv.map(|(c, _)| c.to_string()).unwrap_or_default();
                    self.send(&ServerFrame::Closed {
                        reason: "agent",
                        conversation,
                    })
                    .await?;
                }
            }
            _ => {
                // waiting or offered: no agent has it yet.
                active.seen.waiting = true;
                if let Some((_, name)) = active.seen.agent.take() {
                    self.send(&ServerFrame::Agent {
                        state: "left",
                        name,
                    })
                    .await?;
                }
                let position = if state == "waiting" {
                    routing.queue_position(&contact).await.ok().flatten()
                } else {
                    Some(1)
                };
                if let Some(position) = position
                    && active.seen.position != Some(position)
                {
                    active.seen.position = Some(position);
                    let eta = self.shared.config.eta_per_position_secs;
                    self.send(&ServerFrame::Queue {
                        position,
                        estimated_wait_secs: (eta > 0)
                            .then(|| u64::from(position).saturating_mul(eta)),
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Handles a frame after `hello` (`None`: a binary frame).
    async fn frame(
        &mut self,
        active: &mut Active,
        link: &crate::hub::Link,
        text: Option<&str>,
    ) -> Result<(), End> {
        let parsed = parse(text);
        // The widget's keep-alive ping (every 25 s per open tab) is charged
        // to its session only: charged to the address as well, a hundred
        // idle tabs behind one office NAT spent the address's allowance
        // and everyone there was refused.
        let ping = matches!(parsed, Ok(ClientFrame::Ping {}));
        if !self.allowed(&active.session.visitor, ping) {
            self.strikes += 1;
            if self.strikes > STRIKES {
                return Err(End::Close(1008, "rate limit exceeded"));
            }
            counter!("switchboard_chat_rejected_total", "reason" => "rate_limited").increment(1);
            return self
                .send(&ServerFrame::Error {
                    code: "rate_limited",
                    message: "too many frames; slow down".into(),
                    client_id: text.and_then(protocol::message_client_id),
                })
                .await;
        }
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.strikes += 1;
                if self.strikes > STRIKES {
                    return Err(End::Close(1008, "too many refused frames"));
                }
                // A message that reads as one but not wholly (a lone UTF-16
                // surrogate in its text): its `client_id` tells the widget
                // which one failed, or it waits for an answer for ever.
                counter!("switchboard_chat_rejected_total", "reason" => "bad_frame").increment(1);
                return self
                    .send(&ServerFrame::Error {
                        code: "bad_frame",
                        message: e,
                        client_id: text.and_then(protocol::message_client_id),
                    })
                    .await;
            }
        };
        self.strikes = 0;
        match frame {
            ClientFrame::Ping {} => self.send(&ServerFrame::Pong).await,
            ClientFrame::Hello { .. } => self.refuse("bad_frame", "hello was said already").await,
            ClientFrame::Prechat { name, email, topic } => {
                self.prechat(active, name, email, topic).await
            }
            ClientFrame::Message {
                client_id,
                text,
                attachments,
            } => {
                self.message(active, link, client_id, text, attachments)
                    .await
            }
            ClientFrame::Typing { on } => {
                self.live(active, LiveKind::Typing, on, "").await;
                Ok(())
            }
            ClientFrame::Read { seq } => {
                if !protocol::seq_ok(&seq) {
                    return self.refuse("bad_frame", "seq must be a seq").await;
                }
                self.live(active, LiveKind::Read, false, &seq).await;
                Ok(())
            }
            ClientFrame::Rating {
                score,
                comment,
                conversation,
            } => self.rating(active, score, comment, conversation).await,
            ClientFrame::Offline {
                name,
                email,
                text,
                client_id,
            } => {
                self.offline(active, name.unwrap_or_default(), email, text, client_id)
                    .await
            }
        }
    }

    async fn live(&self, active: &Active, kind: LiveKind, on: bool, seq: &str) {
        let Some((conv, contact)) = active.conv else {
            return;
        };
        self.shared
            .ctx
            .live
            .publish(LiveEvent {
                conv: conv.to_string(),
                contact: contact.to_string(),
                source: self.shared.ctx.name.clone(),
                kind,
                seq: seq.to_owned(),
                dir: String::new(),
                on,
                who: "visitor".into(),
                name: String::new(),
                text: None,
                at: 0,
            })
            .await;
    }

    async fn prechat(
        &self,
        active: &mut Active,
        name: Option<String>,
        email: Option<String>,
        topic: Option<String>,
    ) -> Result<(), End> {
        let clean = |v: Option<String>, max: usize| {
            v.map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.chars()
                        .filter(|c| !c.is_control())
                        .take(max)
                        .collect::<String>()
                })
        };
        let email = clean(email, 254);
        if let Some(e) = &email
            && !crate::config::address_ok(e)
        {
            return self
                .refuse("bad_email", "that is not an email address")
                .await;
        }
        active.prechat = Prechat {
            // 128 characters can be 512 bytes: the intake refuses names
            // over MAX_CUSTOMER_NAME_BYTES, and every later message of the
            // session would be refused with it.
            name: clean(name, 128)
                .map(|n| switchboard_core::clip(&n, MAX_CUSTOMER_NAME_BYTES).to_owned()),
            email,
            topic: clean(topic, 128),
        };
        self.send(&ServerFrame::Result {
            of: "prechat",
            ok: true,
        })
        .await
    }

    async fn message(
        &self,
        active: &mut Active,
        link: &crate::hub::Link,
        client_id: String,
        text: String,
        attachments: Vec<String>,
    ) -> Result<(), End> {
        let with_id = |code: &'static str, message: &str| ServerFrame::Error {
            code,
            message: message.to_owned(),
            client_id: Some(client_id.clone()),
        };
        if !protocol::client_id_ok(&client_id) {
            counter!("switchboard_chat_rejected_total", "reason" => "bad_client_id").increment(1);
            return self
                .send(&with_id(
                    "bad_client_id",
                    "client_id: 1 to 64 printable characters, no ':' or '|'",
                ))
                .await;
        }
        let chars = text.chars().count();
        if chars > self.shared.config.max_message_chars {
            counter!("switchboard_chat_rejected_total", "reason" => "too_long").increment(1);
            return self
                .send(&with_id("too_long", "the message is too long"))
                .await;
        }
        if text.trim().is_empty() && attachments.is_empty() {
            counter!("switchboard_chat_rejected_total", "reason" => "bad_frame").increment(1);
            return self
                .send(&with_id("bad_frame", "the message is empty"))
                .await;
        }
        // Attachments are lines the server appends to the text; a visitor
        // may not write one (it would show as an attachment, or name
        // another conversation's media id to the agent).
        if writes_attachment_line(&text) {
            counter!("switchboard_chat_rejected_total", "reason" => "bad_frame").increment(1);
            return self
                .send(&with_id(
                    "bad_frame",
                    "a line may not start with \"[attachment: \"",
                ))
                .await;
        }
        if attachments.len() > 10 {
            counter!("switchboard_chat_rejected_total", "reason" => "unknown_attachment")
                .increment(1);
            return self
                .send(&with_id("unknown_attachment", "at most 10 attachments"))
                .await;
        }
        let mut lines = Vec::new();
        for id in &attachments {
            match self
                .shared
                .uploads
                .describe(&active.session.visitor, id)
                .await
            {
                Ok(Some(a)) => lines.push(attachment_line(&a)),
                Ok(None) => {
                    counter!("switchboard_chat_rejected_total", "reason" => "unknown_attachment")
                        .increment(1);
                    return self
                        .send(&with_id("unknown_attachment", "no such upload of yours"))
                        .await;
                }
                Err(error) => {
                    // The widget sends it again later with the same
                    // client_id; the visitor's text and file are kept.
                    counter!("switchboard_chat_messages_total", "outcome" => "unavailable")
                        .increment(1);
                    counter!("switchboard_chat_rejected_total", "reason" => "unavailable")
                        .increment(1);
                    switchboard_channel::warn_throttled!(UPLOADS_UNREADABLE, %error,
                        "An upload's description could not be read; the message is refused as unavailable.");
                    return self
                        .send(&with_id("unavailable", "not stored; send it again shortly"))
                        .await;
                }
            }
        }
        let mut body = text;
        for line in lines {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&line);
        }
        let mut attributes = BTreeMap::new();
        if let Some(t) = &active.prechat.topic {
            attributes.insert("topic".to_owned(), t.clone());
        }
        if let Some(e) = &active.prechat.email {
            attributes.insert("email".to_owned(), e.clone());
        }
        let event = InboundEvent {
            channel: ChannelKind::Chat,
            source: self.shared.ctx.name.clone(),
            address: active.session.widget.clone(),
            customer: active.customer.clone(),
            customer_name: active.prechat.name.clone(),
            provider_message_id: Some(format!("{}:{client_id}", active.session.visitor)),
            subject: None,
            text: body,
            language: active.language.clone(),
            attributes,
            sent_at: None,
            new_contact: false,
            media: attachments,
        };
        match self.shared.ctx.intake.submit(event).await {
            Ok(receipt) => {
                counter!("switchboard_chat_messages_total", "outcome" => receipt.outcome.as_str())
                    .increment(1);
                let conv = receipt.conversation_id;
                let current = active.conv.map(|(c, _)| c);
                // A resend whose first copy was stored before: its
                // conversation may be an earlier one, closed since, and the
                // visitor's tabs must not leave the one open now for it.
                // Only this tab follows it, and only when it follows none
                // or one that has closed (ids are not compared: they come
                // from the clocks of different instances); a tab that ends
                // up on a closed one moves on to the open one by itself.
                let duplicate = receipt.outcome == IntakeOutcome::Duplicate;
                let stay = duplicate && current.is_some() && !active.seen.closed;
                if current != Some(conv) && !stay {
                    let span = tracing::Span::current();
                    span.record("conversation_id", conv.to_string());
                    span.record("contact_id", receipt.contact_id.to_string());
                    if !duplicate {
                        // Every tab of the visitor here follows it (this
                        // one too).
                        self.shared.hub.attach_visitor(
                            &active.session.visitor,
                            &conv,
                            &receipt.contact_id,
                        );
                    }
                    self.hub_event(active, link, HubEvent::Attach(conv, receipt.contact_id))
                        .await?;
                }
                self.send(&ServerFrame::Ack {
                    client_id,
                    seq: receipt.seq,
                    conversation: conv.to_string(),
                })
                .await
            }
            Err(error) => {
                let (outcome, code, message) = match &error {
                    IntakeError::Invalid(e) => ("invalid", "bad_frame", e.to_string()),
                    _ => (
                        "unavailable",
                        "unavailable",
                        "not stored; send it again shortly".to_owned(),
                    ),
                };
                counter!("switchboard_chat_messages_total", "outcome" => outcome).increment(1);
                counter!("switchboard_chat_rejected_total", "reason" => code).increment(1);
                debug!(%error, "A visitor message was not stored.");
                self.send(&with_id(code, &message)).await
            }
        }
    }

    /// A CSAT rating of the session's conversation once it is closed, or
    /// of the closed conversation the frame names (a visitor who reloaded
    /// the page). Kept once per conversation: routing counts the first
    /// rating, the transcript gets one entry whatever the repeats or tabs.
    async fn rating(
        &self,
        active: &mut Active,
        score: u8,
        comment: Option<String>,
        named: Option<String>,
    ) -> Result<(), End> {
        let comment = comment.unwrap_or_default();
        if !(1..=5).contains(&score) || comment.chars().count() > 1000 {
            return self
                .refuse(
                    "bad_rating",
                    "score 1 to 5, comment at most 1000 characters",
                )
                .await;
        }
        let Some((conv, contact, closed)) = self.rated_conversation(active, named).await? else {
            return Ok(());
        };
        if !closed {
            return self
                .refuse("not_closed", "rate the conversation once it is closed")
                .await;
        }
        // Routing's record first (the KPIs' CSAT; the first rating counts,
        // so a retry after a failed log append counts once), then the
        // transcript's one entry.
        if let Err(error) = self.shared.ctx.routing.rate(&contact, score).await {
            debug!(%error, "Cannot record a rating.");
            return self
                .refuse("unavailable", "not stored; send it again shortly")
                .await;
        }
        let msg = serde_json::json!({ "score": score, "comment": comment }).to_string();
        match self
            .shared
            .ctx
            .conversations
            .append_once(&conv, &contact, &self.shared.ctx.name, "rating", &msg)
            .await
        {
            Ok(stored) => {
                let outcome = if stored.is_some() { "stored" } else { "repeat" };
                counter!("switchboard_chat_ratings_total", "outcome" => outcome).increment(1);
                self.send(&ServerFrame::Result {
                    of: "rating",
                    ok: true,
                })
                .await
            }
            Err(error) => {
                debug!(%error, "Cannot store a rating.");
                self.refuse("unavailable", "not stored; send it again shortly")
                    .await
            }
        }
    }

    /// The conversation a rating is for, its contact and whether it is
    /// closed; `None` once the frame was refused.
    async fn rated_conversation(
        &self,
        active: &mut Active,
        named: Option<String>,
    ) -> Result<Option<(ConversationId, ContactId, bool)>, End> {
        let named = match named.as_deref().map(str::parse::<ConversationId>) {
            None => None,
            Some(Ok(conv)) => Some(conv),
            Some(Err(_)) => {
                self.refuse("bad_frame", "conversation must be a conversation id")
                    .await?;
                return Ok(None);
            }
        };
        let current = active.conv.filter(|(c, _)| named.is_none_or(|n| n == *c));
        if let Some((conv, contact)) = current {
            if !active.seen.closed {
                // The poll may lag: ask routing now.
                if let Ok(Some(view)) = self.shared.ctx.routing.route(&contact).await
                    && view.state == "closed"
                {
                    active.seen.closed = true;
                }
            }
            return Ok(Some((conv, contact, active.seen.closed)));
        }
        let Some(conv) = named else {
            self.refuse("not_closed", "there is no conversation to rate")
                .await?;
            return Ok(None);
        };
        // A conversation of an earlier session: it must be this visitor's.
        let owned = self
            .shared
            .ctx
            .conversations
            .customer_conversation(&self.shared.ctx.name, &active.customer, &conv)
            .await;
        let contact = match owned {
            Ok(Some(contact)) => contact,
            Ok(None) => {
                counter!("switchboard_chat_ratings_refused_total", "reason" => "not_theirs")
                    .increment(1);
                self.refuse("not_closed", "there is no such conversation to rate")
                    .await?;
                return Ok(None);
            }
            Err(error) => {
                debug!(%error, "Cannot look up the rated conversation.");
                self.refuse("unavailable", "not stored; send it again shortly")
                    .await?;
                return Ok(None);
            }
        };
        let closed = match self.shared.ctx.routing.route(&contact).await {
            Ok(Some(view)) => view.state == "closed",
            Ok(None) => false,
            Err(error) => {
                debug!(%error, "Cannot read the rated contact's state.");
                self.refuse("unavailable", "not stored; send it again shortly")
                    .await?;
                return Ok(None);
            }
        };
        Ok(Some((conv, contact, closed)))
    }

    async fn offline(
        &self,
        active: &mut Active,
        name: String,
        email: String,
        text: String,
        client_id: Option<String>,
    ) -> Result<(), End> {
        if self.shared.config.offline.is_none() {
            return self
                .refuse("no_offline_form", "this chat has no offline form")
                .await;
        }
        if active.offline_forms >= OFFLINE_FORMS {
            info!(
                forms = active.offline_forms,
                "Offline form refused: the session sent its share."
            );
            return self
                .refuse(
                    "offline_limit",
                    "this session has sent all the offline forms it may",
                )
                .await;
        }
        if client_id
            .as_deref()
            .is_some_and(|id| !protocol::client_id_ok(id))
        {
            return self
                .refuse(
                    "bad_client_id",
                    "client_id: 1 to 64 printable characters, no ':' or '|'",
                )
                .await;
        }
        let email = email.trim().to_owned();
        if !crate::config::address_ok(&email) {
            return self
                .refuse("bad_email", "that is not an email address")
                .await;
        }
        if text.chars().count() > self.shared.config.max_message_chars {
            return self.refuse("too_long", "the message is too long").await;
        }
        if text.trim().is_empty() {
            return self.refuse("bad_frame", "the message is empty").await;
        }
        // As in a chat message: an attachment line the visitor wrote would
        // show the agent a file that never came.
        if writes_attachment_line(&text) {
            return self
                .refuse("bad_frame", "a line may not start with \"[attachment: \"")
                .await;
        }
        let Ok(customer) = CustomerIdentity::new("email", &email.to_ascii_lowercase()) else {
            return self
                .refuse("bad_email", "that is not an email address")
                .await;
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("offline".to_owned(), "true".to_owned());
        // The address is whatever the visitor typed: nothing shows it is
        // theirs. No automatic answer (acknowledgement, after-hours or
        // overflow step) goes to it, or anyone could make the company mail
        // any address a text with their chosen {name} in it. The widget
        // confirms the form itself; an agent's reply still goes.
        attributes.insert("no_auto_answer".to_owned(), "true".to_owned());
        if let Some(t) = &active.prechat.topic {
            attributes.insert("topic".to_owned(), t.clone());
        }
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        let name = switchboard_core::clip(&name, MAX_CUSTOMER_NAME_BYTES).to_owned();
        let event = InboundEvent {
            channel: ChannelKind::Chat,
            source: self.shared.ctx.name.clone(),
            address: active.session.widget.clone(),
            customer,
            customer_name: (!name.is_empty()).then_some(name),
            // The form's own id when it has one (a resend is stored once),
            // else a fresh one.
            provider_message_id: Some(format!(
                "{}:offline:{}",
                active.session.visitor,
                client_id.unwrap_or_else(random_id)
            )),
            subject: None,
            text,
            language: active.language.clone(),
            attributes,
            sent_at: None,
            // A contact of its own: the address is typed, not proven, so
            // the form must not join a conversation open under it (anyone
            // could write into someone else's thread).
            new_contact: true,
            media: Vec::new(),
        };
        match self.shared.ctx.intake.submit(event).await {
            Ok(receipt) => {
                if receipt.outcome == IntakeOutcome::Duplicate {
                    // Sent again (its answer was lost): stored already, and
                    // not charged again.
                    counter!("switchboard_chat_messages_total", "outcome" => "duplicate")
                        .increment(1);
                    info!(contact_id = %receipt.contact_id, "Offline form sent again; stored already.");
                } else {
                    active.offline_forms += 1;
                    counter!("switchboard_chat_messages_total", "outcome" => "offline")
                        .increment(1);
                    info!(contact_id = %receipt.contact_id, "Offline form stored.");
                }
                self.send(&ServerFrame::Result {
                    of: "offline",
                    ok: true,
                })
                .await
            }
            Err(IntakeError::Invalid(e)) => self.refuse("bad_frame", &e.to_string()).await,
            Err(error) => {
                debug!(%error, "An offline form was not stored.");
                self.refuse("unavailable", "not stored; send it again shortly")
                    .await
            }
        }
    }
}

/// The `v` of a frame that reads as a JSON object with `type: "hello"`,
/// whatever else it holds.
fn hello_version(text: Option<&str>) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(text?).ok()?;
    (value.get("type")?.as_str()? == "hello")
        .then(|| value.get("v")?.as_u64())
        .flatten()
}

/// The `message` frame for a log entry the visitor sees (`in`, `out`).
fn message_frame(active: &Active, entry: &switchboard_channel::LogEntry) -> Option<ServerFrame> {
    let value: serde_json::Value = serde_json::from_str(&entry.msg).ok()?;
    let conversation = active
        .conv
        .as_ref()
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    match entry.dir.as_str() {
        "in" => {
            let text = value
                .get("text")
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            let (text, attachments) = split_attachments(text);
            let client_id = value
                .get("provider_message_id")
                .and_then(|p| p.as_str())
                .and_then(|p| p.strip_prefix(active.session.visitor.as_str()))
                .and_then(|p| p.strip_prefix(':'))
                .map(str::to_owned);
            Some(ServerFrame::Message {
                seq: entry.seq.clone(),
                id: entry.id.clone(),
                from: "visitor",
                name: String::new(),
                text,
                at: entry.at,
                attachments,
                client_id,
                conversation,
            })
        }
        "out" => {
            let author = value
                .get("author")
                .and_then(|a| a.as_str())
                .unwrap_or_default();
            let text = value
                .get("message")
                .and_then(|m| m.get("text"))
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_owned();
            let name = if author == "switchboard" {
                String::new()
            } else {
                active
                    .names
                    .get(author)
                    .cloned()
                    .or_else(|| {
                        active
                            .seen
                            .agent
                            .as_ref()
                            .filter(|(id, _)| id == author)
                            .map(|(_, n)| n.clone())
                    })
                    .unwrap_or_else(|| author.to_owned())
            };
            Some(ServerFrame::Message {
                seq: entry.seq.clone(),
                id: entry.id.clone(),
                from: "agent",
                name,
                text,
                at: entry.at,
                attachments: Vec::<Attachment>::new(),
                client_id: None,
                conversation,
            })
        }
        _ => None,
    }
}

/// Whether `text` has a line that reads as one of the attachment lines the
/// server appends (`[attachment: …`): a visitor may not write one.
fn writes_attachment_line(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with(crate::uploads::LINE_PREFIX))
}

/// Logs unreadable upload descriptions at most once a minute.
static UPLOADS_UNREADABLE: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));
