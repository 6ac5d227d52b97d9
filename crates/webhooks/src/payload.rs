//! The JSON body of each event (examples in `docs/webhooks.md`). The
//! builders are pure; [`load`] reads what they need from the store at
//! delivery time.

use crate::config::EventType;
use crate::event::Event;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use switchboard_channel::{LogEntry, entry_text};
use switchboard_core::{ContactId, ConversationId};
use switchboard_store::{Conversations, StoreError};

/// Log entries read per page of a transcript.
const PAGE: usize = 500;

/// A `contact.closed` transcript holds at most this many messages...
pub const MAX_TRANSCRIPT_MESSAGES: usize = 1000;

/// ...and at most this many bytes of their texts (the first messages that
/// fit; `transcript_truncated` says when some were left out). Without a
/// bound, a long mail thread made a body of many megabytes, held for every
/// retry, that a receiver refusing it (413) lost for good.
pub const MAX_TRANSCRIPT_TEXT_BYTES: usize = 1024 * 1024;

/// Log entries read for a transcript at most (notes and other internal
/// entries included).
const MAX_LOG_ENTRIES: usize = 20 * PAGE;

/// What a body is built from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The contact's hash as the intake stored it; `None` when gone.
    pub contact: Option<HashMap<String, String>>,
    /// message.created: the log entry; `None` when gone.
    pub message: Option<LogEntry>,
    /// contact.closed: the messages to and from the customer in the
    /// conversation's log (of its first `MAX_LOG_ENTRIES` entries, and no
    /// more than the body keeps); notes and other entries are left out.
    pub transcript: Vec<LogEntry>,
    /// The log has more entries than were read (or more messages than the
    /// body keeps).
    pub log_truncated: bool,
}

/// Reads the facts of `event`.
pub async fn load(conversations: &Conversations, event: &Event) -> Result<Facts, StoreError> {
    let contact = conversations.contact(&event.contact).await?;
    let conversation = conversation_of(event, contact.as_ref());
    let mut facts = Facts {
        contact,
        ..Facts::default()
    };
    match (event.kind, conversation) {
        (EventType::MessageCreated, Some(conv)) => {
            if let Some(seq) = &event.seq {
                facts.message = conversations.entry_at(&conv, seq).await?;
            }
        }
        (EventType::ContactClosed, Some(conv)) => {
            let mut after = "-".to_owned();
            // What the body will keep, counted as it is read: reading on
            // past it held up to 10,000 whole entries (mails of 64 KiB) in
            // memory for a body of 1 MiB of text.
            // Only the messages are kept: notes and automatic entries (an
            // out-of-office mail of 64 KiB) are left out of the body anyway.
            let (mut messages, mut text_bytes, mut read) = (0usize, 0usize, 0usize);
            'pages: loop {
                let page = conversations.transcript(&conv, &after, PAGE).await?;
                let full = page.len() == PAGE;
                if let Some(last) = page.last() {
                    after = last.seq.clone();
                }
                read += page.len();
                for entry in page {
                    if entry.dir != "in" && entry.dir != "out" {
                        continue;
                    }
                    let bytes = entry_text(&entry.msg).len();
                    if messages >= MAX_TRANSCRIPT_MESSAGES
                        || text_bytes + bytes > MAX_TRANSCRIPT_TEXT_BYTES
                    {
                        facts.log_truncated = true;
                        break 'pages;
                    }
                    messages += 1;
                    text_bytes += bytes;
                    facts.transcript.push(entry);
                }
                if !full {
                    break;
                }
                if read >= MAX_LOG_ENTRIES {
                    // More only if there is another entry.
                    facts.log_truncated =
                        !conversations.transcript(&conv, &after, 1).await?.is_empty();
                    break;
                }
            }
        }
        _ => {}
    }
    Ok(facts)
}

fn conversation_of(
    event: &Event,
    contact: Option<&HashMap<String, String>>,
) -> Option<ConversationId> {
    event.conversation.or_else(|| {
        contact
            .and_then(|c| c.get("conversation"))
            .and_then(|c| c.parse().ok())
    })
}

