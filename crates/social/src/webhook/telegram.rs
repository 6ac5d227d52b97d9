//! `[[channels]] type = "telegram"`: one Telegram bot's updates, pushed by
//! `setWebhook` to `/channels/{name}/webhook` with the `secret_token` Telegram
//! echoes in `X-Telegram-Bot-Api-Secret-Token` (compared in constant time).
//!
//! A bot is one account: its messages get `address` = the configured `bot`
//! name, which routing rules match.

use super::{OnInvalid, Refusal, Replies, Webhook, config_error, default_max_body, header};
use crate::Platform;
use crate::send::SendConfig;
use crate::verify::{TELEGRAM_TOKEN_HEADER, verify_telegram_token};
use crate::{SocialItem, parse_telegram};
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

/// `[[channels]] type = "telegram"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub name: String,
    /// The bot's name for routing rules (`address`); the channel's name
    /// when unset.
    #[serde(default)]
    pub bot: Option<String>,
    /// The bot token from @BotFather, for replies.
    pub bot_token: Secret,
    /// The `secret_token` given to `setWebhook`: 1 to 256 characters of
    /// `A-Za-z0-9_-`.
    pub secret_token: Secret,
    /// The Bot API base URL replies are sent to.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}

impl TelegramConfig {
    fn bot(&self) -> &str {
        self.bot.as_deref().unwrap_or(&self.name)
    }
}

impl ChannelConfig for TelegramConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Result<(), ChannelError> {
        let secret = self.secret_token.resolve()?;
        let ok = (16..=256).contains(&secret.expose().len())
            && secret
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(config_error(
                &self.name,
                "secret_token",
                "must be 16 to 256 characters of A-Za-z0-9_- (Telegram's rule, with a floor)",
            ));
        }
        // The bot's username is every event's address (the intake keeps
        // up to 320 bytes; Telegram's usernames have at most 32): a longer
        // one had every message refused by the intake after its 200.
        if self.bot().is_empty() || self.bot().len() > 64 {
            return Err(config_error(
                &self.name,
                "bot",
                "must be 1 to 64 bytes (the bot's username)",
            ));
        }
        if !self.bot_token.resolve()?.expose().contains(':') {
            return Err(config_error(
                &self.name,
                "bot_token",
                "is not a bot token (<id>:<secret>)",
            ));
        }
        if url::Url::parse(&self.api_url).is_err() {
            return Err(config_error(&self.name, "api_url", "is not a URL"));
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
        let state = Arc::new(TelegramState {
            webhook: Webhook {
                name: ctx.name.clone(),
                intake: ctx.intake.clone(),
                max_body: self.max_body_bytes,
                accounts: None,
                on_invalid: OnInvalid::Fit,
            },
            bot: self.bot().to_owned(),
            secret_token: self.secret_token.resolve()?,
        });
        let mut sender = SendConfig::new(Platform::Telegram, self.bot(), self.bot_token.resolve()?);
        sender.url = Some(self.api_url.clone());
        let replies = Replies::new(&self.name, vec![sender])?;
        let media = Arc::new(crate::media::TelegramMedia {
            client: crate::send::http_client(std::time::Duration::from_secs(5))
                .map_err(|e| config_error(&self.name, "media", &e.to_string()))?,
            api_url: self.api_url.clone(),
            token: self.bot_token.resolve()?,
            timeout: crate::media::MEDIA_TIMEOUT,
        });
        Ok(Box::new(TelegramAdapter {
            state,
            replies,
            media,
            ctx,
        }))
    }
}

#[derive(Debug)]
struct TelegramState {
    webhook: Webhook,
    bot: String,
    secret_token: SecretValue,
}

struct TelegramAdapter {
    state: Arc<TelegramState>,
    replies: Replies,
    media: Arc<crate::media::TelegramMedia>,
    ctx: ChannelContext,
}

impl ChannelAdapter for TelegramAdapter {
    fn routes(&self) -> Option<Router> {
        Some(
            Router::new()
                .route("/webhook", post(deliver))
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

async fn deliver(
    State(state): State<Arc<TelegramState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        // The token is a header: checked before a stranger's body is read.
        verify_telegram_token(
            state.secret_token.expose().as_bytes(),
            header(&headers, TELEGRAM_TOKEN_HEADER),
        )
        .map_err(Refusal::Signature)?;
        let body = state.webhook.read(body).await?;
        let mut items = parse_telegram(&body).map_err(Refusal::Parse)?;
        // Telegram does not name the bot in an update: it is this one.
        for item in &mut items {
            match item {
                SocialItem::Message(m) => m.account = Some(state.bot.clone()),
                SocialItem::Edit(e) => e.account = Some(state.bot.clone()),
                _ => {}
            }
        }
        state.webhook.store(items).await
    }
    .await;
    state.webhook.answer(result)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(bot: Option<&str>) -> TelegramConfig {
        TelegramConfig {
            name: "telegram".into(),
            bot: bot.map(str::to_owned),
            bot_token: switchboard_channel::Secret::Inline("7012345678:AAHdqTcvCH1vGWJx".into()),
            secret_token: switchboard_channel::Secret::Inline("0123456789abcdef_-".into()),
            api_url: default_api_url(),
            max_body_bytes: default_max_body(),
        }
    }

    /// The bot's username is every event's address: one the intake would
    /// refuse (every message answered 200 and lost) is a configuration error.
    #[test]
    fn a_bot_name_the_intake_cannot_keep_is_refused() {
        config(Some("shop_bot")).validate().unwrap();
        config(None).validate().unwrap();
        let e = config(Some(&"b".repeat(400))).validate().unwrap_err();
        assert!(e.to_string().contains("channels.telegram.bot"), "{e}");
        config(Some("")).validate().unwrap_err();
    }
}
