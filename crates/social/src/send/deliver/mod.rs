//! The deliver loop: replies from the adapter's durable outbox to the
//! providers, in order per conversation, retried until they are delivered,
//! fail for good, or are given up.
//!
//! # Design
//!
//! A reader task takes deliveries from the [`Outbox`] (`next`), one at a
//! time, while fewer than [`DeliverySettings::max_held`] are in memory. One
//! dispatcher task owns the bookkeeping (`queue.rs`): a FIFO queue per
//! conversation, in the order the outbox first handed the replies out
//! (which, for one instance, is the order they were written). Only the head
//! of a queue is ever sent; sends of different conversations run
//! concurrently, at most [`DeliverySettings::max_in_flight`] at once. Each
//! send runs in its own task, which also settles a final outcome
//! (`Delivered` / `Failed`) before reporting back, so a conversation's next
//! reply starts only after the previous one is recorded.
//!
//! **Retries.** A retryable outcome (429, 5xx, timeouts, connection errors,
//! Graph rate-limit codes) waits the provider's `Retry-After` (Telegram's
//! `retry_after`), or else an exponential backoff with jitter
//! ([`DeliverySettings::backoff_base`] doubling up to
//! [`DeliverySettings::backoff_cap`]). The reply stays at the head of its
//! queue meanwhile: later replies of the same conversation wait behind it;
//! other conversations do not.
//!
//! **The visibility timeout.** The outbox hands a delivery out again once it
//! has been neither settled nor deferred for its visibility timeout (60 s in
//! the daemon), to this instance or another. So no reply stays in memory
//! longer than that: a short wait (at most
//! [`DeliverySettings::memory_wait_max`], and only while the send would
//! still finish inside the timeout) is spent in memory; a longer one hands
//! the reply back with `outbox.defer(delay)`. Later replies of the same
//! conversation keep their place in the in-memory queue while the head is
//! away; one that would itself outstay the timeout is deferred too, due
//! just after everything ahead of it (10 ms apart). When a deferred reply
//! comes back (the outbox gives it a new handle; it is recognised by its
//! message id) it takes its old place in the queue. A send starts only if
//! it ends (request timeout included) at least
//! [`DeliverySettings::hold_margin`] before the visibility timeout, and a
//! reply in several parts stops between parts when time is short. A reply
//! deferred that never comes back (another instance took it) is waited for
//! only until its due time plus [`DeliverySettings::away_grace`].
//!
//! **Giving up.** A reply still not delivered
//! [`DeliverySettings::give_up_after`] after it was written, or after
//! [`DeliverySettings::max_attempts`] sends, is settled `Failed` with the
//! last error, so the agent sees it.
//!
//! **Shutdown.** When the token is cancelled the reader stops taking
//! deliveries; sends in flight finish (each is bounded by its timeout) and
//! are settled; replies still in memory are deferred back to the outbox, due
//! at once, in order per conversation, so the next instance to read the
//! outbox has them immediately and in order. Whatever could not be handed
//! back (Redis down) stays pending in the outbox and is handed out again
//! after the visibility timeout.
//!
//! # Guarantees, and their limits
//!
//! - **At least once.** A reply leaves the outbox only when settled. A crash
//!   between the provider accepting a reply and the settle sends it again
//!   (the Meta and Telegram send APIs take no idempotency key; the generic
//!   bridge gets `Idempotency-Key`). Within one instance, a redelivered
//!   reply whose outcome is known (its settle failed, or it was in the
//!   outbox twice) is settled from memory without being sent again (the
//!   last [`DeliverySettings::recent_outcomes`] outcomes are kept, and
//!   passed on to the next deliverer of the instance: the adapter starts a
//!   new one each time it takes the outbox's lease again, as after a Redis
//!   outage, which is also when settles fail). A reply in several parts
//!   resumes after the last accepted part while this instance remembers
//!   it.
//! - **Order per conversation, on one instance.** While one instance reads an
//!   outbox, a conversation's replies reach the provider in the order they
//!   were handed out, whatever the retries: the in-memory queue decides the
//!   order; due times only bring deferred replies back in roughly that order.
//! - **One instance at a time.** The adapter runs a deliverer only while
//!   its instance holds the outbox's lease (`Outbox::hold_delivery`,
//!   `switchboard_social::webhook`), so the order above holds across
//!   instances too, except around a hand-over: replies the old holder had
//!   taken come back to the new one through the visibility timeout (a
//!   crash) or at once (a clean stop), possibly behind later ones.
//! - **After a crash**, pending replies come back in outbox order, which is
//!   conversation order except where a reply that was deferred earlier came
//!   back behind a later one; on a clean shutdown the deferral above keeps
//!   the order.
//! - An outbox entry that cannot be decoded (`OutboxError::Corrupt`) is
//!   logged and counted; the outbox has moved it to its unreadable entries.

mod backoff;
mod queue;
mod tasks;

