//! The backlog gauge while a receiver keeps failing: it grows with the
//! events waiting behind the one being retried (it was only read between
//! events, so it stood still while a receiver was down). Its own test
//! binary: the metrics recorder is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::StatusCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_channel::Secret;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent};
use switchboard_store::{IntakeSettings, RedisIntake, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use switchboard_testkit::counters::Counters;
use switchboard_webhooks::{WebhookConfig, Webhooks};
use tokio_util::sync::CancellationToken;

fn event(id: &str) -> InboundEvent {
    InboundEvent {
        channel: ChannelKind::Chat,
        source: "website".into(),
        address: "widget-1".into(),
        customer: CustomerIdentity::new("visitor", "olena").unwrap(),
        customer_name: None,
        provider_message_id: Some(id.into()),
        subject: None,
        text: format!("text of {id}"),
        language: None,
        attributes: Default::default(),
        sent_at: None,
        new_contact: false,
        media: Vec::new(),
    }
}

/// A private Redis, a store over one partition with the webhook feed on,
/// and its intake.
fn world() -> (RedisServer, Store, RedisIntake) {
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 1))
        .unwrap()
        .with_event_feed(true);
    let intake = RedisIntake::new(
        store.clone(),
        IntakeSettings {
            dedupe_window: Duration::from_secs(3600),
            limits: Default::default(),
        },
    );
    (redis, store, intake)
}

/// A `contact.created` event two hours old (its `at`) in partition 0's
/// feed, named `id`; with `old_entry`, its stream entry is as old too (as a
/// webhook with a longer max_age would have kept it), else it is written
/// now (as a receiver down that long would find it).
async fn feed_event_two_hours_old(redis: &RedisServer, store: &Store, id: &str, old_entry: bool) {
    let old = switchboard_core::Timestamp::now().as_millis() - 2 * 3600 * 1000;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entry = if old_entry {
        format!("{old}-0")
    } else {
        "*".to_owned()
    };
    let _: String = redis::cmd("XADD")
        .arg(store.keys().feed(switchboard_core::Partition(0)))
        .arg(entry)
        .arg("type")
        .arg("contact.created")
        .arg("id")
        .arg(id)
        .arg("contact")
        .arg(switchboard_core::ContactId::new(switchboard_core::Partition(0)).to_string())
        .arg("at")
        .arg(old)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Webhook `name` (every event, 1 s timeout, one hour's max age) to `url`,
/// running until the token is cancelled.
fn start_webhook(
    store: &Store,
    name: &str,
    url: String,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let config = WebhookConfig {
        name: name.into(),
        url,
        secret: Secret::Inline("0123456789abcdef-secret".into()),
        events: switchboard_webhooks::EventType::ALL.to_vec(),
        timeout_ms: 1000,
        max_age_hours: 1,
        allow_http: false,
    };
    let hooks = Webhooks::new(store.clone(), &[config], "test-instance").unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(hooks.run(shutdown.clone()));
    (shutdown, running)
}

/// A receiver that answers 200 and records each delivery's event id: its
/// URL, and the ids so far.
async fn recording_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                log.lock()
                    .unwrap()
                    .push(json["id"].as_str().unwrap_or("").to_owned());
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The ids `seen` once it holds `n`, or after `within`.
async fn delivered(seen: &Arc<Mutex<Vec<String>>>, n: usize, within: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    while seen.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_grows_while_the_receiver_fails() {
    let counters = Counters::global();
    let (_redis, store, intake) = world();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (shutdown, running) = start_webhook(&store, "down", url);
    intake.submit_event(event("m0")).await.unwrap();
    // The first event is being retried; more arrive behind it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 1..=20 {
        intake.submit_event(event(&format!("m{i}"))).await.unwrap();
    }
    let key = "switchboard_webhook_backlog{webhook=down}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while counters.get(key) < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backlog = counters.get(key);
    shutdown.cancel();
    running.await.unwrap();
    assert!(
        backlog >= 20,
        "the backlog gauge read {backlog}: {}",
        counters.dump()
    );
}

/// A webhook added while the feed holds events older than its own
/// `max_age_hours` starts after them: they are not delivered, and not
/// counted as dropped (every one was, with a warning each); newer ones
/// are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_webhook_starts_at_its_own_max_age() {
    let counters = Counters::global();
    let (redis, store, intake) = world();
    // An event two hours old in the feed (as a webhook with a longer
    // max_age would have kept it), then a new one.
    feed_event_two_hours_old(&redis, &store, "old-event-1", true).await;
    intake.submit_event(event("later")).await.unwrap();

    let (url, seen) = recording_receiver().await;
    let (shutdown, running) = start_webhook(&store, "late", url);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    running.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the newer event was delivered");
    assert!(!seen.contains(&"old-event-1".to_owned()), "{seen:?}");
    assert_eq!(
        counters.get("switchboard_webhook_deliveries_total{outcome=dropped,webhook=late}"),
        0,
        "{}",
        counters.dump()
    );
}

/// An event older than the webhook's `max_age_hours` when its turn comes
/// is dropped undelivered and counted `dropped`, and the events behind it
/// are delivered (docs/webhooks.md, "Retention"). The event's age is its
/// `at`, so one written late with an old `at` stands for a receiver that
/// was down that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_max_age_is_dropped_and_the_next_delivered() {
    let counters = Counters::global();
    let (redis, store, intake) = world();
    let (url, seen) = recording_receiver().await;
    let (shutdown, running) = start_webhook(&store, "aging", url);
    let delivered = |n: usize| delivered(&seen, n, Duration::from_secs(10));
    // The webhook runs (its group exists): a first message is delivered,
    // as its two events (contact.created, message.created).
    intake.submit_event(event("first")).await.unwrap();
    let before = delivered(2).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let n = before.len();

    feed_event_two_hours_old(&redis, &store, "aged-event-1", false).await;
    intake.submit_event(event("after")).await.unwrap();
    // Delivered in the feed's order: the event behind the aged one
    // arrives only once the aged one was handled.
    let after = delivered(n + 1).await;
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(after.len(), n + 1, "the event behind it: {after:?}");
    assert!(!after.contains(&"aged-event-1".to_owned()), "{after:?}");
    assert_eq!(
        counters.get("switchboard_webhook_deliveries_total{outcome=dropped,webhook=aging}"),
        1,
        "{}",
        counters.dump()
    );
}

