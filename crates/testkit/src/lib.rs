//! Test harness shared by every crate that needs Redis.
//!
//! [`RedisServer::start`] runs a private `redis-server` on a free loopback
//! port with its data in a temporary directory, and kills it on drop. Tests
//! never share a server, so they can run in parallel and leave nothing behind.
//! The binary is `redis-server` from `PATH`, or `SWITCHBOARD_TEST_REDIS_SERVER`.
#![forbid(unsafe_code)]

pub mod counters;
pub mod dovecot;
pub mod postfix;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Redis server for one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A free TCP port on 127.0.0.1 (free when asked; bind promptly).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn redis_binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TEST_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

impl RedisServer {
    /// Starts a server with append-only persistence (as in production) and
    /// waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with more command-line options (kept for restarts).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-redis-")
            .tempdir()
            .expect("create a temporary directory for redis");
        RedisServer::start_in(dir, extra.iter().map(|s| s.to_string()).collect())
    }

    /// A port can be taken between asking and binding; try a few.
    fn start_in(mut dir: tempfile::TempDir, extra: Vec<String>) -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir,
                child: None,
                extra: extra.clone(),
            };
            if server.spawn() {
                return server;
            }
            dir = server.take_dir();
        }
        let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
        panic!("could not start redis-server on a free port after 5 tries; its log:\n{log}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(
            &mut self.dir,
            tempfile::TempDir::new().expect("placeholder dir"),
        )
    }

    /// Spawns redis-server on `self.port`; false when it did not come up.
    fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(["--maxmemory-policy", "noeviction"])
            // As deploy/redis-switchboard.conf recommends.
            .args(["--stream-node-max-bytes", "1024"])
            .args(["--auto-aof-rewrite-min-size", "1gb"])
            .args(&self.extra)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {:?}: {e}. Install it (`apt-get install -y redis-server`; \
                     scripts/test.sh does) or set SWITCHBOARD_TEST_REDIS_SERVER",
                    redis_binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if ping(self.port) {
                // Ours, not another test's server that took the port
                // between asking for it and binding it (ours then fails to
                // bind, perhaps only after this PING).
                let ours = self.child.as_ref().map(Child::id);
                // Asked twice: a loaded machine may be slow with INFO.
                let seen = pid_on(self.port).or_else(|| pid_on(self.port));
                if seen == ours {
                    return true;
                }
                eprintln!(
                    "redis-server on port {}: the server answering is pid {seen:?}, not ours ({ours:?}); trying again",
                    self.port
                );
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The directory holding the server's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server abruptly (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some() && ping(self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Redis Cluster of several masters (no replicas), each a
/// [`RedisServer`] with cluster mode on, joined and given all 16384 slots by
/// `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes and waits until the cluster state is ok on
    /// every one of them.
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let out = Command::new(redis_cli())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", redis_cli()));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| cluster_ok(n.port())) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

fn redis_cli() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TEST_REDIS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

fn cluster_ok(port: u16) -> bool {
    Command::new(redis_cli())
        .args(["-p", &port.to_string(), "cluster", "info"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}

/// True when a Redis server answers PING on 127.0.0.1:`port`.
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The `process_id` of the Redis server on 127.0.0.1:`port` (`INFO server`).
fn pid_on(port: u16) -> Option<u32> {
    use std::io::BufRead;
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    (&stream).write_all(b"INFO server\r\n").ok()?;
    let mut reader = std::io::BufReader::new(&stream);
    let mut head = String::new();
    reader.read_line(&mut head).ok()?;
    let len: usize = head.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts() {
        let mut redis = RedisServer::start();
        assert!(redis.is_running());
        assert_eq!(pid_on(redis.port()), redis.pid());
        let port = redis.port();
        redis.stop();
        assert!(!ping(port));
        redis.restart();
        assert!(redis.is_running());
        assert_eq!(redis.port(), port);
        assert_eq!(pid_on(port), redis.pid(), "the restarted server is ours");
        drop(redis);
        assert!(!ping(port));
    }
}
