//! Replies on their way back to the customer.

use crate::{ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, Timestamp};
use serde::{Deserialize, Serialize};

/// The attribute of an inbound message that names the thread it continues:
/// provider ids, space-separated, oldest first (an email's References, or
/// its one In-Reply-To). A reply to the message names them, then the
/// message's own id (RFC 5322 §3.6.4).
pub const THREAD_ATTRIBUTE: &str = "email_references";

/// A message an agent (or Switchboard itself) sends to a customer. It is put
/// in the outbox of the adapter named by `source`, which delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    pub message_id: MessageId,
    pub contact_id: ContactId,
    pub conversation_id: ConversationId,
    pub channel: ChannelKind,
    /// The adapter instance that delivers it: the one the contact came in on.
    pub source: String,
    /// The address the customer wrote to; replies go out from it.
    pub from_address: String,
    pub to: CustomerIdentity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
    /// The provider id of the customer message this answers, for threading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The thread the message answered continues ([`THREAD_ATTRIBUTE`] of
    /// the message `in_reply_to` names), oldest first: an email reply's
    /// References are these, then `in_reply_to`. Empty on other channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    pub created_at: Timestamp,
    /// Sent by Switchboard itself (an acknowledgement, an after-hours or
    /// overflow-step answer), not by a person: an email carries
    /// `Auto-Submitted: auto-replied` (RFC 3834), so that the customer's
    /// autoresponder does not answer it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automatic: bool,
}

impl DeliveryOutcome {
    /// Delivered, with the provider's id when it gave one (one part).
    pub fn delivered(provider_message_id: Option<String>) -> DeliveryOutcome {
        DeliveryOutcome::Delivered {
            provider_message_id,
            earlier_ids: Vec::new(),
        }
    }
}

/// How an adapter settles one outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The provider accepted it; `provider_message_id` when it gave one.
    /// A reply sent in several parts (a long text cut to a messenger's
    /// limit): the last part's id, and the earlier parts' in
    /// `earlier_ids`, so that a receipt for any part finds the reply.
    Delivered {
        provider_message_id: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        earlier_ids: Vec<String>,
    },
    /// It can never be delivered (e.g. a closed messaging window, an unknown
    /// recipient); the agent is shown `reason`.
    Failed { reason: String },
}
