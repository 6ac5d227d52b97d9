//! Replies on their way back to the customer.

use crate::{ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, Timestamp};
use serde::{Deserialize, Serialize};

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
    /// The provider ids of the customer's earlier messages in the
    /// conversation, oldest first, without `in_reply_to`: the thread an
    /// email reply names in its References. Empty on other channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    pub created_at: Timestamp,
}

/// How an adapter settles one outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The provider accepted it; `provider_message_id` when it gave one.
    Delivered { provider_message_id: Option<String> },
    /// It can never be delivered (e.g. a closed messaging window, an unknown
    /// recipient); the agent is shown `reason`.
    Failed { reason: String },
}
