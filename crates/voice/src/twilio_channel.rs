//! `[[channels]] type = "twilio"`: calls to a Twilio number, routed like
//! every other contact. Twilio requests our URLs (each signed with
//! `X-Twilio-Signature` over `public_url` + path + query and the form
//! parameters; refused with 403 otherwise) and we answer with TwiML:
//!
//! - `POST /incoming` (the number's voice webhook): a blocked caller is
//!   rejected; anyone else becomes a voice contact (stored before we answer)
//!   and hears the hold message, then a pause and a redirect to `/wait`.
//! - `POST /wait?contact=ID`: while the contact waits, more hold; once it is
//!   offered to an agent, `<Dial>` to the agent's endpoint (SIP URI, number
//!   or client) with the ring timeout, the noun's `url` asking `/bridge`
//!   when the agent picks up, the agent's leg reported to `/agent` and the
//!   outcome to `/dialed`.
//! - `POST /bridge?contact=ID&agent=A` (the agent picked up): the offer is
//!   accepted and the agent connected, or, the call no longer hers, her
//!   leg hung up. (`/agent` acts only for dials from before the bridge.)
//! - `POST /dialed?contact=ID&agent=A` (the `<Dial>` action): answered and
//!   over, the contact is closed (the agent enters wrap-up) and the call
//!   hung up; not answered, the offer counts as missed, goes to the next
//!   agent, and the caller holds again (docs/voice.md has every case).
//! - `POST /status` (the number's status callback): a call that ends while
//!   waiting or offered is *abandoned* (never offered again); one that ends
//!   while connected is closed.
//!
//! Routing's answer is the truth: the adapter keeps no call state of its
//! own, so any instance can serve any request of a call. It only notes
//! when Twilio last asked about each caller, to end the calls whose final
//! status was lost ([`lost`]).

mod lost;

use crate::config_error;
use crate::{
    CallEvent, CallEventKind, DialOptions, Direction, Hold, Provider, RejectReason, Target,
    TwilioCall, inbound_event, parse_form, parse_twilio, twiml_connect, twiml_hangup,
    twiml_proceed, twiml_reject, verify_twilio_signature,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use metrics::counter;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, ChannelState, Intake, Routing,
    Secret, SecretValue,
};
use switchboard_core::{ChannelKind, ContactId, IntakeError, Timestamp};
use tracing::{debug, info, warn};

/// `[[channels]] type = "twilio"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub name: String,
    /// The account's auth token: the key of `X-Twilio-Signature`.
    pub auth_token: Secret,
    /// The URL Twilio reaches this channel at (through the reverse proxy),
    /// e.g. `https://switchboard.example.com/channels/phone`: signatures
    /// cover it, and our TwiML points Twilio back to it.
    pub public_url: String,
    /// Said once when the caller is put on hold.
    #[serde(default = "default_hold_message")]
    pub hold_message: String,
    /// `<Say language>` of the hold message, e.g. `uk-UA`.
    #[serde(default)]
    pub hold_language: Option<String>,
    /// Hold music (an absolute URL of an audio file); silence without it.
    #[serde(default)]
    pub hold_music_url: Option<String>,
    /// How often a waiting call asks again whether an agent is chosen.
    #[serde(default = "default_hold_pause")]
    pub hold_pause_secs: u32,
    /// How long an agent's phone rings before the call goes to the next.
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_secs: u32,
    /// Each agent's phone: `sip:…`, `client:…` or a number.
    #[serde(default)]
    pub agents: BTreeMap<String, String>,
    /// Callers rejected outright.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// How long after its start an instance ends no call whose caller gave
    /// no sign of life ([`lost`]): during a rolling upgrade, instances of
    /// an older version write none. 0 for a single instance.
    #[serde(default = "default_lost_calls_grace")]
    pub lost_calls_grace_secs: u64,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        // The URLs without their query or user info: a hold music URL is
        // often a presigned one.
        let TwilioConfig {
            name,
            auth_token,
            public_url,
            hold_message,
            hold_language,
            hold_music_url,
            hold_pause_secs,
            ring_timeout_secs,
            agents,
            blocked,
            lost_calls_grace_secs,
        } = self;
        let redact = switchboard_channel::net::redact_url_all;
        f.debug_struct("TwilioConfig")
            .field("name", name)
            .field("auth_token", auth_token)
            .field("public_url", &redact(public_url))
            .field("hold_message", hold_message)
            .field("hold_language", hold_language)
            .field("hold_music_url", &hold_music_url.as_deref().map(redact))
            .field("hold_pause_secs", hold_pause_secs)
            .field("ring_timeout_secs", ring_timeout_secs)
            .field("agents", agents)
            .field("blocked", blocked)
            .field("lost_calls_grace_secs", lost_calls_grace_secs)
            .finish()
    }
}

