//! Verified webhook deliveries per second over loopback: signed Messenger
//! deliveries (one text message each, from 5,000 customers) posted by 50
//! concurrent clients to a `meta` channel, each checked (HMAC-SHA256 of the
//! body), parsed and stored durably before its 200. Run with:
//!
//!   cargo bench -p switchboard-e2e --bench webhook
//!
//! SWITCHBOARD_BENCH_SECS sets the measured seconds (default 10). Figures:
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hmac::Mac;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard_e2e::*;

const CLIENTS: usize = 50;
const SECRET: &str = "bench-app-secret-0123456789abcdef";

fn config() -> String {
    format!(
        r#"
[[channels]]
type = "meta"
name = "meta"
app_secret = "{SECRET}"
verify_token = "verify-token-42"

[[channels.accounts]]
name = "page"
id = "105550001"
access_token = "page-access-token"
"#
    )
}

fn delivery(client: usize, i: u64) -> (Vec<u8>, String) {
    let customer = 6_000_000_000u64 + (i * 31 + client as u64) % 5000;
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"105550001","time":1795341600000,"messaging":[{{"sender":{{"id":"{customer}"}},"recipient":{{"id":"105550001"}},"timestamp":1795341600000,"message":{{"mid":"m_bench-{client}-{i}","text":"benchmark message of an ordinary length, about sixty bytes"}}}}]}}]}}"#
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (body.into_bytes(), signature)
}

fn main() {
    let secs: u64 = std::env::var("SWITCHBOARD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(),
    );
    let url = format!("{}/channels/meta/webhook", daemon.base());
    let (rate, p50, p99, errors) = runtime.block_on(async move {
        let http = Http::new();
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (http, url, measuring, stop) =
                (http.clone(), url.clone(), measuring.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (body, signature) = delivery(c, i);
                    let started = Instant::now();
                    let ok = matches!(
                        http.post(&url, &[("x-hub-signature-256", signature.as_str())], body).await,
                        Ok(r) if r.status == 200
                    );
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            latencies.push(started.elapsed().as_micros() as u32);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        (all.len() as f64 / elapsed, pct(0.5), pct(0.99), errors)
    });
    println!(
        "verified Messenger deliveries over HTTP, {CLIENTS} clients: {rate:.0}/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {errors} errors"
    );
}
