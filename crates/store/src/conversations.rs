//! Contacts and their conversation logs as the agent API reads and writes
//! them: contact fields, the transcript, agents' replies and notes.
//!
//! A reply is put in the outbox of the contact's source first (the promise
//! to deliver it), then appended to the conversation log. Should the second
//! write fail, the reply is still delivered but missing from the transcript;
//! the caller is told the write failed.

use crate::{Store, StoreError};
use std::collections::HashMap;
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, OutboundMessage, Timestamp,
};

/// One entry of a conversation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry's stream id: its place in the conversation.
    pub seq: String,
    pub id: String,
    /// `in` (customer), `out` (agent reply), `note` (internal), `edit` (a
    /// customer edited a message), `auto` (an automatic answer to a reply).
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

    /// How each reply of a conversation fared, by message id: the outbox's
    /// outcome (`delivery`: delivered with the provider's id, or failed with
    /// the reason the agent is shown) and the provider's latest receipt
    /// (`status`: sent, delivered, read, failed), each as JSON.
    pub async fn reply_states(
        &self,
        conversation: &ConversationId,
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>, StoreError> {
        let keys = self.store.keys();
        let mut conn = self.store.conn();
        let (delivery, status): (HashMap<String, String>, HashMap<String, String>) = self
            .store
            .bounded(
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(keys.conversation_delivery(conversation))
                    .cmd("HGETALL")
                    .arg(keys.conversation_status(conversation))
                    .query_async(&mut conn),
            )
            .await?;
        let mut out: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
        for (id, json) in delivery {
            out.entry(id).or_default().0 = Some(json);
        }
        for (id, ranked) in status {
            let json = ranked.split_once('|').map(|(_, j)| j.to_owned());
            out.entry(id).or_default().1 = json;
        }
        Ok(out)
    }

    /// A reply to the customer of `contact`, on the channel and through the
    /// adapter it came in on, from the address it wrote to. Not yet sent.
    pub async fn outbound_to(
        &self,
        contact: &ContactId,
        text: &str,
    ) -> Result<OutboundMessage, StoreError> {
        let fields = self
            .contact(contact)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("no contact {contact}")))?;
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let refused = |what: &str| StoreError::Conflict(format!("contact {contact}: {what}"));
        let customer = get("customer");
        let (scheme, value) = customer.split_once(':').unwrap_or(("", ""));
        let to = CustomerIdentity::new(scheme, value)
            .map_err(|e| refused(&format!("stored customer identity: {e}")))?;
        let channel: ChannelKind = get("channel")
            .parse()
            .map_err(|_| refused("stored channel unknown"))?;
        let conversation_id = get("conversation")
            .parse()
            .map_err(|_| refused("no conversation"))?;
        let subject = get("subject");
        let in_reply_to = self.last_inbound_provider_id(&conversation_id).await?;
        Ok(OutboundMessage {
            message_id: MessageId::new(),
            contact_id: *contact,
            conversation_id,
            channel,
            source: get("source"),
            from_address: get("address"),
            to,
            subject: (!subject.is_empty()).then_some(subject),
            text: text.to_owned(),
            in_reply_to,
            created_at: Timestamp::now(),
        })
    }

    /// The provider's id of the customer's latest message in the
    /// conversation (among its last 100 entries): what a reply answers
    /// (email threads on it).
    async fn last_inbound_provider_id(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().conversation_log(conversation);
        let reply: redis::streams::StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(100)
                    .query_async(&mut conn),
            )
            .await?;
        let field = |e: &redis::streams::StreamId, k: &str| {
            e.map
                .get(k)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        };
        Ok(reply
            .ids
            .iter()
            .filter(|e| field(e, "dir").as_deref() == Some("in"))
            .find_map(|e| {
                let msg = field(e, "msg")?;
                let value: serde_json::Value = serde_json::from_str(&msg).ok()?;
                value
                    .get("provider_message_id")?
                    .as_str()
                    .map(str::to_owned)
            }))
    }

    /// Sends the customer of `contact` an automatic `text`, once per `key`
    /// (a routing step): a second call with the same key (another instance
    /// took over routing and replayed the step) sends nothing. True when
    /// sent by this call.
    pub async fn automatic_reply(
        &self,
        contact: &ContactId,
        key: &str,
        text: &str,
    ) -> Result<bool, StoreError> {
        let message = self.outbound_to(contact, text).await?;
        let guard = format!("{}:auto:{key}", self.store.keys().contact(contact));
        let mut conn = self.store.conn();
        let first: Option<String> = self
            .store
            .bounded(
                redis::cmd("SET")
                    .arg(&guard)
                    .arg(message.message_id.to_string())
                    .arg("NX")
                    .arg("EX")
                    .arg(7 * 24 * 3600)
                    .query_async(&mut conn),
            )
            .await?;
        if first.is_none() {
            return Ok(false);
        }
        if let Err(e) = self.reply(&message, "switchboard").await {
            // Not sent: let a later attempt try again.
            let _: Result<i64, _> = self
                .store
                .bounded(redis::cmd("DEL").arg(&guard).query_async(&mut conn))
                .await;
            return Err(e);
        }
        Ok(true)
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
