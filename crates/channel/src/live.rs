//! The live doorbell and the conversation log as channels see them.
//!
//! The conversation log (a Redis stream per conversation) is the truth;
//! the live bus is only a doorbell that says "look again": a subscription
//! receives the events of the contacts it follows ([`LiveFollows`]), and
//! whoever follows a conversation re-reads its log after the last entry it
//! has sent. The bus is lossy (Redis pub/sub), so a subscriber gets
//! [`LiveSignal::Resync`] whenever its subscription (re)connects and
//! [`LiveSignal::Followed`] once a newly followed contact's events arrive,
//! and then re-reads what it follows.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use switchboard_core::{ContactId, ConversationId, CustomerIdentity, IntakeError};
use tokio::sync::mpsc;

/// What a live event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveKind {
    /// A new entry in the conversation log (`seq`, `dir`).
    Log,
    /// Someone types (`on`, `who`, `name`).
    Typing,
    /// Someone read up to `seq` (`who`, `name`).
    Read,
    /// A kind this version does not know (sent by a newer instance).
    #[serde(other)]
    Other,
}

/// A stream id `ms-n` (a log entry's `seq`: what the widget's `after` and
/// `read.seq`, and the agent API's transcript cursors and `read`, carry) that Redis can read
/// after: both parts digits that fit a `u64`, and not the last id there is
/// (`u64::MAX-u64::MAX`: nothing can follow it, and `XRANGE key (id +`
/// refuses it as an invalid start). Redis refuses anything else, so such a
/// cursor would fail every read of the conversation.
pub fn seq_ok(seq: &str) -> bool {
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    };
    match seq.split_once('-').map(|(ms, n)| (part(ms), part(n))) {
        Some((Some(ms), Some(n))) => (ms, n) != (u64::MAX, u64::MAX),
        _ => false,
    }
}

/// One doorbell event: small JSON on `<prefix>:live:<contact>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// The conversation id.
    pub conv: String,
    /// The contact id, or `""` when unknown.
    #[serde(default)]
    pub contact: String,
    /// The channel (adapter) name the conversation belongs to.
    #[serde(default)]
    pub source: String,
    pub kind: LiveKind,
    /// The log entry's stream id (`log`), or the last entry read (`read`).
    #[serde(default)]
    pub seq: String,
    /// The log entry's direction (`in`, `out`, `note`, …).
    #[serde(default)]
    pub dir: String,
    /// Typing started (true) or stopped.
    #[serde(default)]
    pub on: bool,
    /// `visitor` or `agent`.
    #[serde(default)]
    pub who: String,
    /// The agent's display name, or `""`.
    #[serde(default)]
    pub name: String,
    /// For `log`: the entry's text and time (ms), so that followers need
    /// not read the entry back from Redis; `None` from older instances (or
    /// for entries without text), then read the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default)]
    pub at: u64,
}

impl LiveEvent {
    /// A new log entry of `conv`.
    pub fn log(conv: &ConversationId, contact: &str, source: &str, seq: &str, dir: &str) -> Self {
        LiveEvent {
            conv: conv.to_string(),
            contact: contact.to_owned(),
            source: source.to_owned(),
            kind: LiveKind::Log,
            seq: seq.to_owned(),
            dir: dir.to_owned(),
            on: false,
            who: String::new(),
            name: String::new(),
            text: None,
            at: 0,
        }
    }

    /// The same event carrying the entry's text and time.
    pub fn with_entry(mut self, text: String, at: u64) -> Self {
        self.text = Some(text);
        self.at = at;
        self
    }
}

/// The text of a conversation-log entry's `msg` JSON: a customer's
/// message (`text`), a reply (`message.text`), a note (`text`), a rating
/// (`comment`).
pub fn entry_text(msg: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(msg) else {
        return String::new();
    };
    let text = value
        .get("text")
        .or_else(|| value.get("message").and_then(|m| m.get("text")))
        .or_else(|| value.get("comment"));
    text.and_then(|t| t.as_str()).unwrap_or_default().to_owned()
}

/// What a subscription yields.
// One signal at a time goes through a stream: boxing the event would
// cost an allocation each and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSignal {
    Event(LiveEvent),
    /// The subscription (re)connected: events may have been missed, so
    /// re-read the log of every conversation followed.
    Resync,
    /// The events of this contact, newly followed, arrive from now on:
    /// re-read its log for those published before.
    Followed(String),
}

