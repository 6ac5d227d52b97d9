//! The size limit on request bodies, applied while a body is read: before
//! any signature or token is checked, a body over [`MAX_BODY_BYTES`] is
//! refused (axum's default limit let 2 MiB be buffered first, and answered
//! its own 413, in plain text and uncounted).

use crate::MAX_BODY_BYTES;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use std::sync::Arc;
use tracing::debug;

/// Where a refusal is counted: the channel's name and how to name the
/// endpoint of a request path in `switchboard_voice_requests_total`.
#[derive(Clone)]
struct Counted {
    source: Arc<str>,
    endpoint: fn(&str) -> &'static str,
}

/// `router` with bodies limited to [`MAX_BODY_BYTES`]; a larger one is
/// answered 413 and counted (`outcome="too_large"`).
pub(crate) fn limit_bodies(
    router: Router,
    source: &str,
    endpoint: fn(&str) -> &'static str,
) -> Router {
    let counted = Counted {
        source: source.into(),
        endpoint,
    };
    router
        .layer(axum::middleware::from_fn_with_state(counted, refuse))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn refuse(State(counted): State<Counted>, request: Request, next: Next) -> Response {
    let endpoint = (counted.endpoint)(request.uri().path());
    let response = next.run(request).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    counter!("switchboard_voice_requests_total",
        "source" => counted.source.to_string(), "endpoint" => endpoint, "outcome" => "too_large")
    .increment(1);
    debug!(source = %counted.source, endpoint, "Voice request refused: its body is too large.");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is over {MAX_BODY_BYTES} bytes"),
    )
        .into_response()
}
