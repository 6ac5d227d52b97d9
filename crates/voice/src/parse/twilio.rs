//! Twilio's voice webhooks, from their decoded form parameters
//! ([`parse_form`](super::parse_form), after
//! [`verify_twilio_signature`](crate::verify_twilio_signature)).
//!
//! One shape covers the three requests Twilio makes about a call:
//!
//! - the incoming-call request (the number's voice URL): `CallSid`,
//!   `AccountSid`, `From`, `To`, `CallStatus=ringing`, `Direction=inbound`,
//!   `ApiVersion`, often `Caller`/`Called` and geographic fields;
//! - status callbacks: the same plus `CallDuration` (final ones),
//!   `SequenceNumber`, `Timestamp`, `CallbackSource`, `StatusCallbackEvent`;
//!   an agent's leg we dialed carries `ParentCallSid` (the caller's call);
//! - the `<Dial>` action request: the caller's call plus `DialCallStatus`,
//!   `DialCallSid`, `DialCallDuration`.
//!
//! `CallSid`, `AccountSid`, `From`, `To`, `CallStatus` and `Direction` are
//! required; other fields are optional and unknown ones ignored.

use super::{Form, ParseError, clip, number, text};
use crate::call::{CallEvent, CallEventKind, Direction, EndCause, Provider};
use std::time::UNIX_EPOCH;
use switchboard_core::Timestamp;

/// The longest `From`/`To` we take (the longest customer identity).
const MAX_ADDRESS_BYTES: usize = 320;
/// The longest caller name we keep (the intake's limit).
const MAX_NAME_BYTES: usize = 256;

/// One Twilio voice webhook about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioCall {
    /// `CallSid`: `CA` and 32 hex digits.
    pub call_sid: String,
    /// `AccountSid`: `AC` and 32 hex digits.
    pub account_sid: String,
    /// `From`: the caller (E.164 for phone numbers, `sip:…`, `client:…`, or
    /// a stand-in for a withheld number). May be empty.
    pub from: String,
    /// `To`: the number (or SIP URI, client) called.
    pub to: String,
    /// `Direction`: `inbound` and `trunking-terminating` are
    /// [`Direction::Inbound`]; `outbound-api`, `outbound-dial` and
    /// `trunking-originating` are [`Direction::Outbound`].
    pub direction: Direction,
    /// `CallStatus`.
    pub call_status: CallStatus,
    /// `ParentCallSid`: set on a leg Twilio dialed from another call (our
    /// `<Dial>` to an agent).
    pub parent_call_sid: Option<String>,
    /// `CallerName`, when caller name lookup is enabled.
    pub caller_name: Option<String>,
    /// `ApiVersion` (`2010-04-01`).
    pub api_version: Option<String>,
    /// `SequenceNumber`: the order of the status callbacks, from 0.
    pub sequence_number: Option<u64>,
    /// `CallDuration`: seconds, in final status callbacks.
    pub duration_secs: Option<u64>,
    /// `Timestamp`: when the callback's event fired (RFC 2822 in UTC, e.g.
    /// `Mon, 16 Aug 2010 03:45:01 +0000`). `None` when absent or not in
    /// that form (it is informational; the request is not refused for it).
    pub timestamp: Option<Timestamp>,
    /// The `<Dial>` action's fields, when this is one.
    pub dial: Option<DialResult>,
}

/// `CallStatus` of a Twilio call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// `queued`
    Queued,
    /// `initiated` (status callbacks of outbound legs use it).
    Initiated,
    /// `ringing`
    Ringing,
    /// `in-progress`: answered (for an inbound call, by Twilio itself to run
    /// our TwiML).
    InProgress,
    /// `completed`
    Completed,
    /// `busy`
    Busy,
    /// `failed`
    Failed,
    /// `no-answer`
    NoAnswer,
    /// `canceled`
    Canceled,
}

impl CallStatus {
    /// Twilio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Initiated,
            Self::Ringing,
            Self::InProgress,
            Self::Completed,
            Self::Busy,
            Self::Failed,
            Self::NoAnswer,
            Self::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// Whether the call is over.
    pub fn is_final(self) -> bool {
        self.end_cause().is_some()
    }

