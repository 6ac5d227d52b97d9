//! Errors of the agent API: an HTTP status, a stable code and a message.
//! The codes are part of the API (`docs/agent-api.md`); messages may change.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::Serialize;
use switchboard_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

/// Every error code the API answers with (HTTP and websocket `result`
/// frames): the list `docs/agent-api.openapi.yaml` gives (checked by a
/// test), so that a client may match on them.
pub const CODES: &[&str] = &[
    "bad_json",
    "bad_request",
    "bad_frame",
    "bad_window",
    "bad_range",
    "unauthorized",
    "forbidden",
    "unknown_contact",
    "unknown_agent",
    "unknown_queue",
    "unknown_media",
    "not_offered",
    "not_assigned",
    "over_capacity",
    "conflict",
    "refused",
    "too_large",
    "invalid_cursor",
    "invalid_presence",
    "invalid_text",
    "invalid_client_id",
    "invalid_disposition",
    "invalid_transfer",
    "invalid_agent",
    "unavailable",
    "provider_unavailable",
    "rate_limited",
    "not_found",
    "method_not_allowed",
];

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        // A code not in the documented list is a bug; every test that
        // reaches an error checks it (debug builds only).
        debug_assert!(CODES.contains(&code), "undocumented error code {code:?}");
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid agent or supervisor token is required (Authorization: Bearer <token>)",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A body cut off by the daemon's deadline (`[http]
    /// body_timeout_secs`): the daemon's layer replaces the answer with
    /// its own 408 `body_timeout` and counts it, so the API neither lists
    /// nor counts the code.
    pub fn body_timeout() -> ApiError {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "body_timeout",
            message: "the request body did not arrive in time".into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A query that cannot be read, refused only once the caller is known
    /// (a stranger gets 401 whatever the query, and is counted as one).
    pub fn from_query<T>(
        query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
    ) -> Result<T, ApiError> {
        query
            .map(|axum::extract::Query(q)| q)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// Maps a refusal of a routing script (`not_offered`, `at_capacity`, …)
    /// to its API error.
    pub fn refused(reason: &str, contact: &str) -> ApiError {
        match reason {
            "not_offered" => ApiError::conflict(
                "not_offered",
                format!("contact {contact} is not offered to you (any more)"),
            ),
            "not_assigned" => ApiError::conflict(
                "not_assigned",
                format!("contact {contact} is not assigned to you"),
            ),
            "not_held" => {
                ApiError::conflict("not_assigned", format!("you do not hold contact {contact}"))
            }
            "at_capacity" => ApiError::conflict("over_capacity", "the agent is at capacity"),
            "unknown_agent" => ApiError::not_found("unknown_agent", "no such agent"),
            "on_call" => ApiError::conflict(
                "refused",
                format!(
                    "you are on a call: contact {contact} was taken back and goes to another agent"
                ),
            ),
            other => ApiError::conflict("refused", format!("refused: {other}")),
        }
    }
}

/// Store failures answered 503: logged at `warn` once a minute.
static STORE_FAILURES: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict("conflict", m),
            // The store's own words go to the log, not to the caller: the
            // sign-in reads Redis before any credential is accepted, so a
            // stranger would learn Redis's state ("NOAUTH", "LOADING",
            // "Connection refused") from the answer.
            other => {
                match STORE_FAILURES.admit() {
                    Some(left_out) => {
                        tracing::warn!(error = %other, left_out, "The agent API could not reach the store; answered 503.");
                    }
                    None => {
                        tracing::debug!(error = %other, "The agent API could not reach the store; answered 503.");
                    }
                }
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "temporarily unavailable; try again shortly",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status != StatusCode::REQUEST_TIMEOUT {
            counter!("switchboard_agent_api_errors_total", "code" => self.code).increment(1);
        }
        let mut response = (
            self.status,
            Json(Body {
                error: Detail {
                    code: self.code,
                    message: &self.message,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Buckets refill a token every 2 s (websocket tickets); attachment
        // fetches end within seconds.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Axum's own refusals (a body over the limit, a query or path it cannot
/// read) are plain text; the API promises JSON errors with stable codes,
/// counted like every other. A response that is already JSON, or not an
/// error, passes unchanged.
pub(crate) async fn documented(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error()) || status == StatusCode::UNAUTHORIZED {
        return response;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "too_large", "the request body is over the limit").into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = response.headers().get(header::ALLOW).cloned();
            let mut refused = ApiError::new(
                status,
                "method_not_allowed",
                "this path does not take that method",
            )
            .into_response();
            if let Some(allow) = allow {
                refused.headers_mut().insert(header::ALLOW, allow);
            }
            refused
        }
        StatusCode::NOT_FOUND => {
            ApiError::not_found("not_found", "no such path in the API").into_response()
        }
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request's path, query or body is not what this endpoint takes",
        )
        .into_response(),
        _ => response,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A client told to slow down or come back is told when.
    #[test]
    fn refusals_to_retry_say_when() {
        let retry_after = |e: ApiError| {
            e.into_response()
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let limited = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
        assert_eq!(retry_after(limited).as_deref(), Some("2"));
        let away = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "later");
        assert_eq!(retry_after(away).as_deref(), Some("1"));
        assert_eq!(retry_after(ApiError::unauthorized()), None);
    }

    /// A store failure is answered without the store's words, which a
    /// caller not signed in yet would otherwise read.
    #[test]
    fn a_store_failure_is_answered_without_its_details() {
        let e = ApiError::from(StoreError::Unavailable(
            "NOAUTH Authentication required".into(),
        ));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(!e.message.contains("NOAUTH"), "{}", e.message);
    }
}
