//! Fetching mail from IMAP mailboxes, each with a durable checkpoint.
//!
//! [`run_mailbox`] keeps one mailbox drained into a [`FetchedMailSink`]
//! until shutdown. Per round it asks for `UID RFC822.SIZE FLAGS` of every
//! message after the checkpoint, skips what is too large, fetches each body
//! (`BODY.PEEK[]`, so nothing is marked read before it is stored), hands it
//! to the sink and, once stored, applies the [`AfterIntake`] action and
//! advances the checkpoint `UIDVALIDITY:LASTUID` in the channel state. The
//! checkpoint is written after every stored message, so a crash repeats at
//! most the message in flight (caught by the intake's Message-ID dedupe).
//!
//! **UIDVALIDITY.** When the folder's UIDVALIDITY is not the checkpoint's
//! (the folder was recreated, or this is the first run), the last UID is
//! reset to 0 and the folder's UIDNEXT is kept as the checkpoint's
//! baseline. Of the messages below the baseline (there before), only what
//! is still "new" is taken in: with [`AfterIntake::Seen`] the messages
//! without `\Seen`, with `Move`/`Delete` everything left in the folder
//! (what was taken in before has been moved or deleted); messages flagged
//! `\Deleted` are skipped either way (counted as `old`). So a mailbox full
//! of old, read mail is never imported, also when the first pass is
//! interrupted, and the few messages seen twice across the change are
//! dropped by the intake's dedupe. Mail that arrives later is taken in
//! whatever its flags (someone may have read it in webmail first).
//!
//! **One fetcher per mailbox.** Several instances may run the same channel:
//! only the holder of the lease `<label>:lease` (renewed every 20 s for
//! 60 s) connects; the others try again now and then. A mailbox whose
//! server fails is retried with exponential backoff (1 s … 5 min, with
//! jitter) and never affects the others: each runs as its own task.
//!
//! Metrics: `switchboard_email_imap_messages_total{mailbox,outcome}`
//! (`stored`, `rejected`, `too_large`, `temporary`, `old`: there before the
//! checkpoint and not new),
//! `switchboard_email_imap_errors_total{mailbox,kind}` and the gauge
//! `switchboard_email_imap_connected{mailbox}`.
//!
//! Note: async-imap traces every command it writes (the `LOGIN` with the
//! password too) through the `log` crate at trace level; keep the
//! `async_imap` target below trace.

mod backoff;
mod checked;
mod checkpoint;
mod conn;
mod round;
mod session;
#[cfg(test)]
mod tests;

use futures::future::BoxFuture;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::ChannelState;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use backoff::Backoff;
use session::End;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Implicit TLS (IMAPS, port 993).
    Tls,
    /// Plain connection upgraded with `STARTTLS` (port 143); never falls
    /// back to plain text.
    StartTls,
    /// No encryption: loopback and tests only.
    None,
}

/// What is done to a message in the mailbox once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterIntake {
    /// Add `\Seen`.
    Seen,
    /// Move it to this folder (`UID MOVE`, or `UID COPY` + `\Deleted` +
    /// expunge when the server lacks MOVE).
    Move(String),
    /// Delete it (`\Deleted` + expunge).
    Delete,
}

/// One mailbox to fetch from.
#[derive(Clone)]
pub struct MailboxSettings {
    /// The mailbox's name in logs and metrics and the prefix of its state
    /// keys, e.g. `imap://support@127.0.0.1:1430/INBOX`.
    pub label: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub user: String,
    /// Never logged.
    pub password: String,
    pub folder: String,
    pub after: AfterIntake,
    /// How often to look for mail when IDLE is off or unavailable, and how
    /// often IDLE is re-issued (at most 29 minutes is used for that).
    pub poll_interval: Duration,
    /// Wait with IDLE (when the server has it) rather than polling.
    pub idle: bool,
    /// Larger messages are skipped (left in the mailbox) and counted.
    pub max_message_bytes: usize,
    /// A message whose body fetch fails is passed over only after
    /// [`BODY_FAILURES`] sessions in a row that span at least this long
    /// ([`PASS_OVER_AFTER`] in the daemon): a server that throttles or has
    /// a passing fault for a minute must not cost a customer's mail.
    pub pass_over_after: Duration,
    /// Trusted roots for TLS; the webpki roots when `None`.
    pub tls_roots: Option<Arc<tokio_rustls::rustls::RootCertStore>>,
}

impl fmt::Debug for MailboxSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSettings")
            .field("label", &self.label)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("folder", &self.folder)
            .field("after", &self.after)
            .field("poll_interval", &self.poll_interval)
            .field("idle", &self.idle)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("pass_over_after", &self.pass_over_after)
            .field("tls_roots", &self.tls_roots.as_ref().map(|r| r.len()))
            .finish()
    }
}

/// Why the sink did not store a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Try again later: the checkpoint is not advanced and the message is
    /// fetched again after a backoff.
    #[error("temporarily unavailable: {0}")]
    Temporary(String),
    /// Never acceptable: counted, logged, passed over (the checkpoint
    /// advanced) and left in the mailbox as it is (no after-intake action).
    #[error("rejected: {0}")]
    Rejected(String),
}

/// What the sink did with a message it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Stored, or applied to the reply it concerns: the after-intake
    /// action (`delete`, `move`, `seen`) applies.
    Taken,
    /// Taken but not kept anywhere (bulk mail not routed, an automatic mail
    /// that answers no reply of ours, a delay notice): counted under this
    /// outcome, passed over and left in the mailbox as it is, since the
    /// intake has no copy a `delete` could rely on.
    Left(&'static str),
}

