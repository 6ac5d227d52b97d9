//! The routing streams: contacts created by the intake, waiting to be taken
//! by a router.
//!
//! One stream per partition, read through the consumer group `router`. An
//! entry read but not yet moved to the waiting queue stays *pending* under
//! its reader; if that reader dies, [`RoutingStreams::reclaim`] hands it to
//! another after `min_idle`. Handing an entry to the routing state is
//! idempotent, so an entry handled twice (the first reader was only slow)
//! changes nothing the second time.

use crate::RedisConn;
use crate::{Store, StoreError};
use redis::Script;
use redis::streams::{StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use std::time::Duration;
use switchboard_core::{ContactId, Partition, Timestamp};

/// The consumer group every router instance reads through.
pub const GROUP: &str = "router";

/// How often an idle reader polls the streams on a Redis Cluster.
pub const CLUSTER_POLL: Duration = Duration::from_millis(10);

/// A contact taken from a routing stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedContact {
    pub partition: Partition,
    pub entry_id: String,
    pub contact_id: ContactId,
    /// When the intake created it (ms).
    pub created_at: Timestamp,
}

/// A reader of the routing streams, with a connection of its own because it
/// blocks.
pub struct RoutingStreams {
    store: Store,
    conn: RedisConn,
    consumer: String,
    block: Duration,
    routed: Script,
    /// Per partition, where the next `XAUTOCLAIM` goes on in the pending
    /// list: each call looks at about 10 × COUNT entries, so a scan that
    /// began at the start every time never got past entries that keep
    /// failing to a crashed instance's entries behind them.
    reclaim_from: std::collections::HashMap<Partition, String>,
    /// Deletes the group's dead consumers now and then (on reclaims).
    pruner: crate::Pruner,
    /// A partition failed while others gave entries: its group may be gone
    /// (a node restarted empty), so the groups are made sure of before the
    /// next read or reclaim (a whole pass failing has the router do it).
    regroup: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RoutingStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingStreams")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl RoutingStreams {
    /// A reader named `consumer` (unique per instance) that blocks at most
    /// `block` per read.
    pub fn new(store: Store, consumer: String, block: Duration) -> Result<Self, StoreError> {
        let conn = store.dedicated_connection(block)?;
        Ok(RoutingStreams {
            store,
            conn,
            consumer,
            block,
            routed: Script::new(include_str!("lua/routed.lua")),
            reclaim_from: std::collections::HashMap::new(),
            pruner: crate::Pruner::default(),
            regroup: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Creates the consumer group on every partition's stream (from the
    /// start, so entries written before any router ran are read too).
    pub async fn ensure_groups(&mut self) -> Result<(), StoreError> {
        for p in self.store.keys().all_partitions() {
            let key = self.store.keys().routing(p);
            let result: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.conn)
                .await;
            match result {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// [`Self::ensure_groups`] when a partition failed last time.
    async fn regroup_if_asked(&mut self) -> Result<(), StoreError> {
        if self.regroup.load(std::sync::atomic::Ordering::Relaxed) {
            self.ensure_groups().await?;
            self.regroup
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// New entries for this consumer, waiting at most the block time.
    pub async fn read(&mut self, count: usize) -> Result<Vec<QueuedContact>, StoreError> {
        self.regroup_if_asked().await?;
        if self.conn.is_cluster() {
            return self.read_each(count).await;
        }
        let keys: Vec<String> = self
            .store
            .keys()
            .all_partitions()
            .map(|p| self.store.keys().routing(p))
            .collect();
        let ids = vec![">"; keys.len()];
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(count)
            .block(usize::try_from(self.block.as_millis()).unwrap_or(usize::MAX));
        let reply: Option<StreamReadReply> = tokio::time::timeout(
            self.block + self.store.config().response_timeout,
            redis::AsyncCommands::xread_options(&mut self.conn, &keys, &ids, &options),
        )
        .await
        .map_err(|_| StoreError::Unavailable("XREADGROUP timed out".into()))??;
        let (good, unreadable) = self.entries(reply);
        self.set_aside(unreadable).await;
        Ok(good)
    }

    /// On a cluster the partitions' streams live on different nodes and one
    /// XREADGROUP cannot name them all: each is read without blocking, and
    /// when all are empty the reader polls again every [`CLUSTER_POLL`]
    /// until the block time is over.
    async fn read_each(&mut self, count: usize) -> Result<Vec<QueuedContact>, StoreError> {
        let deadline = tokio::time::Instant::now() + self.block;
        let this = &*self;
        loop {
            let reads = this.store.keys().all_partitions().map(|p| {
                let key = this.store.keys().routing(p);
                let mut conn = this.store.conn();
                let options = StreamReadOptions::default()
                    .group(GROUP, &this.consumer)
                    .count(count);
                async move {
                    let reply: Option<StreamReadReply> = this
                        .store
                        .bounded(redis::AsyncCommands::xread_options(
                            &mut conn,
                            &[&key],
                            &[">"],
                            &options,
                        ))
                        .await?;
                    Ok::<_, StoreError>(this.entries(reply))
                }
            });
            let mut out = Vec::new();
            let mut unreadable = Vec::new();
            let mut failed = None;
            for result in futures::future::join_all(reads).await {
                match result {
                    Ok((good, bad)) => {
                        out.extend(good);
                        unreadable.extend(bad);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            this.set_aside(unreadable).await;
            // What the other partitions gave is pending under this
            // consumer now: handed on even when one partition failed (it
            // would otherwise wait for a reclaim).
            if let Some(error) = failed {
                if out.is_empty() {
                    return Err(error);
                }
                partition_failed("read", &error);
                this.regroup
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(CLUSTER_POLL).await;
        }
    }

    /// The contacts of a read, and the entries that name none (never
    /// written by Switchboard) with their partitions.
    fn entries(
        &self,
        reply: Option<StreamReadReply>,
    ) -> (Vec<QueuedContact>, Vec<(Partition, String)>) {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(p) = self.partition_of_key(&stream.key) else {
                continue;
            };
            for entry in stream.ids {
                match self.entry(p, &entry.id, &entry.map) {
                    Ok(c) => out.push(c),
                    Err(_) => unreadable.push((p, entry.id)),
                }
            }
        }
        (out, unreadable)
    }

    /// Entries that name no contact are counted, logged and acknowledged,
    /// so that they neither fail the contacts read with them nor come back
    /// on every reclaim; they stay in the stream for inspection. A failure
    /// to acknowledge is only logged: the entry comes back and is set aside
    /// again.
    async fn set_aside(&self, unreadable: Vec<(Partition, String)>) {
        for (p, id) in unreadable {
            metrics::counter!("switchboard_store_unreadable_entries_total").increment(1);
            let key = self.store.keys().routing(p);
            tracing::warn!(stream = %key, entry = %id, "A routing-stream entry names no contact; acknowledged and left in the stream.");
            let mut conn = self.store.conn();
            let acked: Result<i64, StoreError> = self
                .store
                .bounded(
                    redis::cmd("XACK")
                        .arg(&key)
                        .arg(GROUP)
                        .arg(&id)
                        .query_async(&mut conn),
                )
                .await;
            if let Err(error) = acked {
                tracing::warn!(stream = %key, entry = %id, %error, "Could not acknowledge an unreadable routing-stream entry.");
            }
        }
    }

    /// Entries pending for longer than `min_idle` under any consumer (one
    /// that crashed or hangs), now claimed by this one.
    pub async fn reclaim(
        &mut self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<QueuedContact>, StoreError> {
        self.regroup_if_asked().await?;
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        let mut failed = None;
        for p in self.store.keys().all_partitions() {
            let key = self.store.keys().routing(p);
            let from = self.reclaim_from.get(&p).map_or("0-0", String::as_str);
            let claimed: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
                .arg(from)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.conn)
                .await;
            // One partition failing does not lose what the others claimed
            // (pending under this consumer now, they would wait for the
            // next reclaim), nor move its own cursor.
            let reply = match claimed {
                Ok(reply) => reply,
                Err(e) => {
                    failed = Some(StoreError::from(e));
                    continue;
                }
            };
            // "0-0" once the scan reached the end: the next one starts over.
            self.reclaim_from.insert(p, reply.next_stream_id.clone());
            for entry in reply.claimed {
                match self.entry(p, &entry.id, &entry.map) {
                    Ok(c) => out.push(c),
                    Err(_) => unreadable.push((p, entry.id)),
                }
            }
        }
        self.set_aside(unreadable).await;
        let streams = self
            .store
            .keys()
            .all_partitions()
            .map(|p| self.store.keys().routing(p));
        if let Some(error) = failed {
            if out.is_empty() {
                return Err(error);
            }
            partition_failed("reclaim", &error);
            self.regroup
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.pruner
            .maybe(&self.store, streams, GROUP, &self.consumer, "routing")
            .await;
        Ok(out)
    }

    /// The fields of a contact as the intake stored them (channel, source,
    /// address, subject, language, attributes, preview, …).
    pub async fn contact_fields(
        &self,
        contact: &ContactId,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        contact_fields(&self.store, contact).await
    }

    /// Marks a taken entry as handed to the routing state and removes it
    /// from the stream. True when marked by this call.
    pub async fn mark_routed(&self, entry: &QueuedContact) -> Result<bool, StoreError> {
        Ok(self.mark_routed_all(&[entry]).await? == 1)
    }

    /// Marks taken entries as handed to the routing state and removes them
    /// from their streams: one script call per partition, the partitions
    /// concurrently. Returns how many were marked by this call.
    pub async fn mark_routed_all(&self, entries: &[&QueuedContact]) -> Result<usize, StoreError> {
        let keys = self.store.keys();
        let now = Timestamp::now().as_millis();
        let mut by_partition: std::collections::BTreeMap<Partition, Vec<&QueuedContact>> =
            std::collections::BTreeMap::new();
        for entry in entries {
            by_partition.entry(entry.partition).or_default().push(entry);
        }
        let calls = by_partition.into_iter().map(|(partition, entries)| {
            let mut invocation = self.routed.prepare_invoke();
            invocation.key(keys.routing(partition));
            for entry in &entries {
                invocation.key(keys.contact(&entry.contact_id));
            }
            invocation.arg(GROUP).arg(now);
            for entry in &entries {
                invocation.arg(&entry.entry_id);
            }
            async move {
                let mut conn = self.store.conn();
                let moved: i64 = self
                    .store
                    .bounded(invocation.invoke_async(&mut conn))
                    .await?;
                Ok::<usize, StoreError>(usize::try_from(moved).unwrap_or(0))
            }
        });
        let mut moved = 0;
        for result in futures::future::join_all(calls).await {
            moved += result?;
        }
        Ok(moved)
    }

    fn partition_of_key(&self, key: &str) -> Option<Partition> {
        self.store
            .keys()
            .all_partitions()
            .find(|p| self.store.keys().routing(*p) == key)
    }

    fn entry(
        &self,
        partition: Partition,
        id: &str,
        map: &std::collections::HashMap<String, redis::Value>,
    ) -> Result<QueuedContact, StoreError> {
        let field = |name: &str| -> Result<String, StoreError> {
            map.get(name)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .ok_or_else(|| StoreError::Protocol(format!("routing entry {id} has no {name}")))
        };
        let contact_id = field("contact")?
            .parse()
            .map_err(|e| StoreError::Protocol(format!("routing entry {id}: {e}")))?;
        let created_at = Timestamp(field("at")?.parse().unwrap_or(0));
        Ok(QueuedContact {
            partition,
            entry_id: id.to_owned(),
            contact_id,
            created_at,
        })
    }
}

/// A stored contact's fields (channel, customer, address, language,
/// attributes, …); empty when it is unknown.
pub(crate) async fn contact_fields(
    store: &Store,
    contact: &ContactId,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let key = store.keys().contact(contact);
    let mut conn = store.conn();
    store
        .bounded(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
        .await
}

/// A partition's read or reclaim failed while others gave entries: those
/// are handed on, the failure is counted and logged (the next pass tries
/// the partition again).
fn partition_failed(what: &'static str, error: &StoreError) {
    metrics::counter!("switchboard_store_routing_partition_errors_total", "op" => what)
        .increment(1);
    tracing::warn!(%error, op = what, "A routing partition could not be read; the others' entries are handed on.");
}
