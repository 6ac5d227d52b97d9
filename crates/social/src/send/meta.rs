//! Messenger, Instagram and WhatsApp Cloud: Meta's Graph API.
//!
//! - Messenger: `POST {base}/{page-id}/messages` with
//!   `{"recipient":{"id":PSID},"messaging_type":"RESPONSE","message":{"text":…}}`;
//!   the answer is `{"recipient_id":…,"message_id":"m_…"}`.
//! - Instagram: the same Send API body to `POST {base}/me/messages`: with
//!   a page access token `me` is the page linked to the Instagram account
//!   (the account id we know from webhooks is not the page id), and with an
//!   Instagram-login token (base `https://graph.instagram.com/v21.0`) it is
//!   the Instagram account itself.
//! - WhatsApp: `POST {base}/{phone-number-id}/messages` with
//!   `{"messaging_product":"whatsapp","recipient_type":"individual","to":wa_id,
//!   "type":"text","text":{"preview_url":false,"body":…}}`; the answer's
//!   `messages[0].id` is the `wamid` that status webhooks refer to.
//!
//! The token goes in `Authorization: Bearer`, which the Graph API accepts
//! like the documented `access_token` query parameter, so it never appears
//! in a URL. The Send API takes no idempotency key: a reply whose answer was
//! lost (a timeout after Meta accepted it) is sent again on retry.
//!
//! Errors share one shape, `{"error":{"message","type","code",
//! "error_subcode","error_data":{"details"},"is_transient","fbtrace_id"}}`,
//! and are classified by `code` (and `error_subcode`), never by the message
//! text, which Meta says may change: see [`classify`].

use super::http::{self, Answer};
use super::{FailureKind, SendConfig, SendOutcome};
use crate::Platform;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_channel::SecretValue;
use switchboard_core::OutboundMessage;

/// The Graph API version the default base URL names.
pub const DEFAULT_BASE: &str = "https://graph.facebook.com/v21.0";

pub(crate) struct MetaApi {
    platform: Platform,
    url: String,
    token: SecretValue,
    human_agent_tag: bool,
}

impl MetaApi {
    pub(crate) fn new(config: &SendConfig) -> Result<MetaApi, String> {
        let account = &config.account;
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "the account must be the numeric page, Instagram account or phone number id".into(),
            );
        }
        let base = base_url(config.url.as_deref(), DEFAULT_BASE)?;
        let url = match config.platform {
            Platform::Instagram => format!("{base}/me/messages"),
            _ => format!("{base}/{account}/messages"),
        };
        Ok(MetaApi {
            platform: config.platform,
            url,
            token: config.secret.clone(),
            human_agent_tag: config.human_agent_tag,
        })
    }

    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        msg: &OutboundMessage,
        text: &str,
    ) -> Result<reqwest::RequestBuilder, SendOutcome> {
        let body = match self.platform {
            Platform::WhatsApp => json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": msg.to.value,
                "type": "text",
                "text": {"preview_url": false, "body": text},
            }),
            _ if self.human_agent_tag => json!({
                "recipient": {"id": msg.to.value},
                "messaging_type": "MESSAGE_TAG",
                "tag": "HUMAN_AGENT",
                "message": {"text": text},
            }),
            _ => json!({
                "recipient": {"id": msg.to.value},
                "messaging_type": "RESPONSE",
                "message": {"text": text},
            }),
        };
        Ok(client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .json(&body))
    }

    /// The access token (sent as a bearer token).
    pub(crate) fn secrets(&self) -> Vec<String> {
        vec![self.token.expose().to_owned()]
    }

    pub(crate) fn read(&self, answer: &Answer) -> SendOutcome {
        if (200..300).contains(&answer.status) {
            return SendOutcome::Delivered {
                provider_message_id: success_id(self.platform, &answer.body),
            };
        }
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(ErrorBody { error }) => {
                classify(self.platform, answer.status, answer.retry_after, &error)
            }
            Err(_) => http::by_status(
                answer.status,
                answer.retry_after,
                &http::body_excerpt(&answer.body),
            ),
        }
    }
}

