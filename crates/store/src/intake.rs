//! The durable intake: one atomic Redis script per inbound message.

use crate::{Doorbell, Store, StoreError};
use futures::future::BoxFuture;
use metrics::{counter, histogram};
use redis::Script;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::{Intake, LiveEvent};
use switchboard_core::inbound::EventLimits;
use switchboard_core::{
    ContactId, ConversationId, CustomerIdentity, InboundEvent, InboundUpdate, IntakeError,
    IntakeOutcome, IntakeReceipt, MessageId, Timestamp, UpdateOutcome,
};
use tracing::{debug, warn};

/// Intake settings from configuration.
#[derive(Debug, Clone, Copy)]
pub struct IntakeSettings {
    /// How long a provider message id is remembered.
    pub dedupe_window: Duration,
    pub limits: EventLimits,
}

/// The intake on Redis. Answers `Ok` only once Redis has executed the whole
/// script (dedupe mark, contact, conversation, message, routing entry);
/// Redis runs a script atomically and writes its effects to the AOF as one
/// transaction, so a crash of either process never leaves half of it.
#[derive(Clone)]
pub struct RedisIntake {
    pub(crate) store: Store,
    pub(crate) settings: IntakeSettings,
    script: Arc<Script>,
    pub(crate) update_script: Arc<Script>,
    /// Set by the daemon when it stops taking new work.
    pub(crate) closed: Arc<AtomicBool>,
    /// Whether the store's layout (its partition count) is known to match
    /// the configuration: until then an event would be placed, and its
    /// customer's open conversation and dedupe mark looked for, by a count
    /// that may not be the store's. True unless [`RedisIntake::gated_by`].
    layout_checked: Arc<AtomicBool>,
    /// Started at the first message (it needs the runtime), and again
    /// should its task have ended.
    doorbell: Arc<Mutex<Option<Doorbell>>>,
}

