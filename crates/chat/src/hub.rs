//! The chat sessions of this instance and the live doorbell that wakes
//! them.
//!
//! One subscription per instance, following the contacts of the
//! conversations its sessions show. A doorbell for a conversation followed
//! here wakes each of its sessions, which reads the log after the last
//! entry it sent (so nothing is doubled or missed, whichever instance
//! wrote the entry); a resync (the subscription reconnected) wakes all of
//! them, and a contact's first events after it is followed wake its. Typing and read marks of agents go straight to the sessions'
//! small event queues (dropped when full: they are ephemeral).

use futures::StreamExt;
use metrics::{counter, gauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use switchboard_channel::{LiveBus, LiveFollows, LiveKind, LiveSignal};
use switchboard_core::{ContactId, ConversationId};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What the hub tells a session besides "look at the log".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// Another tab of the same visitor started this conversation.
    Attach(ConversationId, ContactId),
    /// The agent types.
    Typing { on: bool, name: String },
    /// The agent read up to `seq`.
    Read { seq: String },
}

/// Hands `event` to a session, or drops it when the session's queue is
/// full (a session that does not keep up), counted: a lost `Attach` is
/// made good by the session's 2–10 s look at its visitor's conversation, a
/// lost `Typing` or `Read` by the next one.
fn offer(link: &Link, event: HubEvent) {
    let kind = match &event {
        HubEvent::Attach(..) => "attach",
        HubEvent::Typing { .. } => "typing",
        HubEvent::Read { .. } => "read",
    };
    // A closed queue is a session ending: nothing to count.
    if let Err(mpsc::error::TrySendError::Full(_)) = link.events.try_send(event) {
        counter!("switchboard_chat_hub_dropped_total", "event" => kind).increment(1);
    }
}

/// A session as the hub knows it.
#[derive(Debug, Clone)]
pub struct Link {
    id: u64,
    visitor: String,
    /// Wakes the session to read the log.
    pub bell: Arc<Notify>,
    events: mpsc::Sender<HubEvent>,
}

#[derive(Debug, Default)]
struct Maps {
    by_conv: HashMap<String, Vec<Link>>,
    by_visitor: HashMap<String, Vec<Link>>,
    /// The conversation each session follows.
    conv_of: HashMap<u64, String>,
    /// The contact of each conversation followed, and back.
    contact_of: HashMap<String, String>,
    conv_of_contact: HashMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Hub {
    maps: Mutex<Maps>,
    next: AtomicU64,
    /// The contacts whose live events this instance's chats need.
    follows: LiveFollows,
}

impl Hub {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session of `visitor`; its events arrive on the receiver.
    pub fn register(&self, visitor: &str) -> (Link, mpsc::Receiver<HubEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let link = Link {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            visitor: visitor.to_owned(),
            bell: Arc::new(Notify::new()),
            events: tx,
        };
        let mut maps = self.maps();
        maps.by_visitor
            .entry(visitor.to_owned())
            .or_default()
            .push(link.clone());
        gauge!("switchboard_chat_sessions").set(count(&maps.by_visitor) as f64);
        (link, rx)
    }

    /// The session follows `conv`, of `contact` (and nothing else).
    pub fn follow(&self, link: &Link, conv: &ConversationId, contact: &ContactId) {
        let mut maps = self.maps();
        unfollow(&mut maps, &self.follows, link.id);
        let (conv, contact) = (conv.to_string(), contact.to_string());
        maps.conv_of.insert(link.id, conv.clone());
        let links = maps.by_conv.entry(conv.clone()).or_default();
        links.push(link.clone());
        if links.len() == 1 {
            self.follows.follow(&contact);
            maps.conv_of_contact.insert(contact.clone(), conv.clone());
            maps.contact_of.insert(conv, contact);
        }
    }

    /// `visitor` has conversation `conv` now: every session of theirs here
    /// is told (another tab may not know yet).
    pub fn attach_visitor(&self, visitor: &str, conv: &ConversationId, contact: &ContactId) {
        let maps = self.maps();
        if let Some(links) = maps.by_visitor.get(visitor) {
            for l in links {
                offer(l, HubEvent::Attach(*conv, *contact));
            }
        }
    }

