//! The selection engine: which agent gets which contact. Pure, no I/O, no
//! clock (callers pass `now`), so it is tested by properties and measured
//! by benchmarks.
//!
//! ## How it stays fast
//!
//! - Every agent sits in one **ring** per queue: the first step of the queue
//!   at which its skills qualify (`plan.rs`). For each (queue, ring,
//!   channel) a **pool** holds the agents who could take a contact of that
//!   channel *now* (available, connected, below capacity, not held by a
//!   call), ordered by the queue's strategy. The best agent for a contact at
//!   step `k` is the best head of rings `0..=k`: a few B-tree lookups,
//!   whatever the number of agents.
//! - Waiting contacts sit in one ordered set per (queue, step, channel),
//!   ordered by rank. An agent who frees up looks at the heads of the steps
//!   its ring reaches, in the queues it serves: independent of the number of
//!   waiting contacts.
//! - Timers (overflow steps, the end of a sticky wait) are a time-ordered
//!   set; [`Engine::advance`] applies those that are due.
//! - Business hours: a queue whose schedule is closed is skipped by every
//!   match (its contacts stay in place, in order); [`Engine::advance`] and
//!   [`Engine::next_decision`] notice openings and closings at the times
//!   the schedules give, and at an opening the queue's contacts are matched
//!   again, best rank first. Overflow steps count only the time the queue
//!   was open, so a contact that waited overnight starts the morning at the
//!   step it had reached the evening before.
//!
//! ## What the caller does with a decision
//!
//! [`Engine::next_decision`] returns one offer and applies it to the
//! engine's own view (the contact leaves the queue, the agent's load goes
//! up). The leader then commits it to Redis with a script that checks the
//! agent's capacity and the contact's state again; Redis is the truth, this
//! is a fast index of it. A refused commit puts the contact back
//! ([`Engine::add_contact`]) and refreshes the agent.

mod explain;
mod keys;

pub use explain::{Candidate, Exclusions, Explanation};

use crate::plan::{AfterHours, Plan};
use keys::{AgentKey, Rank};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::{AgentId, ChannelKind, ContactId};

fn ch(c: ChannelKind) -> usize {
    match c {
        ChannelKind::Chat => 0,
        ChannelKind::Email => 1,
        ChannelKind::Social => 2,
        ChannelKind::Voice => 3,
    }
}

const VOICE: usize = 3;

/// Waiting contacts, best rank first (the `u32` is the contact's slot).
type RankedContacts = BTreeSet<(Rank, u32)>;

/// Why a skilled agent cannot take a contact of a channel; index 0 means it
/// can.
const REASONS: [&str; 7] = [
    "available",
    "offline",
    "away",
    "wrap_up",
    "disconnected",
    "at_capacity",
    "on_call",
];

fn reason_ix(r: Result<(), &'static str>) -> usize {
    match r {
        Ok(()) => 0,
        Err(e) => REASONS.iter().position(|x| *x == e).unwrap_or(1),
    }
}

/// An agent's presence as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Availability {
    #[default]
    Offline,
    Available,
    Away,
    WrapUp,
}

/// What the engine knows about an agent that does not change with work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    pub id: AgentId,
    /// Skill name → proficiency 1–5.
    pub skills: Vec<(String, u8)>,
    /// Contacts per channel held at once.
    pub capacity: [u32; 4],
    pub total_capacity: Option<u32>,
}

/// An agent's changing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStatus {
    pub availability: Availability,
    /// A session (websocket or recent HTTP heartbeat) is live.
    pub connected: bool,
    /// Contacts held (offered or assigned) per channel.
    pub load: [u32; 4],
    /// When the agent last had nothing to do, ms (longest idle).
    pub idle_since: u64,
    /// When the agent was last offered a contact, ms (round robin).
    pub last_offer_at: u64,
    /// Until when the agent's session is live, ms (0: unknown). With the
    /// reconnect grace, how long a lost connection may still come back.
    pub online_until: u64,
}

/// A contact waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingContact {
    pub id: ContactId,
    pub channel: ChannelKind,
    pub queue: usize,
    /// The queue's priority plus the rule's.
    pub priority: i32,
    /// When the customer started waiting, ms (aging; kept across moves).
    pub waiting_since: u64,
    /// When it entered its current queue, ms (overflow steps count from here).
    pub queued_at: u64,
    /// The rule that placed it, for explanations.
    pub rule: Option<String>,
    /// Offer it to this agent first, until the deadline (ms).
    pub sticky: Option<(AgentId, u64)>,
    /// The sticky agent is the customer's last agent (remembered at a
    /// close), not the target of a transfer: the contact waits for them
    /// only if they qualify for its queue at one of its steps. A transfer
    /// to an agent is the sender's choice and is not checked.
    pub sticky_remembered: bool,
    /// Agents who declined or missed it: not offered it again until
    /// [`Engine::set_exclusion`]'s time has passed since `excluded_at`.
    pub excluded: Vec<AgentId>,
    /// When the latest agent was excluded, ms (0: unknown).
    pub excluded_at: u64,
}

impl StepAction {
    /// The contact the step is about.
    pub fn contact(&self) -> &ContactId {
        match self {
            StepAction::Overflowed { contact, .. }
            | StepAction::AutoAnswer { contact, .. }
            | StepAction::Moved { contact, .. }
            | StepAction::StickyExpired { contact, .. }
            | StepAction::ClosedAfterHours { contact, .. } => contact,
        }
    }
}

/// One offer to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub contact: WaitingContact,
    pub agent: AgentId,
    pub step: usize,
    pub explanation: Explanation,
}

/// Something a timer changed, to be recorded or acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// The contact reached overflow step `step` of its queue.
    Overflowed {
        contact: ContactId,
        queue: usize,
        step: usize,
    },
    /// The step says: answer the customer automatically.
    AutoAnswer {
        contact: ContactId,
        queue: usize,
        step: usize,
        text: String,
    },
    /// The step moved the contact to another queue.
    Moved {
        contact: ContactId,
        from: usize,
        to: usize,
    },
    /// The sticky wait ended; the contact is open to every agent.
    StickyExpired { contact: ContactId, agent: AgentId },
    /// The contact's queue closed (business hours) while it waited, and
    /// the queue says `after_hours = "close"`: the leader answers and ends
    /// it (the engine keeps it until the routing event says it ended).
    ClosedAfterHours { contact: ContactId, queue: usize },
}

