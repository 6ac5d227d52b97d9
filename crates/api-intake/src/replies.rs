//! Agents' replies to this source's contacts, pulled by the system that
//! submitted them (it delivers them to the customer itself).
//!
//! `GET /channels/{name}/replies?wait=<secs>&max=<n>` hands out replies from
//! the channel's outbox, each leased for the outbox's visibility time;
//! `POST /channels/{name}/replies/{handle}` settles one (delivered, failed)
//! or asks for it again later (retry). A reply not settled within the lease
//! is handed out again, with the same handle: at least once, as everywhere
//! else. Documented in `docs/intake-api.md`.

use crate::{ApiState, authorized_json, error, rejected, unauthorized};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{OutboundDelivery, OutboxError};
use switchboard_core::{CustomerIdentity, DeliveryOutcome, Timestamp};
use tracing::info;

/// The longest a pull waits for a first reply.
const MAX_WAIT_SECS: u64 = 30;
/// The most replies one pull hands out.
const MAX_BATCH: usize = 100;
/// The longest a client may ask for a retry to wait.
const MAX_RETRY_SECS: u64 = 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullQuery {
    #[serde(default)]
    wait: u64,
    #[serde(default = "default_max")]
    max: usize,
}

fn default_max() -> usize {
    10
}

/// One reply as the client gets it.
#[derive(Debug, Serialize)]
struct Reply<'a> {
    handle: &'a str,
    /// How many times it was handed out before a retry; 1 the first time.
    attempt: u32,
    contact_id: String,
    conversation_id: String,
    message_id: String,
    /// The customer it goes to.
    to: &'a CustomerIdentity,
    /// The address the customer wrote to (the event's `address`).
    from_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    text: &'a str,
    /// The `provider_message_id` of the customer message it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    in_reply_to: Option<&'a str>,
    created_at: Timestamp,
}

impl<'a> From<&'a OutboundDelivery> for Reply<'a> {
    fn from(d: &'a OutboundDelivery) -> Self {
        let m = &d.message;
        Reply {
            handle: &d.handle,
            attempt: d.attempt,
            contact_id: m.contact_id.to_string(),
            conversation_id: m.conversation_id.to_string(),
            message_id: m.message_id.to_string(),
            to: &m.to,
            from_address: &m.from_address,
            subject: m.subject.as_deref(),
            text: &m.text,
            in_reply_to: m.in_reply_to.as_deref(),
            created_at: m.created_at,
        }
    }
}

