//! Webhook bodies → [`SocialItem`]s. No I/O; fuzzed.
//!
//! Each provider has its module: [`meta`] (Messenger, Instagram, and
//! [`whatsapp`] under the same envelope), [`telegram`] and [`generic`].
//! Provider payloads are read leniently (unknown fields are ignored:
//! providers add fields all the time; what we do not know is
//! [`Ignored`](crate::SocialItem::Ignored)), but what we read must have the
//! documented type, and [`ParseError`] names the field that does not. The
//! parsers never panic. The caller bounds the body size (the HTTP layer);
//! the parsers bound the number of events in one delivery to [`MAX_EVENTS`].

pub mod generic;
pub mod meta;
pub mod telegram;
pub mod whatsapp;

pub use generic::parse_generic;
pub use meta::parse_meta;
pub use telegram::parse_telegram;

use crate::item::{Platform, SocialItem, clip};
use serde::de::DeserializeOwned;
use switchboard_core::{CustomerIdentity, Timestamp};

/// The most events one delivery may hold: Meta's documented batch maximum
/// ("aggregated and sent in a batch with a maximum of 1000 updates").
/// Events are counted as the provider lists them (a Messenger `messaging[]`
/// element, a WhatsApp `messages[]` or `statuses[]` element, a generic
/// `events[]` element); one event may give several items (a `delivery`
/// with several `mids`), each from its own bytes of the body, so the items
/// are bounded by the body size the caller allows.
pub const MAX_EVENTS: usize = 1000;

/// Why a body could not be read. The delivery is refused (HTTP 400) as a
/// whole: a provider never sends these, so it is broken or forged. Within
/// a Meta batch whose envelope reads, one unreadable event becomes a
/// [`SocialItem::Unreadable`] instead (see [`Items::unreadable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a field is missing or has the wrong type. `path` is
    /// where, e.g. `entry[0].messaging[1].message.mid` (`.` for the root).
    #[error("{path}: {message}")]
    Json { path: String, message: String },
    /// A field is present with the right type but an unusable value.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A Meta body whose `object` is none of `page`, `instagram`,
    /// `whatsapp_business_account`.
    #[error("object {0:?} is not page, instagram or whatsapp_business_account")]
    WrongObject(String),
    /// More than [`MAX_EVENTS`] events in one delivery.
    #[error("more than {max} events in one delivery")]
    TooMany { max: usize },
}

impl ParseError {
    /// A short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Json { .. } => "json",
            Self::Invalid { .. } => "invalid",
            Self::WrongObject(_) => "wrong_object",
            Self::TooMany { .. } => "too_many",
        }
    }

    /// Where in the body, for logs: never the value (serde's messages quote
    /// it, and it may be a customer's text).
    pub fn path(&self) -> &str {
        match self {
            Self::Json { path, .. } | Self::Invalid { path, .. } => path,
            Self::WrongObject(_) => "object",
            Self::TooMany { .. } => ".",
        }
    }

    pub(crate) fn invalid(path: String, reason: impl Into<String>) -> Self {
        ParseError::Invalid {
            path,
            reason: reason.into(),
        }
    }

    fn json(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> Self {
        let path = e.path().to_string();
        let path = match (prefix.is_empty(), path.as_str()) {
            (true, _) => path,
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{path}"),
        };
        ParseError::Json {
            path,
            message: e.into_inner().to_string(),
        }
    }
}

/// Deserializes a whole body, naming the failing field.
pub(crate) fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| ParseError::json(e, ""))?;
    de.end().map_err(|e| ParseError::Json {
        path: ".".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Deserializes an already parsed JSON value found at `prefix`.
pub(crate) fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| ParseError::json(e, prefix))
}

/// The items of one delivery, from at most [`MAX_EVENTS`] events.
#[derive(Debug, Default)]
pub(crate) struct Items {
    items: Vec<SocialItem>,
    events: usize,
}

impl Items {
    /// Counts one provider event; called before reading it.
    pub(crate) fn event(&mut self) -> Result<(), ParseError> {
        if self.events >= MAX_EVENTS {
            return Err(ParseError::TooMany { max: MAX_EVENTS });
        }
        self.events += 1;
        Ok(())
    }