struct AgentSlot {
    profile: AgentProfile,
    /// Skill id → proficiency, sorted by skill id.
    skills: Vec<(u16, u8)>,
    total_proficiency: u32,
    status: AgentStatus,
    /// Per queue: the first step the agent qualifies at, and its score.
    rings: Vec<Option<(u8, u32)>>,
    /// Keys currently inserted in pools: (queue, channel, key).
    inserted: Vec<(usize, usize, AgentKey)>,
    removed: bool,
}

fn saturating_sum(values: &[u32; 4]) -> u32 {
    values.iter().fold(0u32, |a, b| a.saturating_add(*b))
}

impl AgentSlot {
    fn total_load(&self) -> u32 {
        saturating_sum(&self.status.load)
    }

    fn total_cap(&self) -> u32 {
        // Saturating: records written before capacities were bounded (or
        // by hand) may hold anything.
        self.profile
            .total_capacity
            .unwrap_or_else(|| saturating_sum(&self.profile.capacity))
    }

    fn occupancy_ppm(&self) -> u64 {
        let cap = u64::from(self.total_cap().max(1));
        u64::from(self.total_load()) * 1_000_000 / cap
    }

    /// Whether it can be offered a contact of channel `c` now.
    fn can_take(&self, c: usize, interrupt_voice: &[bool; 4]) -> Result<(), &'static str> {
        match self.status.availability {
            Availability::Available => {}
            Availability::Offline => return Err("offline"),
            Availability::Away => return Err("away"),
            Availability::WrapUp => return Err("wrap_up"),
        }
        if !self.status.connected {
            return Err("disconnected");
        }
        if self.status.load[c] >= self.profile.capacity[c] {
            return Err("at_capacity");
        }
        if self.total_load() >= self.total_cap() {
            return Err("at_capacity");
        }
        if c != VOICE && self.status.load[VOICE] > 0 && !interrupt_voice[c] {
            return Err("on_call");
        }
        Ok(())
    }

    fn qualifies(&self, req: &[(u16, u8)]) -> bool {
        req.iter().all(|(skill, min)| {
            self.skills
                .binary_search_by_key(skill, |(s, _)| *s)
                .is_ok_and(|i| self.skills[i].1 >= *min)
        })
    }

    fn score(&self, req: &[(u16, u8)]) -> u32 {
        req.iter()
            .filter_map(|(skill, _)| {
                self.skills
                    .binary_search_by_key(skill, |(s, _)| *s)
                    .ok()
                    .map(|i| u32::from(self.skills[i].1))
            })
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Queue { queue: usize, step: usize },
    Sticky { agent: u32 },
}

struct ContactSlot {
    contact: WaitingContact,
    /// The queue it came to and its `queued_at` there, as its record keeps
    /// them: an overflow step's move is the leader's alone, so the figures
    /// supervisors see name the queue the contact came to (as counted from
    /// the records, while no leader publishes them).
    came_to: (usize, u64),
    step: usize,
    place: Place,
    rank: Rank,
    timer: Option<u64>,
    /// When its exclusions lapse (an entry of `lapses`).
    lapse: Option<u64>,
}

/// The engine. See the module documentation.
pub struct Engine {
    plan: Arc<Plan>,
    interrupt_voice: [bool; 4],
    agents: Vec<AgentSlot>,
    agent_ix: HashMap<AgentId, u32>,
    contacts: Vec<Option<ContactSlot>>,
    free_contacts: Vec<u32>,
    contact_ix: HashMap<ContactId, u32>,
    /// `pools[queue][ring][channel]`
    pools: Vec<Vec<[BTreeSet<AgentKey>; 4]>>,
    /// `counts[queue][ring][channel][reason]`: skilled agents by why they
    /// can or cannot take a contact, for explanations.
    counts: Vec<Vec<[[u32; 7]; 4]>>,
    /// `waiting[queue][step][channel]`
    waiting: Vec<Vec<[RankedContacts; 4]>>,
    /// Contacts waiting for one agent (sticky), by that agent.
    sticky: HashMap<u32, BTreeSet<(Rank, u32)>>,
    timers: BTreeSet<(u64, u32)>,
    /// When contacts' exclusions lapse (see `set_exclusion`).
    lapses: BTreeSet<(u64, u32)>,
    /// How long a decline or a miss excludes the agent from the contact,
    /// ms; 0: for as long as the contact waits.
    exclusion_ms: u64,
    /// How long after its session's end a disconnected agent may come back
    /// (`[routing] reconnect_grace_secs`), ms.
    grace_ms: u64,
    /// Contacts to match, best rank first: new or changed contacts, and
    /// the best contact of each agent who freed up.
    dirty_contacts: BTreeSet<(Rank, u32)>,
    /// Agents who may have room for work, not yet looked at.
    dirty_agents: VecDeque<u32>,
    /// Agents who looked and found a contact, by that contact: if someone
    /// else gets it, they look again.
    targets: HashMap<u32, Vec<u32>>,
    next_seq: u64,
    /// Per queue: open now (by the last look at its schedule).
    open: Vec<bool>,
    /// Per queue: when to look at its schedule again (`u64::MAX`: never,
    /// no schedule).
    hours_next: Vec<u64>,
    /// The earliest of `hours_next`.
    hours_due: u64,
    /// Contacts whose queue just closed and ends them then, for `advance`.
    closing: Vec<(ContactId, usize)>,
    /// Automatic answers of overflow steps a contact passed while this
    /// engine did not hold it (see `add_contact_catching_up`), for the next
    /// `advance`.
    catch_up: Vec<StepAction>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("agents", &self.agent_ix.len())
            .field("waiting", &self.contact_ix.len())
            .finish_non_exhaustive()
    }
}

/// How far a decision scans past agents a contact excluded (declined) or
/// contacts that excluded an agent, before giving up on that set.
const SCAN_LIMIT: usize = 64;

/// The most queue moves one catch-up follows: a bound on the work of a
/// reload (every hop looks at a queue's hours), far above what a real wait
/// gives with moves of minutes.
const MAX_CATCH_UP_HOPS: usize = 1_000;
/// Candidates kept in an explanation.
const EXPLAIN_TOP: usize = 5;

