//! The CTI channel's dispatcher, built through its configuration and driven
//! over HTTP like a PBX would, against fakes of the intake (a repeated
//! `newCall` is a duplicate) and routing (set by the test), the real
//! channel state on a private redis-server (leases and markers shared by
//! "instances", with their expiry), and a local PBX stand-in that records
//! our dial callbacks.
//!
//! A restart is an instance stopped (its shutdown token cancelled, `run`
//! awaited) and another built on the same fakes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::CtiConfig;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::{
    ChannelConfig, ChannelContext, ChannelError, ChannelState, ConversationLog, Intake, LiveBus,
    LiveEvent, LiveSignal, LogEntry, OutboundDelivery, Outbox, OutboxError, RouteView, Routing,
};
use switchboard_core::{
    ContactId, ConversationId, CustomerIdentity, DeliveryOutcome, InboundEvent, InboundUpdate,
    IntakeError, IntakeOutcome, IntakeReceipt, MessageId, OutboundMessage, Partition,
    UpdateOutcome,
};
use switchboard_store::{RedisChannelState, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "cti-unit-token-0123456789";

/// The PBX stand-in: every dial callback, with its `Idempotency-Key`.
#[derive(Debug, Default)]
struct Pbx {
    dials: Mutex<Vec<(String, Value)>>,
    /// The `Authorization` header of each dial taken.
    auth: Mutex<Vec<String>>,
    /// Callbacks still to be answered 503 (not recorded) before the PBX
    /// takes them.
    down_for: std::sync::atomic::AtomicUsize,
    /// A status every callback is answered with instead (not recorded),
    /// counted in `refused`.
    refuse_with: Mutex<Option<axum::http::StatusCode>>,
    refused: std::sync::atomic::AtomicUsize,
    /// Callbacks still to be taken (recorded) and then left unanswered:
    /// the connection is dropped, as when an answer is lost on the way.
    lose_answers: std::sync::atomic::AtomicUsize,
}

impl Pbx {
    fn dials(&self) -> Vec<(String, Value)> {
        self.dials.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.dials.lock().unwrap().len()
    }
}

async fn pbx() -> (String, Arc<Pbx>) {
    async fn callback(
        State(pbx): State<Arc<Pbx>>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> axum::http::StatusCode {
        let lose = pbx
            .lose_answers
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if lose {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            pbx.dials.lock().unwrap().push((key, body));
            // Ends the connection's task: the connection is dropped
            // without an answer.
            panic!("the PBX stand-in took the callback and loses its answer");
        }
        let down = pbx
            .down_for
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if down {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let refusal = *pbx.refuse_with.lock().unwrap();
        if let Some(status) = refusal {
            pbx.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return status;
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        pbx.auth.lock().unwrap().push(auth);
        pbx.dials.lock().unwrap().push((key, body));
        axum::http::StatusCode::OK
    }
    let state = Arc::new(Pbx::default());
    let app = axum::Router::new()
        .route("/callback", axum::routing::post(callback))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/callback"), state)
}

/// The intake: a call (by its provider id) is stored once; a repeat is a
/// duplicate with the first delivery's ids.
#[derive(Debug, Default)]
struct FakeIntake {
    calls: Mutex<HashMap<String, ContactId>>,
}

impl FakeIntake {
    fn contact(&self, call_id: &str) -> ContactId {
        *self.calls.lock().unwrap().get(call_id).expect("stored")
    }
}

fn receipt(outcome: IntakeOutcome, contact_id: ContactId) -> IntakeReceipt {
    IntakeReceipt {
        outcome,
        contact_id,
        conversation_id: ConversationId::new(Partition(0)),
        message_id: MessageId::new(),
        seq: "1-0".into(),
    }
}

impl Intake for FakeIntake {
    fn submit(&self, event: InboundEvent) -> BoxFuture<'_, Result<IntakeReceipt, IntakeError>> {
        assert!(event.new_contact, "every call is a contact of its own");
        let id = event.provider_message_id.clone().unwrap_or_default();
        let mut calls = self.calls.lock().unwrap();
        let result = match calls.get(&id) {
            Some(contact) => receipt(IntakeOutcome::Duplicate, *contact),
            None => {
                let contact = ContactId::new(Partition(0));
                calls.insert(id, contact);
                receipt(IntakeOutcome::Created, contact)
            }
        };
        Box::pin(async move { Ok(result) })
    }

    fn update(&self, _: InboundUpdate) -> BoxFuture<'_, Result<UpdateOutcome, IntakeError>> {
        Box::pin(async { Ok(UpdateOutcome::UnknownMessage) })
    }

    fn lookup<'a>(
        &'a self,
        _: &'a str,
        _: &'a CustomerIdentity,
        provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntakeReceipt>, IntakeError>> {
        let found = self.calls.lock().unwrap().get(provider_message_id).copied();
        Box::pin(async move { Ok(found.map(|c| receipt(IntakeOutcome::Duplicate, c))) })
    }
}

/// Routing as the test sets it.
#[derive(Debug, Default)]
struct FakeRouting {
    views: Mutex<HashMap<ContactId, RouteView>>,
    /// The contacts the channel ended, with their dispositions.
    ended: Mutex<Vec<(ContactId, String)>>,
    /// The accepts the channel reported: (contact, agent).
    accepted: Mutex<Vec<(ContactId, String)>>,
    /// The declines the channel reported: (contact, agent).
    declined: Mutex<Vec<(ContactId, String)>>,
    /// The calls the channel passed on (no miss of the agent's).
    passed: Mutex<Vec<(ContactId, String)>>,
    /// `end` fails (routing unreachable).
    fail_end: std::sync::atomic::AtomicBool,
}

static NEXT_OFFER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl FakeRouting {
    /// Offered to `agent` until `until` (ms since the epoch).
    fn offer(&self, contact: ContactId, agent: &str, until: u64) {
        let mut view = Self::view("offered", Some(agent));
        view.offer_until = Some(until);
        view.stamp = Some(until);
        self.views.lock().unwrap().insert(contact, view);
    }

    /// As routing sets it. An accept keeps its offer's stamp (an offer to
    /// the same agent becoming an assignment); anything else is new.
    fn set(&self, contact: ContactId, state: &str, agent: Option<&str>) {
        let mut views = self.views.lock().unwrap();
        let mut view = Self::view(state, agent);
        if let Some(before) = views.get(&contact)
            && state == "assigned"
            && before.state == "offered"
            && before.agent.as_deref() == agent
        {
            view.stamp = before.stamp;
        }
        views.insert(contact, view);
    }

    /// Routing takes the call from `agent`: it waits for the next one.
    fn take_from(&self, contact: &ContactId, agent: &str) {
        let mut views = self.views.lock().unwrap();
        if views
            .get(contact)
            .is_some_and(|v| v.agent.as_deref() == Some(agent))
        {
            views.insert(*contact, Self::view("waiting", None));
        }
    }

    fn view(state: &str, agent: Option<&str>) -> RouteView {
        // Every `set` offered or assigned is a new offer (or assignment),
        // standing a minute.
        let stamp = matches!(state, "offered" | "assigned").then(|| {
            switchboard_core::Timestamp::now().as_millis()
                + 60_000
                + NEXT_OFFER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        RouteView {
            state: state.into(),
            agent: agent.map(str::to_owned),
            agent_name: None,
            queue: "default".into(),
            source: "pbx".into(),
            offer_until: stamp.filter(|_| state == "offered"),
            stamp,
        }
    }
}

impl Routing for FakeRouting {
    fn route<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<RouteView>, IntakeError>> {
        let view = self.views.lock().unwrap().get(contact).cloned();
        Box::pin(async move { Ok(view) })
    }

    fn answer<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
        accept: bool,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        let answers = if accept {
            &self.accepted
        } else {
            &self.declined
        };
        answers.lock().unwrap().push((*contact, agent.to_owned()));
        if !accept {
            self.take_from(contact, agent);
        }
        Box::pin(async { Ok("ok".into()) })
    }

    fn pass<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        self.passed
            .lock()
            .unwrap()
            .push((*contact, agent.to_owned()));
        self.take_from(contact, agent);
        Box::pin(async { Ok("ok".into()) })
    }

    fn end<'a>(
        &'a self,
        contact: &'a ContactId,
        disposition: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        // As routing's: the contact is closed, and ending it again is
        // `already_closed` (not recorded again). `fail_end`: unreachable.
        if self.fail_end.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async { Err(IntakeError::Unavailable("routing is down".into())) });
        }
        let mut views = self.views.lock().unwrap();
        if views.get(contact).is_some_and(|v| v.state == "closed") {
            return Box::pin(async { Ok("already_closed".into()) });
        }
        views.insert(*contact, Self::view("closed", None));
        self.ended
            .lock()
            .unwrap()
            .push((*contact, disposition.to_owned()));
        Box::pin(async { Ok("ok".into()) })
    }
}

