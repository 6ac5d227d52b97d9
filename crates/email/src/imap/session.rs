//! One connection: log in, select the folder, check the UIDVALIDITY, then
//! rounds of fetching, each followed by IDLE (or a sleep) until something
//! changes.

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use switchboard_channel::StateError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Ctx;
use super::backoff::{self, Backoff};
use super::checkpoint::{self, Checkpoint};
use super::conn::{self, ImapSession};
use super::round::{self, Caps, Round};

/// How long a session must have lasted for its end to reset the
/// reconnection backoff (`super::run`): one that always fails soon after
/// it starts (IDLE refused, a proxy that drops the connection) reconnected
/// every second, for ever, when any good round reset it.
pub(super) const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The longest wait for a connection (TCP, TLS, greeting, LOGIN).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for one command's answer.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// IDLE is re-issued at least this often (RFC 2177).
const IDLE_MAX: Duration = Duration::from_secs(29 * 60);
/// A zero poll interval would hammer the server.
const MIN_POLL: Duration = Duration::from_secs(1);
/// Politeness on the way out (DONE, LOGOUT) is capped at this.
const GOODBYE: Duration = Duration::from_millis(500);

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    /// Shutdown, or the lease was lost.
    Stopped,
    /// Something failed; `kind` labels the error metric.
    Failed { kind: &'static str, error: String },
}

impl End {
    pub(super) fn failed(kind: &'static str, error: impl fmt::Display) -> End {
        End::Failed {
            kind,
            error: error.to_string(),
        }
    }

    /// Runs `fut` unless `stop` is cancelled first or it takes longer than
    /// `limit`; errors become [`End::Failed`] of `kind`.
    pub(super) async fn guard<T, E: IntoEnd>(
        stop: &CancellationToken,
        kind: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, End> {
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(End::Stopped),
            r = tokio::time::timeout(limit, fut) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.into_end(kind)),
                Err(_) => Err(End::failed(kind, "timed out")),
            },
        }
    }
}

