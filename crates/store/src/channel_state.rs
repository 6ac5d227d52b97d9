//! An adapter's own small durable state: checkpoints (an IMAP mailbox's
//! UIDVALIDITY and last UID) and leases (one instance fetches a mailbox at
//! a time). Keys live under the adapter's own hash tag `{c:<source>}`.

use crate::{Store, StoreError};
use futures::future::BoxFuture;
use redis::Script;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{ChannelState, StateError};

/// The state of one adapter (`source`), as seen by one instance (`holder`).
#[derive(Clone)]
pub struct RedisChannelState {
    store: Store,
    source: String,
    holder: String,
    lease: Arc<Script>,
}

impl std::fmt::Debug for RedisChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannelState")
            .field("source", &self.source)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError::Unavailable(e.to_string())
    }
}

impl RedisChannelState {
    /// The state of adapter `source`; leases are taken in the name of
    /// `holder` (unique per instance).
    pub fn new(store: Store, source: &str, holder: &str) -> Self {
        RedisChannelState {
            store,
            source: source.to_owned(),
            holder: holder.to_owned(),
            // The same take/renew/release script as the outbox's holder.
            lease: Arc::new(Script::new(include_str!("lua/outbox_hold.lua"))),
        }
    }

    fn key(&self, key: &str) -> String {
        self.store.keys().channel_state(&self.source, key)
    }

    /// `SET key value`, expiring after `ttl` when given.
    async fn write(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StateError> {
        let mut conn = self.store.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        let _: () = self.store.bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn lease(&self, key: &str, action: &str, lease: Duration) -> Result<bool, StateError> {
        let mut conn = self.store.conn();
        let held: i64 = self
            .store
            .bounded(
                self.lease
                    .key(self.key(&format!("lease:{key}")))
                    .arg(action)
                    .arg(&self.holder)
                    .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }
}

impl ChannelState for RedisChannelState {
    fn set_for<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.write(key, value, Some(ttl)))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StateError>> {
        Box::pin(async move {
            let mut conn = self.store.conn();
            let value: Option<String> = self
                .store
                .bounded(redis::cmd("GET").arg(self.key(key)).query_async(&mut conn))
                .await?;
            Ok(value)
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.write(key, value, None))
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.store.conn();
            let cmd = redis::cmd("DEL").arg(self.key(key)).to_owned();
            let _: i64 = self.store.bounded(cmd.query_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn hold<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(self.lease(key, "hold", lease))
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { self.lease(key, "release", Duration::ZERO).await.map(|_| ()) })
    }

    fn put_entry<'a>(
        &'a self,
        map: &'a str,
        field: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.store.conn();
            let cmd = redis::cmd("HSET")
                .arg(self.key(map))
                .arg(field)
                .arg(value)
                .to_owned();
            let _: i64 = self.store.bounded(cmd.query_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn remove_entry<'a>(
        &'a self,
        map: &'a str,
        field: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut conn = self.store.conn();
            let cmd = redis::cmd("HDEL").arg(self.key(map)).arg(field).to_owned();
            let _: i64 = self.store.bounded(cmd.query_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn entries<'a>(
        &'a self,
        map: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StateError>> {
        Box::pin(async move {
            let mut conn = self.store.conn();
            let cmd = redis::cmd("HGETALL").arg(self.key(map)).to_owned();
            let entries: Vec<(String, String)> =
                self.store.bounded(cmd.query_async(&mut conn)).await?;
            Ok(entries)
        })
    }
}
