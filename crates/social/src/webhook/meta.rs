//! `[[channels]] type = "meta"`: one Meta app's webhooks for Messenger,
//! Instagram and WhatsApp Cloud, at `/channels/{name}/webhook`.
//!
//! - `GET` is Meta's subscription handshake: `hub.mode=subscribe`,
//!   `hub.verify_token` (compared in constant time with `verify_token`) and
//!   `hub.challenge`, echoed back as text.
//! - `POST` deliveries carry `X-Hub-Signature-256`, the HMAC-SHA256 of the
//!   raw body with the app secret, checked before anything is parsed.
//!
//! Each page, Instagram account and WhatsApp phone number id the app serves
//! is listed under `accounts` with a name and its access token (for
//! replies); it is the `address` of its contacts, which routing rules match.

use super::{OnInvalid, Refusal, Replies, Webhook, config_error, default_meta_max_body, header};
use crate::Platform;
use crate::send::SendConfig;
use crate::verify::{META_SIGNATURE_HEADER, verify_meta_signature};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_channel::{
    ChannelAdapter, ChannelConfig, ChannelContext, ChannelError, Secret, SecretValue,
};
use tracing::debug;

/// `[[channels]] type = "meta"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    pub name: String,
    /// The app secret: the key of `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// The token Meta echoes in the subscription handshake.
    pub verify_token: Secret,
    /// The Graph API base URL replies are sent to.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    #[serde(default = "default_meta_max_body")]
    pub max_body_bytes: usize,
    /// The pages, Instagram accounts and WhatsApp phone numbers served.
    pub accounts: Vec<MetaAccount>,
}

/// One page, Instagram account or WhatsApp phone number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaAccount {
    /// A name for people (logs, the console).
    pub name: String,
    /// The page id, Instagram account id or WhatsApp phone number id.
    pub id: String,
    /// The access token replies from this account are sent with.
    pub access_token: Secret,
}

fn default_graph_url() -> String {
    "https://graph.facebook.com/v21.0".into()
}

impl ChannelConfig for MetaConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        if self.app_secret.resolve()?.expose().len() < 16 {
            return Err(config_error(
                &self.name,
                "app_secret",
                "must be at least 16 characters",
            ));
        }
        if self.verify_token.resolve()?.expose().len() < 8 {
            return Err(config_error(
                &self.name,
                "verify_token",
                "must be at least 8 characters",
            ));
        }
        if self.accounts.is_empty() {
            return Err(config_error(
                &self.name,
                "accounts",
                "list at least one page, Instagram account or phone number id",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for account in &self.accounts {
            account.access_token.resolve()?;
            if account.id.is_empty() || !seen.insert(account.id.as_str()) {
                return Err(config_error(
                    &self.name,
                    "accounts",
                    &format!("id {:?} is empty or listed twice", account.id),
                ));
            }
        }
        if url::Url::parse(&self.graph_url).is_err() {
            return Err(config_error(&self.name, "graph_url", "is not a URL"));
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
        let state = Arc::new(MetaState {
            webhook: Webhook {
                name: ctx.name.clone(),
                intake: ctx.intake.clone(),
                max_body: self.max_body_bytes,
                accounts: Some(self.accounts.iter().map(|a| a.id.clone()).collect()),
                on_invalid: OnInvalid::Fit,
            },
            app_secret: self.app_secret.resolve()?,
            verify_token: self.verify_token.resolve()?,
        });
        // Each account may receive on any of Meta's products; the reply's
        // customer scheme (messenger, instagram, whatsapp) picks the API.
        let mut senders = Vec::new();
        for account in &self.accounts {
            let token = account.access_token.resolve()?;
            for platform in [Platform::Messenger, Platform::Instagram, Platform::WhatsApp] {
                let mut config = SendConfig::new(platform, &account.id, token.clone());
                config.url = Some(self.graph_url.clone());
                senders.push(config);
            }
        }
        let replies = Replies::new(&self.name, senders)?;
        let mut tokens = std::collections::HashMap::new();
        for account in &self.accounts {
            tokens.insert(account.id.clone(), account.access_token.resolve()?);
        }
        let media = Arc::new(crate::media::GraphMedia {
            client: crate::send::http_client(std::time::Duration::from_secs(5))
                .map_err(|e| config_error(&self.name, "media", &e.to_string()))?,
            graph_url: self.graph_url.clone(),
            tokens,
            timeout: crate::media::MEDIA_TIMEOUT,
        });
        Ok(Box::new(MetaAdapter {
            state,
            replies,
            media,
            ctx,
        }))
    }
}

#[derive(Debug)]
struct MetaState {
    webhook: Webhook,
    app_secret: SecretValue,
    verify_token: SecretValue,
}

struct MetaAdapter {
    state: Arc<MetaState>,
    replies: Replies,
    media: Arc<crate::media::GraphMedia>,
    ctx: ChannelContext,
}

impl ChannelAdapter for MetaAdapter {
    fn routes(&self) -> Option<Router> {
        Some(
            Router::new()
                .route("/webhook", get(handshake).post(deliver))
                .with_state(self.state.clone()),
        )
    }

    fn media(&self) -> Option<Arc<dyn switchboard_channel::MediaSource>> {
        Some(self.media.clone())
    }

    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>> {
        self.replies.run(self.ctx)
    }
}

async fn handshake(
    State(state): State<Arc<MetaState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query.get("hub.verify_token").map(String::as_bytes);
    match (mode, token, query.get("hub.challenge")) {
        (Some("subscribe"), Some(token), Some(challenge)) if state.verify_token.matches(token) => {
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            metrics::counter!("switchboard_social_deliveries_total",
                "source" => state.webhook.name.clone(), "outcome" => "bad_handshake")
            .increment(1);
            super::error(
                StatusCode::FORBIDDEN,
                "bad_handshake",
                "hub.mode must be subscribe and hub.verify_token must match".into(),
            )
        }
    }
}

async fn deliver(State(state): State<Arc<MetaState>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        // No signature at all: refused before a stranger's body is read.
        if header(&headers, META_SIGNATURE_HEADER).is_none() {
            return Err(Refusal::Signature(crate::verify::SignatureError::Missing));
        }
        let body = state.webhook.read(body).await?;
        verify_meta_signature(
            state.app_secret.expose().as_bytes(),
            header(&headers, META_SIGNATURE_HEADER),
            &body,
        )
        .map_err(Refusal::Signature)?;
        let items = match crate::parse_meta(&body) {
            // An object this channel does not read (the app subscribed
            // to more than messages: `user`, `permissions`, …). Refused,
            // Meta retried it for hours and may turn the app's whole
            // webhook off, messages included: acknowledged and counted.
            Err(crate::ParseError::WrongObject(object)) => {
                state.webhook.count("ignored", "unknown_object");
                debug!(source = %state.webhook.name, %object, "A Meta delivery about an object this channel does not read; acknowledged.");
                Vec::new()
            }
            parsed => parsed.map_err(Refusal::Parse)?,
        };
        state.webhook.store(items).await
    }
    .await;
    state.webhook.answer(result)
}
