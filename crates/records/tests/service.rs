//! The records' loop against a real redis-server: a step that keeps
//! failing is counted and holds none of the others up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use switchboard_records::{Recorder, RecordsConfig};
use switchboard_router::plan::Plan;
use switchboard_store::{Store, StoreConfig};
use switchboard_testkit::RedisServer;
use switchboard_testkit::counters::Counters;
use tokio_util::sync::CancellationToken;

/// Routing's settings key of the wrong type: writing the settings fails
/// at every tick (counted), and the waiting contacts are still sampled
/// (before, the loop went no further than the settings).
#[tokio::test]
async fn settings_that_cannot_be_written_hold_nothing_else_up() {
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 1)).unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(store.keys().route("settings"))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let plan = Arc::new(Plan::compile("routing", &[], &[], "").unwrap());
    let config = RecordsConfig {
        sample_secs: 1,
        ..RecordsConfig::default()
    };
    let recorder = Recorder::new(store, plan, config, Duration::from_secs(86_400));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(recorder.clone().run(shutdown.clone()));
    let mut samples = 0;
    for _ in 0..100 {
        samples = recorder.series().await.unwrap().len();
        if samples > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    running.await.unwrap();
    assert!(samples > 0, "no sample taken while the settings failed");
    assert!(
        counters.get("switchboard_records_errors_total{op=settings}") >= 1,
        "{}",
        counters.dump()
    );
}
