//! Each instance's follower of the KPI facts.

use crate::RecordsConfig;
use crate::kpi::{Fact, Figures, Kpis, Report};
use metrics::gauge;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use switchboard_core::Timestamp;
use switchboard_router::plan::Plan;
use switchboard_store::{Records, RoutingState, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A rolling window of the KPIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    FiveMinutes,
    Hour,
    Day,
}

impl Window {
    pub const ALL: [Window; 3] = [Window::FiveMinutes, Window::Hour, Window::Day];

    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "5m" => Some(Window::FiveMinutes),
            "1h" => Some(Window::Hour),
            "24h" => Some(Window::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::FiveMinutes => "5m",
            Window::Hour => "1h",
            Window::Day => "24h",
        }
    }

    pub fn millis(self) -> u64 {
        match self {
            Window::FiveMinutes => 5 * 60_000,
            Window::Hour => 3_600_000,
            Window::Day => 86_400_000,
        }
    }
}

/// Facts older than this are forgotten (the longest window and a margin).
const KEEP_MS: u64 = 25 * 3_600_000;
/// Samples of the waiting contacts kept: an hour at the default rate.
const SERIES_KEEP_SECS: u64 = 3600;
/// Contacts swept per pass.
const SWEEP_BATCH: usize = 500;

struct Shared {
    records: Records,
    state: RoutingState,
    sources: crate::record::Sources,
    plan: Arc<Plan>,
    config: RecordsConfig,
    retention: Duration,
    kpis: Mutex<Kpis>,
    /// The (window, scope, name) groups whose gauges were ever set: a group
    /// with nothing in its window now reads as nothing (0, NaN) rather
    /// than keeping its last figures for good.
    exported: Mutex<std::collections::BTreeSet<(String, &'static str, String)>>,
    /// Held while reading, so that two readers never add the same facts
    /// twice. The position itself is kept with the facts (in `kpis`).
    reading: tokio::sync::Mutex<()>,
}

/// Follows the KPI facts and keeps the records (see the crate docs).
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// `retention`: how long closed contacts are kept (routing's
    /// `retention_days`).
    pub fn new(
        store: Store,
        plan: Arc<Plan>,
        config: RecordsConfig,
        retention: Duration,
    ) -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                records: Records::new(store.clone()),
                state: RoutingState::new(store.clone()),
                sources: crate::record::Sources {
                    conversations: switchboard_store::Conversations::new(store.clone()),
                    state: RoutingState::new(store.clone()),
                    records: Records::new(store),
                },
                plan,
                config,
                retention,
                kpis: Mutex::new(Kpis::default()),
                exported: Mutex::new(Default::default()),
                reading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn records(&self) -> &Records {
        &self.shared.records
    }

    /// What a contact's record is read from.
    pub fn sources(&self) -> &crate::record::Sources {
        &self.shared.sources
    }

    fn kpis(&self) -> MutexGuard<'_, Kpis> {
        // A panic while holding it leaves the facts added so far, and the
        // position after the last of them: the next read goes on from
        // there, adding none twice and skipping none.
        self.shared
            .kpis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A queue's service-level target in ms (60 s for unknown queues).
    fn target_ms(&self, queue: &str) -> u64 {
        self.shared
            .plan
            .queues
            .iter()
            .find(|q| q.name == queue)
            .map_or(60_000, |q| q.service_level_secs * 1000)
    }

