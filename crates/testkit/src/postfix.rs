//! A private, real Postfix per test.
//!
//! [`Postfix::start`] writes a `main.cf` and `master.cf` into a temporary
//! directory that also holds the instance's queue, data directory, log and
//! Maildirs, and runs Postfix's `master` on it as a child process with a
//! `smtpd` on a free loopback port. Nothing under `/etc/postfix`,
//! `/var/spool/postfix` or `/var/lib/postfix` is read for state or written,
//! so several instances can run at once; dropping the value stops the
//! instance and every daemon it started.
//!
//! Mail for the [`PostfixOptions::lmtp_domains`] is relayed over LMTP to
//! `127.0.0.1:PORT` (Switchboard's inbound listener); mail for the
//! [`PostfixOptions::local_domains`] is delivered by the `virtual` agent into
//! one catch-all Maildir per domain ([`Postfix::maildir_messages`]); mail for
//! any other domain is bounced by the `error` transport (nothing leaves the
//! machine). Postfix does not add a missing `Message-ID:` or `Date:` (empty
//! `local_header_rewrite_clients`), so tests see the headers the client sent.
//!
//! Postfix's master must run as root (its daemons run as the `postfix` user,
//! the Maildirs belong to `nobody`). The programs are looked up in `PATH`,
//! then in `/usr/sbin`; the daemons come from the `daemon_directory` Postfix
//! was built with.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The host name Postfix uses in its banner, `Received:` headers and bounces.
pub const MYHOSTNAME: &str = "mx.switchboard.test";

/// The master exits by itself after this long, in case the test process was
/// killed before it could drop the [`Postfix`].
const MASTER_EXIT_SECS: u32 = 3600;

/// What a private Postfix delivers where.
#[derive(Debug, Clone, Default)]
pub struct PostfixOptions {
    /// Domains relayed over LMTP to `127.0.0.1:port` (`relay_domains` +
    /// `transport_maps`).
    pub lmtp_domains: Vec<(String, u16)>,
    /// Domains delivered into a catch-all Maildir each
    /// (`virtual_mailbox_domains`); see [`Postfix::maildir`].
    pub local_domains: Vec<String>,
    /// More `main.cf` settings, written last so they override the defaults.
    pub main_cf: Vec<(String, String)>,
}

impl PostfixOptions {
    pub fn new() -> PostfixOptions {
        PostfixOptions::default()
    }

    /// Relays mail for `domain` over LMTP to `127.0.0.1:port`.
    pub fn lmtp_domain(mut self, domain: &str, port: u16) -> PostfixOptions {
        self.lmtp_domains.push((domain.to_string(), port));
        self
    }

    /// Delivers mail for `domain` into its catch-all Maildir.
    pub fn local_domain(mut self, domain: &str) -> PostfixOptions {
        self.local_domains.push(domain.to_string());
        self
    }

    /// Sets a `main.cf` parameter (overriding the harness's value).
    pub fn main_cf(mut self, name: &str, value: &str) -> PostfixOptions {
        self.main_cf.push((name.to_string(), value.to_string()));
        self
    }
}

/// A private Postfix instance for one test; stopped on drop.
#[derive(Debug)]
pub struct Postfix {
    dir: tempfile::TempDir,
    port: u16,
    master: Option<Child>,
}

impl Postfix {
    /// Writes the configuration, creates the queue directories, runs
    /// `master` and waits until `smtpd` greets with 220. Panics, with the
    /// maillog, when Postfix does not come up.
    pub fn start(options: PostfixOptions) -> Postfix {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("switchboard-postfix-")
            .tempdir()
            .expect("create a temporary directory for postfix");
        let root = dir.path().to_path_buf();
        check_path(&root);
        let mut postfix = Postfix {
            dir,
            port: 0,
            master: None,
        };
        postfix.port = free_port();
        postfix.prepare(&options);
        for _ in 0..5 {
            match postfix.spawn() {
                Ok(()) => return postfix,
                Err(why) if why.contains("Address already in use") => {
                    // Taken between asking and binding: another port.
                    postfix.port = free_port();
                    write_file(&root.join("etc/master.cf"), &master_cf(postfix.port));
                }
                Err(why) => panic!(
                    "postfix did not start: {why}\n--- {} ---\n{}",
                    postfix.maillog_path().display(),
                    postfix.log()
                ),
            }
        }
        panic!(
            "could not start postfix on a free port after 5 tries\n--- maillog ---\n{}",
            postfix.log()
        );
    }

