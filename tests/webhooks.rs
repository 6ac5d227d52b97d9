//! Outbound webhooks from the outside: the CRM's receiver is down while
//! contacts come in, are accepted, answered and closed; the daemon keeps
//! retrying; once the receiver is back, every event arrives, each exactly
//! once by event id, in order per contact, signed with the secret and a
//! fresh timestamp, and contact.closed carries the whole transcript.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard_e2e::*;

const OLENA: &str = "olena-token-0123456789";
const SECRET: &str = "crm-webhook-secret-0123456789";

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    at: u64,
    id: String,
    kind: String,
    signature: String,
    body: Vec<u8>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn receive(
    State(inbox): State<Inbox>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    inbox.lock().unwrap().push(Received {
        at: unix_now(),
        id: header("switchboard-event-id"),
        kind: header("switchboard-event-type"),
        signature: header("switchboard-signature"),
        body: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}

/// What a receiver does with `Switchboard-Signature`.
fn verify(signature: &str, body: &[u8]) -> Option<u64> {
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (t, v1) = (t?, v1?);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).ok().map(|()| t)
}

fn config(receiver: u16) -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 0

[[routing.queues]]
name = "general"

[[routing.agents]]
id = "olena"
name = "Olena"
capacity = {{ chat = 3 }}
token = "{OLENA}"

[[webhooks]]
name = "crm"
url = "http://127.0.0.1:{receiver}/hooks"
secret = "{SECRET}"
timeout_ms = 2000
"#
    )
}

/// Submits a customer message; the contact id.
async fn customer_writes(http: &Http, base: &str, customer: &str, id: &str, text: &str) -> String {
    let r = http
        .submit(base, &chat_event(customer, id, text))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["contact_id"].as_str().unwrap().to_owned()
}

async fn accept(ws: &mut AgentSocket, contact: &str) {
    let (offer, seen) = ws.until("offer", Duration::from_secs(10)).await;
    let offer = offer.unwrap_or_else(|| panic!("no offer: {seen:?}"));
    assert_eq!(offer["contact_id"], contact);
    ws.send(json!({"type": "accept", "contact_id": contact}))
        .await;
    let (assigned, _) = ws.until("assigned", Duration::from_secs(5)).await;
    assert_eq!(assigned.expect("assigned")["contact_id"], contact);
}

