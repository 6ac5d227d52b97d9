//! The agent API: how agents and supervisors work with Switchboard.
//!
//! HTTP under `/api/v1` and a websocket at `/api/v1/ws`, documented in
//! `docs/agent-api.md` (with `docs/agent-api.openapi.yaml`). Agents sign in
//! with their token; supervisors with the supervisor token. Every change
//! goes through the routing state's scripts, so the API never bypasses the
//! router's checks; events reach an agent's websocket on whichever instance
//! they are connected to ([`hub`]). The reference agent console, a static
//! page that speaks this API from a browser, is served at `/console`
//! ([`console`]).
#![forbid(unsafe_code)]

pub mod actions;
pub mod console;
pub mod error;
pub mod frames;
mod guard;
mod http;
pub mod hub;
mod media;
mod records;
mod tickets;
pub mod wallboard;
mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use serde::Deserialize;
use std::sync::Arc;
use switchboard_channel::{Secret, SecretValue};
use switchboard_router::plan::Plan;
use switchboard_router::settings::RoutingConfig;
use switchboard_store::{Conversations, RoutingState, Store};
use tokio_util::sync::CancellationToken;

/// `[agent_api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentApiConfig {
    /// The token supervisors sign in with (queues, agents, any contact's
    /// record, creating agents). Unset: no supervisor access.
    #[serde(default)]
    pub supervisor_token: Option<Secret>,
    /// An agent's session lasts this long without a websocket or a
    /// heartbeat, in seconds.
    #[serde(default = "defaults::session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// The longest reply or note, in bytes.
    #[serde(default = "defaults::max_text_bytes")]
    pub max_text_bytes: usize,
    /// Frames queued per websocket before a client that does not read is
    /// disconnected.
    #[serde(default = "defaults::ws_send_buffer")]
    pub ws_send_buffer: usize,
    /// Frames a websocket may send per minute (a token bucket).
    #[serde(default = "defaults::ws_frames_per_minute")]
    pub ws_frames_per_minute: u32,
    /// Websockets one agent may have open on one instance.
    #[serde(default = "defaults::ws_sessions_per_agent")]
    pub ws_sessions_per_agent: usize,
    /// Attachments fetched for agents at once on one instance (each is
    /// held in memory, up to its channel's size limit, while it is
    /// fetched; the permit ends with the fetch, not with the answer's
    /// write); more wait up to 5 s, then get 503.
    #[serde(default = "defaults::media_fetches")]
    pub media_fetches: usize,
    /// Failed sign-ins (answers `401`) per client address and minute; an
    /// address over it is answered `429` until its allowance refills
    /// (tokens known good on this instance still pass).
    #[serde(default = "defaults::failed_sign_ins_per_minute")]
    pub failed_sign_ins_per_minute: u32,
    /// HTTP requests that change something (`POST`, `PUT`, `PATCH`,
    /// `DELETE`) per token and minute.
    #[serde(default = "defaults::http_writes_per_minute")]
    pub http_writes_per_minute: u32,
}

impl AgentApiConfig {
    /// The largest request body or websocket frame read: a text of
    /// `max_text_bytes` may take six times as many bytes once escaped in
    /// JSON (`\u0001` for a control character, `\uXXXX` for each byte of
    /// a non-ASCII one, as many encoders write them), plus the rest of the
    /// command. The text itself is held to `max_text_bytes` after decoding.
    pub fn wire_limit(&self) -> usize {
        self.max_text_bytes.saturating_mul(6).saturating_add(4096)
    }
}

mod defaults {
    pub fn session_ttl_secs() -> u64 {
        30
    }
    pub fn max_text_bytes() -> usize {
        16 * 1024
    }
    pub fn ws_send_buffer() -> usize {
        256
    }
    pub fn ws_frames_per_minute() -> u32 {
        600
    }
    pub fn ws_sessions_per_agent() -> usize {
        8
    }
    pub fn media_fetches() -> usize {
        8
    }
    pub fn failed_sign_ins_per_minute() -> u32 {
        30
    }
    pub fn http_writes_per_minute() -> u32 {
        600
    }
}

impl Default for AgentApiConfig {
    fn default() -> Self {
        AgentApiConfig {
            supervisor_token: None,
            session_ttl_secs: defaults::session_ttl_secs(),
            max_text_bytes: defaults::max_text_bytes(),
            ws_send_buffer: defaults::ws_send_buffer(),
            ws_frames_per_minute: defaults::ws_frames_per_minute(),
            ws_sessions_per_agent: defaults::ws_sessions_per_agent(),
            media_fetches: defaults::media_fetches(),
            failed_sign_ins_per_minute: defaults::failed_sign_ins_per_minute(),
            http_writes_per_minute: defaults::http_writes_per_minute(),
        }
    }
}

