//! Switchboard's router.
//!
//! - [`Router`] (every instance): takes the contacts the intake created off
//!   the per-partition routing streams, places each in a queue by the
//!   routing rules ([`rules`]) and hands it to the routing state, reclaiming
//!   the entries of instances that died.
//! - [`leader::Leader`] (one instance at a time, by a fenced lease): keeps
//!   the selection [`engine`] in step with the routing state and makes the
//!   offers.
//! - [`plan`] and [`settings`]: the `[routing]` configuration; [`hours`]
//!   (business hours) and [`answers`] (the acknowledgement and the
//!   after-hours answer the hand-off sends).
#![forbid(unsafe_code)]

pub mod answers;
pub mod channel_routing;
pub mod engine;
mod greeting;
pub mod hours;
pub mod leader;
pub mod plan;
pub mod rules;
pub mod settings;

use metrics::counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_store::{NewRoute, QueuedContact, RoutingState, RoutingStreams, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Router settings from configuration.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// This instance's consumer name (unique among instances).
    pub consumer: String,
    /// Longest wait for new entries per read.
    pub block: Duration,
    /// Entries pending this long under another instance are taken over.
    pub reclaim_idle: Duration,
    /// Entries taken per read.
    pub batch: usize,
}

/// Whether the router loop is alive, for `/readyz`.
#[derive(Debug, Clone)]
pub struct RouterHealth {
    started: Instant,
    /// Milliseconds since `started` of the last healthy pass; 0 = never.
    last_ok_ms: Arc<AtomicU64>,
    /// Milliseconds since `started` of the last pass, healthy or failed.
    last_pass_ms: Arc<AtomicU64>,
    stale_after: Duration,
}

