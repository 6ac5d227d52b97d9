//! Each adapter's durable outbox of replies.
//!
//! A stream per source, read through the consumer group `delivery`. A
//! delivery handed out and neither settled nor deferred within the
//! visibility timeout (the adapter crashed) is handed out again. A deferred
//! delivery waits in a sorted set until it is due.
//!
//! A delivery handed out again and again without being settled (it makes
//! its adapter crash or hang, or an intake API client never answers) counts
//! each hand-out as an attempt, so adapters' attempt limits end it; past
//! [`MAX_HANDOUTS`] the outbox settles it as failed itself. An entry that
//! cannot be read is moved to `{o:<source>}:unreadable` (trimmed to ~10,000)
//! and counted, not handed out for ever.

use crate::RedisConn;
use crate::{Store, StoreError};
use futures::future::BoxFuture;
use redis::Script;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use std::time::Duration;
use switchboard_channel::{OutboundDelivery, Outbox, OutboxError};
use switchboard_core::{DeliveryOutcome, OutboundMessage, Timestamp};

const GROUP: &str = "delivery";

/// Hand-outs without a settlement after which a delivery is failed.
pub const MAX_HANDOUTS: u32 = 20;

/// Applies a receipt kept because it came before its reply's settle.
static APPLY_EARLY: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/apply_early.lua")));

/// Moves an unreadable entry aside (KEYS[1] the outbox, KEYS[2] where
/// unreadable entries go; ARGV[1] its id, ARGV[2] the group, ARGV[3] why).
static SET_ASIDE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) \
         if #e == 0 then return 0 end \
         local f = {'id', ARGV[1], 'reason', ARGV[3]} \
         for i = 1, #e[1][2] do f[#f + 1] = e[1][2][i] end \
         redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', unpack(f)) \
         redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) \
         redis.call('XDEL', KEYS[1], ARGV[1]) \
         return 1",
    )
});

/// Takes a pending delivery for settling (KEYS[1] the outbox; ARGV[1] its
/// id, ARGV[2] the group, ARGV[3] this consumer, ARGV[4] the holder it
/// must have, '' for any): claimed by this consumer with its idle time
/// reset (`JUSTID` leaves its hand-out count as it is), so that no other
/// instance takes it over after the visibility timeout while the outcome
/// is written; a check alone let a delivery idle for most of the timeout
/// (a slow send) be handed out again between the check and the write, and
/// the late outcome overwrite the new holder's. 1 when claimed, 0 when it
/// is no longer pending with that holder.
static SETTLE_CLAIM: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1) \
         if #p == 0 then return 0 end \
         if ARGV[4] ~= '' and p[1][2] ~= ARGV[4] then return 0 end \
         redis.call('XCLAIM', KEYS[1], ARGV[2], ARGV[3], 0, ARGV[1], 'JUSTID') \
         return 1",
    )
});

/// Acknowledges and deletes a settled delivery if this consumer still
/// holds it (KEYS[1] the outbox; ARGV[1] its id, ARGV[2] the group,
/// ARGV[3] this consumer): never another holder's, taken over after a
/// stall longer than the visibility timeout. 1 when removed.
static SETTLE_REMOVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1) \
         if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end \
         redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) \
         redis.call('XDEL', KEYS[1], ARGV[1]) \
         return 1",
    )
});

/// Queues a message unless its mark says it was queued already.
/// The message first, then its mark: Redis does not undo a script's
/// writes when a later command in it fails, so a mark set before an `XADD`
/// that failed (a key of the wrong type; not memory, which Redis checks
/// only before a script's first write) said "queued" for a message never
/// queued, and every retry found it and queued nothing.
static ENQUEUE_ONCE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
         redis.call('XADD', KEYS[1], '*', 'attempt', 1, 'msg', ARGV[1]) \
         redis.call('SET', KEYS[2], '1', 'EX', 604800) \
         return 1",
    )
});