/// What the CTI channel never uses.
#[derive(Debug)]
struct Unused;

impl Outbox for Unused {
    fn next(&self, _: Duration) -> BoxFuture<'_, Result<Option<OutboundDelivery>, OutboxError>> {
        Box::pin(async { Ok(None) })
    }
    fn settle<'a>(
        &'a self,
        _: &'a OutboundDelivery,
        _: DeliveryOutcome,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async { Ok(()) })
    }
    fn defer<'a>(
        &'a self,
        _: &'a OutboundDelivery,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async { Ok(()) })
    }
    fn hold_delivery(&self, _: Duration) -> BoxFuture<'_, Result<bool, OutboxError>> {
        Box::pin(async { Ok(false) })
    }
    fn release_delivery(&self) -> BoxFuture<'_, Result<(), OutboxError>> {
        Box::pin(async { Ok(()) })
    }
    fn forward<'a>(
        &'a self,
        _: &'a OutboundDelivery,
        _: OutboundMessage,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async { Ok(()) })
    }
}

impl LiveBus for Unused {
    fn publish(&self, _: LiveEvent) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn subscribe(&self, _: switchboard_channel::LiveFollows) -> BoxStream<'static, LiveSignal> {
        Box::pin(futures::stream::empty())
    }
}

impl ConversationLog for Unused {
    fn open_conversation<'a>(
        &'a self,
        _: &'a str,
        _: &'a CustomerIdentity,
    ) -> BoxFuture<'a, Result<Option<(ConversationId, ContactId)>, IntakeError>> {
        Box::pin(async { Ok(None) })
    }
    fn entries_after<'a>(
        &'a self,
        _: &'a ConversationId,
        _: &'a str,
        _: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IntakeError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn find_recent<'a>(
        &'a self,
        _: &'a ConversationId,
        _: &'a str,
        _: usize,
    ) -> BoxFuture<'a, Result<Option<LogEntry>, IntakeError>> {
        Box::pin(async { Ok(None) })
    }
    fn append_once<'a>(
        &'a self,
        _: &'a ConversationId,
        _: &'a ContactId,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>> {
        Box::pin(async { Ok(None) })
    }
    fn customer_conversation<'a>(
        &'a self,
        _: &'a str,
        _: &'a CustomerIdentity,
        _: &'a ConversationId,
    ) -> BoxFuture<'a, Result<Option<ContactId>, IntakeError>> {
        Box::pin(async { Ok(None) })
    }
}

/// What every instance of a test shares: the PBX, the intake, routing and
/// Redis (the channel state).
struct World {
    callback: String,
    pbx: Arc<Pbx>,
    intake: Arc<FakeIntake>,
    routing: Arc<FakeRouting>,
    _redis: RedisServer,
    store: Store,
    http: reqwest::Client,
}

/// One running CTI channel, as one daemon instance runs it.
struct Instance {
    events: String,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), ChannelError>>,
}

impl Instance {
    /// A graceful stop: shutdown, then `run` returns.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.run)
            .await
            .expect("the channel stopped in time")
            .expect("the channel task")
            .expect("the channel stopped without an error");
    }
}

impl World {
    /// Once the dispatchers have settled, the PBX was told to dial exactly
    /// `n` times in all.
    async fn dialled_exactly(&self, n: usize) {
        tokio::time::sleep(SETTLE).await;
        assert_eq!(self.pbx.count(), n, "dials: {:?}", self.pbx.dials());
    }

    async fn new() -> World {
        let (callback, pbx) = pbx().await;
        let redis = RedisServer::start();
        World {
            callback,
            pbx,
            intake: Arc::default(),
            routing: Arc::default(),
            store: Store::new(StoreConfig::local(redis.url(), 1)).unwrap(),
            _redis: redis,
            http: reqwest::Client::new(),
        }
    }

    /// The channel state of instance `owner`, as its daemon has it.
    fn state_of(&self, owner: usize) -> RedisChannelState {
        RedisChannelState::new(self.store.clone(), "pbx", &format!("instance-{owner}"))
    }

    /// A CTI channel named `pbx` of instance `owner`, serving its routes on
    /// a port of its own.
    async fn instance(&self, owner: usize) -> Instance {
        self.instance_with(owner, json!({})).await
    }

