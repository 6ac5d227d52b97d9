//! The voice channel's request checks, `verify_twilio_signature`,
//! `verify_twilio_json` and `verify_token`, with arbitrary auth tokens,
//! URLs, parameters, headers and bodies. Must not panic, must never accept
//! a request whose `X-Twilio-Signature` is not the base64 HMAC-SHA1 computed
//! here independently (over the URL or one of its port variants and the
//! sorted parameters), and must accept a correctly signed one.
//!
//! Input layout (short input: missing fields empty):
//!
//! ```text
//! byte 0      flags: bit 0 header absent, bit 1 parameters from the rest
//!             by `parse_form` (else split on `&` and the first `=`, not
//!             decoded), bit 2 signed header padded with blanks, bit 3
//!             presented CTI token absent
//! then        auth token, URL, header, presented CTI token: each a u16
//!             little-endian length and that many bytes (all but the auth
//!             token read as lossy UTF-8)
//! the rest    the body: the form parameters, and the JSON-variant body
//! ```
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use switchboard_voice::{
    SignatureError, parse_form, verify_token, verify_twilio_json, verify_twilio_signature,
};
use url::{Position, Url};

struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn field(&mut self) -> &'a [u8] {
        let mut len = [0u8; 2];
        let head = self.take(2);
        len[..head.len()].copy_from_slice(head);
        self.take(usize::from(u16::from_le_bytes(len)))
    }
}

/// base64(HMAC-SHA1(`token`, `url` + each sorted name and value)).
fn sign(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(token) else {
        unreachable!("HMAC takes keys of any length");
    };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// The URLs a signature may be over: `url` as given, and for a URL with a
/// host, without its port and with its port (the scheme's default one when
/// it has none), as Twilio's SDKs accept.
fn variants(url: &str) -> Vec<String> {
    let mut all = vec![url.to_owned()];
    let Ok(parsed) = Url::parse(url) else {
        return all;
    };
    if parsed.host_str().is_none() {
        return all;
    }
    let mut bare = parsed.clone();
    if bare.set_port(None).is_ok() {
        all.push(bare.to_string());
    }
    if let Some(port) = parsed.port_or_known_default() {
        let s = bare.as_str();
        let (head, tail) = s.split_at(bare[..Position::AfterHost].len());
        all.push(format!("{head}:{port}{tail}"));
    }
    all
}

/// The parameters of the rest: decoded by `parse_form`, or split without
/// decoding.
fn params(rest: &[u8], decoded: bool) -> Vec<(String, String)> {
    if decoded && let Ok(params) = parse_form(rest) {
        return params;
    }
    String::from_utf8_lossy(rest)
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (pair.to_owned(), String::new()),
        })
        .collect()
}

/// Whether the header is 1 to 64 characters, blanks around trimmed, of
/// padded base64 for 20 bytes.
fn well_formed(header: &str) -> bool {
    let h = header.trim();
    h.len() <= 64 && BASE64.decode(h).is_ok_and(|b| b.len() == 20)
}

