//! Routing as channels see it ([`switchboard_channel::Routing`]): where a
//! contact is, the agent's answer given on the channel itself (a voice
//! call answered on the agent's phone), and contacts the channel ends (a
//! caller who hung up).
//!
//! `agents_available` also looks at business hours: a channel whose
//! contacts can only go to queues that are closed now has no agent
//! available (a chat widget shows its offline form then).

use crate::hours::Schedule;
use crate::plan::Plan;
use crate::settings::RoutingConfig;
use futures::future::BoxFuture;
use metrics::counter;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::{RouteView, Routing};
use switchboard_core::{ChannelKind, ContactId, IntakeError, Timestamp};
use switchboard_store::{Answer, RoutingState, StoreError};
use tracing::{info, warn};

/// [`Routing`] on the routing state in Redis.
#[derive(Debug, Clone)]
pub struct ChannelRouting {
    state: RoutingState,
    config: Arc<RoutingConfig>,
    /// Per channel, whether an agent could take a contact, and when that
    /// was read: every visitor's `hello` asks, so all agents are read at
    /// most once per [`AVAILABLE_TTL`].
    available: Arc<Mutex<Option<Available>>>,
    /// Per channel (in [`ChannelKind::ALL`] order), the schedules of the
    /// queues its contacts may be placed in; `None` when one of them is
    /// always open.
    hours: Arc<[Option<Vec<Arc<Schedule>>>; 4]>,
}

/// When it was read, and per channel (in [`ChannelKind::ALL`] order)
/// whether some agent could take a contact.
type Available = (Instant, [bool; 4]);

const AVAILABLE_TTL: Duration = Duration::from_secs(3);

impl ChannelRouting {
    pub fn new(state: RoutingState, config: Arc<RoutingConfig>) -> ChannelRouting {
        // The daemon checked the configuration before; a plan that does not
        // compile here counts as always open.
        let hours = match config.routing_plan() {
            Ok(plan) => ChannelKind::ALL.map(|c| channel_schedules(&plan, c)),
            Err(_) => [None, None, None, None],
        };
        ChannelRouting {
            state,
            config,
            available: Arc::default(),
            hours: Arc::new(hours),
        }
    }

    /// Whether some queue a contact of channel index `i` may go to is open.
    fn hours_open(&self, i: usize, now: u64) -> bool {
        match &self.hours[i] {
            None => true,
            Some(schedules) => schedules.iter().any(|s| s.is_open(now)),
        }
    }

    async fn read_available(&self) -> Result<[bool; 4], StoreError> {
        let now = Timestamp::now().as_millis();
        let mut out = [false; 4];
        for (profile, live) in self.state.agents().await? {
            let held: u32 = live.loads.iter().sum();
            if live.presence != "available"
                || live.online_until < now
                || (profile.total_capacity > 0 && held >= profile.total_capacity)
            {
                continue;
            }
            for (i, slot) in out.iter_mut().enumerate() {
                *slot |= profile.capacity[i] > live.loads[i];
            }
        }
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = *slot && self.hours_open(i, now);
        }
        Ok(out)
    }
}

/// The schedules of every queue a contact of `channel` may be placed in
/// (rules that may match it, then the default queue unless a rule matches
/// every contact of the channel); `None` when one of them has no schedule.
/// Rules are read generously: a rule with any condition besides the
/// channel may match.
pub fn channel_schedules(plan: &Plan, channel: ChannelKind) -> Option<Vec<Arc<Schedule>>> {
    let mut queues = Vec::new();
    let mut catch_all = false;
    for rule in &plan.rules {
        if !rule.channels.is_empty() && !rule.channels.contains(&channel) {
            continue;
        }
        queues.push(rule.queue);
        let unconditional = rule.sources.is_empty()
            && rule.addresses.is_empty()
            && rule.words.is_empty()
            && rule.languages.is_empty()
            && rule.attributes.is_empty();
        if unconditional {
            catch_all = true;
            break;
        }
    }
    if !catch_all {
        queues.push(plan.default_queue);
    }
    queues
        .into_iter()
        .map(|q| plan.queues[q].schedule.clone())
        .collect()
}

fn unavailable(e: StoreError) -> IntakeError {
    IntakeError::Unavailable(e.to_string())
}

impl ChannelRouting {
    /// The offer of `contact` to `agent` answered with `action` on the
    /// channel; routing's own answer.
    async fn on_channel(
        &self,
        action: Answer,
        contact: &ContactId,
        agent: &str,
    ) -> Result<String, IntakeError> {
        let missed = self.config.missed_offers_before_away;
        self.state
            .answer(action, contact, agent, Timestamp::now().as_millis(), missed)
            .await
            .map_err(unavailable)
    }
}

