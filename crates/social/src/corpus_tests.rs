//! Every row of the shared corpus's `SIGNATURES.tsv`: the signature is
//! checked with our verifier (the values were computed independently, with
//! Python's `hmac`), and an accepted delivery parses to what the row says.

use crate::parse::corpus;
use crate::{
    Platform, ReceiptStatus, SignatureError, SocialItem, parse_meta, parse_telegram,
    verify_meta_signature, verify_telegram_token,
};

const META_APP_SECRET: &[u8] = b"test-app-secret-0123456789abcdef";
const TELEGRAM_SECRET: &[u8] = b"tg-secret_TOKEN-42";

struct Row {
    file: String,
    header: String,
    value: String,
    what: String,
}

fn rows() -> Vec<Row> {
    let text = String::from_utf8(corpus::read("SIGNATURES.tsv")).expect("SIGNATURES.tsv is UTF-8");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t") && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let [file, header, value, what] = cols.as_slice() else {
                panic!("a row has four columns: {l:?}");
            };
            Row {
                // "meta-whatsapp-text.json (again)" names a repeated delivery.
                file: file.split(' ').next().unwrap_or_default().to_owned(),
                header: header.to_string(),
                value: value.to_string(),
                what: what.to_string(),
            }
        })
        .collect()
}

/// Messages, receipts, echoes, edits, ignored: a short fingerprint of what
/// a delivery holds.
fn counts(items: &[SocialItem]) -> [usize; 5] {
    let mut c = [0; 5];
    for item in items {
        let i = match item {
            SocialItem::Message(_) => 0,
            SocialItem::Receipt(_) => 1,
            SocialItem::Echo(_) => 2,
            SocialItem::Edit(_) => 3,
            SocialItem::Ignored(_) => 4,
            SocialItem::Unreadable(u) => panic!("a corpus event could not be read: {u:?}"),
        };
        c[i] += 1;
    }
    c
}

