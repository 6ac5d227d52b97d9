//! The shared voice corpus (`tests/corpus/voice`, copied from `../shared`):
//! every row of `SIGNATURES.tsv` is checked with our verifier (the values
//! were computed independently; re-checked with Python's `hmac`), and each
//! accepted request parses to what the row says it means. Then the CTI
//! samples in `testdata/`, whole calls through the state machine, and
//! truncated and mutated bodies (a cheap stand-in for the fuzzer).

use crate::parse::corpus;
use crate::{
    CallEventKind, CallState, CallStatus, CtiEventKind, CtiFormat, Direction, EndCause,
    HangupCause, NotInbound, Phase, Provider, RouteStep, SignatureError, Stale, inbound_event,
    parse_cti, parse_form, parse_twilio, twiml_hold, verify_twilio_signature,
};
use switchboard_core::ChannelKind;

/// The auth token the corpus was signed with (its first comment line).
const AUTH_TOKEN: &[u8] = b"12345678901234567890123456789012";
const INCOMING_URL: &str = "https://switchboard.example.com/voice/twilio/incoming";
const STATUS_URL: &str = "https://switchboard.example.com/voice/twilio/status";

struct Row {
    file: String,
    url: String,
    signature: String,
    what: String,
}

fn rows() -> Vec<Row> {
    let text = String::from_utf8(corpus::read("SIGNATURES.tsv")).expect("SIGNATURES.tsv is UTF-8");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.contains("12345678901234567890123456789012")),
        "the token in the corpus is the one these tests use"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t") && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let [file, url, signature, what] = cols.as_slice() else {
                panic!("a row has four columns: {l:?}");
            };
            Row {
                file: file.to_string(),
                url: url.to_string(),
                signature: signature.to_string(),
                what: what.to_string(),
            }
        })
        .collect()
}

