//! `[[channels]] type = "cti"`: a generic CTI API any PBX can call
//! (Zammad-style events), at `POST /channels/{name}/events` with the shared
//! token (`Authorization: Bearer …`, or `?token=…` for PBXs that can only
//! set a URL), JSON or form bodies.
//!
//! - `newCall` (inbound): a blocked caller gets `{"action":"reject",…}`;
//!   anyone else becomes a voice contact (stored before we answer) and the
//!   answer is `{}`: the PBX holds the caller in its own queue. A dispatcher
//!   then follows the contact in routing, and when it is offered to an
//!   agent, tells the PBX at `callback_url` to connect the call
//!   (`{"action":"dial","callId":…,"number":<the agent's extension or SIP
//!   URI>,"agent":…}`), retrying with backoff while the PBX does not answer
//!   2xx, for as long as the offer stands. If the offer lapses (nobody
//!   picked up), the next agent's dial follows.
//! - `answer`: the agent (`user` or `answeringNumber`, matched against the
//!   configured agents) picked up: the offer is accepted. An agent it is no
//!   longer offered to (her phone rang past the offer's end) gets
//!   `{"action":"release",…}`: the PBX hangs up her leg.
//! - `hangup`: waiting or offered, the call is abandoned (never offered
//!   again); connected, the contact is closed and the agent wraps up.
//!
//! The dispatcher lives in memory, one per call on an instance: after a
//! restart, a call already waiting gets its dial callbacks again once the
//! PBX repeats its `newCall` (which stores nothing twice, and starts a
//! dispatcher where none follows the call), documented in docs/voice.md.
//! Each offer is dialled once, a new offer to the same agent (after a lapse
//! or a revoked offer) too. When the PBX's newCalls reach several instances,
//! each follows the call but only the one holding the call's lease (channel
//! state `dispatch:<contact>`) dials; on shutdown it gives the lease up.

use crate::config_error;
use crate::{
    CtiEvent, CtiEventKind, CtiFormat, CtiReply, RejectReason, Target, inbound_event, parse_cti,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use metrics::counter;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::{Duration, Instant};
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, ChannelState, Intake, Routing,
    Secret, SecretValue,
};
use switchboard_core::{ContactId, IntakeError, IntakeOutcome};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// `[[channels]] type = "cti"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtiConfig {
    pub name: String,
    /// The token the PBX presents.
    pub token: Secret,
    /// Where we tell the PBX to connect a waiting call to an agent.
    pub callback_url: String,
    /// The bearer token Switchboard presents on its callbacks; `token` when
    /// not set. Set it, so that the PBX's side does not hold the token
    /// that lets a caller post events to Switchboard.
    #[serde(default)]
    pub callback_token: Option<Secret>,
    /// Each agent's extension or SIP URI, by agent id.
    #[serde(default)]
    pub agents: BTreeMap<String, String>,
    /// Callers rejected outright.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// How long a connected call may wait in a queue (transferred to a
    /// queue with nobody free, requeued) before the PBX is asked to take
    /// the caller off the agent's phone (`{"action":"release"}`); 0 never
    /// asks for such a call (a PBX without the action; a late `answer` is
    /// still answered with the action). At most 3600.
    #[serde(default = "default_release_after_secs")]
    pub release_after_secs: u64,
}

fn default_release_after_secs() -> u64 {
    5
}

/// Without the callback URL's password and query values: a PBX may take
/// a token there.
impl std::fmt::Debug for CtiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let CtiConfig {
            name,
            token,
            callback_url,
            callback_token,
            agents,
            blocked,
            release_after_secs,
        } = self;
        f.debug_struct("CtiConfig")
            .field("name", name)
            .field("token", token)
            .field(
                "callback_url",
                &switchboard_channel::net::redact_url_all(callback_url),
            )
            .field("callback_token", callback_token)
            .field("agents", agents)
            .field("blocked", blocked)
            .field("release_after_secs", release_after_secs)
            .finish()
    }
}

impl ChannelConfig for CtiConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn finds_contacts_by_provider_id(&self) -> bool {
        // A call's later events name it by its call id.
        true
    }

    fn validate(&self) -> Result<(), ChannelError> {
        if self.token.resolve()?.expose().len() < 16 {
            return Err(config_error(
                &self.name,
                "token",
                "must be at least 16 characters",
            ));
        }
        if let Some(callback) = &self.callback_token
            && callback.resolve()?.expose().len() < 16
        {
            return Err(config_error(
                &self.name,
                "callback_token",
                "must be at least 16 characters",
            ));
        }
        if self.release_after_secs > 3600 {
            return Err(config_error(
                &self.name,
                "release_after_secs",
                "must be at most 3600 (0 never asks the PBX to release a caller)",
            ));
        }
        if !url::Url::parse(&self.callback_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(config_error(
                &self.name,
                "callback_url",
                "must be an http(s) URL",
            ));
        }
        // An answer names the phone that picked up; two agents on one
        // phone could not be told apart (the other's offer would lapse
        // as her miss while the caller talks to her).
        // A SIP address's user part counts too: a PBX may report the
        // extension (`201` for `sip:201@pbx…`), which an agent configured
        // as plain `201` would take.
        let mut phones: HashMap<String, &str> = HashMap::new();
        let same = |agent: &str, other: &str| {
            config_error(
                &self.name,
                &format!("agents.{agent}"),
                &format!("the same phone as agents.{other}: each agent needs her own"),
            )
        };
        for (agent, endpoint) in &self.agents {
            if let Some(other) = phones.insert(endpoint_key(endpoint), agent) {
                return Err(same(agent, other));
            }
        }
        for (key, agent) in &phones {
            if let Some((user, _)) = key.split_once('@')
                && let Some(other) = phones.get(user)
            {
                return Err(same(agent, other));
            }
        }
        for (agent, endpoint) in &self.agents {
            CtiReply::Dial {
                caller_id: None,
                target: Target::from_endpoint(endpoint),
            }
            .to_json()
            .map_err(|e| config_error(&self.name, &format!("agents.{agent}"), &e.to_string()))?;
        }
        Ok(())
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.validate()?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config_error(&self.name, "callback_url", &e.without_url().to_string()))?;
        let (by_endpoint, by_user) = endpoints(&self.agents);
        let blocked = crate::phone::blocked_set(&self.blocked);
        let state = Arc::new(CtiState {
            name: ctx.name.clone(),
            token: self.token.resolve()?,
            callback_token: self
                .callback_token
                .as_ref()
                .unwrap_or(&self.token)
                .resolve()?,
            release_after: (self.release_after_secs > 0)
                .then(|| Duration::from_secs(self.release_after_secs)),
            config: self.clone(),
            by_endpoint,
            by_user,
            blocked,
            intake: ctx.intake.clone(),
            routing: ctx.routing.clone(),
            client,
            shutdown: ctx.shutdown.clone(),
            leases: ctx.state.clone(),
            active: std::sync::Mutex::new(HashSet::new()),
            dispatchers: TaskTracker::new(),
            unauthorized: switchboard_channel::logs::LogThrottle::new(Duration::from_secs(60)),
        });
        Ok(Box::new(CtiChannel { state, ctx }))
    }
}

#[derive(Debug)]
struct CtiState {
    name: String,
    token: SecretValue,
    /// Presented on the dial callbacks.
    callback_token: SecretValue,
    config: CtiConfig,
    /// How long a connected call may wait in a queue before the PBX is
    /// asked to take the caller off the agent's phone; `None`: never.
    release_after: Option<Duration>,
    /// Extension or SIP URI ([`endpoint_key`]) → agent id.
    by_endpoint: HashMap<String, String>,
    /// A SIP URI's user part → agent id, when only one agent has it.
    by_user: HashMap<String, String>,
    blocked: HashSet<String>,
    intake: Arc<dyn Intake>,
    routing: Arc<dyn Routing>,
    client: reqwest::Client,
    shutdown: CancellationToken,
    /// The channel's state shared by all instances: a call's lease.
    leases: Arc<dyn ChannelState>,
    /// Calls a dispatcher follows on this instance: one each, removed when
    /// it ends.
    active: std::sync::Mutex<HashSet<ContactId>>,
    /// The dispatchers, awaited on shutdown (they give their leases up).
    dispatchers: TaskTracker,
    /// The PBX refusing our credentials: logged at error once a minute.
    unauthorized: switchboard_channel::logs::LogThrottle,
}

