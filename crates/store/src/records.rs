//! The records Switchboard keeps of every contact, next to the routing
//! state (all under the routing hash tag `<prefix>:{r}`):
//!
//! - `tl:<contact>` (list): the contact's timeline, one JSON object per
//!   routing event (queued, offered, accepted, declined, transferred,
//!   closed, rated, …), written by the routing scripts' `emit` in the same
//!   step as the change itself, so it can never miss one.
//! - `kpi` (stream, ~26 h): KPI facts, one per contact entering a queue,
//!   answered, abandoned, closed, transferred, rated or reopened, and per
//!   change of an agent's occupancy state; `crates/records` folds them into
//!   rolling windows.
//! - `contacts` (sorted set): every contact by the time it was queued: the
//!   export's index.
//! - `closed` (sorted set): contacts by the time they ended (closed or
//!   abandoned): the retention sweep's work list.
//! - `person:<key>` (sorted set): a person's contacts across channels
//!   (`CustomerIdentity::person_key`) by the time each was queued; a
//!   contact leaves it when the retention sweep deletes it.
//! - `settings` (hash): `fcr_ms`, `retention_s`, written by each instance at
//!   start from its configuration; read by the scripts.
//! - `series` (list): samples of the waiting contacts per queue, newest
//!   first, for the wallboard's chart.

use crate::{RedisConn, Store, StoreError};
use redis::Script;
use std::collections::HashMap;
use switchboard_core::ContactId;

/// Events kept in the routing events stream (as in `assign`).
const EVENTS_MAXLEN: usize = 100_000;
/// Contacts of one person queued in one millisecond that a history read
/// looks past (those after the contact, by id).
const SAME_MS: usize = 16;

/// One KPI fact as stored: its stream id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpiFact {
    pub id: String,
    pub fields: HashMap<String, String>,
}