/// The contacts whose events a subscription receives. Counted: each
/// `follow` is undone by one `unfollow`, so several followers of one
/// contact share its subscription. Cheap to clone (one shared state); may
/// be used before the subscription exists.
#[derive(Debug, Clone, Default)]
pub struct LiveFollows {
    inner: Arc<Mutex<Follows>>,
}

#[derive(Debug, Default)]
struct Follows {
    counts: HashMap<String, usize>,
    /// Tells the subscription which contact to look at again.
    changes: Option<mpsc::UnboundedSender<String>>,
}

impl LiveFollows {
    fn lock(&self) -> std::sync::MutexGuard<'_, Follows> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receive `contact`'s events (from its first follow on).
    pub fn follow(&self, contact: &str) {
        let mut f = self.lock();
        let n = f.counts.entry(contact.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1
            && let Some(tx) = &f.changes
        {
            let _ = tx.send(contact.to_owned());
        }
    }

    /// Undoes one `follow` (the last one stops the events).
    pub fn unfollow(&self, contact: &str) {
        let mut f = self.lock();
        let Some(n) = f.counts.get_mut(contact) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            f.counts.remove(contact);
            if let Some(tx) = &f.changes {
                let _ = tx.send(contact.to_owned());
            }
        }
    }

    pub fn is_followed(&self, contact: &str) -> bool {
        self.lock().counts.contains_key(contact)
    }

    /// Every contact followed now.
    pub fn followed(&self) -> Vec<String> {
        self.lock().counts.keys().cloned().collect()
    }

    /// For the bus: the contacts whose following changed arrive on the
    /// receiver (look at [`LiveFollows::is_followed`] then). Replaces an
    /// earlier watcher.
    pub fn watch(&self) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().changes = Some(tx);
        rx
    }
}

/// The live doorbell.
pub trait LiveBus: Send + Sync + fmt::Debug {
    /// Publishes `event`. Never fails: a lost doorbell is caught up by the
    /// next one or by a resync (failures are logged and counted).
    fn publish(&self, event: LiveEvent) -> BoxFuture<'_, ()>;
    /// The events of the contacts `follows` names (and of none: those
    /// published without a contact) from now on, with a
    /// [`LiveSignal::Resync`] first and after every reconnection. Ends
    /// when the bus shuts down.
    fn subscribe(&self, follows: LiveFollows) -> BoxStream<'static, LiveSignal>;
}

/// One entry of a conversation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's stream id: its place in the conversation.
    pub seq: String,
    pub id: String,
    /// `in` (customer), `out` (agent reply), `note` (internal), `edit` (a
    /// customer edited a message), `auto` (an automatic answer to a reply),
    /// `rating` (a chat visitor's rating).
    pub dir: String,
    pub at: u64,
    /// The message as JSON.
    pub msg: String,
}

/// Reading (and, for what is not a customer message, writing) the
/// conversation logs of the channel's own customers.
pub trait ConversationLog: Send + Sync + fmt::Debug {
    /// The customer's open conversation on `source` and its current
    /// contact, if any.
    fn open_conversation<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
    ) -> BoxFuture<'a, Result<Option<(ConversationId, ContactId)>, IntakeError>>;
    /// Up to `count` entries after `after` (`"-"` from the start), in order.
    fn entries_after<'a>(
        &'a self,
        conversation: &'a ConversationId,
        after: &'a str,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IntakeError>>;
    /// The entry with message id `id` among the last `within` entries.
    fn find_recent<'a>(
        &'a self,
        conversation: &'a ConversationId,
        id: &'a str,
        within: usize,
    ) -> BoxFuture<'a, Result<Option<LogEntry>, IntakeError>>;
    /// Appends an entry that is not a customer message and of which a
    /// conversation keeps one (`dir` `rating`), then rings the doorbell;
    /// returns its seq, or `None` when the conversation has one already (a
    /// repeat, another tab).
    fn append_once<'a>(
        &'a self,
        conversation: &'a ConversationId,
        contact: &'a ContactId,
        source: &'a str,
        dir: &'a str,
        msg: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>>;
    /// The contact of `conversation` when it is the customer's on `source`,
    /// open or closed; `None` when it is unknown or someone else's.
    fn customer_conversation<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
        conversation: &'a ConversationId,
    ) -> BoxFuture<'a, Result<Option<ContactId>, IntakeError>>;
}