/// An error that ends a session.
pub(super) trait IntoEnd {
    fn into_end(self, kind: &'static str) -> End;
}

impl IntoEnd for End {
    fn into_end(self, _kind: &'static str) -> End {
        self
    }
}

impl IntoEnd for async_imap::error::Error {
    fn into_end(self, kind: &'static str) -> End {
        End::failed(kind, self)
    }
}

impl IntoEnd for StateError {
    fn into_end(self, kind: &'static str) -> End {
        End::failed(kind, self)
    }
}

/// Runs one session until `stop` or a failure.
pub(super) async fn run(ctx: &Ctx, stop: &CancellationToken) -> Result<(), End> {
    let s = &ctx.settings;
    let mut session = End::guard(stop, "connect", CONNECT_TIMEOUT, conn::connect(s)).await?;
    let label = s.label.clone();
    metrics::gauge!("switchboard_email_imap_connected", "mailbox" => label).set(1.0);
    let found = End::guard(stop, "protocol", COMMAND_TIMEOUT, session.capabilities()).await?;
    let caps = Caps {
        idle: found.has_str("IDLE"),
        mv: found.has_str("MOVE"),
        uidplus: found.has_str("UIDPLUS"),
    };
    let mailbox = End::guard(stop, "select", COMMAND_TIMEOUT, session.select(&s.folder)).await?;
    let validity = mailbox
        .uid_validity
        .ok_or_else(|| End::failed("select", "the server sent no UIDVALIDITY"))?;
    // Without UIDNEXT (servers must send it, some do not) the baseline is
    // the last message's UID + 1: a baseline of "everything" passed over
    // new mail read or deleted before the poll, for good.
    let baseline = match mailbox.uid_next {
        Some(next) => next,
        None if mailbox.exists == 0 => 1,
        None => {
            let last = End::guard(stop, "select", COMMAND_TIMEOUT, async {
                super::checked::uid_fetch(&mut session, "*", "(UID)").await
            })
            .await?;
            last.iter()
                .filter_map(|f| f.uid)
                .max()
                .map_or(1, |uid| uid.saturating_add(1))
        }
    };
    let mut cp = match checkpoint::load(ctx, stop).await? {
        // Reset by an earlier version, nothing taken in since: the
        // baseline is now.
        Some(cp) if cp.validity == validity && cp.last == 0 && cp.baseline == 0 => {
            let cp = Checkpoint { baseline, ..cp };
            checkpoint::save(ctx, cp).await?;
            cp
        }
        // The folder gives out UIDs below ones already taken in, under the
        // same UIDVALIDITY (restored from a backup, an index rebuilt):
        // against RFC 3501, but new mail would be passed over up to the
        // old checkpoint, silently. Taken as a new UIDVALIDITY.
        Some(cp)
            if cp.validity == validity && mailbox.uid_next.is_some_and(|next| next <= cp.last) =>
        {
            warn!(
                last_uid = cp.last,
                uid_next = baseline,
                "The folder's UIDNEXT is below the checkpoint under the same UIDVALIDITY (restored, or its index rebuilt?); taking in what is still new."
            );
            let cp = Checkpoint {
                validity,
                last: 0,
                baseline,
            };
            checkpoint::save(ctx, cp).await?;
            cp
        }
        Some(cp) if cp.validity == validity => cp,
        stored => {
            let cp = Checkpoint {
                validity,
                last: 0,
                baseline,
            };
            match stored {
                Some(old) => warn!(
                    old = old.validity,
                    new = validity,
                    "The folder's UIDVALIDITY changed; taking in what is still new."
                ),
                None => info!(validity, "No checkpoint yet; taking in what is still new."),
            }
            checkpoint::save(ctx, cp).await?;
            cp
        }
    };
    info!(last_uid = cp.last, idle = caps.idle, "Connected.");
    // The mailbox's size as last announced: a listing whose answer says it
    // changed is followed by another at once (new mail during a round
    // that found nothing would otherwise wait for the next poll; a server
    // that repeats an unchanged EXISTS does not make the rounds spin).
    let mut known = mailbox.exists;
    let mut temporary = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        changed(&mut session);
        match round::run(ctx, &mut session, &caps, &mut cp, baseline, stop).await? {
            Round::Temporary => {
                if !backoff::sleep(stop, temporary.next_delay()).await {
                    break;
                }
                continue;
            }
            Round::Done { progress, exists } => {
                temporary.reset();
                let grew = exists.is_some_and(|n| n != known);
                known = exists.unwrap_or(known);
                // More may have come in meanwhile (or its EXISTS been lost).
                if changed(&mut session) || progress || grew {
                    continue;
                }
            }
        }
        if stop.is_cancelled() {
            break;
        }
        if s.idle && caps.idle {
            session = idle(ctx, session, stop).await?;
        } else if !backoff::sleep(stop, s.poll_interval.max(MIN_POLL)).await {
            break;
        }
    }
    let _ = tokio::time::timeout(GOODBYE, session.logout()).await;
    Ok(())
}

/// Drains the unsolicited responses; true when new mail was announced.
fn changed(session: &mut ImapSession) -> bool {
    let mut exists = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        exists |= matches!(
            r,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    exists
}

/// Waits in IDLE until the server reports a change, the poll interval
/// passes (IDLE is re-issued) or `stop`.
async fn idle(
    ctx: &Ctx,
    session: ImapSession,
    stop: &CancellationToken,
) -> Result<ImapSession, End> {
    let period = ctx.settings.poll_interval.clamp(MIN_POLL, IDLE_MAX);
    let mut handle = session.idle();
    End::guard(stop, "idle", COMMAND_TIMEOUT, handle.init()).await?;
    debug!("Waiting in IDLE.");
    let (wait, interrupt) = handle.wait_with_timeout(period);
    let woke = tokio::select! {
        r = wait => Some(r),
        _ = tokio::time::sleep(period) => Some(Ok(IdleResponse::Timeout)),
        _ = stop.cancelled() => None,
    };
    drop(interrupt);
    match woke {
        None => {
            if let Ok(Ok(mut session)) = tokio::time::timeout(GOODBYE, handle.done()).await {
                let _ = tokio::time::timeout(GOODBYE, session.logout()).await;
            }
            Err(End::Stopped)
        }
        Some(Err(e)) => Err(End::failed("idle", e)),
        Some(Ok(response)) => {
            if let IdleResponse::NewData(data) = &response {
                debug!(response = ?data.parsed(), "The mailbox changed.");
            }
            End::guard(stop, "idle", COMMAND_TIMEOUT, handle.done()).await
        }
    }
}
