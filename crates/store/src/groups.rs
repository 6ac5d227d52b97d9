//! Housekeeping of consumer groups: deleting dead consumers.
//!
//! Every instance reads the routing streams, the outboxes and the webhook
//! feed through consumer groups under its own name (`<host>-<pid>` unless
//! `instance.id` is set), so each restart leaves a consumer behind in every
//! group it read. Redis keeps them for ever. Each reader calls
//! [`Pruner::maybe`] on its way; at most every [`PRUNE_EVERY`] it deletes
//! the group's consumers that have nothing pending and have not read for
//! [`DEAD_AFTER`] (`lua/prune_consumers.lua`).

use crate::{Store, StoreError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a consumer must not have read before it counts as dead. Live
/// readers read every few seconds (a blocking read renews the idle time),
/// so an hour is far beyond any of them; one that idled longer and was
/// deleted is made again by its next read, with nothing lost.
pub const DEAD_AFTER: Duration = Duration::from_secs(3600);

/// How often one reader looks for dead consumers in one group.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

static PRUNE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/prune_consumers.lua")));

/// Deletes `group`'s consumers on `stream` that have nothing pending and
/// have not read for `min_idle`, except `keep`. Returns how many.
pub async fn prune_consumers(
    store: &Store,
    stream: &str,
    group: &str,
    keep: &str,
    min_idle: Duration,
) -> Result<u64, StoreError> {
    let mut conn = store.conn();
    let mut inv = PRUNE.prepare_invoke();
    inv.key(stream)
        .arg(group)
        .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
        .arg(keep);
    let deleted: i64 = store.bounded(inv.invoke_async(&mut conn)).await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}

/// When a reader last pruned; shared by the reader's calls.
#[derive(Debug)]
pub struct Pruner {
    last: Mutex<Option<Instant>>,
    dead_after: Duration,
    every: Duration,
}

impl Default for Pruner {
    fn default() -> Self {
        Pruner::new(DEAD_AFTER, PRUNE_EVERY)
    }
}

impl Pruner {
    /// Deletes consumers idle for `dead_after`, looking at most every
    /// `every` (the readers use [`DEAD_AFTER`] and [`PRUNE_EVERY`]).
    pub fn new(dead_after: Duration, every: Duration) -> Self {
        Pruner {
            last: Mutex::new(None),
            dead_after,
            every,
        }
    }

    /// Prunes `group` on each of `streams` when `every` has passed since
    /// this pruner last did (or never did). Failures are logged and
    /// counted, never returned: housekeeping must not fail a read.
    pub async fn maybe(
        &self,
        store: &Store,
        streams: impl IntoIterator<Item = String>,
        group: &str,
        keep: &str,
        kind: &'static str,
    ) {
        let due = match self.last.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= self.every);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if !due {
            return;
        }
        for stream in streams {
            match prune_consumers(store, &stream, group, keep, self.dead_after).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("switchboard_store_consumers_deleted_total", "stream" => kind)
                        .increment(n);
                    tracing::info!(stream = %stream, group, deleted = n,
                        "Deleted consumers that had nothing pending and had not read for a long time.");
                }
                Err(error) => {
                    metrics::counter!("switchboard_store_consumer_prune_failures_total", "stream" => kind)
                        .increment(1);
                    tracing::warn!(stream = %stream, group, %error, "Could not look for dead consumers.");
                }
            }
        }
    }
}
