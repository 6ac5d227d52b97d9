//! The binary from the outside: configuration errors, SIGTERM, sd_notify,
//! the intake API's refusals, risky Redis settings, and the deploy files.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;
use switchboard_e2e::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-under-test");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An intake request whose head is complete and whose body stops after
/// 10 bytes: the connection, to hold it open or read its answer.
async fn body_that_never_ends(base: &str) -> tokio::net::TcpStream {
    body_held_back(base, &chat_event("c1", "slow-1", "hi").to_string()).await
}

/// An intake request of `body` whose body stops after its first 10 bytes.
async fn body_held_back(base: &str, body: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /channels/api/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..10]).await.unwrap();
    tcp
}

#[test]
fn invalid_configurations_exit_non_zero_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: &[Case] = &[
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\nbogus = 1\n",
            &[],
            "unknown field `bogus`",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n[htp]\n",
            &[],
            "unknown field `htp`",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n[http]\nlisten = \"x\"\n",
            &[],
            "http.listen",
        ),
        ("[redis]\nurl = \"mysql://x\"\n", &[], "redis.url"),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n[routing]\nretention_days = 0\n",
            &[],
            "routing.retention_days",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n",
            &[("SWITCHBOARD__REDIS__PARTITIONS", "0")],
            "partitions",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n",
            &[("SWITCHBOARD__REDIS__NOPE", "1")],
            "unknown field `nope`",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n",
            &[("SWITCHBOARD__HTTP__BODY_TIMEOUT_SECS", "0")],
            "http.body_timeout_secs",
        ),
        ("[redis\n", &[], "c.toml"),
        // Tokio panicked on it (exit 101, a panic message).
        (
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n",
            &[("TOKIO_WORKER_THREADS", "0")],
            "TOKIO_WORKER_THREADS",
        ),
    ];
    for (text, env, expected) in cases {
        std::fs::write(&path, text).unwrap();
        for cmd in [&["validate", "--config"][..], &["--config"][..]] {
            let mut args = cmd.to_vec();
            let p = path.to_str().unwrap();
            args.push(p);
            let (code, stderr) = run(&args, env);
            assert_eq!(code, 2, "{args:?} {text:?}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{text:?}: {stderr:?} does not say {expected}"
            );
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "not one line: {stderr:?}"
            );
        }
    }
    // A well-formed URL nobody answers at: validate --check-redis says so.
    std::fs::write(
        &path,
        format!("[redis]\nurl = \"redis://127.0.0.1:{}\"\n", free_port()),
    )
    .unwrap();
    let (code, stderr) = run(
        &[
            "validate",
            "--check-redis",
            "--config",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
    let (code, _) = run(&["validate", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
}

#[test]
fn the_shipped_configuration_validates_with_a_redis_url() {
    let path = repo_root().join("config/switchboard.toml");
    let (code, stderr) = run(
        &["validate", "--config", path.to_str().unwrap()],
        &[("SWITCHBOARD__REDIS__URL", "redis://127.0.0.1:6379")],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_speaking_sd_notify() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // Read all along, on a thread of its own: a socket left unread fills
    // (`net.unix.max_dgram_qlen` is 10 here) and the daemon's next
    // notification waits for room.
    let notes = Notes::read(socket);
    let mut daemon = Daemon::start_with_env(
        BIN,
        &redis.url(),
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    notes.wait_for(&["READY=1", "WATCHDOG=1"]);

    // Requests in flight when SIGTERM arrives either finish (200, stored) or
    // are refused before anything is acknowledged; nothing hangs.
    let http = Http::new();
    let base = daemon.base();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            http.submit(&base, &chat_event(&format!("c{i}"), &format!("t{i}"), "hi"))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(reply) => {
                assert!(
                    reply.status == 200 || reply.status == 503,
                    "{} {}",
                    reply.status,
                    reply.body
                );
                ok += usize::from(reply.status == 200);
            }
            // Refused or cut when the listener closed: never left waiting.
            Err(e) => assert_ne!(e, "timed out", "a request hung through the drain"),
        }
    }
    let stored = stored_messages(&redis.url()).await;
    assert!(
        stored.len() >= ok,
        "{ok} acknowledged but {} stored",
        stored.len()
    );
    let seen = notes.wait_for(&["STOPPING=1"]);
    // With it, how long the stop may take: 10 s of drain (the default), as
    // long again for deliveries, 5 s to exit.
    assert!(seen.contains("EXTEND_TIMEOUT_USEC=25000000"), "{seen:?}");
}

/// A notify socket nobody reads (its queue full of watchdog pings) does
/// not stop the daemon: each notification waits for room on a blocking
/// thread, not on the threads that drain and exit. Before, the pings and
/// then STOPPING blocked the runtime's threads and SIGTERM never ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_socket_nobody_reads_does_not_hold_the_daemon() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = Daemon::start_with_env(
        BIN,
        &redis.url(),
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
        ],
    );
    // A ping every 50 ms: the socket's queue is full well within this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = Http::new()
        .get(&format!("{}/healthz", daemon.base()))
        .await
        .expect("the daemon answers");
    assert_eq!(health.status, 200, "{}", health.body);
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    drop(socket);
}

