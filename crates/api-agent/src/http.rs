//! The HTTP side of the agent API, under `/api/v1`.

use crate::Inner;
use crate::actions::{Caller, contact_id, conversation_of};
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use switchboard_store::AgentRecord;

type Api = State<Arc<Inner>>;

/// Who calls: `Authorization: Bearer <token>`, or `?access_token=` for
/// websockets from browsers (which cannot set headers on them).
pub async fn caller(
    inner: &Inner,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Caller, ApiError> {
    let Some(token) = token(headers, query_token) else {
        metrics::counter!("switchboard_agent_api_auth_failures_total").increment(1);
        return Err(ApiError::unauthorized());
    };
    // Looked up by the token's SHA-256: the time this takes tells nothing
    // about the token.
    let digest = switchboard_router::settings::token_digest(token);
    if let Some(secret) = &inner.supervisor
        && secret.matches(token.as_bytes())
    {
        inner.guard.signed_in(digest, std::time::Instant::now());
        return Ok(Caller::Supervisor);
    }
    match inner.state.agent_by_token(&digest).await? {
        Some(agent) => {
            inner.guard.signed_in(digest, std::time::Instant::now());
            Ok(Caller::Agent(agent))
        }
        None => {
            metrics::counter!("switchboard_agent_api_auth_failures_total").increment(1);
            Err(ApiError::unauthorized())
        }
    }
}

/// The bearer token of a request: the `Authorization` header's, else the
/// query's (only the websocket passes one).
fn token<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    switchboard_channel::bearer(headers).or(query_token.filter(|t| !t.is_empty()))
}

pub(crate) async fn who(inner: &Inner, headers: &HeaderMap) -> Result<Caller, ApiError> {
    caller(inner, headers, None).await
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))
}

/// A request's body, read only once the caller is known (handlers take the
/// raw body and call this after `who`): a stranger gets 401 whatever they
/// send, not 413 for a large body. At most
/// [`AgentApiConfig::wire_limit`](crate::AgentApiConfig::wire_limit).
async fn read_body(inner: &Inner, raw: axum::body::Body) -> Result<Bytes, ApiError> {
    use switchboard_channel::body::ReadError;
    let limit = inner.settings.wire_limit();
    switchboard_channel::body::read(raw, limit)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is longer than {limit} bytes"),
            ),
            // The daemon's body deadline: it answers 408 `body_timeout`
            // itself and counts it (`switchboard_http_body_timeouts_total`).
            ReadError::TooSlow => ApiError::body_timeout(),
            ReadError::Broken(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            ),
        })
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceBody {
    presence: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    text: String,
    /// The client's name for this reply: a retry with the same one is sent
    /// and logged once.
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    disposition: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgent {
    id: switchboard_core::AgentId,
    #[serde(default)]
    name: String,
    // Read as u64 and checked against the ranges after: a level of 256 is
    // out of range (422 invalid_agent), not unreadable JSON.
    #[serde(default, deserialize_with = "whole::map")]
    skills: BTreeMap<String, u64>,
    #[serde(default, deserialize_with = "whole::map")]
    capacity: BTreeMap<switchboard_core::ChannelKind, u64>,
    #[serde(default, deserialize_with = "whole::option")]
    total_capacity: Option<u64>,
    token: String,
}

/// Whole numbers written `3` or `3.0`: both are integers to JSON Schema,
/// and so to the OpenAPI file; `3.5` or one out of range is refused.
mod whole {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::collections::BTreeMap;

    fn number<T: TryFrom<u64>, E: Error>(n: &serde_json::Number) -> Result<T, E> {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    // `u64::MAX as f64` is 2^64 itself: one past the range.
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .and_then(|w| T::try_from(w).ok())
            .ok_or_else(|| E::custom(format!("{n} is not a whole number in range")))
    }

    pub fn map<'de, D, K, T>(d: D) -> Result<BTreeMap<K, T>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        T: TryFrom<u64>,
    {
        BTreeMap::<K, serde_json::Number>::deserialize(d)?
            .into_iter()
            .map(|(k, n)| Ok((k, number(&n)?)))
            .collect()
    }

    pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| number(&n))
            .transpose()
    }
}

pub async fn me(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    Ok(Json(inner.me(caller.agent()?).await?).into_response())
}

pub async fn presence(
    State(inner): Api,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let bytes = read_body(&inner, raw).await?;
    let b: PresenceBody = body(&bytes)?;
    inner
        .set_presence(caller.agent()?, &b.presence, &b.reason)
        .await?;
    Ok(ok())
}

pub async fn heartbeat(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let until = inner.heartbeat(caller.agent()?).await?;
    Ok(Json(json!({ "online_until": until })).into_response())
}