impl std::fmt::Debug for RedisIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIntake")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisIntake {
    pub fn new(store: Store, settings: IntakeSettings) -> RedisIntake {
        RedisIntake {
            store,
            settings,
            script: Arc::new(Script::new(include_str!("lua/intake.lua"))),
            update_script: Arc::new(Script::new(include_str!("lua/update.lua"))),
            closed: Arc::new(AtomicBool::new(false)),
            layout_checked: Arc::new(AtomicBool::new(true)),
            doorbell: Arc::new(Mutex::new(None)),
        }
    }

    /// Takes nothing (answers [`IntakeError::Unavailable`]) until `checked`
    /// is set: the daemon sets it once [`Store::check_layout_at_start`]
    /// passed, which it retries in the background while Redis is away.
    pub fn gated_by(mut self, checked: Arc<AtomicBool>) -> RedisIntake {
        self.layout_checked = checked;
        self
    }

    /// Why nothing can be taken now, if so.
    pub(crate) fn refusal(&self) -> Option<IntakeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Some(IntakeError::ShuttingDown);
        }
        if !self.layout_checked.load(Ordering::SeqCst) {
            return Some(IntakeError::Unavailable(
                "the store's layout is not checked yet (Redis not reached since the start)".into(),
            ));
        }
        None
    }

    /// Stops taking new events: later submissions fail with
    /// [`IntakeError::ShuttingDown`]. Submissions already under way finish.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Stores `event` durably and answers with its ids.
    pub async fn submit_event(&self, event: InboundEvent) -> Result<IntakeReceipt, IntakeError> {
        let channel = event.channel.as_str();
        let source = event.source.clone();
        let started = Instant::now();
        let result = self.store_event(event).await;
        let result = match result {
            Ok((receipt, text, at)) => {
                if receipt.outcome != IntakeOutcome::Duplicate {
                    // The doorbell, after the script and outside it: it
                    // must never fail or delay the intake (see `live`).
                    // Handed to one task that publishes those waiting in
                    // one round trip: the intake's busiest path saves a
                    // write to Redis of its own per message.
                    let event = LiveEvent::log(
                        &receipt.conversation_id,
                        &receipt.contact_id.to_string(),
                        &source,
                        &receipt.seq,
                        "in",
                    )
                    .with_entry(text, at);
                    self.ring(event);
                }
                Ok(receipt)
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(receipt) => {
                counter!("switchboard_intake_events_total",
                    "channel" => channel, "source" => source.clone(), "outcome" => receipt.outcome.as_str())
                .increment(1);
                histogram!("switchboard_intake_duration_seconds", "channel" => channel)
                    .record(started.elapsed().as_secs_f64());
                debug!(contact_id = %receipt.contact_id, conversation_id = %receipt.conversation_id,
                    message_id = %receipt.message_id, outcome = receipt.outcome.as_str(), "Inbound message stored.");
            }
            Err(error) => {
                counter!("switchboard_intake_errors_total",
                    "channel" => channel, "source" => source, "error_type" => error.kind())
                .increment(1);
                if matches!(error, IntakeError::Unavailable(_)) {
                    warn!(%error, channel, "Intake could not store a message.");
                }
            }
        }
        result
    }

    /// Hands `event` to this intake's doorbell, starting it first if it
    /// has not started or its task has ended.
    fn ring(&self, event: LiveEvent) {
        let mut doorbell = self
            .doorbell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if doorbell.as_ref().is_none_or(Doorbell::is_closed) {
            *doorbell = Some(crate::Live::new(self.store.clone()).doorbell());
        }
        if let Some(doorbell) = doorbell.as_ref() {
            doorbell.ring(event);
        }
    }

    /// Stores the event; the receipt, with the stored text and time for
    /// the doorbell.
    async fn store_event(
        &self,
        event: InboundEvent,
    ) -> Result<(IntakeReceipt, String, u64), IntakeError> {
        if let Some(refused) = self.refusal() {
            return Err(refused);
        }
        let event = event.validate(self.settings.limits)?;
        let keys = self.store.keys();
        let p = keys.partition_of(&event.source, &event.customer);
        let now = Timestamp::now();
        let contact = ContactId::new(p);
        let conversation = ConversationId::new(p);
        let message = MessageId::new();
        let routing = keys.routing(p);
        let older = self
            .store
            .older_marks_possible(now.as_millis(), self.settings.dedupe_window);
        let (has_dedupe, dedupe, dedupe_before) = match &event.provider_message_id {
            Some(id) => (
                "1",
                keys.dedupe(p, &event.source, &event.customer, id),
                older.then(|| keys.dedupe_before_2026_11_27(p, &event.source, id)),
            ),
            // A key of the same slot that the script will not touch.
            None => ("0", routing.clone(), None),
        };
        let (read_before, dedupe_before) = match dedupe_before {
            Some(key) => ("1", key),
            None => ("0", routing.clone()),
        };
        let message_json = serde_json::to_string(&StoredMessage {
            event: &event,
            received_at: now,
        })
        .map_err(|e| IntakeError::Unavailable(format!("cannot encode message: {e}")))?;
        let attributes = serde_json::to_string(&event.attributes)
            .map_err(|e| IntakeError::Unavailable(format!("cannot encode attributes: {e}")))?;

        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(dedupe)
            .key(keys.open_conversation(p, &event.source, &event.customer))
            .key(routing)
            .key(dedupe_before)
            .arg(has_dedupe)
            .arg(self.settings.dedupe_window.as_secs().max(1))
            .arg(contact.to_string())
            .arg(conversation.to_string())
            .arg(message.to_string())
            .arg(now.as_millis())
            .arg(message_json)
            .arg(keys.tag(p))
            .arg(event.channel.as_str())
            .arg(&event.source)
            .arg(&event.address)
            .arg(event.customer.to_string())
            .arg(event.customer_name.as_deref().unwrap_or(""))
            .arg(event.subject.as_deref().unwrap_or(""))
            .arg(event.language.as_deref().unwrap_or(""))
            .arg(attributes)
            .arg(preview(&event.text))
            .arg(if self.store.event_feed() { "1" } else { "0" })
            .arg(if event.new_contact { "1" } else { "0" })
            .arg(read_before);
        let mut conn = self.store.conn();
        let reply: String = self
            .store
            .bounded(invocation.invoke_async(&mut conn))
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => IntakeError::Unavailable(m),
                other => IntakeError::Unavailable(other.to_string()),
            })?;
        let receipt = parse_reply(&reply).ok_or_else(|| {
            IntakeError::Unavailable(format!("unexpected intake reply {reply:?}"))
        })?;
        Ok((receipt, event.text, now.as_millis()))
    }
}

