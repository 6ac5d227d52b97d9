//! Switchboard's email channel: email over LMTP/SMTP and IMAP in, SMTP out (issue 5).
//!
//! - [`parse`]: raw RFC 5322 bytes → what Switchboard needs (no I/O).
//! - [`listen`]: the LMTP/SMTP listener (the dialogue, STARTTLS, limits).
//! - [`imap`]: fetching from IMAP mailboxes with a durable checkpoint.
//! - [`ingest`]: parsed mail → the intake (contacts, auto replies, bounces).
//! - [`attachments`]: the attachment directory, served to agents.
//! - [`outbound`]: replies over SMTP (lettre) from the channel's outbox.
//! - [`config`]: `[[channels]] type = "email"`; the adapter is in `adapter`.
#![forbid(unsafe_code)]

mod adapter;
pub mod attachments;
pub mod config;
pub mod imap;
pub mod ingest;
pub mod listen;
pub mod outbound;
pub mod parse;
#[cfg(test)]
mod test_counters;

pub use config::EmailConfig;
