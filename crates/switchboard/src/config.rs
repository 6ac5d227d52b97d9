//! The configuration: a TOML file plus `SWITCHBOARD__SECTION__KEY`
//! environment overrides, checked strictly. `config/switchboard.toml`
//! documents every key; a test keeps it in step with this file.

use crate::channels::ChannelSettings;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard_channel::Secret;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub instance: InstanceConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub intake: IntakeConfig,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub routing: switchboard_router::settings::RoutingConfig,
    #[serde(default)]
    pub agent_api: switchboard_api_agent::AgentApiConfig,
    #[serde(default)]
    pub records: switchboard_records::RecordsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub testing: TestingConfig,
    /// The channel adapters, each a `[[channels]]` table with a `type`.
    #[serde(default)]
    pub channels: Vec<ChannelSettings>,
    /// Outbound webhooks to CRMs and helpdesks, each a `[[webhooks]]` table
    /// (`docs/webhooks.md`).
    #[serde(default)]
    pub webhooks: Vec<switchboard_webhooks::WebhookConfig>,
}

/// `[instance]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// This instance's name among those sharing one Redis. Empty: the host
    /// name, the process id and a random part ([`Config::instance_id`]).
    #[serde(default)]
    pub id: String,
}

/// `[testing]`: for end-to-end tests only; never in production.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingConfig {
    /// The daemon's clock stands still at its start time and moves only
    /// through `POST /debug/clock` (supervisor token), so that a test can
    /// play a day of traffic in seconds and know every duration exactly.
    #[serde(default)]
    pub manual_clock: bool,
}

/// `[redis]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `unix:///path`. Required. (`rediss://`
    /// is refused: the Redis client is built without TLS.)
    #[serde(default)]
    pub url: String,
    /// A password that overrides the one in `url`; a secret.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The prefix of every key.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Routing partitions. Fixed once data exists.
    #[serde(default = "defaults::partitions")]
    pub partitions: u16,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// `standalone` (one server) or `cluster` (a Redis Cluster; `url` is one
    /// seed node).
    #[serde(default)]
    pub mode: RedisMode,
    /// More cluster seed nodes besides `url`, in `cluster` mode.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
}

/// `redis.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    #[default]
    Standalone,
    Cluster,
}

/// Without the URL's password (a derived `Debug` would print it).
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one fails to compile until shown here.
        let RedisConfig {
            url,
            password,
            key_prefix,
            partitions,
            connect_timeout_ms,
            response_timeout_ms,
            mode,
            cluster_nodes,
        } = self;
        f.debug_struct("RedisConfig")
            .field("url", &switchboard_store::redact_url(url))
            .field("password", password)
            .field("key_prefix", key_prefix)
            .field("partitions", partitions)
            .field("connect_timeout_ms", connect_timeout_ms)
            .field("response_timeout_ms", response_timeout_ms)
            .field("mode", mode)
            .field(
                "cluster_nodes",
                &cluster_nodes
                    .iter()
                    .map(|n| switchboard_store::redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the HTTP server (health, metrics, APIs, webhooks) listens.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// A request's whole body must arrive within this many seconds of its
    /// head; a slower one is answered 408 (`body_timeout`).
    #[serde(default = "defaults::body_timeout_secs")]
    pub body_timeout_secs: u64,
    /// A request's head (its line and headers) must arrive within this many
    /// seconds; a slower connection is closed. Also how long a keep-alive
    /// connection may sit idle between requests.
    #[serde(default = "defaults::header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// A write to a client that makes no progress for this many seconds
    /// (a client that stopped reading) closes its connection, websockets
    /// included.
    #[serde(default = "defaults::write_timeout_secs")]
    pub write_timeout_secs: u64,
    /// Connections served at once (websockets included); one more is
    /// answered 503 and closed. 0: what the open-file limit leaves after
    /// 1,024 descriptors (a quarter of a small limit) kept for Redis, mail
    /// and files.
    #[serde(default)]
    pub max_connections: u64,
}

/// `[intake]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// How long a provider message id is remembered, in seconds.
    #[serde(default = "defaults::dedupe_window_secs")]
    pub dedupe_window_secs: u64,
    /// The longest message text accepted, in bytes.
    #[serde(default = "defaults::max_text_bytes")]
    pub max_text_bytes: usize,
}

/// `[router]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Longest wait for new contacts per read, in milliseconds.
    #[serde(default = "defaults::block_ms")]
    pub block_ms: u64,
    /// A contact taken by an instance that went silent this long is taken
    /// over by another, in milliseconds.
    #[serde(default = "defaults::reclaim_idle_ms")]
    pub reclaim_idle_ms: u64,
    /// Contacts taken per read.
    #[serde(default = "defaults::batch")]
    pub batch: usize,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `switchboard_store=debug,info`, …
    #[serde(default = "defaults::level")]
    pub level: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[shutdown]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM, how long requests in flight may take to finish, in seconds.
    #[serde(default = "defaults::drain_timeout_secs")]
    pub drain_timeout_secs: u64,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads that run Switchboard's tasks; 0: one per CPU core (or
    /// `TOKIO_WORKER_THREADS`, when set).
    #[serde(default)]
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// The most worker threads accepted.
    pub const MAX_WORKER_THREADS: usize = 256;

    /// The async runtime this configuration asks for. With 0 threads,
    /// `TOKIO_WORKER_THREADS` when set (checked here: Tokio panics on one
    /// that is not a positive number), else one per core. An invalid
    /// variable is an `InvalidInput` error naming it.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let threads = match (self.worker_threads, std::env::var("TOKIO_WORKER_THREADS")) {
            (n, _) if n > 0 => n,
            (_, Err(std::env::VarError::NotPresent)) => 0,
            (_, set) => set
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| (1..=Self::MAX_WORKER_THREADS).contains(n))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "TOKIO_WORKER_THREADS (read as runtime.worker_threads is 0) must be a number from 1 to {}",
                            Self::MAX_WORKER_THREADS
                        ),
                    )
                })?,
        };
        if threads > 0 {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()
    }
}

/// Whether the kernel would refuse to bind both: one port (not 0, which
/// picks a free one each time), and the same address, or an unspecified
/// one of the same family (`[::]` also covers every IPv4 address: dual
/// stack, Linux's default `net.ipv6.bindv6only = 0`; a host that sets it
/// to 1 could bind `[::]` and `0.0.0.0` on one port, which is refused here
/// all the same).
fn sockets_clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |x: SocketAddr, y: SocketAddr| {
        x.ip().is_unspecified() && (x.is_ipv6() || x.is_ipv4() == y.is_ipv4())
    };
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

