//! `[[channels]] type = "webhook"`: any other platform or an in-house app,
//! posting the documented JSON format (`docs/social.md`, parsed by
//! [`crate::parse_generic`]) to `/channels/{name}/webhook`, signed with
//! HMAC-SHA256 over `"{timestamp}.{body}"` (`X-Switchboard-Timestamp`,
//! `X-Switchboard-Signature: sha256=<hex>`). A timestamp further than
//! `tolerance_secs` from our clock is refused, so a captured delivery cannot
//! be replayed later.

use super::{OnInvalid, Refusal, Replies, Webhook, config_error, default_max_body, header};
use crate::Platform;
use crate::parse_generic;
use crate::send::SendConfig;
use crate::verify::{GENERIC_SIGNATURE_HEADER, GENERIC_TIMESTAMP_HEADER, verify_generic};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, Secret, SecretValue,
};
use switchboard_core::Timestamp;

/// `[[channels]] type = "webhook"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    pub name: String,
    /// The shared HMAC key.
    pub secret: Secret,
    /// How far a delivery's timestamp may be from our clock, in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
    /// Where replies are posted (same signature scheme); none: replies stay
    /// in the outbox.
    #[serde(default)]
    pub reply_url: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_tolerance() -> u64 {
    300
}

/// Without the reply URL's password and query values: a bridge may take
/// its token there.
impl std::fmt::Debug for GenericConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let GenericConfig {
            name,
            secret,
            tolerance_secs,
            reply_url,
            max_body_bytes,
        } = self;
        f.debug_struct("GenericConfig")
            .field("name", name)
            .field("secret", secret)
            .field("tolerance_secs", tolerance_secs)
            .field(
                "reply_url",
                &reply_url
                    .as_deref()
                    .map(switchboard_channel::net::redact_url_all),
            )
            .field("max_body_bytes", max_body_bytes)
            .finish()
    }
}

impl ChannelConfig for GenericConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        if self.secret.resolve()?.expose().len() < 16 {
            return Err(config_error(
                &self.name,
                "secret",
                "must be at least 16 characters",
            ));
        }
        if !(1..=3600).contains(&self.tolerance_secs) {
            return Err(config_error(
                &self.name,
                "tolerance_secs",
                "must be between 1 and 3600",
            ));
        }
        if let Some(url) = &self.reply_url
            && url::Url::parse(url).is_err()
        {
            return Err(config_error(&self.name, "reply_url", "is not a URL"));
        }
        if self.max_body_bytes < 1024 {
            return Err(config_error(
                &self.name,
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError> {
        self.validate()?;
        let state = Arc::new(GenericState {
            webhook: Webhook {
                name: ctx.name.clone(),
                intake: ctx.intake.clone(),
                max_body: self.max_body_bytes,
                accounts: None,
                on_invalid: OnInvalid::Refuse,
            },
            secret: self.secret.resolve()?,
            tolerance_secs: self.tolerance_secs,
        });
        let mut senders = Vec::new();
        // One sender for every account the bridge posts messages for: the
        // reply's body names the account (`Senders::for_message`).
        if let Some(url) = &self.reply_url {
            let mut sender = SendConfig::new(Platform::Generic, "", self.secret.resolve()?);
            sender.url = Some(url.clone());
            senders.push(sender);
        }
        let replies = Replies::new(&self.name, senders)?;
        Ok(Box::new(GenericAdapter {
            state,
            replies,
            ctx,
        }))
    }
}

#[derive(Debug)]
struct GenericState {
    webhook: Webhook,
    secret: SecretValue,
    tolerance_secs: u64,
}

struct GenericAdapter {
    state: Arc<GenericState>,
    replies: Replies,
    ctx: ChannelContext,
}

impl ChannelAdapter for GenericAdapter {
    fn routes(&self) -> Option<Router> {
        Some(
            Router::new()
                .route("/webhook", post(deliver))
                .with_state(self.state.clone()),
        )
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        self.replies.run(self.ctx)
    }
}

async fn deliver(
    State(state): State<Arc<GenericState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        // No signature at all: refused before a stranger's body is read.
        if header(&headers, GENERIC_TIMESTAMP_HEADER).is_none()
            || header(&headers, GENERIC_SIGNATURE_HEADER).is_none()
        {
            return Err(Refusal::Signature(crate::verify::SignatureError::Missing));
        }
        let body = state.webhook.read(body).await?;
        verify_generic(
            state.secret.expose().as_bytes(),
            header(&headers, GENERIC_TIMESTAMP_HEADER),
            header(&headers, GENERIC_SIGNATURE_HEADER),
            &body,
            Timestamp::now().as_millis() / 1000,
            state.tolerance_secs,
        )
        .map_err(Refusal::Signature)?;
        let items = parse_generic(&body).map_err(Refusal::Parse)?;
        state.webhook.store(items).await
    }
    .await;
    state.webhook.answer(result)
}