    /// Creates the directories (the queue as Postfix's `post-install`
    /// would) and writes `main.cf`, `master.cf` (smtpd on `self.port`) and
    /// the lookup tables.
    fn prepare(&self, options: &PostfixOptions) {
        let root = self.dir.path();
        set_mode(root, 0o755); // the daemons (user postfix) must traverse it
        let postfix_user = user_ids("postfix");
        let mailbox_user = user_ids("nobody");
        let postdrop = group_id("postdrop");
        // The queue as `postfix-files` (post-install) lays it out; creating
        // it here instead of `postfix check` saves ~300ms a start.
        let postfix_root = Some((postfix_user.0, 0));
        let postfix_postdrop = Some((postfix_user.0, postdrop));
        let mut dirs = vec![
            ("etc".to_string(), None, 0o755),
            ("queue".to_string(), None, 0o755),
            ("queue/pid".to_string(), None, 0o755),
            ("queue/maildrop".to_string(), postfix_postdrop, 0o730),
            ("queue/public".to_string(), postfix_postdrop, 0o710),
            ("data".to_string(), Some(postfix_user), 0o700),
            ("mail".to_string(), Some(mailbox_user), 0o755),
        ];
        for sub in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace",
        ] {
            dirs.push((format!("queue/{sub}"), postfix_root, 0o700));
        }
        for (sub, owner, mode) in dirs {
            let path = root.join(sub);
            std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
            set_mode(&path, mode);
        }

