//! The chat channel end to end: a real redis-server, the real intake and
//! outbox, the adapter's routes served by axum on a free port, and real
//! websocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_channel::{ChannelConfig, ChannelContext, RouteView, Routing};
use switchboard_chat::ChatConfig;
use switchboard_core::{ContactId, IntakeError};
use switchboard_store::{
    Conversations, IntakeSettings, Live, RedisChannelState, RedisIntake, RedisOutbox, Store,
    StoreConfig,
};
use switchboard_testkit::RedisServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

const ORIGIN: &str = "https://shop.example";

/// Routing as the test sets it.
#[derive(Debug, Default)]
struct FakeRouting {
    views: Mutex<HashMap<ContactId, RouteView>>,
    /// No agent could take a chat now.
    nobody: std::sync::atomic::AtomicBool,
    /// Agents' display names, by id.
    names: Mutex<HashMap<String, String>>,
}

impl FakeRouting {
    fn set(&self, contact: ContactId, state: &str, agent: Option<(&str, &str)>) {
        self.views.lock().unwrap().insert(
            contact,
            RouteView {
                state: state.into(),
                agent: agent.map(|a| a.0.to_owned()),
                agent_name: agent.map(|a| a.1.to_owned()),
                queue: "default".into(),
                source: "widget".into(),
                offer_until: None,
                stamp: None,
            },
        );
    }
}

impl Routing for FakeRouting {
    fn agents_available(
        &self,
        _: switchboard_core::ChannelKind,
    ) -> BoxFuture<'_, Result<bool, IntakeError>> {
        let nobody = self.nobody.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(!nobody) })
    }
    fn route<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<RouteView>, IntakeError>> {
        let view = self.views.lock().unwrap().get(contact).cloned();
        Box::pin(async move { Ok(view) })
    }
    fn answer<'a>(
        &'a self,
        _: &'a ContactId,
        _: &'a str,
        _: bool,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async { Ok("ok".into()) })
    }
    fn end<'a>(
        &'a self,
        _: &'a ContactId,
        _: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        Box::pin(async { Ok("ok".into()) })
    }
    fn queue_position<'a>(
        &'a self,
        _: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<u32>, IntakeError>> {
        Box::pin(async { Ok(Some(3)) })
    }
    fn agent_name<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>> {
        let name = self.names.lock().unwrap().get(agent).cloned();
        Box::pin(async move { Ok(name) })
    }
}

