//! How many websocket tickets each agent may ask for: each is a Redis key
//! for 15 s, so an agent's script asking in a loop would otherwise fill
//! Redis with them. A console asks once per connect attempt, and backs off
//! between attempts; [`PER_MINUTE`] leaves it room for a burst of retries.
//! In memory, per instance, as the websocket's frame allowance is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use switchboard_channel::limits::Bucket;

/// Tickets one agent may be issued per minute on one instance.
pub(crate) const PER_MINUTE: u32 = 30;

/// Agents' ticket buckets.
#[derive(Debug, Default)]
pub(crate) struct Allowance {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Allowance {
    /// Whether `agent` may have one more ticket now.
    pub(crate) fn take(&self, agent: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= 1024 && !buckets.contains_key(agent) {
            // Agents idle for a minute are back to a full bucket: forgotten.
            buckets.retain(|_, bucket| !bucket.full(now));
        }
        buckets
            .entry(agent.to_owned())
            .or_insert_with(|| Bucket::new(PER_MINUTE))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_agent_has_its_own_tickets_per_minute() {
        let allowance = Allowance::default();
        let start = Instant::now();
        for n in 0..PER_MINUTE {
            assert!(allowance.take("olena", start), "ticket {n}");
        }
        assert!(!allowance.take("olena", start), "one more");
        assert!(allowance.take("petro", start), "another agent");
        assert!(
            allowance.take("olena", start + Duration::from_secs(2)),
            "refilled, one every 2 s"
        );
    }

    #[test]
    fn idle_agents_are_forgotten() {
        let allowance = Allowance::default();
        let start = Instant::now();
        for n in 0..1024 {
            assert!(allowance.take(&format!("agent-{n}"), start));
        }
        let later = start + Duration::from_secs(120);
        assert!(allowance.take("one-more", later));
        let buckets = allowance.buckets.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(buckets.len(), 1, "the idle ones are gone");
    }
}