async fn close(ws: &mut AgentSocket, contact: &str, disposition: &str) {
    ws.send(
        json!({"type": "close", "ref": contact, "contact_id": contact, "disposition": disposition}),
    )
    .await;
    let (closed, _) = ws.until("closed", Duration::from_secs(5)).await;
    assert_eq!(closed.expect("closed")["contact_id"], contact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_that_was_down_gets_every_event_once_and_in_order() {
    let redis = RedisServer::start();
    let receiver = free_port();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(receiver),
    );
    let http = Http::new();
    let base = daemon.base();
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();

    // The daemon asks routing to copy its events for the webhooks.
    let on = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("EXISTS")
                .arg("sb:{r}:hooks:on")
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    assert!(on, "{}", daemon.log());

    let mut ws = AgentSocket::connect_when_ready(&base, OLENA).await;
    ws.next(Duration::from_secs(5)).await.expect("hello");
    ws.send(json!({"type": "presence", "ref": "p", "presence": "available"}))
        .await;
    ws.until("result", Duration::from_secs(5)).await;
    let down_since = Instant::now();

    // A: a whole conversation.
    let a = customer_writes(&http, &base, "cust-a", "a1", "My order is late").await;
    accept(&mut ws, &a).await;
    ws.send(json!({"type": "reply", "ref": "r", "contact_id": a, "text": "Let me look."}))
        .await;
    let (result, _) = ws.until("result", Duration::from_secs(5)).await;
    assert_eq!(result.unwrap()["ok"], true);
    ws.send(json!({"type": "note", "ref": "n", "contact_id": a, "text": "internal only"}))
        .await;
    ws.until("result", Duration::from_secs(5)).await;
    let again = customer_writes(&http, &base, "cust-a", "a2", "Order 42, thanks").await;
    assert_eq!(again, a);
    close(&mut ws, &a, "resolved").await;
    // B: accepted and closed without a word.
    let b = customer_writes(&http, &base, "cust-b", "b1", "Buy cheap watches").await;
    accept(&mut ws, &b).await;
    close(&mut ws, &b, "spam").await;
    // C: two messages, still waiting for Olena to accept.
    let c = customer_writes(&http, &base, "cust-c", "c1", "Hello?").await;
    let c2 = customer_writes(&http, &base, "cust-c", "c2", "Anyone there?").await;
    assert_eq!(c2, c);
    // A duplicate delivery of a customer message is no event.
    customer_writes(&http, &base, "cust-c", "c2", "Anyone there?").await;
    // D: the customer leaves before anyone answers (ended through the
    // intake API, as a PBX ends a call the caller hung up).
    let d = customer_writes(&http, &base, "cust-d", "d1", "Never mind").await;
    let bearer = format!("Bearer {TOKEN}");
    let r = http
        .post(
            &format!("{base}/channels/api/contacts/{d}/end"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["outcome"].as_str()),
        (200, Some("abandoned")),
        "{}",
        r.body
    );

    // The receiver stays down a while (at least 5 s): the daemon retries.
    let retried = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("switchboard_webhook_deliveries_total")
                    && l.contains("outcome=\"retried\"")
                    && l.contains("webhook=\"crm\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let counted = eventually(Duration::from_secs(20), || async {
        retried(&http.get(&format!("{base}/metrics")).await.unwrap().body) >= 1.0
    })
    .await;
    let left = Duration::from_secs(5).saturating_sub(down_since.elapsed());
    tokio::time::sleep(left).await;
    let metrics = http.get(&format!("{base}/metrics")).await.unwrap().body;
    assert!(counted, "no retries counted:\n{metrics}\n{}", daemon.log());
    assert!(
        !metrics.contains("outcome=\"delivered\""),
        "delivered while the receiver was down?"
    );

    // The receiver comes back.
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", receiver))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A: created, in, assigned, out, in, closed; B: created, in, assigned,
    // closed; C: created, in, in; D: created, in, closed (abandoned).
    let expected = 6 + 4 + 3 + 3;
    let all_in = eventually(Duration::from_secs(60), || async {
        inbox.lock().unwrap().len() >= expected
    })
    .await;
    // Nothing more comes (no duplicates) in the next seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = inbox.lock().unwrap().clone();
    assert!(
        all_in,
        "{} of {expected} events: {got:#?}\n{}",
        got.len(),
        daemon.log()
    );

    // Each event once, signed, fresh, its headers matching its body.
    let mut ids = HashSet::new();
    let mut per_contact: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &got {
        let t = verify(&r.signature, &r.body)
            .unwrap_or_else(|| panic!("bad signature {:?} on {}", r.signature, r.id));
        assert!(t.abs_diff(r.at) <= 60, "stale timestamp {t} at {}", r.at);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], r.id.as_str());
        assert_eq!(body["type"], r.kind.as_str());
        assert!(ids.insert(r.id.clone()), "{} delivered twice", r.id);
        let contact = body["contact"]["id"].as_str().unwrap().to_owned();
        per_contact.entry(contact).or_default().push(body);
    }
    assert_eq!(got.len(), expected, "{got:#?}");

    let shape = |contact: &str| -> Vec<String> {
        per_contact[contact]
            .iter()
            .map(|e| match e["type"].as_str().unwrap() {
                "message.created" => format!(
                    "message:{}:{}",
                    e["message"]["direction"].as_str().unwrap(),
                    e["message"]["text"].as_str().unwrap()
                ),
                other => other.to_owned(),
            })
            .collect()
    };
    assert_eq!(
        shape(&a),
        [
            "contact.created",
            "message:in:My order is late",
            "contact.assigned",
            "message:out:Let me look.",
            "message:in:Order 42, thanks",
            "contact.closed",
        ]
    );
    assert_eq!(
        shape(&b),
        [
            "contact.created",
            "message:in:Buy cheap watches",
            "contact.assigned",
            "contact.closed",
        ]
    );
    assert_eq!(
        shape(&c),
        [
            "contact.created",
            "message:in:Hello?",
            "message:in:Anyone there?"
        ]
    );
    assert_eq!(
        shape(&d),
        ["contact.created", "message:in:Never mind", "contact.closed"]
    );
    let abandoned = &per_contact[&d][2];
    assert_eq!(abandoned["outcome"], "abandoned", "{abandoned:#}");
    assert_eq!(
        abandoned["transcript"].as_array().map(Vec::len),
        Some(1),
        "{abandoned:#}"
    );

    // The details a CRM files them by.
    let events = &per_contact[&a];
    assert_eq!(events[0]["contact"]["channel"], "chat");
    assert_eq!(events[0]["contact"]["source"], "api");
    assert_eq!(events[0]["contact"]["customer"], "visitor:cust-a");
    assert_eq!(events[2]["agent"], "olena");
    assert_eq!(events[3]["message"]["author"], "olena");
    let closed = &events[5];
    assert_eq!(closed["agent"], "olena");
    assert_eq!(closed["disposition"], "resolved");
    assert_eq!(closed["outcome"], "closed");
    let transcript: Vec<(String, String)> = closed["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        transcript,
        [
            ("in".to_owned(), "My order is late".to_owned()),
            ("out".to_owned(), "Let me look.".to_owned()),
            ("in".to_owned(), "Order 42, thanks".to_owned()),
        ]
    );
    assert_eq!(per_contact[&b][3]["disposition"], "spam");
    for events in per_contact.values() {
        let times: Vec<u64> = events
            .iter()
            .map(|e| e["created_at"].as_u64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }

    let metrics = http.get(&format!("{base}/metrics")).await.unwrap().body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_webhook_deliveries_total")
                && l.contains("outcome=\"delivered\"")
                && l.ends_with(&format!(" {expected}"))),
        "{metrics}"
    );
}
