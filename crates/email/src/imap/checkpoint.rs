//! The checkpoint (`UIDVALIDITY:LASTUID:BASELINE` under
//! `<label>:checkpoint`) and the lease renewal.

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::session::End;
use super::{Ctx, LEASE, LEASE_RENEW, STATE_TIMEOUT};

/// How far a folder has been taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub(super) validity: u32,
    /// The highest UID taken in (stored, rejected or skipped); 0 when none
    /// was in this UIDVALIDITY.
    pub(super) last: u32,
    /// The folder's UIDNEXT when the checkpoint was (re)set: the messages
    /// below it were there before, and only those still new among them are
    /// taken in. 0 in a checkpoint of an earlier version (`V:L`).
    pub(super) baseline: u32,
}

impl Checkpoint {
    /// Parses `UIDVALIDITY:LASTUID:BASELINE` (or `UIDVALIDITY:LASTUID`).
    pub(super) fn parse(s: &str) -> Option<Checkpoint> {
        let mut parts = s.trim().split(':');
        let validity = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let baseline = match parts.next() {
            Some(b) => b.parse().ok()?,
            None => 0,
        };
        parts.next().is_none().then_some(Checkpoint {
            validity,
            last,
            baseline,
        })
    }

    pub(super) fn format(&self) -> String {
        format!("{}:{}:{}", self.validity, self.last, self.baseline)
    }

    /// Whether message `uid` was in the folder before the checkpoint was
    /// set (so it is taken in only if it is still new).
    pub(super) fn was_there(&self, uid: u32) -> bool {
        uid < self.baseline
    }
}

/// The stored checkpoint; a missing or unreadable one is `None`.
pub(super) async fn load(ctx: &Ctx, stop: &CancellationToken) -> Result<Option<Checkpoint>, End> {
    let value = End::guard(
        stop,
        "state",
        STATE_TIMEOUT,
        ctx.state.get(&ctx.checkpoint_key),
    )
    .await?;
    let parsed = value.as_deref().and_then(Checkpoint::parse);
    if let (Some(raw), None) = (&value, parsed) {
        warn!(value = %raw, "Unreadable IMAP checkpoint; starting over.");
    }
    Ok(parsed)
}

/// Stores the checkpoint, also after `stop` (a message stored during
/// shutdown must not be fetched again). Should the lease have been lost
/// meanwhile, the new holder's checkpoint may move back a little: it
/// repeats messages (dropped by the intake's dedupe), never skips any.
pub(super) async fn save(ctx: &Ctx, cp: Checkpoint) -> Result<(), End> {
    let value = cp.format();
    let set = ctx.state.set(&ctx.checkpoint_key, &value);
    match tokio::time::timeout(STATE_TIMEOUT, set).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::failed("state", e)),
        Err(_) => Err(End::failed("state", "timed out")),
    }
}

/// Renews the lease every [`LEASE_RENEW`] until `stop` is cancelled;
/// cancels `stop` when the lease is lost (or could not be renewed before
/// it ran out).
pub(super) async fn keep_lease(ctx: &Ctx, stop: &CancellationToken) {
    let mut renewed = Instant::now();
    loop {
        if !super::backoff::sleep(stop, LEASE_RENEW).await {
            return;
        }
        let hold = ctx.state.hold(&ctx.lease_key, LEASE);
        match tokio::time::timeout(STATE_TIMEOUT, hold).await {
            Ok(Ok(true)) => renewed = Instant::now(),
            Ok(Ok(false)) => {
                warn!("Lost the mailbox's lease to another instance; stopping.");
                stop.cancel();
                return;
            }
            Ok(Err(e)) => lease_error(ctx, stop, renewed, &e.to_string()),
            Err(_) => lease_error(ctx, stop, renewed, "timed out"),
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

fn lease_error(ctx: &Ctx, stop: &CancellationToken, renewed: Instant, error: &str) {
    super::error_metric(ctx, "state");
    // Give up before the lease can run out under us: the next try comes
    // LEASE_RENEW from now and may itself take STATE_TIMEOUT to fail.
    if renewed.elapsed() + LEASE_RENEW + STATE_TIMEOUT + Duration::from_secs(5) >= LEASE {
        warn!(error, "Could not renew the mailbox's lease; stopping.");
        stop.cancel();
    } else {
        warn!(error, "Could not renew the mailbox's lease; trying again.");
    }
}