fn default_lost_calls_grace() -> u64 {
    3600
}

/// A generous guess at how long Twilio takes to say `message`: 12
/// characters a second (its voices speak about 14).
fn say_secs(message: &str) -> u64 {
    (message.trim().chars().count() as u64).div_ceil(12)
}

fn default_hold_message() -> String {
    "Thank you for calling. Please hold; the next available agent will answer.".into()
}

fn default_hold_pause() -> u32 {
    5
}

fn default_ring_timeout() -> u32 {
    20
}

impl ChannelConfig for TwilioConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn finds_contacts_by_provider_id(&self) -> bool {
        // A call's later events name it by its call id.
        true
    }

    fn offer_time(&self) -> Option<(ChannelKind, &'static str, std::time::Duration)> {
        // The next /wait comes up to one hold pause after the offer (the
        // first, at a new call's /incoming, after the hold message too:
        // an offer made at once finds the caller listening to it), and
        // the phone must then ring at least MIN_RING_SECS with a second
        // kept back for the answer (`ring_left`), and one to spare.
        Some((
            ChannelKind::Voice,
            "hold_pause_secs and hold_message",
            std::time::Duration::from_secs(
                u64::from(self.hold_pause_secs)
                    + say_secs(&self.hold_message)
                    + u64::from(MIN_RING_SECS)
                    + 2,
            ),
        ))
    }

    fn validate(&self) -> Result<(), ChannelError> {
        if self.auth_token.resolve()?.expose().len() < 16 {
            return Err(config_error(
                &self.name,
                "auth_token",
                "must be at least 16 characters",
            ));
        }
        let url_ok = url::Url::parse(&self.public_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none());
        if !url_ok || self.public_url.ends_with('/') {
            return Err(config_error(
                &self.name,
                "public_url",
                "must be an http(s) URL without a query or a trailing slash",
            ));
        }
        if !(1..=60).contains(&self.hold_pause_secs) {
            return Err(config_error(
                &self.name,
                "hold_pause_secs",
                "must be 1 to 60",
            ));
        }
        if !(5..=120).contains(&self.ring_timeout_secs) {
            return Err(config_error(
                &self.name,
                "ring_timeout_secs",
                "must be 5 to 120",
            ));
        }
        if self.lost_calls_grace_secs > 86_400 {
            return Err(config_error(
                &self.name,
                "lost_calls_grace_secs",
                "must be at most 86400",
            ));
        }
        // Every endpoint and the hold TwiML are checked by building them.
        let probe = format!("{}/wait", self.public_url);
        for (agent, endpoint) in &self.agents {
            twiml_connect(
                &Target::from_endpoint(endpoint),
                &DialOptions {
                    ring_timeout_secs: self.ring_timeout_secs,
                    action_url: &probe,
                    status_url: Some(&probe),
                    answer_url: Some(&probe),
                    caller_id: None,
                },
            )
            .map_err(|e| config_error(&self.name, &format!("agents.{agent}"), &e.to_string()))?;
        }
        self.hold(&probe, true)
            .to_twiml()
            .map_err(|e| config_error(&self.name, "hold", &e.to_string()))?;
        Ok(())
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.validate()?;
        let blocked = crate::phone::blocked_set(&self.blocked);
        let state = Arc::new(TwilioState {
            name: ctx.name.clone(),
            token: self.auth_token.resolve()?,
            config: self.clone(),
            blocked,
            intake: ctx.intake.clone(),
            routing: ctx.routing.clone(),
            memory: ctx.state.clone(),
        });
        Ok(Box::new(TwilioChannel { state, ctx }))
    }
}

impl TwilioConfig {
    fn hold<'a>(&'a self, redirect: &'a str, first: bool) -> Hold<'a> {
        Hold {
            message: if first { &self.hold_message } else { "" },
            language: self.hold_language.as_deref(),
            music_url: self.hold_music_url.as_deref(),
            pause_secs: self.hold_pause_secs,
            redirect_url: redirect,
        }
    }
}

#[derive(Debug)]
struct TwilioState {
    name: String,
    token: SecretValue,
    config: TwilioConfig,
    blocked: HashSet<String>,
    intake: Arc<dyn Intake>,
    routing: Arc<dyn Routing>,
    /// The channel's notes in Redis: hangups of calls not stored yet
    /// (`hungup:<CallSid>`), bridged dials (`bridged:`), the calls held
    /// and their signs of life, and the lost-call watcher's lease
    /// ([`lost`]).
    memory: Arc<dyn ChannelState>,
}

