//! The live doorbell: Redis pub/sub, one channel per contact
//! (`<prefix>:live:<contact>`), so an instance receives only the events of
//! the contacts someone follows there (an agent holding it, a visitor's
//! chat), not every event of every instance.
//!
//! Small JSON events ([`LiveEvent`]) say that a conversation log has a new
//! entry, or that someone types or read. Pub/sub is lossy (a subscriber
//! that is disconnected misses what was published meanwhile), so it is
//! only a doorbell: whoever follows a conversation re-reads its log after
//! the last entry it has sent, and re-reads all of them on
//! [`LiveSignal::Resync`], which a subscription yields first and after
//! every reconnection, and a contact's on [`LiveSignal::Followed`], once its
//! events arrive. Publishing never fails the operation it follows: a
//! failure is logged and counted in `switchboard_live_publish_errors_total`.
//!
//! Every subscription also listens on `<prefix>:live`, where an event
//! without a contact goes, and where instances of versions before the
//! per-contact channels published everything (a rolling upgrade keeps
//! their events).
//!
//! On Redis Cluster, `PUBLISH` reaches subscribers on every node, so the
//! subscription may use any node (the first configured one).

use crate::{Store, StoreError};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use metrics::counter;
use std::collections::HashSet;
use std::time::Duration;
use switchboard_channel::{LiveBus, LiveEvent, LiveFollows, LiveSignal};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Events waiting for a slow subscriber before it is told to resync.
const SUBSCRIBER_BUFFER: usize = 4096;
/// How often an idle subscription checks that its connection is alive.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(15);

/// The live bus on one Redis.
#[derive(Clone)]
pub struct Live {
    store: Store,
    channel: String,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("channel", &self.channel)
            .finish()
    }
}

impl Live {
    pub fn new(store: Store) -> Live {
        let channel = store.keys().live();
        Live { store, channel }
    }

    /// Publishes `event`; a failure is logged and counted, never returned.
    pub async fn publish(&self, event: &LiveEvent) {
        if let Err(error) = self.try_publish(event).await {
            counter!("switchboard_live_publish_errors_total").increment(1);
            warn!(conversation_id = %event.conv, %error, "Could not ring the live doorbell.");
        }
    }

    async fn try_publish(&self, event: &LiveEvent) -> Result<(), StoreError> {
        let (channel, json) = self.encode(event)?;
        let mut conn = self.store.conn();
        let _: i64 = self
            .store
            .bounded(
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(json)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The pub/sub channel and the JSON of `event`.
    fn encode(&self, event: &LiveEvent) -> Result<(String, String), StoreError> {
        let json = serde_json::to_string(event)
            .map_err(|e| StoreError::Protocol(format!("cannot encode live event: {e}")))?;
        let channel = if event.contact.is_empty() {
            self.channel.clone()
        } else {
            contact_channel(&self.channel, &event.contact)
        };
        Ok((channel, json))
    }

    /// A [`Doorbell`] on this bus: events handed to it are published in
    /// order, as many per round trip as are waiting. Needs a Tokio runtime.
    pub fn doorbell(&self) -> Doorbell {
        let (tx, rx) = mpsc::channel(DOORBELL_QUEUE);
        tokio::spawn(ring_in_batches(self.clone(), rx));
        Doorbell { tx }
    }

    /// The events of the contacts `follows` names from now on, with
    /// [`LiveSignal::Resync`] first and after every reconnection (and after
    /// events were dropped because the subscriber fell behind), and
    /// [`LiveSignal::Followed`] once a newly followed contact's events
    /// arrive. Reconnects by itself; ends when the stream is dropped.
    pub fn subscribe(&self, follows: LiveFollows) -> BoxStream<'static, LiveSignal> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let subscription = Subscription {
            client: self.store.client().clone(),
            base: self.channel.clone(),
            timeout: self.store.config().connect_timeout + self.store.config().response_timeout,
            changes: follows.watch(),
            follows,
            tx,
        };
        tokio::spawn(subscription.run());
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|signal| (signal, rx))
        })
        .boxed()
    }
}