struct CtiChannel {
    state: Arc<CtiState>,
    ctx: ChannelContext,
}

impl ChannelAdapter for CtiChannel {
    fn routes(&self) -> Option<Router> {
        Some(crate::limit::limit_bodies(
            Router::new()
                .route("/events", post(events))
                .with_state(self.state.clone()),
            &self.state.name,
            |_| "cti",
        ))
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        let shutdown = self.ctx.shutdown.clone();
        let state = self.state.clone();
        Box::pin(async move {
            // Calls followed before this instance started (its restart,
            // another instance's crash) are followed again.
            tokio::select! {
                () = resume_calls(state.clone()) => {}
                () = shutdown.cancelled() => {}
            }
            shutdown.cancelled().await;
            // The dispatchers stop at once and release their calls' leases,
            // so that another instance (or this one, restarted) dials them
            // without waiting for the leases to lapse.
            state.dispatchers.close();
            state.dispatchers.wait().await;
            Ok(())
        })
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

fn answer(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

async fn events(
    State(state): State<Arc<CtiState>>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A query that does not parse (`?token=a&token=b`) is answered and
    // counted here like every other refusal, not by axum in plain text.
    let query = query.map(|Query(q)| q);
    let presented = switchboard_channel::bearer(&headers)
        .or(query.as_ref().ok().and_then(|q| q.token.as_deref()));
    let outcome = match (&query, presented) {
        (Err(e), _) => Err((StatusCode::BAD_REQUEST, "bad_request", e.body_text())),
        (Ok(_), Some(t)) if state.token.matches(t.as_bytes()) => {
            handle(&state, &headers, &body).await
        }
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required".to_owned(),
        )),
    };
    let label: &'static str = match &outcome {
        Ok(_) => "ok",
        Err((_, code, _)) => code,
    };
    counter!("switchboard_voice_requests_total",
        "source" => state.name.clone(), "endpoint" => "cti", "outcome" => label)
    .increment(1);
    match outcome {
        Ok(reply) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            reply,
        )
            .into_response(),
        Err((status, code, message)) => {
            // The code, not the message: it may quote what the PBX sent (a
            // caller's number). The PBX gets the message in the answer.
            debug!(source = %state.name, code, "CTI request refused.");
            answer(status, code, message)
        }
    }
}

type Refused = (StatusCode, &'static str, String);

/// The channel's state could not be read or written: 503, retried.
fn state_unavailable(e: switchboard_channel::StateError) -> Refused {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

fn unavailable(e: IntakeError) -> Refused {
    match e {
        IntakeError::Invalid(e) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            other.to_string(),
        ),
    }
}

async fn handle(
    state: &Arc<CtiState>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = CtiFormat::from_content_type(content_type).ok_or((
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send application/json or application/x-www-form-urlencoded".to_owned(),
    ))?;
    let event = parse_cti(body, format)
        .map_err(|e| (StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let continue_ = || CtiReply::Continue.to_json().unwrap_or_else(|_| "{}".into());
    match &event.kind {
        CtiEventKind::NewCall => {
            let Ok(inbound) = inbound_event(&event.call_event(), &state.name) else {
                // Outbound calls and other events are not contacts.
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "unknown_call")
                    .increment(1);
                debug!(source = %state.name, call_id = %event.call_id, "A newCall that is not a contact (an outbound call).");
                return Ok(continue_());
            };
            if state.blocked.contains(&inbound.customer.value) {
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "blocked")
                    .increment(1);
                info!(source = %state.name, call_id = %event.call_id, "Blocked caller rejected.");
                return CtiReply::Reject {
                    reason: RejectReason::Busy,
                }
                .to_json()
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "reply", e.to_string()));
            }
            let receipt = state.intake.submit(inbound).await.map_err(unavailable)?;
            let stored = receipt.outcome != IntakeOutcome::Duplicate;
            // Followed from the moment it is stored, before anything below
            // can fail: a PBX that queues the caller whatever we answer
            // (the Asterisk example) may never repeat this newCall, and a
            // call in routing that no dispatcher follows is offered to
            // agent after agent and never dialled. Noted before the answer,
            // so that a restart follows it again; a repeated newCall (a
            // duplicate) too: it starts a dispatcher where none follows the
            // call. The dispatcher ends a call whose hangup came first.
            register_call(state, &receipt.contact_id, &event.call_id).await;
            follow_call(state, receipt.contact_id, &event.call_id, false);
            // Its hangup came first (events reordered, or handled while
            // this was being stored): the call is over, not routed.
            let hungup = state
                .leases
                .get(&hangup_key(&event.call_id))
                .await
                .map_err(state_unavailable)?;
            if let Some(disposition) = hungup {
                let outcome = state
                    .routing
                    .end(&receipt.contact_id, &disposition)
                    .await
                    .map_err(unavailable)?;
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "hung_up_first")
                    .increment(1);
                info!(source = %state.name, call_id = %event.call_id, contact_id = %receipt.contact_id, outcome = %outcome, "A call whose hangup came before it was stored is ended.");
                return Ok(continue_());
            }
            if !stored
                && let Some(route) = state
                    .routing
                    .route(&receipt.contact_id)
                    .await
                    .map_err(unavailable)?
                && route.state == "closed"
            {
                // Repeated from the PBX's hold loop after routing ended the
                // call (e.g. closed after hours): the caller is let go.
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "ended")
                    .increment(1);
                info!(source = %state.name, call_id = %event.call_id, contact_id = %receipt.contact_id, "A call routing has ended is rejected.");
                return CtiReply::Reject {
                    reason: RejectReason::Rejected,
                }
                .to_json()
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "reply", e.to_string()));
            }
            // A repeat (the PBX's hold loop, a retry) is not another call.
            let outcome = if stored { "queued" } else { "repeated" };
            counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => outcome)
                .increment(1);
            info!(source = %state.name, call_id = %event.call_id, contact_id = %receipt.contact_id, outcome, "Call queued.");
            Ok(continue_())
        }
        CtiEventKind::Answer => {
            let Some(contact) = contact_of(state, &event).await? else {
                return Ok(continue_());
            };
            let by = event
                .answering_number
                .iter()
                .chain(event.users.iter())
                .find_map(|who| {
                    let key = endpoint_key(who);
                    // Her address, else her id, else her address's user part.
                    state
                        .by_endpoint
                        .get(&key)
                        .cloned()
                        .or_else(|| agent_by_id(&state.config.agents, who))
                        .or_else(|| state.by_user.get(&key).cloned())
                });
            if let Some(agent) = by {
                let outcome = state
                    .routing
                    .answer(&contact, &agent, true)
                    .await
                    .map_err(unavailable)?;
                if outcome != "ok" && late_answer(state, &contact, &agent).await? {
                    // Her phone rang past the offer's end and the offer
                    // moved on (expired, passed to the next agent, taken
                    // back): she must not talk to a caller routing has
                    // offered to someone else.
                    counter!("switchboard_voice_late_answers_total", "source" => state.name.clone())
                        .increment(1);
                    warn!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "An agent answered a call no longer offered to her; the PBX is told to release her.");
                    return CtiReply::Release { agent }
                        .to_json()
                        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "reply", e.to_string()));
                }
                info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "The agent answered the call.");
            } else {
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "answered_by_unknown")
                    .increment(1);
                warn!(source = %state.name, call_id = %event.call_id, contact_id = %contact, "A call was answered by someone who is not a configured agent.");
            }
            Ok(continue_())
        }
        CtiEventKind::Hangup { cause } => {
            let disposition = cause
                .as_ref()
                .map(|c| c.end_cause().as_str().to_owned())
                .unwrap_or_else(|| "ended".to_owned());
            let contact = match contact_of(state, &event).await? {
                Some(contact) => {
                    // Remembered first: should the end below fail (a 503
                    // the PBX may not repeat), the call's dispatcher ends
                    // it, rather than offering a caller who is gone. By
                    // the contact, not the call id: a PBX that uses an id
                    // again would have the next caller's call ended.
                    if let Err(error) = state
                        .leases
                        .set_for(&contact_hangup_key(&contact), &disposition, HANGUP_MEMORY)
                        .await
                    {
                        debug!(source = %state.name, call_id = %event.call_id, %error, "Could not note the hangup.");
                    }
                    contact
                }
                None => match remember_hangup(state, &event, &disposition).await? {
                    // Stored meanwhile: ended below, as if found at once.
                    Some(contact) => contact,
                    None => return Ok(continue_()),
                },
            };
            let outcome = state
                .routing
                .end(&contact, &disposition)
                .await
                .map_err(unavailable)?;
            counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => outcome.clone())
                .increment(1);
            info!(source = %state.name, call_id = %event.call_id, contact_id = %contact, outcome = %outcome, "Call ended.");
            Ok(continue_())
        }
    }
}

