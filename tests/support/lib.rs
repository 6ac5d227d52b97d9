//! Helpers for end-to-end tests: run the real daemon as a child process
//! against a private redis-server and talk to it over HTTP.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod browser;
mod keepalive;

pub use keepalive::{KeepAlive, RawReply};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use switchboard_testkit::{RedisServer, free_port};

/// The intake API token every test daemon is configured with.
pub const TOKEN: &str = "e2e-token-0123456789abcdef";

/// A `switchboard` process.
pub struct Daemon {
    binary: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Writes a configuration (redis at `redis_url`, an intake API channel
    /// named `api`, `extra` appended) and starts the daemon, waiting for
    /// `/healthz`.
    pub fn start(binary: &str, redis_url: &str, extra: &str) -> Daemon {
        Self::start_with_env(binary, redis_url, extra, &[])
    }

    pub fn start_with_env(
        binary: &str,
        redis_url: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-e2e-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let config = format!(
            "[redis]\nurl = \"{redis_url}\"\nconnect_timeout_ms = 300\nresponse_timeout_ms = 1000\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\
             [log]\nlevel = \"warn\"\n\
             [router]\nblock_ms = 200\nreclaim_idle_ms = 2000\n\
             {extra}\n\
             [[channels]]\ntype = \"intake_api\"\nname = \"api\"\ntoken = \"{TOKEN}\"\n"
        );
        std::fs::write(dir.path().join("switchboard.toml"), config).unwrap();
        let mut daemon = Daemon {
            binary: PathBuf::from(binary),
            dir,
            port,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        daemon.spawn();
        daemon
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.config_path())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("daemon exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not listen on {}: {}", self.port, self.log());
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The process id, unless killed.
    pub fn running_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (e.g. "TERM") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Stops the process with SIGTERM (as systemd does), waits for it to
    /// exit 0 and starts it again.
    pub fn restart_gracefully(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(30));
        assert!(status.success(), "exit status {status}: {}", self.log());
        self.spawn();
    }

    /// Starts the process again with the same configuration and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP/1.1 client with keep-alive.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A status and a body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: hyper::HeaderMap,
}

impl Reply {
    /// A header's value, or "" when there is none.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Asserts a documented error answer: `status` with `{"error":{"code"}}`.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, code: &str) {
        let json = self.json();
        assert_eq!(
            (self.status, json["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.body
        );
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

/// The daemon's `/metrics` text at `base`, through a new connection (a
/// pooled one may be one the daemon has closed).
pub async fn metrics_text(base: &str) -> String {
    Http::new()
        .get(&format!("{base}/metrics"))
        .await
        .unwrap()
        .body
}

impl Http {
    pub fn new() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(connector),
        }
    }

    /// Sends `request`; "timed out" when the answer, body included, has
    /// not come within 10 s.
    async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Result<Reply, String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
                headers,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        let request = hyper::Request::get(url).body(Full::default()).unwrap();
        self.send(request).await
    }

    /// Any request, with a bearer token and a JSON body when given.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, String> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::default(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// POSTs a raw body with the given headers.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        self.call_with("POST", url, headers, body).await
    }

