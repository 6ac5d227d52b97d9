//! Intake throughput: acknowledged submissions per second over loopback with
//! 50 concurrent submitters, against raw unpipelined XADD on the same Redis
//! in the same run. Run with:
//!
//!   cargo bench -p switchboard-e2e --bench intake
//!
//! SWITCHBOARD_BENCH_SECS sets the measured seconds (default 10);
//! SWITCHBOARD_BENCH_THREADS the daemon's `runtime.worker_threads` (default
//! 1: Redis and the load generator share the machine; 0 is one per core);
//! SWITCHBOARD_BENCH_DAEMON another daemon binary (an A/B against an older
//! build; before 908d1bd, with SWITCHBOARD_BENCH_THREADS=0).
//! Figures and how to read them: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard_e2e::*;

const SUBMITTERS: usize = 50;

fn main() {
    let secs: u64 = std::env::var("SWITCHBOARD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let threads: usize = std::env::var("SWITCHBOARD_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // One thread, as `redis-benchmark` on the raw side has.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();

    let raw = raw_xadd_rate(&redis, &runtime, secs, SUBMITTERS);
    println!(
        "raw XADD, {SUBMITTERS} clients, unpipelined: {:.0} ops/s ({})",
        raw.0, raw.1
    );

    // Another build of the daemon for an A/B run, or this one.
    let binary = std::env::var("SWITCHBOARD_BENCH_DAEMON")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard-under-test").to_owned());
    let daemon = Daemon::start(
        &binary,
        &redis.url(),
        // (Left out for 0: builds before 908d1bd refuse the key.)
        &if threads > 0 {
            format!("[runtime]\nworker_threads = {threads}\n")
        } else {
            String::new()
        },
    );
    let pids = [
        ("redis-server", redis.pid().unwrap()),
        ("switchboard", daemon.pid()),
        ("load generator", std::process::id()),
    ];
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let stats_before = runtime.block_on(commandstats(&redis.url()));
    let (rate, p50, p99, count, errors) = runtime.block_on(intake_rate(&daemon.base(), secs));
    let stats = commandstats_between(&stats_before, runtime.block_on(commandstats(&redis.url())));
    println!(
        "intake over HTTP, {SUBMITTERS} submitters, daemon worker_threads = {threads}: {rate:.0} acknowledged submissions/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {errors} errors"
    );
    println!(
        "ratio intake / raw XADD: {:.3} (target >= 0.3)",
        rate / raw.0
    );
    // Where the two cores went (including the 2 s warm-up).
    for ((name, pid), before) in pids.iter().zip(before) {
        let used = cpu_time(*pid).saturating_sub(before);
        println!(
            "  CPU {name}: {:.1} s, {:.1} us per submission",
            used.as_secs_f64(),
            used.as_secs_f64() * 1e6 / count.max(1) as f64
        );
    }
    // What Redis spent its time on (the warm-up included, as above): the
    // intake's script, and whatever else the daemon asks of Redis meanwhile.
    println!("  Redis commands per submission (INFO commandstats, script calls included):");
    let per = |n: u64| n as f64 / count.max(1) as f64;
    for (name, calls, usec) in stats.iter().take(12) {
        println!(
            "    {name}: {:.3} calls, {:.2} us per submission ({:.1} us per call)",
            per(*calls),
            per(*usec),
            *usec as f64 / (*calls).max(1) as f64
        );
    }
}

async fn intake_rate(base: &str, secs: u64) -> (f64, f64, f64, u64, u64) {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..SUBMITTERS {
        let (base, measuring, stop) = (base.to_owned(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(200_000);
            let mut errors = 0u64;
            let mut i = 0u64;
            let mut conn = None;
            let mut body = String::with_capacity(512);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let customer = (i * 31 + t as u64) % 5000;
                body.clear();
                write!(
                    body,
                    r#"{{"channel":"chat","address":"widget-1","customer":{{"scheme":"visitor","value":"c{customer}"}},"provider_message_id":"b{t}-{i}","text":"benchmark message of an ordinary length, about sixty bytes"}}"#
                )
                .unwrap();
                let started = Instant::now();
                let ok = submit(&mut conn, &base, body.as_bytes()).await;
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors, i)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    let mut count = 0;
    for t in tasks {
        let (l, e, n) = t.await.unwrap();
        all.extend(l);
        errors += e;
        count += n;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    (
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        count,
        errors,
    )
}

/// One submission over the submitter's own keep-alive connection (opened
/// again after an error); true when it was acknowledged with a receipt.
async fn submit(conn: &mut Option<KeepAlive>, base: &str, body: &[u8]) -> bool {
    if conn.is_none() {
        *conn = KeepAlive::connect(base).await.ok();
    }
    let Some(c) = conn.as_mut() else {
        return false;
    };
    match c.post_json("/channels/api/events", TOKEN, body).await {
        Ok(reply) => {
            reply.status == 200
                && reply
                    .body
                    .windows(b"\"contact_id\"".len())
                    .any(|w| w == b"\"contact_id\"")
        }
        Err(_) => {
            *conn = None;
            false
        }
    }
}
