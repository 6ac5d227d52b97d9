//! The signature and header checks, `verify_meta_signature`,
//! `verify_telegram_token` and `verify_generic`, with arbitrary secrets,
//! headers, bodies and clocks. Must not panic, must never accept a forged
//! delivery (checked against an HMAC computed here), and must accept a
//! correctly signed one (within the tolerance).
//!
//! Input layout (short input: missing numbers are 0, missing fields empty):
//!
//! ```text
//! byte 0      flags: bit 0 header A absent, bit 1 header B absent,
//!             bit 2 signed hex in upper case, bit 3 signed headers padded
//!             with blanks
//! bytes 1-24  now, tolerance, timestamp: u64 little-endian each
//! then        secret, header A, header B: each a u16 little-endian length
//!             and that many bytes (headers read as lossy UTF-8)
//! the rest    the body
//! ```
//!
//! Header A is Meta's `X-Hub-Signature-256`, Telegram's secret token and the
//! generic `X-Switchboard-Signature`; header B the generic
//! `X-Switchboard-Timestamp`.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use switchboard_social::{
    SignatureError, generic_signature, verify_generic, verify_meta_signature, verify_telegram_token,
};

struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        let head = self.take(8);
        bytes[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(bytes)
    }

    fn field(&mut self) -> &'a [u8] {
        let mut len = [0u8; 2];
        let head = self.take(2);
        len[..head.len()].copy_from_slice(head);
        self.take(usize::from(u16::from_le_bytes(len)))
    }
}

fn pad(s: &str, padded: bool) -> String {
    if padded {
        format!(" \t{s} ")
    } else {
        s.to_owned()
    }
}

/// `sha256=` and the hex digits, in upper case if asked.
fn case(header: &str, upper: bool) -> String {
    match header.strip_prefix("sha256=") {
        Some(hex) if upper => format!("sha256={}", hex.to_uppercase()),
        _ => header.to_owned(),
    }
}

/// Lower-case hex of HMAC-SHA256(`key`, the `parts` one after another).
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length");
    };
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The hex digits of a `sha256=<hex>` header, lower-cased, blanks around
/// trimmed.
fn sha256_hex(header: Option<&str>) -> Option<String> {
    let hex = header?.trim().strip_prefix("sha256=")?;
    Some(hex.to_ascii_lowercase())
}

fn telegram_well_formed(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let flags = input.take(1).first().copied().unwrap_or(0);
    let (now, tolerance, timestamp) = (input.u64(), input.u64(), input.u64());
    let secret = input.field();
    let header_a = String::from_utf8_lossy(input.field()).into_owned();
    let header_b = String::from_utf8_lossy(input.field()).into_owned();
    let body = input.data;
    let a = (flags & 1 == 0).then_some(header_a.as_str());
    let b = (flags & 2 == 0).then_some(header_b.as_str());
    let upper = flags & 4 != 0;
    let padded = flags & 8 != 0;

    // As given: accepted only if the header holds the right HMAC, computed
    // here independently (the fuzzer cannot forge one: the comparison is
    // constant-time, so it gets no hint; the seeds carry real signatures).
    let meta = verify_meta_signature(secret, a, body);
    if a.is_none() {
        assert_eq!(meta, Err(SignatureError::Missing));
    }
    if meta == Ok(()) {
        assert!(!secret.is_empty(), "Meta: empty secret accepted");
        assert_eq!(
            sha256_hex(a),
            Some(hmac_hex(secret, &[body])),
            "Meta: accepted a wrong signature"
        );
    }
    let generic = verify_generic(secret, b, a, body, now, tolerance);
    if b.is_none() {
        assert_eq!(generic, Err(SignatureError::Missing));
    }
    if generic == Ok(()) {
        let sent = b.map(str::trim).unwrap_or_default();
        assert!(!secret.is_empty(), "generic: empty secret accepted");
        assert!(
            (1..=19).contains(&sent.len()) && sent.bytes().all(|c| c.is_ascii_digit()),
            "generic: accepted timestamp {sent:?}"
        );
        assert_eq!(
            sha256_hex(a),
            Some(hmac_hex(secret, &[sent.as_bytes(), b".", body])),
            "generic: accepted a wrong signature"
        );
        let sent: u64 = sent.parse().expect("at most 19 digits");
        assert!(
            sent.abs_diff(now) <= tolerance,
            "generic: accepted a stale delivery"
        );
    }

    // Telegram compares the token itself: the answer is fully determined.
    let telegram = verify_telegram_token(secret, a);
    let want = match a {
        None => Err(SignatureError::Missing),
        Some(t) if !telegram_well_formed(t) => Err(SignatureError::Malformed),
        Some(_) if secret.is_empty() => Err(SignatureError::Mismatch),
        Some(t) if t.as_bytes() == secret => Ok(()),
        Some(_) => Err(SignatureError::Mismatch),
    };
    assert_eq!(telegram, want, "telegram token {a:?}");
    let token = String::from_utf8_lossy(secret);
    let telegram = verify_telegram_token(secret, Some(&token));
    let want = if telegram_well_formed(&token) {
        Ok(())
    } else {
        Err(SignatureError::Malformed)
    };
    assert_eq!(telegram, want, "telegram token equal to the secret");

    // Signed correctly: accepted, unless the secret is empty (never
    // verifies anything).
    let header = format!("sha256={}", hmac_hex(secret, &[body]));
    let header = pad(&case(&header, upper), padded);
    let meta = verify_meta_signature(secret, Some(&header), body);
    let want = if secret.is_empty() {
        Err(SignatureError::Mismatch)
    } else {
        Ok(())
    };
    assert_eq!(meta, want, "signed Meta delivery");

    let sent = pad(&timestamp.to_string(), padded);
    let signature = pad(
        &case(&generic_signature(secret, timestamp, body), upper),
        padded,
    );
    let generic = verify_generic(secret, Some(&sent), Some(&signature), body, now, tolerance);
    let want = if timestamp.to_string().len() > 19 {
        // At most 19 digits are read.
        Err(SignatureError::Malformed)
    } else if secret.is_empty() {
        Err(SignatureError::Mismatch)
    } else if timestamp.abs_diff(now) > tolerance {
        Err(SignatureError::Stale)
    } else {
        Ok(())
    };
    assert_eq!(
        generic, want,
        "signed generic delivery at {timestamp}, now {now}"
    );
});
