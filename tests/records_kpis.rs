//! A scripted day of traffic through the real daemon, on a manual clock
//! (`[testing] manual_clock`), and the KPIs it must give, computed by hand
//! below: answered within and after the service level, a transfer, an
//! abandoned contact, a customer who comes back within the FCR window, and
//! two ratings. Then the contact records: the timeline of the transferred
//! contact, the returning customer's history, and the JSON-lines export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::Duration;
use switchboard_e2e::*;

const ANN: &str = "ann-token-0123456789";
const BOB: &str = "bob-token-0123456789";
const SUPERVISOR: &str = "supervisor-token-0123456789";

fn config() -> String {
    format!(
        r#"
[testing]
manual_clock = true

[records]
fcr_days = 1
metrics_secs = 1

[routing]
wrap_up_secs = 0
reconnect_grace_secs = 100000
offer_timeout_secs = {{ chat = 3600, email = 3600, social = 3600, voice = 3600 }}
default_queue = "support"

[[routing.queues]]
name = "sales"
skills = {{ sales = 1 }}
service_level_secs = 20

[[routing.queues]]
name = "support"
skills = {{ support = 1 }}
service_level_secs = 60

[[routing.rules]]
name = "buyers"
queue = "sales"
words = ["buy"]

[[routing.agents]]
id = "ann"
name = "Ann"
skills = {{ sales = 3 }}
capacity = {{ chat = 5 }}
token = "{ANN}"

[[routing.agents]]
id = "bob"
name = "Bob"
skills = {{ support = 3 }}
capacity = {{ chat = 5 }}
token = "{BOB}"

[agent_api]
supervisor_token = "{SUPERVISOR}"
session_ttl_secs = 200000
"#
    )
}

struct Day {
    http: Http,
    base: String,
    api: String,
}

