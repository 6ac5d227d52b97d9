//! KPIs from the facts the routing scripts record (pure: no I/O).
//!
//! A fact counts in a window when it happened within it: `(now − window,
//! now]`. Definitions (docs/records.md):
//!
//! - **offered**: contacts that entered the queue (a transfer to a queue is
//!   an offer to that queue); **answered**: the first accept (or
//!   auto-assignment) after entering; **abandoned**: left while waiting or
//!   offered; **transferred**: sent on by an agent to another queue.
//! - **average speed of answer** (`asa_secs`): mean wait of answered
//!   contacts, from entering the queue to the accept.
//! - **service level**: answered within the queue's `service_level_secs`,
//!   as a share of answered + abandoned (an abandoned contact missed it).
//! - **abandonment rate**: abandoned ÷ (answered + abandoned).
//! - **wait percentiles** (`wait_p50_secs`, `wait_p90_secs`,
//!   `wait_p99_secs`): of answered contacts' waits, nearest rank.
//! - **average handle time** (`aht_secs`): mean from the (last) accept to
//!   the close, over contacts closed in the window (wrap-up not included;
//!   nor calls closed as `call_end_lost`, whose end was never reported).
//! - **first-contact resolution** (`fcr_rate`): the share of contacts
//!   closed in the window whose person did not come back with a new
//!   contact within the FCR window after the close (`reopened`); it may
//!   still fall for up to that window after the close.
//! - **CSAT**: mean score (1–5) and count of ratings given in the window.
//! - **occupancy** (agents and totals): time holding a contact or in
//!   wrap-up ÷ (that + time available and idle), while signed in.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// One fact, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// `moved`: the contact entered this queue by a transfer after it had
    /// been answered: it counts for the queue, not again in the total or
    /// its channel (they count contacts, not the queues they went
    /// through). Likewise its answer and abandonment in that queue.
    Entered {
        contact: String,
        queue: String,
        channel: String,
        moved: bool,
    },
    Answered {
        contact: String,
        queue: String,
        channel: String,
        agent: String,
        wait_ms: u64,
        moved: bool,
    },
    Abandoned {
        contact: String,
        queue: String,
        channel: String,
        wait_ms: u64,
        moved: bool,
    },
    Transferred {
        contact: String,
        queue: String,
        channel: String,
        agent: String,
    },
    Closed {
        contact: String,
        queue: String,
        channel: String,
        agent: String,
        /// `None` when the handle time is not known: a call whose end
        /// was never reported, closed by routing `max_call_secs` after its
        /// answer (disposition `call_end_lost`): counted as closed, not
        /// in the average handle time (it added hours to it).
        handle_ms: Option<u64>,
    },
    Rated {
        queue: String,
        channel: String,
        agent: String,
        score: u8,
    },
    Reopened {
        contact: String,
    },
    Agent {
        agent: String,
        online: bool,
        presence: String,
        busy: bool,
    },
}

impl Fact {
    /// Parses a stored fact; `None` for one this version does not know.
    pub fn parse(fields: &HashMap<String, String>) -> Option<(u64, Fact)> {
        let s = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let n = |k: &str| {
            fields
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u64
        };
        // Every fact is written with its time, and a rating with a score
        // of 1 to 5: one without is damaged (or another version's), and is
        // skipped and counted rather than read as 0 (a fact of 1970, pruned
        // at once; a rating that drags the average below the scale).
        let at = fields
            .get("at")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|at| *at > 0)?;
        let fact = match s("k").as_str() {
            "enqueued" => Fact::Entered {
                contact: s("c"),
                queue: s("q"),
                channel: s("ch"),
                moved: s("x") == "1",
            },
            "answered" => Fact::Answered {
                contact: s("c"),
                queue: s("q"),
                channel: s("ch"),
                agent: s("ag"),
                wait_ms: n("w"),
                moved: s("x") == "1",
            },
            "abandoned" => Fact::Abandoned {
                contact: s("c"),
                queue: s("q"),
                channel: s("ch"),
                wait_ms: n("w"),
                moved: s("x") == "1",
            },
            "transferred" => Fact::Transferred {
                contact: s("c"),
                queue: s("q"),
                channel: s("ch"),
                agent: s("ag"),
            },
            "closed" => Fact::Closed {
                contact: s("c"),
                queue: s("q"),
                channel: s("ch"),
                agent: s("ag"),
                handle_ms: (s("d") != "call_end_lost").then(|| n("h")),
            },
            "rated" => Fact::Rated {
                queue: s("q"),
                channel: s("ch"),
                agent: s("ag"),
                score: fields
                    .get("s")
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|s| (1..=5).contains(s))?,
            },
            "reopened" => Fact::Reopened { contact: s("c") },
            "agent" => Fact::Agent {
                agent: s("ag"),
                online: s("o") == "1",
                presence: s("p"),
                busy: s("b") == "1",
            },
            _ => return None,
        };
        Some((at, fact))
    }
}