/// The outbox of one adapter (`source`).
#[derive(Clone)]
pub struct RedisOutbox {
    store: Store,
    source: String,
    consumer: String,
    visibility: Duration,
    blocking: RedisConn,
    promote: std::sync::Arc<Script>,
    defer: std::sync::Arc<Script>,
    hold: std::sync::Arc<Script>,
    /// The consumer group exists (as far as this reader knows): made once,
    /// and again after Redis says it is gone (`NOGROUP`).
    group_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Where the next `XAUTOCLAIM` goes on in the pending list: each call
    /// looks at a few entries only, so one that starts at the beginning
    /// every time never reaches a stale delivery behind ten in progress.
    reclaim_from: std::sync::Arc<std::sync::Mutex<String>>,
    /// Deletes the group's dead consumers now and then.
    pruner: std::sync::Arc<crate::Pruner>,
}

impl std::fmt::Debug for RedisOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOutbox")
            .field("source", &self.source)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl From<StoreError> for OutboxError {
    fn from(e: StoreError) -> Self {
        OutboxError::Unavailable(e.to_string())
    }
}

/// Notes, for a social reply, that replies to its customer may be on
/// their way ([`crate::keys::KeySpace::replying`], for
/// [`crate::updates::EARLY_STATUS_TTL`]): a provider's receipt that
/// outruns the settle is kept only then, so statuses of messages we never
/// sent (another app on the same number) are not. Best effort: without
/// it, an early receipt is not kept (as before 2026-11-28).
async fn note_replying(store: &Store, message: &OutboundMessage) {
    if message.channel != switchboard_core::ChannelKind::Social {
        return;
    }
    let keys = store.keys();
    let p = keys.partition_of(&message.source, &message.to);
    let mut conn = store.conn();
    let set = store
        .bounded(
            redis::cmd("SET")
                .arg(keys.replying(p, &message.source, &message.to))
                .arg(1)
                .arg("EX")
                .arg(crate::updates::EARLY_STATUS_TTL.as_secs())
                .query_async::<()>(&mut conn),
        )
        .await;
    if let Err(error) = set {
        tracing::debug!(%error, message_id = %message.message_id, "Could not note a reply on its way; a receipt before its settle is not kept.");
    }
}

impl RedisOutbox {
    /// The outbox of `source`, read by `consumer` (unique per instance). A
    /// delivery not settled within `visibility` is handed out again.
    pub fn new(
        store: Store,
        source: &str,
        consumer: &str,
        visibility: Duration,
    ) -> Result<Self, StoreError> {
        // The longest wait `next` is asked for is bounded by callers; allow 30 s.
        let blocking = store.dedicated_connection(Duration::from_secs(30))?;
        Ok(RedisOutbox {
            store,
            source: source.to_owned(),
            consumer: consumer.to_owned(),
            visibility,
            blocking,
            promote: std::sync::Arc::new(Script::new(include_str!("lua/outbox_promote.lua"))),
            defer: std::sync::Arc::new(Script::new(include_str!("lua/outbox_defer.lua"))),
            hold: std::sync::Arc::new(Script::new(include_str!("lua/outbox_hold.lua"))),
            group_ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            reclaim_from: std::sync::Arc::new(std::sync::Mutex::new("0-0".to_owned())),
            pruner: std::sync::Arc::default(),
        })
    }

    /// Puts a reply in the outbox. Durable when this returns `Ok`.
    pub async fn enqueue(&self, message: &OutboundMessage) -> Result<(), StoreError> {
        Self::enqueue_to(&self.store, message).await
    }