/// Channels subscribed to in one command when (re)connecting.
const SUBSCRIBE_PART: usize = 1000;

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out")]
    TimedOut(#[from] tokio::time::error::Elapsed),
}

/// `<prefix>:live:<contact>`.
fn contact_channel(base: &str, contact: &str) -> String {
    format!("{base}:{contact}")
}

/// One subscription, kept up until the subscriber goes away.
struct Subscription {
    client: redis::Client,
    /// `<prefix>:live`.
    base: String,
    timeout: Duration,
    follows: LiveFollows,
    changes: mpsc::UnboundedReceiver<String>,
    tx: mpsc::Sender<LiveSignal>,
}

impl Subscription {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Changes so far are all in `follows` now: subscribe to it whole.
            while self.changes.try_recv().is_ok() {}
            let mut channels = vec![self.base.clone()];
            channels.extend(
                self.follows
                    .followed()
                    .iter()
                    .map(|c| contact_channel(&self.base, c)),
            );
            // In parts, each within the timeout: an instance following
            // tens of thousands of contacts still gets through.
            let timeout = self.timeout;
            let connected = async {
                let mut pubsub =
                    tokio::time::timeout(timeout, self.client.get_async_pubsub()).await??;
                for part in channels.chunks(SUBSCRIBE_PART) {
                    tokio::time::timeout(timeout, pubsub.subscribe(part)).await??;
                }
                Ok::<_, SubscribeError>(pubsub)
            }
            .await;
            match connected {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    if self.tx.send(LiveSignal::Resync).await.is_err() {
                        return;
                    }
                    let subscribed = channels.into_iter().skip(1).collect();
                    if !self.pump(pubsub, subscribed).await {
                        return;
                    }
                    debug!("The live subscription was lost; reconnecting.");
                }
                Err(error) => debug!(%error, "Cannot subscribe to the live doorbell yet."),
            }
            tokio::select! {
                () = self.tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Forwards messages, and follows what `follows` says, until the
    /// connection is lost (false: the subscriber went away).
    async fn pump(&mut self, pubsub: redis::aio::PubSub, mut subscribed: HashSet<String>) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
        ping.tick().await;
        let mut lost = false;
        let tx = self.tx.clone();
        loop {
            tokio::select! {
                    () = tx.closed() => return false,
                    change = self.changes.recv() => {
                        let Some(first) = change else { return false };
                        // Every change waiting now, in one SUBSCRIBE and one
                        // UNSUBSCRIBE: under load (an offer and a close per
                        // contact) one round trip each would fall behind.
                        let mut changed = HashSet::from([first]);
                        while changed.len() < SUBSCRIBE_PART {
                            match self.changes.try_recv() {
                                Ok(contact) => changed.insert(contact),
                                Err(_) => break,
                            };
                        }
                        let (mut join, mut leave) = (Vec::new(), Vec::new());
                        for contact in changed {
                            let channel = contact_channel(&self.base, &contact);
                            match (self.follows.is_followed(&contact), subscribed.contains(&channel)) {
                                (true, false) => join.push((contact, channel)),
                                (false, true) => leave.push(channel),
                                _ => {}
                            }
                        }
                        if !join.is_empty() {
                            let channels: Vec<&String> = join.iter().map(|(_, c)| c).collect();
                            let done = tokio::time::timeout(self.timeout, sink.subscribe(&channels)).await;
                            if !matches!(done, Ok(Ok(()))) {
                                return true;
                            }
                        }
                        if !leave.is_empty() {
                            let done = tokio::time::timeout(self.timeout, sink.unsubscribe(&leave)).await;
                            if !matches!(done, Ok(Ok(()))) {
                                return true;
                            }
                            for channel in leave {
                                subscribed.remove(&channel);
                            }
                        }
                        for (contact, channel) in join {
                            subscribed.insert(channel);
                            if tx.try_send(LiveSignal::Followed(contact)).is_err() {
                                lost = true;
                            }
                        }
                    }
                message = stream.next() => {
                    let Some(message) = message else { return true };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    let event = match serde_json::from_str::<LiveEvent>(&payload) {
                        Ok(event) => event,
                        Err(error) => {
                            debug!(%error, "Ignoring a live event this version cannot read.");
                            continue;
                        }
                    };
                    if lost {
                        if tx.try_send(LiveSignal::Resync).is_err() {
                            continue;
                        }
                        lost = false;
                    }
                    match tx.try_send(LiveSignal::Event(event)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            counter!("switchboard_live_dropped_total").increment(1);
                            lost = true;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return true;
                    }
                }
            }
        }
    }
}

