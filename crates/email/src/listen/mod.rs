//! The inbound LMTP/SMTP listener: the protocol layer.
//!
//! [`smtp-proto`](smtp_proto) parses the command lines
//! (`RequestReceiver`), unstuffs the DATA body (`DataReceiver`, and
//! `DummyDataReceiver` to skip a body over the size limit) and writes the
//! EHLO/LHLO answer and the single-line replies. This module drives it: the
//! session state (greeting, transaction, limits, STARTTLS), the timeouts,
//! the accept loop, and the hand-off of accepted mail to a [`MailSink`].
//!
//! - LMTP (RFC 2033): `LHLO`; after DATA, one reply per accepted recipient.
//! - SMTP (RFC 5321): `EHLO`/`HELO`; after DATA one reply for the message
//!   (250 when every recipient got 2xx, else the first 4xx, else the first
//!   5xx).
//!
//! Extensions: `PIPELINING`, `8BITMIME`, `SMTPUTF8`, `ENHANCEDSTATUSCODES`,
//! `SIZE`, and `STARTTLS` when a TLS configuration is given. There is no
//! `AUTH`, and every recipient is checked by the sink: never an open relay.

mod accept;
mod commands;
mod delivery;
mod dialogue;
mod reply;
mod session;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use accept::serve;
pub use reply::Reply;
pub use session::session;
pub use tls::load_tls;

/// The server-side TLS configuration STARTTLS uses.
pub use tokio_rustls::rustls::ServerConfig;

/// How long a session may last ([`ListenerSettings::max_session`]): an
/// hour, five times what Postfix keeps a connection for reuse
/// (`lmtp_connection_reuse_time_limit`, 300 s).
pub const MAX_SESSION: Duration = Duration::from_secs(3600);

/// Protocol errors per session: the last of them (the 10th) closes it with 421.
pub const MAX_ERRORS: usize = 10;

/// How long [`serve`] waits, after shutdown, for sessions to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The dialect a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 2033: `LHLO`, one reply per recipient after DATA.
    Lmtp,
    /// RFC 5321: `EHLO`/`HELO`, one reply per message.
    Smtp,
}

impl Protocol {
    /// The protocol's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Lmtp => "lmtp",
            Protocol::Smtp => "smtp",
        }
    }
}

/// How one listener behaves.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The listener's label in metrics and logs (the channel name).
    pub name: String,
    /// LMTP or SMTP.
    pub protocol: Protocol,
    /// The name in the greeting and the EHLO/LHLO answer.
    pub hostname: String,
    /// The largest message body accepted, in bytes (advertised as `SIZE`).
    pub max_message_bytes: usize,
    /// Accepted recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// How long the listener waits for the client (a command, a piece of
    /// DATA, a write); then `421` and close.
    pub command_timeout: Duration,
    /// Concurrent sessions; further connections get `421 4.3.2` and close.
    pub max_sessions: usize,
    /// How long one session may last: at the next command after it,
    /// `421 4.4.2` and close (a message being received is finished first,
    /// if it takes less than this from its `DATA`).
    /// Commands that move the session on renew `command_timeout`, so
    /// without it a client sending `MAIL` and `RSET` now and then held a
    /// session slot for ever. [`MAX_SESSION`] in the daemon.
    pub max_session: Duration,
    /// Enables STARTTLS.
    pub tls: Option<Arc<ServerConfig>>,
    /// Refuse `MAIL` before STARTTLS (`530 5.7.0`).
    pub require_tls: bool,
    /// The bodies all sessions may hold at once, in KiB permits
    /// ([`ListenerSettings::budget`]); shared by the listener's sessions.
    pub budget: Arc<tokio::sync::Semaphore>,
}

impl ListenerSettings {
    /// A budget of `bytes` of message bodies held at once.
    pub fn budget(bytes: usize) -> Arc<tokio::sync::Semaphore> {
        let kib = (bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
        Arc::new(tokio::sync::Semaphore::new(kib))
    }
}

/// The envelope of one message handed to the [`MailSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path as given; `""` for the null sender (bounces).
    pub mail_from: String,
    /// The accepted recipients, lower-cased, in the order they were given
    /// (a repeated recipient is listed again: LMTP answers each `RCPT`).
    pub recipients: Vec<String>,
    /// `MAIL FROM` carried `SMTPUTF8`.
    pub smtputf8: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// The message arrived over TLS (after STARTTLS).
    pub tls: bool,
}

/// The sink's answer to one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// `250 2.1.5`.
    Accept,
    /// Not an address of ours: `550 5.1.1`.
    Unknown,
    /// Any other answer (e.g. a temporary `450`).
    Refuse(Reply),
}

/// What the listener hands accepted mail to. Implemented by the email
/// adapter (which stores the mail durably before returning).
pub trait MailSink: Send + Sync + 'static {
    /// Whether mail for `address` (lower-cased) is taken.
    fn recipient(&self, address: &str) -> RcptVerdict;

    /// One reply per recipient of `envelope`, in order. Only return 250 once
    /// the message is durably stored. `data` is the unstuffed body exactly as
    /// received (no header added).
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        data: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Vec<Reply>>;
}

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    /// rustls refused the certificate or key (e.g. they do not match).
    #[error("TLS configuration: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
}
