//! End to end: a contact submitted through the intake until its offer
//! arrives on an agent's websocket, at a sustained rate, then the peak rate.
//! Agents accept every offer and close the contact at once, so capacity
//! frees as fast as work arrives. Raw XADD on the same Redis in the same
//! run is the yardstick. Run with:
//!
//!   cargo bench -p switchboard-e2e --bench offer
//!
//! SWITCHBOARD_BENCH_RATE (default 5000 contacts/s) and SWITCHBOARD_BENCH_SECS
//! (default 60) set the sustained phase; the peak phase (open loop, as fast
//! as 256 submitters go) and the closed-loop phase (64 submitters, each
//! waiting for its offer) last 10 s each. SWITCHBOARD_BENCH_THREADS sets
//! the daemon's `runtime.worker_threads` (default 0: one per core);
//! SWITCHBOARD_BENCH_DAEMON another daemon binary (an A/B against an older
//! build). Figures and how to read them: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_e2e::*;

const AGENTS: usize = 100;
const CAPACITY: u64 = 50;
const IN_FLIGHT: usize = 256;

fn token(i: usize) -> String {
    format!("bench-agent-{i:03}-token-0123456789")
}

fn config(threads: u64) -> String {
    let mut c = format!("[runtime]\nworker_threads = {threads}\n\n");
    c.push_str(
        "[routing]\nwrap_up_secs = 0\n\n[routing.offer_timeout_secs]\nchat = 60\n\n\
         [agent_api]\nsession_ttl_secs = 120\n\
         # The bench's agents are bots that accept and close at machine\n\
         # speed (two frames per contact): at the default 600 frames a\n\
         # minute the 100 of them are held to ~500 contacts/s.\n\
         ws_frames_per_minute = 100000\n",
    );
    for i in 0..AGENTS {
        c.push_str(&format!(
            "\n[[routing.agents]]\nid = \"b{i:03}\"\ncapacity = {{ chat = {CAPACITY} }}\ntoken = \"{}\"\n",
            token(i)
        ));
    }
    c
}

