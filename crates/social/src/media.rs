//! Customers' attachments, fetched through the provider's API when an agent
//! opens one (messages keep only the media id).
//!
//! - WhatsApp Cloud: `GET {graph_url}/{media-id}` (with the phone number's
//!   access token) answers `{"url": …, "mime_type": …, "file_size": …}`;
//!   the file is then `GET url` with the same token. The URL expires after
//!   minutes, so it is asked for each time.
//! - Telegram: `getFile?file_id=…` answers `result.file_path`; the file is
//!   `GET {api_url}/file/bot{token}/{file_path}`. The token is in the path:
//!   errors are stripped of URLs.
//!
//! A whole fetch, both requests and every byte of the file, must be done
//! within [`MEDIA_TIMEOUT`]: a provider that stalls (mid-body too) gets the
//! agent an error, not a request that hangs. Every failed fetch is counted
//! in `switchboard_social_media_errors_total{platform, kind}`.

use futures::future::BoxFuture;
use metrics::counter;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use switchboard_channel::{Media, MediaError, MediaSource, SecretValue};
use tracing::{debug, warn};

/// The largest attachment served (WhatsApp documents go up to 100 MB; an
/// agent console has no use for more than this).
pub const MAX_MEDIA_BYTES: usize = 25 * 1024 * 1024;

/// The most one attachment fetch may take, connections, both requests and
/// the whole body included.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// `fetch`, given up after `timeout` with a clear error; failures counted
/// and logged.
async fn within(
    platform: &'static str,
    media_id: &str,
    timeout: Duration,
    fetch: impl Future<Output = Result<Media, MediaError>>,
) -> Result<Media, MediaError> {
    let (result, kind) = match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(media)) => return Ok(media),
        Ok(Err(e)) => {
            let kind = match e {
                MediaError::NotFound => "not_found",
                MediaError::TooLarge(_) => "too_large",
                MediaError::Unavailable(_) => "unavailable",
            };
            (e, kind)
        }
        Err(_) => (
            MediaError::Unavailable(format!(
                "the attachment did not arrive within {timeout:?} (the provider stalled)"
            )),
            "timeout",
        ),
    };
    counter!("switchboard_social_media_errors_total", "platform" => platform, "kind" => kind)
        .increment(1);
    if kind == "not_found" {
        debug!(
            platform,
            media_id, "An attachment the provider does not know was asked for."
        );
    } else {
        warn!(platform, media_id, kind, error = %result, "An attachment could not be fetched.");
    }
    Err(result)
}

fn unavailable(e: reqwest::Error) -> MediaError {
    MediaError::Unavailable(e.without_url().to_string())
}