    /// Sends `method` with a raw body and the given headers.
    pub async fn call_with(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(body.into())).unwrap())
            .await
    }

    /// POSTs `body` to the intake API with the test token.
    pub async fn submit(&self, base: &str, body: &serde_json::Value) -> Result<Reply, String> {
        self.submit_raw(base, Bytes::from(body.to_string())).await
    }

    /// POSTs an already encoded body to the intake API with the test token.
    pub async fn submit_raw(&self, base: &str, body: Bytes) -> Result<Reply, String> {
        let request = hyper::Request::post(format!("{base}/channels/api/events"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        self.send(request).await
    }

    /// A contact's routing record (`GET /api/v1/contacts/{id}/routing`)
    /// as a supervisor with `token` sees it; `Null` when the call fails.
    /// Agent `id` as the supervisors' `GET /api/v1/agents` lists it
    /// (`Null` when it is not listed).
    pub async fn agent_view(&self, base: &str, token: &str, id: &str) -> serde_json::Value {
        let agents = self
            .call("GET", &format!("{base}/api/v1/agents"), Some(token), None)
            .await
            .map_or(serde_json::Value::Null, |r| r.json());
        agents["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == id))
            .cloned()
            .unwrap_or_default()
    }

    pub async fn routing(&self, base: &str, token: &str, contact: &str) -> serde_json::Value {
        self.call(
            "GET",
            &format!("{base}/api/v1/contacts/{contact}/routing"),
            Some(token),
            None,
        )
        .await
        .map_or(serde_json::Value::Null, |r| r.json())
    }
}

/// An intake API event from `customer` with provider id `id`.
pub fn chat_event(customer: &str, id: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "channel": "chat",
        "address": "widget-1",
        "customer": { "scheme": "visitor", "value": customer },
        "provider_message_id": id,
        "text": text,
    })
}

/// Polls `check` until it is true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every stored inbound message, as (provider message id, message id,
/// conversation key), read straight from Redis.
pub async fn stored_messages(redis_url: &str) -> Vec<(String, String, String)> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("sb:*:conv:*:log")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let reply: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut conn, &key)
                .await
                .unwrap();
        for entry in reply.ids {
            let msg: String = entry.get("msg").unwrap();
            let id: String = entry.get("id").unwrap();
            let json: serde_json::Value = serde_json::from_str(&msg).unwrap();
            let provider = json["provider_message_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.push((provider, id, key.clone()));
        }
    }
    out
}

/// The repository's root (for scripts and deploy files).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// `INFO commandstats` as command → (calls, usec).
pub async fn commandstats(url: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in info.lines() {
        // cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,...
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    out
}

/// What Redis ran between two `commandstats` readings: (command, calls,
/// usec), the most expensive first. Commands run by a script are counted
/// too, and their time is also in the script's (`evalsha`'s).
pub fn commandstats_between(
    before: &std::collections::BTreeMap<String, (u64, u64)>,
    after: std::collections::BTreeMap<String, (u64, u64)>,
) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = after
        .into_iter()
        .map(|(name, (calls, usec))| {
            let (c0, u0) = before.get(&name).copied().unwrap_or((0, 0));
            (name, calls.saturating_sub(c0), usec.saturating_sub(u0))
        })
        .filter(|(_, calls, _)| *calls > 0)
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.2));
    out
}

/// How long a websocket upgrade may take before it counts as failed (a
/// daemon that accepts and never answers fails a test, not hangs it).
const UPGRADE_WITHIN: Duration = Duration::from_secs(10);

