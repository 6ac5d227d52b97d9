//! Wires the store, the router, the channels and the HTTP server together
//! and runs them until SIGTERM or SIGINT.

use crate::config::Config;
use crate::http::{self, HealthState};
use crate::systemd;
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchboard_channel::ChannelContext;
use switchboard_router::leader::Leader;
use switchboard_router::{Router, RouterSettings};
use switchboard_store::{
    AgentRecord, IntakeSettings, RedisIntake, RedisOutbox, RoutingState, Store, StoreError,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// A delivery not settled within this time is handed to another instance.
const OUTBOX_VISIBILITY: Duration = Duration::from_secs(60);

/// Runs the daemon. Returns when it has shut down cleanly.
pub async fn run(config: Config, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let instance = config.instance_id();
    if config.testing.manual_clock {
        switchboard_core::Timestamp::set_manual(switchboard_core::Timestamp::system());
        warn!(
            "[testing] manual_clock is on: the clock stands still until POST /debug/clock. For tests only."
        );
    }
    // With webhooks, the intake and replies also write the event feed.
    let store = Store::new(config.store_config()?)?.with_event_feed(!config.webhooks.is_empty());
    info!(instance = %instance, redis = %switchboard_store::redact_url(&config.redis.url), "Switchboard is starting.");

    // `stop_accepting` ends the HTTP server gracefully; `background` ends
    // everything else once requests in flight are done.
    let stop_accepting = CancellationToken::new();
    let background = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The first fatal error stops the instance; later ones are logged where
    // they happen and dropped (`try_send`: a sender that waited for room
    // held the drain up to its deadline).
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<anyhow::Error>(1);

    // Set once the store's partition count is known to match ours: until
    // then the intake takes nothing and the instance is not ready.
    let layout_checked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let intake = RedisIntake::new(
        store.clone(),
        IntakeSettings {
            dedupe_window: Duration::from_secs(config.intake.dedupe_window_secs),
            limits: switchboard_core::inbound::EventLimits {
                max_text_bytes: config.intake.max_text_bytes,
            },
        },
    )
    .gated_by(layout_checked.clone());
    tracker.spawn(check_layout(
        store.clone(),
        layout_checked.clone(),
        background.clone(),
        fatal_tx.clone(),
    ));
    if !switchboard_core::Timestamp::is_manual() {
        tracker.spawn(watch_clock(store.clone(), background.clone()));
    }
    tracker.spawn(keep_metrics(
        store.clone(),
        metrics.clone(),
        background.clone(),
    ));

    let routing = Arc::new(config.routing.clone());
    let plan = Arc::new(routing.plan().map_err(|e| anyhow::anyhow!("{e}"))?);
    let router = Router::new(
        store.clone(),
        RouterSettings {
            consumer: instance.clone(),
            block: Duration::from_millis(config.router.block_ms),
            reclaim_idle: Duration::from_millis(config.router.reclaim_idle_ms),
            batch: config.router.batch,
        },
        plan.clone(),
        routing.clone(),
    )?;
    let router_health = router.health();
    let essential = Essential {
        tracker: tracker.clone(),
        background: background.clone(),
        fatal: fatal_tx.clone(),
    };
    essential.spawn("the router", router.run(background.clone()));
    let state =
        RoutingState::new(store.clone()).with_interrupt_voice(&routing.interrupt_voice_csv());
    tracker.spawn(load_agents(
        state.clone(),
        routing
            .agent_records()
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        background.clone(),
    ));
    let leader = Leader::new(
        state.clone(),
        plan.clone(),
        routing.clone(),
        instance.clone(),
    );
    essential.spawn("the routing leader", leader.run(background.clone()));
    let recorder = switchboard_records::Recorder::new(
        store.clone(),
        plan.clone(),
        config.records.clone(),
        Duration::from_secs(routing.retention_days * 86_400),
    );
    essential.spawn("the records", recorder.clone().run(background.clone()));
    let agent_api = switchboard_api_agent::AgentApi::new(
        store.clone(),
        routing.clone(),
        plan.clone(),
        config.agent_api.clone(),
        Some(recorder),
    )
    .map_err(|e| anyhow::anyhow!(e))?;

    let draining = Arc::new(AtomicBool::new(false));
    let mut app = http::routes(HealthState {
        store: store.clone(),
        router: router_health.clone(),
        metrics,
        draining: draining.clone(),
        layout_checked,
    })
    .nest("/api/v1", agent_api.routes())
    .merge(agent_api.console_routes());
    if config.testing.manual_clock
        && let Some(secret) = &config.agent_api.supervisor_token
    {
        let supervisor = secret
            .resolve()
            .map_err(|e| anyhow::anyhow!("agent_api.supervisor_token: {e}"))?;
        app = app.merge(http::clock_routes(supervisor));
    }

    let channel_routing: Arc<dyn switchboard_channel::Routing> = Arc::new(
        switchboard_router::channel_routing::ChannelRouting::new(state.clone(), routing.clone()),
    );
    for channel in &config.channels {
        let name = channel.config().name().to_owned();
        let ctx = ChannelContext {
            name: name.clone(),
            intake: Arc::new(intake.clone()),
            outbox: Arc::new(RedisOutbox::new(
                store.clone(),
                &name,
                &instance,
                OUTBOX_VISIBILITY,
            )?),
            routing: channel_routing.clone(),
            state: Arc::new(switchboard_store::RedisChannelState::new(
                store.clone(),
                &name,
                &instance,
            )),
            live: Arc::new(switchboard_store::Live::new(store.clone())),
            conversations: Arc::new(switchboard_store::Conversations::new(store.clone())),
            draining: stop_accepting.clone(),
            shutdown: background.clone(),
        };
        let adapter = channel
            .config()
            .build(ctx)
            .with_context(|| format!("channels.{name}: cannot start"))?;
        if let Some(routes) = adapter.routes() {
            app = app.nest(&format!("/channels/{name}"), routes);
        }
        if let Some(media) = adapter.media() {
            agent_api.register_media(&name, media);
        }
        let kind = channel.type_name();
        // A channel that cannot serve would leave its contacts' replies
        // unsent while the instance looks ready: one that ends before
        // shutdown, with an error, without one, or in a panic, stops the
        // instance (non-zero; systemd restarts it).
        let what = format!("channels.{name}");
        essential.spawn_result(what, async move {
            let ran = adapter.run().await;
            if let Err(error) = &ran {
                error!(source = %name, kind, %error, "Channel stopped with an error.");
            }
            ran
        });
        info!(source = %channel.config().name(), kind, "Channel started.");
    }
    essential.spawn("the agent API", agent_api.run(background.clone()));
    tracker.spawn(switchboard_store::outbox::report_backlogs(
        store.clone(),
        config
            .channels
            .iter()
            .map(|c| c.config().name().to_owned())
            .collect(),
        Duration::from_secs(15),
        background.clone(),
    ));
    if !config.webhooks.is_empty() {
        let webhooks =
            switchboard_webhooks::Webhooks::new(store.clone(), &config.webhooks, &instance)?;
        essential.spawn("the webhooks", webhooks.run(background.clone()));
    }

    let app = crate::deadline::apply(app, Duration::from_secs(config.http.body_timeout_secs));
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("http.listen: cannot listen on {addr}"))?;
    let open_files = crate::limits::raise_open_files();
    let max_connections = crate::limits::http_connections(config.http.max_connections, open_files);
    if let Some(files) = open_files
        && max_connections > crate::limits::http_connections(0, open_files)
    {
        warn!(
            max_connections,
            open_files = files,
            "http.max_connections leaves too little of the open-file limit to Redis, mail and files (1,024, or a quarter of a smaller limit): raise LimitNOFILE or lower it."
        );
    }
    let worker_threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(%addr, worker_threads, max_connections, open_files, "Switchboard is listening: /healthz, /readyz, /metrics, /api/v1/…, /console, /wallboard, /channels/<name>/…");
    // With the peer's address: channels limit by it (chat's `rate_per_ip`).
    let server = crate::serve::serve(
        listener,
        app,
        crate::serve::Limits {
            header: Duration::from_secs(config.http.header_timeout_secs),
            write: Duration::from_secs(config.http.write_timeout_secs),
            connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        },
        stop_accepting.clone(),
    );
    let mut server_task = tokio::spawn(server);

    // Before READY: a SIGTERM right after it drains rather than kills.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    systemd::ready("serving").await;
    let watchdog = {
        let health = router_health.clone();
        systemd::spawn_watchdog(background.clone(), move |window| {
            health.alive_within(window)
        })
    };

    let fatal = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => {
                warn!("SIGHUP received: live reload is not supported yet; restart to apply a new configuration.");
            }
            Some(err) = fatal_rx.recv() => break Some(err),
            result = &mut server_task => {
                break Some(match result {
                    Ok(()) => anyhow::anyhow!("the HTTP server stopped unexpectedly"),
                    Err(e) => anyhow::Error::new(e).context("the HTTP server task failed"),
                });
            }
        }
    };

    info!(
        drain_timeout_s = config.shutdown.drain_timeout_secs,
        "Shutting down: no new work, finishing requests in flight."
    );
    systemd::stopping(config.drain_timeout()).await;
    draining.store(true, Ordering::SeqCst);
    stop_accepting.cancel();
    if !server_task.is_finished() {
        match tokio::time::timeout(config.drain_timeout(), &mut server_task).await {
            Ok(_) => info!("Requests in flight finished."),
            Err(_) => {
                warn!("Drain deadline passed; closing the remaining connections.");
                server_task.abort();
            }
        }
    }
    background.cancel();
    tracker.close();
    // The channels finish what they are sending (a provider call may take
    // its whole timeout): as long again as the requests had, at least 5 s.
    // The intake stays open meanwhile: a mail session in the middle of
    // DATA when the drain began (the listeners stopped accepting then)
    // finishes its message, stored and answered 250, rather than 451.
    let background = config.drain_timeout().max(Duration::from_secs(5));
    if tokio::time::timeout(background, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            waited_s = background.as_secs(),
            "Some background tasks did not stop in time."
        );
    }
    intake.close();
    if let Some(w) = watchdog {
        w.abort();
    }
    match fatal {
        Some(err) => Err(err),
        None => {
            info!("Switchboard stopped.");
            Ok(())
        }
    }
}

