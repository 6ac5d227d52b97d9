//! The deliver loop end to end: the real Redis outbox (`RedisOutbox` on a
//! private redis-server), real senders, and a provider stand-in that
//! refuses, rate-limits and accepts as scripted.

mod send_support;

use redis::AsyncCommands;
use send_support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_core::OutboundMessage;
use switchboard_social::Platform;
use switchboard_social::send::{
    Deliverer, DeliverySettings, SendConfig, Sender, Senders, http_client,
};
use switchboard_store::{RedisOutbox, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

const PAGE: &str = "104857600012345";
const PHONE_ID: &str = "106540352242922";
const BOT_TOKEN: &str = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const VISIBILITY: Duration = Duration::from_secs(10);

fn store_for(redis: &RedisServer) -> Store {
    Store::new(StoreConfig::local(redis.url(), 1)).expect("store")
}

fn sender(platform: Platform, account: &str, base: &str) -> Sender {
    let (token, url) = match platform {
        Platform::Telegram => (BOT_TOKEN, base.to_owned()),
        _ => ("EAAG-page-token", format!("{base}/v21.0")),
    };
    let mut config = SendConfig::new(platform, account, secret(token));
    config.url = Some(url);
    config.timeout = Duration::from_secs(2);
    Sender::new(config, http_client(Duration::from_secs(1)).expect("client")).expect("sender")
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        visibility: VISIBILITY,
        hold_margin: Duration::from_secs(1),
        poll_wait: Duration::from_millis(200),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(1),
        ..DeliverySettings::default()
    }
}

/// A deliverer running on the outbox of source `social` as `consumer`.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<switchboard_social::send::deliver::Memory>,
}

impl Running {
    fn start(store: &Store, consumer: &str, sender: Sender, settings: DeliverySettings) -> Running {
        let outbox =
            RedisOutbox::new(store.clone(), "social", consumer, VISIBILITY).expect("outbox");
        let senders = Senders::new([sender]).expect("senders");
        let deliverer =
            Deliverer::new(Arc::new(outbox), Arc::new(senders), settings).expect("deliverer");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(deliverer.run(shutdown.clone()));
        Running { shutdown, task }
    }

    /// Cancels and waits for the loop to return; how long that took.
    async fn stop(self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the deliver loop stops")
            .expect("the deliver loop does not panic");
        started.elapsed()
    }
}

async fn enqueue(store: &Store, messages: &[&OutboundMessage]) {
    for msg in messages {
        RedisOutbox::enqueue_to(store, msg).await.expect("enqueue");
    }
}

/// The delivery state the outbox recorded for `msg`, once there is one.
async fn outcome(redis: &RedisServer, store: &Store, msg: &OutboundMessage) -> Option<Value> {
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let state: Option<String> = conn
        .hget(
            store.keys().conversation_delivery(&msg.conversation_id),
            msg.message_id.to_string(),
        )
        .await
        .expect("hget");
    state.map(|s| serde_json::from_str(&s).expect("delivery state json"))
}