struct World {
    redis: RedisServer,
    store: Store,
    routing: Arc<FakeRouting>,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn world() -> World {
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    World {
        redis,
        store,
        routing: Arc::new(FakeRouting::default()),
        dir: tempfile::tempdir().unwrap(),
        shutdown: CancellationToken::new(),
    }
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The offline form's table; `instance_without_offline` leaves it out.
const OFFLINE: &str = r#"
        [offline]
        email_channel = "mail"
        address = "help@support.example"
"#;

fn config(dir: &std::path::Path, extra: &str, offline: &str) -> ChatConfig {
    toml::from_str(&format!(
        r#"
        name = "website"
        session_secret = "{SECRET}"
        uploads_dir = "{}"
        max_frame_bytes = 4096
        {extra}
        [[widgets]]
        id = "shop"
        origins = ["{ORIGIN}"]
        {offline}
        "#,
        dir.display()
    ))
    .unwrap()
}

impl World {
    /// One instance of the adapter, served on a free port.
    async fn instance(&self, instance: &str, extra: &str) -> SocketAddr {
        self.instance_with(instance, extra, OFFLINE).await
    }

    /// An instance whose channel has no offline form.
    async fn instance_without_offline(&self, instance: &str, extra: &str) -> SocketAddr {
        self.instance_with(instance, extra, "").await
    }

    async fn instance_with(&self, instance: &str, extra: &str, offline: &str) -> SocketAddr {
        let store = &self.store;
        let ctx = ChannelContext {
            name: "website".into(),
            intake: Arc::new(RedisIntake::new(
                store.clone(),
                IntakeSettings {
                    dedupe_window: Duration::from_secs(3600),
                    limits: Default::default(),
                },
            )),
            outbox: Arc::new(
                RedisOutbox::new(store.clone(), "website", instance, Duration::from_secs(60))
                    .unwrap(),
            ),
            routing: self.routing.clone(),
            state: Arc::new(RedisChannelState::new(store.clone(), "website", instance)),
            live: Arc::new(Live::new(store.clone())),
            conversations: Arc::new(Conversations::new(store.clone())),
            draining: self.shutdown.clone(),
            shutdown: self.shutdown.clone(),
        };
        let adapter = config(self.dir.path(), extra, offline).build(ctx).unwrap();
        let routes = adapter.routes().unwrap();
        // The hub's doorbell subscription: waited for below, so that
        // nothing published before it lands is missed (pub/sub is lossy).
        let channel = store.keys().live();
        let mut conn = redis::Client::open(store.config().url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let subscribers = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            let channel = channel.clone();
            async move {
                let (_, n): (String, u64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                n
            }
        };
        let before = subscribers(&mut conn).await;
        tokio::spawn(adapter.run());
        let app = axum::Router::new().nest("/channels/website", routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        });
        let started = std::time::Instant::now();
        while subscribers(&mut conn).await <= before {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the hub did not subscribe"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        addr
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, origin: &str) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}/channels/website/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame (pings skipped); panics after 5 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .expect("no socket error");
        if let Message::Text(text) = next {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// The next frame of type `kind`, skipping others.
async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let frame = recv(ws).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// Frames of type `kind` arriving within `wait`.
async fn collect(ws: &mut Ws, kind: &str, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["type"] == kind {
                out.push(v);
            }
        }
    }
    out
}

async fn hello(ws: &mut Ws, token: Option<&str>, after: Option<&str>) -> Value {
    let mut frame = json!({"type": "hello", "v": 1, "widget": "shop", "locale": "uk"});
    if let Some(t) = token {
        frame["token"] = json!(t);
    }
    if let Some(a) = after {
        frame["after"] = json!(a);
    }
    send(ws, frame).await;
    let welcome = recv(ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    welcome
}

async fn message(ws: &mut Ws, client_id: &str, text: &str) -> Value {
    send(
        ws,
        json!({"type": "message", "client_id": client_id, "text": text}),
    )
    .await;
    recv_type(ws, "ack").await
}

/// The code of the close frame the server sends within 5 s (other frames
/// skipped); `None` when the connection broke without one.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed within 5 s")
}

async fn log_len(store: &Store, conversation: &str) -> usize {
    let conv = conversation.parse().unwrap();
    Conversations::new(store.clone())
        .transcript(&conv, "-", 1000)
        .await
        .unwrap()
        .len()
}

/// An agent's reply, as the agent API makes it.
async fn reply(store: &Store, contact: &str, text: &str) -> String {
    let conversations = Conversations::new(store.clone());
    let message = conversations
        .outbound_to(&contact.parse().unwrap(), text)
        .await
        .unwrap();
    conversations.reply(&message, "olena").await.unwrap()
}

async fn contact_of(store: &Store, conversation: &str) -> String {
    let mut conn = redis::Client::open(store.config().url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let conv: switchboard_core::ConversationId = conversation.parse().unwrap();
    redis::cmd("HGET")
        .arg(store.keys().conversation(&conv))
        .arg("contact")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acknowledged_once_stored_and_a_resend_is_not_doubled() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    assert!(welcome["token"].as_str().unwrap().contains('.'));
    assert_eq!(welcome["conversation"], Value::Null);
    assert_eq!(welcome["form"], "prechat");
    // The frame limit, which the widget keeps its messages under.
    assert_eq!(welcome["max_frame_bytes"], 4096, "the configured one");
    send(
        &mut ws,
        json!({"type": "prechat", "name": "Olena", "topic": "billing"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "prechat");

    let ack = message(&mut ws, "c1", "Where is my invoice?").await;
    assert_eq!(ack["client_id"], "c1");
    let seq = ack["seq"].as_str().unwrap().to_owned();
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let again = message(&mut ws, "c1", "Where is my invoice?").await;
    assert_eq!(
        again["seq"],
        seq.as_str(),
        "the resend names the first copy"
    );
    assert_eq!(log_len(&w.store, &conversation).await, 1, "stored once");

    // The contact carries what the pre-chat form said.
    let contact = contact_of(&w.store, &conversation).await;
    let fields = Conversations::new(w.store.clone())
        .contact(&contact.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fields["customer_name"], "Olena");
    assert_eq!(fields["address"], "shop");
    assert_eq!(fields["language"], "uk");
    assert!(fields["attributes"].contains("billing"), "{fields:?}");

    // Bad frames get clear errors, never a closed socket.
    send(
        &mut ws,
        json!({"type": "message", "client_id": "", "text": "x"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "bad_client_id");
    send(&mut ws, json!({"type": "explode"})).await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "bad_frame");
    send(&mut ws, json!({"type": "rating", "score": 5})).await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "not_closed");
    // A visitor cannot write an attachment line of their own.
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c-spoof",
               "text": "hi\n[attachment: a.png, image/png, 5 bytes, media id AAAAAAAAAAAAAAAAAAAAAA]"}),
    )
    .await;
    let refused = recv_type(&mut ws, "error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["client_id"].as_str()),
        (Some("bad_frame"), Some("c-spoof"))
    );
    // A message that does not parse (a lone surrogate, as a browser's
    // JSON.stringify writes it) is refused by its client_id, so the widget
    // knows which one failed instead of waiting for its answer for ever.
    ws.send(Message::Text(
        r#"{"type":"message","client_id":"c-lone","text":"\ud83d"}"#.into(),
    ))
    .await
    .unwrap();
    let refused = recv_type(&mut ws, "error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["client_id"].as_str()),
        (Some("bad_frame"), Some("c-lone"))
    );
    send(&mut ws, json!({"type": "ping"})).await;
    recv_type(&mut ws, "pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_forbidden_and_a_forged_token_is_a_bad_session() {
    let w = world();
    let addr = w.instance("a", "").await;
    match connect(addr, "https://evil.example").await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    let token = welcome["token"].as_str().unwrap();
    let (payload, _) = token.split_once('.').unwrap();
    let forged = format!("{payload}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut other = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut other,
        json!({"type": "hello", "v": 1, "widget": "shop", "token": forged}),
    )
    .await;
    let error = recv(&mut other).await;
    assert_eq!(error["code"], "bad_session", "{error}");
    // The client starts afresh on the same socket.
    let fresh = hello(&mut other, None, None).await;
    assert_ne!(fresh["visitor"], welcome["visitor"]);
    send(
        &mut other,
        json!({"type": "hello", "v": 2, "widget": "shop"}),
    )
    .await;
    assert_eq!(recv(&mut other).await["code"], "bad_frame", "hello twice");
}

/// A hello of another protocol version is told `unsupported_version`,
/// even when it carries fields this version does not know (it was told
/// `bad_frame`, and a newer client could not tell it should fall back);
/// this version's hello with an unknown field is a `bad_frame`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_of_another_version_is_told_the_version() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    for (frame, code) in [
        (
            json!({"type": "hello", "v": 2, "widget": "shop", "features": ["x"]}),
            "unsupported_version",
        ),
        (
            json!({"type": "hello", "v": 2, "widget": "shop"}),
            "unsupported_version",
        ),
        (
            json!({"type": "hello", "v": 1, "widget": "shop", "features": ["x"]}),
            "bad_frame",
        ),
    ] {
        send(&mut ws, frame.clone()).await;
        let error = recv(&mut ws).await;
        assert_eq!(error["code"], code, "{frame} → {error}");
    }
    hello(&mut ws, None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_closes_the_socket() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let big = "x".repeat(8000);
    let _ = ws
        .send(Message::Text(
            json!({"type": "message", "client_id": "c", "text": big})
                .to_string()
                .into(),
        ))
        .await;
    // A close frame with 1009 (docs/widget-protocol.md), not a dropped
    // connection (which is what a crash looks like).
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

/// A text frame that is not UTF-8 closes the socket with 1007 and is
/// counted (it ended silently as "gone" before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007_and_counted() {
    use tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    counted::start();
    let before = counted::get("switchboard_chat_rejected_total", "reason=bad_utf8");
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    ws.send(Message::Frame(Frame::message(
        vec![0xff, 0xfe, 0x7b],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    let closed = close_code(&mut ws).await;
    assert_eq!(closed, Some(1007));
    let after = counted::get("switchboard_chat_rejected_total", "reason=bad_utf8");
    assert_eq!(after, before + 1);
}

/// A frame that breaks the websocket protocol (a reserved bit set) closes
/// the socket with 1002 and is counted (it ended silently as "gone").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_breaking_the_protocol_is_closed_with_1002_and_counted() {
    use tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    counted::start();
    let before = counted::get("switchboard_chat_rejected_total", "reason=protocol");
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let mut frame = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    ws.send(Message::Frame(frame)).await.unwrap();
    let closed = close_code(&mut ws).await;
    assert_eq!(closed, Some(1002));
    let after = counted::get("switchboard_chat_rejected_total", "reason=protocol");
    assert_eq!(after, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_gets_exactly_the_missed_replies_in_order() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    let token = welcome["token"].as_str().unwrap().to_owned();
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let seen = ack["seq"].as_str().unwrap().to_owned();
    ws.close(None).await.unwrap();
    drop(ws);

    let contact = contact_of(&w.store, &conversation).await;
    let r1 = reply(&w.store, &contact, "first").await;
    let r2 = reply(&w.store, &contact, "second").await;

    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, Some(&token), Some(&seen)).await;
    assert_eq!(welcome["conversation"], conversation.as_str());
    assert_eq!(welcome["form"], Value::Null);
    let messages = collect(&mut ws, "message", Duration::from_millis(1500)).await;
    let got: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["seq"].as_str().unwrap(),
                m["from"].as_str().unwrap(),
                m["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (r1.as_str(), "agent", "first"),
            (r2.as_str(), "agent", "second")
        ]
    );

    // The chat outbox settles replies once they are in the log.
    let conv = conversation.parse().unwrap();
    let states = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let states = Conversations::new(w.store.clone())
                .reply_states(&conv)
                .await
                .unwrap();
            if states.values().filter(|(d, _)| d.is_some()).count() == 2 {
                return states;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("both replies settled");
    for (delivery, _) in states.values() {
        assert!(delivery.as_deref().unwrap().contains("delivered"));
    }
}

/// The conversation closed while the visitor was away (the agent replied,
/// then closed): the reload still gets the reply and the close, from the
/// conversation the widget names, and only when it is the visitor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_closed_while_away_still_delivers_its_last_replies() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut ws, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let seen = ack["seq"].as_str().unwrap().to_owned();
    ws.close(None).await.unwrap();
    drop(ws);

    let contact = contact_of(&w.store, &conversation).await;
    let answer = reply(&w.store, &contact, "It ships today.").await;
    w.routing.set(contact.parse().unwrap(), "closed", None);
    Conversations::new(w.store.clone())
        .end(&contact.parse().unwrap())
        .await
        .unwrap();

    let mut ws = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "v": 1, "widget": "shop", "token": token,
               "after": seen, "conversation": conversation}),
    )
    .await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["conversation"], conversation.as_str(), "{welcome}");
    let got = recv_type(&mut ws, "message").await;
    assert_eq!(
        (got["seq"].as_str(), got["text"].as_str()),
        (Some(answer.as_str()), Some("It ships today."))
    );
    let closed = recv_type(&mut ws, "closed").await;
    assert_eq!(closed["conversation"], conversation.as_str());

    // Another visitor naming that conversation gets nothing of it.
    let mut other = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut other,
        json!({"type": "hello", "v": 1, "widget": "shop",
               "after": seen, "conversation": conversation}),
    )
    .await;
    let welcome = recv(&mut other).await;
    assert_eq!(welcome["conversation"], Value::Null, "{welcome}");
    assert!(
        collect(&mut other, "message", Duration::from_millis(800))
            .await
            .is_empty()
    );
}

/// A chat closed in one tab, and the visitor going on in a second: (the
/// first tab, the second, the session token, the closed conversation, the
/// ack of the second tab's message, which opened a new conversation).
async fn closed_then_new(w: &World, addr: SocketAddr) -> (Ws, Ws, String, String, Value) {
    let (tab1, token, first) = closed_chat(w, addr).await;
    let mut tab2 = connect(addr, ORIGIN).await.unwrap();
    hello(&mut tab2, Some(&token), None).await;
    let ack = message(&mut tab2, "c2", "one more thing").await;
    assert_ne!(ack["conversation"].as_str(), Some(first.as_str()));
    (tab1, tab2, token, first, ack)
}

