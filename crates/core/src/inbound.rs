//! What a channel hands to the intake, and what it gets back.

use crate::{ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A normalized inbound message from a customer. Every channel produces
/// these; the intake stores them durably before anyone acknowledges the
/// sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundEvent {
    /// The kind of channel (capacity and routing are per kind).
    pub channel: ChannelKind,
    /// The configured name of the adapter instance that received it. Replies
    /// go back out through the same instance. Adapters set it; a value sent
    /// by an outside caller is overwritten.
    #[serde(default)]
    pub source: String,
    /// The address the customer wrote to: a mailbox, a page or phone-number
    /// id, a widget id, a called number. Routing rules match on it.
    #[serde(default)]
    pub address: String,
    /// Who wrote.
    pub customer: CustomerIdentity,
    /// The customer's display name, when the channel tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// The provider's id for this message (Message-ID, `wamid.…`,
    /// `update_id`, a widget's client message id). Repeats of the same id from
    /// the same source are stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message text, as plain text.
    #[serde(default)]
    pub text: String,
    /// The customer's language, a BCP 47 tag, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Free attributes for routing rules (e.g. `tier = "vip"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// When the provider says the message was sent; the intake's clock when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// Always a new contact, even when the customer has an open
    /// conversation on this source: a phone call is one contact of its
    /// own (two calls from one number are two contacts). Later messages
    /// of the customer join the newest conversation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_contact: bool,
    /// The ids of the attachments this message brought, as the channel's
    /// media source serves them: the agent API serves a conversation only
    /// the attachments its messages name here, never one a customer merely
    /// wrote into a text. Adapters set it; the intake API drops what an
    /// outside caller sends. Always written (an empty list too), so that a
    /// stored message tells that it had none.
    #[serde(default)]
    pub media: Vec<String>,
}

/// Limits an event must fit before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    pub max_text_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_text_bytes: 64 * 1024,
        }
    }
}

/// Why an event was refused. The sender gets this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("customer: {0}")]
    Customer(#[from] crate::IdentityError),
    #[error("source must be 1 to 64 characters of A-Za-z0-9._-")]
    Source,
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("an event needs text or a subject")]
    Empty,
    #[error("attributes: at most 32, keys 1 to 64 bytes, values at most 1024 bytes")]
    Attributes,
    #[error("media: at most 64 ids of 1 to 512 bytes")]
    Media,
}

/// Attachments one message may name, and the longest media id.
pub const MAX_MEDIA: usize = 64;
pub const MAX_MEDIA_ID_BYTES: usize = 512;

/// The longest customer name an event may carry, in bytes.
pub const MAX_CUSTOMER_NAME_BYTES: usize = 256;

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary: how channels fit what customers write into the limits above.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

impl InboundEvent {
    /// Checks the event against `limits`, normalizing the customer identity.
    pub fn validate(mut self, limits: EventLimits) -> Result<Self, InvalidEvent> {
        self.customer = self.customer.validated()?;
        if !source_ok(&self.source) {
            return Err(InvalidEvent::Source);
        }
        // A blank id is no id: as a dedupe key it would make every later
        // message of the source (in its partition) a "duplicate" of the
        // first, and drop it.
        self.provider_message_id = self.provider_message_id.filter(|id| !id.trim().is_empty());
        let short_fields: [(&'static str, Option<&str>, usize); 6] = [
            ("address", Some(&self.address), 320),
            (
                "customer_name",
                self.customer_name.as_deref(),
                MAX_CUSTOMER_NAME_BYTES,
            ),
            (
                "provider_message_id",
                self.provider_message_id.as_deref(),
                512,
            ),
            ("subject", self.subject.as_deref(), 1024),
            ("language", self.language.as_deref(), 35),
            ("text", Some(&self.text), limits.max_text_bytes),
        ];
        for (field, value, max) in short_fields {
            if value.is_some_and(|v| v.len() > max) {
                return Err(InvalidEvent::TooLong { field, max });
            }
        }
        if self.text.trim().is_empty()
            && self.subject.as_deref().is_none_or(|s| s.trim().is_empty())
        {
            return Err(InvalidEvent::Empty);
        }
        let media_ok = self.media.len() <= MAX_MEDIA
            && self
                .media
                .iter()
                .all(|m| !m.is_empty() && m.len() <= MAX_MEDIA_ID_BYTES);
        if !media_ok {
            return Err(InvalidEvent::Media);
        }
        let attrs_ok = self.attributes.len() <= 32
            && self
                .attributes
                .iter()
                .all(|(k, v)| !k.is_empty() && k.len() <= 64 && v.len() <= 1024);
        if !attrs_ok {
            return Err(InvalidEvent::Attributes);
        }
        Ok(self)
    }
}

/// What the intake did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntakeOutcome {
    /// A new contact (and conversation) was created and queued for routing.
    Created,
    /// The customer had an open conversation on this source; the message was
    /// appended to it.
    Appended,
    /// The provider message id was seen before; nothing was stored and the
    /// ids are those of the first delivery.
    Duplicate,
}

impl IntakeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Appended => "appended",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The durable ids of a stored inbound message. Having one means Redis has
/// the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReceipt {
    pub outcome: IntakeOutcome,
    pub contact_id: ContactId,
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    /// The message's position in its conversation's log (a Redis stream id):
    /// the cursor for exact replay.
    pub seq: String,
}