    /// The end cause of a final status.
    pub fn end_cause(self) -> Option<EndCause> {
        match self {
            Self::Completed => Some(EndCause::Completed),
            Self::Busy => Some(EndCause::Busy),
            Self::Failed => Some(EndCause::Failed),
            Self::NoAnswer => Some(EndCause::NoAnswer),
            Self::Canceled => Some(EndCause::Canceled),
            Self::Queued | Self::Initiated | Self::Ringing | Self::InProgress => None,
        }
    }
}

/// What a `<Dial>` verb came to (its action request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialResult {
    /// `DialCallStatus`.
    pub status: DialCallStatus,
    /// `DialCallSid`: the dialed leg.
    pub dial_call_sid: Option<String>,
    /// `DialCallDuration`: seconds the two were connected.
    pub duration_secs: Option<u64>,
}

/// `DialCallStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialCallStatus {
    /// `completed`: the dialed party answered, and the leg has ended.
    Completed,
    /// `answered`: the dialed party answered (a conference).
    Answered,
    /// `busy`
    Busy,
    /// `no-answer`: not answered within the `<Dial>` `timeout`.
    NoAnswer,
    /// `failed`
    Failed,
    /// `canceled`: the dial was canceled (the caller hung up, or a REST
    /// update took the call elsewhere).
    Canceled,
}