impl Day {
    async fn advance(&self, secs: u64) {
        let r = self
            .http
            .call(
                "POST",
                &format!("{}/debug/clock", self.base),
                Some(SUPERVISOR),
                Some(&json!({ "advance_ms": secs * 1000 })),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// The records export of every contact queued since `from` (ms).
    async fn export(&self, from: u64) -> Result<Reply, String> {
        self.http
            .call(
                "GET",
                &format!("{}/records/export?from={from}&to=99999999999999", self.api),
                Some(SUPERVISOR),
                None,
            )
            .await
    }

    async fn metrics(&self) -> String {
        self.http
            .get(&format!("{}/metrics", self.base))
            .await
            .unwrap()
            .body
    }

    async fn contact(&self, visitor: &str, id: &str, text: &str) -> String {
        let r = self
            .http
            .submit(&self.base, &chat_event(visitor, id, text))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["contact_id"].as_str().unwrap().to_owned()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let r = self
            .http
            .call(
                "POST",
                &format!("{}{path}", self.base),
                Some(token),
                Some(&body),
            )
            .await
            .unwrap();
        assert!(r.status < 300, "{path}: {} {}", r.status, r.body);
        r.json()
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .call(
                "GET",
                &format!("{}{path}", self.api),
                Some(SUPERVISOR),
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()
    }

    async fn kpis(&self, window: &str) -> Value {
        self.get(&format!("/kpis?window={window}")).await
    }
}

async fn offered(ws: &mut AgentSocket, contact: &str) {
    let (offer, _) = ws.until("offer", Duration::from_secs(10)).await;
    assert_eq!(offer.expect("an offer")["contact_id"], contact);
}

async fn accept(ws: &mut AgentSocket, contact: &str) {
    ws.send(json!({"type": "accept", "ref": "a", "contact_id": contact}))
        .await;
    let (assigned, _) = ws.until("assigned", Duration::from_secs(5)).await;
    assert_eq!(assigned.expect("assigned")["contact_id"], contact);
}

async fn presence(ws: &mut AgentSocket, presence: &str) {
    ws.send(json!({"type": "presence", "ref": "p", "presence": presence, "reason": "break"}))
        .await;
    let (result, _) = ws.until("result", Duration::from_secs(5)).await;
    assert_eq!(result.expect("result")["ok"], true);
}

/// Asserts `figures[key]` equals `want` (numbers compared as f64).
fn check(figures: &Value, what: &str, want: &[(&str, Value)]) {
    for (key, value) in want {
        let got = &figures[*key];
        let same = match (got.as_f64(), value.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            _ => got == value,
        };
        assert!(same, "{what}.{key}: got {got}, want {value}\n{figures:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_day_gives_the_hand_computed_kpis() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(),
    );
    let base = daemon.base();
    let day = Day {
        http: Http::new(),
        api: format!("{base}/api/v1"),
        base,
    };
    let mut ann = AgentSocket::connect_when_ready(&day.base, ANN).await;
    let mut bob = AgentSocket::connect_when_ready(&day.base, BOB).await;
    presence(&mut ann, "available").await;
    presence(&mut bob, "available").await;

    // t = 0: c1 wants to buy: sales, Ann. Answered after 10 s (within the
    // 20 s target), closed after 300 s, rated 5.
    let c1 = day.contact("v1", "m1", "I want to buy a plan").await;
    offered(&mut ann, &c1).await;
    day.advance(10).await;
    accept(&mut ann, &c1).await;
    day.advance(300).await;
    day.post(
        &format!("/api/v1/contacts/{c1}/close"),
        ANN,
        json!({"disposition": "sold"}),
    )
    .await;
    let rated = day
        .post(
            &format!("/channels/api/contacts/{c1}/rating"),
            TOKEN,
            json!({"score": 5}),
        )
        .await;
    assert_eq!(rated["outcome"], "ok");
    let again = day
        .post(
            &format!("/channels/api/contacts/{c1}/rating"),
            TOKEN,
            json!({"score": 1}),
        )
        .await;
    assert_eq!(again["outcome"], "already_rated");

    // t = 310: c2 needs help: support, Bob, answered after 90 s (late);
    // at t = 520 Bob transfers it to sales; Ann answers after 5 s and
    // closes at t = 585 (handled 60 s by her).
    let c2 = day.contact("v2", "m2", "I need help").await;
    offered(&mut bob, &c2).await;
    day.advance(90).await;
    accept(&mut bob, &c2).await;
    day.advance(120).await;
    day.post(
        &format!("/api/v1/contacts/{c2}/transfer"),
        BOB,
        json!({"queue": "sales"}),
    )
    .await;
    offered(&mut ann, &c2).await;
    day.advance(5).await;
    accept(&mut ann, &c2).await;
    day.advance(60).await;
    day.post(
        &format!("/api/v1/contacts/{c2}/close"),
        ANN,
        json!({"disposition": "solved"}),
    )
    .await;

    // t = 585: Bob takes a break; c3 waits 45 s and leaves (abandoned).
    presence(&mut bob, "away").await;
    let c3 = day.contact("v3", "m3", "hello?").await;
    day.advance(45).await;
    let ended = day
        .post(
            &format!("/channels/api/contacts/{c3}/end"),
            TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(ended["outcome"], "abandoned");
    presence(&mut bob, "available").await;

    // Two hours later (t = 7830) c1's customer is back: c1 was not resolved
    // at first contact. Answered after 30 s (late), closed after 200 s,
    // rated 3. Then 240 s pass: now = 8300.
    day.advance(7200).await;
    let c4 = day.contact("v1", "m4", "I want to buy more").await;
    offered(&mut ann, &c4).await;
    day.advance(30).await;
    accept(&mut ann, &c4).await;
    day.advance(200).await;
    day.post(
        &format!("/api/v1/contacts/{c4}/close"),
        ANN,
        json!({"disposition": "sold"}),
    )
    .await;
    day.post(
        &format!("/channels/api/contacts/{c4}/rating"),
        TOKEN,
        json!({"score": 3}),
    )
    .await;
    day.advance(240).await;

    // 24 h: everything.
    let k = day.kpis("24h").await;
    let third = |x: f64| (x * 10000.0).round() / 10000.0;
    check(
        &k["queues"]["sales"],
        "24h sales",
        &[
            ("offered", json!(3)),
            ("answered", json!(3)),
            ("answered_within_target", json!(2)),
            ("abandoned", json!(0)),
            ("service_level", json!(third(2.0 / 3.0))),
            ("abandonment_rate", json!(0.0)),
            ("asa_secs", json!(15.0)),
            ("wait_p50_secs", json!(10.0)),
            ("wait_p90_secs", json!(30.0)),
            ("closed", json!(3)),
            ("aht_secs", json!(186.667)),
            ("reopened", json!(1)),
            ("fcr_rate", json!(third(2.0 / 3.0))),
            ("csat_count", json!(2)),
            ("csat_avg", json!(4.0)),
            ("transferred", json!(0)),
        ],
    );
    check(
        &k["queues"]["support"],
        "24h support",
        &[
            ("offered", json!(2)),
            ("answered", json!(1)),
            ("answered_within_target", json!(0)),
            ("abandoned", json!(1)),
            ("service_level", json!(0.0)),
            ("abandonment_rate", json!(0.5)),
            ("asa_secs", json!(90.0)),
            ("closed", json!(0)),
            ("aht_secs", Value::Null),
            ("transferred", json!(1)),
        ],
    );
    // The total counts contacts, not queue entries: c2, answered in
    // support and transferred to sales, is offered and answered once (its
    // sales entry and answer count for sales only). Four contacts: c1,
    // c2, c4 answered (waits 10, 90, 30 s; c1 alone within its target),
    // c3 abandoned.
    let total = [
        ("offered", json!(4)),
        ("answered", json!(3)),
        ("abandoned", json!(1)),
        ("service_level", json!(0.25)),
        ("abandonment_rate", json!(0.25)),
        ("asa_secs", json!(43.333)),
        ("wait_p50_secs", json!(30.0)),
        ("wait_p90_secs", json!(90.0)),
        ("closed", json!(3)),
        ("aht_secs", json!(186.667)),
        ("fcr_rate", json!(third(2.0 / 3.0))),
        ("csat_avg", json!(4.0)),
        ("transferred", json!(1)),
    ];
    check(&k["total"], "24h total", &total);
    check(&k["channels"]["chat"], "24h chat", &total);
    // Ann: busy 0–310, 520–585, 7830–8060 (605 s) of 8300 s signed in and
    // available.
    check(
        &k["agents"]["ann"],
        "24h ann",
        &[
            ("answered", json!(3)),
            ("closed", json!(3)),
            ("csat_count", json!(2)),
            ("occupancy", json!(third(605.0 / 8300.0))),
        ],
    );
    check(
        &k["agents"]["bob"],
        "24h bob",
        &[
            ("answered", json!(1)),
            ("transferred", json!(1)),
            ("closed", json!(0)),
        ],
    );

    // 1 h (t 4700–8300): only c4.
    let k = day.kpis("1h").await;
    check(
        &k["total"],
        "1h total",
        &[
            ("offered", json!(1)),
            ("answered", json!(1)),
            ("service_level", json!(0.0)),
            ("asa_secs", json!(30.0)),
            ("closed", json!(1)),
            ("aht_secs", json!(200.0)),
            ("fcr_rate", json!(1.0)),
            ("csat_count", json!(1)),
            ("csat_avg", json!(3.0)),
        ],
    );
    check(
        &k["agents"]["ann"],
        "1h ann",
        &[("occupancy", json!(third(230.0 / 3600.0)))],
    );
    // 5 min (t 8000–8300): c4's close and rating only.
    let k = day.kpis("5m").await;
    check(
        &k["total"],
        "5m total",
        &[
            ("offered", json!(0)),
            ("answered", json!(0)),
            ("closed", json!(1)),
            ("aht_secs", json!(200.0)),
            ("csat_count", json!(1)),
        ],
    );
    let r = day
        .http
        .call(
            "GET",
            &format!("{}/kpis?window=2h", day.api),
            Some(SUPERVISOR),
            None,
        )
        .await
        .unwrap();
    r.assert_refused(422, "bad_window");
    let r = day
        .http
        .call("GET", &format!("{}/kpis", day.api), Some(ANN), None)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "agents do not see the KPIs");

    // The same figures on /metrics (refreshed every second).
    assert!(
        eventually(Duration::from_secs(10), || async {
            let m = day.metrics().await;
            gauge_is(
                &m,
                "switchboard_kpi_service_level_ratio",
                "queue",
                "sales",
                "0.6667",
            ) && gauge_is(&m, "switchboard_kpi_abandoned", "total", "all", "1")
        })
        .await,
        "KPI gauges missing on /metrics"
    );

    // c2's record: its whole timeline, in order, with the transfer.
    let record = day.get(&format!("/contacts/{c2}/record")).await;
    let kinds: Vec<&str> = record["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "enqueued", "offered", "accepted", "requeued", "offered", "accepted", "closed"
        ],
        "{record:#}"
    );
    let t0 = record["times"]["queued"].as_u64().unwrap();
    assert_eq!(record["times"]["answered"].as_u64().unwrap() - t0, 90_000);
    assert_eq!(record["times"]["closed"].as_u64().unwrap() - t0, 275_000);
    assert_eq!(record["disposition"], "solved");
    assert_eq!(record["agent"], "ann");
    assert_eq!(record["transcript"][0]["message"]["text"], "I need help");
    assert_eq!(record["transcript_truncated"], false);
    assert_eq!(record["timeline_truncated"], false);
    assert_eq!(record["timeline"][3]["reason"], "transfer");
    assert_eq!(record["timeline"][3]["agent"], "bob");

    // The returning customer: the agent holding c4 sees c1 in its history
    // (c4 is closed now, so the supervisor asks).
    let history = day.get(&format!("/contacts/{c4}/history")).await;
    let previous = history["previous_contacts"].as_array().unwrap();
    assert_eq!(previous.len(), 1, "{history:#}");
    assert_eq!(previous[0]["id"], c1.as_str());
    assert_eq!(previous[0]["rating"], 5);
    assert_eq!(previous[0]["disposition"], "sold");
    // c1's history is what came before it: c4, later, is not in it.
    let history = day.get(&format!("/contacts/{c1}/history")).await;
    assert_eq!(
        history["previous_contacts"],
        serde_json::json!([]),
        "{history:#}"
    );

    // The export: every contact of the range, one record per line.
    let r = day.export(0).await.unwrap();
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [c1.as_str(), c2.as_str(), c3.as_str(), c4.as_str()]);
    assert_eq!(lines[2]["timeline"][1]["type"], "abandoned");
    assert_eq!(lines[0]["rating"], 5);
    // A range that holds only c4.
    let r = day.export(t0 + 1_000_000).await.unwrap();
    assert_eq!(r.body.lines().count(), 1, "{}", r.body);

    // A day later nothing is in the 24-hour window: the queue's gauges
    // say so (they kept the day's figures for good).
    day.advance(25 * 3600).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let m = day.metrics().await;
            gauge_is(&m, "switchboard_kpi_offered", "queue", "sales", "0")
                && gauge_is(
                    &m,
                    "switchboard_kpi_service_level_ratio",
                    "queue",
                    "sales",
                    "NaN",
                )
        })
        .await,
        "the 24h gauges of a quiet queue keep their old figures"
    );

    // An export that meets a Redis error once its 200 is sent breaks off
    // after the records before it, and is counted: c2's contact hash made
    // a string, so reading its record fails with WRONGTYPE.
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*:contact:{c2}"))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg("not a hash")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let cut = day.export(0).await;
    assert!(cut.is_err(), "the body breaks off: {cut:?}");
    assert!(
        day.metrics()
            .await
            .lines()
            .any(|l| l == "switchboard_records_export_errors_total 1"),
        "counted"
    );
    drop(daemon);
}