pub async fn accept(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    inner.answer(caller.agent()?, &id, true).await?;
    Ok(ok())
}

pub async fn decline(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    inner.answer(caller.agent()?, &id, false).await?;
    Ok(ok())
}

pub async fn close(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let bytes = read_body(&inner, raw).await?;
    let b: CloseBody = if bytes.is_empty() {
        CloseBody {
            disposition: String::new(),
        }
    } else {
        body(&bytes)?
    };
    inner.close(caller.agent()?, &id, &b.disposition).await?;
    Ok(ok())
}

pub async fn transfer(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let bytes = read_body(&inner, raw).await?;
    let b: TransferBody = body(&bytes)?;
    inner
        .transfer(&caller, &id, b.queue.as_deref(), b.agent.as_deref())
        .await?;
    Ok(ok())
}

pub async fn note(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let bytes = read_body(&inner, raw).await?;
    let b: TextBody = body(&bytes)?;
    let seq = inner.note(&caller, &id, &b.text).await?;
    Ok((StatusCode::CREATED, Json(json!({ "seq": seq }))).into_response())
}

pub async fn reply(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let bytes = read_body(&inner, raw).await?;
    let b: ReplyBody = body(&bytes)?;
    let (message_id, seq) = inner
        .reply(caller.agent()?, &id, &b.text, b.client_id.as_deref())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message_id": message_id, "seq": seq })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct TranscriptQuery {
    #[serde(default)]
    after: Option<String>,
}

/// A contact: what the customer sent us, where it is in routing, and its
/// transcript. Text is returned as text; clients must render it as text.
pub async fn contact(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<TranscriptQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let q = ApiError::from_query(query)?;
    let cid = contact_id(&id)?;
    let rec = inner.visible(&caller, &cid).await?;
    let fields = inner.contact_fields(&cid).await?;
    let conv = conversation_of(&fields)?;
    let after = q.after.unwrap_or_else(|| "-".into());
    if !is_cursor(&after) {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "after: '-' or a transcript entry's seq (<ms>-<n>)",
        ));
    }
    let (transcript, more) = switchboard_records::record::transcript_page(
        &inner.conversations,
        &conv,
        &after,
        TRANSCRIPT_PAGE,
        TRANSCRIPT_PAGE_BYTES,
    )
    .await?;
    let pick = |k: &str| fields.get(k).cloned().unwrap_or_default();
    Ok(Json(json!({
        // As the API writes ids elsewhere (the path may have it in lower
        // case, or with leading zeros in its partition).
        "id": cid.to_string(),
        "conversation_id": pick("conversation"),
        "channel": pick("channel"),
        "source": pick("source"),
        "address": pick("address"),
        "customer": pick("customer"),
        "customer_name": pick("customer_name"),
        "subject": pick("subject"),
        "language": pick("language"),
        "created_at": pick("created_at").parse::<u64>().unwrap_or(0),
        "routing": { "state": rec.state, "queue": rec.queue, "agent": rec.agent, "rule": rec.rule },
        "transcript": transcript,
        "more": more,
    }))
    .into_response())
}

/// Transcript entries in one page of `GET /contacts/{id}`.
const TRANSCRIPT_PAGE: usize = 500;
/// ...and messages in one page, in bytes as stored (beyond its first entry).
const TRANSCRIPT_PAGE_BYTES: usize = 4 << 20;

/// Every routing decision recorded for a contact, with its explanation.
pub async fn routing(
    State(inner): Api,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let cid = contact_id(&id)?;
    let rec = inner.visible(&caller, &cid).await?;
    let decisions: Vec<Value> = inner
        .state
        .decisions(&cid)
        .await?
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    Ok(Json(json!({
        "contact_id": cid.to_string(),
        "state": rec.state,
        "queue": rec.queue,
        "agent": rec.agent,
        "excluded": rec.excluded,
        "decisions": decisions,
    }))
    .into_response())
}

