//! The mover: copies routing's webhook events (`{r}:hooks`) into the
//! contacts' partition feeds, and trims the feeds. Runs on every instance
//! with webhooks; one at a time does the work (a lease).

use crate::dispatch::{UNREADABLE_TRIES, about_the_data};
use metrics::counter;
use std::time::{Duration, Instant};
use switchboard_store::{EventFeed, MoveFailed};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

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
        // The routing event the last passes stopped at over its data, and
        // how many passes in a row did.
        let mut stuck: Option<(String, u32)> = None;
        while !shutdown.is_cancelled() {
            if announced.is_none_or(|a| a.elapsed() >= ANNOUNCE_EVERY) {
                match self.feed.announce(ANNOUNCE_TTL).await {
                    Ok(()) => announced = Some(Instant::now()),
                    Err(error) => {
                        counter!("switchboard_webhook_mover_errors_total", "op" => "announce")
                            .increment(1);
                        // Counted: routing stops copying its events a day
                        // after the last announce that reached Redis.
                        debug!(%error, "Cannot turn routing's webhook events on yet; will retry.");
                    }
                }
            }
            let held = match self.feed.hold_mover(&self.holder, LEASE).await {
                Ok(held) => held,
                Err(error) => {
                    counter!("switchboard_webhook_mover_errors_total", "op" => "lease")
                        .increment(1);
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
                    Err(error) => {
                        counter!("switchboard_webhook_mover_errors_total", "op" => "trim")
                            .increment(1);
                        warn!(%error, "Cannot trim the webhook feeds; will retry.");
                    }
                }
            }
            match self.feed.move_routing_events(PASS).await {
                Ok(moved) => {
                    complained = false;
                    stuck = None;
                    if moved.copied > 0 {
                        counter!("switchboard_webhook_events_moved_total")
                            .increment(moved.copied as u64);
                    }
                    let seen = moved.copied + moved.already + moved.ignored;
                    if seen >= PASS {
                        continue;
                    }
                }
                Err(failed) => {
                    // Every failed pass is counted (one warning per run
                    // of failures): a mover that keeps failing holds back
                    // contact.assigned and contact.closed.
                    counter!("switchboard_webhook_mover_errors_total", "op" => "move").increment(1);
                    let error = &failed.error;
                    if !complained {
                        warn!(%error, entry = ?failed.entry, "Cannot move routing events to the webhook feeds; will retry.");
                        complained = true;
                    }
                    if self.drop_if_stuck(&mut stuck, &failed).await {
                        continue;
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

    /// Notes a pass that stopped at a routing event Redis refused to copy
    /// over its data (a key of the wrong type, as the dispatcher's
    /// payload reads): at the fifth pass in a row on the same event it is
    /// dropped, counted and logged, or it would hold up every later event
    /// of every partition. True when it was dropped.
    async fn drop_if_stuck(&self, stuck: &mut Option<(String, u32)>, failed: &MoveFailed) -> bool {
        let Some(entry) = failed
            .entry
            .as_ref()
            .filter(|_| about_the_data(&failed.error))
        else {
            *stuck = None;
            return false;
        };
        let tries = match stuck.take() {
            Some((id, tries)) if &id == entry => tries + 1,
            _ => 1,
        };
        if tries < UNREADABLE_TRIES {
            *stuck = Some((entry.clone(), tries));
            return false;
        }
        match self.feed.drop_routing_event(entry).await {
            Ok(()) => {
                counter!("switchboard_webhook_mover_dropped_total").increment(1);
                error!(error = %failed.error, entry = %entry, tries, "A routing event Redis refuses to copy into its feed was dropped: no contact.assigned or contact.closed is sent for it.");
                true
            }
            Err(error) => {
                debug!(%error, "Cannot drop a routing event; will retry.");
                *stuck = Some((entry.clone(), tries));
                false
            }
        }
    }
}

async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use switchboard_core::{ContactId, Partition};
    use switchboard_store::{Store, StoreConfig};
    use switchboard_testkit::RedisServer;
    use switchboard_testkit::counters::Counters;

    async fn routing_event(conn: &mut redis::aio::MultiplexedConnection, contact: &ContactId) {
        let _: String = redis::cmd("XADD")
            .arg("sb:{r}:hooks")
            .arg("*")
            .arg("type")
            .arg("assigned")
            .arg("contact")
            .arg(contact.to_string())
            .arg("agent")
            .arg("olena")
            .arg("channel")
            .arg("chat")
            .query_async(conn)
            .await
            .unwrap();
    }

    /// A routing event whose copy Redis refuses over the data (its
    /// partition's feed is not a stream) is dropped after five passes,
    /// counted, and the events behind it, of other partitions, move on.
    #[tokio::test]
    async fn an_event_that_cannot_be_copied_is_dropped_and_the_rest_move_on() {
        let counters = Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let redis = RedisServer::start();
        let store = Store::new(StoreConfig::local(redis.url(), 2))
            .unwrap()
            .with_event_feed(true);
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (stuck, fine) = (ContactId::new(Partition(1)), ContactId::new(Partition(0)));
        let broken = store.keys().feed(Partition(1));
        let _: () = redis::cmd("SET")
            .arg(&broken)
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .unwrap();
        routing_event(&mut conn, &stuck).await;
        routing_event(&mut conn, &fine).await;
        let shutdown = CancellationToken::new();
        let mover = Mover {
            feed: EventFeed::new(store.clone()),
            holder: "test".into(),
            retention: Duration::from_secs(3600),
        };
        let running = tokio::spawn(mover.run(shutdown.clone()));
        let feed = store.keys().feed(Partition(0));
        let mut copied = 0;
        for _ in 0..200 {
            copied = redis::cmd("XLEN")
                .arg(&feed)
                .query_async(&mut conn)
                .await
                .unwrap();
            if copied > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        running.await.unwrap();
        assert_eq!(copied, 1, "the event behind the stuck one was not moved");
        let left: u64 = redis::cmd("XLEN")
            .arg("sb:{r}:hooks")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(
            counters.get("switchboard_webhook_mover_dropped_total{}"),
            1,
            "{}",
            counters.dump()
        );
        assert!(counters.get("switchboard_webhook_mover_errors_total{op=move}") >= 5);
    }
}