    /// The KPIs of `window`, as of now. Reads any facts not read yet first,
    /// so a report right after a change includes it.
    ///
    /// Folding a busy day takes tens of milliseconds: it runs on the
    /// blocking pool, never on the threads that serve requests.
    pub async fn report(&self, window: Window) -> Result<Report, StoreError> {
        self.catch_up().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let now = Timestamp::now().as_millis();
            let target = |q: &str| this.target_ms(q);
            this.kpis()
                .report(window.name(), now, window.millis(), &target)
        })
        .await
        .map_err(|e| StoreError::Protocol(format!("KPI report failed: {e}")))
    }

    /// Reads the facts written since the last read.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let _reading = self.shared.reading.lock().await;
        let mut read = 0;
        loop {
            // Where the facts added end: moved with each fact, under the
            // same lock, so that a fold that fails half-way (a panic, a
            // runtime shutting down) is taken up after its last fact.
            let this = self.clone();
            let after = tokio::task::spawn_blocking(move || this.kpis().position().to_owned())
                .await
                .map_err(|e| StoreError::Protocol(format!("KPI position not read: {e}")))?;
            let facts = self.shared.records.kpi_facts(&after, 5000).await?;
            let n = facts.len();
            // Off the request threads: the lock may be held by a fold.
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                let mut kpis = this.kpis();
                for fact in facts {
                    // Added already by a reader whose caller went away
                    // while its fold waited (the read lock went with it).
                    if !kpis.is_after(&fact.id) {
                        continue;
                    }
                    match Fact::parse(&fact.fields) {
                        Some((at, f)) => kpis.add(at, f),
                        None => {
                            // A newer instance's kind, or a damaged entry.
                            metrics::counter!("switchboard_records_facts_skipped_total")
                                .increment(1);
                            debug!(id = %fact.id, "Skipping a KPI fact of an unknown kind.");
                        }
                    }
                    kpis.passed(fact.id);
                }
                let now = Timestamp::now().as_millis();
                kpis.prune(now.saturating_sub(KEEP_MS));
            })
            .await
            .map_err(|e| StoreError::Protocol(format!("KPI facts not added: {e}")))?;
            read += n;
            if n < 5000 {
                break;
            }
        }
        Ok(read)
    }

    /// The samples of waiting contacts, oldest first.
    pub async fn series(&self) -> Result<Vec<Value>, StoreError> {
        Ok(self
            .shared
            .records
            .series()
            .await?
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Follows the facts until `shutdown`: reads them every second, sets
    /// the gauges, samples the waiting contacts and sweeps old contacts.
    pub async fn run(self, shutdown: CancellationToken) {
        let fcr_ms = self.shared.config.fcr_days * 86_400_000;
        let retention_s = self.shared.retention.as_secs();
        let mut settings_written = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seconds: u64 = 0;
        let mut complaints = Complaints::default();
        info!("Records are following the KPI facts.");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            seconds += 1;
            // Each step on its own: one that fails (Redis refusing a write
            // at maxmemory, a key of the wrong type) is counted and tried
            // again, and holds none of the others up; the sweep, which
            // frees memory, least of all.
            if !settings_written {
                match self
                    .shared
                    .records
                    .write_settings(fcr_ms, retention_s)
                    .await
                {
                    Ok(()) => settings_written = true,
                    Err(error) => failed(&mut complaints.settings, "settings", &error),
                }
            }
            match self.catch_up().await {
                Ok(_) => complaints.facts = false,
                Err(error) => failed(&mut complaints.facts, "facts", &error),
            }
            if seconds.is_multiple_of(self.shared.config.metrics_secs.max(1)) {
                let this = self.clone();
                if let Err(error) = tokio::task::spawn_blocking(move || this.set_gauges()).await {
                    warn!(%error, "Setting the KPI gauges failed.");
                }
            }
            if seconds.is_multiple_of(self.shared.config.sample_secs.max(1)) {
                match self.sample().await {
                    Ok(()) => complaints.sample = false,
                    Err(error) => failed(&mut complaints.sample, "sample", &error),
                }
            }
            if seconds.is_multiple_of(60) {
                self.sweep().await;
            }
        }
    }

    async fn sample(&self) -> Result<(), StoreError> {
        let now = Timestamp::now().as_millis();
        let mut waiting: BTreeMap<String, u64> = self
            .shared
            .plan
            .queues
            .iter()
            .map(|q| (q.name.clone(), 0))
            .collect();
        let mut longest: u64 = 0;
        for (queue, q) in self.shared.state.waiting_by_queue(now).await? {
            *waiting.entry(queue).or_default() += q.waiting;
            longest = longest.max(q.longest_wait_ms(now));
        }
        let total: u64 = waiting.values().sum();
        let every = self.shared.config.sample_secs.max(1);
        let sample =
            json!({ "at": now, "total": total, "longest_wait_ms": longest, "queues": waiting });
        let keep = usize::try_from(SERIES_KEEP_SECS / every).unwrap_or(240);
        // Slightly under the period, so that the sampling instance does not
        // drift out of its own slot.
        self.shared
            .records
            .sample(&sample.to_string(), every * 1000 - 200, keep.max(2))
            .await?;
        Ok(())
    }

    async fn sweep(&self) {
        let before = Timestamp::now()
            .as_millis()
            .saturating_sub(u64::try_from(self.shared.retention.as_millis()).unwrap_or(u64::MAX));
        // Up to 20 batches a minute: 14 million contacts a day.
        let mut swept = 0;
        for _ in 0..20 {
            match self.shared.records.sweep(before, SWEEP_BATCH).await {
                Ok(n) => {
                    swept += n;
                    if n < SWEEP_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    metrics::counter!("switchboard_records_errors_total", "op" => "sweep")
                        .increment(1);
                    warn!(%error, "Could not sweep old contacts.");
                    break;
                }
            }
        }
        if swept > 0 {
            metrics::counter!("switchboard_records_swept_total").increment(swept as u64);
            info!(
                contacts = swept,
                "Deleted contacts that ended before the retention."
            );
        }
    }

    /// Sets `switchboard_kpi_<figure>{window, scope, name}` for every
    /// window and group.
    pub fn set_gauges(&self) {
        let now = Timestamp::now().as_millis();
        let target = |q: &str| self.target_ms(q);
        let reports: Vec<Report> = {
            let kpis = self.kpis();
            Window::ALL
                .iter()
                .map(|w| kpis.report(w.name(), now, w.millis(), &target))
                .collect()
        };
        let mut exported = self
            .shared
            .exported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut now_set = std::collections::BTreeSet::new();
        for r in &reports {
            set_figures(&r.window, "total", "all", &r.total);
            for (scope, groups) in [
                ("queue", &r.queues),
                ("channel", &r.channels),
                ("agent", &r.agents),
            ] {
                for (name, figures) in groups {
                    set_figures(&r.window, scope, name, figures);
                    now_set.insert((r.window.clone(), scope, name.clone()));
                }
            }
        }
        let quiet = Figures::default();
        for (window, scope, name) in exported.difference(&now_set) {
            set_figures(window, scope, name, &quiet);
        }
        exported.extend(now_set);
    }
}