/// An agent's websocket to the daemon's agent API.
pub struct AgentSocket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl AgentSocket {
    /// Connects with the token in the Authorization header.
    pub async fn connect(base: &str, token: &str) -> Result<AgentSocket, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        // Without Nagle's algorithm, as browsers open their sockets: the
        // console's small frames go out at once.
        let (stream, _) = tokio::time::timeout(
            UPGRADE_WITHIN,
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .map_err(|_| "the upgrade timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(AgentSocket { stream })
    }

    /// Connects with a one-time ticket (`POST /api/v1/ws-ticket`) in the
    /// URL and no header, as the console does.
    pub async fn connect_with_ticket(base: &str, ticket: &str) -> Result<AgentSocket, String> {
        let url = format!(
            "{}/api/v1/ws?ticket={ticket}",
            base.replacen("http://", "ws://", 1)
        );
        let (stream, _) = tokio::time::timeout(
            UPGRADE_WITHIN,
            tokio_tungstenite::connect_async_with_config(url, None, true),
        )
        .await
        .map_err(|_| "the upgrade timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(AgentSocket { stream })
    }

    /// Connects, retrying for up to 5 s while the token is refused: agents
    /// from the configuration are written to Redis just after the daemon
    /// starts listening.
    pub async fn connect_when_ready(base: &str, token: &str) -> AgentSocket {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match AgentSocket::connect(base, token).await {
                Ok(ws) => return ws,
                Err(e) if Instant::now() >= deadline => panic!("cannot connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Connects when ready, reads the `hello` and sets the agent available
    /// (waiting for the `result` of that).
    pub async fn connect_available(base: &str, token: &str) -> AgentSocket {
        let mut ws = AgentSocket::connect_when_ready(base, token).await;
        let (hello, _) = ws.until("hello", Duration::from_secs(5)).await;
        assert!(hello.is_some(), "no hello");
        ws.send(
            serde_json::json!({"type": "presence", "ref": "available", "presence": "available"}),
        )
        .await;
        let (result, seen) = ws.until("result", Duration::from_secs(5)).await;
        let result = result.unwrap_or_else(|| panic!("presence not set: {seen:?}"));
        assert_eq!(result["ok"], true, "{result}");
        ws
    }

    pub async fn send(&mut self, frame: serde_json::Value) {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// Sends `text` as it is, in one text frame.
    pub async fn send_raw(&mut self, text: String) -> bool {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await
            .is_ok()
    }

    /// Sends `bytes` in one binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> bool {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                bytes.into(),
            ))
            .await
            .is_ok()
    }

    /// The code of the close frame the server sends within `limit`, skipping
    /// other frames; `None` when none came (or the connection just broke).
    pub async fn close_code(&mut self, limit: Duration) -> Option<u16> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next())
                .await
                .ok()??
            {
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends a frame; false when the connection is gone.
    pub async fn try_send(&mut self, frame: serde_json::Value) -> bool {
        use futures_util::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .is_ok()
    }

    /// The next JSON frame: `Ok(None)` when none came within `limit`,
    /// `Err(())` when the connection is gone.
    pub async fn recv(&mut self, limit: Duration) -> Result<Option<serde_json::Value>, ()> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => return Err(()),
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                    return Ok(serde_json::from_str(text.as_str()).ok());
                }
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => return Err(()),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next JSON frame, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<serde_json::Value> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = tokio::time::timeout(left, self.stream.next())
                .await
                .ok()??
                .ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).ok();
            }
        }
    }

    /// Frames until one of `kind` arrives (others are returned too).
    pub async fn until(
        &mut self,
        kind: &str,
        limit: Duration,
    ) -> (Option<serde_json::Value>, Vec<serde_json::Value>) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(frame) = self
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            if frame["type"] == kind {
                return (Some(frame), seen);
            }
            seen.push(frame);
        }
        (None, seen)
    }
}

/// Raw XADD rate on `redis` with `clients` connections, unpipelined: the
/// yardstick benchmarks report next to their own figures. Measured with
/// redis-benchmark when installed, else with the same load from Rust.
pub fn raw_xadd_rate(
    redis: &RedisServer,
    runtime: &tokio::runtime::Runtime,
    secs: u64,
    clients: usize,
) -> (f64, &'static str) {
    let requests = 400_000.to_string();
    let port = redis.port().to_string();
    let clients_arg = clients.to_string();
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            &clients_arg,
            "-n",
            &requests,
            "-P",
            "1",
            "-q",
        ])
        .args(["XADD", "bench:raw", "*", "field", "value"])
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        // "XADD bench:raw * field value: 81234.56 requests per second, p50=…"
        let rate = text
            .rsplit("\r")
            .chain(text.lines())
            .filter_map(|l| l.split(": ").nth(1))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.parse::<f64>().ok())
            .last();
        if let Some(rate) = rate {
            return (rate, "redis-benchmark");
        }
    }
    let url = redis.url();
    let rate = runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _: String = redis::cmd("XADD")
                        .arg("bench:raw")
                        .arg("*")
                        .arg("field")
                        .arg("value")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total as f64 / started.elapsed().as_secs_f64()
    });
    (rate, "Rust client; redis-benchmark not installed")
}
