//! Business hours and automatic answers through the real daemon: a queue
//! whose schedule is closed today (a holiday in Europe/Kyiv) answers the
//! customer in their language with the placeholders filled, holds the
//! contact back from an available agent and explains why; a queue that
//! closes contacts after hours ends them with `after_hours`; an open queue
//! acknowledges a new contact once and offers it at once, and the same
//! customer's next message gets no second acknowledgement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_e2e::*;

const OLENA: &str = "olena-token-0123456789";
const SUPERVISOR: &str = "supervisor-token-0123456789";

/// The civil date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn config(today: i64) -> String {
    let all = r#"{ mon = ["00:00-24:00"], tue = ["00:00-24:00"], wed = ["00:00-24:00"], thu = ["00:00-24:00"], fri = ["00:00-24:00"], sat = ["00:00-24:00"], sun = ["00:00-24:00"] }"#;
    // Yesterday, today and tomorrow (UTC) are holidays: whatever the time,
    // today in Kyiv (UTC+2/+3) is one of them, and the next opening is the
    // day after tomorrow at 00:00 local time.
    let holidays = format!(
        "[\"{}\", \"{}\", \"{}\"]",
        civil(today - 1),
        civil(today),
        civil(today + 1)
    );
    format!(
        r#"
[routing]
[[routing.schedules]]
name = "always"
timezone = "Europe/Kyiv"
hours = {all}

[[routing.schedules]]
name = "holiday"
timezone = "Europe/Kyiv"
hours = {all}
holidays = {holidays}

[[routing.schedules]]
name = "office"
timezone = "UTC"
hours = {{ mon = ["09:00-17:00"], tue = ["09:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-17:00"], sat = ["09:00-17:00"], sun = ["09:00-17:00"] }}

[[routing.queues]]
name = "front"
schedule = "always"

[[routing.queues]]
name = "late"
schedule = "office"
after_hours = "close"

[[routing.queues]]
name = "night"
schedule = "holiday"
service_level_secs = 3600

[[routing.queues]]
name = "gone"
schedule = "holiday"
after_hours = "close"

[[routing.rules]]
name = "night"
queue = "night"
addresses = ["widget-night"]

[[routing.rules]]
name = "gone"
queue = "gone"
addresses = ["widget-gone"]

[[routing.rules]]
name = "late"
queue = "late"
addresses = ["widget-late"]

[routing.after_hours_answer]
default = "We are closed."
[routing.after_hours_answer.chat]
en = "Hello {{name}}, we are closed until {{opens_at}}. We will answer by {{reply_by}} ({{timezone}})."
uk = "Вітаємо, {{name}}! Ми зачинені до {{opens_at}}. Відповімо до {{reply_by}} ({{timezone}})."

[routing.acknowledgement.chat]
en = "Thanks {{name}}, an agent will be with you shortly."

[[routing.agents]]
id = "olena"
name = "Olena"
capacity = {{ chat = 3 }}
token = "{OLENA}"

[agent_api]
supervisor_token = "{SUPERVISOR}"
"#
    )
}

fn event(customer: &str, id: &str, address: &str, language: &str, name: Option<&str>) -> Value {
    let mut e = json!({
        "channel": "chat",
        "address": address,
        "customer": { "scheme": "visitor", "value": customer },
        "provider_message_id": id,
        "text": "hello?",
        "language": language,
    });
    if let Some(name) = name {
        e["customer_name"] = json!(name);
    }
    e
}

/// The texts of the contact's outbound transcript entries.
async fn answers(http: &Http, api: &str, contact: &str) -> Vec<String> {
    let r = http
        .call(
            "GET",
            &format!("{api}/contacts/{contact}"),
            Some(SUPERVISOR),
            None,
        )
        .await
        .unwrap();
    if r.status != 200 {
        // Not handed to routing yet.
        return Vec::new();
    }
    r.json()["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dir"] == "out")
        .map(|e| {
            e["message"]["message"]["text"]
                .as_str()
                .or(e["message"]["text"].as_str())
                .map_or_else(|| e.to_string(), str::to_owned)
        })
        .collect()
}

