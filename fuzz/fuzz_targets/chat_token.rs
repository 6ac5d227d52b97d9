//! The chat channel's session tokens (`token.rs`): `Tokens::verify` with a
//! fixed secret and clock on arbitrary token strings (the input as a `&str`
//! when it is UTF-8, and read as lossy UTF-8), and `Tokens::issue` for a
//! session made from the input. Must not panic.
//!
//! Besides:
//! - a token is accepted only if it is at most 512 bytes,
//!   `base64url(payload) "." base64url(mac)` with `mac` the HMAC-SHA256 of
//!   the payload under the secret, computed here with `hmac`/`sha2`
//!   directly, the payload `v1|<widget>|<visitor>|<expiry>` with a visitor
//!   id of 22 base64url characters and an expiry after the clock; the
//!   session returned is that payload's, and issuing it again gives back the
//!   same token (one spelling);
//! - a token the code issues for any configurable widget id (`widget_id_ok`),
//!   any 128-bit visitor id and any expiry is accepted by `verify` and
//!   `check` for its widget while unexpired (the same session back), is
//!   `Expired` at and after its expiry, `OtherWidget` for another widget,
//!   `Signature` under another secret, and any single-byte change to it
//!   (to another ASCII byte) is refused.
//!
//! Input layout for the issued token: byte 0 the widget id's length (1 to
//! 64, cut to the input), then that many bytes each mapped onto the widget
//! id alphabet `A-Za-z0-9-_.`, 16 bytes of visitor id, 8 bytes expiry
//! (little-endian, ms), a byte choosing the changed byte's XOR; short
//! input: zeros.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use switchboard_chat::fuzzing::widget_id_ok;
use switchboard_chat::token::{Session, TokenError, Tokens};

/// The secret the tokens of `fuzz/seeds/chat_token/` were issued with.
const SECRET: &[u8] = b"fuzz-session-secret-0123456789abcdef";
/// The clock: 2026-11-23T10:38:48.425Z, in ms.
const NOW: u64 = 1_795_437_528_425;

const WIDGET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

fn mac(payload: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET) else {
        unreachable!("HMAC takes keys of any length");
    };
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

fn visitor_ok(v: &str) -> bool {
    v.len() == 22
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What an accepted token must be.
fn check_accepted(tokens: &Tokens, token: &str, session: &Session) {
    assert!(
        token.len() <= 512,
        "accepted a token of {} bytes",
        token.len()
    );
    let Some((p64, s64)) = token.split_once('.') else {
        panic!("accepted {token:?} without a '.'");
    };
    let payload = URL_SAFE_NO_PAD.decode(p64).unwrap_or_default();
    let sig = URL_SAFE_NO_PAD.decode(s64).unwrap_or_default();
    assert_eq!(sig, mac(&payload), "accepted {token:?} with a wrong MAC");
    let expected = format!(
        "v1|{}|{}|{}",
        session.widget, session.visitor, session.expires_at
    );
    assert_eq!(
        payload,
        expected.as_bytes(),
        "accepted {token:?} as another session"
    );
    assert!(
        visitor_ok(&session.visitor),
        "visitor {:?}",
        session.visitor
    );
    assert!(session.expires_at > NOW, "accepted an expired token");
    assert_eq!(tokens.issue(session), token, "two spellings of one session");
}

fn check_token(tokens: &Tokens, token: &str) {
    if let Ok(session) = tokens.verify(token, NOW) {
        check_accepted(tokens, token, &session);
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fn check_issued(tokens: &Tokens, mut data: &[u8]) {
    let len = take(&mut data, 1)
        .first()
        .map_or(1, |b| usize::from(b % 64) + 1);
    let widget: String = take(&mut data, len)
        .iter()
        .map(|b| char::from(WIDGET_ALPHABET[usize::from(*b) % WIDGET_ALPHABET.len()]))
        .collect();
    let widget = if widget.is_empty() {
        "w".to_owned()
    } else {
        widget
    };
    assert!(widget_id_ok(&widget), "{widget:?}");
    let mut visitor = [0u8; 16];
    let v = take(&mut data, 16);
    visitor[..v.len()].copy_from_slice(v);
    let mut expiry = [0u8; 8];
    let e = take(&mut data, 8);
    expiry[..e.len()].copy_from_slice(e);
    let xor = take(&mut data, 1).first().map_or(1, |b| b % 127 + 1);

    let session = Session {
        widget: widget.clone(),
        visitor: URL_SAFE_NO_PAD.encode(visitor),
        expires_at: u64::from_le_bytes(expiry),
    };
    let token = tokens.issue(&session);
    if session.expires_at > NOW {
        assert_eq!(tokens.verify(&token, NOW), Ok(session.clone()), "{token}");
        assert_eq!(tokens.check(&token, &widget, NOW), Ok(session.clone()));
        check_accepted(tokens, &token, &session);
        let other = format!("{widget}x");
        assert_eq!(
            tokens.check(&token, &other, NOW),
            Err(TokenError::OtherWidget)
        );
        assert_eq!(
            Tokens::new(b"another secret").verify(&token, NOW),
            Err(TokenError::Signature)
        );
    }
    assert_eq!(
        tokens.verify(&token, session.expires_at),
        Err(TokenError::Expired)
    );
    assert_eq!(
        tokens.verify(&token, session.expires_at.saturating_add(1)),
        Err(TokenError::Expired)
    );
    // Any single-byte change is refused (an ASCII byte XOR 1..=127 stays
    // ASCII, so the token stays a string).
    let mut bytes = token.clone().into_bytes();
    for i in 0..bytes.len() {
        bytes[i] ^= xor;
        if let Ok(changed) = std::str::from_utf8(&bytes) {
            let result = tokens.verify(changed, NOW);
            assert!(
                result.is_err(),
                "{changed:?} (byte {i} of {token:?} changed) accepted"
            );
        }
        bytes[i] ^= xor;
    }
}

fuzz_target!(|data: &[u8]| {
    let tokens = Tokens::new(SECRET);
    match std::str::from_utf8(data) {
        Ok(token) => check_token(&tokens, token),
        Err(_) => check_token(&tokens, &String::from_utf8_lossy(data)),
    }
    check_issued(&tokens, data);
});
