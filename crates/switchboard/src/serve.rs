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

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a connection may take over its parts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's head, and idle between two requests.
    pub header: Duration,
    /// For a write that makes no progress.
    pub write: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets the
/// requests in flight finish (each connection closes after its current
/// request) and returns once every connection has ended. Dropping the
/// future closes every connection at once.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
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
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "Could not set TCP_NODELAY on an accepted connection.");
        }
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(request.map(Body::new))
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header);
            let mut io = TimeoutStream::new(tcp);
            io.set_write_timeout(Some(timeouts.write));
            let connection = builder
                .serve_connection(TokioIo::new(Box::pin(io)), service)
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
        let timeouts = Timeouts {
            header: Duration::from_secs(5),
            write: Duration::from_secs(5),
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
        let timeouts = Timeouts {
            header: Duration::from_secs(5),
            write: Duration::from_millis(500),
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
}
