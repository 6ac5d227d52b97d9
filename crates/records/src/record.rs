//! One contact's whole record: who, what was said, what routing did, and
//! how it ended. The agent API serves it (`GET /api/v1/contacts/{id}/record`)
//! and the export writes one per line.

use serde_json::{Value, json};
use switchboard_core::{ContactId, ConversationId};
use switchboard_store::{Conversations, LogEntry, Records, RoutingState, StoreError};

/// A page of the transcript after `after` (`-`: from the start): every
/// message in and out (replies with their delivery and provider status),
/// notes, ratings and automatic answers; at most `limit` entries and,
/// beyond the first, at most `max_bytes` of messages as stored, and
/// whether more follow. A customer may send 500 mails of 64 KiB: a page
/// of 500 was ~32 MiB as stored, several times that as JSON.
pub async fn transcript_page(
    conversations: &Conversations,
    conversation: &ConversationId,
    after: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<Value>, bool), StoreError> {
    let mut entries = conversations
        .transcript(conversation, after, limit + 1)
        .await?;
    let mut more = entries.len() > limit;
    entries.truncate(limit);
    let mut bytes = 0usize;
    let fit = entries
        .iter()
        .position(|e| {
            bytes += e.msg.len();
            bytes > max_bytes
        })
        .map_or(entries.len(), |n| n.max(1));
    if fit < entries.len() {
        entries.truncate(fit);
        more = true;
    }
    Ok((rendered(conversations, conversation, entries).await?, more))
}

/// `entries` of `conversation` as the API shows them, replies with their
/// delivery and provider status.
async fn rendered(
    conversations: &Conversations,
    conversation: &ConversationId,
    entries: Vec<LogEntry>,
) -> Result<Vec<Value>, StoreError> {
    let replies: Vec<&str> = entries
        .iter()
        .filter(|e| e.dir == "out")
        .map(|e| e.id.as_str())
        .collect();
    let mut replies = conversations
        .reply_states_of(conversation, &replies)
        .await?;
    let parse = |j: Option<String>| {
        j.and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .unwrap_or(Value::Null)
    };
    Ok(entries
        .into_iter()
        .map(|e| {
            let mut entry = json!({
                "seq": e.seq,
                "id": e.id,
                "dir": e.dir,
                "at": e.at,
                "message": serde_json::from_str::<Value>(&e.msg).unwrap_or(Value::Null),
            });
            if e.dir == "out" {
                let (delivery, status) = replies.remove(&e.id).unwrap_or_default();
                entry["delivery"] = parse(delivery);
                entry["status"] = parse(status);
            }
            entry
        })
        .collect())
}

/// What the stores hold of a contact.
#[derive(Debug, Clone)]
pub struct Sources {
    pub conversations: Conversations,
    pub state: RoutingState,
    pub records: Records,
}

/// Timeline entries in one record at most (each ~200 bytes);
/// `timeline_truncated` says when the contact has more. A contact open for
/// weeks that went from agent to agent grows one entry per offer, decline,
/// lapse and requeue, and a record is built whole in memory.
pub const RECORD_TIMELINE_MAX: usize = 1_000;

/// A contact's timeline (oldest first), parsed: its first
/// [`RECORD_TIMELINE_MAX`] entries, and whether it has more.
pub async fn timeline(
    records: &Records,
    contact: &ContactId,
) -> Result<(Vec<Value>, bool), StoreError> {
    let (entries, more) = records.timeline(contact, RECORD_TIMELINE_MAX).await?;
    Ok((
        entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect(),
        more,
    ))
}

/// Transcript entries in one record at most; `transcript_truncated` says
/// when the conversation has more (page through them with the agent API).
pub const RECORD_TRANSCRIPT_MAX: usize = 10_000;

/// The messages of one record's transcript, in bytes as stored, at most: a
/// customer may send 10,000 mails of 64 KiB into one conversation, and a
/// record is built whole in memory (several times its text, as JSON).
pub const RECORD_TRANSCRIPT_MAX_BYTES: usize = 8 << 20;

/// Read at a time while a record's transcript is gathered.
const RECORD_PAGE: usize = 500;