use super::Senders;
pub use queue::Memory;
use queue::{Action, Limits, Now, Queues};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_channel::{OutboundDelivery, Outbox};
use switchboard_core::{ConversationId, MessageId, Timestamp};
use tasks::{Done, outbox_write, read, send};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// How the deliver loop behaves.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The most sends in flight at once (default 64).
    pub max_in_flight: usize,
    /// The most replies held in memory, waiting or being sent (default
    /// 1024); the loop takes no more from the outbox until some leave.
    pub max_held: usize,
    /// How long one read of the outbox waits for a reply (default 1 s);
    /// also how long shutdown may wait for the reader.
    pub poll_wait: Duration,
    /// The outbox's visibility timeout (the daemon's outbox uses 60 s). Must
    /// exceed the longest sender timeout plus `hold_margin` by a second.
    pub visibility: Duration,
    /// Slack kept before the visibility timeout (default 5 s).
    pub hold_margin: Duration,
    /// Retry waits up to this long are spent in memory; longer ones go back
    /// to the outbox (default 10 s).
    pub memory_wait_max: Duration,
    /// The first backoff (default 1 s), doubled per attempt ...
    pub backoff_base: Duration,
    /// ... up to this (default 60 s).
    pub backoff_cap: Duration,
    /// A reply not delivered this long after it was written fails (default
    /// 24 h).
    pub give_up_after: Duration,
    /// A reply not delivered after this many sends fails (default 1000; with
    /// the default backoff the age limit comes first).
    pub max_attempts: u32,
    /// How long past its due time a deferred reply is waited for by the
    /// replies behind it (default: the visibility timeout).
    pub away_grace: Option<Duration>,
    /// How many final outcomes are remembered (default 10,000).
    pub recent_outcomes: usize,
    /// The channel's name: the `source` label of
    /// `switchboard_social_replies_in_memory` (default `social`).
    pub source: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_in_flight: 64,
            max_held: 1024,
            poll_wait: Duration::from_secs(1),
            visibility: Duration::from_secs(60),
            hold_margin: Duration::from_secs(5),
            memory_wait_max: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
            max_attempts: 1000,
            away_grace: None,
            recent_outcomes: 10_000,
            source: "social".to_owned(),
        }
    }
}

/// The settings do not work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("delivery settings: {0}")]
    Settings(String),
}

/// How often timers are looked at.
const TICK: Duration = Duration::from_millis(50);

/// Delivers one outbox's replies through [`Senders`].
#[derive(Debug)]
pub struct Deliverer {
    outbox: Arc<dyn Outbox>,
    senders: Arc<Senders>,
    settings: DeliverySettings,
    limits: Limits,
    memory: Memory,
}

impl Deliverer {
    /// Checks the settings against the senders' timeouts.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        senders: Arc<Senders>,
        settings: DeliverySettings,
    ) -> Result<Deliverer, DeliveryError> {
        let bad = |m: &str| Err(DeliveryError::Settings(m.to_owned()));
        if settings.max_in_flight == 0 || settings.max_held == 0 || settings.max_attempts == 0 {
            return bad("max_in_flight, max_held and max_attempts must be at least 1");
        }
        if settings.poll_wait.is_zero() || settings.poll_wait > Duration::from_secs(30) {
            return bad("poll_wait must be between 1 ms and 30 s");
        }
        let timeout = senders.max_timeout();
        let send_window = settings.visibility.saturating_sub(settings.hold_margin);
        let hold_budget = send_window.saturating_sub(timeout);
        if hold_budget < Duration::from_secs(1) {
            return Err(DeliveryError::Settings(format!(
                "the visibility timeout ({:?}) must exceed the longest send timeout ({timeout:?}) \
                 plus hold_margin ({:?}) by at least 1 s",
                settings.visibility, settings.hold_margin
            )));
        }
        let limits = Limits {
            hold_budget,
            send_window,
            memory_wait_max: settings.memory_wait_max,
            backoff_base: settings.backoff_base,
            backoff_cap: settings.backoff_cap,
            give_up_after: settings.give_up_after,
            max_attempts: settings.max_attempts,
            visibility: settings.visibility,
            away_grace: settings.away_grace.unwrap_or(settings.visibility),
            max_in_flight: settings.max_in_flight,
            recent_capacity: settings.recent_outcomes,
        };
        Ok(Deliverer {
            outbox,
            senders,
            settings,
            limits,
            memory: Memory::default(),
        })
    }

    /// Starts from what an earlier deliverer of this outbox on this
    /// instance knew (what its [`Self::run`] returned).
    pub fn remembering(mut self, memory: Memory) -> Deliverer {
        self.memory = memory;
        self
    }

    /// Delivers until `shutdown` is cancelled, then hands back what is left
    /// (see the module documentation) and returns what the next deliverer
    /// should know ([`Self::remembering`]).
    pub async fn run(self, shutdown: CancellationToken) -> Memory {
        let permits = Arc::new(Semaphore::new(self.settings.max_held));
        let (tx, mut rx) = mpsc::channel(16);
        // The reader also stops if this future is dropped instead of
        // being run to the end.
        let stop_reader = shutdown.child_token();
        let _stop_reader_on_drop = stop_reader.clone().drop_guard();
        let reader = tokio::spawn(read(
            self.outbox.clone(),
            permits.clone(),
            tx,
            stop_reader,
            self.settings.poll_wait,
        ));
        let mut run = Dispatch {
            outbox: self.outbox.clone(),
            senders: self.senders.clone(),
            queues: Queues::new(self.limits.clone(), self.memory),
            jobs: JoinSet::new(),
            sending: std::collections::HashMap::new(),
            permits,
            accounted: 0,
            source: self.settings.source.clone(),
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((delivery, taken_at)) = rx.recv() => {
                    run.accounted += 1;
                    run.queues.arrive(delivery, taken_at, now())
                }
                Some(joined) = run.jobs.join_next_with_id(), if !run.jobs.is_empty() => {
                    run.finished(joined)
                }
                _ = tick.tick() => run.queues.tick(now()),
            };
            run.start(actions);
        }
        run.shut_down(rx, reader, self.senders.max_timeout()).await
    }
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        wall_ms: Timestamp::now().as_millis(),
    }
}