/// The sd_notify datagrams a daemon sends, read on a thread as they come.
struct Notes {
    seen: std::sync::Arc<std::sync::Mutex<String>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Notes {
    fn read(socket: UnixDatagram) -> Notes {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stop) = (seen.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let mut seen = into.lock().unwrap();
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                    seen.push('\n');
                }
            }
        });
        Notes { seen, done }
    }

    /// Everything received once it holds each of `wanted` (panics after 15 s).
    fn wait_for(&self, wanted: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if wanted.iter().all(|w| seen.contains(w)) {
                return seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {wanted:?} within 15 s; got {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Notes {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The instance compares its clock with Redis's and shows the offset: on
/// one machine, well within a second.
#[tokio::test]
async fn the_offset_to_redis_clock_is_a_gauge() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(BIN, &redis.url(), "");
    let base = daemon.base();
    let offset = || async {
        metrics_text(&base)
            .await
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_redis_clock_offset_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            offset().await.is_some()
        })
        .await,
        "no clock offset in /metrics"
    );
    let seconds = offset().await.unwrap();
    assert!(seconds.abs() < 1.0, "{seconds} s");
}

/// A request whose body is still arriving when SIGTERM comes is finished,
/// answered 200 and stored before the daemon exits 0: the drain waits
/// for it (the test above lets requests be refused or finished, and would
/// pass if all were cut off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(BIN, &redis.url(), "");
    let base = daemon.base();
    let body = chat_event("c-slow", "slow-1", "hi").to_string();
    let mut tcp = body_held_back(&base, &body).await;
    // Time for the daemon to read the request's head (a connection whose
    // head it has not read yet is idle to the drain), on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(daemon.is_running(), "exited with a request in flight");
    tcp.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer: {answer}");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        daemon.log()
    );
    let status = daemon.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let stored = stored_messages(&redis.url()).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
}

