//! The orderings: agents within a pool (by the queue's strategy) and
//! contacts within a waiting set (by priority and waiting time). Both are
//! plain tuples compared lowest first, so B-trees keep them sorted.

use crate::plan::{Queue, Strategy};

/// An agent's place in a pool: lower is better. The last field is the
/// agent's index, which makes keys unique and ties deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentKey(u64, u64, u64, u32);

impl AgentKey {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        strategy: Strategy,
        score: u32,
        total_proficiency: u32,
        occupancy_ppm: u64,
        idle_since: u64,
        last_offer_at: u64,
        agent: u32,
    ) -> AgentKey {
        let high_first = |v: u32| u64::from(u32::MAX - v);
        match strategy {
            Strategy::BestMatch => AgentKey(high_first(score), occupancy_ppm, idle_since, agent),
            Strategy::LeastOccupied => AgentKey(occupancy_ppm, idle_since, 0, agent),
            // `idle_since` is when the agent last had nothing to do: an
            // agent holding work keeps the time they first took some, which
            // would put the busiest first. Agents with nothing first, by
            // how long; then the busy ones, by their last offer.
            Strategy::LongestIdle => {
                let busy = occupancy_ppm > 0;
                let since = if busy { last_offer_at } else { idle_since };
                AgentKey(u64::from(busy), since, 0, agent)
            }
            Strategy::RoundRobin => AgentKey(last_offer_at, 0, 0, agent),
            Strategy::MostSkilled => AgentKey(
                high_first(total_proficiency),
                occupancy_ppm,
                idle_since,
                agent,
            ),
        }
    }

    pub fn agent(&self) -> u32 {
        self.3
    }
}

/// A waiting contact's place: lower is served first.
///
/// `band` is minus the priority for strict-priority queues and 0 otherwise;
/// `score` is the time the customer started waiting, moved earlier by
/// `priority × priority_weight` for other queues. So without strict
/// priority one priority level is worth `priority_weight_secs` of waiting:
/// an old low-priority contact eventually goes before a new high-priority
/// one (aging), and nobody starves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    band: i64,
    score: i64,
    seq: u64,
}

impl Rank {
    pub fn new(queue: &Queue, priority: i32, waiting_since: u64, seq: u64) -> Rank {
        let since = i64::try_from(waiting_since).unwrap_or(i64::MAX);
        if queue.strict_priority {
            Rank {
                band: -i64::from(priority),
                score: since,
                seq,
            }
        } else {
            let weight = i64::try_from(queue.priority_weight_ms).unwrap_or(i64::MAX);
            Rank {
                band: 0,
                score: since.saturating_sub(i64::from(priority).saturating_mul(weight)),
                seq,
            }
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}