/// Whether an answer by `agent` that routing did not take as hers is one
/// to release: we dialled her for this call (an offer that moved on while
/// her phone rang), and the call is neither assigned to her (accepted in
/// the console, an auto-accepting queue: the call going as planned) nor
/// over (a repeated `answer` after the hangup). Someone we never dialled
/// for it (a transfer made on the PBX, a colleague picking up) is the
/// PBX's business, as before.
async fn late_answer(state: &CtiState, contact: &ContactId, agent: &str) -> Result<bool, Refused> {
    let route = state.routing.route(contact).await.map_err(unavailable)?;
    let Some(route) = route else {
        return Ok(false);
    };
    if route.state == "closed"
        || (route.state == "assigned" && route.agent.as_deref() == Some(agent))
    {
        return Ok(false);
    }
    let dialled = state
        .leases
        .get(&dialled_key(contact, agent))
        .await
        .map_err(state_unavailable)?;
    Ok(dialled.is_some())
}

/// The marker that the PBX took a dial of `agent` for this call, whatever
/// the offer: an answer of hers that routing does not take is a late one.
fn dialled_key(contact: &ContactId, agent: &str) -> String {
    format!("dialled:{contact}:{agent}")
}

/// How long a hangup of a call not (yet) stored is remembered for its
/// `newCall`, should that come after it.
const HANGUP_MEMORY: Duration = Duration::from_secs(3600);
/// How often the leading dispatcher looks for a hangup that was noted but
/// not acted on ([`hung_up`], [`end_hung_up`]).
const HANGUP_CHECK: Duration = Duration::from_secs(3);

/// An extension or SIP address as it is compared: lower case, without a
/// `sip:`, `sips:` or `tel:` scheme, angle brackets or `;parameters`. A
/// PBX reports `SIP:202@PBX.example.com;transport=tcp` for the agent
/// configured as `sip:202@pbx.example.com`, and her answer matched nobody.
pub(crate) fn endpoint_key(endpoint: &str) -> String {
    let trimmed = endpoint
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let lower = trimmed.to_ascii_lowercase();
    let bare = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .unwrap_or(&lower);
    bare.split(';').next().unwrap_or_default().trim().to_owned()
}

/// Each agent by her endpoint ([`endpoint_key`]), and by the user part of
/// a SIP address (`202` of `sip:202@pbx.example.com`, the extension a PBX
/// may report instead) when no other agent has the same.
fn endpoints(
    agents: &BTreeMap<String, String>,
) -> (HashMap<String, String>, HashMap<String, String>) {
    let mut by: HashMap<String, String> = HashMap::new();
    let mut users: HashMap<String, Vec<String>> = HashMap::new();
    for (agent, endpoint) in agents {
        let key = endpoint_key(endpoint);
        if let Some((user, _)) = key.split_once('@') {
            users
                .entry(user.to_owned())
                .or_default()
                .push(agent.clone());
        }
        by.insert(key, agent.clone());
    }
    let by_user = users
        .into_iter()
        .filter_map(|(user, agents)| match agents.as_slice() {
            [agent] => Some((user, agent.clone())),
            _ => None,
        })
        .collect();
    (by, by_user)
}

/// The agent whose id `who` names: exactly, else in another case when
/// only one id matches so (ids that differ only in case are both allowed).
fn agent_by_id<V>(agents: &BTreeMap<String, V>, who: &str) -> Option<String> {
    let who = who.trim();
    if agents.contains_key(who) {
        return Some(who.to_owned());
    }
    let mut matching = agents.keys().filter(|id| id.eq_ignore_ascii_case(who));
    match (matching.next(), matching.next()) {
        (Some(id), None) => Some(id.clone()),
        _ => None,
    }
}

fn hangup_key(call_id: &str) -> String {
    format!("hungup:{call_id}")
}

/// The hangup of a stored call, noted before it is acted on.
fn contact_hangup_key(contact: &ContactId) -> String {
    format!("hungup-contact:{contact}")
}

/// A hangup of an inbound call that is not a contact (yet): remembered for
/// its `newCall` (which ends the call instead of routing it), then looked
/// up again, in case the `newCall` was stored in between (it may have
/// checked before this was written). The contact, when it is there now.
async fn remember_hangup(
    state: &CtiState,
    event: &CtiEvent,
    disposition: &str,
) -> Result<Option<ContactId>, Refused> {
    if event.direction == crate::Direction::Outbound
        || ringing_of(state, event).is_none()
        || blocked_caller(state, event)
    {
        // Outbound and internal calls are never contacts, nor are blocked
        // callers' (their newCall was rejected, and comes no more).
        return Ok(None);
    }
    state
        .leases
        .set_for(&hangup_key(&event.call_id), disposition, HANGUP_MEMORY)
        .await
        .map_err(state_unavailable)?;
    lookup(state, event).await
}

/// Whether the event's caller is one the channel rejects (`blocked`).
fn blocked_caller(state: &CtiState, event: &CtiEvent) -> bool {
    ringing_of(state, event).is_some_and(|r| state.blocked.contains(&r.customer.value))
}

/// The `newCall` an event's call would have been stored as, when it is an
/// inbound call's.
fn ringing_of(state: &CtiState, event: &CtiEvent) -> Option<switchboard_core::InboundEvent> {
    let mut ringing = event.clone();
    ringing.kind = CtiEventKind::NewCall;
    ringing.direction = crate::Direction::Inbound;
    inbound_event(&ringing.call_event(), &state.name).ok()
}

/// The contact of the call `event` is about, without counting a miss.
async fn lookup(state: &CtiState, event: &CtiEvent) -> Result<Option<ContactId>, Refused> {
    let Some(inbound) = ringing_of(state, event) else {
        return Ok(None);
    };
    Ok(state
        .intake
        .lookup(&state.name, &inbound.customer, &event.call_id)
        .await
        .map_err(unavailable)?
        .map(|r| r.contact_id))
}

/// The contact of the call `event` is about (found by the call id the
/// `newCall` was stored under).
async fn contact_of(state: &CtiState, event: &CtiEvent) -> Result<Option<ContactId>, Refused> {
    let found = lookup(state, event).await?;
    // A blocked caller's call was rejected, not lost: not counted as one
    // whose first event never reached us.
    if found.is_none() && !blocked_caller(state, event) {
        // Outbound and internal calls end here too; so does an event for a
        // call whose newCall never reached us: counted, so that the second
        // kind shows.
        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "unknown_call")
            .increment(1);
        debug!(source = %state.name, call_id = %event.call_id, "An event of a call that is not a contact.");
    }
    Ok(found)
}