/// A message resent from a tab whose first copy went into an earlier
/// conversation, closed since, leaves the visitor's other tabs on the
/// conversation open now: they get its replies. The resend moved every tab
/// of the visitor back to the closed conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_into_a_closed_conversation_leaves_other_tabs_on_the_open_one() {
    let w = world();
    let addr = w.instance("a", "").await;
    let (_tab1, mut tab2, token, first, ack) = closed_then_new(&w, addr).await;
    let open = ack["conversation"].as_str().unwrap().to_owned();

    // A third tab sends the first message again (its answer was lost).
    let mut tab3 = connect(addr, ORIGIN).await.unwrap();
    hello(&mut tab3, Some(&token), None).await;
    let again = message(&mut tab3, "c1", "hello").await;
    assert_eq!(again["conversation"], first.as_str(), "stored there once");
    // The other tab is not shown the closed conversation again.
    let moved = collect(&mut tab2, "closed", Duration::from_millis(1500)).await;
    assert!(moved.is_empty(), "{moved:?}");

    reply_arrives(&w, &mut tab2, &open, "Of course").await;
}

/// A tab joined to a conversation that another tab opened learns its id
/// from the messages: no welcome or ack of its own names it, and without
/// it the widget's next hello could not resume that conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_joined_by_another_learns_the_conversation_from_its_messages() {
    let w = world();
    let addr = w.instance("a", "").await;
    let (mut tab1, _tab2, _token, _first, ack) = closed_then_new(&w, addr).await;
    let got = loop {
        let m = recv_type(&mut tab1, "message").await;
        if m["text"] == "one more thing" {
            break m;
        }
    };
    assert_eq!(got["conversation"], ack["conversation"], "{got}");
}

/// The agent replies `text` to the contact of `conversation`; the reply
/// arrives on `ws` as the agent's message, with its seq.
async fn reply_arrives(w: &World, ws: &mut Ws, conversation: &str, text: &str) {
    let contact = contact_of(&w.store, conversation).await;
    let seq = reply(&w.store, &contact, text).await;
    let got = loop {
        let m = recv_type(ws, "message").await;
        if m["from"] == "agent" {
            break m;
        }
    };
    assert_eq!(
        (got["seq"].as_str(), got["text"].as_str()),
        (Some(seq.as_str()), Some(text))
    );
}

/// A resume whose `after` is a place in another conversation (the one the
/// tab showed closed while the visitor went on in another tab) gets every
/// message of the conversation open now: the cursor of one conversation
/// is not applied to another's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_in_another_conversation_gets_all_of_the_open_one() {
    let w = world();
    let addr = w.instance("a", "").await;
    let (_tab1, _tab2, token, first, ack) = closed_then_new(&w, addr).await;
    let open = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &open).await;
    let answer = reply(&w.store, &contact, "Of course").await;

    // The first tab comes back with a cursor far past both logs' entries,
    // naming the closed conversation.
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "v": 1, "widget": "shop", "token": token,
               "after": "99999999999999-0", "conversation": first}),
    )
    .await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["conversation"], open.as_str(), "{welcome}");
    let got: Vec<(String, String)> = collect(&mut ws, "message", Duration::from_millis(1500))
        .await
        .iter()
        .map(|m| {
            (
                m["seq"].as_str().unwrap_or_default().to_owned(),
                m["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                ack["seq"].as_str().unwrap().to_owned(),
                "one more thing".to_owned()
            ),
            (answer, "Of course".to_owned()),
        ]
    );
}

/// A resume with a cursor but no conversation to resume (none open, none
/// named): the conversation the visitor then opens is read from its start,
/// so the agent's reply arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_without_a_conversation_is_not_applied_to_the_next_one() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "v": 1, "widget": "shop", "after": "99999999999999-0"}),
    )
    .await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["conversation"], Value::Null, "{welcome}");
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    reply_arrives(&w, &mut ws, &conversation, "Hello!").await;
}

/// A reply whose frame would not fit the socket's write buffer (control
/// characters escape to six bytes each) goes out cut, and what follows
/// still arrives: it used to end the socket, and every resume stopped at
/// it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_too_large_for_a_frame_goes_out_cut_and_the_chat_goes_on() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &conversation).await;
    let huge = "\u{1}".repeat(200_000);
    reply(&w.store, &contact, &huge).await;
    reply(&w.store, &contact, "after it").await;
    let first = recv_type(&mut ws, "message").await;
    let text = first["text"].as_str().unwrap();
    assert!(
        text.ends_with("[…]") && text.len() < huge.len(),
        "{}",
        text.len()
    );
    let second = recv_type(&mut ws, "message").await;
    assert_eq!(second["text"], "after it");
}

/// A reply from an agent who no longer holds the contact (transferred
/// on, or back in the queue) shows the agent's name, not their id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_an_agent_no_longer_on_the_contact_shows_their_name() {
    let w = world();
    w.routing
        .names
        .lock()
        .unwrap()
        .insert("olena".into(), "Olena K.".into());
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut ws, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &conversation).await;
    w.routing.set(contact.parse().unwrap(), "waiting", None);
    reply(&w.store, &contact, "I'll pass you on.").await;
    ws.close(None).await.unwrap();
    drop(ws);
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, Some(&token), None).await;
    let messages = collect(&mut ws, "message", Duration::from_millis(1500)).await;
    let theirs: Vec<&str> = messages
        .iter()
        .filter(|m| m["from"] == "agent")
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(theirs, ["Olena K."]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_of_one_visitor_both_get_the_reply() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut tab1 = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut tab1, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tab2 = connect(addr, ORIGIN).await.unwrap();
    hello(&mut tab2, Some(&token), None).await;

    let ack = message(&mut tab1, "c1", "from tab one").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    // The other tab sees the visitor's own message, with its client id.
    let own = recv_type(&mut tab2, "message").await;
    assert_eq!(own["from"], "visitor");
    assert_eq!(own["text"], "from tab one");
    assert_eq!(own["client_id"], "c1");

    let contact = contact_of(&w.store, &conversation).await;
    w.routing.set(
        contact.parse().unwrap(),
        "assigned",
        Some(("olena", "Olena")),
    );
    let joined = recv_type(&mut tab2, "agent").await;
    assert_eq!(
        (joined["state"].as_str(), joined["name"].as_str()),
        (Some("joined"), Some("Olena"))
    );

    let seq = reply(&w.store, &contact, "Hi, Olena here").await;
    for tab in [&mut tab1, &mut tab2] {
        let m = loop {
            let m = recv_type(tab, "message").await;
            if m["from"] == "agent" {
                break m;
            }
        };
        assert_eq!(m["seq"], seq.as_str());
        assert_eq!(m["text"], "Hi, Olena here");
        assert_eq!(m["name"], "Olena");
    }

    // Closed: a rating is taken and logged.
    w.routing.set(contact.parse().unwrap(), "closed", None);
    send(&mut tab1, json!({"type": "rating", "score": 6})).await;
    assert_eq!(recv_type(&mut tab1, "error").await["code"], "bad_rating");
    send(
        &mut tab1,
        json!({"type": "rating", "score": 5, "comment": "quick"}),
    )
    .await;
    let result = recv_type(&mut tab1, "result").await;
    assert_eq!(
        (result["of"].as_str(), result["ok"].as_bool()),
        (Some("rating"), Some(true))
    );
    let conv = conversation.parse().unwrap();
    let log = Conversations::new(w.store.clone())
        .transcript(&conv, "-", 100)
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|e| e.dir == "rating" && e.msg.contains("quick"))
    );
}

/// A visitor's chat on a new instance of `w`, assigned to Olena (the
/// visitor was told she joined): the socket, the conversation and its
/// contact.
async fn assigned_chat(w: &World) -> (Ws, String, String) {
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let ack = message(&mut ws, "c1", "where is my order?").await;
    let first = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &first).await;
    w.routing.set(
        contact.parse().unwrap(),
        "assigned",
        Some(("olena", "Olena")),
    );
    let joined = recv_type(&mut ws, "agent").await;
    assert_eq!(joined["state"], "joined");
    (ws, first, contact)
}

/// A chat transferred back to a queue: the visitor is told the agent left
/// and their place in the queue again, even the place they had before the
/// agent joined (the widget cleared its queue line at the join).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_back_in_its_queue_tells_its_position_again() {
    let w = world();
    let (mut ws, _, contact) = assigned_chat(&w).await;
    w.routing.set(contact.parse().unwrap(), "waiting", None);
    // The session looks at routing every 10 s while an agent has the chat.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let f: Value = serde_json::from_str(text.as_str()).unwrap();
            match f["type"].as_str() {
                Some("agent") => seen.push(format!("{} {}", f["state"], f["name"])),
                Some("queue") => {
                    seen.push(format!("queue {}", f["position"]));
                    break;
                }
                _ => {}
            }
        }
    }
    assert_eq!(seen, ["\"left\" \"Olena\"", "queue 3"]);
}

