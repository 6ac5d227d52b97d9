//! The chat widget's client-frame parser, `protocol::parse`, on arbitrary
//! bytes (as a `&str` when they are UTF-8, as a websocket text frame is,
//! and read as lossy UTF-8 too), and the checks the session makes on a
//! parsed frame's fields: `client_id_ok`, `seq_ok`, `language` (also on the
//! whole input). Must not panic.
//!
//! Besides, what `docs/widget-protocol.md` documents:
//! - a frame parses only from a JSON object whose `type` is one of the
//!   eight client types and whose other keys are among that type's fields
//!   (an unknown type or field is `bad_frame`); a refusal has a message;
//! - the same JSON written again by `serde_json` parses to the same frame;
//! - a `client_id` the session accepts is 1 to 64 printable ASCII
//!   characters other than `:` and `|` (so `<visitor>:<client_id>`, the
//!   provider message id, splits back into the two), and `client_id_ok`
//!   accepts every such id;
//! - a `seq` (`hello.after`, `read.seq`) the session accepts is a Redis
//!   stream id, `<ms>-<n>`, both 1 to 20 digits that fit a `u64`;
//! - a `rating` score is a `u8` (the session accepts 1 to 5);
//! - a locale becomes a language of 1 to 35 ASCII letters, digits and `-`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_chat::protocol::{self, ClientFrame};

/// Each client frame type and the fields it may carry besides `type`.
const FIELDS: [(&str, &[&str]); 8] = [
    (
        "hello",
        &["v", "widget", "token", "locale", "after", "conversation"],
    ),
    ("prechat", &["name", "email", "topic"]),
    ("message", &["client_id", "text", "attachments"]),
    ("typing", &["on"]),
    ("read", &["seq"]),
    ("rating", &["score", "comment", "conversation"]),
    ("offline", &["name", "email", "text", "client_id"]),
    ("ping", &[]),
];

/// `docs/widget-protocol.md`: 1–64 printable ASCII characters other than
/// `:` and `|` (printable: no blank, as `client_id_ok` documents).
fn client_id_documented(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':' && b != b'|')
}

/// A Redis stream id `<ms>-<n>`: what the session hands `XRANGE`.
fn stream_id(seq: &str) -> bool {
    let Some((ms, n)) = seq.split_once('-') else {
        return false;
    };
    let part = |p: &str| {
        (1..=20).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u64>().is_ok()
    };
    part(ms) && part(n)
}

fn check_client_id(id: &str) {
    let ok = protocol::client_id_ok(id);
    assert_eq!(ok, client_id_documented(id), "client_id {id:?}");
    if ok {
        // The provider message id `<visitor>:<client_id>` splits back.
        let visitor = "AAAAAAAAAAAAAAAAAAAAAA";
        let pmid = format!("{visitor}:{id}");
        assert_eq!(pmid.split_once(':'), Some((visitor, id)));
    }
}

fn check_seq(seq: &str) {
    if protocol::seq_ok(seq) {
        assert!(stream_id(seq), "seq_ok accepted {seq:?}, not a stream id");
    }
}

fn check_locale(locale: &str) {
    if let Some(l) = protocol::language(Some(locale)) {
        assert!(
            (1..=35).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "language {l:?} from {locale:?}"
        );
    }
}

fn check(text: &str) {
    // The field checks on the whole input, so the fuzzer reaches them
    // directly too.
    check_client_id(text);
    check_seq(text);
    check_locale(text);

    let parsed = protocol::parse(text);
    let frame = match parsed {
        Ok(frame) => frame,
        Err(message) => {
            assert!(!message.is_empty(), "a bad_frame without a message");
            return;
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("parsed {frame:?} from what is not JSON: {e}"),
    };
    let Some(object) = value.as_object() else {
        panic!("parsed {frame:?} from a JSON {value}");
    };
    let kind = object.get("type").and_then(Value::as_str);
    let Some((_, fields)) = FIELDS.iter().find(|(t, _)| Some(*t) == kind) else {
        panic!("parsed {frame:?} with type {kind:?}");
    };
    for key in object.keys() {
        assert!(
            key == "type" || fields.contains(&key.as_str()),
            "parsed {frame:?} with the unknown field {key:?}"
        );
    }
    let again = serde_json::to_string(&value).unwrap_or_default();
    assert_eq!(
        protocol::parse(&again),
        Ok(frame.clone()),
        "{again} reads otherwise"
    );

    match &frame {
        ClientFrame::Hello { locale, after, .. } => {
            if let Some(a) = after {
                check_seq(a);
            }
            if let Some(l) = locale {
                check_locale(l);
            }
        }
        ClientFrame::Message { client_id, .. } => check_client_id(client_id),
        // The offline form's, when it has one, follows the same rule.
        ClientFrame::Offline {
            client_id: Some(client_id),
            ..
        } => check_client_id(client_id),
        ClientFrame::Read { seq } => check_seq(seq),
        ClientFrame::Rating { score, .. } => {
            let number = object.get("score").and_then(Value::as_u64);
            assert_eq!(number, Some(u64::from(*score)));
        }
        ClientFrame::Prechat { .. }
        | ClientFrame::Typing { .. }
        | ClientFrame::Offline { .. }
        | ClientFrame::Ping {} => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
