//! Accepted LMTP deliveries per second over loopback: N concurrent LMTP
//! sessions (default 8) deliver ~10 KiB plain-text mails (a unique
//! Message-ID each, from 2,000 customers, so most are appended to an open
//! conversation) to an email channel's listener, one transaction after the
//! other on each session (LHLO once, then MAIL FROM / RCPT TO / DATA / body /
//! `.`, no pipelining). A delivery counts only when DATA is answered 250,
//! which the listener sends once the mail is parsed and stored durably.
//! Run with:
//!
//!   cargo bench -p switchboard-e2e --bench lmtp
//!
//! SWITCHBOARD_BENCH_SECS sets the measured seconds (default 10),
//! SWITCHBOARD_BENCH_SESSIONS the concurrent sessions (default 8). Figures:
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard_e2e::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const RCPT: &str = "help@support.example.com";
const CUSTOMERS: u64 = 2000;
/// Roughly the size of each mail, headers included.
const MESSAGE_BYTES: usize = 10 * 1024;
/// Errors printed in full; the rest are only counted.
const PRINTED_ERRORS: usize = 10;

fn config(lmtp: u16, attachments: &std::path::Path) -> String {
    format!(
        r#"
[[channels]]
type = "email"
name = "mail"
addresses = ["{RCPT}"]
attachments_dir = "{}"
[channels.listen]
address = "127.0.0.1:{lmtp}"
protocol = "lmtp"
[channels.smtp]
host = "127.0.0.1"
port = 1
security = "none"
"#,
        attachments.display()
    )
}

/// The body lines every mail shares (~10 KiB with the headers); one of them
/// starts with "." so that every mail is dot-stuffed on the wire.
fn body_lines() -> Vec<String> {
    let words = [
        "order",
        "delivery",
        "invoice",
        "refund",
        "account",
        "password",
        "parcel",
        "address",
        "payment",
        "support",
        "please",
        "thanks",
        "yesterday",
        "tomorrow",
        "number",
        "again",
    ];
    let mut lines = Vec::new();
    let mut size = 600; // the headers
    let mut n = 0usize;
    while size < MESSAGE_BYTES {
        let mut line = String::new();
        if lines.len() == 10 {
            line.push_str(".. a line that starts with a dot");
        }
        while line.len() < 70 {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(words[(n * 7 + line.len()) % words.len()]);
            n += 1;
        }
        size += line.len() + 2;
        lines.push(line);
    }
    lines
}

