//! The webhooks end to end: the three adapters built from their
//! configuration on a private redis-server (the real intake and outbox),
//! their routes served by axum on a free port, deliveries posted over HTTP
//! as Meta, Telegram and a generic bridge send them, and what the intake
//! stored read back from Redis.

mod send_support;

use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use send_support::{Kind, StandIn};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_channel::{ChannelConfig, ChannelContext, Intake, RouteView, Routing, Secret};
use switchboard_core::{
    ChannelKind, ContactId, CustomerIdentity, IntakeError, IntakeReceipt, MessageId,
    OutboundMessage, Timestamp,
};
use switchboard_social::verify::{
    GENERIC_SIGNATURE_HEADER, GENERIC_TIMESTAMP_HEADER, META_SIGNATURE_HEADER,
    TELEGRAM_TOKEN_HEADER,
};
use switchboard_social::{GenericConfig, MetaAccount, MetaConfig, TelegramConfig};
use switchboard_store::{
    Conversations, IntakeSettings, Live, LogEntry, RedisChannelState, RedisIntake, RedisOutbox,
    Store, StoreConfig,
};
use switchboard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

const BRIDGE_SECRET: &str = "bridge-secret-0123456789";
const APP_SECRET: &str = "test-app-secret-0123456789abcdef";
const TG_SECRET: &str = "tg-secret_TOKEN-4242";
const PAGE: &str = "105550001";
/// The intake's default text limit (`[intake] max_text_bytes`).
const MAX_TEXT: usize = 64 * 1024;

/// Routing plays no part in these tests.
#[derive(Debug)]
struct NoRouting;

impl Routing for NoRouting {
    fn route<'a>(
        &'a self,
        _: &'a ContactId,
    ) -> futures::future::BoxFuture<'a, Result<Option<RouteView>, IntakeError>> {
        Box::pin(async { Ok(None) })
    }
    fn answer<'a>(
        &'a self,
        _: &'a ContactId,
        _: &'a str,
        _: bool,
    ) -> futures::future::BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async { Ok("ok".into()) })
    }
    fn end<'a>(
        &'a self,
        _: &'a ContactId,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async { Ok("ok".into()) })
    }
}