impl Engine {
    /// `interrupt_voice`: channels that may be offered to an agent on a call.
    pub fn new(plan: Arc<Plan>, interrupt_voice: &[ChannelKind]) -> Engine {
        let mut iv = [false; 4];
        for c in interrupt_voice {
            iv[ch(*c)] = true;
        }
        let pools = plan
            .queues
            .iter()
            .map(|q| q.steps.iter().map(|_| Default::default()).collect())
            .collect();
        let counts = plan
            .queues
            .iter()
            .map(|q| q.steps.iter().map(|_| [[0; 7]; 4]).collect())
            .collect();
        let waiting = plan
            .queues
            .iter()
            .map(|q| q.steps.iter().map(|_| Default::default()).collect())
            .collect();
        // Scheduled queues count as closed until the first look at `now`.
        let open: Vec<bool> = plan.queues.iter().map(|q| q.schedule.is_none()).collect();
        let hours_next: Vec<u64> = open.iter().map(|o| if *o { u64::MAX } else { 0 }).collect();
        let hours_due = hours_next.iter().copied().min().unwrap_or(u64::MAX);
        Engine {
            plan,
            interrupt_voice: iv,
            agents: Vec::new(),
            agent_ix: HashMap::new(),
            contacts: Vec::new(),
            free_contacts: Vec::new(),
            contact_ix: HashMap::new(),
            pools,
            counts,
            waiting,
            sticky: HashMap::new(),
            timers: BTreeSet::new(),
            lapses: BTreeSet::new(),
            exclusion_ms: 0,
            grace_ms: 0,
            dirty_contacts: BTreeSet::new(),
            dirty_agents: VecDeque::new(),
            targets: HashMap::new(),
            next_seq: 0,
            open,
            hours_next,
            hours_due,
            closing: Vec::new(),
            catch_up: Vec::new(),
        }
    }

    /// How long a decline or a missed offer keeps the agent from the
    /// contact, counted from the latest exclusion (`excluded_at`): then
    /// every agent it excluded may be offered it again, so that a contact
    /// that a small team declined is not stranded. 0: for as long as it
    /// waits.
    pub fn set_exclusion(&mut self, lasts: Duration) {
        self.exclusion_ms = u64::try_from(lasts.as_millis()).unwrap_or(u64::MAX);
    }

    /// How long a disconnected agent's returning customers keep waiting
    /// for them (`[routing] reconnect_grace_secs`): a contact added
    /// meanwhile (at a reload of the routing state, say) waits too.
    pub fn set_reconnect_grace(&mut self, grace: Duration) {
        self.grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    }

    /// Whether queue `queue` was open at the last look at its schedule.
    pub fn is_queue_open(&self, queue: usize) -> bool {
        self.open.get(queue).copied().unwrap_or(false)
    }

