//! The agents connected to this instance, and the routing events that
//! reach them.
//!
//! Every instance follows the routing event stream and forwards each event
//! to the websocket sessions of the agent it concerns, if any are connected
//! here; so an agent gets their offers whichever instance they are on and
//! whichever instance made the offer. Each session has a bounded queue: a
//! client that stops reading is disconnected rather than slowing anyone
//! else down.

use crate::frames::{ServerFrame, entry_text, frames_for};
use futures::StreamExt;
use metrics::{counter, gauge};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_channel::{LiveEvent, LiveFollows, LiveKind, LiveSignal};
use switchboard_core::{ContactId, ConversationId};
use switchboard_store::{Conversations, Live, RouteEvent, RoutingState, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What a live worker does: forward an event, or resend the recent entries
/// of a contact whose events now arrive.
enum Work {
    Event(LiveEvent),
    Followed(String),
}

/// The worker of a contact: each contact's work by one worker, in order.
fn worker_of(contact: &str) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(contact, &mut hasher);
    std::hash::Hasher::finish(&hasher) as usize % LIVE_WORKERS
}

/// The sessions of one agent: (session id, its frame queue).
type Sessions = Vec<(u64, mpsc::Sender<ServerFrame>)>;

/// How long the agent holding a contact is remembered for live frames.
const HOLDER_CACHE: Duration = Duration::from_secs(2);

/// Live events forwarded at once (each contact's by one worker, in order).
const LIVE_WORKERS: usize = 8;

/// When an auto-assigned contact's events start arriving here, its log
/// entries since this long before the assignment are sent again: a message
/// logged after the client read the transcript and before the subscription
/// landed is not missed.
const FOLLOW_LOOKBACK_MS: u64 = 5_000;

#[derive(Debug)]
pub struct Hub {
    /// Names this instance's websockets among the holders of an agent's
    /// session (`RoutingState::keep_session`): unique per process.
    session_holder: String,
    sessions: Mutex<HashMap<String, Sessions>>,
    next: AtomicU64,
    /// Contact → (the agent holding it, or none; when looked up or told
    /// by a routing event).
    holders: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Bumped whenever `holders` is cleared: a lookup that began before
    /// does not put back what it read.
    holders_epoch: AtomicU64,
    /// The contacts whose live events this instance receives: those
    /// offered or assigned to an agent connected here (contact → agent).
    held_here: Mutex<HashMap<String, String>>,
    /// Contacts assigned without an offer whose events are not arriving
    /// yet: when they do, the entries of the last seconds are sent again.
    /// (contact → when it was assigned, ms).
    assigned_unfollowed: Mutex<HashMap<String, u64>>,
    follows: LiveFollows,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            session_holder: format!("ws:{}", switchboard_core::MessageId::new()),
            sessions: Mutex::default(),
            next: AtomicU64::default(),
            holders: Mutex::default(),
            holders_epoch: AtomicU64::new(0),
            held_here: Mutex::default(),
            assigned_unfollowed: Mutex::default(),
            follows: LiveFollows::default(),
        }
    }
}

