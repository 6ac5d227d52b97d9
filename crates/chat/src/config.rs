//! `[[channels]] type = "chat"`: the website chat widget.

use serde::Deserialize;
use std::path::PathBuf;
use switchboard_channel::{ChannelError, Secret};

/// The chat channel's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub name: String,
    /// The widgets embedded on websites; each `id` is the address routing
    /// rules match.
    pub widgets: Vec<WidgetConfig>,
    /// Signs visitors' session tokens (HMAC-SHA256); at least 32 characters.
    pub session_secret: Secret,
    #[serde(default = "defaults::session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// The largest websocket frame a client may send (bytes).
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// The longest visitor message (characters).
    #[serde(default = "defaults::max_message_chars")]
    pub max_message_chars: usize,
    /// Frames per minute from one session.
    #[serde(default = "defaults::rate_per_session")]
    pub rate_per_session: u32,
    /// Frames per minute from one client address (all its sessions).
    #[serde(default = "defaults::rate_per_ip")]
    pub rate_per_ip: u32,
    /// Chats (websockets) open at once from one client address, on this
    /// instance; an IPv6 address counts with its /64.
    #[serde(default = "defaults::sockets_per_ip")]
    pub sockets_per_ip: u32,
    #[serde(default = "defaults::ping_interval_secs")]
    pub ping_interval_secs: u64,
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Frames queued for one client before a client that does not read is
    /// closed (1008).
    #[serde(default = "defaults::send_buffer")]
    pub send_buffer: usize,
    /// Where uploaded files are kept (shared by all instances).
    #[serde(default = "defaults::uploads_dir")]
    pub uploads_dir: PathBuf,
    #[serde(default = "defaults::max_upload_bytes")]
    pub max_upload_bytes: usize,
    /// An upload's whole body must arrive within this many seconds (a
    /// pause of more than 10 s ends it sooner). Raise it with
    /// `max_upload_bytes` for visitors on slow links: the default lets
    /// 10 MiB through at ~1.4 Mbit/s.
    #[serde(default = "defaults::upload_timeout_secs")]
    pub upload_timeout_secs: u64,
    /// Uploads per minute from one visitor session.
    #[serde(default = "defaults::upload_rate_per_session")]
    pub upload_rate_per_session: u32,
    /// Upload bytes per minute from one visitor session (at least
    /// `max_upload_bytes`); default 5 × `max_upload_bytes`. See
    /// [`ChatConfig::upload_bytes_per_minute`].
    #[serde(default)]
    pub upload_bytes_per_session: Option<u64>,
    /// Upload bytes per minute from one client address (an IPv6 /64), all
    /// its sessions together (at least `max_upload_bytes`); default 10 ×
    /// `max_upload_bytes`. A new session costs nothing, so without it the
    /// session's allowance alone did not bound what one address could
    /// upload. See [`ChatConfig::upload_bytes_per_ip_minute`].
    #[serde(default)]
    pub upload_bytes_per_ip: Option<u64>,
    /// Uploads one instance reads at once (each is held in memory, up to
    /// `max_upload_bytes`), a quarter of them (at least 2) from one client
    /// address; more get 503 (the widget reports the upload failed).
    #[serde(default = "defaults::uploads_in_flight")]
    pub uploads_in_flight: usize,
    /// Uploads older than this many days are deleted (0: kept for ever).
    /// Match `[routing] retention_days`.
    #[serde(default = "defaults::uploads_keep_days")]
    pub uploads_keep_days: u64,
    /// An upload is refused (507) when it would leave less than this many
    /// bytes free on the upload directory's file system (0: no check), so
    /// that visitors cannot fill the disk Redis or the logs may share.
    #[serde(default = "defaults::uploads_min_free_bytes")]
    pub uploads_min_free_bytes: u64,
    /// Content types accepted for uploads.
    #[serde(default = "defaults::upload_types")]
    pub upload_types: Vec<String>,
    /// The estimated wait shown per place in the queue (seconds); 0 shows
    /// none.
    #[serde(default = "defaults::eta_per_position_secs")]
    pub eta_per_position_secs: u64,
    /// The offline form: answered by mail through this email channel.
    #[serde(default)]
    pub offline: Option<OfflineConfig>,
}

/// One embedded widget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidgetConfig {
    /// The address of its contacts (routing rules: `addresses = ["shop"]`).
    pub id: String,
    /// Page origins allowed to open the websocket (`https://shop.example`).
    pub origins: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// Where offline-form contacts are answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// The `[[channels]]` name of an email channel that sends the answers.
    pub email_channel: String,
    /// The address the answers come from.
    pub address: String,
}