/// `url` (or `default`) checked as an http(s) URL, without a trailing slash.
pub(crate) fn base_url(url: Option<&str>, default: &str) -> Result<String, String> {
    let url = url.unwrap_or(default).trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("the URL is not valid: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err("the URL must be http:// or https:// with a host".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("the URL must have no query or fragment".into());
    }
    Ok(url.to_owned())
}

/// The provider's id of an accepted message: Messenger and Instagram
/// `message_id`, WhatsApp `messages[0].id`. A 2xx answer without one still
/// means accepted.
fn success_id(platform: Platform, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = match platform {
        Platform::WhatsApp => value.get("messages")?.get(0)?.get("id")?,
        _ => value.get("message_id")?,
    };
    id.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GraphError,
}

/// A Graph API error. Every field is optional: Meta documents the shape but
/// not that every field is always present.
#[derive(Debug, Default, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    /// WhatsApp puts `{"messaging_product","details"}` here; some Graph
    /// errors put a string.
    #[serde(default)]
    pub error_data: Option<Value>,
    #[serde(default)]
    pub is_transient: Option<bool>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// `error_data.details` (WhatsApp's explanation), else the message.
    fn detail(&self) -> String {
        let details = self
            .error_data
            .as_ref()
            .and_then(|d| d.get("details"))
            .and_then(Value::as_str);
        http::excerpt(details.or(self.message.as_deref()).unwrap_or("no details"))
    }
}

/// Subcodes of code 10 meaning "sent outside of the allowed window":
/// Messenger 2018278, Instagram 2534022.
const OUTSIDE_WINDOW_SUBCODES: [i64; 2] = [2_018_278, 2_534_022];

