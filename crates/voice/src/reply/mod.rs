//! What we answer the provider or the PBX. Pure builders: text in, text out.
//!
//! - [`twiml`]: TwiML for Twilio: hold the caller ([`twiml_hold`]), connect
//!   them to an agent ([`twiml_connect`]), refuse the call
//!   ([`twiml_reject`]), end it ([`twiml_hangup`]).
//! - [`cti`]: the generic CTI answers ([`CtiReply`]): `{}`,
//!   `{"action":"reject","reason":"busy"}`, `{"action":"dial",…}`.
//!
//! Every value is checked before it is written: URLs must be absolute
//! `http`/`https` URLs (they are ours, from configuration: a bad one is a
//! bug or a misconfiguration, reported as [`ReplyError`]).

pub mod cti;
pub mod twiml;

pub use cti::CtiReply;
pub use twiml::{
    DialOptions, HOLD_PAUSE_SECS, Hold, twiml_connect, twiml_hangup, twiml_hold, twiml_proceed,
    twiml_reject,
};

/// Where an agent's phone is, for connecting a caller to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A SIP URI (`sip:` or `sips:`), e.g. `sip:olena@pbx.example.com` or
    /// `sip:201@pbx.example.com;transport=tls`: TwiML `<Sip>`.
    Sip(String),
    /// A phone number, `+` and 2 to 15 digits (E.164), or an extension of 2
    /// to 15 digits for a PBX: TwiML `<Number>`, CTI `number`.
    Number(String),
    /// A Twilio Voice SDK client identity (ASCII letters, digits and
    /// `_-.@+`): TwiML `<Client>`.
    Client(String),
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The caller hears a busy tone (TwiML `reason="busy"`, CTI
    /// `"reason":"busy"` as Zammad answers for blocked callers).
    Busy,
    /// The call is refused as not in service (TwiML `reason="rejected"`,
    /// CTI `"reason":"rejected"`).
    Rejected,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Rejected => "rejected",
        }
    }
}

/// A value that cannot be put in an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("{field}: not an absolute http or https URL without spaces")]
    Url { field: &'static str },
    #[error("{field}: longer than {max}")]
    TooLong { field: &'static str, max: usize },
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl ReplyError {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url { .. } => "url",
            Self::TooLong { .. } => "too_long",
            Self::Invalid { .. } => "invalid",
        }
    }
}

impl Target {
    /// An agent's phone as configured: `sip:…`/`sips:…`, `client:…`, or a
    /// number.
    pub fn from_endpoint(endpoint: &str) -> Target {
        if let Some(client) = endpoint.strip_prefix("client:") {
            Target::Client(client.to_owned())
        } else if endpoint.starts_with("sip:") || endpoint.starts_with("sips:") {
            Target::Sip(endpoint.to_owned())
        } else {
            Target::Number(endpoint.to_owned())
        }
    }

    /// The target as written (checked).
    pub(crate) fn checked(&self) -> Result<&str, ReplyError> {
        let (field, value, ok) = match self {
            Self::Sip(uri) => {
                let ok = uri.split_once(':').is_some_and(|(scheme, rest)| {
                    (scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips"))
                        && !rest.is_empty()
                }) && uri.len() <= 255
                    && !uri.chars().any(|c| c.is_whitespace() || c.is_control());
                ("target.sip", uri.as_str(), ok)
            }
            Self::Number(number) => {
                let digits = number.strip_prefix('+').unwrap_or(number);
                let ok =
                    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
                ("target.number", number.as_str(), ok)
            }
            Self::Client(identity) => {
                let ok = !identity.is_empty()
                    && identity.len() <= 256
                    && identity
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.@+".contains(&b));
                ("target.client", identity.as_str(), ok)
            }
        };
        if ok {
            Ok(value)
        } else {
            Err(ReplyError::Invalid {
                field,
                reason: "not a valid target",
            })
        }
    }
}

/// An absolute `http`/`https` URL without whitespace or control characters,
/// returned as given (Twilio requests it as written, and signs that).
pub(crate) fn checked_url<'a>(field: &'static str, url: &'a str) -> Result<&'a str, ReplyError> {
    let ok = url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
    if ok {
        Ok(url)
    } else {
        Err(ReplyError::Url { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        for ok in [
            Target::Sip("sip:olena@pbx.example.com".into()),
            Target::Sip("SIPS:201@pbx.example.com;transport=tls".into()),
            Target::Number("+380501234567".into()),
            Target::Number("201".into()),
            Target::Client("agent_olena".into()),
        ] {
            assert!(ok.checked().is_ok(), "{ok:?}");
        }
        for bad in [
            Target::Sip("sip:".into()),
            Target::Sip("http://x".into()),
            Target::Sip("sip:a b@x".into()),
            Target::Sip("sip:a\n@x".into()),
            Target::Sip("с".into()),
            Target::Number("+1".into()),
            Target::Number("+1 555 0100".into()),
            Target::Number("1234567890123456".into()),
            Target::Client(String::new()),
            Target::Client("olena k".into()),
            Target::Client("<x>".into()),
        ] {
            assert!(bad.checked().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            checked_url("u", "https://sb.example/voice/twilio/hold?call=CA1&n=2"),
            Ok("https://sb.example/voice/twilio/hold?call=CA1&n=2")
        );
        for bad in [
            "",
            "/relative",
            "ftp://sb.example/x",
            "https://sb.example/a b",
            "https://sb.example/\n",
            "mailto:x@y",
        ] {
            assert_eq!(
                checked_url("u", bad).map_err(|e| e.kind()),
                Err("url"),
                "{bad}"
            );
        }
    }
}
