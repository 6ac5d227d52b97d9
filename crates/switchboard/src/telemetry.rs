//! Logs (tracing) and metrics (Prometheus text on `/metrics`).

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, filter};

/// Lines the log writer dropped because stderr did not keep up.
static DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// How many lines the log queue holds while stderr does not take them;
/// more are dropped (and counted).
const LOG_QUEUE_LINES: usize = 64_000;

/// Installs the log subscriber. Logs go to stderr (journald keeps them),
/// written by a thread of their own: a stderr that stalls (journald
/// throttling, a full pipe) fills a queue of [`LOG_QUEUE_LINES`] and then
/// drops lines, counted in `switchboard_log_lines_dropped_total`, where
/// every thread that logged used to wait. Keep the guard until exit: its
/// drop writes out what is queued.
pub fn init_logs(config: &LogConfig) -> tracing_appender::non_blocking::WorkerGuard {
    // Colours only on a terminal: journald and files would keep the escape
    // codes as text (`NO_COLOR` turns them off on a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (writer, guard) = log_writer(std::io::stderr(), LOG_QUEUE_LINES);
    let _ = DROPPED.set(writer.error_counter());
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = subscriber(config, writer, ansi).try_init();
    guard
}

/// A writer to `out` from a thread of its own, queueing at most `lines`
/// and dropping (counting) the rest while `out` does not take them.
fn log_writer<W: std::io::Write + Send + 'static>(
    out: W,
    lines: usize,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(lines)
        .lossy(true)
        .thread_name("switchboard-log")
        .finish(out)
}

/// Brings `switchboard_log_lines_dropped_total` up to date (before each
/// scrape).
pub fn count_dropped_log_lines() {
    if let Some(dropped) = DROPPED.get() {
        metrics::counter!("switchboard_log_lines_dropped_total")
            .absolute(dropped.dropped_lines() as u64);
    }
}

/// The log subscriber writing to `writer`, with colours when `ansi`.
fn subscriber<W>(
    config: &LogConfig,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // async-imap traces every command it sends, LOGIN with its password
    // included: never at trace, whatever the configured level (a directive
    // for `async_imap` alone was overridden by a more specific one, say
    // `async_imap::imap_stream=trace`).
    // (With a hint, so that the configured level still bounds what the
    // `log` bridge and tracing's callsites let through: a filter without
    // one made the global maximum TRACE.)
    let no_imap_trace = filter::filter_fn(|meta| {
        !(meta.target().starts_with("async_imap") && *meta.level() == tracing::Level::TRACE)
    })
    .with_max_level_hint(filter::LevelFilter::TRACE);
    let layer = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(level.and(no_imap_trace)))
}

/// Installs the metrics recorder and returns the handle `/metrics` renders.
/// Durations (`*_seconds`) are histograms with buckets from 0.5 ms to 60 s
/// (deliveries to relays and providers may take up to their 45–60 s
/// timeouts), customers' waits from 0.25 s to a day (a chat is answered in
/// seconds, an email may wait overnight); the two histograms of counts and
/// sizes have buckets of their own (any other histogram would be exported
/// as a summary).
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
        30.0, 60.0,
    ];
    let waits = [
        0.25, 0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0,
        43_200.0, 86_400.0,
    ];
    let batch = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
    let bytes = [
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262_144.0,
        1_048_576.0,
        4_194_304.0,
        16_777_216.0,
        67_108_864.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("switchboard_router_wait_seconds".into()),
                &waits,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("switchboard_live_doorbell_batch_events".into()),
                &batch,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("switchboard_email_message_bytes".into()),
                &bytes,
            )
        })
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchboard_intake_events_total",
        "Inbound messages stored, by channel, source and outcome (created, appended, duplicate)."
    );
    describe_counter!(
        "switchboard_intake_errors_total",
        "Inbound messages not stored, by channel, source and error_type (invalid, unavailable, shutting_down)."
    );
    describe_histogram!(
        "switchboard_intake_duration_seconds",
        Unit::Seconds,
        "Time to store one inbound message."
    );
    describe_counter!(
        "switchboard_intake_api_rejected_total",
        "Intake API requests refused, by source and reason (the error code answered; docs/intake-api.md lists them)."
    );
    describe_counter!(
        "switchboard_router_contacts_queued_total",
        "Contacts moved to a waiting queue."
    );
    describe_counter!(
        "switchboard_router_errors_total",
        "Routing failures, by error_type (store, leader, queue_summary, contact_missing)."
    );
    describe_gauge!(
        "switchboard_http_connections",
        "HTTP connections open on this instance, websockets included."
    );
    describe_counter!(
        "switchboard_http_connections_refused_total",
        "HTTP connections refused with 503, by kind (connection: over http.max_connections; upgrade: a websocket while only the last twentieth of the places was free)."
    );
    describe_gauge!(
        "switchboard_redis_up",
        "1 when the last Redis health check succeeded."
    );
    describe_email();
}

