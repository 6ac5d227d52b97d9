//! `normalize_phone` and `classify_caller` on arbitrary strings (the `From`
//! and `To` a provider or PBX sends; the bytes are read as lossy UTF-8).
//! Must not panic.
//!
//! Besides, what `phone.rs` documents: a normalized number is `+` and 3 to
//! 15 digits not starting with `0`, or 1 to 15 digits that are a national
//! number (leading `0`) or an extension (fewer than 7); it has the digits
//! given (less a leading international `00`) and nothing else, is normalized
//! already (one spelling), and comes only from digits, an optional leading
//! `+` (after an optional `tel:`) and the separators ` -.()/` and NBSP.
//! `classify_caller` agrees with `normalize_phone` and the withheld forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_voice::{Caller, classify_caller, normalize_phone};

/// Twilio's stand-ins for a withheld number (`phone.rs`).
const TWILIO_WITHHELD: [&str; 5] = [
    "+266696687",
    "+7378742833",
    "+2562533",
    "+8656696",
    "+86282452253",
];
const WITHHELD_WORDS: [&str; 7] = [
    "anonymous",
    "restricted",
    "unknown",
    "unavailable",
    "private",
    "blocked",
    "withheld",
];

fn check_number(raw: &str, number: &str) {
    let (international, digits) = match number.strip_prefix('+') {
        Some(d) => (true, d),
        None => (false, number),
    };
    assert!(
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()),
        "{raw:?} → {number:?}"
    );
    if international {
        assert!(
            digits.len() >= 3 && !digits.starts_with('0'),
            "{raw:?} → {number:?}"
        );
    } else {
        assert!(
            digits.starts_with('0') || digits.len() < 7,
            "{raw:?} → {number:?}: should be international"
        );
    }
    assert_eq!(
        normalize_phone(number).as_deref(),
        Some(number),
        "{raw:?} → {number:?} is not normalized"
    );
    let given: String = raw.chars().filter(char::is_ascii_digit).collect();
    assert!(
        given == digits || given.strip_prefix("00") == Some(digits),
        "{raw:?} → {number:?}: digits {given:?}"
    );
    let written = raw.trim();
    let written = written.strip_prefix("tel:").unwrap_or(written);
    let written = written.strip_prefix('+').unwrap_or(written);
    assert!(
        written
            .chars()
            .all(|c| c.is_ascii_digit() || " -.()/\u{a0}".contains(c)),
        "{raw:?} → {number:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let number = normalize_phone(raw);
    if let Some(number) = &number {
        check_number(raw, number);
    }
    let trimmed = raw.trim();
    let lower = trimmed.to_ascii_lowercase();
    let withheld_form = trimmed.is_empty()
        || WITHHELD_WORDS.contains(&lower.as_str())
        || lower.starts_with("sip:anonymous@")
        || lower.starts_with("sips:anonymous@");
    let withheld_number = number
        .as_deref()
        .is_some_and(|n| TWILIO_WITHHELD.contains(&n));
    match classify_caller(raw) {
        Caller::Anonymous => assert!(withheld_form || withheld_number, "{raw:?}"),
        Caller::Phone(p) => {
            assert!(!withheld_form && !withheld_number, "{raw:?}");
            assert_eq!(Some(&p), number.as_ref(), "{raw:?}");
            assert_eq!(classify_caller(&p), Caller::Phone(p.clone()));
        }
        Caller::Other(o) => {
            assert!(!withheld_form && number.is_none(), "{raw:?}");
            assert_eq!(o, trimmed);
        }
    }
});
