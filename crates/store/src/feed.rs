//! The event feed of outbound webhooks (`docs/webhooks.md`).
//!
//! One stream per partition, `<prefix>:{pN}:feed`, holds every webhook
//! event of the partition's contacts in causal order:
//!
//! - `contact.created` and the customers' `message.created` are written by
//!   the intake script itself, atomically with the contact and message;
//! - agents' and automatic replies' `message.created` by
//!   [`crate::Conversations::append`], atomically with the log entry;
//! - `contact.assigned` and `contact.closed` happen in the routing state
//!   (another hash tag): routing's scripts append them to
//!   `<prefix>:{r}:hooks` while `<prefix>:{r}:hooks:on` exists, and the
//!   *mover* ([`EventFeed::move_routing_events`]) copies each into its
//!   contact's feed exactly once, in the order of that stream.
//!
//! Webhook deliveries read each feed through a consumer group per webhook
//! (`hook:<name>`), one instance per (webhook, partition) at a time (a
//! lease). The feed is trimmed by age ([`EventFeed::trim`]), never by
//! delivery: several webhooks read the same entries.

use crate::{RedisConn, Store, StoreError};
use redis::Script;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamRangeReply, StreamReadOptions,
    StreamReadReply,
};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;
use switchboard_core::{ContactId, ConversationId, Partition, Timestamp};

/// How long the mark "this routing event was copied" is kept: far longer
/// than an event waits in `{r}:hooks` while any mover runs.
pub const SEEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Routing events looked at by one barrier (an agent's reply, see
/// [`EventFeed::move_routing_events_of`]).
const BARRIER_SCAN: usize = 1000;

static MOVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/feed_move.lua")));
static APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/feed_append.lua")));
/// The take/renew/release lease script shared with the outboxes.
static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/outbox_hold.lua")));
static COUNT_AFTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/feed_count_after.lua")));

/// The most entries counted past a group's last delivered one when Redis
/// cannot tell its lag ([`EventFeed::backlog`]): the count runs in Redis,
/// on the node that also carries routing.
pub const BACKLOG_COUNT_MAX: u64 = 1000;

/// One entry of a partition's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub partition: Partition,
    /// The entry's id in the feed stream (`<ms>-<n>`).
    pub entry_id: String,
    /// `type`, `id` (the event id), `contact`, `conversation`, `at`, and
    /// per type `seq`, `dir`, `agent`, `channel`, `disposition`, `outcome`.
    pub fields: HashMap<String, String>,
}

impl FeedEntry {
    /// A field, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// When the entry was written (ms), from its stream id.
    pub fn written_at(&self) -> u64 {
        stream_id_ms(&self.entry_id)
    }

    fn from_stream(partition: Partition, entry: StreamId) -> FeedEntry {
        FeedEntry {
            partition,
            fields: strings(&entry.map),
            entry_id: entry.id,
        }
    }
}

/// A pass of the mover that failed: entries before `entry` were moved.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct MoveFailed {
    /// The routing event whose copy failed (none: reading or deleting the
    /// stream failed).
    pub entry: Option<String>,
    #[source]
    pub error: StoreError,
}

impl From<StoreError> for MoveFailed {
    fn from(error: StoreError) -> Self {
        MoveFailed { entry: None, error }
    }
}

/// What a pass of the mover did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Routing events copied into a feed by this pass.
    pub copied: usize,
    /// Routing events found copied already (by a mover that died before
    /// deleting them, or by an agent's reply).
    pub already: usize,
    /// Routing events that are not webhook events or name no valid
    /// contact: deleted without a copy.
    pub ignored: usize,
}

/// What [`EventFeed::next`] hands a delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Entries to deliver, in feed order.
    pub entries: Vec<FeedEntry>,
    /// Entries that were pending (taken by an earlier holder, not
    /// acknowledged) but are gone from the feed: trimmed before delivery.
    pub gone: Vec<String>,
}

/// The feeds and the routing events' way into them.
#[derive(Debug, Clone)]
pub struct EventFeed {
    store: Store,
}

