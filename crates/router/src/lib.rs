//! Switchboard's router.
//!
//! Today it takes every contact the intake created off the routing streams
//! and puts it in its partition's waiting queue, reclaiming the entries of
//! instances that died. Choosing an agent by skill and load (issue 3) is
//! built on this loop.
#![forbid(unsafe_code)]

pub mod engine;
pub mod plan;
pub mod rules;

use metrics::counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_store::{QueuedContact, RoutingStreams, Store, StoreError};
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
    stale_after: Duration,
}

impl RouterHealth {
    fn new(stale_after: Duration) -> Self {
        RouterHealth {
            started: Instant::now(),
            last_ok_ms: Arc::new(AtomicU64::new(0)),
            stale_after,
        }
    }

    fn mark_ok(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_ok_ms.store(ms, Ordering::Relaxed);
    }

    fn mark_failed(&self) {
        self.last_ok_ms.store(0, Ordering::Relaxed);
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
}

impl Router {
    pub fn new(store: Store, settings: RouterSettings) -> Result<Router, StoreError> {
        let streams = RoutingStreams::new(store, settings.consumer.clone(), settings.block)?;
        let health = RouterHealth::new(settings.block * 2 + Duration::from_secs(5));
        Ok(Router {
            streams,
            settings,
            health,
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
                    for entry in &entries {
                        self.queue(entry).await?;
                    }
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

    async fn queue(&mut self, entry: &QueuedContact) -> Result<(), StoreError> {
        let queued = self.streams.enqueue_waiting(entry).await?;
        if queued {
            counter!("switchboard_router_contacts_queued_total").increment(1);
            tracing::debug!(contact_id = %entry.contact_id, "Contact is waiting for an agent.");
        }
        Ok(())
    }
}