        let mut transport = String::new();
        for (domain, port) in &options.lmtp_domains {
            check_domain(domain);
            writeln!(
                transport,
                "{} lmtp:inet:127.0.0.1:{port}",
                domain.to_lowercase()
            )
            .expect("write to a String");
        }
        let mut mailboxes = String::new();
        for domain in &options.local_domains {
            check_domain(domain);
            let domain = domain.to_lowercase();
            // The trailing slash makes it a Maildir.
            writeln!(mailboxes, "@{domain} {domain}/catchall/").expect("write to a String");
        }
        write_file(&root.join("etc/master.cf"), &master_cf(self.port));
        write_file(&root.join("etc/transport"), &transport);
        write_file(&root.join("etc/vmailbox"), &mailboxes);
        write_file(
            &root.join("etc/main.cf"),
            &main_cf(root, options, mailbox_user),
        );
    }

    /// Runs `master` on `self.port`; Err (with the log) when it exited or
    /// `smtpd` did not greet in time.
    fn spawn(&mut self) -> Result<(), String> {
        let daemon_directory = self.postconf("daemon_directory");
        let master = Command::new(Path::new(&daemon_directory).join("master"))
            .arg("-c")
            .arg(self.config_dir())
            .args(["-e", &MASTER_EXIT_SECS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {daemon_directory}/master: {e}"))?;
        self.master = Some(master);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(master) = self.master.as_mut()
                && let Ok(Some(status)) = master.try_wait()
            {
                self.master = None;
                self.stop();
                return Err(format!("master exited ({status}): {}", self.log()));
            }
            if greets(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!(
            "smtpd did not greet on 127.0.0.1:{} within 15s",
            self.port
        ))
    }

    /// Starts a stopped instance again on the same port, with its queue and
    /// Maildirs as they were (a relay that was down comes back).
    pub fn restart(&mut self) {
        self.stop();
        write_file(&self.config_dir().join("master.cf"), &master_cf(self.port));
        if let Err(why) = self.spawn() {
            panic!("postfix did not restart: {why}");
        }
    }

    /// The loopback port of the `smtpd` service.
    pub fn smtp_port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` of the `smtpd` service.
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The instance's directory: `etc/` (configuration), `queue/`, `data/`,
    /// `mail/` (Maildirs) and `maillog`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory for `postfix -c`, `postqueue -c`, `postconf -c` ...
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The master's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// Submits `message` from `from` to `to` over SMTP (see [`smtp_send`]);
    /// the final reply line (`250 2.0.0 Ok: queued as ...`), or the reply
    /// that refused it.
    pub fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<String, String> {
        smtp_send(self.smtp_addr(), from, &[to], message)
    }

    /// [`Postfix::send`] to several recipients in one transaction.
    pub fn send_to_all(&self, from: &str, to: &[&str], message: &[u8]) -> Result<String, String> {
        smtp_send(self.smtp_addr(), from, to, message)
    }

    /// Runs `swaks --server 127.0.0.1:PORT ARGS...`.
    pub fn swaks(&self, args: &[&str]) -> Output {
        Command::new("swaks")
            .args(["--server", &self.smtp_addr().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run swaks: {e}. `apt-get install -y swaks`"))
    }

    /// The catch-all Maildir of a local domain (`new/`, `cur/`, `tmp/` are
    /// created by the first delivery).
    pub fn maildir(&self, domain: &str) -> PathBuf {
        self.dir
            .path()
            .join("mail")
            .join(domain.to_lowercase())
            .join("catchall")
    }

    /// The messages delivered so far into a local domain's Maildir (`new/`
    /// and `cur/`), oldest first.
    pub fn maildir_messages(&self, domain: &str) -> Vec<Vec<u8>> {
        let maildir = self.maildir(domain);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                // Written once, then renamed from tmp/: the mtime is the
                // delivery time (ns); the name breaks ties.
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((modified, entry.file_name(), entry.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, _, path)| std::fs::read(path).ok())
            .collect()
    }

    /// Waits until at least `count` messages are in the domain's Maildir and
    /// returns them; panics with the maillog on timeout.
    pub fn wait_for_maildir(&self, domain: &str, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.maildir_messages(domain);
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} message(s) in the {domain} Maildir after {timeout:?}, expected {count}\n\
                 --- maillog ---\n{}",
                messages.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Where Postfix logs (`maillog_file`, written by `postlogd`).
    pub fn maillog_path(&self) -> PathBuf {
        self.dir.path().join("maillog")
    }

    /// The maillog so far.
    pub fn log(&self) -> String {
        std::fs::read(self.maillog_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the maillog contains `needle` (e.g. `status=sent`) and
    /// returns the log; panics with the log on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in the maillog after {timeout:?}\n--- maillog ---\n{log}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `postqueue -f`: retries deferred mail now.
    pub fn flush(&self) {
        let out = self.postqueue("-f");
        assert!(
            out.status.success(),
            "postqueue -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Messages not yet delivered or bounced: the queue files in `incoming`,
    /// `active`, `deferred`, `hold` and `maildrop`. Postfix moves a file
    /// between them (`active` → `deferred`) while they are read, keeping its
    /// name (the queue id): files are counted by name, and the directories
    /// read until two reads agree, so a message on the move is counted once.
    pub fn queue_len(&self) -> usize {
        let queue = self.dir.path().join("queue");
        let names = || {
            let mut names = std::collections::HashSet::new();
            for sub in ["incoming", "active", "deferred", "hold", "maildrop"] {
                queue_files(&queue.join(sub), &mut names);
            }
            names
        };
        let mut last = names();
        for _ in 0..20 {
            let now = names();
            if now == last {
                return now.len();
            }
            last = now;
            std::thread::sleep(Duration::from_millis(10));
        }
        last.len()
    }

    /// Waits until [`Postfix::queue_len`] is 0; panics with the log on timeout.
    pub fn wait_for_empty_queue(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.queue_len() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} message(s) still queued after {timeout:?}\n{}\n--- maillog ---\n{}",
                self.queue_len(),
                self.queue_json(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `postqueue -j`: one JSON object per queued message, with the reason
    /// each recipient was deferred.
    pub fn queue_json(&self) -> String {
        String::from_utf8_lossy(&self.postqueue("-j").stdout).into_owned()
    }

    fn postqueue(&self, flag: &str) -> Output {
        Command::new(sbin("postqueue"))
            .arg("-c")
            .arg(self.config_dir())
            .arg(flag)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run postqueue: {e}"))
    }

    /// `postconf -c DIR -h NAME`: a parameter's effective value.
    pub fn postconf(&self, name: &str) -> String {
        let out = Command::new(sbin("postconf"))
            .arg("-c")
            .arg(self.config_dir())
            .args(["-h", name])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run postconf: {e}. `apt-get install -y postfix`"));
        assert!(
            out.status.success(),
            "postconf -h {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the instance and waits until none of its processes is left.
    /// On SIGTERM the master signals its process group and exits without
    /// reaping the daemons (init would inherit them as zombies), so it is
    /// first reloaded with an empty master.cf: it then terminates and reaps
    /// every daemon itself. Then SIGTERM to the master, and SIGKILL to
    /// anything still there. The queue and the Maildirs stay: see
    /// [`Postfix::restart`].
    pub fn stop(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        // The master leads its own process group (it calls setsid), so the
        // group holds exactly the daemons it started.
        let pid = master.id();
        let master_cf = self.config_dir().join("master.cf");
        if std::fs::write(&master_cf, "# stopping: no services\n").is_ok() {
            signal("-HUP", pid);
            let deadline = Instant::now() + Duration::from_secs(3);
            while process_group(pid).iter().any(|&(p, _)| p != pid)
                && Instant::now() < deadline
                && matches!(master.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        signal("-TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(master.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = master.kill();
                let _ = master.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<u32> = process_group(pid)
                .into_iter()
                .filter_map(|(p, zombie)| (!zombie).then_some(p))
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for daemon in left {
                signal("-KILL", daemon);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

fn main_cf(root: &Path, options: &PostfixOptions, (uid, gid): (u32, u32)) -> String {
    let root = root.display();
    let join = |domains: &mut dyn Iterator<Item = String>| domains.collect::<Vec<_>>().join(", ");
    let relay_domains = join(&mut options.lmtp_domains.iter().map(|(d, _)| d.to_lowercase()));
    let local_domains = join(&mut options.local_domains.iter().map(|d| d.to_lowercase()));
    let mut cf = format!(
        "# A private Postfix for one Switchboard test (switchboard-testkit).
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = {MYHOSTNAME}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = $myhostname ESMTP Postfix (switchboard-testkit)
# Keep the client's headers as they are: no Message-ID:/Date: added.
local_header_rewrite_clients =
smtputf8_enable = yes
message_size_limit = 10240000
biff = no
append_dot_mydomain = no
# LMTP domains
relay_domains = {relay_domains}
transport_maps = texthash:{root}/etc/transport
lmtp_connection_cache_on_demand = no
smtp_connection_cache_on_demand = no
# Maildir domains
virtual_mailbox_domains = {local_domains}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
# Nothing is delivered locally or leaves the machine.
local_transport = error:5.1.1 local delivery is disabled in the test harness
default_transport = error:5.1.2 only the test harness domains are delivered
local_recipient_maps =
alias_maps =
alias_database =
# Retry deferred mail quickly.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
"
    );
    for (name, value) in &options.main_cf {
        writeln!(cf, "{name} = {value}").expect("write to a String");
    }
    cf
}

/// Debian's default services, without chroot, with `smtpd` on `port`.
fn master_cf(port: u16) -> String {
    format!(
        "# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

fn require_root() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        uid == "0",
        "the Postfix harness must run as root (Postfix's master is root-only); `id -u` = {uid:?}"
    );
}

/// A group's gid (`getent group NAME`).
fn group_id(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap_or_else(|e| panic!("cannot run getent: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|gid| gid.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!("no group {group:?} (`getent group {group}`); is postfix installed?")
        })
}

/// The user's uid and primary gid (`id -u` / `id -g`).
fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .unwrap_or_else(|e| panic!("cannot run id: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!("no user {user:?} (`id {flag} {user}`); is postfix installed?")
            })
    };
    (id("-u"), id("-g"))
}

/// A Postfix program from `PATH`, else from `/usr/sbin`.
fn sbin(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The instance's paths go into `main.cf` lists and are traversed by the
/// `postfix` user.
fn check_path(root: &Path) {
    let text = root.to_string_lossy();
    assert!(
        !text.contains(|c: char| c.is_whitespace() || c == ','),
        "the temporary directory {text:?} must not contain spaces or commas (set TMPDIR)"
    );
    for ancestor in root.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} is not world-searchable, so Postfix's daemons cannot reach {text}; \
             set TMPDIR to a directory such as /tmp",
            ancestor.display()
        );
    }
}

fn check_domain(domain: &str) {
    assert!(
        !domain.is_empty()
            && !domain.contains(|c: char| c.is_whitespace() || matches!(c, ',' | '/' | '@' | '#')),
        "not a domain for the Postfix harness: {domain:?}"
    );
}

/// Writes a configuration file dated a minute ago: Postfix re-reads (every
/// 300ms) a main.cf or table modified within the last second or two, to not
/// load a file while it is being written.
fn write_file(path: &Path, text: &str) {
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        (&file).write_all(text.as_bytes())?;
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
    };
    write().unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The names of the files under `dir` (Postfix's queue ids), into `names`.
fn queue_files(dir: &Path, names: &mut std::collections::HashSet<std::ffi::OsString>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => queue_files(&entry.path(), names),
            Ok(t) if t.is_file() => {
                names.insert(entry.file_name());
            }
            _ => {}
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The processes in process group `pgid` (pid, is a zombie), from /proc.
fn process_group(pgid: u32) -> Vec<(u32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            (pgrp == pgid).then_some((pid, matches!(state, "Z" | "X")))
        })
        .collect()
}

/// True when an SMTP server on 127.0.0.1:`port` greets with 220.
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let greeted = read_reply(&mut reader).is_ok_and(|r| r.code == 220);
    if greeted {
        let _ = (&stream).write_all(b"QUIT\r\n");
        let _ = read_reply(&mut reader);
    }
    greeted
}

/// An SMTP reply: its code and its lines without the code.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn last_line(&self) -> String {
        format!(
            "{} {}",
            self.code,
            self.lines.last().map_or("", String::as_str)
        )
    }
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("connection closed".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the reply: {e}")),
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(Reply { code, lines });
        }
    }
}

/// Submits `message` (raw RFC 5322 bytes; bare LFs become CRLF, lines are
/// dot-stuffed) to the SMTP server at `addr`: EHLO, MAIL FROM (with
/// `BODY=8BITMIME` for 8-bit content and `SMTPUTF8` for a non-ASCII envelope
/// or header section, when offered), RCPT TO each recipient, DATA, QUIT.
/// Returns the final reply line to the message (`250 ...`), or Err naming the
/// command and the reply that refused it.
pub fn smtp_send(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut command = |reader: &mut BufReader<&TcpStream>,
                       line: &[u8],
                       expect: &[u16]|
     -> Result<Reply, String> {
        let shown = String::from_utf8_lossy(line).into_owned();
        writer
            .write_all(line)
            .and_then(|()| writer.write_all(b"\r\n"))
            .map_err(|e| format!("{shown}: {e}"))?;
        let reply = read_reply(reader).map_err(|e| format!("{shown}: {e}"))?;
        if expect.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(format!("{shown}: {}", reply.last_line()))
        }
    };

    let greeting = read_reply(&mut reader)?;
    if greeting.code != 220 {
        return Err(format!("greeting: {}", greeting.last_line()));
    }
    let ehlo = command(&mut reader, b"EHLO switchboard-testkit.test", &[250])?;
    let offered: BTreeSet<String> = ehlo
        .lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_ascii_uppercase)
        .collect();

    let headers_end = find(message, b"\r\n\r\n")
        .or_else(|| find(message, b"\n\n"))
        .unwrap_or(message.len());
    let utf8 =
        !from.is_ascii() || to.iter().any(|r| !r.is_ascii()) || !message[..headers_end].is_ascii();
    let mut mail = format!("MAIL FROM:<{from}>");
    if !message.is_ascii() && offered.contains("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if utf8 && offered.contains("SMTPUTF8") {
        mail.push_str(" SMTPUTF8");
    }
    command(&mut reader, mail.as_bytes(), &[250])?;
    for rcpt in to {
        command(
            &mut reader,
            format!("RCPT TO:<{rcpt}>").as_bytes(),
            &[250, 251],
        )?;
    }
    command(&mut reader, b"DATA", &[354])?;
    let reply = command(&mut reader, &dot_stuff(message), &[250])?;
    let _ = command(&mut reader, b"QUIT", &[221]);
    Ok(reply.last_line())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// CRLF line ends, a leading dot doubled, and the terminating `.` line
/// (without its CRLF, which `command` adds).
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut line_start = true;
    for (i, &b) in message.iter().enumerate() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.push(b'.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    const UTF8_MESSAGE: &str = "From: Zoë <zoe@switchboard.test>\r\n\
        To: Jörg <jörg@customer.example>\r\n\
        Subject: Grüße — ✓\r\n\
        Message-ID: <utf8-1@switchboard.test>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\
        \r\n\
        Größe: 日本語 ✓\r\n\
        .a line starting with a dot\r\n";

    #[test]
    fn delivers_utf8_mail_into_the_maildir() {
        let postfix = Postfix::start(PostfixOptions::new().local_domain("customer.example"));
        let reply = postfix
            .send(
                "zoe@switchboard.test",
                "jörg@customer.example",
                UTF8_MESSAGE.as_bytes(),
            )
            .expect("accepted");
        assert!(reply.starts_with("250 "), "{reply}");
        let messages = postfix.wait_for_maildir("customer.example", 1, Duration::from_secs(20));
        let text = String::from_utf8(messages[0].clone()).expect("UTF-8 intact");
        assert!(
            text.contains("Delivered-To: jörg@customer.example\n"),
            "{text}"
        );
        assert!(text.contains("Subject: Grüße — ✓\n"), "{text}");
        assert!(
            text.contains("\n\nGröße: 日本語 ✓\n.a line starting"),
            "{text}"
        );
        postfix.wait_for_log(
            "status=sent (delivered to maildir)",
            Duration::from_secs(10),
        );
        postfix.wait_for_empty_queue(Duration::from_secs(10));

        // Missing headers are not added.
        postfix
            .send(
                "bounces@customer.example",
                "x@customer.example",
                b"Subject: bare\r\n\r\nno Message-ID\r\n",
            )
            .expect("accepted");
        let messages = postfix.wait_for_maildir("customer.example", 2, Duration::from_secs(20));
        let bare = messages
            .iter()
            .map(|m| String::from_utf8_lossy(m).to_ascii_lowercase())
            .find(|m| m.contains("subject: bare\n"))
            .expect("the bare message");
        assert!(
            !bare.contains("message-id:") && !bare.contains("\ndate:"),
            "{bare}"
        );

        // Other domains are refused at RCPT.
        let refused = postfix
            .send("a@customer.example", "b@elsewhere.example", b"\r\nx\r\n")
            .expect_err("refused");
        assert!(
            refused.starts_with("RCPT TO:<b@elsewhere.example>: 550 "),
            "{refused}"
        );
    }

    /// A fake LMTP server (for testing the harness only): accepts
    /// connections, answers every command, and sends each message's
    /// (recipients, data) down the channel.
    fn fake_lmtp(listener: TcpListener) -> mpsc::Receiver<(Vec<String>, Vec<u8>)> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut writer = &stream;
                    let _ = writer.write_all(b"220 fake LMTP\r\n");
                    let mut rcpts = Vec::new();
                    loop {
                        let mut line = Vec::new();
                        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = String::from_utf8_lossy(&line).trim_end().to_string();
                        let verb = line.split([' ', ':']).next().unwrap_or("").to_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "LHLO" => {
                                b"250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                            }
                            "RCPT" => {
                                rcpts.push(line[8..].to_string());
                                b"250 2.1.5 ok\r\n"
                            }
                            "DATA" => {
                                let _ = writer.write_all(b"354 go ahead\r\n");
                                let mut data = Vec::new();
                                loop {
                                    let mut l = Vec::new();
                                    if reader.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if l == b".\r\n" {
                                        break;
                                    }
                                    data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                                }
                                for _ in &rcpts {
                                    let _ = writer.write_all(b"250 2.0.0 delivered\r\n");
                                }
                                let _ = tx.send((std::mem::take(&mut rcpts), data));
                                continue;
                            }
                            "QUIT" => {
                                let _ = writer.write_all(b"221 bye\r\n");
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        let _ = writer.write_all(reply);
                    }
                });
            }
        });
        rx
    }

    #[test]
    fn relays_lmtp_domains_to_the_lmtp_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let lmtp_port = listener.local_addr().expect("address").port();
        let received = fake_lmtp(listener);
        let postfix = Postfix::start(
            PostfixOptions::new()
                .lmtp_domain("support.switchboard.test", lmtp_port)
                .local_domain("customer.example"),
        );
        let reply = postfix
            .send_to_all(
                "alice@customer.example",
                &["help@support.switchboard.test", "sales@support.switchboard.test"],
                "Subject: Hilfe\r\nMessage-ID: <lmtp-1@customer.example>\r\n\r\nbonjour, ça va?\r\n"
                    .as_bytes(),
            )
            .expect("accepted");
        assert!(reply.starts_with("250 "), "{reply}");
        let (rcpts, data) = received
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("nothing over LMTP\n{}", postfix.log()));
        assert_eq!(
            rcpts,
            [
                "<help@support.switchboard.test>",
                "<sales@support.switchboard.test>"
            ]
        );
        let data = String::from_utf8(data).expect("UTF-8 intact");
        assert!(
            data.contains("Message-ID: <lmtp-1@customer.example>\r\n"),
            "{data}"
        );
        assert!(data.ends_with("\r\n\r\nbonjour, ça va?\r\n"), "{data}");
        postfix.wait_for_log("relay=127.0.0.1[127.0.0.1]", Duration::from_secs(10));
        postfix.wait_for_empty_queue(Duration::from_secs(10));
    }

    #[test]
    fn defers_while_lmtp_is_down_and_flushes() {
        let lmtp_port = free_port();
        let postfix = Postfix::start(PostfixOptions::new().lmtp_domain("in.test", lmtp_port));
        postfix
            .send(
                "a@customer.example",
                "b@in.test",
                b"Subject: later\r\n\r\nhi\r\n",
            )
            .expect("accepted");
        postfix.wait_for_log("status=deferred", Duration::from_secs(20));
        assert_eq!(postfix.queue_len(), 1);
        assert!(postfix.queue_json().contains("Connection refused"));

        let received =
            fake_lmtp(TcpListener::bind((Ipv4Addr::LOCALHOST, lmtp_port)).expect("bind"));
        postfix.flush();
        let (rcpts, _) = received
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("not retried\n{}", postfix.log()));
        assert_eq!(rcpts, ["<b@in.test>"]);
        postfix.wait_for_empty_queue(Duration::from_secs(10));
    }

    #[test]
    fn two_instances_side_by_side_and_nothing_left_after_drop() {
        let started = Instant::now();
        let one = Postfix::start(PostfixOptions::new().local_domain("one.example"));
        let two = Postfix::start(PostfixOptions::new().local_domain("two.example"));
        eprintln!("two starts took {:?}", started.elapsed());
        assert_ne!(one.smtp_port(), two.smtp_port());
        one.send(
            "x@one.example",
            "y@one.example",
            b"Subject: 1\r\n\r\none\r\n",
        )
        .expect("accepted");
        let out = two.swaks(&["--to", "y@two.example", "--from", "x@two.example"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            one.wait_for_maildir("one.example", 1, Duration::from_secs(20))
                .len(),
            1
        );
        assert_eq!(
            two.wait_for_maildir("two.example", 1, Duration::from_secs(20))
                .len(),
            1
        );
        assert!(one.maildir_messages("two.example").is_empty());
        assert!(two.maildir_messages("one.example").is_empty());

        let (pid, port) = (one.pid().expect("running"), one.smtp_port());
        drop(one);
        // Zombies aside: orphans of a master stopped without reaping are
        // init's to reap, and a container's pid 1 may never do it.
        let alive: Vec<u32> = process_group(pid)
            .into_iter()
            .filter_map(|(p, zombie)| (!zombie).then_some(p))
            .collect();
        assert_eq!(alive, Vec::<u32>::new());
        assert!(!greets(port));
        assert!(
            two.send("x@two.example", "z@two.example", b"\r\nstill up\r\n")
                .is_ok()
        );
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuff(b"a\n.b\r\n..c"), b"a\r\n..b\r\n...c\r\n.");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.");
        assert_eq!(dot_stuff(b""), b".");
    }
}