/// How often a dispatcher reads the call's routing.
const POLL: Duration = Duration::from_millis(300);
/// ... and while the call is connected to an agent's phone, for a transfer
/// (in the console, or a requeue) to be dialled.
const CONNECTED_POLL: Duration = Duration::from_secs(1);
/// A call's lease: the instance holding it dials the call.
const LEASE: Duration = Duration::from_secs(15);
/// The claim to ring an assigned call: one instance at a time, renewed
/// at each try; it lapses this long after its holder stopped trying
/// (crashed).
const RING_CLAIM: Duration = Duration::from_secs(15);
/// How long the marker of a dial the PBX took is kept: a call is not rung
/// again for the same offer or assignment within it.
const RUNG_MEMORY: Duration = Duration::from_secs(3600);
/// How many times noting a dial is tried, a poll apart.
const MARK_TRIES: u32 = 10;
/// Its holder renews it this often while it follows the call.
const RENEW: Duration = Duration::from_secs(5);
/// How often an instance that does not hold it tries to take it.
const RETRY: Duration = Duration::from_secs(2);
/// The backoff between dials the PBX refused: from this, doubling...
const RING_RETRY_FIRST: Duration = Duration::from_millis(200);
/// ...up to this.
const RING_RETRY_MAX: Duration = Duration::from_secs(5);

/// The channel state's map of the calls being followed: contact id → call
/// id, written before a `newCall` is answered and removed once the call is
/// over, so that an instance that starts (a restart, another one after a
/// crash) follows every call again, connected ones included, without
/// waiting for the PBX to repeat its `newCall`.
const CALLS: &str = "calls";
/// How often an instance looks in [`CALLS`] for calls nobody follows here
/// (one `HGETALL` of the calls in progress): a call begun on another
/// instance that stops is followed here within this (or the lease's lapse
/// after a crash).
const RESUME_EVERY: Duration = Duration::from_secs(5);
/// A call followed again from [`CALLS`] that routing does not show within
/// this long is taken out of it (its contact was deleted). Long enough for
/// routing's hand-off to catch up after an outage.
const UNKNOWN_FOR: Duration = Duration::from_secs(15 * 60);
/// How long the note of whose phone has a call is kept.
const ON_PHONE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// How a dispatcher starts.
enum Start {
    /// From the PBX's `newCall`.
    NewCall,
    /// From the registry, with the agent whose phone had the call as last
    /// noted.
    Registry { on_phone: Option<String> },
}

/// The note of the agent whose phone has a connected call (empty once the
/// PBX moved the caller off it), read by a dispatcher that follows the
/// call after a restart, so that a transfer it dials names her in
/// `transfer_from`.
fn on_phone_key(contact: &ContactId) -> String {
    format!("on:{contact}")
}

/// What this dispatcher last noted under [`on_phone_key`].
struct OnPhone {
    key: String,
    agent: Option<String>,
}

impl OnPhone {
    /// Notes `agent` when it changed; a failure is tried again at the next
    /// poll.
    async fn note(&mut self, state: &CtiState, agent: Option<&str>) {
        if self.agent.as_deref() == agent {
            return;
        }
        match state
            .leases
            .set_for(&self.key, agent.unwrap_or_default(), ON_PHONE_MEMORY)
            .await
        {
            Ok(()) => self.agent = agent.map(str::to_owned),
            Err(error) => {
                debug!(source = %state.name, %error, "Could not note whose phone has the call; will try again.");
            }
        }
    }
}

/// Notes the call in [`CALLS`]. A failure is logged: the PBX's repeated
/// `newCall` still has it followed after a restart.
async fn register_call(state: &CtiState, contact: &ContactId, call_id: &str) {
    if let Err(error) = state
        .leases
        .put_entry(CALLS, &contact.to_string(), call_id)
        .await
    {
        debug!(source = %state.name, contact_id = %contact, %error, "Could not note the call in the registry; a repeated newCall has it followed after a restart.");
    }
}

/// Follows every call in [`CALLS`] that no dispatcher of this instance
/// follows: at the start, then every [`RESUME_EVERY`], until shutdown.
async fn resume_calls(state: Arc<CtiState>) {
    loop {
        match state.leases.entries(CALLS).await {
            Ok(calls) => {
                for (contact, call_id) in calls {
                    let Ok(contact) = contact.parse::<ContactId>() else {
                        warn!(source = %state.name, entry = %contact, "Not a contact id in the call registry; removed.");
                        let _ = state.leases.remove_entry(CALLS, &contact).await;
                        continue;
                    };
                    if follow_call(&state, contact, &call_id, true) {
                        counter!("switchboard_voice_calls_resumed_total", "source" => state.name.clone())
                            .increment(1);
                        info!(source = %state.name, contact_id = %contact, call_id = %call_id, "Following a call again from the registry.");
                    }
                }
            }
            Err(error) => {
                debug!(source = %state.name, %error, "Could not read the call registry; will look again.");
            }
        }
        if stopped_during(&state, RESUME_EVERY).await {
            return;
        }
    }
}

/// Starts a dispatcher for `contact` unless one follows it on this instance
/// already; true when it started one. `resumed`: from the registry.
fn follow_call(state: &Arc<CtiState>, contact: ContactId, call_id: &str, resumed: bool) -> bool {
    if state.shutdown.is_cancelled() {
        return false;
    }
    let fresh = state
        .active
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(contact);
    if !fresh {
        debug!(source = %state.name, contact_id = %contact, "The call is followed already.");
        return false;
    }
    let active = Active {
        state: state.clone(),
        contact,
    };
    state
        .dispatchers
        .spawn(dispatch(active, call_id.to_owned(), resumed));
    true
}

/// A call in [`CtiState::active`], taken out when its dispatcher ends
/// (returns, panics or is dropped).
struct Active {
    state: Arc<CtiState>,
    contact: ContactId,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.state
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.contact);
    }
}

/// Follows one call in routing and tells the PBX to connect it to each
/// agent it is offered to (a transfer included), until it is over.
async fn dispatch(active: Active, call_id: String, resumed: bool) {
    let Active { state, contact } = &active;
    let mut lease = Lease::new(contact);
    let mut ring_claim = None;
    let start = if resumed {
        // Whose phone has it, as the dispatcher before noted it.
        let on_phone = match state.leases.get(&on_phone_key(contact)).await {
            Ok(agent) => agent.filter(|a| !a.is_empty()),
            Err(error) => {
                debug!(source = %state.name, contact_id = %contact, %error, "Could not read whose phone has the call; a transfer is dialled without transfer_from.");
                None
            }
        };
        Start::Registry { on_phone }
    } else {
        Start::NewCall
    };
    let over = follow(state, contact, &call_id, &mut lease, &mut ring_claim, start).await;
    if over {
        if let Err(error) = state.leases.remove_entry(CALLS, &contact.to_string()).await {
            debug!(source = %state.name, contact_id = %contact, %error, "Could not take an ended call out of the registry; the next look at it does.");
        }
        // Not needed once the call is over (it would lapse in a day).
        if let Err(error) = state.leases.remove(&on_phone_key(contact)).await {
            debug!(source = %state.name, contact_id = %contact, %error, "Could not remove the note of whose phone had the call; it lapses.");
        }
    }
    lease.release(state).await;
    // Claimed but not rung (stopped while the PBX refused): let it go, or
    // the instance that follows the call next finds it claimed and never
    // rings it.
    if let Some(key) = ring_claim
        && let Err(error) = state.leases.release(&key).await
    {
        debug!(source = %state.name, %error, "Could not release a ring claim; it lapses.");
    }
}

/// This instance's claim to dial a call ([`LEASE`]), so that one instance
/// dials it even when the PBX's repeated newCalls reached several.
struct Lease {
    key: String,
    held: bool,
    /// When it was last taken, renewed or tried.
    checked: Option<Instant>,
}

