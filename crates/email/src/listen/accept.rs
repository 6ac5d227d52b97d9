//! The accept loop: one task per session, at most `max_sessions` at once.

use super::session::{Outcome, count_session, session};
use super::{ListenerSettings, MailSink, SHUTDOWN_GRACE};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, info, warn};

/// Accepts connections on `listener` until `shutdown` is cancelled, one
/// session each. Connections over `max_sessions` get
/// `421 4.3.2` and are closed. On shutdown it stops accepting; sessions in
/// the middle of DATA finish their message, idle ones are answered
/// `421 4.3.2`; it returns when every session has ended, or after
/// [`SHUTDOWN_GRACE`] (the stragglers are then aborted).
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ListenerSettings>,
    sink: Arc<dyn MailSink>,
    shutdown: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, protocol = settings.protocol.as_str(), "Email listener accepting.");
    }
    let permits = Arc::new(Semaphore::new(settings.max_sessions));
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, max_sessions = settings.max_sessions, "Too many sessions; connection refused.");
            let refusal = format!(
                "421 4.3.2 {} Error: too many connections\r\n",
                settings.hostname
            );
            // A fresh socket takes this much at once; nothing waits on it.
            let _ = stream.try_write(refusal.as_bytes());
            count_session(&settings.name, Outcome::Refused);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (settings, sink, shutdown) = (settings.clone(), sink.clone(), shutdown.clone());
        sessions.spawn(
            async move {
                session(stream, peer, settings, sink, shutdown).await;
                drop(permit);
            }
            .instrument(Span::current()),
        );
    }
    info!(
        sessions = sessions.len(),
        "Email listener stopped accepting."
    );
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            sessions = sessions.len(),
            "Sessions still running after the grace period; aborted."
        );
        sessions.shutdown().await;
    }
}
