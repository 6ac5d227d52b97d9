//! Records and KPIs over HTTP: a contact's whole record, a person's other
//! contacts, the KPIs of a rolling window, the wallboard's series, and the
//! export of every contact of a time range as JSON lines.

use crate::Inner;
use crate::actions::{Caller, contact_id};
use crate::error::ApiError;
use crate::http::who;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use switchboard_records::record::{contact_record, previous_contacts};
use switchboard_records::{Recorder, Window};

type Api = State<Arc<Inner>>;

fn recorder(inner: &Inner) -> Result<&Recorder, ApiError> {
    inner.recorder.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "records are not kept by this instance",
        )
    })
}

/// One of the caller's record reads in flight (a record, a history, an
/// export): a record reads up to 10,000 log entries (8 MiB), and a
/// console stuck in a loop, or a token in a script, would otherwise hold
/// as many as it sends. A third is refused at once, not queued.
fn read_slot(inner: &Inner, caller: &Caller) -> Result<crate::media::Slot, ApiError> {
    inner.record_callers.take(caller.name()).ok_or_else(|| {
        metrics::counter!("switchboard_agent_records_busy_total").increment(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "2 record reads of yours are in flight; wait for them",
        )
    })
}

/// The whole record of a contact: its supervisor, or the agent holding it.
pub async fn record(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let _slot = read_slot(&inner, &caller)?;
    let cid = contact_id(&id)?;
    inner.visible(&caller, &cid).await?;
    let rec = recorder(&inner)?;
    match contact_record(rec.sources(), &cid).await? {
        Some(record) => Ok(Json(record).into_response()),
        None => Err(ApiError::not_found(
            "unknown_contact",
            format!("no record of contact {id}"),
        )),
    }
}

/// The other contacts of the person behind a contact, on any channel.
pub async fn history(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let _slot = read_slot(&inner, &caller)?;
    let cid = contact_id(&id)?;
    inner.visible(&caller, &cid).await?;
    let rec = recorder(&inner)?;
    let previous = previous_contacts(rec.sources(), &cid, 20).await?;
    Ok(
        Json(json!({ "contact_id": cid.to_string(), "previous_contacts": previous }))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
pub struct KpiQuery {
    #[serde(default)]
    window: Option<String>,
}

/// Supervisors: the KPIs of one rolling window (`5m`, `1h`, `24h`).
pub async fn kpis(
    State(inner): Api,
    headers: HeaderMap,
    query: Result<Query<KpiQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    who(&inner, &headers).await?.supervisor()?;
    let q = ApiError::from_query(query)?;
    let name = q.window.unwrap_or_else(|| "1h".into());
    let window = Window::parse(&name).ok_or_else(|| {
        ApiError::bad_request("bad_window", format!("window {name:?}: use 5m, 1h or 24h"))
    })?;
    let report = recorder(&inner)?.report(window).await?;
    Ok(Json(report).into_response())
}

/// Supervisors: samples of the waiting contacts per queue, oldest first
/// (the wallboard's chart).
pub async fn series(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    who(&inner, &headers).await?.supervisor()?;
    let samples = recorder(&inner)?.series().await?;
    Ok(Json(json!({ "samples": samples })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    from: u64,
    to: u64,
}

/// Contacts read from the index per round.
const EXPORT_BATCH: usize = 200;

/// Supervisors: every contact queued in `[from, to]` (ms since the epoch),
/// one whole record per line (JSON lines), oldest first. Streamed, so a
/// large range does not sit in memory.
pub async fn export(
    State(inner): Api,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    caller.supervisor()?;
    // Held until the last line is streamed: the heaviest read of all.
    let slot = read_slot(&inner, &caller)?;
    let q = ApiError::from_query(query)?;
    if q.to < q.from {
        return Err(ApiError::bad_request(
            "bad_range",
            "`to` must not be before `from`",
        ));
    }
    let rec = recorder(&inner)?.clone();
    // The first batch is read before answering, so that an unavailable
    // store is a 503 rather than a cut-off 200.
    let first = rec
        .records()
        .contacts_page(q.from, q.to, None, EXPORT_BATCH)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        let _slot = slot;
        let mut batch = first;
        loop {
            let n = batch.len();
            // Paged by position, not offset: the retention sweep may remove
            // contacts ahead of it meanwhile.
            let last = batch.last().cloned();
            for (id, _) in batch {
                let Ok(cid) = id.parse() else { continue };
                let line = match contact_record(rec.sources(), &cid).await {
                    Ok(Some(record)) => format!("{record}\n"),
                    Ok(None) => continue,
                    Err(e) => return cut_off(&tx, e).await,
                };
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            let Some((last_id, last_at)) = last.filter(|_| n == EXPORT_BATCH) else {
                return;
            };
            batch = match rec
                .records()
                .contacts_page(q.from, q.to, Some((&last_id, last_at)), EXPORT_BATCH)
                .await
            {
                Ok(b) => b,
                Err(e) => return cut_off(&tx, e).await,
            };
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Ends an export that has begun (its 200 is sent) on a Redis error: the
/// client sees the body break off; the server counts and logs it.
async fn cut_off(
    tx: &tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
    error: switchboard_store::StoreError,
) {
    metrics::counter!("switchboard_records_export_errors_total").increment(1);
    tracing::warn!(%error, "A records export was cut short.");
    let _ = tx.send(Err(std::io::Error::other(error.to_string()))).await;
}
