//! Whole calls through the generic CTI API of a running daemon, with a
//! local PBX stand-in receiving our dial callbacks: an answered call whose
//! PBX is down at first (the callback is retried until it answers, and the
//! call is still connected), a ring that nobody picks up going to the next
//! agent, a caller who hangs up while queued (abandoned, never offered), a
//! blocked caller, and a wrong token. And a call waiting through a restart
//! of the daemon: the PBX repeats its `newCall`, and the call is dialled
//! once an agent is chosen; and a connected call transferred in the
//! console, dialled to the colleague with `transfer_from`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_e2e::*;

const TOKEN: &str = "cti-shared-token-0123456789";
const SUPERVISOR: &str = "supervisor-token-0123456789";

#[derive(Default)]
struct Pbx {
    /// Requests to refuse with 503 before accepting (the PBX is down).
    down_for: AtomicUsize,
    attempts: AtomicUsize,
    dials: Mutex<Vec<Value>>,
}

async fn pbx() -> (String, Arc<Pbx>) {
    async fn callback(
        State(pbx): State<Arc<Pbx>>,
        Json(body): Json<Value>,
    ) -> axum::http::StatusCode {
        pbx.attempts.fetch_add(1, Ordering::SeqCst);
        if pbx
            .down_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        pbx.dials.lock().unwrap().push(body);
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

fn config(callback: &str) -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 0
missed_offers_before_away = 1

[routing.offer_timeout_secs]
voice = 5

[[routing.agents]]
id = "olha"
capacity = {{ voice = 1 }}
token = "olha-agent-token-0123456789"

[[routing.agents]]
id = "petro"
capacity = {{ voice = 1 }}
token = "petro-agent-token-0123456789"

[agent_api]
supervisor_token = "{SUPERVISOR}"

[[channels]]
type = "cti"
name = "pbx"
token = "{TOKEN}"
callback_url = "{callback}"
blocked = ["+48220000000"]

[channels.agents]
olha = "201"
petro = "sip:202@pbx.example.com"
"#
    )
}