/// The dispatcher's state besides the bookkeeping.
struct Dispatch {
    outbox: Arc<dyn Outbox>,
    senders: Arc<Senders>,
    queues: Queues,
    jobs: JoinSet<Done>,
    /// Send tasks by task id, to recover from one that panicked.
    sending: std::collections::HashMap<Id, (ConversationId, MessageId)>,
    permits: Arc<Semaphore>,
    /// Permits taken by the reader and not yet returned.
    accounted: usize,
    /// The channel's name (`source` label).
    source: String,
}

impl Dispatch {
    fn finished(&mut self, joined: Result<(Id, Done), tokio::task::JoinError>) -> Vec<Action> {
        let (id, done) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                let lost = self.sending.remove(&error.id());
                metrics::counter!("switchboard_social_outbox_errors_total", "op" => "send_task")
                    .increment(1);
                tracing::error!(source = %self.source, error = %error, "A delivery task failed.");
                return match lost {
                    Some((conversation, id)) => self.queues.lost(conversation, id, now()),
                    None => Vec::new(),
                };
            }
        };
        self.sending.remove(&id);
        match done {
            Done::Sent {
                conversation,
                id,
                outcome,
                progress,
            } => self.queues.sent(conversation, id, outcome, progress, now()),
            Done::Deferred {
                conversation,
                id,
                ok: false,
            } => {
                self.queues.defer_failed(conversation, id, now());
                Vec::new()
            }
            Done::Deferred { ok: true, .. } | Done::Other => Vec::new(),
        }
    }

    /// Starts the tasks `actions` ask for, and returns the permits of
    /// replies that left memory to the reader.
    fn start(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send {
                    conversation,
                    delivery,
                    progress,
                    deadline,
                } => {
                    let id = delivery.message.message_id;
                    let task = send(
                        self.outbox.clone(),
                        self.senders.clone(),
                        conversation,
                        delivery,
                        progress,
                        deadline,
                    );
                    let handle = self.jobs.spawn(task);
                    self.sending.insert(handle.id(), (conversation, id));
                }
                other => {
                    self.jobs
                        .spawn(outbox_write(self.outbox.clone(), vec![other]));
                }
            }
        }
        let held = self.queues.in_memory();
        if held < self.accounted {
            self.permits.add_permits(self.accounted - held);
            self.accounted = held;
        }
        metrics::gauge!("switchboard_social_replies_in_memory", "source" => self.source.clone())
            .set(held as f64);
    }

    async fn shut_down(
        mut self,
        mut rx: mpsc::Receiver<(OutboundDelivery, Instant)>,
        reader: tokio::task::JoinHandle<()>,
        timeout: Duration,
    ) -> Memory {
        self.queues.stop_sending();
        // The reader finishes its read (at most poll_wait) and stops; what it
        // read still joins its queue.
        while let Some((delivery, taken_at)) = rx.recv().await {
            self.accounted += 1;
            let actions = self.queues.arrive(delivery, taken_at, now());
            self.start(actions);
        }
        if let Err(error) = reader.await {
            tracing::error!(error = %error, "The outbox reader failed.");
        }
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(10);
        let in_flight = self.queues.in_flight();
        tracing::info!(
            in_flight,
            held = self.queues.in_memory(),
            "Delivery stopping: finishing sends in flight."
        );
        while self.queues.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.jobs.join_next_with_id()).await {
                Ok(Some(joined)) => {
                    let actions = self.finished(joined);
                    self.start(actions);
                }
                Ok(None) | Err(_) => break,
            }
        }
        for batch in self.queues.drain(now()) {
            self.jobs.spawn(outbox_write(self.outbox.clone(), batch));
        }
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.jobs.join_next()).await {}
        if !self.jobs.is_empty() {
            tracing::warn!(
                left = self.jobs.len(),
                "Delivery stopped before every reply was handed back; the outbox hands them out again after its visibility timeout."
            );
        }
        self.jobs.shutdown().await;
        // Handed back (or left to the visibility timeout): none is held.
        metrics::gauge!("switchboard_social_replies_in_memory", "source" => self.source.clone())
            .set(0.0);
        self.queues.into_memory()
    }
}