/// Access to the records.
#[derive(Clone)]
pub struct Records {
    store: Store,
    rate: std::sync::Arc<Script>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl Records {
    pub fn new(store: Store) -> Records {
        Records {
            store,
            rate: std::sync::Arc::new(Script::new(concat!(
                include_str!("lua/route/common.lua"),
                "\n",
                include_str!("lua/route/rate.lua")
            ))),
        }
    }

    fn conn(&self) -> RedisConn {
        self.store.conn()
    }

    /// Writes the settings the routing scripts read: the first-contact
    /// resolution window and the retention.
    pub async fn write_settings(&self, fcr_ms: u64, retention_s: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = self
            .store
            .bounded(
                redis::cmd("HSET")
                    .arg(self.store.keys().route("settings"))
                    .arg("fcr_ms")
                    .arg(fcr_ms)
                    .arg("retention_s")
                    .arg(retention_s)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The customer's rating of a contact (1–5). `ok`, `already_rated` or
    /// `unknown_contact`.
    pub async fn rate(
        &self,
        contact: &ContactId,
        score: u8,
        now: u64,
    ) -> Result<String, StoreError> {
        let k = self.store.keys();
        let mut inv = self.rate.prepare_invoke();
        inv.key(k.route_contact(contact))
            .key(k.route("events"))
            .arg(contact.to_string())
            .arg(score)
            .arg(now)
            .arg(EVENTS_MAXLEN);
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    /// The contact's timeline, oldest first (JSON objects): its first `max`
    /// entries, and whether it has more.
    pub async fn timeline(
        &self,
        contact: &ContactId,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let mut conn = self.conn();
        let mut entries: Vec<String> = self
            .store
            .bounded(
                redis::cmd("LRANGE")
                    .arg(self.store.keys().route(&format!("tl:{contact}")))
                    .arg(0)
                    .arg(max)
                    .query_async(&mut conn),
            )
            .await?;
        let more = entries.len() > max;
        entries.truncate(max);
        Ok((entries, more))
    }

    /// Up to `count` KPI facts after stream id `after` (`-` or `0` from the
    /// start), oldest first.
    pub async fn kpi_facts(&self, after: &str, count: usize) -> Result<Vec<KpiFact>, StoreError> {
        let mut conn = self.conn();
        let start = if after == "-" || after == "0" || after == "0-0" {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let reply: redis::Value = self
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(self.store.keys().route("kpi"))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(crate::events::from_xrange(reply)
            .into_iter()
            .map(|(id, fields)| KpiFact { id, fields })
            .collect())
    }

    /// Contacts queued between `from` and `to` (ms, inclusive), oldest
    /// first, at most `limit`, skipping the first `offset`.
    pub async fn contacts_between(
        &self,
        from: u64,
        to: u64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.conn();
        let flat: Vec<(String, f64)> = self
            .store
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.store.keys().route("contacts"))
                    .arg(from)
                    .arg(to)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(flat.into_iter().map(|(c, s)| (c, s as u64)).collect())
    }

    /// A page of the contacts queued between `from` and `to` (ms,
    /// inclusive), oldest first (ties by id), after `after` (the last one
    /// of the previous page: its id and time), at most `limit`. Unlike an
    /// offset, the position holds while the retention sweep removes
    /// contacts ahead of it.
    pub async fn contacts_page(
        &self,
        from: u64,
        to: u64,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let Some((last, at)) = after else {
            return self.contacts_between(from, to, 0, limit).await;
        };
        let key = self.store.keys().route("contacts");
        let mut conn = self.conn();
        // The rest of the contacts queued in the same millisecond (Redis
        // orders them by id), then those after it.
        let same: Vec<String> = self
            .store
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(at)
                    .arg(at)
                    .query_async(&mut conn),
            )
            .await?;
        let mut page: Vec<(String, u64)> = same
            .into_iter()
            .filter(|id| id.as_str() > last)
            .map(|id| (id, at))
            .take(limit)
            .collect();
        if page.len() < limit && at < to {
            let later: Vec<(String, f64)> = self
                .store
                .bounded(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&key)
                        .arg(format!("({at}"))
                        .arg(to)
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit - page.len())
                        .query_async(&mut conn),
                )
                .await?;
            page.extend(later.into_iter().map(|(c, s)| (c, s as u64)));
        }
        Ok(page)
    }

    /// The person's contacts across channels, newest first, at most
    /// `limit`, with the time each was queued.
    pub async fn person_contacts(
        &self,
        person: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if person.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let flat: Vec<(String, f64)> = self
            .store
            .bounded(
                redis::cmd("ZREVRANGE")
                    .arg(self.store.keys().route(&format!("person:{person}")))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("WITHSCORES")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(flat.into_iter().map(|(c, s)| (c, s as u64)).collect())
    }

    /// The person's contacts queued before `contact` (or in the same
    /// millisecond with a smaller id), newest first, at most `limit`,
    /// without `contact` itself: its history as it stood when it came.
    /// Empty when `contact` is not in the person's index.
    pub async fn person_contacts_before(
        &self,
        person: &str,
        contact: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if person.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.store.keys().route(&format!("person:{person}"));
        let mut conn = self.conn();
        let score: Option<f64> = self
            .store
            .bounded(
                redis::cmd("ZSCORE")
                    .arg(&key)
                    .arg(contact)
                    .query_async(&mut conn),
            )
            .await?;
        let Some(score) = score else {
            return Ok(Vec::new());
        };
        let flat: Vec<(String, f64)> = self
            .store
            .bounded(
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&key)
                    .arg(score)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1 + SAME_MS)
                    .query_async(&mut conn),
            )
            .await?;
        // Contacts queued in the same millisecond are ordered by id, as
        // the index orders them: those after this one are not its history.
        Ok(flat
            .into_iter()
            .filter(|(c, s)| *s < score || c.as_str() < contact)
            .take(limit)
            .map(|(c, s)| (c, s as u64))
            .collect())
    }