    pub(crate) fn push(&mut self, item: SocialItem) {
        self.items.push(item);
    }

    /// One event of the batch could not be read: kept as an
    /// [`SocialItem::Unreadable`] so that the others are still stored (a
    /// whole batch refused for one event is retried by the provider as it
    /// is, and its good events were lost with it once the provider gave
    /// up). Too many events still refuses the whole delivery.
    pub(crate) fn unreadable(
        &mut self,
        platform: Platform,
        result: Result<(), ParseError>,
    ) -> Result<(), ParseError> {
        let (path, kind) = match result {
            Ok(()) => return Ok(()),
            Err(e @ (ParseError::TooMany { .. } | ParseError::WrongObject(_))) => return Err(e),
            Err(ParseError::Json { path, .. }) => (path, "json"),
            Err(ParseError::Invalid { path, .. }) => (path, "invalid"),
        };
        self.push(SocialItem::Unreadable(crate::item::Unreadable {
            platform,
            path,
            kind,
        }));
        Ok(())
    }

    pub(crate) fn ignore(&mut self, platform: Platform, reason: &'static str) {
        self.push(SocialItem::Ignored(crate::item::Ignored {
            platform,
            reason,
        }));
    }

    pub(crate) fn into_vec(self) -> Vec<SocialItem> {
        self.items
    }
}

/// The customer's identity on `platform`, or an error naming `path`.
pub(crate) fn customer(
    platform: Platform,
    value: &str,
    path: impl FnOnce() -> String,
) -> Result<CustomerIdentity, ParseError> {
    CustomerIdentity::new(platform.as_str(), value)
        .map_err(|e| ParseError::invalid(path(), e.to_string()))
}

/// Seconds since the epoch as a [`Timestamp`]; `None` for 0 or overflow.
pub(crate) fn from_secs(secs: u64) -> Option<Timestamp> {
    secs.checked_mul(1000).filter(|&ms| ms > 0).map(Timestamp)
}

/// Milliseconds since the epoch as a [`Timestamp`]; `None` for 0.
pub(crate) fn from_millis(ms: u64) -> Option<Timestamp> {
    (ms > 0).then_some(Timestamp(ms))
}

/// A display name, trimmed and clipped to what the intake accepts; `None`
/// when blank.
pub(crate) fn display_name(name: &str) -> Option<String> {
    let name = clip(name.trim(), 256).trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A language tag short enough for the intake (35 bytes), else `None`.
pub(crate) fn language(tag: Option<&str>) -> Option<String> {
    tag.map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 35)
        .map(str::to_owned)
}

/// A string that is `None` when blank.
pub(crate) fn non_blank(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
pub(crate) mod corpus {
    //! The social corpus (`tests/corpus/social`, copied from `../shared`), read from disk.

    use std::path::PathBuf;

    pub(crate) fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/social")
    }

    pub(crate) fn read(name: &str) -> Vec<u8> {
        let path = dir().join(name);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("corpus file {} must be readable: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(from_secs(1_795_341_603), Some(Timestamp(1_795_341_603_000)));
        assert_eq!(from_secs(0), None);
        assert_eq!(from_secs(u64::MAX), None);
        assert_eq!(from_millis(5), Some(Timestamp(5)));
        assert_eq!(from_millis(0), None);
    }

    #[test]
    fn names_and_languages_are_bounded() {
        assert_eq!(display_name("  Оксана "), Some("Оксана".into()));
        assert_eq!(display_name("   "), None);
        let long = "я".repeat(200);
        assert_eq!(display_name(&long).map(|n| n.len()), Some(256));
        assert_eq!(language(Some("uk")), Some("uk".into()));
        assert_eq!(language(Some(&"x".repeat(36))), None);
        assert_eq!(language(None), None);
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let r: Result<serde_json::Value, _> = from_slice(b"{} x");
        assert!(matches!(r, Err(ParseError::Json { .. })));
    }

    #[test]
    fn event_count_is_bounded() {
        let mut items = Items::default();
        for _ in 0..MAX_EVENTS {
            items.event().expect("within the limit");
        }
        assert_eq!(items.event(), Err(ParseError::TooMany { max: MAX_EVENTS }));
    }
}
