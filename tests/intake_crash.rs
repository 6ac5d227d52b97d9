//! 10,000 intake submissions from many concurrent tasks; the daemon is
//! killed with SIGKILL part-way and restarted. Every acknowledged submission
//! must be stored exactly once (with the ids it was acknowledged with), every
//! unacknowledged one at most once, and every created contact routed after
//! the restart.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_e2e::*;
use tokio::sync::Mutex;

const TOTAL: usize = 10_000;
const TASKS: usize = 64;
const CUSTOMERS: usize = 1_500;

#[derive(Debug, Clone)]
enum Fate {
    Acked {
        message_id: String,
        contact_id: String,
    },
    NotAcked(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_submissions_survive_sigkill_exactly_once() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        "",
    );
    let base = daemon.base();
    let http = Http::new();

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let fates: Arc<Mutex<HashMap<usize, Fate>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (next, acked, fates, http, base) = (
            next.clone(),
            acked.clone(),
            fates.clone(),
            http.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    break;
                }
                let event = chat_event(
                    &format!("c{}", i % CUSTOMERS),
                    &format!("m{i}"),
                    &format!("message {i}"),
                );
                let fate = match http.submit(&base, &event).await {
                    Ok(reply) if reply.status == 200 => {
                        let json = reply.json();
                        acked.fetch_add(1, Ordering::SeqCst);
                        Fate::Acked {
                            message_id: json["message_id"].as_str().unwrap().to_owned(),
                            contact_id: json["contact_id"].as_str().unwrap().to_owned(),
                        }
                    }
                    Ok(reply) => Fate::NotAcked(format!("{} {}", reply.status, reply.body)),
                    Err(e) => {
                        // The daemon is down: back off a little, as a sender would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Fate::NotAcked(e)
                    }
                };
                fates.lock().await.insert(i, fate);
            }
        }));
    }

    // Kill part-way, while requests are in flight, then restart.
    assert!(
        eventually(Duration::from_secs(120), || async {
            acked.load(Ordering::SeqCst) >= 3_000
        })
        .await,
        "too slow to reach 3,000 acks"
    );
    daemon.kill9();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.restart();
    for t in tasks {
        t.await.unwrap();
    }
    let fates = fates.lock().await.clone();
    assert_eq!(fates.len(), TOTAL);
    let acked_total = fates
        .values()
        .filter(|f| matches!(f, Fate::Acked { .. }))
        .count();
    let refused: Vec<_> = fates
        .values()
        .filter_map(|f| match f {
            Fate::NotAcked(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    println!(
        "acked {acked_total} of {TOTAL} ({acked_at_kill} before the kill); not acked: {}",
        refused.len()
    );
    assert!(
        acked_total > acked_at_kill,
        "nothing was acknowledged after the restart"
    );
    assert!(
        !refused.is_empty(),
        "the kill did not interrupt anything; the test proves nothing"
    );

    // What Redis holds.
    let stored = stored_messages(&redis.url()).await;
    let mut by_provider: HashMap<String, Vec<String>> = HashMap::new();
    for (provider, message_id, _) in &stored {
        by_provider
            .entry(provider.clone())
            .or_default()
            .push(message_id.clone());
    }
    let mut unacked_stored = 0;
    for (i, fate) in &fates {
        let copies = by_provider
            .get(&format!("m{i}"))
            .cloned()
            .unwrap_or_default();
        match fate {
            Fate::Acked { message_id, .. } => {
                assert_eq!(
                    copies,
                    vec![message_id.clone()],
                    "acknowledged m{i} stored {} times",
                    copies.len()
                );
            }
            Fate::NotAcked(_) => {
                assert!(
                    copies.len() <= 1,
                    "unacknowledged m{i} stored {} times",
                    copies.len()
                );
                unacked_stored += copies.len();
            }
        }
    }
    assert_eq!(stored.len(), by_provider.len(), "some message stored twice");
    println!("not acknowledged but stored (the kill came after Redis had them): {unacked_stored}");

    // Senders retry what was not acknowledged: each is stored once in the end,
    // and repeats of acknowledged ones change nothing.
    for (i, fate) in &fates {
        let event = chat_event(
            &format!("c{}", i % CUSTOMERS),
            &format!("m{i}"),
            &format!("message {i}"),
        );
        if matches!(fate, Fate::NotAcked(_)) || i % 50 == 0 {
            let reply = http.submit(&base, &event).await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            if let Fate::Acked {
                message_id,
                contact_id,
            } = fate
            {
                let json = reply.json();
                assert_eq!(json["outcome"], "duplicate");
                assert_eq!(json["message_id"].as_str(), Some(message_id.as_str()));
                assert_eq!(json["contact_id"].as_str(), Some(contact_id.as_str()));
            }
        }
    }
    let stored = stored_messages(&redis.url()).await;
    assert_eq!(
        stored.len(),
        TOTAL,
        "after retries every submission is stored exactly once"
    );

    // Every contact created is routed (queued) after the restart.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // With no agents configured, every contact ends up waiting in the
    // routing state (one sorted set for all partitions).
    let routed = eventually(Duration::from_secs(30), || {
        let mut conn = conn.clone();
        async move {
            let mut pending = 0usize;
            for p in 0..8 {
                let s: usize =
                    redis::AsyncCommands::xlen(&mut conn, format!("sb:{{p{p}}}:routing"))
                        .await
                        .unwrap();
                pending += s;
            }
            let waiting: usize = redis::AsyncCommands::zcard(&mut conn, "sb:{r}:waiting")
                .await
                .unwrap();
            pending == 0 && waiting == CUSTOMERS
        }
    })
    .await;
    let waiting: usize = redis::AsyncCommands::zcard(&mut conn, "sb:{r}:waiting")
        .await
        .unwrap();
    assert!(
        routed,
        "{waiting} of {CUSTOMERS} contacts queued for routing"
    );
}
