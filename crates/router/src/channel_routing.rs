//! Routing as channels see it ([`switchboard_channel::Routing`]): where a
//! contact is, the agent's answer given on the channel itself (a voice
//! call answered on the agent's phone), and contacts the channel ends (a
//! caller who hung up).

use crate::settings::RoutingConfig;
use futures::future::BoxFuture;
use metrics::counter;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{RouteView, Routing};
use switchboard_core::{ContactId, IntakeError, Timestamp};
use switchboard_store::{Answer, RoutingState, StoreError};
use tracing::info;

/// [`Routing`] on the routing state in Redis.
#[derive(Debug, Clone)]
pub struct ChannelRouting {
    state: RoutingState,
    config: Arc<RoutingConfig>,
}

impl ChannelRouting {
    pub fn new(state: RoutingState, config: Arc<RoutingConfig>) -> ChannelRouting {
        ChannelRouting { state, config }
    }
}

fn unavailable(e: StoreError) -> IntakeError {
    IntakeError::Unavailable(e.to_string())
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
            Ok(Some(RouteView {
                state: r.state,
                agent: (!r.agent.is_empty()).then_some(r.agent),
                agent_name,
                queue: r.queue,
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

    fn answer<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
        accept: bool,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async move {
            // A miss on the channel counts toward the agent's missed offers.
            let action = if accept { Answer::Accept } else { Answer::Miss };
            let missed = self.config.missed_offers_before_away;
            let outcome = self
                .state
                .answer(action, contact, agent, Timestamp::now().as_millis(), missed)
                .await
                .map_err(unavailable)?;
            info!(contact_id = %contact, agent_id = agent, accept, outcome = %outcome, "Offer answered on the channel.");
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