/// The visitor writes right after the agent closed, before the session's
/// routing poll saw the close: the message opens a new conversation, and
/// the visitor still gets the agent's last reply and the `closed` frame of
/// the first (with it the rating form), before the new conversation's
/// ack. The switch to the new conversation skipped both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_right_after_the_close_still_gets_the_close() {
    let w = world();
    let (mut ws, first, contact) = assigned_chat(&w).await;
    // The agent's last words and the close, then at once the visitor's
    // next message.
    reply(&w.store, &contact, "Anything else?").await;
    w.routing.set(contact.parse().unwrap(), "closed", None);
    Conversations::new(w.store.clone())
        .end(&contact.parse().unwrap())
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c2", "text": "no, thanks"}),
    )
    .await;
    let mut seen = Vec::new();
    let second = loop {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("ack") => break f["conversation"].as_str().unwrap().to_owned(),
            Some("closed") => {
                assert_eq!(f["conversation"], first.as_str(), "{f}");
                seen.push("closed".to_owned());
            }
            Some("message") if f["from"] == "agent" => {
                seen.push(f["text"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    };
    assert_ne!(second, first);
    assert_eq!(seen, ["Anything else?", "closed"]);
}

/// The same while routing does not yet say closed (a close ends the
/// conversation first, routing a moment later): the old conversation is
/// still closed for the visitor, not left open under the agent's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_between_the_two_steps_of_a_close_still_gets_the_close() {
    let w = world();
    let (mut ws, first, contact) = assigned_chat(&w).await;
    // The conversation ended; routing still says assigned.
    Conversations::new(w.store.clone())
        .end(&contact.parse().unwrap())
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c2", "text": "hello?"}),
    )
    .await;
    let closed = recv_type(&mut ws, "closed").await;
    assert_eq!(closed["conversation"], first.as_str());
    let ack = recv_type(&mut ws, "ack").await;
    assert_ne!(ack["conversation"], first.as_str());
}

/// The rating entries of a conversation's transcript.
async fn ratings(store: &Store, conversation: &str) -> Vec<String> {
    Conversations::new(store.clone())
        .transcript(&conversation.parse().unwrap(), "-", 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.dir == "rating")
        .map(|e| e.msg)
        .collect()
}

async fn rate(ws: &mut Ws, frame: Value) -> Value {
    send(ws, frame).await;
    loop {
        let f = recv(ws).await;
        if f["type"] == "result" || f["type"] == "error" {
            return f;
        }
    }
}

