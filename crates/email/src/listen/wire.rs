//! Writing to the client, and the answers to unparsable commands.

use super::Reply;
use super::commands::Session;
use super::dialogue::Ended;
use super::session::Outcome;
use smtp_proto::Error;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::debug;

/// The most a farewell `421` may take to be written.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes what is pending.
pub(super) async fn flush<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), Outcome> {
    if out.is_empty() {
        return Ok(());
    }
    let write = async {
        io.write_all(out).await?;
        io.flush().await
    };
    let written = tokio::time::timeout(timeout, write).await;
    out.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            debug!(error = %e, "Write failed.");
            Err(Outcome::Disconnected)
        }
        Err(_) => Err(Outcome::Timeout),
    }
}

/// Answers `421` (after what is pending) and closes.
pub(super) async fn farewell<T>(
    mut io: T,
    s: &Session,
    mut out: Vec<u8>,
    status: &str,
    text: &str,
    outcome: Outcome,
) -> Ended<T>
where
    T: AsyncWrite + Unpin,
{
    Reply::new(421, status, format!("{} {text}", s.settings.hostname)).write(&mut out);
    if flush(
        &mut io,
        &mut out,
        FAREWELL_TIMEOUT.min(s.settings.command_timeout),
    )
    .await
    .is_ok()
    {
        close(&mut io).await;
    }
    Ended::Closed(outcome)
}

/// Shuts the stream down (TLS: close_notify), bounded.
pub(super) async fn close<T: AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, io.shutdown()).await;
}

impl Session {
    /// A command smtp-proto could not parse.
    pub(super) fn syntax_error(&mut self, error: Error, out: &mut Vec<u8>) {
        match error {
            Error::UnknownCommand => self.error(out, 500, "5.5.2", "Error: command not recognized"),
            Error::InvalidSenderAddress => {
                self.error(out, 501, "5.1.7", "Error: bad sender address syntax")
            }
            Error::InvalidRecipientAddress => {
                self.error(out, 501, "5.1.3", "Error: bad recipient address syntax");
            }
            Error::SyntaxError { syntax } => {
                self.error(out, 501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            Error::InvalidParameter { param } => {
                self.error(
                    out,
                    501,
                    "5.5.4",
                    &format!("Error: invalid {param} parameter"),
                );
            }
            Error::UnsupportedParameter { param } => {
                let param: String = param.chars().take(64).collect();
                self.error(
                    out,
                    555,
                    "5.5.4",
                    &format!("Error: unsupported parameter {param}"),
                );
            }
            _ => self.error(out, 500, "5.5.2", "Error: syntax error"),
        }
    }
}