impl DialCallStatus {
    /// Twilio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            Self::Completed,
            Self::Answered,
            Self::Busy,
            Self::NoAnswer,
            Self::Failed,
            Self::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// Reads a Twilio voice webhook from its decoded form parameters.
pub fn parse_twilio(params: &[(String, String)]) -> Result<TwilioCall, ParseError> {
    let form = Form::new(params);
    let call_sid = sid("CallSid", "CA", form.required("CallSid")?)?;
    let account_sid = sid("AccountSid", "AC", form.required("AccountSid")?)?;
    let from = text(
        "From",
        form.get("From")?.ok_or(ParseError::Missing("From"))?,
        MAX_ADDRESS_BYTES,
    )?;
    let to = text("To", form.required("To")?, MAX_ADDRESS_BYTES)?;
    let direction = direction(form.required("Direction")?)?;
    let status = form.required("CallStatus")?;
    let call_status = CallStatus::parse(status.trim())
        .ok_or_else(|| ParseError::invalid("CallStatus", unknown(status)))?;
    let parent_call_sid = form
        .optional("ParentCallSid")?
        .map(|v| sid("ParentCallSid", "CA", v))
        .transpose()?;
    let caller_name = form
        .optional("CallerName")?
        .map(|v| clip(v.trim(), MAX_NAME_BYTES).trim_end().to_owned())
        .filter(|v| !v.chars().any(char::is_control));
    let api_version = form
        .optional("ApiVersion")?
        .map(|v| text("ApiVersion", v, 32))
        .transpose()?;
    let sequence_number = form
        .optional("SequenceNumber")?
        .map(|v| number("SequenceNumber", v))
        .transpose()?;
    let duration_secs = form
        .optional("CallDuration")?
        .map(|v| number("CallDuration", v))
        .transpose()?;
    let timestamp = form.optional("Timestamp")?.and_then(rfc2822_utc);
    let dial = match form.optional("DialCallStatus")? {
        None => None,
        Some(status) => Some(DialResult {
            status: DialCallStatus::parse(status.trim())
                .ok_or_else(|| ParseError::invalid("DialCallStatus", unknown(status)))?,
            dial_call_sid: form
                .optional("DialCallSid")?
                .map(|v| sid("DialCallSid", "CA", v))
                .transpose()?,
            duration_secs: form
                .optional("DialCallDuration")?
                .map(|v| number("DialCallDuration", v))
                .transpose()?,
        }),
    };
    Ok(TwilioCall {
        call_sid,
        account_sid,
        from,
        to,
        direction,
        call_status,
        parent_call_sid,
        caller_name,
        api_version,
        sequence_number,
        duration_secs,
        timestamp,
        dial,
    })
}

impl TwilioCall {
    /// What this webhook means for the caller's call, or `None` when it
    /// changes nothing (the caller's call `in-progress` because Twilio
    /// answered it to run our TwiML; an agent's leg `queued`, `initiated`,
    /// `ringing` or `completed`).
    ///
    /// - A `<Dial>` action: `completed`/`answered` → [`CallEventKind::Answered`]
    ///   (the agent took it; harmless when known already), otherwise
    ///   [`CallEventKind::AgentMissed`].
    /// - An agent's leg (`ParentCallSid` set), reported under the caller's
    ///   call id: `in-progress` → `Answered` by its `To`; `busy`,
    ///   `no-answer`, `failed`, `canceled` → `AgentMissed`.
    /// - The caller's call: `queued`, `initiated`, `ringing` →
    ///   [`CallEventKind::Ringing`]; a final status →
    ///   [`CallEventKind::Ended`] with `CallDuration`.
    pub fn call_event(&self) -> Option<CallEvent> {
        let mut sequence = self.sequence_number;
        let (call_id, kind) = if let Some(dial) = &self.dial {
            sequence = None;
            let kind = match dial.status {
                DialCallStatus::Completed | DialCallStatus::Answered => {
                    CallEventKind::Answered { by: None }
                }
                DialCallStatus::Busy => missed(EndCause::Busy),
                DialCallStatus::NoAnswer => missed(EndCause::NoAnswer),
                DialCallStatus::Failed => missed(EndCause::Failed),
                DialCallStatus::Canceled => missed(EndCause::Canceled),
            };
            (self.call_sid.clone(), kind)
        } else if let Some(parent) = &self.parent_call_sid {
            sequence = None;
            let kind = match self.call_status {
                CallStatus::InProgress => CallEventKind::Answered {
                    by: Some(self.to.clone()).filter(|t| !t.is_empty()),
                },
                CallStatus::Completed
                | CallStatus::Queued
                | CallStatus::Initiated
                | CallStatus::Ringing => return None,
                CallStatus::Busy => missed(EndCause::Busy),
                CallStatus::NoAnswer => missed(EndCause::NoAnswer),
                CallStatus::Failed => missed(EndCause::Failed),
                CallStatus::Canceled => missed(EndCause::Canceled),
            };
            (parent.clone(), kind)
        } else {
            let kind = match self.call_status {
                CallStatus::Queued | CallStatus::Initiated | CallStatus::Ringing => {
                    CallEventKind::Ringing {
                        from: self.from.clone(),
                        to: self.to.clone(),
                        direction: self.direction,
                        caller_name: self.caller_name.clone(),
                        queue: None,
                    }
                }
                CallStatus::InProgress => return None,
                final_status => CallEventKind::Ended {
                    cause: final_status.end_cause()?,
                    duration_secs: self.duration_secs,
                },
            };
            (self.call_sid.clone(), kind)
        };
        Some(CallEvent {
            provider: Provider::Twilio,
            call_id,
            kind,
            sequence,
            at: self.timestamp,
        })
    }
}

fn missed(cause: EndCause) -> CallEventKind {
    CallEventKind::AgentMissed { cause }
}

/// A Twilio SID: the two-letter `prefix` and 32 hex digits.
fn sid(field: &'static str, prefix: &str, value: &str) -> Result<String, ParseError> {
    let value = value.trim();
    let well_formed = value.len() == 34
        && value.starts_with(prefix)
        && value.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
    if well_formed {
        Ok(value.to_owned())
    } else {
        Err(ParseError::invalid(
            field,
            format!("not {prefix} followed by 32 hex digits"),
        ))
    }
}

fn direction(value: &str) -> Result<Direction, ParseError> {
    match value.trim() {
        "inbound" | "trunking-terminating" => Ok(Direction::Inbound),
        "outbound-api" | "outbound-dial" | "trunking-originating" => Ok(Direction::Outbound),
        other => Err(ParseError::invalid("Direction", unknown(other))),
    }
}

/// `unknown value "<at most 32 bytes of it>"`.
fn unknown(value: &str) -> String {
    format!("unknown value {:?}", clip(value, 32))
}

/// Twilio's `Timestamp` (`Mon, 16 Aug 2010 03:45:01 +0000`) as milliseconds.
/// Read as an HTTP date (IMF-fixdate), which is the same form with `GMT`
/// for the zone.
fn rfc2822_utc(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    if value.len() > 64 {
        return None;
    }
    let fixdate = value
        .strip_suffix("+0000")
        .or_else(|| value.strip_suffix("GMT"))
        .map(|head| format!("{}GMT", head))?;
    let time = httpdate::parse_http_date(&fixdate).ok()?;
    let ms = time.duration_since(UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok().filter(|&ms| ms > 0).map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_form;

    const CALLER: &str = "CA11111111111111111111111111111111";
    const AGENT_LEG: &str = "CA99999999999999999999999999999999";

    fn parse(body: &str) -> Result<TwilioCall, ParseError> {
        parse_twilio(&parse_form(body.as_bytes()).expect("a form"))
    }

    fn base() -> String {
        format!(
            "AccountSid=AC0000000000000000000000000000000a&CallSid={CALLER}\
             &From=%2B380501234567&To=%2B15550783881&Direction=inbound"
        )
    }

    #[test]
    fn every_documented_status_is_read() {
        for status in [
            "queued",
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "busy",
            "failed",
            "no-answer",
            "canceled",
        ] {
            let call = parse(&format!("{}&CallStatus={status}", base())).expect(status);
            assert_eq!(call.call_status.as_str(), status);
        }
    }

    #[test]
    fn status_callback_fields() {
        let call = parse(&format!(
            "{}&CallStatus=completed&CallDuration=95&SequenceNumber=3\
             &Timestamp=Mon%2C+16+Aug+2010+03%3A45%3A01+%2B0000&CallerName=Olena+K\
             &ApiVersion=2010-04-01&StatusCallbackEvent=completed&CallbackSource=call-progress-events",
            base()
        ))
        .expect("parses");
        assert_eq!(call.sequence_number, Some(3));
        assert_eq!(call.duration_secs, Some(95));
        // python3: calendar.timegm((2010,8,16,3,45,1)) * 1000
        assert_eq!(call.timestamp, Some(Timestamp(1_281_930_301_000)));
        assert_eq!(call.caller_name.as_deref(), Some("Olena K"));
        assert_eq!(call.api_version.as_deref(), Some("2010-04-01"));
        let event = call.call_event().expect("an event");
        assert_eq!(event.sequence, Some(3));
        assert_eq!(event.at, Some(Timestamp(1_281_930_301_000)));
        assert_eq!(
            event.kind,
            CallEventKind::Ended {
                cause: EndCause::Completed,
                duration_secs: Some(95)
            }
        );
    }

    #[test]
    fn odd_timestamps_are_dropped_not_refused() {
        for ts in [
            "yesterday",
            "Mon, 16 Aug 2010 03:45:01 +0200",
            "",
            "Mon, 16 Aug 2010",
        ] {
            let body = format!("{}&CallStatus=ringing&Timestamp={ts}", base());
            let call = parse(&body).expect("parses");
            assert_eq!(call.timestamp, None, "{ts}");
        }
    }

    #[test]
    fn required_fields() {
        let full = format!("{}&CallStatus=ringing", base());
        for field in [
            "CallSid",
            "AccountSid",
            "From",
            "To",
            "Direction",
            "CallStatus",
        ] {
            let params: Vec<_> = parse_form(full.as_bytes())
                .expect("form")
                .into_iter()
                .filter(|(k, _)| k != field)
                .collect();
            assert_eq!(
                parse_twilio(&params),
                Err(ParseError::Missing(field)),
                "{field}"
            );
        }
        // An empty From is a withheld number, not an error.
        let call = parse(&full.replace("From=%2B380501234567", "From=")).expect("parses");
        assert_eq!(call.from, "");
    }

    #[test]
    fn bad_values_are_refused() {
        let ok = format!("{}&CallStatus=ringing", base());
        for (from, to, kind) in [
            ("CallStatus=ringing", "CallStatus=answered", "invalid"),
            ("CallStatus=ringing", "CallStatus=RINGING", "invalid"),
            ("Direction=inbound", "Direction=sideways", "invalid"),
            (CALLER, "CA123", "invalid"),
            (CALLER, "XX11111111111111111111111111111111", "invalid"),
            (CALLER, "CA1111111111111111111111111111111g", "invalid"),
            ("To=%2B15550783881", "To=%2B1%0A555", "invalid"),
            (
                "CallStatus=ringing",
                "CallStatus=ringing&SequenceNumber=-1",
                "invalid",
            ),
            (
                "CallStatus=ringing",
                "CallStatus=ringing&CallDuration=1.5",
                "invalid",
            ),
            (
                "CallStatus=ringing",
                "CallStatus=ringing&CallStatus=completed",
                "repeated",
            ),
            (
                "CallStatus=ringing",
                "CallStatus=ringing&DialCallStatus=maybe",
                "invalid",
            ),
            (
                "CallStatus=ringing",
                "CallStatus=ringing&ParentCallSid=CA1",
                "invalid",
            ),
        ] {
            let body = ok.replace(from, to);
            assert_eq!(parse(&body).map_err(|e| e.kind()), Err(kind), "{to}");
        }
        let long_to = ok.replace("To=%2B15550783881", &format!("To={}", "1".repeat(321)));
        assert_eq!(parse(&long_to).map_err(|e| e.kind()), Err("invalid"));
    }

    #[test]
    fn caller_call_events() {
        let ringing = parse(&format!("{}&CallStatus=ringing", base())).expect("parses");
        let event = ringing.call_event().expect("an event");
        assert_eq!(event.provider, Provider::Twilio);
        assert_eq!(event.call_id, CALLER);
        assert_eq!(event.sequence, None);
        assert_eq!(
            event.kind,
            CallEventKind::Ringing {
                from: "+380501234567".into(),
                to: "+15550783881".into(),
                direction: Direction::Inbound,
                caller_name: None,
                queue: None,
            }
        );
        let answered_by_twilio =
            parse(&format!("{}&CallStatus=in-progress", base())).expect("parses");
        assert_eq!(answered_by_twilio.call_event(), None);
        for (status, cause) in [
            ("busy", EndCause::Busy),
            ("failed", EndCause::Failed),
            ("no-answer", EndCause::NoAnswer),
            ("canceled", EndCause::Canceled),
        ] {
            let call = parse(&format!("{}&CallStatus={status}", base())).expect("parses");
            assert_eq!(
                call.call_event().map(|e| e.kind),
                Some(CallEventKind::Ended {
                    cause,
                    duration_secs: None
                })
            );
        }
    }

    #[test]
    fn agent_leg_events_concern_the_parent_call() {
        let leg = |status: &str| {
            parse(&format!(
                "AccountSid=AC0000000000000000000000000000000a&CallSid={AGENT_LEG}\
                 &ParentCallSid={CALLER}&From=%2B15550783881&To=sip%3Aolena%40pbx.example\
                 &Direction=outbound-dial&CallStatus={status}&SequenceNumber=1"
            ))
            .expect("parses")
            .call_event()
        };
        let answered = leg("in-progress").expect("an event");
        assert_eq!(answered.call_id, CALLER);
        assert_eq!(answered.sequence, None, "the leg's sequence is its own");
        assert_eq!(
            answered.kind,
            CallEventKind::Answered {
                by: Some("sip:olena@pbx.example".into())
            }
        );
        assert_eq!(
            leg("no-answer").map(|e| e.kind),
            Some(CallEventKind::AgentMissed {
                cause: EndCause::NoAnswer
            })
        );
        assert_eq!(leg("ringing"), None);
        assert_eq!(leg("completed"), None);
    }

    #[test]
    fn dial_action_events() {
        let action = |status: &str| {
            parse(&format!(
                "{}&CallStatus=in-progress&DialCallStatus={status}&DialCallSid={AGENT_LEG}\
                 &DialCallDuration=12",
                base()
            ))
            .expect("parses")
        };
        let call = action("no-answer");
        assert_eq!(
            call.dial,
            Some(DialResult {
                status: DialCallStatus::NoAnswer,
                dial_call_sid: Some(AGENT_LEG.into()),
                duration_secs: Some(12),
            })
        );
        let event = call.call_event().expect("an event");
        assert_eq!(event.call_id, CALLER);
        assert_eq!(
            event.kind,
            CallEventKind::AgentMissed {
                cause: EndCause::NoAnswer
            }
        );
        assert_eq!(
            action("completed").call_event().map(|e| e.kind),
            Some(CallEventKind::Answered { by: None })
        );
        for status in ["busy", "failed", "canceled"] {
            assert!(matches!(
                action(status).call_event().map(|e| e.kind),
                Some(CallEventKind::AgentMissed { .. })
            ));
        }
    }

    #[test]
    fn directions() {
        for (raw, want) in [
            ("inbound", Direction::Inbound),
            ("trunking-terminating", Direction::Inbound),
            ("outbound-api", Direction::Outbound),
            ("outbound-dial", Direction::Outbound),
            ("trunking-originating", Direction::Outbound),
        ] {
            assert_eq!(direction(raw), Ok(want));
        }
    }
}