/// The figures of one queue, channel, agent or of everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub transferred: u64,
    pub closed: u64,
    pub answered_within_target: u64,
    pub asa_secs: Option<f64>,
    pub service_level: Option<f64>,
    pub abandonment_rate: Option<f64>,
    pub wait_p50_secs: Option<f64>,
    pub wait_p90_secs: Option<f64>,
    pub wait_p99_secs: Option<f64>,
    pub aht_secs: Option<f64>,
    pub reopened: u64,
    pub fcr_rate: Option<f64>,
    pub csat_avg: Option<f64>,
    pub csat_count: u64,
    pub occupancy: Option<f64>,
    #[serde(skip)]
    waits: Vec<u64>,
    #[serde(skip)]
    handle_sum: u64,
    /// Closes whose handle time is known (the average's count).
    #[serde(skip)]
    handled: u64,
    #[serde(skip)]
    score_sum: u64,
    #[serde(skip)]
    busy_ms: u64,
    #[serde(skip)]
    idle_ms: u64,
}

impl Figures {
    fn finish(&mut self) {
        let ratio = |a: u64, b: u64| (b > 0).then(|| round4(a as f64 / b as f64));
        let waits = std::mem::take(&mut self.waits);
        let mut sorted = waits.clone();
        sorted.sort_unstable();
        self.asa_secs = (!waits.is_empty()).then(|| {
            round3(waits.iter().map(|w| *w as f64).sum::<f64>() / waits.len() as f64 / 1000.0)
        });
        let rank = |p: f64| -> Option<f64> {
            if sorted.is_empty() {
                return None;
            }
            // Nearest rank: the smallest wait at or above p of them.
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            Some(round3(sorted[i] as f64 / 1000.0))
        };
        self.wait_p50_secs = rank(0.5);
        self.wait_p90_secs = rank(0.9);
        self.wait_p99_secs = rank(0.99);
        let decided = self.answered + self.abandoned;
        self.service_level = ratio(self.answered_within_target, decided);
        self.abandonment_rate = ratio(self.abandoned, decided);
        self.aht_secs = (self.handled > 0)
            .then(|| round3(self.handle_sum as f64 / self.handled as f64 / 1000.0));
        self.fcr_rate = ratio(self.closed.saturating_sub(self.reopened), self.closed);
        self.csat_avg =
            (self.csat_count > 0).then(|| round3(self.score_sum as f64 / self.csat_count as f64));
        self.occupancy = ratio(self.busy_ms, self.busy_ms + self.idle_ms);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}

/// Every group's figures over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub window: String,
    pub window_secs: u64,
    pub now: u64,
    pub total: Figures,
    pub queues: BTreeMap<String, Figures>,
    pub channels: BTreeMap<String, Figures>,
    pub agents: BTreeMap<String, Figures>,
}

/// An agent's occupancy state from a time on.
#[derive(Debug, Clone, PartialEq)]
struct AgentState {
    at: u64,
    online: bool,
    available: bool,
    busy: bool,
}

/// The facts of the last `keep_ms`, folded on demand.
#[derive(Debug, Default)]
pub struct Kpis {
    /// The stream id of the last fact added (or skipped); empty before the
    /// first.
    position: String,
    facts: VecDeque<(u64, Fact)>,
    reopened: HashMap<String, u64>,
    /// Per agent: their state changes in time order; the first may be older
    /// than every window (the state at its start).
    agents: HashMap<String, Vec<AgentState>>,
}

impl Kpis {
    /// Where the facts read so far end: the stream id to read after (`-`
    /// before the first).
    pub fn position(&self) -> &str {
        if self.position.is_empty() {
            "-"
        } else {
            &self.position
        }
    }

    /// The fact with stream id `id` was added (or skipped).
    pub fn passed(&mut self, id: String) {
        self.position = id;
    }

    /// Whether stream id `id` comes after the position (a fact not added
    /// yet).
    pub fn is_after(&self, id: &str) -> bool {
        fn parts(id: &str) -> Option<(u64, u64)> {
            let (ms, seq) = id.split_once('-')?;
            Some((ms.parse().ok()?, seq.parse().ok()?))
        }
        match (parts(id), parts(&self.position)) {
            (Some(id), Some(position)) => id > position,
            // Before the first fact, or an id that does not parse.
            _ => true,
        }
    }

    /// Adds a fact (facts arrive in about time order).
    pub fn add(&mut self, at: u64, fact: Fact) {
        match &fact {
            Fact::Reopened { contact } => {
                self.reopened.insert(contact.clone(), at);
            }
            Fact::Agent {
                agent,
                online,
                presence,
                busy,
            } => {
                let states = self.agents.entry(agent.clone()).or_default();
                let state = AgentState {
                    at,
                    online: *online,
                    available: presence == "available",
                    busy: *busy,
                };
                let i = states.partition_point(|s| s.at <= at);
                states.insert(i, state);
                return;
            }
            _ => {}
        }
        let i = if self.facts.back().is_none_or(|(t, _)| *t <= at) {
            self.facts.len()
        } else {
            self.facts.partition_point(|(t, _)| *t <= at)
        };
        self.facts.insert(i, (at, fact));
    }

