//! `[[channels]] type = "email"`: which addresses the channel answers for,
//! where mail comes in (an LMTP/SMTP listener, IMAP mailboxes) and the SMTP
//! relay replies leave through.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use switchboard_channel::{ChannelError, Resource, Secret};

/// `[[channels]] type = "email"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    /// The addresses mail is accepted for (`help@support.example.com`). The
    /// one a customer wrote to is the contact's `address`, which routing
    /// rules match; replies leave from it.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Whole domains accepted (any local part), e.g. for plus-addresses.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Largest message taken in, in bytes (SIZE on the listener, the
    /// RFC822.SIZE check on IMAP).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Where attachments are kept (written before the sender is answered).
    /// Instances sharing one Redis must share this directory.
    pub attachments_dir: PathBuf,
    /// Largest attachment kept, in bytes; larger ones are listed, not kept.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: usize,
    /// Attachments not received again for this many days are deleted
    /// (0: kept for ever). Match `[routing] retention_days`, after which the
    /// contacts that list them are deleted too.
    #[serde(default = "default_attachments_keep_days")]
    pub attachments_keep_days: u64,
    /// Bulk and list mail (`Precedence: bulk`, `List-Id`): `ignore` (counted,
    /// not routed) or `route`.
    #[serde(default)]
    pub bulk: BulkPolicy,
    /// Whose address a customer's mail is kept under, and replies go to.
    #[serde(default)]
    pub customer_address: CustomerAddress,
    /// With `customer_address = "reply_to"`: the senders (`From` addresses,
    /// or `@domain` for all of a domain's) whose `Reply-To` is taken as the
    /// customer: the web forms. Anyone else's mail is kept under its
    /// `From`: a `Reply-To` is the sender's to write, and anyone's trusted
    /// would let a stranger write into another customer's conversation.
    #[serde(default)]
    pub reply_to_senders: Vec<String>,
    /// The LMTP/SMTP listener mail servers deliver to.
    #[serde(default)]
    pub listen: Option<ListenConfig>,
    /// IMAP mailboxes fetched from.
    #[serde(default)]
    pub imap: Vec<ImapConfig>,
    /// The relay replies are sent through.
    pub smtp: SmtpConfig,
}

/// Whose address a customer's mail is kept under (the customer's
/// identity; replies go to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerAddress {
    /// `From` (else the envelope's `MAIL FROM`).
    #[default]
    From,
    /// `Reply-To` when the mail has one that is not one of the channel's
    /// own addresses, else as `from`: for a mailbox fed by web forms that
    /// send from one address and put the person's in `Reply-To`.
    ReplyTo,
}

/// What to do with bulk and list mail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkPolicy {
    #[default]
    Ignore,
    Route,
}

/// `[channels.listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `127.0.0.1:2424`; mail servers on other hosts need a reachable address.
    pub address: SocketAddr,
    /// `lmtp` (what Postfix's `lmtp:` transport and Dovecot speak) or `smtp`.
    #[serde(default)]
    pub protocol: ListenProtocol,
    /// The name in the greeting; the channel's first address's domain when
    /// unset.
    #[serde(default)]
    pub hostname: Option<String>,
    /// PEM certificate chain and key for STARTTLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Refuse mail before STARTTLS.
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Time for a whole command line, or for each 1 KiB of a message body
    /// (not per read: a client dribbling bytes is timed out).
    #[serde(default = "default_command_timeout_secs")]
    pub command_timeout_secs: u64,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Message bodies held at once by all of the listener's sessions, in
    /// MiB (being received, parsed or stored); a body that would pass it
    /// is read to its end and answered `452 4.3.1` (the sender tries
    /// again later).
    #[serde(default = "default_max_mib_in_flight")]
    pub max_mib_in_flight: usize,
}

/// The listener's dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenProtocol {
    #[default]
    Lmtp,
    Smtp,
}

