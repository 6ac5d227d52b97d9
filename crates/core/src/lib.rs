//! Switchboard's core model.
//!
//! Everything the other crates agree on lives here and nothing else does:
//! no I/O, no Redis, no HTTP. A channel adapter turns what it receives into an
//! [`InboundEvent`]; the intake stores it and answers with an
//! [`IntakeReceipt`]; agents' replies travel back as [`OutboundMessage`]s.
#![forbid(unsafe_code)]

pub mod agent;
pub mod channel;
pub mod customer;
pub mod event;
pub mod ids;
pub mod inbound;
pub mod outbound;
pub mod time;

pub use agent::{Agent, Presence, Skill};
pub use channel::ChannelKind;
pub use customer::{CustomerIdentity, IdentityError};
pub use event::ContactEvent;
pub use ids::{AgentId, ContactId, ConversationId, IdError, MessageId, Partition};
pub use inbound::clip;
pub use inbound::{
    Change, InboundEvent, InboundUpdate, IntakeError, IntakeOutcome, IntakeReceipt, InvalidEvent,
    MAX_CUSTOMER_NAME_BYTES, ReplyStatus, UpdateOutcome,
};
pub use outbound::{DeliveryOutcome, OutboundMessage, THREAD_ATTRIBUTE};
pub use time::Timestamp;

/// An error and its sources, as one line (`outer: cause: root`): what a log
/// or a recorded reason needs when an error's own text is generic (reqwest
/// says only "error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
