//! What every provider's request has in common: reading a bounded answer,
//! `Retry-After`, transport errors without URLs, telemetry.

use super::{FailureKind, SendOutcome};
use crate::Platform;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, Instant, SystemTime};

/// The most of a provider's answer we read. Their answers are a few hundred
/// bytes; a misbehaving server cannot make us buffer more.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The longest wait a provider may ask for (`Retry-After`, Telegram
/// `retry_after`); longer asks are capped. The deliver loop gives up on a
/// reply after its own age limit anyway.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The most of a provider's error text put into a reason.
const MAX_REASON_CHARS: usize = 300;

/// A provider's answer: status, `Retry-After`, and at most
/// [`MAX_ANSWER_BYTES`] of body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer with every one of `secrets` (8 bytes or longer) in its
    /// body replaced by `<redacted>`, before any part of it is cut out for
    /// a reason (cut first, a secret at the cut was left in part).
    pub(crate) fn redacted(mut self, secrets: &[String]) -> Answer {
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            self.body = replace_all(&self.body, secret.as_bytes(), b"<redacted>");
        }
        self
    }
}

/// `haystack` with every `needle` (not empty) replaced by `with`.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Sends `request` and reads the answer. A transport failure (connect,
/// timeout, reset, a body cut short) is a [`SendOutcome::Retry`] whose
/// reason never contains the URL; except once the provider answered 2xx:
/// it took the message, so a body cut short is dropped and the answer read
/// as a bare 2xx (every provider's reading takes one for delivered, without
/// the provider's message id) rather than the reply sent again.
pub(crate) async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, SendOutcome> {
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let mut body = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) if (200..300).contains(&status) => {
                tracing::debug!(status, error = %error.without_url(), "The provider's answer broke off after a success status; taken as delivered.");
                body.clear();
                break;
            }
            Err(error) => return Err(transport(error)),
        };
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// A `reqwest` error as a retry, its URL stripped (Telegram's holds the bot
/// token).
pub(crate) fn transport(error: reqwest::Error) -> SendOutcome {
    let error = error.without_url();
    let what = if error.is_timeout() {
        "the request timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    SendOutcome::retry(
        None,
        format!("{what}: {}", switchboard_core::error_chain(&error)),
    )
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3), capped
/// at [`MAX_RETRY_AFTER`]. A date in the past is "now"; garbage is ignored.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Seconds from a provider's body (Telegram `retry_after`), capped.
pub(crate) fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_RETRY_AFTER)
}

/// A provider's text shortened for a reason shown to agents and logs.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// The answer's body as text for a reason, when it is not the JSON we know.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(body))
}

/// What any status means when the body told us nothing more.
pub(crate) fn by_status(status: u16, retry_after: Option<Duration>, detail: &str) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::Delivered {
            provider_message_id: None,
        },
        408 | 425 | 429 | 500..=599 => {
            SendOutcome::retry(retry_after, format!("HTTP {status}: {detail}"))
        }
        401 => SendOutcome::failed(
            FailureKind::BadToken,
            None,
            format!("HTTP 401: the provider refused our credentials: {detail}"),
        ),
        403 => SendOutcome::failed(FailureKind::Forbidden, None, format!("HTTP 403: {detail}")),
        _ => SendOutcome::failed(
            FailureKind::Rejected,
            None,
            format!("HTTP {status}: {detail}"),
        ),
    }
}

/// Counts one request and its outcome, and logs what an operator must fix.
pub(crate) fn record(platform: Platform, started: Instant, outcome: &SendOutcome) {
    let p = platform.as_str();
    metrics::histogram!("switchboard_social_send_seconds", "platform" => p)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("switchboard_social_sends_total", "platform" => p, "outcome" => outcome.label())
        .increment(1);
    record_unsent(platform, outcome);
}

/// The failure of a reply refused before any request was made (a customer
/// of another platform, an empty or too long text): counted in
/// `switchboard_social_send_failures_total` only, since `sends_total` and
/// `send_seconds` count HTTP requests.
pub(crate) fn record_unsent(platform: Platform, outcome: &SendOutcome) {
    let p = platform.as_str();
    match outcome {
        SendOutcome::Failed { kind, code, reason } => {
            metrics::counter!("switchboard_social_send_failures_total", "platform" => p, "kind" => kind.as_str())
                .increment(1);
            if matches!(kind, FailureKind::BadToken | FailureKind::Forbidden) {
                tracing::error!(platform = p, code, reason = %reason, "The provider refused our credentials; replies through this account fail until the configuration is fixed.");
            } else {
                tracing::info!(platform = p, kind = kind.as_str(), code, reason = %reason, "The provider refused a reply for good.");
            }
        }
        SendOutcome::Retry { after, reason } => {
            tracing::debug!(platform = p, after_ms = after.map(|a| a.as_millis() as u64), reason = %reason, "A reply will be retried.");
        }
        SendOutcome::Delivered { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&headers(" 0 "), now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(120))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(retry_after(&headers(&earlier), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("-3"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            retry_after(&headers("99999999999"), now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("  short "), "short");
        let long = "é".repeat(1000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn statuses() {
        assert!(matches!(
            by_status(204, None, ""),
            SendOutcome::Delivered { .. }
        ));
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(by_status(s, None, ""), SendOutcome::Retry { .. }),
                "{s}"
            );
        }
        let kind = |s| match by_status(s, None, "") {
            SendOutcome::Failed { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind(401), Some(FailureKind::BadToken));
        assert_eq!(kind(403), Some(FailureKind::Forbidden));
        assert_eq!(kind(400), Some(FailureKind::Rejected));
        assert_eq!(kind(302), Some(FailureKind::Rejected));
    }
}
