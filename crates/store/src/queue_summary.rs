//! Each queue's waiting contacts and oldest wait, for supervisors' views
//! and the KPI sampler, without reading every waiting contact.
//!
//! The routing leader holds every waiting contact in memory; it publishes
//! each queue's count and oldest `queued_at` about once a second
//! (`<prefix>:{r}:queue_summary`, one JSON value that expires after
//! [`SUMMARY_TTL`]). Readers use it while it is fresh; without one (no
//! leader for a while, or an instance too old to publish it) they read the
//! waiting contacts themselves, as before: four fields each, not the whole
//! record.

use crate::{RoutingState, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a published summary lives; older, readers count themselves.
pub const SUMMARY_TTL: Duration = Duration::from_secs(5);

/// One queue's waiting contacts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueWaiting {
    /// Contacts waiting in the queue.
    pub waiting: u64,
    /// When the longest-waiting of them entered the queue (ms since the
    /// epoch; a transfer or a requeue starts the wait again); 0 when none.
    pub oldest_queued_at: u64,
}

impl QueueWaiting {
    /// Counts one more contact, queued at `queued_at` (ms).
    pub fn add(&mut self, queued_at: u64) {
        self.waiting += 1;
        if self.oldest_queued_at == 0 || queued_at < self.oldest_queued_at {
            self.oldest_queued_at = queued_at;
        }
    }

    /// The longest wait at `now` (ms); 0 when nothing waits.
    pub fn longest_wait_ms(&self, now: u64) -> u64 {
        if self.waiting == 0 {
            0
        } else {
            now.saturating_sub(self.oldest_queued_at)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Published {
    /// When the leader counted, ms.
    at: u64,
    queues: BTreeMap<String, QueueWaiting>,
}

impl RoutingState {
    /// Publishes the leader's count of each queue (every queue of its
    /// plan, empty ones included), as of `at` (ms).
    pub async fn publish_queue_summary(
        &self,
        at: u64,
        queues: BTreeMap<String, QueueWaiting>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_string(&Published { at, queues })
            .map_err(|e| StoreError::Protocol(format!("queue summary: {e}")))?;
        let mut conn = self.store().conn();
        self.store()
            .bounded(
                redis::cmd("SET")
                    .arg(self.store().keys().route("queue_summary"))
                    .arg(value)
                    .arg("PX")
                    .arg(u64::try_from(SUMMARY_TTL.as_millis()).unwrap_or(5000))
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    /// Each queue's waiting contacts: the leader's summary while it is
    /// fresh (at most [`SUMMARY_TTL`] old by `now`), else counted from the
    /// waiting contacts themselves. Queues with nothing waiting may be
    /// missing; callers list their plan's queues.
    pub async fn waiting_by_queue(
        &self,
        now: u64,
    ) -> Result<BTreeMap<String, QueueWaiting>, StoreError> {
        let mut conn = self.store().conn();
        let published: Option<String> = self
            .store()
            .bounded(
                redis::cmd("GET")
                    .arg(self.store().keys().route("queue_summary"))
                    .query_async(&mut conn),
            )
            .await?;
        let ttl = u64::try_from(SUMMARY_TTL.as_millis()).unwrap_or(5000);
        if let Some(p) = published.and_then(|p| serde_json::from_str::<Published>(&p).ok())
            && p.at.saturating_add(ttl) >= now
        {
            metrics::counter!("switchboard_store_queue_summaries_total", "source" => "leader")
                .increment(1);
            return Ok(p.queues);
        }
        metrics::counter!("switchboard_store_queue_summaries_total", "source" => "counted")
            .increment(1);
        let mut out: BTreeMap<String, QueueWaiting> = BTreeMap::new();
        for (queue, queued_at) in self.waiting_queues().await? {
            out.entry(queue).or_default().add(queued_at);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_wait_is_kept() {
        let mut q = QueueWaiting::default();
        assert_eq!(q.longest_wait_ms(10_000), 0);
        q.add(5_000);
        q.add(3_000);
        q.add(7_000);
        assert_eq!(
            q,
            QueueWaiting {
                waiting: 3,
                oldest_queued_at: 3_000
            }
        );
        assert_eq!(q.longest_wait_ms(10_000), 7_000);
    }
}