    /// [`Self::instance`] with more configuration keys.
    async fn instance_with(&self, owner: usize, more: Value) -> Instance {
        let mut config = json!({
            "name": "pbx",
            "token": TOKEN,
            "callback_url": self.callback,
            "agents": {"olha": "201", "petro": "sip:202@pbx.example.com"},
            "release_after_secs": 2,
        });
        if let (Some(config), Some(more)) = (config.as_object_mut(), more.as_object()) {
            config.extend(more.clone());
        }
        let config: CtiConfig = serde_json::from_value(config).unwrap();
        let shutdown = CancellationToken::new();
        let ctx = ChannelContext {
            name: "pbx".into(),
            intake: self.intake.clone(),
            outbox: Arc::new(Unused),
            routing: self.routing.clone(),
            state: Arc::new(self.state_of(owner)),
            live: Arc::new(Unused),
            conversations: Arc::new(Unused),
            draining: shutdown.clone(),
            shutdown: shutdown.clone(),
        };
        let adapter = config.build(ctx).unwrap();
        let app = adapter.routes().expect("the CTI channel serves routes");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop_serving = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_serving.cancelled_owned())
                .await
        });
        Instance {
            events: format!("http://{addr}/events"),
            shutdown,
            run: tokio::spawn(adapter.run()),
        }
    }

    /// The PBX posts `event` to `instance` with `token`.
    async fn post(&self, instance: &Instance, token: &str, event: &Value) -> reqwest::Response {
        self.http
            .post(&instance.events)
            .bearer_auth(token)
            .json(event)
            .send()
            .await
            .unwrap()
    }

    /// The PBX posts `newCall` for call `id` to `instance`.
    async fn new_call(&self, instance: &Instance, id: &str) -> ContactId {
        let reply = self
            .post(
                instance,
                TOKEN,
                &json!({"event": "newCall", "direction": "in", "callId": id,
                    "from": "+380501234567", "to": "4930609854180"}),
            )
            .await;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.json::<Value>().await.unwrap(), json!({}));
        self.intake.contact(id)
    }

    /// Waits (up to 10 s) until the leading dispatcher has noted whose
    /// phone has the call (`on:<contact>`): it has seen the call connected
    /// to `agent`, or (None) released. A fixed pause there raced the
    /// dispatcher's polls on a loaded machine.
    async fn noted(&self, contact: ContactId, agent: Option<&str>) {
        let state = self.state_of(0);
        let key = format!("on:{contact}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = switchboard_channel::ChannelState::get(&state, &key)
                .await
                .unwrap()
                .filter(|a| !a.is_empty());
            if now.as_deref() == agent {
                return;
            }
            assert!(Instant::now() < deadline, "{key}: {now:?}, not {agent:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to 5 s for the PBX to have `n` dials.
    async fn dials(&self, n: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pbx.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dials = self.pbx.dials();
        assert!(dials.len() >= n, "{n} dial(s) expected, got {dials:?}");
        dials
    }
}

/// A query that does not parse (two tokens) is answered in JSON and
/// counted like every other refusal (axum answered it in plain text,
/// uncounted).
#[tokio::test]
async fn a_query_that_does_not_parse_is_a_counted_json_refusal() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world.instance(0).await;
    let reply = world
        .http
        .post(format!("{}?token=a&token=b", instance.events))
        .json(
            &json!({"event": "newCall", "direction": "in", "callId": "c-1",
            "from": "+380501234567", "to": "4930609854180"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(
        counters
            .get("switchboard_voice_requests_total{endpoint=cti,outcome=bad_request,source=pbx}"),
        1,
        "{}",
        counters.dump()
    );
    assert!(
        world.intake.calls.lock().unwrap().is_empty(),
        "nothing stored"
    );
    instance.stop().await;
}

/// Longer than a few of the dispatcher's polls: time for a dial that
/// should not happen.
const SETTLE: Duration = Duration::from_millis(1500);

/// The reviewer's scenario: `newCall`, a graceful restart, the PBX repeats
/// its `newCall` (a duplicate), then an agent is chosen: the call is dialled.
#[tokio::test]
async fn a_call_repeated_after_a_restart_is_dialled() {
    let world = World::new().await;
    let first = world.instance(1).await;
    let contact = world.new_call(&first, "r1").await;
    world.routing.set(contact, "waiting", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.stop().await;

    let second = world.instance(2).await;
    assert_eq!(world.new_call(&second, "r1").await, contact, "stored once");
    world.routing.set(contact, "offered", Some("olha"));
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["callId"], "r1");
    assert_eq!(dials[0].1["agent"], "olha");
    assert_eq!(dials[0].1["number"], "201");
    assert_eq!(dials[0].1["contact_id"], contact.to_string());
    world.dialled_exactly(1).await;
    // Taken back (her session ended with the restart) and offered to her
    // again: a new offer, a key the PBX has not seen (a count kept in
    // memory began again after the restart and repeated the first key).
    world.routing.set(contact, "waiting", None);
    second.stop().await;
    let third = world.instance(3).await;
    world.new_call(&third, "r1").await;
    world.routing.set(contact, "offered", Some("olha"));
    let dials = world.dials(2).await;
    assert_ne!(dials[0].0, dials[1].0, "a new offer, a new key");
    world.routing.set(contact, "assigned", Some("olha"));
    third.stop().await;
}

/// Calls are followed again after a restart without the PBX repeating its
/// `newCall`: a waiting one is dialled when offered, and a connected one
/// transferred in the console, then or while no instance ran, is dialled
/// with `transfer_from`. Once over,
/// a call leaves the registry. Before, nothing followed either until the
/// PBX repeated its `newCall`, which it does not for a connected call.
#[tokio::test]
async fn calls_are_followed_again_after_a_restart() {
    let world = World::new().await;
    let first = world.instance(1).await;
    let waiting = world.new_call(&first, "w1").await;
    world.routing.set(waiting, "waiting", None);
    let talking = world.new_call(&first, "t1").await;
    world.routing.set(talking, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(talking, "assigned", Some("olha"));
    let moved = world.new_call(&first, "m1").await;
    world.routing.set(moved, "offered", Some("olha"));
    world.dials(2).await;
    world.routing.set(moved, "assigned", Some("olha"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.stop().await;
    // Transferred to petro while no instance runs.
    world.routing.set(moved, "offered", Some("petro"));

    let second = world.instance(2).await;
    let dials = world.dials(3).await;
    assert_eq!(dials[2].1["callId"], "m1");
    assert_eq!(dials[2].1["agent"], "petro");
    assert_eq!(dials[2].1["transfer_from"], "olha", "noted before the stop");
    world.routing.set(moved, "assigned", Some("petro"));
    world.routing.set(waiting, "offered", Some("petro"));
    let dials = world.dials(4).await;
    assert_eq!(dials[3].1["callId"], "w1");
    assert_eq!(dials[3].1["agent"], "petro");
    assert!(dials[3].1.get("transfer_from").is_none(), "{:?}", dials[3]);
    world.routing.set(waiting, "assigned", Some("petro"));
    // Olha transfers hers to petro's colleague queue: offered to petro too.
    world.routing.set(talking, "waiting", None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    world.routing.set(talking, "offered", Some("petro"));
    let dials = world.dials(5).await;
    assert_eq!(dials[4].1["callId"], "t1");
    assert_eq!(dials[4].1["transfer_from"], "olha");
    world.dialled_exactly(5).await;

    for call in [waiting, talking, moved] {
        world.routing.set(call, "closed", None);
    }
    // Out of the registry, and whose phone had them is not kept either.
    let registry = world.state_of(2);
    let notes = || async {
        let mut left = Vec::new();
        for call in [waiting, talking, moved] {
            if let Some(agent) = registry.get(&format!("on:{call}")).await.unwrap() {
                left.push((call, agent));
            }
        }
        left
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while (!registry.entries("calls").await.unwrap().is_empty() || !notes().await.is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registry.entries("calls").await.unwrap(), vec![]);
    assert_eq!(notes().await, vec![]);
    second.stop().await;
}

/// A release the PBX took but whose answer was lost may have been carried
/// out: while the PBX is down the release is asked again (not taken), and
/// when the call is offered meanwhile, its dial does not name the agent
/// whose leg may be gone in `transfer_from`.
#[tokio::test]
async fn a_release_whose_answer_was_lost_is_not_taken_for_a_connected_call() {
    use std::sync::atomic::Ordering::SeqCst;
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "l1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(contact, "assigned", Some("olha"));
    world.noted(contact, Some("olha")).await;
    world.pbx.lose_answers.store(1, SeqCst);
    world.pbx.down_for.store(1000, SeqCst);
    world.routing.set(contact, "waiting", None);
    let calls = world.dials(2).await;
    assert_eq!(calls[1].1["action"], "release", "{:?}", calls[1]);
    // Asked again (answered 503) until the call is offered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.pbx.down_for.load(SeqCst) == 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        world.pbx.down_for.load(SeqCst) < 1000,
        "the release is asked again"
    );
    world.routing.set(contact, "offered", Some("petro"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    world.pbx.down_for.store(0, SeqCst);
    let calls = world.dials(3).await;
    assert_eq!(calls[2].1["action"], "dial");
    assert_eq!(calls[2].1["agent"], "petro");
    assert!(calls[2].1.get("transfer_from").is_none(), "{:?}", calls[2]);
    world.dialled_exactly(3).await;
    world.routing.set(contact, "closed", None);
    instance.stop().await;
}

/// An instance that takes a call over from one that stopped (the PBX had
/// sent its `newCall` to both) starts from what the instance before noted
/// of whose phone has the call: a transfer from the agent who has it names
/// her, and once the leader had the PBX release her leg, the next dial
/// names nobody (this instance had seen her connected, not the release).
#[tokio::test]
async fn an_instance_taking_a_call_over_starts_from_the_note() {
    let world = World::new().await;
    let first = world.instance(1).await;
    let second = world.instance(2).await;
    let contact = world.new_call(&first, "k1").await;
    assert_eq!(world.new_call(&second, "k1").await, contact);
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(contact, "assigned", Some("olha"));
    world.noted(contact, Some("olha")).await;
    world.routing.set(contact, "waiting", None);
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["action"], "release", "{:?}", dials[1]);
    world.noted(contact, None).await;
    first.stop().await;
    world.routing.set(contact, "offered", Some("petro"));
    let dials = world.dials(3).await;
    assert_eq!(dials[2].1["agent"], "petro");
    assert!(dials[2].1.get("transfer_from").is_none(), "{:?}", dials[2]);
    world.routing.set(contact, "assigned", Some("petro"));
    world.noted(contact, Some("petro")).await;

    // The same for a call the first instance connected and stopped after.
    let first = world.instance(3).await;
    let other = world.new_call(&first, "k2").await;
    assert_eq!(world.new_call(&second, "k2").await, other);
    world.routing.set(other, "offered", Some("olha"));
    let dials = world.dials(4).await;
    assert_eq!(dials[3].1["callId"], "k2");
    world.routing.set(other, "assigned", Some("olha"));
    world.noted(other, Some("olha")).await;
    first.stop().await;
    world.routing.set(other, "offered", Some("petro"));
    let dials = world.dials(5).await;
    assert_eq!(dials[4].1["agent"], "petro");
    assert_eq!(dials[4].1["transfer_from"], "olha", "{:?}", dials[4]);
    world.dialled_exactly(5).await;
    world.routing.set(contact, "closed", None);
    world.routing.set(other, "closed", None);
    second.stop().await;
}

/// With `release_after_secs = 0` a connected call waiting in a queue is
/// left on the agent's phone (a PBX without the release action), and the
/// next dial transfers from her.
#[tokio::test]
async fn a_pbx_may_be_never_asked_to_release_a_caller() {
    let world = World::new().await;
    let instance = world
        .instance_with(1, json!({"release_after_secs": 0}))
        .await;
    let contact = world.new_call(&instance, "n1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(contact, "assigned", Some("olha"));
    world.noted(contact, Some("olha")).await;
    world.routing.set(contact, "waiting", None);
    // Well past the 5 s default and the 2 s the other tests release after.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    world.dialled_exactly(1).await;
    world.routing.set(contact, "offered", Some("petro"));
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["action"], "dial");
    assert_eq!(dials[1].1["transfer_from"], "olha", "{:?}", dials[1]);
    world.routing.set(contact, "closed", None);
    instance.stop().await;
}

/// A call that began on another instance after this one started is
/// followed from the registry within seconds: when that instance stops,
/// this one dials its offer (it took up to 30 s).
#[tokio::test]
async fn a_call_begun_on_another_instance_is_followed_within_seconds() {
    let world = World::new().await;
    let second = world.instance(2).await;
    // Its look at the registry at its start is over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = world.instance(1).await;
    let contact = world.new_call(&first, "b1").await;
    world.routing.set(contact, "waiting", None);
    first.stop().await;
    world.routing.set(contact, "offered", Some("olha"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["callId"], "b1");
    assert_eq!(dials[0].1["agent"], "olha");
    world.dialled_exactly(1).await;
    world.routing.set(contact, "closed", None);
    second.stop().await;
}

/// The PBX repeating its `newCall` while the call waits starts no second
/// dispatcher: each offer is dialled once.
#[tokio::test]
async fn a_repeated_new_call_is_followed_once() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "c1").await;
    world.routing.set(contact, "waiting", None);
    world.new_call(&instance, "c1").await;
    world.new_call(&instance, "c1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.dialled_exactly(1).await;
    // Once the call is connected its dispatcher follows it on (for a
    // transfer), and a later repeat starts no second one.
    world.routing.set(contact, "assigned", Some("olha"));
    world.noted(contact, Some("olha")).await;
    world.new_call(&instance, "c1").await;
    world.dialled_exactly(1).await;
    instance.stop().await;
}

/// A connected call transferred in the console (routing offers it to
/// another agent) is dialled to her, naming the agent whose phone has it in
/// `transfer_from`; her answer connects it, and a transfer onwards names
/// her. Before, the dispatcher stopped at the first connection: the offer
/// was never dialled, lapsed as her miss, and the caller stayed with the
/// first agent.
#[tokio::test]
async fn a_transfer_of_a_connected_call_is_dialled() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "c1").await;
    world.routing.set(contact, "offered", Some("olha"));
    let dials = world.dials(1).await;
    assert!(dials[0].1.get("transfer_from").is_none(), "{:?}", dials[0]);
    world.routing.set(contact, "assigned", Some("olha"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Olha transfers it to petro: back to waiting, then offered to him.
    world.routing.set(contact, "waiting", None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    world.routing.set(contact, "offered", Some("petro"));
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["agent"], "petro");
    assert_eq!(dials[1].1["callId"], "c1");
    assert_eq!(dials[1].1["number"], "sip:202@pbx.example.com");
    assert_eq!(dials[1].1["transfer_from"], "olha");
    world.routing.set(contact, "assigned", Some("petro"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    world.dialled_exactly(2).await;
    // Petro passes it back to olha, whose queue accepts at once: the
    // assignment nobody rang is dialled, from petro.
    world.routing.set(contact, "assigned", Some("olha"));
    let dials = world.dials(3).await;
    assert_eq!(dials[2].1["agent"], "olha");
    assert_eq!(dials[2].1["transfer_from"], "petro");
    world.dialled_exactly(3).await;
    world.routing.set(contact, "closed", None);
    instance.stop().await;
}

/// A connected call transferred to a queue with nobody free is taken off
/// the agent's phone once it has waited a moment (she is free in routing,
/// and would be rung for the next call while still talking): the PBX is
/// asked to release her leg, once, and the next agent's dial has no
/// `transfer_from` (the PBX holds the caller). A PBX that refuses the
/// action leaves the caller with her, and the next dial transfers from her.
#[tokio::test]
async fn a_connected_call_waiting_in_a_queue_is_taken_off_the_agents_phone() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "q1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(contact, "assigned", Some("olha"));
    world.noted(contact, Some("olha")).await;
    world.routing.set(contact, "waiting", None);
    let calls = world.dials(2).await;
    assert_eq!(calls[1].1["action"], "release", "{:?}", calls[1]);
    assert_eq!(calls[1].1["agent"], "olha");
    assert_eq!(calls[1].1["callId"], "q1");
    assert!(calls[1].0.starts_with("release:"), "{:?}", calls[1]);
    world.dialled_exactly(2).await;
    world.routing.set(contact, "offered", Some("petro"));
    let calls = world.dials(3).await;
    assert_eq!(calls[2].1["action"], "dial");
    assert!(calls[2].1.get("transfer_from").is_none(), "{:?}", calls[2]);
    world.routing.set(contact, "closed", None);

    // A PBX without the action: refused, not asked again, and the caller
    // is transferred from olha's phone when someone is offered the call.
    let other = world.new_call(&instance, "q2").await;
    world.routing.set(other, "offered", Some("olha"));
    world.dials(4).await;
    world.routing.set(other, "assigned", Some("olha"));
    world.noted(other, Some("olha")).await;
    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::BAD_REQUEST);
    world.routing.set(other, "waiting", None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.pbx.refused.load(std::sync::atomic::Ordering::SeqCst) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        world.pbx.refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "asked once"
    );
    *world.pbx.refuse_with.lock().unwrap() = None;
    world.routing.set(other, "offered", Some("petro"));
    let calls = world.dials(5).await;
    assert_eq!(calls[4].1["action"], "dial");
    assert_eq!(calls[4].1["transfer_from"], "olha");
    world.routing.set(other, "closed", None);
    instance.stop().await;
}

/// An offer taken back (the agent's session lapsed) and made again to the
/// same agent is a new offer: the PBX is told to dial again, with an
/// `Idempotency-Key` of its own.
#[tokio::test]
async fn a_new_offer_to_the_same_agent_is_dialled_again() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "c1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.routing.set(contact, "waiting", None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    world.routing.set(contact, "offered", Some("olha"));
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["agent"], "olha");
    assert!(dials[0].0.starts_with(&format!("dial:{contact}:olha:")));
    assert_ne!(dials[0].0, dials[1].0, "each offer has its own key");
    // Another agent, then the first again: three offers, three dials more.
    world.routing.set(contact, "offered", Some("petro"));
    world.dials(3).await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(4).await;
    // Made again before the dispatcher's next look (one poll): told apart
    // by routing's stamp of the offer, dialled again.
    world.routing.set(contact, "offered", Some("olha"));
    let dials = world.dials(5).await;
    let agents: Vec<&str> = dials
        .iter()
        .map(|d| d.1["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["olha", "olha", "petro", "olha", "olha"]);
    assert_ne!(dials[3].0, dials[4].0, "each offer has its own key");
    world.dialled_exactly(5).await;
    instance.stop().await;
}

/// Two instances both told of a call (the PBX repeated its `newCall`
/// through a load balancer): one of them dials each offer, and when it
/// stops, the other takes over.
#[tokio::test]
async fn one_instance_dials_a_call_that_several_follow() {
    let world = World::new().await;
    let a = world.instance(1).await;
    let b = world.instance(2).await;
    let contact = world.new_call(&a, "c1").await;
    world.routing.set(contact, "waiting", None);
    world.new_call(&b, "c1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.dialled_exactly(1).await;

    // The instance that took the call first stops; the other dials the
    // next offer.
    world.routing.set(contact, "waiting", None);
    a.stop().await;
    world.routing.set(contact, "offered", Some("petro"));
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["agent"], "petro");
    world.dialled_exactly(2).await;
    b.stop().await;
}

/// The instance that dialled an offer stops gracefully (its lease goes to
/// the other at once) while the offer stands: the other does not dial the
/// same offer again (it re-transferred a ringing call unless the PBX
/// honoured the `Idempotency-Key`; the sample scripts do not).
#[tokio::test]
async fn an_offer_dialled_before_a_hand_over_is_not_dialled_again() {
    let world = World::new().await;
    let a = world.instance(1).await;
    let b = world.instance(2).await;
    let contact = world.new_call(&a, "h1").await;
    world.routing.set(contact, "waiting", None);
    world.new_call(&b, "h1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    world.dialled_exactly(1).await;
    a.stop().await;
    world.dialled_exactly(1).await;
    // A new offer is still dialled by the instance left.
    world.routing.set(contact, "offered", Some("petro"));
    let dials = world.dials(2).await;
    assert_eq!(dials[1].1["agent"], "petro");
    b.stop().await;
}

/// A queue that auto-accepts assigns the call without an offer: the
/// agent's phone must still ring (the dispatcher stopped at `assigned`, so
/// the caller waited in the PBX's queue for ever).
#[tokio::test]
async fn an_auto_accepted_call_is_dialled() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "a1").await;
    world.routing.set(contact, "waiting", None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    world.routing.set(contact, "assigned", Some("petro"));
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["agent"], "petro");
    assert_eq!(dials[0].1["number"], "sip:202@pbx.example.com");
    world.dialled_exactly(1).await;
    // A repeat of its newCall (the PBX's retry) starts nothing new.
    world.new_call(&instance, "a1").await;
    world.dialled_exactly(1).await;
    instance.stop().await;
}

/// The agent accepts in the console while the PBX is not taking the dial
/// callback: the callback is still retried until the PBX takes it (the
/// retries stopped once the call was no longer "offered").
#[tokio::test]
async fn an_accept_while_the_pbx_is_down_is_still_dialled() {
    let world = World::new().await;
    world
        .pbx
        .down_for
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "d1").await;
    world.routing.set(contact, "offered", Some("olha"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.pbx.down_for.load(std::sync::atomic::Ordering::SeqCst) == 2 {
        assert!(Instant::now() < deadline, "the offer was never dialled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(world.pbx.count(), 0, "the PBX refused the first callback");
    let until = world.routing.views.lock().unwrap()[&contact].offer_until;
    world.routing.set(contact, "assigned", Some("olha"));
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["agent"], "olha");
    assert_eq!(
        dials[0].0,
        format!("dial:{contact}:olha:{}", until.unwrap()),
        "the offer's own key"
    );
    // Accepted: the phone rings as long as the PBX lets it, not for what
    // was left of the offer.
    assert_eq!(dials[0].1.get("ring_timeout"), None, "{}", dials[0].1);
    world.dialled_exactly(1).await;
    instance.stop().await;
}

/// An offer with under two seconds left rings for one (a dial without a
/// ring limit rang on while the next agent's phone rang for the same
/// call); one whose deadline has passed (routing has not moved it on yet)
/// is not dialled at all.
#[tokio::test]
async fn a_short_offer_rings_briefly_and_a_lapsed_one_not_at_all() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "late1").await;
    let now = switchboard_core::Timestamp::now().as_millis();
    world.routing.offer(contact, "olha", now + 1500);
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["ring_timeout"], 1, "{}", dials[0].1);
    let late = world.new_call(&instance, "late2").await;
    world.routing.offer(late, "petro", now - 100);
    world.dialled_exactly(1).await;
    instance.stop().await;
}

/// An assigned call the PBX would not take: the instance that claimed its
/// ringing stops gracefully; the instance following it next rings it (the
/// claim was held for an hour, so the call was never rung). Meanwhile the
/// refused dials are retried with backoff, not at every poll.
#[tokio::test]
async fn an_assigned_call_is_rung_by_the_next_instance_after_a_stop() {
    let world = World::new().await;
    world
        .pbx
        .down_for
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let a = world.instance(1).await;
    let b = world.instance(2).await;
    let contact = world.new_call(&a, "s1").await;
    // The PBX's repeat reaches the other instance while the call waits.
    world.new_call(&b, "s1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.routing.set(contact, "assigned", Some("olha"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let refused = 1000 - world.pbx.down_for.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=8).contains(&refused), "{refused} dials in 6 s");
    assert_eq!(world.pbx.count(), 0);
    a.stop().await;
    world
        .pbx
        .down_for
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.pbx.count() == 0 {
        assert!(Instant::now() < deadline, "never rung after the stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.dialled_exactly(1).await;
    assert_eq!(world.pbx.dials()[0].1["agent"], "olha");
    b.stop().await;
}

/// An instance crashed (no graceful stop: its claim to ring stays until it
/// lapses) after the call was auto-assigned and before the PBX took the
/// dial. The instance the PBX repeats its `newCall` to rings the call once
/// that claim lapses; it took an assigned call it had not seen wait for
/// connected, and the caller waited for ever. Once rung, a repeat rings
/// nothing more.
#[tokio::test]
async fn an_assignment_whose_instance_crashed_before_the_dial_is_rung() {
    let world = World::new().await;
    let first = world.instance(1).await;
    let contact = world.new_call(&first, "k1").await;
    first.stop().await;
    world.routing.set(contact, "assigned", Some("olha"));
    let stamp = world.routing.views.lock().unwrap()[&contact].stamp.unwrap();
    // What the crashed instance left: its claim, for two seconds more.
    let claimed = world
        .state_of(99)
        .hold(
            &format!("ring:{contact}:olha:{stamp}"),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(claimed);
    let second = world.instance(2).await;
    world.new_call(&second, "k1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(world.pbx.count(), 0, "not while another instance claims it");
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["agent"], "olha");
    assert_eq!(dials[0].0, format!("dial:{contact}:olha:{stamp}"));
    world.dialled_exactly(1).await;
    world.new_call(&second, "k1").await;
    world.dialled_exactly(1).await;
    second.stop().await;
    // Nor after a restart.
    let third = world.instance(3).await;
    world.new_call(&third, "k1").await;
    world.dialled_exactly(1).await;
    third.stop().await;
}

/// The PBX reports who answered in its own spelling: a SIP address in
/// upper case with parameters, or the bare extension of a SIP agent. Each
/// is the configured agent (they matched nobody: the answer was dropped,
/// the offer lapsed as her miss, and the call went to the next agent while
/// she talked). Someone who is no agent is counted, not guessed.
#[tokio::test]
async fn an_answer_in_another_spelling_is_the_agents() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world.instance(1).await;
    for (id, who) in [
        (
            "a1",
            json!({"answeringNumber": "SIP:202@PBX.example.com;transport=tcp"}),
        ),
        ("a2", json!({"answeringNumber": "202"})),
        ("a3", json!({"user": ["<sip:201>"]})),
        ("a4", json!({"answeringNumber": "reception@example.com"})),
        // Her id, in another case.
        ("a5", json!({"user": ["Petro"]})),
    ] {
        let contact = world.new_call(&instance, id).await;
        let mut event = json!({"event": "answer", "direction": "in", "callId": id,
            "from": "+380501234567", "to": "4930609854180"});
        event
            .as_object_mut()
            .unwrap()
            .extend(who.as_object().unwrap().clone());
        let reply = world.post(&instance, TOKEN, &event).await;
        assert_eq!(reply.status(), 200, "{id}");
        let accepted = world.routing.accepted.lock().unwrap().clone();
        let want = match id {
            "a1" | "a2" | "a5" => Some("petro"),
            "a3" => Some("olha"),
            _ => None,
        };
        assert_eq!(
            accepted
                .iter()
                .find(|(c, _)| *c == contact)
                .map(|(_, a)| a.as_str()),
            want,
            "{id}: {accepted:?}"
        );
    }
    assert_eq!(
        counters.get("switchboard_voice_calls_total{outcome=answered_by_unknown,source=pbx}"),
        1,
        "{}",
        counters.dump()
    );
    instance.stop().await;
}

/// Routing ended a waiting call itself (closed after hours): the PBX's next
/// newCall for it, from its hold loop, is told to let the caller go.
#[tokio::test]
async fn a_call_routing_has_ended_is_rejected_when_repeated() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "e1").await;
    world.routing.set(contact, "closed", None);
    let reply = world
        .post(
            &instance,
            TOKEN,
            &json!({"event": "newCall", "direction": "in", "callId": "e1",
            "from": "+380501234567", "to": "4930609854180"}),
        )
        .await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.unwrap(),
        json!({"action": "reject", "reason": "rejected"})
    );
    world.dialled_exactly(0).await;
    instance.stop().await;
}

/// A body over the limit is refused while it is read, before the token is
/// looked at, and counted (axum's default let 2 MiB in first, and answered
/// in plain text, uncounted).
#[tokio::test]
async fn an_oversized_body_is_a_counted_refusal() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world.instance(0).await;
    let padding = "x".repeat(crate::MAX_BODY_BYTES);
    for token in [TOKEN, "wrong-token"] {
        let reply = world
            .post(
                &instance,
                token,
                &json!({"event": "newCall", "direction": "in", "callId": "big",
                "from": "+380501234567", "to": "4930609854180", "pad": padding}),
            )
            .await;
        assert_eq!(reply.status(), 413, "{token}");
    }
    assert_eq!(
        counters.get("switchboard_voice_requests_total{endpoint=cti,outcome=too_large,source=pbx}"),
        2,
        "{}",
        counters.dump()
    );
    assert!(
        world.intake.calls.lock().unwrap().is_empty(),
        "nothing stored"
    );
    instance.stop().await;
}

/// A hangup of a call that is not a contact (outbound, or its newCall
/// never reached us) is answered, and counted as such rather than as an
/// ordinary call event.
#[tokio::test]
async fn an_event_of_an_unknown_call_is_counted() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world
        .instance_with(0, json!({"blocked": ["+48220000000"]}))
        .await;
    let reply = world
        .post(
            &instance,
            TOKEN,
            &json!({"event": "hangup", "direction": "in", "callId": "never-seen",
            "from": "+380501234567", "to": "4930609854180", "cause": "normalClearing"}),
        )
        .await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        counters.get("switchboard_voice_calls_total{outcome=unknown_call,source=pbx}"),
        1,
        "{}",
        counters.dump()
    );
    // An outbound call's newCall is not a contact either: counted so too
    // (it was answered and counted nowhere).
    let reply = world
        .post(
            &instance,
            TOKEN,
            &json!({"event": "newCall", "direction": "out", "callId": "outbound-1",
            "from": "201", "to": "+380501234567"}),
        )
        .await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        counters.get("switchboard_voice_calls_total{outcome=unknown_call,source=pbx}"),
        2,
        "{}",
        counters.dump()
    );
    // A blocked caller's hangup (after the newCall we rejected) is neither
    // an unknown call nor remembered for a newCall that will not come.
    let blocked = |event: &str| {
        json!({"event": event, "direction": "in", "callId": "blocked-1",
            "from": "+48220000000", "to": "4930609854180", "cause": "normalClearing"})
    };
    let reply = world.post(&instance, TOKEN, &blocked("newCall")).await;
    assert_eq!(reply.json::<Value>().await.unwrap()["action"], "reject");
    let reply = world.post(&instance, TOKEN, &blocked("hangup")).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        counters.get("switchboard_voice_calls_total{outcome=unknown_call,source=pbx}"),
        2,
        "{}",
        counters.dump()
    );
    let remembered = switchboard_channel::ChannelState::get(&world.state_of(0), "hungup:blocked-1")
        .await
        .unwrap();
    assert_eq!(remembered, None);
    instance.stop().await;
}

/// Dial callbacks carry the inbound token unless a callback token of its
/// own is configured (then the PBX never holds the token that posts
/// events); a short one is refused by the validation.
#[tokio::test]
async fn callbacks_carry_their_own_token_when_configured() {
    const CALLBACK: &str = "callback-token-9876543210";
    let world = World::new().await;
    let plain = world.instance(1).await;
    let first = world.new_call(&plain, "k1").await;
    world.routing.set(first, "offered", Some("olha"));
    world.dials(1).await;
    plain.stop().await;
    let own = world
        .instance_with(2, json!({"callback_token": CALLBACK}))
        .await;
    let second = world.new_call(&own, "k2").await;
    world.routing.set(second, "offered", Some("olha"));
    world.dials(2).await;
    let auth = world.pbx.auth.lock().unwrap().clone();
    assert_eq!(
        auth,
        [format!("Bearer {TOKEN}"), format!("Bearer {CALLBACK}")]
    );
    own.stop().await;
    let short: CtiConfig = serde_json::from_value(json!({
        "name": "pbx", "token": TOKEN, "callback_url": world.callback, "callback_token": "short",
    }))
    .unwrap();
    let e = short.validate().unwrap_err().to_string();
    assert!(e.contains("callback_token"), "{e}");
    let slow: CtiConfig = serde_json::from_value(json!({
        "name": "pbx", "token": TOKEN, "callback_url": world.callback, "release_after_secs": 3601,
    }))
    .unwrap();
    let e = slow.validate().unwrap_err().to_string();
    assert!(e.contains("release_after_secs"), "{e}");
    // Printed, the configuration shows neither token nor one in the URL.
    let printed: CtiConfig = serde_json::from_value(json!({
        "name": "pbx", "token": TOKEN, "callback_token": CALLBACK,
        "callback_url": "https://pbx:pa55@pbx.example.com/dial?key=s3cret",
    }))
    .unwrap();
    let shown = format!("{printed:?}");
    for secret in [TOKEN, CALLBACK, "pa55", "s3cret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("pbx.example.com/dial"), "{shown}");
    // The configuration's check of `agents`.
    let check = |agents: serde_json::Value| {
        let config: CtiConfig = serde_json::from_value(json!({
            "name": "pbx", "token": TOKEN, "callback_url": world.callback,
            "callback_token": CALLBACK, "agents": agents,
        }))
        .unwrap();
        config.validate().map_err(|e| e.to_string())
    };
    for (phones, why) in [
        (
            json!({"olha": "sip:201@pbx.example.com", "petro": "<SIP:201@pbx.example.com>"}),
            "one phone written two ways: an answer could not tell them apart",
        ),
        (
            json!({"olha": "201", "petro": "sip:201@pbx.example.com"}),
            "the extension, and a SIP address with that user part (an answer reported as 201 went to the first)",
        ),
    ] {
        let e = check(phones).unwrap_err();
        assert!(
            e.contains("agents.petro") && e.contains("agents.olha"),
            "{why}: {e}"
        );
    }
    // Different phones on one PBX are fine.
    check(json!({"olha": "sip:201@pbx.example.com", "petro": "sip:202@pbx.example.com", "ivan": "203"}))
        .unwrap();
}

/// A hangup that comes before its call's newCall is stored (events
/// reordered between instances, or a caller who hangs up at once): the
/// newCall that follows ends the call instead of routing it (it was routed
/// and dialled, every lapsed offer counting against an agent).
#[tokio::test]
async fn a_hangup_before_its_new_call_ends_the_call() {
    let world = World::new().await;
    let a = world.instance(1).await;
    let b = world.instance(2).await;
    let reply = world
        .post(
            &a,
            TOKEN,
            &json!({"event": "hangup", "direction": "in", "callId": "early",
            "from": "+380501234567", "to": "4930609854180", "cause": "normalClearing"}),
        )
        .await;
    assert_eq!(reply.status(), 200);
    let contact = world.new_call(&b, "early").await;
    let ended = world.routing.ended.lock().unwrap().clone();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].0, contact);
    // Followed only until its dispatcher sees it closed: an offer made
    // anyway after that is not dialled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dialled_exactly(0).await;
    assert_eq!(world.routing.ended.lock().unwrap().len(), 1);
    a.stop().await;
    b.stop().await;
}

/// An id names its agent exactly first; in another case only when one id
/// alone matches so (`Ann` and `ann` may both be agents).
#[test]
fn an_id_in_another_case_names_one_agent_or_none() {
    let agents: std::collections::BTreeMap<String, String> =
        [("Ann", "201"), ("ann", "202"), ("petro", "203")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
    assert_eq!(super::agent_by_id(&agents, "ann").as_deref(), Some("ann"));
    assert_eq!(super::agent_by_id(&agents, "Ann").as_deref(), Some("Ann"));
    assert_eq!(super::agent_by_id(&agents, "ANN"), None);
    assert_eq!(
        super::agent_by_id(&agents, " Petro ").as_deref(),
        Some("petro")
    );
    assert_eq!(super::agent_by_id(&agents, "olha"), None);
}

/// The hangup of an outbound call (never a contact) is not remembered for
/// a `newCall` that will never come; an inbound one is. Every outbound and
/// internal call's hangup wrote a marker for an hour (the check could not
/// fail: the call was looked at as inbound).
#[tokio::test]
async fn an_outbound_hangup_is_not_remembered() {
    let world = World::new().await;
    let a = world.instance(1).await;
    for (direction, call) in [("out", "dialled-out"), ("in", "hung-up-in")] {
        let reply = world
            .post(
                &a,
                TOKEN,
                &json!({"event": "hangup", "direction": direction, "callId": call,
                "from": "4930609854180", "to": "+380501234567", "cause": "normalClearing"}),
            )
            .await;
        assert_eq!(reply.status(), 200);
    }
    let memory = world.state_of(1);
    assert_eq!(memory.get("hungup:dialled-out").await.unwrap(), None);
    assert!(memory.get("hungup:hung-up-in").await.unwrap().is_some());
    a.stop().await;
}

/// An offer whose deadline passed before it was dialled is not dialled,
/// and counted `too_late` once, not at every poll while routing has not
/// moved it on yet.
#[tokio::test]
async fn a_lapsed_offer_is_counted_too_late_once() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "late1").await;
    let past = switchboard_core::Timestamp::now().as_millis() - 1_000;
    world.routing.offer(contact, "olha", past);
    world.dialled_exactly(0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        counters.get("switchboard_voice_callbacks_total{outcome=too_late,source=pbx}"),
        1,
        "{}",
        counters.dump()
    );
    instance.stop().await;
}

