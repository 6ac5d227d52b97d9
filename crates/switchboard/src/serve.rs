//! The HTTP server's accept loop: hyper's HTTP/1 connections with a limit
//! on how long a request's head may take, `TCP_NODELAY`, the peer's
//! address for the handlers (`ConnectInfo`), and a graceful stop.
//!
//! `axum::serve` starts hyper without a timer, which switches hyper's
//! header-read timeout off: a client sending its head a byte now and then
//! held a connection, and its task, for ever (and a draining instance
//! waited for it). Here the head must arrive within
//! `http.header_timeout_secs`, and each connection is a task of this
//! loop's own set, so that stopping the loop (the drain deadline) closes
//! them all.
//!
//! Nothing limited a response's writing either: a client that asked for
//! something large (the widget's script, `/metrics`, an export) and then
//! stopped reading held its connection and task for ever, a file
//! descriptor each. A write that makes no progress for
//! `http.write_timeout_secs` now closes the connection (`tokio-io-timeout`
//! around the socket, so upgraded websockets have it too).
//!
//! And nothing limited how many connections were open: past the open-file
//! limit `accept` fails (`EMFILE`), and so does everything else that opens
//! a descriptor, Redis reconnects included. At most
//! `http.max_connections` are served now (by default what the open-file
//! limit leaves after a reserve, `limits.rs`); one more is answered `503`
//! and closed, and counted in `switchboard_http_connections_refused_total`.
//! Websockets may take nineteen twentieths of the places; the rest are
//! kept for plain requests and the agent API's websocket.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse as _;
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a connection may take over its parts, and how many there may
/// be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a request's head, and idle between two requests.
    pub header: Duration,
    /// For a write that makes no progress.
    pub write: Duration,
    /// Connections served at once.
    pub connections: usize,
}

/// What a connection over [`Limits::connections`] is told before it is
/// closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 34\r\nretry-after: 5\r\nconnection: close\r\n\r\ntoo many connections, retry later\n";

