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
pub use outbound::{DeliveryOutcome, OutboundMessage};
pub use time::Timestamp;