    pub fn unregister(&self, link: &Link) {
        let mut maps = self.maps();
        unfollow(&mut maps, &self.follows, link.id);
        if let Some(list) = maps.by_visitor.get_mut(&link.visitor) {
            list.retain(|l| l.id != link.id);
            if list.is_empty() {
                maps.by_visitor.remove(&link.visitor);
            }
        }
        gauge!("switchboard_chat_sessions").set(count(&maps.by_visitor) as f64);
    }

    fn ring(&self, conv: &str) {
        if let Some(links) = self.maps().by_conv.get(conv) {
            for l in links {
                l.bell.notify_one();
            }
        }
    }

    fn ring_all(&self) {
        for links in self.maps().by_conv.values() {
            for l in links {
                l.bell.notify_one();
            }
        }
    }

    fn tell(&self, conv: &str, event: &HubEvent) {
        if let Some(links) = self.maps().by_conv.get(conv) {
            for l in links {
                offer(l, event.clone());
            }
        }
    }

    /// Follows the doorbell until `shutdown`.
    pub async fn run(&self, live: Arc<dyn LiveBus>, shutdown: CancellationToken) {
        let mut signals = live.subscribe(self.follows.clone());
        loop {
            let signal = tokio::select! {
                () = shutdown.cancelled() => return,
                s = signals.next() => s,
            };
            match signal {
                None => {
                    debug!("The live doorbell ended.");
                    return;
                }
                Some(LiveSignal::Resync) => self.ring_all(),
                Some(LiveSignal::Followed(contact)) => {
                    let conv = self.maps().conv_of_contact.get(&contact).cloned();
                    if let Some(conv) = conv {
                        self.ring(&conv);
                    }
                }
                Some(LiveSignal::Event(e)) => match e.kind {
                    LiveKind::Log => self.ring(&e.conv),
                    LiveKind::Typing if e.who == "agent" => self.tell(
                        &e.conv,
                        &HubEvent::Typing {
                            on: e.on,
                            name: e.name,
                        },
                    ),
                    LiveKind::Read if e.who == "agent" => {
                        self.tell(&e.conv, &HubEvent::Read { seq: e.seq })
                    }
                    _ => {}
                },
            }
        }
    }
}

fn unfollow(maps: &mut Maps, follows: &LiveFollows, id: u64) {
    let Some(conv) = maps.conv_of.remove(&id) else {
        return;
    };
    if let Some(list) = maps.by_conv.get_mut(&conv) {
        list.retain(|l| l.id != id);
        if list.is_empty() {
            maps.by_conv.remove(&conv);
            if let Some(contact) = maps.contact_of.remove(&conv) {
                maps.conv_of_contact.remove(&contact);
                follows.unfollow(&contact);
            }
        }
    }
}

fn count(map: &HashMap<String, Vec<Link>>) -> usize {
    map.values().map(Vec::len).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use switchboard_core::Partition;

    /// A session that does not keep up loses what its queue cannot hold,
    /// counted by kind, and keeps what it holds, in order; another session
    /// of the same visitor is not held back by it.
    #[test]
    fn events_for_a_full_queue_are_dropped_and_counted() {
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let hub = Hub::default();
        let (slow, mut slow_rx) = hub.register("v-1");
        let (_quick, mut quick_rx) = hub.register("v-1");
        let conv = ConversationId::new(Partition::of(b"v-1", 16));
        let contacts: Vec<ContactId> = (0..20).map(|_| ContactId::new(conv.partition())).collect();
        for (i, contact) in contacts.iter().enumerate() {
            hub.attach_visitor("v-1", &conv, contact);
            if i < 19 {
                // The quick session reads each as it comes.
                assert_eq!(
                    quick_rx.try_recv().unwrap(),
                    HubEvent::Attach(conv, *contact)
                );
            }
        }
        assert_eq!(
            counters.get("switchboard_chat_hub_dropped_total{event=attach}"),
            4,
            "{}",
            counters.dump()
        );
        for contact in contacts.iter().take(16) {
            assert_eq!(
                slow_rx.try_recv().unwrap(),
                HubEvent::Attach(conv, *contact)
            );
        }
        assert!(
            slow_rx.try_recv().is_err(),
            "the four beyond the queue are gone"
        );
        // Room again: the next one arrives.
        hub.attach_visitor("v-1", &conv, &contacts[0]);
        assert_eq!(
            slow_rx.try_recv().unwrap(),
            HubEvent::Attach(conv, contacts[0])
        );
        hub.unregister(&slow);
    }
}
