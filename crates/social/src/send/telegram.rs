//! Telegram's Bot API: `POST {base}/bot{token}/sendMessage` with
//! `{"chat_id": …, "text": …}`.
//!
//! Every answer is `{"ok": true, "result": Message}` or `{"ok": false,
//! "error_code": N, "description": "…", "parameters": {"retry_after": s}}`,
//! where `error_code` mirrors the HTTP status and `description` is the only
//! detail (`Forbidden: bot was blocked by the user`, `Bad Request: chat not
//! found`, …), so permanent failures are told apart by it.
//!
//! **The token is in the URL path.** The URL lives only inside this module,
//! is never printed (`Debug` of `TelegramApi` hides it) and transport
//! errors are stripped of it (`reqwest::Error::without_url`).
//!
//! The provider id of a sent message is `"<chat_id>:<message_id>"`, as for
//! customers' messages in [`crate::parse::telegram`]: Telegram's
//! `message_id` is unique only within a chat. `sendMessage` takes no
//! idempotency key.

use super::http::{self, Answer};
use super::{FailureKind, SendConfig, SendOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use switchboard_core::OutboundMessage;

/// The Bot API's public address.
pub const DEFAULT_BASE: &str = "https://api.telegram.org";

pub(crate) struct TelegramApi {
    /// `{base}/bot{token}/sendMessage`: secret.
    url: String,
}

impl fmt::Debug for TelegramApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TelegramApi(url redacted)")
    }
}

impl TelegramApi {
    pub(crate) fn new(config: &SendConfig) -> Result<TelegramApi, String> {
        let base = super::meta::base_url(config.url.as_deref(), DEFAULT_BASE)?;
        let token = config.secret.expose();
        // "123456:ABC-DEF…": digits, a colon, then [A-Za-z0-9_-]. Checked so
        // the token cannot change the path.
        let well_formed = token.split_once(':').is_some_and(|(id, key)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed {
            return Err(
                "the bot token is not of the form <digits>:<letters, digits, _ or ->".into(),
            );
        }
        Ok(TelegramApi {
            url: format!("{base}/bot{token}/sendMessage"),
        })
    }

    /// The bot token, which is in the request's path, as it is and
    /// percent-encoded (an error page may echo the path either way).
    pub(crate) fn secrets(&self) -> Vec<String> {
        let token = self
            .url
            .rsplit_once("/bot")
            .and_then(|(_, rest)| rest.strip_suffix("/sendMessage"))
            .unwrap_or_default();
        vec![
            token.to_owned(),
            token.replace(':', "%3A"),
            token.replace(':', "%3a"),
        ]
    }

    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        msg: &OutboundMessage,
        text: &str,
    ) -> Result<reqwest::RequestBuilder, SendOutcome> {
        Ok(client.post(&self.url).json(&json!({
            "chat_id": chat_id(&msg.to.value),
            "text": text,
        })))
    }
}

/// A numeric chat id as a JSON number (what Telegram documents), anything
/// else (`@channelname`) as a string.
fn chat_id(value: &str) -> Value {
    value
        .parse::<i64>()
        .map_or_else(|_| Value::from(value), Value::from)
}

#[derive(Debug, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// What Telegram's answer means.
pub(crate) fn read(msg: &OutboundMessage, answer: &Answer) -> SendOutcome {
    let Ok(reply) = serde_json::from_slice::<Reply>(&answer.body) else {
        return http::by_status(
            answer.status,
            answer.retry_after,
            &http::body_excerpt(&answer.body),
        );
    };
    if reply.ok && (200..300).contains(&answer.status) {
        let id = reply
            .result
            .as_ref()
            .and_then(|r| r.get("message_id"))
            .and_then(Value::as_i64)
            .map(|id| format!("{}:{id}", msg.to.value));
        return SendOutcome::Delivered {
            provider_message_id: id,
        };
    }
    classify(
        reply.error_code.unwrap_or(i64::from(answer.status)),
        reply.description.as_deref().unwrap_or(""),
        reply.parameters.as_ref(),
        answer.retry_after,
    )
}