/// SIGHUP (which would end a process that does not handle it) is logged
/// and ignored: the daemon goes on serving (docs/operations.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_ignored() {
    let redis = RedisServer::start();
    let mut daemon = Daemon::start(BIN, &redis.url(), "");
    let base = daemon.base();
    daemon.signal("HUP");
    let logged = eventually(Duration::from_secs(5), || {
        let log = daemon.log();
        async move { log.contains("SIGHUP received") }
    })
    .await;
    assert!(logged, "{}", daemon.log());
    assert!(daemon.is_running(), "{}", daemon.log());
    let http = Http::new();
    let ready = eventually(Duration::from_secs(10), || {
        let (http, url) = (http.clone(), format!("{base}/readyz"));
        async move { http.get(&url).await.is_ok_and(|r| r.status == 200) }
    })
    .await;
    assert!(ready, "{}", daemon.log());
    assert!(daemon.is_running(), "{}", daemon.log());
    let reply = http
        .submit(&base, &chat_event("c-hup", "hup-1", "still here"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Draining stops the channels' own listeners too, not only the HTTP
/// server: while a slow HTTP request holds the drain open, the LMTP
/// listener takes no new connection and an idle session is answered 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_email_listener_while_http_requests_drain() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let redis = RedisServer::start();
    let attachments = tempfile::tempdir().unwrap();
    let (lmtp, relay) = (free_port(), free_port());
    let extra = format!(
        "[shutdown]\ndrain_timeout_secs = 20\n\
         [[channels]]\ntype = \"email\"\nname = \"mail\"\naddresses = [\"help@example.test\"]\n\
         attachments_dir = \"{}\"\n\
         [channels.listen]\naddress = \"127.0.0.1:{lmtp}\"\nprotocol = \"lmtp\"\n\
         [channels.smtp]\nhost = \"127.0.0.1\"\nport = {relay}\nsecurity = \"none\"\n",
        attachments.path().display()
    );
    let mut daemon = Daemon::start_with_env(
        BIN,
        &redis.url(),
        &extra,
        &[("SWITCHBOARD__HTTP__BODY_TIMEOUT_SECS", "30")],
    );
    let lmtp_addr = format!("127.0.0.1:{lmtp}");
    let connect = || async {
        tokio::net::TcpStream::connect(&lmtp_addr)
            .await
            .map(BufReader::new)
    };
    let mut idle = None;
    for _ in 0..100 {
        if let Ok(s) = connect().await {
            idle = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut idle = idle.expect("the LMTP listener never came up");
    // Each line within 10 s, and an end of stream is a failure, not a
    // loop that never ends.
    async fn next_line(s: &mut BufReader<tokio::net::TcpStream>, line: &mut String) {
        line.clear();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_line(line))
            .await
            .expect("an LMTP line within 10 s")
            .unwrap();
        assert!(read > 0, "the LMTP listener closed the connection");
    }
    let mut line = String::new();
    next_line(&mut idle, &mut line).await;
    assert!(line.starts_with("220"), "{line}");
    idle.get_mut().write_all(b"LHLO client\r\n").await.unwrap();
    loop {
        next_line(&mut idle, &mut line).await;
        if line.starts_with("250 ") {
            break;
        }
    }

    // A request whose body never completes keeps the HTTP drain open.
    // (Given a second to be read: a request whose head the daemon has not
    // read yet is an idle connection, and the drain would not wait for it.)
    let base = daemon.base();
    let slow = body_that_never_ends(&base).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    daemon.signal("TERM");

    line.clear();
    let farewell = tokio::time::timeout(Duration::from_secs(5), idle.read_line(&mut line)).await;
    assert!(
        farewell.is_ok(),
        "the idle session was kept during the drain"
    );
    assert!(line.starts_with("421"), "idle session got {line:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        daemon.is_running(),
        "the drain ended early: {}",
        daemon.log()
    );
    // A new connection is refused, or closed without a greeting.
    if let Ok(mut late) = connect().await {
        line.clear();
        let read = tokio::time::timeout(Duration::from_secs(5), late.read_line(&mut line)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))) || line.starts_with("421"),
            "a new LMTP session was taken while draining: {line:?}"
        );
    }

    drop(slow);
    let status = daemon.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_api_refuses_bad_input_clearly_and_counts_it() {
    let redis = RedisServer::start();
    let daemon = Daemon::start(BIN, &redis.url(), "[intake]\nmax_text_bytes = 2048\n");
    let base = daemon.base();
    let http = Http::new();
    let post = |auth: Option<&'static str>, body: String| {
        let mut request = hyper::Request::post(format!("{base}/channels/api/events"))
            .header("content-type", "application/json");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        (request, body)
    };
    let bearer = Box::leak(format!("Bearer {TOKEN}").into_boxed_str());
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let send = |(request, body): (hyper::http::request::Builder, String)| {
        let client = client.clone();
        async move {
            let response = client
                .request(
                    request
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let good = chat_event("c1", "g1", "hi").to_string();
    let cases = [
        (post(None, good.clone()), 401, "unauthorized"),
        (
            post(Some("Bearer wrong-token-0123456789"), good.clone()),
            401,
            "unauthorized",
        ),
        (post(Some(bearer), "{not json".into()), 400, "bad_json"),
        (
            post(
                Some(bearer),
                r#"{"channel":"fax","customer":{"scheme":"v","value":"x"},"text":"hi"}"#.into(),
            ),
            400,
            "bad_json",
        ),
        (
            post(
                Some(bearer),
                chat_event("c1", "g2", &"x".repeat(3000)).to_string(),
            ),
            422,
            "invalid_event",
        ),
        (
            post(Some(bearer), chat_event("c1", "g3", "   ").to_string()),
            422,
            "invalid_event",
        ),
        (post(Some(bearer), "x".repeat(300 * 1024)), 413, "too_large"),
    ];
    for (request, status, code) in cases {
        let (got, body) = send(request).await;
        assert_eq!(got, status, "{body}");
        if !code.is_empty() {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"]["code"], code, "{body}");
        }
    }
    // The token first: a stranger's large body is a 401, not a 413. The
    // server answers without reading the body and closes the connection,
    // so the client, still writing it, may see a reset instead of the
    // answer: tried again, and never anything but 401.
    let mut reset = 0;
    let mut answered = None;
    for _ in 0..5 {
        let request = post(
            Some("Bearer wrong-token-0123456789"),
            "x".repeat(300 * 1024),
        );
        // A client of its own: the connection the server closes must not
        // go back to the pool the other requests use.
        let stranger =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let (request, body) = request;
        let sent = stranger
            .request(
                request
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap(),
            )
            .await;
        match sent {
            Ok(response) => {
                answered = Some(response.status().as_u16());
                break;
            }
            Err(_) => reset += 1,
        }
    }
    assert_eq!(answered, Some(401), "{reset} tries reset");
    // axum's own refusals, answered as the API's JSON and counted (they
    // were plain text, uncounted): a path that is not UTF-8, a method the
    // route does not take, a path the channel does not serve.
    let odd = [
        (
            hyper::Request::post(format!("{base}/channels/api/contacts/%FF/end"))
                .header("authorization", &*bearer),
            400,
            "bad_request",
        ),
        (
            hyper::Request::get(format!("{base}/channels/api/events")),
            405,
            "method_not_allowed",
        ),
        (
            hyper::Request::post(format!("{base}/channels/api/event"))
                .header("authorization", &*bearer),
            404,
            "not_found",
        ),
    ];
    for (request, status, code) in odd {
        let (got, body) = send((request, String::new())).await;
        assert_eq!(got, status, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], code, "{body}");
    }
    assert!(
        stored_messages(&redis.url()).await.is_empty(),
        "a refused request stored something"
    );
    let metrics = http.get(&format!("{base}/metrics")).await.unwrap().body;
    let unauthorized = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchboard_intake_api_rejected_total{") && l.contains("unauthorized")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or_default();
    assert!(
        (3..=3 + reset).contains(&unauthorized),
        "{unauthorized} unauthorized counted ({reset} tries reset):\n{metrics}"
    );
    for reason in [
        "bad_json\"} 2",
        "invalid_event\"} 2",
        "too_large\"} 1",
        "bad_request\"} 1",
        "method_not_allowed\"} 1",
        "not_found\"} 1",
    ] {
        assert!(metrics.contains(reason), "{reason} not counted:\n{metrics}");
    }
    let (status, _) = send(post(Some(bearer), good)).await;
    assert_eq!(status, 200);
    // The scheme's name in any case (RFC 9110 §11.1), as the agent API
    // reads it: `bearer` was refused with 401.
    let lower: &'static str = Box::leak(bearer.replacen("Bearer", "bearer", 1).into_boxed_str());
    let (status, body) = send(post(Some(lower), chat_event("c1", "g4", "hi").to_string())).await;
    assert_eq!(status, 200, "{body}");
}

/// A body that trickles in past `http.body_timeout_secs` gets 408
/// `body_timeout` (counted), and stores nothing; the connection is not
/// held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_trickles_past_its_deadline_gets_408() {
    use tokio::io::AsyncReadExt;
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_env(
        BIN,
        &redis.url(),
        "",
        &[("SWITCHBOARD__HTTP__BODY_TIMEOUT_SECS", "1")],
    );
    let base = daemon.base();
    let mut tcp = body_that_never_ends(&base).await;
    let started = std::time::Instant::now();
    // The rest never comes; the answer does, and then the connection ends.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the connection was held: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stored_messages(&redis.url()).await.is_empty());
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains("switchboard_http_body_timeouts_total 1"),
        "{metrics}"
    );
}