impl AgentApiConfig {
    /// Checks the section; errors name the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(secret) = &self.supervisor_token {
            let value = secret
                .resolve()
                .map_err(|e| ("agent_api.supervisor_token".to_owned(), e.to_string()))?;
            if value.expose().len() < 16 {
                return Err((
                    "agent_api.supervisor_token".into(),
                    "must be at least 16 characters".into(),
                ));
            }
        }
        if self.session_ttl_secs < 3 {
            return Err((
                "agent_api.session_ttl_secs".into(),
                "must be at least 3".into(),
            ));
        }
        if self.max_text_bytes < 256 {
            return Err((
                "agent_api.max_text_bytes".into(),
                "must be at least 256".into(),
            ));
        }
        if self.ws_send_buffer == 0 {
            return Err((
                "agent_api.ws_send_buffer".into(),
                "must be at least 1".into(),
            ));
        }
        if !(10..=100_000).contains(&self.ws_frames_per_minute) {
            return Err((
                "agent_api.ws_frames_per_minute".into(),
                "must be 10 to 100000".into(),
            ));
        }
        if !(1..=1000).contains(&self.ws_sessions_per_agent) {
            return Err((
                "agent_api.ws_sessions_per_agent".into(),
                "must be 1 to 1000".into(),
            ));
        }
        if !(1..=256).contains(&self.media_fetches) {
            return Err(("agent_api.media_fetches".into(), "must be 1 to 256".into()));
        }
        if !(1..=100_000).contains(&self.failed_sign_ins_per_minute) {
            return Err((
                "agent_api.failed_sign_ins_per_minute".into(),
                "must be 1 to 100000".into(),
            ));
        }
        if !(10..=100_000).contains(&self.http_writes_per_minute) {
            return Err((
                "agent_api.http_writes_per_minute".into(),
                "must be 10 to 100000".into(),
            ));
        }
        Ok(())
    }
}

/// Shared by every handler and session.
pub struct Inner {
    pub(crate) state: RoutingState,
    pub(crate) conversations: Conversations,
    pub(crate) routing: Arc<RoutingConfig>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) supervisor: Option<SecretValue>,
    pub(crate) settings: AgentApiConfig,
    pub(crate) hub: hub::Hub,
    pub(crate) media: media::MediaSources,
    /// Attachments being fetched (`media_fetches`).
    pub(crate) media_permits: tokio::sync::Semaphore,
    /// Attachment requests in flight by caller (two each).
    pub(crate) media_callers: Arc<media::InFlight>,
    /// Record, history and export reads in flight by caller (two each).
    pub(crate) record_callers: Arc<media::InFlight>,
    /// Websocket tickets each agent may still ask for.
    pub(crate) tickets: tickets::Allowance,
    /// Failed sign-ins per address, changes per token.
    pub(crate) guard: guard::Guard,
    pub(crate) recorder: Option<switchboard_records::Recorder>,
    /// Cancelled when the instance shuts down: open websockets close with
    /// 1001, as the chat widget's do.
    pub(crate) closing: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentApi").finish_non_exhaustive()
    }
}

/// The agent API of one instance.
#[derive(Debug, Clone)]
pub struct AgentApi {
    inner: Arc<Inner>,
}

impl AgentApi {
    pub fn new(
        store: Store,
        routing: Arc<RoutingConfig>,
        plan: Arc<Plan>,
        settings: AgentApiConfig,
        recorder: Option<switchboard_records::Recorder>,
    ) -> Result<AgentApi, String> {
        let supervisor = match &settings.supervisor_token {
            Some(s) => Some(
                s.resolve()
                    .map_err(|e| format!("agent_api.supervisor_token: {e}"))?,
            ),
            None => None,
        };
        let media_fetches = settings.media_fetches;
        let guard = guard::Guard::new(
            settings.failed_sign_ins_per_minute,
            settings.http_writes_per_minute,
        );
        Ok(AgentApi {
            inner: Arc::new(Inner {
                state: RoutingState::new(store.clone())
                    .with_interrupt_voice(&routing.interrupt_voice_csv()),
                conversations: Conversations::new(store),
                routing,
                plan,
                supervisor,
                settings,
                hub: hub::Hub::default(),
                media: media::MediaSources::default(),
                media_permits: tokio::sync::Semaphore::new(media_fetches),
                media_callers: Arc::default(),
                record_callers: Arc::default(),
                tickets: tickets::allowance(),
                guard,
                recorder,
                closing: CancellationToken::new(),
            }),
        })
    }

    /// Serves the attachments of `channel`'s contacts through `source`.
    pub fn register_media(&self, channel: &str, source: Arc<dyn switchboard_channel::MediaSource>) {
        self.inner.media.register(channel, source);
    }