/// One mail as sent after DATA: CRLF line ends, dot-stuffed, ending in
/// `.` on its own line.
fn message(session: usize, i: u64, lines: &[String]) -> (String, Vec<u8>) {
    let customer = (i * 31 + session as u64 * 977) % CUSTOMERS;
    let from = format!("customer{customer}@mail.example.net");
    let mut m = String::with_capacity(MESSAGE_BYTES + 1024);
    let _ = write!(
        m,
        "From: Customer {customer} <{from}>\r\n\
         To: Support <{RCPT}>\r\n\
         Subject: Question about my order {session}-{i}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <bench-{session}-{i}@mail.example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         Received: from mail.example.net (mail.example.net [192.0.2.10])\r\n\
         \tby mx.support.example.com (Postfix) with ESMTPS id 4ABCD123\r\n\
         \tfor <{RCPT}>; Mon, 23 Nov 2026 10:00:00 +0000 (UTC)\r\n\
         \r\n\
         Hello, this is message {i} of session {session}.\r\n"
    );
    for line in lines {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.push_str(".\r\n");
    (from, m.into_bytes())
}

/// A minimal LMTP client: one command, one reply.
struct Lmtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

/// A reply: its code and its lines joined.
type Answer = (u16, String);

impl Lmtp {
    async fn connect(port: u16) -> Result<Lmtp, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, writer) = stream.into_split();
        let mut c = Lmtp {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
        };
        c.expect(220, "greeting").await?;
        c.command(b"LHLO bench.example.net\r\n", 250, "LHLO")
            .await?;
        Ok(c)
    }

    /// Reads one reply (all of a multi-line `250-` one).
    async fn reply(&mut self) -> Result<Answer, String> {
        let mut text = String::new();
        loop {
            self.line.clear();
            let n = tokio::time::timeout(
                Duration::from_secs(30),
                self.reader.read_line(&mut self.line),
            )
            .await
            .map_err(|_| "no reply within 30 s".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("not a reply: {line:?}"))?;
            text.push_str(line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push_str(" | ");
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> Result<String, String> {
        match self.reply().await? {
            (c, text) if c == code => Ok(text),
            (_, text) => Err(format!("{what}: {text}")),
        }
    }

    async fn command(&mut self, line: &[u8], code: u16, what: &str) -> Result<String, String> {
        self.writer
            .write_all(line)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.expect(code, what).await
    }

    /// One transaction; the DATA→250 time and the final reply's text.
    async fn deliver(&mut self, from: &str, body: &[u8]) -> Result<(Duration, String), String> {
        self.command(format!("MAIL FROM:<{from}>\r\n").as_bytes(), 250, "MAIL")
            .await?;
        self.command(format!("RCPT TO:<{RCPT}>\r\n").as_bytes(), 250, "RCPT")
            .await?;
        let started = Instant::now();
        self.command(b"DATA\r\n", 354, "DATA").await?;
        self.writer
            .write_all(body)
            .await
            .map_err(|e| format!("write: {e}"))?;
        // LMTP: one reply per recipient; there is one.
        let text = self.expect(250, "end of data").await?;
        Ok((started.elapsed(), text))
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: u64,
    printed: Vec<String>,
    outcomes: BTreeMap<String, u64>,
}

async fn client(
    session: usize,
    port: u16,
    lines: Arc<Vec<String>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut t = Tally {
        latencies: Vec::with_capacity(100_000),
        ..Tally::default()
    };
    let mut conn: Option<Lmtp> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let result = match conn.as_mut() {
            Some(c) => {
                i += 1;
                let (from, body) = message(session, i, &lines);
                c.deliver(&from, &body).await
            }
            None => match Lmtp::connect(port).await {
                Ok(c) => {
                    conn = Some(c);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        let measured = measuring.load(Ordering::Relaxed);
        match result {
            Ok((latency, text)) => {
                if measured {
                    t.latencies.push(latency.as_micros() as u32);
                    // "250 2.0.0 stored (appended) as contact …"
                    let outcome = text
                        .split_once('(')
                        .and_then(|(_, rest)| rest.split_once(')'))
                        .map_or("other", |(o, _)| o);
                    *t.outcomes.entry(outcome.to_owned()).or_default() += 1;
                }
            }
            Err(e) => {
                if measured {
                    t.errors += 1;
                    if t.printed.len() < PRINTED_ERRORS {
                        t.printed.push(format!("session {session}: {e}"));
                    }
                }
                // Start over on a fresh connection.
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    if let Some(mut c) = conn {
        let _ = c.command(b"QUIT\r\n", 221, "QUIT").await;
    }
    t
}

/// All CPUs' (busy, total) ticks since boot from /proc/stat, and the
/// number of CPUs: how busy the machine was, other processes included.
fn machine_ticks() -> (u64, u64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total, cpus.max(1))
}

fn main() {
    let secs: u64 = std::env::var("SWITCHBOARD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let sessions: usize = std::env::var("SWITCHBOARD_BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let attachments = tempfile::Builder::new()
        .prefix("switchboard-bench-attachments-")
        .tempdir()
        .unwrap();
    let lmtp = free_port();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(lmtp, attachments.path()),
    );
    // The HTTP port answers first; the listener follows.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", lmtp)).is_err() {
        assert!(
            Instant::now() < deadline,
            "no LMTP listener on {lmtp}: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = Arc::new(body_lines());
    let sample = message(0, 1, &lines).1.len();

    let pids = [
        ("redis-server", redis.pid().unwrap()),
        ("switchboard", daemon.pid()),
        ("load generator", std::process::id()),
    ];
    let url = redis.url();
    let (elapsed, tally, cpu, stats, machine) = runtime.block_on(async move {
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for s in 0..sessions {
            let (lines, measuring, stop) = (lines.clone(), measuring.clone(), stop.clone());
            tasks.push(tokio::spawn(client(s, lmtp, lines, measuring, stop)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
        let stats_before = commandstats(&url).await;
        let cpu_before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
        let machine_before = machine_ticks();
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let cpu: Vec<Duration> = pids
            .iter()
            .zip(cpu_before)
            .map(|((_, pid), before)| cpu_time(*pid).saturating_sub(before))
            .collect();
        let machine_after = machine_ticks();
        let stats_after = commandstats(&url).await;
        stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        for t in tasks {
            let t = t.await.unwrap();
            tally.latencies.extend(t.latencies);
            tally.errors += t.errors;
            tally.printed.extend(t.printed);
            for (k, v) in t.outcomes {
                *tally.outcomes.entry(k).or_default() += v;
            }
        }
        let stats = commandstats_between(&stats_before, stats_after);
        let busy = machine_after.0.saturating_sub(machine_before.0) as f64
            / machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
        (elapsed, tally, cpu, stats, (busy, machine_after.2))
    });

    let mut all = tally.latencies;
    all.sort_unstable();
    let accepted = all.len() as u64;
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let rate = accepted as f64 / elapsed;
    println!(
        "LMTP deliveries of {sample}-byte plain-text mails, {sessions} sessions, {secs} s: \
         {accepted} accepted, {rate:.0}/s ({:.1} MiB/s), DATA→250 p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms, {} errors",
        rate * sample as f64 / (1024.0 * 1024.0),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        tally.errors
    );
    let outcomes: Vec<String> = tally
        .outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("  outcomes: {}", outcomes.join(", "));
    for e in &tally.printed {
        println!("  error: {e}");
    }
    // Where the two cores went (the measured seconds only).
    for ((name, _), used) in pids.iter().zip(&cpu) {
        println!(
            "  CPU {name}: {:.1} s ({:.0}% of one core), {:.0} us per accepted delivery",
            used.as_secs_f64(),
            used.as_secs_f64() * 100.0 / elapsed,
            used.as_secs_f64() * 1e6 / accepted.max(1) as f64
        );
    }
    let (busy, cpus) = machine;
    let ours = cpu.iter().map(Duration::as_secs_f64).sum::<f64>() / elapsed;
    println!(
        "  CPU whole machine: {:.0}% busy of {cpus} cores, {:.0}% of it outside these three processes",
        busy * 100.0,
        (busy * cpus as f64 - ours).max(0.0) * 100.0 / cpus as f64
    );
    // Commands run by a script are counted too, and their time is also in
    // the script's (EVALSHA's).
    let per = |n: u64| n as f64 / accepted.max(1) as f64;
    println!("  Redis commands per accepted delivery (INFO commandstats, script calls included):");
    for (name, calls, usec) in stats.iter().take(12) {
        println!(
            "    {name}: {:.2} calls, {:.1} us per delivery",
            per(*calls),
            per(*usec)
        );
    }
    let warnings = daemon
        .log()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    if warnings > 0 {
        println!("  daemon log: {warnings} warnings/errors, e.g.:");
        for l in daemon
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(5)
        {
            println!("    {l}");
        }
    }
}