/// How long the end of a call not (yet) stored is remembered for its
/// `/incoming`, should that finish after it.
const HANGUP_MEMORY: std::time::Duration = std::time::Duration::from_secs(3600);

fn hangup_key(call_sid: &str) -> String {
    format!("hungup:{call_sid}")
}

/// How long the mark of a bridged call is kept: longer than any call.
const BRIDGED_MEMORY: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The mark `/bridge` leaves when it connects `agent` to the caller of
/// `contact`: `/dialed` ends an answered call as `completed` only with it.
fn bridged_key(contact: &ContactId, agent: &str) -> String {
    format!("bridged:{contact}:{agent}")
}

/// Whether our URL belongs to a dial that asks `/bridge` before connecting
/// (`b=1`); dials made before the bridge existed do not.
fn bridged_dial(uri: &axum::http::Uri) -> bool {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).any(|(k, v)| k == "b" && v == "1")
}

fn memory_unavailable(e: switchboard_channel::StateError) -> Refusal {
    Refusal::Unavailable(e.to_string())
}

struct TwilioChannel {
    state: Arc<TwilioState>,
    ctx: ChannelContext,
}

impl ChannelAdapter for TwilioChannel {
    fn routes(&self) -> Option<Router> {
        Some(crate::limit::limit_bodies(
            Router::new()
                .route("/incoming", post(incoming))
                .route("/wait", post(wait))
                .route("/agent", post(agent_leg))
                .route("/bridge", post(bridge))
                .route("/dialed", post(dialed))
                .route("/status", post(status))
                .with_state(self.state.clone()),
            &self.state.name,
            endpoint_of,
        ))
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        let shutdown = self.ctx.shutdown.clone();
        Box::pin(async move {
            let grace = std::time::Duration::from_secs(self.state.config.lost_calls_grace_secs);
            lost::watch(self.state.clone(), shutdown, grace).await;
            Ok(())
        })
    }
}

/// The endpoint a request path names, as the requests are counted.
fn endpoint_of(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("incoming") => "incoming",
        Some("wait") => "wait",
        Some("agent") => "agent",
        Some("bridge") => "bridge",
        Some("dialed") => "dialed",
        Some("status") => "status",
        _ => "other",
    }
}

/// Why a request was not served.
enum Refusal {
    Signature(String),
    Bad(String),
    Unavailable(String),
}

impl From<IntakeError> for Refusal {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(e) => Refusal::Bad(e.to_string()),
            other => Refusal::Unavailable(other.to_string()),
        }
    }
}

type Served = Result<Response, Refusal>;

fn twiml(xml: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"))],
        xml,
    )
        .into_response()
}

fn empty() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

impl TwilioState {
    /// Checks the signature and reads the call. `path_and_query` is the part
    /// of the URL after the channel's prefix, exactly as requested.
    fn read(
        &self,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(TwilioCall, Vec<(String, String)>), Refusal> {
        let params = parse_form(body).map_err(|e| Refusal::Bad(e.to_string()))?;
        // The router strips the channel's prefix; the public URL stands for it.
        let path = uri.path();
        let suffix = path
            .strip_prefix(&format!("/channels/{}", self.name))
            .unwrap_or(path);
        let url = match uri.query() {
            Some(q) => format!("{}{suffix}?{q}", self.config.public_url),
            None => format!("{}{suffix}", self.config.public_url),
        };
        let signature = headers
            .get(crate::verify::TWILIO_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        verify_twilio_signature(self.token.expose().as_bytes(), &url, &params, signature)
            .map_err(|e| Refusal::Signature(e.to_string()))?;
        let call = parse_twilio(&params).map_err(|e| Refusal::Bad(e.to_string()))?;
        Ok((call, params))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url)
    }

    fn hold(&self, contact: &ContactId, first: bool) -> Served {
        let redirect = self.url(&format!("/wait?contact={contact}"));
        self.config
            .hold(&redirect, first)
            .to_twiml()
            .map(twiml)
            .map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    /// Holds a caller whose contact is stored while routing cannot be
    /// asked (Redis away): Twilio does not retry a redirect or a `<Dial
    /// action>` that fails, it plays its error message and ends the call.
    /// Counted; the next `/wait` asks again.
    fn hold_through(&self, endpoint: &'static str, contact: &ContactId, error: Refusal) -> Served {
        let Refusal::Unavailable(error) = error else {
            return Err(error);
        };
        counter!("switchboard_voice_held_unavailable_total",
            "source" => self.name.clone(), "endpoint" => endpoint)
        .increment(1);
        warn!(source = %self.name, endpoint, contact_id = %contact, %error, "Routing is unavailable; the caller is held and asked again.");
        self.hold(contact, false)
    }

    fn answer(&self, endpoint: &'static str, result: Served) -> Response {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Refusal::Signature(_)) => "bad_signature",
            Err(Refusal::Bad(_)) => "bad_request",
            Err(Refusal::Unavailable(_)) => "unavailable",
        };
        counter!("switchboard_voice_requests_total",
            "source" => self.name.clone(), "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
        match result {
            Ok(response) => response,
            Err(Refusal::Signature(e)) => {
                // Anyone can send these: one line a minute at warn.
                static BAD_SIGNATURES: switchboard_channel::logs::LogThrottle =
                    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));
                switchboard_channel::warn_throttled!(BAD_SIGNATURES, source = %self.name, endpoint, error = %e, "Twilio request refused: bad signature.");
                (StatusCode::FORBIDDEN, e).into_response()
            }
            Err(Refusal::Bad(e)) => {
                debug!(source = %self.name, endpoint, error = %e, "Twilio request refused.");
                (StatusCode::BAD_REQUEST, e).into_response()
            }
            Err(Refusal::Unavailable(e)) => {
                warn!(source = %self.name, endpoint, error = %e, "Twilio request not served; Twilio will retry or play its fallback.");
                (StatusCode::SERVICE_UNAVAILABLE, e).into_response()
            }
        }
    }

