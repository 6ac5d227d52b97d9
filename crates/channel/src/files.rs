//! Keeping a channel's file directory (email attachments, chat uploads)
//! from growing for ever: files not written or touched for longer than the
//! channel keeps them are deleted, once an hour. Several instances sharing
//! the directory may sweep it at once; a file another one deleted first is
//! not an error. And writing a file there so that it survives a crash.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How long a file operation a sender or agent waits for may take: a
/// directory on NFS whose server stopped answering (a hard mount) never
/// returns. Past it the caller is answered with an error it can retry
/// (`TimedOut`); the blocked thread stays blocked, the caller does not.
pub const FILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Characters a file name shown to an agent may not keep: control
/// characters, and the Unicode bidirectional controls (U+061C, U+200E,
/// U+200F, U+202A–U+202E, U+2066–U+2069), with which `invoice\u{202E}fdp.exe`
/// shows as `invoiceexe.pdf`.
pub fn hidden_in_a_name(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Runs blocking file work `f` off the async threads, answering
/// `TimedOut` when it has not returned within [`FILE_TIMEOUT`].
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    blocking_within(FILE_TIMEOUT, f).await
}

/// File work under way at once, in the whole process. Each piece holds
/// a blocking thread until it returns: while a file system does not
/// answer, callers that time out leave theirs blocked, and this keeps them
/// from filling tokio's blocking pool, which DNS lookups and Redis
/// reconnects need too.
static FILE_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);

/// [`blocking`] with its own limit (waiting for a turn included).
pub async fn blocking_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let work = async {
        let turn = FILE_WORK.acquire().await.map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            f()
        })
        .await
        .map_err(std::io::Error::other)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the file system did not answer within {} s",
                limit.as_secs_f64()
            ),
        )),
    }
}

/// Writes `bytes` to `path` so that once this returns the whole file is on
/// disk under its name, or (after a crash before) nothing is: a temporary
/// file beside it, synced, renamed over `path`, and the directory synced.
/// A temporary file a crash leaves behind (`<name>.tmp-<ulid>`) is swept
/// with the old files, where the channel sweeps its directory at all.
/// Blocking: run it off the async threads.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", ulid::Ulid::new()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(parent) = path.parent() {
        // The rename itself must survive a crash.
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Creates `dir` when missing and checks that a file can be written there
/// (one is created and removed). A directory that exists but cannot be
/// written (a read-only mount, or outside the systemd unit's writable
/// paths under `ProtectSystem=strict`) was only found out at the first
/// attachment or upload; now at start, naming the directory.
pub fn open_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".switchboard-probe-{}", ulid::Ulid::new()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{} is not writable ({e}); under systemd, list it in ReadWritePaths=",
                    dir.display()
                ),
            )
        })
}

/// What a sweep did: files deleted, and old files it could not delete
/// (with the last such error).
#[derive(Debug, Default)]
pub struct Swept {
    pub deleted: usize,
    pub failed: usize,
    pub last_error: Option<std::io::Error>,
}

/// Deletes the regular files of `dir` last modified before `cutoff`. A
/// file that cannot be deleted is counted and passed over: one such file
/// (another owner's under a sticky bit, an immutable one) ended the sweep,
/// and every file after it was kept for ever. Blocking: run it off the
/// async threads.
pub fn sweep_older_than(dir: &Path, cutoff: SystemTime) -> std::io::Result<Swept> {
    let mut swept = Swept::default();
    for entry in std::fs::read_dir(dir)? {
        let removed = entry.and_then(|entry| {
            let Ok(meta) = entry.metadata() else {
                return Ok(false);
            };
            let old = meta.is_file() && meta.modified().map(|m| m < cutoff).unwrap_or(false);
            if old {
                remove_if_still_old(&entry.path(), cutoff)
            } else {
                Ok(false)
            }
        });
        match removed {
            Ok(true) => swept.deleted += 1,
            Ok(false) => {}
            Err(e) => {
                swept.failed += 1;
                swept.last_error = Some(e);
            }
        }
    }
    Ok(swept)
}

