//! The mover: copies routing's webhook events (`{r}:hooks`) into the
//! contacts' partition feeds, and trims the feeds. Runs on every instance
//! with webhooks; one at a time does the work (a lease).

use metrics::counter;
use std::time::{Duration, Instant};
use switchboard_store::EventFeed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long `{r}:hooks:on` lives unless renewed.
const ANNOUNCE_TTL: Duration = Duration::from_secs(24 * 3600);
const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(10);
/// Longest wait for a routing event per read.
const BLOCK: Duration = Duration::from_secs(1);
/// Routing events moved per pass.
const PASS: usize = 500;
const TRIM_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub(crate) struct Mover {
    pub(crate) feed: EventFeed,
    pub(crate) holder: String,
    /// How long the feeds keep events.
    pub(crate) retention: Duration,
}

impl Mover {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut announced: Option<Instant> = None;
        let mut trimmed: Option<Instant> = None;
        let mut conn = None;
        let mut complained = false;
        while !shutdown.is_cancelled() {
            if announced.is_none_or(|a| a.elapsed() >= ANNOUNCE_EVERY) {
                match self.feed.announce(ANNOUNCE_TTL).await {
                    Ok(()) => announced = Some(Instant::now()),
                    Err(error) => {
                        debug!(%error, "Cannot turn routing's webhook events on yet; will retry.");
                    }
                }
            }
            let held = match self.feed.hold_mover(&self.holder, LEASE).await {
                Ok(held) => held,
                Err(error) => {
                    debug!(%error, "Cannot take the webhook mover lease.");
                    false
                }
            };
            if !held {
                if sleep(&shutdown, Duration::from_secs(2)).await {
                    break;
                }
                continue;
            }
            if trimmed.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
                match self.feed.trim(self.retention).await {
                    Ok(()) => trimmed = Some(Instant::now()),
                    Err(error) => warn!(%error, "Cannot trim the webhook feeds; will retry."),
                }
            }
            match self.feed.move_routing_events(PASS).await {
                Ok(moved) => {
                    complained = false;
                    if moved.copied > 0 {
                        counter!("switchboard_webhook_events_moved_total")
                            .increment(moved.copied as u64);
                    }
                    let seen = moved.copied + moved.already + moved.ignored;
                    if seen >= PASS {
                        continue;
                    }
                }
                Err(error) => {
                    // Every failed pass is counted (one warning per run
                    // of failures): a mover that keeps failing holds back
                    // contact.assigned and contact.closed.
                    counter!("switchboard_webhook_mover_errors_total").increment(1);
                    if !complained {
                        warn!(%error, "Cannot move routing events to the webhook feeds; will retry.");
                        complained = true;
                    }
                    if sleep(&shutdown, Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            }
            // Wait for the next routing event (or the block time).
            if conn.is_none() {
                conn = self.feed.store().dedicated_connection(BLOCK).ok();
            }
            let Some(c) = conn.as_mut() else {
                if sleep(&shutdown, BLOCK).await {
                    break;
                }
                continue;
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                waited = self.feed.wait_routing_events(c, BLOCK) => {
                    if waited.is_err() && sleep(&shutdown, BLOCK).await {
                        break;
                    }
                }
            }
        }
        let _ = self.feed.release_mover(&self.holder).await;
    }
}

async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
