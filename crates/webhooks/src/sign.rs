//! `Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`: the Stripe scheme. The timestamp is signed with the
//! body, so a receiver that refuses old timestamps cannot be fed a
//! captured delivery again later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The name of the signature header.
pub const SIGNATURE_HEADER: &str = "Switchboard-Signature";
/// The event id header (also in the body): receivers deduplicate by it.
pub const EVENT_ID_HEADER: &str = "Switchboard-Event-Id";
/// The event type header.
pub const EVENT_TYPE_HEADER: &str = "Switchboard-Event-Type";

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The value of [`SIGNATURE_HEADER`].
pub fn signature_header(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// What a receiver does: checks `header` against `body` and the secret,
/// and the timestamp against `now` (unix seconds) within `tolerance`
/// seconds. Constant-time comparison.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(hex::decode(v).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if timestamp.abs_diff(now) > tolerance {
        return Err(VerifyError::Stale);
    }
    let ok = signatures.iter().any(|s| {
        HmacSha256::new_from_slice(secret).is_ok_and(|mut mac| {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(s).is_ok()
        })
    });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_vector_and_verify() {
        // echo -n '1800000000.{"id":"x"}' | openssl dgst -sha256 -hmac 0123456789abcdef
        let body = br#"{"id":"x"}"#;
        let header = signature_header(b"0123456789abcdef", 1_800_000_000, body);
        assert_eq!(
            header,
            "t=1800000000,v1=32854fa8b4a0313db77f013259cccf66d22f5d4fb1da02e997f80dc42acb275d"
        );
        assert_eq!(
            verify(b"0123456789abcdef", &header, body, 1_800_000_100, 300),
            Ok(())
        );
    }

    #[test]
    fn tampering_staleness_and_garbage_are_refused() {
        let body = b"{}";
        let header = signature_header(b"0123456789abcdef", 1_800_000_000, body);
        let now = 1_800_000_000;
        assert_eq!(
            verify(b"0123456789abcdef", &header, b"{ }", now, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret-0000", &header, body, now, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"0123456789abcdef", &header, body, now + 301, 300),
            Err(VerifyError::Stale)
        );
        let moved = header.replace("t=1800000000", "t=1800000001");
        assert_eq!(
            verify(b"0123456789abcdef", &moved, body, now, 300),
            Err(VerifyError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(
                verify(b"0123456789abcdef", bad, body, 1, 300),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }
}
