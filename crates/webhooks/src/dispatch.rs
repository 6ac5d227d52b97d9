//! Delivery of one webhook from one partition's feed: in feed order, one
//! event at a time, by the one instance holding the lease.

use crate::config::Target;
use crate::deliver::{self, Attempt};
use crate::event::Event;
use crate::payload;
use metrics::{counter, gauge, histogram};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_core::{Partition, Timestamp};
use switchboard_store::{Conversations, EventFeed, FeedEntry, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// How often an idle holder looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// How often an instance without the lease tries to take it.
const TAKE_EVERY: Duration = Duration::from_secs(2);
/// How often the holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Entries taken from the feed at a time.
const BATCH: usize = 32;
/// How often the backlog gauge is refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(10);
/// Reads of an event's contact and messages that Redis refused over the
/// data itself (not its being away) before the event is dropped.
pub(crate) const UNREADABLE_TRIES: u32 = 5;
/// The longest wait between two such reads: Redis coming back is noticed
/// within it.
const LOAD_RETRY_CAP: Duration = Duration::from_secs(10);

/// Counts a failed Redis operation of a webhook's worker:
/// `switchboard_webhook_store_errors_total{webhook, op}`.
pub(crate) fn store_error(webhook: &str, op: &'static str) {
    counter!("switchboard_webhook_store_errors_total", "webhook" => webhook.to_owned(), "op" => op)
        .increment(1);
}

/// Whether Redis refused a read over the data it holds, which trying again
/// does not mend: a key of the wrong type, an impossible stream id, a reply
/// of a shape no entry has. Everything else (Redis away, a cluster failing
/// over, refused credentials) may pass, and is tried for as long as the
/// event may wait.
pub(crate) fn about_the_data(error: &StoreError) -> bool {
    const DATA_ERRORS: &[&str] = &[
        "WRONGTYPE",
        "Invalid stream ID",
        "Response type not",
        "Response was of incompatible type",
    ];
    matches!(error, StoreError::Protocol(m) if DATA_ERRORS.iter().any(|e| m.contains(e)))
}

/// The backlog of one webhook on this instance, per partition it holds.
#[derive(Debug)]
pub(crate) struct Backlog {
    name: String,
    per_partition: Vec<AtomicU64>,
}

impl Backlog {
    pub(crate) fn new(name: &str, partitions: u16) -> Arc<Backlog> {
        Arc::new(Backlog {
            name: name.to_owned(),
            per_partition: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn set(&self, p: Partition, value: u64) {
        if let Some(slot) = self.per_partition.get(usize::from(p.0)) {
            slot.store(value, Ordering::Relaxed);
        }
        let total: u64 = self
            .per_partition
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .sum();
        gauge!("switchboard_webhook_backlog", "webhook" => self.name.clone()).set(total as f64);
    }
}

/// Why handling an entry stopped.
enum Handled {
    /// Delivered, rejected, dropped or skipped: acknowledge it.
    Settled,
    /// Another instance holds the lease now (or it could not be renewed).
    LeaseLost,
    Shutdown,
}

/// One (webhook, partition).
pub(crate) struct Worker {
    pub(crate) feed: EventFeed,
    pub(crate) conversations: Conversations,
    pub(crate) client: reqwest::Client,
    pub(crate) target: Arc<Target>,
    pub(crate) partition: Partition,
    pub(crate) holder: String,
    pub(crate) backlog: Arc<Backlog>,
}

impl Worker {
    /// Where a new consumer group starts: events older than `max_age`
    /// would only be dropped (and counted so), not delivered.
    fn since(&self) -> u64 {
        let max_age = u64::try_from(self.target.max_age.as_millis()).unwrap_or(u64::MAX);
        Timestamp::now().as_millis().saturating_sub(max_age)
    }

    fn group(&self) -> String {
        format!("hook:{}", self.target.name)
    }

    /// The lease outlives the longest attempt with room to renew.
    fn lease(&self) -> Duration {
        self.target.timeout + Duration::from_secs(20)
    }

    /// Renews the lease last renewed at `renewed` (updated when it is): true
    /// while it is ours. A renewal Redis did not answer is no loss while the
    /// last one still covers the lease: a moment's outage must not reset a
    /// retry's backoff nor look like another instance taking over.
    async fn keep(&self, renewed: &mut Instant) -> bool {
        match self.hold().await {
            Some(true) => {
                *renewed = Instant::now();
                true
            }
            Some(false) => false,
            // Long enough for the attempt that may follow (up to the
            // webhook's timeout) to end inside the lease.
            None => {
                renewed.elapsed()
                    < self
                        .lease()
                        .saturating_sub(RENEW_EVERY + self.target.timeout)
            }
        }
    }

    /// Takes or renews the lease; `None` when Redis did not answer.
    async fn hold(&self) -> Option<bool> {
        match self
            .feed
            .hold(
                self.partition,
                &self.target.name,
                &self.holder,
                self.lease(),
            )
            .await
        {
            Ok(held) => Some(held),
            Err(error) => {
                store_error(&self.target.name, "lease");
                debug!(webhook = %self.target.name, partition = self.partition.0, %error, "Cannot take or renew the webhook lease.");
                None
            }
        }
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let group = self.group();
        // The group first (reading from `max_age_hours` ago, which is the
        // whole of a feed made anew); retried until Redis answers.
        loop {
            match self
                .feed
                .ensure_group(self.partition, &group, self.since())
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    store_error(&self.target.name, "group");
                    debug!(webhook = %self.target.name, %error, "Cannot create the webhook's consumer group yet.");
                    if sleep(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
        let mut queue: VecDeque<FeedEntry> = VecDeque::new();
        let mut held = false;
        let mut renewed = Instant::now();
        let mut measured: Option<Instant> = None;
        let pruner = switchboard_store::Pruner::default();
        while !shutdown.is_cancelled() {
            if !held || renewed.elapsed() >= RENEW_EVERY {
                let now_held = if held {
                    self.keep(&mut renewed).await
                } else {
                    let taken = self.hold().await == Some(true);
                    if taken {
                        renewed = Instant::now();
                    }
                    taken
                };
                if held && !now_held {
                    warn!(webhook = %self.target.name, partition = self.partition.0, "Lost the webhook lease; another instance delivers this partition now.");
                    queue.clear();
                }
                if now_held && !held {
                    debug!(webhook = %self.target.name, partition = self.partition.0, "Delivering this partition's webhook events.");
                }
                held = now_held;
                if !held {
                    self.backlog.set(self.partition, 0);
                    let wait = TAKE_EVERY + Duration::from_millis(rand::random_range(0..500));
                    if sleep(&shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            }
            if measured.is_none_or(|m| m.elapsed() >= BACKLOG_EVERY) {
                measured = Some(Instant::now());
                if let Ok(Some(n)) = self.feed.backlog(self.partition, &group).await {
                    self.backlog.set(self.partition, n);
                }
                self.feed
                    .prune(&pruner, self.partition, &group, &self.holder)
                    .await;
            }
            let Some(entry) = queue.front().cloned() else {
                match self
                    .feed
                    .next(self.partition, &group, &self.holder, BATCH)
                    .await
                {
                    Ok(batch) => {
                        for id in &batch.gone {
                            counter!("switchboard_webhook_deliveries_total",
                                "webhook" => self.target.name.clone(), "outcome" => "dropped")
                            .increment(1);
                            warn!(webhook = %self.target.name, partition = self.partition.0, entry = %id,
                                "A webhook event was trimmed from the feed before it was delivered; dropped.");
                        }
                        if batch.entries.is_empty()
                            && batch.gone.is_empty()
                            && sleep(&shutdown, POLL).await
                        {
                            break;
                        }
                        queue.extend(batch.entries);
                    }
                    Err(error) if error.to_string().contains("NOGROUP") => {
                        // The feed's key was deleted (a flush, a Redis that
                        // lost its data): new events made a stream without
                        // the group. Made again, reading from `max_age`
                        // ago: every entry of the new stream (all written
                        // since the key was lost, moments ago), and none
                        // a receiver would refuse as too old.
                        counter!("switchboard_webhook_groups_recreated_total",
                            "webhook" => self.target.name.clone())
                        .increment(1);
                        warn!(webhook = %self.target.name, partition = self.partition.0,
                            "The webhook feed lost its consumer group; creating it again.");
                        if let Err(error) = self
                            .feed
                            .ensure_group(self.partition, &group, self.since())
                            .await
                        {
                            store_error(&self.target.name, "group");
                            warn!(webhook = %self.target.name, %error, "Cannot create the webhook feed's group; will retry.");
                            if sleep(&shutdown, Duration::from_secs(1)).await {
                                break;
                            }
                        }
                    }
                    Err(error) => {
                        store_error(&self.target.name, "read");
                        warn!(webhook = %self.target.name, %error, "Cannot read the webhook feed; will retry.");
                        if sleep(&shutdown, Duration::from_secs(1)).await {
                            break;
                        }
                    }
                }
                continue;
            };
            match self.handle(&entry, &shutdown, &mut renewed).await {
                Handled::Settled => {
                    if self.settle(&entry, &group, &shutdown, &mut renewed).await {
                        queue.pop_front();
                    } else if shutdown.is_cancelled() {
                        // Still ours: released below, so that another
                        // instance need not wait for it to lapse.
                        break;
                    } else {
                        queue.clear();
                        held = false;
                    }
                }
                Handled::LeaseLost => {
                    warn!(webhook = %self.target.name, partition = self.partition.0, "Lost the webhook lease during a delivery.");
                    queue.clear();
                    held = false;
                }
                Handled::Shutdown => break,
            }
        }
        if held {
            let _ = self
                .feed
                .release(self.partition, &self.target.name, &self.holder)
                .await;
        }
    }

    /// Acknowledges a settled entry, retrying while Redis is away (an
    /// entry left pending would be delivered again). False when the lease
    /// was lost meanwhile or the daemon stops.
    async fn settle(
        &self,
        entry: &FeedEntry,
        group: &str,
        shutdown: &CancellationToken,
        renewed: &mut Instant,
    ) -> bool {
        loop {
            match self.feed.ack(self.partition, group, &entry.entry_id).await {
                Ok(()) => return true,
                Err(error) => {
                    store_error(&self.target.name, "ack");
                    warn!(webhook = %self.target.name, entry = %entry.entry_id, %error, "Cannot acknowledge a webhook event; will retry.");
                    if sleep(shutdown, Duration::from_secs(1)).await {
                        return false;
                    }
                    if renewed.elapsed() >= RENEW_EVERY && !self.keep(renewed).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Delivers one entry, retrying until it is settled.
    async fn handle(
        &self,
        entry: &FeedEntry,
        shutdown: &CancellationToken,
        renewed: &mut Instant,
    ) -> Handled {
        let name = &self.target.name;
        let event = match Event::from_entry(entry) {
            Ok(event) => event,
            Err(error) => {
                counter!("switchboard_webhook_deliveries_total",
                    "webhook" => name.clone(), "outcome" => "dropped")
                .increment(1);
                error!(webhook = %name, %error, "An invalid webhook event was dropped.");
                return Handled::Settled;
            }
        };
        if !self.target.wants(event.kind) {
            return Handled::Settled;
        }
        let span = info_span!("webhook", webhook = %name, contact_id = %event.contact, event_id = %event.id, event_type = event.kind.as_str());
        self.deliver(&event, shutdown, renewed)
            .instrument(span)
            .await
    }

    async fn deliver(
        &self,
        event: &Event,
        shutdown: &CancellationToken,
        renewed: &mut Instant,
    ) -> Handled {
        let name = &self.target.name;
        let max_age = u64::try_from(self.target.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut body: Option<Vec<u8>> = None;
        let mut attempt = 0u32;
        // Reads of the payload that failed, and those in a row that failed
        // over the data itself.
        let (mut failed_reads, mut unreadable) = (0u32, 0u32);
        loop {
            if Timestamp::now().as_millis().saturating_sub(event.at) > max_age {
                counter!("switchboard_webhook_deliveries_total",
                    "webhook" => name.clone(), "outcome" => "dropped")
                .increment(1);
                warn!(
                    attempts = attempt,
                    "A webhook event older than max_age_hours was dropped undelivered."
                );
                return Handled::Settled;
            }
            if renewed.elapsed() >= RENEW_EVERY && !self.keep(renewed).await {
                return Handled::LeaseLost;
            }
            let bytes = match &body {
                Some(b) => b.clone(),
                None => match payload::load(&self.conversations, event).await {
                    Ok(facts) => {
                        let b = payload::body(event, &facts).to_string().into_bytes();
                        body = Some(b.clone());
                        b
                    }
                    Err(error) => {
                        // Redis away passes, and so may its other errors (a
                        // cluster failing over, a password being rotated);
                        // an error about the data itself (a key of the
                        // wrong type, a reply that reads as no log entry)
                        // does not: after a few such in a row the event is
                        // dropped, or it would hold up every later event of
                        // the partition until max_age_hours.
                        let lasting = about_the_data(&error);
                        let error_type = if lasting { "unreadable" } else { "unavailable" };
                        counter!("switchboard_webhook_payload_errors_total",
                            "webhook" => name.clone(), "error_type" => error_type)
                        .increment(1);
                        failed_reads += 1;
                        unreadable = if lasting { unreadable + 1 } else { 0 };
                        if unreadable >= UNREADABLE_TRIES {
                            counter!("switchboard_webhook_deliveries_total",
                                "webhook" => name.clone(), "outcome" => "dropped")
                            .increment(1);
                            error!(%error, tries = unreadable, "A webhook event whose contact or messages cannot be read was dropped.");
                            return Handled::Settled;
                        }
                        warn!(%error, "Cannot read a webhook event's contact or messages; will retry.");
                        let wait = deliver::backoff(failed_reads, None).min(LOAD_RETRY_CAP);
                        if sleep(shutdown, wait).await {
                            return Handled::Shutdown;
                        }
                        continue;
                    }
                },
            };
            // Reading a closed contact's transcript may take seconds (a
            // Redis slow to answer): the lease is made sure of again, or
            // another instance that took it over meanwhile and sent later
            // events would see this one arrive after them.
            if renewed.elapsed() >= RENEW_EVERY && !self.keep(renewed).await {
                return Handled::LeaseLost;
            }
            attempt += 1;
            let started = Instant::now();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return Handled::Shutdown,
                outcome = deliver::post(&self.client, &self.target, &event.id, event.kind.as_str(), &bytes) => outcome,
            };
            histogram!("switchboard_webhook_delivery_seconds", "webhook" => name.clone())
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Attempt::Delivered { status } => {
                    counter!("switchboard_webhook_deliveries_total",
                        "webhook" => name.clone(), "outcome" => "delivered")
                    .increment(1);
                    debug!(status, attempt, "Webhook event delivered.");
                    return Handled::Settled;
                }
                Attempt::Rejected { status } => {
                    counter!("switchboard_webhook_deliveries_total",
                        "webhook" => name.clone(), "outcome" => "rejected")
                    .increment(1);
                    warn!(
                        status,
                        attempt, "The webhook receiver refused an event for good; moving on."
                    );
                    return Handled::Settled;
                }
                Attempt::Retry { reason, after } => {
                    counter!("switchboard_webhook_deliveries_total",
                        "webhook" => name.clone(), "outcome" => "retried")
                    .increment(1);
                    let wait = deliver::backoff(attempt, after);
                    // Events pile up behind this one: the backlog gauge says
                    // so while it is retried (it was only read between
                    // events, so it stood still while a receiver failed).
                    if let Ok(Some(n)) = self.feed.backlog(self.partition, &self.group()).await {
                        self.backlog.set(self.partition, n);
                    }
                    if attempt == 1 {
                        warn!(%reason, retry_in_ms = wait.as_millis() as u64, "Webhook delivery failed; retrying (later events of this partition wait).");
                    } else {
                        info!(%reason, attempt, retry_in_ms = wait.as_millis() as u64, "Webhook delivery failed again; retrying.");
                    }
                    match self.wait_holding(wait, shutdown, renewed).await {
                        Some(h) => return h,
                        None => continue,
                    }
                }
            }
        }
    }

    /// Sleeps `wait`, renewing the lease meanwhile. `Some` when the wait
    /// ended otherwise than by time.
    async fn wait_holding(
        &self,
        wait: Duration,
        shutdown: &CancellationToken,
        renewed: &mut Instant,
    ) -> Option<Handled> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if sleep(shutdown, left.min(RENEW_EVERY)).await {
                return Some(Handled::Shutdown);
            }
            if renewed.elapsed() >= RENEW_EVERY && !self.keep(renewed).await {
                return Some(Handled::LeaseLost);
            }
        }
    }
}

/// Sleeps; true when the daemon stops meanwhile.
async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only errors about the data drop an event; Redis away, a cluster
    /// failing over or refused credentials are waited out.
    #[test]
    fn only_errors_about_the_data_are_lasting() {
        let protocol = |m: &str| StoreError::Protocol(m.to_owned());
        assert!(about_the_data(&protocol(
            "WRONGTYPE: Operation against a key holding the wrong kind of value"
        )));
        assert!(about_the_data(&protocol(
            "An error was signalled by the server - ResponseError: Invalid stream ID specified as stream command argument"
        )));
        for passing in [
            protocol("ERR max number of clients reached"),
            protocol("WRONGPASS invalid username-password pair"),
            protocol("MOVED 3999 127.0.0.1:6381"),
            StoreError::Unavailable("connection refused".into()),
        ] {
            assert!(!about_the_data(&passing), "{passing}");
        }
    }
}