impl Lease {
    fn new(contact: &ContactId) -> Lease {
        Lease {
            key: format!("dispatch:{contact}"),
            held: false,
            checked: None,
        }
    }

    /// Whether this instance holds the lease, taking or renewing it when
    /// due. Not when the channel state cannot be reached.
    async fn hold(&mut self, state: &CtiState) -> bool {
        let every = if self.held { RENEW } else { RETRY };
        if self.checked.is_some_and(|at| at.elapsed() < every) {
            return self.held;
        }
        self.checked = Some(Instant::now());
        self.held = match state.leases.hold(&self.key, LEASE).await {
            Ok(held) => held,
            Err(error) => {
                debug!(source = %state.name, %error, "Could not take or renew a call's lease.");
                false
            }
        };
        self.held
    }

    async fn release(&self, state: &CtiState) {
        if self.held
            && let Err(error) = state.leases.release(&self.key).await
        {
            debug!(source = %state.name, %error, "Could not release a call's lease; it lapses.");
        }
    }
}

/// The offer standing now, as the dispatcher saw it: from the first read
/// of the call's routing that shows it offered to this agent to the first
/// that does not. Another offer to the same agent later is a new one.
struct Offer {
    agent: String,
    /// Routing's stamp of the offer (when it runs out).
    until: Option<u64>,
    /// Which offer to this agent it is, from 1 (the `Idempotency-Key`
    /// when routing gave no stamp).
    number: u32,
    /// The PBX took this dispatcher's dial of it.
    dialed: bool,
    /// Its deadline passed before it was dialled: not tried again (nor
    /// counted `too_late` again) at every poll until routing moves it on.
    late: bool,
    /// A dial of it went out and its answer was lost (a timeout): the PBX
    /// may have acted on it, and answers the next try with the same key
    /// 409 or 422. Kept with the offer, since the next try may be the
    /// assignment's (the agent answered the dial whose answer was lost).
    unsure: bool,
}