fn params(file: &str) -> Vec<(String, String)> {
    parse_form(&corpus::read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_signature_row() {
    let rows = rows();
    assert_eq!(rows.len(), 4, "SIGNATURES.tsv rows");
    let mut refused = 0;
    for row in &rows {
        let params = params(&row.file);
        let verdict = verify_twilio_signature(AUTH_TOKEN, &row.url, &params, Some(&row.signature));
        if row.what.starts_with("WRONG") {
            assert_eq!(
                verdict,
                Err(SignatureError::Mismatch),
                "{}: {}",
                row.file,
                row.what
            );
            refused += 1;
            continue;
        }
        assert_eq!(verdict, Ok(()), "{}: {}", row.file, row.what);
        let call = parse_twilio(&params).unwrap_or_else(|e| panic!("{}: {e}", row.file));
        let event = call
            .call_event()
            .expect("each corpus request concerns the call");
        assert_eq!(event.provider, Provider::Twilio);
        match row.file.as_str() {
            "twilio-incoming.form" => {
                assert!(matches!(
                    event.kind,
                    CallEventKind::Ringing {
                        direction: Direction::Inbound,
                        ..
                    }
                ));
            }
            "twilio-status-completed.form" => assert_eq!(
                event.kind,
                CallEventKind::Ended {
                    cause: EndCause::Completed,
                    duration_secs: Some(95)
                }
            ),
            "twilio-status-canceled.form" => assert_eq!(
                event.kind,
                CallEventKind::Ended {
                    cause: EndCause::Canceled,
                    duration_secs: None
                }
            ),
            other => panic!("no expectation for {other}"),
        }
    }
    assert_eq!(refused, 1, "the signature made for another URL");
}

#[test]
fn incoming_call_fields_and_contact() {
    let call = parse_twilio(&params("twilio-incoming.form")).expect("parses");
    assert_eq!(call.call_sid, "CA11111111111111111111111111111111");
    assert_eq!(call.account_sid, "AC0000000000000000000000000000000a");
    assert_eq!(call.from, "+380501234567");
    assert_eq!(call.to, "+15550783881");
    assert_eq!(call.direction, Direction::Inbound);
    assert_eq!(call.call_status, CallStatus::Ringing);
    assert_eq!(call.api_version.as_deref(), Some("2010-04-01"));
    assert_eq!(call.parent_call_sid, None);
    assert_eq!(call.sequence_number, None);
    assert_eq!(call.duration_secs, None);
    assert_eq!(call.dial, None);

    let event = call.call_event().expect("an event");
    assert_eq!(event.call_id, "CA11111111111111111111111111111111");
    let contact = inbound_event(&event, "twilio").expect("a ringing inbound call");
    assert_eq!(contact.channel, ChannelKind::Voice);
    assert_eq!(contact.customer.to_string(), "phone:+380501234567");
    assert_eq!(contact.address, "+15550783881");
    assert_eq!(
        contact.provider_message_id.as_deref(),
        Some("CA11111111111111111111111111111111")
    );
    assert_eq!(
        contact.text,
        "Incoming call from +380501234567 to +15550783881"
    );
    assert!(contact.validate(Default::default()).is_ok());

    // "the reply tells the provider to hold the caller"
    let twiml = twiml_hold(
        "Thank you for calling. Please hold.",
        None,
        "https://switchboard.example.com/voice/twilio/hold?call=CA11111111111111111111111111111111",
    )
    .expect("valid");
    assert!(twiml.contains("<Say>Thank you for calling. Please hold.</Say><Pause length=\"10\"/>"));
    assert!(twiml.contains("<Redirect method=\"POST\">https://switchboard.example.com/voice/twilio/hold?call=CA11111111111111111111111111111111</Redirect>"));
}

#[test]
fn completed_call_ends_the_contact() {
    let call = parse_twilio(&params("twilio-status-completed.form")).expect("parses");
    assert_eq!(call.call_sid, "CA11111111111111111111111111111111");
    assert_eq!(call.call_status, CallStatus::Completed);
    assert_eq!(call.duration_secs, Some(95));
    let ended = call.call_event().expect("an event");
    assert_eq!(
        inbound_event(&ended, "twilio"),
        Err(NotInbound::NotRinging),
        "a status callback creates no contact"
    );

    // The same call answered by an agent, then completed: not abandoned, and
    // the agent's capacity is freed (the call leaves Connected).
    let state = CallState::new();
    let state = state.route(RouteStep::Queued).expect("queued").next;
    let state = state.route(RouteStep::Offered).expect("offered").next;
    let answered = crate::CallEvent {
        kind: CallEventKind::Answered {
            by: Some("sip:olena@pbx.example.com".into()),
        },
        ..ended.clone()
    };
    let state = state.apply(&answered).expect("answered").next;
    let t = state.apply(&ended).expect("ends");
    assert_eq!((t.from, t.to), (Phase::Connected, Phase::Ended));
    assert!(!t.abandoned);
    assert_eq!(
        t.next.ending().map(|e| (&e.cause, e.duration_secs)),
        Some((&EndCause::Completed, Some(95)))
    );
    // A repeated callback changes nothing.
    assert_eq!(t.next.apply(&ended), Err(Stale::Ended));
}

#[test]
fn canceled_while_queued_is_abandoned() {
    let call = parse_twilio(&params("twilio-status-canceled.form")).expect("parses");
    assert_eq!(call.call_sid, "CA22222222222222222222222222222222");
    assert_eq!(call.from, "+48221234567");
    assert_eq!(call.call_status, CallStatus::Canceled);
    let event = call.call_event().expect("an event");
    let queued = CallState::new()
        .route(RouteStep::Queued)
        .expect("queued")
        .next;
    let t = queued.apply(&event).expect("ends");
    assert_eq!((t.from, t.to), (Phase::Queued, Phase::Ended));
    assert!(t.abandoned, "hung up while queued");
    // "never offered again"
    assert_eq!(t.next.route(RouteStep::Offered), Err(Stale::Ended));
}

#[test]
fn signatures_cover_every_parameter_and_the_url() {
    let good = rows()
        .into_iter()
        .find(|r| r.file == "twilio-incoming.form" && !r.what.starts_with("WRONG"))
        .expect("a good row for twilio-incoming.form");
    let params = params("twilio-incoming.form");
    let check = |url: &str, params: &[(String, String)], header: Option<&str>| {
        verify_twilio_signature(AUTH_TOKEN, url, params, header)
    };
    assert_eq!(check(INCOMING_URL, &params, Some(&good.signature)), Ok(()));
    assert_eq!(
        check(STATUS_URL, &params, Some(&good.signature)),
        Err(SignatureError::Mismatch)
    );
    let mut forged = params.clone();
    for (k, v) in &mut forged {
        if k == "From" {
            *v = "+380501234568".into();
        }
    }
    assert_eq!(
        check(INCOMING_URL, &forged, Some(&good.signature)),
        Err(SignatureError::Mismatch)
    );
    let fewer: Vec<_> = params
        .iter()
        .filter(|(k, _)| k != "Caller")
        .cloned()
        .collect();
    assert_eq!(
        check(INCOMING_URL, &fewer, Some(&good.signature)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        check(INCOMING_URL, &params, None),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        check(INCOMING_URL, &params, Some("5IO38gpyt11uOhBoNtjmRqf3COE")),
        Err(SignatureError::Malformed),
        "base64 without its padding"
    );
    assert_eq!(
        check(INCOMING_URL, &params, Some("not/base64!")),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        verify_twilio_signature(
            b"12345678901234567890123456789013",
            INCOMING_URL,
            &params,
            Some(&good.signature)
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn cti_samples_parse_to_their_documented_meaning() {
    let read = |name: &str| {
        let format = if name.ends_with(".json") {
            CtiFormat::Json
        } else {
            CtiFormat::Form
        };
        parse_cti(&corpus::read_testdata(name), format).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let new_call = read("cti-newcall-in.json");
    assert_eq!(new_call.kind, CtiEventKind::NewCall);
    assert_eq!(new_call.call_id, "307fa962-de8d-4ffc-817b-7f6993204159");
    assert_eq!(new_call.users, ["Christopher Miller", "Emma Taylor"]);
    let ringing = new_call.call_event();
    assert_eq!(ringing.provider, Provider::Cti);
    let contact = inbound_event(&ringing, "pbx").expect("inbound");
    assert_eq!(contact.customer.to_string(), "phone:+493023125741");
    assert_eq!(contact.address, "+492214710334");
    assert_eq!(
        contact.attributes.get("queue").map(String::as_str),
        Some("support")
    );
    assert!(contact.validate(Default::default()).is_ok());

    let answer = read("cti-answer-in.json");
    assert_eq!(answer.users, ["Emma Taylor"]);
    assert_eq!(
        answer.answering_number.as_deref(),
        Some("emma@chrispresso.com")
    );
    let hangup = read("cti-hangup-in.json");
    assert_eq!(
        hangup.kind,
        CtiEventKind::Hangup {
            cause: Some(HangupCause::NormalClearing)
        }
    );

    // The whole answered call.
    let s = CallState::new()
        .route(RouteStep::Queued)
        .expect("queued")
        .next;
    let s = s.route(RouteStep::Offered).expect("offered").next;
    let t = s.apply(&answer.call_event()).expect("answered");
    assert_eq!(t.to, Phase::Connected);
    assert_eq!(t.next.answered_by(), Some("emma@chrispresso.com"));
    let t = t.next.apply(&hangup.call_event()).expect("ended");
    assert!(!t.abandoned);
    // A late answer after the hangup is ignored.
    assert_eq!(t.next.apply(&answer.call_event()), Err(Stale::Ended));

    let form = read("cti-newcall-in.form");
    assert_eq!(form.users, ["Christopher Miller", "Emma Taylor"]);
    assert_eq!(form.from, "493055571600");
    assert_eq!(form.to, "491711234567890");
    assert_eq!(form.direction, Direction::Inbound);

    let cancel = read("cti-hangup-cancel.form");
    let queued = CallState::new()
        .route(RouteStep::Queued)
        .expect("queued")
        .next;
    let t = queued.apply(&cancel.call_event()).expect("ended");
    assert!(t.abandoned);
    assert_eq!(t.next.ending().map(|e| &e.cause), Some(&EndCause::Canceled));

    let anonymous = read("cti-newcall-anonymous.form");
    let contact = inbound_event(&anonymous.call_event(), "pbx").expect("inbound");
    assert_eq!(
        contact.customer.to_string(),
        "call:cti:9f1840cb-8be9-4d3a-8200-3da2937085f0"
    );

    let outbound = read("cti-newcall-out.json");
    assert_eq!(outbound.direction, Direction::Outbound);
    assert_eq!(
        inbound_event(&outbound.call_event(), "pbx"),
        Err(NotInbound::Outbound)
    );
}

#[test]
fn negative_twilio_requests() {
    let body = String::from_utf8(corpus::read("twilio-incoming.form")).expect("UTF-8");
    let parse = |body: &str| parse_form(body.as_bytes()).and_then(|p| parse_twilio(&p));
    assert_eq!(
        parse(&body.replace("CallSid=CA11111111111111111111111111111111&", ""))
            .map_err(|e| e.kind()),
        Err("missing")
    );
    assert_eq!(
        parse(&body.replace("CallStatus=ringing", "CallStatus=on-hold")).map_err(|e| e.kind()),
        Err("invalid")
    );
    assert_eq!(
        parse_form(b"CallSid=CA1\xc3\x28").map_err(|e| e.kind()),
        Err("malformed")
    );
    let huge = format!("{body}&Pad={}", "x".repeat(crate::MAX_BODY_BYTES));
    assert_eq!(parse(&huge).map_err(|e| e.kind()), Err("too_large"));
}

/// Every corpus body and sample, each parser and the verifier.
fn exercise(body: &[u8]) {
    if let Ok(params) = parse_form(body) {
        let _ = verify_twilio_signature(
            AUTH_TOKEN,
            INCOMING_URL,
            &params,
            Some("5IO38gpyt11uOhBoNtjmRqf3COE="),
        );
        if let Some(event) = parse_twilio(&params).ok().and_then(|c| c.call_event()) {
            let _ = inbound_event(&event, "twilio");
            let _ = CallState::new().apply(&event);
        }
    }
    for format in [CtiFormat::Json, CtiFormat::Form] {
        if let Ok(event) = parse_cti(body, format) {
            let event = event.call_event();
            let _ = inbound_event(&event, "pbx");
            let _ = CallState::new().apply(&event);
        }
    }
}

fn every_body() -> Vec<(String, Vec<u8>)> {
    let mut bodies = Vec::new();
    for dir in [corpus::dir(), corpus::testdata()] {
        for entry in std::fs::read_dir(&dir).expect("directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "form" || e == "json") {
                let body = std::fs::read(&path).expect("readable");
                bodies.push((path.display().to_string(), body));
            }
        }
    }
    assert_eq!(bodies.len(), 10, "3 corpus forms and 7 CTI samples");
    bodies
}

#[test]
fn every_body_survives_truncation() {
    for (_, body) in every_body() {
        exercise(&body);
        for end in 0..body.len() {
            exercise(body.get(..end).expect("in range"));
        }
    }
}

#[test]
fn mutated_bodies_never_panic() {
    for (_, body) in every_body() {
        let mut mutated = body.clone();
        for i in 0..body.len() {
            for b in [
                b'&', b'=', b'%', b'+', b'"', b'{', b']', b'0', b'\\', 0xff, 0,
            ] {
                if let Some(slot) = mutated.get_mut(i) {
                    *slot = b;
                }
                exercise(&mutated);
            }
            if let (Some(slot), Some(&orig)) = (mutated.get_mut(i), body.get(i)) {
                *slot = orig;
            }
        }
    }
}