impl Hub {
    /// A new session of `agent`; frames for it arrive on the receiver.
    /// Starts a session of `agent`; `None` when the agent already has
    /// `max` sessions here.
    pub fn register(
        &self,
        agent: &str,
        buffer: usize,
        max: usize,
    ) -> Option<(u64, mpsc::Receiver<ServerFrame>)> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mine = sessions.entry(agent.to_owned()).or_default();
        if mine.len() >= max {
            return None;
        }
        mine.push((id, tx));
        gauge!("switchboard_agent_sessions")
            .set(sessions.values().map(Vec::len).sum::<usize>() as f64);
        Some((id, rx))
    }

    /// Ends a session; true when the agent has no other session here.
    pub fn unregister(&self, agent: &str, id: u64) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let last = match sessions.get_mut(agent) {
            Some(list) => {
                list.retain(|(i, _)| *i != id);
                list.is_empty()
            }
            None => true,
        };
        if last {
            sessions.remove(agent);
        }
        gauge!("switchboard_agent_sessions")
            .set(sessions.values().map(Vec::len).sum::<usize>() as f64);
        drop(sessions);
        if last {
            self.release_agent(agent);
        }
        last
    }

    /// `agent` holds `contact` (offered or assigned): its live events are
    /// received here while the agent is connected here.
    pub fn hold(&self, contact: &str, agent: &str) {
        self.hold_from(contact, agent, false);
    }

    /// [`hold`](Self::hold); `assigned`: it became the agent's without an
    /// offer, and their client reads the transcript now, perhaps before
    /// the contact's events arrive here.
    fn hold_from(&self, contact: &str, agent: &str, assigned: bool) {
        if !self.has(agent) {
            return;
        }
        let mut held = self.held_here.lock().unwrap_or_else(|e| e.into_inner());
        if held.insert(contact.to_owned(), agent.to_owned()).is_none() {
            if assigned {
                let mut fresh = self
                    .assigned_unfollowed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if fresh.len() < 100_000 {
                    fresh.insert(
                        contact.to_owned(),
                        switchboard_core::Timestamp::now().as_millis(),
                    );
                }
            }
            self.follows.follow(contact);
        }
    }

    /// Nobody here holds `contact` any more.
    fn release(&self, contact: &str) {
        self.assigned_unfollowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(contact);
        let mut held = self.held_here.lock().unwrap_or_else(|e| e.into_inner());
        if held.remove(contact).is_some() {
            self.follows.unfollow(contact);
        }
    }

    /// The contacts of `agent`, who has no session here any more (unless
    /// they came back meanwhile).
    fn release_agent(&self, agent: &str) {
        let mut held = self.held_here.lock().unwrap_or_else(|e| e.into_inner());
        if self.has(agent) {
            return;
        }
        held.retain(|contact, holder| {
            let keep = holder != agent;
            if !keep {
                self.follows.unfollow(contact);
            }
            keep
        });
    }

    /// This instance's name among the holders of an agent's session.
    pub fn session_holder(&self) -> &str {
        &self.session_holder
    }

    /// Agents with at least one session here.
    pub fn agents(&self) -> Vec<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.keys().cloned().collect()
    }

    /// Queues a frame for every session of `agent`. A session whose queue
    /// is full is dropped (its socket closes).
    pub fn send(&self, agent: &str, frame: &ServerFrame) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = sessions.get_mut(agent) {
            list.retain(|(_, tx)| match tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counter!("switchboard_agent_sessions_dropped_total", "reason" => "slow_reader")
                        .increment(1);
                    warn!(
                        agent_id = agent,
                        "An agent session stopped reading; disconnecting it."
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    /// Follows the routing events and the live doorbell and forwards them,
    /// and keeps the sessions of connected agents alive in Redis, until
    /// `shutdown`.
    ///
    /// When the events it reads jump (their numbers skip: events were
    /// trimmed from the stream before this instance read them), the agents
    /// connected here may have missed offers or withdrawals: their ids are
    /// sent on `resync`, and each gets a fresh `hello`.
    pub async fn run(
        &self,
        state: RoutingState,
        ttl: Duration,
        resync: mpsc::Sender<Vec<String>>,
        shutdown: CancellationToken,
    ) {
        tokio::join!(
            self.follow_routing(state.clone(), ttl, resync, shutdown.clone()),
            self.follow_live(state, shutdown),
        );
    }

    /// Forwards live events (new log entries, a customer typing or reading)
    /// to the agents connected here who hold the contact. The doorbell is
    /// lossy; an agent who must not miss anything reads the transcript
    /// (`GET /contacts/{id}?after=`).
    ///
    /// Events are forwarded by [`LIVE_WORKERS`] workers, each contact's
    /// always by the same one: one event's Redis reads do not hold up the
    /// others', and each contact's events stay in order.
    async fn follow_live(&self, state: RoutingState, shutdown: CancellationToken) {
        let live = Live::new(state.store().clone());
        let conversations = Conversations::new(state.store().clone());
        let mut events = live.subscribe(self.follows.clone());
        let mut queues = Vec::with_capacity(LIVE_WORKERS);
        let mut workers = Vec::with_capacity(LIVE_WORKERS);
        for _ in 0..LIVE_WORKERS {
            let (tx, mut rx) = mpsc::channel::<Work>(1024);
            queues.push(tx);
            let (state, conversations) = (&state, &conversations);
            workers.push(async move {
                while let Some(work) = rx.recv().await {
                    match work {
                        Work::Event(event) => {
                            if let Err(error) =
                                self.forward_live(state, conversations, &event).await
                            {
                                debug!(%error, conversation_id = %event.conv, "Could not forward a live event.");
                            }
                        }
                        Work::Followed(contact) => {
                            if let Err(error) =
                                self.resend_recent(state, conversations, &contact).await
                            {
                                debug!(%error, contact_id = %contact, "Could not send a followed contact's recent entries.");
                            }
                        }
                    }
                }
            });
        }
        let dispatch = async move {
            loop {
                let signal = tokio::select! {
                    () = shutdown.cancelled() => return,
                    signal = events.next() => signal,
                };
                match signal {
                    None => return,
                    Some(LiveSignal::Resync) => self.forget_holders(),
                    // The subscription landed: what was logged just before
                    // may have come between the client's read of the
                    // transcript and now. Sent again (clients match by
                    // seq), by the contact's worker, ahead of its events.
                    Some(LiveSignal::Followed(contact)) => {
                        let worker = worker_of(&contact);
                        if queues[worker].try_send(Work::Followed(contact)).is_err() {
                            counter!("switchboard_agent_live_dropped_total").increment(1);
                        }
                    }
                    Some(LiveSignal::Event(event)) => {
                        let worker = worker_of(&event.contact);
                        if queues[worker].try_send(Work::Event(event)).is_err() {
                            // A worker this far behind: the doorbell is
                            // lossy by design (the transcript is the truth).
                            counter!("switchboard_agent_live_dropped_total").increment(1);
                        }
                    }
                }
            }
            // Dropping `queues` ends the workers.
        };
        tokio::join!(dispatch, futures::future::join_all(workers));
    }

    /// Keeps the holder cache right as routing events go by: an offer or an
    /// assignment names the contact's agent at once (so a customer's first
    /// messages after an accept are not missed for the cache's lifetime);
    /// anything else ending a hold forgets it.
    fn note_holder(&self, event: &RouteEvent) {
        let Some(contact) = &event.contact else {
            return;
        };
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        match (event.kind.as_str(), &event.agent) {
            ("offered" | "assigned" | "accepted", Some(agent)) => {
                holders.insert(contact.clone(), (Some(agent.clone()), Instant::now()));
                drop(holders);
                self.hold_from(contact, agent, event.kind == "assigned");
            }
            ("enqueued" | "presence" | "agent" | "rated", _) => {}
            (kind, _) => {
                // What ends a hold (a kind this version does not know is
                // left to `refresh`). Nobody holds the contact now: said
                // with the time, so that a lookup that read the holder
                // before this event does not put them back (`holder`).
                let ends = matches!(
                    kind,
                    "declined" | "expired" | "revoked" | "abandoned" | "requeued" | "closed"
                );
                if ends {
                    // Tombstones are kept no longer than answers are: on
                    // an instance where nobody is connected (no lookups
                    // prune) they would pile up for every contact closed.
                    if holders.len() > 10_000 {
                        holders.retain(|_, (_, at)| at.elapsed() < HOLDER_CACHE);
                    }
                    holders.insert(contact.clone(), (None, Instant::now()));
                } else {
                    holders.remove(contact);
                }
                drop(holders);
                if ends {
                    self.release(contact);
                }
            }
        }
    }

    async fn forward_live(
        &self,
        state: &RoutingState,
        conversations: &Conversations,
        event: &LiveEvent,
    ) -> Result<(), StoreError> {
        if event.contact.is_empty() || self.is_empty() {
            return Ok(());
        }
        let frame = match event.kind {
            LiveKind::Log => {
                let Ok(conv) = event.conv.parse::<ConversationId>() else {
                    return Ok(());
                };
                let Some(agent) = self.holder(state, &event.contact).await? else {
                    return Ok(());
                };
                if !self.has(&agent) {
                    return Ok(());
                }
                // The doorbell usually carries the entry; an older
                // instance's does not: read it back then. A customer's
                // message that may name attachments is read back too, for
                // the media it really brought (the console links only
                // those, not a line the customer typed).
                let attachments = event.dir == "in"
                    && event
                        .text
                        .as_deref()
                        .is_none_or(|t| t.contains("media id "));
                let frame = match &event.text {
                    Some(text) if !attachments => ServerFrame::Message {
                        contact_id: event.contact.clone(),
                        seq: event.seq.clone(),
                        dir: event.dir.clone(),
                        text: text.clone(),
                        at: event.at,
                        media: (event.dir == "in").then(Vec::new),
                    },
                    _ => {
                        let Some(entry) = conversations.entry_at(&conv, &event.seq).await? else {
                            return Ok(());
                        };
                        let media = (entry.dir == "in").then(|| media_of(&entry.msg)).flatten();
                        ServerFrame::Message {
                            contact_id: event.contact.clone(),
                            seq: entry.seq,
                            dir: entry.dir,
                            text: entry_text(&entry.msg),
                            at: entry.at,
                            media,
                        }
                    }
                };
                self.send(&agent, &frame);
                return Ok(());
            }
            LiveKind::Typing if event.who == "visitor" => ServerFrame::Typing {
                contact_id: event.contact.clone(),
                on: event.on,
            },
            LiveKind::Read if event.who == "visitor" => ServerFrame::Read {
                contact_id: event.contact.clone(),
                seq: event.seq.clone(),
            },
            _ => return Ok(()),
        };
        if let Some(agent) = self.holder(state, &event.contact).await? {
            self.send(&agent, &frame);
        }
        Ok(())
    }

    /// The log entries since [`FOLLOW_LOOKBACK_MS`] before its assignment
    /// of a contact assigned without an offer whose live events now arrive
    /// here, to the agent holding it, if connected here.
    async fn resend_recent(
        &self,
        state: &RoutingState,
        conversations: &Conversations,
        contact: &str,
    ) -> Result<(), StoreError> {
        let assigned_at = self
            .assigned_unfollowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(contact);
        let Some(assigned_at) = assigned_at else {
            return Ok(());
        };
        let Ok(id) = contact.parse::<ContactId>() else {
            return Ok(());
        };
        let Some(agent) = self.holder(state, contact).await? else {
            return Ok(());
        };
        if !self.has(&agent) {
            return Ok(());
        }
        let Some(conv) = conversations.contact(&id).await?.and_then(|f| {
            f.get("conversation")
                .and_then(|c| c.parse::<ConversationId>().ok())
        }) else {
            return Ok(());
        };
        // From before the assignment (when the client reads the
        // transcript), with a margin for clocks: however late the
        // subscription landed.
        let since = assigned_at.saturating_sub(FOLLOW_LOOKBACK_MS);
        for entry in conversations
            .transcript(&conv, &format!("{since}-0"), 100)
            .await?
        {
            let media = (entry.dir == "in").then(|| media_of(&entry.msg)).flatten();
            self.send(
                &agent,
                &ServerFrame::Message {
                    contact_id: contact.to_owned(),
                    seq: entry.seq,
                    dir: entry.dir,
                    text: entry_text(&entry.msg),
                    at: entry.at,
                    media,
                },
            );
        }
        Ok(())
    }

    /// Forgets every cached holder (events were missed).
    fn forget_holders(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        self.holders_epoch.fetch_add(1, Ordering::AcqRel);
        holders.clear();
    }

    /// The agent holding `contact` (offered or assigned), cached briefly.
    async fn holder(
        &self,
        state: &RoutingState,
        contact: &str,
    ) -> Result<Option<String>, StoreError> {
        {
            let holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((agent, at)) = holders.get(contact)
                && at.elapsed() < HOLDER_CACHE
            {
                return Ok(agent.clone());
            }
        }
        let Ok(id) = contact.parse::<ContactId>() else {
            return Ok(None);
        };
        let (asked, epoch) = (Instant::now(), self.holders_epoch.load(Ordering::Acquire));
        let agent = state.holder(&id).await?;
        Ok(self.settle_holder(contact, agent, asked, epoch))
    }

    /// Caches `agent`, read from Redis for `contact` from `asked` on, and
    /// returns who holds the contact.
    fn settle_holder(
        &self,
        contact: &str,
        agent: Option<String>,
        asked: Instant,
        epoch: u64,
    ) -> Option<String> {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        // A routing event about the contact noted while Redis answered is
        // newer than the answer (a transfer that ended the hold, say): it
        // stays, and is the answer. Likewise nothing is put back into a
        // cache cleared meanwhile.
        if let Some((newer, at)) = holders.get(contact)
            && *at >= asked
        {
            return newer.clone();
        }
        if self.holders_epoch.load(Ordering::Acquire) != epoch {
            return agent;
        }
        if holders.len() > 10_000 {
            holders.retain(|_, (_, at)| at.elapsed() < HOLDER_CACHE);
        }
        holders.insert(contact.to_owned(), (agent.clone(), Instant::now()));
        agent
    }

    /// Releases the contacts followed for agents who no longer hold them
    /// (a hold that ended while events were missed, or noted just after
    /// its end) or are no longer connected here.
    async fn reconcile(&self, state: &RoutingState) {
        let entries: Vec<(String, String)> = self
            .held_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, a)| (c.clone(), a.clone()))
            .collect();
        for (contact, agent) in entries {
            let holds = match contact.parse::<ContactId>() {
                Ok(id) if self.has(&agent) => match state.holder(&id).await {
                    Ok(holder) => holder.as_deref() == Some(agent.as_str()),
                    Err(error) => {
                        debug!(%error, "Could not check who holds a contact; later.");
                        return;
                    }
                },
                _ => false,
            };
            if !holds {
                let mut held = self.held_here.lock().unwrap_or_else(|e| e.into_inner());
                if held.get(&contact) == Some(&agent) {
                    held.remove(&contact);
                    self.follows.unfollow(&contact);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn has(&self, agent: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(agent)
    }

    async fn follow_routing(
        &self,
        state: RoutingState,
        ttl: Duration,
        resync: mpsc::Sender<Vec<String>>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut after: Option<String> = None;
        let mut gaps = Gaps::default();
        let mut last_refresh = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let result: Result<(), StoreError> = async {
                let mut conn = state.event_reader(Duration::from_millis(500))?;
                let mut cursor = match after.take() {
                    Some(a) => a,
                    None => state.last_event_id().await?,
                };
                loop {
                    let events = tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        events = state.read_events(&mut conn, &cursor, Duration::from_millis(500), 1000) => events,
                    };
                    let events = match events {
                        Ok(e) => e,
                        Err(e) => {
                            after = Some(cursor);
                            return Err(e);
                        }
                    };
                    let mut gap = false;
                    for event in &events {
                        gap |= gaps.jumped(event.number());
                        self.note_holder(event);
                        for (agent, frame) in frames_for(event) {
                            self.send(&agent, &frame);
                        }
                    }
                    if gap {
                        counter!("switchboard_agent_event_gaps_total").increment(1);
                        warn!("Routing events were trimmed before this instance read them; resynchronising its agents.");
                        self.forget_holders();
                        // What they hold now comes with their fresh hello
                        // (`me` holds it); what they no longer hold is
                        // released by the next `refresh`.
                        let _ = resync.try_send(self.agents());
                    }
                    if let Some(last) = events.last() {
                        cursor = last.id.clone();
                    }
                    if last_refresh.elapsed() >= ttl / 3 {
                        self.refresh(&state, ttl).await;
                        last_refresh = tokio::time::Instant::now();
                    }
                }
            }
            .await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    debug!(%error, "Following routing events failed; retrying.");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn refresh(&self, state: &RoutingState, ttl: Duration) {
        self.reconcile(state).await;
        let until = switchboard_core::Timestamp::now().as_millis() + ttl.as_millis() as u64;
        for agent in self.agents() {
            if let Err(error) = state
                .keep_session(&agent, &self.session_holder, until)
                .await
            {
                debug!(%error, agent_id = %agent, "Could not refresh an agent's session.");
            }
            // The last socket closed while this ran: its end may have been
            // written before the refresh, which must not outlive it.
            if !self.has(&agent) {
                self.end_session(state, &agent, ttl).await;
            }
        }
    }

    /// This instance no longer keeps `agent`'s session (their last socket
    /// here closed): they stay online while another instance's socket or a
    /// heartbeat keeps them.
    pub async fn end_session(&self, state: &RoutingState, agent: &str, ttl: Duration) {
        let now = switchboard_core::Timestamp::now().as_millis();
        if let Err(error) = state.keep_session(agent, &self.session_holder, now).await {
            debug!(%error, agent_id = %agent, "Could not end the agent's session; it lapses by itself.");
        }
        // A new socket of theirs came in meanwhile here, and its start may
        // have been written before this end: keep its session.
        if self.has(agent) {
            let until = now + ttl.as_millis() as u64;
            if let Err(error) = state.keep_session(agent, &self.session_holder, until).await {
                debug!(%error, agent_id = %agent, "Could not keep the agent's session; the next refresh does.");
            }
        }
    }
}

/// Watches the routing events' numbers for a jump.
#[derive(Debug, Default)]
struct Gaps {
    last: u64,
}

impl Gaps {
    /// True when `n` skips past the last number seen (events between were
    /// never read). Numbers that go back (the counter was reset with a
    /// fresh Redis) or are missing (0) only move the mark.
    fn jumped(&mut self, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        let jumped = self.last > 0 && n > self.last + 1;
        self.last = n;
        jumped
    }
}

/// The media ids a stored customer message brought (its `media` list);
/// `None` for a message stored before messages had one.
fn media_of(msg: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(msg).ok()?;
    let ids = value.get("media")?.as_array()?;
    Some(
        ids.iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect(),
    )
}

#[cfg(test)]
mod gap_tests {
    use super::Gaps;

    #[test]
    fn only_a_skip_forward_is_a_gap() {
        let mut g = Gaps::default();
        assert!(!g.jumped(7), "the first event");
        assert!(!g.jumped(8));
        assert!(!g.jumped(0), "unnumbered");
        assert!(g.jumped(12), "9 to 11 missed");
        assert!(!g.jumped(3), "a reset counter");
        assert!(!g.jumped(4));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod holder_tests {
    use super::*;

    fn event(kind: &str, contact: &str) -> RouteEvent {
        RouteEvent {
            id: "1-0".into(),
            kind: kind.into(),
            contact: Some(contact.into()),
            agent: None,
            live: None,
            record: None,
            fields: HashMap::new(),
        }
    }

    fn cached(hub: &Hub, contact: &str) -> Option<Option<String>> {
        hub.holders
            .lock()
            .unwrap()
            .get(contact)
            .map(|(agent, _)| agent.clone())
    }

    /// A transfer noted while Redis answered who holds the contact is newer
    /// than that answer: the old holder is not put back into the cache, or
    /// the customer's next messages went to them for up to two seconds.
    #[test]
    fn an_event_noted_during_a_lookup_wins_over_its_answer() {
        let hub = Hub::default();
        let c = "1-01JAAAAAAAAAAAAAAAAAAAAAAA";
        let asked = Instant::now();
        hub.note_holder(&event("requeued", c));
        assert_eq!(hub.settle_holder(c, Some("a".into()), asked, 0), None);
        assert_eq!(cached(&hub, c), Some(None));

        // A lookup that began after the event: its answer is the news.
        std::thread::sleep(Duration::from_millis(2));
        let asked = Instant::now();
        assert_eq!(
            hub.settle_holder(c, Some("b".into()), asked, 0),
            Some("b".into())
        );
        assert_eq!(cached(&hub, c), Some(Some("b".into())));

        // The cache cleared while Redis answered (events were missed):
        // the answer is used, not cached.
        let asked = Instant::now();
        let epoch = hub.holders_epoch.load(Ordering::Acquire);
        hub.forget_holders();
        assert_eq!(
            hub.settle_holder(c, Some("c".into()), asked, epoch),
            Some("c".into())
        );
        assert_eq!(cached(&hub, c), None);
    }
}