async fn event(http: &Http, base: &str, body: Value) -> Reply {
    http.post(
        &format!("{base}/channels/pbx/events"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
    .unwrap()
}

fn new_call(id: &str, from: &str) -> Value {
    json!({"event": "newCall", "direction": "in", "callId": id, "from": from, "to": "4930609854180"})
}

async fn state_of(http: &Http, base: &str, contact: &str) -> String {
    http.routing(base, SUPERVISOR, contact).await["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The contact id of the call stored most recently for `from`.
async fn contact_for(redis: &str, from: &str) -> String {
    let client = redis::Client::open(redis).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sb:{p*}:contact:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let customer: Option<String> = redis::AsyncCommands::hget(&mut conn, &key, "customer")
            .await
            .unwrap();
        if customer.as_deref() == Some(&format!("phone:{from}")) {
            return key.rsplit(':').next().unwrap().to_owned();
        }
    }
    panic!("no contact for {from}");
}

async fn online(base: &str, token: &str) -> AgentSocket {
    // Once the presence is answered, not after a guessed pause.
    AgentSocket::connect_available(base, token).await
}

#[tokio::test]
async fn calls_through_the_cti_api_with_a_pbx_that_is_down_at_first() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(&callback),
    );
    let http = Http::new();
    let base = daemon.base();

    // A wrong token changes nothing.
    let refused = http
        .post(
            &format!("{base}/channels/pbx/events"),
            &[
                ("authorization", "Bearer nope"),
                ("content-type", "application/json"),
            ],
            new_call("x1", "+380501234567").to_string(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    // A blocked caller is rejected as the CTI API documents it.
    let blocked = event(&http, &base, new_call("b1", "+48220000000")).await;
    assert_eq!(
        blocked.json(),
        json!({"action": "reject", "reason": "busy"})
    );
    assert!(stored_messages(&redis.url()).await.is_empty());

    // Answered, with the PBX down for the first two callbacks.
    pbx.down_for.store(2, Ordering::SeqCst);
    let _olha = online(&base, "olha-agent-token-0123456789").await;
    let held = event(&http, &base, new_call("c1", "+380501234567")).await;
    assert_eq!((held.status, held.json()), (200, json!({})));
    let contact = contact_for(&redis.url(), "+380501234567").await;
    // The PBX may repeat newCall for a waiting call: stored once.
    let again = event(&http, &base, new_call("c1", "+380501234567")).await;
    assert_eq!((again.status, again.json()), (200, json!({})));
    assert_eq!(stored_messages(&redis.url()).await.len(), 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !pbx.dials.lock().unwrap().is_empty()
        })
        .await,
        "the dial reached the PBX once it was back"
    );
    assert!(
        pbx.attempts.load(Ordering::SeqCst) >= 3,
        "retried while the PBX was down"
    );
    let dial = pbx.dials.lock().unwrap()[0].clone();
    assert_eq!(
        (
            dial["action"].as_str(),
            dial["callId"].as_str(),
            dial["number"].as_str(),
            dial["agent"].as_str()
        ),
        (Some("dial"), Some("c1"), Some("201"), Some("olha"))
    );
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "c1", "from": "+380501234567", "to": "4930609854180", "user": ["201"], "answeringNumber": "201"}),
    )
    .await;
    assert_eq!((answered.status, answered.json()), (200, json!({})));
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
    let hung_up = event(
        &http,
        &base,
        json!({"event": "hangup", "direction": "in", "callId": "c1", "from": "+380501234567", "to": "4930609854180", "cause": "normalClearing"}),
    )
    .await;
    assert_eq!(hung_up.status, 200);
    assert_eq!(state_of(&http, &base, &contact).await, "closed");
    // The caller is remembered for the agent who answered, as an agent's
    // close remembers a customer: calling back, they wait for her first.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let sticky: Option<String> =
        redis::AsyncCommands::get(&mut conn, "sb:{r}:sticky:pbx:phone:+380501234567")
            .await
            .unwrap();
    assert_eq!(sticky.as_deref(), Some("olha"));
    // The PBX repeats the answer after the hangup (its first reply lost):
    // nothing to release, the call is over.
    let again = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "c1", "from": "+380501234567", "to": "4930609854180", "answeringNumber": "201"}),
    )
    .await;
    assert_eq!((again.status, again.json()), (200, json!({})));
    assert_eq!(pbx.dials.lock().unwrap().len(), 1, "dialled once");

    // Nobody picks up: the offer lapses (5 s: short, yet room enough for
    // the dials and answers above on a loaded machine) and the next agent
    // is dialled.
    let _petro = online(&base, "petro-agent-token-0123456789").await;
    event(&http, &base, new_call("c2", "+380502222222")).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            pbx.dials.lock().unwrap().len() >= 3
        })
        .await,
        "a second agent was dialled after the first did not answer: {:?}",
        pbx.dials.lock().unwrap()
    );
    let dials = pbx.dials.lock().unwrap().clone();
    assert_eq!(dials[1]["callId"], "c2");
    assert_eq!(dials[2]["callId"], "c2");
    assert_ne!(dials[1]["agent"], dials[2]["agent"]);
    // The first agent picks up after her offer moved on: the PBX is told to
    // release her (she used to be connected, talking to a caller routing
    // had offered to the second agent), and the call stays with routing.
    let late = dials[1]["agent"].as_str().unwrap();
    let number = if late == "olha" {
        "201"
    } else {
        "sip:202@pbx.example.com"
    };
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "c2", "from": "+380502222222", "to": "4930609854180", "answeringNumber": number}),
    )
    .await;
    assert_eq!(
        (answered.status, answered.json()),
        (200, json!({"action": "release", "agent": late}))
    );
    let second = contact_for(&redis.url(), "+380502222222").await;
    let view = http.routing(&base, SUPERVISOR, &second).await;
    assert_ne!(view["state"], "assigned", "{view}");
    assert_ne!(view["agent"], late, "{view}");

    // A caller who hangs up while queued (both agents are now away or busy
    // with c2) is abandoned and never offered.
    event(&http, &base, new_call("c3", "+380503333333")).await;
    let third = contact_for(&redis.url(), "+380503333333").await;
    event(
        &http,
        &base,
        json!({"event": "hangup", "direction": "in", "callId": "c3", "from": "+380503333333", "to": "4930609854180", "cause": "cancel"}),
    )
    .await;
    assert_eq!(state_of(&http, &base, &third).await, "closed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pbx.dials
            .lock()
            .unwrap()
            .iter()
            .all(|d| d["callId"] != "c3"),
        "an abandoned call was dialled"
    );
}

