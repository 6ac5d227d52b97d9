//! Connecting: TCP, implicit TLS or STARTTLS (rustls with ring), the
//! greeting, LOGIN.

use async_imap::imap_proto::{Response, Status};
use async_imap::{Client, Session};
use rustls_pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::session::End;
use super::{MailboxSettings, Security};

/// A plain or TLS connection.
#[derive(Debug)]
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An authenticated IMAP session.
pub(super) type ImapSession = Session<Stream>;

/// Connects, secures and logs in. The password is never in an error.
pub(super) async fn connect(settings: &MailboxSettings) -> Result<ImapSession, End> {
    let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| End::failed("connect", e))?;
    let _ = tcp.set_nodelay(true);
    let client = match settings.security {
        Security::None => greeted(Client::new(Stream::Plain(tcp))).await?,
        Security::Tls => greeted(Client::new(tls(settings, tcp).await?)).await?,
        Security::StartTls => {
            let mut plain = greeted(Client::new(tcp)).await?;
            plain
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| End::failed("tls", format!("STARTTLS refused: {e}")))?;
            // Whatever the server sent after its OK is dropped with the
            // plain stream's buffer (no STARTTLS response injection), and
            // no greeting follows.
            Client::new(tls(settings, plain.into_inner()).await?)
        }
    };
    client
        .login(&settings.user, &settings.password)
        .await
        .map_err(|(e, _)| End::failed("login", login_error(e)))
}

/// The login error without anything that came from our command.
fn login_error(e: async_imap::error::Error) -> String {
    match e {
        async_imap::error::Error::Validate(_) => {
            "the user or password contains a line break".to_string()
        }
        other => other.to_string(),
    }
}

/// Reads the greeting; a `BYE` or a closed connection is an error.
async fn greeted<T>(mut client: Client<T>) -> Result<Client<T>, End>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let greeting = client
        .read_response()
        .await
        .map_err(|e| End::failed("connect", e))?;
    match greeting.as_ref().map(|g| g.parsed()) {
        None => Err(End::failed("connect", "closed before the greeting")),
        Some(Response::Data {
            status: Status::Bye,
            information,
            ..
        }) => Err(End::failed(
            "connect",
            format!("refused: {}", information.as_deref().unwrap_or("")),
        )),
        Some(_) => Ok(client),
    }
}

async fn tls(settings: &MailboxSettings, tcp: TcpStream) -> Result<Stream, End> {
    let roots = match &settings.tls_roots {
        Some(roots) => roots.clone(),
        None => Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| End::failed("tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(settings.host.clone())
        .map_err(|e| End::failed("tls", format!("bad server name {:?}: {e}", settings.host)))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| End::failed("tls", e))?;
    Ok(Stream::Tls(Box::new(stream)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