    /// The contact of the caller's call `call_sid` from `from` to `to`.
    async fn contact_of(&self, call: &TwilioCall) -> Result<Option<ContactId>, Refusal> {
        let Some(event) = self.as_new_call(call) else {
            return Ok(None);
        };
        Ok(self
            .intake
            .lookup(&self.name, &event.customer, &call.call_sid)
            .await?
            .map(|r| r.contact_id))
    }

    /// Whether the call's caller is one `/incoming` rejects (`blocked`).
    fn blocked(&self, call: &TwilioCall) -> bool {
        self.as_new_call(call)
            .is_some_and(|event| self.blocked.contains(&event.customer.value))
    }

    /// The call as `/incoming` stored it (or would have).
    fn as_new_call(&self, call: &TwilioCall) -> Option<switchboard_core::InboundEvent> {
        let ringing = CallEvent {
            provider: Provider::Twilio,
            call_id: call.call_sid.clone(),
            kind: CallEventKind::Ringing {
                from: call.from.clone(),
                to: call.to.clone(),
                direction: Direction::Inbound,
                caller_name: None,
                queue: None,
            },
            sequence: None,
            at: None,
        };
        inbound_event(&ringing, &self.name).ok()
    }
}

/// The `offer` stamp a dial's result URL carries, when routing has another
/// offer standing for the same agent now (a late result of an earlier
/// offer); `None` when it is the current offer or cannot be told.
async fn stale_offer(
    state: &TwilioState,
    uri: &axum::http::Uri,
    contact: &ContactId,
    agent: &str,
) -> Result<Option<u64>, Refusal> {
    let stamp = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "offer")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .filter(|s| *s > 0);
    let Some(stamp) = stamp else {
        return Ok(None);
    };
    let route = state.routing.route(contact).await?;
    Ok(route
        .filter(|r| r.state == "offered" && r.agent.as_deref() == Some(agent))
        .and_then(|r| r.offer_until)
        .filter(|now| *now != stamp)
        .map(|_| stamp))
}

/// The contact (and agent) our own URLs carry in their query (signed by
/// Twilio with the rest of the URL).
fn query(uri: &axum::http::Uri) -> Result<(ContactId, Option<String>), Refusal> {
    let mut contact = None;
    let mut agent = None;
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "contact" => contact = Some(v.into_owned()),
            "agent" => agent = Some(v.into_owned()),
            _ => {}
        }
    }
    let contact = contact
        .ok_or_else(|| Refusal::Bad("contact: missing".into()))?
        .parse()
        .map_err(|_| Refusal::Bad("contact: not a contact id".into()))?;
    Ok((contact, agent))
}