/// The body of `event`.
pub fn body(event: &Event, facts: &Facts) -> Value {
    let contact = contact_json(&event.contact, event, facts.contact.as_ref());
    let customer = facts
        .contact
        .as_ref()
        .and_then(|c| c.get("customer"))
        .cloned()
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("id".into(), json!(event.id));
    out.insert("type".into(), json!(event.kind.as_str()));
    out.insert("created_at".into(), json!(event.at));
    out.insert("contact".into(), contact);
    match event.kind {
        EventType::ContactCreated => {}
        EventType::MessageCreated => {
            let message = match &facts.message {
                Some(entry) => message_json(entry, &customer),
                // The log entry is gone (the conversation expired): what
                // the event itself knows.
                None => json!({
                    "seq": event.seq,
                    "direction": event.dir,
                    "text": null,
                    "at": event.at,
                    "author": null,
                }),
            };
            out.insert("message".into(), message);
        }
        EventType::ContactAssigned => {
            out.insert("agent".into(), json!(event.agent));
        }
        EventType::ContactClosed => {
            out.insert("agent".into(), json!(event.agent));
            out.insert("disposition".into(), json!(event.disposition));
            out.insert(
                "outcome".into(),
                json!(event.outcome.as_deref().unwrap_or("closed")),
            );
            // Without the contact's data (the records' retention removed
            // it before the event was delivered) the transcript is not
            // known to be whole.
            let mut truncated = facts.log_truncated || facts.contact.is_none();
            let mut transcript: Vec<Value> = Vec::new();
            let mut text_bytes = 0;
            for e in facts
                .transcript
                .iter()
                .filter(|e| e.dir == "in" || e.dir == "out")
            {
                let message = message_json(e, &customer);
                let bytes = message["text"].as_str().map_or(0, str::len);
                if transcript.len() >= MAX_TRANSCRIPT_MESSAGES
                    || text_bytes + bytes > MAX_TRANSCRIPT_TEXT_BYTES
                {
                    truncated = true;
                    break;
                }
                text_bytes += bytes;
                transcript.push(message);
            }
            out.insert("transcript".into(), Value::Array(transcript));
            out.insert("transcript_truncated".into(), json!(truncated));
        }
    }
    Value::Object(out)
}