/// A call waits (nobody online), the daemon restarts gracefully, the PBX
/// repeats its `newCall` as docs/voice.md asks, then an agent comes online:
/// the new process dials the call (it used to follow only calls it stored
/// itself, so the offer lapsed with the PBX never told).
#[tokio::test]
async fn a_call_waiting_through_a_restart_is_dialled_after_the_pbx_repeats_it() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(&callback),
    );
    let http = Http::new();
    let base = daemon.base();

    let held = event(&http, &base, new_call("r1", "+380504444444")).await;
    assert_eq!((held.status, held.json()), (200, json!({})));
    let contact = contact_for(&redis.url(), "+380504444444").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            state_of(&http, &base, &contact).await == "waiting"
        })
        .await,
        "the call waits in routing"
    );

    daemon.restart_gracefully();
    // A new client: the old one's pooled connection went with the process.
    let http = Http::new();
    let again = event(&http, &base, new_call("r1", "+380504444444")).await;
    assert_eq!((again.status, again.json()), (200, json!({})));
    assert_eq!(stored_messages(&redis.url()).await.len(), 1, "stored once");

    let _olha = online(&base, "olha-agent-token-0123456789").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !pbx.dials.lock().unwrap().is_empty()
        })
        .await,
        "the waiting call was dialled after the restart (routing: {})",
        state_of(&http, &base, &contact).await
    );
    let dial = pbx.dials.lock().unwrap()[0].clone();
    assert_eq!(
        (
            dial["callId"].as_str(),
            dial["number"].as_str(),
            dial["agent"].as_str()
        ),
        (Some("r1"), Some("201"), Some("olha"))
    );
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "r1", "from": "+380504444444", "to": "4930609854180", "answeringNumber": "201"}),
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
    assert_eq!(pbx.dials.lock().unwrap().len(), 1, "dialled once");
}

/// A voice queue that auto-accepts: routing assigns the call without an
/// offer, and the agent's phone is still dialled, once (the dispatcher
/// stopped at "assigned" and the caller waited in the PBX for ever).
#[tokio::test]
async fn a_call_of_an_auto_accepting_queue_is_dialled() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let queue = "[[routing.queues]]\nname = \"phones\"\nauto_accept = true\n\n\
                 [[routing.rules]]\nname = \"calls\"\nqueue = \"phones\"\nchannels = [\"voice\"]\n";
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &format!("{}\n{queue}", config(&callback)),
    );
    let http = Http::new();
    let base = daemon.base();
    let _petro = online(&base, "petro-agent-token-0123456789").await;

    let held = event(&http, &base, new_call("q1", "+380505555555")).await;
    assert_eq!((held.status, held.json()), (200, json!({})));
    let contact = contact_for(&redis.url(), "+380505555555").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !pbx.dials.lock().unwrap().is_empty()
        })
        .await,
        "the auto-assigned call was dialled (routing: {})",
        state_of(&http, &base, &contact).await
    );
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
    let dial = pbx.dials.lock().unwrap()[0].clone();
    assert_eq!(
        (dial["callId"].as_str(), dial["agent"].as_str()),
        (Some("q1"), Some("petro"))
    );
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "q1", "from": "+380505555555", "to": "4930609854180", "answeringNumber": "sip:202@pbx.example.com"}),
    )
    .await;
    assert_eq!(
        (answered.status, answered.json()),
        (200, json!({})),
        "the agent the call is assigned to is connected"
    );
    // A colleague we never dialled for the call picks up (a transfer made
    // on the PBX): the PBX's business, not released.
    let colleague = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "q1", "from": "+380505555555", "to": "4930609854180", "answeringNumber": "201"}),
    )
    .await;
    assert_eq!((colleague.status, colleague.json()), (200, json!({})));
    // A newCall the PBX repeats now (a late retry) dials nothing more.
    let again = event(&http, &base, new_call("q1", "+380505555555")).await;
    assert_eq!(again.status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
    assert_eq!(pbx.dials.lock().unwrap().len(), 1, "dialled once");
}

/// A call an auto-accepting queue assigns to an agent with no phone goes
/// back to its queue without her and reaches an agent with one. The
/// dispatcher stopped at "assigned, nothing to ring": the caller waited in
/// the PBX for ever.
#[tokio::test]
async fn a_call_assigned_to_an_agent_without_a_phone_goes_to_one_with_a_phone() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let extra = "[[routing.queues]]\nname = \"phones\"\nauto_accept = true\n\n\
                 [[routing.rules]]\nname = \"calls\"\nqueue = \"phones\"\nchannels = [\"voice\"]\n\n\
                 [[routing.agents]]\nid = \"ivan\"\ncapacity = { voice = 1 }\ntoken = \"ivan-agent-token-0123456789\"\n";
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &format!("{}\n{extra}", config(&callback)),
    );
    let http = Http::new();
    let base = daemon.base();
    let mut ivan = online(&base, "ivan-agent-token-0123456789").await;

    let held = event(&http, &base, new_call("r1", "+380506666666")).await;
    assert_eq!(held.status, 200);
    let contact = contact_for(&redis.url(), "+380506666666").await;
    let (requeued, _) = ivan.until("requeued", Duration::from_secs(10)).await;
    let requeued = requeued.unwrap_or_else(|| panic!("never requeued: {}", daemon.log()));
    assert_eq!(
        (requeued["contact_id"].as_str(), requeued["reason"].as_str()),
        (Some(contact.as_str()), Some("unreachable"))
    );
    // Left out of it: waiting, not assigned to him again and again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let routed = http.routing(&base, SUPERVISOR, &contact).await;
    assert_eq!(
        (routed["state"].as_str(), routed["excluded"].clone()),
        (Some("waiting"), json!(["ivan"])),
        "{routed}"
    );
    let _olha = online(&base, "olha-agent-token-0123456789").await;
    let dialled = || async { !pbx.dials.lock().unwrap().is_empty() };
    assert!(
        eventually(Duration::from_secs(10), dialled).await,
        "{}",
        daemon.log()
    );
    let dials = pbx.dials.lock().unwrap().clone();
    assert_eq!(dials.len(), 1, "{dials:?}");
    assert_eq!(dials[0]["agent"], "olha", "{dials:?}");
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
}

