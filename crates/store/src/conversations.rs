//! Contacts and their conversation logs as the agent API reads and writes
//! them: contact fields, the transcript, agents' replies and notes.
//!
//! A reply is put in the outbox of the contact's source first (the promise
//! to deliver it), then appended to the conversation log. Should the second
//! write fail, the reply is still delivered but missing from the transcript;
//! the caller is told the write failed. A client that names its replies
//! (`client_id`) can retry then: [`Conversations::reply_once`] queues and
//! logs each step once per name.

use crate::{Store, StoreError};
use futures::future::BoxFuture;
use std::collections::HashMap;
use switchboard_channel::{ConversationLog, LiveEvent};
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, IntakeError, MessageId,
    OutboundMessage, Timestamp,
};

pub use switchboard_channel::LogEntry;

/// Names a reply by its client's id (`lua/claim_reply.lua`).
static CLAIM_REPLY: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/claim_reply.lua")));

/// How long a client may retry a named reply: less than the outbox's
/// once-mark lasts (7 days), so a retry never queues it a second time.
const RETRY_WITHIN_MS: u64 = 6 * 24 * 3600 * 1000;

/// What became of a named reply ([`Conversations::reply_once`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedReply {
    /// Queued and logged: its entry id; `first` unless an earlier
    /// attempt named it.
    Sent { seq: String, first: bool },
    /// The name was used for another reply (another text or agent), or
    /// the first attempt is too old to retry: nothing done.
    Conflict(String),
    /// `only_retry` and no reply has that name: nothing done.
    Unknown,
}
/// What became of an automatic answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReply {
    /// Queued and logged now.
    Sent,
    /// Sent before (another instance replayed the step), or given up.
    AlreadySent,
    /// The customer had their allowance of automatic answers this hour:
    /// none sent (a mail loop with an autoresponder that does not say so
    /// ends here).
    Limited,
}

impl AutoReply {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoReply::Sent => "sent",
            AutoReply::AlreadySent => "already_sent",
            AutoReply::Limited => "limited",
        }
    }
}

