//! The routing leader: the one instance at a time that makes offers.
//!
//! Every instance runs [`Leader::run`]; the one holding the routing lease
//! loads a snapshot of agents and waiting contacts into the [`Engine`],
//! follows the routing event stream to keep it current, and commits each
//! decision with the fenced offer script. When it stops renewing the lease
//! (crash, pause, partition), another instance takes the lease after
//! `lease_ms`, with a higher fencing token; whatever the old one still
//! tries is refused by Redis. Offer deadlines, wrap-up ends and agents whose
//! session lapsed are handled by the leader's sweeps.

use crate::engine::{
    AgentProfile, AgentStatus, Availability, Decision, Engine, StepAction, WaitingContact,
};
use crate::plan::Plan;
use crate::settings::RoutingConfig;
use metrics::{counter, gauge, histogram};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard_core::{AgentId, ChannelKind, ContactId, Timestamp};
use switchboard_store::{
    AgentLive, AgentRecord, Answer, Conversations, Offer, RouteEvent, RouteRecord, RoutingState,
    StoreError,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// Why leading ended.
#[derive(Debug, PartialEq, Eq)]
enum Led {
    /// Shut down, or the lease was lost.
    Stopped,
    /// Events not yet read were trimmed from the stream, or one could not
    /// be read.
    Behind,
}

/// How far back a new leader sends the automatic answers of overflow steps
/// that came due while no leader ran.
const CATCH_UP_MS: u64 = 60_000;

/// How often the leader publishes the queue summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Events read at once.
const EVENT_BATCH: usize = 2000;

/// Offers committed together at most.
const COMMIT_BATCH: usize = 256;

/// Events after which a contact may be waiting again.
const REQUEUING: [&str; 5] = ["enqueued", "declined", "expired", "revoked", "requeued"];

/// Whether this instance is the routing leader now.
#[derive(Debug, Clone, Default)]
pub struct LeaderStatus(Arc<AtomicBool>);

impl LeaderStatus {
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Relaxed);
        gauge!("switchboard_router_leader").set(if v { 1.0 } else { 0.0 });
    }
}

/// What is recorded for each routing decision (`why:<contact>`).
#[derive(Debug, Serialize)]
struct DecisionRecord<'a> {
    at: u64,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<&'a crate::engine::Explanation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

pub struct Leader {
    state: RoutingState,
    conversations: Conversations,
    plan: Arc<Plan>,
    config: Arc<RoutingConfig>,
    instance: String,
    status: LeaderStatus,
    interrupt_voice: String,
    /// After-hours ends that failed (Redis away), by contact: when to try
    /// again (ms), how many tries so far, and the queue (by index) when the
    /// whole closing is tried again (the contact could not be read).
    closings: std::sync::Mutex<HashMap<ContactId, ClosingRetry>>,
    /// Overflow-step answers that could not be sent (Redis away), by
    /// contact and step: what to send, when to try again (ms) and how many
    /// tries so far.
    answers_due: std::sync::Mutex<HashMap<(ContactId, usize, usize), DueAnswer>>,
}

/// An overflow-step answer to send again.
#[derive(Debug, Clone)]
struct DueAnswer {
    text: String,
    at: u64,
    tries: u32,
}

/// How long after a failed after-hours end it is tried again, ms.
const CLOSING_RETRY_MS: u64 = 5_000;

/// An after-hours end to try again: when (ms), after how many tries, and
/// the queue (by index) when the whole closing is tried again.
type ClosingRetry = (u64, u32, Option<usize>);

/// Tries of a failed after-hours end before it is given up (~5 minutes).
const CLOSING_TRIES: u32 = 60;

/// Failed step answers tried again per sweep, at most.
const RETRIES_PER_SWEEP: usize = 20;

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    Timestamp::now().as_millis()
}

/// The engine's view of a stored agent.
pub fn agent_profile(rec: &AgentRecord) -> Option<AgentProfile> {
    Some(AgentProfile {
        id: rec.id.parse().ok()?,
        skills: rec.skills.clone(),
        capacity: rec.capacity,
        total_capacity: (rec.total_capacity > 0).then_some(rec.total_capacity),
    })
}

pub fn agent_status(live: &AgentLive, now: u64) -> AgentStatus {
    AgentStatus {
        availability: match live.presence.as_str() {
            "available" => Availability::Available,
            "away" => Availability::Away,
            "wrap_up" => Availability::WrapUp,
            _ => Availability::Offline,
        },
        connected: live.online_until > now,
        load: live.loads,
        idle_since: live.idle_since,
        last_offer_at: live.last_offer_at,
        online_until: live.online_until,
    }
}

/// The engine's view of a stored waiting contact. A queue that no longer
/// exists (configuration changed) falls back to the default queue.
pub fn waiting_contact(rec: &RouteRecord, plan: &Plan) -> Option<WaitingContact> {
    let (Ok(id), Ok(channel)) = (
        rec.contact.parse::<ContactId>(),
        rec.channel.parse::<ChannelKind>(),
    ) else {
        // Never written by Switchboard: it cannot be offered; said and
        // counted rather than dropped silently.
        counter!("switchboard_router_unreadable_records_total").increment(1);
        warn!(contact_id = %rec.contact, channel = %rec.channel,
            "A waiting contact's routing record has no valid id or channel; it is not routed.");
        return None;
    };
    let queue = plan.queue_index(&rec.queue).unwrap_or(plan.default_queue);
    let sticky = (!rec.sticky.is_empty())
        .then(|| {
            rec.sticky
                .parse::<AgentId>()
                .ok()
                .map(|a| (a, rec.sticky_until))
        })
        .flatten();
    Some(WaitingContact {
        id,
        channel,
        queue,
        priority: rec.priority,
        waiting_since: rec.since,
        queued_at: rec.queued_at,
        rule: (!rec.rule.is_empty()).then(|| rec.rule.clone()),
        sticky,
        sticky_remembered: rec.sticky_remembered,
        excluded: rec.excluded.iter().filter_map(|a| a.parse().ok()).collect(),
        excluded_at: rec.excluded_at,
    })
}

