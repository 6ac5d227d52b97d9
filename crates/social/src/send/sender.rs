//! One configured account's sender.

use super::http::{self, Answer};
use super::text::{self, MAX_PARTS, TextLimit};
use super::{FailureKind, Progress, SendOutcome, generic, meta, telegram};
use crate::Platform;
use std::fmt;
use std::time::{Duration, Instant};
use switchboard_channel::SecretValue;
use switchboard_core::OutboundMessage;
use tracing::Instrument;

/// How to reach one account's send API. Plain values: the adapter's
/// configuration resolves secrets and fills this in.
#[derive(Clone)]
pub struct SendConfig {
    /// Which API: Messenger, Instagram and WhatsApp use the Graph API,
    /// Telegram the Bot API, Generic our signed webhook.
    pub platform: Platform,
    /// The account replies go out from, matched against
    /// `OutboundMessage::from_address`: the Facebook page id, the Instagram
    /// professional account id, the WhatsApp phone number id, the Telegram
    /// bot's name (or empty); empty for the generic bridge, whose one
    /// sender replies for every account.
    pub account: String,
    /// The API base URL, without a trailing slash: default
    /// `https://graph.facebook.com/v21.0` for Meta and
    /// `https://api.telegram.org` for Telegram. For Generic the full URL
    /// replies are POSTed to (required). Tests point it at a local server.
    pub url: Option<String>,
    /// Meta: the page (or system user) access token. Telegram: the bot token.
    /// Generic: the HMAC secret replies are signed with.
    pub secret: SecretValue,
    /// The most one request may take, connection included.
    pub timeout: Duration,
    /// Messenger and Instagram: send as `MESSAGE_TAG` `HUMAN_AGENT`, which
    /// Meta allows for replies by a person up to 7 days after the customer's
    /// last message (the app needs Meta's Human Agent permission). Otherwise
    /// replies are `RESPONSE`s, accepted within 24 hours.
    pub human_agent_tag: bool,
}

/// Without the URL's password and query values (a generic bridge may take
/// its token there).
impl std::fmt::Debug for SendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let SendConfig {
            platform,
            account,
            url,
            secret,
            timeout,
            human_agent_tag,
        } = self;
        f.debug_struct("SendConfig")
            .field("platform", platform)
            .field("account", account)
            .field(
                "url",
                &url.as_deref().map(switchboard_channel::net::redact_url_all),
            )
            .field("secret", secret)
            .field("timeout", timeout)
            .field("human_agent_tag", human_agent_tag)
            .finish()
    }
}

impl SendConfig {
    /// A configuration with the defaults: the provider's public URL, a 15 s
    /// timeout, no human agent tag.
    pub fn new(platform: Platform, account: &str, secret: SecretValue) -> SendConfig {
        SendConfig {
            platform,
            account: account.to_owned(),
            url: None,
            secret,
            timeout: DEFAULT_TIMEOUT,
            human_agent_tag: false,
        }
    }
}

/// The default time one send request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{platform} account {account:?}: {reason}")]
    Config {
        platform: &'static str,
        account: String,
        reason: String,
    },
    #[error("two senders for {platform} account {account:?}")]
    Duplicate {
        platform: &'static str,
        account: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The HTTP client senders share (one connection pool): rustls with the
/// Mozilla roots compiled in (no OpenSSL, no system store needed), no
/// redirects (a send API that redirects is misconfigured, and a redirected
/// POST would lose its body), `connect_timeout` on every connection.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, SendError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SendError::Client(e.without_url().to_string()))
}

/// The platform-specific part of a sender.
pub(crate) enum Api {
    Meta(meta::MetaApi),
    Telegram(telegram::TelegramApi),
    Generic(generic::GenericApi),
}

/// Sends replies from one account. Cheap to share (`Arc`); holds no state
/// between calls.
pub struct Sender {
    platform: Platform,
    account: String,
    timeout: Duration,
    client: reqwest::Client,
    api: Api,
}

