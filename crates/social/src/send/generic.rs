//! Replies to a generic bridge: Switchboard's own signed webhook, the other
//! direction of [`crate::parse::generic`].
//!
//! `POST <reply url>` with
//!
//! ```json
//! {"type": "reply", "id": "01J…", "account": "shop-1",
//!  "customer": {"id": "u-42"}, "text": "Hello", "in_reply_to": "m-1",
//!  "created_at": 1795341600000}
//! ```
//!
//! signed like inbound deliveries ([`crate::verify::verify_generic`]):
//! `X-Switchboard-Timestamp: <unix seconds>` and `X-Switchboard-Signature:
//! sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, so the bridge
//! checks it with the same code. `Idempotency-Key` is the reply's `id`: a
//! retry of a reply the bridge already took carries the same key and `id`.
//! `account` and `in_reply_to` are left out when empty; times are
//! milliseconds. Replies are not cut: the bridge knows its service's limits.
//!
//! The bridge answers 2xx when it took the reply, optionally with
//! `{"id": "<its id for the reply>"}` (the id its receipts will name); 429 or
//! 5xx (with `Retry-After` if it likes) to be asked again later; any other
//! 4xx to refuse it for good, optionally with `{"error": "<a sentence for
//! the agent>"}`.

use super::http::{self, Answer};
use super::{FailureKind, SendConfig, SendOutcome};
use crate::verify::{GENERIC_SIGNATURE_HEADER, GENERIC_TIMESTAMP_HEADER, generic_signature};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use switchboard_channel::SecretValue;
use switchboard_core::OutboundMessage;

pub(crate) struct GenericApi {
    url: String,
    secret: SecretValue,
}

impl GenericApi {
    pub(crate) fn new(config: &SendConfig) -> Result<GenericApi, String> {
        let url = config
            .url
            .as_deref()
            .ok_or("a generic sender needs the URL replies are POSTed to")?;
        let parsed =
            reqwest::Url::parse(url.trim()).map_err(|e| format!("the URL is not valid: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err("the URL must be http:// or https:// with a host".into());
        }
        Ok(GenericApi {
            url: parsed.to_string(),
            secret: config.secret.clone(),
        })
    }

    /// The reply URL's query (whole, and each value) and password, where a
    /// bridge may want a token (the signing secret itself is never sent).
    pub(crate) fn secrets(&self) -> Vec<String> {
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return Vec::new();
        };
        let values = url.query_pairs().map(|(_, v)| v.into_owned());
        url.query()
            .into_iter()
            .chain(url.password())
            .map(str::to_owned)
            .chain(values)
            .collect()
    }

    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        msg: &OutboundMessage,
        text: &str,
    ) -> Result<reqwest::RequestBuilder, SendOutcome> {
        let body = body(msg, text);
        let bytes = serde_json::to_vec(&body).map_err(|e| {
            SendOutcome::failed(
                FailureKind::Rejected,
                None,
                format!("cannot encode the reply: {e}"),
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = generic_signature(self.secret.expose().as_bytes(), now, &bytes);
        Ok(client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(GENERIC_TIMESTAMP_HEADER, now.to_string())
            .header(GENERIC_SIGNATURE_HEADER, signature)
            .header("idempotency-key", msg.message_id.to_string())
            .body(bytes))
    }
}

/// The JSON a bridge receives for `msg`.
pub fn body(msg: &OutboundMessage, text: &str) -> Value {
    let mut body = json!({
        "type": "reply",
        "id": msg.message_id.to_string(),
        "customer": {"id": msg.to.value},
        "text": text,
        "created_at": msg.created_at.as_millis(),
    });
    if let Some(map) = body.as_object_mut() {
        if !msg.from_address.is_empty() {
            map.insert("account".into(), Value::from(msg.from_address.as_str()));
        }
        if let Some(parent) = msg.in_reply_to.as_deref().filter(|p| !p.is_empty()) {
            map.insert("in_reply_to".into(), Value::from(parent));
        }
    }
    body
}

/// What the bridge's answer means.
pub(crate) fn read(answer: &Answer) -> SendOutcome {
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(http::excerpt)
    };
    if (200..300).contains(&answer.status) {
        // The bridge's id as it is (its receipts name it), when the intake
        // can keep it; an excerpt of a long one would match nothing.
        let id = json
            .as_ref()
            .and_then(|j| j.get("id"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty() && s.len() <= crate::webhook::MAX_ID_BYTES);
        return SendOutcome::Delivered {
            provider_message_id: id.map(str::to_owned),
        };
    }
    let detail = field("error").unwrap_or_else(|| http::body_excerpt(&answer.body));
    match http::by_status(answer.status, answer.retry_after, &detail) {
        SendOutcome::Failed {
            kind: FailureKind::Rejected,
            code,
            ..
        } if field("error").is_some() => SendOutcome::Failed {
            kind: FailureKind::Rejected,
            code,
            reason: format!("Not delivered: {detail}"),
        },
        other => other,
    }
}