/// Redis, the intake, and the adapters `inhouse` (generic), `telegram`
/// and `meta`, served at `base`.
struct World {
    redis: RedisServer,
    store: Store,
    intake: RedisIntake,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn secret(value: &str) -> Secret {
    Secret::Inline(value.to_owned())
}

impl World {
    /// Replies of the generic adapter go to `reply_url`.
    async fn start(reply_url: Option<String>) -> World {
        let redis = RedisServer::start();
        let store = Store::new(StoreConfig::local(redis.url(), 1)).expect("store");
        let intake = RedisIntake::new(
            store.clone(),
            IntakeSettings {
                dedupe_window: Duration::from_secs(3600),
                limits: Default::default(),
            },
        );
        let shutdown = CancellationToken::new();
        let configs: Vec<Box<dyn ChannelConfig>> = vec![
            Box::new(GenericConfig {
                name: "inhouse".into(),
                secret: secret(BRIDGE_SECRET),
                tolerance_secs: 300,
                reply_url,
                max_body_bytes: 1024 * 1024,
            }),
            Box::new(TelegramConfig {
                name: "telegram".into(),
                bot: Some("shop_bot".into()),
                bot_token: secret("7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
                secret_token: secret(TG_SECRET),
                api_url: "http://127.0.0.1:9".into(),
                max_body_bytes: 1024 * 1024,
            }),
            Box::new(MetaConfig {
                name: "meta".into(),
                app_secret: secret(APP_SECRET),
                verify_token: secret("verify-token-42"),
                graph_url: "http://127.0.0.1:9/v21.0".into(),
                max_body_bytes: 1024 * 1024,
                accounts: vec![MetaAccount {
                    name: "shop-page".into(),
                    id: PAGE.into(),
                    access_token: secret("EAAG-page-token"),
                }],
            }),
        ];
        let mut app = axum::Router::new();
        for config in configs {
            let name = config.name().to_owned();
            let ctx = ChannelContext {
                name: name.clone(),
                intake: Arc::new(intake.clone()),
                outbox: Arc::new(
                    RedisOutbox::new(store.clone(), &name, "i1", Duration::from_secs(60))
                        .expect("outbox"),
                ),
                routing: Arc::new(NoRouting),
                state: Arc::new(RedisChannelState::new(store.clone(), &name, "i1")),
                live: Arc::new(Live::new(store.clone())),
                conversations: Arc::new(Conversations::new(store.clone())),
                draining: shutdown.clone(),
                shutdown: shutdown.clone(),
            };
            let adapter = config.build(ctx).expect("adapter");
            app = app.nest(
                &format!("/channels/{name}"),
                adapter.routes().expect("routes"),
            );
            tokio::spawn(adapter.run());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        World {
            redis,
            store,
            intake,
            base,
            http: reqwest::Client::new(),
            shutdown,
        }
    }

    /// Posts a generic delivery, signed; the status and the JSON answer.
    async fn post_generic(&self, body: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(body).expect("json");
        let now = Timestamp::now().as_millis() / 1000;
        let signature = switchboard_social::generic_signature(BRIDGE_SECRET.as_bytes(), now, &body);
        let request = self
            .http
            .post(format!("{}/channels/inhouse/webhook", self.base))
            .header(GENERIC_TIMESTAMP_HEADER, now.to_string())
            .header(GENERIC_SIGNATURE_HEADER, signature)
            .body(body);
        answer(request).await
    }

    async fn post_telegram(&self, body: &Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}/channels/telegram/webhook", self.base))
            .header(TELEGRAM_TOKEN_HEADER, TG_SECRET)
            .json(body);
        answer(request).await
    }

    async fn post_meta(&self, body: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(body).expect("json");
        let mut mac =
            Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key length");
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let request = self
            .http
            .post(format!("{}/channels/meta/webhook", self.base))
            .header(META_SIGNATURE_HEADER, signature)
            .body(body);
        answer(request).await
    }

    /// What the message `id` of `scheme:customer` on `source` was stored as.
    async fn stored(
        &self,
        source: &str,
        scheme: &str,
        customer: &str,
        id: &str,
    ) -> Option<IntakeReceipt> {
        let customer = CustomerIdentity::new(scheme, customer).expect("identity");
        self.intake
            .lookup(source, &customer, id)
            .await
            .expect("lookup")
    }

    /// The conversation log of a stored message.
    async fn log(&self, receipt: &IntakeReceipt) -> Vec<LogEntry> {
        Conversations::new(self.store.clone())
            .transcript(&receipt.conversation_id, "-", 100)
            .await
            .expect("transcript")
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the webhook answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The text of a log entry.
fn text_of(entry: &LogEntry) -> String {
    let msg: Value = serde_json::from_str(&entry.msg).expect("entry json");
    msg["text"].as_str().expect("a text").to_owned()
}

fn generic_message(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "customer": {"id": "u-42"}, "text": text})
}

#[tokio::test]
async fn generic_events_the_intake_refuses_are_refused_with_422() {
    let world = World::start(None).await;

    // A text over the intake's limit.
    let long = "a".repeat(70_000);
    let (status, body) = world
        .post_generic(&json!({"events": [generic_message("m-long", &long)]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_event");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.starts_with("events[0]: text is longer than 65536 bytes"),
        "{message}"
    );
    assert!(
        world
            .stored("inhouse", "generic", "u-42", "m-long")
            .await
            .is_none()
    );

    // An account over 320 bytes, after an event that is fine: that one is
    // stored, the answer names the other.
    let mut wide = generic_message("m-wide", "Hello");
    wide["account"] = json!("s".repeat(400));
    let (status, body) = world
        .post_generic(&json!({"events": [generic_message("m-ok", "Hi"), wide]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_event");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.starts_with("events[1]: account is longer than 320 bytes"),
        "{message}"
    );
    assert!(
        world
            .stored("inhouse", "generic", "u-42", "m-ok")
            .await
            .is_some()
    );
    assert!(
        world
            .stored("inhouse", "generic", "u-42", "m-wide")
            .await
            .is_none()
    );

    // What fits is taken.
    let fits = "b".repeat(MAX_TEXT);
    let (status, body) = world
        .post_generic(&json!({"events": [generic_message("m-fits", &fits)]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let receipt = world
        .stored("inhouse", "generic", "u-42", "m-fits")
        .await
        .expect("stored");
    let log = world.log(&receipt).await;
    assert_eq!(log.last().map(text_of), Some(fits));
}

#[tokio::test]
async fn provider_texts_over_the_limit_are_cut_to_fit_and_stored() {
    let world = World::start(None).await;
    let long = "ї".repeat(40_000); // 80,000 bytes

    // Telegram: a message, then an edit of it.
    let update = json!({"update_id": 702000001, "message": {
        "message_id": 1365, "from": {"id": 5550001, "is_bot": false, "first_name": "Оксана"},
        "chat": {"id": 5550001, "first_name": "Оксана", "type": "private"},
        "date": 1795341606, "text": long}});
    let (status, body) = world.post_telegram(&update).await;
    assert_eq!(status, 200, "{body}");
    let receipt = world
        .stored("telegram", "telegram", "5550001", "5550001:1365")
        .await
        .expect("the long Telegram message is stored");
    let edit = json!({"update_id": 702000002, "edited_message": {
        "message_id": 1365, "from": {"id": 5550001, "is_bot": false, "first_name": "Оксана"},
        "chat": {"id": 5550001, "type": "private"},
        "date": 1795341606, "edit_date": 1795341700, "text": format!("{long}!")}});
    let (status, body) = world.post_telegram(&edit).await;
    assert_eq!(status, 200, "{body}");
    let log = world.log(&receipt).await;
    let dirs: Vec<&str> = log.iter().map(|e| e.dir.as_str()).collect();
    assert_eq!(dirs, ["in", "edit"]);
    for entry in &log {
        let text = text_of(entry);
        assert!(text.len() <= MAX_TEXT, "{}", text.len());
        assert!(text.len() > MAX_TEXT - 16, "{}", text.len());
        assert!(text.starts_with("їїї"));
        assert!(text.ends_with("ї\n[…]"), "{}", entry.dir);
    }

    // Messenger.
    let delivery = json!({"object": "page", "entry": [{"id": PAGE, "time": 1795341600000u64,
        "messaging": [{"sender": {"id": "6001002003"}, "recipient": {"id": PAGE},
            "timestamp": 1795341600000u64, "message": {"mid": "m_long-1", "text": long}}]}]});
    let (status, body) = world.post_meta(&delivery).await;
    assert_eq!(status, 200, "{body}");
    let receipt = world
        .stored("meta", "messenger", "6001002003", "m_long-1")
        .await
        .expect("the long Messenger message is stored");
    let log = world.log(&receipt).await;
    let text = log.last().map(text_of).expect("an entry");
    assert!(text.len() <= MAX_TEXT && text.ends_with("ї\n[…]"));
}

#[tokio::test]
async fn generic_edits_without_a_time_are_each_kept_once() {
    let world = World::start(None).await;
    let edit = |text: &str| json!({"events": [{"type": "edit", "id": "m-1", "customer": {"id": "u-42"}, "text": text}]});
    let deliveries = [
        json!({"events": [generic_message("m-1", "Hello")]}),
        edit("Hello again"),
        edit("Hello again and again"),
        // A retried delivery of the second edit.
        edit("Hello again and again"),
    ];
    for delivery in &deliveries {
        let (status, body) = world.post_generic(delivery).await;
        assert_eq!(status, 200, "{body}");
    }
    let receipt = world
        .stored("inhouse", "generic", "u-42", "m-1")
        .await
        .expect("stored");
    let log = world.log(&receipt).await;
    let entries: Vec<(&str, String)> = log.iter().map(|e| (e.dir.as_str(), text_of(e))).collect();
    assert_eq!(
        entries,
        [
            ("in", "Hello".to_owned()),
            ("edit", "Hello again".to_owned()),
            ("edit", "Hello again and again".to_owned()),
        ]
    );
}

#[tokio::test]
async fn generic_replies_go_out_for_the_account_the_customer_wrote_to() {
    let bridge = StandIn::start(Kind::Generic).await;
    let world = World::start(Some(format!("{}/replies", bridge.base))).await;
    let mut message = generic_message("m-1", "Where is my order?");
    message["account"] = json!("shop-1");
    let (status, body) = world.post_generic(&json!({"events": [message]})).await;
    assert_eq!(status, 200, "{body}");
    let receipt = world
        .stored("inhouse", "generic", "u-42", "m-1")
        .await
        .expect("stored");

    // The agent's reply, as the agent API writes it: from the contact's
    // address, the account.
    let reply = OutboundMessage {
        message_id: MessageId::new(),
        contact_id: receipt.contact_id,
        conversation_id: receipt.conversation_id,
        channel: ChannelKind::Social,
        source: "inhouse".into(),
        from_address: "shop-1".into(),
        to: CustomerIdentity::new("generic", "u-42").expect("identity"),
        subject: None,
        text: "It left today.".into(),
        in_reply_to: Some("m-1".into()),
        references: Vec::new(),
        created_at: Timestamp::now(),
        automatic: false,
    };
    RedisOutbox::enqueue_to(&world.store, &reply)
        .await
        .expect("enqueue");

    let mut conn = redis::Client::open(world.redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let deadline = Instant::now() + Duration::from_secs(30);
    let state: Value = loop {
        let state: Option<String> = conn
            .hget(
                world
                    .store
                    .keys()
                    .conversation_delivery(&reply.conversation_id),
                reply.message_id.to_string(),
            )
            .await
            .expect("hget");
        if let Some(state) = state {
            break serde_json::from_str(&state).expect("delivery state json");
        }
        assert!(
            Instant::now() < deadline,
            "the reply was not settled in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state["outcome"]["state"], "delivered", "{state}");
    let seen = bridge.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["account"], "shop-1");
    assert_eq!(seen[0].body["text"], "It left today.");
}

/// A stranger's large body without the token or signature header is
/// refused for that (401) before it is read: the Telegram token is a
/// header, and a delivery without any signature header cannot be ours.
/// Each adapter used to read up to `max_body_bytes` first (waiting for the
/// whole body here, then 413).
#[tokio::test]
async fn a_body_without_credentials_is_refused_unread() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::start(None).await;
    for (path, headers) in [
        ("telegram", vec![]),
        (
            "telegram",
            vec![(TELEGRAM_TOKEN_HEADER, "wrong-token-0123")],
        ),
        ("meta", vec![]),
        ("inhouse", vec![(GENERIC_TIMESTAMP_HEADER, "1795341600")]),
    ] {
        let addr = world.base.trim_start_matches("http://");
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "POST /channels/{path}/webhook HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            2 * 1024 * 1024
        );
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await.expect("head");
        socket
            .write_all(&[b' '; 1024])
            .await
            .expect("a first kilobyte");
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path} {headers:?}: no answer before the body"))
            .expect("read");
        assert_eq!(&answer, b"HTTP/1.1 401", "{path} {headers:?}");
    }
}

/// A Meta delivery about an object the channel does not read (the app
/// subscribed to `user` changes too) is acknowledged and counted: refused
/// with 400, Meta retried it for hours and may turn the app's webhook
/// off, messages included. One it does read still stores its messages.
#[tokio::test]
async fn a_meta_object_the_channel_does_not_read_is_acknowledged() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::start(None).await;
    let other = json!({"object": "user", "entry": [{"id": "42", "time": 1795341600u64,
        "changes": [{"field": "email", "value": "changed"}]}]});
    let (status, body) = world.post_meta(&other).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        counters
            .get("switchboard_social_items_total{kind=ignored,outcome=unknown_object,source=meta}"),
        1,
        "{}",
        counters.dump()
    );
    let delivery = json!({"object": "page", "entry": [{"id": PAGE, "time": 1795341600000u64,
        "messaging": [{"sender": {"id": "6001002004"}, "recipient": {"id": PAGE},
            "timestamp": 1795341600000u64, "message": {"mid": "m_after-object", "text": "hi"}}]}]});
    let (status, body) = world.post_meta(&delivery).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        world
            .stored("meta", "messenger", "6001002004", "m_after-object")
            .await
            .is_some()
    );
}

/// A receipt for a page (or number) this channel is not configured for is
/// skipped and counted: another app's statuses on the same webhook are not
/// about our replies, even when an id matches one. It was applied.
#[tokio::test]
async fn a_receipt_for_an_account_that_is_not_configured_is_skipped() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::start(None).await;
    let receipt = |page: &str| {
        json!({"object": "page", "entry": [{"id": page, "time": 1795341600000u64,
            "messaging": [{"sender": {"id": "6001002004"}, "recipient": {"id": page},
                "timestamp": 1795341600000u64,
                "delivery": {"mids": ["m_OUR-1"], "watermark": 1795341600000u64}}]}]})
    };
    let (status, body) = world.post_meta(&receipt("999")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        counters.get(
            "switchboard_social_items_total{kind=receipt,outcome=unknown_account,source=meta}"
        ),
        1,
        "{}",
        counters.dump()
    );
    // The configured page's receipt goes on to the intake.
    let (status, body) = world.post_meta(&receipt(PAGE)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        counters.get(
            "switchboard_social_items_total{kind=receipt,outcome=unknown_account,source=meta}"
        ),
        1,
        "{}",
        counters.dump()
    );
}

/// Printed, a generic bridge's configuration and its sender show neither
/// the secret nor a token in the reply URL (a bridge may take one there).
#[test]
fn printed_configurations_hide_the_reply_urls_token() {
    let config = GenericConfig {
        name: "inhouse".into(),
        secret: secret(BRIDGE_SECRET),
        tolerance_secs: 300,
        reply_url: Some("https://bridge:pa55@bridge.example/replies?token=s3cret12".into()),
        max_body_bytes: 1024 * 1024,
    };
    let send = switchboard_social::send::SendConfig {
        url: config.reply_url.clone(),
        ..switchboard_social::send::SendConfig::new(
            switchboard_social::Platform::Generic,
            "",
            secret(BRIDGE_SECRET).resolve().expect("an inline secret"),
        )
    };
    for shown in [format!("{config:?}"), format!("{send:?}")] {
        for hidden in [BRIDGE_SECRET, "pa55", "s3cret12"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("bridge.example/replies"), "{shown}");
    }
}