mod defaults {
    use std::path::PathBuf;
    pub fn session_ttl_secs() -> u64 {
        7 * 24 * 3600
    }
    pub fn max_frame_bytes() -> usize {
        16 * 1024
    }
    pub fn max_message_chars() -> usize {
        4000
    }
    pub fn rate_per_session() -> u32 {
        60
    }
    pub fn rate_per_ip() -> u32 {
        300
    }
    pub fn sockets_per_ip() -> u32 {
        100
    }
    pub fn ping_interval_secs() -> u64 {
        25
    }
    pub fn idle_timeout_secs() -> u64 {
        90
    }
    pub fn send_buffer() -> usize {
        64
    }
    pub fn uploads_dir() -> PathBuf {
        PathBuf::from("/var/lib/switchboard/chat-uploads")
    }
    pub fn max_upload_bytes() -> usize {
        10 * 1024 * 1024
    }
    pub fn upload_timeout_secs() -> u64 {
        60
    }
    pub fn upload_rate_per_session() -> u32 {
        10
    }
    pub fn uploads_in_flight() -> usize {
        16
    }
    pub fn uploads_keep_days() -> u64 {
        30
    }
    pub fn uploads_min_free_bytes() -> u64 {
        1024 * 1024 * 1024
    }
    pub fn upload_types() -> Vec<String> {
        [
            "image/png",
            "image/jpeg",
            "image/gif",
            "application/pdf",
            "text/plain",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }
    pub fn eta_per_position_secs() -> u64 {
        60
    }
}

pub(crate) fn config_error(name: &str, key: &str, problem: &str) -> ChannelError {
    ChannelError::Config(format!("channels.{name}.{key}: {problem}"))
}

/// A plausible mail address: one `@`, both sides non-empty, no spaces or
/// control characters, at most 254 bytes.
pub fn address_ok(a: &str) -> bool {
    a.len() <= 254
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(a.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') && !d.starts_with('.') && !d.ends_with('.'))
}

pub(crate) fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl ChatConfig {
    /// Checks every key; the error names the first bad one.
    pub fn check(&self) -> Result<(), ChannelError> {
        let name = &self.name;
        let err = |key: &str, problem: &str| config_error(name, key, problem);
        if !id_ok(name) {
            return Err(err("name", "must be 1 to 64 characters of A-Za-z0-9._-"));
        }
        if self.widgets.is_empty() {
            return Err(err("widgets", "at least one widget is needed"));
        }
        for (i, w) in self.widgets.iter().enumerate() {
            if !id_ok(&w.id) {
                return Err(err(
                    &format!("widgets[{i}].id"),
                    "must be 1 to 64 characters of A-Za-z0-9._-",
                ));
            }
            if self.widgets[..i].iter().any(|o| o.id == w.id) {
                return Err(err(&format!("widgets[{i}].id"), "used twice"));
            }
            if w.origins.is_empty() {
                return Err(err(
                    &format!("widgets[{i}].origins"),
                    "at least one origin (https://host[:port]) is needed",
                ));
            }
            for o in &w.origins {
                let ok = (o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && o.split("://")
                        .nth(1)
                        .is_some_and(|h| !h.is_empty() && !h.contains('/'));
                if !ok {
                    return Err(err(
                        &format!("widgets[{i}].origins"),
                        &format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                    ));
                }
                // Compared as browsers send it: it could never match.
                let default_port = (o.starts_with("https://") && o.ends_with(":443"))
                    || (o.starts_with("http://") && o.ends_with(":80"));
                if o.chars().any(|c| c.is_ascii_uppercase()) || default_port {
                    return Err(err(
                        &format!("widgets[{i}].origins"),
                        &format!(
                            "{o:?}: write it as browsers send it, in lower case and without the default port"
                        ),
                    ));
                }
            }
        }
        let secret = self
            .session_secret
            .resolve()
            .map_err(|e| err("session_secret", &e.to_string()))?;
        if secret.expose().len() < 32 {
            return Err(err("session_secret", "must be at least 32 characters"));
        }
        let ranges: [(&str, u64, u64, u64); 16] = [
            ("uploads_keep_days", self.uploads_keep_days, 0, 36_500),
            (
                "session_ttl_secs",
                self.session_ttl_secs,
                60,
                365 * 24 * 3600,
            ),
            (
                "max_frame_bytes",
                self.max_frame_bytes as u64,
                1024,
                1 << 20,
            ),
            (
                "max_message_chars",
                self.max_message_chars as u64,
                1,
                64 * 1024,
            ),
            (
                "rate_per_session",
                u64::from(self.rate_per_session),
                1,
                100_000,
            ),
            ("rate_per_ip", u64::from(self.rate_per_ip), 1, 1_000_000),
            (
                "sockets_per_ip",
                u64::from(self.sockets_per_ip),
                1,
                1_000_000,
            ),
            ("ping_interval_secs", self.ping_interval_secs, 1, 3600),
            ("idle_timeout_secs", self.idle_timeout_secs, 2, 24 * 3600),
            ("send_buffer", self.send_buffer as u64, 1, 100_000),
            (
                "max_upload_bytes",
                self.max_upload_bytes as u64,
                1,
                100 << 20,
            ),
            ("upload_timeout_secs", self.upload_timeout_secs, 1, 3600),
            (
                "upload_rate_per_session",
                u64::from(self.upload_rate_per_session),
                1,
                10_000,
            ),
            (
                "upload_bytes_per_session",
                self.upload_bytes_per_minute(),
                1,
                10 << 30,
            ),
            (
                "upload_bytes_per_ip",
                self.upload_bytes_per_ip_minute(),
                1,
                100 << 30,
            ),
            (
                "uploads_in_flight",
                self.uploads_in_flight as u64,
                1,
                10_000,
            ),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                return Err(err(key, &format!("must be between {min} and {max}")));
            }
        }
        if self.upload_bytes_per_minute() < self.max_upload_bytes as u64 {
            return Err(err(
                "upload_bytes_per_session",
                "must be at least max_upload_bytes",
            ));
        }
        if self.upload_bytes_per_ip_minute() < self.max_upload_bytes as u64 {
            return Err(err(
                "upload_bytes_per_ip",
                "must be at least max_upload_bytes",
            ));
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err(err(
                "idle_timeout_secs",
                "must be longer than ping_interval_secs",
            ));
        }
        for t in &self.upload_types {
            if !t.contains('/') || t.chars().any(|c| c.is_whitespace() || c == ';') {
                return Err(err("upload_types", &format!("{t:?} is not a media type")));
            }
        }
        if let Some(o) = &self.offline {
            if !id_ok(&o.email_channel) {
                return Err(err("offline.email_channel", "must name an email channel"));
            }
            if !address_ok(&o.address) {
                return Err(err("offline.address", "must be a mail address"));
            }
        }
        Ok(())
    }

    /// Upload bytes a minute from one visitor session:
    /// `upload_bytes_per_session`, by default 5 × `max_upload_bytes`.
    pub fn upload_bytes_per_minute(&self) -> u64 {
        self.upload_bytes_per_session
            .unwrap_or((self.max_upload_bytes as u64).saturating_mul(5))
    }

    /// Upload bytes a minute from one client address:
    /// `upload_bytes_per_ip`, by default 10 × `max_upload_bytes`.
    pub fn upload_bytes_per_ip_minute(&self) -> u64 {
        self.upload_bytes_per_ip
            .unwrap_or((self.max_upload_bytes as u64).saturating_mul(10))
    }

    /// Uploads read at once from one client address: a quarter of
    /// `uploads_in_flight`, at least 2 (at most all of them).
    pub fn uploads_per_ip(&self) -> u32 {
        let quarter = (self.uploads_in_flight / 4)
            .max(2)
            .min(self.uploads_in_flight);
        u32::try_from(quarter).unwrap_or(u32::MAX)
    }

    pub fn widget(&self, id: &str) -> Option<&WidgetConfig> {
        self.widgets.iter().find(|w| w.id == id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(extra: &str) -> ChatConfig {
        toml::from_str(&format!(
            r#"
            name = "website"
            session_secret = "0123456789abcdef0123456789abcdef"
            {extra}
            [[widgets]]
            id = "shop"
            origins = ["https://shop.example"]
            "#
        ))
        .unwrap()
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        parse("").check().unwrap();
        let e = parse("session_ttl_secs = 1")
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels.website.session_ttl_secs"), "{e}");
        let mut c = parse("");
        c.session_secret = Secret::Inline("short".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("session_secret"), "{e}");
        let mut c = parse("");
        c.widgets[0].origins = vec!["https://shop.example/".into()];
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("widgets[0].origins")
        );
        let e = parse("[offline]\nemail_channel = \"mail\"\naddress = \"nope\"")
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("offline.address"), "{e}");
        let e = parse("max_upload_bytes = 2000\nupload_bytes_per_session = 1000")
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload_bytes_per_session"), "{e}");
        let e = parse("uploads_keep_days = 36501")
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("uploads_keep_days"), "{e}");
        // By default it follows max_upload_bytes.
        let c = parse("max_upload_bytes = 104857600");
        c.check().unwrap();
        assert_eq!(c.upload_bytes_per_minute(), 500 << 20);
        for origin in [
            "https://Shop.example",
            "https://shop.example:443",
            "http://shop.example:80",
        ] {
            let mut c = parse("");
            c.widgets[0].origins = vec![origin.into()];
            let e = c.check().expect_err(origin).to_string();
            assert!(e.contains("lower case"), "{origin}: {e}");
        }
    }

    #[test]
    fn addresses_are_checked_simply() {
        assert!(address_ok("a@b.example"));
        assert!(!address_ok("a@b"));
        assert!(!address_ok("a b@c.example"));
        assert!(!address_ok("@c.example"));
        assert!(!address_ok("a@@c.example"));
    }
}
