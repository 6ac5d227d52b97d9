//! A private, real Dovecot (IMAP only) per test.
//!
//! [`Dovecot::start`] writes a `dovecot.conf` into a temporary directory that
//! also holds the instance's base and state directories, its log and the
//! users' Maildirs, and runs `dovecot -F` on it as a child process with IMAP
//! on a free loopback port (no TLS, or STARTTLS plus implicit TLS on a second
//! port with [`Dovecot::start_tls`]). Dropping the value stops it. Failed
//! logins are answered at once (no auth penalty), IDLE notices new mail
//! within a second.
//!
//! Dovecot refuses uid 0 for mail, so when the tests run as root the mail
//! processes run as `nobody` (the mail directory belongs to it) and the
//! login and internal processes as Debian's `dovenull` and `dovecot`; as
//! any other user everything runs as that user. The binary is `dovecot` from
//! `PATH` (then `/usr/sbin`), or `SWITCHBOARD_TEST_DOVECOT`.
//!
//! The harness speaks just enough blocking IMAP ([`Dovecot::command`]) to
//! append messages and look at folders; the code under test brings its own
//! client.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// `{ROOT}`, `{PORT}`, `{TLS_PORT}`, `{AUTH_PORT}`, `{SSL}`, `{LOGIN_USER}`, `{INTERNAL_USER}`,
/// `{INTERNAL_GROUP}`, `{UID}`, `{GID}` are filled in.
const CONF: &str = r#"protocols = imap
listen = 127.0.0.1
base_dir = {ROOT}/base
state_dir = {ROOT}/state
instance_name = switchboard-{PORT}
log_path = {ROOT}/dovecot.log
info_log_path = {ROOT}/dovecot.log
debug_log_path = {ROOT}/dovecot.log
{SSL}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_login_user = {LOGIN_USER}
default_internal_user = {INTERNAL_USER}
default_internal_group = {INTERNAL_GROUP}
first_valid_uid = 1
mail_location = maildir:{ROOT}/mail/%u
mail_plugins =
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 1 secs
passdb {
  driver = passwd-file
  args = scheme=PLAIN {ROOT}/passwd
}
userdb {
  driver = static
  args = uid={UID} gid={GID} home={ROOT}/home/%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = {PORT}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = {TLS_PORT}
  }
}
# Dovecot's SASL service on a loopback port, for a Postfix that
# authenticates its clients (`smtpd_sasl_type = dovecot`).
service auth {
  inet_listener sasl {
    address = 127.0.0.1
    port = {AUTH_PORT}
  }
}
# No auth penalty: without its socket, failed logins are not slowed down.
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol imap {
  mail_max_userip_connections = 100
}
"#;

/// A private Dovecot for one test; stopped on drop.
#[derive(Debug)]
pub struct Dovecot {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    auth_port: u16,
    users: Vec<(String, String)>,
    child: Option<Child>,
}

impl Dovecot {
    /// Starts Dovecot with one user, `support` / `secret`.
    pub fn start() -> Dovecot {
        Dovecot::launch(&[("support", "secret")], None)
    }

    /// Starts Dovecot with these users (name, password).
    pub fn start_with_users(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::launch(users, None)
    }

    /// Starts Dovecot (user `support` / `secret`) with TLS from this PEM
    /// certificate chain and key: STARTTLS on [`Dovecot::port`], implicit
    /// TLS on [`Dovecot::tls_port`].
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Dovecot {
        Dovecot::launch(&[("support", "secret")], Some((cert_pem, key_pem)))
    }

    /// Writes everything and waits until Dovecot greets. Panics, with the
    /// log, when it does not come up.
    fn launch(users: &[(&str, &str)], tls: Option<(&str, &str)>) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-dovecot-")
            .tempdir()
            .expect("create a temporary directory for dovecot");
        let root = dir.path().to_path_buf();
        // The auth process (user dovecot) reads the passwd file in here.
        set_mode(&root, 0o755);
        let (uid, gid) = mail_ids();
        for sub in ["base", "state", "mail", "home"] {
            std::fs::create_dir(root.join(sub)).expect("create a dovecot directory");
        }
        for sub in ["mail", "home"] {
            std::os::unix::fs::chown(root.join(sub), Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {sub} to {uid}:{gid}: {e}"));
        }
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        write(&root.join("passwd"), &passwd);
        if let Some((cert, key)) = tls {
            write(&root.join("cert.pem"), cert);
            write(&root.join("key.pem"), key);
        }
        let mut dovecot = Dovecot {
            dir,
            port: 0,
            tls_port: None,
            auth_port: 0,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            child: None,
        };
        for _ in 0..5 {
            dovecot.port = free_port();
            dovecot.tls_port = tls.map(|_| free_port());
            dovecot.auth_port = free_port();
            write(&dovecot.conf_path(), &dovecot.conf());
            if dovecot.spawn() {
                return dovecot;
            }
            if !dovecot.log().contains("in use") {
                break; // not a port taken in between: trying again will not help
            }
        }
        panic!("dovecot did not start\n--- log ---\n{}", dovecot.log());
    }

