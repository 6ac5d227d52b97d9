//! A generic CTI request body on arbitrary bytes: the first byte picks the
//! encoding (low bit 0: JSON, 1: form; the seeds start with `0` or `1`), the
//! rest is the body for `parse_cti`; then `CtiEvent::call_event`, and the
//! event through `inbound_event` and `CallState::apply` (checked in
//! `src/voice.rs`). Must not panic.
//!
//! Besides: a parsed event has the documented bounds (a `callId` of 1 to
//! 250 bytes, at most 32 users, texts of at most 256 bytes, trimmed,
//! without control characters); `call_event` maps it as documented; and the
//! event, written again as JSON and as a form, reads back the same (the two
//! encodings agree, and what the parser keeps it would read again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use switchboard_voice::parse::cti::{MAX_CALL_ID_BYTES, MAX_USERS};
use switchboard_voice::{
    CallEventKind, CtiEvent, CtiEventKind, CtiFormat, Direction, EndCause, HangupCause, Provider,
    parse_cti,
};

/// Trimmed, at most `max` bytes, no control characters.
fn clean(value: &str, max: usize) -> bool {
    value.trim() == value && value.len() <= max && !value.chars().any(char::is_control)
}

fn check_event(e: &CtiEvent) {
    assert!(!e.call_id.is_empty(), "{e:?}");
    assert!(e.call_id.len() <= MAX_CALL_ID_BYTES, "{e:?}");
    assert!(clean(&e.call_id, usize::MAX), "{e:?}");
    assert!(clean(&e.from, 256), "{e:?}");
    assert!(clean(&e.to, 256) && !e.to.is_empty(), "{e:?}");
    assert!(e.users.len() <= MAX_USERS, "{e:?}");
    for user in &e.users {
        assert!(clean(user, 256) && !user.is_empty(), "{e:?}");
    }
    for v in [&e.queue, &e.answering_number].into_iter().flatten() {
        assert!(clean(v, 256) && !v.is_empty(), "{e:?}");
    }
    if let CtiEventKind::Hangup {
        cause: Some(HangupCause::Other(other)),
    } = &e.kind
    {
        assert!(!other.is_empty() && other.len() <= 64, "{e:?}");
        let known = [
            "normalClearing",
            "busy",
            "cancel",
            "noAnswer",
            "congestion",
            "notFound",
            "forwarded",
        ];
        assert!(!known.contains(&other.as_str()), "{e:?}");
    }

    let call = e.call_event();
    assert_eq!(call.provider, Provider::Cti);
    assert_eq!(call.call_id, e.call_id);
    assert_eq!((call.sequence, call.at), (None, None));
    let want = match &e.kind {
        CtiEventKind::NewCall => CallEventKind::Ringing {
            from: e.from.clone(),
            to: e.to.clone(),
            direction: e.direction,
            caller_name: None,
            queue: e.queue.clone(),
        },
        CtiEventKind::Answer => CallEventKind::Answered {
            by: e
                .answering_number
                .clone()
                .or_else(|| e.users.first().cloned()),
        },
        CtiEventKind::Hangup { cause } => CallEventKind::Ended {
            cause: match cause {
                None => EndCause::Other("unspecified".into()),
                Some(HangupCause::NormalClearing) => EndCause::Completed,
                Some(HangupCause::Busy) => EndCause::Busy,
                Some(HangupCause::Cancel) => EndCause::Canceled,
                Some(HangupCause::NoAnswer) => EndCause::NoAnswer,
                Some(HangupCause::Congestion | HangupCause::NotFound) => EndCause::Failed,
                Some(HangupCause::Forwarded) => EndCause::Other("forwarded".into()),
                Some(HangupCause::Other(other)) => EndCause::Other(other.clone()),
            },
            duration_secs: None,
        },
    };
    assert_eq!(call.kind, want, "{e:?}");
    switchboard_fuzz::voice::check_call_event(&call);
}

/// The event's fields as the PBX would send them.
fn fields(e: &CtiEvent) -> Vec<(&'static str, String)> {
    let (event, cause) = match &e.kind {
        CtiEventKind::NewCall => ("newCall", None),
        CtiEventKind::Answer => ("answer", None),
        CtiEventKind::Hangup { cause } => (
            "hangup",
            cause.as_ref().map(|c| match c {
                HangupCause::NormalClearing => "normalClearing".to_owned(),
                HangupCause::Busy => "busy".to_owned(),
                HangupCause::Cancel => "cancel".to_owned(),
                HangupCause::NoAnswer => "noAnswer".to_owned(),
                HangupCause::Congestion => "congestion".to_owned(),
                HangupCause::NotFound => "notFound".to_owned(),
                HangupCause::Forwarded => "forwarded".to_owned(),
                HangupCause::Other(other) => other.clone(),
            }),
        ),
    };
    let direction = match e.direction {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    let mut fields = vec![
        ("event", event.to_owned()),
        ("callId", e.call_id.clone()),
        ("from", e.from.clone()),
        ("to", e.to.clone()),
        ("direction", direction.to_owned()),
    ];
    let optional = [
        ("queue", e.queue.clone()),
        ("answeringNumber", e.answering_number.clone()),
        ("cause", cause),
    ];
    fields.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    fields
}

fn as_json(e: &CtiEvent) -> Vec<u8> {
    let mut object: Map<String, Value> = fields(e)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    object.insert(
        "user".into(),
        Value::Array(e.users.iter().cloned().map(Value::String).collect()),
    );
    serde_json::to_vec(&Value::Object(object)).expect("a JSON object serializes")
}

fn as_form(e: &CtiEvent) -> Vec<u8> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(fields(e));
    for user in &e.users {
        form.append_pair("user[]", user);
    }
    form.finish().into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        CtiFormat::Json
    } else {
        CtiFormat::Form
    };
    let Ok(event) = parse_cti(body, format) else {
        return;
    };
    check_event(&event);
    for (format, again) in [
        (CtiFormat::Json, as_json(&event)),
        (CtiFormat::Form, as_form(&event)),
    ] {
        assert_eq!(
            parse_cti(&again, format).as_ref(),
            Ok(&event),
            "{event:?} written as {format:?}: {:?}",
            String::from_utf8_lossy(&again)
        );
    }
});