static REPLY_ONCE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/reply_once.lua")));

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
        Ok(reply.ids.into_iter().map(entry_from).collect())
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
            out.entry(id).or_default().1 = status_json(&ranked);
        }
        Ok(out)
    }

    /// [`Self::reply_states`] of the replies `ids` only: a transcript page
    /// reads what it shows, not every reply of a conversation that may
    /// hold tens of thousands.
    pub async fn reply_states_of(
        &self,
        conversation: &ConversationId,
        ids: &[&str],
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = self.store.keys();
        let mut conn = self.store.conn();
        let (delivery, status): (Vec<Option<String>>, Vec<Option<String>>) = self
            .store
            .bounded(
                redis::pipe()
                    .cmd("HMGET")
                    .arg(keys.conversation_delivery(conversation))
                    .arg(ids)
                    .cmd("HMGET")
                    .arg(keys.conversation_status(conversation))
                    .arg(ids)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(ids
            .iter()
            .zip(delivery.into_iter().zip(status))
            .filter(|(_, (d, s))| d.is_some() || s.is_some())
            .map(|(id, (d, s))| ((*id).to_owned(), (d, s.as_deref().and_then(status_json))))
            .collect())
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
        let (in_reply_to, references) = self
            .inbound_thread(&conversation_id, channel == ChannelKind::Email)
            .await?;
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
            references,
            created_at: Timestamp::now(),
            automatic: false,
        })
    }

    /// The provider's id of the customer's latest message in the
    /// conversation (among its last 100 entries): what a reply answers
    /// (email threads on it); with `thread`, the ids of the thread that
    /// message continues ([`switchboard_core::THREAD_ATTRIBUTE`]), oldest
    /// first: an email reply's References (RFC 5322 §3.6.4). Not the
    /// conversation's other messages: a customer's unrelated mail that
    /// joined the open conversation is another thread in their mail client.
    async fn inbound_thread(
        &self,
        conversation: &ConversationId,
        thread: bool,
    ) -> Result<(Option<String>, Vec<String>), StoreError> {
        let latest = self
            .recent(conversation, 100)
            .await?
            .into_iter()
            .filter(|e| e.dir == "in")
            .find_map(|e| {
                let value: serde_json::Value = serde_json::from_str(&e.msg).ok()?;
                let id = value.get("provider_message_id")?.as_str()?.to_owned();
                Some((id, value))
            });
        let Some((id, value)) = latest else {
            return Ok((None, Vec::new()));
        };
        let references = match value
            .get("attributes")
            .and_then(|a| a.get(switchboard_core::THREAD_ATTRIBUTE))
            .and_then(serde_json::Value::as_str)
        {
            Some(ids) if thread => ids
                .split_ascii_whitespace()
                .filter(|r| *r != id)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok((Some(id), references))
    }

    /// The last `count` entries of the conversation, newest first.
    async fn recent(
        &self,
        conversation: &ConversationId,
        count: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
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
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply.ids.into_iter().map(entry_from).collect())
    }

    /// Sends the customer of `contact` an automatic `text`, once per `key`
    /// (a routing step): a second call with the same key (another instance
    /// took over routing and replayed the step, or a first attempt failed
    /// half-way) queues and logs nothing twice, and finishes what a first
    /// attempt left undone. True when this call was the first to claim it.
    ///
    /// It is a named reply (`auto/<key>`, as agents' replies are named by
    /// their client): until 2026-11-26 a guard key was set first and deleted
    /// when the send failed, so a failure after the outbox had it (a slow
    /// Redis) sent it twice, and a crash between the guard and the send
    /// never sent it. Such a guard, still in Redis, says "sent".
    ///
    /// At most `per_hour` automatic answers (0: no limit) go to one
    /// customer on one source in an hour, whatever their contacts and
    /// steps: an autoresponder that does not say it is one (no
    /// `Auto-Submitted`) answering each of ours would otherwise start a
    /// mail loop, a contact and an answer at a time (RFC 3834 section 2).
    /// An answer claimed before the limit was reached is still finished.
    pub async fn automatic_reply(
        &self,
        contact: &ContactId,
        key: &str,
        text: &str,
        per_hour: u32,
    ) -> Result<AutoReply, StoreError> {
        let mut message = self.outbound_to(contact, text).await?;
        message.automatic = true;
        let keys = self.store.keys();
        let old_guard = format!("{}:auto:{key}", keys.contact(contact));
        let counter = keys.auto_answers(contact.partition(), &message.source, &message.to);
        let mut conn = self.store.conn();
        let guarded: bool = self
            .store
            .bounded(redis::cmd("EXISTS").arg(&old_guard).query_async(&mut conn))
            .await?;
        if guarded {
            return Ok(AutoReply::AlreadySent);
        }
        // '/' is in no agent client's name: no clash with theirs.
        let name = format!("auto/{key}");
        // The same answer whatever its text now: a template filled from
        // the clock ({opens_at}, {reply_by}) reads otherwise a minute
        // later, and the retry of a claimed answer would be refused. The
        // claim checks and counts the customer's hourly limit with the
        // name (`claim_reply.lua`).
        match self
            .named_reply(
                &mut message,
                "switchboard",
                &name,
                false,
                &name,
                Some((&counter, per_hour)),
            )
            .await?
        {
            NamedReply::Sent { first: true, .. } => Ok(AutoReply::Sent),
            // Over the limit (checked at the claim), never claimed: not sent.
            NamedReply::Unknown => Ok(AutoReply::Limited),
            // Claimed before (a replay), or claimed too long ago
            // (RETRY_WITHIN_MS): sent, or given up.
            NamedReply::Sent { first: false, .. } | NamedReply::Conflict(_) => {
                Ok(AutoReply::AlreadySent)
            }
        }
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
            &message.contact_id.to_string(),
            &message.source,
            &message.message_id.to_string(),
            "out",
            &logged,
        )
        .await
    }

    /// A reply that `author`'s client named `client_id`: queued and
    /// logged once however often it is retried with that name and text
    /// (after a lost answer or a 503, which may come after the reply was
    /// queued): a retry gets the first attempt's message id (set in
    /// `message`) and entry id. With `only_retry`, only a reply named so
    /// before is finished (a retry after the contact left the agent).
    pub async fn reply_once(
        &self,
        message: &mut OutboundMessage,
        author: &str,
        client_id: &str,
        only_retry: bool,
    ) -> Result<NamedReply, StoreError> {
        let same = message.text.clone();
        self.named_reply(message, author, client_id, only_retry, &same, None)
            .await
    }

    /// As [`Self::reply_once`]; a retry is the same reply when its
    /// `same` (the text, for an agent's reply) is.
    async fn named_reply(
        &self,
        message: &mut OutboundMessage,
        author: &str,
        client_id: &str,
        only_retry: bool,
        same: &str,
        limit: Option<(&str, u32)>,
    ) -> Result<NamedReply, StoreError> {
        let keys = self.store.keys();
        let conversation = message.conversation_id;
        let (status, claimed): (String, String) = {
            let mut conn = self.store.conn();
            let mut inv = CLAIM_REPLY.prepare_invoke();
            inv.key(keys.conversation(&conversation))
                .arg(format!("reply:{client_id}"))
                .arg(message.message_id.to_string())
                .arg(author)
                .arg(same)
                .arg(if only_retry { "1" } else { "0" });
            if let Some((counter, per_hour)) = limit {
                inv.key(counter).arg(per_hour);
            }
            self.store.bounded(inv.invoke_async(&mut conn)).await?
        };
        match status.as_str() {
            "new" | "retry" => {}
            "none" => return Ok(NamedReply::Unknown),
            _ => {
                return Ok(NamedReply::Conflict(format!(
                    "client_id {client_id} names another reply (another text or agent)"
                )));
            }
        }
        message.message_id = claimed
            .parse()
            .map_err(|_| StoreError::Protocol(format!("stored reply id {claimed:?}")))?;
        if status == "retry"
            && message.message_id.created_ms() + RETRY_WITHIN_MS < Timestamp::now().as_millis()
        {
            return Ok(NamedReply::Conflict(format!(
                "client_id {client_id} names a reply too old to retry"
            )));
        }
        crate::RedisOutbox::enqueue_once(&self.store, message).await?;
        let contact = message.contact_id.to_string();
        let feed = self.store.event_feed();
        if feed {
            // As `append_with_event`: the assignment's events first.
            if let Err(error) = crate::EventFeed::new(self.store.clone())
                .move_routing_events_of(&message.contact_id)
                .await
            {
                tracing::warn!(contact_id = %contact, %error, "Could not move the contact's routing events before its reply.");
            }
        }
        let logged = serde_json::json!({ "author": author, "message": &*message }).to_string();
        let at = Timestamp::now().as_millis();
        let mut inv = REPLY_ONCE.prepare_invoke();
        inv.key(keys.conversation_log(&conversation))
            .key(keys.feed(conversation.partition()))
            .key(keys.conversation(&conversation))
            .arg(message.message_id.to_string())
            .arg(at)
            .arg(&logged)
            .arg(&contact)
            .arg(conversation.to_string())
            .arg(if feed { "1" } else { "0" });
        let mut conn = self.store.conn();
        let seq: String = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        let event = LiveEvent::log(&conversation, &contact, &message.source, &seq, "out")
            .with_entry(message.text.clone(), at);
        crate::Live::new(self.store.clone()).publish(&event).await;
        Ok(NamedReply::Sent {
            seq,
            first: status == "new",
        })
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
        let source = self
            .contact(contact)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.get("source").cloned())
            .unwrap_or_default();
        self.append(
            conversation,
            &contact.to_string(),
            &source,
            &id,
            "note",
            &json,
        )
        .await
    }

    /// Appends an entry to a conversation log, then rings the live
    /// doorbell (which never fails the append). With the webhook event
    /// feed on, a reply (`out`) gets its `message.created` event in the
    /// same step (`crate::feed`).
    pub async fn append(
        &self,
        conversation: &ConversationId,
        contact: &str,
        source: &str,
        id: &str,
        dir: &str,
        msg: &str,
    ) -> Result<String, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().conversation_log(conversation);
        let at = Timestamp::now().as_millis();
        if dir == "out" && self.store.event_feed() {
            let seq = self
                .append_with_event(conversation, contact, (id, dir, at, msg))
                .await?;
            let event = LiveEvent::log(conversation, contact, source, &seq, dir)
                .with_entry(switchboard_channel::entry_text(msg), at);
            crate::Live::new(self.store.clone()).publish(&event).await;
            return Ok(seq);
        }
        let seq: String = self
            .store
            .bounded(
                redis::cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("id")
                    .arg(id)
                    .arg("dir")
                    .arg(dir)
                    .arg("at")
                    .arg(at)
                    .arg("msg")
                    .arg(msg)
                    .query_async(&mut conn),
            )
            .await?;
        let event = LiveEvent::log(conversation, contact, source, &seq, dir)
            .with_entry(switchboard_channel::entry_text(msg), at);
        crate::Live::new(self.store.clone()).publish(&event).await;
        Ok(seq)
    }

    /// A reply and its webhook event. The contact's routing events still
    /// on their way to the feed (its assignment) are moved first, so that
    /// the feed has the reply after the assignment that allowed it; should
    /// that fail, the reply is logged all the same (its event may then
    /// precede the assignment's).
    async fn append_with_event(
        &self,
        conversation: &ConversationId,
        contact: &str,
        fields: (&str, &str, u64, &str),
    ) -> Result<String, StoreError> {
        if let Ok(contact_id) = contact.parse::<ContactId>() {
            let feed = crate::EventFeed::new(self.store.clone());
            if let Err(error) = feed.move_routing_events_of(&contact_id).await {
                tracing::warn!(contact_id = contact, %error, "Could not move the contact's routing events before its reply.");
            }
        }
        crate::feed::append_with_event(&self.store, conversation, contact, fields).await
    }

    /// Ends the conversation of a contact routing has closed or abandoned:
    /// the conversation is marked closed and is no longer the customer's
    /// open one on its source, so their next message starts a new contact
    /// (routed again; sticky routing prefers the same agent). Idempotent;
    /// the open-conversation key is removed only while it still names this
    /// conversation.
    pub async fn end(&self, contact: &ContactId) -> Result<(), StoreError> {
        // The open key and the conversation share the partition's hash tag.
        self.mark(
            contact,
            "local open = redis.call('GET', KEYS[1]) \
             if open == ARGV[1] .. '|' .. ARGV[3] or open == ARGV[1] then \
               redis.call('DEL', KEYS[1]) end \
             if redis.call('EXISTS', KEYS[2]) == 1 then \
               redis.call('HSET', KEYS[2], 'state', 'closed', 'closed_at', ARGV[2]) end \
             return 1",
        )
        .await
    }

    /// Undoes [`end`](Self::end) after a close that routing refused (the
    /// contact was taken from the agent between the check and the close):
    /// the conversation is open again, and the customer's open one unless
    /// they have another since.
    pub async fn reopen(&self, contact: &ContactId) -> Result<(), StoreError> {
        self.mark(
            contact,
            "if redis.call('HGET', KEYS[2], 'state') == 'closed' then \
               redis.call('HSET', KEYS[2], 'state', 'open') \
               redis.call('HDEL', KEYS[2], 'closed_at') \
               redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[3], 'NX') end \
             return 1",
        )
        .await
    }

    /// Runs `script` with KEYS[1] the customer's open-conversation key
    /// (`conversation|contact`, or the conversation alone as versions
    /// before 2026-11-26 wrote it) and KEYS[2] the conversation of
    /// `contact`, ARGV[1] its id, ARGV[2] now and ARGV[3] the contact's id.
    /// Nothing when the contact names no conversation.
    async fn mark(&self, contact: &ContactId, script: &str) -> Result<(), StoreError> {
        let keys = self.store.keys();
        let mut conn = self.store.conn();
        let (conversation, source, customer): (Option<String>, Option<String>, Option<String>) =
            self.store
                .bounded(
                    redis::cmd("HMGET")
                        .arg(keys.contact(contact))
                        .arg("conversation")
                        .arg("source")
                        .arg("customer")
                        .query_async(&mut conn),
                )
                .await?;
        let (Some(conversation), Some(source), Some(customer)) = (conversation, source, customer)
        else {
            return Ok(());
        };
        let Ok(conv) = conversation.parse::<ConversationId>() else {
            return Ok(());
        };
        let (scheme, value) = customer.split_once(':').unwrap_or(("", ""));
        let Ok(identity) = CustomerIdentity::new(scheme, value) else {
            return Ok(());
        };
        let open =
            keys.open_conversation(keys.partition_of(&source, &identity), &source, &identity);
        let script = redis::Script::new(script);
        let mut inv = script.prepare_invoke();
        inv.key(open)
            .key(keys.conversation(&conv))
            .arg(conversation)
            .arg(Timestamp::now().as_millis())
            .arg(contact.to_string());
        let _: i64 = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// The customer's open conversation on `source` and its contact.
    pub async fn open_conversation(
        &self,
        source: &str,
        customer: &CustomerIdentity,
    ) -> Result<Option<(ConversationId, ContactId)>, StoreError> {
        let keys = self.store.keys();
        let p = keys.partition_of(source, customer);
        let mut conn = self.store.conn();
        let conv: Option<String> = self
            .store
            .bounded(
                redis::cmd("GET")
                    .arg(keys.open_conversation(p, source, customer))
                    .query_async(&mut conn),
            )
            .await?;
        // `conversation|contact`, or the conversation alone as versions
        // before 2026-11-26 wrote it. The conversation's own record says
        // whose it is (and that it still exists).
        let Some(conv) = conv.and_then(|c| {
            c.split('|')
                .next()
                .and_then(|c| c.parse::<ConversationId>().ok())
        }) else {
            return Ok(None);
        };
        let contact: Option<String> = self
            .store
            .bounded(
                redis::cmd("HGET")
                    .arg(keys.conversation(&conv))
                    .arg("contact")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(contact
            .and_then(|c| c.parse::<ContactId>().ok())
            .map(|contact| (conv, contact)))
    }

    /// Appends an entry of which a conversation keeps one (`dir`, e.g.
    /// `rating`), then rings the doorbell: `None`, and nothing written, when
    /// the conversation has one already. The mark (`once:<dir>` in the
    /// conversation's hash) and the entry are written in one step, so a
    /// retry after a lost answer, or a second tab, never adds a second one:
    /// the entry first, then the mark (Redis does not undo a script's
    /// writes when a later command fails, and a mark set before an `XADD`
    /// that failed turned every retry away with nothing logged).
    pub async fn append_once(
        &self,
        conversation: &ConversationId,
        contact: &ContactId,
        source: &str,
        dir: &str,
        msg: &str,
    ) -> Result<Option<String>, StoreError> {
        let keys = self.store.keys();
        let at = Timestamp::now().as_millis();
        // The conversation's hash and its log share the partition's hash tag.
        let script = redis::Script::new(
            "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return false end \
             local seq = redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'dir', ARGV[3], \
               'at', ARGV[4], 'msg', ARGV[5]) \
             redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) \
             return seq",
        );
        let mut inv = script.prepare_invoke();
        inv.key(keys.conversation(conversation))
            .key(keys.conversation_log(conversation))
            .arg(format!("once:{dir}"))
            .arg(MessageId::new().to_string())
            .arg(dir)
            .arg(at)
            .arg(msg);
        let mut conn = self.store.conn();
        let seq: Option<String> = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        if let Some(seq) = &seq {
            let event = LiveEvent::log(conversation, &contact.to_string(), source, seq, dir)
                .with_entry(switchboard_channel::entry_text(msg), at);
            crate::Live::new(self.store.clone()).publish(&event).await;
        }
        Ok(seq)
    }

    /// The contact of `conversation` when it is `customer`'s on `source`
    /// (open or closed); `None` when it is unknown or someone else's.
    pub async fn customer_conversation(
        &self,
        source: &str,
        customer: &CustomerIdentity,
        conversation: &ConversationId,
    ) -> Result<Option<ContactId>, StoreError> {
        let mut conn = self.store.conn();
        let (contact, of_source, of_customer): (Option<String>, Option<String>, Option<String>) =
            self.store
                .bounded(
                    redis::cmd("HMGET")
                        .arg(self.store.keys().conversation(conversation))
                        .arg("contact")
                        .arg("source")
                        .arg("customer")
                        .query_async(&mut conn),
                )
                .await?;
        if of_source.as_deref() != Some(source)
            || of_customer.as_deref() != Some(customer.to_string().as_str())
        {
            return Ok(None);
        }
        Ok(contact.and_then(|c| c.parse().ok()))
    }

    /// The entry at `seq`, if the log has it.
    pub async fn entry_at(
        &self,
        conversation: &ConversationId,
        seq: &str,
    ) -> Result<Option<LogEntry>, StoreError> {
        let mut conn = self.store.conn();
        let key = self.store.keys().conversation_log(conversation);
        let reply: redis::streams::StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(seq)
                    .arg(seq)
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply.ids.into_iter().next().map(entry_from))
    }

    /// The entry with message id `id` among the last `within` entries.
    pub async fn find_recent(
        &self,
        conversation: &ConversationId,
        id: &str,
        within: usize,
    ) -> Result<Option<LogEntry>, StoreError> {
        Ok(self
            .recent(conversation, within)
            .await?
            .into_iter()
            .find(|e| e.id == id))
    }
}