/// Supervisors: each queue's waiting contacts and longest wait.
pub async fn queues(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    who(&inner, &headers).await?.supervisor()?;
    let now = switchboard_core::Timestamp::now().as_millis();
    let mut by_queue: BTreeMap<String, switchboard_store::QueueWaiting> = inner
        .plan
        .queues
        .iter()
        .map(|q| (q.name.clone(), Default::default()))
        .collect();
    // The routing leader's count (about a second old), or counted here
    // when there is none. The wait is since the contact entered its queue
    // (a transfer or a requeue starts it again), as the KPIs count waits.
    by_queue.extend(inner.state.waiting_by_queue(now).await?);
    let list: Vec<Value> = by_queue
        .into_iter()
        .map(|(name, q)| {
            let (waiting, longest) = (q.waiting, q.longest_wait_ms(now));
            // Business hours: open now, or when it opens next.
            let queue = inner.plan.queues.iter().find(|q| q.name == name);
            let open = queue.is_none_or(|q| q.is_open(now));
            let opens_at = queue
                .filter(|_| !open)
                .and_then(|q| q.schedule.as_ref())
                .and_then(|s| s.next_opening(now));
            json!({
                "queue": name,
                "waiting": waiting,
                "longest_wait_ms": longest,
                "open": open,
                "opens_at": opens_at,
            })
        })
        .collect();
    Ok(Json(json!({ "queues": list })).into_response())
}

/// Supervisors: every agent's presence and load.
pub async fn agents(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    who(&inner, &headers).await?.supervisor()?;
    let now = switchboard_core::Timestamp::now().as_millis();
    let mut list: Vec<Value> = inner
        .state
        .agents()
        .await?
        .into_iter()
        .map(|(rec, live)| {
            json!({
                "id": rec.id,
                "name": rec.name,
                "presence": live.presence,
                "reason": live.reason,
                "online": live.online_until > now,
                "loads": crate::frames::Loads::from(live.loads),
                "capacity": crate::frames::Loads::from(rec.capacity),
            })
        })
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "agents": list })).into_response())
}

/// Supervisors: create or update an agent through the API.
pub async fn put_agent(
    State(inner): Api,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    who(&inner, &headers).await?.supervisor()?;
    let bytes = read_body(&inner, raw).await?;
    let a: NewAgent = body(&bytes)?;
    switchboard_router::settings::check_agent_id(a.id.as_str())
        .map_err(|problem| ApiError::bad_request("invalid_agent", format!("id: {problem}")))?;
    if a.token.len() < switchboard_router::settings::MIN_TOKEN_LEN {
        return Err(ApiError::bad_request(
            "invalid_agent",
            "token: at least 16 characters",
        ));
    }
    let skills: BTreeMap<String, u8> = a
        .skills
        .into_iter()
        .map(|(s, l)| (s, u8::try_from(l).unwrap_or(u8::MAX)))
        .collect();
    switchboard_router::plan::check_levels("skills", &skills, 1)
        .map_err(|e| ApiError::bad_request("invalid_agent", e.to_string()))?;
    let mut capacity = [0u32; 4];
    for (c, n) in &a.capacity {
        let i = switchboard_core::ChannelKind::ALL
            .iter()
            .position(|x| x == c)
            .unwrap_or(0);
        capacity[i] = u32::try_from(*n).unwrap_or(u32::MAX);
    }
    let total_capacity = a
        .total_capacity
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    switchboard_router::settings::check_capacity(&capacity, total_capacity).map_err(
        |(field, problem)| ApiError::bad_request("invalid_agent", format!("{field}: {problem}")),
    )?;
    let record = AgentRecord {
        id: a.id.to_string(),
        name: if a.name.is_empty() {
            a.id.to_string()
        } else {
            a.name
        },
        skills: skills.into_iter().collect(),
        capacity,
        total_capacity: total_capacity.unwrap_or(0),
        token_sha256: switchboard_router::settings::token_digest(&a.token),
    };
    let created = inner.state.upsert_agent(&record, "api").await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "id": record.id, "created": created }))).into_response())
}

/// How long a websocket ticket may wait for its websocket.
const TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// `POST /api/v1/ws-ticket`: a one-time ticket that opens the agent's
/// websocket (`/ws?ticket=`) within 15 s. Browsers cannot set headers on
/// a websocket, so the console would otherwise put its token in the URL,
/// which proxies write to their logs (nginx's error log, with the request
/// line, whenever the upstream is down). A ticket in a log is spent, or
/// expires within seconds.
pub async fn ws_ticket(State(inner): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = who(&inner, &headers).await?;
    let agent = caller.agent()?;
    if !inner.tickets.take(agent) {
        metrics::counter!("switchboard_agent_api_ws_tickets_total", "outcome" => "rate_limited")
            .increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "at most {} websocket tickets a minute; wait before asking again",
                crate::tickets::PER_MINUTE
            ),
        ));
    }
    let token_digest = token(&headers, None)
        .map(switchboard_router::settings::token_digest)
        .unwrap_or_default();
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let ticket = hex::encode(bytes);
    let digest = switchboard_router::settings::token_digest(&ticket);
    inner
        .state
        .issue_ticket(&digest, agent, &token_digest, TICKET_TTL)
        .await?;
    metrics::counter!("switchboard_agent_api_ws_tickets_total", "outcome" => "issued").increment(1);
    Ok(Json(json!({ "ticket": ticket, "expires_in_secs": TICKET_TTL.as_secs() })).into_response())
}

