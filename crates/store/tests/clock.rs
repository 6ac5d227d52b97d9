//! The clock offset against a real redis-server. A test binary of its own:
//! it moves the process's (manual) clock, which every test in a binary
//! shares.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use switchboard_core::Timestamp;
use switchboard_testkit::RedisServer;

#[tokio::test]
async fn the_offset_to_redis_clock_is_measured() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    // The same machine: within the round trip.
    let offset = store.clock_offset().await.unwrap();
    assert!(offset.abs() < 500, "{offset} ms");
    // This instance's clock 30 s ahead: Redis is 30 s behind it.
    Timestamp::set_manual(Timestamp(Timestamp::system().as_millis() + 30_000));
    let ahead = store.clock_offset().await;
    Timestamp::set_manual(Timestamp(0));
    let ahead = ahead.unwrap();
    assert!((-30_500..=-29_500).contains(&ahead), "{ahead} ms");
}
