//! Is a request really from the provider or the PBX? Checked before anything
//! is parsed into events or stored.
//!
//! - Twilio signs every webhook: `X-Twilio-Signature` is
//!   base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value)),
//!   where the URL is the full URL Twilio requested (scheme, host, path and
//!   query string, exactly as configured at Twilio) and the parameters are
//!   sorted by name, and by value for repeated names, concatenated without
//!   separators. The values are the decoded ones (`+380…`, not `%2B380…`).
//!   Twilio's SDKs also accept the signature computed over the URL with the
//!   default port added or removed, because Twilio's own signing is not
//!   consistent about it; so do we ([`verify_twilio_signature`]).
//! - Twilio webhooks with a JSON body instead carry `bodySHA256=<hex SHA-256 of
//!   the body>` in the query string; the signature covers the URL alone
//!   ([`verify_twilio_json`]).
//! - The generic CTI API (as Zammad's) carries a shared secret token (in
//!   Zammad, in the URL path `/api/v1/cti/<token>`); [`verify_token`].
//!
//! Comparisons are constant-time (`Mac::verify_slice`, `subtle`). An empty
//! secret never verifies anything.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::{Position, Url};

type HmacSha1 = Hmac<Sha1>;

/// Twilio's signature header (HTTP header names are case-insensitive).
pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The query parameter of a signed JSON-body webhook.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// Why a request was refused. Callers answer 401 (Twilio: 403 is also
/// usual) and store nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature or token is missing")]
    Missing,
    #[error("the signature or token is malformed")]
    Malformed,
    #[error("the signature or token does not match")]
    Mismatch,
}