/// Follows the call until it is over, dialling each offer and each
/// assignment nobody rang. `ring_claim`: the claim to ring an assigned
/// call, while this dispatcher holds it and has not rung it yet.
///
/// A connected call is followed on (more slowly): when an agent transfers
/// it in the console, or it is requeued, the next offer or assignment is
/// dialled like the first, with `transfer_from` naming the agent whose
/// phone has the call, so that the PBX moves the caller there.
///
/// Whether an assigned call was connected is told by the `rung:` marker
/// of its assignment ([`rung_key`]), set once the PBX took a dial for it,
/// by any instance: a dispatcher started after the assignment (a `newCall`
/// the PBX repeated to another instance after the first one crashed) rings
/// an assignment without one, and leaves one with one alone.
async fn follow(
    state: &Arc<CtiState>,
    contact: &ContactId,
    call_id: &str,
    lease: &mut Lease,
    ring_claim: &mut Option<String>,
    start: Start,
) -> bool {
    let mut offer: Option<Offer> = None;
    let mut offers: HashMap<String, u32> = HashMap::new();
    let (resumed, on_phone) = match start {
        Start::NewCall => (false, None),
        Start::Registry { on_phone } => (true, on_phone),
    };
    // The assignment (agent, stamp) whose phone has the call, once it was
    // connected; the agent stays named for the dials of a transfer. Noted
    // in Redis ([`on_phone_key`]) for a dispatcher that follows the call
    // after a restart.
    let mut connected: Option<(String, Option<u64>)> = on_phone.clone().map(|a| (a, None));
    let mut noted = OnPhone {
        key: on_phone_key(contact),
        agent: on_phone,
    };
    // Between tries to ring an assigned call the PBX refused.
    let mut ring_retry = RING_RETRY_FIRST;
    // Whether routing has shown the call to this dispatcher.
    let mut known = false;
    let started = Instant::now();
    // A connected call back in a queue (transferred to one, requeued):
    // since when, and when the PBX may next be asked to take the caller
    // off the agent's phone ([`CtiConfig::release_after_secs`]).
    let mut waiting_since: Option<(Instant, u64)> = None;
    let mut release_at: Option<Instant> = None;
    let mut release_retry = RING_RETRY_FIRST;
    // A release was sent and its answer lost.
    let mut release_unsure = false;
    // Releases tried in this stay in a queue.
    let mut release_tries = 0u32;
    let mut was_leading = false;
    let mut hangup_checked: Option<Instant> = None;
    let mut hangup_seen = false;
    loop {
        if state.shutdown.is_cancelled() {
            return false;
        }
        let mut leading = lease.hold(state).await;
        if leading && hangup_checked.is_none_or(|at| at.elapsed() >= HANGUP_CHECK) {
            hangup_checked = Some(Instant::now());
            // Seen at two checks in a row: the handling of the hangup (or
            // of a newCall after it) had its time to end the call itself.
            match hung_up(state, contact, call_id).await {
                Some(Some(disposition)) => {
                    if hangup_seen && end_hung_up(state, contact, call_id, &disposition).await {
                        return true;
                    }
                    hangup_seen = true;
                }
                // The note lapsed (an hour) before the end could be made:
                // followed as routing has it.
                Some(None) => hangup_seen = false,
                None => {}
            }
        }
        if hangup_seen {
            // The caller is gone: nothing is dialled (nor released) while
            // the end is being made, by the hangup's handling or the next
            // check here; ended meanwhile, the call is no longer followed.
            match state.routing.route(contact).await {
                Ok(Some(r)) if r.state == "closed" => return true,
                Ok(None) if known => return true,
                _ => {}
            }
            if pause(state, &mut noted, leading, &connected, POLL).await {
                return false;
            }
            continue;
        }
        if leading && !was_leading {
            // Taken over (or first led): whose phone has the call, as the
            // leader before noted it, is newer than this dispatcher's view.
            // Read again at the next poll when Redis does not answer.
            match state.leases.get(&noted.key).await {
                Ok(Some(noted_agent)) => {
                    let agent = Some(noted_agent).filter(|a| !a.is_empty());
                    connected = agent.clone().map(|a| (a, None));
                    noted.agent = agent;
                    was_leading = true;
                }
                Ok(None) => was_leading = true,
                Err(error) => {
                    // Not acted on with an older view: read again first.
                    leading = false;
                    debug!(source = %state.name, %error, "Could not read whose phone has the call; will look again.");
                }
            }
        } else {
            was_leading = leading;
        }
        let route = state.routing.route(contact).await;
        known |= matches!(route, Ok(Some(_)));
        if matches!(&route, Ok(Some(r)) if r.state != "waiting") {
            if release_unsure {
                // A release whose answer was lost may have been carried
                // out: dialled again (an offer back to her included), and
                // with no transfer from a leg that may be gone.
                connected = None;
                release_unsure = false;
            }
            waiting_since = None;
            release_at = None;
            release_retry = RING_RETRY_FIRST;
            release_tries = 0;
        }
        match route {
            Ok(Some(route)) => match (route.state.as_str(), route.agent) {
                ("offered", Some(agent)) => {
                    let mut current =
                        same_offer(offer.take(), &mut offers, agent, route.offer_until);
                    if connected
                        .as_ref()
                        .is_some_and(|(on, _)| *on == current.agent)
                    {
                        // Back to the agent whose phone has the call (a
                        // requeue she is offered again): nothing to ring;
                        // her accept in the console keeps it with her.
                        current.dialed = true;
                    }
                    if !current.dialed && !current.late && leading {
                        // Another instance may have dialled this offer and
                        // handed the call over (a graceful stop hands its
                        // lease on at once): its marker says so, and the
                        // PBX is not told to ring the same offer twice.
                        let rung = match current.until {
                            Some(until) => state
                                .leases
                                .get(&rung_key(contact, &current.agent, Some(until)))
                                .await
                                .map(|marker| marker.is_some()),
                            None => Ok(false),
                        };
                        match rung {
                            Ok(true) => {
                                // Dialled by another instance: the caller
                                // is off the first agent's phone too.
                                current.dialed = true;
                                connected = None;
                            }
                            Ok(false) => {
                                let from =
                                    transfer_from(&connected, &current.agent).map(str::to_owned);
                                let dialed = tell_pbx(
                                    state,
                                    contact,
                                    call_id,
                                    &mut current,
                                    lease,
                                    Ring::Offered,
                                    from.as_deref(),
                                )
                                .await;
                                current.dialed = dialed;
                                if current.dialed {
                                    // The PBX moved the caller off the
                                    // first agent's phone: a later dial
                                    // transfers from nobody.
                                    connected = None;
                                    noted.note(state, None).await;
                                    mark_rung(state, contact, &current.agent, current.until).await;
                                } else if current.until.is_some_and(|u| {
                                    u <= switchboard_core::Timestamp::now().as_millis()
                                }) {
                                    current.late = true;
                                }
                            }
                            Err(error) => {
                                debug!(source = %state.name, %error, "Could not read whether the offer was rung; will look again.");
                            }
                        }
                    }
                    offer = Some(current);
                }
                ("assigned", Some(agent)) => {
                    if !state.config.agents.contains_key(&agent) {
                        // Nothing to ring, and never connected through this
                        // channel (whatever this dispatcher saw before):
                        // back to its queue without her (by the leading
                        // instance), and followed on.
                        if leading {
                            warn!(source = %state.name, agent_id = %agent, contact_id = %contact, "The call was assigned to an agent with no phone in this channel's configuration; it goes back to its queue.");
                            if let Err(error) = state.routing.pass(contact, &agent).await {
                                debug!(source = %state.name, %error, "Could not put the call back in its queue; will try again.");
                            }
                        }
                        offer = None;
                        if pause(state, &mut noted, leading, &connected, POLL).await {
                            return false;
                        }
                        continue;
                    }
                    // The offer this dispatcher dialled and the agent
                    // answered; or, by its marker, one another instance
                    // dialled or an assignment it rang. Otherwise nobody
                    // rang: an auto-accepting queue, an accept in the
                    // console while the PBX refused the dial, or an
                    // instance that stopped or crashed before the dial.
                    let stamp = route.stamp.or(offer.as_ref().and_then(|o| o.until));
                    let this = (agent.clone(), stamp);
                    // Still (or again) with the agent whose phone has it.
                    if connected.as_ref().is_some_and(|(on, _)| *on == agent)
                        || offer
                            .as_ref()
                            .is_some_and(|o| o.agent == agent && o.dialed && o.until == stamp)
                    {
                        connected = Some(this);
                        if pause(state, &mut noted, leading, &connected, CONNECTED_POLL).await {
                            return false;
                        }
                        continue;
                    }
                    match state.leases.get(&rung_key(contact, &agent, stamp)).await {
                        Ok(Some(_)) => {
                            connected = Some(this);
                            if pause(state, &mut noted, leading, &connected, CONNECTED_POLL).await {
                                return false;
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(error) => {
                            debug!(source = %state.name, %error, "Could not read whether the call was rung; will try again.");
                            if pause(state, &mut noted, leading, &connected, POLL).await {
                                return false;
                            }
                            continue;
                        }
                    }
                    if !leading {
                        // The leading instance rings it; should it stop,
                        // this one takes over (the ring claim below keeps
                        // it to one ring).
                        if pause(state, &mut noted, leading, &connected, POLL).await {
                            return false;
                        }
                        continue;
                    }
                    // One instance at a time; a claim whose holder crashed
                    // lapses within RING_CLAIM.
                    let claim = format!("ring:{contact}:{agent}:{}", stamp.unwrap_or(0));
                    match state.leases.hold(&claim, RING_CLAIM).await {
                        Ok(true) => {
                            // A claim for an earlier assignee (the PBX never
                            // took that dial) is given up.
                            if let Some(old) = ring_claim.replace(claim.clone())
                                && old != claim
                                && let Err(error) = state.leases.release(&old).await
                            {
                                debug!(source = %state.name, %error, "Could not release a ring claim; it lapses.");
                            }
                        }
                        Ok(false) => {
                            // Another instance rings it; should it stop,
                            // its claim lapses and this one rings it.
                            if pause(state, &mut noted, leading, &connected, POLL).await {
                                return false;
                            }
                            continue;
                        }
                        Err(error) => {
                            debug!(source = %state.name, %error, "Could not claim ringing an assigned call; will try again.");
                            if pause(state, &mut noted, leading, &connected, POLL).await {
                                return false;
                            }
                            continue;
                        }
                    }
                    let mut current = same_offer(offer.take(), &mut offers, agent, stamp);
                    let from = transfer_from(&connected, &current.agent);
                    if tell_pbx(
                        state,
                        contact,
                        call_id,
                        &mut current,
                        lease,
                        Ring::Assigned,
                        from,
                    )
                    .await
                    {
                        mark_rung(state, contact, &current.agent, stamp).await;
                        if let Some(claim) = ring_claim.take()
                            && let Err(error) = state.leases.release(&claim).await
                        {
                            debug!(source = %state.name, %error, "Could not release a ring claim; it lapses.");
                        }
                        connected = Some(this);
                        noted.note(state, Some(&current.agent)).await;
                        ring_retry = RING_RETRY_FIRST;
                        continue;
                    }
                    offer = Some(current);
                    // The PBX refused: again with backoff, not every poll.
                    if pause(state, &mut noted, leading, &connected, ring_retry).await {
                        return false;
                    }
                    ring_retry = (ring_retry * 2).min(RING_RETRY_MAX);
                    continue;
                }
                ("closed", _) => return true,
                // Waiting again: the offer, if any, is over. A connected
                // call (transferred to a queue, requeued) that still waits
                // after `release_after` is taken off the agent's phone: she is
                // free in routing, and would be rung for the next call
                // while still talking to this caller.
                (waiting, _) => {
                    offer = None;
                    let (since, period) = *waiting_since.get_or_insert_with(|| {
                        (
                            Instant::now(),
                            switchboard_core::Timestamp::now().as_millis(),
                        )
                    });
                    if waiting == "waiting"
                        && leading
                        && let Some((on, stamp)) = connected.clone()
                        && state
                            .release_after
                            .is_some_and(|after| since.elapsed() >= after)
                        && release_at.is_none_or(|at| Instant::now() >= at)
                    {
                        let tried = release_tries > 0;
                        release_tries += 1;
                        match release(state, contact, call_id, &on, (stamp, period), tried).await {
                            Released::Done => {
                                connected = None;
                                release_unsure = false;
                                noted.note(state, None).await;
                            }
                            // Still on her phone: the next dial transfers
                            // from her; not asked again while it waits.
                            Released::Refused => {
                                release_unsure = false;
                                release_at = Some(Instant::now() + Duration::from_secs(24 * 3600));
                            }
                            Released::Retry { unsure } => {
                                release_unsure |= unsure;
                                release_at = Some(Instant::now() + release_retry);
                                release_retry = (release_retry * 2).min(RING_RETRY_MAX);
                            }
                        }
                    }
                    if pause(state, &mut noted, leading, &connected, POLL).await {
                        return false;
                    }
                    continue;
                }
            },
            Ok(None) => {
                // Routing knew the call and no longer does (deleted after
                // its retention), or a call followed again from the
                // registry never shows up: nothing left to dial.
                if known || (resumed && started.elapsed() >= UNKNOWN_FOR) {
                    info!(source = %state.name, contact_id = %contact, "Routing does not know the call (any more); it is no longer followed.");
                    return true;
                }
            }
            Err(error) => {
                debug!(%error, contact_id = %contact, "Could not read the call's routing.")
            }
        }
        if pause(state, &mut noted, leading, &connected, POLL).await {
            return false;
        }
    }
}

/// The disposition of the call's hangup, when one was noted
/// ([`hangup_key`]): acted on when it came, or not (it came before the
/// `newCall` was stored and ending the call then failed, or ending it
/// failed when it came: answered 503, and a PBX does not repeat a hangup).
/// `None` when it could not be read.
async fn hung_up(state: &CtiState, contact: &ContactId, call_id: &str) -> Option<Option<String>> {
    for key in [hangup_key(call_id), contact_hangup_key(contact)] {
        match state.leases.get(&key).await {
            Ok(Some(disposition)) => return Some(Some(disposition)),
            Ok(None) => {}
            Err(error) => {
                debug!(source = %state.name, contact_id = %contact, %error, "Could not read whether the call was hung up; will look again.");
                return None;
            }
        }
    }
    Some(None)
}

/// Ends a call that was hung up ([`hung_up`]); true once routing has it
/// ended.
async fn end_hung_up(
    state: &CtiState,
    contact: &ContactId,
    call_id: &str,
    disposition: &str,
) -> bool {
    match state.routing.end(contact, disposition).await {
        // Ended by the hangup's own handling: nothing more to count.
        Ok(outcome) if outcome == "already_closed" => true,
        Ok(outcome) => {
            counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "ended_after_hangup")
                .increment(1);
            info!(source = %state.name, contact_id = %contact, call_id = %call_id, outcome = %outcome, "A call whose hangup was not acted on when it came is ended.");
            true
        }
        Err(error) => {
            debug!(source = %state.name, contact_id = %contact, %error, "Could not end a call that was hung up; will try again.");
            false
        }
    }
}

/// The agent whose phone has the call, for a dial of it to `to`: none
/// before it was connected, nor when it goes back to the same agent (the
/// caller is on her phone already; a transfer to herself would hang her
/// leg up).
fn transfer_from<'a>(connected: &'a Option<(String, Option<u64>)>, to: &str) -> Option<&'a str> {
    connected
        .as_ref()
        .map(|(from, _)| from.as_str())
        .filter(|from| *from != to)
}