/// What the conversation log holds for an inbound message.
#[derive(serde::Serialize)]
struct StoredMessage<'a> {
    #[serde(flatten)]
    event: &'a InboundEvent,
    received_at: Timestamp,
}

/// Parses `"outcome|contact|conversation|message|seq"`.
fn parse_reply(reply: &str) -> Option<IntakeReceipt> {
    let mut parts = reply.split('|');
    let outcome = match parts.next()? {
        "created" => IntakeOutcome::Created,
        "appended" => IntakeOutcome::Appended,
        "duplicate" => IntakeOutcome::Duplicate,
        _ => return None,
    };
    let receipt = IntakeReceipt {
        outcome,
        contact_id: parts.next()?.parse().ok()?,
        conversation_id: parts.next()?.parse().ok()?,
        message_id: parts.next()?.parse().ok()?,
        seq: parts.next()?.to_owned(),
    };
    parts.next().is_none().then_some(receipt)
}

impl Intake for RedisIntake {
    fn limits(&self) -> EventLimits {
        self.settings.limits
    }

    fn submit(&self, event: InboundEvent) -> BoxFuture<'_, Result<IntakeReceipt, IntakeError>> {
        Box::pin(self.submit_event(event))
    }

    fn update(&self, update: InboundUpdate) -> BoxFuture<'_, Result<UpdateOutcome, IntakeError>> {
        Box::pin(self.submit_update(update))
    }

    fn lookup<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
        provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntakeReceipt>, IntakeError>> {
        Box::pin(async move {
            if let Some(refused) = self.refusal() {
                return Err(refused);
            }
            // As `submit` normalises it (an email address lower-cased):
            // the partition and the mark's key are of the normal form.
            let customer = &customer
                .clone()
                .validated()
                .map_err(|e| IntakeError::Invalid(e.into()))?;
            let keys = self.store.keys();
            let p = keys.partition_of(source, customer);
            let mut conn = self.store.conn();
            let (ids, before): (Option<String>, Option<String>) = self
                .store
                .bounded(
                    redis::cmd("MGET")
                        .arg(keys.dedupe(p, source, customer, provider_message_id))
                        .arg(keys.dedupe_before_2026_11_27(p, source, provider_message_id))
                        .query_async(&mut conn),
                )
                .await
                .map_err(|e| IntakeError::Unavailable(e.to_string()))?;
            let own = ids.and_then(|ids| parse_reply(&format!("duplicate|{ids}")));
            if own.is_some() {
                return Ok(own);
            }
            // A mark of the old form counts only for this customer's
            // message (as in intake.lua).
            let Some(receipt) = before.and_then(|ids| parse_reply(&format!("duplicate|{ids}")))
            else {
                return Ok(None);
            };
            let theirs: Option<String> = self
                .store
                .bounded(
                    redis::cmd("HGET")
                        .arg(keys.contact(&receipt.contact_id))
                        .arg("customer")
                        .query_async(&mut conn),
                )
                .await
                .map_err(|e| IntakeError::Unavailable(e.to_string()))?;
            Ok((theirs.as_deref() == Some(customer.to_string().as_str())).then_some(receipt))
        })
    }
}

/// The first 500 bytes of a text, cut at a character boundary: what routing
/// rules match words in.
fn preview(text: &str) -> &str {
    switchboard_core::clip(text, 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_at_character_boundaries() {
        let text = "ї".repeat(400);
        assert_eq!(preview(&text).len(), 500);
        assert_eq!(preview("short"), "short");
    }

    #[test]
    fn replies_parse_strictly() {
        let ok = "created|0-01ARZ3NDEKTSV4RRFFQ69G5FAV|0-01ARZ3NDEKTSV4RRFFQ69G5FAW|01ARZ3NDEKTSV4RRFFQ69G5FAX|1-0";
        let receipt = parse_reply(ok).expect("parses");
        assert_eq!(receipt.outcome, IntakeOutcome::Created);
        assert_eq!(receipt.seq, "1-0");
        assert!(parse_reply("created|x|y|z|1-0").is_none());
        assert!(parse_reply(&format!("{ok}|extra")).is_none());
        assert!(parse_reply("").is_none());
    }
}
