//! Contacts and their conversation logs as the agent API reads and writes
//! them: contact fields, the transcript, agents' replies and notes.
//!
//! A reply is put in the outbox of the contact's source first (the promise
//! to deliver it), then appended to the conversation log. Should the second
//! write fail, the reply is still delivered but missing from the transcript;
//! the caller is told the write failed.

use crate::{Store, StoreError};
use std::collections::HashMap;
use switchboard_core::{ContactId, ConversationId, OutboundMessage, Timestamp};

/// One entry of a conversation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's stream id: its place in the conversation.
    pub seq: String,
    pub id: String,
    /// `in` (customer), `out` (agent reply), `note` (internal).
    pub dir: String,
    pub at: u64,
    /// The message as JSON.
    pub msg: String,
}

#[derive(Debug, Clone)]
pub struct Conversations {
    store: Store,
}

impl Conversations {
    pub fn new(store: Store) -> Conversations {
        Conversations { store }
    }

    /// A contact's fields as the intake stored them; `None` when unknown.
    pub async fn contact(
        &self,
        id: &ContactId,
    ) -> Result<Option<HashMap<String, String>>, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().contact(id);
        let map: HashMap<String, String> = self
            .store
            .bounded(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
            .await?;
        Ok((!map.is_empty()).then_some(map))
    }

    /// Up to `count` log entries after `after` ("-" from the start).
    pub async fn transcript(
        &self,
        conversation: &ConversationId,
        after: &str,
        count: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().conversation_log(conversation);
        let start = if after == "-" {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let reply: redis::streams::StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| {
                let get = |k: &str| {
                    e.map
                        .get(k)
                        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                        .unwrap_or_default()
                };
                LogEntry {
                    id: get("id"),
                    dir: get("dir"),
                    at: get("at").parse().unwrap_or(0),
                    msg: get("msg"),
                    seq: e.id,
                }
            })
            .collect())
    }

    /// Hands a reply to the outbox of its source, then logs it. Returns
    /// its place in the conversation.
    pub async fn reply(
        &self,
        message: &OutboundMessage,
        author: &str,
    ) -> Result<String, StoreError> {
        crate::RedisOutbox::enqueue_to(&self.store, message).await?;
        let logged = serde_json::json!({ "author": author, "message": message }).to_string();
        self.append(
            &message.conversation_id,
            &message.message_id.to_string(),
            "out",
            &logged,
        )
        .await
    }

    /// An internal note: in the transcript, never sent.
    pub async fn note(
        &self,
        conversation: &ConversationId,
        contact: &ContactId,
        author: &str,
        text: &str,
    ) -> Result<String, StoreError> {
        let id = switchboard_core::MessageId::new().to_string();
        let json = serde_json::json!({ "author": author, "contact_id": contact, "text": text })
            .to_string();
        self.append(conversation, &id, "note", &json).await
    }

    async fn append(
        &self,
        conversation: &ConversationId,
        id: &str,
        dir: &str,
        msg: &str,
    ) -> Result<String, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().conversation_log(conversation);
        self.store
            .bounded(
                redis::cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("id")
                    .arg(id)
                    .arg("dir")
                    .arg(dir)
                    .arg("at")
                    .arg(Timestamp::now().as_millis())
                    .arg("msg")
                    .arg(msg)
                    .query_async(&mut conn),
            )
            .await
    }
}