/// The dial instruction says how long the phone may ring: no longer than
/// the offer lasts (the PBX rang on, and an answer after the offer's end
/// found the call offered to the next agent).
#[tokio::test]
async fn a_dial_rings_no_longer_than_the_offer_lasts() {
    let world = World::new().await;
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "t1").await;
    let until = switchboard_core::Timestamp::now().as_millis() + 20_000;
    world.routing.offer(contact, "olha", until);
    let dials = world.dials(1).await;
    let ring = dials[0].1["ring_timeout"].as_u64().expect("a ring timeout");
    assert!((15..=19).contains(&ring), "{ring}");
    assert_eq!(dials[0].0, format!("dial:{contact}:olha:{until}"));
    instance.stop().await;
}

/// Two instances follow a call. An auto-accepted call is rung once: the
/// instance that rang it lets its lease go, and the other, leading next,
/// finds the ring claimed. A call whose offer the leader dialled, then
/// answered, is not rung again by the other either (it would move a
/// caller already talking to the agent).
#[tokio::test]
async fn a_call_two_instances_follow_is_rung_once() {
    let world = World::new().await;
    let a = world.instance(1).await;
    let b = world.instance(2).await;
    let auto = world.new_call(&a, "x1").await;
    world.routing.set(auto, "waiting", None);
    world.new_call(&b, "x1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    world.routing.set(auto, "assigned", Some("petro"));
    world.dials(1).await;
    // Past the other instance's next try for the lease (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.dialled_exactly(1).await;

    let offered = world.new_call(&a, "x2").await;
    world.routing.set(offered, "waiting", None);
    world.new_call(&b, "x2").await;
    world.routing.set(offered, "offered", Some("olha"));
    world.dials(2).await;
    world.routing.set(offered, "assigned", Some("olha"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.dialled_exactly(2).await;
    a.stop().await;
    b.stop().await;
}

/// A dial callback the PBX refuses for good (a 4xx other than 408, 409,
/// 422, 425, 429) is not asked again: the call is passed on to the next agent, and
/// the refusal counted. A 429 is asked again. (Every refusal was retried,
/// uncounted, for as long as the offer lasted, and an assigned call for as
/// long as it stayed assigned.)
#[tokio::test]
async fn a_dial_the_pbx_refuses_for_good_passes_the_call_on() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::FORBIDDEN);
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "r1").await;
    world.routing.set(contact, "offered", Some("olha"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.routing.passed.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the call was never passed on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        world.routing.passed.lock().unwrap().clone(),
        vec![(contact, "olha".to_owned())]
    );
    assert!(
        world.routing.declined.lock().unwrap().is_empty(),
        "passed on, not declined (a miss of hers)"
    );
    // Not asked again (retries come every 200 ms doubling).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        world.pbx.refused.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Our credentials refused (counted apart, an outage of the channel),
    // then another 4xx (a number the PBX will not ring) is this agent's.
    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::NOT_FOUND);
    let unringable = world.new_call(&instance, "r0").await;
    world.routing.set(unringable, "offered", Some("petro"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.routing.passed.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the call was never passed on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = |o: &str| {
        counters.get(&format!(
            "switchboard_voice_callbacks_total{{outcome={o},source=pbx}}"
        ))
    };
    assert_eq!(
        (outcome("unauthorized"), outcome("refused")),
        (1, 1),
        "{}",
        counters.dump()
    );

    // Too many requests: asked again, and taken once the PBX is willing.
    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::TOO_MANY_REQUESTS);
    let other = world.new_call(&instance, "r2").await;
    world.routing.set(other, "offered", Some("petro"));
    let deadline = Instant::now() + Duration::from_secs(5);
    // Two refused above, then two 429s.
    while world.pbx.refused.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "a 429 was not asked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *world.pbx.refuse_with.lock().unwrap() = None;
    let dials = world.dials(1).await;
    assert_eq!(dials[0].1["agent"], "petro");
    assert_eq!(world.routing.passed.lock().unwrap().len(), 2);
    instance.stop().await;
}

/// A newCall whose hangup came first, where ending the call fails (routing
/// unreachable: answered 503, and the PBX queues the caller whatever the
/// answer and never repeats a newCall): the call is still followed, and
/// ended once routing answers. So is a call whose own hangup could not be
/// acted on when it came. (The newCall was neither registered nor
/// followed, and a hangup answered 503 was lost: both calls were offered
/// to agent after agent for a caller who was gone.)
#[tokio::test]
async fn a_hangup_that_could_not_be_acted_on_still_ends_the_call() {
    use std::sync::atomic::Ordering::SeqCst;
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let world = World::new().await;
    let instance = world.instance(1).await;
    let hangup = |id: &str| {
        json!({"event": "hangup", "direction": "in", "callId": id,
            "from": "+380501234567", "to": "4930609854180", "cause": "normalClearing"})
    };
    let reply = world.post(&instance, TOKEN, &hangup("gone")).await;
    assert_eq!(reply.status(), 200);
    world.routing.fail_end.store(true, SeqCst);
    let reply = world
        .post(
            &instance,
            TOKEN,
            &json!({"event": "newCall", "direction": "in", "callId": "gone",
                "from": "+380501234567", "to": "4930609854180"}),
        )
        .await;
    assert_eq!(reply.status(), 503);
    let early = world.intake.contact("gone");
    // Offered meanwhile (routing knows nothing of the hangup): the PBX is
    // not told to ring an agent for a caller who is gone.
    world.routing.set(early, "offered", Some("olha"));
    // A call stored and queued, whose hangup is answered 503.
    world.routing.fail_end.store(false, SeqCst);
    let later = world.new_call(&instance, "later").await;
    world.routing.fail_end.store(true, SeqCst);
    let reply = world.post(&instance, TOKEN, &hangup("later")).await;
    assert_eq!(reply.status(), 503);
    world.routing.fail_end.store(false, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ended: Vec<ContactId> = world
            .routing
            .ended
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| *c)
            .collect();
        if ended.contains(&early) && ended.contains(&later) {
            assert_eq!(ended.len(), 2, "{ended:?}");
            break;
        }
        assert!(Instant::now() < deadline, "ended: {ended:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counters.get("switchboard_voice_calls_total{outcome=ended_after_hangup,source=pbx}"),
        2,
        "{}",
        counters.dump()
    );
    world.dialled_exactly(0).await;
    instance.stop().await;
}

/// A dial whose answer was lost and whose next try the PBX answers 422
/// (the first try was taken, with another ring time) is taken as
/// delivered: not dialled again while the offer stands, nor once the
/// call is assigned (it was dialled every few seconds for the call's
/// length), whether the next try was the offer's or, the agent having
/// answered the lost one, the assignment's. A redirect is no for good:
/// the call is passed on.
#[tokio::test]
async fn a_repeated_key_after_a_lost_answer_is_a_dial_taken() {
    use std::sync::atomic::Ordering::SeqCst;
    let world = World::new().await;
    world.pbx.lose_answers.store(1, SeqCst);
    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    let instance = world.instance(1).await;
    let contact = world.new_call(&instance, "k1").await;
    world.routing.set(contact, "offered", Some("olha"));
    world.dials(1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.pbx.refused.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the dial was never tried again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.routing.set(contact, "assigned", Some("olha"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(world.pbx.refused.load(SeqCst), 1, "dialled again");
    assert!(world.routing.passed.lock().unwrap().is_empty());

    // She answered the dial whose answer was lost: the call is assigned
    // before the next try, which is the assignment's, with the same key.
    world.pbx.lose_answers.store(1, SeqCst);
    let answered = world.new_call(&instance, "k3").await;
    world.routing.set(answered, "offered", Some("petro"));
    world.dials(2).await;
    world.routing.set(answered, "assigned", Some("petro"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.pbx.refused.load(SeqCst) == 1 {
        assert!(
            Instant::now() < deadline,
            "the assignment was never dialled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        world.pbx.refused.load(SeqCst),
        2,
        "the assignment dialled again"
    );
    world.routing.set(answered, "closed", None);

    *world.pbx.refuse_with.lock().unwrap() = Some(axum::http::StatusCode::TEMPORARY_REDIRECT);
    let moved = world.new_call(&instance, "k2").await;
    world.routing.set(moved, "offered", Some("petro"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.routing.passed.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "a redirect was asked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(world.pbx.refused.load(SeqCst), 3);
    world.routing.set(contact, "closed", None);
    world.routing.set(moved, "closed", None);
    instance.stop().await;
}