/// The agent and token digest a websocket ticket was issued for, once, and
/// only while that token is still the agent's.
async fn redeem(inner: &Inner, ticket: &str) -> Result<(String, String), ApiError> {
    let refused = |outcome: &'static str| {
        metrics::counter!("switchboard_agent_api_ws_tickets_total", "outcome" => outcome)
            .increment(1);
        metrics::counter!("switchboard_agent_api_auth_failures_total").increment(1);
        ApiError::unauthorized()
    };
    // Looked up by its digest, as tokens are: the time tells nothing.
    let digest = switchboard_router::settings::token_digest(ticket);
    let Some((token_digest, agent)) = inner.state.redeem_ticket(&digest).await? else {
        return Err(refused("unknown"));
    };
    if inner.state.agent_by_token(&token_digest).await?.as_deref() != Some(agent.as_str()) {
        return Err(refused("revoked"));
    }
    metrics::counter!("switchboard_agent_api_ws_tickets_total", "outcome" => "redeemed")
        .increment(1);
    Ok((agent, token_digest))
}

/// The agent websocket.
pub async fn ws(
    State(inner): Api,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Read as the guard read them (the first non-empty value of each).
    let ticket = crate::guard::query_value(uri.query(), "ticket");
    let access_token = crate::guard::query_value(uri.query(), "access_token");
    // Who first: a plain GET without a token is 401, as everywhere else.
    // A ticket is redeemed only by a websocket upgrade: a plain GET
    // carrying one is told to upgrade, and the ticket is kept.
    // The session checks that its token stays the agent's (ws.rs), by
    // the token's digest.
    let (agent, digest) = match ticket {
        Some(ticket) if upgrade.is_ok() => redeem(&inner, &ticket).await?,
        Some(_) => (String::new(), String::new()),
        None => {
            let query_token = access_token.as_deref();
            let caller = caller(&inner, &headers, query_token).await?;
            let agent = caller.agent()?.to_owned();
            let digest = token(&headers, query_token)
                .map(switchboard_router::settings::token_digest)
                .unwrap_or_default();
            (agent, digest)
        }
    };
    let Ok(upgrade) = upgrade else {
        let mut response = ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "this is the agent websocket: connect with a websocket client",
        )
        .into_response();
        response.headers_mut().insert(
            header::UPGRADE,
            axum::http::HeaderValue::from_static("websocket"),
        );
        return Ok(response);
    };
    let max = inner.settings.wire_limit();
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite zero-fills the unused part of its read buffer at
        // every read: 128 KiB by default, ~3% of the daemon's CPU at 1,000
        // contacts/s (perf). Agents' frames are small; a larger one still
        // fits (the buffer grows to the frame).
        .read_buffer_size(4096)
        .on_upgrade(move |socket| crate::ws::session(inner, agent, digest, socket))
        .into_response())
}

/// A transcript cursor: `-` (from the start) or an entry's `seq`, a Redis
/// stream id `<ms>-<n>` after which another can exist.
fn is_cursor(after: &str) -> bool {
    after == "-" || switchboard_channel::live::seq_ok(after)
}

#[cfg(test)]
mod cursor_tests {
    #[test]
    fn cursors_are_checked() {
        for good in ["-", "0-0", "1795386692563-0", "1-18446744073709551615"] {
            assert!(super::is_cursor(good), "{good}");
        }
        for bad in [
            "",
            "garbage",
            "12",
            "1-",
            "-1",
            "1-2-3",
            "+",
            "+1-2",
            "18446744073709551615-18446744073709551615",
        ] {
            assert!(!super::is_cursor(bad), "{bad}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod input_tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn whole_numbers_stop_at_the_largest_u64() {
        #[derive(serde::Deserialize)]
        struct One {
            #[serde(deserialize_with = "super::whole::option")]
            n: Option<u64>,
        }
        let read = |text: &str| serde_json::from_str::<One>(text).map(|o| o.n);
        assert_eq!(
            read(r#"{"n": 18446744073709551615}"#).unwrap(),
            Some(u64::MAX)
        );
        assert_eq!(read(r#"{"n": 3.0}"#).unwrap(), Some(3));
        // 2^64, written either way, is one past the range.
        assert!(read(r#"{"n": 18446744073709551616}"#).is_err());
        assert!(read(r#"{"n": 1.8446744073709552e19}"#).is_err());
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(super::token(&headers, None), expected, "{value}");
        }
    }
}