/// How a connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Implicit TLS (IMAP 993, SMTP 465).
    #[default]
    Tls,
    StartTls,
    /// Plain text: only for a peer on loopback or a private link. With a
    /// password, a host other than loopback also needs `allow_plaintext`.
    None,
}

/// Why a mailbox's or relay's password may not cross the network as plain
/// text, or `None` when it may: TLS, a loopback peer, or `allow_plaintext`.
fn plaintext_refused(
    security: Security,
    host: &str,
    allow_plaintext: bool,
) -> Option<&'static str> {
    (security == Security::None
        && !allow_plaintext
        && !switchboard_channel::net::is_loopback_host(host))
    .then_some("security = \"none\" would send the password unencrypted to a host other than loopback; use tls or start_tls, or set allow_plaintext = true for a private link")
}

/// `[[channels.imap]]`: one mailbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    pub user: String,
    pub password: Secret,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// After intake: `seen` (flag it), `delete`, or `move:<folder>`.
    #[serde(default = "default_after")]
    pub after: String,
    /// The address mail in this mailbox was sent to, when its headers do
    /// not name one of the channel's addresses.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default = "default_true")]
    pub idle: bool,
    #[serde(default = "default_poll_secs")]
    pub poll_interval_secs: u64,
    /// Lets `security = "none"` send the password to a host other than
    /// loopback (a private link the operator trusts).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// `[channels.smtp]`: the relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_smtp_security")]
    pub security: Security,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_smtp_timeout_secs")]
    pub timeout_secs: u64,
    /// First retry after a temporary failure; doubles up to an hour.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// Attempts before a reply is given up as failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Secret for signed plus-addresses in Reply-To (`help+<id>.<mac>@`);
    /// none when unset.
    #[serde(default)]
    pub thread_secret: Option<Secret>,
    /// Lets `security = "none"` send the password to a host other than
    /// loopback (a private link the operator trusts).
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// The largest `max_message_bytes` taken.
const MAX_MESSAGE_BYTES: usize = 1 << 30;

fn default_max_message_bytes() -> usize {
    25 * 1024 * 1024
}
fn default_max_attachment_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_attachments_keep_days() -> u64 {
    30
}
fn default_max_recipients() -> usize {
    100
}
fn default_command_timeout_secs() -> u64 {
    300
}
fn default_max_sessions() -> usize {
    256
}
fn default_max_mib_in_flight() -> usize {
    512
}
fn default_folder() -> String {
    "INBOX".into()
}
fn default_after() -> String {
    "seen".into()
}
fn default_true() -> bool {
    true
}
fn default_poll_secs() -> u64 {
    60
}
fn default_smtp_security() -> Security {
    Security::StartTls
}
fn default_smtp_timeout_secs() -> u64 {
    30
}
fn default_retry_secs() -> u64 {
    60
}
fn default_max_attempts() -> u32 {
    24
}

/// `channels.<name>.<key>: <problem>`.
pub(crate) fn config_error(name: &str, key: &str, problem: &str) -> ChannelError {
    ChannelError::Config(format!("channels.{name}.{key}: {problem}"))
}

/// A plausible mail address: one `@`, both sides non-empty, no spaces.
pub(crate) fn address_ok(a: &str) -> bool {
    matches!(a.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ImapConfig {
    /// The port: the configured one, else 993 (TLS) or 143.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Tls => 993,
            _ => 143,
        })
    }

    /// `imap://user@host:port/folder`: the mailbox's name in logs, metrics
    /// and state keys.
    pub fn label(&self) -> String {
        format!(
            "imap://{}@{}:{}/{}",
            self.user,
            self.host,
            self.port(),
            self.folder
        )
    }
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Tls => 465,
            Security::StartTls => 587,
            Security::None => 25,
        })
    }
}

