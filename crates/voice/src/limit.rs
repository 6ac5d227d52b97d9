//! Request bodies read in one place, before any handler, signature or
//! token check: a body over [`MAX_BODY_BYTES`] is refused while it is read
//! (axum's default limit let 2 MiB be buffered first, and answered its own
//! 413, in plain text and uncounted), and so is one that broke off or
//! missed the daemon's deadline for bodies (axum's `Bytes` extractor
//! answered those 400 in plain text, uncounted too). Every refusal here
//! is counted in `switchboard_voice_requests_total`.

use crate::MAX_BODY_BYTES;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::counter;
use std::sync::Arc;
use switchboard_channel::body::ReadError;
use tracing::debug;

/// Where a refusal is counted: the channel's name and how to name the
/// endpoint of a request path in `switchboard_voice_requests_total`.
#[derive(Clone)]
struct Counted {
    source: Arc<str>,
    endpoint: fn(&str) -> &'static str,
}

/// `router` with each body read to its end before the handler runs;
/// one over [`MAX_BODY_BYTES`] is answered 413 (`outcome="too_large"`),
/// one past the deadline 408 (`body_timeout`), one that broke off 400
/// (`broken_body`).
pub(crate) fn limit_bodies(
    router: Router,
    source: &str,
    endpoint: fn(&str) -> &'static str,
) -> Router {
    let counted = Counted {
        source: source.into(),
        endpoint,
    };
    router.layer(axum::middleware::from_fn_with_state(counted, read))
}

async fn read(State(counted): State<Counted>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let error = match switchboard_channel::body::read(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        Err(e) => e,
    };
    let (status, outcome) = match &error {
        ReadError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ReadError::TooSlow => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
        ReadError::Broken(_) => (StatusCode::BAD_REQUEST, "broken_body"),
    };
    let endpoint = (counted.endpoint)(parts.uri.path());
    counter!("switchboard_voice_requests_total",
        "source" => counted.source.to_string(), "endpoint" => endpoint, "outcome" => outcome)
    .increment(1);
    debug!(source = %counted.source, endpoint, outcome, "Voice request refused while its body was read.");
    (status, error.to_string()).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::routing::post;
    use tower::ServiceExt;

    fn endpoint(_: &str) -> &'static str {
        "cti"
    }

    async fn status_of(body: Body) -> (StatusCode, String) {
        let router = limit_bodies(
            Router::new().route(
                "/e",
                post(|b: Bytes| async move { format!("read {}", b.len()) }),
            ),
            "pbx",
            endpoint,
        );
        let reply = router
            .oneshot(Request::post("/e").body(body).unwrap())
            .await
            .unwrap();
        let status = reply.status();
        let text = axum::body::to_bytes(reply.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    /// Each way a body can fail to arrive is answered and counted by its
    /// kind; a whole body reaches the handler as it was sent.
    #[tokio::test]
    async fn bodies_that_do_not_arrive_are_answered_and_counted_by_kind() {
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let cut = |e: axum::Error| {
            Body::from_stream(futures::stream::iter([
                Ok(Bytes::from_static(b"event=newCall")),
                Err(e),
            ]))
        };
        let broken = status_of(cut(axum::Error::new(std::io::Error::other("reset")))).await;
        assert_eq!(broken.0, StatusCode::BAD_REQUEST, "{}", broken.1);
        let slow = status_of(cut(axum::Error::new(
            switchboard_channel::body::BodyTooSlow,
        )))
        .await;
        assert_eq!(slow.0, StatusCode::REQUEST_TIMEOUT, "{}", slow.1);
        let large = status_of(Body::from(vec![b'x'; MAX_BODY_BYTES + 1])).await;
        assert_eq!(large.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", large.1);
        let whole = status_of(Body::from(vec![b'x'; MAX_BODY_BYTES])).await;
        assert_eq!(whole, (StatusCode::OK, format!("read {MAX_BODY_BYTES}")));
        for outcome in ["broken_body", "body_timeout", "too_large"] {
            assert_eq!(
                counters.get(&format!(
                    "switchboard_voice_requests_total{{endpoint=cti,outcome={outcome},source=pbx}}"
                )),
                1,
                "{outcome}: {}",
                counters.dump()
            );
        }
    }
}