/// Notes whose phone has the call (the leader only: a follower's view may
/// be older), then waits `pause`; true when the channel began to shut
/// down meanwhile. Noted before every wait, so that a stop during it
/// leaves the note current.
async fn pause(
    state: &CtiState,
    noted: &mut OnPhone,
    leading: bool,
    connected: &Option<(String, Option<u64>)>,
    pause: Duration,
) -> bool {
    if leading {
        noted
            .note(state, connected.as_ref().map(|(agent, _)| agent.as_str()))
            .await;
    }
    stopped_during(state, pause).await
}

/// Waits `pause`; true when the channel began to shut down meanwhile.
async fn stopped_during(state: &CtiState, pause: Duration) -> bool {
    tokio::select! {
        () = state.shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// The marker that the PBX took a dial of `agent` for the offer or
/// assignment stamped `stamp` (routing's stamp; 0 without one).
fn rung_key(contact: &ContactId, agent: &str, stamp: Option<u64>) -> String {
    format!("rung:{contact}:{agent}:{}", stamp.unwrap_or(0))
}

/// Notes that the PBX took a dial of `agent` for the offer or assignment
/// `stamp`, trying for up to [`MARK_TRIES`] polls (while this dispatcher
/// still holds the call's lease and claim, so no other dials meanwhile).
/// A failure after that is logged and counted: a dispatcher that follows
/// the call later may dial it again, with the same `Idempotency-Key`.
async fn mark_rung(state: &CtiState, contact: &ContactId, agent: &str, stamp: Option<u64>) {
    let key = rung_key(contact, agent, stamp);
    for _ in 0..MARK_TRIES {
        let marked = match state.leases.set_for(&key, "1", RUNG_MEMORY).await {
            Ok(()) => {
                state
                    .leases
                    .set_for(&dialled_key(contact, agent), "1", RUNG_MEMORY)
                    .await
            }
            Err(error) => Err(error),
        };
        match marked {
            Ok(()) => return,
            Err(error) => {
                debug!(source = %state.name, contact_id = %contact, %error, "Could not note that the call was rung; trying again.");
            }
        }
        if stopped_during(state, POLL).await {
            break;
        }
    }
    counter!("switchboard_voice_callbacks_total", "source" => state.name.clone(),
        "outcome" => "unmarked")
    .increment(1);
    warn!(source = %state.name, contact_id = %contact, agent_id = %agent, "Could not note that the call was rung; a dispatcher that follows it later may dial it again (with the same Idempotency-Key).");
}

/// `previous` when it is the offer to `agent` stamped `until`; a new offer
/// (numbered per agent) otherwise.
fn same_offer(
    previous: Option<Offer>,
    offers: &mut HashMap<String, u32>,
    agent: String,
    until: Option<u64>,
) -> Offer {
    match previous {
        // The same offer: same agent, same stamp (a new offer to the same
        // agent within one poll has another).
        Some(o) if o.agent == agent && o.until == until => o,
        _ => {
            let number = offers.entry(agent.clone()).or_default();
            *number += 1;
            Offer {
                agent,
                until,
                number: *number,
                dialed: false,
                late: false,
                unsure: false,
            }
        }
    }
}

/// What a dial is for: an offer standing (the phone rings no longer than
/// it), or a call already assigned to the agent (no limit from routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ring {
    Offered,
    Assigned,
}

/// Whether the PBX's answer to a dial callback says no for good: a 4xx
/// other than those that ask to come back (408 timeout, 425 too early,
/// 429 too many) and those an idempotent endpoint gives a repeated key (409
/// the first try is still in flight; 422 the first try was taken with
/// another body: each try carries the ring time left, so the phone may be
/// ringing already and passing the call on would ring a second one).
///
/// A redirect is one too: redirects are not followed (`callback_url` must
/// name the endpoint itself), and asking again gets the same answer.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_redirection()
        || (status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 422 | 425 | 429))
}

/// What an idempotent endpoint answers a key it saw before (409: that try
/// is still in flight; 422: it was taken with another body).
fn repeated_key(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 409 | 422)
}

/// What became of asking the PBX to release an agent's leg.
enum Released {
    /// The PBX took it: the caller is held by the PBX.
    Done,
    /// Refused for good (a PBX without the action): the caller stays with
    /// the agent, as before; not asked again for this call.
    Refused,
    /// Not taken: asked again later. `unsure`: the request went out and
    /// its answer was lost (it may have been carried out).
    Retry { unsure: bool },
}

/// POSTs `{"action":"release"}` for `agent`'s leg of the call: the PBX
/// hangs it up and holds the caller (as for a late answer).
async fn release(
    state: &CtiState,
    contact: &ContactId,
    call_id: &str,
    agent: &str,
    (stamp, period): (Option<u64>, u64),
    tried: bool,
) -> Released {
    let body = serde_json::json!({
        "action": "release",
        "callId": call_id,
        "agent": agent,
        "contact_id": contact.to_string(),
    });
    // One key per stay in the queue (when this dispatcher saw it begin),
    // so that a second release of the same agent is not taken for a
    // repeat of the first.
    let key = format!("release:{contact}:{agent}:{}:{period}", stamp.unwrap_or(0));
    let sent = tokio::select! {
        () = state.shutdown.cancelled() => return Released::Retry { unsure: false },
        sent = state
            .client
            .post(&state.config.callback_url)
            .bearer_auth(state.callback_token.expose())
            .header("idempotency-key", &key)
            .json(&body)
            .send() => sent,
    };
    let status = sent.as_ref().map(|r| r.status()).ok();
    let (released, outcome) = match status {
        Some(s) if s.is_success() => (Released::Done, "released"),
        // What an idempotent endpoint answers a repeated key: the first
        // try was taken. To a first try, a passing refusal.
        Some(s) if repeated_key(s) && tried => (Released::Done, "released"),
        Some(s) if repeated_key(s) => (Released::Retry { unsure: false }, "retry"),
        Some(s) if refused_for_good(s) => (Released::Refused, "release_refused"),
        Some(_) => (Released::Retry { unsure: false }, "retry"),
        None => {
            let unsure = sent.as_ref().err().is_some_and(|e| !e.is_connect());
            (Released::Retry { unsure }, "retry")
        }
    };
    counter!("switchboard_voice_callbacks_total", "source" => state.name.clone(), "outcome" => outcome)
        .increment(1);
    match released {
        Released::Done => {
            info!(source = %state.name, contact_id = %contact, agent_id = %agent, "The call waits in a queue; the PBX holds the caller and freed the agent's phone.");
        }
        Released::Refused => {
            warn!(source = %state.name, contact_id = %contact, agent_id = %agent, status = status.map(|s| s.as_u16()).unwrap_or_default(),
                "The PBX refused to release the agent's leg of a call back in its queue; the caller stays with her until the call is offered again.");
        }
        Released::Retry { .. } => {
            debug!(source = %state.name, contact_id = %contact, agent_id = %agent, "The PBX did not take the release; will ask again.");
        }
    }
    released
}

