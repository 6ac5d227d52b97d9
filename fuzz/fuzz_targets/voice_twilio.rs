//! A Twilio voice webhook body on arbitrary bytes: `parse_form`, then
//! `parse_twilio`, `TwilioCall::call_event`, and the event through
//! `inbound_event` and `CallState::apply` (checked in `src/voice.rs`). Must
//! not panic.
//!
//! Besides: the form respects its bounds and reads back the same when
//! encoded again; a parsed call has well-formed SIDs and bounded, trimmed
//! text without control characters; `call_event` concerns the caller's call
//! (the parent of an agent's leg) and says what its documentation says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_voice::{
    CallEventKind, CallStatus, DialCallStatus, MAX_BODY_BYTES, MAX_FIELDS, MAX_NAME_BYTES,
    MAX_VALUE_BYTES, Provider, TwilioCall, parse_form, parse_twilio,
};

fn check_form(params: &[(String, String)]) {
    assert!(params.len() <= MAX_FIELDS, "{} fields", params.len());
    for (name, value) in params {
        assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES, "{name:?}");
        assert!(
            value.len() <= MAX_VALUE_BYTES,
            "{name}: {} bytes",
            value.len()
        );
    }
    let again = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    if again.len() <= MAX_BODY_BYTES {
        assert_eq!(
            parse_form(again.as_bytes()).as_deref(),
            Ok(params),
            "{again:?}"
        );
    }
}

fn sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

/// Trimmed, at most `max` bytes, no control characters.
fn clean(value: &str, max: usize) -> bool {
    value.trim() == value && value.len() <= max && !value.chars().any(char::is_control)
}

fn check_call(call: &TwilioCall) {
    assert!(sid(&call.call_sid, "CA"), "{call:?}");
    assert!(sid(&call.account_sid, "AC"), "{call:?}");
    assert!(
        call.parent_call_sid.as_deref().is_none_or(|s| sid(s, "CA")),
        "{call:?}"
    );
    assert!(clean(&call.from, 320), "{call:?}");
    assert!(clean(&call.to, 320) && !call.to.is_empty(), "{call:?}");
    assert!(
        call.caller_name
            .as_deref()
            .is_none_or(|n| clean(n, 256) && !n.is_empty()),
        "{call:?}"
    );
    assert!(
        call.api_version.as_deref().is_none_or(|v| clean(v, 32)),
        "{call:?}"
    );
    assert!(call.timestamp.is_none_or(|t| t.0 > 0), "{call:?}");
    if let Some(dial) = &call.dial {
        assert!(
            dial.dial_call_sid.as_deref().is_none_or(|s| sid(s, "CA")),
            "{call:?}"
        );
    }

    let event = call.call_event();
    let Some(event) = event else {
        // Only Twilio answering the caller itself, or an agent's leg that is
        // not answered yet or ended after being answered, change nothing.
        let quiet = call.dial.is_none()
            && match call.parent_call_sid {
                None => call.call_status == CallStatus::InProgress,
                Some(_) => matches!(
                    call.call_status,
                    CallStatus::Queued
                        | CallStatus::Initiated
                        | CallStatus::Ringing
                        | CallStatus::Completed
                ),
            };
        assert!(quiet, "no event for {call:?}");
        return;
    };
    assert_eq!(event.provider, Provider::Twilio);
    assert_eq!(event.at, call.timestamp);
    let leg = call.dial.is_none() && call.parent_call_sid.is_some();
    let want_id = match (&call.dial, &call.parent_call_sid) {
        (None, Some(parent)) => parent,
        _ => &call.call_sid,
    };
    assert_eq!(&event.call_id, want_id, "{call:?}");
    // Only the caller's own status callbacks carry its sequence.
    let want_sequence = if call.dial.is_none() && !leg {
        call.sequence_number
    } else {
        None
    };
    assert_eq!(event.sequence, want_sequence, "{call:?}");
    match (&event.kind, &call.dial) {
        (CallEventKind::Answered { by }, Some(dial)) => {
            assert!(
                matches!(
                    dial.status,
                    DialCallStatus::Completed | DialCallStatus::Answered
                ),
                "{call:?}"
            );
            assert_eq!(by, &None);
        }
        (CallEventKind::AgentMissed { .. }, Some(dial)) => assert!(
            !matches!(
                dial.status,
                DialCallStatus::Completed | DialCallStatus::Answered
            ),
            "{call:?}"
        ),
        (CallEventKind::Answered { by }, None) => {
            assert!(
                leg && call.call_status == CallStatus::InProgress,
                "{call:?}"
            );
            assert_eq!(
                by.as_deref(),
                Some(call.to.as_str()).filter(|t| !t.is_empty())
            );
        }
        (CallEventKind::AgentMissed { cause }, None) => {
            assert!(leg, "{call:?}");
            assert_eq!(Some(cause), call.call_status.end_cause().as_ref());
        }
        (
            CallEventKind::Ringing {
                from,
                to,
                direction,
                caller_name,
                queue,
            },
            None,
        ) => {
            assert!(!leg, "{call:?}");
            assert!(matches!(
                call.call_status,
                CallStatus::Queued | CallStatus::Initiated | CallStatus::Ringing
            ));
            assert_eq!(
                (from, to, direction, caller_name, queue),
                (
                    &call.from,
                    &call.to,
                    &call.direction,
                    &call.caller_name,
                    &None
                )
            );
        }
        (
            CallEventKind::Ended {
                cause,
                duration_secs,
            },
            None,
        ) => {
            assert!(!leg, "{call:?}");
            assert_eq!(Some(cause), call.call_status.end_cause().as_ref());
            assert_eq!(*duration_secs, call.duration_secs);
        }
        (kind, Some(_)) => panic!("a <Dial> action gave {kind:?}"),
    }
    switchboard_fuzz::voice::check_call_event(&event);
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = parse_form(data) else {
        return;
    };
    check_form(&params);
    if let Ok(call) = parse_twilio(&params) {
        check_call(&call);
    }
});
