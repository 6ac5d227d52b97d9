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

use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use switchboard_channel::{Media, MediaError, MediaSource, SecretValue};

/// The largest attachment served (WhatsApp documents go up to 100 MB; an
/// agent console has no use for more than this).
pub const MAX_MEDIA_BYTES: usize = 25 * 1024 * 1024;

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

/// WhatsApp Cloud media, by phone number id.
#[derive(Debug)]
pub struct GraphMedia {
    pub(crate) client: reqwest::Client,
    pub(crate) graph_url: String,
    /// Account id → access token.
    pub(crate) tokens: HashMap<String, SecretValue>,
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
        Box::pin(async move {
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
                .get(format!("{}/{media_id}", self.graph_url))
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
        })
    }
}

/// Telegram files, through the bot.
#[derive(Debug)]
pub struct TelegramMedia {
    pub(crate) client: reqwest::Client,
    pub(crate) api_url: String,
    pub(crate) token: SecretValue,
}

#[derive(Deserialize)]
struct TelegramFile {
    ok: bool,
    #[serde(default)]
    result: Option<TelegramFileResult>,
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
        Box::pin(async move {
            let token = self.token.expose();
            let info = self
                .client
                .get(format!("{}/bot{token}/getFile", self.api_url))
                .query(&[("file_id", media_id)])
                .send()
                .await
                .map_err(unavailable)?;
            let info: TelegramFile = info.json().await.map_err(unavailable)?;
            let path = match (info.ok, info.result.and_then(|r| r.file_path)) {
                (true, Some(path)) if !path.contains("..") => path,
                _ => return Err(MediaError::NotFound),
            };
            let file = self
                .client
                .get(format!("{}/file/bot{token}/{path}", self.api_url))
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
        })
    }
}