/// When each contact was submitted and when its offer arrived.
#[derive(Default)]
struct Clock {
    submitted: Mutex<HashMap<String, Instant>>,
    offered: Mutex<HashMap<String, Instant>>,
    offers: AtomicU64,
    /// Agents' commands answered with an error (`result` with `ok` false),
    /// by code: none is expected; any means the figures are not the
    /// pipeline's.
    refused: Mutex<HashMap<String, u64>>,
    /// Closed-loop submitters waiting for their contact's offer.
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let rate = env("SWITCHBOARD_BENCH_RATE", 5000);
    let secs = env("SWITCHBOARD_BENCH_SECS", 60);
    let threads = env("SWITCHBOARD_BENCH_THREADS", 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let raw = raw_xadd_rate(&redis, &runtime, 5, 50);
    println!(
        "raw XADD, 50 clients, unpipelined: {:.0} ops/s ({})",
        raw.0, raw.1
    );
    // Another build of the daemon for an A/B run, or this one.
    let binary = std::env::var("SWITCHBOARD_BENCH_DAEMON")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard-under-test").to_owned());
    let daemon = Daemon::start(&binary, &redis.url(), &config(threads));
    let base = daemon.base();
    runtime.block_on(async move {
        let clock = Arc::new(Clock::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut agents = Vec::new();
        for i in 0..AGENTS {
            let mut ws = AgentSocket::connect_when_ready(&base, &token(i)).await;
            ws.recv(Duration::from_secs(10)).await.unwrap().unwrap();
            ws.send(json!({"type": "presence", "presence": "available"}))
                .await;
            agents.push(tokio::spawn(agent(ws, clock.clone(), stop.clone())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Warm-up, then the sustained phase at `rate`.
        paced(&base, rate, 2, "w", &clock).await;
        clock.submitted.lock().unwrap().clear();
        clock.offered.lock().unwrap().clear();
        let started = Instant::now();
        let sent = paced(&base, rate, secs, "s", &clock).await;
        let elapsed = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (lat, missing) = latencies(&clock);
        println!(
            "sustained: {sent} contacts in {elapsed:.1} s ({:.0}/s, target {rate}/s); \
             submit -> offer on the agent's websocket: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
             {missing} submitted without an offer after 3 s",
            sent as f64 / elapsed,
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            pct(&lat, 1.0),
        );

        // Sustainable peak: CLOSED_LOOP submitters, each waiting for its
        // contact's offer before submitting the next, for 10 s. Nothing
        // piles up, so this is the most the pipeline carries end to end
        // (intake, hand-off, offer, accept, close) on this machine.
        clock.submitted.lock().unwrap().clear();
        clock.offered.lock().unwrap().clear();
        let started = Instant::now();
        let done = closed_loop(&base, 10, &clock).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (lat, _) = latencies(&clock);
        println!(
            "closed loop ({CLOSED_LOOP} submitters, each waits for its offer): {done} contacts offered in {elapsed:.1} s ({:.0}/s); \
             submit -> offer p50 {:.2} ms, p99 {:.2} ms",
            done as f64 / elapsed,
            pct(&lat, 0.50),
            pct(&lat, 0.99),
        );

        // Peak: as fast as IN_FLIGHT concurrent submitters go, for 10 s.
        let before = clock.offers.load(Ordering::Relaxed);
        let started = Instant::now();
        let sent = paced(&base, u64::MAX, 10, "p", &clock).await;
        let elapsed = started.elapsed().as_secs_f64();
        let offered = clock.offers.load(Ordering::Relaxed) - before;
        println!(
            "peak: {sent} contacts submitted in {elapsed:.1} s ({:.0}/s), {offered} offers received ({:.0}/s)",
            sent as f64 / elapsed,
            offered as f64 / elapsed,
        );
        let refused = clock.refused.lock().unwrap();
        println!(
            "agents' commands refused: {}",
            if refused.is_empty() {
                "none".to_owned()
            } else {
                format!("{refused:?} (the figures above are not the pipeline's)")
            }
        );
        drop(refused);

        stop.store(true, Ordering::Relaxed);
        for a in agents {
            a.abort();
        }
    });
}

/// Submits contacts at `rate` per second (open loop, at most IN_FLIGHT at
/// once) for `secs`; returns how many were acknowledged.
async fn paced(base: &str, rate: u64, secs: u64, tag: &str, clock: &Arc<Clock>) -> u64 {
    let http = Http::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let acked = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut n = 0u64;
    while tokio::time::Instant::now() < end {
        if rate != u64::MAX {
            let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        let permit = slots.clone().acquire_owned().await.unwrap();
        n += 1;
        let (http, base, clock, acked) =
            (http.clone(), base.to_owned(), clock.clone(), acked.clone());
        let event = chat_event(&format!("{tag}{n}"), &format!("{tag}m{n}"), "hello");
        tokio::spawn(async move {
            let at = Instant::now();
            if let Ok(r) = http.submit(&base, &event).await
                && r.status == 200
                && let Some(id) = r.json()["contact_id"].as_str()
            {
                clock.submitted.lock().unwrap().insert(id.to_owned(), at);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
    acked.load(Ordering::Relaxed)
}

/// Submitters of the closed-loop phase.
const CLOSED_LOOP: usize = 64;

/// CLOSED_LOOP submitters for `secs`, each submitting a contact and waiting
/// for its offer (at most 5 s) before the next; returns the contacts
/// offered.
async fn closed_loop(base: &str, secs: u64, clock: &Arc<Clock>) -> u64 {
    let http = Http::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..CLOSED_LOOP {
        let (http, base, clock, done) =
            (http.clone(), base.to_owned(), clock.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < end {
                n += 1;
                let event = chat_event(&format!("c{t}-{n}"), &format!("cm{t}-{n}"), "hello");
                let at = Instant::now();
                let Ok(r) = http.submit(&base, &event).await else {
                    continue;
                };
                let Some(id) = r.json()["contact_id"].as_str().map(str::to_owned) else {
                    continue;
                };
                clock.submitted.lock().unwrap().insert(id.clone(), at);
                let (tx, rx) = tokio::sync::oneshot::channel();
                clock.waiters.lock().unwrap().insert(id.clone(), tx);
                // The offer may have come before the waiter was in place.
                if clock.offered.lock().unwrap().contains_key(&id) {
                    clock.waiters.lock().unwrap().remove(&id);
                } else if tokio::time::timeout(Duration::from_secs(5), rx)
                    .await
                    .is_err()
                {
                    clock.waiters.lock().unwrap().remove(&id);
                    continue;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed)
}

/// An agent that accepts every offer and closes what it is assigned.
async fn agent(mut ws: AgentSocket, clock: Arc<Clock>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(frame)) = ws.recv(Duration::from_millis(200)).await else {
            continue;
        };
        let contact = frame["contact_id"].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str() {
            Some("offer") => {
                clock
                    .offered
                    .lock()
                    .unwrap()
                    .insert(contact.clone(), Instant::now());
                clock.offers.fetch_add(1, Ordering::Relaxed);
                if let Some(waiter) = clock.waiters.lock().unwrap().remove(&contact) {
                    let _ = waiter.send(());
                }
                ws.try_send(json!({"type": "accept", "contact_id": contact}))
                    .await;
            }
            Some("assigned") => {
                ws.try_send(json!({"type": "close", "contact_id": contact, "disposition": "done"}))
                    .await;
            }
            Some("result") if frame["ok"] == false => {
                let code = frame["error"]["code"].as_str().unwrap_or("?").to_owned();
                *clock.refused.lock().unwrap().entry(code).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// Submit-to-offer latencies in ms, sorted, and how many submitted contacts
/// got no offer.
fn latencies(clock: &Clock) -> (Vec<f64>, usize) {
    let submitted = clock.submitted.lock().unwrap();
    let offered = clock.offered.lock().unwrap();
    let mut lat: Vec<f64> = submitted
        .iter()
        .filter_map(|(id, at)| {
            offered
                .get(id)
                .map(|o| o.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let missing = submitted.len() - lat.len();
    (lat, missing)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0.0)
}
