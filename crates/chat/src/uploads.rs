//! Visitors' uploads: one file per media id in `uploads_dir` (shared by
//! every instance), with a small JSON description beside it naming the
//! visitor who uploaded it. Agents fetch them through the agent API
//! ([`MediaSource`]).

use crate::protocol::Attachment;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use switchboard_channel::{Media, MediaError, MediaSource};

/// What is kept beside an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    visitor: String,
    name: String,
    #[serde(rename = "type")]
    content_type: String,
    size: u64,
}

/// The upload directory.
#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
    max_bytes: usize,
    /// Free space an upload must leave on the directory's file system.
    min_free: u64,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Storing it would leave less than `uploads_min_free_bytes` free.
    #[error("{free} bytes free on the upload directory's file system, {min_free} must stay free")]
    Full { free: u64, min_free: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub(crate) fn id_ok(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Uploads {
    pub fn open(dir: &Path, max_bytes: usize, min_free: u64) -> std::io::Result<Uploads> {
        switchboard_channel::files::open_writable(dir)?;
        Ok(Uploads {
            dir: dir.to_owned(),
            max_bytes,
            min_free,
        })
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        id_ok(id).then(|| self.dir.join(id))
    }

    /// Stores an upload of `visitor`; returns its description. The bytes
    /// are taken, not copied: one upload holds its size in memory once.
    pub async fn store(
        &self,
        visitor: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Attachment, StoreError> {
        let id = crate::token::random_id();
        let path = self
            .path(&id)
            .ok_or_else(|| std::io::Error::other("bad id"))?;
        let meta = Meta {
            visitor: visitor.to_owned(),
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            size: bytes.len() as u64,
        };
        let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        // The file first, its description last, each synced and renamed
        // into place: a description means a complete file, and the 201
        // (after which the visitor's message names it) means both survive
        // a crash.
        let file = bytes;
        let (dir, min_free) = (self.dir.clone(), self.min_free);
        switchboard_channel::files::blocking(move || {
            use switchboard_channel::files::write_atomically;
            if min_free > 0 {
                let fs = rustix::fs::statvfs(&dir).map_err(std::io::Error::from)?;
                let free = fs.f_bavail.saturating_mul(fs.f_frsize);
                let needed = (file.len() + json.len()) as u64;
                if free.saturating_sub(needed) < min_free {
                    return Err(StoreError::Full { free, min_free });
                }
            }
            write_atomically(&path, &file)?;
            write_atomically(&path.with_extension("json"), &json)?;
            Ok(())
        })
        .await??;
        Ok(Attachment {
            id,
            name: meta.name,
            content_type: meta.content_type,
            size: meta.size,
        })
    }

    /// The upload `id` if `visitor` uploaded it; `Ok(None)` when there is
    /// no such upload of theirs, `Err` when the files could not be read
    /// (a disk that fails or does not answer in time: the message is to be
    /// sent again, not dropped as naming an unknown upload).
    pub async fn describe(
        &self,
        visitor: &str,
        id: &str,
    ) -> Result<Option<Attachment>, std::io::Error> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        let read = switchboard_channel::files::blocking(move || {
            std::fs::read(path.with_extension("json"))
        })
        .await?;
        let json = match read {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // A description that does not parse is one nobody can use.
        let Ok(meta) = serde_json::from_slice::<Meta>(&json) else {
            return Ok(None);
        };
        Ok((meta.visitor == visitor).then(|| Attachment {
            id: id.to_owned(),
            name: meta.name,
            content_type: meta.content_type,
            size: meta.size,
        }))
    }
}

impl MediaSource for Uploads {
    fn fetch<'a>(
        &'a self,
        _account: &'a str,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<Media, MediaError>> {
        Box::pin(async move {
            let path = self.path(media_id).ok_or(MediaError::NotFound)?;
            let max_bytes = self.max_bytes;
            // Off the async threads and bounded (a file system that stopped
            // answering holds no agent's request for ever).
            switchboard_channel::files::blocking(move || {
                let json =
                    std::fs::read(path.with_extension("json")).map_err(|_| MediaError::NotFound)?;
                let meta: Meta = serde_json::from_slice(&json).map_err(|_| MediaError::NotFound)?;
                if meta.size > max_bytes as u64 {
                    return Err(MediaError::TooLarge(max_bytes));
                }
                let bytes =
                    std::fs::read(&path).map_err(|e| MediaError::Unavailable(e.to_string()))?;
                Ok(Media {
                    content_type: meta.content_type,
                    bytes,
                })
            })
            .await
            .unwrap_or_else(|e| Err(MediaError::Unavailable(e.to_string())))
        })
    }
}

/// The line a message's text carries for an attachment (as the email
/// channel writes them), so agents and the transcript see it.
pub fn attachment_line(a: &Attachment) -> String {
    format!(
        "[attachment: {}, {}, {} bytes, media id {}]",
        a.name.replace(['\n', '\r', ']'], " "),
        a.content_type,
        a.size,
        a.id
    )
}

/// Splits a stored text into the visitor's text and the attachments its
/// trailing attachment lines describe.
pub fn split_attachments(text: &str) -> (String, Vec<Attachment>) {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    while let Some(last) = lines.last() {
        let Some(a) = parse_line(last) else { break };
        found.push(a);
        lines.pop();
    }
    found.reverse();
    if found.is_empty() {
        return (text.to_owned(), found);
    }
    (lines.join("\n"), found)
}

/// How an attachment line starts.
pub(crate) const LINE_PREFIX: &str = "[attachment: ";

fn parse_line(line: &str) -> Option<Attachment> {
    let inner = line.strip_prefix(LINE_PREFIX)?.strip_suffix(']')?;
    let (rest, id) = inner.rsplit_once(", media id ")?;
    let (rest, size) = rest.strip_suffix(" bytes")?.rsplit_once(", ")?;
    let (name, content_type) = rest.rsplit_once(", ")?;
    Some(Attachment {
        id: id.to_owned(),
        name: name.to_owned(),
        content_type: content_type.to_owned(),
        size: size.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Someone else's upload, or none, is unknown; a description that
    /// cannot be read (here a directory where the file should be, as an
    /// I/O error gives) is an error, not an unknown upload: the widget
    /// dropped the visitor's message as naming no upload of theirs.
    #[tokio::test]
    async fn an_unreadable_description_is_an_error_not_an_unknown_upload() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = Uploads::open(dir.path(), 1 << 20, 0).unwrap();
        let a = uploads
            .store("v1", "a.png", "image/png", b"png".to_vec())
            .await
            .unwrap();
        assert_eq!(
            uploads.describe("v1", &a.id).await.unwrap(),
            Some(a.clone())
        );
        assert_eq!(uploads.describe("v2", &a.id).await.unwrap(), None);
        assert_eq!(
            uploads
                .describe("v1", "BBBBBBBBBBBBBBBBBBBBBB")
                .await
                .unwrap(),
            None
        );
        let json = dir.path().join(format!("{}.json", a.id));
        std::fs::remove_file(&json).unwrap();
        std::fs::create_dir(&json).unwrap();
        assert!(uploads.describe("v1", &a.id).await.is_err());
    }

    #[test]
    fn attachment_lines_round_trip() {
        let a = Attachment {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            name: "a, b.png".into(),
            content_type: "image/png".into(),
            size: 12,
        };
        let text = format!("look\n{}", attachment_line(&a));
        assert_eq!(split_attachments(&text), ("look".to_owned(), vec![a]));
        assert_eq!(split_attachments("plain").1, vec![]);
    }
}