    /// The routes, to be mounted at `/api/v1`.
    pub fn routes(&self) -> Router {
        let limit = self.inner.settings.wire_limit();
        Router::new()
            .route("/me", get(http::me))
            .route("/me/presence", put(http::presence))
            .route("/me/heartbeat", post(http::heartbeat))
            .route("/contacts/{id}", get(http::contact))
            .route("/contacts/{id}/routing", get(http::routing))
            .route("/contacts/{id}/record", get(records::record))
            .route("/contacts/{id}/history", get(records::history))
            .route("/contacts/{id}/accept", post(http::accept))
            .route("/contacts/{id}/decline", post(http::decline))
            .route("/contacts/{id}/close", post(http::close))
            .route("/contacts/{id}/transfer", post(http::transfer))
            .route("/contacts/{id}/notes", post(http::note))
            .route("/contacts/{id}/messages", post(http::reply))
            .route("/contacts/{id}/media/{media_id}", get(media::media))
            .route("/queues", get(http::queues))
            .route("/agents", get(http::agents).put(http::put_agent))
            .route("/kpis", get(records::kpis))
            .route("/kpis/series", get(records::series))
            .route("/records/export", get(records::export))
            .route("/ws", get(http::ws))
            .route("/ws-ticket", post(http::ws_ticket))
            .fallback(|| async {
                error::ApiError::not_found("not_found", "no such path in the API")
            })
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::map_response(error::documented))
            .layer(axum::middleware::from_fn_with_state(
                self.inner.clone(),
                guard::guard,
            ))
            .with_state(self.inner.clone())
    }

    /// The reference agent console, to be mounted at the root: `/console`,
    /// `/console/console.js`, `/console/console.css`. No authentication
    /// (the page holds no data; the agent types their token into it).
    pub fn console_routes(&self) -> Router {
        console::routes().merge(wallboard::routes())
    }

    /// Forwards routing events to this instance's agent sessions and keeps
    /// those sessions alive, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let ttl = self.inner.session_ttl();
        let (resync, mut wanted) = tokio::sync::mpsc::channel::<Vec<String>>(4);
        let inner = self.inner.clone();
        // A fresh `hello` (what the agent holds and is offered now) for each
        // agent connected here, after a gap in the routing events.
        let hellos = async move {
            while let Some(agents) = wanted.recv().await {
                for agent in agents {
                    match inner.me(&agent).await {
                        Ok(me) => inner.hub.send(
                            &agent,
                            &frames::ServerFrame::Hello {
                                version: frames::PROTOCOL_VERSION,
                                me,
                            },
                        ),
                        Err(error) => {
                            tracing::debug!(agent_id = %agent, ?error, "Could not resynchronise an agent.")
                        }
                    }
                }
            }
        };
        let closing = async {
            shutdown.cancelled().await;
            self.inner.closing.cancel();
        };
        let follow = self
            .inner
            .hub
            .run(self.inner.state.clone(), ttl, resync, shutdown.clone());
        tokio::join!(follow, hellos, closing);
    }
}

#[cfg(test)]
mod tests {
    /// The OpenAPI file's error codes are exactly the ones the API uses,
    /// and the prose names each.
    #[test]
    fn every_error_code_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let openapi =
            std::fs::read_to_string(root.join("agent-api.openapi.yaml")).expect("openapi");
        let prose = std::fs::read_to_string(root.join("agent-api.md")).expect("agent-api.md");
        let listed = openapi
            .split("code:")
            .nth(1)
            .and_then(|rest| rest.split("enum: [").nth(1))
            .and_then(|rest| rest.split(']').next())
            .expect("the Error schema's code enum");
        let mut documented: Vec<&str> = listed.split(',').map(str::trim).collect();
        documented.sort_unstable();
        let mut used = crate::error::CODES.to_vec();
        used.sort_unstable();
        assert_eq!(documented, used);
        for code in used {
            assert!(
                prose.contains(&format!("`{code}`")) || prose.contains(&format!(" {code}`")),
                "{code} is not explained in agent-api.md"
            );
        }
    }

    /// The documentation lists every route the API serves.
    #[test]
    fn every_route_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        let openapi =
            std::fs::read_to_string(root.join("agent-api.openapi.yaml")).expect("openapi");
        let prose = std::fs::read_to_string(root.join("agent-api.md")).expect("agent-api.md");
        let source = include_str!("lib.rs");
        let routes: Vec<&str> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(routes.len() >= 14, "{routes:?}");
        for route in routes {
            assert!(
                openapi.contains(&format!("  {route}:")),
                "{route} missing in the OpenAPI file"
            );
            assert!(
                prose.contains(&format!("/api/v1{route}")),
                "{route} missing in agent-api.md"
            );
        }
    }
}
