//! Agents' replies, sent back through each provider's API.
//!
//! Two layers:
//!
//! - A [`Sender`] per configured account (a Facebook page, an Instagram
//!   account, a WhatsApp phone number id, a Telegram bot, a generic bridge)
//!   turns one [`OutboundMessage`](switchboard_core::OutboundMessage) into
//!   HTTP requests and reads the provider's answer as a [`SendOutcome`]:
//!   delivered, retry later, or failed for good. It holds no state between
//!   calls; [`Senders`] picks the sender of a message.
//! - [`deliver`]: the loop that takes replies from the adapter's durable
//!   outbox, sends them in order per conversation, retries and settles them.
//!
//! Provider specifics are in [`meta`] (Messenger, Instagram, WhatsApp Cloud:
//! one Graph API error format), [`telegram`] and [`generic`]. Long replies
//! are cut into several messages ([`text`]).
//!
//! **Secrets.** Access tokens travel in an `Authorization` header, never in
//! a URL, except Telegram's bot token, which the Bot API puts in the path:
//! that URL is never logged, and every `reqwest` error is stripped of its URL
//! (`without_url`) before it becomes a reason or a log line.
//!
//! **Telemetry.** Every HTTP request counts in
//! `switchboard_social_sends_total{platform, outcome}` (`delivered`, `retry`,
//! `failed`) and times in `switchboard_social_send_seconds{platform}`;
//! permanent failures also count in
//! `switchboard_social_send_failures_total{platform, kind}`
//! ([`FailureKind::as_str`]).

pub mod deliver;
pub mod generic;
mod http;
pub mod meta;
mod sender;
mod senders;
pub mod telegram;
pub mod text;

pub use deliver::{Deliverer, DeliveryError, DeliverySettings};
pub use sender::{SendConfig, SendError, Sender, http_client};
pub use senders::{Senders, Unroutable, platform_of};

use std::time::Duration;
use switchboard_core::DeliveryOutcome;

/// What became of one attempt to send a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted it. `provider_message_id` is its id for the
    /// message (for a reply sent in several parts, the last part's id: a
    /// read receipt for it covers the whole reply).
    Delivered { provider_message_id: Option<String> },
    /// A temporary failure (rate limit, provider error, timeout, network):
    /// try again, after `after` when the provider said how long to wait.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// It can never be delivered as it is. `reason` is a sentence for the
    /// agent; `code` the provider's error code when it gave one.
    Failed {
        kind: FailureKind,
        code: Option<i64>,
        reason: String,
    },
}

impl SendOutcome {
    /// The outcome label for metrics: `delivered`, `retry` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Retry { .. } => "retry",
            Self::Failed { .. } => "failed",
        }
    }

    /// The final outcome to record on the message, with the ids of the
    /// parts `progress` saw accepted before the last; `None` for a retry.
    pub fn to_delivery_outcome(&self, progress: &Progress) -> Option<DeliveryOutcome> {
        match self {
            Self::Delivered {
                provider_message_id,
            } => Some(DeliveryOutcome::Delivered {
                provider_message_id: provider_message_id.clone(),
                earlier_ids: progress.earlier_ids.clone(),
            }),
            Self::Retry { .. } => None,
            Self::Failed { reason, .. } => Some(DeliveryOutcome::Failed {
                reason: reason.clone(),
            }),
        }
    }

    /// The outcome with every one of `secrets` in its reason replaced by
    /// `<redacted>`: a provider's (or a proxy's) error page may echo the
    /// request's path or headers, and the reason goes to logs and to the
    /// agent's transcript.
    pub(crate) fn redacted(mut self, secrets: &[String]) -> Self {
        if let Self::Retry { reason, .. } | Self::Failed { reason, .. } = &mut self {
            for secret in secrets.iter().filter(|s| s.len() >= 8) {
                if reason.contains(secret.as_str()) {
                    *reason = reason.replace(secret.as_str(), "<redacted>");
                }
            }
        }
        self
    }

    pub(crate) fn failed(kind: FailureKind, code: Option<i64>, reason: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            code,
            reason: reason.into(),
        }
    }

    /// A temporary failure; `after` is the provider's hint (`Retry-After`,
    /// Telegram's `retry_after`), a minimum: the backoff still grows with
    /// the attempts, and a hint of 0 is none (it would retry in a tight
    /// loop until `max_attempts` ran out).
    pub(crate) fn retry(after: Option<Duration>, reason: impl Into<String>) -> Self {
        Self::Retry {
            after: after.filter(|a| !a.is_zero()),
            reason: reason.into(),
        }
    }

    /// The send stopped between parts of a long reply (its time ran out):
    /// to be resumed at once, not after a backoff.
    pub(crate) fn pause(reason: impl Into<String>) -> Self {
        Self::Retry {
            after: Some(Duration::ZERO),
            reason: reason.into(),
        }
    }
}

/// Why a reply can never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The platform's customer-service window is closed (WhatsApp 131047,
    /// Messenger/Instagram code 10 "outside of allowed window"): the
    /// customer must write first.
    WindowClosed,
    /// The customer blocked the page or bot.
    Blocked,
    /// The recipient does not exist or cannot receive messages (WhatsApp
    /// 131026, Messenger 551, Telegram "chat not found").
    InvalidRecipient,
    /// The provider refused our access token or bot token (Graph 190,
    /// Telegram 401). An operator must fix the configuration.
    BadToken,
    /// The token lacks a permission, or the account is restricted.
    Forbidden,
    /// The reply is empty.
    Empty,
    /// The reply needs more messages than one reply may be cut into.
    TooLong,
    /// No sender is configured for the message's platform and account.
    Unroutable,
    /// Retried for longer, or more often, than allowed.
    GaveUp,
    /// Any other refusal (HTTP 4xx).
    Rejected,
}

impl FailureKind {
    /// A short, bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WindowClosed => "window_closed",
            Self::Blocked => "blocked",
            Self::InvalidRecipient => "invalid_recipient",
            Self::BadToken => "bad_token",
            Self::Forbidden => "forbidden",
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::Unroutable => "unroutable",
            Self::GaveUp => "gave_up",
            Self::Rejected => "rejected",
        }
    }
}

/// How far a reply in several parts got: the deliver loop keeps it between
/// attempts so a retry resumes after the last part the provider accepted
/// instead of sending the earlier ones again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Parts the provider accepted.
    pub parts_sent: usize,
    /// The provider's id of the last accepted part.
    pub provider_message_id: Option<String>,
    /// The ids of the parts accepted before it (at most `MAX_PARTS`):
    /// receipts come for each part.
    pub earlier_ids: Vec<String>,
}
