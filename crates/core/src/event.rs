//! The events in a contact's life, as recorded on its timeline.

use crate::{AgentId, ContactId, ConversationId, MessageId, Timestamp};
use serde::{Deserialize, Serialize};

/// Something that happened to a contact. Written to the contact's record and
/// published to whoever watches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContactEvent {
    /// The contact was created by the intake and queued for routing.
    Created {
        contact_id: ContactId,
        conversation_id: ConversationId,
        at: Timestamp,
    },
    /// A customer message was appended to the contact's conversation.
    MessageReceived {
        contact_id: ContactId,
        message_id: MessageId,
        at: Timestamp,
    },
    /// The router put the contact in a queue to wait for an agent.
    Queued {
        contact_id: ContactId,
        queue: String,
        at: Timestamp,
    },
    /// The contact was assigned to an agent.
    Assigned {
        contact_id: ContactId,
        agent_id: AgentId,
        at: Timestamp,
    },
    /// The contact was closed.
    Closed {
        contact_id: ContactId,
        disposition: Option<String>,
        at: Timestamp,
    },
}