/// Waits until every message has a recorded outcome.
async fn settled(redis: &RedisServer, store: &Store, messages: &[&OutboundMessage]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        for msg in messages {
            match outcome(redis, store, msg).await {
                Some(state) => all.push(state),
                None => break,
            }
        }
        if all.len() == messages.len() {
            return all;
        }
        assert!(Instant::now() < deadline, "not settled in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (entries in the outbox stream, entries deferred).
async fn outbox_sizes(redis: &RedisServer, store: &Store) -> (usize, usize) {
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let stream: usize = conn
        .xlen(store.keys().outbox("social"))
        .await
        .expect("xlen");
    let deferred: usize = conn
        .zcard(store.keys().outbox_deferred("social"))
        .await
        .expect("zcard");
    (stream, deferred)
}

fn delivered_as(state: &Value, id: &Option<String>) {
    assert_eq!(
        state["outcome"],
        json!({"state": "delivered", "provider_message_id": id})
    );
}

/// a1 meets a 429 with `Retry-After: 1`, then a 500, then is accepted; a2
/// (same conversation) was written right after it, b1 (another
/// conversation) after that.
async fn a_retried_reply_arrives_once_in_order(memory_wait_max: Duration) -> Vec<Value> {
    let redis = RedisServer::start();
    let store = store_for(&redis);
    let provider = StandIn::start(Kind::Graph).await;
    provider.script(
        "a1",
        vec![
            Canned::new(429, graph_error(4, None, "(#4) Application request limit reached"))
                .header("retry-after", "1"),
            Canned::new(
                500,
                json!({"error": {"message": "An unexpected error has occurred. Please retry your request later.",
                                 "type": "OAuthException", "code": 2, "is_transient": true}}),
            ),
        ],
    );
    let (a, b) = (conversation(), conversation());
    let a1 = reply(a, "messenger", "6001002003", PAGE, "a1");
    let a2 = reply(a, "messenger", "6001002003", PAGE, "a2");
    let b1 = reply(b, "messenger", "6009998887", PAGE, "b1");
    enqueue(&store, &[&a1, &a2, &b1]).await;

    let settings = DeliverySettings {
        memory_wait_max,
        ..settings()
    };
    let running = Running::start(
        &store,
        "i1",
        sender(Platform::Messenger, PAGE, &provider.base),
        settings,
    );
    let states = settled(&redis, &store, &[&a1, &a2, &b1]).await;

    // Each reply reached the provider exactly once, a2 after a1, and b1
    // did not wait for a1's retries.
    assert_eq!(provider.accepted(), ["b1", "a1", "a2"]);
    let tries = provider.requests_for("a1");
    let statuses: Vec<u16> = tries.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 500, 200]);
    assert!(
        tries[1].at - tries[0].at >= Duration::from_secs(1),
        "Retry-After was not honoured: {:?}",
        tries[1].at - tries[0].at
    );
    let later = provider.requests_for("a2");
    assert_eq!(later.len(), 1);
    assert!(later[0].at >= tries[2].at);
    let other = provider.requests_for("b1");
    assert_eq!(other.len(), 1);
    assert!(other[0].at < tries[1].at);

    delivered_as(&states[0], &tries[2].id);
    delivered_as(&states[1], &later[0].id);
    delivered_as(&states[2], &other[0].id);
    assert_eq!(outbox_sizes(&redis, &store).await, (0, 0));
    assert!(running.stop().await < Duration::from_secs(3));
    states
}

#[tokio::test]
async fn a_retried_reply_waiting_in_memory_arrives_once_and_in_order() {
    let states = a_retried_reply_arrives_once_in_order(Duration::from_secs(10)).await;
    // Retried in memory: handed out by the outbox once.
    assert_eq!(states[0]["attempts"], 1);
}

#[tokio::test]
async fn a_retried_reply_deferred_through_the_outbox_arrives_once_and_in_order() {
    let states = a_retried_reply_arrives_once_in_order(Duration::ZERO).await;
    // Every retry went back to the outbox: handed out three times.
    assert_eq!(states[0]["attempts"], 3);
    assert_eq!(states[1]["attempts"], 1);
}

#[tokio::test]
async fn a_closed_whatsapp_window_is_recorded_for_the_agent() {
    let redis = RedisServer::start();
    let store = store_for(&redis);
    let provider = StandIn::start(Kind::WhatsApp).await;
    provider.script(
        "w1",
        vec![Canned::new(
            400,
            whatsapp_error(
                131_047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            ),
        )],
    );
    let c = conversation();
    let w1 = reply(c, "whatsapp", "380501234567", PHONE_ID, "w1");
    let w2 = reply(c, "whatsapp", "380501234567", PHONE_ID, "w2");
    enqueue(&store, &[&w1, &w2]).await;
    let running = Running::start(
        &store,
        "i1",
        sender(Platform::WhatsApp, PHONE_ID, &provider.base),
        settings(),
    );
    let states = settled(&redis, &store, &[&w1, &w2]).await;
    assert_eq!(
        states[0]["outcome"],
        json!({"state": "failed", "reason":
            "Not delivered: WhatsApp's 24-hour customer service window is closed. The customer \
             last wrote more than 24 hours ago; until they write again, WhatsApp accepts only \
             pre-approved template messages."})
    );
    assert_eq!(
        provider.requests_for("w1").len(),
        1,
        "a closed window is not retried"
    );
    delivered_as(&states[1], &provider.requests_for("w2")[0].id);
    running.stop().await;
}

