//! The supervisors' wallboard in headless Chromium, against the real
//! daemon: sign in with the supervisor token, see the queues (waiting,
//! longest wait), the agents (presence, load, with a hostile display name
//! shown as text), the chart of waiting contacts, and the figures change
//! live when a contact arrives and when one is answered. A screenshot goes
//! to `target/screenshots/wallboard.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::Locator;
use serde_json::json;
use std::time::Duration;
use switchboard_e2e::browser::{Browser, screenshot_dir};
use switchboard_e2e::*;

const ANN: &str = "ann-token-0123456789";
const SUPERVISOR: &str = "supervisor-token-0123456789";

fn config() -> String {
    // Closed today whatever the day: today and the next week are holidays,
    // so the next opening is a Monday at least a week away.
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let holidays: Vec<String> = (0..8)
        .map(|d| format!("\"{}\"", civil_date(today + d)))
        .collect();
    let holidays = holidays.join(", ");
    format!(
        r#"
[records]
sample_secs = 1
metrics_secs = 1

[routing]
default_queue = "support"
wrap_up_secs = 0

[[routing.queues]]
name = "sales"
service_level_secs = 20

[[routing.queues]]
name = "support"

[[routing.schedules]]
name = "weekdays"
timezone = "UTC"
hours = {{ mon = ["09:00-17:00"] }}
holidays = [{holidays}]

[[routing.queues]]
name = "night"
schedule = "weekdays"

[[routing.rules]]
name = "buyers"
queue = "sales"
words = ["buy"]

[[routing.agents]]
id = "ann"
name = "Ann <img src=x onerror=\"window.__pwned = 1\">"
capacity = {{ chat = 1 }}
token = "{ANN}"

[agent_api]
supervisor_token = "{SUPERVISOR}"
"#
    )
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (Howard Hinnant's
/// civil_from_days).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

async fn text(browser: &Browser, id: &str) -> String {
    browser
        .client
        .find(Locator::Css(&format!("[data-testid=\"{id}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no [data-testid={id}]: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallboard_shows_queues_and_agents_live() {
    let mut redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(),
    );
    let base = daemon.base();
    let http = Http::new();

    // The page is served with the console's strict policy.
    let page = http.get(&format!("{base}/wallboard")).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("wallboard.js"));
    let script = http
        .get(&format!("{base}/wallboard/wallboard.js"))
        .await
        .unwrap();
    assert!(!script.body.contains("innerHTML"));

    // Ann takes one contact (her capacity); two more wait in sales.
    let mut ann = AgentSocket::connect_when_ready(&base, ANN).await;
    ann.send(json!({"type": "presence", "ref": "p", "presence": "available"}))
        .await;
    let (result, _) = ann.until("result", Duration::from_secs(5)).await;
    assert_eq!(result.unwrap()["ok"], true);
    let mut contacts = Vec::new();
    for i in 0..3 {
        let r = http
            .submit(
                &base,
                &chat_event(&format!("v{i}"), &format!("m{i}"), "I want to buy"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        contacts.push(r.json()["contact_id"].as_str().unwrap().to_owned());
    }
    let (offer, _) = ann.until("offer", Duration::from_secs(10)).await;
    let first = offer.unwrap()["contact_id"].as_str().unwrap().to_owned();
    ann.send(json!({"type": "accept", "ref": "a", "contact_id": first}))
        .await;
    let (assigned, _) = ann.until("assigned", Duration::from_secs(5)).await;
    assert!(assigned.is_some());
    // Let the sampler record a few points for the chart.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{base}/wallboard"))
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("[data-testid=\"token-input\"]"))
        .await
        .unwrap()
        .send_keys(SUPERVISOR)
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Css("[data-testid=\"signin-button\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "two waiting contacts",
            "return document.querySelector('[data-testid=total-waiting]').textContent === '2'",
        )
        .await;
    let sales = browser
        .js(
            "var r = document.querySelector('tr[data-queue=sales]'); \
             return Array.from(r.children).map(function (c) { return c.textContent; });",
            vec![],
        )
        .await;
    assert_eq!(sales[0], "sales");
    assert_eq!(sales[1], "2", "{sales}");
    assert_eq!(sales[5], "1", "one answered in the last hour: {sales}");
    let agent = browser
        .js(
            "var r = document.querySelector('tr[data-agent=ann]'); \
             return Array.from(r.children).map(function (c) { return c.textContent; });",
            vec![],
        )
        .await;
    assert_eq!(
        agent[0], "Ann <img src=x onerror=\"window.__pwned = 1\">",
        "the name is text"
    );
    assert_eq!(agent[1], "available");
    assert_eq!(agent[2], "1 / 1");
    assert_eq!(text(&browser, "total-available").await, "1");
    // A queue outside its business hours says until when.
    let night = browser
        .js(
            "return document.querySelector('tr[data-queue=night]').children[0].textContent;",
            vec![],
        )
        .await;
    assert!(
        night
            .as_str()
            .unwrap()
            .starts_with("night (closed until Mon"),
        "{night}"
    );
    let points = browser
        .until(
            Duration::from_secs(10),
            "the chart",
            "var l = document.querySelector('#chart polyline'); \
             return l && Number(l.getAttribute('data-points')) >= 2 ? Number(l.getAttribute('data-points')) : 0",
        )
        .await;
    assert!(points.as_u64().unwrap() >= 2, "{points}");

    // Live: a new contact raises the count; Ann closing hers lets the
    // next one be offered, and the count falls, without a reload.
    let r = http
        .submit(&base, &chat_event("v9", "m9", "help me"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    browser
        .until(
            Duration::from_secs(10),
            "three waiting",
            "return document.querySelector('[data-testid=total-waiting]').textContent === '3'",
        )
        .await;
    ann.send(json!({"type": "close", "ref": "c", "contact_id": first, "disposition": "sold"}))
        .await;
    let (offer, _) = ann.until("offer", Duration::from_secs(10)).await;
    assert!(offer.is_some(), "the next contact is offered");
    browser
        .until(
            Duration::from_secs(10),
            "two waiting again",
            "return document.querySelector('[data-testid=total-waiting]').textContent === '2'",
        )
        .await;
    let pwned = browser.js("return window.__pwned || null;", vec![]).await;
    assert!(pwned.is_null(), "markup in a name ran");

    // Redis goes away: the figures are shown as stale, not as live; once
    // it is back, live again.
    redis.stop();
    browser
        .until(
            Duration::from_secs(15),
            "the board marked stale",
            "return document.getElementById('board').getAttribute('data-stale') === 'true'
               && document.getElementById('board').classList.contains('stale')",
        )
        .await;
    redis.restart();
    browser
        .until(
            Duration::from_secs(20),
            "the board live again",
            "return document.getElementById('board').getAttribute('data-stale') === 'false'",
        )
        .await;
    browser
        .screenshot(&screenshot_dir().join("wallboard.png"))
        .await;
    browser.close().await;
    drop(daemon);
}