/// The `bodySHA256` the URL claims (the first one), if it parses.
fn claimed_digest(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let flags = input.take(1).first().copied().unwrap_or(0);
    let token = input.field();
    let url = String::from_utf8_lossy(input.field()).into_owned();
    let header = String::from_utf8_lossy(input.field()).into_owned();
    let presented = String::from_utf8_lossy(input.field()).into_owned();
    let body = input.data;
    let header = (flags & 1 == 0).then_some(header.as_str());
    let params = params(body, flags & 2 != 0);
    let padded = flags & 4 != 0;
    let presented = (flags & 8 == 0).then_some(presented.as_str());
    let urls = variants(&url);

    // The form webhook, as given.
    let verdict = verify_twilio_signature(token, &url, &params, header);
    let want_error = match header {
        None => Some(SignatureError::Missing),
        Some(h) if h.trim().is_empty() => Some(SignatureError::Missing),
        Some(h) if !well_formed(h) => Some(SignatureError::Malformed),
        Some(_) if token.is_empty() => Some(SignatureError::Mismatch),
        Some(_) => None,
    };
    match (verdict, want_error) {
        (Err(got), Some(want)) => assert_eq!(got, want, "header {header:?}"),
        (Ok(()), None) => {
            let h = header.map(str::trim).unwrap_or_default();
            assert!(
                urls.iter().any(|u| sign(token, u, &params) == h),
                "accepted a wrong signature {h:?} for {url:?}"
            );
        }
        (Err(got), None) => assert_eq!(got, SignatureError::Mismatch, "header {header:?}"),
        (Ok(()), Some(want)) => panic!("accepted {header:?}; want {want:?}"),
    }

    // The form webhook, signed correctly over each URL variant.
    for u in &urls {
        let signature = sign(token, u, &params);
        let signature = if padded {
            format!(" \t{signature} ")
        } else {
            signature
        };
        let verdict = verify_twilio_signature(token, &url, &params, Some(&signature));
        let want = if token.is_empty() {
            Err(SignatureError::Mismatch)
        } else {
            Ok(())
        };
        assert_eq!(verdict, want, "signed over {u:?}, configured {url:?}");
    }

    // The JSON webhook, as given.
    let claimed = claimed_digest(&url);
    let verdict = verify_twilio_json(token, &url, body, header);
    if claimed.is_none() {
        assert_eq!(verdict, Err(SignatureError::Malformed), "{url:?}");
    }
    if verdict == Ok(()) {
        let h = header.map(str::trim).unwrap_or_default();
        assert!(!token.is_empty());
        assert!(
            urls.iter().any(|u| sign(token, u, &[]) == h),
            "JSON: accepted a wrong signature {h:?} for {url:?}"
        );
        assert_eq!(
            claimed.as_deref().map(|c| c.trim().to_ascii_lowercase()),
            Some(hex::encode(Sha256::digest(body))),
            "JSON: accepted a body that is not the one the URL names"
        );
    }

    // The JSON webhook, signed correctly: the URL with the body's digest
    // appended (when the URL has no fragment and names no digest yet).
    if claimed.is_none() && Url::parse(&url).is_ok_and(|u| u.fragment().is_none()) {
        let digest = hex::encode(Sha256::digest(body));
        let separator = if url.contains('?') { '&' } else { '?' };
        let signed_url = format!("{url}{separator}bodySHA256={digest}");
        if claimed_digest(&signed_url).as_deref() == Some(digest.as_str()) {
            let signature = sign(token, &signed_url, &[]);
            let verdict = verify_twilio_json(token, &signed_url, body, Some(&signature));
            let want = if token.is_empty() {
                Err(SignatureError::Mismatch)
            } else {
                Ok(())
            };
            assert_eq!(verdict, want, "signed JSON to {signed_url:?}");
            let other = verify_twilio_json(token, &signed_url, b"{\"x\":1}", Some(&signature));
            if body != b"{\"x\":1}" {
                assert_eq!(other, Err(SignatureError::Mismatch), "another body");
            }
        }
    }

    // The CTI token: fully determined.
    let verdict = verify_token(token, presented);
    let want = match presented {
        None => Err(SignatureError::Missing),
        Some(p) if p.trim().is_empty() || p.len() > 1024 => Err(SignatureError::Malformed),
        Some(_) if token.is_empty() => Err(SignatureError::Mismatch),
        Some(p) if p.as_bytes() == token => Ok(()),
        Some(_) => Err(SignatureError::Mismatch),
    };
    assert_eq!(verdict, want, "token {presented:?}");
    if let Ok(own) = std::str::from_utf8(token) {
        let want = if own.trim().is_empty() || own.len() > 1024 {
            Err(SignatureError::Malformed)
        } else {
            Ok(())
        };
        assert_eq!(verify_token(token, Some(own)), want, "the token itself");
    }
});
