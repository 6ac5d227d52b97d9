//! Two allowances in front of every `/api/v1` route, in memory, per
//! instance:
//!
//! - **failed sign-ins per client address** (`failed_sign_ins_per_minute`):
//!   each request that brings a credential not known good takes a token of
//!   its address up front, given back unless it is answered `401`; an
//!   address with none left is answered `429 rate_limited` before its
//!   credential is looked up, so guessing tokens, or a script with a stale
//!   one in a loop, neither goes on nor loads Redis with look-ups, however
//!   many requests it has in flight at once. A token that signed in on this
//!   instance within the last hour still passes from a refused address (an
//!   office's agents behind one NAT keep working while one of its machines
//!   loops with a stale token), and so does a websocket ticket (made by the
//!   server, so not worth guessing; a failed one still counts).
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
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::limits::PerKey;
use switchboard_channel::logs::LogThrottle;
use switchboard_channel::net::client_ip;

static BLOCKED: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// How long a token that signed in passes a refused address.
const KNOWN_GOOD: Duration = Duration::from_secs(3600);
/// Known-good tokens kept at most (the oldest forgotten first).
const KNOWN_GOOD_MAX: usize = 10_000;

/// The allowances; see the module's documentation.
#[derive(Debug)]
pub(crate) struct Guard {
    failures: PerKey<IpAddr>,
    writes: PerKey<String>,
    /// Digests of tokens that signed in lately (`crate::http::caller`),
    /// with when.
    good: Mutex<HashMap<String, Instant>>,
}

impl Guard {
    pub(crate) fn new(failed_sign_ins_per_minute: u32, writes_per_minute: u32) -> Guard {
        Guard {
            failures: PerKey::new(failed_sign_ins_per_minute),
            writes: PerKey::new(writes_per_minute),
            good: Mutex::new(HashMap::new()),
        }
    }

    fn known_good(&self, digest: &str, now: Instant) -> bool {
        let good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        good.get(digest)
            .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_GOOD)
    }

    /// Notes a token that signed in (its caller was authenticated):
    /// it passes a refused address for [`KNOWN_GOOD`]. Only there: an
    /// answer's status says nothing of the token when the route never
    /// looked at it (a 404 of an unknown path, a 405, a websocket route
    /// asked without an upgrade), and any guess would pass that way.
    pub(crate) fn signed_in(&self, digest: String, now: Instant) {
        let mut good = self.good.lock().unwrap_or_else(|e| e.into_inner());
        if good.len() >= KNOWN_GOOD_MAX && !good.contains_key(&digest) {
            good.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_GOOD);
            if good.len() >= KNOWN_GOOD_MAX
                && let Some(oldest) = good
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                good.remove(&oldest);
            }
        }
        good.insert(digest, now);
    }
}

/// The credential a request brings: the bearer token's digest (or the
/// websocket's `access_token`'s), or a websocket ticket.
enum Credential {
    Token(String),
    Ticket,
    None,
}

fn credential(request: &Request) -> Credential {
    if let Some(token) = switchboard_channel::bearer(request.headers()) {
        return Credential::Token(switchboard_router::settings::token_digest(token));
    }
    let query = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match name.as_ref() {
            "access_token" => {
                return Credential::Token(switchboard_router::settings::token_digest(&value));
            }
            "ticket" => return Credential::Ticket,
            _ => {}
        }
    }
    Credential::None
}

/// The first non-empty value of `name` in a query, as [`credential`]
/// reads it. The websocket's handler reads its `ticket` and
/// `access_token` through this: read otherwise (a repeated key's last
/// value), the guard weighed one credential and the handler checked
/// another, so that `?ticket=x&access_token=GUESS&ticket=` had tokens
/// guessed past the limit on failed sign-ins.
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v.into_owned())
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
    let credential = credential(&request);
    let passes = match &credential {
        Credential::Token(digest) => guard.known_good(digest, now),
        Credential::Ticket => true,
        Credential::None => false,
    };
    // Taken up front, so that requests in flight at once cannot all pass
    // one check; given back below unless the answer is 401.
    let charged = match ip {
        Some(ip) if !passes => {
            if !guard.failures.take_at(&ip, now) {
                counter!("switchboard_agent_api_throttled_total", "reason" => "failed_sign_ins")
                    .increment(1);
                switchboard_channel::warn_throttled!(BLOCKED, client = %ip, "Agent API requests refused: too many failed sign-ins from this address.");
                let wait = guard.failures.wait_secs_at(&ip, now).max(1);
                return refused(
                    wait,
                    format!("too many failed sign-ins from this address; try again in {wait} s"),
                );
            }
            Some(ip)
        }
        _ => None,
    };
    let write = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if write
        && let Credential::Token(digest) = &credential
        && !guard.writes.take_at(digest, now)
    {
        if let Some(ip) = charged {
            guard.failures.give_back(&ip);
        }
        counter!("switchboard_agent_api_throttled_total", "reason" => "writes").increment(1);
        let wait = guard.writes.wait_secs_at(digest, now).max(1);
        return refused(
            wait,
            format!(
                "more than {} changes a minute with this token; this one was not acted on",
                inner.settings.http_writes_per_minute
            ),
        );
    }
    let response = next.run(request).await;
    let failed = response.status() == StatusCode::UNAUTHORIZED;
    match ip {
        // A request that passed without a charge and failed (a ticket)
        // counts all the same.
        Some(ip) if failed && charged.is_none() => {
            guard.failures.take_at(&ip, Instant::now());
        }
        Some(ip) if !failed && charged.is_some() => guard.failures.give_back(&ip),
        _ => {}
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
