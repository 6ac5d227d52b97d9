//! Two allowances in front of every `/api/v1` route, in memory, per
//! instance:
//!
//! - **failed sign-ins per client address** (`failed_sign_ins_per_minute`):
//!   each `401` takes a token of the caller's address; an address with none
//!   left is answered `429 rate_limited` before its token is looked up, so
//!   guessing tokens, or a script with a stale one in a loop, neither goes
//!   on nor loads Redis with look-ups. Callers with a valid token from that
//!   address wait too (behind one NAT or a proxy on another host, everybody
//!   shares the address: see `docs/agent-api.md`).
//! - **writes per token** (`http_writes_per_minute`): each `POST`, `PUT`,
//!   `PATCH` or `DELETE` takes a token of the caller's bearer token (the
//!   websocket has its own frame allowance), so a console or script stuck
//!   in a loop cannot flood routing with actions.

use crate::Inner;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_channel::limits::PerKey;
use switchboard_channel::logs::LogThrottle;
use switchboard_channel::net::client_ip;

static BLOCKED: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// The allowances; see the module's documentation.
#[derive(Debug)]
pub(crate) struct Guard {
    failures: PerKey<IpAddr>,
    writes: PerKey<String>,
}

impl Guard {
    pub(crate) fn new(failed_sign_ins_per_minute: u32, writes_per_minute: u32) -> Guard {
        Guard {
            failures: PerKey::new(failed_sign_ins_per_minute),
            writes: PerKey::new(writes_per_minute),
        }
    }
}

/// The middleware: refuses a request over either allowance, and charges
/// the caller's address for each `401` answered.
pub(crate) async fn guard(
    State(inner): State<Arc<Inner>>,
    request: Request,
    next: Next,
) -> Response {
    let guard = &inner.guard;
    let ip = client_ip(request.headers(), request.extensions());
    let now = Instant::now();
    if let Some(ip) = ip
        && !guard.failures.has_token_at(&ip, now)
    {
        counter!("switchboard_agent_api_throttled_total", "reason" => "failed_sign_ins")
            .increment(1);
        switchboard_channel::warn_throttled!(BLOCKED, client = %ip, "Agent API requests refused: too many failed sign-ins from this address.");
        let wait = guard.failures.wait_secs_at(&ip, now).max(1);
        return refused(
            wait,
            format!("too many failed sign-ins from this address; try again in {wait} s"),
        );
    }
    let write = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if write && let Some(token) = switchboard_channel::bearer(request.headers()) {
        // Kept by the token's digest: the allowance's map holds no tokens.
        let key = switchboard_router::settings::token_digest(token);
        if !guard.writes.take_at(&key, now) {
            counter!("switchboard_agent_api_throttled_total", "reason" => "writes").increment(1);
            let wait = guard.writes.wait_secs_at(&key, now).max(1);
            return refused(
                wait,
                format!(
                    "more than {} changes a minute with this token; this one was not acted on",
                    inner.settings.http_writes_per_minute
                ),
            );
        }
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(ip) = ip
    {
        guard.failures.take_at(&ip, Instant::now());
    }
    response
}

fn refused(wait_secs: u64, message: String) -> Response {
    let mut response =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response();
    if let Ok(value) = HeaderValue::from_str(&wait_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}