/// The leader's mirror of agents: the newest state seen of each.
struct Mirror {
    live: HashMap<String, AgentLive>,
    /// Agents whose lapsed session was handled (offers revoked / contacts
    /// requeued), until they come back.
    revoked: HashSet<String>,
    requeued: HashSet<String>,
    /// Agents away or offline with offers pending: taken back at the next
    /// sweep.
    withdraw: HashSet<String>,
}

impl Leader {
    pub fn new(
        state: RoutingState,
        plan: Arc<Plan>,
        config: Arc<RoutingConfig>,
        instance: String,
    ) -> Leader {
        let interrupt_voice = config.interrupt_voice_csv();
        Leader {
            conversations: Conversations::new(state.store().clone()),
            state,
            plan,
            config,
            instance,
            status: LeaderStatus::default(),
            interrupt_voice,
            closings: std::sync::Mutex::default(),
            answers_due: std::sync::Mutex::default(),
        }
    }

    pub fn status(&self) -> LeaderStatus {
        self.status.clone()
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(self.config.lease_ms)
    }

    /// Runs until `shutdown`: waits for the lease, routes while holding it.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!("routing_leader", instance = %self.instance);
        // Exported by every instance, 0 where it does not lead.
        gauge!("switchboard_router_waiting_contacts").set(0.0);
        async move {
            while !shutdown.is_cancelled() {
                match self.state.acquire_lease(&self.instance, self.lease()).await {
                    Ok(Some(token)) => {
                        info!(%token, "This instance is the routing leader now.");
                        counter!("switchboard_router_leaderships_total").increment(1);
                        self.status.set(true);
                        let result = self.lead(&token, &shutdown).await;
                        self.status.set(false);
                        // A former leader's figure would go on being
                        // exported as if it were current.
                        gauge!("switchboard_router_waiting_contacts").set(0.0);
                        match result {
                            Ok(()) => info!("Stopped leading."),
                            Err(error) => {
                                counter!("switchboard_router_errors_total", "error_type" => "leader").increment(1);
                                warn!(%error, "Routing leader stopped on an error.");
                            }
                        }
                        if let Err(error) = self.state.release_lease(&token).await {
                            debug!(%error, "Could not release the lease; it will expire.");
                        }
                    }
                    Ok(None) => {}
                    Err(error) => debug!(%error, "Could not try the routing lease."),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(self.lease() / 3) => {}
                }
            }
        }
        .instrument(span)
        .await;
    }

    async fn lead(&self, token: &str, shutdown: &CancellationToken) -> Result<(), StoreError> {
        // The lease is renewed by a task of its own, so that loading a large
        // snapshot or a burst of work never outlasts it. A leader that lost
        // it stops at its next check; until then the offer script refuses
        // its stale token (fencing), so nothing it does in between counts.
        let lost = Arc::new(AtomicBool::new(false));
        // Dropped with this future, so the lease is never kept for a
        // leader that no longer runs.
        let _keeper = AbortOnDrop(tokio::spawn(keep_lease(
            self.state.clone(),
            token.to_owned(),
            self.lease(),
            lost.clone(),
        )));
        // A leader that fell so far behind that events it had not read were
        // trimmed away cannot trust its picture: it loads it again.
        while self.lead_while(token, shutdown, &lost).await? == Led::Behind {
            counter!("switchboard_router_reloads_total").increment(1);
            warn!("The routing leader fell behind the event stream; reloading the routing state.");
        }
        Ok(())
    }

    async fn lead_while(
        &self,
        token: &str,
        shutdown: &CancellationToken,
        lost: &AtomicBool,
    ) -> Result<Led, StoreError> {
        let mut reader = self.state.event_reader(Duration::from_millis(100))?;
        // The next event's number must follow the newest one's: events
        // trimmed away while the state loads show as a gap at once.
        let (mut after, mut last_n) = self.state.last_event().await?;
        let loaded = Instant::now();
        let now = now_ms();
        let mut engine = Engine::new(self.plan.clone(), &self.config.interrupt_voice);
        engine.set_exclusion(Duration::from_secs(self.config.declined_again_after_secs));
        engine.set_reconnect_grace(Duration::from_secs(self.config.reconnect_grace_secs));
        // Ends that failed while this instance led before are kept: one
        // whose contact routing closed has only its conversation left to
        // end, which the state loaded now does not show (the contact is no
        // longer waiting), and the customer's next messages would join a
        // closed contact nobody sees. `retry_closings` drops those the
        // engine has waiting in an open queue; trying one that is done
        // changes nothing.
        // Step answers that failed while this instance led before stay due:
        // `retry_answers` drops those whose contact no longer waits, and
        // the Redis guard sends none twice (the catch-up below included).
        let mut mirror = Mirror {
            live: HashMap::new(),
            revoked: HashSet::new(),
            requeued: HashSet::new(),
            withdraw: HashSet::new(),
        };
        for (rec, live) in self.state.agents().await? {
            if let Some(profile) = agent_profile(&rec) {
                engine.upsert_agent(profile, agent_status(&live, now));
                if matches!(live.presence.as_str(), "away" | "offline")
                    && live.loads.iter().any(|l| *l > 0)
                {
                    mirror.withdraw.insert(rec.id.clone());
                }
                mirror.live.insert(rec.id.clone(), live);
            }
        }
        // Steps that came due while no leader ran (or before a reload)
        // send their automatic answer now; within the last minute only (an
        // older one was the previous leader's to send).
        for rec in self.state.waiting().await? {
            if let Some(c) = waiting_contact(&rec, &self.plan) {
                engine.add_contact_catching_up(c, now, now.saturating_sub(CATCH_UP_MS));
            }
        }
        info!(
            agents = engine.agent_count(),
            waiting = engine.waiting_count(),
            took_ms = loaded.elapsed().as_millis() as u64,
            "Routing state loaded."
        );
        let mut last_sweep = Instant::now();
        let mut last_calls = Instant::now();
        let mut last_summary = Instant::now() - SUMMARY_EVERY;
        // Offers the store refused twice in one round (same contact, same
        // agent): tried again next round, after the events and a new clock,
        // so that a view the engine cannot correct never spins this loop.
        let mut refused = Refused::default();
        loop {
            if shutdown.is_cancelled() || lost.load(Ordering::Relaxed) {
                return Ok(Led::Stopped);
            }
            let mut now = now_ms();
            // Read again: an end (abandoned, closed) read while the contact
            // was out of the engine changed nothing there, and putting the
            // old record back made a phantom that a closed queue kept for
            // the night (in the supervisors' counts).
            for c in refused.next_round() {
                if let Some(rec) = self.state.route_record(&c.id).await?
                    && rec.state == "waiting"
                    && let Some(c) = waiting_contact(&rec, &self.plan)
                {
                    engine.add_contact(c, now);
                }
            }
            let steps = engine.advance(now);
            for chunk in steps.chunks(COMMIT_BATCH) {
                // Different contacts' steps at once; one contact's in
                // order (an automatic answer before the after-hours close
                // that ends it, the overflow before its move).
                let mut groups: Vec<Vec<&StepAction>> = Vec::new();
                let mut group_of: HashMap<&ContactId, usize> = HashMap::new();
                for action in chunk {
                    let n = *group_of.entry(action.contact()).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[n].push(action);
                }
                futures::future::join_all(groups.into_iter().map(|group| async move {
                    for action in group {
                        self.record_step(action, now, token).await;
                    }
                }))
                .await;
                if lost.load(Ordering::Relaxed) {
                    return Ok(Led::Stopped);
                }
            }
            // Decisions are committed in batches, concurrently (the
            // connection pipelines them); each is checked by Redis on its
            // own, so a batch cannot break an invariant either.
            loop {
                // The clock again for each batch: the steps above, and the
                // batches before, may have taken seconds against a slow
                // Redis, and an offer stamped with the round's start would
                // be born (nearly) expired, and its agent's session checked
                // against a time already past.
                now = now_ms();
                let mut batch = Vec::new();
                while batch.len() < COMMIT_BATCH {
                    match engine.next_decision(now) {
                        Some(d) => batch.push(d),
                        None => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                let outcomes = futures::future::join_all(
                    batch.iter().map(|d| self.write_offer(d, token, now)),
                )
                .await;
                for (d, outcome) in batch.into_iter().zip(outcomes) {
                    if !self
                        .settle(&mut engine, &mut mirror, &mut refused, d, outcome?, now)
                        .await?
                    {
                        return Ok(Led::Stopped);
                    }
                }
                if lost.load(Ordering::Relaxed) {
                    return Ok(Led::Stopped);
                }
            }
            gauge!("switchboard_router_waiting_contacts").set(engine.waiting_count() as f64);
            if last_summary.elapsed() >= SUMMARY_EVERY {
                self.publish_summary(&engine, now).await;
                last_summary = Instant::now();
            }
            if last_sweep.elapsed() >= Duration::from_millis(250) {
                self.retry_closings(&engine, lost, now, token).await;
                self.retry_answers(&engine, lost, now).await;
                self.sweep(&mut engine, &mut mirror, now).await?;
                last_sweep = Instant::now();
            }
            if self.config.max_call_secs > 0
                && last_calls.elapsed()
                    >= Duration::from_secs((self.config.max_call_secs / 4).clamp(1, 30))
            {
                self.end_lost_calls(&mirror, lost, now).await;
                last_calls = Instant::now();
            }
            let wait = engine
                .next_timer()
                .map(|t| Duration::from_millis(t.saturating_sub(now)))
                .unwrap_or(Duration::from_millis(100))
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            let events = tokio::select! {
                () = shutdown.cancelled() => return Ok(Led::Stopped),
                events = self.state.read_events(&mut reader, &after, wait, EVENT_BATCH) => events?,
            };
            for event in &events {
                if event.kind.is_empty() {
                    // An entry it cannot read (counted by the store): what
                    // it said is unknown, so the picture is reloaded.
                    return Ok(Led::Behind);
                }
                let n = event.number();
                if n != 0 {
                    if last_n != 0 && n != last_n + 1 {
                        return Ok(Led::Behind);
                    }
                    last_n = n;
                }
            }
            let now = now_ms();
            // Contacts that may be waiting again: their events carry their
            // records; those that do not (written by an older version) are
            // read together, not one round trip each.
            let wanted: Vec<ContactId> = events
                .iter()
                .filter(|e| REQUEUING.contains(&e.kind.as_str()) && e.record.is_none())
                .filter_map(|e| e.contact.as_deref().and_then(|c| c.parse().ok()))
                .collect();
            let fetched =
                futures::future::join_all(wanted.iter().map(|c| self.state.route_record(c))).await;
            let mut records: HashMap<ContactId, RouteRecord> = HashMap::new();
            for (c, rec) in wanted.into_iter().zip(fetched) {
                if let Some(rec) = rec? {
                    records.insert(c, rec);
                }
            }
            for event in events {
                after = event.id.clone();
                self.apply(&mut engine, &mut mirror, event, &records, now)
                    .await?;
            }
        }
    }

    /// Writes one decision; the store's answer (`ok` or why not).
    async fn write_offer(&self, d: &Decision, token: &str, now: u64) -> Result<String, StoreError> {
        let queue = &self.plan.queues[d.contact.queue];
        let explanation = serde_json::to_string(&DecisionRecord {
            at: now,
            kind: "offer",
            agent: Some(d.agent.as_str()),
            outcome: None,
            explanation: Some(&d.explanation),
            detail: None,
        })
        .unwrap_or_else(|_| "{}".into());
        let until = now
            + u64::try_from(
                self.config
                    .offer_timeout_secs
                    .of(d.contact.channel)
                    .as_millis(),
            )
            .unwrap_or(0);
        let started = Instant::now();
        let outcome = self
            .state
            .offer(&Offer {
                token,
                contact: &d.contact.id,
                agent: d.agent.as_str(),
                now,
                until,
                auto_accept: queue.auto_accept,
                interrupt_voice: &self.interrupt_voice,
                explanation: &explanation,
                step: d.step,
                exclusion: Duration::from_secs(self.config.declined_again_after_secs),
            })
            .await?;
        histogram!("switchboard_router_offer_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Acts on the store's answer to an offer. False when the lease was
    /// lost.
    async fn settle(
        &self,
        engine: &mut Engine,
        mirror: &mut Mirror,
        round: &mut Refused,
        d: Decision,
        outcome: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        let queue = &self.plan.queues[d.contact.queue];
        counter!("switchboard_router_offers_total", "queue" => queue.name.clone(), "outcome" => outcome.clone())
            .increment(1);
        match outcome.as_str() {
            "ok" => {
                histogram!("switchboard_router_wait_seconds", "queue" => queue.name.clone())
                    .record(now.saturating_sub(d.contact.waiting_since) as f64 / 1000.0);
                debug!(contact_id = %d.contact.id, agent_id = %d.agent, queue = %queue.name, step = d.step, "Offered.");
                Ok(true)
            }
            "fenced" => Ok(false),
            refused => {
                // The engine's view was behind Redis: refresh the agent and
                // the contact from Redis and let the engine try again.
                debug!(contact_id = %d.contact.id, agent_id = %d.agent, refused, "Offer refused by the store; refreshing.");
                if let Some((rec, live)) = self.state.agent(d.agent.as_str()).await? {
                    if let Some(profile) = agent_profile(&rec) {
                        engine.upsert_agent(profile, agent_status(&live, now));
                    }
                    mirror.live.insert(rec.id.clone(), live);
                } else {
                    engine.remove_agent(&d.agent);
                }
                if let Some(rec) = self.state.route_record(&d.contact.id).await?
                    && rec.state == "waiting"
                    && let Some(c) = waiting_contact(&rec, &self.plan)
                {
                    if round.first_time(&d) {
                        engine.add_contact(c, now);
                    } else {
                        counter!("switchboard_router_offers_deferred_total").increment(1);
                        warn!(contact_id = %d.contact.id, agent_id = %d.agent, refused,
                            "The store refused the same offer twice; trying again next round.");
                        round.defer(c);
                    }
                }
                Ok(true)
            }
        }
    }

    async fn record_step(&self, action: &StepAction, now: u64, token: &str) {
        let (contact, detail) = match action {
            StepAction::Overflowed {
                contact,
                queue,
                step,
            } => {
                counter!("switchboard_router_overflows_total", "queue" => self.plan.queues[*queue].name.clone())
                    .increment(1);
                (
                    contact,
                    format!(
                        "queue {} overflow step {step}",
                        self.plan.queues[*queue].name
                    ),
                )
            }
            StepAction::Moved { contact, from, to } => (
                contact,
                format!(
                    "moved from queue {} to {}",
                    self.plan.queues[*from].name, self.plan.queues[*to].name
                ),
            ),
            StepAction::AutoAnswer {
                contact,
                queue,
                step,
                text,
            } => {
                let outcome = self.step_answer(contact, *queue, *step, text).await;
                if outcome == "failed"
                    && let Ok(mut due) = self.answers_due.lock()
                {
                    due.insert(
                        (*contact, *queue, *step),
                        DueAnswer {
                            text: text.clone(),
                            at: now + CLOSING_RETRY_MS,
                            tries: 0,
                        },
                    );
                }
                (contact, format!("automatic answer ({outcome}): {text}"))
            }
            StepAction::StickyExpired { contact, agent } => (
                contact,
                format!("sticky wait for {agent} ended; open to all agents"),
            ),
            StepAction::ClosedAfterHours { contact, queue } => {
                let retention =
                    Duration::from_secs(self.config.retention_days.saturating_mul(86_400).max(1));
                let Some((detail, left)) = crate::greeting::close_after_hours(
                    &self.state,
                    &self.plan,
                    contact,
                    *queue,
                    now,
                    retention,
                    token,
                )
                .await
                else {
                    return;
                };
                let again = match left {
                    crate::greeting::Closing::Done => None,
                    crate::greeting::Closing::End => Some(None),
                    crate::greeting::Closing::Again => Some(Some(*queue)),
                };
                if let Some(whole) = again
                    && let Ok(mut closings) = self.closings.lock()
                {
                    closings.insert(*contact, (now + CLOSING_RETRY_MS, 0, whole));
                }
                (contact, detail)
            }
        };
        self.write_step(contact, detail, now).await;
    }

    /// Records a routing step (its detail) in the contact's decisions.
    async fn write_step(&self, contact: &ContactId, detail: String, now: u64) {
        let record = serde_json::to_string(&DecisionRecord {
            at: now,
            kind: "step",
            agent: None,
            outcome: None,
            explanation: None,
            detail: Some(detail),
        })
        .unwrap_or_else(|_| "{}".into());
        if let Err(error) = self.state.record_decision(contact, &record).await {
            debug!(%error, contact_id = %contact, "Could not record a routing step.");
        }
    }

    async fn apply(
        &self,
        engine: &mut Engine,
        mirror: &mut Mirror,
        event: RouteEvent,
        records: &HashMap<ContactId, RouteRecord>,
        now: u64,
    ) -> Result<(), StoreError> {
        if let (Some(agent), Some(live)) = (&event.agent, &event.live) {
            let newer = mirror
                .live
                .get(agent)
                .is_none_or(|known| live.ver >= known.ver);
            if newer {
                if live.online_until > now {
                    mirror.revoked.remove(agent);
                    mirror.requeued.remove(agent);
                }
                if matches!(live.presence.as_str(), "away" | "offline")
                    && live.loads.iter().any(|l| *l > 0)
                {
                    mirror.withdraw.insert(agent.clone());
                }
                if let Ok(id) = agent.parse::<AgentId>()
                    && !engine.update_agent(&id, agent_status(live, now))
                    && event.kind != "agent"
                {
                    // Unknown to the engine: read its profile.
                    self.refresh_agent(engine, agent, now).await?;
                }
                mirror.live.insert(agent.clone(), live.clone());
            }
        }
        let contact = event
            .contact
            .as_deref()
            .and_then(|c| c.parse::<ContactId>().ok());
        match (event.kind.as_str(), contact) {
            ("agent", _) => {
                if let Some(agent) = &event.agent {
                    self.refresh_agent(engine, agent, now).await?;
                }
            }
            (kind, Some(c)) if REQUEUING.contains(&kind) => {
                if let Some(rec) = event.record.as_ref().or_else(|| records.get(&c))
                    && rec.state == "waiting"
                    && let Some(w) = waiting_contact(rec, &self.plan)
                {
                    // Back from an offer that may have lasted past a step:
                    // its automatic answer is due, and the step (or move)
                    // is recorded. (One back from a hold starts again at
                    // the first step: `requeue.lua` sets its `queued_at`
                    // anew.)
                    let offered_at = rec
                        .fields
                        .get("offered_at")
                        .and_then(|v| v.parse::<u64>().ok());
                    match offered_at {
                        Some(at) if kind != "enqueued" && kind != "requeued" => {
                            engine.add_contact_after_offer(w, now, at);
                        }
                        _ => engine.add_contact_catching_up(w, now, 0),
                    }
                }
            }
            ("offered" | "assigned" | "abandoned" | "closed", Some(c)) => {
                engine.remove_contact(&c);
            }
            _ => {}
        }
        Ok(())
    }

    async fn refresh_agent(
        &self,
        engine: &mut Engine,
        agent: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        if let Some((rec, live)) = self.state.agent(agent).await?
            && let Some(profile) = agent_profile(&rec)
        {
            engine.upsert_agent(profile, agent_status(&live, now));
        }
        Ok(())
    }

    /// Publishes each queue's waiting count and oldest wait for
    /// supervisors' views (`RoutingState::waiting_by_queue`). A failure is
    /// counted and logged: readers then count for themselves.
    async fn publish_summary(&self, engine: &Engine, now: u64) {
        let queues = engine
            .queue_summary()
            .into_iter()
            .zip(&self.plan.queues)
            .map(|((waiting, oldest_queued_at), q)| {
                let summary = switchboard_store::QueueWaiting {
                    waiting,
                    oldest_queued_at,
                };
                (q.name.clone(), summary)
            })
            .collect();
        if let Err(error) = self.state.publish_queue_summary(now, queues).await {
            counter!("switchboard_router_errors_total", "error_type" => "queue_summary")
                .increment(1);
            debug!(%error, "Could not publish the queue summary.");
        }
    }

    /// Tries again the after-hours ends that failed and are due: a contact
    /// left waiting in Redis (its abandon failed) would wait outside the
    /// engine, and one whose conversation was not ended would take the
    /// customer's next messages into a closed contact nobody sees.
    /// A contact the engine still has waiting in a queue that is open now,
    /// or that does not close its contacts (moved by a step, or requeued
    /// since), is no longer to be ended: its entry is dropped. One the
    /// engine does not have (routing closed it, and only its conversation
    /// is left to end; or its abandon failed) is tried.
    async fn retry_closings(&self, engine: &Engine, lost: &AtomicBool, now: u64, token: &str) {
        let due: Vec<(ContactId, u32, Option<usize>)> = match self.closings.lock() {
            Ok(mut closings) => {
                closings.retain(|c, _| engine.waits_where_closed(c) != Some(false));
                closings
                    .iter()
                    .filter(|(_, (at, _, _))| *at <= now)
                    .map(|(c, (_, tries, whole))| (*c, *tries, *whole))
                    .collect()
            }
            Err(_) => return,
        };
        let retention =
            Duration::from_secs(self.config.retention_days.saturating_mul(86_400).max(1));
        for (contact, tries, whole) in due {
            if lost.load(Ordering::Relaxed) {
                return;
            }
            if let Some(queue) = whole {
                // The contact could not be read at the closing: the whole
                // closing again (answer, offline form, end), recorded.
                let left = match crate::greeting::close_after_hours(
                    &self.state,
                    &self.plan,
                    &contact,
                    queue,
                    now,
                    retention,
                    token,
                )
                .await
                {
                    Some((detail, left)) => {
                        self.write_step(&contact, detail, now).await;
                        left
                    }
                    None => crate::greeting::Closing::Done,
                };
                let outcome = match left {
                    crate::greeting::Closing::Done => "done",
                    _ if tries + 1 >= CLOSING_TRIES => "given_up",
                    _ => "failed",
                };
                counter!("switchboard_router_closing_retries_total", "outcome" => outcome)
                    .increment(1);
                if let Ok(mut closings) = self.closings.lock() {
                    match (outcome, left) {
                        ("failed", crate::greeting::Closing::End) => {
                            closings.insert(contact, (now + CLOSING_RETRY_MS, tries + 1, None));
                        }
                        ("failed", _) => {
                            closings.insert(contact, (now + CLOSING_RETRY_MS, tries + 1, whole));
                        }
                        _ => {
                            closings.remove(&contact);
                        }
                    }
                }
                continue;
            }
            let result =
                crate::greeting::end_after_hours(&self.state, &contact, now, retention, token)
                    .await;
            let outcome = match &result {
                Ok(_) => "done",
                Err(_) if tries + 1 >= CLOSING_TRIES => "given_up",
                Err(_) => "failed",
            };
            counter!("switchboard_router_closing_retries_total", "outcome" => outcome).increment(1);
            match result {
                Ok(ended) => {
                    info!(contact_id = %contact, outcome = %ended, "A failed after-hours end is finished.");
                }
                Err(error) if outcome == "given_up" => {
                    warn!(%error, contact_id = %contact, tries = tries + 1, "A failed after-hours end is given up; the contact's conversation may stay open.");
                }
                Err(error) => {
                    debug!(%error, contact_id = %contact, "An after-hours end failed again.");
                }
            }
            if let Ok(mut closings) = self.closings.lock() {
                if outcome == "failed" {
                    closings.insert(contact, (now + CLOSING_RETRY_MS, tries + 1, None));
                } else {
                    closings.remove(&contact);
                }
            }
        }
    }

    /// Sends an overflow step's automatic answer (once per contact and
    /// step, guarded in Redis): its outcome, counted.
    async fn step_answer(
        &self,
        contact: &ContactId,
        queue: usize,
        step: usize,
        text: &str,
    ) -> &'static str {
        let queue_plan = &self.plan.queues[queue];
        let queue = &queue_plan.name;
        // Mail that asked for no automatic answer (bulk routed anyway, a
        // notification, noreply@) gets none here either.
        let sent = match self.state.contact_fields(contact).await {
            Ok(fields) if crate::greeting::stored_flag(&fields, "no_auto_answer") => Ok(None),
            Ok(fields) => {
                // Its placeholders filled as the other answers' are
                // (checked when the plan was built).
                let text = match crate::answers::Template::parse("auto_answer", text, "") {
                    Ok(template) => {
                        let o = crate::greeting::opening(
                            queue_plan,
                            switchboard_core::Timestamp::now().as_millis(),
                        );
                        let fill = crate::answers::Fill {
                            name: "",
                            opens_at: &o.opens_at,
                            reply_by: &o.reply_by,
                            timezone: o.timezone,
                        };
                        let name = fields.get("customer_name").map_or("", String::as_str);
                        self.plan.answers.render(&template, name, fill)
                    }
                    Err(_) => text.to_owned(),
                };
                self.conversations
                    .automatic_reply(
                        contact,
                        &format!("{queue}:{step}"),
                        &text,
                        self.plan.answers.per_customer_hour,
                    )
                    .await
                    .map(Some)
            }
            Err(error) => Err(error),
        };
        let outcome = match &sent {
            Ok(Some(outcome)) => outcome.as_str(),
            Ok(None) => "suppressed",
            Err(_) => "failed",
        };
        counter!("switchboard_router_auto_answers_total", "outcome" => outcome).increment(1);
        if let Err(error) = &sent {
            warn!(%error, contact_id = %contact, "Could not send an automatic answer; it is tried again.");
        }
        outcome
    }

    /// Tries again the overflow-step answers that failed (every
    /// [`CLOSING_RETRY_MS`], up to [`CLOSING_TRIES`] times), while their
    /// contact still waits: one offered, assigned or ended meanwhile needs
    /// a "still looking" answer no more. A failure used to be logged and
    /// lost (the step's timer was spent).
    async fn retry_answers(&self, engine: &Engine, lost: &AtomicBool, now: u64) {
        let due: Vec<((ContactId, usize, usize), DueAnswer)> = match self.answers_due.lock() {
            Ok(mut due) => {
                due.retain(|(c, _, _), _| engine.is_waiting(c));
                // A bounded number per sweep: each waits for Redis, in the
                // leader's loop.
                due.iter()
                    .filter(|(_, d)| d.at <= now)
                    .take(RETRIES_PER_SWEEP)
                    .map(|(k, d)| (*k, d.clone()))
                    .collect()
            }
            Err(_) => return,
        };
        for ((contact, queue, step), answer) in due {
            if lost.load(Ordering::Relaxed) {
                return;
            }
            let outcome = self.step_answer(&contact, queue, step, &answer.text).await;
            if let Ok(mut due) = self.answers_due.lock() {
                let tries = answer.tries + 1;
                if outcome == "failed" && tries < CLOSING_TRIES {
                    due.insert(
                        (contact, queue, step),
                        DueAnswer {
                            at: now + CLOSING_RETRY_MS,
                            tries,
                            ..answer
                        },
                    );
                } else {
                    due.remove(&(contact, queue, step));
                    if outcome == "failed" {
                        warn!(contact_id = %contact, tries, "An automatic answer is given up.");
                    } else {
                        info!(contact_id = %contact, outcome, "A failed automatic answer was tried again.");
                    }
                }
            }
        }
    }

    /// Offer deadlines, wrap-up ends, lapsed sessions.
    async fn sweep(
        &self,
        engine: &mut Engine,
        mirror: &mut Mirror,
        now: u64,
    ) -> Result<(), StoreError> {
        let grace = self.config.reconnect_grace_secs * 1000;
        let mut lapsed = Vec::new();
        let mut wrapped = Vec::new();
        for (agent, live) in &mirror.live {
            if live.presence == "wrap_up" && live.wrap_until > 0 && live.wrap_until <= now {
                wrapped.push(agent.clone());
            }
            if live.online_until > 0 && live.online_until <= now {
                let requeue = live.online_until + grace <= now && !mirror.requeued.contains(agent);
                let revoke = !mirror.revoked.contains(agent);
                if requeue || revoke {
                    lapsed.push((agent.clone(), requeue));
                }
            }
        }
        for agent in wrapped {
            self.state
                .set_presence(&agent, Some(("available", "")), None, Some("wrap_up"))
                .await?;
        }
        // Heartbeats extend a live session without an event, so the
        // mirror's deadline may be old: ask Redis before acting, for all of
        // them in one pipelined read (after a takeover every signed-out
        // agent is here once: one read each, one after another, held up
        // routing for seconds with thousands of agents).
        let asked: Vec<String> = lapsed.iter().map(|(agent, _)| agent.clone()).collect();
        let mut fresh: HashMap<String, AgentLive> = HashMap::new();
        if !asked.is_empty() {
            for (rec, live) in self.state.agents_by_id(&asked).await? {
                fresh.insert(rec.id, live);
            }
        }
        for (agent, _) in lapsed {
            let Some(live) = fresh.remove(&agent) else {
                continue;
            };
            let online = live.online_until > now;
            let fresh_presence = live.presence.clone();
            // Whether the grace has passed, from Redis's deadline: the
            // mirror's may be older than the last heartbeat.
            let requeue = live.online_until + grace <= now && !mirror.requeued.contains(&agent);
            let holds = live.loads.iter().any(|l| *l > 0);
            mirror.live.insert(agent.clone(), live);
            // The engine hears what Redis says either way: an event applied
            // after its deadline (heartbeats extend a session silently) may
            // have left the agent disconnected there though still online.
            if let Some(live) = mirror.live.get(&agent)
                && let Ok(id) = agent.parse::<AgentId>()
            {
                engine.update_agent(&id, agent_status(live, now));
            }
            if online {
                continue;
            }
            // The grace is over: returning customers waiting for this agent
            // go to the queue (a reload within it kept them: the engine
            // waits for an agent within the grace).
            if requeue && let Ok(id) = agent.parse::<AgentId>() {
                engine.release_sticky_for(&id);
            }
            // Loads count what an agent holds (offered or assigned): with
            // none, there is nothing to take back.
            if !holds {
                // No script runs for it: its occupancy is recorded here
                // (once; on failure the next sweep tries again). One who
                // went offline had it recorded then.
                if !mirror.revoked.contains(&agent)
                    && fresh_presence != "offline"
                    && let Err(error) = self.state.record_lapse(&agent, now).await
                {
                    debug!(agent_id = %agent, %error, "Could not record a lapsed session's occupancy.");
                    continue;
                }
                mirror.revoked.insert(agent.clone());
                if requeue {
                    mirror.requeued.insert(agent);
                }
                continue;
            }
            // One agent's failure does not hold up the others, nor the
            // offer deadlines below; the next sweep tries it again.
            match self.take_back(&agent, requeue, now, grace).await {
                Ok(TakenBack { refused: false }) => {
                    mirror.revoked.insert(agent.clone());
                    if requeue {
                        mirror.requeued.insert(agent);
                    }
                }
                // The agent came back meanwhile (or the grace is not over
                // in Redis's view): the next sweep looks again.
                Ok(TakenBack { refused: true }) => {}
                Err(error) => {
                    warn!(agent_id = %agent, %error, "Could not take back a lapsed session's contacts; trying again.");
                }
            }
        }
        // Agents who went away or offline (themselves, or for missed
        // offers) with offers pending: those go to others at once, not
        // counted as missed.
        for agent in std::mem::take(&mut mirror.withdraw) {
            if let Err(error) = self.take_back(&agent, false, now, grace).await {
                warn!(agent_id = %agent, %error, "Could not take back an away agent's offers; trying again.");
                mirror.withdraw.insert(agent);
            }
        }
        // Offer deadlines after lapsed sessions: the offer of an agent whose
        // session ended is taken back (not counted, not excluded), not
        // expired as missed because it fell due in the same sweep.
        for (contact, _) in self.state.due_offers(now, 500).await? {
            let Ok(id) = contact.parse::<ContactId>() else {
                continue;
            };
            if let Some(rec) = self.state.route_record(&id).await?
                && rec.state == "offered"
            {
                let r = self
                    .state
                    .answer(
                        Answer::Expire,
                        &id,
                        &rec.agent,
                        now,
                        self.config.missed_offers_before_away,
                    )
                    .await?;
                if r == "ok" {
                    counter!("switchboard_router_offers_missed_total").increment(1);
                    info!(contact_id = %id, agent_id = %rec.agent, "Offer not answered in time; routing again.");
                }
            }
        }
        Ok(())
    }
}

impl Leader {
    /// Closes, as `call_end_lost`, every call still assigned
    /// `max_call_secs` after it was answered: its hangup never reached
    /// routing (the daemon was down when the PBX or Twilio reported it, or
    /// the report failed), and it held its agent's voice capacity, and so
    /// all their work, for good. A hangup arriving later finds it closed.
    /// Failures are logged and tried again at the next check.
    async fn end_lost_calls(&self, mirror: &Mirror, lost: &AtomicBool, now: u64) {
        let longest = self.config.max_call_secs * 1000;
        let wrap = self.config.wrap_up_secs * 1000;
        // Two pipelined reads, however many agents are on calls: this runs
        // in the leader's loop, and routing waits for it. A failure ends
        // the pass; the next one tries again.
        let on_calls: Vec<&str> = mirror
            .live
            .iter()
            .filter(|(_, live)| live.loads[3] > 0)
            .map(|(agent, _)| agent.as_str())
            .collect();
        if on_calls.is_empty() {
            return;
        }
        let held = match self.state.held_by_each(&on_calls).await {
            Ok(held) => held,
            Err(error) => {
                warn!(%error, "Could not read agents' calls to look for lost call ends.");
                return;
            }
        };
        let mut held_by: Vec<(&str, ContactId)> = Vec::new();
        for (agent, contacts) in on_calls.iter().zip(held) {
            for contact in contacts {
                if let Ok(id) = contact.parse::<ContactId>() {
                    held_by.push((agent, id));
                }
            }
        }
        let ids: Vec<ContactId> = held_by.iter().map(|(_, id)| *id).collect();
        let records = match self.state.route_records(&ids).await {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "Could not read agents' contacts to look for lost call ends.");
                return;
            }
        };
        for ((agent, id), rec) in held_by.into_iter().zip(records) {
            let Some(rec) = rec else {
                continue;
            };
            let answered = rec
                .fields
                .get("answered_at")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(rec.since);
            if rec.agent != agent
                || rec.state != "assigned"
                || rec.channel != "voice"
                || answered == 0
                || answered.saturating_add(longest) > now
            {
                continue;
            }
            if lost.load(Ordering::Relaxed) {
                return;
            }
            // Only while it is still hers: a transfer since the read above
            // is not ended.
            let ended = self
                .state
                .end_if_assigned_to(
                    &id,
                    agent,
                    now,
                    "call_end_lost",
                    if wrap > 0 { now + wrap } else { 0 },
                    Duration::from_secs(self.config.retention_days * 86_400),
                    Duration::from_secs(self.config.sticky_memory_days * 86_400),
                )
                .await;
            match ended {
                Ok(outcome) if outcome == "closed" => {
                    counter!("switchboard_router_calls_end_lost_total").increment(1);
                    warn!(
                        contact_id = %id,
                        agent_id = %agent,
                        answered_ms_ago = now.saturating_sub(answered),
                        "A call was still assigned max_call_secs after it was answered: its end was never reported; closed as call_end_lost."
                    );
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(contact_id = %id, %error, "Could not close a call whose end was lost; trying again.");
                    return;
                }
            }
        }
    }
}

