//! One HTTP attempt, what its answer means, and how long to wait before
//! the next.

use crate::config::Target;
use crate::sign::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, signature_header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first wait after a failed attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx: the receiver has it.
    Delivered { status: u16 },
    /// Worth trying again (408, 429, 5xx, no connection, timeout), after
    /// at least `after` when the receiver said so (`Retry-After`).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Refused for good (another 4xx, a redirect): settled without
    /// delivery, counted and logged.
    Rejected { status: u16 },
}

/// What a status means.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered { status },
        408 | 429 | 500..=599 => Attempt::Retry {
            reason: format!("HTTP {status}"),
            after: retry_after,
        },
        _ => Attempt::Rejected { status },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not worth a parser
/// here: it is treated as absent).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// `base · 2^(attempt-1)` capped, with "equal jitter" (half fixed, half
/// random) so that many waiting deliveries do not come back together.
/// `attempt` counts from 1.
pub fn backoff(attempt: u32, at_least: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    let nominal = BACKOFF_BASE
        .checked_mul(1u32 << exponent)
        .unwrap_or(BACKOFF_CAP)
        .min(BACKOFF_CAP);
    let half = nominal / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = if spread == 0 {
        0
    } else {
        rand::random_range(0..=spread)
    };
    let wait = half + Duration::from_millis(jitter);
    wait.max(at_least.unwrap_or_default().min(BACKOFF_CAP))
}

/// The unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// POSTs `body`, signed, to the target.
pub async fn post(
    client: &reqwest::Client,
    target: &Target,
    event_id: &str,
    event_type: &str,
    body: &[u8],
) -> Attempt {
    let signature = signature_header(target.secret.expose().as_bytes(), unix_now(), body);
    let sent = client
        .post(target.url.clone())
        .timeout(target.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, event_id)
        .header(EVENT_TYPE_HEADER, event_type)
        .header(SIGNATURE_HEADER, signature)
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let after = retry_after(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            classify(status, after)
        }
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            // Without the URL: it may carry a token in its query. With
            // the error's causes: reqwest's own text is only "error
            // sending request", the same for DNS, TLS and a refusal.
            Attempt::Retry {
                reason: format!(
                    "{what}: {}",
                    switchboard_core::error_chain(&e.without_url())
                ),
                after: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_says_why() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            // A port nobody listens on (bound, then let go).
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a port")
                .port();
            let target = Target {
                name: "crm".into(),
                url: format!("http://127.0.0.1:{port}/hooks?token=s3cret")
                    .parse()
                    .expect("url"),
                secret: switchboard_channel::Secret::Inline("0123456789abcdef".into())
                    .resolve()
                    .expect("secret"),
                events: std::collections::HashSet::new(),
                timeout: Duration::from_secs(2),
                max_age: Duration::from_secs(60),
            };
            let client = reqwest::Client::new();
            let Attempt::Retry { reason, .. } = post(&client, &target, "e1", "t", b"{}").await
            else {
                panic!("not a retry");
            };
            assert!(reason.starts_with("cannot connect: "), "{reason}");
            assert!(
                reason.to_ascii_lowercase().contains("refused"),
                "the cause is named: {reason}"
            );
            assert!(!reason.contains("s3cret"), "{reason}");
        });
    }

    #[test]
    fn statuses_are_delivered_retried_or_rejected() {
        assert_eq!(classify(200, None), Attempt::Delivered { status: 200 });
        assert_eq!(classify(204, None), Attempt::Delivered { status: 204 });
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(matches!(classify(s, None), Attempt::Retry { .. }), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify(s, None), Attempt::Rejected { status: s });
        }
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_honours_retry_after() {
        for attempt in 1..40 {
            let nominal = BACKOFF_BASE
                .checked_mul(1 << attempt.min(32u32).saturating_sub(1).min(31))
                .unwrap_or(BACKOFF_CAP)
                .min(BACKOFF_CAP);
            let d = backoff(attempt, None);
            assert!(d >= nominal / 2 && d <= nominal, "{attempt}: {d:?}");
        }
        assert!(backoff(1, Some(Duration::from_secs(20))) >= Duration::from_secs(20));
        assert_eq!(backoff(1, Some(Duration::from_secs(100_000))), BACKOFF_CAP);
    }
}
