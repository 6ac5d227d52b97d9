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
        // `idle_since` is when the agent last had nothing to do: an agent
        // holding work keeps the time they first took some, which would put
        // the one working longest first. For a busy agent "idle" is the
        // time since their last offer (docs/routing.md). Where it breaks a
        // tie of equal occupancy, both agents are busy or both are not.
        let busy = occupancy_ppm > 0;
        let idle = if busy { last_offer_at } else { idle_since };
        match strategy {
            Strategy::BestMatch => AgentKey(high_first(score), occupancy_ppm, idle, agent),
            Strategy::LeastOccupied => AgentKey(occupancy_ppm, idle, 0, agent),
            // Agents with nothing to do first, by how long; then the busy
            // ones, by their last offer.
            Strategy::LongestIdle => AgentKey(u64::from(busy), idle, 0, agent),
            Strategy::RoundRobin => AgentKey(last_offer_at, 0, 0, agent),
            Strategy::MostSkilled => {
                AgentKey(high_first(total_proficiency), occupancy_ppm, idle, agent)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two equally skilled agents each holding one chat: the tie goes to
    /// the one whose last offer is older, not to the one who has been
    /// working longest (whose `idle_since` is from before all their work).
    #[test]
    fn a_tie_between_busy_agents_goes_to_the_longest_since_their_last_offer() {
        let (nine, five_to_eleven, ten_to_eleven, eleven) =
            (32_400_000, 39_300_000, 39_000_000, 39_600_000);
        for strategy in [
            Strategy::BestMatch,
            Strategy::LeastOccupied,
            Strategy::MostSkilled,
            Strategy::LongestIdle,
        ] {
            // Working since nine, offered a chat a minute ago.
            let a = AgentKey::new(strategy, 3, 3, 333_333, nine, eleven - 60_000, 0);
            // Idle until ten to eleven, offered one at five to eleven.
            let b = AgentKey::new(strategy, 3, 3, 333_333, ten_to_eleven, five_to_eleven, 1);
            assert!(b < a, "{strategy:?}");
            // With nothing to do, longest idle first, as before.
            let a = AgentKey::new(strategy, 3, 3, 0, nine, eleven - 60_000, 0);
            let b = AgentKey::new(strategy, 3, 3, 0, ten_to_eleven, five_to_eleven, 1);
            assert!(a < b, "{strategy:?}");
        }
    }
}
