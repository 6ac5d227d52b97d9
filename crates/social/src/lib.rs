//! Switchboard's social channel: Meta, Telegram and generic signed webhooks, with replies through each provider's API (issue 6).
//!
//! The crate implements `switchboard_channel::ChannelAdapter` (see
//! `docs/architecture.md`, "The channel plug-in contract"), registered with
//! one line each in the daemon's channel list (`meta`, `telegram`,
//! `webhook`).
//!
//! What is here is the layer without I/O, in the order a delivery meets it:
//!
//! 1. [`verify`]: is the delivery from the provider? Checked on the raw body
//!    bytes and headers ([`verify_meta_signature`], [`verify_telegram_token`],
//!    [`verify_generic`]); a refusal is a [`SignatureError`] (HTTP 401,
//!    nothing stored).
//! 2. [`parse`]: what does it say? Each provider's body becomes a list of
//!    [`SocialItem`]s ([`parse_meta`], [`parse_telegram`], [`parse_generic`]);
//!    a body that cannot be read is a [`ParseError`] (HTTP 400).
//! 3. [`item`]: the items. A [`SocialMessage`] becomes an
//!    `InboundEvent` for the intake ([`SocialMessage::into_inbound`]); only
//!    once the intake has stored every message of a delivery may the adapter
//!    answer 2xx. Edits, receipts and echoes concern messages that exist
//!    already; ignored events are acknowledged and counted.
//!
//! The HTTP routes, the configuration and the outbound replies build on
//! these types.
#![forbid(unsafe_code)]

pub mod item;
pub mod media;
pub mod parse;
pub mod send;
pub mod verify;
pub mod webhook;

pub use item::{
    AttachmentKind, AttachmentRef, Echo, GeoPoint, Ignored, MessageEdit, Platform, Receipt,
    ReceiptStatus, ReceiptTarget, SocialItem, SocialMessage,
};
pub use parse::{MAX_EVENTS, ParseError, parse_generic, parse_meta, parse_telegram};
pub use verify::{
    SignatureError, generic_signature, verify_generic, verify_meta_signature, verify_telegram_token,
};
pub use webhook::generic::GenericConfig;
pub use webhook::meta::{MetaAccount, MetaConfig};
pub use webhook::telegram::TelegramConfig;

#[cfg(test)]
mod corpus_tests;