    /// Puts a message in the outbox of its `source`, without a reader of
    /// that outbox (the agent API hands replies over this way).
    pub async fn enqueue_to(store: &Store, message: &OutboundMessage) -> Result<(), StoreError> {
        note_replying(store, message).await;
        let json = serde_json::to_string(message)
            .map_err(|e| StoreError::Protocol(format!("cannot encode outbound message: {e}")))?;
        let mut conn = store.conn();
        let key = store.keys().outbox(&message.source);
        store
            .bounded(
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("attempt")
                    .arg(1)
                    .arg("msg")
                    .arg(json)
                    .query_async::<String>(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Like [`enqueue_to`](Self::enqueue_to), at most once per message id
    /// (for 7 days): a client's retry of a reply that was queued before
    /// its answer was lost queues nothing more.
    pub async fn enqueue_once(store: &Store, message: &OutboundMessage) -> Result<(), StoreError> {
        note_replying(store, message).await;
        let json = serde_json::to_string(message)
            .map_err(|e| StoreError::Protocol(format!("cannot encode outbound message: {e}")))?;
        let key = store.keys().outbox(&message.source);
        // The mark shares the outbox's hash tag (its first `{…}`).
        let mark = format!("{key}:queued:{}", message.message_id);
        let mut inv = ENQUEUE_ONCE.prepare_invoke();
        inv.key(&key).key(mark).arg(json);
        let mut conn = store.conn();
        let _: i64 = store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = self.store.conn();
        let made: Result<(), StoreError> = self
            .store
            .bounded(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(self.store.keys().outbox(&self.source))
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn),
            )
            .await;
        match made {
            Ok(()) => {}
            Err(StoreError::Protocol(m)) if m.contains("BUSYGROUP") => {}
            Err(other) => return Err(other),
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The next delivery; when Redis lost the consumer group (its key was
    /// deleted: a flush, a Redis that lost its data, and a later reply made
    /// the stream again without it), the group is made again on the next
    /// call.
    async fn next_delivery(&self, wait: Duration) -> Result<Option<OutboundDelivery>, OutboxError> {
        let result = self.take_delivery(wait).await;
        if let Ok(Some(delivery)) = &result {
            note_replying(&self.store, &delivery.message).await;
        }
        if let Err(e) = &result
            && e.to_string().contains("NOGROUP")
        {
            self.group_ready
                .store(false, std::sync::atomic::Ordering::Release);
            metrics::counter!("switchboard_store_outbox_groups_recreated_total",
                "source" => self.source.clone())
            .increment(1);
            tracing::warn!(source = %self.source, "The outbox lost its consumer group; it is made again.");
        }
        result
    }

    async fn take_delivery(&self, wait: Duration) -> Result<Option<OutboundDelivery>, OutboxError> {
        self.ensure_group().await?;
        let keys = self.store.keys();
        let stream = keys.outbox(&self.source);
        let mut conn = self.store.conn();
        let unreadable: i64 = self
            .store
            .bounded(
                self.promote
                    .key(&stream)
                    .key(keys.outbox_deferred(&self.source))
                    .arg(Timestamp::now().as_millis())
                    .arg(100)
                    .invoke_async(&mut conn),
            )
            .await?;
        if unreadable > 0 {
            metrics::counter!("switchboard_outbox_unreadable_total", "source" => self.source.clone())
                .increment(u64::try_from(unreadable).unwrap_or(0));
            tracing::warn!(source = %self.source, unreadable, "Deferred outbox entries that were not deliveries were removed.");
        }
        let from = self
            .reclaim_from
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| "0-0".to_owned());
        let claimed: StreamAutoClaimReply = self
            .store
            .bounded(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(u64::try_from(self.visibility.as_millis()).unwrap_or(u64::MAX))
                    .arg(from)
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        // "0-0" once the scan reached the end: the next call starts over.
        if let Ok(mut cursor) = self.reclaim_from.lock() {
            *cursor = claimed.next_stream_id.clone();
        }
        if let Some(entry) = claimed.claimed.into_iter().next() {
            return self.reclaimed(entry).await;
        }
        self.pruner
            .maybe(
                &self.store,
                [stream.clone()],
                GROUP,
                &self.consumer,
                "outbox",
            )
            .await;
        let wait = wait.min(Duration::from_secs(30));
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(1)
            .block(usize::try_from(wait.as_millis()).unwrap_or(0).max(1));
        let mut blocking = self.blocking.clone();
        let reply: Option<StreamReadReply> = tokio::time::timeout(
            wait + self.store.config().response_timeout,
            redis::AsyncCommands::xread_options(&mut blocking, &[&stream], &[">"], &options),
        )
        .await
        .map_err(|_| OutboxError::Unavailable("XREADGROUP timed out".into()))?
        .map_err(StoreError::from)?;
        let entry = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        match entry.map(|e| self.delivery(e)).transpose() {
            Err(OutboxError::Corrupt { handle, reason }) => {
                Err(self.set_aside(&handle, &reason).await)
            }
            other => other,
        }
    }

    /// A delivery handed out before and never settled: each hand-out
    /// counts as an attempt; past [`MAX_HANDOUTS`] it is settled as failed.
    async fn reclaimed(&self, entry: StreamId) -> Result<Option<OutboundDelivery>, OutboxError> {
        let mut delivery = match self.delivery(entry) {
            Ok(d) => d,
            Err(OutboxError::Corrupt { handle, reason }) => {
                return Err(self.set_aside(&handle, &reason).await);
            }
            Err(other) => return Err(other),
        };
        let handouts = self
            .pending_entry(&delivery.handle)
            .await?
            .map_or(1, |(n, _)| n);
        delivery.attempt = delivery.attempt.saturating_add(handouts.saturating_sub(1));
        delivery.handouts = handouts;
        if handouts > MAX_HANDOUTS {
            metrics::counter!("switchboard_outbox_abandoned_total", "source" => self.source.clone())
                .increment(1);
            tracing::error!(source = %self.source, message_id = %delivery.message.message_id, handouts,
                "A reply was handed out again and again and never settled; it is marked failed.");
            let reason = format!("not delivered: handed out {handouts} times without an answer");
            self.settle_delivery(&delivery, DeliveryOutcome::Failed { reason })
                .await?;
            return Ok(None);
        }
        Ok(Some(delivery))
    }

    /// Takes `delivery` for settling if it is still pending with this
    /// instance: not settled, deferred, or taken over by another instance
    /// after the visibility timeout. (Handed out again to this same
    /// instance, it is still this instance's to settle.) A delivery looked
    /// up by handle (`handouts` 0) may be settled through any instance.
    /// Taken, it is this instance's for a whole visibility timeout
    /// ([`SETTLE_CLAIM`]).
    async fn take_for_settling(&self, delivery: &OutboundDelivery) -> Result<bool, OutboxError> {
        let holder = if delivery.handouts == 0 {
            ""
        } else {
            self.consumer.as_str()
        };
        let mut inv = SETTLE_CLAIM.prepare_invoke();
        inv.key(self.store.keys().outbox(&self.source))
            .arg(&delivery.handle)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(holder);
        let mut conn = self.store.conn();
        let taken: i64 = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(taken == 1)
    }

    fn late_settlement(&self, delivery: &OutboundDelivery) {
        metrics::counter!("switchboard_outbox_late_settlements_total", "source" => self.source.clone())
            .increment(1);
        tracing::info!(source = %self.source, message_id = %delivery.message.message_id,
            "A delivery was handed out again (taken over) or settled elsewhere; this late outcome is not recorded.");
    }

    /// The pending entry `handle`: how many times it was handed out, and
    /// to which consumer last; `None` when it is not pending (settled,
    /// deferred, unknown).
    async fn pending_entry(&self, handle: &str) -> Result<Option<(u32, String)>, OutboxError> {
        let stream = self.store.keys().outbox(&self.source);
        let mut conn = self.store.conn();
        let pending: redis::streams::StreamPendingCountReply = self
            .store
            .bounded(
                redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(handle)
                    .arg(handle)
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(pending.ids.into_iter().next().map(|p| {
            (
                u32::try_from(p.times_delivered).unwrap_or(u32::MAX),
                p.consumer,
            )
        }))
    }

    /// Moves an unreadable entry to `{o:<source>}:unreadable` and counts
    /// it; the error to return for it.
    async fn set_aside(&self, handle: &str, reason: &str) -> OutboxError {
        let keys = self.store.keys();
        let mut inv = SET_ASIDE.prepare_invoke();
        inv.key(keys.outbox(&self.source))
            .key(keys.outbox_unreadable(&self.source))
            .arg(handle)
            .arg(GROUP)
            .arg(reason);
        let mut conn = self.store.conn();
        match self.store.bounded::<i64>(inv.invoke_async(&mut conn)).await {
            Ok(_) => {
                metrics::counter!("switchboard_outbox_unreadable_total", "source" => self.source.clone())
                    .increment(1);
                tracing::error!(source = %self.source, handle, reason,
                    "An outbox entry cannot be read; it was moved to the outbox's unreadable entries.");
            }
            Err(error) => {
                tracing::warn!(source = %self.source, handle, %error, "Could not set an unreadable outbox entry aside; trying again later.");
            }
        }
        OutboxError::Corrupt {
            handle: handle.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn delivery(&self, entry: StreamId) -> Result<OutboundDelivery, OutboxError> {
        let corrupt = |reason: String| OutboxError::Corrupt {
            handle: entry.id.clone(),
            reason,
        };
        let msg: String = entry
            .get("msg")
            .ok_or_else(|| corrupt("no msg field".into()))?;
        let attempt: u32 = entry
            .get::<String>("attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        let message: OutboundMessage =
            serde_json::from_str(&msg).map_err(|e| corrupt(e.to_string()))?;
        Ok(OutboundDelivery {
            handle: entry.id.clone(),
            attempt,
            handouts: 1,
            message,
        })
    }

    async fn settle_delivery(
        &self,
        delivery: &OutboundDelivery,
        outcome: DeliveryOutcome,
    ) -> Result<(), OutboxError> {
        let keys = self.store.keys();
        if !self.take_for_settling(delivery).await? {
            self.late_settlement(delivery);
            return Ok(());
        }
        let state = serde_json::json!({ "outcome": outcome, "attempts": delivery.attempt, "at": Timestamp::now() });
        let mut conn = self.store.conn();
        // The state first: a crash between the two re-delivers (at least
        // once), never loses the outcome.
        self.store
            .bounded(
                redis::cmd("HSET")
                    .arg(keys.conversation_delivery(&delivery.message.conversation_id))
                    .arg(delivery.message.message_id.to_string())
                    .arg(state.to_string())
                    .query_async::<i64>(&mut conn),
            )
            .await?;
        if let DeliveryOutcome::Delivered {
            provider_message_id,
            earlier_ids,
        } = &outcome
        {
            // Every part's id of a reply sent in parts: a receipt may come
            // for any of them.
            for provider_id in earlier_ids.iter().chain(provider_message_id) {
                // So that the provider's receipts for it find it.
                let conversation = &delivery.message.conversation_id;
                self.store
                    .bounded(
                        redis::cmd("SET")
                            .arg(keys.reply_ref(
                                conversation.partition(),
                                &self.source,
                                provider_id,
                            ))
                            .arg(format!("{conversation}|{}", delivery.message.message_id))
                            .arg("EX")
                            .arg(crate::updates::REPLY_REF_TTL.as_secs())
                            .query_async::<()>(&mut conn),
                    )
                    .await?;
                // A reply sent on another source than its conversation's (a
                // forwarded offline-form answer): its receipts arrive in the
                // partition of this source and the customer, and look it up
                // from there.
                let home = keys.partition_of(&self.source, &delivery.message.to);
                if home == conversation.partition() {
                    // A receipt that came before this settle was kept
                    // (`UpdateOutcome::Early`): applied now. (Of a reply whose
                    // receipts arrive in another partition it is not: it
                    // lapses.)
                    let reply_ref = keys.reply_ref(home, &self.source, provider_id);
                    let applied: i64 = self
                        .store
                        .bounded(
                            APPLY_EARLY
                                .key(format!("{reply_ref}:early"))
                                .key(keys.conversation_status(conversation))
                                .arg(delivery.message.message_id.to_string())
                                .invoke_async(&mut conn),
                        )
                        .await?;
                    if applied == 1 {
                        tracing::debug!(message_id = %delivery.message.message_id, "A receipt that came before the settle is applied.");
                    }
                } else {
                    self.store
                        .bounded(
                            redis::cmd("SET")
                                .arg(keys.reply_home(home, &self.source, provider_id))
                                .arg(conversation.partition().0)
                                .arg("EX")
                                .arg(crate::updates::REPLY_REF_TTL.as_secs())
                                .query_async::<()>(&mut conn),
                        )
                        .await?;
                }
            }
        }
        self.remove_held(delivery).await
    }

    /// Acknowledges and deletes a delivery taken for settling, if this
    /// instance still holds it.
    async fn remove_held(&self, delivery: &OutboundDelivery) -> Result<(), OutboxError> {
        let mut inv = SETTLE_REMOVE.prepare_invoke();
        inv.key(self.store.keys().outbox(&self.source))
            .arg(&delivery.handle)
            .arg(GROUP)
            .arg(&self.consumer);
        let mut conn = self.store.conn();
        let removed: i64 = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        if removed == 0 {
            // Taken over after a stall longer than the visibility timeout
            // since it was taken for settling: the new holder's outcome
            // will be written over this one.
            self.late_settlement(delivery);
        }
        Ok(())
    }

    async fn defer_delivery(
        &self,
        delivery: &OutboundDelivery,
        delay: Duration,
    ) -> Result<(), OutboxError> {
        let keys = self.store.keys();
        let json = serde_json::to_string(&delivery.message)
            .map_err(|e| OutboxError::Unavailable(e.to_string()))?;
        let due =
            Timestamp::now().as_millis() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2);
        let mut conn = self.store.conn();
        let deferred: i64 = self
            .store
            .bounded(
                self.defer
                    .key(keys.outbox(&self.source))
                    .key(keys.outbox_deferred(&self.source))
                    .arg(&delivery.handle)
                    .arg(GROUP)
                    .arg(due)
                    .arg(format!("{}|{json}", delivery.attempt.saturating_add(1)))
                    .arg(if delivery.handouts == 0 {
                        ""
                    } else {
                        self.consumer.as_str()
                    })
                    .invoke_async(&mut conn),
            )
            .await?;
        if deferred == 0 {
            metrics::counter!("switchboard_outbox_late_settlements_total", "source" => self.source.clone())
                .increment(1);
            tracing::info!(source = %self.source, message_id = %delivery.message.message_id,
                "A delivery was settled elsewhere while this instance held it; not deferred again.");
        }
        Ok(())
    }
}

impl RedisOutbox {
    async fn hold(&self, action: &str, lease: Duration) -> Result<bool, OutboxError> {
        let key = format!("{}:holder", self.store.keys().outbox(&self.source));
        let mut conn = self.store.conn();
        let held: i64 = self
            .store
            .bounded(
                self.hold
                    .key(key)
                    .arg(action)
                    .arg(&self.consumer)
                    .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }
}

impl RedisOutbox {
    async fn forward_delivery(
        &self,
        delivery: &OutboundDelivery,
        message: OutboundMessage,
    ) -> Result<(), OutboxError> {
        // Only while this instance holds it, as a settlement: one that
        // stalled past the visibility timeout must not forward a delivery
        // another instance took over (and may have settled failed).
        if !self.take_for_settling(delivery).await? {
            self.late_settlement(delivery);
            return Ok(());
        }
        // Once per message id: a forward retried after its answer was lost
        // (or a crash before the removal) does not send it twice.
        Self::enqueue_once(&self.store, &message).await?;
        self.remove_held(delivery).await
    }

    async fn pending_delivery(
        &self,
        handle: &str,
    ) -> Result<Option<OutboundDelivery>, OutboxError> {
        // Only a stream id can be one (anything else is unknown, not an
        // error from Redis).
        let id_ok = handle
            .split_once('-')
            .is_some_and(|(ms, n)| ms.parse::<u64>().is_ok() && n.parse::<u64>().is_ok());
        if !id_ok {
            return Ok(None);
        }
        self.ensure_group().await?;
        let Some((handouts, _)) = self.pending_entry(handle).await? else {
            return Ok(None);
        };
        let stream = self.store.keys().outbox(&self.source);
        let mut conn = self.store.conn();
        let found: StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(handle)
                    .arg(handle)
                    .query_async(&mut conn),
            )
            .await?;
        // Its hand-outs so far count as attempts; it may be settled through
        // any instance (`handouts` 0): the client answering may have been
        // given it by an earlier hand-out (at least once, as documented).
        found
            .ids
            .into_iter()
            .next()
            .map(|entry| {
                self.delivery(entry).map(|mut d| {
                    d.attempt = d.attempt.saturating_add(handouts.saturating_sub(1));
                    d.handouts = 0;
                    d
                })
            })
            .transpose()
    }
}

impl Outbox for RedisOutbox {
    fn pending<'a>(
        &'a self,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<Option<OutboundDelivery>, OutboxError>> {
        Box::pin(self.pending_delivery(handle))
    }

    fn forward<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        message: OutboundMessage,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(self.forward_delivery(delivery, message))
    }

    fn hold_delivery(&self, lease: Duration) -> BoxFuture<'_, Result<bool, OutboxError>> {
        Box::pin(self.hold("hold", lease))
    }

    fn release_delivery(&self) -> BoxFuture<'_, Result<(), OutboxError>> {
        Box::pin(async move { self.hold("release", Duration::ZERO).await.map(|_| ()) })
    }

    fn next(&self, wait: Duration) -> BoxFuture<'_, Result<Option<OutboundDelivery>, OutboxError>> {
        Box::pin(self.next_delivery(wait))
    }

    fn settle<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        outcome: DeliveryOutcome,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(self.settle_delivery(delivery, outcome))
    }

    fn defer<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(self.defer_delivery(delivery, delay))
    }
}

/// What an outbox holds: replies not handed out yet (`waiting`), handed out
/// and not settled (`in_flight`), put off after a temporary failure
/// (`deferred`), and the age of the oldest not settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub waiting: u64,
    pub in_flight: u64,
    pub deferred: u64,
    /// Milliseconds since the oldest waiting or in-flight reply was put in.
    pub oldest_age_ms: Option<u64>,
}