/// Once Redis answers: retires the agents an earlier configuration created
/// that this one no longer names (first, so that an agent renamed with its
/// token can take the token over), then writes the agents of the
/// configuration to the routing state (their presence and load are left as
/// they are). An agent refused for good (its token is another agent's) is
/// logged and skipped; Redis being away is waited out.
async fn load_agents(state: RoutingState, agents: Vec<AgentRecord>, shutdown: CancellationToken) {
    let configured: std::collections::HashSet<String> =
        agents.iter().map(|a| a.id.clone()).collect();
    let mut delay = Duration::from_millis(200);
    let mut retired = false;
    let mut left = agents;
    loop {
        if !retired {
            retired = retire_removed_agents(&state, &configured).await;
        }
        let mut failed = Vec::new();
        if retired {
            for agent in left {
                match state.upsert_agent(&agent, "config").await {
                    Ok(_) => {}
                    Err(error @ StoreError::Conflict(_)) => {
                        error!(agent_id = %agent.id, %error, "A configured agent cannot be stored: its token is another agent's. Give it a token of its own.");
                    }
                    Err(error) => {
                        warn!(agent_id = %agent.id, %error, "Cannot store a configured agent yet; will retry.");
                        failed.push(agent);
                    }
                }
            }
        } else {
            failed = left;
        }
        left = failed;
        if retired && left.is_empty() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Agents of the configuration (not of the API) that it no longer names: a
/// removed agent's token must stop signing in. False when Redis could not
/// be asked (tried again).
async fn retire_removed_agents(
    state: &RoutingState,
    configured: &std::collections::HashSet<String>,
) -> bool {
    let ids = match state.agent_ids().await {
        Ok(ids) => ids,
        Err(error) => {
            warn!(%error, "Cannot list the agents yet (to retire those removed from the configuration); will retry.");
            return false;
        }
    };
    for id in ids.iter().filter(|id| !configured.contains(*id)) {
        match state.retire_agent(id).await {
            Ok(true) => {
                info!(agent_id = %id, "Agent removed from the configuration: retired (offline; its token no longer signs in).")
            }
            Ok(false) => {}
            Err(error) => {
                warn!(agent_id = %id, %error, "Cannot retire an agent removed from the configuration yet; will retry.");
                return false;
            }
        }
    }
    true
}

/// Checks the key layout once Redis answers (a mismatch is fatal), then
/// Redis's persistence and memory settings (risky ones are logged).
async fn check_layout(
    store: Store,
    checked: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
    fatal: mpsc::Sender<anyhow::Error>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match store.check_layout_at_start().await {
            Ok(()) => {
                checked.store(true, std::sync::atomic::Ordering::SeqCst);
                return report_settings(&store).await;
            }
            Err(e @ (StoreError::Layout { .. } | StoreError::Version { .. })) => {
                let _ = fatal.try_send(anyhow::Error::new(e));
                return;
            }
            Err(e) => warn!(error = %e, "Redis is not reachable yet; will retry."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How often the metrics' upkeep runs and Redis is pinged for them.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// Keeps the metrics true without a scraper: histograms' samples are
/// folded into their buckets (the recorder otherwise keeps every sample
/// until `/metrics` is rendered: memory that grows for ever where nobody
/// scrapes), and `switchboard_redis_up` is set from a ping (it was set
/// only by `/readyz`, which nothing calls on a plain systemd install, so
/// an alert on it never fired).
async fn keep_metrics(store: Store, handle: PrometheusHandle, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(METRICS_EVERY) => {}
        }
        handle.run_upkeep();
        let up = store.ping().await.is_ok();
        metrics::gauge!("switchboard_redis_up").set(if up { 1.0 } else { 0.0 });
    }
}

/// How often this instance's clock is compared with Redis's.
const CLOCK_EVERY: Duration = Duration::from_secs(60);
/// An offset beyond this is warned about.
const CLOCK_TOLERANCE_MS: i64 = 2_000;

/// Compares this instance's clock with Redis's now and then: the gauge
/// `switchboard_redis_clock_offset_seconds` (Redis ahead: positive), and a
/// warning when they differ by more than [`CLOCK_TOLERANCE_MS`] (once, and
/// again every ten minutes while it lasts). Instances write times that
/// others compare (offer deadlines, wrap-ups, sessions, KPI waits): a clock
/// off by seconds makes them wrong by as much (docs/operations.md).
async fn watch_clock(store: Store, shutdown: CancellationToken) {
    let mut warned: Option<std::time::Instant> = None;
    let mut next = Duration::from_secs(5);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(next) => {}
        }
        next = CLOCK_EVERY;
        let offset = match store.clock_offset().await {
            Ok(offset) => offset,
            Err(error) => {
                tracing::debug!(%error, "Could not read Redis's clock.");
                continue;
            }
        };
        metrics::gauge!("switchboard_redis_clock_offset_seconds").set(offset as f64 / 1000.0);
        if offset.abs() <= CLOCK_TOLERANCE_MS {
            if warned.take().is_some() {
                info!(
                    offset_ms = offset,
                    "This instance's clock agrees with Redis's again."
                );
            }
            continue;
        }
        if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(600)) {
            warn!(
                offset_ms = offset,
                "This instance's clock differs from Redis's by {:.1} s: keep every instance's clock in sync (NTP). Offer deadlines, wrap-ups, agents' sessions and KPI waits compare times that different instances write.",
                offset as f64 / 1000.0
            );
            warned = Some(std::time::Instant::now());
        }
    }
}

