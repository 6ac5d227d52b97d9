//! Logs (tracing) and metrics (Prometheus text on `/metrics`).

use crate::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber. Logs go to stderr (journald keeps them).
pub fn init_logs(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // async-imap traces every command it sends, LOGIN with its password
    // included: never below debug, whatever the configured level.
    let filter = match "async_imap=debug".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Installs the metrics recorder and returns the handle `/metrics` renders.
/// Durations (`*_seconds`) are histograms with buckets from 0.5 ms to 10 s.
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
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
        "Intake API requests refused, by source and reason (unauthorized, bad_json, invalid_event)."
    );
    describe_counter!(
        "switchboard_router_contacts_queued_total",
        "Contacts moved to a waiting queue."
    );
    describe_counter!(
        "switchboard_router_errors_total",
        "Router passes that failed, by error_type."
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
        "Mail transactions answered by the listener, by source and outcome (accepted, temporary, rejected, too_large)."
    );
    describe_histogram!(
        "switchboard_email_message_bytes",
        Unit::Bytes,
        "Size of the mail the listener took in."
    );
    describe_counter!(
        "switchboard_email_intake_total",
        "Mail parsed, by source, kind (customer, auto_reply, bounce, bulk) and outcome."
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