fn set_figures(window: &str, scope: &'static str, name: &str, f: &Figures) {
    let labels = [
        ("window", window.to_owned()),
        ("scope", scope.to_owned()),
        ("name", name.to_owned()),
    ];
    let counts: [(&'static str, u64); 8] = [
        ("switchboard_kpi_offered", f.offered),
        ("switchboard_kpi_answered", f.answered),
        ("switchboard_kpi_abandoned", f.abandoned),
        ("switchboard_kpi_transferred", f.transferred),
        ("switchboard_kpi_closed", f.closed),
        ("switchboard_kpi_reopened", f.reopened),
        ("switchboard_kpi_csat_responses", f.csat_count),
        (
            "switchboard_kpi_answered_within_target",
            f.answered_within_target,
        ),
    ];
    for (metric, value) in counts {
        gauge!(metric, &labels).set(value as f64);
    }
    let figures: [(&'static str, Option<f64>); 10] = [
        ("switchboard_kpi_asa_seconds", f.asa_secs),
        ("switchboard_kpi_service_level_ratio", f.service_level),
        ("switchboard_kpi_abandonment_ratio", f.abandonment_rate),
        ("switchboard_kpi_wait_p50_seconds", f.wait_p50_secs),
        ("switchboard_kpi_wait_p90_seconds", f.wait_p90_secs),
        ("switchboard_kpi_wait_p99_seconds", f.wait_p99_secs),
        ("switchboard_kpi_aht_seconds", f.aht_secs),
        ("switchboard_kpi_fcr_ratio", f.fcr_rate),
        ("switchboard_kpi_csat_average", f.csat_avg),
        ("switchboard_kpi_occupancy_ratio", f.occupancy),
    ];
    for (metric, value) in figures {
        // No data is not zero: Prometheus gets NaN, which alerts ignore.
        gauge!(metric, &labels).set(value.unwrap_or(f64::NAN));
    }
}

/// Which steps of the records' loop are failing now: each failure is
/// counted, the first of a run of them logged as a warning.
#[derive(Debug, Default)]
struct Complaints {
    settings: bool,
    facts: bool,
    sample: bool,
}

/// Counts a failed step (`switchboard_records_errors_total{op}`) and logs
/// the first of a run of failures as a warning, the rest at debug.
fn failed(complained: &mut bool, op: &'static str, error: &StoreError) {
    metrics::counter!("switchboard_records_errors_total", "op" => op).increment(1);
    if *complained {
        debug!(%error, op, "A step of the records failed again; will retry.");
    } else {
        warn!(%error, op, "A step of the records failed (settings: routing's; facts: the KPIs and their gauges; sample: the waiting series); will retry.");
        *complained = true;
    }
}