/// Sets the daemon's manual clock.
async fn set_clock(http: &Http, base: &str, set_ms: u64) {
    let r = http
        .call(
            "POST",
            &format!("{base}/debug/clock"),
            Some(SUPERVISOR),
            Some(&json!({ "set_ms": set_ms })),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn routing(http: &Http, api: &str, contact: &str) -> Value {
    let r = http
        .call(
            "GET",
            &format!("{api}/contacts/{contact}/routing"),
            Some(SUPERVISOR),
            None,
        )
        .await
        .unwrap();
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_queues_answer_hold_or_close_and_open_ones_acknowledge_once() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let today = i64::try_from(now.as_secs() / 86_400).unwrap();
    let opens = format!("{} 00:00", civil(today + 2));
    let reply_by = format!("{} 01:00", civil(today + 2));
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(today),
    );
    let http = Http::new();
    let base = daemon.base();
    let api = format!("{base}/api/v1");

    let mut ws = AgentSocket::connect_available(&base, OLENA).await;

    // The "night" queue is closed today: the answer in Ukrainian, no offer.
    let r = http
        .submit(
            &base,
            &event("night-1", "n1", "widget-night", "uk-UA", Some("Олена")),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let night = r.json()["contact_id"].as_str().unwrap().to_owned();
    let expected =
        format!("Вітаємо, Олена! Ми зачинені до {opens}. Відповімо до {reply_by} (Europe/Kyiv).");
    let answered = eventually(Duration::from_secs(10), || async {
        answers(&http, &api, &night).await == [expected.clone()]
    })
    .await;
    assert!(
        answered,
        "{:?} {}",
        answers(&http, &api, &night).await,
        daemon.log()
    );
    let (offer, seen) = ws.until("offer", Duration::from_secs(3)).await;
    assert!(offer.is_none(), "offered while closed: {offer:?} {seen:?}");
    let why = routing(&http, &api, &night).await;
    assert_eq!(why["state"], "waiting", "{why}");
    assert_eq!(why["queue"], "night", "{why}");
    let first = &why["decisions"][0];
    assert_eq!(first["kind"], "after_hours", "{why}");
    let detail = first["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "queue night is closed until {opens} (Europe/Kyiv)"
        )),
        "{detail}"
    );
    assert!(detail.contains("automatic answer sent"), "{detail}");
    assert!(detail.contains("waits for the opening"), "{detail}");

    // The "gone" queue closes its contacts: answered (in English, no name
    // given), then closed with disposition after_hours.
    let r = http
        .submit(&base, &event("gone-1", "g1", "widget-gone", "de", None))
        .await
        .unwrap();
    let gone = r.json()["contact_id"].as_str().unwrap().to_owned();
    let closed = eventually(Duration::from_secs(10), || async {
        routing(&http, &api, &gone).await["state"] == "closed"
    })
    .await;
    assert!(closed, "{}", routing(&http, &api, &gone).await);
    assert_eq!(
        answers(&http, &api, &gone).await,
        [format!(
            "Hello, we are closed until {opens}. We will answer by {} (Europe/Kyiv).",
            // The "gone" queue's service level is the default 60 s.
            format_args!("{} 00:01", civil(today + 2))
        )]
    );
    let detail = routing(&http, &api, &gone).await["decisions"][0]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("disposition after_hours"), "{detail}");

    // The "front" queue is open around the clock: one acknowledgement, an
    // offer at once.
    let r = http
        .submit(&base, &event("front-1", "f1", "widget-1", "en-GB", None))
        .await
        .unwrap();
    let front = r.json()["contact_id"].as_str().unwrap().to_owned();
    let (offer, seen) = ws.until("offer", Duration::from_secs(5)).await;
    let offer = offer.unwrap_or_else(|| panic!("no offer: {seen:?} {}", daemon.log()));
    assert_eq!(offer["contact_id"], front.as_str());
    let acknowledged = eventually(Duration::from_secs(5), || async {
        answers(&http, &api, &front).await.len() == 1
    })
    .await;
    assert!(acknowledged, "{}", daemon.log());
    assert_eq!(
        answers(&http, &api, &front).await,
        ["Thanks, an agent will be with you shortly."]
    );
    // The same customer writes again: same contact, no second
    // acknowledgement.
    let r = http
        .submit(&base, &event("front-1", "f2", "widget-1", "en-GB", None))
        .await
        .unwrap();
    assert_eq!(r.json()["contact_id"], front.as_str());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(answers(&http, &api, &front).await.len(), 1);
    // Nothing of the closed queue was offered meanwhile.
    let (offer, _) = ws.until("offer", Duration::from_secs(1)).await;
    assert!(offer.is_none(), "{offer:?}");
    assert_eq!(routing(&http, &api, &night).await["state"], "waiting");

    // The metrics count both.
    let metrics = http.get(&format!("{base}/metrics")).await.unwrap().body;
    for line in [
        "switchboard_router_after_hours_total{queue=\"night\",action=\"wait\"} 1",
        "switchboard_router_after_hours_total{queue=\"gone\",action=\"close\"} 1",
        "switchboard_router_acknowledgements_total{channel=\"chat\",outcome=\"sent\"} 1",
        "switchboard_router_acknowledgements_total{channel=\"chat\",outcome=\"after_hours\"} 2",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}