/// Two instances on one Redis. The one that took the call crashes
/// (SIGKILL) after routing auto-assigned it and before the PBX took the
/// dial; the PBX repeats its `newCall` to the other, which rings the
/// agent once the crashed instance's claim lapses. It took the assigned
/// call for connected, and the caller waited for ever.
#[tokio::test]
async fn a_call_auto_assigned_before_a_crash_is_rung_by_the_other_instance() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let queue = "[[routing.queues]]\nname = \"phones\"\nauto_accept = true\n\n\
                 [[routing.rules]]\nname = \"calls\"\nqueue = \"phones\"\nchannels = [\"voice\"]\n";
    let config = format!("{}\n{queue}", config(&callback));
    let binary = env!("CARGO_BIN_EXE_switchboard-under-test");
    let mut first = Daemon::start(binary, &redis.url(), &config);
    let second = Daemon::start(binary, &redis.url(), &config);
    let http = Http::new();
    let _olha = online(&second.base(), "olha-agent-token-0123456789").await;

    pbx.down_for.store(1_000_000, Ordering::SeqCst);
    let held = event(&http, &first.base(), new_call("k1", "+380507777777")).await;
    assert_eq!(held.status, 200);
    let contact = contact_for(&redis.url(), "+380507777777").await;
    let refused = || async { pbx.attempts.load(Ordering::SeqCst) >= 2 };
    assert!(
        eventually(Duration::from_secs(10), refused).await,
        "the first instance tried to ring: {}",
        first.log()
    );
    assert_eq!(state_of(&http, &second.base(), &contact).await, "assigned");
    first.kill9();
    let killed = std::time::Instant::now();
    // A try it wrote just before it died is answered (refused) first.
    let mut tries = pbx.attempts.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = pbx.attempts.load(Ordering::SeqCst);
        if now == tries {
            break;
        }
        tries = now;
    }
    pbx.down_for.store(0, Ordering::SeqCst);

    let again = event(&http, &second.base(), new_call("k1", "+380507777777")).await;
    assert_eq!(again.status, 200);
    let dialled = || async { !pbx.dials.lock().unwrap().is_empty() };
    assert!(
        eventually(Duration::from_secs(25), dialled).await,
        "{}",
        second.log()
    );
    // By the other instance, once the dead one's claim lapsed.
    assert!(
        killed.elapsed() > Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let dials = pbx.dials.lock().unwrap().clone();
    assert_eq!(dials.len(), 1, "{dials:?}");
    assert_eq!(dials[0]["agent"], "olha");
    assert_eq!(dials[0]["contact_id"], contact.as_str());
    // Rung: a later repeat rings nothing more.
    event(&http, &second.base(), new_call("k1", "+380507777777")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pbx.dials.lock().unwrap().len(), 1);
}