    /// Adds a sample of the waiting contacts (a JSON object) to the series,
    /// unless another instance sampled within `every_ms`. Keeps `keep`.
    pub async fn sample(&self, json: &str, every_ms: u64, keep: usize) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let k = self.store.keys();
        let first: Option<String> = self
            .store
            .bounded(
                redis::cmd("SET")
                    .arg(k.route("series:lock"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(every_ms.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        if first.is_none() {
            return Ok(false);
        }
        let _: () = self
            .store
            .bounded(async {
                redis::pipe()
                    .cmd("LPUSH")
                    .arg(k.route("series"))
                    .arg(json)
                    .ignore()
                    .cmd("LTRIM")
                    .arg(k.route("series"))
                    .arg(0)
                    .arg(keep.saturating_sub(1))
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(true)
    }

    /// The series' samples, oldest first.
    pub async fn series(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let mut out: Vec<String> = self
            .store
            .bounded(
                redis::cmd("LRANGE")
                    .arg(self.store.keys().route("series"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        out.reverse();
        Ok(out)
    }

    /// Deletes up to `batch` contacts that ended (closed or abandoned)
    /// before `before` (ms): their routing record, timeline, decisions, the
    /// contact and its conversation (hash, log, delivery and status), and
    /// their places in the indexes. Open contacts are never in the list.
    /// Returns how many were deleted. Idempotent; several instances may
    /// sweep at once.
    pub async fn sweep(&self, before: u64, batch: usize) -> Result<usize, StoreError> {
        let k = self.store.keys();
        let mut conn = self.conn();
        let old: Vec<String> = self
            .store
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.route("closed"))
                    .arg("-inf")
                    .arg(before)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(batch)
                    .query_async(&mut conn),
            )
            .await?;
        let mut deleted = 0;
        for id in old {
            let Ok(contact) = id.parse::<ContactId>() else {
                self.forget(&id).await?;
                continue;
            };
            let person: Option<String> = self
                .store
                .bounded(
                    redis::cmd("HGET")
                        .arg(k.route_contact(&contact))
                        .arg("person")
                        .query_async(&mut conn),
                )
                .await?;
            // Another instance's sweep may be deleting the same contacts:
            // each is counted by the sweep that takes it out of the index.
            let conversation: Option<String> = self
                .store
                .bounded(
                    redis::cmd("HGET")
                        .arg(k.contact(&contact))
                        .arg("conversation")
                        .query_async(&mut conn),
                )
                .await?;
            let mut partition = vec![k.contact(&contact)];
            if let Some(conv) = conversation.and_then(|c| c.parse().ok()) {
                partition.push(k.conversation(&conv));
                partition.push(k.conversation_log(&conv));
                partition.push(k.conversation_delivery(&conv));
                partition.push(k.conversation_status(&conv));
            }
            // Each delete touches one hash tag: the partition's, then
            // routing's. UNLINK: a long conversation's log (thousands of
            // entries) is freed by Redis's background thread rather than
            // stalling every client while DEL frees it.
            let _: i64 = self
                .store
                .bounded(redis::cmd("UNLINK").arg(&partition).query_async(&mut conn))
                .await?;
            // Out of its person's index in the same step as the record
            // that names the person is deleted (all under `{r}`): a retry
            // after a failure between the two would find no person.
            let mut pipe = redis::pipe();
            pipe.atomic();
            if let Some(person) = person.filter(|p| !p.is_empty()) {
                pipe.cmd("ZREM")
                    .arg(k.route(&format!("person:{person}")))
                    .arg(&id)
                    .ignore();
            }
            pipe.cmd("DEL")
                .arg(k.route_contact(&contact))
                .arg(k.route(&format!("tl:{contact}")))
                .arg(k.route_decisions(&contact))
                .ignore();
            let _: () = self.store.bounded(pipe.query_async(&mut conn)).await?;
            if self.forget(&id).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Takes a contact out of the records' indexes: whether it was in the
    /// closed index still (false: another sweep took it first).
    async fn forget(&self, id: &str) -> Result<bool, StoreError> {
        let k = self.store.keys();
        let mut conn = self.conn();
        let (closed, _): (i64, i64) = self
            .store
            .bounded(
                redis::pipe()
                    .cmd("ZREM")
                    .arg(k.route("closed"))
                    .arg(id)
                    .cmd("ZREM")
                    .arg(k.route("contacts"))
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(closed == 1)
    }
}