impl EventFeed {
    pub fn new(store: Store) -> EventFeed {
        EventFeed { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn hooks(&self) -> String {
        self.store.keys().route("hooks")
    }

    /// Asks routing's scripts to copy webhook events to `{r}:hooks` for
    /// `ttl` (renewed by every instance with webhooks while it runs; when
    /// none is left, the copies stop by themselves once it lapses).
    pub async fn announce(&self, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.store.conn();
        let _: () = self
            .store
            .bounded(
                redis::cmd("SET")
                    .arg(self.store.keys().route("hooks:on"))
                    .arg("1")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn lease(
        &self,
        key: String,
        action: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.conn();
        let held: i64 = self
            .store
            .bounded(
                HOLD.key(key)
                    .arg(action)
                    .arg(holder)
                    .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }

    /// Takes or renews the right to move routing events (one instance at a
    /// time does the work; a second one at the same time would only find
    /// everything copied).
    pub async fn hold_mover(&self, holder: &str, lease: Duration) -> Result<bool, StoreError> {
        self.lease(
            self.store.keys().route("hooks:mover"),
            "hold",
            holder,
            lease,
        )
        .await
    }

    pub async fn release_mover(&self, holder: &str) -> Result<(), StoreError> {
        self.lease(
            self.store.keys().route("hooks:mover"),
            "release",
            holder,
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }

    /// Copies up to `count` routing events from the head of `{r}:hooks`
    /// into their contacts' feeds, in the stream's order, and deletes them
    /// from `{r}:hooks` once copied.
    ///
    /// Why in order from the head and not through a consumer group: an
    /// entry is deleted only after it was copied, so every entry older than
    /// one being copied is either still in the stream (and copied first by
    /// this pass) or copied already. Hence a contact's routing events reach
    /// its feed in the order they happened, whichever instance moves them
    /// and however often; a consumer group would hand a later entry to one
    /// mover while an earlier one waits with another.
    pub async fn move_routing_events(&self, count: usize) -> Result<Moved, MoveFailed> {
        let mut conn = self.store.conn();
        let hooks = self.hooks();
        let reply: StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(&hooks)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        let mut moved = Moved::default();
        let mut done = Vec::new();
        let mut failure = None;
        for entry in reply.ids {
            match self.copy(&entry).await {
                Ok(Some(true)) => moved.copied += 1,
                Ok(Some(false)) => moved.already += 1,
                Ok(None) => moved.ignored += 1,
                Err(error) => {
                    failure = Some(MoveFailed {
                        entry: Some(entry.id),
                        error,
                    });
                    break;
                }
            }
            done.push(entry.id);
        }
        if !done.is_empty() {
            let _: i64 = self
                .store
                .bounded(
                    redis::cmd("XDEL")
                        .arg(&hooks)
                        .arg(&done)
                        .query_async(&mut conn),
                )
                .await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// Deletes one routing event from `{r}:hooks` without copying it: one
    /// whose copy Redis keeps refusing over the data, which would otherwise
    /// hold up every later one.
    pub async fn drop_routing_event(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.store.conn();
        let _: i64 = self
            .store
            .bounded(
                redis::cmd("XDEL")
                    .arg(self.hooks())
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Copies the routing events of `contact` still waiting in `{r}:hooks`
    /// into its feed, in order (without deleting them; the mover does).
    /// Called before an event about the contact is written straight into
    /// the feed (an agent's reply), so that the reply follows the
    /// assignment that allowed it even while the mover lags.
    pub async fn move_routing_events_of(&self, contact: &ContactId) -> Result<Moved, StoreError> {
        let mut conn = self.store.conn();
        let head: StreamRangeReply = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(self.hooks())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(BARRIER_SCAN)
                    .query_async(&mut conn),
            )
            .await?;
        let mut entries = head.ids;
        if entries.len() == BARRIER_SCAN {
            // More wait than one look covers (the mover lags, or its
            // holder died): the contact's latest events, the assignment
            // that allows a reply among them, are at the end.
            let tail: StreamRangeReply = self
                .store
                .bounded(
                    redis::cmd("XREVRANGE")
                        .arg(self.hooks())
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(BARRIER_SCAN)
                        .query_async(&mut conn),
                )
                .await?;
            let last = entries.last().map(|e| stream_id_key(&e.id));
            let mut newer: Vec<StreamId> = tail
                .ids
                .into_iter()
                .filter(|e| last.is_none_or(|l| stream_id_key(&e.id) > l))
                .collect();
            newer.reverse();
            entries.extend(newer);
        }
        let wanted = contact.to_string();
        let mut moved = Moved::default();
        for entry in entries {
            if field(&entry, "contact").as_deref() != Some(wanted.as_str()) {
                continue;
            }
            match self.copy(&entry).await? {
                Some(true) => moved.copied += 1,
                Some(false) => moved.already += 1,
                None => moved.ignored += 1,
            }
        }
        Ok(moved)
    }

    /// Copies one routing event into its contact's feed. `Some(true)`:
    /// copied now; `Some(false)`: copied before; `None`: not a webhook
    /// event (or no valid contact).
    async fn copy(&self, entry: &StreamId) -> Result<Option<bool>, StoreError> {
        let (kind, outcome, short) = match field(entry, "type").as_deref() {
            Some("accepted" | "assigned") => ("contact.assigned", "", "assigned"),
            Some("closed") => ("contact.closed", "closed", "closed"),
            // Ended by the business's hours, not by the customer: closed
            // (its disposition says `after_hours`), as the KPIs count it.
            Some("abandoned") if field(entry, "by").as_deref() == Some("policy") => {
                ("contact.closed", "closed", "closed")
            }
            Some("abandoned") => ("contact.closed", "abandoned", "closed"),
            _ => return Ok(None),
        };
        let Some(contact) = field(entry, "contact").and_then(|c| c.parse::<ContactId>().ok())
        else {
            return Ok(None);
        };
        if contact.partition().0 >= self.store.keys().partitions() {
            return Ok(None);
        }
        let n = field(entry, "n")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| entry.id.clone());
        let at = field(entry, "at")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or_else(|| stream_id_ms(&entry.id));
        let keys = self.store.keys();
        let p = contact.partition();
        let id = format!("{contact}:{short}:{n}");
        let mut invocation = MOVE.prepare_invoke();
        invocation
            .key(keys.feed_seen(p, &id))
            .key(keys.feed(p))
            .key(keys.contact(&contact))
            .arg(kind)
            .arg(&id)
            .arg(contact.to_string())
            .arg(at)
            .arg(field(entry, "agent").unwrap_or_default())
            .arg(field(entry, "channel").unwrap_or_default())
            .arg(field(entry, "disposition").unwrap_or_default())
            .arg(outcome)
            .arg(SEEN_TTL.as_secs());
        let mut conn = self.store.conn();
        let copied: i64 = self
            .store
            .bounded(invocation.invoke_async(&mut conn))
            .await?;
        Ok(Some(copied == 1))
    }

    /// Waits up to `block` for a routing event in `{r}:hooks`, on `conn`
    /// (a dedicated connection: the read blocks). True when one is there.
    pub async fn wait_routing_events(
        &self,
        conn: &mut RedisConn,
        block: Duration,
    ) -> Result<bool, StoreError> {
        let options = StreamReadOptions::default()
            .count(1)
            .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> = tokio::time::timeout(
            block + self.store.config().response_timeout,
            redis::AsyncCommands::xread_options(conn, &[self.hooks()], &["0-0"], &options),
        )
        .await
        .map_err(|_| StoreError::Unavailable("XREAD timed out".into()))??;
        Ok(reply.is_some_and(|r| r.keys.iter().any(|k| !k.ids.is_empty())))
    }

    /// Drops feed entries older than `retention` from every partition
    /// (approximately: whole stream nodes at a time).
    pub async fn trim(&self, retention: Duration) -> Result<(), StoreError> {
        let now = Timestamp::now().as_millis();
        let keep = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        let min = now.saturating_sub(keep);
        let mut conn = self.store.conn();
        for p in self.store.keys().all_partitions() {
            let _: i64 = self
                .store
                .bounded(
                    redis::cmd("XTRIM")
                        .arg(self.store.keys().feed(p))
                        .arg("MINID")
                        .arg("~")
                        .arg(min)
                        .query_async(&mut conn),
                )
                .await?;
        }
        Ok(())
    }

    /// Creates `group` on the partition's feed, from the entries written
    /// after `since_ms` (a webhook added later gets what the feed holds of
    /// its own `max_age_hours`, not older events it would only drop).
    pub async fn ensure_group(
        &self,
        p: Partition,
        group: &str,
        since_ms: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.conn();
        let result: Result<(), StoreError> = self
            .store
            .bounded(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(self.store.keys().feed(p))
                    .arg(group)
                    .arg(format!("{since_ms}-0"))
                    .arg("MKSTREAM")
                    .query_async(&mut conn),
            )
            .await;
        match result {
            Err(StoreError::Protocol(m)) if m.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Takes or renews the right to deliver webhook `name` from the
    /// partition's feed.
    pub async fn hold(
        &self,
        p: Partition,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.lease(
            self.store.keys().feed_holder(p, name),
            "hold",
            holder,
            lease,
        )
        .await
    }

    pub async fn release(&self, p: Partition, name: &str, holder: &str) -> Result<(), StoreError> {
        self.lease(
            self.store.keys().feed_holder(p, name),
            "release",
            holder,
            Duration::ZERO,
        )
        .await
        .map(|_| ())
    }

    /// The next entries for `group`, oldest first: entries an earlier
    /// holder took and did not acknowledge come first (claimed for
    /// `consumer`), then new ones. Call it only while holding the lease.
    pub async fn next(
        &self,
        p: Partition,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Batch, StoreError> {
        let key = self.store.keys().feed(p);
        let mut conn = self.store.conn();
        let claimed: StreamAutoClaimReply = self
            .store
            .bounded(
                redis::cmd("XAUTOCLAIM")
                    .arg(&key)
                    .arg(group)
                    .arg(consumer)
                    .arg(0)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        if !claimed.claimed.is_empty() || !claimed.deleted_ids.is_empty() {
            return Ok(Batch {
                entries: claimed
                    .claimed
                    .into_iter()
                    .map(|e| FeedEntry::from_stream(p, e))
                    .collect(),
                gone: claimed.deleted_ids,
            });
        }
        let options = StreamReadOptions::default()
            .group(group, consumer)
            .count(count.max(1));
        let reply: Option<StreamReadReply> = self
            .store
            .bounded(redis::AsyncCommands::xread_options(
                &mut conn,
                &[&key],
                &[">"],
                &options,
            ))
            .await?;
        Ok(Batch {
            entries: reply
                .map(|r| r.keys)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|e| FeedEntry::from_stream(p, e))
                .collect(),
            gone: Vec::new(),
        })
    }

    /// Deletes `group`'s dead consumers (other instances' from before
    /// their restarts) when `pruner` says it is time ([`crate::groups`]).
    pub async fn prune(&self, pruner: &crate::Pruner, p: Partition, group: &str, keep: &str) {
        pruner
            .maybe(
                &self.store,
                [self.store.keys().feed(p)],
                group,
                keep,
                "feed",
            )
            .await;
    }

    /// Settles an entry for `group`.
    pub async fn ack(&self, p: Partition, group: &str, entry_id: &str) -> Result<(), StoreError> {
        let mut conn = self.store.conn();
        let _: i64 = self
            .store
            .bounded(
                redis::cmd("XACK")
                    .arg(self.store.keys().feed(p))
                    .arg(group)
                    .arg(entry_id)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Entries of the partition's feed not yet settled for `group`
    /// (pending + never read); `None` when the group does not exist.
    ///
    /// Where Redis gives no `lag` (Redis 6.2; 7.x for a group created
    /// mid-stream, as a webhook's is, until it has read the last entry:
    /// never, while its receiver is down), the entries after the group's
    /// last delivered one are counted, up to [`BACKLOG_COUNT_MAX`]. The
    /// gauge stood at 0 there while events piled up.
    pub async fn backlog(&self, p: Partition, group: &str) -> Result<Option<u64>, StoreError> {
        let mut conn = self.store.conn();
        let feed = self.store.keys().feed(p);
        let reply: StreamInfoGroupsReply = self
            .store
            .bounded(
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&feed)
                    .query_async(&mut conn),
            )
            .await?;
        let Some(g) = reply.groups.into_iter().find(|g| g.name == group) else {
            return Ok(None);
        };
        if let Some(lag) = g.lag {
            return Ok(Some((lag + g.pending) as u64));
        }
        let mut invocation = COUNT_AFTER.prepare_invoke();
        invocation
            .key(&feed)
            .arg(&g.last_delivered_id)
            .arg(BACKLOG_COUNT_MAX);
        let after: u64 = self
            .store
            .bounded(invocation.invoke_async(&mut conn))
            .await?;
        Ok(Some(g.pending as u64 + after))
    }
}

/// Appends a log entry and its `message.created` feed entry in one step
/// (see [`crate::Conversations::append`]).
pub(crate) async fn append_with_event(
    store: &Store,
    conversation: &ConversationId,
    contact: &str,
    fields: (&str, &str, u64, &str),
) -> Result<String, StoreError> {
    let (id, dir, at, msg) = fields;
    let keys = store.keys();
    let mut invocation = APPEND.prepare_invoke();
    invocation
        .key(keys.conversation_log(conversation))
        .key(keys.feed(conversation.partition()))
        .arg(id)
        .arg(dir)
        .arg(at)
        .arg(msg)
        .arg(contact)
        .arg(conversation.to_string());
    let mut conn = store.conn();
    store.bounded(invocation.invoke_async(&mut conn)).await
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .get(name)
        .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
}

fn strings(map: &HashMap<String, redis::Value>) -> HashMap<String, String> {
    map.iter()
        .filter_map(|(k, v)| {
            redis::from_redis_value::<String>(v.clone())
                .ok()
                .map(|v| (k.clone(), v))
        })
        .collect()
}

/// The milliseconds of a stream id (`<ms>-<n>`); 0 when malformed.
pub fn stream_id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// A stream id `<ms>-<seq>` as numbers, to order ids (0-0 for a bad one).
fn stream_id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_give_their_time() {
        assert_eq!(stream_id_ms("1712345678901-3"), 1_712_345_678_901);
        assert_eq!(stream_id_ms("garbage"), 0);
        assert_eq!(stream_id_ms(""), 0);
    }
}