/// A visitor's chat that routing closed and ended, as the `closed` frame
/// told them: their socket, session token and the conversation's id.
async fn closed_chat(w: &World, addr: SocketAddr) -> (Ws, String, String) {
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut ws, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = message(&mut ws, "c1", "hello").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &conversation).await;
    w.routing.set(contact.parse().unwrap(), "closed", None);
    let closed = recv_type(&mut ws, "closed").await;
    assert_eq!(closed["conversation"], conversation.as_str());
    Conversations::new(w.store.clone())
        .end(&contact.parse().unwrap())
        .await
        .unwrap();
    (ws, token, conversation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_chat_keeps_one_rating_and_can_be_rated_after_a_reload() {
    let w = world();
    let addr = w.instance("a", "").await;
    let (mut tab1, token, conversation) = closed_chat(&w, addr).await;
    let mut tab2 = connect(addr, ORIGIN).await.unwrap();
    hello(&mut tab2, Some(&token), None).await;

    // Two tabs rate: the first rating is the transcript's only one.
    let first = rate(&mut tab1, json!({"type": "rating", "score": 5})).await;
    assert_eq!(
        (first["type"].as_str(), first["ok"].as_bool()),
        (Some("result"), Some(true))
    );
    let second = rate(
        &mut tab2,
        json!({"type": "rating", "score": 1, "conversation": conversation}),
    )
    .await;
    assert_eq!(
        (second["type"].as_str(), second["ok"].as_bool()),
        (Some("result"), Some(true))
    );
    let logged = ratings(&w.store, &conversation).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("\"score\":5"), "{logged:?}");

    // The visitor reloads the page.
    let mut reloaded = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut reloaded, Some(&token), None).await;
    assert!(welcome["conversation"].is_null());
    // Without the id the session has nothing to rate ...
    let bare = rate(&mut reloaded, json!({"type": "rating", "score": 4})).await;
    assert_eq!(bare["code"], "not_closed");
    // ... with it, the rating is taken (the conversation keeps its first).
    let named = rate(
        &mut reloaded,
        json!({"type": "rating", "score": 4, "conversation": conversation}),
    )
    .await;
    assert_eq!(
        (named["type"].as_str(), named["ok"].as_bool()),
        (Some("result"), Some(true))
    );
    assert_eq!(ratings(&w.store, &conversation).await.len(), 1);

    // Another visitor cannot rate it, nor name garbage.
    let mut stranger = connect(addr, ORIGIN).await.unwrap();
    hello(&mut stranger, None, None).await;
    let refused = rate(
        &mut stranger,
        json!({"type": "rating", "score": 1, "conversation": conversation}),
    )
    .await;
    assert_eq!(refused["code"], "not_closed");
    let garbage = rate(
        &mut stranger,
        json!({"type": "rating", "score": 1, "conversation": "nope"}),
    )
    .await;
    assert_eq!(garbage["code"], "bad_frame");
    assert_eq!(ratings(&w.store, &conversation).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_who_reloaded_rates_the_conversation_the_widget_kept() {
    let w = world();
    let addr = w.instance("a", "").await;
    let (ws, token, conversation) = closed_chat(&w, addr).await;
    drop(ws);
    let mut reloaded = connect(addr, ORIGIN).await.unwrap();
    hello(&mut reloaded, Some(&token), None).await;
    let named = rate(
        &mut reloaded,
        json!({"type": "rating", "score": 3, "comment": "after a reload", "conversation": conversation}),
    )
    .await;
    assert_eq!(
        (named["type"].as_str(), named["ok"].as_bool()),
        (Some("result"), Some(true))
    );
    let logged = ratings(&w.store, &conversation).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("after a reload"), "{logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reaches_a_visitor_connected_to_another_instance() {
    let w = world();
    let a = w.instance("a", "").await;
    let _b = w.instance("b", "").await;
    let mut ws = connect(a, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let ack = message(&mut ws, "c1", "anyone?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    // The waiting visitor learns their place.
    let queue = recv_type(&mut ws, "queue").await;
    assert_eq!(queue["position"], 3);
    assert_eq!(queue["estimated_wait_secs"], 180);

    // The agent works on another instance: their reply is logged there
    // and the doorbell goes through Redis.
    reply_arrives(&w, &mut ws, &conversation, "yes, here").await;
}

/// A tab on another instance follows the conversation the visitor starts
/// in another tab after the one it showed closed: it used to stay on the
/// closed one, deaf to the agent, until it reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_on_another_instance_follows_the_next_conversation() {
    let w = world();
    let a = w.instance("a", "").await;
    let b = w.instance("b", "").await;
    let mut tab1 = connect(a, ORIGIN).await.unwrap();
    let token = hello(&mut tab1, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tab2 = connect(b, ORIGIN).await.unwrap();
    hello(&mut tab2, Some(&token), None).await;
    let ack = message(&mut tab1, "c1", "first question").await;
    let first = ack["conversation"].as_str().unwrap().to_owned();
    let own = next_of(&mut tab2, "message", 15).await;
    assert_eq!(own["text"], "first question");

    let contact = contact_of(&w.store, &first).await;
    w.routing.set(contact.parse().unwrap(), "closed", None);
    next_of(&mut tab2, "closed", 15).await;
    Conversations::new(w.store.clone())
        .end(&contact.parse().unwrap())
        .await
        .unwrap();

    let ack = message(&mut tab1, "c2", "one more thing").await;
    let second = ack["conversation"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let contact = contact_of(&w.store, &second).await;
    reply(&w.store, &contact, "welcome back").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = next_of(&mut tab2, "message", left.as_secs().max(1)).await;
        if m["text"] == "welcome back" {
            break;
        }
    }
}

/// The next frame of type `kind` within `secs` seconds (others skipped).
async fn next_of(ws: &mut Ws, kind: &str, secs: u64) -> Value {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} within {secs} s"))
}

/// 128 characters of a name can be 512 bytes: the name is cut to what the
/// intake takes (256 bytes), not refused with every later message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_name_in_a_form_is_cut_to_the_intakes_limit() {
    let w = world();
    let addr = w.instance("a", "").await;
    let long = "😀".repeat(100);
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    send(&mut ws, json!({"type": "prechat", "name": long})).await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "prechat");
    let ack = message(&mut ws, "c1", "hi").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let contact = contact_of(&w.store, &conversation).await;
    let fields = Conversations::new(w.store.clone())
        .contact(&contact.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fields["customer_name"], "😀".repeat(64));

    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    send(
        &mut ws,
        json!({"type": "offline", "name": long, "email": "ann@example.org", "text": "call me"}),
    )
    .await;
    let result = recv_type(&mut ws, "result").await;
    assert_eq!(
        (result["of"].as_str(), result["ok"].as_bool()),
        (Some("offline"), Some(true)),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_form_becomes_an_email_contact_answered_through_the_email_channel() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    send(
        &mut ws,
        json!({"type": "offline", "name": "Ann", "email": "not-an-address", "text": "call me"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "bad_email");
    send(
        &mut ws,
        json!({"type": "offline", "name": "Ann", "email": "ann@example.org", "text": "call me"}),
    )
    .await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");

    let customer = switchboard_core::CustomerIdentity::new("email", "ann@example.org").unwrap();
    let conversations = Conversations::new(w.store.clone());
    let (_, contact) = conversations
        .open_conversation("website", &customer)
        .await
        .unwrap()
        .expect("an email contact");
    let fields = conversations.contact(&contact).await.unwrap().unwrap();
    let attributes: HashMap<String, String> = serde_json::from_str(&fields["attributes"]).unwrap();
    assert_eq!(attributes["offline"], "true", "{fields:?}");
    // Typed by the visitor, unverified: never answered automatically.
    assert_eq!(attributes["no_auto_answer"], "true", "{fields:?}");
    assert_eq!(fields["channel"], "chat");

    reply(&w.store, &contact.to_string(), "We will call you.").await;
    let mut conn = redis::Client::open(w.store.config().url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = w.store.keys().outbox("mail");
    let entries: redis::streams::StreamRangeReply =
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !r.ids.is_empty() {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("forwarded to the email outbox");
    let msg: String = entries.ids[0].get("msg").unwrap();
    let msg: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(msg["channel"], "email");
    assert_eq!(msg["source"], "mail");
    assert_eq!(msg["from_address"], "help@support.example");
    assert!(msg["to"].to_string().contains("ann@example.org"), "{msg}");
}

/// An offline form sent again with its `client_id` (the widget does after a
/// reconnect that lost the `result`) is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_form_sent_again_with_its_client_id_is_stored_once() {
    let w = world();
    let addr = w.instance("a", "").await;
    let form = json!({"type": "offline", "name": "Ann", "email": "ann@example.org",
        "text": "call me", "client_id": "form-1"});
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut ws, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bad = form.clone();
    bad["client_id"] = json!("a:b");
    send(&mut ws, bad).await;
    assert_eq!(recv_type(&mut ws, "error").await["code"], "bad_client_id");
    send(&mut ws, form.clone()).await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");
    drop(ws);
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, Some(&token), None).await;
    send(&mut ws, form.clone()).await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");
    // Another form (another id) is another contact.
    let mut other = form.clone();
    other["client_id"] = json!("form-2");
    send(&mut ws, other).await;
    assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");
    // Repeats are not charged to the socket's 3 forms.
    for _ in 0..3 {
        send(&mut ws, form.clone()).await;
        assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");
    }

    let mut conn = redis::Client::open(w.store.config().url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, "*:contact:*")
        .await
        .unwrap();
    let mut forms = 0;
    for key in keys.iter().filter(|k| k.matches(':').count() == 3) {
        let customer: Option<String> = redis::AsyncCommands::hget(&mut conn, key, "customer")
            .await
            .unwrap();
        forms += usize::from(customer.is_some_and(|c| c.contains("ann@example.org")));
    }
    assert_eq!(forms, 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_script_is_served() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            b"GET /channels/website/widget.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/javascript")
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("cache-control: public")
    );
}

/// Raw HTTP/1.1 exchange with the instance; the whole response.
async fn http(addr: SocketAddr, request: &str) -> String {
    http_exact(addr, request).await.to_ascii_lowercase()
}

/// As [`http`], keeping the case of the answer.
async fn http_exact(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// Uploads come from the embedding page's origin: the preflight and the
/// answers (refusals included) name that origin, and no other.
#[tokio::test]
async fn uploads_answer_the_widget_origin_with_cors() {
    let w = world();
    let addr = w.instance("a", "").await;
    let preflight = http(
        addr,
        &format!(
            "OPTIONS /channels/website/upload HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type, x-filename\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(preflight.starts_with("http/1.1 200"), "{preflight}");
    assert!(
        preflight.contains(&format!(
            "access-control-allow-origin: {}",
            ORIGIN.to_ascii_lowercase()
        )),
        "{preflight}"
    );
    assert!(preflight.contains("x-filename"), "{preflight}");
    // A refused upload (no session) still tells the page why.
    let refused = http(
        addr,
        &format!(
            "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        ),
    )
    .await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(refused.contains("access-control-allow-origin"), "{refused}");
    // Another origin is not named.
    let foreign = http(
        addr,
        "OPTIONS /channels/website/upload HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !foreign.contains("access-control-allow-origin"),
        "{foreign}"
    );
}

/// With nobody to answer, a new visitor is offered the offline form; a
/// visitor with a conversation keeps chatting.
#[tokio::test]
async fn nobody_available_offers_the_offline_form_to_new_visitors() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    assert_eq!(
        (welcome["online"].clone(), welcome["form"].clone()),
        (json!(true), json!("prechat"))
    );
    let token = welcome["token"].as_str().unwrap().to_owned();
    message(&mut ws, "c-1", "hello").await;

    w.routing
        .nobody
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut newcomer = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut newcomer, None, None).await;
    assert_eq!(
        (welcome["online"].clone(), welcome["form"].clone()),
        (json!(false), json!("offline"))
    );
    let mut again = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut again, Some(&token), None).await;
    assert_eq!(welcome["form"], Value::Null, "{welcome}");
    assert!(welcome["conversation"].is_string());
}

/// Counters as the code increments them (the harness's global recorder):
/// tests run at once, so a test looks at how much a counter grew.
mod counted {
    use switchboard_testkit::counters::Counters;

    /// Starts counting (before what is counted).
    pub fn start() {
        Counters::global();
    }

    /// The counter `name` with `labels` (`k=v,k=v`, sorted).
    pub fn get(name: &str, labels: &str) -> u64 {
        Counters::global().get(&format!("{name}{{{labels}}}"))
    }
}

/// The TCP state of the server's end of the connection from local port
/// `client_port` (`/proc/net/tcp`, IPv4 loopback: `01` is established),
/// `None` once it is gone.
#[cfg(target_os = "linux")]
fn server_socket_state(server: SocketAddr, client_port: u16) -> Option<String> {
    let local = format!("0100007F:{:04X}", server.port());
    let remote = format!("0100007F:{client_port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 3 && f[1] == local && f[2] == remote).then(|| f[3].to_owned())
        })
}

/// A client that stopped reading and whose session then ends (here: too
/// many refused frames): the server stops its writer and lets the socket
/// go, instead of leaving a task blocked on it for ever.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_lets_go_of_a_socket_its_client_does_not_read() {
    let w = world();
    let addr = w
        .instance("a", "send_buffer = 5000\nrate_per_session = 100000")
        .await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let token = hello(&mut ws, None, None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = message(&mut ws, "c1", "hello?").await;
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    ws.close(None).await.unwrap();
    drop(ws);
    // Megabytes of replies for the visitor: more than the socket buffers.
    let contact = contact_of(&w.store, &conversation).await;
    let conv = conversation.parse().unwrap();
    let conversations = Conversations::new(w.store.clone());
    let msg = json!({"author": "switchboard", "message": {"text": "x".repeat(12_000)}}).to_string();
    for i in 0..600 {
        conversations
            .append(&conv, &contact, "website", &format!("m{i}"), "out", &msg)
            .await
            .unwrap();
    }
    // A client with a small receive buffer reads the welcome, then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let client_port = stream.local_addr().unwrap().port();
    let mut request = format!("ws://{addr}/channels/website/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", ORIGIN.parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    hello(&mut ws, Some(&token), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server_socket_state(addr, client_port).as_deref(),
        Some("01")
    );
    // The session ends (1008, too many refused frames) with its writer
    // stuck on the full socket.
    for _ in 0..25 {
        let _ = ws.send(Message::Text("not json".into())).await;
    }
    // Let go within 10 s (polled: a fixed wait raced the server on a
    // loaded machine).
    let started = std::time::Instant::now();
    let mut state = server_socket_state(addr, client_port);
    while state.as_deref() == Some("01") && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = server_socket_state(addr, client_port);
    }
    assert_ne!(
        state.as_deref(),
        Some("01"),
        "the server still holds the socket"
    );
}

/// Binary frames are refused like bad text frames: charged to the
/// session's allowance and struck, so a flood of them is rate limited and
/// then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_charged_and_struck_like_text_frames() {
    let w = world();
    let addr = w.instance("a", "rate_per_session = 5").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    for _ in 0..5 {
        ws.send(Message::Binary(vec![1u8, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(recv_type(&mut ws, "error").await["code"], "bad_frame");
    }
    // The allowance is spent. A refused message is named, so that the
    // widget sends it again.
    send(
        &mut ws,
        json!({"type": "message", "client_id": "m-1", "text": "hello?"}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(
        (answer["code"].as_str(), answer["client_id"].as_str()),
        (Some("rate_limited"), Some("m-1")),
        "{answer}"
    );
    assert_eq!(binary_until_closed(&mut ws).await, Some(1008));
}

/// The answer to a `message` frame: its `ack` or its `error` (other frames
/// skipped).
async fn ack_or_error(ws: &mut Ws) -> Value {
    loop {
        let frame = recv(ws).await;
        if frame["type"] == "ack" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// `rate_per_session` is the visitor's, whatever socket their frames come
/// on: a second tab, or a reconnect, used to start with a full allowance,
/// so a visitor could send `rate_per_session` messages a minute per socket.
/// A socket's keep-alive pings are charged to that socket alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_allowance_is_shared_by_the_visitors_sockets() {
    let w = world();
    // Two a minute: one more every 30 s, longer than the test takes.
    let addr = w.instance("a", "rate_per_session = 2").await;
    let mut first = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut first, None, None).await;
    let token = welcome["token"].as_str().unwrap().to_owned();
    for i in 0..2 {
        message(&mut first, &format!("m-{i}"), "hello").await;
    }
    send(
        &mut first,
        json!({"type": "message", "client_id": "m-2", "text": "again"}),
    )
    .await;
    let refused = ack_or_error(&mut first).await;
    assert_eq!(
        (refused["code"].as_str(), refused["client_id"].as_str()),
        (Some("rate_limited"), Some("m-2")),
        "{refused}"
    );
    // A second tab of the same visitor, and a reconnect: no new allowance.
    let mut second = connect(addr, ORIGIN).await.unwrap();
    hello(&mut second, Some(&token), None).await;
    send(
        &mut second,
        json!({"type": "message", "client_id": "m-2", "text": "again"}),
    )
    .await;
    let refused = ack_or_error(&mut second).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    drop(first);
    drop(second);
    let mut third = connect(addr, ORIGIN).await.unwrap();
    hello(&mut third, Some(&token), None).await;
    // Pings are the socket's: still answered.
    send(&mut third, json!({"type": "ping"})).await;
    assert_eq!(recv_type(&mut third, "pong").await["type"], "pong");
    send(
        &mut third,
        json!({"type": "message", "client_id": "m-2", "text": "again"}),
    )
    .await;
    let refused = ack_or_error(&mut third).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    // Another visitor has an allowance of their own.
    let mut other = connect(addr, ORIGIN).await.unwrap();
    hello(&mut other, None, None).await;
    message(&mut other, "o-1", "hi").await;
}

/// Before `hello` as well: binary frames are charged to the address and
/// struck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_before_hello_are_charged_and_struck() {
    counted::start();
    let closed = || {
        counted::get(
            "switchboard_chat_closed_total",
            "reason=too many refused frames",
        )
    };
    let before = closed();
    let w = world();
    let addr = w.instance("a", "rate_per_ip = 5").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    for _ in 0..5 {
        ws.send(Message::Binary(vec![1u8].into())).await.unwrap();
        assert_eq!(recv(&mut ws).await["code"], "bad_frame");
    }
    send(&mut ws, json!({"type": "hello", "v": 1, "widget": "shop"})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    assert_eq!(binary_until_closed(&mut ws).await, Some(1008));
    // The close is counted by its reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed() == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed() > before,
        "the close was not counted: {}",
        switchboard_testkit::counters::Counters::global().dump()
    );
}

/// Sends binary frames one at a time, each after the server answered the
/// last, until it closes: its close code. (Frames sent ahead of the close
/// would sit unread in the server's socket, and closing a socket with
/// unread data sends a reset that can overtake the close frame.)
async fn binary_until_closed(ws: &mut Ws) -> Option<u16> {
    for _ in 0..40 {
        ws.send(Message::Binary(vec![0u8].into())).await.ok()?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("an answer within 5 s");
            match next {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(_))) => break,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    }
    None
}

/// A session token for a new visitor of widget `shop`.
fn visitor_token() -> String {
    switchboard_chat::token::Tokens::new(SECRET.as_bytes()).issue(
        &switchboard_chat::token::Session {
            widget: "shop".into(),
            visitor: switchboard_chat::token::random_id(),
            expires_at: switchboard_core::Timestamp::now().as_millis() + 3_600_000,
        },
    )
}

fn upload_request(token: &str, body: &str, headers: &str) -> String {
    format!(
        "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An upload of `body` (text/plain) with more `headers` (`Name: value\r\n`
/// each); the whole response, lower-cased. Panics after 20 s.
async fn upload(addr: SocketAddr, token: &str, body: &str, headers: &str) -> String {
    let request = upload_request(token, body, headers);
    tokio::time::timeout(Duration::from_secs(20), http(addr, &request))
        .await
        .expect("an answer within 20 s")
}

/// A message with an upload names it in the stored message's `media` (what
/// the agent API serves the conversation); a text that merely mentions a
/// media id names nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_names_the_uploads_it_brought() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    let token = welcome["token"].as_str().unwrap().to_owned();
    // The answer's case kept: the id is base64url.
    let response = http_exact(
        addr,
        &upload_request(&token, "hello", "X-Filename: a.txt\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let id = serde_json::from_str::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c1", "text": "see this", "attachments": [id]}),
    )
    .await;
    let ack = recv_type(&mut ws, "ack").await;
    let ack_seq = ack["seq"].as_str().unwrap().to_owned();
    let conversation = ack["conversation"].as_str().unwrap().to_owned();
    let forged = message(&mut ws, "c2", "and media id BBBBBBBBBBBBBBBBBBBBBB]").await;
    let entries = Conversations::new(w.store.clone())
        .transcript(&conversation.parse().unwrap(), "-", 10)
        .await
        .unwrap();
    let media = |seq: &str| -> Value {
        let e = entries.iter().find(|e| e.seq == seq).unwrap();
        serde_json::from_str::<Value>(&e.msg).unwrap()["media"].clone()
    };
    let uploaded = media(&ack_seq);
    assert_eq!(uploaded, json!([id]));
    assert_eq!(media(forged["seq"].as_str().unwrap()), json!([]));

    // A description the disk cannot give (a directory where the file
    // should be: an I/O error, as a failing or stalled disk gives) is
    // "unavailable", to be sent again, not an upload unknown to the
    // visitor: the widget dropped such a message, text and file.
    let description = w.dir.path().join(format!("{id}.json"));
    let kept = std::fs::read(&description).unwrap();
    std::fs::remove_file(&description).unwrap();
    std::fs::create_dir(&description).unwrap();
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c3", "text": "again", "attachments": [id]}),
    )
    .await;
    let refused = recv_type(&mut ws, "error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["client_id"].as_str()),
        (Some("unavailable"), Some("c3")),
        "{refused}"
    );
    std::fs::remove_dir(&description).unwrap();
    std::fs::write(&description, kept).unwrap();
    send(
        &mut ws,
        json!({"type": "message", "client_id": "c3", "text": "again", "attachments": [id]}),
    )
    .await;
    recv_type(&mut ws, "ack").await;
}

/// Uploads are charged to the client address's allowance (`rate_per_ip`)
/// and to the visitor's own (`upload_rate_per_session` files and
/// `upload_bytes_per_session` bytes a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_limited_per_session_and_per_address() {
    let w = world();
    let addr = w
        .instance("a", "rate_per_ip = 4\nupload_rate_per_session = 2")
        .await;
    let a = visitor_token();
    for _ in 0..2 {
        let r = upload(addr, &a, "hello", "").await;
        assert!(r.starts_with("http/1.1 201"), "{r}");
    }
    let r = upload(addr, &a, "hello", "").await;
    assert!(r.starts_with("http/1.1 429"), "{r}");
    assert!(r.contains("too many uploads"), "{r}");
    // Another visitor at another address has their own allowances.
    let b = visitor_token();
    let r = upload(addr, &b, "hello", "X-Forwarded-For: 192.0.2.7\r\n").await;
    assert!(r.starts_with("http/1.1 201"), "{r}");
    // A third visitor at the first address: its 4th request is allowed,
    // the 5th is not.
    let c = visitor_token();
    let r = upload(addr, &c, "hello", "").await;
    assert!(r.starts_with("http/1.1 201"), "{r}");
    let r = upload(addr, &c, "hello", "").await;
    assert!(r.starts_with("http/1.1 429"), "{r}");
    assert!(r.contains("your address"), "{r}");

    // Bytes: 100 a minute, files of at most 64.
    let addr = w
        .instance("b", "max_upload_bytes = 64\nupload_bytes_per_session = 100")
        .await;
    let d = visitor_token();
    let r = upload(addr, &d, &"x".repeat(60), "").await;
    assert!(r.starts_with("http/1.1 201"), "{r}");
    let r = upload(addr, &d, &"x".repeat(60), "").await;
    assert!(r.starts_with("http/1.1 429"), "{r}");
    assert!(r.contains("too many uploads"), "{r}");

    // Bytes per address, all its sessions together: a new session costs
    // nothing, so the session's allowance alone did not bound an address.
    let addr = w
        .instance("c", "max_upload_bytes = 64\nupload_bytes_per_ip = 150")
        .await;
    for n in 0..2 {
        let r = upload(addr, &visitor_token(), &"x".repeat(60), "").await;
        assert!(r.starts_with("http/1.1 201"), "session {n}: {r}");
    }
    let r = upload(addr, &visitor_token(), &"x".repeat(60), "").await;
    assert!(r.starts_with("http/1.1 429"), "{r}");
    assert!(r.contains("your address"), "{r}");
    let r = upload(
        addr,
        &visitor_token(),
        &"x".repeat(60),
        "X-Forwarded-For: 192.0.2.8\r\n",
    )
    .await;
    assert!(r.starts_with("http/1.1 201"), "another address: {r}");
}

/// Starts an upload whose body stops half-way (held open by the returned
/// socket, with the rest of the request to send).
async fn slow_upload(
    addr: SocketAddr,
    token: &str,
    headers: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let request = upload_request(token, &"x".repeat(40), headers);
    let (head, rest) = request.split_at(request.len() - 20);
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    (slow, rest.to_owned())
}

/// Probes until an upload from `headers`' address is refused with 503
/// (the slow uploads have their slots), within 15 s. Each probe is a new
/// visitor's: one that went through before the slots were taken would
/// spend a visitor's upload allowance, and be refused 429 from then on.
/// The slow uploads are given half a second to be taken up first: probing
/// at once, with other upload tests running, sometimes found no slot taken
/// for the whole time (not understood; see the session 21 note).
async fn until_busy(addr: SocketAddr, headers: &str) -> String {
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..150 {
        let r = upload(addr, &visitor_token(), "hello", headers).await;
        if r.starts_with("http/1.1 503") {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = upload(addr, &visitor_token(), "hello", headers).await;
    panic!("never refused for want of a slot: {r}");
}

/// Finishes a slow upload: its answer.
async fn finish(mut slow: tokio::net::TcpStream, rest: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    answer
}

/// At most `uploads_in_flight` bodies are read at once (each is held in
/// memory), and a quarter of them (at least 2) from one address, so that
/// one address trickling bodies cannot hold every slot: one more is
/// answered 503 at once, and is charged nothing (the visitor refused while
/// the slots were busy may upload once one is free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_are_capped() {
    let w = world();
    let addr = w
        .instance("a", "uploads_in_flight = 8\nupload_rate_per_session = 1")
        .await;
    let (a, b) = (visitor_token(), visitor_token());
    let first = slow_upload(addr, &a, "").await;
    let second = slow_upload(addr, &b, "").await;
    let probe = visitor_token();
    let r = until_busy(addr, "").await;
    assert!(r.contains("at once"), "{r}");
    // Refused again and again while busy: not charged for it.
    for _ in 0..3 {
        let r = upload(addr, &probe, "hello", "").await;
        assert!(r.starts_with("http/1.1 503"), "{r}");
    }
    // Another address has slots left.
    let other = "X-Forwarded-For: 192.0.2.9\r\n";
    let r = upload(addr, &visitor_token(), "hello", other).await;
    assert!(r.starts_with("http/1.1 201"), "another address: {r}");
    assert!(finish(first.0, &first.1).await.starts_with("HTTP/1.1 201"));
    assert!(
        finish(second.0, &second.1)
            .await
            .starts_with("HTTP/1.1 201")
    );
    let r = upload(addr, &probe, "hello", "").await;
    assert!(
        r.starts_with("http/1.1 201"),
        "its one upload a minute: {r}"
    );

    // The instance's cap, from any address.
    let addr = w.instance("b", "uploads_in_flight = 1").await;
    let token = visitor_token();
    let slow = slow_upload(addr, &token, "").await;
    until_busy(addr, other).await;
    assert!(finish(slow.0, &slow.1).await.starts_with("HTTP/1.1 201"));
    let r = upload(addr, &token, "hello", other).await;
    assert!(r.starts_with("http/1.1 201"), "{r}");
}

/// A websocket request whose query does not parse (two widgets) is refused
/// and counted (axum answered it uncounted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_query_that_does_not_parse_is_counted() {
    counted::start();
    let before = counted::get("switchboard_chat_rejected_total", "reason=bad_query");
    let w = world();
    let addr = w.instance("a", "").await;
    let request = format!(
        "GET /channels/website/ws?widget=a&widget=b HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    // The head only: the connection stays open (keep-alive).
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before an answer");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    })
    .await
    .expect("an answer");
    assert!(head.starts_with("http/1.1 400"), "{head}");
    let after = counted::get("switchboard_chat_rejected_total", "reason=bad_query");
    assert!(after > before, "the 400 is counted");
}

/// A request to the websocket URL that is no handshake (a plain GET, a
/// websocket version we do not speak) gets axum's answer, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_the_websocket_url_that_is_no_handshake_is_counted() {
    counted::start();
    let before = counted::get("switchboard_chat_rejected_total", "reason=not_websocket");
    let w = world();
    let addr = w.instance("a", "").await;
    let plain = format!(
        "GET /channels/website/ws HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nConnection: close\r\n\r\n"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), http(addr, &plain))
        .await
        .expect("an answer");
    assert!(r.starts_with("http/1.1 4"), "{r}");
    let version = format!(
        "GET /channels/website/ws HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
         Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), http(addr, &version))
        .await
        .expect("an answer");
    assert!(r.starts_with("http/1.1 4"), "{r}");
    let after = counted::get("switchboard_chat_rejected_total", "reason=not_websocket");
    assert!(after >= before + 2, "both are counted: {before} -> {after}");
}

