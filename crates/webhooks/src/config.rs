//! `[[webhooks]]`: where events go, signed with which secret.

use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;
use switchboard_channel::{Secret, SecretValue};

/// The kinds of event a webhook can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum EventType {
    #[serde(rename = "contact.created")]
    ContactCreated,
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "contact.assigned")]
    ContactAssigned,
    #[serde(rename = "contact.closed")]
    ContactClosed,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::ContactCreated,
        EventType::MessageCreated,
        EventType::ContactAssigned,
        EventType::ContactClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ContactCreated => "contact.created",
            EventType::MessageCreated => "message.created",
            EventType::ContactAssigned => "contact.assigned",
            EventType::ContactClosed => "contact.closed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One `[[webhooks]]` table.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; names the webhook in metrics, logs and Redis keys.
    pub name: String,
    /// Where events are POSTed: `https://`, or `http://` to this machine
    /// (loopback) or with `allow_http`.
    pub url: String,
    /// The HMAC-SHA256 key of `Switchboard-Signature` (at least 16
    /// characters): inline, `{ file = … }` or `{ env = … }`.
    pub secret: Secret,
    /// The events sent; the others are skipped.
    #[serde(default = "defaults::events")]
    pub events: Vec<EventType>,
    /// How long one delivery may take, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// An event still undelivered after this many hours is dropped (counted
    /// and logged); the feeds keep events a day longer than the largest of
    /// these.
    #[serde(default = "defaults::max_age_hours")]
    pub max_age_hours: u64,
    /// Lets `url` be plain `http://` to another machine: the events (with
    /// customers' messages) and their signatures then cross the network
    /// readable by anyone on the path.
    #[serde(default)]
    pub allow_http: bool,
}

mod defaults {
    pub fn events() -> Vec<super::EventType> {
        super::EventType::ALL.to_vec()
    }
    pub fn timeout_ms() -> u64 {
        10_000
    }
    pub fn max_age_hours() -> u64 {
        168
    }
}

/// The shortest secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// Bounds of `timeout_ms`.
pub const TIMEOUT_MS: (u64, u64) = (100, 60_000);
/// Bounds of `max_age_hours` (1 hour to 30 days).
pub const MAX_AGE_HOURS: (u64, u64) = (1, 720);

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigProblem {
    pub key: String,
    pub problem: String,
}

fn problem(key: String, problem: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key,
        problem: problem.into(),
    }
}

/// Without the URL's query values: a receiver may take a token there.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let WebhookConfig {
            name,
            url,
            secret,
            events,
            timeout_ms,
            max_age_hours,
            allow_http,
        } = self;
        f.debug_struct("WebhookConfig")
            .field("name", name)
            .field("url", &switchboard_store::redact_url_all(url))
            .field("secret", secret)
            .field("events", events)
            .field("timeout_ms", timeout_ms)
            .field("max_age_hours", max_age_hours)
            .field("allow_http", allow_http)
            .finish()
    }
}

/// A checked webhook, its secret read.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub url: reqwest::Url,
    pub secret: SecretValue,
    pub events: HashSet<EventType>,
    pub timeout: Duration,
    pub max_age: Duration,
}

/// Without the URL's password and query values.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Target {
            name,
            url,
            secret,
            events,
            timeout,
            max_age,
        } = self;
        f.debug_struct("Target")
            .field("name", name)
            .field("url", &switchboard_store::redact_url_all(url.as_str()))
            .field("secret", secret)
            .field("events", events)
            .field("timeout", timeout)
            .field("max_age", max_age)
            .finish()
    }
}

impl Target {
    pub fn wants(&self, kind: EventType) -> bool {
        self.events.contains(&kind)
    }
}

