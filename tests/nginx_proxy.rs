//! `deploy/nginx-switchboard.conf` in front of the real daemon, with the real
//! nginx from Debian's packages: what the example promises holds. Plain
//! HTTP on a free port instead of TLS on 443 (TLS is nginx's own business;
//! the file's certificate lines are left out), everything else as shipped:
//!
//! - requests and webhook-style POSTs pass through, on kept-alive upstream
//!   connections, also after one sat idle longer than the daemon keeps an
//!   idle connection (nginx drops a cached connection the daemon closed;
//!   the file's `keepalive_timeout` keeps nginx from sending a request on
//!   one just as the daemon closes it, a race no test here can time);
//! - the agent API's websocket upgrades through it, with a ticket;
//! - the access log leaves out query strings (no ticket in it);
//! - `/healthz` answers a client on this host (the site allows loopback
//!   and 10.0.0.0/8 to health and metrics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_e2e::*;

const OLENA: &str = "olena-token-0123456789";

fn nginx_binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// nginx running the shipped site in `dir`, in front of `upstream`.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(upstream: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let shipped =
            std::fs::read_to_string(repo_root().join("deploy/nginx-switchboard.conf")).unwrap();
        let d = dir.path().display().to_string();
        let mut site = String::new();
        for line in shipped.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("ssl_certificate") {
                continue;
            }
            let line = if trimmed.starts_with("listen ") {
                format!("    listen 127.0.0.1:{port};")
            } else {
                line.replace(
                    "server 127.0.0.1:8080;",
                    &format!("server 127.0.0.1:{upstream};"),
                )
                .replace("/var/log/nginx/", &format!("{d}/"))
            };
            site.push_str(&line);
            site.push('\n');
        }
        assert!(
            site.contains(&format!("server 127.0.0.1:{upstream};")),
            "{site}"
        );
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        // What /etc/nginx/nginx.conf gives a site, kept in the directory.
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\n\
                 events {{}}\nhttp {{\n  access_log {d}/default.log;\n  \
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
                 include {d}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(nginx_binary())
            .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {:?}: {e}. Install it (`apt-get install -y nginx`; \
                     scripts/test.sh does) or set SWITCHBOARD_TEST_NGINX",
                    nginx_binary()
                )
            });
        let nginx = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                nginx.file("error.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_site_proxies_requests_and_agent_websockets() {
    let redis = RedisServer::start();
    let daemon = Daemon::start_with_env(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &format!(
            "[[routing.queues]]\nname = \"general\"\n\n\
             [[routing.agents]]\nid = \"olena\"\ncapacity = {{ chat = 2 }}\ntoken = \"{OLENA}\"\n"
        ),
        // Idle keep-alive connections closed after 3 s.
        &[("SWITCHBOARD__HTTP__HEADER_TIMEOUT_SECS", "3")],
    );
    let nginx = Nginx::start(daemon.port);
    let base = nginx.base();
    let http = Http::new();

    let health = http.get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status, 200, "{}", nginx.file("error.log"));

    // Through the proxy, a submission is stored; again after the upstream
    // connection sat idle past the daemon's limit.
    let first = http
        .submit(&base, &chat_event("c1", "m1", "hello"))
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = http
        .submit(&base, &chat_event("c2", "m2", "hello again"))
        .await
        .unwrap();
    assert_eq!(
        second.status,
        200,
        "{}\n{}",
        second.body,
        nginx.file("error.log")
    );

    // The agent's websocket, opened with a ticket through the proxy.
    let api = format!("{base}/api/v1");
    let mut ticket = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ticket.is_none() && Instant::now() < deadline {
        let r = http
            .call("POST", &format!("{api}/ws-ticket"), Some(OLENA), None)
            .await
            .unwrap();
        if r.status == 200 {
            ticket = r.json()["ticket"].as_str().map(str::to_owned);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ticket = ticket.expect("a ticket");
    let mut ws = AgentSocket::connect_with_ticket(&base, &ticket)
        .await
        .unwrap_or_else(|e| panic!("no upgrade through nginx: {e}\n{}", nginx.file("error.log")));
    let hello = ws.next(Duration::from_secs(5)).await.expect("hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    ws.send(json!({"type": "presence", "presence": "available"}))
        .await;
    let (offer, seen) = ws.until("offer", Duration::from_secs(10)).await;
    assert!(offer.is_some(), "no offer through the proxy: {seen:?}");

    // The access log has the requests, without their query strings (a
    // websocket is written once it closes).
    drop(ws);
    let upgraded = "\"GET /api/v1/ws HTTP/1.1\" 101";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut access = nginx.file("switchboard.access.log");
    while !access.contains(upgraded) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        access = nginx.file("switchboard.access.log");
    }
    assert!(access.contains(upgraded), "{access}");
    assert!(access.contains("POST /channels/api/events"), "{access}");
    assert!(
        !access.contains(&ticket),
        "the ticket is in the log:\n{access}"
    );
    assert!(!access.contains("ticket="), "{access}");
}