/// The first entries of `conversation` within [`RECORD_TRANSCRIPT_MAX`]
/// entries and [`RECORD_TRANSCRIPT_MAX_BYTES`], and whether it has more.
async fn record_transcript(
    conversations: &Conversations,
    conversation: &ConversationId,
) -> Result<(Vec<Value>, bool), StoreError> {
    let mut kept = Vec::new();
    let mut bytes = 0usize;
    let mut after = "-".to_owned();
    loop {
        let page = conversations
            .transcript(conversation, &after, RECORD_PAGE)
            .await?;
        let full = page.len() == RECORD_PAGE;
        for entry in page {
            if kept.len() == RECORD_TRANSCRIPT_MAX
                || bytes + entry.msg.len() > RECORD_TRANSCRIPT_MAX_BYTES
            {
                return Ok((rendered(conversations, conversation, kept).await?, true));
            }
            bytes += entry.msg.len();
            after.clone_from(&entry.seq);
            kept.push(entry);
        }
        if !full {
            return Ok((rendered(conversations, conversation, kept).await?, false));
        }
    }
}

/// The whole record of `contact`; `None` when nothing is known of it
/// (never existed, or deleted after the retention).
pub async fn contact_record(s: &Sources, contact: &ContactId) -> Result<Option<Value>, StoreError> {
    let fields = s.conversations.contact(contact).await?;
    let route = s.state.route_record(contact).await?;
    let (Some(fields), route) = (fields, route) else {
        return Ok(None);
    };
    let pick = |k: &str| fields.get(k).cloned().unwrap_or_default();
    // The first entries: the queued and answered times are read from them
    // (the close's time from the routing record).
    let (timeline, timeline_truncated) = timeline(&s.records, contact).await?;
    let first_at = |kinds: &[&str]| {
        timeline
            .iter()
            .find(|e| e["type"].as_str().is_some_and(|t| kinds.contains(&t)))
            .and_then(|e| e["at"].as_u64())
    };
    let rf = |k: &str| {
        route
            .as_ref()
            .and_then(|r| r.fields.get(k).cloned())
            .unwrap_or_default()
    };
    let rn = |k: &str| rf(k).parse::<u64>().ok();
    let (transcript, transcript_truncated) = match pick("conversation").parse::<ConversationId>() {
        Ok(conv) => record_transcript(&s.conversations, &conv).await?,
        Err(_) => (Vec::new(), false),
    };
    let decisions: Vec<Value> = s
        .state
        .decisions(contact)
        .await?
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    Ok(Some(json!({
        "id": contact.to_string(),
        "conversation_id": pick("conversation"),
        "channel": pick("channel"),
        "source": pick("source"),
        "address": pick("address"),
        "customer": pick("customer"),
        "customer_name": pick("customer_name"),
        "person": rf("person"),
        "subject": pick("subject"),
        "language": pick("language"),
        "created_at": pick("created_at").parse::<u64>().unwrap_or(0),
        "state": rf("state"),
        "queue": rf("queue"),
        "agent": rf("last_agent"),
        "disposition": rf("disposition"),
        "rating": rn("rating"),
        "times": {
            "queued": first_at(&["enqueued"]).or_else(|| rn("queued_at")),
            "first_offered": rn("first_offered_at"),
            "answered": first_at(&["accepted", "assigned"]),
            "closed": rn("closed_at"),
        },
        "timeline_truncated": timeline_truncated,
        "timeline": timeline,
        "transcript_truncated": transcript_truncated,
        "transcript": transcript,
        "routing_decisions": decisions,
    })))
}

/// The person's contacts before this one, newest first (at most `limit`):
/// what an agent sees of the customer's history, on any channel, as it
/// stood when the contact came (a later contact is not its history).
pub async fn previous_contacts(
    s: &Sources,
    contact: &ContactId,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let Some(route) = s.state.route_record(contact).await? else {
        return Ok(Vec::new());
    };
    let person = route.fields.get("person").cloned().unwrap_or_default();
    let mut out = Vec::new();
    let contact = contact.to_string();
    for (id, at) in s
        .records
        .person_contacts_before(&person, &contact, limit)
        .await?
    {
        let Ok(other) = id.parse::<ContactId>() else {
            continue;
        };
        let Some(rec) = s.state.route_record(&other).await? else {
            continue;
        };
        let f = |k: &str| rec.fields.get(k).cloned().unwrap_or_default();
        let subject = s
            .conversations
            .contact(&other)
            .await?
            .and_then(|c| c.get("subject").cloned())
            .unwrap_or_default();
        out.push(json!({
            "id": id,
            "queued_at": at,
            "channel": rec.channel,
            "source": rec.source,
            "customer": rec.customer,
            "subject": subject,
            "queue": rec.queue,
            "state": rec.state,
            "agent": f("last_agent"),
            "disposition": f("disposition"),
            "closed_at": f("closed_at").parse::<u64>().ok(),
            "rating": f("rating").parse::<u64>().ok(),
        }));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