/// Reads a response body up to [`MAX_MEDIA_BYTES`].
async fn body(mut response: reqwest::Response) -> Result<Vec<u8>, MediaError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_MEDIA_BYTES as u64)
    {
        return Err(MediaError::TooLarge(MAX_MEDIA_BYTES));
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if out.len() + chunk.len() > MAX_MEDIA_BYTES {
            return Err(MediaError::TooLarge(MAX_MEDIA_BYTES));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn status_error(status: reqwest::StatusCode) -> MediaError {
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::BAD_REQUEST {
        MediaError::NotFound
    } else {
        MediaError::Unavailable(format!("the provider answered {status}"))
    }
}

/// What a refused `getFile` means: only a 400 is about the file (an
/// unknown id: not found; "file is too big": over the Bot API's 20 MB);
/// anything else (401 a revoked token, 429, 5xx) is the provider's or
/// ours, and is reported as such rather than as a missing file.
fn telegram_refusal(status: reqwest::StatusCode, description: Option<&str>) -> MediaError {
    let description = description.unwrap_or_default();
    if status == reqwest::StatusCode::BAD_REQUEST {
        if description.to_ascii_lowercase().contains("too big") {
            MediaError::TooLarge(MAX_MEDIA_BYTES)
        } else {
            MediaError::NotFound
        }
    } else {
        MediaError::Unavailable(format!(
            "Telegram's getFile answered {status}: {}",
            switchboard_core::clip(description, 200)
        ))
    }
}

/// WhatsApp Cloud media, by phone number id.
#[derive(Debug)]
pub struct GraphMedia {
    pub(crate) client: reqwest::Client,
    pub(crate) graph_url: String,
    /// Account id → access token.
    pub(crate) tokens: HashMap<String, SecretValue>,
    /// The most one fetch takes ([`MEDIA_TIMEOUT`]).
    pub(crate) timeout: Duration,
}

#[derive(Deserialize)]
struct GraphMediaInfo {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
}

impl MediaSource for GraphMedia {
    fn fetch<'a>(
        &'a self,
        account: &'a str,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<Media, MediaError>> {
        Box::pin(within(
            "whatsapp",
            media_id,
            self.timeout,
            self.fetch_now(account, media_id),
        ))
    }
}

impl GraphMedia {
    async fn fetch_now(&self, account: &str, media_id: &str) -> Result<Media, MediaError> {
        let token = self.tokens.get(account).ok_or(MediaError::NotFound)?;
        if media_id.is_empty()
            || !media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(MediaError::NotFound);
        }
        let info = self
            .client
            .get(format!(
                "{}/{media_id}",
                self.graph_url.trim_end_matches('/')
            ))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(unavailable)?;
        if !info.status().is_success() {
            return Err(status_error(info.status()));
        }
        let info: GraphMediaInfo = info.json().await.map_err(unavailable)?;
        let file = self
            .client
            .get(&info.url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(unavailable)?;
        if !file.status().is_success() {
            return Err(status_error(file.status()));
        }
        let content_type = info
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        Ok(Media {
            content_type,
            bytes: body(file).await?,
        })
    }
}

/// Telegram files, through the bot.
#[derive(Debug)]
pub struct TelegramMedia {
    pub(crate) client: reqwest::Client,
    pub(crate) api_url: String,
    pub(crate) token: SecretValue,
    /// The most one fetch takes ([`MEDIA_TIMEOUT`]).
    pub(crate) timeout: Duration,
}

#[derive(Deserialize)]
struct TelegramFile {
    ok: bool,
    #[serde(default)]
    result: Option<TelegramFileResult>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct TelegramFileResult {
    #[serde(default)]
    file_path: Option<String>,
}

impl MediaSource for TelegramMedia {
    fn fetch<'a>(
        &'a self,
        _account: &'a str,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<Media, MediaError>> {
        Box::pin(within(
            "telegram",
            media_id,
            self.timeout,
            self.fetch_now(media_id),
        ))
    }
}

impl TelegramMedia {
    async fn fetch_now(&self, media_id: &str) -> Result<Media, MediaError> {
        let token = self.token.expose();
        let info = self
            .client
            .get(format!(
                "{}/bot{token}/getFile",
                self.api_url.trim_end_matches('/')
            ))
            .query(&[("file_id", media_id)])
            .send()
            .await
            .map_err(unavailable)?;
        let status = info.status();
        let info: TelegramFile = info.json().await.map_err(unavailable)?;
        let path = match (info.ok, info.result.and_then(|r| r.file_path)) {
            (true, Some(path)) if !path.contains("..") => path,
            (true, _) => return Err(MediaError::NotFound),
            (false, _) => return Err(telegram_refusal(status, info.description.as_deref())),
        };
        let file = self
            .client
            .get(format!(
                "{}/file/bot{token}/{path}",
                self.api_url.trim_end_matches('/')
            ))
            .send()
            .await
            .map_err(unavailable)?;
        if !file.status().is_success() {
            return Err(status_error(file.status()));
        }
        let content_type = file
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok(Media {
            content_type,
            bytes: body(file).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    use futures::StreamExt;
    use switchboard_channel::Secret;

    /// A provider that names the file, then sends its headers and a first
    /// chunk of it, and nothing more.
    async fn stalling_provider() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let file = || async {
            let first =
                futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("JPEG")) });
            let body = Body::from_stream(first.chain(futures::stream::pending()));
            (
                [("content-length", "1000"), ("content-type", "image/jpeg")],
                body,
            )
        };
        let url = format!("{base}/files/MEDIA-1");
        let app = axum::Router::new()
            .route(
                "/v21.0/MEDIA-1",
                get(move || async move {
                    axum::Json(serde_json::json!({"url": url, "mime_type": "image/jpeg"}))
                }),
            )
            .route(
                "/bot1:token/getFile",
                get(|| async {
                    axum::Json(
                        serde_json::json!({"ok": true, "result": {"file_path": "photos/a.jpg"}}),
                    )
                }),
            )
            .route("/files/MEDIA-1", get(file))
            .route("/file/bot1:token/photos/a.jpg", get(file));
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    /// A `getFile` refusal is told apart: a revoked token or a rate limit
    /// is not a missing file (they were all "not found", logged at debug).
    #[tokio::test]
    async fn telegram_refusals_are_told_apart() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let app = axum::Router::new().route(
            "/bot{token}/getFile",
            get(
                |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                    let (status, description) = match q.get("file_id").map(String::as_str) {
                        Some("gone") => (400, "Bad Request: invalid file_id"),
                        Some("big") => (400, "Bad Request: file is too big"),
                        Some("revoked") => (401, "Unauthorized"),
                        _ => (429, "Too Many Requests: retry after 5"),
                    };
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        axum::Json(serde_json::json!({
                            "ok": false, "error_code": status, "description": description
                        })),
                    )
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let telegram = TelegramMedia {
            client: crate::send::http_client(Duration::from_secs(1)).expect("client"),
            api_url: base,
            token: secret("1:token"),
            timeout: Duration::from_secs(5),
        };
        let fetch = |id: &'static str| telegram.fetch("bot", id);
        assert!(matches!(fetch("gone").await, Err(MediaError::NotFound)));
        assert!(matches!(fetch("big").await, Err(MediaError::TooLarge(_))));
        for id in ["revoked", "busy"] {
            match fetch(id).await {
                Err(MediaError::Unavailable(reason)) => {
                    assert!(reason.contains("getFile answered"), "{id}: {reason}")
                }
                other => panic!("{id}: {other:?}"),
            }
        }
    }

    fn secret(value: &str) -> SecretValue {
        Secret::Inline(value.to_owned()).resolve().expect("secret")
    }

    /// Also with the URLs configured with a trailing slash (as the
    /// senders take them): no `//` in the requests' paths.
    #[tokio::test]
    async fn a_provider_stalling_mid_body_is_given_up_on() {
        for slash in ["", "/"] {
            stalling_fetches_are_given_up_on(slash).await;
        }
    }

    async fn stalling_fetches_are_given_up_on(slash: &str) {
        let base = stalling_provider().await;
        let client = crate::send::http_client(Duration::from_secs(1)).expect("client");
        let timeout = Duration::from_millis(300);
        let graph = GraphMedia {
            client: client.clone(),
            graph_url: format!("{base}/v21.0{slash}"),
            tokens: HashMap::from([("106540352242922".to_owned(), secret("token"))]),
            timeout,
        };
        let telegram = TelegramMedia {
            client,
            api_url: format!("{base}{slash}"),
            token: secret("1:token"),
            timeout,
        };
        let fetches: [(&str, BoxFuture<'_, Result<Media, MediaError>>); 2] = [
            ("graph", graph.fetch("106540352242922", "MEDIA-1")),
            ("telegram", telegram.fetch("bot", "MEDIA-1")),
        ];
        for (name, fetch) in fetches {
            let result = tokio::time::timeout(Duration::from_secs(5), fetch)
                .await
                .unwrap_or_else(|_| panic!("{name}{slash}: the fetch hung"));
            match result {
                Err(MediaError::Unavailable(reason)) => {
                    assert!(
                        reason.contains("did not arrive within 300ms"),
                        "{name}{slash}: {reason}"
                    )
                }
                other => panic!("{name}{slash}: {other:?}"),
            }
        }
    }
}