    /// Forgets what happened before `before` (keeping each agent's state at
    /// that time).
    pub fn prune(&mut self, before: u64) {
        while self.facts.front().is_some_and(|(t, _)| *t < before) {
            self.facts.pop_front();
        }
        self.reopened.retain(|_, t| *t >= before);
        for states in self.agents.values_mut() {
            let older = states.partition_point(|s| s.at < before);
            if older > 1 {
                states.drain(..older - 1);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// The figures of `(now − window_ms, now]`; `target_ms(queue)` is a
    /// queue's service-level target.
    pub fn report(
        &self,
        name: &str,
        now: u64,
        window_ms: u64,
        target_ms: &dyn Fn(&str) -> u64,
    ) -> Report {
        let from = now.saturating_sub(window_ms);
        let mut r = Report {
            window: name.to_owned(),
            window_secs: window_ms / 1000,
            now,
            ..Report::default()
        };
        let start = self.facts.partition_point(|(t, _)| *t <= from);
        for (_, fact) in self.facts.range(start..).take_while(|(t, _)| *t <= now) {
            fold(&mut r, fact, &self.reopened, target_ms);
        }
        // Agents' occupancy: integrate their states over the window.
        let mut seen_agents = HashSet::new();
        for (agent, states) in &self.agents {
            let (mut busy, mut idle) = (0u64, 0u64);
            for (i, s) in states.iter().enumerate() {
                let begin = s.at.max(from);
                let end = states.get(i + 1).map_or(now, |n| n.at).min(now);
                if end <= begin || !s.online {
                    continue;
                }
                if s.busy {
                    busy += end - begin;
                } else if s.available {
                    idle += end - begin;
                }
            }
            if busy + idle == 0 && !r.agents.contains_key(agent) {
                continue;
            }
            seen_agents.insert(agent.clone());
            let a = r.agents.entry(agent.clone()).or_default();
            a.busy_ms += busy;
            a.idle_ms += idle;
            r.total.busy_ms += busy;
            r.total.idle_ms += idle;
        }
        r.total.finish();
        for f in r
            .queues
            .values_mut()
            .chain(r.channels.values_mut())
            .chain(r.agents.values_mut())
        {
            f.finish();
        }
        r
    }
}

fn fold(
    r: &mut Report,
    fact: &Fact,
    reopened: &HashMap<String, u64>,
    target_ms: &dyn Fn(&str) -> u64,
) {
    // Every fact counts for the total, its queue and its channel; facts
    // with an agent also for that agent. A contact's entry into another
    // queue after its answer (`moved`: a transfer), and what became of it
    // there, count for that queue and agent only: the total and the
    // channel count each contact once.
    let mut scoped =
        |moved: bool, queue: &str, channel: &str, agent: Option<&str>, f: &dyn Fn(&mut Figures)| {
            if !moved {
                f(&mut r.total);
            }
            if !queue.is_empty() {
                f(r.queues.entry(queue.to_owned()).or_default());
            }
            if !channel.is_empty() && !moved {
                f(r.channels.entry(channel.to_owned()).or_default());
            }
            if let Some(agent) = agent.filter(|a| !a.is_empty()) {
                f(r.agents.entry(agent.to_owned()).or_default());
            }
        };
    match fact {
        Fact::Entered {
            queue,
            channel,
            moved,
            ..
        } => {
            scoped(*moved, queue, channel, None, &|f| f.offered += 1);
        }
        Fact::Answered {
            queue,
            channel,
            agent,
            wait_ms,
            moved,
            ..
        } => {
            let within = *wait_ms <= target_ms(queue);
            scoped(*moved, queue, channel, Some(agent), &|f| {
                f.answered += 1;
                f.waits.push(*wait_ms);
                if within {
                    f.answered_within_target += 1;
                }
            });
        }
        Fact::Abandoned {
            queue,
            channel,
            wait_ms,
            moved,
            ..
        } => {
            let _ = wait_ms;
            scoped(*moved, queue, channel, None, &|f| f.abandoned += 1);
        }
        Fact::Transferred {
            queue,
            channel,
            agent,
            ..
        } => {
            scoped(false, queue, channel, Some(agent), &|f| f.transferred += 1);
        }
        Fact::Closed {
            contact,
            queue,
            channel,
            agent,
            handle_ms,
        } => {
            let again = reopened.contains_key(contact);
            scoped(false, queue, channel, Some(agent), &|f| {
                f.closed += 1;
                if let Some(ms) = handle_ms {
                    f.handled += 1;
                    f.handle_sum = f.handle_sum.saturating_add(*ms);
                }
                if again {
                    f.reopened += 1;
                }
            });
        }
        Fact::Rated {
            queue,
            channel,
            agent,
            score,
        } => {
            scoped(false, queue, channel, Some(agent), &|f| {
                f.csat_count += 1;
                f.score_sum = f.score_sum.saturating_add(u64::from(*score));
            });
        }
        Fact::Reopened { .. } | Fact::Agent { .. } => {}
    }
}

#[cfg(test)]
mod tests;