/// An upload announcing more than `max_upload_bytes` is refused before its
/// body is read, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_upload_is_refused_up_front_and_counted() {
    counted::start();
    let before = counted::get("switchboard_chat_rejected_total", "reason=upload_too_large");
    let w = world();
    let addr = w.instance("a", "max_upload_bytes = 1000").await;
    let token = visitor_token();
    // Only the head: the body is never sent.
    let request = format!(
        "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n"
    );
    let r = tokio::time::timeout(Duration::from_secs(10), http(addr, &request))
        .await
        .expect("an answer without the body");
    assert!(r.starts_with("http/1.1 413"), "{r}");
    let after = counted::get("switchboard_chat_rejected_total", "reason=upload_too_large");
    assert!(after > before, "the 413 is counted");
}

/// An upload that would leave less than `uploads_min_free_bytes` free on
/// the disk is refused (507) and counted; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_refused_when_the_disk_is_nearly_full() {
    counted::start();
    let reason = "reason=upload_disk_full";
    let before = counted::get("switchboard_chat_rejected_total", reason);
    let w = world();
    // More free space than any disk has.
    let addr = w
        .instance("a", "uploads_min_free_bytes = 9223372036854775807")
        .await;
    let files = || std::fs::read_dir(w.dir.path()).unwrap().count();
    let files_before = files();
    let r = upload(addr, &visitor_token(), "hello", "").await;
    assert!(r.starts_with("http/1.1 507"), "{r}");
    let after = counted::get("switchboard_chat_rejected_total", reason);
    assert!(after > before, "the 507 is counted");
    assert_eq!(files(), files_before, "nothing written");
    // With room (the check off), the same upload is stored.
    let addr = w.instance("b", "uploads_min_free_bytes = 0").await;
    let r = upload(addr, &visitor_token(), "hello", "").await;
    assert!(r.starts_with("http/1.1 201"), "{r}");
}