/// An event whose contact Redis cannot read for a reason that does not
/// pass (its key holds another type: damaged, or written by something
/// else) is tried a few times, then dropped and counted, and the events
/// behind it are delivered (it held up its partition until max_age_hours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_contact_cannot_be_read_is_dropped_after_a_few_tries() {
    let counters = Counters::global();
    let (redis, store, intake) = world();
    let (url, seen) = recording_receiver().await;
    let (shutdown, running) = start_webhook(&store, "damaged", url);
    let delivered = |n: usize| delivered(&seen, n, Duration::from_secs(40));
    intake.submit_event(event("first")).await.unwrap();
    let before = delivered(2).await;
    assert_eq!(before.len(), 2, "{before:?}");

    let contact = switchboard_core::ContactId::new(switchboard_core::Partition(0));
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(store.keys().contact(&contact))
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(store.keys().feed(switchboard_core::Partition(0)))
        .arg("*")
        .arg("type")
        .arg("contact.created")
        .arg("id")
        .arg("damaged-event")
        .arg("contact")
        .arg(contact.to_string())
        .arg("at")
        .arg(switchboard_core::Timestamp::now().as_millis())
        .query_async(&mut conn)
        .await
        .unwrap();
    intake.submit_event(event("after")).await.unwrap();
    let after = delivered(3).await;
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(after.len(), 3, "the event behind it: {after:?}");
    assert!(!after.contains(&"damaged-event".to_owned()), "{after:?}");
    assert_eq!(
        counters.get("switchboard_webhook_deliveries_total{outcome=dropped,webhook=damaged}"),
        1,
        "{}",
        counters.dump()
    );
    assert_eq!(
        counters
            .get("switchboard_webhook_payload_errors_total{error_type=unreadable,webhook=damaged}"),
        5,
        "{}",
        counters.dump()
    );
}
