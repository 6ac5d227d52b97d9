//! A deadline for request bodies: the whole body must arrive within
//! `http.body_timeout_secs` of the request's head, or the answer is 408.
//!
//! Each route limits a body's size, and the server (`serve.rs`,
//! `http.header_timeout_secs`) how long the head may take, but nothing
//! limited how long a body may trickle in: a client
//! sending a byte now and then held a connection (and its task) for as
//! long as it liked. The deadline covers every route; the chat channel's
//! uploads also have their own, shorter idle limit.

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use switchboard_channel::body::BodyTooSlow;
use tokio::time::{Instant, Sleep};

/// Puts the deadline on every route of `app`.
pub fn apply(app: Router, limit: Duration) -> Router {
    app.layer(axum::middleware::from_fn_with_state(limit, limit_body))
}

async fn limit_body(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + limit;
    // For the log line only; cheap (a standard method is a plain value, the
    // URI shares the request head's buffer): no allocation per request.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let flag = expired.clone();
    let request = request.map(move |body| Body::new(Deadline::new(body, deadline, flag)));
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    metrics::counter!("switchboard_http_body_timeouts_total").increment(1);
    tracing::info!(%method, path = uri.path(), limit_s = limit.as_secs(),
        "Request refused: its body did not arrive in time.");
    // A route that reads its own body (chat uploads, social webhooks)
    // answers its own 408, counted under its own metrics.
    let mut refusal = if response.status() == StatusCode::REQUEST_TIMEOUT {
        response
    } else {
        let body = serde_json::json!({ "error": {
            "code": "body_timeout",
            "message": format!("the request body did not arrive within {} s", limit.as_secs()),
        }});
        let mut refusal = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
        // A browser reads the answer only with the route's CORS headers.
        for (name, value) in response.headers() {
            if name.as_str().starts_with("access-control-") || name == header::VARY {
                refusal.headers_mut().append(name, value.clone());
            }
        }
        refusal
    };
    // The rest of the body was never read: the connection cannot carry
    // another request.
    refusal
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    refusal
}

/// The body of one request, cut off at its deadline.
struct Deadline {
    body: Body,
    deadline: Instant,
    /// Armed the first time the body is not ready: most bodies arrive with
    /// their head and never need a timer.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
    /// Past the deadline: every read fails.
    done: bool,
}

impl Deadline {
    fn new(body: Body, deadline: Instant, expired: Arc<AtomicBool>) -> Deadline {
        Deadline {
            body,
            deadline,
            timer: None,
            expired,
            done: false,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                this.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.done && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server whose one route reads the whole body and answers its length.
    async fn server(limit: Duration) -> std::net::SocketAddr {
        let app = apply(
            Router::new().route(
                "/",
                post(|body: Bytes| async move { body.len().to_string() }),
            ),
            limit,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Sends a 10-byte body in `parts` pieces `gap` apart and returns the
    /// answer, or what was read when the server closed the connection.
    async fn post_slowly(addr: std::net::SocketAddr, parts: usize, gap: Duration) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
            .await
            .unwrap();
        let body = b"0123456789";
        for chunk in body.chunks(body.len().div_ceil(parts)) {
            tokio::time::sleep(gap).await;
            if tcp.write_all(chunk).await.is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // Up to the end of the first answer (its body is short).
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if text.contains("\r\n\r\n") && (text.ends_with('}') || text.ends_with("10")) {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_body_that_trickles_past_the_deadline_gets_408() {
        let addr = server(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let answer = post_slowly(addr, 10, Duration::from_millis(100)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"body_timeout\""), "{answer}");
        // Refused at the deadline, not when the client gave up.
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_body_within_the_deadline_is_read() {
        let addr = server(Duration::from_secs(5)).await;
        let answer = post_slowly(addr, 5, Duration::from_millis(50)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("10"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_sent_with_its_head_is_read() {
        let addr = server(Duration::from_millis(300)).await;
        let answer = post_slowly(addr, 1, Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("10"), "{answer}");
    }

    /// A route with CORS headers keeps them on the 408 (a browser reads
    /// the answer only with them); a route that answers its own 408 (it
    /// told the deadline apart, as chat uploads do) keeps its answer.
    #[tokio::test]
    async fn the_408_keeps_cors_headers_and_a_routes_own_answer() {
        async fn own(body: Body) -> Response {
            match axum::body::to_bytes(body, 1024).await {
                Ok(b) => b.len().to_string().into_response(),
                Err(e) if switchboard_channel::body::is_too_slow(&e) => {
                    (StatusCode::REQUEST_TIMEOUT, "own answer").into_response()
                }
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }
        let cors = Router::new()
            .route(
                "/",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::map_response(
                |mut r: Response| async move {
                    r.headers_mut().insert(
                        "access-control-allow-origin",
                        HeaderValue::from_static("https://shop.example"),
                    );
                    r
                },
            ));
        let app = apply(
            Router::new().merge(cors).route("/own", post(own)),
            Duration::from_millis(300),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let half_sent = |path: &'static str| async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head =
                format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n01234");
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).to_lowercase()
        };
        let answer = half_sent("/").await;
        assert!(answer.starts_with("http/1.1 408"), "{answer}");
        assert!(
            answer.contains("access-control-allow-origin: https://shop.example"),
            "{answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
        let answer = half_sent("/own").await;
        assert!(answer.starts_with("http/1.1 408"), "{answer}");
        assert!(answer.ends_with("own answer"), "{answer}");
    }
}
