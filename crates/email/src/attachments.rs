//! Where customers' attachments are kept: a directory, one file per
//! distinct content (named by its SHA-256, so a repeated delivery writes
//! nothing new) plus a small `.type` file with its content type. A file is
//! written to a temporary name, synced and renamed before the sender is
//! answered. Agents open attachments through the agent API
//! (`GET /api/v1/contacts/{id}/media/{media_id}`), which asks this store.

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use switchboard_channel::{Media, MediaError, MediaSource};

/// The attachment directory of one email channel.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
    max_bytes: usize,
}

impl AttachmentStore {
    /// Creates the directory when missing.
    pub fn open(dir: &Path, max_bytes: usize) -> std::io::Result<AttachmentStore> {
        switchboard_channel::files::open_writable(dir)?;
        Ok(AttachmentStore {
            dir: dir.to_owned(),
            max_bytes,
        })
    }

    /// Keeps `bytes` durably; returns its media id (`sha256-<32 hex>`).
    pub async fn keep(&self, content_type: &str, bytes: Vec<u8>) -> std::io::Result<String> {
        let dir = self.dir.clone();
        let content_type = sanitize_type(content_type);
        switchboard_channel::files::blocking(move || keep_blocking(&dir, &content_type, &bytes))
            .await?
    }

    fn path(&self, media_id: &str) -> Option<PathBuf> {
        let hex = media_id.strip_prefix("sha256-")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(media_id))
    }
}

fn keep_blocking(dir: &Path, content_type: &str, bytes: &[u8]) -> std::io::Result<String> {
    let digest = Sha256::digest(bytes);
    let id = format!("sha256-{}", &hex::encode(digest)[..32]);
    let path = dir.join(&id);
    write_atomically(&dir.join(format!("{id}.type")), content_type.as_bytes())?;
    if path.exists() {
        // Received again: young again for the clean-up (attachments not
        // seen for `attachments_keep_days` are deleted). The sweep may have
        // taken it aside meanwhile (files.rs): then it is written again.
        let touched = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        match touched {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Not there (new, or swept since the look above): written, so that the
    // message this answers for names a file that exists.
    if !path.exists() {
        write_atomically(&path, bytes)?;
    }
    Ok(id)
}

use switchboard_channel::files::write_atomically;

/// `type/subtype` of safe characters, else `application/octet-stream`.
fn sanitize_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    let ok = t.len() <= 100
        && t.split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b));
    if ok {
        t
    } else {
        "application/octet-stream".into()
    }
}

impl MediaSource for AttachmentStore {
    fn fetch<'a>(
        &'a self,
        _account: &'a str,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<Media, MediaError>> {
        Box::pin(async move {
            let path = self.path(media_id).ok_or(MediaError::NotFound)?;
            let max_bytes = self.max_bytes;
            // Off the async threads and bounded: a file system that stopped
            // answering (NFS) holds no agent's request, nor a media permit,
            // for ever.
            switchboard_channel::files::blocking(move || {
                let meta = std::fs::metadata(&path).map_err(|_| MediaError::NotFound)?;
                if meta.len() > max_bytes as u64 {
                    return Err(MediaError::TooLarge(max_bytes));
                }
                let bytes =
                    std::fs::read(&path).map_err(|e| MediaError::Unavailable(e.to_string()))?;
                let content_type = std::fs::read_to_string(path.with_extension("type"))
                    .map(|t| sanitize_type(&t))
                    .unwrap_or_else(|_| "application/octet-stream".into());
                Ok(Media {
                    content_type,
                    bytes,
                })
            })
            .await
            .unwrap_or_else(|e| Err(MediaError::Unavailable(e.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attachment_received_again_is_young_again_for_the_clean_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::open(dir.path(), 1024).expect("open");
        let id = store
            .keep("text/plain", b"hello".to_vec())
            .await
            .expect("keep");
        let path = dir.path().join(&id);
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(90 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(long_ago)
            .expect("age it");
        store
            .keep("text/plain", b"hello".to_vec())
            .await
            .expect("again");
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
        assert_eq!(
            switchboard_channel::files::sweep_older_than(dir.path(), cutoff)
                .expect("sweep")
                .deleted,
            0,
            "the repeated attachment was kept"
        );
        assert!(path.exists());
    }

    #[tokio::test]
    async fn kept_bytes_come_back_with_their_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::open(dir.path(), 1024).expect("open");
        let id = store
            .keep("Application/PDF", b"%PDF-1.4 test".to_vec())
            .await
            .expect("keep");
        assert!(id.starts_with("sha256-") && id.len() == 39, "{id}");
        let again = store
            .keep("application/pdf", b"%PDF-1.4 test".to_vec())
            .await
            .expect("keep again");
        assert_eq!(id, again);
        let media = store.fetch("", &id).await.expect("fetch");
        assert_eq!(media.content_type, "application/pdf");
        assert_eq!(media.bytes, b"%PDF-1.4 test");
        let leftovers = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().contains("tmp-"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn unknown_or_malformed_ids_are_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AttachmentStore::open(dir.path(), 1024).expect("open");
        for id in [
            "sha256-00000000000000000000000000000000",
            "../etc/passwd",
            "sha256-zz",
        ] {
            assert_eq!(store.fetch("", id).await, Err(MediaError::NotFound), "{id}");
        }
        let big = store
            .keep("text/plain", vec![b'x'; 2048])
            .await
            .expect("keep");
        assert_eq!(store.fetch("", &big).await, Err(MediaError::TooLarge(1024)));
        assert_eq!(
            sanitize_type("text/html\"><script>"),
            "application/octet-stream"
        );
    }
}