async fn incoming(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (call, _) = state.read(&uri, &headers, &body)?;
        let event = call
            .call_event()
            .ok_or_else(|| Refusal::Bad("not a new call".into()))?;
        let inbound = inbound_event(&event, &state.name).map_err(|e| Refusal::Bad(e.to_string()))?;
        if state.blocked.contains(&inbound.customer.value) {
            info!(source = %state.name, call_id = %call.call_sid, "Blocked caller rejected.");
            counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "blocked")
                .increment(1);
            return Ok(twiml(twiml_reject(RejectReason::Rejected)));
        }
        let receipt = state.intake.submit(inbound).await?;
        // The caller hung up while this was being stored, and the final
        // status came first and found nothing: the call is over, not
        // routed. (It waited for ever: offered to agent after agent, none
        // rung, each a missed offer.)
        // The call is stored: from here a 503 would strand it (Twilio
        // does not retry /incoming; it plays its error and hangs up, and
        // routing offers a call nobody holds). Redis failing now, the
        // caller is held: a caller still there is dialled from the hold
        // loop; one gone has their final /status end the contact, unless
        // that /status came first and it was ending the contact that failed
        // (then it waits, offered in vain, as after the 503 before).
        let hung_up = async {
            let Some(cause) = state
                .memory
                .get(&hangup_key(&call.call_sid))
                .await
                .map_err(memory_unavailable)?
            else {
                return Ok(None);
            };
            state
                .routing
                .end(&receipt.contact_id, &cause)
                .await
                .map(Some)
                .map_err(Refusal::from)
        }
        .await;
        match hung_up {
            Ok(Some(outcome)) => {
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "hung_up_first")
                    .increment(1);
                info!(source = %state.name, call_id = %call.call_sid, contact_id = %receipt.contact_id, outcome = %outcome, "A call whose end came before it was stored is ended.");
                return Ok(twiml(twiml_hangup()));
            }
            Ok(None) => {}
            Err(Refusal::Unavailable(error)) => {
                counter!("switchboard_voice_held_unavailable_total",
                    "source" => state.name.clone(), "endpoint" => "incoming")
                .increment(1);
                warn!(source = %state.name, contact_id = %receipt.contact_id, %error, "Cannot read or act on whether a stored call ended already; the caller is held.");
            }
            Err(other) => return Err(other),
        }
        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "queued")
            .increment(1);
        info!(source = %state.name, call_id = %call.call_sid, contact_id = %receipt.contact_id, "Call queued.");
        state.seen(&receipt.contact_id).await;
        state.hold(&receipt.contact_id, true)
    }
    .await;
    state.answer("incoming", result)
}

async fn wait(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        state.read(&uri, &headers, &body)?;
        let (contact, _) = query(&uri)?;
        // The sign of life along with routing's answer, not before it.
        let ((), served) = tokio::join!(state.seen(&contact), wait_for(&state, &contact));
        served.or_else(|e| state.hold_through("wait", &contact, e))
    }
    .await;
    state.answer("wait", result)
}

/// What a held caller's `/wait` does next: dial the agent the call is
/// offered or assigned to, hang up a closed call, or hold on.
async fn wait_for(state: &TwilioState, contact: &ContactId) -> Served {
    let contact = *contact;
    let route = state.routing.route(&contact).await?;
    let (Some(route_state), agent) = (
        route.as_ref().map(|r| r.state.as_str()),
        route.as_ref().and_then(|r| r.agent.clone()),
    ) else {
        // Not handed to routing yet: hold.
        return state.hold(&contact, false);
    };
    // Routing's stamp: an offer's deadline, kept by the assignment it
    // became (an assigned call's dial carried 0, so a late "no answer" of
    // it could not be told from one of a newer offer to the same agent).
    let offer = route.as_ref().and_then(|r| r.stamp).unwrap_or(0);
    match (route_state, agent) {
        ("offered" | "assigned", Some(agent)) => {
            // The phone rings no longer than the offer lasts: an answer
            // after its deadline would find the call offered to the
            // next agent (the hold before this dial, a message or
            // music, ate into the offer's time).
            let ring = match (route_state, ring_left(offer, Timestamp::now().as_millis())) {
                ("offered", Some(left)) if left < MIN_RING_SECS => {
                    debug!(source = %state.name, contact_id = %contact, agent_id = %agent, "Too little of the offer is left to ring; holding until it is passed on.");
                    return state.hold(&contact, false);
                }
                ("offered", Some(left)) => state.config.ring_timeout_secs.min(left),
                _ => state.config.ring_timeout_secs,
            };
            let Some(endpoint) = state.config.agents.get(&agent) else {
                warn!(source = %state.name, agent_id = %agent, "The agent has no phone in this channel's configuration; the offer is passed on.");
                state.routing.pass(&contact, &agent).await?;
                return state.hold(&contact, false);
            };
            // The offer's stamp comes back with the dial's result, so
            // that a late "no answer" of an earlier offer to the same
            // agent is not taken for this one's.
            // `b=1`: this dial asks `/bridge` before connecting, so only
            // the bridge accepts the offer (see `agent_leg`, `answered`).
            let action = state.url(&format!(
                "/dialed?contact={contact}&agent={agent}&offer={offer}&b=1"
            ));
            let status = state.url(&format!("/agent?contact={contact}&agent={agent}&b=1"));
            let answer = state.url(&format!("/bridge?contact={contact}&agent={agent}&b=1"));
            debug!(source = %state.name, contact_id = %contact, agent_id = %agent, "Ringing the agent.");
            twiml_connect(
                &Target::from_endpoint(endpoint),
                &DialOptions {
                    ring_timeout_secs: ring,
                    action_url: &action,
                    status_url: Some(&status),
                    answer_url: Some(&answer),
                    caller_id: None,
                },
            )
            .map(twiml)
            .map_err(|e| Refusal::Unavailable(e.to_string()))
        }
        ("closed", _) => {
            state.forget(&contact).await;
            Ok(twiml(twiml_hangup()))
        }
        _ => state.hold(&contact, false),
    }
}