impl EmailConfig {
    /// Checks everything that can be checked without I/O (secrets are read).
    pub fn check(&self) -> Result<(), ChannelError> {
        let err = |key: &str, problem: &str| config_error(&self.name, key, problem);
        if self.addresses.is_empty() && self.domains.is_empty() {
            return Err(err("addresses", "name at least one address or domain"));
        }
        if let Some(bad) = self.addresses.iter().find(|a| !address_ok(a)) {
            return Err(err("addresses", &format!("{bad:?} is not a mail address")));
        }
        if let Some(bad) = self
            .domains
            .iter()
            .find(|d| d.is_empty() || d.contains('@') || d.contains(char::is_whitespace))
        {
            return Err(err("domains", &format!("{bad:?} is not a domain")));
        }
        if self.customer_address == CustomerAddress::ReplyTo && self.reply_to_senders.is_empty() {
            return Err(err(
                "reply_to_senders",
                "name the web forms' From addresses (or @domains) whose Reply-To is the customer's: \
                 with customer_address = \"reply_to\" and anyone's Reply-To trusted, a stranger could \
                 write into another customer's conversation",
            ));
        }
        if let Some(bad) = self
            .reply_to_senders
            .iter()
            .find(|s| match s.strip_prefix('@') {
                Some(domain) => domain.is_empty() || domain.contains(['@', ' ']),
                None => !address_ok(s),
            })
        {
            return Err(err(
                "reply_to_senders",
                &format!("{bad:?} is neither a mail address nor an @domain"),
            ));
        }
        // A fetched mail is held whole in memory (IMAP has no streaming
        // intake), so the limit bounds what one mailbox can make us hold.
        if !(1024..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(err(
                "max_message_bytes",
                "must be 1024 to 1073741824 (1 GiB)",
            ));
        }
        if self.attachments_keep_days > 36_500 {
            return Err(err(
                "attachments_keep_days",
                "must be at most 36500 (0: never)",
            ));
        }
        if self.listen.is_none() && self.imap.is_empty() {
            return Err(err(
                "listen",
                "configure a listener or at least one [[imap]] mailbox",
            ));
        }
        if let Some(l) = &self.listen {
            if l.tls_cert.is_some() != l.tls_key.is_some() {
                return Err(err("listen.tls_cert", "tls_cert and tls_key go together"));
            }
            if l.require_tls && l.tls_cert.is_none() {
                return Err(err("listen.require_tls", "needs tls_cert and tls_key"));
            }
            if l.max_recipients == 0 || l.max_sessions == 0 || l.command_timeout_secs == 0 {
                return Err(err(
                    "listen",
                    "max_recipients, max_sessions and command_timeout_secs must be positive",
                ));
            }
            // A body is counted by the KiB as it arrives, and may hold one
            // byte past the limit until its end is seen.
            if l.max_mib_in_flight.saturating_mul(1 << 20) < self.max_message_bytes + 2048
                || l.max_mib_in_flight > 1 << 20
            {
                return Err(err(
                    "listen.max_mib_in_flight",
                    "must hold at least one message of max_message_bytes plus 2 KiB, and be at most 1048576",
                ));
            }
            // A deadline is `now + timeout`: a huge one overflowed the
            // clock and ended every session in a panic.
            if l.command_timeout_secs > 3600 {
                return Err(err("listen.command_timeout_secs", "must be at most 3600"));
            }
        }
        for (i, m) in self.imap.iter().enumerate() {
            m.password.resolve()?;
            if let Some(problem) = plaintext_refused(m.security, &m.host, m.allow_plaintext) {
                return Err(err(&format!("imap[{i}].security"), problem));
            }
            let Some(after) = parse_after(&m.after) else {
                return Err(err(
                    &format!("imap[{i}].after"),
                    "must be seen, delete or move:<folder>",
                ));
            };
            // Spaces around the name would be sent to the server as part
            // of it: a folder that does not exist, failing every round.
            if m.folder.trim().is_empty()
                || m.folder.trim() != m.folder
                || m.folder.chars().any(char::is_control)
            {
                return Err(err(
                    &format!("imap[{i}].folder"),
                    "must be a folder name without control characters or spaces around it",
                ));
            }
            if let After::Move(to) = &after {
                // Moved into the folder it is read from, a mail comes back
                // with a new UID every round (and one without a
                // Message-ID is a new message each time).
                let same = to == &m.folder
                    || (to.eq_ignore_ascii_case("inbox") && m.folder.eq_ignore_ascii_case("inbox"));
                if same || to.chars().any(char::is_control) {
                    return Err(err(
                        &format!("imap[{i}].after"),
                        "must move to another folder than `folder`, named without control characters",
                    ));
                }
            }
            if m.address.as_deref().is_some_and(|a| !address_ok(a)) {
                return Err(err(&format!("imap[{i}].address"), "is not a mail address"));
            }
            if !(1..=86_400).contains(&m.poll_interval_secs) {
                return Err(err(
                    &format!("imap[{i}].poll_interval_secs"),
                    "must be 1 to 86400",
                ));
            }
        }
        if let Some(p) = &self.smtp.password {
            p.resolve()?;
        }
        if self.smtp.password.is_some() != self.smtp.user.is_some() {
            return Err(err("smtp.user", "user and password go together"));
        }
        if self.smtp.password.is_some()
            && let Some(problem) = plaintext_refused(
                self.smtp.security,
                &self.smtp.host,
                self.smtp.allow_plaintext,
            )
        {
            return Err(err("smtp.security", problem));
        }
        if let Some(s) = &self.smtp.thread_secret
            && s.resolve()?.expose().len() < 16
        {
            return Err(err("smtp.thread_secret", "must be at least 16 characters"));
        }
        if self.smtp.max_attempts == 0 || self.smtp.retry_secs == 0 {
            return Err(err("smtp", "max_attempts and retry_secs must be positive"));
        }
        if self.smtp.retry_secs > 86_400 {
            return Err(err("smtp.retry_secs", "must be at most 86400"));
        }
        Ok(())
    }