impl LiveBus for Live {
    fn publish(&self, event: LiveEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move { Live::publish(self, &event).await })
    }

    fn subscribe(&self, follows: LiveFollows) -> BoxStream<'static, LiveSignal> {
        Live::subscribe(self, follows)
    }
}

/// Events a [`Doorbell`] holds before it drops (and counts) new ones.
const DOORBELL_QUEUE: usize = 8192;
/// Events published in one round trip at most.
const DOORBELL_BATCH: usize = 256;

/// Rings the doorbell for a busy path (the intake) without a round trip of
/// its own per event: [`ring`](Doorbell::ring) hands the event to one task,
/// which publishes the events waiting as one pipeline, in the order they
/// were handed over. Best effort, as every doorbell: an event that cannot
/// be queued or published is counted in
/// `switchboard_live_publish_errors_total` and logged. The task ends when
/// the last clone is dropped, after publishing what it holds, or with its
/// runtime: at shutdown, events still queued are dropped (readers catch
/// up from the log, as after any lost doorbell).
#[derive(Clone, Debug)]
pub struct Doorbell {
    tx: mpsc::Sender<LiveEvent>,
}

impl Doorbell {
    /// True once its task has ended (its runtime stopped): events rung
    /// now are lost, so the owner starts another.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues `event` for publishing; never waits.
    pub fn ring(&self, event: LiveEvent) {
        if let Err(e) = self.tx.try_send(event) {
            counter!("switchboard_live_publish_errors_total").increment(1);
            let event = match &e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            warn!(conversation_id = %event.conv, error = %e, "Could not ring the live doorbell.");
        }
    }
}

async fn ring_in_batches(live: Live, mut rx: mpsc::Receiver<LiveEvent>) {
    // On a cluster a pipeline may not span slots, and each contact's
    // channel has its own: there every event is published on its own (all
    // of a batch at once, in order).
    let cluster = live.store.conn().is_cluster();
    let mut events = Vec::with_capacity(DOORBELL_BATCH);
    while rx.recv_many(&mut events, DOORBELL_BATCH).await > 0 {
        let mut failed = 0u64;
        let mut pipe = redis::pipe();
        for event in events.drain(..) {
            match live.encode(&event) {
                Ok((channel, json)) => {
                    pipe.cmd("PUBLISH").arg(channel).arg(json).ignore();
                }
                Err(error) => {
                    failed += 1;
                    warn!(conversation_id = %event.conv, %error, "Could not ring the live doorbell.");
                }
            }
        }
        let sent = pipe.cmd_iter().count() as u64;
        metrics::histogram!("switchboard_live_doorbell_batch_events").record(sent as f64);
        if sent > 0 && cluster {
            let published = pipe.cmd_iter().map(|cmd| {
                let mut conn = live.store.conn();
                let store = &live.store;
                async move { store.bounded(cmd.query_async::<i64>(&mut conn)).await }
            });
            for result in futures::future::join_all(published).await {
                if let Err(error) = result {
                    failed += 1;
                    warn!(%error, "Could not ring the live doorbell.");
                }
            }
        } else if sent > 0 {
            let mut conn = live.store.conn();
            if let Err(error) = live.store.bounded(pipe.query_async::<()>(&mut conn)).await {
                failed += sent;
                warn!(events = sent, %error, "Could not ring the live doorbell.");
            }
        }
        if failed > 0 {
            counter!("switchboard_live_publish_errors_total").increment(failed);
        }
    }
}