#[tokio::test]
async fn shutdown_hands_waiting_replies_back_and_the_next_instance_delivers_them_once_in_order() {
    let redis = RedisServer::start();
    let store = store_for(&redis);
    let provider = StandIn::start(Kind::Telegram).await;
    provider.script(
        "t1",
        vec![Canned::new(
            502,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
        )],
    );
    let c = conversation();
    let t1 = reply(c, "telegram", "123456789", "", "t1");
    let t2 = reply(c, "telegram", "123456789", "", "t2");
    enqueue(&store, &[&t1, &t2]).await;

    // The first instance waits seconds in memory before retrying t1 ...
    let slow = DeliverySettings {
        backoff_base: Duration::from_secs(4),
        ..settings()
    };
    let first = Running::start(
        &store,
        "i1",
        sender(Platform::Telegram, "shop_bot", &provider.base),
        slow,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.requests_for("t1").is_empty() {
        assert!(Instant::now() < deadline, "t1 was never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and is stopped meanwhile: it returns promptly, having handed both
    // replies back to the outbox (nothing left pending for 10 s).
    assert!(first.stop().await < Duration::from_secs(2));
    assert!(provider.requests_for("t2").is_empty());
    assert_eq!(outbox_sizes(&redis, &store).await, (0, 2));
    assert!(outcome(&redis, &store, &t1).await.is_none());

    let second = Running::start(
        &store,
        "i2",
        sender(Platform::Telegram, "shop_bot", &provider.base),
        settings(),
    );
    let states = settled(&redis, &store, &[&t1, &t2]).await;
    assert_eq!(provider.accepted(), ["t1", "t2"]);
    assert_eq!(provider.requests_for("t1").len(), 2);
    assert_eq!(provider.requests_for("t2").len(), 1);
    delivered_as(&states[0], &provider.requests_for("t1")[1].id);
    delivered_as(&states[1], &provider.requests_for("t2")[0].id);
    second.stop().await;
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_fails_replies_without_a_sender() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let redis = RedisServer::start();
    let store = store_for(&redis);
    let provider = StandIn::start(Kind::Graph).await;
    let error = json!({"error": {"message": "Temporary send message failure. Please try again later.",
                                 "type": "OAuthException", "code": 1200}});
    provider.script("doomed", vec![Canned::new(500, error); 5]);
    let doomed = reply(conversation(), "messenger", "6001002003", PAGE, "doomed");
    let stray = reply(conversation(), "messenger", "6001002003", "999", "stray");
    enqueue(&store, &[&doomed, &stray]).await;
    let settings = DeliverySettings {
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        ..settings()
    };
    let running = Running::start(
        &store,
        "i1",
        sender(Platform::Messenger, PAGE, &provider.base),
        settings,
    );
    let states = settled(&redis, &store, &[&doomed, &stray]).await;
    assert_eq!(provider.requests_for("doomed").len(), 3);
    let reason = states[0]["outcome"]["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("Not delivered: gave up after 3 attempts over ")
            && reason.contains("Last error: Messenger temporary error (code 1200)"),
        "{reason}"
    );
    assert_eq!(
        states[1]["outcome"],
        json!({"state": "failed",
               "reason": "Not sent: no messenger account \"999\" is configured to reply from."})
    );
    assert!(provider.requests_for("stray").is_empty());
    // Counted as a failure to send, as every permanent failure is.
    assert_eq!(
        counters.get("switchboard_social_send_failures_total{kind=unroutable,platform=messenger}"),
        1,
        "{}",
        counters.dump()
    );
    running.stop().await;
}