    /// Looks at the schedules due at `now`: a queue that opened has its
    /// contacts matched again (best rank first).
    fn update_hours(&mut self, now: u64) {
        if now < self.hours_due {
            return;
        }
        let mut due = u64::MAX;
        for q in 0..self.plan.queues.len() {
            if self.hours_next[q] <= now
                && let Some(schedule) = self.plan.queues[q].schedule.clone()
            {
                let (open, change) = schedule.next_change(now);
                self.hours_next[q] = change
                    .unwrap_or_else(|| now.saturating_add(86_400_000))
                    .max(now.saturating_add(1));
                let opened = open && !self.open[q];
                let closed = !open && self.open[q];
                self.open[q] = open;
                if closed && self.plan.queues[q].after_hours == AfterHours::Close {
                    self.closing.extend(
                        self.contacts
                            .iter()
                            .flatten()
                            .filter(|s| s.contact.queue == q)
                            .map(|s| (s.contact.id, q)),
                    );
                }
                if opened {
                    let ixs: Vec<u32> = self
                        .contacts
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.contact.queue == q))
                        .filter_map(|(i, _)| u32::try_from(i).ok())
                        .collect();
                    for ix in ixs {
                        self.mark_contact(ix);
                    }
                }
            }
            due = due.min(self.hours_next[q]);
        }
        self.hours_due = due;
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn waiting_count(&self) -> usize {
        self.contact_ix.len()
    }

    pub fn agent_count(&self) -> usize {
        self.agent_ix.len()
    }

    /// Whether `id` waits in a queue that is closed now and closes its
    /// contacts (`after_hours = "close"`); `None` when it does not wait
    /// here at all.
    pub fn waits_where_closed(&self, id: &ContactId) -> Option<bool> {
        let slot = self
            .contacts
            .get(*self.contact_ix.get(id)? as usize)?
            .as_ref()?;
        let q = slot.contact.queue;
        Some(!self.open[q] && self.plan.queues[q].after_hours == AfterHours::Close)
    }

    /// Per queue of the plan (by index): how many contacts wait in it, and
    /// the earliest `queued_at` among them (0 when none), by the queue each
    /// came to (an overflow step's move is not counted: docs/routing.md).
    /// One pass over the waiting contacts.
    pub fn queue_summary(&self) -> Vec<(u64, u64)> {
        let mut out = vec![(0u64, 0u64); self.plan.queues.len()];
        for slot in self.contacts.iter().flatten() {
            let (queue, queued_at) = slot.came_to;
            let Some((waiting, oldest)) = out.get_mut(queue) else {
                continue;
            };
            *waiting += 1;
            // Older records lack `queued_at`: their creation, as the
            // counted figures take it.
            let at = match queued_at {
                0 => slot.contact.waiting_since,
                at => at,
            };
            if *oldest == 0 || at < *oldest {
                *oldest = at;
            }
        }
        out
    }

    pub fn is_waiting(&self, id: &ContactId) -> bool {
        self.contact_ix.contains_key(id)
    }

    pub fn agent_status(&self, id: &AgentId) -> Option<AgentStatus> {
        let ix = *self.agent_ix.get(id)?;
        Some(self.agents[ix as usize].status)
    }

    /// Adds or replaces an agent's profile (skills, capacity).
    pub fn upsert_agent(&mut self, profile: AgentProfile, status: AgentStatus) {
        let ix = match self.agent_ix.get(&profile.id).copied() {
            Some(ix) => {
                self.unpool(ix);
                ix
            }
            None => {
                let ix = u32::try_from(self.agents.len()).unwrap_or(u32::MAX);
                self.agents.push(AgentSlot {
                    profile: profile.clone(),
                    skills: Vec::new(),
                    total_proficiency: 0,
                    status,
                    rings: Vec::new(),
                    inserted: Vec::new(),
                    removed: false,
                });
                self.agent_ix.insert(profile.id.clone(), ix);
                ix
            }
        };
        // A skill listed twice counts once, the last level winning.
        let levels: BTreeMap<&str, u8> = profile
            .skills
            .iter()
            .map(|(name, level)| (name.as_str(), *level))
            .collect();
        let skills: Vec<(u16, u8)> = {
            let mut v: Vec<(u16, u8)> = levels
                .iter()
                .filter_map(|(name, level)| self.plan.skills.get(name).map(|id| (id, *level)))
                .collect();
            v.sort_unstable();
            v
        };
        let total_proficiency = levels.values().map(|l| u32::from(*l)).sum();
        let slot = &mut self.agents[ix as usize];
        slot.profile = profile;
        slot.skills = skills;
        slot.total_proficiency = total_proficiency;
        slot.status = status;
        slot.removed = false;
        let rings = self.compute_rings(ix);
        self.agents[ix as usize].rings = rings;
        self.repool(ix);
    }

    /// Updates an agent's changing state (presence, load, connection). An
    /// agent who goes offline lets go of the returning customers waiting
    /// for them: they would wait the whole sticky wait for nobody (as one
    /// added then does not wait at all). A lost connection does not (a
    /// page reload): the leader lets them go once the reconnect grace has
    /// passed ([`Engine::release_sticky_for`]).
    pub fn update_agent(&mut self, id: &AgentId, status: AgentStatus) -> bool {
        let Some(&ix) = self.agent_ix.get(id) else {
            return false;
        };
        let signed_out = status.availability == Availability::Offline;
        self.unpool(ix);
        self.agents[ix as usize].status = status;
        self.repool(ix);
        if signed_out {
            self.release_sticky_of(ix);
        }
        true
    }

    /// Releases the contacts waiting for `id` (sticky) to the queue.
    pub fn release_sticky_for(&mut self, id: &AgentId) {
        if let Some(&ix) = self.agent_ix.get(id) {
            self.release_sticky_of(ix);
        }
    }

    /// Releases the contacts waiting for agent `ix` to the queue.
    fn release_sticky_of(&mut self, ix: u32) {
        if let Some(set) = self.sticky.remove(&ix) {
            for (_, c) in set {
                self.release_sticky(c);
            }
        }
    }

    /// Forgets an agent (deleted). Contacts sticky to it are released.
    pub fn remove_agent(&mut self, id: &AgentId) {
        let Some(&ix) = self.agent_ix.get(id) else {
            return;
        };
        self.unpool(ix);
        self.agent_ix.remove(id);
        self.agents[ix as usize].removed = true;
        self.agents[ix as usize].status.availability = Availability::Offline;
        self.release_sticky_of(ix);
    }

    /// Adds a waiting contact (idempotent: a contact already waiting is
    /// left as it is).
    pub fn add_contact(&mut self, contact: WaitingContact, now: u64) {
        self.add_contact_catching_up(contact, now, u64::MAX);
    }

    /// As [`add_contact`](Self::add_contact), and the automatic answers of
    /// the steps of its queue that came due from `since` until `now` are
    /// produced by the next [`advance`](Self::advance): steps a contact
    /// passed while no engine held it (a failover, a reload, an offer that
    /// lasted past the step). The leader sends each answer once (guarded in
    /// Redis), so one already sent costs a look-up, nothing more.
    pub fn add_contact_catching_up(&mut self, contact: WaitingContact, now: u64, since: u64) {
        self.add_contact_recording(contact, now, since, u64::MAX);
    }

    /// As [`add_contact_catching_up`](Self::add_contact_catching_up) with
    /// `since` 0, for a contact back from an offer made at `offered_at`:
    /// the overflow steps and moves that came due while it was offered are
    /// also recorded (by the next `advance`), so that its routing record
    /// says how it came to the queue and step of its next offer. (Those
    /// due before the offer were recorded when they came due.)
    pub fn add_contact_after_offer(&mut self, contact: WaitingContact, now: u64, offered_at: u64) {
        self.add_contact_recording(contact, now, 0, offered_at.saturating_add(1));
    }

    fn add_contact_recording(
        &mut self,
        mut contact: WaitingContact,
        now: u64,
        since: u64,
        steps_since: u64,
    ) {
        if self.contact_ix.contains_key(&contact.id) || contact.queue >= self.plan.queues.len() {
            return;
        }
        // A contact that waited past its queue's move (reloaded after a
        // failover) is where the moves put it. Moves may go round (`a` to
        // `b`, `b` back to `a`), and every hop needs more waiting (a step is
        // at least 1 s of open time), so this ends. The hops are bounded
        // all the same (each looks at the queue's hours): past the bound,
        // the contact makes its move now and starts the next queue afresh,
        // so that it keeps moving (left at a moving step, it never would).
        // Older records lack `queued_at`: counted from their creation, as
        // the queue summary does (from 0, the epoch, every step was due).
        if contact.queued_at == 0 {
            contact.queued_at = contact.waiting_since;
        }
        let came_to = (contact.queue, contact.queued_at);
        let mut step;
        let mut hops = 0;
        loop {
            let queue = &self.plan.queues[contact.queue];
            // Overflow steps count only the time the queue was open.
            let waited_in_queue = if queue.steps.len() > 1 {
                queue.open_ms(contact.queued_at, now)
            } else {
                0
            };
            step = queue
                .steps
                .iter()
                .rposition(|s| s.after_ms <= waited_in_queue)
                .unwrap_or(0);
            match queue.steps[step].move_to {
                Some(to) => {
                    // The answers of the steps it passed in this queue,
                    // the moving step's included, before it leaves.
                    self.catch_up_steps(&contact, step, steps_since, now, Some(to));
                    self.catch_up_answers(&contact, step, since, now);
                    let queue = &self.plan.queues[contact.queue];
                    contact.queued_at = if hops + 1 < MAX_CATCH_UP_HOPS {
                        queue
                            .due(contact.queued_at, queue.steps[step].after_ms)
                            .unwrap_or(now)
                            .min(now)
                    } else {
                        now
                    };
                    contact.priority = contact
                        .priority
                        .saturating_sub(queue.priority)
                        .saturating_add(self.plan.queues[to].priority);
                    contact.queue = to;
                    hops += 1;
                }
                _ => break,
            }
        }
        self.catch_up_steps(&contact, step, steps_since, now, None);
        self.catch_up_answers(&contact, step, since, now);
        let queue = &self.plan.queues[contact.queue];
        let rank = Rank::new(
            queue,
            contact.priority,
            contact.waiting_since,
            self.next_seq,
        );
        self.next_seq += 1;
        let ix = match self.free_contacts.pop() {
            Some(ix) => ix,
            None => {
                self.contacts.push(None);
                u32::try_from(self.contacts.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // Exclusions that lapsed already are forgotten; the others lapse
        // by `advance`.
        let mut contact = contact;
        let lapse = self.lapse_of(&contact);
        if lapse.is_some_and(|t| t <= now) {
            contact.excluded.clear();
        }
        let lapse = lapse.filter(|t| *t > now);
        // Not an agent who declined or missed this contact: the store
        // would refuse the offer (`declined_before`) and the contact would
        // wait for nobody until the sticky deadline. Nor one who is signed
        // out, or whose session ended longer ago than the reconnect grace:
        // the customer would wait the whole sticky wait for nobody. (One
        // within the grace, reloading a page, is waited for, as contacts
        // waiting already are: a reload of the routing state let them go.)
        // Nor, for a remembered agent, one the queue would not offer it to
        // at its step now (a returning customer writing in another
        // language, say; a later step that relaxes the skills does not
        // count: the wait is for an agent who could answer now).
        let sticky_agent = contact
            .sticky
            .as_ref()
            .filter(|(agent, deadline)| *deadline > now && !contact.excluded.contains(agent))
            .and_then(|(agent, deadline)| self.agent_ix.get(agent).map(|ix| (*ix, *deadline)))
            .filter(|(ix, _)| {
                self.agents.get(*ix as usize).is_some_and(|a| {
                    (a.status.connected
                        || a.status.online_until.saturating_add(self.grace_ms) > now)
                        && a.status.availability != Availability::Offline
                        && (!contact.sticky_remembered
                            || a.rings
                                .get(contact.queue)
                                .copied()
                                .flatten()
                                .is_some_and(|(ring, _)| usize::from(ring) <= step))
                })
            });
        self.contact_ix.insert(contact.id, ix);
        let place = match sticky_agent {
            Some((agent, _)) => Place::Sticky { agent },
            None => Place::Queue {
                queue: contact.queue,
                step,
            },
        };
        self.contacts[ix as usize] = Some(ContactSlot {
            contact,
            came_to,
            step,
            place,
            rank,
            timer: None,
            lapse,
        });
        if let Some(t) = lapse {
            self.lapses.insert((t, ix));
        }
        self.place_contact(ix);
        match sticky_agent {
            Some((_, deadline)) => self.set_timer(ix, Some(deadline)),
            None => self.schedule_next_step(ix),
        }
        self.mark_contact(ix);
        // Waiting in a queue that is closed now and ends its contacts (a
        // leader that took over after the closing, a decline, a transfer
        // into it): reported like the contacts waiting at the closing. The
        // leader checks the contact is still waiting before it acts.
        self.update_hours(now);
        if let Some(slot) = self.contacts[ix as usize].as_ref() {
            let q = slot.contact.queue;
            if !self.open[q] && self.plan.queues[q].after_hours == AfterHours::Close {
                self.closing.push((slot.contact.id, q));
            }
        }
    }

    /// The automatic answers of `contact`'s queue's steps up to `step`
    /// that came due from `since` until `now`, for the next `advance`.
    fn catch_up_answers(&mut self, contact: &WaitingContact, step: usize, since: u64, now: u64) {
        if since > now {
            return;
        }
        let queue = &self.plan.queues[contact.queue];
        for (n, s) in queue.steps.iter().enumerate().take(step + 1).skip(1) {
            let due = queue.due(contact.queued_at, s.after_ms).unwrap_or(now);
            if let Some(text) = &s.auto_answer
                && (since..=now).contains(&due)
            {
                self.catch_up.push(StepAction::AutoAnswer {
                    contact: contact.id,
                    queue: contact.queue,
                    step: n,
                    text: text.clone(),
                });
            }
        }
    }

    /// The overflow steps of `contact`'s queue up to `step` that came due
    /// from `since` until `now`, and the move out of it to `moved_to` (made
    /// by step `step`), recorded by the next `advance` as they would have
    /// been had the engine held the contact then.
    fn catch_up_steps(
        &mut self,
        contact: &WaitingContact,
        step: usize,
        since: u64,
        now: u64,
        moved_to: Option<usize>,
    ) {
        if since > now {
            return;
        }
        let queue = &self.plan.queues[contact.queue];
        for (n, s) in queue.steps.iter().enumerate().take(step + 1).skip(1) {
            let due = queue.due(contact.queued_at, s.after_ms).unwrap_or(now);
            if !(since..=now).contains(&due) {
                continue;
            }
            self.catch_up.push(StepAction::Overflowed {
                contact: contact.id,
                queue: contact.queue,
                step: n,
            });
            if n == step
                && let Some(to) = moved_to
            {
                self.catch_up.push(StepAction::Moved {
                    contact: contact.id,
                    from: contact.queue,
                    to,
                });
            }
        }
    }

    /// Removes a waiting contact (answered elsewhere, abandoned, closed).
    pub fn remove_contact(&mut self, id: &ContactId) -> Option<WaitingContact> {
        let ix = self.contact_ix.remove(id)?;
        if let Some(agents) = self.targets.remove(&ix) {
            self.dirty_agents.extend(agents);
        }
        self.unplace_contact(ix);
        self.set_timer(ix, None);
        let slot = self.contacts[ix as usize].take()?;
        if let Some(t) = slot.lapse {
            self.lapses.remove(&(t, ix));
        }
        self.free_contacts.push(ix);
        Some(slot.contact)
    }

    /// The time of the next timer, if any (an opening or closing of a
    /// queue included).
    pub fn next_timer(&self) -> Option<u64> {
        let timer = [self.timers.first(), self.lapses.first()]
            .into_iter()
            .flatten()
            .map(|(t, _)| *t)
            .min();
        let hours = (self.hours_due != u64::MAX).then_some(self.hours_due);
        match (timer, hours) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies every timer due at `now`: openings and closings of queues,
    /// overflow steps, moves, the end of sticky waits.
    pub fn advance(&mut self, now: u64) -> Vec<StepAction> {
        self.update_hours(now);
        let mut actions: Vec<StepAction> = std::mem::take(&mut self.catch_up);
        while let Some(&(due, ix)) = self.lapses.first() {
            if due > now {
                break;
            }
            self.lapses.pop_first();
            if let Some(slot) = self.contacts[ix as usize].as_mut() {
                slot.lapse = None;
                slot.contact.excluded.clear();
                self.mark_contact(ix);
            }
        }
        while let Some(&(due, ix)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            let Some(slot) = self.contacts[ix as usize].as_mut() else {
                continue;
            };
            slot.timer = None;
            match slot.place {
                Place::Sticky { agent } => {
                    let id = slot.contact.id;
                    let agent_id = self.agents[agent as usize].profile.id.clone();
                    self.release_sticky(ix);
                    actions.push(StepAction::StickyExpired {
                        contact: id,
                        agent: agent_id,
                    });
                }
                Place::Queue { queue, step } => {
                    let next = step + 1;
                    let Some(s) = self.plan.queues[queue].steps.get(next).cloned() else {
                        continue;
                    };
                    self.unplace_contact(ix);
                    let Some(slot) = self.contacts[ix as usize].as_mut() else {
                        continue;
                    };
                    let id = slot.contact.id;
                    slot.step = next;
                    slot.place = Place::Queue { queue, step: next };
                    actions.push(StepAction::Overflowed {
                        contact: id,
                        queue,
                        step: next,
                    });
                    if let Some(text) = s.auto_answer {
                        actions.push(StepAction::AutoAnswer {
                            contact: id,
                            queue,
                            step: next,
                            text,
                        });
                    }
                    if let Some(to) = s.move_to {
                        let target = &self.plan.queues[to];
                        slot.contact.queue = to;
                        slot.contact.queued_at = due;
                        slot.contact.priority = slot
                            .contact
                            .priority
                            .saturating_sub(self.plan.queues[queue].priority)
                            .saturating_add(target.priority);
                        slot.step = 0;
                        slot.place = Place::Queue { queue: to, step: 0 };
                        slot.rank = Rank::new(
                            target,
                            slot.contact.priority,
                            slot.contact.waiting_since,
                            slot.rank.seq(),
                        );
                        actions.push(StepAction::Moved {
                            contact: id,
                            from: queue,
                            to,
                        });
                        // Into a queue that is closed now and ends its
                        // contacts: ended, as a contact reloaded into it
                        // after a failover is (`add_contact_catching_up`).
                        if !self.open[to] && target.after_hours == AfterHours::Close {
                            actions.push(StepAction::ClosedAfterHours {
                                contact: id,
                                queue: to,
                            });
                        }
                    }
                    self.place_contact(ix);
                    self.schedule_next_step(ix);
                    self.mark_contact(ix);
                }
            }
        }
        // The closings last: a contact's automatic answer due now goes out
        // before the answer that ends it (the leader runs one contact's
        // steps in order).
        actions.extend(
            self.closing
                .drain(..)
                .map(|(contact, queue)| StepAction::ClosedAfterHours { contact, queue }),
        );
        actions
    }

    /// The next offer to make, if any agent and contact fit. Applies it to
    /// the engine's view: the contact leaves the queue and the agent's load
    /// on its channel goes up by one.
    pub fn next_decision(&mut self, now: u64) -> Option<Decision> {
        self.update_hours(now);
        loop {
            // Each agent with room nominates the best contact it could take;
            // then contacts are served best rank first, each by its best
            // agent. So when several agents and contacts change at once, the
            // outcome is the same as if they had come one by one.
            while let Some(ax) = self.dirty_agents.pop_front() {
                if let Some(cix) = self.best_contact_for(ax) {
                    let targets = self.targets.entry(cix).or_default();
                    if !targets.contains(&ax) {
                        targets.push(ax);
                    }
                    self.mark_contact(cix);
                }
            }
            let (rank, ix) = self.dirty_contacts.pop_first()?;
            let current = self.contacts[ix as usize]
                .as_ref()
                .is_some_and(|s| s.rank == rank);
            if !current {
                continue;
            }
            let nominated_by = self.targets.remove(&ix).unwrap_or_default();
            if let Some(d) = self.match_contact(ix, now, &nominated_by) {
                self.dirty_agents.extend(nominated_by);
                return Some(d);
            }
        }
    }

    /// Why a waiting contact has no agent now: the exclusions at its step.
    pub fn explain_waiting(&self, id: &ContactId, now: u64) -> Option<Explanation> {
        let ix = *self.contact_ix.get(id)?;
        let slot = self.contacts[ix as usize].as_ref()?;
        Some(self.explain(slot, None, now))
    }

    // ---- agents in pools ----

    fn compute_rings(&self, ix: u32) -> Vec<Option<(u8, u32)>> {
        let slot = &self.agents[ix as usize];
        // First pass: own requirements; the second adds borrowed queues,
        // whose first-step eligibility the first pass computed.
        let own: Vec<Option<usize>> = self
            .plan
            .queues
            .iter()
            .map(|q| {
                q.steps
                    .iter()
                    .position(|s| s.any_of.iter().any(|r| slot.qualifies(r)))
            })
            .collect();
        self.plan
            .queues
            .iter()
            .enumerate()
            .map(|(qi, q)| {
                let borrowed = q
                    .steps
                    .iter()
                    .position(|s| s.also_queues.iter().any(|other| own[*other] == Some(0)));
                let ring = match (own[qi], borrowed) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                ring.map(|r| (u8::try_from(r).unwrap_or(u8::MAX), slot.score(&q.scored)))
            })
            .collect()
    }

    fn key(&self, ix: u32, queue: usize) -> AgentKey {
        let a = &self.agents[ix as usize];
        let score = a.rings[queue].map(|(_, s)| s).unwrap_or(0);
        AgentKey::new(
            self.plan.queues[queue].strategy,
            score,
            a.total_proficiency,
            a.occupancy_ppm(),
            a.status.idle_since,
            a.status.last_offer_at,
            ix,
        )
    }

    fn count(&mut self, ix: u32, delta: i64) {
        let a = &self.agents[ix as usize];
        if a.removed {
            return;
        }
        for (q, ring) in a.rings.iter().enumerate() {
            let Some((ring, _)) = ring else { continue };
            for c in 0..4 {
                let r = reason_ix(a.can_take(c, &self.interrupt_voice));
                let n = &mut self.counts[q][*ring as usize][c][r];
                *n = u32::try_from(i64::from(*n) + delta).unwrap_or(0);
            }
        }
    }

    fn unpool(&mut self, ix: u32) {
        self.count(ix, -1);
        let inserted = std::mem::take(&mut self.agents[ix as usize].inserted);
        for (q, c, key) in inserted {
            let ring = self.agents[ix as usize].rings[q].map(|(r, _)| r as usize);
            if let Some(r) = ring {
                self.pools[q][r][c].remove(&key);
            }
        }
    }

    fn repool(&mut self, ix: u32) {
        if self.agents[ix as usize].removed {
            return;
        }
        self.count(ix, 1);
        let mut inserted = Vec::new();
        let mut any = false;
        for q in 0..self.plan.queues.len() {
            let Some((ring, _)) = self.agents[ix as usize].rings[q] else {
                continue;
            };
            let key = self.key(ix, q);
            for c in 0..4 {
                if self.agents[ix as usize]
                    .can_take(c, &self.interrupt_voice)
                    .is_ok()
                {
                    self.pools[q][ring as usize][c].insert(key);
                    inserted.push((q, c, key));
                    any = true;
                }
            }
        }
        if !any && !self.sticky.contains_key(&ix) {
            self.agents[ix as usize].inserted = inserted;
            return;
        }
        self.agents[ix as usize].inserted = inserted;
        self.dirty_agents.push_back(ix);
    }

    // ---- contacts in sets ----

    fn place_contact(&mut self, ix: u32) {
        let Some(slot) = self.contacts[ix as usize].as_ref() else {
            return;
        };
        let entry = (slot.rank, ix);
        let c = ch(slot.contact.channel);
        match slot.place {
            Place::Queue { queue, step } => {
                self.waiting[queue][step][c].insert(entry);
            }
            Place::Sticky { agent } => {
                self.sticky.entry(agent).or_default().insert(entry);
            }
        }
    }

    fn unplace_contact(&mut self, ix: u32) {
        let Some(slot) = self.contacts[ix as usize].as_ref() else {
            return;
        };
        let entry = (slot.rank, ix);
        let c = ch(slot.contact.channel);
        match slot.place {
            Place::Queue { queue, step } => {
                self.waiting[queue][step][c].remove(&entry);
            }
            Place::Sticky { agent } => {
                if let Some(set) = self.sticky.get_mut(&agent) {
                    set.remove(&entry);
                    if set.is_empty() {
                        self.sticky.remove(&agent);
                    }
                }
            }
        }
    }

    fn release_sticky(&mut self, ix: u32) {
        self.unplace_contact(ix);
        self.set_timer(ix, None);
        let Some(slot) = self.contacts[ix as usize].as_mut() else {
            return;
        };
        slot.place = Place::Queue {
            queue: slot.contact.queue,
            step: slot.step,
        };
        self.place_contact(ix);
        self.schedule_next_step(ix);
        self.mark_contact(ix);
    }

    /// When `contact`'s exclusions lapse, if they do.
    /// Exclusions without a time (written by an older version) never
    /// lapse, as `offer.lua` sees them.
    fn lapse_of(&self, contact: &WaitingContact) -> Option<u64> {
        (self.exclusion_ms > 0 && contact.excluded_at > 0 && !contact.excluded.is_empty())
            .then(|| contact.excluded_at.saturating_add(self.exclusion_ms))
    }

    fn mark_contact(&mut self, ix: u32) {
        if let Some(slot) = self.contacts[ix as usize].as_ref() {
            self.dirty_contacts.insert((slot.rank, ix));
        }
    }

    fn schedule_next_step(&mut self, ix: u32) {
        let due = self.contacts[ix as usize].as_ref().and_then(|slot| {
            let q = &self.plan.queues[slot.contact.queue];
            q.steps
                .get(slot.step + 1)
                .and_then(|s| q.due(slot.contact.queued_at, s.after_ms))
        });
        self.set_timer(ix, due);
    }

    fn set_timer(&mut self, ix: u32, due: Option<u64>) {
        let Some(slot) = self.contacts[ix as usize].as_mut() else {
            return;
        };
        if let Some(old) = slot.timer.take() {
            self.timers.remove(&(old, ix));
        }
        if let Some(due) = due {
            slot.timer = Some(due);
            self.timers.insert((due, ix));
        }
    }

    // ---- matching ----

    fn excluded(&self, contact: &WaitingContact, agent: u32) -> bool {
        !contact.excluded.is_empty()
            && contact
                .excluded
                .contains(&self.agents[agent as usize].profile.id)
    }

    /// The best agent for a waiting contact. The pools are scanned only so
    /// far ([`SCAN_LIMIT`]); when every agent in that reach declined or
    /// missed the contact, an agent further down who nominated it (it is
    /// the best they could take) gets it.
    fn match_contact(&mut self, ix: u32, now: u64, nominated_by: &[u32]) -> Option<Decision> {
        let slot = self.contacts[ix as usize].as_ref()?;
        if !self.open[slot.contact.queue] {
            // Matched again when the queue opens.
            return None;
        }
        let c = ch(slot.contact.channel);
        let agent = match slot.place {
            Place::Sticky { agent } => {
                let a = &self.agents[agent as usize];
                (a.can_take(c, &self.interrupt_voice).is_ok()).then_some(agent)
            }
            Place::Queue { queue, step } => {
                let mut best: Option<AgentKey> = None;
                for ring in 0..=step {
                    let found = self.pools[queue][ring][c]
                        .iter()
                        .take(SCAN_LIMIT)
                        .find(|k| !self.excluded(&slot.contact, k.agent()));
                    if let Some(k) = found
                        && best.is_none_or(|b| *k < b)
                    {
                        best = Some(*k);
                    }
                }
                best.map(|k| k.agent()).or_else(|| {
                    nominated_by
                        .iter()
                        .copied()
                        .filter(|&ax| {
                            let a = &self.agents[ax as usize];
                            !a.removed
                                && !self.excluded(&slot.contact, ax)
                                && a.rings[queue].is_some_and(|(ring, _)| (ring as usize) <= step)
                                && a.can_take(c, &self.interrupt_voice).is_ok()
                        })
                        .min_by_key(|&ax| self.key(ax, queue))
                })
            }
        }?;
        self.commit(ix, agent, now)
    }

    /// The best waiting contact an agent with room could take.
    fn best_contact_for(&self, ax: u32) -> Option<u32> {
        let a = &self.agents[ax as usize];
        if a.removed {
            return None;
        }
        // Contacts waiting for this agent in particular go first.
        if let Some(set) = self.sticky.get(&ax) {
            let found = set.iter().find(|(_, cix)| {
                self.contacts[*cix as usize].as_ref().is_some_and(|s| {
                    self.open[s.contact.queue]
                        && a.can_take(ch(s.contact.channel), &self.interrupt_voice)
                            .is_ok()
                })
            });
            if let Some((_, cix)) = found {
                return Some(*cix);
            }
        }
        let mut best: Option<(Rank, u32)> = None;
        for c in 0..4 {
            if a.can_take(c, &self.interrupt_voice).is_err() {
                continue;
            }
            for (q, ring) in a.rings.iter().enumerate() {
                let Some((ring, _)) = ring else { continue };
                if !self.open[q] {
                    continue;
                }
                for step in (*ring as usize)..self.plan.queues[q].steps.len() {
                    // Not limited to SCAN_LIMIT: beyond that many contacts
                    // this agent declined (until their exclusions lapse)
                    // may wait one they did not, and nothing else would
                    // look for it when they free up. Only contacts that
                    // excluded this agent are passed over, so the common
                    // case stops at the first entry.
                    let found = self.waiting[q][step][c].iter().find(|(_, cix)| {
                        self.contacts[*cix as usize]
                            .as_ref()
                            .is_some_and(|s| !self.excluded(&s.contact, ax))
                    });
                    if let Some(entry) = found
                        && best.is_none_or(|b| *entry < b)
                    {
                        best = Some(*entry);
                    }
                }
            }
        }
        best.map(|(_, cix)| cix)
    }

    /// Applies a match to the engine's view and builds its decision.
    fn commit(&mut self, ix: u32, agent: u32, now: u64) -> Option<Decision> {
        let slot = self.contacts[ix as usize].as_ref()?;
        let mut explanation = self.explain(slot, Some(agent), now);
        let step = slot.step;
        let id = slot.contact.id;
        let contact = self.remove_contact(&id)?;
        let agent_id = self.agents[agent as usize].profile.id.clone();
        explanation.chosen = Some(agent_id.to_string());
        let mut status = self.agents[agent as usize].status;
        status.load[ch(contact.channel)] += 1;
        status.last_offer_at = now;
        self.update_agent(&agent_id, status);
        Some(Decision {
            contact,
            agent: agent_id,
            step,
            explanation,
        })
    }

    fn candidate(&self, ax: u32, queue: usize) -> Candidate {
        let a = &self.agents[ax as usize];
        let (ring, score) = a.rings[queue].unwrap_or((0, 0));
        Candidate {
            agent: a.profile.id.to_string(),
            ring: ring as usize,
            score,
            occupancy_ppm: a.occupancy_ppm(),
            idle_since: a.status.idle_since,
            last_offer_at: a.status.last_offer_at,
        }
    }

    fn explain(&self, slot: &ContactSlot, chosen: Option<u32>, now: u64) -> Explanation {
        let contact = &slot.contact;
        let queue = contact.queue;
        let q = &self.plan.queues[queue];
        let c = ch(contact.channel);
        let mut exclusions = Exclusions {
            declined: contact.excluded.iter().map(|a| a.to_string()).collect(),
            ..Exclusions::default()
        };
        let mut skilled = 0;
        let mut eligible = 0;
        let mut keys: Vec<AgentKey> = Vec::new();
        for ring in 0..=slot.step {
            for (r, n) in self.counts[queue][ring][c].iter().enumerate() {
                skilled += n;
                if r == 0 {
                    eligible += n;
                } else if *n > 0 {
                    *exclusions
                        .by_reason
                        .entry(REASONS[r].to_owned())
                        .or_default() += n;
                }
            }
            keys.extend(
                self.pools[queue][ring][c]
                    .iter()
                    .filter(|k| !self.excluded(contact, k.agent()))
                    .take(EXPLAIN_TOP),
            );
        }
        keys.sort_unstable();
        keys.truncate(EXPLAIN_TOP);
        if let Some(a) = chosen
            && !keys.iter().any(|k| k.agent() == a)
        {
            // A sticky pick, a transfer's target, or one ranked past the
            // top: the record always names who was chosen, kept in rank
            // order with the others (one more than the top then).
            keys.push(self.key(a, queue));
            keys.sort_unstable();
        }
        // Agents who declined or missed it sit in the pools like the
        // others; they are listed as declined, not counted as eligible.
        let declined_in_pools = contact
            .excluded
            .iter()
            .filter_map(|id| self.agent_ix.get(id))
            .filter(|&&ix| {
                let a = &self.agents[ix as usize];
                a.rings[queue].is_some_and(|(r, _)| usize::from(r) <= slot.step)
                    && a.can_take(c, &self.interrupt_voice).is_ok()
            })
            .count();
        eligible = eligible.saturating_sub(declined_in_pools.try_into().unwrap_or(u32::MAX));
        let live = u32::try_from(self.agent_ix.len()).unwrap_or(u32::MAX);
        exclusions.not_skilled = live.saturating_sub(skilled);
        let sticky_agent = match slot.place {
            Place::Sticky { agent } => Some(self.agents[agent as usize].profile.id.to_string()),
            Place::Queue { .. } => None,
        };
        Explanation {
            queue: q.name.clone(),
            rule: contact.rule.clone(),
            step: slot.step,
            strategy: q.strategy.as_str().to_owned(),
            priority: contact.priority,
            waited_ms: now.saturating_sub(contact.waiting_since),
            sticky_agent,
            chosen: None,
            candidates: keys
                .iter()
                .map(|k| self.candidate(k.agent(), queue))
                .collect(),
            eligible,
            excluded: exclusions,
        }
    }
}

#[cfg(test)]
mod tests;
