//! One session: the greeting, the STARTTLS upgrade between the plain and
//! the TLS dialogue, and the session's metrics.

use super::commands::Session;
use super::dialogue::{Ended, dialogue};
use super::{ListenerSettings, MailSink};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

/// How a session ended (the `outcome` label of
/// `switchboard_email_sessions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Quit,
    Disconnected,
    Timeout,
    TooManyErrors,
    Shutdown,
    TlsFailed,
    /// Over `max_sessions`: refused at once.
    Refused,
    /// A line or an over-size body went on far past its limit.
    TooLarge,
    /// The end of a body was not `<CRLF>.<CRLF>` (SMTP smuggling).
    BadEndOfData,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Quit => "quit",
            Outcome::Disconnected => "disconnected",
            Outcome::Timeout => "timeout",
            Outcome::TooManyErrors => "too_many_errors",
            Outcome::Shutdown => "shutdown",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Refused => "refused",
            Outcome::TooLarge => "too_large",
            Outcome::BadEndOfData => "bad_end_of_data",
        }
    }
}

pub(super) fn count_session(listener: &str, outcome: Outcome) {
    metrics::counter!("switchboard_email_sessions_total",
        "source" => listener.to_owned(), "outcome" => outcome.as_str())
    .increment(1);
}

/// Runs one LMTP/SMTP session on `stream` (a TCP connection, or any byte
/// pipe in tests) until the client quits, a limit or timeout closes it, or
/// `shutdown` is cancelled while the session is between commands. STARTTLS
/// upgrades `stream` in place when `settings.tls` is set.
pub async fn session<S>(
    stream: S,
    peer: SocketAddr,
    settings: Arc<ListenerSettings>,
    sink: Arc<dyn MailSink>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let span = info_span!("email_session", source = %settings.name, %peer,
        protocol = settings.protocol.as_str());
    async move {
        let name = settings.name.clone();
        let mut s = Session::new(settings, sink, peer);
        let outcome = run(stream, &mut s, &shutdown).await;
        debug!(outcome = outcome.as_str(), "Session ended.");
        count_session(&name, outcome);
    }
    .instrument(span)
    .await;
}

async fn run<S>(stream: S, s: &mut Session, shutdown: &CancellationToken) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = Vec::new();
    s.greeting(&mut out);
    let stream = match dialogue(stream, s, shutdown, out).await {
        Ended::Closed(outcome) => return outcome,
        Ended::Upgrade(stream) => stream,
    };
    let Some(config) = s.settings.tls.clone() else {
        return Outcome::TlsFailed;
    };
    let handshake = tokio::time::timeout(
        s.settings.command_timeout,
        TlsAcceptor::from(config).accept(stream),
    );
    let accepted = tokio::select! {
        () = shutdown.cancelled() => return Outcome::Shutdown,
        accepted = handshake => accepted,
    };
    match accepted {
        Ok(Ok(tls)) => {
            s.started_tls();
            match dialogue(tls, s, shutdown, Vec::new()).await {
                Ended::Closed(outcome) => outcome,
                // Refused under TLS: cannot happen.
                Ended::Upgrade(_) => Outcome::TlsFailed,
            }
        }
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed.");
            Outcome::TlsFailed
        }
        Err(_) => Outcome::Timeout,
    }
}