#[test]
fn every_signature_row() {
    let rows = rows();
    assert_eq!(rows.len(), 12, "SIGNATURES.tsv rows");
    let mut refused = 0;
    for row in &rows {
        let body = corpus::read(&row.file);
        let wrong = row.what.starts_with("WRONG");
        let (verdict, items) = match row.header.as_str() {
            "X-Hub-Signature-256" => (
                verify_meta_signature(META_APP_SECRET, Some(&row.value), &body),
                parse_meta(&body),
            ),
            "X-Telegram-Bot-Api-Secret-Token" => (
                verify_telegram_token(TELEGRAM_SECRET, Some(&row.value)),
                parse_telegram(&body),
            ),
            other => panic!("unknown header {other}"),
        };
        if wrong {
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
        let items = items.unwrap_or_else(|e| panic!("{}: {e}", row.file));
        let want = match row.file.as_str() {
            "meta-messenger-text.json" => [1, 0, 0, 0, 0],
            "meta-messenger-batched.json" => [2, 1, 1, 0, 0],
            "meta-instagram-text.json" => [1, 0, 0, 0, 0],
            "meta-whatsapp-text.json" => [1, 0, 0, 0, 0],
            "meta-whatsapp-status.json" => [0, 1, 0, 0, 0],
            "meta-whatsapp-image.json" => [1, 0, 0, 0, 0],
            "telegram-text.json" | "telegram-photo.json" => [1, 0, 0, 0, 0],
            "telegram-edited.json" => [0, 0, 0, 1, 0],
            other => panic!("no expectation for {other}"),
        };
        assert_eq!(counts(&items), want, "{}: {}", row.file, row.what);
    }
    assert_eq!(
        refused, 2,
        "the wrong Meta signature and the wrong Telegram token"
    );
}

#[test]
fn signatures_cover_the_exact_bytes() {
    let body = corpus::read("meta-messenger-text.json");
    let good = rows()
        .into_iter()
        .find(|r| r.file == "meta-messenger-text.json" && !r.what.starts_with("WRONG"))
        .expect("a good row for meta-messenger-text.json");
    // A re-serialized body (same JSON, other bytes) does not verify.
    let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let reserialized = serde_json::to_vec_pretty(&value).expect("serializes");
    assert_eq!(
        verify_meta_signature(META_APP_SECRET, Some(&good.value), &reserialized),
        Err(SignatureError::Mismatch)
    );
    let mut extended = body.clone();
    extended.push(b'\n');
    assert_eq!(
        verify_meta_signature(META_APP_SECRET, Some(&good.value), &extended),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_meta_signature(
            b"test-app-secret-0123456789abcdeF",
            Some(&good.value),
            &body
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_meta_signature(META_APP_SECRET, None, &body),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify_meta_signature(META_APP_SECRET, Some("sha256=750007db"), &body),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        verify_telegram_token(TELEGRAM_SECRET, None),
        Err(SignatureError::Missing)
    );
}

#[test]
fn only_customer_messages_become_inbound_events() {
    // Echoes and receipts create no contact: only messages convert.
    let items = parse_meta(&corpus::read("meta-messenger-batched.json")).expect("parses");
    let events: Vec<_> = items
        .into_iter()
        .filter_map(|i| match i {
            SocialItem::Message(m) => Some(m.into_inbound("meta")),
            _ => None,
        })
        .collect();
    let customers: Vec<String> = events.iter().map(|e| e.customer.to_string()).collect();
    assert_eq!(customers, ["messenger:6001002003", "messenger:6001002004"]);
    for event in events {
        assert_eq!(
            event.attributes.get("platform").map(String::as_str),
            Some("messenger")
        );
        assert!(event.validate(Default::default()).is_ok());
    }

    let items = parse_meta(&corpus::read("meta-whatsapp-status.json")).expect("parses");
    let [SocialItem::Receipt(r)] = items.as_slice() else {
        panic!("{items:?}")
    };
    assert_eq!(
        (r.platform, &r.status),
        (Platform::WhatsApp, &ReceiptStatus::Delivered)
    );
}

#[test]
fn every_corpus_file_parses_and_survives_truncation() {
    // No panic on any prefix of any corpus body: a cheap stand-in for the
    // fuzzer until it exists.
    let mut files = 0;
    for entry in std::fs::read_dir(corpus::dir()).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        files += 1;
        let body = std::fs::read(&path).expect("readable");
        let telegram = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("telegram"));
        let parse = if telegram { parse_telegram } else { parse_meta };
        assert!(parse(&body).is_ok(), "{}", path.display());
        let json_end = body.trim_ascii_end().len();
        for end in 0..body.len() {
            let prefix = body.get(..end).expect("in range");
            let result = parse(prefix);
            assert!(
                end >= json_end || result.is_err(),
                "{} cut at {end}",
                path.display()
            );
            let _ = crate::parse_generic(prefix);
        }
    }
    assert_eq!(files, 9);
}

#[test]
fn mutated_corpus_bodies_never_panic() {
    // Every byte of every body replaced by a few troublesome ones: each
    // parser must answer (Ok or Err), never panic.
    for entry in std::fs::read_dir(corpus::dir()).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let body = std::fs::read(&path).expect("readable");
        let mut mutated = body.clone();
        for i in 0..body.len() {
            for b in [b'"', b'{', b']', b'0', b'-', b'x', b'\\', 0xff] {
                if let Some(slot) = mutated.get_mut(i) {
                    *slot = b;
                }
                let _ = parse_meta(&mutated);
                let _ = parse_telegram(&mutated);
                let _ = crate::parse_generic(&mutated);
            }
            if let (Some(slot), Some(&orig)) = (mutated.get_mut(i), body.get(i)) {
                *slot = orig;
            }
        }
    }
}

#[test]
fn deep_nesting_never_overflows() {
    let deep = |open: &str, close: &str| {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"x","value":{}1{}}}]}}]}}"#,
            open.repeat(5000),
            close.repeat(5000)
        )
    };
    for body in [deep("[", "]"), deep(r#"{"a":"#, "}")] {
        assert_eq!(
            parse_meta(body.as_bytes()).map_err(|e| e.kind()),
            Err("json")
        );
    }
    let nested = format!(
        r#"{{"update_id":1,"x":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    // An unknown field is skipped without recursion: no error, no overflow.
    let items = parse_telegram(nested.as_bytes()).expect("unknown fields are skipped");
    assert!(matches!(items.as_slice(), [SocialItem::Ignored(_)]));
}