/// An agent with no phone in the channel's configuration cannot take a
/// call: the offer is passed on as a decline (left out of this call), not
/// counted as her miss. With `missed_offers_before_away = 1` a miss set her
/// away for a configuration mistake.
#[tokio::test]
async fn an_agent_without_a_phone_is_passed_over_not_set_away() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    let ivan = "[[routing.agents]]\nid = \"ivan\"\ncapacity = { voice = 1 }\ntoken = \"ivan-agent-token-0123456789\"\n";
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &format!("{}\n{ivan}", config(&callback)),
    );
    let http = Http::new();
    let base = daemon.base();
    let _ivan = online(&base, "ivan-agent-token-0123456789").await;

    let held = event(&http, &base, new_call("p1", "+380509999999")).await;
    assert_eq!(held.status, 200);
    let contact = contact_for(&redis.url(), "+380509999999").await;
    let passed =
        || async { http.routing(&base, SUPERVISOR, &contact).await["excluded"] == json!(["ivan"]) };
    assert!(
        eventually(Duration::from_secs(10), passed).await,
        "offered to ivan and passed on: {}\n{}",
        http.routing(&base, SUPERVISOR, &contact).await,
        daemon.log()
    );
    let ivan = http.agent_view(&base, SUPERVISOR, "ivan").await;
    assert_eq!(ivan["presence"], "available", "{ivan}");
    assert!(pbx.dials.lock().unwrap().is_empty(), "nobody to ring");
}

/// An agent on a connected call transfers it to a colleague in the
/// console: the PBX is told to dial him, naming her in `transfer_from`; his
/// answer connects him, and his hangup ends the call. Before, nothing
/// dialled the transfer: his offer lapsed as his miss (setting him away)
/// while the caller stayed on her phone.
#[tokio::test]
async fn a_call_transferred_in_the_console_is_dialled_to_the_colleague() {
    let (callback, pbx) = pbx().await;
    let redis = RedisServer::start();
    // Offers long enough for the transfer's to be answered in time.
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(&callback).replace("voice = 5", "voice = 20"),
    );
    let http = Http::new();
    let base = daemon.base();
    let _olha = online(&base, "olha-agent-token-0123456789").await;
    let held = event(&http, &base, new_call("t1", "+380507777777")).await;
    assert_eq!((held.status, held.json()), (200, json!({})));
    let contact = contact_for(&redis.url(), "+380507777777").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !pbx.dials.lock().unwrap().is_empty()
        })
        .await,
        "the call was dialled to olha"
    );
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "t1", "from": "+380507777777", "to": "4930609854180", "answeringNumber": "201"}),
    )
    .await;
    assert_eq!((answered.status, answered.json()), (200, json!({})));
    assert_eq!(state_of(&http, &base, &contact).await, "assigned");
    // The dispatcher sees her answer at its next look at routing (every
    // 300 ms) and notes whose phone has the call; a transfer before that,
    // which no agent's hand is quick enough for, would name no one.
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut conn = conn.clone();
            let pattern = format!("sb:{{c:*}}:state:on:{contact}");
            async move {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let Some(key) = keys.first() else {
                    return false;
                };
                let on: Option<String> = redis::AsyncCommands::get(&mut conn, key).await.unwrap();
                on.as_deref() == Some("olha")
            }
        })
        .await,
        "the call was noted on olha's phone"
    );
    // Petro comes online; olha transfers the call to him in her console.
    let _petro = online(&base, "petro-agent-token-0123456789").await;
    let r = http
        .call(
            "POST",
            &format!("{base}/api/v1/contacts/{contact}/transfer"),
            Some("olha-agent-token-0123456789"),
            Some(&json!({"agent": "petro"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        eventually(Duration::from_secs(10), || async {
            pbx.dials.lock().unwrap().len() >= 2
        })
        .await,
        "the transfer was dialled (routing: {}):\n{}",
        state_of(&http, &base, &contact).await,
        daemon.log()
    );
    let dial = pbx.dials.lock().unwrap()[1].clone();
    assert_eq!(
        (
            dial["callId"].as_str(),
            dial["agent"].as_str(),
            dial["number"].as_str(),
            dial["transfer_from"].as_str()
        ),
        (
            Some("t1"),
            Some("petro"),
            Some("sip:202@pbx.example.com"),
            Some("olha")
        )
    );
    let answered = event(
        &http,
        &base,
        json!({"event": "answer", "direction": "in", "callId": "t1", "from": "+380507777777", "to": "4930609854180", "answeringNumber": "sip:202@pbx.example.com"}),
    )
    .await;
    assert_eq!((answered.status, answered.json()), (200, json!({})));
    let routing = http.routing(&base, SUPERVISOR, &contact).await;
    assert_eq!(
        (routing["state"].as_str(), routing["agent"].as_str()),
        (Some("assigned"), Some("petro")),
        "{routing}"
    );
    let hung_up = event(
        &http,
        &base,
        json!({"event": "hangup", "direction": "in", "callId": "t1", "from": "+380507777777", "to": "4930609854180", "cause": "normalClearing"}),
    )
    .await;
    assert_eq!(hung_up.status, 200);
    assert_eq!(state_of(&http, &base, &contact).await, "closed");
    assert_eq!(pbx.dials.lock().unwrap().len(), 2, "dialled twice in all");
}
