//! An event as the feed holds it: references only (ids, a log position);
//! the payload is read when it is delivered.

use crate::config::EventType;
use switchboard_core::{ContactId, ConversationId};
use switchboard_store::FeedEntry;

/// A feed entry that is not a valid event (never written by Switchboard
/// itself; dropped with a log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("feed entry {entry} has no {field}")]
    Missing { entry: String, field: &'static str },
    #[error("feed entry {entry}: {field} {value:?} is not valid")]
    Invalid {
        entry: String,
        field: &'static str,
        value: String,
    },
}

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique and stable across retries: receivers deduplicate by it.
    pub id: String,
    pub kind: EventType,
    pub contact: ContactId,
    pub conversation: Option<ConversationId>,
    /// When it happened (ms since the epoch).
    pub at: u64,
    /// message.created: the message's position in the conversation log.
    pub seq: Option<String>,
    /// message.created: `in` or `out`.
    pub dir: Option<String>,
    pub agent: Option<String>,
    pub channel: Option<String>,
    /// contact.closed: the agent's or the channel's disposition.
    pub disposition: Option<String>,
    /// contact.closed: `closed` or `abandoned`.
    pub outcome: Option<String>,
}

impl Event {
    pub fn from_entry(entry: &FeedEntry) -> Result<Event, EventError> {
        let missing = |field| EventError::Missing {
            entry: entry.entry_id.clone(),
            field,
        };
        let invalid = |field, value: &str| EventError::Invalid {
            entry: entry.entry_id.clone(),
            field,
            value: value.to_owned(),
        };
        let kind = entry.get("type").ok_or_else(|| missing("type"))?;
        let kind = EventType::parse(kind).ok_or_else(|| invalid("type", kind))?;
        let id = entry.get("id").ok_or_else(|| missing("id"))?.to_owned();
        let contact = entry.get("contact").ok_or_else(|| missing("contact"))?;
        let contact = contact
            .parse::<ContactId>()
            .map_err(|_| invalid("contact", contact))?;
        let conversation = match entry.get("conversation") {
            Some(c) => Some(
                c.parse::<ConversationId>()
                    .map_err(|_| invalid("conversation", c))?,
            ),
            None => None,
        };
        let at = entry
            .get("at")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or_else(|| entry.written_at());
        let text = |name: &str| entry.get(name).map(str::to_owned);
        let event = Event {
            id,
            kind,
            contact,
            conversation,
            at,
            seq: text("seq"),
            dir: text("dir"),
            agent: text("agent"),
            channel: text("channel"),
            disposition: text("disposition"),
            outcome: text("outcome"),
        };
        if kind == EventType::MessageCreated {
            match &event.seq {
                None => return Err(missing("seq")),
                Some(seq) if !stream_id(seq) => return Err(invalid("seq", seq)),
                Some(_) => {}
            }
        }
        Ok(event)
    }
}

/// A Redis stream id, `<ms>-<n>`: Redis refuses any other as a log
/// position, and the event could never be read.
fn stream_id(s: &str) -> bool {
    let digits = |p: &str| {
        !p.is_empty()
            && p.len() <= 20
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u64>().is_ok()
    };
    s.split_once('-')
        .is_some_and(|(ms, n)| digits(ms) && digits(n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchboard_core::Partition;

    fn entry(fields: &[(&str, &str)]) -> FeedEntry {
        FeedEntry {
            partition: Partition(1),
            entry_id: "1800000000000-0".into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn entries_parse_strictly_and_default_their_time() {
        let contact = ContactId::new(Partition(1)).to_string();
        let conv = ConversationId::new(Partition(1)).to_string();
        let e = Event::from_entry(&entry(&[
            ("type", "message.created"),
            ("id", "x"),
            ("contact", &contact),
            ("conversation", &conv),
            ("seq", "1-0"),
            ("dir", "in"),
            ("agent", ""),
        ]))
        .unwrap();
        assert_eq!(e.kind, EventType::MessageCreated);
        assert_eq!(e.at, 1_800_000_000_000);
        assert_eq!(e.agent, None);
        assert!(matches!(
            Event::from_entry(&entry(&[
                ("type", "message.created"),
                ("id", "x"),
                ("contact", &contact)
            ])),
            Err(EventError::Missing { field: "seq", .. })
        ));
        assert!(matches!(
            Event::from_entry(&entry(&[
                ("type", "contact.deleted"),
                ("id", "x"),
                ("contact", &contact)
            ])),
            Err(EventError::Invalid { field: "type", .. })
        ));
        assert!(matches!(
            Event::from_entry(&entry(&[
                ("type", "contact.created"),
                ("id", "x"),
                ("contact", "nope")
            ])),
            Err(EventError::Invalid {
                field: "contact",
                ..
            })
        ));
        assert!(matches!(
            Event::from_entry(&entry(&[])),
            Err(EventError::Missing { field: "type", .. })
        ));
        for seq in [
            "x",
            "1",
            "1-",
            "-1",
            "+1-0",
            "1-0-0",
            "99999999999999999999999-0",
        ] {
            assert!(
                matches!(
                    Event::from_entry(&entry(&[
                        ("type", "message.created"),
                        ("id", "x"),
                        ("contact", &contact),
                        ("seq", seq),
                    ])),
                    Err(EventError::Invalid { field: "seq", .. })
                ),
                "{seq}"
            );
        }
    }
}