/// A request head that trickles in (a byte now and then, never the end)
/// is cut off after `http.header_timeout_secs`: it held a connection and
/// its task for ever (hyper's own limit was off without a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_trickles_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_env(
        BIN,
        &redis.url(),
        "",
        &[("SWITCHBOARD__HTTP__HEADER_TIMEOUT_SECS", "1")],
    );
    let base = daemon.base();
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the connection was held open"
        );
        // One byte at a time, never the end of the head.
        if tcp.write_all(b"a").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true, // an error answer, then the close
            Err(_) => {}
        }
    };
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Ordinary requests still work.
    let ok = Http::new().get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_could_lose_acknowledged_contacts_is_reported() {
    // Redis's own defaults: no append-only file; and an evicting policy.
    let redis =
        RedisServer::start_with(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]);
    let daemon = Daemon::start(BIN, &redis.url(), "");
    let http = Http::new();
    let metrics = format!("{}/metrics", daemon.base());
    let reported = eventually(Duration::from_secs(10), || async {
        http.get(&metrics).await.is_ok_and(|r| {
            r.body
                .contains("switchboard_redis_risky_settings{risk=\"loss\"} 2")
        })
    })
    .await;
    assert!(reported, "gauge not set; log:\n{}", daemon.log());
    // The warnings are logged after the gauge is set, by the log's own
    // thread: looked for until they come.
    let named = ["appendonly = no", "maxmemory-policy = allkeys-lru"];
    eventually(Duration::from_secs(5), || async {
        let log = daemon.log();
        named
            .iter()
            .all(|setting| log.contains(&format!("Redis setting {setting}")))
    })
    .await;
    let log = daemon.log();
    for setting in named {
        assert!(
            log.contains(&format!("Redis setting {setting}")),
            "{setting} not named in the log:\n{log}"
        );
    }
    assert!(
        !log.contains("stream-node-max-bytes"),
        "a recommended setting is not reported:\n{log}"
    );
}

/// A channel that stops with an error (here: its listening port is taken)
/// stops the instance, non-zero and naming the channel, rather than leaving
/// it "ready" with the channel's replies never sent.
#[test]
fn a_channel_that_fails_at_run_time_stops_the_instance() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
             [[channels]]\ntype = \"email\"\nname = \"mail\"\n\
             addresses = [\"help@support.example.com\"]\nattachments_dir = \"{}\"\n\
             [channels.listen]\naddress = \"127.0.0.1:{port}\"\n\
             [channels.smtp]\nhost = \"127.0.0.1\"\n",
            redis.url(),
            free_port(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running with a dead channel:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("channels.mail: stopped"), "{stderr}");
    drop(taken);
}

#[test]
fn deploy_unit_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing: scripts/test.sh installs systemd");
    };
    assert!(out.status.success());
    // The unit names /usr/bin/switchboard; verify it against this build.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("deploy/switchboard.service")).unwrap();
    let unit = unit.replace("/usr/bin/switchboard", BIN);
    let path = dir.path().join("switchboard.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only our unit's own lines count; the host may have broken units of its own.
    let ours: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("switchboard.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