impl SignatureError {
    /// A short, bounded label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// Checks Twilio's `X-Twilio-Signature` `header` of a form-encoded webhook:
/// `url` is the full URL Twilio requested (as configured at Twilio, with its
/// query string), `params` every POST parameter of the body, decoded, in any
/// order (as [`parse_form`](crate::parse_form) gives them).
pub fn verify_twilio_signature(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = decode_signature(header)?;
    if auth_token.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Byte order is code point order: Twilio sorts case-sensitively
    // ("Unix-style"), by name and then by value.
    sorted.sort_unstable();
    let mut verdict = Err(SignatureError::Mismatch);
    for candidate in url_variants(url) {
        let Ok(mut mac) = HmacSha1::new_from_slice(auth_token) else {
            return Err(SignatureError::Mismatch);
        };
        mac.update(candidate.as_bytes());
        for (name, value) in &sorted {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
        if mac.verify_slice(&signature).is_ok() {
            verdict = Ok(());
        }
    }
    verdict
}

/// Checks a Twilio webhook with a JSON body: the signature covers `url`
/// alone (no parameters), and `url`'s `bodySHA256` query parameter must be
/// the hex SHA-256 of `body`. A `url` without `bodySHA256` is
/// [`SignatureError::Malformed`].
pub fn verify_twilio_json(
    auth_token: &[u8],
    url: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let claimed = Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == BODY_SHA256_PARAM)
                .map(|(_, v)| v.into_owned())
        })
        .ok_or(SignatureError::Malformed)?;
    verify_twilio_signature(auth_token, url, &[], header)?;
    let mut claimed_digest = [0u8; 32];
    hex::decode_to_slice(claimed.trim(), &mut claimed_digest)
        .map_err(|_| SignatureError::Mismatch)?;
    let same: bool = Sha256::digest(body).ct_eq(&claimed_digest).into();
    if same {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks the shared token a PBX presents (generic CTI) against the
/// configured one. Both are hashed before the constant-time comparison, so
/// not even the length of the secret leaks. A blank token is
/// [`SignatureError::Malformed`]; surrounding whitespace is not trimmed.
pub fn verify_token(expected: &[u8], presented: Option<&str>) -> Result<(), SignatureError> {
    let presented = presented.ok_or(SignatureError::Missing)?;
    if presented.trim().is_empty() || presented.len() > 1024 {
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

/// The `X-Twilio-Signature` value for a form webhook to `url` with `params`:
/// for tests and for tools that simulate Twilio.
pub fn twilio_signature(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty string
    // (which no verifier accepts) stands in for the impossible.
    let Ok(mut mac) = HmacSha1::new_from_slice(auth_token) else {
        return String::new();
    };
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// The header's base64 → the 20 bytes of an HMAC-SHA1.
fn decode_signature(header: Option<&str>) -> Result<[u8; 20], SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    // A 20-byte digest is 28 base64 characters; refuse anything much longer
    // before decoding it.
    if header.len() > 64 {
        return Err(SignatureError::Malformed);
    }
    let bytes = BASE64
        .decode(header)
        .map_err(|_| SignatureError::Malformed)?;
    <[u8; 20]>::try_from(bytes.as_slice()).map_err(|_| SignatureError::Malformed)
}

/// `url` as given, then as Twilio's SDKs also try it: without its port, and
/// with its port, the scheme's default one when it has none
/// (`https://h/x`, `https://h:443/x`). The URL is our own configuration,
/// never request input.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Ok(parsed) = Url::parse(url) else {
        return variants;
    };
    if !parsed.has_host() {
        return variants;
    }
    let mut without = parsed.clone();
    if without.set_port(None).is_ok() {
        variants.push(without.as_str().to_owned());
    }
    if let Some(port) = parsed.port_or_known_default() {
        let with = format!(
            "{}:{port}{}",
            &without[..Position::AfterHost],
            &without[Position::AfterPort..]
        );
        variants.push(with);
    }
    let mut seen = std::collections::HashSet::new();
    variants.retain(|v| seen.insert(v.clone()));
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"12345";
    // Twilio's documented example; the signatures below were computed
    // independently with Python's hmac, hashlib and base64.
    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const DOC_SIGNATURE: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    fn doc_params() -> Vec<(String, String)> {
        [
            ("To", "+18005551212"),
            ("From", "+12349013030"),
            ("Digits", "1234"),
            ("Caller", "+12349013030"),
            ("CallSid", "CA1234567890ABCDE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn documented_example_verifies_in_any_parameter_order() {
        let params = doc_params();
        assert_eq!(twilio_signature(TOKEN, DOC_URL, &params), DOC_SIGNATURE);
        assert_eq!(
            verify_twilio_signature(TOKEN, DOC_URL, &params, Some(DOC_SIGNATURE)),
            Ok(())
        );
        let mut reversed = params.clone();
        reversed.reverse();
        assert_eq!(
            verify_twilio_signature(TOKEN, DOC_URL, &reversed, Some(DOC_SIGNATURE)),
            Ok(())
        );
    }

    #[test]
    fn anything_changed_is_a_mismatch() {
        let params = doc_params();
        let check = |token: &[u8], url: &str, params: &[(String, String)]| {
            verify_twilio_signature(token, url, params, Some(DOC_SIGNATURE))
        };
        assert_eq!(
            check(b"12346", DOC_URL, &params),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(b"", DOC_URL, &params), Err(SignatureError::Mismatch));
        assert_eq!(
            check(
                TOKEN,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &params
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(TOKEN, "http://mycompany.com/myapp.php?foo=1&bar=2", &params),
            Err(SignatureError::Mismatch)
        );
        let mut extra = params.clone();
        extra.push(("Body".into(), String::new()));
        // An empty value still adds its name to the signed string.
        assert_eq!(check(TOKEN, DOC_URL, &extra), Err(SignatureError::Mismatch));
        let mut fewer = params.clone();
        fewer.pop();
        assert_eq!(check(TOKEN, DOC_URL, &fewer), Err(SignatureError::Mismatch));
        let mut encoded = params;
        if let Some(p) = encoded.first_mut() {
            p.1 = "%2B18005551212".into();
        }
        assert_eq!(
            check(TOKEN, DOC_URL, &encoded),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn repeated_names_are_sorted_by_value() {
        // python3: sorted([("user[]","Zoe"),("event","newCall"),("user[]","Adam")])
        let params: Vec<(String, String)> =
            [("user[]", "Zoe"), ("event", "newCall"), ("user[]", "Adam")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let sig = "gAOL2fNMR8T/ltzTFnYEEhLVzjg=";
        assert_eq!(
            twilio_signature(TOKEN, "https://example.com/x", &params),
            sig
        );
        assert_eq!(
            verify_twilio_signature(TOKEN, "https://example.com/x", &params, Some(sig)),
            Ok(())
        );
    }

    #[test]
    fn default_port_is_tried_both_ways() {
        let params = doc_params();
        // Signed by Twilio with ":443", configured without it.
        let with_port = "EpDEmp1PyjDYp77YxYU3GILBWzE=";
        assert_eq!(
            verify_twilio_signature(TOKEN, DOC_URL, &params, Some(with_port)),
            Ok(())
        );
        // Signed without, configured with it.
        assert_eq!(
            verify_twilio_signature(
                TOKEN,
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params,
                Some(DOC_SIGNATURE)
            ),
            Ok(())
        );
        assert_eq!(
            url_variants("https://h.example/x?a=1"),
            ["https://h.example/x?a=1", "https://h.example:443/x?a=1"]
        );
        assert_eq!(
            url_variants("http://h.example:8080/x"),
            ["http://h.example:8080/x", "http://h.example/x"]
        );
        assert_eq!(url_variants("not a url"), ["not a url"]);
    }

    #[test]
    fn json_body_variant() {
        let url = "https://example.com/myapp?bodySHA256=5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9";
        let body = br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#;
        let sig = "hPXmLwIy3Fgqv1i9KPmH/HhQ6zo=";
        assert_eq!(verify_twilio_json(TOKEN, url, body, Some(sig)), Ok(()));
        assert_eq!(
            verify_twilio_json(TOKEN, url, b"{}", Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_twilio_json(TOKEN, "https://example.com/myapp", body, Some(sig)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_twilio_json(TOKEN, url, body, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn malformed_and_missing_headers() {
        let params = doc_params();
        let check = |h: Option<&str>| verify_twilio_signature(TOKEN, DOC_URL, &params, h);
        assert_eq!(check(None), Err(SignatureError::Missing));
        assert_eq!(check(Some("  ")), Err(SignatureError::Missing));
        for bad in [
            "not base64!",
            "0/KCTR6DLpKmkAf8muzZqo1nDg",
            "AAAA",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=AAAA",
            &"A".repeat(100),
            "sha1=0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
        ] {
            assert_eq!(check(Some(bad)), Err(SignatureError::Malformed), "{bad}");
        }
        // Surrounding whitespace from a proxy is tolerated.
        assert_eq!(check(Some(" 0/KCTR6DLpKmkAf8muzZqo1nDgQ= ")), Ok(()));
    }

    #[test]
    fn token_forms() {
        let secret = b"cti-secret-0123456789";
        assert_eq!(verify_token(secret, Some("cti-secret-0123456789")), Ok(()));
        assert_eq!(
            verify_token(secret, Some("cti-secret-012345678")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_token(secret, Some("cti-secret-0123456789 ")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_token(secret, None), Err(SignatureError::Missing));
        assert_eq!(
            verify_token(secret, Some(" ")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_token(secret, Some(&"x".repeat(1025))),
            Err(SignatureError::Malformed)
        );
        assert_eq!(verify_token(b"", Some("x")), Err(SignatureError::Mismatch));
    }

    #[test]
    fn kinds_are_labels() {
        let kinds: Vec<_> = [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
        ]
        .into_iter()
        .map(SignatureError::kind)
        .collect();
        assert_eq!(kinds, ["missing", "malformed", "mismatch"]);
    }
}