/// Twilio's shortest `<Dial timeout>`.
const MIN_RING_SECS: u32 = 5;

/// Whole seconds left of an offer that lasts until `offer_until` (ms), one
/// kept back for the answer's way to routing; `None` without a deadline.
pub(crate) fn ring_left(offer_until: u64, now_ms: u64) -> Option<u32> {
    (offer_until > 0).then(|| {
        let left = offer_until.saturating_sub(now_ms) / 1000;
        u32::try_from(left.saturating_sub(1)).unwrap_or(u32::MAX)
    })
}

async fn agent_leg(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (call, _) = state.read(&uri, &headers, &body)?;
        let (contact, agent) = query(&uri)?;
        let agent = agent.ok_or_else(|| Refusal::Bad("agent: missing".into()))?;
        if let Some(CallEventKind::Answered { .. }) = call.call_event().map(|e| e.kind) {
            if bridged_dial(&uri) {
                // The bridge decided, and accepted if it connected them.
                debug!(source = %state.name, contact_id = %contact, agent_id = %agent, "The agent's leg is answered.");
            } else {
                // A dial from before the bridge existed: accepted here.
                let outcome = state.routing.answer(&contact, &agent, true).await?;
                info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "The agent answered the call.");
            }
        }
        Ok(empty())
    }
    .await;
    state.answer("agent", result)
}

/// The agent picked up: Twilio asks (the noun's `url`, on the agent's leg,
/// before the two are connected) what to do. They are connected only if
/// the call is still theirs: offered to them (accepted now) or assigned to
/// them. An offer that moved on while the phone rang (taken back when
/// their session ended, expired, passed on, transferred) belongs to
/// someone else now, or to no one: the agent is hung up, counted
/// (`switchboard_voice_late_answers_total`), and the caller stays where
/// routing has them (the `<Dial action>` holds them again). Before, Twilio
/// connected whoever picked up, while routing offered the call to the next
/// agent. When routing cannot be asked (Redis away), nobody is connected:
/// a call that might be another agent's is never bridged.
async fn bridge(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        state.read(&uri, &headers, &body)?;
        let (contact, agent) = query(&uri)?;
        let agent = agent.ok_or_else(|| Refusal::Bad("agent: missing".into()))?;
        // Redis away (routing, or the mark below): the agent is not
        // connected, counted as unavailable, not as late (her dial's end,
        // `/dialed`, counts what became of the call).
        let unavailable = || {
            counter!("switchboard_voice_held_unavailable_total",
                "source" => state.name.clone(), "endpoint" => "bridge")
            .increment(1);
            Ok(twiml(twiml_hangup()))
        };
        let theirs = match still_theirs(&state, &contact, &agent).await {
            Ok(theirs) => theirs,
            Err(Refusal::Unavailable(error)) => {
                warn!(source = %state.name, contact_id = %contact, agent_id = %agent, %error, "Routing is unavailable; the agent who answered is not connected.");
                return unavailable();
            }
            Err(other) => return Err(other),
        };
        // Marked before connecting: `/dialed` ends the call as completed
        // only with the mark, and the watch for lost callers leaves a
        // connected one be. Unmarked (Redis away), nobody is connected.
        if theirs {
            let marked = match state.on_call(&contact).await {
                Ok(()) => state
                    .memory
                    .set_for(&bridged_key(&contact, &agent), "1", BRIDGED_MEMORY)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error),
            };
            match marked {
                Ok(()) => {
                    info!(source = %state.name, contact_id = %contact, agent_id = %agent, "The agent answered; connecting the caller.");
                    return Ok(twiml(twiml_proceed()));
                }
                Err(error) => {
                    warn!(source = %state.name, contact_id = %contact, agent_id = %agent, %error, "The bridge could not be noted; the agent who answered is not connected.");
                    return unavailable();
                }
            }
        }
        counter!("switchboard_voice_late_answers_total", "source" => state.name.clone())
            .increment(1);
        info!(source = %state.name, contact_id = %contact, agent_id = %agent, "The agent answered a call no longer theirs; hung up.");
        Ok(twiml(twiml_hangup()))
    }
    .await;
    state.answer("bridge", result)
}