    /// What the channel claims: its listener and its mailboxes.
    pub fn claims(&self) -> Vec<Resource> {
        let mut out: Vec<Resource> = self
            .listen
            .iter()
            .map(|l| Resource::TcpListener(l.address))
            .collect();
        out.extend(self.imap.iter().map(|m| Resource::Mailbox(m.label())));
        out
    }
}

/// The addresses and domains a channel takes mail for.
#[derive(Clone)]
pub struct Accepts {
    addresses: Vec<String>,
    domains: Vec<String>,
    /// `smtp.thread_secret`: replies' `Reply-To` is a plus-address signed
    /// with it, which customers answer to.
    thread_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Accepts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepts")
            .field("addresses", &self.addresses)
            .field("domains", &self.domains)
            .field("thread_secret", &self.thread_secret.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Accepts {
    pub fn of(config: &EmailConfig) -> Accepts {
        let lower = |v: &[String]| v.iter().map(|a| a.to_ascii_lowercase()).collect();
        Accepts {
            addresses: lower(&config.addresses),
            domains: lower(&config.domains),
            // Checked by `check` (and resolved again by the sender).
            thread_secret: config
                .smtp
                .thread_secret
                .as_ref()
                .and_then(|s| s.resolve().ok())
                .map(|s| s.expose().as_bytes().to_vec()),
        }
    }

    /// Whether mail for `rcpt` is ours (compared case-insensitively): one of
    /// the addresses or domains, or a plus-address of one that Switchboard
    /// signed for a reply's `Reply-To`.
    pub fn accepts(&self, rcpt: &str) -> bool {
        self.address_for(rcpt).is_some()
    }

    /// The channel's address that mail for `rcpt` is to: `rcpt` itself, or
    /// for a signed plus-address its base mailbox (lower case); `None` when
    /// it is not ours.
    pub fn address_for(&self, rcpt: &str) -> Option<String> {
        // The signature first: under an accepted domain a plus-address is
        // also a plain address of ours, and kept as one it would become the
        // contact's address (no rule matches it) and the next reply's From,
        // whose Reply-To would then nest another tag in it.
        if let Some(secret) = self.thread_secret.as_deref() {
            if let Some((base, _)) = crate::parse::verify_plus_address(rcpt, secret)
                && self.plain(&base)
            {
                return Some(base);
            }
            // Shaped like one of ours but not signed by us (forged, or made
            // with another secret): refused as documented, not taken as a
            // plain address of an accepted domain.
            if crate::parse::looks_plus_addressed(rcpt) {
                return None;
            }
        }
        self.plain(&rcpt.to_ascii_lowercase())
            .then(|| rcpt.to_owned())
    }

    /// Whether `address` is the channel's own: one of its addresses, the
    /// default one replies go out from, or a signed plus-address of one.
    /// Not anyone else of an accepted domain (colleagues may write in).
    pub fn is_own(&self, address: &str) -> bool {
        let lower = address.to_ascii_lowercase();
        if self.addresses.contains(&lower) || lower == self.default_address() {
            return true;
        }
        self.thread_secret
            .as_deref()
            .and_then(|secret| crate::parse::verify_plus_address(address, secret))
            .is_some_and(|(base, _)| self.plain(&base))
    }

    fn plain(&self, rcpt: &str) -> bool {
        self.addresses.iter().any(|a| a == rcpt)
            || rcpt
                .rsplit_once('@')
                .is_some_and(|(_, d)| self.domains.iter().any(|x| x == d))
    }

    /// The first configured address (or `support@<first domain>`).
    pub fn default_address(&self) -> String {
        self.addresses
            .first()
            .cloned()
            .or_else(|| self.domains.first().map(|d| format!("support@{d}")))
            .unwrap_or_default()
    }

    /// The domain of the first address: the listener's default name.
    pub fn hostname(&self) -> String {
        let a = self.default_address();
        a.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or(a)
    }
}

/// What happens to a fetched message after intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Seen,
    Delete,
    Move(String),
}

/// `seen`, `delete` or `move:<folder>`.
pub fn parse_after(s: &str) -> Option<After> {
    match s {
        "seen" => Some(After::Seen),
        "delete" => Some(After::Delete),
        _ => s
            .strip_prefix("move:")
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| After::Move(f.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> EmailConfig {
        toml::from_str(toml_text).expect("parses")
    }

    const BASE: &str = r#"
        name = "mail"
        addresses = ["help@support.example.com"]
        domains = ["billing.example.com"]
        attachments_dir = "/tmp/a"
        [listen]
        address = "127.0.0.1:2424"
        [smtp]
        host = "127.0.0.1"
    "#;

    #[test]
    fn a_minimal_configuration_is_valid() {
        let c = config(BASE);
        c.check().expect("valid");
        let a = Accepts::of(&c);
        assert!(a.accepts("HELP@support.example.com"));
        assert!(a.accepts("anyone@Billing.Example.com"));
        assert!(!a.accepts("help@elsewhere.example"));
        assert!(!a.accepts("help@support.example.com.evil"));
        assert_eq!(a.hostname(), "support.example.com");
        assert_eq!(c.claims().len(), 1);
        // No thread secret: a plus-address is nobody's.
        let signed =
            crate::parse::plus_address("help@support.example.com", "1-01abc", b"0123456789abcdef");
        assert!(!a.accepts(&signed));
    }

    /// A password goes unencrypted (`security = "none"`) only to loopback,
    /// or where `allow_plaintext` says the link is private.
    #[test]
    fn a_password_in_plain_text_goes_only_to_loopback_unless_allowed() {
        let smtp = |host: &str, more: &str| {
            BASE.replace(
                "host = \"127.0.0.1\"",
                &format!(
                    "host = \"{host}\"\n        security = \"none\"\n        user = \"u\"\n        password = \"p\"\n{more}"
                ),
            )
        };
        config(&smtp("127.0.0.1", "")).check().expect("loopback");
        config(&smtp("localhost", "")).check().expect("loopback");
        let e = config(&smtp("smtp.example.com", ""))
            .check()
            .expect_err("a remote relay")
            .to_string();
        assert!(
            e.contains("smtp.security") && e.contains("allow_plaintext"),
            "{e}"
        );
        config(&smtp("10.0.0.5", "        allow_plaintext = true"))
            .check()
            .expect("allowed");
        // Without a password, nothing secret crosses.
        let anonymous = BASE.replace(
            "host = \"127.0.0.1\"",
            "host = \"10.0.0.5\"\n        security = \"none\"",
        );
        config(&anonymous).check().expect("no password");

        let imap = |host: &str, more: &str| {
            format!(
                "{BASE}\n        [[imap]]\n        host = \"{host}\"\n        security = \"none\"\n        user = \"u\"\n        password = \"p\"\n{more}"
            )
        };
        config(&imap("::1", "")).check().expect("loopback");
        let e = config(&imap("imap.example.com", ""))
            .check()
            .expect_err("a remote mailbox")
            .to_string();
        assert!(e.contains("imap[0].security"), "{e}");
        config(&imap("imap.example.com", "        allow_plaintext = true"))
            .check()
            .expect("allowed");
    }

    /// `customer_address = "reply_to"` needs the form senders it trusts.
    #[test]
    fn reply_to_customers_need_their_form_senders() {
        let with = |more: &str| {
            BASE.replace(
                "attachments_dir",
                &format!("{more}\n        attachments_dir"),
            )
        };
        let e = config(&with(r#"customer_address = "reply_to""#))
            .check()
            .expect_err("no form senders")
            .to_string();
        assert!(e.contains("reply_to_senders"), "{e}");
        config(&with(
            r#"customer_address = "reply_to"
        reply_to_senders = ["forms@shop.example", "@forms.example"]"#,
        ))
        .check()
        .expect("valid");
        for bad in ["shop", "@", "a@b@c"] {
            let e = config(&with(&format!(
                "customer_address = \"reply_to\"\n        reply_to_senders = [\"{bad}\"]"
            )))
            .check()
            .expect_err("a bad form sender")
            .to_string();
            assert!(e.contains("reply_to_senders"), "{bad}: {e}");
        }
    }

    /// The channel's own addresses are its addresses and their signed
    /// plus-addresses, not everyone of an accepted domain.
    #[test]
    fn own_addresses_are_the_channels_not_its_domains() {
        let a = Accepts::of(&config(BASE));
        assert!(a.is_own("HELP@support.example.com"));
        assert!(a.accepts("olha@billing.example.com"));
        assert!(!a.is_own("olha@billing.example.com"));
        assert!(!a.is_own("olena@customer.example"));
    }

    #[test]
    fn signed_reply_to_addresses_are_accepted_as_their_mailbox() {
        let secret = "0123456789abcdefXYZ";
        let c = config(&BASE.replace(
            "[smtp]\n        host = \"127.0.0.1\"",
            &format!("[smtp]\n        host = \"127.0.0.1\"\n        thread_secret = \"{secret}\""),
        ));
        c.check().expect("valid");
        let a = Accepts::of(&c);
        let signed =
            crate::parse::plus_address("help@support.example.com", "1-01ABC", secret.as_bytes());
        assert!(a.accepts(&signed), "{signed}");
        assert_eq!(
            a.address_for(&signed.to_uppercase()).as_deref(),
            Some("help@support.example.com")
        );
        // Forged, or signed for a mailbox that is not ours: refused.
        let (local, domain) = signed.rsplit_once('@').expect("an address");
        let last = if local.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
        assert!(!a.accepts(&forged), "{forged}");
        assert!(!a.accepts("help+1-01abc.0000000000000000@support.example.com"));
        let foreign =
            crate::parse::plus_address("help@elsewhere.example", "1-01abc", secret.as_bytes());
        assert!(!a.accepts(&foreign));
        // Under an accepted domain too, a signed one is its mailbox.
        let in_domain =
            crate::parse::plus_address("team@billing.example.com", "1-01ABC", secret.as_bytes());
        assert_eq!(
            a.address_for(&in_domain).as_deref(),
            Some("team@billing.example.com")
        );
        // A forged one under an accepted domain is refused too (it was
        // taken as a plain address of the domain, became the contact's
        // address and the next reply's From, nesting a second tag), while
        // a colleague's own plus-address of another shape is not ours to
        // refuse.
        let (local, domain) = in_domain.rsplit_once('@').expect("an address");
        let last = if local.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
        assert_eq!(a.address_for(&forged), None, "{forged}");
        assert!(a.accepts("team+newsletter@billing.example.com"));
        // Plain addresses keep their spelling.
        assert_eq!(
            a.address_for("HELP@support.example.com").as_deref(),
            Some("HELP@support.example.com")
        );
        assert_eq!(c.smtp.port(), 587);
    }

    #[test]
    fn problems_name_the_key() {
        let no_in = BASE.replace("[listen]\n        address = \"127.0.0.1:2424\"", "");
        let e = config(&no_in).check().expect_err("no inbound").to_string();
        assert!(e.contains("channels.mail.listen"), "{e}");
        let bad = BASE.replace("help@support.example.com", "help");
        let e = config(&bad).check().expect_err("bad address").to_string();
        assert!(e.contains("channels.mail.addresses"), "{e}");
        let mut long = config(BASE);
        long.attachments_keep_days = 36_501;
        let e = long.check().expect_err("too long").to_string();
        assert!(e.contains("channels.mail.attachments_keep_days"), "{e}");
        // Past the clock's range: refused, not a panic in every session.
        let mut huge = config(BASE);
        if let Some(l) = huge.listen.as_mut() {
            l.command_timeout_secs = u64::MAX;
        }
        let e = huge.check().expect_err("too long").to_string();
        assert!(
            e.contains("channels.mail.listen.command_timeout_secs"),
            "{e}"
        );
        // A mail is held whole: a limit past 1 GiB is refused.
        let mut big = config(BASE);
        big.max_message_bytes = (1 << 30) + 1;
        let e = big.check().expect_err("too big").to_string();
        assert!(e.contains("channels.mail.max_message_bytes"), "{e}");
        let mut slow = config(BASE);
        slow.smtp.retry_secs = u64::MAX;
        let e = slow.check().expect_err("too long").to_string();
        assert!(e.contains("channels.mail.smtp.retry_secs"), "{e}");
        let e = toml::from_str::<EmailConfig>(&format!("{BASE}\nbogus = 1"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    /// A move into the folder read from (INBOX in any case) is refused: on
    /// a server without MOVE the copy comes back with a new UID every round.
    #[test]
    fn a_move_into_the_folder_read_from_is_refused() {
        let mailbox = |folder: &str, after: &str| {
            format!(
                "{BASE}\n[[imap]]\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword = \"p\"\n\
                 folder = \"{folder}\"\nafter = \"{after}\"\n"
            )
        };
        for (folder, after) in [
            ("INBOX", "move:INBOX"),
            ("INBOX", "move: inbox"),
            ("Support", "move:Support"),
        ] {
            let e = config(&mailbox(folder, after))
                .check()
                .expect_err(after)
                .to_string();
            assert!(e.contains("channels.mail.imap[0].after"), "{e}");
        }
        // Spaces around a folder's name would be sent as part of it.
        let e = config(&mailbox(" Support", "seen"))
            .check()
            .expect_err("spaced folder")
            .to_string();
        assert!(e.contains("channels.mail.imap[0].folder"), "{e}");
        config(&mailbox("INBOX", "move:Done"))
            .check()
            .expect("another folder");
        config(&mailbox("Support", "move:support"))
            .check()
            .expect("names are case-sensitive but INBOX");
    }

    #[test]
    fn after_actions_parse() {
        assert_eq!(parse_after("seen"), Some(After::Seen));
        assert_eq!(parse_after("move:Done"), Some(After::Move("Done".into())));
        assert_eq!(parse_after("move:"), None);
        assert_eq!(parse_after("move: Done "), Some(After::Move("Done".into())));
        assert_eq!(parse_after("archive"), None);
    }
}
