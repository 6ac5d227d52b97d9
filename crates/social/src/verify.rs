//! Is a webhook delivery really from the provider? Checked on the raw body
//! bytes before anything is parsed (re-serialized JSON would not match).
//!
//! - Meta (Messenger, Instagram, WhatsApp Cloud): `X-Hub-Signature-256:
//!   sha256=<hex HMAC-SHA256(app secret, body)>`.
//! - Telegram: the `secret_token` given to `setWebhook` comes back verbatim in
//!   `X-Telegram-Bot-Api-Secret-Token` (the body is not signed).
//! - Generic: `X-Switchboard-Timestamp: <unix seconds>` and
//!   `X-Switchboard-Signature: sha256=<hex HMAC-SHA256(secret,
//!   "<timestamp>.<body>")>`; the timestamp must be within a tolerance of
//!   our clock so a captured delivery cannot be replayed later.
//!
//! Comparisons are constant-time (`Mac::verify_slice`, and `switchboard_channel::same_secret` for tokens). An empty
//! secret never verifies anything.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Meta's signature header (HTTP header names are case-insensitive).
pub const META_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Telegram's secret token header.
pub const TELEGRAM_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";
/// The generic webhook's timestamp header (unix seconds).
pub const GENERIC_TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// The generic webhook's signature header (`sha256=<hex>`).
pub const GENERIC_SIGNATURE_HEADER: &str = "x-switchboard-signature";

/// Why a delivery was refused. Callers answer 401 and store nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
    #[error("the timestamp is outside the allowed window")]
    Stale,
}

impl SignatureError {
    /// A short, bounded label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Stale => "stale",
        }
    }
}

/// Checks Meta's `X-Hub-Signature-256` header (`sha256=` and 64 hex digits)
/// against `body` signed with the app secret.
pub fn verify_meta_signature(
    app_secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let signature = parse_sha256_header(header)?;
    let mut mac = new_mac(app_secret)?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks Telegram's `X-Telegram-Bot-Api-Secret-Token` header against the
/// `secret_token` we gave `setWebhook` (1 to 256 of `A-Za-z0-9_-`). Both are
/// hashed before the constant-time comparison, so not even the length of the
/// secret leaks.
pub fn verify_telegram_token(expected: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let presented = header.ok_or(SignatureError::Missing)?;
    let well_formed = !presented.is_empty()
        && presented.len() <= 256
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(SignatureError::Malformed);
    }
    if expected.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    if switchboard_channel::same_secret(expected, presented.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks a generic webhook delivery: `timestamp_header` is the unix time in
/// seconds (ASCII digits), `signature_header` is `sha256=<hex>` of
/// HMAC-SHA256 over the timestamp as sent, a `.`, and the body. The signature
/// is checked first, so [`SignatureError::Stale`] means an authentic but
/// old (or future) delivery: a replay, or a clock off by more than
/// `tolerance_secs`.
pub fn verify_generic(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp_header.ok_or(SignatureError::Missing)?.trim();
    let signature = parse_sha256_header(signature_header)?;
    let sent_at = parse_unix_secs(timestamp).ok_or(SignatureError::Malformed)?;
    let mut mac = new_mac(secret)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)?;
    if sent_at.abs_diff(now_unix_secs) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// The `X-Switchboard-Signature` value for a generic delivery sent at
/// `timestamp` (unix seconds): for senders and tests.
pub fn generic_signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty string
    // (which no verifier accepts) stands in for the impossible.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn new_mac(secret: &[u8]) -> Result<HmacSha256, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)
}

/// `sha256=` followed by 64 hex digits (either case) → the 32 bytes.
fn parse_sha256_header(header: Option<&str>) -> Result<[u8; 32], SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digits = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out).map_err(|_| SignatureError::Malformed)?;
    Ok(out)
}