impl fmt::Debug for Sender {
    // No URL (Telegram's holds the token), no secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("platform", &self.platform.as_str())
            .field("account", &self.account)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Checks `config` and builds the sender on `client` (see
    /// [`http_client`]).
    pub fn new(config: SendConfig, client: reqwest::Client) -> Result<Sender, SendError> {
        let error = |reason: &str| SendError::Config {
            platform: config.platform.as_str(),
            account: config.account.clone(),
            reason: reason.to_owned(),
        };
        if config.timeout.is_zero() {
            return Err(error("the timeout must be more than zero"));
        }
        let api = match config.platform {
            Platform::Messenger | Platform::Instagram | Platform::WhatsApp => {
                Api::Meta(meta::MetaApi::new(&config).map_err(|e| error(&e))?)
            }
            Platform::Telegram => {
                Api::Telegram(telegram::TelegramApi::new(&config).map_err(|e| error(&e))?)
            }
            Platform::Generic => {
                Api::Generic(generic::GenericApi::new(&config).map_err(|e| error(&e))?)
            }
        };
        Ok(Sender {
            platform: config.platform,
            account: config.account,
            timeout: config.timeout,
            client,
            api,
        })
    }

    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The account it sends from (`SendConfig::account`).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The most one request takes.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends the whole reply (every part, see [`text`]).
    pub async fn send(&self, msg: &OutboundMessage) -> SendOutcome {
        self.send_resuming(msg, &mut Progress::default()).await
    }

    /// Sends the parts of the reply `progress` has not seen accepted yet, in
    /// order, stopping at the first that is not accepted; `progress` is
    /// updated as parts are accepted. `Delivered` once every part is.
    pub async fn send_resuming(
        &self,
        msg: &OutboundMessage,
        progress: &mut Progress,
    ) -> SendOutcome {
        self.send_until(msg, progress, None).await
    }

    /// As [`Sender::send_resuming`], but starts no part that could still be
    /// running at `deadline` (its timeout counted): then it answers
    /// `Retry { after: Some(0) }` with the parts sent so far in `progress`.
    pub async fn send_until(
        &self,
        msg: &OutboundMessage,
        progress: &mut Progress,
        deadline: Option<Instant>,
    ) -> SendOutcome {
        let span = tracing::info_span!(
            "social_send",
            platform = self.platform.as_str(),
            contact_id = %msg.contact_id,
            message_id = %msg.message_id,
        );
        async {
            if msg.to.scheme != self.platform.as_str() {
                let refusal = SendOutcome::failed(
                    FailureKind::Unroutable,
                    None,
                    format!(
                        "Not sent: a {} customer cannot be reached through {}.",
                        msg.to.scheme,
                        self.platform.as_str()
                    ),
                );
                http::record_unsent(self.platform, &refusal);
                return refusal;
            }
            let parts = match self.parts(&msg.text) {
                Ok(parts) => parts,
                Err(refusal) => {
                    http::record_unsent(self.platform, &refusal);
                    return refusal;
                }
            };
            let total = parts.len();
            for (index, part) in parts.into_iter().enumerate().skip(progress.parts_sent) {
                if deadline.is_some_and(|d| Instant::now() + self.timeout > d) {
                    return SendOutcome::pause(format!("paused after part {index} of {total}"));
                }
                match self.send_part(msg, part).await {
                    SendOutcome::Delivered {
                        provider_message_id,
                    } => {
                        progress.parts_sent = index + 1;
                        if let Some(id) = provider_message_id
                            && let Some(earlier) = progress.provider_message_id.replace(id)
                        {
                            progress.earlier_ids.push(earlier);
                        }
                    }
                    other => return other,
                }
            }
            SendOutcome::Delivered {
                provider_message_id: progress.provider_message_id.clone(),
            }
        }
        .instrument(span)
        .await
    }

    /// The reply cut to the platform's limit, or why it cannot be sent.
    fn parts<'a>(&self, text: &'a str) -> Result<Vec<&'a str>, SendOutcome> {
        let limit = TextLimit::of(self.platform);
        let parts = text::split(text, limit);
        if parts.is_empty() {
            return Err(SendOutcome::failed(
                FailureKind::Empty,
                None,
                "Not sent: the reply is empty.",
            ));
        }
        if parts.len() > MAX_PARTS {
            return Err(SendOutcome::failed(
                FailureKind::TooLong,
                None,
                format!(
                    "Not sent: the reply is too long for {} ({} characters would take {} messages; \
                     one reply is sent as at most {MAX_PARTS}). Shorten it or send it in several replies.",
                    self.platform.as_str(),
                    text.chars().count(),
                    parts.len()
                ),
            ));
        }
        Ok(parts)
    }

    async fn send_part(&self, msg: &OutboundMessage, part: &str) -> SendOutcome {
        let started = Instant::now();
        let request = match &self.api {
            Api::Meta(api) => api.request(&self.client, msg, part),
            Api::Telegram(api) => api.request(&self.client, msg, part),
            Api::Generic(api) => api.request(&self.client, msg, part),
        };
        let outcome = match request {
            Err(refusal) => refusal,
            Ok(request) => match http::exchange(request.timeout(self.timeout)).await {
                Err(retry) => retry,
                Ok(answer) => {
                    let secrets = self.secrets();
                    self.read(msg, &answer.redacted(&secrets))
                        .redacted(&secrets)
                }
            },
        };
        http::record(self.platform, started, &outcome);
        outcome
    }

    /// What must never show in a reason: the account's credentials as
    /// they travel in the request.
    fn secrets(&self) -> Vec<String> {
        match &self.api {
            Api::Meta(api) => api.secrets(),
            Api::Telegram(api) => api.secrets(),
            Api::Generic(api) => api.secrets(),
        }
    }

    fn read(&self, msg: &OutboundMessage, answer: &Answer) -> SendOutcome {
        match &self.api {
            Api::Meta(api) => api.read(answer),
            Api::Telegram(_) => telegram::read(msg, answer),
            Api::Generic(_) => generic::read(answer),
        }
    }
}
