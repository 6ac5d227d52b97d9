//! The adapters' own state (checkpoints, leases) against a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;
use switchboard_channel::ChannelState;
use switchboard_store::RedisChannelState;
use switchboard_testkit::RedisServer;

#[tokio::test]
async fn values_persist_and_one_instance_holds_a_lease() {
    let redis = RedisServer::start();
    let store = common::store_for(&redis, 4);
    let a = RedisChannelState::new(store.clone(), "mail", "instance-a");
    let b = RedisChannelState::new(store.clone(), "mail", "instance-b");
    assert_eq!(a.get("inbox:checkpoint").await.expect("get"), None);
    a.set("inbox:checkpoint", "17:42").await.expect("set");
    assert_eq!(
        b.get("inbox:checkpoint").await.expect("get").as_deref(),
        Some("17:42")
    );
    let other = RedisChannelState::new(store.clone(), "mail2", "instance-a");
    assert_eq!(other.get("inbox:checkpoint").await.expect("get"), None);

    let lease = Duration::from_secs(30);
    assert!(a.hold("inbox", lease).await.expect("hold"));
    assert!(!b.hold("inbox", lease).await.expect("hold"));
    assert!(a.hold("inbox", lease).await.expect("renew"));
    b.release("inbox").await.expect("release by a non-holder");
    assert!(!b.hold("inbox", lease).await.expect("hold"));
    a.release("inbox").await.expect("release");
    assert!(b.hold("inbox", lease).await.expect("hold after release"));
}

/// A marker set for a while is read by every instance, then expires.
#[tokio::test]
async fn a_marker_expires() {
    let redis = RedisServer::start();
    let store = common::store_for(&redis, 4);
    let a = RedisChannelState::new(store.clone(), "pbx", "instance-a");
    let b = RedisChannelState::new(store.clone(), "pbx", "instance-b");
    // Long enough to be read on a loaded machine before it lapses.
    a.set_for("hungup:c1", "abandoned", Duration::from_millis(1500))
        .await
        .expect("set");
    assert_eq!(
        b.get("hungup:c1").await.expect("get").as_deref(),
        Some("abandoned")
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(b.get("hungup:c1").await.expect("get"), None);
}

/// A value removed by one instance is gone for every instance; removing
/// what is not there is no error.
#[tokio::test]
async fn a_value_is_removed() {
    let redis = RedisServer::start();
    let store = common::store_for(&redis, 4);
    let a = RedisChannelState::new(store.clone(), "pbx", "instance-a");
    let b = RedisChannelState::new(store.clone(), "pbx", "instance-b");
    a.set_for("on:c1", "olha", Duration::from_secs(60))
        .await
        .expect("set");
    a.set("on:c2", "petro").await.expect("set");
    b.remove("on:c1").await.expect("remove");
    b.remove("on:c9").await.expect("remove what is not there");
    assert_eq!(a.get("on:c1").await.expect("get"), None);
    assert_eq!(a.get("on:c2").await.expect("get").as_deref(), Some("petro"));
}

/// A map is shared by every instance of the adapter, and by none of
/// another's.
#[tokio::test]
async fn map_entries_are_shared_by_the_adapters_instances() {
    let redis = RedisServer::start();
    let store = common::store_for(&redis, 4);
    let a = RedisChannelState::new(store.clone(), "pbx", "instance-a");
    let b = RedisChannelState::new(store.clone(), "pbx", "instance-b");
    let other = RedisChannelState::new(store.clone(), "pbx2", "instance-a");
    assert!(a.entries("calls").await.expect("entries").is_empty());
    a.put_entry("calls", "c1", "call-1").await.expect("put");
    a.put_entry("calls", "c2", "call-2").await.expect("put");
    b.put_entry("calls", "c1", "call-1b")
        .await
        .expect("put again");
    let mut entries = b.entries("calls").await.expect("entries");
    entries.sort();
    assert_eq!(
        entries,
        vec![
            ("c1".to_owned(), "call-1b".to_owned()),
            ("c2".to_owned(), "call-2".to_owned())
        ]
    );
    assert!(other.entries("calls").await.expect("entries").is_empty());
    b.remove_entry("calls", "c1").await.expect("remove");
    b.remove_entry("calls", "c9")
        .await
        .expect("remove what is not there");
    assert_eq!(
        a.entries("calls").await.expect("entries"),
        vec![("c2".to_owned(), "call-2".to_owned())]
    );
}