/// The backlog of `source`'s outbox. Settled replies leave the stream, so
/// its length is what is waiting plus what is in flight.
pub async fn backlog(store: &Store, source: &str) -> Result<Backlog, StoreError> {
    let keys = store.keys();
    let stream = keys.outbox(source);
    let mut conn = store.conn();
    let (len, deferred, first): (u64, u64, StreamRangeReply) = store
        .bounded(
            redis::pipe()
                .cmd("XLEN")
                .arg(&stream)
                .cmd("ZCARD")
                .arg(keys.outbox_deferred(source))
                .cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
    let mut in_flight = 0;
    if len > 0 {
        let groups: redis::streams::StreamInfoGroupsReply = store
            .bounded(
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&stream)
                    .query_async(&mut conn),
            )
            .await?;
        in_flight = groups
            .groups
            .iter()
            .find(|g| g.name == GROUP)
            .map_or(0, |g| g.pending as u64);
    }
    let now = Timestamp::now().as_millis();
    let oldest_age_ms = first
        .ids
        .first()
        .and_then(|e| e.id.split_once('-'))
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .map(|at| now.saturating_sub(at));
    Ok(Backlog {
        waiting: len.saturating_sub(in_flight),
        in_flight,
        deferred,
        oldest_age_ms,
    })
}

/// Sets `switchboard_outbox_replies{source, state}` and
/// `switchboard_outbox_oldest_age_seconds{source}` for each source every
/// `every`, until `shutdown`. Every instance reports the same figures (they
/// are Redis's): aggregate with `max`.
pub async fn report_backlogs(
    store: Store,
    sources: Vec<String>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        for source in &sources {
            match backlog(&store, source).await {
                Ok(b) => {
                    for (state, n) in [
                        ("waiting", b.waiting),
                        ("in_flight", b.in_flight),
                        ("deferred", b.deferred),
                    ] {
                        metrics::gauge!("switchboard_outbox_replies", "source" => source.clone(), "state" => state)
                            .set(n as f64);
                    }
                    metrics::gauge!("switchboard_outbox_oldest_age_seconds", "source" => source.clone())
                        .set(b.oldest_age_ms.unwrap_or(0) as f64 / 1000.0);
                }
                Err(error) => {
                    tracing::debug!(%error, source = %source, "Could not read an outbox's backlog.");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