/// What a Graph API error means for the reply.
///
/// - The customer-service window is closed (WhatsApp 131047 "Re-engagement
///   message", Messenger/Instagram code 10 with subcode 2018278 / 2534022):
///   failed, with a sentence saying why.
/// - The recipient cannot be reached: WhatsApp 131026 (not on WhatsApp, old
///   app, terms not accepted), 131030 (not in a test number's allowed list),
///   131021 (the business's own number); Messenger 551 ("This person isn't
///   available right now"), code 100 subcode 2018001 ("No matching user").
/// - Credentials: 190 (invalid or expired token), 102; permissions 10, 200–299,
///   230; restricted accounts 368, 131031: failed, logged as errors.
/// - Rate limits: 4, 17, 32, 613, 80000–80014 (Business Use Case: 80002
///   Instagram, 80006 Messenger, 80007 WhatsApp), 130429 (throughput), 131048 (spam
///   rate limit), 131056 (too many messages to one customer): retried.
/// - Temporary: 1, 2, 1200 ("Temporary send message failure"), 131000,
///   131016, 133004, anything Meta marks `is_transient`, HTTP 429 and 5xx:
///   retried.
/// - Anything else: failed, with Meta's explanation.
pub fn classify(
    platform: Platform,
    status: u16,
    retry_after: Option<std::time::Duration>,
    error: &GraphError,
) -> SendOutcome {
    let code = error.code;
    let name = match platform {
        Platform::WhatsApp => "WhatsApp",
        Platform::Instagram => "Instagram",
        _ => "Messenger",
    };
    let failed = |kind, reason: String| SendOutcome::failed(kind, code, reason);
    let detail = error.detail();
    let outside_window = code == Some(10)
        && error
            .error_subcode
            .is_some_and(|s| OUTSIDE_WINDOW_SUBCODES.contains(&s));
    match code {
        Some(131_047) => failed(
            FailureKind::WindowClosed,
            "Not delivered: WhatsApp's 24-hour customer service window is closed. The customer \
             last wrote more than 24 hours ago; until they write again, WhatsApp accepts only \
             pre-approved template messages."
                .into(),
        ),
        Some(10) if outside_window => failed(
            FailureKind::WindowClosed,
            format!(
                "Not delivered: {name}'s 24-hour messaging window is closed. The customer last \
                 wrote more than 24 hours ago; the reply can be sent once they write again."
            ),
        ),
        Some(131_026) => failed(
            FailureKind::InvalidRecipient,
            format!(
                "Not delivered: WhatsApp cannot deliver to this customer (the number may not \
                 use WhatsApp, or their app is out of date): {detail}"
            ),
        ),
        Some(551) => failed(
            FailureKind::InvalidRecipient,
            format!(
                "Not delivered: this person isn't available on {name} right now (they may have \
                 blocked the page or left): {detail}"
            ),
        ),
        Some(100) if error.error_subcode == Some(2_018_001) => failed(
            FailureKind::InvalidRecipient,
            format!("Not delivered: {name} knows no such customer for this account."),
        ),
        Some(131_030 | 131_021) => failed(
            FailureKind::InvalidRecipient,
            format!("Not delivered: WhatsApp refused the recipient: {detail}"),
        ),
        // 0: AuthException (401); 190: the token expired; 102: the session.
        Some(0 | 190 | 102) => failed(
            FailureKind::BadToken,
            format!(
                "Not delivered: {name} refused Switchboard's access token (code {}); an \
                 administrator must renew it: {detail}",
                code.unwrap_or_default()
            ),
        ),
        // 3: a capability or permissions issue (WhatsApp answers it with
        // HTTP 500, which no retry mends).
        Some(3 | 10 | 200..=299 | 368 | 131_031) => failed(
            FailureKind::Forbidden,
            format!(
                "Not delivered: {name} does not allow this account to send it (code {}): {detail}",
                code.unwrap_or_default()
            ),
        ),
        // 80000-80014: the Business Use Case rate limits (80001 Pages,
        // 80002 Instagram, 80006 Messenger, 80007 WhatsApp, ...), answered
        // with HTTP 400 and no `is_transient`.
        Some(4 | 17 | 32 | 613 | 80_000..=80_014 | 130_429 | 131_048 | 131_056) => {
            SendOutcome::retry(
                retry_after,
                format!(
                    "{name} rate limit (code {}): {detail}",
                    code.unwrap_or_default()
                ),
            )
        }
        Some(1 | 2 | 1200 | 131_000 | 131_016 | 133_004) => SendOutcome::retry(
            retry_after,
            format!(
                "{name} temporary error (code {}): {detail}",
                code.unwrap_or_default()
            ),
        ),
        _ if error.is_transient == Some(true) || status == 429 || status >= 500 => {
            SendOutcome::retry(
                retry_after,
                format!(
                    "{name} error (HTTP {status}, code {}): {detail}",
                    code.unwrap_or_default()
                ),
            )
        }
        _ => failed(
            FailureKind::Rejected,
            format!(
                "Not delivered: {name} refused the reply (code {}): {detail}",
                code.unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: i64, subcode: Option<i64>) -> GraphError {
        GraphError {
            message: Some("(#x) something".into()),
            code: Some(code),
            error_subcode: subcode,
            ..GraphError::default()
        }
    }

    fn kind(outcome: SendOutcome) -> Option<FailureKind> {
        match outcome {
            SendOutcome::Failed { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Codes that mean "no", whatever the HTTP status: a permissions issue
    /// WhatsApp answers with 500 fails at once (it was retried for a day),
    /// and an AuthException is a bad token (an administrator must act).
    #[test]
    fn permission_and_auth_codes_fail_whatever_the_status() {
        let capability = classify(Platform::WhatsApp, 500, None, &error(3, None));
        assert_eq!(kind(capability), Some(FailureKind::Forbidden));
        let auth = classify(Platform::WhatsApp, 401, None, &error(0, None));
        assert_eq!(kind(auth), Some(FailureKind::BadToken));
    }

    #[test]
    fn closed_windows_read_as_sentences() {
        let wa = classify(Platform::WhatsApp, 400, None, &error(131_047, None));
        let SendOutcome::Failed {
            kind: found,
            code,
            reason,
        } = wa
        else {
            panic!("not failed: {wa:?}");
        };
        assert_eq!((found, code), (FailureKind::WindowClosed, Some(131_047)));
        assert!(reason.contains("24-hour customer service window is closed"));
        for (platform, sub) in [
            (Platform::Messenger, 2_018_278),
            (Platform::Instagram, 2_534_022),
        ] {
            let outcome = classify(platform, 400, None, &error(10, Some(sub)));
            assert_eq!(kind_of(&outcome), Some(FailureKind::WindowClosed));
        }
        // Code 10 without that subcode is a permission problem.
        assert_eq!(
            kind(classify(Platform::Messenger, 400, None, &error(10, None))),
            Some(FailureKind::Forbidden)
        );
    }

    fn kind_of(outcome: &SendOutcome) -> Option<FailureKind> {
        kind(outcome.clone())
    }

    #[test]
    fn rate_limits_and_temporary_errors_are_retried() {
        for code in [
            4, 17, 32, 613, 80_001, 80_002, 80_006, 80_007, 130_429, 131_048, 131_056, 1, 2, 1200,
            131_000,
        ] {
            let outcome = classify(Platform::WhatsApp, 400, None, &error(code, None));
            assert!(matches!(outcome, SendOutcome::Retry { .. }), "{code}");
        }
        let mut transient = error(99_999, None);
        transient.is_transient = Some(true);
        assert!(matches!(
            classify(Platform::Messenger, 400, None, &transient),
            SendOutcome::Retry { .. }
        ));
        let unknown = error(99_999, None);
        assert!(matches!(
            classify(Platform::Messenger, 503, None, &unknown),
            SendOutcome::Retry { .. }
        ));
        assert_eq!(
            kind(classify(Platform::Messenger, 400, None, &unknown)),
            Some(FailureKind::Rejected)
        );
    }

    #[test]
    fn recipients_and_credentials() {
        let cases = [
            (131_026, None, FailureKind::InvalidRecipient),
            (551, None, FailureKind::InvalidRecipient),
            (100, Some(2_018_001), FailureKind::InvalidRecipient),
            (100, None, FailureKind::Rejected),
            (190, Some(463), FailureKind::BadToken),
            (200, None, FailureKind::Forbidden),
            (368, None, FailureKind::Forbidden),
        ];
        for (code, sub, expected) in cases {
            let outcome = classify(Platform::Messenger, 400, None, &error(code, sub));
            assert_eq!(kind(outcome), Some(expected), "{code}");
        }
    }

    #[test]
    fn whatsapp_details_are_preferred_to_the_message() {
        let body = br#"{"error":{"message":"(#131026) Message Undeliverable","type":"OAuthException",
            "code":131026,"error_data":{"messaging_product":"whatsapp","details":"Receiver is incapable"},
            "fbtrace_id":"Az8"}}"#;
        let ErrorBody { error } = serde_json::from_slice(body).expect("graph error");
        let SendOutcome::Failed { reason, .. } = classify(Platform::WhatsApp, 400, None, &error)
        else {
            panic!("not failed");
        };
        assert!(reason.ends_with("Receiver is incapable"), "{reason}");
        // error_data as a string (older Graph errors) is tolerated.
        let body = br#"{"error":{"code":100,"error_data":"oops","message":"Invalid parameter"}}"#;
        let ErrorBody { error } = serde_json::from_slice(body).expect("graph error");
        assert_eq!(error.detail(), "Invalid parameter");
    }

    #[test]
    fn success_ids() {
        assert_eq!(
            success_id(
                Platform::WhatsApp,
                br#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.X"}]}"#
            ),
            Some("wamid.X".into())
        );
        assert_eq!(
            success_id(
                Platform::Messenger,
                br#"{"recipient_id":"1","message_id":"m_1"}"#
            ),
            Some("m_1".into())
        );
        assert_eq!(success_id(Platform::WhatsApp, br#"{"messages":[]}"#), None);
        assert_eq!(success_id(Platform::Messenger, b"not json"), None);
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url(None, DEFAULT_BASE).as_deref(),
            Ok("https://graph.facebook.com/v21.0")
        );
        assert_eq!(
            base_url(Some("http://127.0.0.1:9/v21.0/"), DEFAULT_BASE).as_deref(),
            Ok("http://127.0.0.1:9/v21.0")
        );
        assert!(base_url(Some("ftp://x"), DEFAULT_BASE).is_err());
        assert!(base_url(Some("not a url"), DEFAULT_BASE).is_err());
        assert!(base_url(Some("https://x/?access_token=1"), DEFAULT_BASE).is_err());
    }
}