/// `503 unavailable`, counted as a refusal.
fn outbox_unavailable(source: &str, e: &OutboxError) -> Response {
    crate::rejected(source, "unavailable");
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `GET /channels/{name}/replies`: up to `max` replies, waiting up to
/// `wait` seconds for the first.
pub(crate) async fn pull(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<PullQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    let Ok(Query(q)) = query else {
        rejected(&state.name, "bad_query");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_query",
            "wait: 0 to 30 (seconds), max: 1 to 100".into(),
        );
    };
    if q.wait > MAX_WAIT_SECS || q.max == 0 || q.max > MAX_BATCH {
        rejected(&state.name, "bad_query");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_query",
            "wait: 0 to 30 (seconds), max: 1 to 100".into(),
        );
    }
    // One pull at a time per instance: the outbox blocks on one Redis
    // connection, so a second pull would wait behind the first's block
    // anyway. It waits for its turn within its own `wait`, else gets none.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    let Ok(_turn) = tokio::time::timeout_at(deadline, state.pulling.lock()).await else {
        return Json(serde_json::json!({ "replies": [] })).into_response();
    };
    let mut taken = Vec::new();
    // The first waits what is left of `wait`; the others only take what
    // is there.
    let mut wait = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_millis(1));
    while taken.len() < q.max {
        match state.outbox.next(wait).await {
            Ok(Some(delivery)) => taken.push(delivery),
            Ok(None) => break,
            Err(OutboxError::Corrupt { handle, reason }) => {
                // Not a reply anyone can read: logged and counted; the outbox
                // moved it to its unreadable entries.
                counter!("switchboard_intake_api_replies_total", "source" => state.name.clone(), "outcome" => "corrupt")
                    .increment(1);
                tracing::error!(source = %state.name, %handle, %reason, "An outbox entry cannot be read; the outbox set it aside.");
                break;
            }
            Err(e) => {
                // Redis failed: what was taken is handed out, the rest
                // stays in the outbox for the next pull.
                counter!("switchboard_intake_api_replies_total", "source" => state.name.clone(), "outcome" => "unavailable")
                    .increment(1);
                tracing::warn!(source = %state.name, taken = taken.len(), error = %e, "A reply pull could not read the outbox.");
                if taken.is_empty() {
                    return outbox_unavailable(&state.name, &e);
                }
                break;
            }
        }
        wait = Duration::from_millis(1);
    }
    counter!("switchboard_intake_api_replies_total", "source" => state.name.clone(), "outcome" => "handed_out")
        .increment(taken.len() as u64);
    let replies: Vec<Reply<'_>> = taken.iter().map(Reply::from).collect();
    Json(serde_json::json!({ "replies": replies })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Settle {
    /// The customer has it; `provider_message_id` when the system gave it one.
    Delivered {
        #[serde(default)]
        provider_message_id: Option<String>,
    },
    /// It can never be delivered; the agent is shown `reason`.
    Failed { reason: String },
    /// Not now: hand it out again after `after_secs` (with a new handle).
    Retry {
        #[serde(default = "default_retry")]
        after_secs: u64,
    },
}

fn default_retry() -> u64 {
    60
}

/// `POST /channels/{name}/replies/{handle}`: the outcome of a reply handed
/// out by `pull`.
pub(crate) async fn settle(
    State(state): State<Arc<ApiState>>,
    Path(handle): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    let body: Settle = match authorized_json(&state, &headers, raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let invalid = match &body {
        Settle::Delivered {
            provider_message_id: Some(id),
        } => id.is_empty() || id.len() > 256,
        Settle::Failed { reason } => reason.trim().is_empty() || reason.len() > 1000,
        Settle::Retry { after_secs } => *after_secs > MAX_RETRY_SECS,
        Settle::Delivered { .. } => false,
    };
    if invalid {
        rejected(&state.name, "bad_outcome");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_outcome",
            "provider_message_id: 1 to 256 bytes; reason: 1 to 1000 bytes; after_secs: at most 86400".into(),
        );
    }
    let delivery = match state.outbox.pending(&handle).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            rejected(&state.name, "unknown_reply");
            return error(
                StatusCode::NOT_FOUND,
                "unknown_reply",
                format!(
                    "no reply {handle} is waiting for its outcome (settled already, or retried under a new handle)"
                ),
            );
        }
        Err(e) => return outbox_unavailable(&state.name, &e),
    };
    let (result, outcome) = match body {
        Settle::Delivered {
            provider_message_id,
        } => (
            state
                .outbox
                .settle(&delivery, DeliveryOutcome::delivered(provider_message_id))
                .await,
            "delivered",
        ),
        Settle::Failed { reason } => (
            state
                .outbox
                .settle(&delivery, DeliveryOutcome::Failed { reason })
                .await,
            "failed",
        ),
        Settle::Retry { after_secs } => (
            state
                .outbox
                .defer(&delivery, Duration::from_secs(after_secs))
                .await,
            "retry",
        ),
    };
    match result {
        Ok(()) => {
            counter!("switchboard_intake_api_replies_total", "source" => state.name.clone(), "outcome" => outcome)
                .increment(1);
            info!(source = %state.name, contact_id = %delivery.message.contact_id,
                message_id = %delivery.message.message_id, outcome, "Reply settled by the client.");
            Json(serde_json::json!({ "ok": true })).into_response()
        }
        Err(e) => outbox_unavailable(&state.name, &e),
    }
}