    fn conf(&self) -> String {
        let root = self.dir.path().display().to_string();
        let (uid, gid) = mail_ids();
        let ssl = match self.tls_port {
            Some(_) => format!("ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"),
            None => "ssl = no".to_string(),
        };
        let (login, internal, group) = if id(&["-u"]) == "0" {
            ("dovenull".into(), "dovecot".into(), "dovecot".into())
        } else {
            (id(&["-un"]), id(&["-un"]), id(&["-gn"]))
        };
        CONF.replace("{ROOT}", &root)
            .replace("{SSL}", &ssl)
            .replace("{TLS_PORT}", &self.tls_port.unwrap_or(0).to_string())
            .replace("{AUTH_PORT}", &self.auth_port.to_string())
            .replace("{PORT}", &self.port.to_string())
            .replace("{LOGIN_USER}", &login)
            .replace("{INTERNAL_USER}", &internal)
            .replace("{INTERNAL_GROUP}", &group)
            .replace("{UID}", &uid.to_string())
            .replace("{GID}", &gid.to_string())
    }

    /// Runs `dovecot -F`; false when it exited or did not greet in time.
    fn spawn(&mut self) -> bool {
        self.stop();
        let child = Command::new(dovecot_binary())
            .arg("-F")
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| {
            panic!(
                "cannot run {:?}: {e}. `apt-get install -y dovecot-imapd` \
                 or set SWITCHBOARD_TEST_DOVECOT",
                dovecot_binary()
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if greets(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    /// The IMAP port (plain text, or STARTTLS with [`Dovecot::start_tls`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The implicit TLS port, with [`Dovecot::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Dovecot's SASL service (`127.0.0.1`), for Postfix's
    /// `smtpd_sasl_path = inet:127.0.0.1:<port>` with `smtpd_sasl_type =
    /// dovecot`: the users are this Dovecot's.
    pub fn auth_port(&self) -> u16 {
        self.auth_port
    }

    /// The first user's name.
    pub fn user(&self) -> &str {
        &self.users[0].0
    }

    /// The first user's password.
    pub fn password(&self) -> &str {
        &self.users[0].1
    }

    /// The user's Maildir (`INBOX`; folders are `.NAME` below it).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Dovecot's log, for diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    /// Logs `user` in (on the plain port), runs each command and LOGOUT,
    /// and returns every response line; panics when one does not end in
    /// OK. A `{}` in a command is sent as a literal holding `literal`.
    pub fn command(&self, user: &str, commands: &[&str], literal: &[u8]) -> Vec<String> {
        let password = self
            .users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str());
        let password = password.unwrap_or_else(|| panic!("no dovecot user {user}"));
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut writer = stream.try_clone().expect("clone the stream");
        let mut reader = BufReader::new(stream);
        let mut read = || {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => line.trim_end().to_string(),
                other => panic!("dovecot closed or timed out ({other:?})\n{}", self.log()),
            }
        };
        let login = format!("LOGIN {} {}", quote(user), quote(password));
        let all = [login.as_str()]
            .into_iter()
            .chain(commands.iter().copied())
            .chain(["LOGOUT"]);
        let mut lines = Vec::new();
        for (n, cmd) in all.enumerate() {
            let tag = format!("t{n} ");
            if let Some((head, tail)) = cmd.split_once("{}") {
                write!(writer, "{tag}{head}{{{}}}\r\n", literal.len()).expect("write");
                let line = read();
                assert!(line.starts_with('+'), "no continuation for {cmd}: {line}");
                writer.write_all(literal).expect("write the literal");
                write!(writer, "{tail}\r\n").expect("write");
            } else {
                write!(writer, "{tag}{cmd}\r\n").expect("write");
            }
            loop {
                let line = read();
                let done = line.strip_prefix(&tag).map(|rest| rest.starts_with("OK"));
                assert_ne!(done, Some(false), "{cmd:?} failed: {line}\n{}", self.log());
                lines.push(line);
                if done.is_some() {
                    break;
                }
            }
        }
        lines
    }

    /// Appends `raw` to `folder` of `user`; returns its UID.
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) -> u32 {
        let lines = self.command(user, &[&format!("APPEND {} {{}}", quote(folder))], raw);
        let uid = lines.iter().find_map(|l| l.split("[APPENDUID ").nth(1));
        let uid = uid.and_then(|rest| rest.split([' ', ']']).nth(1)?.parse().ok());
        uid.unwrap_or_else(|| panic!("no APPENDUID in {lines:?}"))
    }

    /// Creates a folder.
    pub fn create_folder(&self, user: &str, folder: &str) {
        self.command(user, &[&format!("CREATE {}", quote(folder))], b"");
    }

    /// Deletes a folder (and its messages).
    pub fn delete_folder(&self, user: &str, folder: &str) {
        self.command(user, &[&format!("DELETE {}", quote(folder))], b"");
    }

    /// Every message in `folder` as (UID, flags without `\Recent`), in UID
    /// order, e.g. `(1, "\\Seen")`.
    pub fn messages(&self, user: &str, folder: &str) -> Vec<(u32, String)> {
        let examine = format!("EXAMINE {}", quote(folder));
        let lines = self.command(user, &[&examine, "UID FETCH 1:* (FLAGS)"], b"");
        let mut out: Vec<(u32, String)> = lines
            .iter()
            .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
            .filter_map(|l| {
                let uid = l
                    .split("UID ")
                    .nth(1)?
                    .split([' ', ')'])
                    .next()?
                    .parse()
                    .ok()?;
                let flags = l.split("FLAGS (").nth(1)?.split(')').next()?.split(' ');
                let flags: Vec<&str> = flags
                    .filter(|f| !f.is_empty() && *f != "\\Recent")
                    .collect();
                Some((uid, flags.join(" ")))
            })
            .collect();
        out.sort();
        out
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets the master stop its children; SIGKILL would orphan them.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// True when Dovecot answers on `port` with its greeting, auth ready.
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut reader = BufReader::new(&stream);
    for _ in 0..2 {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || !line.starts_with("* OK") {
            return false;
        }
        if !line.contains("Waiting for authentication") {
            let _ = (&stream).write_all(b"z LOGOUT\r\n");
            return true;
        }
    }
    false
}

fn dovecot_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHBOARD_TEST_DOVECOT") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).any(|d| d.join("dovecot").is_file()) {
        true => PathBuf::from("dovecot"),
        false => PathBuf::from("/usr/sbin/dovecot"),
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, 0o644);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Who the mail processes run as: `nobody` for root, else the current user.
fn mail_ids() -> (u32, u32) {
    let root = id(&["-u"]) == "0";
    let of = |flag: &str| {
        let args: &[&str] = if root { &[flag, "nobody"] } else { &[flag] };
        id(args).parse().expect("a numeric id from `id`")
    };
    (of("-u"), of("-g"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_appends_and_stops() {
        let dovecot = Dovecot::start_with_users(&[("support", "secret"), ("sales", "pw")]);
        let port = dovecot.port();
        assert_eq!(
            dovecot.append("support", "INBOX", b"Subject: 1\r\n\r\nx\r\n"),
            1
        );
        assert_eq!(
            dovecot.append("support", "INBOX", b"Subject: 2\r\n\r\nx\r\n"),
            2
        );
        dovecot.create_folder("sales", "Archive");
        dovecot.append("sales", "Archive", b"Subject: a\r\n\r\na\r\n");
        assert_eq!(dovecot.messages("support", "INBOX").len(), 2);
        assert_eq!(
            dovecot.messages("sales", "Archive"),
            vec![(1, String::new())]
        );
        assert!(dovecot.maildir("support").join("cur").is_dir());
        assert!(dovecot.log().contains("Login: user=<support>"));
        drop(dovecot);
        assert!(!greets(port));
    }
}
