//! Test helpers: the channel state on a private redis-server, a collecting
//! sink, and helpers to run a fetcher against Dovecot.

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_channel::ChannelState;
use switchboard_store::{RedisChannelState, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use switchboard_testkit::dovecot::Dovecot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::imap::{
    AfterIntake, Delivered, FetchedMailSink, MailboxSettings, Security, SinkError, run_mailbox,
};

static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// One instance's handle on the channel state in a private redis-server
/// (the state the daemon gives the channel: leases and checkpoints with
/// their expiry), shared by the instances of a test.
#[derive(Clone)]
pub(super) struct RedisState {
    _redis: Arc<RedisServer>,
    store: Store,
    state: Arc<RedisChannelState>,
}

impl RedisState {
    pub(super) fn new() -> RedisState {
        let redis = Arc::new(RedisServer::start());
        let store = Store::new(StoreConfig::local(redis.url(), 1)).unwrap();
        RedisState::on(redis, store)
    }

    fn on(redis: Arc<RedisServer>, store: Store) -> RedisState {
        let holder = format!("imap-{}", NEXT_OWNER.fetch_add(1, Ordering::Relaxed));
        RedisState {
            state: Arc::new(RedisChannelState::new(store.clone(), "mail", &holder)),
            _redis: redis,
            store,
        }
    }

    /// Another instance's handle on the same state.
    pub(super) fn instance(&self) -> RedisState {
        RedisState::on(self._redis.clone(), self.store.clone())
    }

    pub(super) async fn value(&self, key: &str) -> Option<String> {
        self.state.get(key).await.unwrap()
    }

    pub(super) async fn put(&self, key: &str, value: &str) {
        self.state.set(key, value).await.unwrap();
    }

    pub(super) fn channel_state(&self) -> Arc<dyn ChannelState> {
        self.state.clone()
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
    /// The next this many calls (after those) are taken and not kept
    /// ([`Delivered::Left`]: bulk mail left alone).
    pub(super) leave: AtomicUsize,
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
    ) -> BoxFuture<'a, Result<Delivered, SinkError>> {
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
            let leave = self.leave.load(Ordering::SeqCst);
            if leave > 0 {
                self.leave.store(leave - 1, Ordering::SeqCst);
                return Ok(Delivered::Left("not_kept"));
            }
            self.got
                .lock()
                .unwrap()
                .push((uid, raw.to_vec(), fallback_id.to_string()));
            Ok(Delivered::Taken)
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
    pub(super) fn start(
        settings: MailboxSettings,
        sink: &Arc<Sink>,
        state: &RedisState,
    ) -> Fetcher {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_mailbox(
            settings,
            sink.clone(),
            state.channel_state(),
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
    state: &RedisState,
    settings: &MailboxSettings,
    last: Option<u32>,
) -> (u32, u32) {
    let key = format!("{}:checkpoint", settings.label);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = state.value(&key).await;
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