/// Why the intake did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The event is malformed; retrying will not help.
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    /// The store cannot be reached or did not answer in time. Nothing is
    /// acknowledged; the sender should retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// The intake is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
}

impl IntakeError {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Unavailable(_) => "unavailable",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// A change a provider reports to a message that exists already: the
/// customer edited a message, or the provider tells how one of our replies
/// fared. Never creates a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundUpdate {
    pub channel: ChannelKind,
    /// The adapter's configured name (set by the adapter, as for events).
    #[serde(default)]
    pub source: String,
    /// The customer of the conversation concerned.
    pub customer: CustomerIdentity,
    /// The provider's id of the message concerned: the customer's message
    /// for an edit, our reply (as the provider named it when it accepted
    /// it) for a status.
    pub provider_message_id: String,
    /// A unique id of this update, when the provider gives one: a repeated
    /// delivery of it is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_id: Option<String>,
    pub change: Change,
    /// When the provider says it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The customer edited their message; this is the new text.
    Edited { text: String },
    /// The customer's side answered one of our replies automatically (an
    /// out-of-office, RFC 3834): recorded in the conversation next to the
    /// reply, never routed and never answered.
    AutoReply { text: String },
    /// Our reply reached a new state at the provider.
    Status {
        status: ReplyStatus,
        /// The provider's explanation of a failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// How far a reply got. Later states never go back to earlier ones
/// (providers deliver receipts out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl ReplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

impl InboundUpdate {
    /// Checks the update against `limits`, normalizing the customer identity.
    pub fn validate(mut self, limits: EventLimits) -> Result<Self, InvalidEvent> {
        self.customer = self.customer.validated()?;
        if !source_ok(&self.source) {
            return Err(InvalidEvent::Source);
        }
        // As for events: a blank update id is none (no dedupe), not one key
        // shared by every update of the source.
        self.update_id = self.update_id.filter(|id| !id.trim().is_empty());
        let fields: [(&'static str, Option<&str>, usize); 3] = [
            ("provider_message_id", Some(&self.provider_message_id), 512),
            ("update_id", self.update_id.as_deref(), 512),
            (
                "text",
                match &self.change {
                    Change::Edited { text } | Change::AutoReply { text } => Some(text),
                    Change::Status { detail, .. } => detail.as_deref(),
                },
                limits.max_text_bytes,
            ),
        ];
        for (field, value, max) in fields {
            if value.is_some_and(|v| v.len() > max) {
                return Err(InvalidEvent::TooLong { field, max });
            }
        }
        if self.provider_message_id.is_empty() {
            return Err(InvalidEvent::Empty);
        }
        Ok(self)
    }
}

/// What the intake did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// Recorded on the message.
    Applied,
    /// This update was applied before.
    Duplicate,
    /// No message with that provider id is known (never seen, or older than
    /// the dedupe window); nothing was stored.
    UnknownMessage,
    /// A status older than the one recorded (e.g. `delivered` after `read`).
    Stale,
    /// A provider's status for a reply not settled yet (its receipt
    /// outran our record of the provider's answer): kept for a while and
    /// applied when the reply is settled. Social channels only.
    Early,
}

impl UpdateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::UnknownMessage => "unknown_message",
            Self::Stale => "stale",
            Self::Early => "early",
        }
    }
}

fn source_ok(source: &str) -> bool {
    !source.is_empty()
        && source.len() <= 64
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_respects_char_boundaries() {
        use super::clip;
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("абв", 3), "а");
        assert_eq!(clip("абв", 4), "аб");
        assert_eq!(clip("😀", 3), "");
        assert_eq!(clip("", 0), "");
    }

    use super::*;

    fn event() -> InboundEvent {
        InboundEvent {
            channel: ChannelKind::Chat,
            source: "website".into(),
            address: "widget-1".into(),
            customer: CustomerIdentity::new("visitor", "vs_1").expect("valid"),
            customer_name: None,
            provider_message_id: Some("m1".into()),
            subject: None,
            text: "Hello".into(),
            language: None,
            attributes: BTreeMap::new(),
            sent_at: None,
            new_contact: false,
            media: Vec::new(),
        }
    }

    #[test]
    fn valid_event_passes() {
        assert!(event().validate(EventLimits::default()).is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        let limits = EventLimits { max_text_bytes: 4 };
        assert_eq!(
            event().validate(limits),
            Err(InvalidEvent::TooLong {
                field: "text",
                max: 4
            })
        );
        let mut e = event();
        e.text = "  ".into();
        assert_eq!(e.validate(EventLimits::default()), Err(InvalidEvent::Empty));
        let mut e = event();
        e.source = "web site".into();
        assert_eq!(
            e.validate(EventLimits::default()),
            Err(InvalidEvent::Source)
        );
        let mut e = event();
        e.attributes.insert(String::new(), "x".into());
        assert_eq!(
            e.validate(EventLimits::default()),
            Err(InvalidEvent::Attributes)
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"channel":"chat","source":"w","customer":{"scheme":"visitor","value":"v"},"text":"hi","bogus":1}"#;
        assert!(serde_json::from_str::<InboundEvent>(json).is_err());
    }
}
