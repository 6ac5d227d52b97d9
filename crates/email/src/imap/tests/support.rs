//! Test doubles: an in-memory channel state with leases, a collecting sink,
//! and helpers to run a fetcher against Dovecot.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::{ChannelState, StateError};
use switchboard_testkit::dovecot::Dovecot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::imap::{
    AfterIntake, FetchedMailSink, MailboxSettings, Security, SinkError, run_mailbox,
};

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
struct Shared {
    values: HashMap<String, String>,
    leases: HashMap<String, (u64, Instant)>,
}

/// One instance's handle on a shared in-memory state.
#[derive(Debug, Clone)]
pub(super) struct MemState {
    shared: Arc<Mutex<Shared>>,
    owner: u64,
}

impl MemState {
    pub(super) fn new() -> MemState {
        MemState {
            shared: Arc::default(),
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Another instance's handle on the same state.
    pub(super) fn instance(&self) -> MemState {
        MemState {
            shared: self.shared.clone(),
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(super) fn value(&self, key: &str) -> Option<String> {
        self.shared.lock().unwrap().values.get(key).cloned()
    }

    pub(super) fn put(&self, key: &str, value: &str) {
        self.shared
            .lock()
            .unwrap()
            .values
            .insert(key.into(), value.into());
    }
}

impl ChannelState for MemState {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StateError>> {
        Box::pin(async move { Ok(self.value(key)) })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.put(key, value);
            Ok(())
        })
    }

    fn hold<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let mut shared = self.shared.lock().unwrap();
            let now = Instant::now();
            match shared.leases.get(key) {
                Some((owner, until)) if *owner != self.owner && *until > now => Ok(false),
                _ => {
                    shared.leases.insert(key.into(), (self.owner, now + lease));
                    Ok(true)
                }
            }
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut shared = self.shared.lock().unwrap();
            if shared
                .leases
                .get(key)
                .is_some_and(|(owner, _)| *owner == self.owner)
            {
                shared.leases.remove(key);
            }
            Ok(())
        })
    }
}

/// Collects what it is given; the first `temporary` calls fail with
/// [`SinkError::Temporary`], the `reject` after them with
/// [`SinkError::Rejected`].
#[derive(Debug, Default)]
pub(super) struct Sink {
    pub(super) got: Mutex<Vec<(u32, Vec<u8>, String)>>,
    pub(super) calls: AtomicUsize,
    pub(super) temporary: AtomicUsize,
    /// The next this many calls (after the temporary ones) are refused
    /// for good ([`SinkError::Rejected`]).
    pub(super) reject: AtomicUsize,
}

impl Sink {
    pub(super) fn uids(&self) -> Vec<u32> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(uid, _, _)| *uid)
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until `n` messages arrived (panics after `within`).
    pub(super) async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {:?} of {n} messages arrived",
                self.uids()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl FetchedMailSink for Sink {
    fn deliver<'a>(
        &'a self,
        _mailbox: &'a MailboxSettings,
        uid: u32,
        raw: &'a [u8],
        fallback_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.temporary.load(Ordering::SeqCst);
            if left > 0 {
                self.temporary.store(left - 1, Ordering::SeqCst);
                return Err(SinkError::Temporary("redis is down".into()));
            }
            let refuse = self.reject.load(Ordering::SeqCst);
            if refuse > 0 {
                self.reject.store(refuse - 1, Ordering::SeqCst);
                return Err(SinkError::Rejected("the mail names no sender".into()));
            }
            self.got
                .lock()
                .unwrap()
                .push((uid, raw.to_vec(), fallback_id.to_string()));
            Ok(())
        })
    }
}

/// Mailbox settings for Dovecot's `support` user, with IDLE.
pub(super) fn settings(dovecot: &Dovecot, folder: &str, after: AfterIntake) -> MailboxSettings {
    MailboxSettings {
        label: format!("imap://support@127.0.0.1:{}/{folder}", dovecot.port()),
        host: "127.0.0.1".into(),
        port: dovecot.port(),
        security: Security::None,
        user: dovecot.user().into(),
        password: dovecot.password().into(),
        folder: folder.into(),
        after,
        poll_interval: Duration::from_secs(60),
        idle: true,
        max_message_bytes: 1 << 20,
        pass_over_after: Duration::from_secs(3),
        tls_roots: None,
    }
}

/// A fetcher running in a task.
pub(super) struct Fetcher {
    pub(super) shutdown: CancellationToken,
    pub(super) task: JoinHandle<()>,
}

impl Fetcher {
    pub(super) fn start(settings: MailboxSettings, sink: &Arc<Sink>, state: &MemState) -> Fetcher {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_mailbox(
            settings,
            sink.clone(),
            Arc::new(state.clone()),
            shutdown.clone(),
        ));
        Fetcher { shutdown, task }
    }

    /// Shuts it down; returns how long it took to stop (panics over 5 s).
    pub(super) async fn stop(self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the fetcher stops")
            .expect("the fetcher does not panic");
        started.elapsed()
    }
}

/// A small message with a Message-ID.
pub(super) fn mail(n: u32) -> Vec<u8> {
    format!(
        "From: Customer <customer@example.com>\r\nTo: support@example.com\r\n\
         Subject: Question {n}\r\nMessage-ID: <q{n}@example.com>\r\n\r\nQuestion {n}?\r\n"
    )
    .into_bytes()
}

/// Waits until the stored checkpoint of `settings` exists and, with
/// `last`, has reached that UID (it is written just after the delivery);
/// returns (UIDVALIDITY, last UID).
pub(super) async fn checkpoint(
    state: &MemState,
    settings: &MailboxSettings,
    last: Option<u32>,
) -> (u32, u32) {
    let key = format!("{}:checkpoint", settings.label);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = state.value(&key);
        let parts: Vec<&str> = stored.as_deref().unwrap_or("").split(':').collect();
        if let [v, l, ..] = parts[..] {
            let (v, l) = (v.parse().unwrap(), l.parse().unwrap());
            if last.is_none_or(|last| last == l) {
                return (v, l);
            }
        }
        assert!(
            Instant::now() < deadline,
            "checkpoint {stored:?}, not at {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
