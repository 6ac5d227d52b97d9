//! The media a customer can reach us on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of channel a contact came in on. Routing (capacity per channel,
/// voice exclusivity) is decided by this, not by the adapter that received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Chat,
    Email,
    Social,
    Voice,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [Self::Chat, Self::Email, Self::Social, Self::Voice];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Email => "email",
            Self::Social => "social",
            Self::Voice => "voice",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `chat`, `email`, `social`, `voice`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?} (expected chat, email, social or voice)")]
pub struct UnknownChannel(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for c in ChannelKind::ALL {
            assert_eq!(c.as_str().parse::<ChannelKind>(), Ok(c));
        }
        assert!("fax".parse::<ChannelKind>().is_err());
    }
}
