//! Everything of Switchboard's that touches Redis.
//!
//! - [`RedisIntake`]: the durable intake every channel submits to.
//! - [`RoutingStreams`]: the per-partition streams of contacts waiting to be
//!   routed, read through a consumer group so that a crashed reader's entries
//!   are reclaimed by another.
//! - [`RedisOutbox`]: each adapter's durable queue of replies.
//! - [`EventFeed`]: the per-partition feed of webhook events and the move
//!   of routing's webhook events into it (`docs/webhooks.md`).
//!
//! The key layout is in [`keys`] and `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod assign;
pub mod channel_state;
mod conn;
pub mod conversations;
mod events;
pub mod feed;
pub mod groups;
pub mod intake;
pub mod keys;
pub mod live;
pub mod outbox;
pub mod queue_summary;
pub mod records;
pub mod routing;
pub mod settings;
pub mod updates;

pub use assign::{
    AgentLive, AgentRecord, Answer, NewRoute, Offer, RouteEvent, RouteRecord, RoutingState,
};
pub use channel_state::RedisChannelState;
pub use conn::{RedisConn, Topology};
pub use conversations::{AutoReply, Conversations, LogEntry, NamedReply};
pub use feed::{Batch, EventFeed, FeedEntry, MoveFailed, Moved};
pub use groups::Pruner;
pub use intake::{IntakeSettings, RedisIntake};
pub use keys::KeySpace;
pub use live::{Doorbell, Live};
pub use outbox::RedisOutbox;
pub use queue_summary::QueueWaiting;
pub use records::{KpiFact, Records};
pub use routing::{QueuedContact, RoutingStreams};
pub use settings::{Risk, SettingAdvice};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How to reach Redis and lay out keys.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`.
    pub url: String,
    /// Overrides the password in `url` (read from a secret).
    pub password: Option<String>,
    pub key_prefix: String,
    pub partitions: u16,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// A single server or a cluster.
    pub topology: Topology,
}

/// Without the password, in `url` or alone.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let StoreConfig {
            url,
            password,
            key_prefix,
            partitions,
            connect_timeout,
            response_timeout,
            topology,
        } = self;
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(url))
            .field("password", &password.as_ref().map(|_| "***"))
            .field("key_prefix", key_prefix)
            .field("partitions", partitions)
            .field("connect_timeout", connect_timeout)
            .field("response_timeout", response_timeout)
            .field("topology", topology)
            .finish()
    }
}

impl StoreConfig {
    /// A store on a local Redis at `url` with `partitions`, prefix `sb` and
    /// short timeouts (300 ms to connect, 1 s per answer): what tests and
    /// benches use.
    pub fn local(url: impl Into<String>, partitions: u16) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            password: None,
            key_prefix: "sb".into(),
            partitions,
            connect_timeout: Duration::from_millis(300),
            response_timeout: Duration::from_millis(1000),
            topology: Topology::default(),
        }
    }
}

/// A failure of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    #[error("invalid redis url: {0}")]
    Url(String),
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error(
        "redis holds data laid out with {stored} partitions but redis.partitions = {configured}; \
         set redis.partitions = {stored} (the partition count cannot change once data exists)"
    )]
    Layout { stored: u16, configured: u16 },
    #[error(
        "redis {found} is too old: Switchboard needs Redis {MIN_REDIS} or later \
         (XAUTOCLAIM, GETDEL, XADD MINID; tested on 7.0)"
    )]
    Version { found: String },
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            StoreError::Unavailable(e.to_string())
        } else {
            // LOADING, MASTERDOWN, READONLY and friends are passing states too,
            // and a script error means nothing was stored: never acknowledge.
            match e.code() {
                Some(
                    "LOADING" | "MASTERDOWN" | "READONLY" | "TRYAGAIN" | "CLUSTERDOWN" | "BUSY",
                ) => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Protocol(e.to_string()),
            }
        }
    }
}

/// A handle on Redis. Cheap to clone; connects lazily and reconnects by
/// itself, so it can be made while Redis is down.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    client: redis::Client,
    keys: KeySpace,
    config: StoreConfig,
    /// Whether the intake and agents' replies write the webhook event feed
    /// ([`feed`]); set by the daemon when webhooks are configured.
    event_feed: bool,
    /// Since when message marks name their customer in this Redis (ms; 0:
    /// always, a store laid out by a version that wrote them so): until a
    /// dedupe window and a day after it, marks of the older form may exist
    /// and the intake reads them too. `u64::MAX` until [`Store::check_layout`] has
    /// read it (read them, to be safe). Shared by the store's clones.
    marks_name_customer_since: Arc<AtomicU64>,
}

/// `marks_name_customer_since` not read yet.
const SINCE_UNKNOWN: u64 = u64::MAX;

/// Records the partition count on first use, and since when marks name
/// their customer; returns both as stored. ARGV[3] '1': an instance starts
/// (not `validate`).
const LAYOUT: &str = r"
local fresh = redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1])
local field = 'marks_name_customer_since'
if fresh == 1 then
  -- A store laid out now has only marks of the new form.
  redis.call('HSET', KEYS[1], field, '0')
elseif ARGV[3] == '1' then
  -- One laid out by an older version may hold marks of the older form:
  -- counted from the first start of a newer instance (older ones may go on
  -- writing them for the rest of a rolling upgrade: the reader allows a
  -- day more than the dedupe window).
  redis.call('HSETNX', KEYS[1], field, ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'partitions', field)
";

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &redact_url(&self.config.url))
            .field("keys", &self.keys)
            .finish()
    }
}

/// The oldest Redis Switchboard runs on.
pub const MIN_REDIS: &str = "6.2";
const MIN_REDIS_PARTS: (u32, u32) = (6, 2);

/// The texts of an `INFO` answer: a server's one, or each node's of a
/// cluster's map (node → text).
fn info_texts(value: &redis::Value, out: &mut Vec<String>) {
    match value {
        redis::Value::BulkString(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) | redis::Value::VerbatimString { text, .. } => {
            out.push(text.clone());
        }
        redis::Value::Map(pairs) => {
            for (_, v) in pairs {
                info_texts(v, out);
            }
        }
        redis::Value::Array(items) => {
            for v in items {
                info_texts(v, out);
            }
        }
        _ => {}
    }
}

/// `redis_version` of an `INFO server` answer, as written and as (major,
/// minor).
fn redis_version(info: &str) -> Option<(&str, (u32, u32))> {
    let found = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = found.split('.').map(|p| p.parse::<u32>().ok());
    Some((found, (parts.next()??, parts.next()??)))
}

pub use switchboard_channel::net::{redact_url, redact_url_all};

/// Checks a cluster's seed URLs (`url` and `seeds`) as the cluster client
/// will at start (one password for all, TCP only), without connecting: so
/// that `validate` refuses what the daemon would fail on.
pub fn check_cluster(
    url: &str,
    seeds: &[String],
    password: Option<&str>,
) -> Result<(), StoreError> {
    let mut nodes = vec![parse_url(url, password)?];
    for seed in seeds {
        nodes.push(parse_url(seed, password)?);
    }
    redis::cluster::ClusterClient::builder(nodes)
        .build()
        .map(|_| ())
        .map_err(|e| StoreError::Url(format!("the cluster client refuses these nodes: {e}")))
}

/// How every connection to Redis is set up.
///
/// - TCP_NODELAY: without it, Nagle's algorithm holds small pipelined
///   commands back until the previous segment is acknowledged, and with
///   delayed ACKs that adds up to 40 ms to a command (the routing leader's
///   offers waited ~100 ms each before this).
/// - Keepalive probes after 15 s idle and `TCP_USER_TIMEOUT` of 30 s: a
///   Redis host that vanished without a reset (power lost, a network cut)
///   ends its connections within about 30 s, and the client connects
///   again. A timed-out command does not make the client reconnect, so
///   without these a connection to a dead host lasted until the kernel
///   gave up retransmitting (about 15 minutes), every command on it timing
///   out, also after a failover had made a new primary.
pub(crate) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(30))
}

/// Parses and checks a Redis URL without connecting.
pub fn parse_url(url: &str, password: Option<&str>) -> Result<redis::ConnectionInfo, StoreError> {
    use redis::IntoConnectionInfo;
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("redis://")
        || lower.starts_with("rediss://")
        || lower.starts_with("unix://"))
    {
        // Not echoed: a URL written wrong may hold a password anywhere.
        return Err(StoreError::Url(
            "must start with redis://, rediss:// or unix://".to_owned(),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| StoreError::Url(format!("{}: {e}", redact_url(url))))?;
    let info = info.set_tcp_settings(tcp_settings());
    Ok(match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

impl Store {
    /// A lazily connecting store. Fails only on a malformed configuration.
    pub fn new(config: StoreConfig) -> Result<Store, StoreError> {
        let keys = KeySpace::new(&config.key_prefix, config.partitions)?;
        let info = parse_url(&config.url, config.password.as_deref())?;
        if let Topology::Cluster { seeds } = &config.topology {
            for seed in seeds {
                parse_url(seed, config.password.as_deref())?;
            }
        }
        let client = redis::Client::open(info).map_err(|e| StoreError::Url(e.to_string()))?;
        let conn = Self::connection(&client, &config, config.response_timeout)?;
        Ok(Store {
            conn,
            client,
            keys,
            config,
            event_feed: false,
            marks_name_customer_since: Arc::new(AtomicU64::new(SINCE_UNKNOWN)),
        })
    }

    /// This store with the webhook event feed on or off (off by default):
    /// when on, the intake and [`Conversations`] write each webhook event
    /// into its partition's feed together with what it reports. Set it
    /// before cloning the store out: clones made earlier keep their value.
    pub fn with_event_feed(mut self, on: bool) -> Store {
        self.event_feed = on;
        self
    }

    /// Whether the webhook event feed is written.
    pub fn event_feed(&self) -> bool {
        self.event_feed
    }

    fn connection(
        client: &redis::Client,
        config: &StoreConfig,
        response_timeout: Duration,
    ) -> Result<RedisConn, StoreError> {
        let made = match &config.topology {
            Topology::Standalone => {
                RedisConn::standalone(client, config.connect_timeout, response_timeout)
            }
            Topology::Cluster { seeds } => {
                let mut nodes = vec![client.get_connection_info().clone()];
                for seed in seeds {
                    nodes.push(parse_url(seed, config.password.as_deref())?);
                }
                RedisConn::cluster(nodes, config.connect_timeout, response_timeout)
            }
        };
        made.map_err(|e| StoreError::Url(e.to_string()))
    }

    /// A separate connection for blocking reads (a blocked command would hold
    /// up everything pipelined behind it on the shared connection).
    pub fn dedicated_connection(&self, block: Duration) -> Result<RedisConn, StoreError> {
        Self::connection(
            &self.client,
            &self.config,
            block + self.config.response_timeout,
        )
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Round-trip time of a PING.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let mut conn = self.conn();
        let reply: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        if reply != "PONG" {
            return Err(StoreError::Protocol(format!("PING answered {reply:?}")));
        }
        Ok(start.elapsed())
    }

    /// How far Redis's clock is ahead of this instance's
    /// ([`switchboard_core::Timestamp::now`]), in ms (negative: behind),
    /// taking the reading as made halfway through the round trip. Routing
    /// compares times written by different instances (offer deadlines,
    /// wrap-ups, sessions, waits), so instances whose clocks differ go
    /// wrong by that much; Redis's clock is the common yardstick.
    pub async fn clock_offset(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let sent = switchboard_core::Timestamp::now().as_millis();
        let started = Instant::now();
        let (secs, micros): (u64, u64) = self
            .bounded(redis::cmd("TIME").query_async(&mut conn))
            .await?;
        let half_trip = u64::try_from(started.elapsed().as_millis() / 2).unwrap_or(0);
        let redis_ms = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let ours = sent.saturating_add(half_trip);
        let ahead = i128::from(redis_ms) - i128::from(ours);
        Ok(i64::try_from(ahead).unwrap_or(if ahead > 0 { i64::MAX } else { i64::MIN }))
    }

    /// Records the partition count on first use and refuses a different one
    /// later: customers are placed by it. For a check (`validate`): an
    /// instance that starts calls [`Store::check_layout_at_start`].
    pub async fn check_layout(&self) -> Result<(), StoreError> {
        self.layout(false).await
    }

    /// Refuses a Redis older than [`MIN_REDIS`]: its router passes would
    /// fail on every reclaim (`XAUTOCLAIM`), and nothing would be routed,
    /// while intake went on acknowledging. A server that does not answer
    /// `INFO server` (a hosted Redis may forbid it) is let through.
    async fn check_version(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // One text from a server; one per master from a cluster (the
        // client asks them all), each checked.
        let info: redis::Value = match self
            .bounded(redis::cmd("INFO").arg("server").query_async(&mut conn))
            .await
        {
            Ok(info) => info,
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(error) => {
                tracing::debug!(%error, "Cannot read Redis's version (INFO server); not checked.");
                return Ok(());
            }
        };
        let mut texts = Vec::new();
        info_texts(&info, &mut texts);
        for text in &texts {
            if let Some((found, version)) = redis_version(text)
                && version < MIN_REDIS_PARTS
            {
                return Err(StoreError::Version {
                    found: found.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// As [`Store::check_layout`], for an instance that starts serving: the
    /// first to start on a store laid out by an older version notes when,
    /// from which marks of the older form are read for a dedupe window and
    /// a day.
    pub async fn check_layout_at_start(&self) -> Result<(), StoreError> {
        self.layout(true).await
    }

    async fn layout(&self, starting: bool) -> Result<(), StoreError> {
        self.check_version().await?;
        let mut conn = self.conn();
        let meta = self.keys.meta();
        let configured = self.keys.partitions();
        let (stored, since): (Option<u16>, Option<u64>) = self
            .bounded(
                redis::Script::new(LAYOUT)
                    .key(&meta)
                    .arg(configured)
                    .arg(switchboard_core::Timestamp::now().as_millis())
                    .arg(if starting { "1" } else { "0" })
                    .invoke_async(&mut conn),
            )
            .await?;
        if let Some(since) = since {
            self.marks_name_customer_since
                .store(since, Ordering::Relaxed);
        }
        match stored {
            Some(stored) if stored == configured => Ok(()),
            Some(stored) => Err(StoreError::Layout { stored, configured }),
            None => Err(StoreError::Protocol(
                "meta partitions missing after HSETNX".into(),
            )),
        }
    }

    /// Whether message marks of the form before the customer was part of
    /// them may still exist at `now` (ms), with marks kept `window`: until
    /// a window and a day (the rest of a rolling upgrade, during which
    /// older instances still write them) after the first start of a newer
    /// instance.
    pub(crate) fn older_marks_possible(&self, now: u64, window: Duration) -> bool {
        const UPGRADE_MS: u64 = 24 * 3600 * 1000;
        match self.marks_name_customer_since.load(Ordering::Relaxed) {
            SINCE_UNKNOWN => true,
            0 => false,
            since => {
                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                now < since.saturating_add(window).saturating_add(UPGRADE_MS)
            }
        }
    }

    /// Runs a Redis future under the response timeout, so that no caller
    /// ever hangs on a dead server.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let limit = self.config.response_timeout + self.config.connect_timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Connections to Redis probe an idle peer and give up on unanswered
    /// data: a vanished host is noticed in about 30 s, not 15 minutes.
    #[test]
    fn connections_notice_a_vanished_host() {
        let info = parse_url("redis://127.0.0.1:6379", None).unwrap();
        let tcp = info.tcp_settings();
        assert!(tcp.nodelay());
        assert!(tcp.keepalive().is_some());
        assert_eq!(tcp.user_timeout(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(parse_url("redis://127.0.0.1:6379", None).is_ok());
        assert!(parse_url("unix:///run/redis.sock", None).is_ok());
        assert!(matches!(
            parse_url("http://127.0.0.1", None),
            Err(StoreError::Url(_))
        ));
        assert!(matches!(
            parse_url("redis://[::1", None),
            Err(StoreError::Url(_))
        ));
        let redacted = redact_url("redis://default:hunter2@db:6379/0");
        assert_eq!(redacted, "redis://default:***@db:6379/0");
        // A unix socket's password is a query parameter.
        assert_eq!(
            redact_url("unix:///run/redis.sock?db=2&pass=hunter2&user=sb"),
            "unix:///run/redis.sock?db=2&pass=***&user=sb"
        );
        assert_eq!(redact_url("redis://db:6379/0"), "redis://db:6379/0");
        // A raw '?' (or '/') in the password: still hidden.
        assert_eq!(redact_url("redis://:pa?ss@db:6379"), "redis://***@db:6379");
        assert_eq!(
            redact_url("redis://u:p/a#s@db:6379/0?pass=x"),
            "redis://u:***@db:6379/0?pass=***"
        );
        // An '@' in a query's password hides all before it.
        for leaky in [
            "unix:///run/redis.sock?pass=hunter@2",
            "redis://host?pass=a@b",
        ] {
            let redacted = redact_url(leaky);
            assert!(
                !redacted.contains("hunter") && !redacted.contains("pass=a"),
                "{redacted}"
            );
        }
        let err = parse_url("redis://u:hunter2@[::1", None)
            .expect_err("bad")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        // Written without its scheme's slashes, or with a percent-encoded
        // key: still hidden, and never echoed by the check.
        for leaky in [
            "redis:/:hunter2@db:6379",
            ":hunter2@db:6379",
            "unix:///s?pa%73s=hunter2",
        ] {
            assert!(!redact_url(leaky).contains("hunter2"), "{leaky}");
            if let Err(e) = parse_url(leaky, None) {
                assert!(!e.to_string().contains("hunter2"), "{e}");
            }
        }
    }

    #[test]
    fn the_redis_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:6.0.16\r\nredis_git_sha1:0\r\n";
        assert_eq!(redis_version(info), Some(("6.0.16", (6, 0))));
        assert!(redis_version(info).unwrap().1 < MIN_REDIS_PARTS);
        for ok in ["6.2.0", "7.0.15", "7.2.4", "8.0.1", "10.0.0"] {
            let info = format!("redis_version:{ok}\r\n");
            assert!(redis_version(&info).unwrap().1 >= MIN_REDIS_PARTS, "{ok}");
        }
        assert_eq!(redis_version("redis_version:unstable\r\n"), None);
        // A cluster answers per node: each is found.
        let cluster = redis::Value::Map(vec![
            (
                redis::Value::SimpleString("10.0.0.1:6379".into()),
                redis::Value::BulkString(b"redis_version:7.0.15\r\n".to_vec()),
            ),
            (
                redis::Value::SimpleString("10.0.0.2:6379".into()),
                redis::Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: "redis_version:6.0.16\r\n".into(),
                },
            ),
        ]);
        let mut texts = Vec::new();
        info_texts(&cluster, &mut texts);
        let versions: Vec<_> = texts.iter().filter_map(|t| redis_version(t)).collect();
        assert_eq!(versions, [("7.0.15", (7, 0)), ("6.0.16", (6, 0))]);
        assert_eq!(redis_version("# Server\r\n"), None);
    }

    /// Other services' URLs lose every query value; a configuration's
    /// `Debug` (should a log line ever print it) shows no password.
    #[test]
    fn query_values_and_configurations_are_redacted() {
        assert_eq!(
            redact_url_all("https://u:pw@crm.example/hook?token=s3cret&v=2#f"),
            "https://u:***@crm.example/hook?token=***&v=***"
        );
        assert_eq!(
            redact_url_all("https://crm.example/hook"),
            "https://crm.example/hook"
        );
        assert_eq!(redact_url_all("not a url?x=1"), "not a url?x=1");
        assert_eq!(
            redact_url_all("https://pbx.example/dial?s3cret"),
            "https://pbx.example/dial?***"
        );
        let mut config = StoreConfig::local("redis://sb:hunter2@db:6379", 4);
        config.password = Some("hunter3".into());
        config.topology = Topology::Cluster {
            seeds: vec!["redis://:hunter4@db2:6379".into()],
        };
        let shown = format!("{config:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("db2:6379"), "{shown}");
    }
}