/// 1 to 19 ASCII digits (no sign, no spaces) as seconds.
fn parse_unix_secs(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"generic-secret-0123456789";
    // Computed independently: python3 -c 'import hmac,hashlib;
    // print(hmac.new(b"generic-secret-0123456789",
    // b"1795341600.{\"events\":[]}", hashlib.sha256).hexdigest())'
    const KNOWN: &str = "sha256=27ebd932428a0f7ac6efdc3cdff8e0193ad114897b8ff25a0eae5c28f0ec53ec";
    const BODY: &[u8] = br#"{"events":[]}"#;
    const TS: u64 = 1_795_341_600;

    #[test]
    fn generic_signature_matches_an_independent_computation() {
        assert_eq!(generic_signature(SECRET, TS, BODY), KNOWN);
    }

    #[test]
    fn generic_accepts_fresh_and_refuses_stale() {
        let sig = generic_signature(SECRET, TS, BODY);
        let ts = TS.to_string();
        let check = |now| verify_generic(SECRET, Some(&ts), Some(&sig), BODY, now, 300);
        assert_eq!(check(TS), Ok(()));
        assert_eq!(check(TS + 300), Ok(()));
        assert_eq!(check(TS - 300), Ok(()));
        assert_eq!(check(TS + 301), Err(SignatureError::Stale));
        assert_eq!(check(TS - 301), Err(SignatureError::Stale));
        assert_eq!(check(0), Err(SignatureError::Stale));
        assert_eq!(check(u64::MAX), Err(SignatureError::Stale));
    }

    #[test]
    fn generic_refuses_tampering() {
        let sig = generic_signature(SECRET, TS, BODY);
        let ts = TS.to_string();
        let other_ts = (TS + 1).to_string();
        assert_eq!(
            verify_generic(SECRET, Some(&ts), Some(&sig), b"{\"events\":[1]}", TS, 300),
            Err(SignatureError::Mismatch)
        );
        // A replay with a fresh timestamp but the old signature.
        assert_eq!(
            verify_generic(SECRET, Some(&other_ts), Some(&sig), BODY, TS, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_generic(b"other-secret", Some(&ts), Some(&sig), BODY, TS, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_generic(b"", Some(&ts), Some(&sig), BODY, TS, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_refuses_missing_and_malformed_headers() {
        let sig = generic_signature(SECRET, TS, BODY);
        let ts = TS.to_string();
        let check = |t: Option<&str>, s: Option<&str>| verify_generic(SECRET, t, s, BODY, TS, 300);
        assert_eq!(check(None, Some(&sig)), Err(SignatureError::Missing));
        assert_eq!(check(Some(&ts), None), Err(SignatureError::Missing));
        for bad_ts in [
            "",
            "+1795341600",
            "-1",
            "1795341600.5",
            "12345678901234567890",
            "abc",
        ] {
            assert_eq!(
                check(Some(bad_ts), Some(&sig)),
                Err(SignatureError::Malformed),
                "{bad_ts}"
            );
        }
        for bad_sig in [
            "",
            "sha256=",
            "sha1=00",
            "sha256=zz",
            &sig[..sig.len() - 2],
            "27ebd932",
        ] {
            assert_eq!(
                check(Some(&ts), Some(bad_sig)),
                Err(SignatureError::Malformed),
                "{bad_sig}"
            );
        }
    }

    #[test]
    fn meta_header_forms() {
        let body = b"{}";
        let secret = b"s3cret";
        let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
        mac.update(body);
        let hex = hex::encode(mac.finalize().into_bytes());
        let good = format!("sha256={hex}");
        assert_eq!(verify_meta_signature(secret, Some(&good), body), Ok(()));
        let upper = format!("sha256={}", hex.to_uppercase());
        assert_eq!(verify_meta_signature(secret, Some(&upper), body), Ok(()));
        assert_eq!(
            verify_meta_signature(secret, Some(&hex), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_meta_signature(secret, None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_meta_signature(b"", Some(&good), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn telegram_token_forms() {
        let secret = b"tg-secret_TOKEN-42";
        assert_eq!(
            verify_telegram_token(secret, Some("tg-secret_TOKEN-42")),
            Ok(())
        );
        assert_eq!(
            verify_telegram_token(secret, Some("tg-secret_TOKEN-43")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_telegram_token(secret, Some("tg-secret_TOKEN-4")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_telegram_token(secret, None),
            Err(SignatureError::Missing)
        );
        for bad in ["", "has space", "tg-secret_TOKEN-42\n", &"a".repeat(257)] {
            assert_eq!(
                verify_telegram_token(secret, Some(bad)),
                Err(SignatureError::Malformed)
            );
        }
        assert_eq!(
            verify_telegram_token(b"", Some("x")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn kinds_are_labels() {
        let kinds: Vec<_> = [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
            SignatureError::Stale,
        ]
        .into_iter()
        .map(SignatureError::kind)
        .collect();
        assert_eq!(kinds, ["missing", "malformed", "mismatch", "stale"]);
    }
}
