//! Redis stops under a running daemon: intake answers "temporarily
//! unavailable" (never an acknowledgement), the daemon keeps running and is
//! not ready, and it recovers by itself when Redis is back.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use switchboard_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived_and_reported() {
    let mut redis = RedisServer::start();
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        "",
    );
    let base = daemon.base();
    let http = Http::new();

    let ready = || async {
        http.get(&format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status == 200)
    };
    assert!(
        eventually(Duration::from_secs(10), ready).await,
        "not ready at start"
    );
    let before = http
        .submit(&base, &chat_event("c1", "before", "hello"))
        .await
        .unwrap();
    assert_eq!(before.status, 200, "{}", before.body);

    redis.stop();
    let started = Instant::now();
    let during = http
        .submit(&base, &chat_event("c1", "during", "anyone?"))
        .await
        .unwrap();
    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(during.json()["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answer took {:?}",
        started.elapsed()
    );
    let readyz = http.get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    assert_eq!(readyz.json()["ready"], false);
    let healthz = http.get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(healthz.status, 200);
    // Still down a while later: still running, still refusing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(daemon.is_running(), "daemon died: {}", daemon.log());
    let still = http
        .submit(&base, &chat_event("c1", "during", "anyone?"))
        .await
        .unwrap();
    assert_eq!(still.status, 503);
    // The intake API's reply pull says so too, and counts it.
    let pull = http
        .call(
            "GET",
            &format!("{base}/channels/api/replies?wait=0"),
            Some(TOKEN),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pull.status, 503, "{}", pull.body);
    assert_eq!(pull.json()["error"]["code"], "unavailable");
    let metrics = http.get(&format!("{base}/metrics")).await.unwrap().body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_intake_errors_total")
                && l.contains("error_type=\"unavailable\"")),
        "unavailable errors are not counted:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_intake_api_replies_total")
                && l.contains("outcome=\"unavailable\"")),
        "the failed pull is not counted:\n{metrics}"
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(20), ready).await,
        "not ready after Redis came back: {}",
        daemon.log()
    );
    let after = http
        .submit(&base, &chat_event("c1", "during", "anyone?"))
        .await
        .unwrap();
    assert_eq!(after.status, 200, "{}", after.body);
    // The refused message was never stored, so the retry is new, not a duplicate,
    // and it joins the conversation that survived in the AOF.
    assert_eq!(after.json()["outcome"], "appended");
    assert_eq!(
        after.json()["conversation_id"],
        before.json()["conversation_id"]
    );
    let stored = stored_messages(&redis.url()).await;
    assert_eq!(stored.len(), 2);
}

/// `switchboard_redis_up` follows Redis without anyone asking `/readyz`
/// (on a plain systemd install nothing does): 1 while it answers, 0 a few
/// seconds after it stops, 1 again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_up_follows_redis_without_readyz() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        "",
    );
    let base = daemon.base();
    let up = || async {
        metrics_text(&base)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_redis_up "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    // Waits up to 20 s for the gauge to read `want`.
    let until_up = |want: f64, when: &'static str| async move {
        let reached = eventually(Duration::from_secs(20), || async {
            up().await == Some(want)
        })
        .await;
        assert!(reached, "redis_up is not {want} {when}: {:?}", up().await);
    };
    until_up(1.0, "at start").await;
    redis.stop();
    until_up(0.0, "with Redis stopped").await;
    redis.restart();
    until_up(1.0, "with Redis back").await;
}

/// An instance started while Redis is away, configured with another
/// partition count than the store was laid out with: when Redis comes
/// back, nothing is acknowledged before the layout is checked (the events
/// would be placed by the wrong count, where routing never looks), it is
/// never ready, and it stops with the reason. The check is retried with a
/// backoff in the background, and the intake took submissions meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_taken_before_the_partition_count_is_checked() {
    let mut redis = RedisServer::start();
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let http = Http::new();
    // The store is laid out with the default count (8).
    let mut first = Daemon::start(binary, &redis.url(), "");
    let base = first.base();
    assert!(
        eventually(Duration::from_secs(10), || async {
            http.get(&format!("{base}/readyz"))
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await,
        "not ready: {}",
        first.log()
    );
    first.kill9();
    redis.stop();
    let mut daemon = Daemon::start_with_env(
        binary,
        &redis.url(),
        "",
        &[("SWITCHBOARD__REDIS__PARTITIONS", "16")],
    );
    let base = daemon.base();
    // The layout check's backoff (0.2 s doubling) is between tries when
    // Redis comes back.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    redis.restart();
    let mut answers = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) && daemon.is_running() {
        if let Ok(reply) = http
            .submit(
                &base,
                &chat_event("c1", &format!("m{}", answers.len()), "hi"),
            )
            .await
        {
            answers.push(reply.status);
            if let Ok(readyz) = http.get(&format!("{base}/readyz")).await {
                assert_eq!(readyz.status, 503, "{}", readyz.body);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|s| *s == 503),
        "acknowledged before the check: {answers:?}"
    );
    let status = daemon.wait(Duration::from_secs(10));
    assert!(!status.success(), "{status}: {}", daemon.log());
    assert!(daemon.log().contains("partitions"), "{}", daemon.log());
    assert!(stored_messages(&redis.url()).await.is_empty());
}