/// The email channel's metrics (docs/email.md).
fn describe_email() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchboard_email_sessions_total",
        "LMTP/SMTP sessions ended, by source and outcome."
    );
    describe_counter!(
        "switchboard_email_messages_total",
        "Mail transactions answered by the listener, by source and outcome (docs/email.md lists them)."
    );
    describe_histogram!(
        "switchboard_email_message_bytes",
        Unit::Bytes,
        "Size of the mail the listener took in."
    );
    describe_counter!(
        "switchboard_email_intake_total",
        "Mail parsed, by source, kind and outcome (docs/email.md lists them)."
    );
    describe_counter!(
        "switchboard_email_imap_messages_total",
        "Messages fetched over IMAP, by mailbox and outcome."
    );
    describe_counter!(
        "switchboard_email_imap_errors_total",
        "IMAP connection and protocol failures, by mailbox and kind."
    );
    describe_gauge!(
        "switchboard_email_imap_connected",
        "1 while the IMAP mailbox is connected."
    );
    describe_counter!(
        "switchboard_email_replies_total",
        "Replies handed to the SMTP relay, by source and outcome (delivered, failed, deferred)."
    );
    describe_histogram!(
        "switchboard_email_send_seconds",
        Unit::Seconds,
        "Time for the SMTP relay to answer one reply."
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod log_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    /// A stderr that takes nothing (a stalled journald) does not stop the
    /// threads that log: lines past the queue are dropped and counted.
    #[test]
    fn a_stalled_stderr_drops_lines_instead_of_blocking() {
        struct Stalled(std::sync::mpsc::Receiver<()>);
        impl std::io::Write for Stalled {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                // Blocks until the test ends (the sender is dropped).
                let _ = self.0.recv();
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let (writer, guard) = log_writer(Stalled(stalled), 4);
        let dropped = writer.error_counter();
        let config = LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        };
        let (done, finished) = std::sync::mpsc::channel();
        let logging = std::thread::spawn(move || {
            tracing::subscriber::with_default(subscriber(&config, writer, false), || {
                for n in 0..100 {
                    tracing::info!(n, "a line");
                }
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("logging blocked on a stderr that takes nothing");
        logging.join().unwrap();
        assert!(
            dropped.dropped_lines() >= 90,
            "{} dropped",
            dropped.dropped_lines()
        );
        drop(release);
        drop(guard);
    }

    /// async-imap's LOGIN trace never reaches the log, even when the
    /// configured level asks for its module at trace.
    #[test]
    fn the_imap_login_trace_is_never_logged() {
        let buffer = Buffer::default();
        let config = LogConfig {
            format: LogFormat::Text,
            level: "info,async_imap::imap_stream=trace".into(),
        };
        tracing::subscriber::with_default(subscriber(&config, buffer.clone(), false), || {
            tracing::trace!(target: "async_imap::imap_stream", "A1 LOGIN olha hunter2");
            tracing::debug!(target: "async_imap::imap_stream", "a debug line");
            tracing::info!("an info line");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        // Not on a terminal: no colour codes in the text.
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains("a debug line") && text.contains("an info line"),
            "{text}"
        );
        // The configured level still bounds the whole subscriber.
        let info = LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        };
        assert_eq!(
            tracing::Subscriber::max_level_hint(&subscriber(&info, Buffer::default(), false)),
            Some(filter::LevelFilter::INFO)
        );
    }
}
