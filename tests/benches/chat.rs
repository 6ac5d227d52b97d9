//! The chat channel under many idle widget connections, and the delivery
//! latency of visitor messages to agents. Run with:
//!
//!   cargo bench -p switchboard-e2e --bench chat
//!
//! 1. Raises RLIMIT_NOFILE (with `prlimit`; the daemon child inherits it)
//!    and starts the real daemon with a chat channel and 70 agents (chat
//!    capacity 3 each).
//! 2. Idle: opens SWITCHBOARD_BENCH_CONNECTIONS (default 50,000) widget
//!    websockets from 127.0.0.2–127.0.0.9 (about 28,000 ephemeral ports per
//!    source address), 500 handshakes in flight; each says `hello`, gets
//!    `welcome` and stays idle (it answers the server's pings). The
//!    daemon's resident memory (VmRSS) is read after 100 warm-up
//!    connections and again once all are connected and idle for 26 s: the
//!    difference divided by the count is the memory per idle connection.
//! 3. Delivery: 200 more visitors each start a conversation; the agents
//!    accept the offers. Then the visitors send SWITCHBOARD_BENCH_RATE
//!    (default 2,000) messages/s in all for SWITCHBOARD_BENCH_SECS (default
//!    10) while the idle connections stay open. Latency is from the
//!    visitor's send to the agent's live `message` frame (the text carries
//!    the send time), and from the send to the visitor's `ack`; also from
//!    the log entry's `at` to the agent's frame (the hops after the
//!    intake) and, as a yardstick, Redis PING round trips meanwhile.
//!    SWITCHBOARD_BENCH_TIMELINE=1 prints the worst latency per 250 ms.
//!
//! When the open-file limit cannot be raised (the hard limit needs
//! CAP_SYS_RESOURCE), fewer idle connections are opened and it says so.
//! Figures: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use switchboard_e2e::*;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const ORIGIN: &str = "https://shop.example.com";
const WIDGET: &str = "bench";
const AGENTS: usize = 70;
const VISITORS: usize = 200;
const WARM_UP: usize = 100;
const IN_FLIGHT: usize = 500;
/// How long the connections stay idle before the memory is read.
const IDLE: Duration = Duration::from_secs(26);
/// Source addresses for the client sockets: 127.0.0.2 ..= 127.0.0.9.
const SOURCES: u8 = 8;
/// File descriptors kept aside (Redis, agents, listener, logs) in each
/// process besides one per widget connection.
const FD_MARGIN: u64 = 400;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Microseconds since the bench started: the clock the message texts carry.
fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn agent_token(i: usize) -> String {
    format!("bench-agent-token-{i:04}-0123456789")
}

fn config(uploads: &std::path::Path) -> String {
    let mut agents = String::new();
    for i in 0..AGENTS {
        agents.push_str(&format!(
            "[[routing.agents]]\nid = \"agent{i}\"\nname = \"Agent {i}\"\ncapacity = {{ chat = 3 }}\ntoken = \"{}\"\n\n",
            agent_token(i)
        ));
    }
    format!(
        r#"
[routing]
wrap_up_secs = 0

{agents}
[[channels]]
type = "chat"
name = "website"
session_secret = "chat-session-secret-0123456789abcdef-bench"
uploads_dir = "{}"
# The load comes from 8 addresses at thousands of frames a minute, each
# holding thousands of chats.
rate_per_session = 100000
rate_per_ip = 1000000
sockets_per_ip = 1000000

[[channels.widgets]]
id = "{WIDGET}"
origins = ["{ORIGIN}"]
"#,
        uploads.display()
    )
}