/// Warns once per Redis setting that puts acknowledged contacts or memory
/// at risk (`switchboard_store::settings`), and sets the gauge
/// `switchboard_redis_risky_settings` by risk.
async fn report_settings(store: &Store) {
    match store.check_settings().await {
        Ok(Some(advice)) => {
            for risk in [
                switchboard_store::Risk::Loss,
                switchboard_store::Risk::Memory,
                switchboard_store::Risk::Latency,
            ] {
                let n = advice.iter().filter(|a| a.risk == risk).count();
                metrics::gauge!("switchboard_redis_risky_settings", "risk" => risk.as_str())
                    .set(n as f64);
            }
            for a in &advice {
                warn!(setting = a.name, value = %a.value, recommended = a.recommended, risk = a.risk.as_str(),
                    "Redis setting {} = {}: {}. Set {} {} (deploy/redis-switchboard.conf).",
                    a.name, a.value, a.why, a.name, a.recommended);
            }
            if advice.is_empty() {
                info!("Redis persistence and memory settings are as recommended.");
            }
        }
        Ok(None) => {
            info!("Redis does not allow CONFIG GET here; its persistence settings are not checked.")
        }
        Err(error) => warn!(%error, "Could not read Redis's settings."),
    }
}

/// Spawns the loops that last until shutdown. One that ends before it (an
/// error it could not survive, or a panic, which tokio would otherwise
/// swallow) stops the instance with an error, so that systemd restarts it,
/// rather than leave it serving without, say, its router.
#[derive(Clone)]
struct Essential {
    tracker: TaskTracker,
    background: CancellationToken,
    fatal: mpsc::Sender<anyhow::Error>,
}