/// Checks every webhook (names unique, URLs, secrets readable and long
/// enough, bounds) without side effects; the checked targets.
pub fn check(webhooks: &[WebhookConfig]) -> Result<Vec<Target>, ConfigProblem> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(webhooks.len());
    for (i, w) in webhooks.iter().enumerate() {
        let name_ok = !w.name.is_empty()
            && w.name.len() <= 64
            && w.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(problem(
                format!("webhooks[{i}].name"),
                "must be 1 to 64 characters of A-Za-z0-9._-",
            ));
        }
        if !names.insert(w.name.as_str()) {
            return Err(problem(
                format!("webhooks[{i}].name"),
                format!("{:?} is used twice", w.name),
            ));
        }
        let key = |k: &str| format!("webhooks.{}.{k}", w.name);
        // The URL is not repeated in the message: it may carry a token
        // (docs/webhooks.md: URLs are never logged).
        let url = reqwest::Url::parse(&w.url)
            .map_err(|e| problem(key("url"), format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(problem(
                key("url"),
                format!(
                    "must be an http:// or https:// URL with a host (its scheme is {:?})",
                    url.scheme()
                ),
            ));
        }
        if url.scheme() == "http"
            && !w.allow_http
            && !url
                .host_str()
                .is_some_and(switchboard_channel::net::is_loopback_host)
        {
            return Err(problem(
                key("url"),
                "is plain http:// to another machine: use https://, or set allow_http = true \
                 to send customers' messages unencrypted",
            ));
        }
        let secret = w
            .secret
            .resolve()
            .map_err(|e| problem(key("secret"), e.to_string()))?;
        if secret.expose().chars().count() < MIN_SECRET_CHARS {
            return Err(problem(
                key("secret"),
                format!("must be at least {MIN_SECRET_CHARS} characters"),
            ));
        }
        if w.events.is_empty() {
            return Err(problem(
                key("events"),
                "is empty: leave it out for every event",
            ));
        }
        if !(TIMEOUT_MS.0..=TIMEOUT_MS.1).contains(&w.timeout_ms) {
            return Err(problem(
                key("timeout_ms"),
                format!(
                    "{} is outside {}..={}",
                    w.timeout_ms, TIMEOUT_MS.0, TIMEOUT_MS.1
                ),
            ));
        }
        if !(MAX_AGE_HOURS.0..=MAX_AGE_HOURS.1).contains(&w.max_age_hours) {
            return Err(problem(
                key("max_age_hours"),
                format!(
                    "{} is outside {}..={}",
                    w.max_age_hours, MAX_AGE_HOURS.0, MAX_AGE_HOURS.1
                ),
            ));
        }
        out.push(Target {
            name: w.name.clone(),
            url,
            secret,
            events: w.events.iter().copied().collect(),
            timeout: Duration::from_millis(w.timeout_ms),
            max_age: Duration::from_secs(w.max_age_hours * 3600),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `{"webhooks": [...]}` as JSON: the same serde shapes as TOML.
    fn parse(json: &str) -> Result<Vec<WebhookConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            webhooks: Vec<WebhookConfig>,
        }
        serde_json::from_str::<File>(json)
            .map(|f| f.webhooks)
            .map_err(|e| e.to_string())
    }

    fn one(extra: &str) -> String {
        format!(
            r#"{{"webhooks": [{{"name": "crm", "url": "https://crm.example/hooks", "secret": "0123456789abcdef"{extra}}}]}}"#
        )
    }

    /// A token in the receiver's URL, or the signing key, never shows in
    /// a `Debug` (should a log line ever print a configuration).
    #[test]
    fn debug_shows_no_token_or_secret() {
        let json = r#"{"webhooks": [{"name": "crm", "url": "https://crm.example/hooks?token=t0ken", "secret": "0123456789abcdef"}]}"#;
        let hooks = parse(json).unwrap();
        let targets = check(&hooks).unwrap();
        for shown in [format!("{hooks:?}"), format!("{targets:?}")] {
            assert!(!shown.contains("t0ken"), "{shown}");
            assert!(!shown.contains("0123456789abcdef"), "{shown}");
            assert!(shown.contains("crm.example/hooks"), "{shown}");
        }
    }

    #[test]
    fn defaults_are_every_event_ten_seconds_and_a_week() {
        let hooks = parse(&one("")).unwrap();
        let targets = check(&hooks).unwrap();
        assert_eq!(targets[0].events.len(), 4);
        assert_eq!(targets[0].timeout, Duration::from_secs(10));
        assert_eq!(targets[0].max_age, Duration::from_secs(168 * 3600));
        let hooks = parse(&one(r#", "events": ["contact.closed"]"#)).unwrap();
        let targets = check(&hooks).unwrap();
        assert!(targets[0].wants(EventType::ContactClosed));
        assert!(!targets[0].wants(EventType::MessageCreated));
    }

    #[test]
    fn unknown_keys_and_events_are_refused() {
        assert!(
            parse(&one(r#", "retries": 3"#))
                .unwrap_err()
                .contains("retries")
        );
        assert!(parse(&one(r#", "events": ["contact.deleted"]"#)).is_err());
    }

    #[test]
    fn problems_name_the_key() {
        let cases = [
            (
                r#"{"webhooks": [{"name": "c rm", "url": "https://x", "secret": "0123456789abcdef"}]}"#,
                "webhooks[0].name",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "ftp://x", "secret": "0123456789abcdef"}]}"#,
                "webhooks.crm.url",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "nowhere", "secret": "0123456789abcdef"}]}"#,
                "webhooks.crm.url",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": "short"}]}"#,
                "webhooks.crm.secret",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": {"env": "SWITCHBOARD_TEST_NO_SUCH_VAR"}}]}"#,
                "webhooks.crm.secret",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": "0123456789abcdef", "events": []}]}"#,
                "webhooks.crm.events",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": "0123456789abcdef", "timeout_ms": 5}]}"#,
                "webhooks.crm.timeout_ms",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": "0123456789abcdef", "max_age_hours": 0}]}"#,
                "webhooks.crm.max_age_hours",
            ),
            (
                r#"{"webhooks": [{"name": "crm", "url": "https://x", "secret": "0123456789abcdef"}, {"name": "crm", "url": "https://y", "secret": "0123456789abcdef"}]}"#,
                "webhooks[1].name",
            ),
        ];
        for (text, key) in cases {
            let hooks = parse(text).unwrap();
            let err = check(&hooks).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    /// Plain http:// only to this machine, unless `allow_http` says so.
    #[test]
    fn plain_http_to_another_machine_needs_allow_http() {
        let hook = |url: &str, extra: &str| {
            format!(
                r#"{{"webhooks": [{{"name": "crm", "url": "{url}", "secret": "0123456789abcdef"{extra}}}]}}"#
            )
        };
        for url in [
            "http://crm.example.com/hooks",
            "http://10.1.2.3:8080/hooks",
            "HTTP://169.254.169.254/",
        ] {
            let err = check(&parse(&hook(url, "")).unwrap()).unwrap_err();
            assert_eq!(err.key, "webhooks.crm.url", "{url}");
            assert!(err.problem.contains("allow_http"), "{err}");
            assert!(check(&parse(&hook(url, r#", "allow_http": true"#)).unwrap()).is_ok());
        }
        for url in [
            "https://crm.example.com/hooks",
            "http://127.0.0.1:9000/hooks",
            "http://localhost/hooks",
            "http://[::1]:9000/hooks",
        ] {
            assert!(check(&parse(&hook(url, "")).unwrap()).is_ok(), "{url}");
        }
    }

    /// A URL that is refused is not repeated in the message (which goes to
    /// the log and to `switchboard validate`): it may carry a token.
    #[test]
    fn a_refused_url_is_not_repeated() {
        for url in ["ftp://hook:pa55word@x/?token=s3cret", "s3cret token"] {
            let text = format!(
                r#"{{"webhooks": [{{"name": "crm", "url": "{url}", "secret": "0123456789abcdef"}}]}}"#
            );
            let err = check(&parse(&text).unwrap()).unwrap_err();
            let said = err.to_string();
            assert!(said.contains("webhooks.crm.url"), "{said}");
            assert!(
                !said.contains("s3cret") && !said.contains("pa55word"),
                "{said}"
            );
        }
    }
}
