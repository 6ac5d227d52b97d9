//! Redis's persistence and memory settings, read from a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::store_for;
use switchboard_store::Risk;
use switchboard_testkit::RedisServer;

#[tokio::test]
async fn risky_settings_are_named_and_a_hidden_config_is_not_an_error() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    // The test server runs as deploy/redis-switchboard.conf recommends.
    assert_eq!(store.check_settings().await.unwrap(), Some(vec![]));

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Redis's own AOF rewrite minimum: a latency risk while the AOF is on.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("auto-aof-rewrite-min-size")
        .arg("64mb")
        .query_async(&mut conn)
        .await
        .unwrap();
    let advice = store
        .check_settings()
        .await
        .unwrap()
        .expect("CONFIG allowed");
    assert_eq!(
        advice
            .iter()
            .map(|a| (a.name, a.value.as_str(), a.risk))
            .collect::<Vec<_>>(),
        vec![("auto-aof-rewrite-min-size", "67108864", Risk::Latency)]
    );
    for (name, value) in [
        ("appendonly", "no"),
        ("maxmemory-policy", "allkeys-lru"),
        ("stream-node-max-bytes", "4096"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let advice = store
        .check_settings()
        .await
        .unwrap()
        .expect("CONFIG allowed");
    let found: Vec<_> = advice
        .iter()
        .map(|a| (a.name, a.value.as_str(), a.risk))
        .collect();
    assert_eq!(
        found,
        vec![
            ("appendonly", "no", Risk::Loss),
            ("maxmemory-policy", "allkeys-lru", Risk::Loss),
            ("stream-node-max-bytes", "4096", Risk::Memory),
        ]
    );

    // Hosted services rename CONFIG: nothing can be said, and that is no error.
    let hidden = RedisServer::start_with(&["--rename-command", "CONFIG", "config-hidden-here"]);
    let store = store_for(&hidden, 1);
    assert_eq!(store.check_settings().await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_not_a_verdict() {
    let mut redis = RedisServer::start();
    let store = store_for(&redis, 1);
    redis.stop();
    assert!(matches!(
        store.check_settings().await,
        Err(switchboard_store::StoreError::Unavailable(_))
    ));
}