/// Whether `agent` may be connected to the call now: its offer to them is
/// accepted, or it is assigned to them already.
async fn still_theirs(
    state: &TwilioState,
    contact: &ContactId,
    agent: &str,
) -> Result<bool, Refusal> {
    if state.routing.answer(contact, agent, true).await? == "ok" {
        return Ok(true);
    }
    assigned_to(state, contact, agent).await
}

async fn assigned_to(
    state: &TwilioState,
    contact: &ContactId,
    agent: &str,
) -> Result<bool, Refusal> {
    Ok(state
        .routing
        .route(contact)
        .await?
        .is_some_and(|r| r.state == "assigned" && r.agent.as_deref() == Some(agent)))
}

async fn dialed(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (call, _) = state.read(&uri, &headers, &body)?;
        let (contact, agent) = query(&uri)?;
        let agent = agent.ok_or_else(|| Refusal::Bad("agent: missing".into()))?;
        state.seen(&contact).await;
        match call.call_event().map(|e| e.kind) {
            Some(CallEventKind::Answered { .. }) => {
                answered(&state, &uri, &call, &contact, &agent).await
            }
            _ if call.call_status.is_final() => {
                // The caller hung up while the agent's phone rang: the
                // agent missed nothing, and there is no one to hold.
                let cause = call.call_status.end_cause().map_or("completed", |c| c.as_str());
                let outcome = state.routing.end(&contact, cause).await?;
                counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => outcome.clone())
                    .increment(1);
                info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "The caller hung up while the agent's phone rang.");
                state.forget(&contact).await;
                Ok(twiml(twiml_hangup()))
            }
            _ => unanswered(&state, &uri, &contact, &agent)
                .await
                .or_else(|e| state.hold_through("dialed", &contact, e)),
        }
    }
    .await;
    state.answer("dialed", result)
}

/// A dial that ended answered (the agent's leg is over). With the bridge
/// (`b=1`), the contact is done only if the bridge connected this agent
/// (its mark) and it is still theirs, or closed already. Otherwise nobody
/// talked to the caller on this dial (hung up at the bridge; or the bridge
/// accepted but could not answer) or the call moved on (a transfer during
/// it): assigned to the agent without a conversation, it goes back to its
/// queue without them; then the caller is held for where routing has the
/// call now, or, gone already, the contact ends. A dial from before the
/// bridge is accepted and ended as before.
async fn answered(
    state: &TwilioState,
    uri: &axum::http::Uri,
    call: &TwilioCall,
    contact: &ContactId,
    agent: &str,
) -> Served {
    // Every end here is counted, as /status counts its own (the final
    // /status then finds the call closed: `already_closed`).
    let ended = |outcome: &str| {
        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => outcome.to_owned())
            .increment(1);
    };
    if !bridged_dial(uri) {
        state.routing.answer(contact, agent, true).await?;
        ended(&state.routing.end(contact, "completed").await?);
        return Ok(twiml(twiml_hangup()));
    }
    let route = state.routing.route(contact).await?;
    let theirs = route
        .as_ref()
        .is_some_and(|r| r.state == "assigned" && r.agent.as_deref() == Some(agent));
    let over = route.as_ref().is_none_or(|r| r.state == "closed");
    let talked = theirs
        && state
            .memory
            .get(&bridged_key(contact, agent))
            .await
            .map_err(memory_unavailable)?
            .is_some();
    if talked || over {
        ended(&state.routing.end(contact, "completed").await?);
        return Ok(twiml(twiml_hangup()));
    }
    if theirs {
        let outcome = state.routing.pass(contact, agent).await?;
        counter!("switchboard_voice_late_answers_total", "source" => state.name.clone())
            .increment(1);
        warn!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "A call assigned to the agent ended its dial without a conversation; it goes back to its queue without them.");
    }
    if call.call_status.is_final() {
        let cause = call
            .call_status
            .end_cause()
            .map_or("completed", |c| c.as_str());
        let outcome = state.routing.end(contact, cause).await?;
        ended(&outcome);
        info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "The caller hung up after a dial that connected nobody.");
        return Ok(twiml(twiml_hangup()));
    }
    info!(source = %state.name, contact_id = %contact, agent_id = %agent, "A dial ended for a call no longer the agent's; the caller is held.");
    state.hold(contact, false)
}