/// Where fetched messages go (the intake, in the daemon).
pub trait FetchedMailSink: Send + Sync + 'static {
    /// Stores one fetched message durably; `Ok(Delivered::Taken)` only
    /// once it is stored (or applied), `Ok(Delivered::Left)` for one the
    /// intake took without keeping it.
    /// `fallback_id` is `imap:<label>:<uidvalidity>:<uid>`, the id to use
    /// for a message without a Message-ID.
    fn deliver<'a>(
        &'a self,
        mailbox: &'a MailboxSettings,
        uid: u32,
        raw: &'a [u8],
        fallback_id: &'a str,
    ) -> BoxFuture<'a, Result<Delivered, SinkError>>;
}

/// How long the lease runs, how often it is renewed, and how long an
/// instance without it waits before asking again.
const LEASE: Duration = Duration::from_secs(60);
const LEASE_RENEW: Duration = Duration::from_secs(20);
const LEASE_RETRY: Duration = Duration::from_secs(15);
/// The longest wait for the channel state.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one mailbox's work needs.
struct Ctx {
    settings: MailboxSettings,
    sink: Arc<dyn FetchedMailSink>,
    state: Arc<dyn ChannelState>,
    lease_key: String,
    checkpoint_key: String,
    /// The message whose body fetch failed last (UIDVALIDITY, UID), how
    /// many times in a row, and when first: one the server can never give
    /// is passed over after [`BODY_FAILURES`] tries over
    /// `pass_over_after` instead of holding up every later one.
    failing: std::sync::Mutex<Option<Failing>>,
}

/// The message whose body fetch keeps failing.
#[derive(Debug, Clone, Copy)]
struct Failing {
    validity: u32,
    uid: u32,
    times: u32,
    since: std::time::Instant,
}

/// How many sessions in a row must fail fetching one message's body before
/// it is passed over (counted `unreadable`, left in the mailbox)...
const BODY_FAILURES: u32 = 5;

/// ...and for how long at least: sessions are retried after 0.5–16 s, so
/// five failures alone took as little as 15 s.
pub const PASS_OVER_AFTER: Duration = Duration::from_secs(600);

/// Fetches from one mailbox until `shutdown` is cancelled, then gives the
/// lease up. Never panics and never returns early: failures are logged,
/// counted and retried with backoff.
pub async fn run_mailbox(
    settings: MailboxSettings,
    sink: Arc<dyn FetchedMailSink>,
    state: Arc<dyn ChannelState>,
    shutdown: CancellationToken,
) {
    let span = info_span!("imap_mailbox", mailbox = %settings.label);
    let ctx = Ctx {
        lease_key: format!("{}:lease", settings.label),
        checkpoint_key: format!("{}:checkpoint", settings.label),
        settings,
        sink,
        state,
        failing: std::sync::Mutex::new(None),
    };
    run(&ctx, &shutdown).instrument(span).await;
}

async fn run(ctx: &Ctx, shutdown: &CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    while !shutdown.is_cancelled() {
        match tokio::time::timeout(STATE_TIMEOUT, ctx.state.hold(&ctx.lease_key, LEASE)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::debug!("Another instance fetches this mailbox.");
                backoff::sleep(shutdown, backoff::jitter(LEASE_RETRY)).await;
                continue;
            }
            Ok(Err(e)) => {
                fail(ctx, shutdown, &mut backoff, "state", &e.to_string()).await;
                continue;
            }
            Err(_) => {
                fail(ctx, shutdown, &mut backoff, "state", "timed out").await;
                continue;
            }
        }
        let stop = shutdown.child_token();
        let began = std::time::Instant::now();
        let work = async {
            let result = session::run(ctx, &stop).await;
            stop.cancel();
            result
        };
        let (result, ()) = tokio::join!(work, checkpoint::keep_lease(ctx, &stop));
        metrics::gauge!("switchboard_email_imap_connected", "mailbox" => ctx.settings.label.clone())
            .set(0.0);
        // A session that lasted ends like a first failure, whether or not
        // a round finished after its first minute (a connection dropped
        // in a long IDLE is no reason to wait minutes).
        if began.elapsed() >= session::HEALTHY_AFTER {
            backoff.reset();
        }
        if let Err(End::Failed { kind, error }) = result {
            fail(ctx, shutdown, &mut backoff, kind, &error).await;
        }
    }
    match tokio::time::timeout(Duration::from_secs(1), ctx.state.release(&ctx.lease_key)).await {
        Ok(Ok(())) => info!("Stopped fetching; lease released."),
        Ok(Err(e)) => warn!(error = %e, "Stopped fetching; could not release the lease."),
        Err(_) => warn!("Stopped fetching; releasing the lease timed out."),
    }
}

/// Logs and counts a failure, then waits out the backoff (or shutdown).
async fn fail(
    ctx: &Ctx,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
    kind: &'static str,
    error: &str,
) {
    error_metric(ctx, kind);
    let delay = backoff.next_delay();
    warn!(
        kind,
        error,
        retry_in_ms = delay.as_millis() as u64,
        "IMAP fetching failed; retrying."
    );
    backoff::sleep(shutdown, delay).await;
}

fn error_metric(ctx: &Ctx, kind: &'static str) {
    metrics::counter!("switchboard_email_imap_errors_total",
        "mailbox" => ctx.settings.label.clone(), "kind" => kind)
    .increment(1);
}
