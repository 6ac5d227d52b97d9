//! Switchboard's voice channel: call events from a PBX (generic CTI) or
//! Twilio (issue 7).
//!
//! Two adapters implement `switchboard_channel::ChannelAdapter` (see
//! `docs/architecture.md`, "The channel plug-in contract"):
//! [`cti_channel`] (`type = "cti"`) and [`twilio_channel`]
//! (`type = "twilio"`). Under them, the layer without I/O, in the order a
//! request meets it (bodies are first limited to [`MAX_BODY_BYTES`] while
//! they are read):
//!
//! 1. [`verify`]: is the request from the provider? Twilio's
//!    `X-Twilio-Signature` over the URL and the form parameters
//!    ([`verify_twilio_signature`], [`verify_twilio_json`]), or the CTI
//!    shared token ([`verify_token`]); a refusal is a [`SignatureError`]
//!    (HTTP 401/403, nothing stored). A Twilio form body is decoded first
//!    ([`parse_form`]), because the signature covers the decoded parameters.
//! 2. [`parse`]: what does it say? [`parse_twilio`] → [`TwilioCall`],
//!    [`parse_cti`] → [`CtiEvent`]; a body that cannot be read is a
//!    [`ParseError`] (HTTP 400). Both map to one provider-neutral
//!    [`CallEvent`] ([`call`]).
//! 3. [`state`]: a model of a call's phases, [`CallState`] (ringing →
//!    queued → offered → connected → ended, late and out-of-order events
//!    dropped as [`Stale`]). The adapters do not use it yet: they order a
//!    call's events by routing's own state (offered, assigned, closed),
//!    which every instance shares.
//! 4. [`inbound`]: a ringing inbound call becomes an `InboundEvent` for the
//!    intake ([`inbound_event`]), with the caller's number normalized
//!    ([`phone`]). Only once the intake has stored it may the adapter answer.
//! 5. [`reply`]: what we answer: TwiML that holds, connects or rejects
//!    ([`twiml_hold`], [`twiml_connect`], [`twiml_reject`]), or the CTI JSON
//!    answer ([`CtiReply`]).
//!
//! The HTTP routes, the configuration, the store of call states and the
//! PBX callback build on these types.
#![forbid(unsafe_code)]

pub mod call;
pub mod cti_channel;
pub mod inbound;
mod limit;
pub mod parse;
pub mod phone;
pub mod reply;
pub mod state;
pub mod twilio_channel;
pub mod verify;

pub use call::{CallEvent, CallEventKind, Direction, EndCause, Provider};
pub use cti_channel::CtiConfig;
pub use inbound::{NotInbound, inbound_event};
pub use parse::cti::{CtiEvent, CtiEventKind, CtiFormat, HangupCause, parse_cti};
pub use parse::twilio::{CallStatus, DialCallStatus, DialResult, TwilioCall, parse_twilio};
pub use parse::{
    MAX_BODY_BYTES, MAX_FIELDS, MAX_NAME_BYTES, MAX_VALUE_BYTES, ParseError, parse_form,
};
pub use phone::{Caller, classify_caller, normalize_phone};
pub use reply::{
    CtiReply, DialOptions, HOLD_PAUSE_SECS, Hold, RejectReason, ReplyError, Target, twiml_connect,
    twiml_hangup, twiml_hold, twiml_proceed, twiml_reject,
};
pub use state::{CallState, Ending, Phase, RouteStep, Stale, Transition};
pub use twilio_channel::TwilioConfig;
pub use verify::{
    SignatureError, TWILIO_SIGNATURE_HEADER, twilio_signature, verify_token, verify_twilio_json,
    verify_twilio_signature,
};

#[cfg(test)]
mod corpus_tests;

/// A configuration error naming the channel's key.
pub(crate) fn config_error(
    name: &str,
    key: &str,
    problem: &str,
) -> switchboard_channel::ChannelError {
    switchboard_channel::ChannelError::Config(format!("channels.{name}.{key}: {problem}"))
}
