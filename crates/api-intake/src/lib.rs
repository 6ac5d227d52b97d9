//! The intake API: trusted in-house systems (a CRM, a form backend, a load
//! test) submit normalized events over HTTP.
//!
//! `POST /channels/{name}/events` with `Authorization: Bearer <token>` and an
//! [`InboundEvent`] as JSON (its `source` is set to the adapter's name). The
//! answer is 200 with the receipt only once Redis has the event; 503 with
//! `Retry-After` when it cannot be stored. Agents' replies to its contacts
//! are pulled from `GET /channels/{name}/replies` and settled by the client
//! (`replies`). Documented in `docs/intake-api.md`.
#![forbid(unsafe_code)]

mod replies;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use metrics::counter;
use serde::Deserialize;
use std::sync::Arc;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, Intake, Outbox, Routing, Secret,
    SecretValue,
};
use switchboard_core::{ContactId, InboundEvent, IntakeError};

/// `[[channels]] type = "intake_api"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeApiConfig {
    /// The adapter's name: the `source` of its events and its URL segment.
    pub name: String,
    /// The bearer token callers present. Inline, `{ file = … }` or `{ env = … }`.
    pub token: Secret,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    256 * 1024
}

impl ChannelConfig for IntakeApiConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        let token = self.token.resolve()?;
        if token.expose().len() < 16 {
            return Err(ChannelError::Config(format!(
                "channels.{}.token: must be at least 16 characters",
                self.name
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ChannelError::Config(format!(
                "channels.{}.max_body_bytes: must be at least 1024",
                self.name
            )));
        }
        Ok(())
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.validate()?;
        Ok(Box::new(IntakeApi {
            state: Arc::new(ApiState {
                name: ctx.name.clone(),
                token: self.token.resolve()?,
                intake: ctx.intake.clone(),
                routing: ctx.routing.clone(),
                outbox: ctx.outbox.clone(),
                pulling: tokio::sync::Mutex::new(()),
                max_body: self.max_body_bytes,
            }),
            ctx,
        }))
    }
}

pub(crate) struct ApiState {
    name: String,
    token: SecretValue,
    intake: Arc<dyn Intake>,
    routing: Arc<dyn Routing>,
    /// Agents' replies to this source's contacts, pulled by the client.
    outbox: Arc<dyn Outbox>,
    /// Held by the pull in progress on this instance (`replies`).
    pulling: tokio::sync::Mutex<()>,
    /// `max_body_bytes`: the longest body read.
    max_body: usize,
}

struct IntakeApi {
    state: Arc<ApiState>,
    ctx: ChannelContext,
}

impl ChannelAdapter for IntakeApi {
    fn routes(&self) -> Option<Router> {
        Some(
            Router::new()
                .route("/events", post(submit))
                .route("/contacts/{id}/end", post(end))
                .route("/contacts/{id}/rating", post(rate))
                .route("/replies", get(replies::pull))
                .route("/replies/{handle}", post(replies::settle))
                .fallback(no_such_path)
                .layer(axum::middleware::map_response_with_state(
                    self.state.clone(),
                    too_large,
                ))
                .with_state(self.state.clone()),
        )
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        // Everything happens in the HTTP handlers; replies to contacts of this
        // source wait in its outbox until the client pulls them.
        let shutdown = self.ctx.shutdown.clone();
        Box::pin(async move {
            shutdown.cancelled().await;
            Ok(())
        })
    }
}

pub(crate) fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// axum's own refusals, in plain text and uncounted, made this API's:
/// JSON with a code, counted. An extractor's 400 (`bad_request`: a path
/// segment that is not UTF-8); a method the route does not take (405
/// `method_not_allowed`); a 413, should one come from elsewhere (bodies
/// are read by [`read_body`], which answers its own).
async fn too_large(State(state): State<Arc<ApiState>>, response: Response) -> Response {
    let (code, message) = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            "the request body is over the channel's max_body_bytes",
        ),
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "the request could not be read (its path, or its body, which broke off)",
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this path does not take that method")
        }
        _ => return response,
    };
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return response;
    }
    rejected(&state.name, code);
    let mut answer = error(response.status(), code, message.into());
    if let Some(allow) = response.headers().get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// A path the channel does not serve: the API's JSON error, counted.
async fn no_such_path(State(state): State<Arc<ApiState>>) -> Response {
    rejected(&state.name, "not_found");
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path in this channel".into(),
    )
}

pub(crate) fn rejected(source: &str, reason: &'static str) {
    counter!("switchboard_intake_api_rejected_total", "source" => source.to_owned(), "reason" => reason)
        .increment(1);
}

/// The JSON body as `T`; the counted `400 bad_json` answer otherwise.
// The error is the answer, sent at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    body: &[u8],
) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        rejected(&state.name, "bad_json");
        error(StatusCode::BAD_REQUEST, "bad_json", e.to_string())
    })
}

/// The request's JSON body as `T` once its bearer token is right; the
/// counted 401 or 400 answer otherwise.
#[allow(clippy::result_large_err)]
pub(crate) async fn authorized_json<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    headers: &HeaderMap,
    raw: Body,
) -> Result<T, Response> {
    if let Some(refused) = unauthorized(state, headers) {
        return Err(refused);
    }
    json_body(state, &read_body(state, raw).await?)
}