/// The contact as the intake stored it; empty texts are `null`.
fn contact_json(id: &ContactId, event: &Event, fields: Option<&HashMap<String, String>>) -> Value {
    let get = |k: &str| {
        fields
            .and_then(|f| f.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let attributes = get("attributes")
        .and_then(|a| serde_json::from_str::<Value>(&a).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let conversation = event
        .conversation
        .map(|c| c.to_string())
        .or_else(|| get("conversation"));
    json!({
        "id": id.to_string(),
        "channel": get("channel").or_else(|| event.channel.clone()),
        "source": get("source"),
        "address": get("address"),
        "customer": get("customer"),
        "customer_name": get("customer_name"),
        "subject": get("subject"),
        "language": get("language"),
        "attributes": attributes,
        "conversation_id": conversation,
        "created_at": get("created_at").and_then(|t| t.parse::<u64>().ok()),
    })
}

/// A log entry as a message: who wrote it, its text, when.
fn message_json(entry: &LogEntry, customer: &str) -> Value {
    let author = if entry.dir == "in" {
        (!customer.is_empty()).then(|| customer.to_owned())
    } else {
        serde_json::from_str::<Value>(&entry.msg)
            .ok()
            .and_then(|v| v.get("author").and_then(Value::as_str).map(str::to_owned))
    };
    json!({
        "seq": entry.seq,
        "message_id": entry.id,
        "direction": entry.dir,
        "text": entry_text(&entry.msg),
        "at": entry.at,
        "author": author,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use switchboard_core::Partition;

    fn event(kind: EventType) -> Event {
        Event {
            id: "evt-1".into(),
            kind,
            contact: ContactId::new(Partition(2)),
            conversation: Some(ConversationId::new(Partition(2))),
            at: 1_800_000_000_000,
            seq: Some("1800000000000-0".into()),
            dir: Some("in".into()),
            agent: Some("olena".into()),
            channel: Some("chat".into()),
            disposition: Some("resolved".into()),
            outcome: Some("closed".into()),
        }
    }

    fn contact() -> HashMap<String, String> {
        [
            ("channel", "chat"),
            ("source", "website"),
            ("address", "widget-1"),
            ("customer", "visitor:abc"),
            ("customer_name", "Mariia"),
            ("subject", ""),
            ("language", "uk"),
            ("attributes", r#"{"plan":"pro"}"#),
            ("created_at", "1799999999000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn entry(seq: &str, dir: &str, msg: Value) -> LogEntry {
        LogEntry {
            id: format!("m-{seq}"),
            dir: dir.into(),
            at: 1_800_000_000_500,
            msg: msg.to_string(),
            seq: seq.into(),
        }
    }

    #[test]
    fn a_customer_message_carries_the_contact_and_its_text() {
        let e = event(EventType::MessageCreated);
        let facts = Facts {
            contact: Some(contact()),
            message: Some(entry(
                "1-0",
                "in",
                json!({"text": "Hello", "provider_message_id": "p1"}),
            )),
            transcript: vec![],
            log_truncated: false,
        };
        let body = body(&e, &facts);
        assert_eq!(body["id"], "evt-1");
        assert_eq!(body["type"], "message.created");
        assert_eq!(body["created_at"], 1_800_000_000_000u64);
        assert_eq!(body["contact"]["id"], e.contact.to_string());
        assert_eq!(body["contact"]["customer_name"], "Mariia");
        assert_eq!(body["contact"]["subject"], Value::Null);
        assert_eq!(body["contact"]["attributes"]["plan"], "pro");
        assert_eq!(
            body["contact"]["conversation_id"],
            e.conversation.unwrap().to_string()
        );
        assert_eq!(body["message"]["text"], "Hello");
        assert_eq!(body["message"]["direction"], "in");
        assert_eq!(body["message"]["author"], "visitor:abc");
        assert_eq!(body["message"]["seq"], "1-0");
        assert!(body.get("transcript").is_none());
    }

    #[test]
    fn a_missing_log_entry_still_gives_a_message() {
        let e = event(EventType::MessageCreated);
        let body = body(&e, &Facts::default());
        assert_eq!(body["message"]["seq"], "1800000000000-0");
        assert_eq!(body["message"]["text"], Value::Null);
        assert_eq!(body["contact"]["channel"], "chat");
        assert_eq!(body["contact"]["source"], Value::Null);
    }

    #[test]
    fn a_closed_contact_carries_the_transcript_without_notes() {
        let e = event(EventType::ContactClosed);
        let facts = Facts {
            contact: Some(contact()),
            message: None,
            transcript: vec![
                entry("1-0", "in", json!({"text": "Hello"})),
                entry(
                    "2-0",
                    "out",
                    json!({"author": "olena", "message": {"text": "Hi, how can I help?"}}),
                ),
                entry("3-0", "note", json!({"author": "olena", "text": "VIP"})),
                entry("4-0", "in", json!({"text": "Thanks"})),
            ],
            log_truncated: false,
        };
        let body = body(&e, &facts);
        assert_eq!(body["transcript_truncated"], false);
        assert_eq!(body["agent"], "olena");
        assert_eq!(body["disposition"], "resolved");
        assert_eq!(body["outcome"], "closed");
        let t = body["transcript"].as_array().unwrap();
        let texts: Vec<&str> = t.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["Hello", "Hi, how can I help?", "Thanks"]);
        assert_eq!(t[1]["author"], "olena");
        assert_eq!(t[1]["direction"], "out");
    }

    /// A transcript is bounded by its number of messages and by the bytes
    /// of their texts: the first messages that fit are sent, and
    /// `transcript_truncated` says that more exist.
    #[test]
    fn a_long_transcript_is_cut_and_says_so() {
        let e = event(EventType::ContactClosed);
        let many = |n: usize, text: &str| Facts {
            contact: Some(contact()),
            transcript: (0..n)
                .map(|i| entry(&format!("{i}-0"), "in", json!({ "text": text })))
                .collect(),
            ..Facts::default()
        };
        let body_n = body(&e, &many(MAX_TRANSCRIPT_MESSAGES + 5, "hi"));
        assert_eq!(
            body_n["transcript"].as_array().unwrap().len(),
            MAX_TRANSCRIPT_MESSAGES
        );
        assert_eq!(body_n["transcript_truncated"], true);
        assert_eq!(body_n["transcript"][0]["seq"], "0-0");
        let big = "x".repeat(300 * 1024);
        let body_b = body(&e, &many(5, &big));
        assert_eq!(body_b["transcript"].as_array().unwrap().len(), 3);
        assert_eq!(body_b["transcript_truncated"], true);
        let body_ok = body(&e, &many(3, &big));
        assert_eq!(body_ok["transcript"].as_array().unwrap().len(), 3);
        assert_eq!(body_ok["transcript_truncated"], false);
        let mut read_part = many(2, "hi");
        read_part.log_truncated = true;
        assert_eq!(body(&e, &read_part)["transcript_truncated"], true);
    }

    #[test]
    fn assignment_and_creation_are_small() {
        let body_a = body(&event(EventType::ContactAssigned), &Facts::default());
        assert_eq!(body_a["agent"], "olena");
        assert!(body_a.get("message").is_none());
        let body_c = body(&event(EventType::ContactCreated), &Facts::default());
        let keys: Vec<&String> = body_c.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
    }
}