impl RouterHealth {
    fn new(stale_after: Duration) -> Self {
        RouterHealth {
            started: Instant::now(),
            last_ok_ms: Arc::new(AtomicU64::new(0)),
            last_pass_ms: Arc::new(AtomicU64::new(0)),
            stale_after,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_ok(&self) {
        let ms = self.now_ms().max(1);
        self.last_ok_ms.store(ms, Ordering::Relaxed);
        self.last_pass_ms.store(ms, Ordering::Relaxed);
    }

    fn mark_failed(&self) {
        self.last_ok_ms.store(0, Ordering::Relaxed);
        self.last_pass_ms
            .store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// True when the loop finished a pass, healthy or not, within `window`
    /// (or started that recently): it is not stuck, even while Redis is
    /// away. What the systemd watchdog pings on. The window is at least
    /// what a pass may take when Redis fails (its block, timeouts and the
    /// backoff of up to 5 s).
    pub fn alive_within(&self, window: Duration) -> bool {
        let last = self.last_pass_ms.load(Ordering::Relaxed);
        let window = window.max(self.stale_after + Duration::from_secs(10));
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_sub(last) <= window
    }

    /// True when the loop completed a pass against Redis recently.
    pub fn is_running(&self) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) <= u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The router of one instance.
#[derive(Debug)]
pub struct Router {
    streams: RoutingStreams,
    settings: RouterSettings,
    health: RouterHealth,
    state: RoutingState,
    plan: Arc<plan::Plan>,
    config: Arc<settings::RoutingConfig>,
}

impl Router {
    pub fn new(
        store: Store,
        settings: RouterSettings,
        plan: Arc<plan::Plan>,
        config: Arc<settings::RoutingConfig>,
    ) -> Result<Router, StoreError> {
        let state = RoutingState::new(store.clone());
        let streams = RoutingStreams::new(store, settings.consumer.clone(), settings.block)?;
        let health = RouterHealth::new(settings.block * 2 + Duration::from_secs(5));
        Ok(Router {
            streams,
            settings,
            health,
            state,
            plan,
            config,
        })
    }

    pub fn health(&self) -> RouterHealth {
        self.health.clone()
    }

    /// Runs until `shutdown` is cancelled. Redis failures are logged and
    /// retried with backoff; they never end the loop.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let span = info_span!("router", consumer = %self.settings.consumer);
        async move {
            let mut backoff = Duration::from_millis(100);
            let mut groups_ready = false;
            let mut last_reclaim = Instant::now() - self.settings.reclaim_idle;
            info!("Router started.");
            while !shutdown.is_cancelled() {
                let pass = async {
                    if !groups_ready {
                        self.streams.ensure_groups().await?;
                        groups_ready = true;
                    }
                    let mut entries = Vec::new();
                    if last_reclaim.elapsed() >= self.settings.reclaim_idle / 2 {
                        entries = self.streams.reclaim(self.settings.reclaim_idle, self.settings.batch).await?;
                        if !entries.is_empty() {
                            info!(count = entries.len(), "Took over routing entries of a stalled instance.");
                        }
                        last_reclaim = Instant::now();
                    }
                    if entries.is_empty() {
                        entries = self.streams.read(self.settings.batch).await?;
                    }
                    // Entries are independent: hand them off concurrently
                    // (the connection pipelines the round trips), then mark
                    // those handed off, one call per partition. An entry
                    // that failed stays pending and is reclaimed after
                    // `reclaim_idle` (handing off again is harmless).
                    let this = &self;
                    let results = futures::future::join_all(entries.iter().map(|e| this.queue(e))).await;
                    let done: Vec<&QueuedContact> = entries
                        .iter()
                        .zip(&results)
                        .filter(|(_, r)| r.is_ok())
                        .map(|(e, _)| e)
                        .collect();
                    if !done.is_empty() {
                        self.streams.mark_routed_all(&done).await?;
                    }
                    results.into_iter().collect::<Result<Vec<()>, StoreError>>()?;
                    Ok::<(), StoreError>(())
                };
                let result = tokio::select! {
                    () = shutdown.cancelled() => break,
                    result = pass => result,
                };
                match result {
                    Ok(()) => {
                        self.health.mark_ok();
                        backoff = Duration::from_millis(100);
                    }
                    Err(error) => {
                        self.health.mark_failed();
                        groups_ready = false;
                        counter!("switchboard_router_errors_total", "error_type" => "store").increment(1);
                        warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Router pass failed.");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            info!("Router stopped.");
        }
        .instrument(span)
        .await;
    }

    /// Places a new contact in a queue and hands it to the routing state.
    /// The caller then marks the entry routed.
    async fn queue(&self, entry: &QueuedContact) -> Result<(), StoreError> {
        let fields = self.streams.contact_fields(&entry.contact_id).await?;
        if fields.is_empty() {
            // Deleted since (by hand, or evicted by a Redis whose
            // `maxmemory-policy` is not `noeviction`): nothing to route,
            // but a contact that was acknowledged is lost, and says so.
            counter!("switchboard_router_errors_total", "error_type" => "contact_missing")
                .increment(1);
            warn!(contact_id = %entry.contact_id, "A queued contact is gone from Redis: it cannot be routed.");
            return Ok(());
        }
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let facts = rules::ContactFacts {
            channel: get("channel").parse().ok(),
            source: get("source"),
            address: get("address"),
            subject: get("subject"),
            text: get("preview"),
            language: get("language"),
            attributes: serde_json::from_str(&get("attributes")).unwrap_or_default(),
        };
        let placement = rules::place(&self.plan, &facts);
        let queue = &self.plan.queues[placement.queue];
        let customer_key = format!("{}:{}", facts.source, get("customer"));
        let person = get("customer")
            .split_once(':')
            .and_then(|(scheme, value)| switchboard_core::CustomerIdentity::new(scheme, value).ok())
            .map(|identity| identity.person_key())
            .unwrap_or_default();
        let now = switchboard_core::Timestamp::now().as_millis();
        // The customer's last agent, when remembered, is looked up by the
        // enqueue script itself.
        let sticky_memory =
            (self.config.sticky_memory_days > 0).then(|| now + self.config.sticky_wait_secs * 1000);
        let since = fields
            .get("created_at")
            .and_then(|v| v.parse().ok())
            .unwrap_or(entry.created_at.as_millis());
        // The acknowledgement, or outside business hours the after-hours
        // answer (greeting.rs), before the contact can be offered.
        let then = self
            .greet(&entry.contact_id, &fields, &facts, placement.queue, now)
            .await?;
        let queued = self
            .state
            .enqueue(&NewRoute {
                contact: &entry.contact_id,
                queue: &queue.name,
                channel: facts.channel.unwrap_or(switchboard_core::ChannelKind::Chat),
                priority: placement.priority,
                since,
                now,
                rule: placement.rule.as_deref().unwrap_or(""),
                source: &facts.source,
                customer: &customer_key,
                sticky: None,
                sticky_memory,
                person: &person,
            })
            .await?;
        self.after_queueing(&entry.contact_id, then, &queue.name, now)
            .await?;
        if !queued
            && self
                .state
                .route_record(&entry.contact_id)
                .await?
                .is_some_and(|r| r.state == "closed")
        {
            // Handled again (a retry) and closed already: perhaps by an end
            // cut off before its conversation ended (a crash, a Redis error
            // between the two steps), which would leave the customer's
            // messages joining a contact nobody sees. Ending the
            // conversation again changes nothing when it had ended, and
            // never touches a newer conversation of the customer. Whatever
            // the business hours are by now.
            switchboard_store::Conversations::new(self.state.store().clone())
                .end(&entry.contact_id)
                .await?;
        }
        if queued {
            counter!("switchboard_router_contacts_queued_total", "queue" => queue.name.clone())
                .increment(1);
            tracing::debug!(contact_id = %entry.contact_id, queue = %queue.name,
                rule = placement.rule.as_deref().unwrap_or("(default)"), "Contact is waiting for an agent.");
        }
        Ok(())
    }
}

#[cfg(test)]
mod health_tests {
    use super::RouterHealth;
    use std::time::{Duration, Instant};

    /// The watchdog's view: a loop that keeps failing (Redis away) is
    /// alive but not ready; one that made no pass for the window is not
    /// alive.
    #[test]
    fn a_failing_loop_is_alive_a_silent_one_is_not() {
        let mut health = RouterHealth::new(Duration::from_secs(1));
        assert!(health.alive_within(Duration::from_secs(30)), "just started");
        if let Some(past) = Instant::now().checked_sub(Duration::from_secs(100)) {
            health.started = past;
            assert!(
                !health.alive_within(Duration::from_secs(30)),
                "no pass in 100 s"
            );
        }
        health.mark_failed();
        assert!(health.alive_within(Duration::from_secs(30)));
        assert!(!health.is_running(), "not ready while passes fail");
        health.mark_ok();
        assert!(health.alive_within(Duration::from_secs(30)) && health.is_running());
    }
}