fn classify(
    code: i64,
    description: &str,
    parameters: Option<&Parameters>,
    retry_after: Option<std::time::Duration>,
) -> SendOutcome {
    let lower = description.to_ascii_lowercase();
    let detail = http::excerpt(description);
    let failed = |kind, reason: String| SendOutcome::failed(kind, Some(code), reason);
    if let Some(secs) = parameters.and_then(|p| p.retry_after) {
        return SendOutcome::retry(
            Some(http::seconds(secs)),
            format!("Telegram flood control: {detail}"),
        );
    }
    if parameters.and_then(|p| p.migrate_to_chat_id).is_some() {
        return failed(
            FailureKind::InvalidRecipient,
            "Not delivered: the Telegram group became a supergroup with a new id.".into(),
        );
    }
    match code {
        429 => SendOutcome::retry(retry_after, format!("Telegram rate limit: {detail}")),
        403 if lower.contains("blocked by the user") => failed(
            FailureKind::Blocked,
            "Not delivered: the customer blocked the Telegram bot.".into(),
        ),
        403 if lower.contains("user is deactivated") => failed(
            FailureKind::InvalidRecipient,
            "Not delivered: the customer's Telegram account was deleted.".into(),
        ),
        403 => failed(
            FailureKind::Forbidden,
            format!("Not delivered: Telegram does not let the bot write to this chat: {detail}"),
        ),
        400 if lower.contains("chat not found") || lower.contains("user not found") => failed(
            FailureKind::InvalidRecipient,
            "Not delivered: Telegram does not know this chat.".into(),
        ),
        400 if lower.contains("message is too long") => failed(
            FailureKind::TooLong,
            format!("Not delivered: Telegram found the reply too long: {detail}"),
        ),
        // 404 is what the Bot API answers for a token it does not know.
        401 | 404 => failed(
            FailureKind::BadToken,
            format!(
                "Not delivered: Telegram refused the bot token; an administrator must fix it: {detail}"
            ),
        ),
        500..=599 => SendOutcome::retry(retry_after, format!("Telegram error {code}: {detail}")),
        _ => failed(
            FailureKind::Rejected,
            format!("Not delivered: Telegram refused the reply: {detail}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(body: &str, status: u16) -> SendOutcome {
        let reply: Reply = serde_json::from_str(body).expect("reply");
        classify(
            reply.error_code.unwrap_or(i64::from(status)),
            reply.description.as_deref().unwrap_or(""),
            reply.parameters.as_ref(),
            None,
        )
    }

    fn kind(outcome: &SendOutcome) -> Option<FailureKind> {
        match outcome {
            SendOutcome::Failed { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn flood_control_waits_as_told() {
        let o = outcome(
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
            429,
        );
        assert!(
            matches!(o, SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3))
        );
    }

    #[test]
    fn permanent_refusals() {
        let cases = [
            (
                403,
                "Forbidden: bot was blocked by the user",
                FailureKind::Blocked,
            ),
            (
                403,
                "Forbidden: user is deactivated",
                FailureKind::InvalidRecipient,
            ),
            (
                403,
                "Forbidden: bot can't initiate conversation with a user",
                FailureKind::Forbidden,
            ),
            (
                400,
                "Bad Request: chat not found",
                FailureKind::InvalidRecipient,
            ),
            (
                400,
                "Bad Request: message is too long",
                FailureKind::TooLong,
            ),
            (
                400,
                "Bad Request: can't parse entities",
                FailureKind::Rejected,
            ),
            (401, "Unauthorized", FailureKind::BadToken),
            (404, "Not Found", FailureKind::BadToken),
        ];
        for (code, description, expected) in cases {
            let body = json!({"ok": false, "error_code": code, "description": description});
            let o = outcome(&body.to_string(), 400);
            assert_eq!(kind(&o), Some(expected), "{description}");
        }
        let o = outcome(
            r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001}}"#,
            400,
        );
        assert_eq!(kind(&o), Some(FailureKind::InvalidRecipient));
        let o = outcome(
            r#"{"ok":false,"error_code":502,"description":"Bad Gateway"}"#,
            502,
        );
        assert!(matches!(o, SendOutcome::Retry { .. }));
    }

    #[test]
    fn chat_ids() {
        assert_eq!(chat_id("12345"), json!(12345));
        assert_eq!(chat_id("-1001234"), json!(-1_001_234));
        assert_eq!(chat_id("@channel"), json!("@channel"));
    }
}