mod defaults {
    pub fn key_prefix() -> String {
        "sb".into()
    }
    pub fn partitions() -> u16 {
        8
    }
    pub fn connect_timeout_ms() -> u64 {
        1000
    }
    pub fn response_timeout_ms() -> u64 {
        2000
    }
    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn body_timeout_secs() -> u64 {
        60
    }
    pub fn header_timeout_secs() -> u64 {
        30
    }
    pub fn write_timeout_secs() -> u64 {
        30
    }
    pub fn dedupe_window_secs() -> u64 {
        7 * 24 * 3600
    }
    pub fn max_text_bytes() -> usize {
        64 * 1024
    }
    pub fn block_ms() -> u64 {
        1000
    }
    pub fn reclaim_idle_ms() -> u64 {
        15_000
    }
    pub fn batch() -> usize {
        100
    }
    pub fn level() -> String {
        "info".into()
    }
    pub fn drain_timeout_secs() -> u64 {
        10
    }
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // Every field has a serde default, so an empty table is valid.
                serde_json::from_str("{}").expect("all fields have defaults")
            }
        }
    )*};
}
default_from_serde!(
    RedisConfig,
    HttpConfig,
    IntakeConfig,
    RouterConfig,
    LogConfig,
    ShutdownConfig
);

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    /// A problem on one line (parsers' messages come with pictures).
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        let problem: String = problem.into();
        let problem = problem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !is_picture(l))
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError {
            key: key.into(),
            problem,
        }
    }
}

/// A line of a parser's picture of the input: `1 | key = 5` or `  |   ^`.
/// A message that merely starts with a number is not one.
fn is_picture(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// The prefix of environment overrides: `SWITCHBOARD__REDIS__URL` sets
/// `redis.url`.
pub const ENV_PREFIX: &str = "SWITCHBOARD";

/// Loads `path` with overrides from `env` (the process environment in the
/// binary, a map in tests). Only variables starting `SWITCHBOARD__` count.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let raw = merged(path, env)?;
    let config: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." {
            "configuration".to_owned()
        } else {
            key
        };
        let problem = scrub(&key, &e.into_inner().to_string());
        ConfigError::new(key, problem)
    })?;
    config.check()?;
    Ok(config)
}