/// How often a refusal is logged, at most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` is cancelled, then lets the
/// requests in flight finish (each connection closes after its current
/// request) and returns once every connection has ended. Dropping the
/// future closes every connection at once.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    let permits = Arc::new(Semaphore::new(
        limits.connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut refused = Refusals::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(%error, "Accepting an HTTP connection failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A permit per socket, held by the socket itself: an upgraded
        // websocket outlives its HTTP connection's task.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&tcp);
            refused.log(peer, limits.connections);
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "Could not set TCP_NODELAY on an accepted connection.");
        }
        let app = app.clone();
        let stop = stop.clone();
        let permits = permits.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    if upgrade_over_reserve(&request, &permits, limits.connections) {
                        return Either::Left(std::future::ready(Ok(refuse_upgrade())));
                    }
                    request.extensions_mut().insert(ConnectInfo(peer));
                    Either::Right(app.clone().oneshot(request.map(Body::new)))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header);
            let mut io = TimeoutStream::new(tcp);
            io.set_write_timeout(Some(limits.write));
            let io = Counted::new(Box::pin(io), permit);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "An HTTP connection ended with an error.");
                    }
                    return;
                }
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(error) = connection.await {
                tracing::trace!(%error, "An HTTP connection ended with an error.");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Websockets whose upgrade may take the last places: the agent API's
/// (agents are few, and they are the ones answering).
const UPGRADES_INTO_RESERVE: &[&str] = &["/api/v1/ws"];

/// Whether `request` asks to upgrade (a websocket) while fewer than a
/// twentieth of the `max` places are free. Websockets stay open for hours,
/// so a crowd of them (chat widgets) could otherwise take every place, and
/// leave none for health checks, metrics, webhooks and the agent API:
/// they keep that twentieth.
fn upgrade_over_reserve<B>(request: &hyper::Request<B>, permits: &Semaphore, max: usize) -> bool {
    // The header first: nearly every request has none.
    let reserve = max / 20;
    request.headers().contains_key(hyper::header::UPGRADE)
        && reserve > 0
        && permits.available_permits() < reserve
        && !UPGRADES_INTO_RESERVE.contains(&request.uri().path())
}

/// The answer to an upgrade refused by [`upgrade_over_reserve`].
fn refuse_upgrade() -> axum::response::Response {
    metrics::counter!("switchboard_http_connections_refused_total", "kind" => "upgrade")
        .increment(1);
    tracing::debug!("A websocket upgrade refused: the last places are kept for plain requests.");
    (
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        [(hyper::header::RETRY_AFTER, "5")],
        "too many connections, retry later\n",
    )
        .into_response()
}

/// A served socket with its permit: counted in
/// `switchboard_http_connections` until it is dropped, websockets
/// included.
struct Counted {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _permit: OwnedSemaphorePermit,
}

impl Counted {
    fn new(io: Pin<Box<TimeoutStream<TcpStream>>>, permit: OwnedSemaphorePermit) -> Counted {
        metrics::gauge!("switchboard_http_connections").increment(1.0);
        Counted {
            io,
            _permit: permit,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_http_connections").decrement(1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// Answers a connection over the limit `503` and closes it, without a task
/// or a wait: what the client already sent is read first (closing a socket
/// with unread input resets it, and the client would lose the answer).
fn refuse(tcp: &TcpStream) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    // A fresh socket's send buffer takes this much at once.
    let _ = tcp.try_write(REFUSAL);
    metrics::counter!("switchboard_http_connections_refused_total", "kind" => "connection")
        .increment(1);
}

/// Refusals since the last log line, so that a flood logs one line every
/// [`REFUSALS_LOGGED_EVERY`] rather than one per connection.
#[derive(Default)]
struct Refusals {
    since: usize,
    logged_at: Option<tokio::time::Instant>,
}

impl Refusals {
    fn log(&mut self, peer: std::net::SocketAddr, max: usize) {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= REFUSALS_LOGGED_EVERY)
        {
            tracing::warn!(
                %peer,
                refused = self.since,
                max_connections = max,
                "Too many HTTP connections; refused with 503 (http.max_connections). `refused` counts those since the previous such line."
            );
            self.since = 0;
            self.logged_at = Some(now);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Handlers see the peer's address, and a stop lets the request in
    /// flight finish before the server returns.
    #[tokio::test]
    async fn handlers_get_the_peer_and_a_stop_finishes_requests_in_flight() {
        let app = Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                peer.to_string()
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let timeouts = Limits {
            header: Duration::from_secs(5),
            write: Duration::from_secs(5),
            connections: 100,
        };
        let server = tokio::spawn(serve(listener, app, timeouts, stop.clone()));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = tcp.local_addr().unwrap();
        tcp.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&me.to_string()), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server returns once its connections end")
            .unwrap();
    }

    /// A client that stops reading a large answer has its connection
    /// closed once a write makes no progress for the write timeout: what
    /// it reads afterwards is cut short. (Without the timeout the server
    /// waits, and the whole answer arrives once the client reads again.)
    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
        const SIZE: usize = 32 << 20;
        let app = Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; SIZE] }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let timeouts = Limits {
            header: Duration::from_secs(5),
            write: Duration::from_millis(500),
            connections: 100,
        };
        let server = tokio::spawn(serve(listener, app, timeouts, stop.clone()));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        tcp.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Not reading, for longer than the write timeout.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer))
            .await
            .expect("the connection ends");
        // Cut off: an error (reset) or an early end, never the whole body.
        assert!(
            read.is_err() || answer.len() < SIZE,
            "read {} bytes of a {SIZE}-byte body",
            answer.len()
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("no connection is left")
            .unwrap();
    }

    /// Reads from `tcp` until the end of an answer's head.
    async fn head(tcp: &mut tokio::net::TcpStream) -> String {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            seen.push(byte[0]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// A server of `connections` places with `/ok`, and websockets at
    /// `/ws` and `/api/v1/ws` that stay open until the client closes.
    async fn small_server(
        connections: usize,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let socket = || {
            axum::routing::get(|ws: axum::extract::ws::WebSocketUpgrade| async move {
                ws.on_upgrade(
                    |mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} },
                )
            })
        };
        let app = Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route("/ws", socket())
            .route("/api/v1/ws", socket());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let limits = Limits {
            header: Duration::from_secs(5),
            write: Duration::from_secs(5),
            connections,
        };
        let server = tokio::spawn(serve(listener, app, limits, stop.clone()));
        (addr, stop, server)
    }

    /// A GET of `path` on a connection of its own: the whole answer.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A websocket upgrade of `path`: the socket and the answer's head.
    async fn upgrade(addr: SocketAddr, path: &str) -> (tokio::net::TcpStream, String) {
        let mut ws = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        ws.write_all(request.as_bytes()).await.unwrap();
        let answer = head(&mut ws).await;
        (ws, answer)
    }

    /// Past `connections`, a new connection is answered 503 and closed; an
    /// upgraded websocket counts for as long as it is open (its HTTP
    /// connection's task ended at the upgrade), and its close frees its
    /// place.
    #[tokio::test]
    async fn connections_over_the_limit_get_503_and_websockets_count() {
        // One thread: the server's tasks count into this recorder.
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let open = || counters.get("switchboard_http_connections{}");
        let (addr, stop, server) = small_server(1).await;

        let (ws, upgraded) = upgrade(addr, "/ws").await;
        assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");
        tokio::time::sleep(Duration::from_millis(200)).await;

        assert_eq!(open(), 1, "the websocket counts");
        let refused = get(addr, "/ok").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert_eq!(
            counters.get("switchboard_http_connections_refused_total{kind=connection}"),
            1
        );
        assert!(refused.contains("retry-after: 5"), "{refused}");
        assert!(
            refused.ends_with("too many connections, retry later\n"),
            "{refused}"
        );

        drop(ws);
        let mut served = String::new();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            served = get(addr, "/ok").await;
            if served.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            served.starts_with("HTTP/1.1 200"),
            "the websocket's place is free again: {served}"
        );
        for _ in 0..50 {
            if open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open(), 0, "{}", counters.dump());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("no connection is left")
            .unwrap();
    }

    /// Websockets take at most nineteen twentieths of the places: the last
    /// twentieth is kept for plain requests (health checks, metrics,
    /// webhooks) and the agent API's websocket.
    #[tokio::test]
    async fn websockets_leave_a_twentieth_of_the_places_to_plain_requests() {
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let (addr, stop, server) = small_server(40).await;
        let mut sockets = Vec::new();
        for n in 0..38 {
            let (ws, answer) = upgrade(addr, "/ws").await;
            assert!(
                answer.starts_with("HTTP/1.1 101"),
                "websocket {n}: {answer}"
            );
            sockets.push(ws);
        }
        let (_refused, answer) = upgrade(addr, "/ws").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 5"), "{answer}");
        assert_eq!(
            counters.get("switchboard_http_connections_refused_total{kind=upgrade}"),
            1
        );
        drop(_refused);
        let mut served = String::new();
        for _ in 0..50 {
            served = get(addr, "/ok").await;
            if served.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        let (agent, answer) = upgrade(addr, "/api/v1/ws").await;
        assert!(
            answer.starts_with("HTTP/1.1 101"),
            "an agent's websocket: {answer}"
        );
        drop((agent, sockets));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("no connection is left")
            .unwrap();
    }
}