impl Essential {
    fn spawn<F>(&self, what: impl Into<String>, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn_result(what, async move {
            task.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// As [`spawn`](Essential::spawn), for a task that may end with an
    /// error, which the instance's own error then names.
    fn spawn_result<F, E>(&self, what: impl Into<String>, task: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let what: String = what.into();
        let (background, fatal) = (self.background.clone(), self.fatal.clone());
        self.tracker.spawn(async move {
            use futures::FutureExt;
            let ended = std::panic::AssertUnwindSafe(task).catch_unwind().await;
            if background.is_cancelled() {
                return;
            }
            let why = match ended {
                Ok(Ok(())) => "stopped before shutdown".to_owned(),
                Ok(Err(error)) => {
                    let why = format!("stopped: {error}");
                    error!(task = %what, reason = %why, "An essential task ended; stopping the instance.");
                    let _ = fatal.try_send(anyhow::anyhow!("{what}: {why}"));
                    return;
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|m| (*m).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("panicked: {message}")
                }
            };
            error!(task = %what, reason = %why, "An essential task ended; stopping the instance.");
            let _ = fatal.try_send(anyhow::anyhow!("{what} {why}"));
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_essential_task_that_ends_before_shutdown_stops_the_instance() {
        let (fatal, mut stopped) = mpsc::channel(4);
        let essential = Essential {
            tracker: TaskTracker::new(),
            background: CancellationToken::new(),
            fatal,
        };
        let next = |rx: &mut mpsc::Receiver<anyhow::Error>| rx.try_recv().map(|e| e.to_string());
        essential.spawn("the router", async { panic!("boom") });
        essential.tracker.close();
        essential.tracker.wait().await;
        assert_eq!(
            next(&mut stopped).as_deref(),
            Ok("the router panicked: boom")
        );
        essential.tracker.reopen();
        essential.spawn("the leader", async {});
        essential.tracker.close();
        essential.tracker.wait().await;
        assert_eq!(
            next(&mut stopped).as_deref(),
            Ok("the leader stopped before shutdown")
        );
        // An error is named.
        essential.tracker.reopen();
        essential.spawn_result("channels.mail", async { Err("address in use") });
        essential.tracker.close();
        essential.tracker.wait().await;
        assert_eq!(
            next(&mut stopped).as_deref(),
            Ok("channels.mail: stopped: address in use")
        );
        // At shutdown, ending is what it should do.
        essential.background.cancel();
        essential.tracker.reopen();
        essential.spawn("the records", async {});
        essential.tracker.close();
        essential.tracker.wait().await;
        assert!(next(&mut stopped).is_err());
    }
}
