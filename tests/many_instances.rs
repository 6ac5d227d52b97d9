//! Three daemons on one Redis, 200 agents, 20,000 contacts. Part-way the
//! routing leader is killed with SIGKILL, and then the instance that took
//! over is frozen with SIGSTOP for a few seconds. Throughout, a checker
//! reads every agent's load and held set from Redis; at the end every
//! contact was assigned to exactly one agent and closed, no agent was ever
//! above capacity, and each agent's load counter always equalled the
//! contacts it really held.
//!
//! Agents are simulated over the real agent websocket: each accepts every
//! offer, closes each contact after a short handling time, and reconnects
//! to another instance when its instance dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_e2e::*;

const AGENTS: usize = 200;
const CONTACTS: usize = 20_000;
const CAPACITY: u64 = 3;

fn token(i: usize) -> String {
    format!("agent-{i:03}-token-0123456789")
}

fn config() -> String {
    let mut c = String::from(
        "[routing]\nwrap_up_secs = 0\nlease_ms = 1500\n\n[routing.offer_timeout_secs]\nchat = 30\n\n\
         [agent_api]\nsession_ttl_secs = 30\n",
    );
    for i in 0..AGENTS {
        c.push_str(&format!(
            "\n[[routing.agents]]\nid = \"a{i:03}\"\ncapacity = {{ chat = {CAPACITY} }}\ntoken = \"{}\"\n",
            token(i)
        ));
    }
    c
}

#[derive(Default)]
struct Ledger {
    /// Contact → the agents it was assigned to.
    assigned: Mutex<HashMap<String, HashSet<String>>>,
    offers: AtomicU64,
}