/// Whether the 24-hour gauge `metric` of (`scope`, `name`) reads `value`.
fn gauge_is(metrics: &str, metric: &str, scope: &str, name: &str, value: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(&format!("{metric}{{"))
            && l.contains("window=\"24h\"")
            && l.contains(&format!("scope=\"{scope}\""))
            && l.contains(&format!("name=\"{name}\""))
            && l.ends_with(&format!(" {value}"))
    })
}

fn two_channel_config() -> String {
    format!(
        r#"
[testing]
manual_clock = true

[records]
metrics_secs = 1

[routing]
wrap_up_secs = 0
reconnect_grace_secs = 100000
offer_timeout_secs = {{ chat = 3600, email = 3600, social = 3600, voice = 3600 }}

[[routing.queues]]
name = "general"
service_level_secs = 30

[[routing.agents]]
id = "ann"
name = "Ann"
capacity = {{ chat = 2, email = 2 }}
token = "{ANN}"

[[routing.agents]]
id = "bob"
name = "Bob"
capacity = {{ chat = 2, email = 2 }}
token = "{BOB}"

[agent_api]
supervisor_token = "{SUPERVISOR}"
session_ttl_secs = 200000
"#
    )
}

/// A second day: an email declined by one agent and answered late by
/// another, a chat answered in time; the figures split by channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_on_two_channels_splits_the_kpis_by_channel() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &two_channel_config(),
    );
    let base = daemon.base();
    let day = Day {
        http: Http::new(),
        api: format!("{base}/api/v1"),
        base,
    };
    let mut ann = AgentSocket::connect_when_ready(&day.base, ANN).await;
    let mut bob = AgentSocket::connect_when_ready(&day.base, BOB).await;
    presence(&mut ann, "available").await;

    // t = 0: an email; Ann declines it at t = 20, Bob (available from then)
    // accepts at t = 60: answered after 60 s, outside the 30 s target.
    let r = day
        .http
        .submit(
            &day.base,
            &json!({
                "channel": "email",
                "address": "help@shop.example",
                "customer": { "scheme": "email", "value": "Olena@Customer.example" },
                "provider_message_id": "<e1@customer.example>",
                "subject": "Refund",
                "text": "Where is my refund?",
            }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let e1 = r.json()["contact_id"].as_str().unwrap().to_owned();
    offered(&mut ann, &e1).await;
    day.advance(20).await;
    ann.send(json!({"type": "decline", "ref": "d", "contact_id": e1}))
        .await;
    let (result, _) = ann.until("result", Duration::from_secs(5)).await;
    assert_eq!(result.expect("result")["ok"], true);
    presence(&mut bob, "available").await;
    offered(&mut bob, &e1).await;
    day.advance(40).await;
    accept(&mut bob, &e1).await;
    presence(&mut bob, "away").await;

    // t = 60: a chat, Ann answers after 10 s and closes at t = 170; Bob
    // closes the email at t = 170 too (handled 110 s).
    let ch1 = day.contact("v1", "c1", "Hi there").await;
    offered(&mut ann, &ch1).await;
    day.advance(10).await;
    accept(&mut ann, &ch1).await;
    day.advance(100).await;
    day.post(
        &format!("/api/v1/contacts/{ch1}/close"),
        ANN,
        json!({"disposition": "solved"}),
    )
    .await;
    day.post(
        &format!("/api/v1/contacts/{e1}/close"),
        BOB,
        json!({"disposition": "refunded"}),
    )
    .await;

    let k = day.kpis("1h").await;
    check(
        &k["channels"]["email"],
        "email",
        &[
            ("offered", json!(1)),
            ("answered", json!(1)),
            ("service_level", json!(0.0)),
            ("asa_secs", json!(60.0)),
            ("aht_secs", json!(110.0)),
        ],
    );
    check(
        &k["channels"]["chat"],
        "chat",
        &[
            ("offered", json!(1)),
            ("answered", json!(1)),
            ("service_level", json!(1.0)),
            ("asa_secs", json!(10.0)),
            ("aht_secs", json!(100.0)),
        ],
    );
    check(
        &k["queues"]["general"],
        "general",
        &[
            ("offered", json!(2)),
            ("answered", json!(2)),
            ("service_level", json!(0.5)),
            ("asa_secs", json!(35.0)),
            ("aht_secs", json!(105.0)),
            ("wait_p50_secs", json!(10.0)),
            ("wait_p99_secs", json!(60.0)),
        ],
    );
    check(
        &k["agents"]["ann"],
        "ann",
        &[("answered", json!(1)), ("closed", json!(1))],
    );
    check(
        &k["agents"]["bob"],
        "bob",
        &[("answered", json!(1)), ("closed", json!(1))],
    );

    // The email's timeline shows the decline and who answered.
    let record = day.get(&format!("/contacts/{e1}/record")).await;
    let steps: Vec<(String, String)> = record["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["agent"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("enqueued", ""),
        ("offered", "ann"),
        ("declined", "ann"),
        ("offered", "bob"),
        ("accepted", "bob"),
        ("closed", "bob"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(steps, want, "{record:#}");
    assert_eq!(record["person"], "email:olena@customer.example");
    drop(daemon);
}