/// A body that stops coming is given up after a while (408), not waited
/// for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_body_stalls_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world();
    let addr = w.instance("a", "").await;
    let token = visitor_token();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 100]).await.unwrap();
    let mut response = String::new();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("an answer within 20 s")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// A body that keeps trickling in is given up at `upload_timeout_secs`
/// for the whole of it, though it never pauses for long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slower_than_its_timeout_is_given_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world();
    let addr = w.instance("a", "upload_timeout_secs = 2").await;
    let token = visitor_token();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Origin: {ORIGIN}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 200 ms: the whole body would take 20 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_string(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    trickle.abort();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "given up after {took:?}, not at the configured 2 s"
    );
}

/// Sends Ann's offline form with `text` to `addr`: it is refused with
/// `code`, and no contact is made.
async fn offline_form_refused(w: &World, addr: SocketAddr, text: &str, code: &str) {
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    send(
        &mut ws,
        json!({"type": "offline", "name": "Ann", "email": "ann@example.org", "text": text}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], code, "{answer}");
    let customer = switchboard_core::CustomerIdentity::new("email", "ann@example.org").unwrap();
    let open = Conversations::new(w.store.clone())
        .open_conversation("website", &customer)
        .await
        .unwrap();
    assert!(open.is_none(), "no contact: {open:?}");
}