impl Routing for ChannelRouting {
    fn route<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<RouteView>, IntakeError>> {
        Box::pin(async move {
            let record = self
                .state
                .route_record(contact)
                .await
                .map_err(unavailable)?;
            let Some(r) = record else { return Ok(None) };
            let agent_name = if r.agent.is_empty() {
                None
            } else {
                self.state
                    .agent(&r.agent)
                    .await
                    .map_err(unavailable)?
                    .map(|(profile, _)| profile.name)
            };
            let offer_until = (r.state == "offered" && r.offer_until > 0).then_some(r.offer_until);
            let stamp = (matches!(r.state.as_str(), "offered" | "assigned") && r.offer_until > 0)
                .then_some(r.offer_until);
            Ok(Some(RouteView {
                offer_until,
                stamp,
                state: r.state,
                agent: (!r.agent.is_empty()).then_some(r.agent),
                agent_name,
                queue: r.queue,
                source: r.source,
            }))
        })
    }

    fn queue_position<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<u32>, IntakeError>> {
        Box::pin(async move {
            self.state
                .queue_position(contact)
                .await
                .map_err(unavailable)
        })
    }

    fn agents_available(&self, channel: ChannelKind) -> BoxFuture<'_, Result<bool, IntakeError>> {
        Box::pin(async move {
            let index = ChannelKind::ALL
                .iter()
                .position(|c| *c == channel)
                .unwrap_or(0);
            let cached = *self.available.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, by_channel)) = cached
                && at.elapsed() < AVAILABLE_TTL
            {
                return Ok(by_channel[index]);
            }
            let by_channel = self.read_available().await.map_err(unavailable)?;
            *self.available.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), by_channel));
            Ok(by_channel[index])
        })
    }

    fn agent_name<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>> {
        Box::pin(async move {
            let found = self.state.agent(agent).await.map_err(unavailable)?;
            Ok(found
                .map(|(record, _)| record.name)
                .filter(|name| !name.is_empty()))
        })
    }

    fn answer<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
        accept: bool,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async move {
            // A miss on the channel counts toward the agent's missed offers.
            let action = if accept { Answer::Accept } else { Answer::Miss };
            let outcome = self.on_channel(action, contact, agent).await?;
            info!(contact_id = %contact, agent_id = agent, accept, outcome = %outcome, "Offer answered on the channel.");
            Ok(outcome)
        })
    }

    fn pass<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async move {
            // A decline that is not the agent's: they are left out of this
            // contact, and their run of missed offers neither grows nor
            // ends.
            let outcome = self.on_channel(Answer::Pass, contact, agent).await?;
            if outcome != "not_offered" {
                info!(contact_id = %contact, agent_id = agent, outcome = %outcome, "Offer passed on: the channel cannot reach the agent.");
                return Ok(outcome);
            }
            // Assigned already (accepted in the console, an auto-accepting
            // queue): back to its queue without them (as a decline), or the
            // call would wait for a dial that can never come.
            let outcome = self
                .state
                .requeue_unreachable(contact, agent, Timestamp::now().as_millis())
                .await
                .map_err(unavailable)?;
            if outcome == "ok" {
                counter!("switchboard_router_requeued_total", "reason" => "unreachable")
                    .increment(1);
                warn!(contact_id = %contact, agent_id = agent, "Contact put back in its queue: the channel cannot reach the agent it was assigned to.");
            }
            Ok(outcome)
        })
    }

    fn rate<'a>(
        &'a self,
        contact: &'a ContactId,
        score: u8,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async move {
            let outcome = switchboard_store::Records::new(self.state.store().clone())
                .rate(contact, score, Timestamp::now().as_millis())
                .await
                .map_err(unavailable)?;
            counter!("switchboard_router_ratings_total", "outcome" => outcome.clone()).increment(1);
            info!(contact_id = %contact, score, outcome = %outcome, "Contact rated.");
            Ok(outcome)
        })
    }

    fn end<'a>(
        &'a self,
        contact: &'a ContactId,
        disposition: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async move {
            let now = Timestamp::now().as_millis();
            let wrap = self.config.wrap_up_secs * 1000;
            let outcome = self
                .state
                .end_by_channel(
                    contact,
                    now,
                    disposition,
                    if wrap > 0 { now + wrap } else { 0 },
                    Duration::from_secs(self.config.retention_days * 86_400),
                    // An assigned contact the channel ends (a caller who hung
                    // up) is remembered as an agent's close is: the customer
                    // comes back to that agent, even one whose phone was
                    // still ringing (assigned is all routing knows).
                    Duration::from_secs(self.config.sticky_memory_days * 86_400),
                )
                .await
                .map_err(unavailable)?;
            counter!("switchboard_router_ended_by_channel_total", "outcome" => outcome.clone())
                .increment(1);
            info!(contact_id = %contact, disposition, outcome = %outcome, "Contact ended by its channel.");
            Ok(outcome)
        })
    }
}
