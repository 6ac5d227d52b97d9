//! What a provider told us about a call, whoever the provider is.
//!
//! Both parsers map into [`CallEvent`]: a Twilio webhook through
//! [`TwilioCall::call_event`](crate::TwilioCall::call_event), a CTI event
//! through [`CtiEvent::call_event`](crate::CtiEvent::call_event). The
//! [`CallState`](crate::CallState) machine orders them; a ringing inbound
//! call becomes an `InboundEvent` for the intake through
//! [`inbound_event`](crate::inbound_event).

use serde::{Deserialize, Serialize};
use switchboard_core::Timestamp;

/// Who reported the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Twilio's voice webhooks.
    Twilio,
    /// A PBX through the generic CTI API.
    Cti,
}

impl Provider {
    /// `twilio` or `cti`: a metrics label and the `provider` attribute of
    /// the contact.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twilio => "twilio",
            Self::Cti => "cti",
        }
    }
}

/// Which way a call goes, seen from the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A customer calls us: Twilio `inbound` (and `trunking-terminating`),
    /// CTI `in`.
    Inbound,
    /// We call out: Twilio `outbound-api`, `outbound-dial`
    /// (and `trunking-originating`), CTI `out`.
    Outbound,
}

/// One thing that happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub provider: Provider,
    /// The provider's id of the caller's call: Twilio `CallSid` (for an
    /// agent's leg, its `ParentCallSid`), CTI `callId`. Unique per provider.
    pub call_id: String,
    pub kind: CallEventKind,
    /// Twilio's `SequenceNumber` of a status callback (the order Twilio fired
    /// them in; they may arrive in another). `None` for CTI events, Twilio's
    /// incoming-call request, `<Dial>` action requests and the callbacks of
    /// an agent's leg (their numbers count another series).
    pub sequence: Option<u64>,
    /// When the provider says it happened (Twilio `Timestamp`).
    pub at: Option<Timestamp>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// A new call: Twilio's incoming-call request (`CallStatus=ringing`) or a
    /// `queued`/`ringing` status callback, CTI `newCall`.
    Ringing {
        /// The caller as the provider gives it (`From`, CTI `from`): a
        /// number, `anonymous`, a SIP URI, a `client:` identity.
        from: String,
        /// The number called (`To`, CTI `to`).
        to: String,
        direction: Direction,
        /// Twilio `CallerName` (when caller name lookup is on).
        caller_name: Option<String>,
        /// CTI `queue`: the PBX's queue name.
        queue: Option<String>,
    },
    /// Someone took the call: CTI `answer`; Twilio: the agent's leg was
    /// answered (its status callback with `CallStatus=in-progress`, or a
    /// `<Dial>` action with `DialCallStatus=completed|answered`). Twilio's
    /// own answering of the caller to play our TwiML is not this.
    Answered {
        /// Who answered: CTI `answeringNumber` (else the first `user`),
        /// Twilio the agent leg's `To` (`sip:…`, `client:…`, a number).
        by: Option<String>,
    },
    /// The agent we rang did not take the call; the caller is still on the
    /// line: a Twilio `<Dial>` action with `DialCallStatus` `no-answer`,
    /// `busy`, `failed` or `canceled`, or the agent leg's status callback
    /// with one of those.
    AgentMissed { cause: EndCause },
    /// The caller's call is over: a Twilio status callback with a final
    /// `CallStatus`, CTI `hangup`.
    Ended {
        cause: EndCause,
        /// Twilio `CallDuration` (seconds from answer to end).
        duration_secs: Option<u64>,
    },
}

impl CallEventKind {
    /// `ringing`, `answered`, `agent_missed` or `ended`: a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ringing { .. } => "ringing",
            Self::Answered { .. } => "answered",
            Self::AgentMissed { .. } => "agent_missed",
            Self::Ended { .. } => "ended",
        }
    }
}

/// Why a call (or an agent's leg of it) ended, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// Ended normally: Twilio `completed`, CTI `normalClearing`. A caller who
    /// hangs up while waiting ends `completed` too (Twilio had answered to
    /// play the hold); [`CallState`](crate::CallState) tells abandonment by
    /// the phase, not by the cause.
    Completed,
    /// Twilio `busy`, CTI `busy`.
    Busy,
    /// Twilio `no-answer`, CTI `noAnswer`.
    NoAnswer,
    /// The caller hung up before anyone answered: Twilio `canceled`, CTI
    /// `cancel`.
    Canceled,
    /// The call could not be set up: Twilio `failed`, CTI `congestion` and
    /// `notFound`.
    Failed,
    /// We refused the call (a blocked caller).
    Rejected,
    /// Anything else, as the provider named it (CTI `forwarded`, a cause
    /// some PBX invented, `unspecified` when none was given), at most 64
    /// bytes.
    Other(String),
}

impl EndCause {
    /// A short, bounded label for metrics (every `Other` is `other`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(Provider::Twilio.as_str(), "twilio");
        assert_eq!(Provider::Cti.as_str(), "cti");
        assert_eq!(EndCause::Other("forwarded".into()).as_str(), "other");
        assert_eq!(EndCause::NoAnswer.as_str(), "no_answer");
        assert_eq!(
            CallEventKind::AgentMissed {
                cause: EndCause::Busy
            }
            .as_str(),
            "agent_missed"
        );
    }
}
