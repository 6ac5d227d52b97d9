//! Switchboard's chat channel: the website chat widget over a websocket
//! (`docs/widget-protocol.md`, `docs/chat.md`).
//!
//! - [`config`] — `[[channels]] type = "chat"`.
//! - [`protocol`] — the frames, without I/O.
//! - [`token`] — visitors' signed session tokens.
//! - [`session`] — one websocket: hello/resume, messages into the intake,
//!   the conversation log out, routing state (agent, queue, closed).
//! - [`hub`] — this instance's sessions and the live doorbell that wakes
//!   them.
//! - [`outbox`] — agents' replies are already in the conversation log; the
//!   outbox only settles them (or forwards an offline-form answer to the
//!   email channel).
//! - [`uploads`] — attachments.
#![forbid(unsafe_code)]

pub mod config;
mod http;
pub mod hub;
pub mod limits;
pub mod outbox;
pub mod protocol;
pub mod session;
pub mod token;
pub mod uploads;

pub use config::{ChatConfig, OfflineConfig, WidgetConfig};

/// For the fuzz targets (`fuzz/`, issue 4): the parsers of untrusted input
/// that are otherwise private to the crate. Not part of the channel's API.
#[doc(hidden)]
pub mod fuzzing {
    /// The name an upload is stored under, from its `X-Filename` header
    /// (percent-decoded, made harmless).
    pub fn file_name(raw: &str) -> String {
        crate::http::file_name(raw)
    }

    /// Whether `id` is an upload's media id (22 base64url characters).
    pub fn attachment_id_ok(id: &str) -> bool {
        crate::uploads::id_ok(id)
    }

    /// Whether `id` may name a widget (or the channel) in the configuration.
    pub fn widget_id_ok(id: &str) -> bool {
        crate::config::id_ok(id)
    }
}

use futures::future::BoxFuture;
use std::sync::Arc;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, Handoff, MediaSource,
};

/// Everything a session needs, shared by the instance's sessions.
#[derive(Debug)]
pub struct Shared {
    pub config: ChatConfig,
    pub ctx: ChannelContext,
    pub tokens: token::Tokens,
    pub hub: hub::Hub,
    pub per_ip: limits::PerIp,
    /// Frames per visitor, whatever socket they come on (`rate_per_session`).
    pub per_visitor: limits::PerVisitor,
    pub open_per_ip: limits::OpenPerIp,
    pub upload_quota: limits::UploadQuota,
    /// The same, per client address (keyed by [`limits::client_key`]).
    pub upload_quota_per_ip: limits::UploadQuota,
    /// Uploads being read now (`uploads_in_flight`).
    pub upload_slots: tokio::sync::Semaphore,
    /// Uploads being read now per client address.
    pub uploads_per_ip: limits::OpenPerIp,
    pub uploads: uploads::Uploads,
}

impl ChannelConfig for ChatConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        self.check()
    }

    fn hands_to(&self) -> Vec<Handoff> {
        self.offline
            .iter()
            .map(|o| Handoff {
                key: "offline.email_channel",
                channel: o.email_channel.clone(),
                channel_type: "email",
            })
            .collect()
    }

    fn body_time(&self) -> Option<(&'static str, std::time::Duration)> {
        Some((
            "upload_timeout_secs",
            std::time::Duration::from_secs(self.upload_timeout_secs),
        ))
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.check()?;
        let secret = self
            .session_secret
            .resolve()
            .map_err(|e| config::config_error(&self.name, "session_secret", &e.to_string()))?;
        let uploads = uploads::Uploads::open(
            &self.uploads_dir,
            self.max_upload_bytes,
            self.uploads_min_free_bytes,
        )
        .map_err(|e| config::config_error(&self.name, "uploads_dir", &e.to_string()))?;
        Ok(Box::new(ChatAdapter {
            shared: Arc::new(Shared {
                config: self.clone(),
                tokens: token::Tokens::new(secret.expose().as_bytes()),
                hub: hub::Hub::default(),
                per_ip: limits::PerIp::new(self.rate_per_ip),
                per_visitor: limits::PerVisitor::new(self.rate_per_session),
                open_per_ip: limits::OpenPerIp::new(self.sockets_per_ip),
                upload_quota: limits::UploadQuota::new(
                    self.upload_rate_per_session,
                    self.upload_bytes_per_minute(),
                ),
                upload_quota_per_ip: limits::UploadQuota::new(
                    self.rate_per_ip,
                    self.upload_bytes_per_ip_minute(),
                ),
                upload_slots: tokio::sync::Semaphore::new(self.uploads_in_flight),
                uploads_per_ip: limits::OpenPerIp::new(self.uploads_per_ip()),
                uploads,
                ctx,
            }),
        }))
    }
}

/// The running chat channel.
#[derive(Debug)]
pub struct ChatAdapter {
    shared: Arc<Shared>,
}

impl ChatAdapter {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl ChannelAdapter for ChatAdapter {
    fn routes(&self) -> Option<axum::Router> {
        Some(http::routes(self.shared.clone()))
    }

    fn media(&self) -> Option<Arc<dyn MediaSource>> {
        Some(Arc::new(self.shared.uploads.clone()))
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        let shared = self.shared;
        Box::pin(async move {
            let shutdown = shared.ctx.shutdown.clone();
            let keep_days = shared.config.uploads_keep_days;
            let clean = async {
                if keep_days > 0 {
                    switchboard_channel::files::keep_clean(
                        shared.ctx.name.clone(),
                        "uploads",
                        shared.config.uploads_dir.clone(),
                        std::time::Duration::from_secs(keep_days * 86_400),
                        std::time::Duration::from_secs(3600),
                        shutdown.clone(),
                    )
                    .await;
                }
            };
            tokio::join!(
                shared.hub.run(shared.ctx.live.clone(), shutdown.clone()),
                outbox::run(shared.clone()),
                clean,
            );
            Ok(())
        })
    }
}
