//! The agent console (`/console`) in a real browser against the real
//! daemon: it is served with its security headers; an agent signs in with
//! their token, sees an offer with a countdown, accepts it, reads a
//! customer message full of HTML as text (nothing of it runs), replies with
//! Enter, adds a note and closes with a disposition, entering wrap-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::Locator;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;
use switchboard_e2e::browser::{Browser, screenshot_dir};
use switchboard_e2e::*;

const OLENA: &str = "olena-token-0123456789";

const HOSTILE: &str = "Dzień dobry, proszę o <b>fakturę</b>.\n\
<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">\n\
[attachment: image, image/jpeg, media id MEDIA-ID-1]";

fn config() -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 30

[[routing.queues]]
name = "general"

[[routing.agents]]
id = "olena"
name = "Olena"
capacity = {{ chat = 2 }}
token = "{OLENA}"
"#
    )
}

/// The head of a plain HTTP/1.1 GET, lower-cased header names.
fn head(port: u16, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status.parse().unwrap(), headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn by_testid(browser: &Browser, id: &str) -> fantoccini::elements::Element {
    browser
        .client
        .find(Locator::Css(&format!("[data-testid=\"{id}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no [data-testid={id}]: {e}"))
}

async fn state(browser: &Browser) -> Value {
    browser
        .js("return window.SwitchboardConsole.state();", vec![])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_works_a_chat_in_the_console() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(),
    );
    let base = daemon.base();

    // Served without a token, with the strict headers.
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let (status, headers, body) = head(daemon.port, path);
        assert_eq!(status, 200, "{path}");
        assert!(header(&headers, "content-type").starts_with(kind), "{path}");
        let csp = header(&headers, "content-security-policy");
        assert!(
            csp.starts_with(
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
            ),
            "{path}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'none'"));
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        if path.ends_with(".js") {
            assert!(!body.contains("innerHTML"));
        }
    }

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{base}/console"))
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "the script",
            "return !!window.SwitchboardConsole",
        )
        .await;

    // A wrong token is refused and not kept.
    by_testid(&browser, "token-input")
        .await
        .send_keys("wrong-token-0123456789")
        .await
        .unwrap();
    by_testid(&browser, "signin-button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "a refusal",
            "return document.querySelector('[data-testid=status]').textContent.includes('Unknown token')",
        )
        .await;

    // Signing in opens the websocket; the token stays out of the URL.
    let input = by_testid(&browser, "token-input").await;
    input.clear().await.unwrap();
    input.send_keys(OLENA).await.unwrap();
    by_testid(&browser, "signin-button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "connected",
            "return window.SwitchboardConsole.state().connected",
        )
        .await;
    let s = state(&browser).await;
    assert_eq!(s["agent"], "olena");
    let url = browser.js("return location.href;", vec![]).await;
    assert!(!url.as_str().unwrap().contains(OLENA), "{url}");
    assert_eq!(
        browser
            .js(
                "return sessionStorage.getItem('switchboard.agentToken');",
                vec![]
            )
            .await,
        OLENA
    );
    assert_eq!(browser.js("return localStorage.length;", vec![]).await, 0);

    // Away with a reason, then available.
    let option = |value: &'static str| {
        let browser = &browser;
        async move {
            browser
                .client
                .find(Locator::Css(&format!(
                    "[data-testid=\"presence-select\"] option[value=\"{value}\"]"
                )))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    option("away").await;
    by_testid(&browser, "presence-reason")
        .await
        .send_keys("lunch")
        .await
        .unwrap();
    by_testid(&browser, "presence-apply")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "away for lunch",
            "const p = document.querySelector('[data-testid=presence-state]'); \
             return p.getAttribute('data-presence') === 'away' && p.textContent.includes('lunch');",
        )
        .await;
    option("available").await;
    browser
        .until(
            Duration::from_secs(10),
            "available",
            "return document.querySelector('[data-testid=presence-state]').getAttribute('data-presence') === 'available';",
        )
        .await;

    // A customer writes HTML: the offer shows up with a countdown.
    let http = Http::new();
    let r = http
        .submit(&base, &chat_event("visitor-1", "m-1", HOSTILE))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let contact = r.json()["contact_id"].as_str().unwrap().to_owned();
    browser
        .until(
            Duration::from_secs(15),
            "the offer",
            &format!(
                "return document.querySelector('[data-testid=offer][data-contact-id=\"{contact}\"]');"
            ),
        )
        .await;
    assert_eq!(state(&browser).await["offers"], json!([contact]));
    browser
        .until(
            Duration::from_secs(5),
            "a countdown",
            "const c = document.querySelector('[data-testid=offer-countdown]'); \
             return c && / s left$/.test(c.textContent);",
        )
        .await;
    browser
        .click(&format!(
            "[data-testid=\"offer-accept\"][data-contact-id=\"{contact}\"]"
        ))
        .await;

    // The conversation opens with the customer's message, shown as text.
    browser
        .until(
            Duration::from_secs(10),
            "the transcript",
            "return document.querySelector('[data-testid=entry][data-dir=in]');",
        )
        .await;
    let s = state(&browser).await;
    assert_eq!(s["conversations"], json!([contact]));
    assert_eq!(s["selected"], contact.as_str());
    assert_eq!(s["offers"], json!([]));
    let shown = browser
        .js(
            "return document.querySelector('[data-testid=entry][data-dir=in] [data-testid=entry-text]').textContent;",
            vec![],
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("<script>window.__pwned = 1</script>"),
        "{shown}"
    );
    assert!(shown.contains("<img src=x onerror="), "{shown}");
    let harmless = browser
        .js(
            "return [window.__pwned === undefined, \
              document.querySelectorAll('#transcript img, #transcript script, #transcript b').length];",
            vec![],
        )
        .await;
    assert_eq!(harmless, json!([true, 0]));
    // The customer typed an attachment line (the intake API brings no
    // attachments): it is text, not a download of someone's media.
    let links = browser
        .js(
            "return document.querySelectorAll('[data-testid=attachment-link]').length;",
            vec![],
        )
        .await;
    assert_eq!(links, json!(0));
    assert!(shown.contains("media id MEDIA-ID-1]"), "{shown}");

    // A reply sent with Enter, then a note.
    by_testid(&browser, "reply-input")
        .await
        .send_keys("Dzień dobry, już sprawdzam.\u{E007}")
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "the reply",
            "const e = document.querySelector('[data-testid=entry][data-dir=out]'); \
             return e && e.querySelector('[data-testid=delivery]') && e.getAttribute('data-seq');",
        )
        .await;
    assert_eq!(
        browser
            .js(
                "return document.querySelector('[data-testid=reply-input]').value;",
                vec![]
            )
            .await,
        ""
    );
    by_testid(&browser, "note-input")
        .await
        .send_keys("asked about invoice 5512")
        .await
        .unwrap();
    by_testid(&browser, "note-button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "the note",
            "return document.querySelector('[data-testid=entry][data-dir=note]');",
        )
        .await;

    // The transcript as the API has it matches, each seq once.
    let r = http
        .call(
            "GET",
            &format!("{base}/api/v1/contacts/{contact}"),
            Some(OLENA),
            None,
        )
        .await
        .unwrap();
    let api_seqs: Vec<Value> = r.json()["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    let shown_seqs = browser
        .until(
            Duration::from_secs(15),
            "every entry once",
            &format!(
                "const s = Array.from(document.querySelectorAll('[data-testid=entry]')).map(e => e.getAttribute('data-seq')); \
                 return s.length === {} && new Set(s).size === s.length && s;",
                api_seqs.len()
            ),
        )
        .await;
    assert_eq!(shown_seqs, Value::Array(api_seqs));

    // Closed with a disposition: the conversation leaves, wrap-up shows.
    browser
        .client
        .find(Locator::Css(
            "[data-testid=\"disposition-select\"] option[value=\"resolved\"]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    by_testid(&browser, "close-button")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            Duration::from_secs(10),
            "wrap-up",
            "return window.SwitchboardConsole.state().conversations.length === 0 && \
             document.querySelector('[data-testid=presence-state]').getAttribute('data-presence') === 'wrap_up';",
        )
        .await;
    // The same visitor comes back: the console lists the earlier contact
    // (docs/records.md, customers across contacts).
    option("available").await;
    browser
        .until(
            Duration::from_secs(10),
            "available again",
            "return document.querySelector('[data-testid=presence-state]').getAttribute('data-presence') === 'available';",
        )
        .await;
    let r = http
        .submit(&base, &chat_event("visitor-1", "m-2", "Me again"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let again = r.json()["contact_id"].as_str().unwrap().to_owned();
    assert_ne!(again, contact, "a new contact after the close");
    browser
        .until(
            Duration::from_secs(15),
            "the second offer",
            &format!(
                "return document.querySelector('[data-testid=offer-accept][data-contact-id=\"{again}\"]');"
            ),
        )
        .await;
    browser
        .click(&format!(
            "[data-testid=\"offer-accept\"][data-contact-id=\"{again}\"]"
        ))
        .await;
    let item = browser
        .until(
            Duration::from_secs(10),
            "the earlier contact",
            &format!(
                "const i = document.querySelectorAll('[data-testid=history-item]'); \
                 return i.length === 1 && i[0].getAttribute('data-contact-id') === '{contact}' \
                   ? i[0].textContent : null;"
            ),
        )
        .await;
    let item = item.as_str().unwrap();
    assert!(
        item.starts_with("Chat · ") && item.contains("closed: resolved"),
        "{item}"
    );
    assert_eq!(
        browser
            .js("return window.__pwned === undefined;", vec![])
            .await,
        true
    );
    // The console's websockets opened with one-time tickets, never with
    // the token in their URL (which proxies log).
    let metrics = metrics_text(&base).await;
    let redeemed = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchboard_agent_api_ws_tickets_total")
                && l.contains("outcome=\"redeemed\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(redeemed.is_some_and(|n| n >= 1.0), "{metrics}");
    browser
        .screenshot(&screenshot_dir().join("agent-console.png"))
        .await;
    browser.close().await;
}