/// With the daemon's manual clock: a contact that arrived on a holiday is
/// offered as soon as its queue opens, the morning after, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_contact_is_offered_when_its_queue_opens() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let today = i64::try_from(now.as_secs() / 86_400).unwrap();
    // The same configuration with the holiday schedule in UTC, so that the
    // opening (the day after tomorrow, 00:00) is an instant this test knows
    // without a time zone table.
    let config = config(today).replace(
        "name = \"holiday\"\ntimezone = \"Europe/Kyiv\"",
        "name = \"holiday\"\ntimezone = \"UTC\"",
    ) + "session_ttl_secs = 3\n[testing]\nmanual_clock = true\n";
    let opening = u64::try_from(today + 2).unwrap() * 86_400_000;
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config,
    );
    let http = Http::new();
    let base = daemon.base();
    let api = format!("{base}/api/v1");
    let mut ws = AgentSocket::connect_available(&base, OLENA).await;

    let r = http
        .submit(
            &base,
            &event("night-2", "n2", "widget-night", "en", Some("Eve")),
        )
        .await
        .unwrap();
    let night = r.json()["contact_id"].as_str().unwrap().to_owned();
    let answered = eventually(Duration::from_secs(10), || async {
        answers(&http, &api, &night).await.len() == 1
    })
    .await;
    assert!(answered, "{}", daemon.log());
    let (offer, _) = ws.until("offer", Duration::from_secs(2)).await;
    assert!(offer.is_none(), "offered while closed: {offer:?}");
    // One second before the opening: still closed.
    let clock = |set_ms: u64| set_clock(&http, &base, set_ms);
    clock(opening - 1000).await;
    let (offer, _) = ws.until("offer", Duration::from_secs(3)).await;
    assert!(offer.is_none(), "offered before the opening: {offer:?}");
    clock(opening + 1000).await;
    let (offer, seen) = ws.until("offer", Duration::from_secs(10)).await;
    let offer =
        offer.unwrap_or_else(|| panic!("not offered at the opening: {seen:?} {}", daemon.log()));
    assert_eq!(offer["contact_id"], night.as_str());
}

/// With the manual clock: a contact still waiting when its queue closes
/// (`after_hours = "close"`) gets the after-hours answer and is closed
/// with `after_hours`, at the closing, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_waiting_at_closing_time_is_answered_and_closed() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let today = i64::try_from(now.as_secs() / 86_400).unwrap();
    let day = u64::try_from(today + 2).unwrap() * 86_400_000;
    let closing = day + 17 * 3_600_000;
    let config = config(today) + "session_ttl_secs = 3\n[testing]\nmanual_clock = true\n";
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config,
    );
    let http = Http::new();
    let base = daemon.base();
    let api = format!("{base}/api/v1");
    let clock = |set_ms: u64| set_clock(&http, &base, set_ms);
    // Two minutes before closing, with no agent signed in: it waits.
    clock(closing - 120_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .submit(
            &base,
            &event("late-1", "l1", "widget-late", "en", Some("Eve")),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let late = r.json()["contact_id"].as_str().unwrap().to_owned();
    let acknowledged = eventually(Duration::from_secs(10), || async {
        answers(&http, &api, &late).await.len() == 1
    })
    .await;
    assert!(acknowledged, "{}", daemon.log());
    clock(closing - 1000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(routing(&http, &api, &late).await["state"], "waiting");

    clock(closing + 1000).await;
    let closed = eventually(Duration::from_secs(10), || async {
        routing(&http, &api, &late).await["state"] == "closed"
    })
    .await;
    assert!(
        closed,
        "{} {}",
        routing(&http, &api, &late).await,
        daemon.log()
    );
    assert_eq!(
        answers(&http, &api, &late).await,
        [
            "Thanks Eve, an agent will be with you shortly.".to_owned(),
            format!(
                "Hello Eve, we are closed until {} 09:00. We will answer by {} 09:01 (UTC).",
                civil(today + 3),
                civil(today + 3)
            ),
        ]
    );
    let why = routing(&http, &api, &late).await;
    let said = why["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["detail"].as_str())
        .any(|d| {
            d.contains("queue late is closed (until")
                && d.contains("while the contact waits")
                && d.contains("disposition after_hours")
        });
    assert!(said, "{why}");
    let record = http
        .call(
            "GET",
            &format!("{api}/contacts/{late}/record"),
            Some(SUPERVISOR),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        record.json()["disposition"],
        "after_hours",
        "{}",
        record.body
    );
}