/// Without `[offline]` there is no offline form: the frame is refused and
/// no contact is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_form_is_refused_without_an_offline_channel() {
    let w = world();
    let addr = w.instance_without_offline("a", "").await;
    offline_form_refused(&w, addr, "call me", "no_offline_form").await;
}

/// An offline form may not carry a line that reads as an attachment (the
/// agent would be shown a file that never came), as a chat message may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_form_may_not_write_an_attachment_line() {
    let w = world();
    let addr = w.instance("a", "").await;
    let text = "hi\n [attachment: invoice.pdf, application/pdf, 9 bytes, media id abc]";
    offline_form_refused(&w, addr, text, "bad_frame").await;
}

/// A session may send a few offline forms, not any number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_forms_are_limited_per_session() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    let form =
        json!({"type": "offline", "name": "Ann", "email": "ann@example.org", "text": "call me"});
    for _ in 0..3 {
        send(&mut ws, form.clone()).await;
        let answer = recv(&mut ws).await;
        assert_eq!(
            (answer["of"].as_str(), answer["ok"].as_bool()),
            (Some("offline"), Some(true)),
            "{answer}"
        );
    }
    send(&mut ws, form).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "offline_limit", "{answer}");
}

/// `after` naming the last possible stream id is refused at `hello`:
/// Redis cannot read after it, so the session would never get anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_redis_cannot_read_after_is_refused() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "v": 1, "widget": "shop",
               "after": "18446744073709551615-18446744073709551615"}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "bad_frame", "{answer}");
    hello(
        &mut ws,
        None,
        Some("18446744073709551615-18446744073709551614"),
    )
    .await;
}

/// A session that cannot read its conversation's log counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_read_errors_are_counted() {
    counted::start();
    let before = counted::get("switchboard_chat_log_read_errors_total", "");
    let mut w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    hello(&mut ws, None, None).await;
    message(&mut ws, "c1", "anyone?").await;
    // Waiting: the session reads the log every 2 s.
    w.redis.stop();
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        while counted::get("switchboard_chat_log_read_errors_total", "") <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "a failed read of the log is counted");
}

/// The address in an offline form is typed, not proven: a form naming an
/// address whose conversation is open opens a contact of its own, not a
/// message in that person's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_form_never_joins_a_conversation_open_under_its_address() {
    let w = world();
    let addr = w.instance("a", "").await;
    let customer = switchboard_core::CustomerIdentity::new("email", "ann@example.org").unwrap();
    let conversations = Conversations::new(w.store.clone());
    let mut contacts = Vec::new();
    for text in [
        "call me",
        "it is me, Ann: send the invoice to eve@example.net",
    ] {
        let mut ws = connect(addr, ORIGIN).await.unwrap();
        hello(&mut ws, None, None).await;
        send(
            &mut ws,
            json!({"type": "offline", "name": "Ann", "email": "ann@example.org", "text": text}),
        )
        .await;
        assert_eq!(recv_type(&mut ws, "result").await["of"], "offline");
        let (_, contact) = conversations
            .open_conversation("website", &customer)
            .await
            .unwrap()
            .expect("an email contact");
        contacts.push(contact);
    }
    assert_ne!(contacts[0], contacts[1], "a contact of its own");
}

/// An upload with a good session is still refused, and counted, from a
/// page that is not the widget's (or with no Origin at all): CORS alone
/// only kept the answer from the browser, the file was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_from_another_origin_is_refused() {
    let w = world();
    let addr = w.instance("a", "").await;
    let mut ws = connect(addr, ORIGIN).await.unwrap();
    let welcome = hello(&mut ws, None, None).await;
    let token = welcome["token"].as_str().unwrap().to_owned();
    let before = counted::get("switchboard_chat_rejected_total", "reason=origin");
    for origin in ["Origin: https://evil.example\r\n", ""] {
        let request = format!(
            "POST /channels/website/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             {origin}Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let response = http(addr, &request).await;
        assert!(response.starts_with("http/1.1 403"), "{origin}: {response}");
    }
    let after = counted::get("switchboard_chat_rejected_total", "reason=origin");
    assert!(after >= before + 2, "{before} -> {after}");
    // From the widget's page it is taken.
    let ok = upload(addr, &token, "hello", "").await;
    assert!(ok.starts_with("http/1.1 201"), "{ok}");
}

/// One address holds at most `sockets_per_ip` chats open at once (a script
/// answering pings kept any number open, each asking Redis every few
/// seconds); a closed one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_chats_are_capped_per_address() {
    let w = world();
    let addr = w.instance("a", "sockets_per_ip = 2").await;
    let before = counted::get("switchboard_chat_rejected_total", "reason=sockets_per_ip");
    let mut first = connect(addr, ORIGIN).await.unwrap();
    hello(&mut first, None, None).await;
    let mut second = connect(addr, ORIGIN).await.unwrap();
    hello(&mut second, None, None).await;
    match connect(addr, ORIGIN).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a third chat from one address: {other:?}"),
    }
    let after = counted::get("switchboard_chat_rejected_total", "reason=sockets_per_ip");
    assert!(after > before, "counted");
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        if let Ok(ws) = connect(addr, ORIGIN).await {
            third = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut third = third.expect("room once a chat closed");
    hello(&mut third, None, None).await;
}

/// The widget's keep-alive pings are charged to their session, not to the
/// address: idle tabs behind one NAT address no longer spend its allowance
/// for everyone there (a ping every 25 s per tab; ~125 tabs spent the
/// default 300 a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_do_not_spend_the_addresss_allowance() {
    let w = world();
    let addr = w.instance("a", "rate_per_ip = 5").await;
    let mut idle = connect(addr, ORIGIN).await.unwrap();
    hello(&mut idle, None, None).await;
    for _ in 0..10 {
        send(&mut idle, json!({"type": "ping"})).await;
        let answer = recv(&mut idle).await;
        assert_eq!(answer["type"], "pong", "{answer}");
    }
    // Another tab at the same address still says hello and writes.
    let mut busy = connect(addr, ORIGIN).await.unwrap();
    hello(&mut busy, None, None).await;
    let ack = message(&mut busy, "m-1", "hello").await;
    assert_eq!(ack["type"], "ack", "{ack}");
}