/// POSTs the dial instruction, retrying with backoff while the PBX does not
/// answer 2xx (a 4xx that is no for good passes the call to the next
/// agent instead), the call stays offered to the agent and this instance holds
/// the call's lease. True once the PBX took it. An offer whose deadline
/// has passed is not dialled: it lapses to the next agent, whose phone
/// would ring while this one still did.
async fn tell_pbx(
    state: &CtiState,
    contact: &ContactId,
    call_id: &str,
    offer: &mut Offer,
    lease: &mut Lease,
    ring: Ring,
    transfer_from: Option<&str>,
) -> bool {
    // Read out, so that `offer.unsure` can be noted on the way.
    let (agent, until, number) = (offer.agent.clone(), offer.until, offer.number);
    let agent = agent.as_str();
    let Some(endpoint) = state.config.agents.get(agent) else {
        warn!(source = %state.name, agent_id = %agent, "The agent has no phone in this channel's configuration; the offer is passed on.");
        if let Err(error) = state.routing.pass(contact, agent).await {
            warn!(source = %state.name, agent_id = %agent, %error, "Could not pass the offer on; it lapses.");
        }
        return false;
    };
    // The phone rings no longer than the offer lasts (whole seconds left,
    // one kept back, at least one): an answer after it would find the call
    // offered to the next agent. Worked out again for every try; `None`
    // once the offer's deadline has passed.
    let ring_timeout = || {
        let now = switchboard_core::Timestamp::now().as_millis();
        match (ring, until) {
            (Ring::Offered, Some(until)) if until <= now => None,
            (Ring::Offered, Some(until)) => {
                Some(crate::twilio_channel::ring_left(until, now).map(|s| s.max(1)))
            }
            _ => Some(None),
        }
    };
    let body = |ring_timeout: Option<u32>| {
        let mut body = serde_json::json!({
            "action": "dial",
            "callId": call_id,
            "number": endpoint,
            "agent": agent,
            "contact_id": contact.to_string(),
        });
        if let Some(secs) = ring_timeout {
            body["ring_timeout"] = secs.into();
        }
        if let Some(from) = transfer_from {
            body["transfer_from"] = from.into();
        }
        body
    };
    // Each offer has a key of its own, the same on every instance and
    // across restarts: routing's stamp of the offer (a count kept here
    // started again after a restart, and a PBX that honours the key took a
    // new offer for one it had dialled). Without a stamp, the count.
    let key = match until {
        Some(until) => format!("dial:{contact}:{agent}:{until}"),
        None => format!("dial:{contact}:{agent}:n{number}"),
    };
    let mut delay = RING_RETRY_FIRST;
    loop {
        let Some(ring_timeout) = ring_timeout() else {
            counter!("switchboard_voice_callbacks_total", "source" => state.name.clone(),
                "outcome" => "too_late")
            .increment(1);
            debug!(source = %state.name, contact_id = %contact, agent_id = %agent, "The offer's time is up; it lapses to the next agent.");
            return false;
        };
        let sent = tokio::select! {
            () = state.shutdown.cancelled() => return false,
            sent = state
                .client
                .post(&state.config.callback_url)
                .bearer_auth(state.callback_token.expose())
                .header("idempotency-key", &key)
                .json(&body(ring_timeout))
                .send() => sent,
        };
        // A repeated key after a lost answer: the first try was taken (the
        // phone may be ringing), as `release` takes it. Dialled again, the
        // answer would be the same until the offer ran out, and an
        // assigned call would be dialled every few seconds for its length.
        let ok = matches!(&sent, Ok(r) if r.status().is_success()
            || (offer.unsure && repeated_key(r.status())));
        let refused = matches!(&sent, Ok(r) if refused_for_good(r.status()));
        offer.unsure |= sent.as_ref().err().is_some_and(|e| !e.is_connect());
        // Our credentials refused: no call of this channel can be
        // connected, whichever agent it goes to.
        let unauthorized = matches!(&sent, Ok(r) if matches!(r.status().as_u16(), 401 | 403));
        let outcome = match (ok, refused, unauthorized) {
            (true, _, _) => "delivered",
            (_, true, true) => "unauthorized",
            (_, true, false) => "refused",
            _ => "retry",
        };
        counter!("switchboard_voice_callbacks_total", "source" => state.name.clone(),
            "outcome" => outcome)
        .increment(1);
        if ok {
            info!(source = %state.name, contact_id = %contact, agent_id = %agent, "The PBX was told to connect the call.");
            return true;
        }
        if refused {
            // Asking again gets the same answer (a wrong callback_token, a
            // dead path, an agent the PBX will not ring): the call goes to
            // the next agent, with this one left out of it, as when she has
            // no phone here. Not counted as a miss of hers.
            let status = sent
                .as_ref()
                .map(|r| r.status().as_u16())
                .unwrap_or_default();
            if unauthorized {
                // Every call now goes from agent to agent until its caller
                // hangs up: an outage of the channel, logged as one (once
                // a minute), not as one agent's trouble.
                match state.unauthorized.admit() {
                    Some(left_out) => {
                        tracing::error!(source = %state.name, contact_id = %contact, status, left_out,
                        "The PBX refused our credentials on a dial callback: no call of this channel can be connected. Check callback_token (or token) against the PBX's side.")
                    }
                    None => {
                        debug!(source = %state.name, contact_id = %contact, status, "The PBX refused our credentials again.")
                    }
                }
            } else {
                warn!(source = %state.name, contact_id = %contact, agent_id = %agent, status,
                    "The PBX refused the dial callback for good (a 4xx, or a redirect); the call is passed to the next agent. Check callback_url and callback_token.");
            }
            if let Err(error) = state.routing.pass(contact, agent).await {
                warn!(source = %state.name, agent_id = %agent, %error, "Could not pass the call on; it is tried again.");
            }
            return false;
        }
        match sent {
            Ok(r) => {
                debug!(source = %state.name, status = %r.status(), "The PBX refused the callback; retrying.")
            }
            Err(e) => {
                debug!(source = %state.name, error = %e.without_url(), "The PBX callback failed; retrying.")
            }
        }
        if stopped_during(state, delay).await {
            return false;
        }
        delay = (delay * 2).min(RING_RETRY_MAX);
        // Retry only while the call is still offered to this agent, and
        // this instance still holds its lease.
        if !lease.hold(state).await {
            return false;
        }
        match state.routing.route(contact).await {
            // Only while offered: once assigned the agent may be on the
            // call already (a dial that timed out after the PBX acted on
            // it); an assignment nobody rang is dialled by `follow`.
            Ok(Some(r)) if r.state == "offered" && r.agent.as_deref() == Some(agent) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
#[path = "cti_tests.rs"]
mod tests;