/// The agent's phone rang out (or was busy) while the caller waits: the
/// call goes to the next agent, or on hold.
async fn unanswered(
    state: &TwilioState,
    uri: &axum::http::Uri,
    contact: &ContactId,
    agent: &str,
) -> Served {
    if let Some(stale) = stale_offer(state, uri, contact, agent).await? {
        counter!("switchboard_voice_stale_dial_results_total", "source" => state.name.clone())
            .increment(1);
        info!(source = %state.name, contact_id = %contact, agent_id = %agent, offer = stale, "A dial of an earlier offer ended unanswered; the current offer stands.");
        return state.hold(contact, false);
    }
    let outcome = state.routing.answer(contact, agent, false).await?;
    if outcome == "not_offered" {
        // Assigned to her already (accepted in the console, an
        // auto-accepting queue) and her phone rang out: redirected on no
        // answer, back to the queue without her. It was dialled to her
        // again at every hold, for as long as the caller waited.
        // (`pass` changes nothing unless the call is assigned to her.)
        let requeued = state.routing.pass(contact, agent).await?;
        if requeued == "ok" {
            counter!("switchboard_voice_assigned_no_answer_total", "source" => state.name.clone())
                .increment(1);
            info!(source = %state.name, contact_id = %contact, agent_id = %agent, "The agent the call is assigned to did not answer; it goes back to its queue without her.");
        } else {
            info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %requeued, "A dial ended unanswered for a call no longer offered to the agent; nothing changes.");
        }
        return state.hold(contact, false);
    }
    info!(source = %state.name, contact_id = %contact, agent_id = %agent, outcome = %outcome, "The agent did not answer; the call goes to the next.");
    state.hold(contact, false)
}

async fn status(
    State(state): State<Arc<TwilioState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (call, _) = state.read(&uri, &headers, &body)?;
        let Some(CallEventKind::Ended { cause, .. }) = call.call_event().map(|e| e.kind) else {
            return Ok(empty());
        };
        let contact = match state.contact_of(&call).await? {
            Some(contact) => contact,
            // A caller `/incoming` rejected: never stored, nothing to end
            // (counted `blocked` there already).
            None if state.blocked(&call) => return Ok(empty()),
            None => {
                // Not stored (yet): remembered for an `/incoming` still
                // being served, then looked up once more.
                state
                    .memory
                    .set_for(&hangup_key(&call.call_sid), cause.as_str(), HANGUP_MEMORY)
                    .await
                    .map_err(memory_unavailable)?;
                match state.contact_of(&call).await? {
                    Some(contact) => contact,
                    None => {
                        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => "unknown_call")
                            .increment(1);
                        debug!(source = %state.name, call_id = %call.call_sid, "Status of a call we never queued (remembered for an hour).");
                        return Ok(empty());
                    }
                }
            }
        };
        let outcome = state.routing.end(&contact, cause.as_str()).await?;
        state.forget(&contact).await;
        counter!("switchboard_voice_calls_total", "source" => state.name.clone(), "outcome" => outcome.clone())
            .increment(1);
        info!(source = %state.name, call_id = %call.call_sid, contact_id = %contact, outcome = %outcome, "Call ended.");
        Ok(empty())
    }
    .await;
    state.answer("status", result)
}

#[cfg(test)]
mod ring_tests {
    use super::ring_left;

    #[test]
    fn an_offer_leaves_whole_seconds_less_one() {
        assert_eq!(ring_left(0, 5_000), None, "no deadline");
        assert_eq!(ring_left(20_000, 10_000), Some(9));
        assert_eq!(ring_left(20_000, 19_500), Some(0));
        assert_eq!(ring_left(20_000, 25_000), Some(0), "already past");
    }
}

#[cfg(test)]
mod debug_tests {
    #![allow(clippy::unwrap_used)]
    use super::TwilioConfig;

    /// A presigned hold music URL's signature, and the auth token, never
    /// show in the configuration's Debug (a panic message, a debug log).
    #[test]
    fn the_debug_form_shows_no_secret() {
        let config: TwilioConfig = serde_json::from_value(serde_json::json!({
            "name": "phone",
            "auth_token": "twilio-auth-token-0123456789",
            "public_url": "https://switchboard.example.com/channels/phone",
            "hold_music_url": "https://cdn.example.com/hold.mp3?X-Amz-Signature=SIGNED123",
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("cdn.example.com/hold.mp3"), "{shown}");
        assert!(!shown.contains("SIGNED123"), "{shown}");
        assert!(!shown.contains("twilio-auth-token"), "{shown}");
    }
}