/// The soft RLIMIT_NOFILE of process `pid`, from /proc.
fn nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Raises this process's open-file limit to `want` with prlimit(1) (or as
/// far as the hard limit allows without privileges); the daemon started
/// afterwards inherits it. Returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    let pid = std::process::id().to_string();
    let set = |soft: &str, hard: &str| {
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:{hard}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set(&want.to_string(), &want.to_string()) {
        // Not allowed above the hard limit (no CAP_SYS_RESOURCE): take the
        // hard limit as the soft one.
        set("unlimited", "");
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        if let Some(hard) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4))
        {
            set(hard, hard);
        }
    }
    nofile(std::process::id())
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Opens a widget websocket from `source`, says hello and waits for
/// `welcome`.
async fn visitor(daemon: SocketAddr, source: Ipv4Addr) -> Result<Ws, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(daemon)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut request = format!("ws://{daemon}/channels/website/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("origin", ORIGIN.parse().unwrap());
    // Small client buffers: this process holds as many sockets as the daemon.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    ws.send(Message::Text(
        json!({"type": "hello", "v": 1, "widget": WIDGET})
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| format!("hello: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no welcome within 30 s".to_owned())?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("welcome") => return Ok(ws),
                    Some("error") => return Err(format!("error frame: {v}")),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("before welcome: {e}")),
            None => return Err("closed before welcome".into()),
        }
    }
}

/// Opens `count` idle connections, `IN_FLIGHT` at a time; each is kept by a
/// task that only reads (so pings are answered). Returns the number
/// opened, the failures and the first error.
async fn open_idle(
    daemon: SocketAddr,
    count: usize,
    first: usize,
    closed: Arc<AtomicUsize>,
) -> (usize, usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut handshakes = tokio::task::JoinSet::new();
    for i in first..first + count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (ok, failed, first_error, closed) = (
            ok.clone(),
            failed.clone(),
            first_error.clone(),
            closed.clone(),
        );
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8);
        handshakes.spawn(async move {
            let result = visitor(daemon, source).await;
            drop(permit);
            match result {
                Ok(mut ws) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        while let Some(Ok(_)) = ws.next().await {}
                        closed.fetch_add(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        });
        // Reap finished handshakes as we go.
        while handshakes.try_join_next().is_some() {}
    }
    while handshakes.join_next().await.is_some() {}
    let error = first_error.lock().unwrap().take();
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        error,
    )
}

/// What the agents saw.
#[derive(Default)]
struct AgentStats {
    assigned: AtomicUsize,
    /// Measured messages received.
    received: AtomicU64,
    /// (send time, delivery latency) in µs of measured messages.
    latencies: Mutex<Vec<(u64, u64)>>,
    /// From the log entry's `at` (Redis's clock, ms) to the frame's
    /// arrival (this machine's clock), in µs: the hops after the intake.
    after_log: Mutex<Vec<u64>>,
}

