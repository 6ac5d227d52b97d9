//! The dispatcher against a real redis-server and a local receiver: a
//! failing receiver holds its partition's later events back (retried with
//! backoff, in order), a permanent refusal is settled and passed, and
//! nothing is delivered twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_channel::Secret;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent};
use switchboard_store::{IntakeSettings, RedisIntake, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use switchboard_webhooks::sign::verify;
use switchboard_webhooks::{WebhookConfig, Webhooks};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "0123456789abcdef-secret";

#[derive(Default)]
struct Receiver {
    /// (event type, message text, status answered)
    seen: Vec<(String, String, u16)>,
    failures_left: u32,
}

async fn receive(
    State(rx): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let signature = headers
        .get("switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(verify(SECRET.as_bytes(), signature, &body, now, 60), Ok(()));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kind = json["type"].as_str().unwrap().to_owned();
    let text = json["message"]["text"].as_str().unwrap_or("").to_owned();
    let mut rx = rx.lock().unwrap();
    let status = if rx.failures_left > 0 {
        rx.failures_left -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else if text == "reject-me" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    rx.seen.push((kind, text, status.as_u16()));
    status
}

/// A store with the webhook feed on, over one partition, and its intake.
fn store_and_intake(redis: &RedisServer) -> (Store, RedisIntake) {
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
    (store, intake)
}

/// A local receiver at `/in`; its URL.
async fn serve_receiver(rx: Arc<Mutex<Receiver>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/in", axum::routing::post(receive))
        .with_state(rx);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/in")
}

fn event(customer: &str, id: &str, text: &str) -> InboundEvent {
    InboundEvent {
        channel: ChannelKind::Chat,
        source: "website".into(),
        address: "widget-1".into(),
        customer: CustomerIdentity::new("visitor", customer).unwrap(),
        customer_name: None,
        provider_message_id: Some(id.into()),
        subject: None,
        text: text.into(),
        language: None,
        attributes: Default::default(),
        sent_at: None,
        new_contact: false,
        media: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_hold_the_partition_back_and_refusals_are_passed() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    for (id, text) in [("m1", "first"), ("m2", "reject-me"), ("m3", "third")] {
        intake.submit_event(event("olena", id, text)).await.unwrap();
    }

    let rx = Arc::new(Mutex::new(Receiver {
        failures_left: 2,
        ..Receiver::default()
    }));
    let url = serve_receiver(rx.clone()).await;

    let config = WebhookConfig {
        name: "crm".into(),
        url,
        secret: Secret::Inline(SECRET.into()),
        events: switchboard_webhooks::EventType::ALL.to_vec(),
        timeout_ms: 2000,
        max_age_hours: 1,
        allow_http: false,
    };
    let hooks = Webhooks::new(store.clone(), &[config], "test-instance").unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(hooks.run(shutdown.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rx.lock().unwrap().seen.len() < 6 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    shutdown.cancel();
    running.await.unwrap();

    let seen = rx.lock().unwrap().seen.clone();
    let seen: Vec<(&str, &str, u16)> = seen
        .iter()
        .map(|(k, t, s)| (k.as_str(), t.as_str(), *s))
        .collect();
    assert_eq!(
        seen,
        [
            ("contact.created", "", 503),
            ("contact.created", "", 503),
            ("contact.created", "", 200),
            ("message.created", "first", 200),
            ("message.created", "reject-me", 422),
            ("message.created", "third", 200),
        ]
    );

    // Everything settled; the lease was released on shutdown.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("sb:{p0}:feed")
        .arg("hook:crm")
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(parts) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(parts.first(), Some(&redis::Value::Int(0)), "{parts:?}");
    let holder: Option<String> = redis::cmd("GET")
        .arg("sb:{p0}:hook:crm:holder")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holder, None);
}

/// The feed's key is deleted under a running dispatcher (a flush, a Redis
/// that lost its data): the consumer group is made again and later events
/// are delivered (they used to wait for a restart, a warning a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_lost_its_group_is_delivered_again() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    let rx = Arc::new(Mutex::new(Receiver::default()));
    let url = serve_receiver(rx.clone()).await;
    let config = WebhookConfig {
        name: "crm".into(),
        url,
        secret: Secret::Inline(SECRET.into()),
        events: vec![switchboard_webhooks::EventType::MessageCreated],
        timeout_ms: 2000,
        max_age_hours: 1,
        allow_http: false,
    };
    let hooks = Webhooks::new(store.clone(), &[config], "test-instance").unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(hooks.run(shutdown.clone()));
    let seen = |n: usize| {
        let rx = rx.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while rx.lock().unwrap().seen.len() < n && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            rx.lock().unwrap().seen.len() >= n
        }
    };

    intake
        .submit_event(event("olena", "g1", "before"))
        .await
        .unwrap();
    assert!(seen(1).await, "the first event is delivered");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg("sb:{p0}:feed")
        .query_async(&mut conn)
        .await
        .unwrap();
    intake
        .submit_event(event("olena", "g2", "after"))
        .await
        .unwrap();
    assert!(seen(2).await, "an event after the loss is delivered");
    shutdown.cancel();
    running.await.unwrap();
    let texts: Vec<String> = rx
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(texts, ["before", "after"]);
}
