//! Visitors' session tokens: `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`
//! with the payload `v1|<widget>|<visitor id>|<expires at, ms>`. Checked in
//! constant time (`Mac::verify_slice`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused (all are `bad_session` to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("for another widget")]
    OtherWidget,
}

/// A checked session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub widget: String,
    /// 128 random bits, base64url (22 characters).
    pub visitor: String,
    pub expires_at: u64,
}

/// Issues and checks tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(redacted)")
    }
}

/// 128 random bits, base64url without padding.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn visitor_ok(v: &str) -> bool {
    v.len() == 22
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens {
            key: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable_mac(),
        }
    }

    /// A token for `session`.
    pub fn issue(&self, session: &Session) -> String {
        let payload = format!(
            "v1|{}|{}|{}",
            session.widget, session.visitor, session.expires_at
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The session of `token` if it is genuine, unexpired at `now` (ms) and
    /// for `widget`.
    pub fn check(&self, token: &str, widget: &str, now: u64) -> Result<Session, TokenError> {
        let session = self.verify(token, now)?;
        if session.widget != widget {
            return Err(TokenError::OtherWidget);
        }
        Ok(session)
    }

    /// The session of `token` if it is genuine and unexpired, whatever its
    /// widget.
    pub fn verify(&self, token: &str, now: u64) -> Result<Session, TokenError> {
        if token.len() > 512 {
            return Err(TokenError::Malformed);
        }
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let mut parts = payload.split('|');
        let (Some("v1"), Some(w), Some(visitor), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let expires_at: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        if !visitor_ok(visitor) {
            return Err(TokenError::Malformed);
        }
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(Session {
            widget: w.to_owned(),
            visitor: visitor.to_owned(),
            expires_at,
        })
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // `new_from_slice` fails only for fixed-size keys; HMAC has none. Keep a
    // working (if useless) value rather than a panic.
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let session = Session {
            widget: "shop".into(),
            visitor: random_id(),
            expires_at: 2_000,
        };
        let token = tokens.issue(&session);
        assert_eq!(tokens.check(&token, "shop", 1_000), Ok(session.clone()));
        assert_eq!(
            tokens.check(&token, "shop", 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            tokens.check(&token, "other", 1_000),
            Err(TokenError::OtherWidget)
        );
        let other = Tokens::new(b"another secret of at least 32 chars!!");
        assert_eq!(
            other.check(&token, "shop", 1_000),
            Err(TokenError::Signature)
        );
        // A payload changed by the client (a later expiry) fails the MAC.
        let (_, sig) = token.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(format!("v1|shop|{}|9999999", session.visitor));
        assert_eq!(
            tokens.check(&format!("{forged_payload}.{sig}"), "shop", 1_000),
            Err(TokenError::Signature)
        );
        assert_eq!(
            tokens.check("garbage", "shop", 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(random_id().len(), 22);
    }
}