/// What [`Leader::take_back`] did.
struct TakenBack {
    /// A script refused because the agent is back (online and available),
    /// or their session's grace is not over in Redis's view.
    refused: bool,
}

impl Leader {
    /// Takes back the offers pending for `agent`, and with `requeue` puts
    /// the contacts assigned to them back in their queues. The scripts
    /// check again that this is still right (the agent's session over, or
    /// the agent away or offline; the grace passed), so a leader whose
    /// view is old takes nothing from an agent who came back.
    async fn take_back(
        &self,
        agent: &str,
        requeue: bool,
        now: u64,
        grace: u64,
    ) -> Result<TakenBack, StoreError> {
        let mut refused = false;
        for contact in self.state.held(agent).await? {
            let Ok(id) = contact.parse::<ContactId>() else {
                continue;
            };
            let Some(rec) = self.state.route_record(&id).await? else {
                continue;
            };
            if rec.agent != agent {
                continue;
            }
            if rec.state == "offered" {
                let r = self
                    .state
                    .answer(Answer::Revoke, &id, agent, now, 0)
                    .await?;
                match r.as_str() {
                    "ok" => {
                        info!(contact_id = %id, agent_id = %agent, "Agent gone or away; offer taken back.");
                    }
                    "online" => refused = true,
                    _ => {}
                }
            } else if rec.state == "assigned" && requeue && rec.channel == "voice" {
                // The call is on her phone, not in her console: it stays
                // hers (and her voice capacity used) until the channel
                // ends it (a hangup closes it; a phone that does not
                // answer sends it back). Requeued, it was offered to
                // agents whose phones could not ring while she talked.
                debug!(contact_id = %id, agent_id = %agent, "Agent's session ended during a call; the call stays hers.");
            } else if rec.state == "assigned" && requeue {
                let r = self.state.requeue_lapsed(&id, agent, now, grace).await?;
                match r.as_str() {
                    "ok" => {
                        counter!("switchboard_router_requeued_total", "reason" => "agent_disconnected")
                            .increment(1);
                        info!(contact_id = %id, agent_id = %agent, "Agent did not come back; contact back in the queue.");
                    }
                    "online" => refused = true,
                    _ => {}
                }
            }
        }
        Ok(TakenBack { refused })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the routing lease every third of its length until it is lost:
/// refused (another instance holds it) or not renewed for a whole lease
/// because Redis did not answer. Sets `lost` and returns then.
async fn keep_lease(state: RoutingState, token: String, lease: Duration, lost: Arc<AtomicBool>) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        match state.renew_lease(&token, lease).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                warn!("The routing lease was lost (another instance holds it now).");
                break;
            }
            Err(error) if renewed.elapsed() >= lease => {
                warn!(%error, "The routing lease lapsed: Redis did not answer in time.");
                break;
            }
            Err(error) => debug!(%error, "Could not renew the routing lease; retrying."),
        }
    }
    lost.store(true, Ordering::Relaxed);
}

/// Offers the store refused in the current round of the leader's loop.
#[derive(Debug, Default)]
struct Refused {
    pairs: HashSet<(ContactId, AgentId)>,
    deferred: Vec<WaitingContact>,
}

impl Refused {
    /// Starts a round: the contacts deferred in the last one.
    fn next_round(&mut self) -> Vec<WaitingContact> {
        self.pairs.clear();
        std::mem::take(&mut self.deferred)
    }

    /// True the first time this round that this offer was refused.
    fn first_time(&mut self, d: &Decision) -> bool {
        self.pairs.insert((d.contact.id, d.agent.clone()))
    }

    fn defer(&mut self, contact: WaitingContact) {
        self.deferred.push(contact);
    }
}
