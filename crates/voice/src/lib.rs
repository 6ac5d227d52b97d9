//! Switchboard's voice channel: call events from a PBX (generic CTI) or Twilio (issue 7).
//!
//! Reserved. This crate will implement `switchboard_channel::ChannelAdapter`
//! (see `docs/architecture.md`, "The channel plug-in contract") and be
//! registered with one line in the daemon's channel list. Until then it holds
//! nothing, and the daemon refuses a `[[channels]]` entry of this type.
#![forbid(unsafe_code)]
