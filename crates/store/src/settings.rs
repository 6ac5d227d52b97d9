//! Redis settings that put Switchboard's guarantees or memory at risk.
//!
//! "Nothing acknowledged is lost" holds only if Redis keeps what it
//! acknowledged: the append-only file on, and no eviction. Redis's defaults
//! have the AOF off, and many packaged or hosted configurations evict. The
//! daemon reads the settings once Redis answers and logs a warning per
//! risky one (`deploy/redis-switchboard.conf` explains each). It never
//! refuses to start over them: a test bench may run without an AOF on
//! purpose.

use crate::{Store, StoreError};
use std::collections::HashMap;

/// What a setting puts at risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// Acknowledged contacts can be lost.
    Loss,
    /// Memory: more per contact than needed.
    Memory,
    /// Latency: Redis stalls more often than needed.
    Latency,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Loss => "loss",
            Risk::Memory => "memory",
            Risk::Latency => "latency",
        }
    }
}

/// One Redis setting that differs, in a way that matters, from what
/// `deploy/redis-switchboard.conf` recommends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingAdvice {
    /// The setting's name, as in redis.conf.
    pub name: &'static str,
    /// Its current value.
    pub value: String,
    /// The recommended value.
    pub recommended: &'static str,
    pub risk: Risk,
    /// Why it matters, in a sentence.
    pub why: &'static str,
}

/// The settings read, in order.
const NAMES: [&str; 5] = [
    "appendonly",
    "appendfsync",
    "maxmemory-policy",
    "stream-node-max-bytes",
    "auto-aof-rewrite-min-size",
];

/// The AOF rewrite minimum `deploy/redis-switchboard.conf` recommends.
const REWRITE_MIN: u64 = 1 << 30;

/// The advice for these settings (names to values, as `CONFIG GET` gives
/// them); a setting the server did not report is not judged.
pub fn advise(settings: &HashMap<String, String>) -> Vec<SettingAdvice> {
    let mut advice = Vec::new();
    let mut add = |name: &'static str,
                   value: &str,
                   recommended: &'static str,
                   risk: Risk,
                   why: &'static str| {
        advice.push(SettingAdvice {
            name,
            value: value.to_owned(),
            recommended,
            risk,
            why,
        });
    };
    if let Some(v) = settings.get("appendonly")
        && !v.eq_ignore_ascii_case("yes")
    {
        add(
            "appendonly",
            v,
            "yes",
            Risk::Loss,
            "without the append-only file, contacts acknowledged since the last snapshot are lost when Redis restarts or crashes",
        );
    }
    if let Some(v) = settings.get("appendfsync")
        && v.eq_ignore_ascii_case("no")
    {
        add(
            "appendfsync",
            v,
            "everysec",
            Risk::Loss,
            "the AOF reaches the disk only when the kernel flushes it (up to ~30 s): a crash of the machine loses that much",
        );
    }
    if let Some(v) = settings.get("maxmemory-policy")
        && !v.eq_ignore_ascii_case("noeviction")
    {
        add(
            "maxmemory-policy",
            v,
            "noeviction",
            Risk::Loss,
            "a full Redis evicts keys: contacts, queue entries and dedupe marks can disappear without an error",
        );
    }
    if let Some(bytes) = settings
        .get("stream-node-max-bytes")
        .and_then(|v| v.parse::<u64>().ok())
        && (bytes == 0 || bytes > 1024)
    {
        add(
            "stream-node-max-bytes",
            &bytes.to_string(),
            "1024",
            Risk::Memory,
            "every conversation log preallocates up to 4 KiB: ~9.6 KB per contact instead of ~6.5 KB",
        );
    }
    let aof_on = settings
        .get("appendonly")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    if let Some(bytes) = settings
        .get("auto-aof-rewrite-min-size")
        .and_then(|v| v.parse::<u64>().ok())
        && aof_on
        && bytes < REWRITE_MIN
    {
        add(
            "auto-aof-rewrite-min-size",
            &bytes.to_string(),
            "1gb",
            Risk::Latency,
            "under load the AOF is rewritten every few seconds and each rewrite's fork stalls Redis (routing p99 ~200 ms instead of ~40 ms at 1,000 contacts/s)",
        );
    }
    advice
}

impl Store {
    /// Reads the settings that [`advise`] judges from the configured
    /// server (on a cluster, the first node) and returns the advice.
    /// `Ok(None)` when the server does not allow `CONFIG GET` (hosted Redis
    /// services often rename or forbid it): nothing can be said then.
    pub async fn check_settings(&self) -> Result<Option<Vec<SettingAdvice>>, StoreError> {
        let client = self.client().clone();
        let read = async move {
            let mut conn = client.get_multiplexed_async_connection().await?;
            // One pattern per call: Redis before 7.0 takes only one.
            let mut pipe = redis::pipe();
            for name in NAMES {
                pipe.cmd("CONFIG").arg("GET").arg(name);
            }
            pipe.query_async::<Vec<HashMap<String, String>>>(&mut conn)
                .await
        };
        match self.bounded(read).await {
            Ok(replies) => Ok(Some(advise(&replies.into_iter().flatten().collect()))),
            Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m)),
            // An error reply (unknown command, no permission): not allowed.
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_recommended_settings_need_no_advice() {
        let good = of(&[
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "noeviction"),
            ("stream-node-max-bytes", "1024"),
            ("auto-aof-rewrite-min-size", "1073741824"),
        ]);
        assert_eq!(advise(&good), vec![]);
        assert_eq!(advise(&of(&[("appendfsync", "always")])), vec![]);
        assert_eq!(advise(&HashMap::new()), vec![], "nothing reported");
    }

    #[test]
    fn each_risky_setting_is_named() {
        let bad = of(&[
            ("appendonly", "no"),
            ("appendfsync", "no"),
            ("maxmemory-policy", "allkeys-lru"),
            ("stream-node-max-bytes", "4096"),
            ("auto-aof-rewrite-min-size", "67108864"),
        ]);
        let advice = advise(&bad);
        let names: Vec<_> = advice.iter().map(|a| (a.name, a.risk)).collect();
        assert_eq!(
            names,
            vec![
                ("appendonly", Risk::Loss),
                ("appendfsync", Risk::Loss),
                ("maxmemory-policy", Risk::Loss),
                ("stream-node-max-bytes", Risk::Memory),
            ]
        );
        assert_eq!(advice[2].value, "allkeys-lru");
        let unlimited = advise(&of(&[("stream-node-max-bytes", "0")]));
        assert_eq!(unlimited.len(), 1, "0 means unlimited nodes");
        let rewrites = advise(&of(&[
            ("appendonly", "yes"),
            ("auto-aof-rewrite-min-size", "67108864"),
        ]));
        assert_eq!(
            rewrites
                .iter()
                .map(|a| (a.name, a.risk))
                .collect::<Vec<_>>(),
            vec![("auto-aof-rewrite-min-size", Risk::Latency)]
        );
        let volatile = advise(&of(&[("maxmemory-policy", "volatile-ttl")]));
        assert_eq!(volatile.len(), 1, "dedupe marks and closed contacts expire");
    }
}