fn entry_from(e: redis::streams::StreamId) -> LogEntry {
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
}

fn unavailable(e: StoreError) -> IntakeError {
    IntakeError::Unavailable(e.to_string())
}

impl ConversationLog for Conversations {
    fn open_conversation<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
    ) -> BoxFuture<'a, Result<Option<(ConversationId, ContactId)>, IntakeError>> {
        Box::pin(async move {
            Conversations::open_conversation(self, source, customer)
                .await
                .map_err(unavailable)
        })
    }

    fn entries_after<'a>(
        &'a self,
        conversation: &'a ConversationId,
        after: &'a str,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>, IntakeError>> {
        Box::pin(async move {
            self.transcript(conversation, after, count)
                .await
                .map_err(unavailable)
        })
    }

    fn find_recent<'a>(
        &'a self,
        conversation: &'a ConversationId,
        id: &'a str,
        within: usize,
    ) -> BoxFuture<'a, Result<Option<LogEntry>, IntakeError>> {
        Box::pin(async move {
            Conversations::find_recent(self, conversation, id, within)
                .await
                .map_err(unavailable)
        })
    }

    fn append_once<'a>(
        &'a self,
        conversation: &'a ConversationId,
        contact: &'a ContactId,
        source: &'a str,
        dir: &'a str,
        msg: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>> {
        Box::pin(async move {
            Conversations::append_once(self, conversation, contact, source, dir, msg)
                .await
                .map_err(unavailable)
        })
    }

    fn customer_conversation<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
        conversation: &'a ConversationId,
    ) -> BoxFuture<'a, Result<Option<ContactId>, IntakeError>> {
        Box::pin(async move {
            Conversations::customer_conversation(self, source, customer, conversation)
                .await
                .map_err(unavailable)
        })
    }
}

/// The JSON of a stored reply status (`<rank>|<json>`).
fn status_json(ranked: &str) -> Option<String> {
    ranked.split_once('|').map(|(_, j)| j.to_owned())
}