/// `problem` with every quoted value hidden when `key` may hold a secret
/// (serde quotes the value it could not take: `invalid type: string
/// "redis://:pw@host", expected a sequence`).
fn scrub(key: &str, problem: &str) -> String {
    let secretive = [
        "password",
        "token",
        "secret",
        "url",
        "cluster_nodes",
        "auth",
    ]
    .iter()
    .any(|s| key.contains(s));
    if !secretive {
        return problem.to_owned();
    }
    let mut out = String::with_capacity(problem.len());
    let mut quoted = false;
    for c in problem.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"***");
            } else {
                out.push('"');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// One key of the merged configuration as text, unchecked (for scripts).
/// Secrets are never printed: keys named for one are refused, a URL's
/// password (`redis://user:pw@host`) is shown as `***`, and so is every
/// value of a URL's query (a webhook's `?token=…`, a callback's key).
pub fn raw_value(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    key: &str,
) -> Result<String, ConfigError> {
    if ["password", "token", "secret"]
        .iter()
        .any(|s| key.contains(s))
    {
        return Err(ConfigError::new(key, "secrets are not printed"));
    }
    let raw = merged(path, env)?;
    match raw.get::<config::Value>(key) {
        Ok(value) => value
            .into_string()
            .map(|v| switchboard_store::redact_url_all(&v))
            .map_err(|e| ConfigError::new(key, e.to_string())),
        Err(config::ConfigError::NotFound(_)) => Ok(String::new()),
        Err(e) => Err(ConfigError::new(key, e.to_string())),
    }
}

/// The file with the environment's overrides on top.
fn merged(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<config::Config, ConfigError> {
    let overrides: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SWITCHBOARD__"))
        .collect();
    let file = path.display().to_string();
    if !path.exists() {
        return Err(ConfigError::new(file, "no such file"));
    }
    config::Config::builder()
        .add_source(config::File::new(&file, config::FileFormat::Toml).required(true))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                // Values stay text: serde makes numbers and booleans of
                // them where a key wants one, and leaves "0100" (a key
                // prefix, an instance id, a password) as written.
                .try_parsing(false)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::new(file, e.to_string()))
}

impl Config {
    /// Checks what serde cannot: addresses, URLs, ranges, secrets, names.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !(1..=3600).contains(&self.http.body_timeout_secs) {
            return Err(ConfigError::new(
                "http.body_timeout_secs",
                "must be 1 to 3600",
            ));
        }
        if !(1..=3600).contains(&self.http.header_timeout_secs) {
            return Err(ConfigError::new(
                "http.header_timeout_secs",
                "must be 1 to 3600",
            ));
        }
        if !(1..=3600).contains(&self.http.write_timeout_secs) {
            return Err(ConfigError::new(
                "http.write_timeout_secs",
                "must be 1 to 3600",
            ));
        }
        if !(1..=3600).contains(&self.shutdown.drain_timeout_secs) {
            return Err(ConfigError::new(
                "shutdown.drain_timeout_secs",
                "must be 1 to 3600",
            ));
        }
        self.routing
            .plan()
            .map_err(|e| ConfigError::new(e.key, e.problem))?;
        self.agent_api
            .check()
            .map_err(|(key, problem)| ConfigError::new(key, problem))?;
        self.records
            .check()
            .map_err(|(key, problem)| ConfigError::new(key, problem))?;
        // A returning customer's earlier contact is looked up in records
        // kept `retention_days`: one deleted before `fcr_days` passed makes
        // a repeat look like a first contact resolved.
        if self.records.fcr_days > self.routing.retention_days {
            return Err(ConfigError::new(
                "records.fcr_days",
                format!(
                    "must be at most routing.retention_days ({}): older contacts are deleted, so a return after them would count as resolved",
                    self.routing.retention_days
                ),
            ));
        }
        if self.testing.manual_clock && self.agent_api.supervisor_token.is_none() {
            return Err(ConfigError::new(
                "testing.manual_clock",
                "needs agent_api.supervisor_token (the clock is moved with it)",
            ));
        }
        if self.redis.url.trim().is_empty() {
            return Err(ConfigError::new(
                "redis.url",
                "not set: set it (or SWITCHBOARD__REDIS__URL), or start with scripts/run.sh, which runs a private redis-server",
            ));
        }
        let password = self.redis_password()?;
        switchboard_store::parse_url(&self.redis.url, password.as_deref())
            .map_err(|e| ConfigError::new("redis.url", e.to_string()))?;
        for node in &self.redis.cluster_nodes {
            switchboard_store::parse_url(node, password.as_deref())
                .map_err(|e| ConfigError::new("redis.cluster_nodes", e.to_string()))?;
        }
        if !self.redis.cluster_nodes.is_empty() && self.redis.mode != RedisMode::Cluster {
            return Err(ConfigError::new(
                "redis.cluster_nodes",
                "set only with redis.mode = \"cluster\"",
            ));
        }
        if self.redis.mode == RedisMode::Cluster {
            switchboard_store::check_cluster(
                &self.redis.url,
                &self.redis.cluster_nodes,
                password.as_deref(),
            )
            .map_err(|e| ConfigError::new("redis.cluster_nodes", e.to_string()))?;
        }
        switchboard_store::KeySpace::new(&self.redis.key_prefix, self.redis.partitions)
            .map_err(|e| ConfigError::new("redis", e.to_string()))?;
        for (key, value, min) in [
            (
                "redis.connect_timeout_ms",
                self.redis.connect_timeout_ms,
                10,
            ),
            (
                "redis.response_timeout_ms",
                self.redis.response_timeout_ms,
                10,
            ),
            (
                "intake.dedupe_window_secs",
                self.intake.dedupe_window_secs,
                60,
            ),
            ("router.block_ms", self.router.block_ms, 10),
            ("router.reclaim_idle_ms", self.router.reclaim_idle_ms, 1000),
        ] {
            if value < min {
                return Err(ConfigError::new(
                    key,
                    format!("{value} is below the minimum of {min}"),
                ));
            }
        }
        // Redis refuses an expiry beyond ~292 million years, and it is the
        // intake's last write: the message would be stored, the sender told
        // 503, and each retry stored again. Ten years is more than any
        // provider retries.
        const MAX_DEDUPE_SECS: u64 = 10 * 366 * 86_400;
        if self.intake.dedupe_window_secs > MAX_DEDUPE_SECS {
            return Err(ConfigError::new(
                "intake.dedupe_window_secs",
                format!(
                    "{} is above the maximum of {MAX_DEDUPE_SECS} (ten years)",
                    self.intake.dedupe_window_secs
                ),
            ));
        }
        if self.intake.max_text_bytes < 1024 {
            return Err(ConfigError::new(
                "intake.max_text_bytes",
                "must be at least 1024",
            ));
        }
        if self.runtime.worker_threads > RuntimeConfig::MAX_WORKER_THREADS {
            return Err(ConfigError::new(
                "runtime.worker_threads",
                format!(
                    "must be 0 (one per CPU core) to {}",
                    RuntimeConfig::MAX_WORKER_THREADS
                ),
            ));
        }
        if self.router.batch == 0 || self.router.batch > 10_000 {
            return Err(ConfigError::new(
                "router.batch",
                "must be between 1 and 10000",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", e.to_string()))?;
        switchboard_webhooks::check(&self.webhooks)
            .map_err(|e| ConfigError::new(e.key, e.problem))?;
        // An event kept longer than its contact's records would be sent
        // without them (an empty transcript said to be cut).
        let retention_hours = self.routing.retention_days.saturating_mul(24);
        if let Some(w) = self
            .webhooks
            .iter()
            .find(|w| w.max_age_hours > retention_hours)
        {
            return Err(ConfigError::new(
                format!("webhooks.{}.max_age_hours", w.name),
                format!(
                    "must be at most routing.retention_days × 24 ({retention_hours}): the contacts of older events are deleted before they are sent"
                ),
            ));
        }
        self.check_channels()
    }

    fn check_channels(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut claimed = BTreeMap::new();
        // Listening sockets, by who listens: two that the kernel would not
        // both bind (one port, and one address or an unspecified one) fail
        // here, not at start (where the unit would restart in a loop).
        let mut sockets: Vec<(SocketAddr, String)> = Vec::new();
        if let Ok(http) = self.listen_addr() {
            sockets.push((http, "the HTTP server (http.listen)".to_owned()));
        }
        for (i, channel) in self.channels.iter().enumerate() {
            let config = channel.config();
            let name = config.name();
            let key = format!("channels[{i}]");
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !name_ok {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    "must be 1 to 64 characters of A-Za-z0-9._-",
                ));
            }
            if !names.insert(name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("{name:?} is used twice"),
                ));
            }
            config.validate().map_err(|e| {
                ConfigError::new(
                    format!("channels.{name} ({})", channel.type_name()),
                    e.to_string(),
                )
            })?;
            for resource in config.resources() {
                if let switchboard_channel::Resource::TcpListener(addr) = &resource {
                    if let Some((_, other)) = sockets.iter().find(|(a, _)| sockets_clash(*a, *addr))
                    {
                        return Err(ConfigError::new(
                            format!("channels.{name}"),
                            format!("{resource} cannot be bound: {other} listens on that port"),
                        ));
                    }
                    sockets.push((*addr, format!("channel {name:?}")));
                }
                if let Some(other) = claimed.insert(resource.clone(), name) {
                    return Err(ConfigError::new(
                        format!("channels.{name}"),
                        format!("{resource} is already claimed by channel {other:?}"),
                    ));
                }
            }
        }
        self.check_handoffs()?;
        self.check_body_times()?;
        self.check_offer_times()?;
        self.check_lookup_window()
    }

    /// A channel that finds its contacts again by their first event's
    /// provider id (a call's `hangup` by its call id) can do so only while
    /// the intake remembers that id: at least the longest call routing
    /// allows (`routing.max_call_secs`) and a day of waiting and slack (a
    /// week when calls have no longest).
    /// With less, a long call's `hangup` found no call, and its agent was
    /// held until `max_call_secs` ended it.
    fn check_lookup_window(&self) -> Result<(), ConfigError> {
        // With no longest call (0), the default window: a week.
        let needed = match self.routing.max_call_secs {
            0 => 7 * 86_400,
            longest => longest.saturating_add(86_400),
        };
        if self.intake.dedupe_window_secs >= needed {
            return Ok(());
        }
        match self
            .channels
            .iter()
            .find(|c| c.config().finds_contacts_by_provider_id())
        {
            Some(channel) => Err(ConfigError::new(
                "intake.dedupe_window_secs",
                format!(
                    "{} s is shorter than channel {:?} needs ({needed} s: routing.max_call_secs and a day): a call's later events find it by its call id, remembered for this window",
                    self.intake.dedupe_window_secs,
                    channel.config().name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// No channel needs longer offers than routing gives its kind.
    fn check_offer_times(&self) -> Result<(), ConfigError> {
        for channel in &self.channels {
            let config = channel.config();
            let Some((kind, key, needed)) = config.offer_time() else {
                continue;
            };
            let given = self.routing.offer_timeout_secs.of(kind);
            if given < needed {
                return Err(ConfigError::new(
                    format!("routing.offer_timeout_secs.{}", kind.as_str()),
                    format!(
                        "{} s is shorter than channel {:?} needs ({} s, from its {key}): offers would run out before the agent's phone rings",
                        given.as_secs(),
                        config.name(),
                        needed.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// No channel lets a body take longer than the daemon's deadline for
    /// every body allows: that setting would never apply.
    fn check_body_times(&self) -> Result<(), ConfigError> {
        let deadline = self.http.body_timeout_secs;
        for channel in &self.channels {
            let config = channel.config();
            let Some((key, time)) = config.body_time() else {
                continue;
            };
            if time.as_secs() > deadline {
                return Err(ConfigError::new(
                    format!("channels.{}.{key}", config.name()),
                    format!(
                        "{} s is longer than http.body_timeout_secs ({deadline} s), which would cut those bodies off first: raise http.body_timeout_secs to at least {} too",
                        time.as_secs(),
                        time.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every channel a channel hands work to exists and has the right type.
    fn check_handoffs(&self) -> Result<(), ConfigError> {
        let types: HashMap<&str, &str> = self
            .channels
            .iter()
            .map(|c| (c.config().name(), c.type_name()))
            .collect();
        for channel in &self.channels {
            let config = channel.config();
            for handoff in config.hands_to() {
                let problem = match types.get(handoff.channel.as_str()) {
                    Some(t) if *t == handoff.channel_type => continue,
                    Some(t) => format!(
                        "channel {:?} is of type {t:?}, not {:?}",
                        handoff.channel, handoff.channel_type
                    ),
                    None => format!(
                        "no channel is named {:?} (a {:?} channel is needed)",
                        handoff.channel, handoff.channel_type
                    ),
                };
                return Err(ConfigError::new(
                    format!("channels.{}.{}", config.name(), handoff.key),
                    problem,
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.http.listen.parse().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:8080",
                    self.http.listen
                ),
            )
        })
    }

    /// The store's configuration (reads the password secret).
    pub fn store_config(&self) -> Result<switchboard_store::StoreConfig, ConfigError> {
        let topology = match self.redis.mode {
            RedisMode::Standalone => switchboard_store::Topology::Standalone,
            RedisMode::Cluster => switchboard_store::Topology::Cluster {
                seeds: self.redis.cluster_nodes.clone(),
            },
        };
        Ok(switchboard_store::StoreConfig {
            url: self.redis.url.clone(),
            password: self.redis_password()?,
            key_prefix: self.redis.key_prefix.clone(),
            partitions: self.redis.partitions,
            connect_timeout: Duration::from_millis(self.redis.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.redis.response_timeout_ms),
            topology,
        })
    }

    pub fn redis_password(&self) -> Result<Option<String>, ConfigError> {
        self.redis
            .password
            .as_ref()
            .map(|s| s.resolve().map(|v| v.expose().to_owned()))
            .transpose()
            .map_err(|e| ConfigError::new("redis.password", e.to_string()))
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown.drain_timeout_secs)
    }

    /// The instance's name: configured, or `<host>-<pid>-<random>`. The
    /// random part tells apart two instances with one host name and pid
    /// (containers on one host with host networking each run the daemon
    /// as pid 1): with the same name they would share every lease and
    /// consumer, and deliver one outbox or webhook feed at once.
    pub fn instance_id(&self) -> String {
        if !self.instance.id.is_empty() {
            return self.instance.id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "switchboard".into());
        format!(
            "{host}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        )
    }
}

/// The default configuration file's path.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/switchboard/switchboard.toml")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn listeners_clash_as_the_kernel_would_refuse_them() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(sockets_clash(a("127.0.0.1:25"), a("127.0.0.1:25")));
        assert!(sockets_clash(a("0.0.0.0:25"), a("127.0.0.1:25")));
        assert!(sockets_clash(a("127.0.0.1:25"), a("0.0.0.0:25")));
        assert!(sockets_clash(a("[::]:25"), a("127.0.0.1:25")));
        assert!(sockets_clash(a("[::]:25"), a("0.0.0.0:25")));
        assert!(sockets_clash(a("[::]:25"), a("[::1]:25")));
        assert!(!sockets_clash(a("127.0.0.1:25"), a("127.0.0.2:25")));
        assert!(!sockets_clash(a("127.0.0.1:25"), a("127.0.0.1:26")));
        assert!(!sockets_clash(a("0.0.0.0:25"), a("[::1]:25")));
        assert!(!sockets_clash(a("127.0.0.1:25"), a("[::1]:25")));
        assert!(!sockets_clash(a("127.0.0.1:0"), a("0.0.0.0:0")));
    }

    #[test]
    fn the_shipped_example_is_valid_and_documents_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchboard.toml");
        // The shipped file leaves redis.url empty on purpose (scripts/run.sh fills it).
        let config = load(
            &path,
            env(&[("SWITCHBOARD__REDIS__URL", "redis://127.0.0.1:6379")]),
        )
        .unwrap();
        let defaults: Config =
            serde_json::from_str(r#"{"redis":{"url":"redis://127.0.0.1:6379"}}"#).unwrap();
        assert_eq!(
            format!("{config:?}"),
            format!("{defaults:?}"),
            "config/switchboard.toml differs from the defaults in config.rs"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "[instance]",
            "id =",
            "[redis]",
            "url =",
            "password",
            "key_prefix =",
            "partitions =",
            "connect_timeout_ms =",
            "response_timeout_ms =",
            "[http]",
            "listen =",
            "[intake]",
            "dedupe_window_secs =",
            "max_text_bytes =",
            "[router]",
            "block_ms =",
            "reclaim_idle_ms =",
            "batch =",
            "[routing]",
            "default_queue =",
            "missed_offers_before_away =",
            "wrap_up_secs =",
            "reconnect_grace_secs =",
            "sticky_wait_secs =",
            "sticky_memory_days =",
            "declined_again_after_secs =",
            "interrupt_voice =",
            "lease_ms =",
            "retention_days =",
            "[routing.offer_timeout_secs]",
            "[[routing.queues]]",
            "[[routing.queues.overflow]]",
            "[[routing.rules]]",
            "[[routing.agents]]",
            "schedule =",
            "after_hours =",
            "[[routing.schedules]]",
            "timezone =",
            "holidays =",
            "[routing.after_hours_answer]",
            "[routing.acknowledgement",
            "[routing.name_fallback]",
            "[agent_api]",
            "supervisor_token",
            "session_ttl_secs =",
            "max_text_bytes =",
            "ws_send_buffer =",
            "[log]",
            "format =",
            "level =",
            "header_timeout_secs =",
            "write_timeout_secs =",
            "max_connections =",
            "[shutdown]",
            "drain_timeout_secs =",
            "[runtime]",
            "worker_threads =",
            "[[channels]]",
            "intake_api",
            "max_body_bytes",
            "[[webhooks]]",
            "timeout_ms =",
            "max_age_hours =",
        ] {
            assert!(
                text.contains(key),
                "config/switchboard.toml does not document {key}"
            );
        }
    }

    /// `runtime.worker_threads` sets the runtime's threads (from the file
    /// or the environment); 0 leaves one per core; too many is refused.
    #[test]
    fn worker_threads_shape_the_runtime() {
        let f = file("[redis]\nurl = \"redis://127.0.0.1:6379\"\n[runtime]\nworker_threads = 1\n");
        let config = load(f.path(), env(&[])).unwrap();
        assert_eq!(config.runtime.build().unwrap().metrics().num_workers(), 1);
        let config = load(
            f.path(),
            env(&[("SWITCHBOARD__RUNTIME__WORKER_THREADS", "3")]),
        )
        .unwrap();
        assert_eq!(config.runtime.build().unwrap().metrics().num_workers(), 3);
        // (Tokio's own variable, when set, stands for "one per core".)
        let cores = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap().get());
        let config = load(
            f.path(),
            env(&[("SWITCHBOARD__RUNTIME__WORKER_THREADS", "0")]),
        )
        .unwrap();
        assert_eq!(
            config.runtime.build().unwrap().metrics().num_workers(),
            cores
        );
        let e = load(
            f.path(),
            env(&[("SWITCHBOARD__RUNTIME__WORKER_THREADS", "257")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "runtime.worker_threads", "{e}");
    }

    /// Every commented `[[channels]]` example in the shipped file parses
    /// as its type once uncommented (secrets and paths aside).
    #[test]
    fn the_commented_channel_examples_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchboard.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let starts: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i] == "# [[channels]]")
            .collect();
        assert!(starts.len() >= 7, "examples found: {}", starts.len());
        for &start in &starts {
            let mut example = String::new();
            for line in &lines[start + 1..] {
                let Some(rest) = line.strip_prefix("# ") else {
                    break;
                };
                if rest.is_empty() || rest == "[[channels]]" {
                    break;
                }
                // Drop a trailing comment; commented-out optional keys stay out.
                if rest.starts_with('#') {
                    continue;
                }
                let code = match rest.find(" #") {
                    Some(i)
                        if !rest[..i].contains('"') || rest[..i].matches('"').count() % 2 == 0 =>
                    {
                        &rest[..i]
                    }
                    _ => rest,
                };
                example.push_str(code);
                example.push('\n');
            }
            #[derive(serde::Deserialize)]
            struct Example {
                #[allow(dead_code)]
                channels: Vec<crate::channels::ChannelSettings>,
            }
            let example = format!("[[channels]]\n{example}");
            let parsed: Result<Example, _> = toml::from_str(&example);
            assert!(
                parsed.is_ok(),
                "example at line {}: {:?}\n{example}",
                start + 1,
                parsed.err()
            );
        }
    }

    /// The commented `[[webhooks]]` example parses and checks once
    /// uncommented (with an inline secret instead of the variable).
    #[test]
    fn the_commented_webhook_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchboard.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: String = text
            .lines()
            .skip_while(|l| *l != "# [[webhooks]]")
            .map_while(|l| l.strip_prefix("# "))
            .map(|l| match l.find("  #") {
                Some(i) => l[..i].trim_end(),
                None => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(example.contains("url ="), "no example found");
        let example = example.replace(
            "secret = { env = \"CRM_WEBHOOK_SECRET\" }",
            "secret = \"0123456789abcdef\"",
        );
        let f = file(&format!("[redis]\nurl = \"redis://x\"\n{example}"));
        let config = load(f.path(), env(&[])).unwrap();
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].events.len(), 4);
        let f = file(
            "[redis]\nurl = \"redis://x\"\n[[webhooks]]\nname = \"crm\"\nurl = \"https://x\"\nsecret = \"short\"\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "webhooks.crm.secret", "{err}");
    }

    /// The commented queue, rule, business-hours and automatic-answer
    /// examples of `[routing]` parse and compile once uncommented.
    #[test]
    fn the_commented_routing_examples_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchboard.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut example =
            String::from("[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"general\"\n");
        let mut in_agent = false;
        for line in text
            .lines()
            .skip_while(|l| *l != "# [[routing.queues]]")
            .take_while(|l| !l.starts_with('['))
        {
            let Some(rest) = line.strip_prefix("# ").or((line == "#").then_some("")) else {
                continue;
            };
            let rest = rest.trim_start();
            if rest.is_empty() {
                in_agent = false;
                continue;
            }
            in_agent |= rest == "[[routing.agents]]";
            let key = rest.split_once(" = ").map(|(k, _)| k);
            let code = rest.starts_with('[')
                || key.is_some_and(|k| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            if in_agent || !code {
                continue;
            }
            let code = match rest.find("  #") {
                Some(i) => rest[..i].trim_end(),
                None => rest,
            };
            example.push_str(code);
            example.push('\n');
        }
        assert!(example.contains("[[routing.schedules]]"), "{example}");
        assert!(
            example.contains("[routing.after_hours_answer.email]"),
            "{example}"
        );
        let f = file(&example);
        let config = load(f.path(), env(&[])).unwrap();
        let plan = config
            .routing
            .plan()
            .unwrap_or_else(|e| panic!("{e}\n{example}"));
        let billing = &plan.queues[plan.queue_index("billing").unwrap()];
        assert_eq!(billing.schedule.as_ref().unwrap().timezone, "Europe/Kyiv");
        assert!(!plan.answers.after_hours.is_empty());
        assert!(!plan.answers.acknowledgement.is_empty());
        // Errors name the key.
        let f = file(
            "[redis]\nurl = \"redis://x\"\n[[routing.schedules]]\nname = \"office\"\ntimezone = \"UTC\"\nhours = { mon = [\"9:00-17:00x\"] }\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "routing.schedules[0].hours.mon[0]", "{err}");
        let f = file(
            "[redis]\nurl = \"redis://x\"\n[routing.after_hours_answer.email]\nen = \"Hi {nmae}\"\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "routing.after_hours_answer.email.en", "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file("[redis]\nurl = \"redis://file:6379\"\n[http]\nlisten = \"127.0.0.1:1\"\n");
        let config = load(
            f.path(),
            env(&[
                ("SWITCHBOARD__REDIS__URL", "redis://env:6380"),
                ("SWITCHBOARD__REDIS__PARTITIONS", "4"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.redis.url, "redis://env:6380");
        assert_eq!(config.redis.partitions, 4);
        assert_eq!(config.http.listen, "127.0.0.1:1");
    }

    #[test]
    fn environment_strings_stay_strings() {
        // Values that look like numbers are taken as written where the key
        // is text: a key prefix "0100" is not the number 100.
        let f = file("[redis]\nurl = \"redis://file:6379\"\n");
        let config = load(
            f.path(),
            env(&[
                ("SWITCHBOARD__REDIS__KEY_PREFIX", "0100"),
                ("SWITCHBOARD__INSTANCE__ID", "007"),
                ("SWITCHBOARD__REDIS__PASSWORD", "12345678"),
                ("SWITCHBOARD__SHUTDOWN__DRAIN_TIMEOUT_SECS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(config.redis.key_prefix, "0100");
        assert_eq!(config.instance.id, "007");
        assert!(
            config.redis.password.is_some(),
            "a numeric password is a password"
        );
        assert_eq!(config.shutdown.drain_timeout_secs, 7, "numbers still parse");
    }

    #[test]
    fn errors_name_the_key() {
        // One overflow step more than a queue may have.
        let many_steps = (1..=33).fold(
            "[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"q\"\n".to_owned(),
            |text, i| text + &format!("[[routing.queues.overflow]]\nafter_secs = {i}\n"),
        );
        let cases = [
            (
                "[redis]\nurl = \"redis://x\"\nbogus = 1\n",
                &[][..],
                "redis",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[http]\nlisten = \"nowhere\"\n",
                &[][..],
                "http.listen",
            ),
            ("[redis]\nurl = \"htp://x\"\n", &[][..], "redis.url"),
            ("", &[][..], "redis.url"),
            (
                "[redis]\nurl = \"redis://x\"\npartitions = \"many\"\n",
                &[][..],
                "redis.partitions",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n",
                &[("SWITCHBOARD__HTTP__LISTN", "x")][..],
                "http",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[log]\nformat = \"xml\"\n",
                &[][..],
                "log.format",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"fax\"\nname = \"f\"\n",
                &[][..],
                "channels",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"intake_api\"\nname = \"a\"\ntoken = \"short\"\n",
                &[][..],
                "channels.a",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"intake_api\"\nname = \"a\"\ntoken = { file = \"/nonexistent/t\" }\n",
                &[][..],
                "channels.a",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"intake_api\"\nname = \"a\"\ntoken = \"0123456789abcdef0\"\n[[channels]]\ntype = \"intake_api\"\nname = \"a\"\ntoken = \"0123456789abcdef0\"\n",
                &[][..],
                "channels[1].name",
            ),
            // A mail listener on the HTTP server's port, and two on one
            // port, one of them on every address: validated, then the
            // daemon failed to bind (and restarted in a loop).
            (
                "[redis]\nurl = \"redis://x\"\n[http]\nlisten = \"127.0.0.1:8080\"\n[[channels]]\ntype = \"email\"\nname = \"m\"\naddresses = [\"a@b.example\"]\nattachments_dir = \"/tmp\"\n[channels.listen]\naddress = \"0.0.0.0:8080\"\n[channels.smtp]\nhost = \"127.0.0.1\"\n",
                &[][..],
                "channels.m",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"email\"\nname = \"m\"\naddresses = [\"a@b.example\"]\nattachments_dir = \"/tmp\"\n[channels.listen]\naddress = \"[::]:2424\"\n[channels.smtp]\nhost = \"127.0.0.1\"\n[[channels]]\ntype = \"email\"\nname = \"n\"\naddresses = [\"c@b.example\"]\nattachments_dir = \"/tmp\"\n[channels.listen]\naddress = \"127.0.0.1:2424\"\n[channels.smtp]\nhost = \"127.0.0.1\"\n",
                &[][..],
                "channels.n",
            ),
            // Durations bounded, so that the times made from them cannot
            // overflow (a debug build panicked, a release one wrapped).
            (
                "[redis]\nurl = \"redis://x\"\n[routing]\nwrap_up_secs = 9223372036854775807\n",
                &[][..],
                "routing.wrap_up_secs",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[routing]\nsticky_memory_days = 9223372036854775807\n",
                &[][..],
                "routing.sticky_memory_days",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[shutdown]\ndrain_timeout_secs = 0\n",
                &[][..],
                "shutdown.drain_timeout_secs",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[routing.offer_timeout_secs]\nchat = 0\n",
                &[][..],
                "routing.offer_timeout_secs",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"q\"\nservice_level_secs = 9223372036854775807\n",
                &[][..],
                "routing.queues[0].service_level_secs",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"q\"\n[[routing.queues.overflow]]\nafter_secs = 9223372036854775807\n",
                &[][..],
                "routing.queues[0].overflow[0].after_secs",
            ),
            // An overflow step's answer is checked as the others are: an
            // empty one went out as an empty message, a misspelt
            // placeholder as written.
            (
                "[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"q\"\n[[routing.queues.overflow]]\nafter_secs = 60\nauto_answer = \" \"\n",
                &[][..],
                "routing.queues[0].overflow[0].auto_answer",
            ),
            (
                "[redis]\nurl = \"redis://x\"\n[[routing.queues]]\nname = \"q\"\n[[routing.queues.overflow]]\nafter_secs = 60\nauto_answer = \"Sorry {nmae}\"\n",
                &[][..],
                "routing.queues[0].overflow[0].auto_answer",
            ),
            // A problem that starts with a number keeps its words.
            (
                "[redis]\nurl = \"redis://x\"\n[router]\nblock_ms = 5\n",
                &[][..],
                "router.block_ms",
            ),
            (many_steps.as_str(), &[][..], "routing.queues[0].overflow"),
        ];
        for (text, vars, key) in cases {
            let f = file(text);
            let err = load(f.path(), env(vars)).unwrap_err();
            assert!(
                err.key.starts_with(key),
                "{text:?}: {err} does not name {key}"
            );
            assert!(!err.to_string().contains('\n'), "one line: {err}");
            assert!(err.problem.len() > 5, "{text:?}: says what is wrong: {err}");
        }
        let f = file("[redis]\nurl = \"redis://x\"\n[router]\nblock_ms = 5\n");
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.problem, "5 is below the minimum of 10", "{err}");
    }

    /// A chat's offline form is answered through the email channel it
    /// names: a name that is not configured, or not an email channel, is
    /// refused (the answers would wait in an outbox nobody reads).
    #[test]
    fn an_offline_form_needs_the_email_channel_it_names() {
        let chat = "[redis]\nurl = \"redis://x\"\n[[channels]]\ntype = \"chat\"\nname = \"website\"\n\
            session_secret = \"0123456789abcdef0123456789abcdef\"\n\
            [[channels.widgets]]\nid = \"shop\"\norigins = [\"https://shop.example.com\"]\n\
            [channels.offline]\nemail_channel = \"mail\"\naddress = \"help@support.example.com\"\n";
        let intake =
            "[[channels]]\ntype = \"intake_api\"\nname = \"mail\"\ntoken = \"0123456789abcdef0\"\n";
        let email = "[[channels]]\ntype = \"email\"\nname = \"mail\"\ndomains = [\"support.example.com\"]\n\
            attachments_dir = \"/tmp/switchboard-test-attachments\"\n[channels.listen]\naddress = \"127.0.0.1:2424\"\n\
            [channels.smtp]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\n";
        for (extra, problem) in [
            ("", "no channel is named \"mail\""),
            (intake, "is of type \"intake_api\", not \"email\""),
        ] {
            let f = file(&format!("{chat}{extra}"));
            let err = load(f.path(), env(&[])).unwrap_err();
            assert_eq!(err.key, "channels.website.offline.email_channel", "{err}");
            assert!(err.to_string().contains(problem), "{err}");
        }
        let f = file(&format!("{chat}{email}"));
        load(f.path(), env(&[])).unwrap();
    }

    /// A chat's uploads may take `upload_timeout_secs`; the daemon's
    /// deadline for every body must not end them sooner.
    #[test]
    fn a_chat_upload_time_beyond_the_body_deadline_is_refused() {
        let chat = |upload: u64, body: Option<u64>| {
            let http = body.map_or(String::new(), |b| {
                format!("[http]\nbody_timeout_secs = {b}\n")
            });
            format!(
                "[redis]\nurl = \"redis://x\"\n{http}[[channels]]\ntype = \"chat\"\nname = \"website\"\n\
                 session_secret = \"0123456789abcdef0123456789abcdef\"\nupload_timeout_secs = {upload}\n\
                 [[channels.widgets]]\nid = \"shop\"\norigins = [\"https://shop.example.com\"]\n"
            )
        };
        let f = file(&chat(120, None));
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "channels.website.upload_timeout_secs", "{err}");
        assert!(
            err.problem
                .starts_with("120 s is longer than http.body_timeout_secs (60 s)"),
            "{err}"
        );
        for ok in [chat(120, Some(120)), chat(60, None), chat(30, Some(45))] {
            let f = file(&ok);
            load(f.path(), env(&[])).unwrap();
        }
    }

    /// Twilio's hold loop asks routing every `hold_pause_secs`, the first
    /// time after the hold message too: a voice offer shorter than those
    /// and a short ring ran out before the agent's phone could ring (each
    /// a missed offer).
    #[test]
    fn a_voice_offer_shorter_than_the_hold_loop_needs_is_refused() {
        let twilio = |pause: u32, offer: u64, message: &str| {
            format!(
                "[redis]\nurl = \"redis://x\"\n[routing.offer_timeout_secs]\nvoice = {offer}\n\
                 [[channels]]\ntype = \"twilio\"\nname = \"phone\"\nauth_token = \"0123456789abcdef0123\"\n\
                 public_url = \"https://sb.example.com/channels/phone\"\nhold_pause_secs = {pause}\n\
                 hold_message = \"{message}\"\n"
            )
        };
        let f = file(&twilio(60, 20, ""));
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "routing.offer_timeout_secs.voice", "{err}");
        assert!(
            err.problem.starts_with(
                "20 s is shorter than channel \"phone\" needs (67 s, from its hold_pause_secs and hold_message)"
            ),
            "{err}"
        );
        // The default message (74 characters, counted 7 s) at a 20 s
        // pause fits the default 30 s offer no longer: the first /wait came
        // at about 25 s, too late to ring.
        let default_message =
            "Thank you for calling. Please hold; the next available agent will answer.".to_owned();
        let f = file(&twilio(20, 30, &default_message));
        let err = load(f.path(), env(&[])).unwrap_err();
        assert!(err.problem.contains("needs (34 s"), "{err}");
        for (pause, offer, message) in [
            (1, 8, ""),
            (10, 30, ""),
            (60, 67, ""),
            (5, 19, default_message.as_str()),
        ] {
            let f = file(&twilio(pause, offer, message));
            load(f.path(), env(&[])).unwrap();
        }
    }

    /// A value of the wrong type for a key that may hold a secret is not
    /// quoted back (serde's message quotes it): cluster nodes set from the
    /// environment as one string carried the password to the journal.
    /// Cluster seeds the cluster client would refuse at start (a password
    /// on one node only) are refused by `validate`, naming the key: the
    /// daemon passed ExecStartPre, then failed and restarted in a loop.
    #[test]
    fn cluster_seeds_the_client_refuses_are_refused() {
        let f = file(
            "[redis]\nmode = \"cluster\"\nurl = \"redis://default:pw@10.0.0.5:6379\"\ncluster_nodes = [\"redis://10.0.0.6:6379\"]\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("redis.cluster_nodes: "), "{err}");
        assert!(!err.contains("pw@"), "{err}");
        let ok = file(
            "[redis]\nmode = \"cluster\"\nurl = \"redis://10.0.0.5:6379\"\ncluster_nodes = [\"redis://10.0.0.6:6379\"]\n",
        );
        load(ok.path(), env(&[])).unwrap();
    }

    #[test]
    fn a_dedupe_window_redis_cannot_keep_is_refused() {
        let f = file(
            "[redis]\nurl = \"redis://db:6379\"\n[intake]\ndedupe_window_secs = 10000000000000000\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("intake.dedupe_window_secs: "), "{err}");
        assert!(err.contains("maximum"), "{err}");
    }

    /// A call's `hangup` finds it by its call id, which the intake keeps
    /// for its dedupe window: with a voice channel, a window shorter than
    /// the longest call and a day is refused (a long call's hangup found
    /// no call, and its agent stayed held until `max_call_secs`).
    #[test]
    fn a_dedupe_window_shorter_than_a_call_is_refused_with_voice() {
        let cti = |window: u64, max_call: u64| {
            format!(
                "[redis]\nurl = \"redis://x\"\n[intake]\ndedupe_window_secs = {window}\n\
                 [routing]\nmax_call_secs = {max_call}\n\
                 [[channels]]\ntype = \"cti\"\nname = \"pbx\"\ntoken = \"0123456789abcdef0123\"\n\
                 callback_url = \"https://pbx.example.com/dial\"\n"
            )
        };
        let f = file(&cti(3600, 14_400));
        let err = load(f.path(), env(&[])).unwrap_err();
        assert_eq!(err.key, "intake.dedupe_window_secs", "{err}");
        assert!(
            err.problem
                .starts_with("3600 s is shorter than channel \"pbx\" needs (100800 s"),
            "{err}"
        );
        let f = file(&cti(100_800, 14_400));
        load(f.path(), env(&[])).expect("a day longer than the longest call");
        // No longest call: a week.
        let f = file(&cti(604_799, 0));
        assert_eq!(
            load(f.path(), env(&[])).unwrap_err().key,
            "intake.dedupe_window_secs"
        );
        let f = file(&cti(604_800, 0));
        load(f.path(), env(&[])).expect("the default window");
        // Without a voice channel, a short window is the operator's choice.
        let f = file("[redis]\nurl = \"redis://x\"\n[intake]\ndedupe_window_secs = 3600\n");
        load(f.path(), env(&[])).expect("no voice channel");
    }

    /// Two daemons started with one host name and pid (containers on one
    /// host, each daemon pid 1) get names of their own.
    #[test]
    fn default_instance_names_differ() {
        let f = file("[redis]\nurl = \"redis://x\"\n");
        let config = load(f.path(), env(&[])).unwrap();
        let (a, b) = (config.instance_id(), config.instance_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn fcr_days_beyond_the_retention_are_refused() {
        let f = file(
            "[redis]\nurl = \"redis://db:6379\"\n[routing]\nretention_days = 1\n[records]\nfcr_days = 3\n",
        );
        let err = load(f.path(), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("records.fcr_days: "), "{err}");
        assert!(err.contains("retention_days (1)"), "{err}");
        let f = file(
            "[redis]\nurl = \"redis://db:6379\"\n[routing]\nretention_days = 3\n[records]\nfcr_days = 3\n",
        );
        load(f.path(), env(&[])).unwrap();
    }

    #[test]
    fn webhook_events_kept_beyond_the_retention_are_refused() {
        let hook = |hours: u64| {
            format!(
                "[redis]\nurl = \"redis://db:6379\"\n[routing]\nretention_days = 3\n[[webhooks]]\nname = \"crm\"\nurl = \"https://crm.example.com/hook\"\nsecret = \"0123456789abcdef0123\"\nmax_age_hours = {hours}\n"
            )
        };
        let f = file(&hook(73));
        let err = load(f.path(), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("webhooks.crm.max_age_hours: "), "{err}");
        assert!(err.contains("(72)"), "{err}");
        let f = file(&hook(72));
        load(f.path(), env(&[])).unwrap();
    }

    #[test]
    fn type_errors_do_not_quote_secrets() {
        let f = file("[redis]\nurl = \"redis://db:6379\"\n");
        let err = load(
            f.path(),
            env(&[(
                "SWITCHBOARD__REDIS__CLUSTER_NODES",
                "redis://:hunter2@10.0.0.6:6379",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("redis.cluster_nodes"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn show_config_never_prints_a_secret() {
        let f = file("[redis]\nurl = \"redis://default:hunter2@db.example:6379/0\"\n");
        // Nor does a Debug of the loaded configuration (a log line that
        // ever printed it).
        let loaded = format!("{:?}", load(f.path(), env(&[])).unwrap());
        assert!(!loaded.contains("hunter2"), "{loaded}");
        assert!(loaded.contains("db.example:6379"), "{loaded}");
        let url = raw_value(f.path(), env(&[]), "redis.url").unwrap();
        assert_eq!(url, "redis://default:***@db.example:6379/0");
        let from_env = raw_value(
            f.path(),
            env(&[("SWITCHBOARD__REDIS__URL", "redis://:s3cret@other:6379")]),
            "redis.url",
        )
        .unwrap();
        assert!(!from_env.contains("s3cret"), "{from_env}");
        assert!(raw_value(f.path(), env(&[]), "redis.password").is_err());
        // A token in a URL's query (webhooks, callbacks) is a secret too.
        let hooks =
            file("[[webhooks]]\nurl = \"https://crm.example/hook?token=s3cret&v=2#frag\"\n");
        assert_eq!(
            raw_value(hooks.path(), env(&[]), "webhooks[0].url").unwrap(),
            "https://crm.example/hook?token=***&v=***"
        );
        assert_eq!(
            raw_value(f.path(), env(&[]), "http.listen").unwrap(),
            "",
            "unset keys print nothing"
        );
    }

    #[test]
    fn unknown_keys_name_themselves() {
        let f = file("[redis]\nurl = \"redis://x\"\nbogus = 1\n");
        let err = load(f.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
