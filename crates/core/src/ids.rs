//! Identifiers.
//!
//! Contacts and conversations belong to a *partition*: every Redis key of a
//! partition carries the same hash tag, so one atomic script can touch all of
//! them, also on Redis Cluster. The partition is part of the id
//! (`"<partition>-<ulid>"`), so any instance can find an object's keys from
//! its id alone. The ULID part makes ids unguessable enough to be unique and
//! sortable by creation time; ids are not secrets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

/// A routing partition, `0..partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Partition(pub u16);

impl Partition {
    /// The partition a key falls in, by a stable hash (FNV-1a, 64 bit). Stable
    /// across versions and machines: changing it would orphan stored state.
    pub fn of(key: &[u8], partitions: u16) -> Partition {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let n = u64::from(partitions.max(1));
        // `hash % n` is below `n`, which fits in u16.
        Partition(u16::try_from(hash % n).unwrap_or(0))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A malformed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("malformed {kind} id {value:?}: expected <partition>-<ulid>")]
    Partitioned { kind: &'static str, value: String },
    #[error("malformed {kind} id {value:?}: {reason}")]
    Plain {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
}

macro_rules! partitioned_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            partition: Partition,
            ulid: Ulid,
        }

        impl $name {
            /// A new id in `partition`.
            pub fn new(partition: Partition) -> Self {
                Self { partition, ulid: Ulid::new() }
            }

            pub fn partition(&self) -> Partition {
                self.partition
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", self.partition.0, self.ulid)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let bad = || IdError::Partitioned { kind: $kind, value: s.chars().take(64).collect() };
                let (p, u) = s.split_once('-').ok_or_else(bad)?;
                // Only plain decimal digits: no sign, no leading '+'.
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let partition = Partition(p.parse().map_err(|_| bad())?);
                let ulid = Ulid::from_string(u).map_err(|_| bad())?;
                Ok(Self { partition, ulid })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

partitioned_id!(
    /// One unit of work routed to an agent.
    ContactId,
    "contact"
);
partitioned_id!(
    /// A thread of messages with one customer on one channel.
    ConversationId,
    "conversation"
);

/// One message, inbound or outbound. A ULID: unique and time-ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Ulid);

impl MessageId {
    pub fn new() -> Self {
        MessageId(Ulid::new())
    }

    /// When it was made (ms since the epoch; a ULID carries it).
    pub fn created_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Ulid::from_string(s)
            .map(MessageId)
            .map_err(|_| IdError::Plain {
                kind: "message",
                value: s.chars().take(64).collect(),
                reason: "not a ULID",
            })
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An agent's id, chosen by whoever defines the agent (configuration or API):
/// 1 to 64 characters of `A-Za-z0-9._-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(AgentId(s.to_owned()))
        } else {
            Err(IdError::Plain {
                kind: "agent",
                value: s.chars().take(64).collect(),
                reason: "expected 1 to 64 characters of A-Za-z0-9._-",
            })
        }
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contact_id_round_trips() {
        let id = ContactId::new(Partition(7));
        let text = id.to_string();
        assert!(text.starts_with("7-"));
        assert_eq!(text.parse::<ContactId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(serde_json::from_str::<ContactId>(&json).expect("parse"), id);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "7",
            "-01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "+7-01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "7-nope",
            "70000000-01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(bad.parse::<ContactId>().is_err(), "{bad:?} accepted");
        }
        assert!("a b".parse::<AgentId>().is_err());
        assert!("".parse::<AgentId>().is_err());
        assert!("olena.k-2".parse::<AgentId>().is_ok());
    }

    #[test]
    fn partition_hash_is_stable() {
        // Pinned values: a change here would move customers between partitions.
        assert_eq!(
            Partition::of(b"", 8),
            Partition((0xcbf2_9ce4_8422_2325_u64 % 8) as u16)
        );
        assert_eq!(
            Partition::of(b"email:olena@customer.example", 1),
            Partition(0)
        );
        assert_eq!(
            Partition::of(b"a", 1000),
            Partition((0xaf63_dc4c_8601_ec8c_u64 % 1000) as u16)
        );
    }

    proptest! {
        #[test]
        fn partition_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1u16..2000) {
            prop_assert!(Partition::of(&key, n).0 < n);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<ContactId>();
            let _ = s.parse::<MessageId>();
            let _ = s.parse::<AgentId>();
        }
    }
}