/// An agent: available, accepts every offer, records the latency of every
/// live `message` frame of a measured message (`bench <visitor> <n> <sent
/// µs>`, n ≥ 1).
async fn agent(base: String, i: usize, stats: Arc<AgentStats>, stop: Arc<AtomicBool>) {
    let mut ws = AgentSocket::connect_when_ready(&base, &agent_token(i)).await;
    ws.send(json!({"type": "presence", "presence": "available"}))
        .await;
    let mut latencies = Vec::new();
    let mut after_log = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let frame = match ws.recv(Duration::from_millis(200)).await {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(()) => panic!("agent {i} lost its socket"),
        };
        match frame["type"].as_str() {
            Some("offer") => {
                ws.send(json!({"type": "accept", "contact_id": frame["contact_id"]}))
                    .await;
            }
            Some("assigned") => {
                stats.assigned.fetch_add(1, Ordering::Relaxed);
            }
            Some("message") if frame["dir"] == "in" => {
                let at = now_us();
                let text = frame["text"].as_str().unwrap_or_default();
                let mut words = text.split(' ').skip(2);
                if let (Some(n), Some(sent)) = (words.next(), words.next())
                    && let (Ok(n), Ok(sent)) = (n.parse::<u64>(), sent.parse::<u64>())
                    && n >= 1
                {
                    latencies.push((sent, at.saturating_sub(sent)));
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros() as u64;
                    let logged = frame["at"].as_u64().unwrap_or(0) * 1000;
                    after_log.push(wall.saturating_sub(logged));
                    stats.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
    stats.latencies.lock().unwrap().extend(latencies);
    stats.after_log.lock().unwrap().extend(after_log);
}

/// Percentile `p` (0–1) of sorted µs values, in ms.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

fn summary(sorted: &[u64]) -> String {
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(sorted, 0.5),
        pct(sorted, 0.95),
        pct(sorted, 0.99),
        sorted.last().map_or(f64::NAN, |&m| m as f64 / 1000.0)
    )
}

/// The worst delivery latency per 250 ms of send time, to see whether the
/// tail comes in bursts (SWITCHBOARD_BENCH_TIMELINE=1).
fn timeline(timed: &[(u64, u64)]) {
    let Some(first) = timed.iter().map(|&(s, _)| s).min() else {
        return;
    };
    let mut worst = std::collections::BTreeMap::<u64, u64>::new();
    for &(sent, latency) in timed {
        let slot = worst.entry((sent - first) / 250_000).or_default();
        *slot = (*slot).max(latency);
    }
    let line: Vec<String> = worst
        .iter()
        .map(|(slot, l)| format!("{:.2}s:{:.0}", *slot as f64 / 4.0, *l as f64 / 1000.0))
        .collect();
    println!(
        "delivery: worst ms per 250 ms of send time: {}",
        line.join(" ")
    );
}

fn main() {
    let wanted: usize = env_or("SWITCHBOARD_BENCH_CONNECTIONS", 50_000);
    let secs: u64 = env_or("SWITCHBOARD_BENCH_SECS", 10);
    let rate: u64 = env_or("SWITCHBOARD_BENCH_RATE", 2_000);
    now_us();

    let need = (wanted + WARM_UP + VISITORS) as u64 + FD_MARGIN;
    let limit = raise_nofile(need);
    let connections = if limit >= need {
        wanted
    } else {
        let fit = limit.saturating_sub((WARM_UP + VISITORS) as u64 + FD_MARGIN) as usize;
        println!(
            "RLIMIT_NOFILE is {limit} and cannot be raised to {need} here (no CAP_SYS_RESOURCE \
             above the hard limit): {fit} idle connections instead of {wanted}"
        );
        fit
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let uploads = tempfile::tempdir().unwrap();
    // Every connection the bench opens, agents' included, with the twentieth
    // that chat websockets leave to plain requests: the daemon's own cap
    // (the open-file limit less 1,024) would refuse the last ones.
    let http_connections = ((connections + WARM_UP + VISITORS) * 21 / 20 + 1_000).to_string();
    let daemon = Daemon::start_with_env(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(uploads.path()),
        &[("SWITCHBOARD__HTTP__MAX_CONNECTIONS", &http_connections)],
    );
    let pid = daemon.pid();
    let base = daemon.base();
    let addr: SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().unwrap();
    println!(
        "daemon pid {pid}, open-file limit {} (bench {limit}), {connections} idle connections, \
         {VISITORS} talking visitors, {AGENTS} agents",
        nofile(pid)
    );

    runtime.block_on(async move {
        let closed = Arc::new(AtomicUsize::new(0));
        // Agents first, so that the daemon's baseline includes them.
        let stats = Arc::new(AgentStats::default());
        let stop_agents = Arc::new(AtomicBool::new(false));
        let mut agents = Vec::new();
        for i in 0..AGENTS {
            agents.push(tokio::spawn(agent(
                base.clone(),
                i,
                stats.clone(),
                stop_agents.clone(),
            )));
        }
        let (ok, failed, error) = open_idle(addr, WARM_UP, 0, closed.clone()).await;
        assert_eq!(failed, 0, "warm-up: {error:?}");
        assert_eq!(ok, WARM_UP);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_before = rss_kib(pid);
        let client_before = rss_kib(std::process::id());
        let cpu_before = cpu_time(pid);

        // Phase 1: idle connections.
        let started = Instant::now();
        let (ok, failed, error) = open_idle(addr, connections, WARM_UP, closed.clone()).await;
        let connect_secs = started.elapsed().as_secs_f64();
        let cpu_connect = cpu_time(pid) - cpu_before;
        println!(
            "idle: {ok} connected and welcomed in {connect_secs:.1} s ({:.0}/s), {failed} failed{}; \
             daemon CPU {:.1} s ({:.0} µs per connection)",
            ok as f64 / connect_secs,
            error.map(|e| format!(" (first: {e})")).unwrap_or_default(),
            cpu_connect.as_secs_f64(),
            cpu_connect.as_secs_f64() * 1e6 / ok.max(1) as f64,
        );
        let idle_cpu_from = cpu_time(pid);
        // A full round of the sessions' routing polls (every 10 s) and of
        // the server's pings (every 25 s).
        tokio::time::sleep(IDLE).await;
        let idle_cpu = (cpu_time(pid) - idle_cpu_from).as_secs_f64() / IDLE.as_secs_f64();
        let rss_after = rss_kib(pid);
        let client_after = rss_kib(std::process::id());
        println!(
            "idle: daemon VmRSS {rss_before} KiB → {rss_after} KiB: {:.2} KiB per idle connection; \
             daemon CPU while idle {:.1}% of a core (pings every 25 s, routing polls every 10 s); closed meanwhile {}",
            (rss_after as f64 - rss_before as f64) / ok.max(1) as f64,
            idle_cpu * 100.0,
            closed.load(Ordering::Relaxed),
        );
        println!(
            "idle: bench client VmRSS {client_before} KiB → {client_after} KiB ({:.2} KiB per connection, client side, not the daemon's)",
            (client_after as f64 - client_before as f64) / ok.max(1) as f64,
        );

        // Phase 2: visitors with conversations, assigned to agents.
        let mut talkers = Vec::new();
        for v in 0..VISITORS {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (v % usize::from(SOURCES)) as u8);
            let mut ws = visitor(addr, source).await.expect("a talking visitor");
            ws.send(Message::Text(
                json!({"type": "message", "client_id": "open", "text": format!("bench {v} 0 0 hello")})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
            talkers.push(ws);
        }
        let assigned = eventually(Duration::from_secs(60), || {
            let stats = stats.clone();
            async move { stats.assigned.load(Ordering::Relaxed) >= VISITORS }
        })
        .await;
        println!(
            "delivery: {} of {VISITORS} conversations assigned{}",
            stats.assigned.load(Ordering::Relaxed),
            if assigned { "" } else { " within 60 s (going on anyway)" }
        );

        // The agent API caches "who holds this contact" for 2 s, a miss
        // too (crates/api-agent/src/hub.rs, HOLDER_CACHE): the opening
        // messages looked it up before the offers, so live frames of the
        // next 2 s would not reach the agent. Measure after that.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let sent = Arc::new(AtomicU64::new(0));
        let acks: Arc<Mutex<Vec<u64>>> = Arc::default();
        let period = Duration::from_secs_f64(VISITORS as f64 / rate as f64);
        let start = tokio::time::Instant::now() + Duration::from_millis(200);
        let end = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (v, ws) in talkers.into_iter().enumerate() {
            let (mut sink, mut stream) = ws.split();
            let (sent, acks) = (sent.clone(), acks.clone());
            // Reads acks (and answers pings) until the sender is done.
            let reader = tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Ok(Some(Ok(message))) =
                    tokio::time::timeout(Duration::from_secs(3), stream.next()).await
                {
                    let Message::Text(text) = message else { continue };
                    let at = now_us();
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if frame["type"] == "ack"
                        && let Some(sent) = frame["client_id"]
                            .as_str()
                            .and_then(|c| c.split('-').nth(1))
                            .and_then(|t| t.parse::<u64>().ok())
                    {
                        mine.push(at.saturating_sub(sent));
                    }
                }
                acks.lock().unwrap().extend(mine);
            });
            tasks.push(tokio::spawn(async move {
                let offset = period.mul_f64(v as f64 / VISITORS as f64);
                let mut tick = tokio::time::interval_at(start + offset, period);
                let mut n = 0u64;
                loop {
                    let at = tick.tick().await;
                    if at >= end {
                        break;
                    }
                    n += 1;
                    let t = now_us();
                    let frame = json!({
                        "type": "message",
                        "client_id": format!("m{n}-{t}"),
                        "text": format!("bench {v} {n} {t} an ordinary visitor message of about sixty bytes"),
                    });
                    if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reader.await;
                sink
            }));
        }
        // The yardstick: Redis PING round trips from this process during
        // the same seconds (the machine's own stalls show here too).
        let redis_url = redis_url.clone();
        let pings = tokio::spawn(async move {
            let client = redis::Client::open(redis_url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut tick = tokio::time::interval_at(start, Duration::from_millis(5));
            let mut rtts = Vec::new();
            while tick.tick().await < end {
                let t = Instant::now();
                let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
                rtts.push(t.elapsed().as_micros() as u64);
            }
            rtts
        });
        tokio::time::sleep_until(start).await;
        let cpu_from = cpu_time(pid);
        let wall = Instant::now();
        tokio::time::sleep_until(end).await;
        let elapsed = wall.elapsed().as_secs_f64();
        let cpu = (cpu_time(pid) - cpu_from).as_secs_f64();
        let mut sinks = Vec::new();
        for t in tasks {
            sinks.push(t.await.unwrap());
        }
        // Late frames still count: wait until every message arrived or
        // none came for 3 s.
        let sent_total = sent.load(Ordering::Relaxed);
        let mut last = (stats.received.load(Ordering::Relaxed), Instant::now());
        while last.0 < sent_total && last.1.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = stats.received.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        stop_agents.store(true, Ordering::Relaxed);
        for a in agents {
            a.await.unwrap();
        }
        let sent = sent.load(Ordering::Relaxed);
        let timed = std::mem::take(&mut *stats.latencies.lock().unwrap());
        if std::env::var_os("SWITCHBOARD_BENCH_TIMELINE").is_some() {
            timeline(&timed);
        }
        let mut delivered: Vec<u64> = timed.iter().map(|&(_, l)| l).collect();
        delivered.sort_unstable();
        let mut acked = std::mem::take(&mut *acks.lock().unwrap());
        acked.sort_unstable();
        println!(
            "delivery: {sent} messages sent in {secs} s ({:.0}/s target {rate}/s), {} delivered to agents, {} acked",
            sent as f64 / secs as f64,
            delivered.len(),
            acked.len()
        );
        println!("delivery: visitor send → agent's message frame: {}", summary(&delivered));
        println!("delivery: visitor send → ack: {}", summary(&acked));
        let mut after_log = std::mem::take(&mut *stats.after_log.lock().unwrap());
        after_log.sort_unstable();
        println!(
            "delivery: log entry's `at` → agent's message frame (1 ms resolution): {}",
            summary(&after_log)
        );
        let mut rtts = pings.await.unwrap();
        rtts.sort_unstable();
        println!("delivery: Redis PING from the bench meanwhile: {}", summary(&rtts));
        println!(
            "delivery: daemon CPU {cpu:.1} s over {elapsed:.1} s ({:.0}% of a core, {:.0} µs per message); \
             idle connections still open: {} of {}; daemon VmRSS {} KiB",
            cpu / elapsed.max(0.001) * 100.0,
            cpu * 1e6 / sent.max(1) as f64,
            (WARM_UP + ok).saturating_sub(closed.load(Ordering::Relaxed)),
            WARM_UP + ok,
            rss_kib(pid)
        );
        drop(sinks);
    });
    drop(daemon);
}