/// A request's body, read only once the token is checked (a stranger gets
/// 401 whatever they send, not 413 for a large body): at most
/// `max_body_bytes`, or 413 `too_large`; one that broke off 400
/// `bad_request`, both counted. One cut off by the daemon's deadline for
/// bodies is answered 408 `body_timeout` and counted by the daemon
/// (`switchboard_http_body_timeouts_total`), not here.
// The error is the answer, sent at once: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(crate) async fn read_body(state: &ApiState, raw: Body) -> Result<Bytes, Response> {
    use switchboard_channel::body::ReadError;
    switchboard_channel::body::read(raw, state.max_body)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(_) => {
                rejected(&state.name, "too_large");
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is over the channel's max_body_bytes".into(),
                )
            }
            ReadError::TooSlow => error(StatusCode::REQUEST_TIMEOUT, "body_timeout", e.to_string()),
            ReadError::Broken(_) => {
                rejected(&state.name, "bad_request");
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read".into(),
                )
            }
        })
}

/// `None` when the bearer token is right; the 401 otherwise.
pub(crate) fn unauthorized(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let presented = switchboard_channel::bearer_bytes(headers);
    if presented.is_some_and(|t| state.token.matches(t)) {
        return None;
    }
    rejected(&state.name, "unauthorized");
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required".into(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(response)
}

/// [`unavailable`], counted as a refusal (`/events` counts its own in
/// `switchboard_intake_errors_total`).
fn unavailable_counted(source: &str, e: &IntakeError) -> Response {
    rejected(source, "unavailable");
    unavailable(e)
}

fn unavailable(e: &IntakeError) -> Response {
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

/// The contact, when it came in through this adapter; the error answer
/// otherwise (404 for contacts of other channels too: not ours to touch).
async fn own_contact(state: &ApiState, id: &str) -> Result<ContactId, Response> {
    let unknown = || {
        rejected(&state.name, "unknown_contact");
        error(
            StatusCode::NOT_FOUND,
            "unknown_contact",
            format!("no contact {id} of this channel"),
        )
    };
    let contact: ContactId = id.parse().map_err(|_| unknown())?;
    // A contact submitted a moment ago may not be handed to routing yet
    // (milliseconds, normally): wait a little for it.
    for _ in 0..20 {
        match state.routing.route(&contact).await {
            Ok(Some(view)) if view.source == state.name => return Ok(contact),
            Ok(Some(_)) => return Err(unknown()),
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            Err(e) => return Err(unavailable_counted(&state.name, &e)),
        }
    }
    Err(unknown())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    #[serde(default = "default_disposition")]
    disposition: String,
}

fn default_disposition() -> String {
    "customer_left".into()
}

/// `POST /channels/{name}/contacts/{id}/end`: the customer went away (hung
/// up, left): waiting or offered, the contact is abandoned; assigned, it
/// is closed with the disposition.
async fn end(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    let body = match read_body(&state, raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: EndBody = if body.is_empty() {
        EndBody {
            disposition: default_disposition(),
        }
    } else {
        match json_body(&state, &body) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    if body.disposition.is_empty() || body.disposition.len() > 64 {
        rejected(&state.name, "bad_disposition");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_disposition",
            "disposition: 1 to 64 bytes".into(),
        );
    }
    let contact = match own_contact(&state, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.routing.end(&contact, &body.disposition).await {
        Ok(outcome) => axum::Json(serde_json::json!({ "outcome": outcome })).into_response(),
        Err(e) => unavailable_counted(&state.name, &e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingBody {
    /// Any number reads: a whole one (`4` or `4.0`) outside 1 to 5 is
    /// `bad_rating`, another (`3.5`) `bad_json`.
    score: serde_json::Number,
}

/// `POST /channels/{name}/contacts/{id}/rating`: the customer's
/// satisfaction rating (1 to 5), e.g. from a post-call survey. The first
/// rating of a contact counts.
async fn rate(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    let body: RatingBody = match authorized_json(&state, &headers, raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let whole = body.score.as_i64().or_else(|| {
        body.score
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f.clamp(-1.0, 6.0) as i64)
    });
    let Some(whole) = whole else {
        rejected(&state.name, "bad_json");
        return error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "score: a whole number, 1 to 5".into(),
        );
    };
    let Some(score) = u8::try_from(whole).ok().filter(|s| (1..=5).contains(s)) else {
        rejected(&state.name, "bad_rating");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_rating",
            "score: 1 to 5".into(),
        );
    };
    let contact = match own_contact(&state, &id).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match state.routing.rate(&contact, score).await {
        Ok(outcome) => axum::Json(serde_json::json!({ "outcome": outcome })).into_response(),
        Err(e) => unavailable_counted(&state.name, &e),
    }
}

async fn submit(State(state): State<Arc<ApiState>>, headers: HeaderMap, raw: Body) -> Response {
    let mut event: InboundEvent = match authorized_json(&state, &headers, raw).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    event.source = state.name.clone();
    // Attachments are the channels' own (the agent API serves a
    // conversation only those); an outside caller has none to name.
    event.media.clear();
    match state.intake.submit(event).await {
        Ok(receipt) => (StatusCode::OK, axum::Json(receipt)).into_response(),
        Err(IntakeError::Invalid(e)) => {
            rejected(&state.name, "invalid_event");
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                e.to_string(),
            )
        }
        Err(e @ (IntakeError::Unavailable(_) | IntakeError::ShuttingDown)) => unavailable(&e),
    }
}