/// One simulated agent: accepts offers, closes after `handle`, reconnects
/// to the next live instance when its connection drops.
async fn agent(
    i: usize,
    bases: Arc<Vec<String>>,
    alive: Arc<Vec<AtomicBool>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let id = format!("a{i:03}");
    let mut attempt = i;
    while !stop.load(Ordering::Relaxed) {
        let n = attempt % bases.len();
        attempt += 1;
        if !alive[n].load(Ordering::Relaxed) {
            continue;
        }
        let Ok(mut ws) = AgentSocket::connect(&bases[n], &token(i)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(Some(hello)) = ws.recv(Duration::from_secs(10)).await else {
            continue;
        };
        if !ws
            .try_send(json!({"type": "presence", "presence": "available"}))
            .await
        {
            continue;
        }
        // Resume: accept what is offered, close what is held.
        // (when, contact): a set, so two closes due at the same instant both stay.
        let mut closes: BTreeSet<(Instant, String)> = BTreeSet::new();
        for held in hello["me"]["held"].as_array().cloned().unwrap_or_default() {
            let contact = held["contact_id"].as_str().unwrap_or_default().to_owned();
            if held["state"] == "offered" {
                ws.try_send(json!({"type": "accept", "contact_id": contact}))
                    .await;
            } else {
                ledger
                    .assigned
                    .lock()
                    .unwrap()
                    .entry(contact.clone())
                    .or_default()
                    .insert(id.clone());
                closes.insert((Instant::now() + Duration::from_millis(5), contact));
            }
        }
        'session: loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let wait = closes
                .first()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200));
            match ws.recv(wait).await {
                Err(()) => break 'session,
                Ok(None) => {}
                Ok(Some(frame)) => match frame["type"].as_str() {
                    Some("offer") => {
                        ledger.offers.fetch_add(1, Ordering::Relaxed);
                        if !ws
                            .try_send(json!({"type": "accept", "contact_id": frame["contact_id"]}))
                            .await
                        {
                            break 'session;
                        }
                    }
                    Some("assigned") => {
                        let contact = frame["contact_id"].as_str().unwrap_or_default().to_owned();
                        ledger
                            .assigned
                            .lock()
                            .unwrap()
                            .entry(contact.clone())
                            .or_default()
                            .insert(id.clone());
                        let handle = Duration::from_millis(5 + (i as u64 * 7) % 40);
                        closes.insert((Instant::now() + handle, contact));
                    }
                    // A close the daemon could not do (Redis too slow under
                    // load): try again, as an agent would.
                    Some("result")
                        if frame["ok"] == false && frame["error"]["code"] == "unavailable" =>
                    {
                        if let Some(contact) =
                            frame["ref"].as_str().and_then(|r| r.strip_prefix("close:"))
                        {
                            closes.insert((
                                Instant::now() + Duration::from_millis(100),
                                contact.to_owned(),
                            ));
                        }
                    }
                    _ => {}
                },
            }
            while let Some((t, _)) = closes.first() {
                if *t > Instant::now() {
                    break;
                }
                let (_, contact) = closes.pop_first().unwrap();
                if !ws
                    .try_send(
                        json!({"type": "close", "ref": format!("close:{contact}"), "contact_id": contact, "disposition": "done"}),
                    )
                    .await
                {
                    break 'session;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_kill_and_stop_nothing_doubled_or_overrun() {
    let redis = RedisServer::start();
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let config = config();
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start(binary, &redis.url(), &config))
        .collect();
    let bases = Arc::new(daemons.iter().map(|d| d.base()).collect::<Vec<_>>());
    let alive = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect::<Vec<_>>());
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // Agents are written to Redis by the daemons shortly after start.
    let ready = eventually(Duration::from_secs(20), || {
        let mut conn = conn.clone();
        async move {
            let n: usize = redis::AsyncCommands::scard(&mut conn, "sb:{r}:agents")
                .await
                .unwrap();
            n == AGENTS
        }
    })
    .await;
    assert!(ready, "agents not loaded: {}", daemons[0].log());

    // The checker: every agent's load and held set, read together.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let checks = Arc::new(AtomicU64::new(0));
    let checker = {
        let (mut conn, violations, checks, stop) = (
            conn.clone(),
            violations.clone(),
            checks.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for i in 0..AGENTS {
                    pipe.cmd("MULTI").ignore();
                    pipe.cmd("HGET")
                        .arg(format!("sb:{{r}}:agent:a{i:03}"))
                        .arg("l:chat")
                        .ignore();
                    pipe.cmd("SCARD")
                        .arg(format!("sb:{{r}}:held:a{i:03}"))
                        .ignore();
                    pipe.cmd("EXEC");
                }
                let Ok(rows): Result<Vec<(Option<u64>, u64)>, _> =
                    pipe.query_async(&mut conn).await
                else {
                    // Redis is gone (the test is ending): never spin, or the
                    // runtime could not shut down.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                for (i, (load, held)) in rows.into_iter().enumerate() {
                    let load = load.unwrap_or(0);
                    if load > CAPACITY || load != held {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("a{i:03}: load {load}, holds {held}"));
                    }
                }
                checks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            tokio::spawn(agent(
                i,
                bases.clone(),
                alive.clone(),
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Submitters: 20,000 contacts over the live instances; a submission
    // that gets no answer is retried elsewhere (same provider id: stored once).
    let next = Arc::new(AtomicU64::new(0));
    let submitters: Vec<_> = (0..32)
        .map(|s| {
            let (bases, alive, next) = (bases.clone(), alive.clone(), next.clone());
            tokio::spawn(async move {
                let http = Http::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= CONTACTS {
                        return;
                    }
                    let event = chat_event(&format!("c{n}"), &format!("m{n}"), "hello");
                    let mut k = n + s;
                    loop {
                        let i = k % bases.len();
                        k += 1;
                        if !alive[i].load(Ordering::Relaxed) {
                            continue;
                        }
                        if let Ok(r) = http.submit(&bases[i], &event).await
                            && r.status == 200
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();

    let leader_pid = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let token: Option<String> = redis::AsyncCommands::get(&mut conn, "sb:{r}:leader")
                .await
                .unwrap();
            // The token ends with the instance's default name,
            // `<host>-<pid>-<random>`.
            token.and_then(|t| t.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok()))
        }
    };
    let started = Instant::now();
    // Closed contacts, as Redis counts them (a `closed` frame can be lost
    // with a connection; the count cannot).
    let closed_count = |conn: &redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let n: Option<u64> = redis::AsyncCommands::hget(&mut conn, "sb:{r}:stats", "closed")
                .await
                .unwrap();
            n.unwrap_or(0)
        }
    };
    let watch = conn.clone();
    let wait_closed = |target: u64| {
        let conn = watch.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while closed_count(&conn).await < target && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closed_count(&conn).await >= target
        }
    };

    // 1. SIGKILL the routing leader part-way.
    assert!(wait_closed(4_000).await, "stalled before the kill");
    let victim_pid = leader_pid(&mut conn).await.expect("a leader");
    let victim = daemons
        .iter()
        .position(|d| d.running_pid() == Some(victim_pid))
        .expect("leader is one of ours");
    alive[victim].store(false, Ordering::Relaxed);
    daemons[victim].kill9();
    let killed = Instant::now();
    let killed_at = closed_count(&conn).await;

    // 2. Once another instance leads, freeze it with SIGSTOP for 4 s.
    let mut successor = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while successor.is_none() && Instant::now() < deadline {
        if let Some(pid) = leader_pid(&mut conn).await
            && pid != victim_pid
            && let Some(i) = daemons.iter().position(|d| d.running_pid() == Some(pid))
        {
            successor = Some(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let successor = successor.expect("another instance took over routing");
    let took_over_in = killed.elapsed();
    assert!(
        took_over_in < Duration::from_secs(10),
        "takeover took {took_over_in:?}"
    );
    assert!(
        wait_closed(killed_at + 2_000).await,
        "no progress after the kill"
    );
    alive[successor].store(false, Ordering::Relaxed);
    daemons[successor].signal("STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    daemons[successor].signal("CONT");
    alive[successor].store(true, Ordering::Relaxed);

    // 3. Everything is closed in the end.
    let all_closed = wait_closed(CONTACTS as u64).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for s in submitters {
        s.abort();
    }
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    checker.await.unwrap();
    let survivor_log = daemons[(victim + 1) % 3].log();
    let stuck = if all_closed {
        String::new()
    } else {
        unclosed(&mut conn).await
    };
    assert!(
        all_closed,
        "{} of {CONTACTS} closed after {elapsed:?}; not closed: {stuck}; log: {}",
        closed_count(&conn).await,
        survivor_log
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );

    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "capacity or load violations: {:?}",
        &violations[..violations.len().min(20)]
    );
    let checks = checks.load(Ordering::Relaxed);
    assert!(checks > 50, "the checker ran only {checks} times");

    let assigned = ledger.assigned.lock().unwrap().clone();
    assert_eq!(assigned.len(), CONTACTS, "every contact assigned");
    let doubled: Vec<_> = assigned
        .iter()
        .filter(|(_, agents)| agents.len() != 1)
        .take(10)
        .collect();
    assert!(
        doubled.is_empty(),
        "assigned to more than one agent: {doubled:?}"
    );

    // Nothing is left held, and Redis agrees every contact is closed.
    for i in 0..AGENTS {
        let held: usize = redis::AsyncCommands::scard(&mut conn, format!("sb:{{r}}:held:a{i:03}"))
            .await
            .unwrap();
        assert_eq!(held, 0, "a{i:03} still holds contacts");
    }
    let waiting: usize = redis::AsyncCommands::zcard(&mut conn, "sb:{r}:waiting")
        .await
        .unwrap();
    assert_eq!(waiting, 0);
    eprintln!(
        "{CONTACTS} contacts through 3 instances and {AGENTS} agents in {elapsed:?} ({:.0}/s); \
         {} offers; {checks} capacity checks; leader killed after {killed_at} closed; \
         successor found {:?} after the kill",
        CONTACTS as f64 / elapsed.as_secs_f64(),
        ledger.offers.load(Ordering::Relaxed),
        took_over_in,
    );
}

/// The routing records of contacts not closed, and the routing streams'
/// sizes: what a stuck run needs to be understood.
async fn unclosed(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sb:{r}:c:*")
        .query_async(conn)
        .await
        .unwrap();
    let mut out = format!("{} routing records; ", keys.len());
    for key in keys {
        let rec: HashMap<String, String> = redis::AsyncCommands::hgetall(conn, &key).await.unwrap();
        if rec.get("state").map(String::as_str) != Some("closed") {
            out.push_str(&format!("{key}: {rec:?}; "));
        }
    }
    for p in 0..8 {
        let key = format!("sb:{{p{p}}}:routing");
        let len: usize = redis::AsyncCommands::xlen(conn, &key).await.unwrap_or(0);
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg("router")
            .query_async(conn)
            .await
            .unwrap_or(redis::Value::Nil);
        out.push_str(&format!("{key}: len {len}, pending {pending:?}; "));
    }
    out
}