/// Deletes `path` if it is still older than `cutoff` once out of the way.
/// A file received again is made young again by its owner (an email
/// attachment's `keep` touches it, then answers the mail `250` naming it):
/// one touched between the sweep's look and its delete was deleted all the
/// same, and the stored message named a file that was gone. So the file
/// is first renamed aside (`<name>.swept-<ulid>`) and looked at again:
/// still old, it is deleted; young again, it is put back. A `keep` that
/// finds it away writes it again. A file left aside by a crash is old
/// (deleted by the next sweep) or was put back by its `keep`.
fn remove_if_still_old(path: &Path, cutoff: SystemTime) -> std::io::Result<bool> {
    let Some(name) = path.file_name() else {
        return Ok(false);
    };
    let mut aside_name = name.to_os_string();
    aside_name.push(format!(".swept-{}", ulid::Ulid::new()));
    let aside = path.with_file_name(aside_name);
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let still_old = std::fs::metadata(&aside)
        .and_then(|m| m.modified())
        .map(|m| m < cutoff)
        .unwrap_or(true);
    if !still_old {
        // Made young again meanwhile. A copy written in its place by a
        // `keep` that found it away has the same bytes (files are named
        // by their content's digest, or uniquely).
        std::fs::rename(&aside, path)?;
        return Ok(false);
    }
    match std::fs::remove_file(&aside) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sweeps `dir` every `every` (and once at start), deleting files older
/// than `keep`, until `shutdown`. `what` names the directory in logs and in
/// `switchboard_channel_files_deleted_total{source, what}`, `source` being
/// the channel's name.
pub async fn keep_clean(
    source: String,
    what: &'static str,
    dir: PathBuf,
    keep: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let cutoff = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let d = dir.clone();
        // Shutdown does not wait for a sweep under way (a large directory,
        // a file system that does not answer): it finishes, or not, on its
        // blocking thread.
        let sweep = tokio::task::spawn_blocking(move || sweep_older_than(&d, cutoff));
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = sweep => result,
        };
        match result {
            Ok(Ok(swept)) => {
                if swept.deleted > 0 {
                    metrics::counter!("switchboard_channel_files_deleted_total",
                        "source" => source.clone(), "what" => what)
                    .increment(swept.deleted as u64);
                    tracing::info!(source = %source, what, files = swept.deleted, "Deleted files older than the channel keeps them.");
                }
                if let Some(error) = &swept.last_error {
                    metrics::counter!("switchboard_channel_files_undeletable_total",
                        "source" => source.clone(), "what" => what)
                    .increment(swept.failed as u64);
                    tracing::warn!(source = %source, what, files = swept.failed, %error, dir = %dir.display(), "Old files could not be deleted; the others were.");
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(source = %source, what, %error, dir = %dir.display(), "Could not sweep old files.");
            }
            Err(error) => {
                tracing::warn!(source = %source, what, %error, "The file sweep failed.")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{open_writable, remove_if_still_old, sweep_older_than, write_atomically};

    /// File work that does not return in time (an NFS server gone) is
    /// answered `TimedOut`; work that does returns its result.
    #[tokio::test]
    async fn file_work_that_hangs_is_answered_timed_out() {
        use std::time::Duration;
        let hung = super::blocking_within(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
        })
        .await
        .unwrap_err();
        assert_eq!(hung.kind(), std::io::ErrorKind::TimedOut, "{hung}");
        let done = super::blocking_within(Duration::from_secs(5), || 7).await;
        assert_eq!(done.unwrap(), 7);
    }

    /// A directory that cannot be written is refused when it is opened
    /// (`/proc/self`: no one may create files there, root included), and
    /// one that can is created and left empty.
    #[test]
    fn a_directory_that_cannot_be_written_is_refused_at_once() {
        let err = open_writable(std::path::Path::new("/proc/self")).unwrap_err();
        assert!(
            err.to_string().contains("/proc/self is not writable"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("sb-writable-{}", std::process::id()));
        let inner = dir.join("uploads");
        open_writable(&inner).unwrap();
        assert_eq!(std::fs::read_dir(&inner).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_atomic_write_leaves_the_file_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("sb-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.bin"]);
        // A directory that is not there: an error, and no temporary file.
        assert!(write_atomically(&dir.join("missing/b.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_files_older_than_the_cutoff_go() {
        let dir = std::env::temp_dir().join(format!("sb-sweep-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let old = dir.join("old");
        let new = dir.join("new");
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"y").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(30 * 86_400);
        assert_eq!(sweep_older_than(&dir, cutoff).unwrap().deleted, 1);
        assert!(!old.exists() && new.exists() && dir.join("sub").exists());
        assert_eq!(sweep_older_than(&dir, cutoff).unwrap().deleted, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An old file the sweep cannot delete (here its name is too long to
    /// be set aside, as another owner's file under a sticky bit would
    /// refuse too, for root as well) is counted and passed over; the
    /// others go. The first such file ended the sweep.
    #[test]
    fn a_file_that_cannot_go_does_not_keep_the_others() {
        let dir = std::env::temp_dir().join(format!("sb-stuck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
        let names = ["a".to_owned(), "s".repeat(240), "z".to_owned()];
        for name in &names {
            let path = dir.join(name);
            std::fs::write(&path, b"x").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let cutoff = SystemTime::now() - Duration::from_secs(30 * 86_400);
        let swept = sweep_older_than(&dir, cutoff).unwrap();
        assert_eq!((swept.deleted, swept.failed), (2, 1), "{swept:?}");
        assert!(!dir.join("a").exists() && !dir.join("z").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file the sweep saw old but that was touched before its delete
    /// (received again) stays, whole, under its name; one still old goes;
    /// nothing is left aside either way.
    #[test]
    fn a_file_made_young_again_before_the_delete_stays() {
        let dir = std::env::temp_dir().join(format!("sb-aside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(30 * 86_400);
        let young = dir.join("young");
        std::fs::write(&young, b"kept").unwrap();
        // The sweep's first look saw it old; it was touched since.
        assert!(!remove_if_still_old(&young, cutoff).unwrap());
        assert_eq!(std::fs::read(&young).unwrap(), b"kept");
        let old = dir.join("old");
        std::fs::write(&old, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(40 * 86_400))
            .unwrap();
        assert!(remove_if_still_old(&old, cutoff).unwrap());
        assert!(!remove_if_still_old(&dir.join("gone"), cutoff).unwrap());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["young"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
