//! Secrets in configuration: written inline, read from a file, or read from
//! an environment variable. Never printed.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// Where a secret comes from. In TOML:
/// `token = "inline"`, `token = { file = "/etc/switchboard/token" }` or
/// `token = { env = "INTAKE_TOKEN" }`. A file's trailing newline is dropped.
/// A table with any other key, or with both, is refused (it used to be
/// read as whichever form matched first).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
        }
    }
}

/// A secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {0} is not set or not UTF-8")]
    Env(String),
    #[error("the secret is empty")]
    Empty,
}

impl Secret {
    /// Reads the secret, without the spaces and line breaks around it: a
    /// presented bearer token is read without them, so a secret kept with
    /// them (`echo` into a file or a variable, a stray space in the
    /// configuration) validated and then refused every request.
    pub fn resolve(&self) -> Result<SecretValue, SecretError> {
        let value = match self {
            Secret::Inline(v) => v.clone(),
            Secret::File { file } => {
                std::fs::read_to_string(file).map_err(|e| SecretError::File {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            Secret::Env { env } => std::env::var(env).map_err(|_| SecretError::Env(env.clone()))?,
        };
        let value = value.trim_ascii().to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretValue(value))
    }
}

/// A secret's value. `Debug` does not show it.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `candidate` in time independent of where they differ
    /// (both are hashed first, so lengths do not leak either).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        same_secret(self.0.as_bytes(), candidate)
    }
}

/// Compares two secrets in time independent of their content and of where
/// they differ: both are hashed (SHA-256) first, so lengths do not leak
/// either, then compared in constant time.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(redacted)")
    }
}

/// The token of an `Authorization: Bearer <token>` header, as bytes (a
/// token need not be ASCII). The scheme's name is read in any case (RFC
/// 9110 §11.1: `bearer`, `BEARER`), spaces around the token are dropped;
/// `None` for no header, another scheme or an empty token. Every route
/// that takes a bearer token reads it here.
pub fn bearer_bytes(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .as_bytes()
        .trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = value.split_at(space);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// [`bearer_bytes`] for routes whose tokens are text.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    bearer_bytes(headers).and_then(|t| std::str::from_utf8(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        token: Secret,
    }

    #[test]
    fn a_table_with_other_keys_is_refused() {
        for bad in [
            r#"token = { file = "/x", bogus = "x" }"#,
            r#"token = { file = "/x", env = "X" }"#,
            r#"token = { envv = "X" }"#,
        ] {
            assert!(toml::from_str::<Holder>(bad).is_err(), "{bad}");
        }
        assert!(toml::from_str::<Holder>(r#"token = { env = "X" }"#).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let read = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::AUTHORIZATION,
                value.parse().expect("a header value"),
            );
            bearer(&headers).map(str::to_owned)
        };
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
            ("abc", None),
        ] {
            assert_eq!(read(value).as_deref(), token, "{value:?}");
        }
        assert_eq!(bearer(&axum::http::HeaderMap::new()), None);
        // Not ASCII: read as bytes (the intake API compared bytes before).
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderValue::from_bytes("Bearer sécret".as_bytes()).expect("a value"),
        );
        assert_eq!(bearer_bytes(&headers), Some("sécret".as_bytes()));
    }

    #[test]
    fn reads_inline_file_and_env_forms() {
        let inline: Holder = toml::from_str(r#"token = "s3cret""#).expect("inline");
        assert!(inline.token.resolve().expect("resolve").matches(b"s3cret"));

        let dir = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write");
        let text = format!("token = {{ file = {:?} }}", dir.display().to_string());
        let file: Holder = toml::from_str(&text).expect("file");
        let value = file.token.resolve().expect("resolve");
        assert_eq!(value.expose(), "from-file");
        std::fs::remove_file(&dir).expect("remove");

        // Spaces and line breaks around a secret are not part of it.
        std::fs::write(&dir, " from-file \r\n").expect("write");
        let value = file.token.resolve().expect("resolve");
        assert_eq!(value.expose(), "from-file");
        std::fs::remove_file(&dir).expect("remove");
        let spaced: Holder = toml::from_str(r#"token = "s3cret ""#).expect("inline");
        assert_eq!(spaced.token.resolve().expect("resolve").expose(), "s3cret");
        let blank: Holder = toml::from_str(r#"token = " ""#).expect("inline");
        assert_eq!(blank.token.resolve().err(), Some(SecretError::Empty));

        let env: Holder = toml::from_str(r#"token = { env = "PATH" }"#).expect("env");
        assert!(env.token.resolve().is_ok());
        let missing: Holder =
            toml::from_str(r#"token = { env = "SWITCHBOARD_SURELY_UNSET_VAR" }"#).expect("env");
        assert!(matches!(missing.token.resolve(), Err(SecretError::Env(_))));
    }

    #[test]
    fn never_printed() {
        let s = Secret::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let v = s.resolve().expect("resolve");
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!v.matches(b"hunter3"));
        assert!(!v.matches(b""));
    }
}
