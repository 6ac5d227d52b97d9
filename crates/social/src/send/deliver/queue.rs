//! The deliver loop's bookkeeping, without I/O: per-conversation queues of
//! replies, in the order the outbox first handed them out, and what to do
//! next with each. The loop in [`super`] feeds it events (a delivery taken
//! from the outbox, a send finished, a timer tick) and carries out the
//! [`Action`]s it returns. See the design in [`super`].

use super::backoff::backoff;
use crate::send::{FailureKind, Progress, SendOutcome};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use switchboard_channel::OutboundDelivery;
use switchboard_core::{ConversationId, DeliveryOutcome, MessageId};

/// The spacing of due times when several replies of one conversation are
/// handed back to the outbox, so they come back in their order.
pub(crate) const GAP: Duration = Duration::from_millis(10);

/// The limits the bookkeeping works within (from `DeliverySettings`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// How long after being taken from the outbox a reply may still start a
    /// send; past it, a reply still in memory is handed back to the outbox.
    pub hold_budget: Duration,
    /// When, after being taken, a send must stop starting new parts.
    pub send_window: Duration,
    /// A retry waits in memory only when its wait is at most this long.
    pub memory_wait_max: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub give_up_after: Duration,
    pub max_attempts: u32,
    /// The outbox's visibility timeout: when a delivery we failed to hand
    /// back comes back by itself.
    pub visibility: Duration,
    /// How long past its due time a reply handed back to the outbox is
    /// waited for before later replies stop waiting for it.
    pub away_grace: Duration,
    pub max_in_flight: usize,
    /// How many final outcomes are remembered to settle a redelivered reply
    /// without sending it again.
    pub recent_capacity: usize,
}

/// The time, on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub at: Instant,
    /// Milliseconds since the epoch, for a reply's age (its `created_at`).
    pub wall_ms: u64,
}

/// What the loop must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send the parts of the reply `progress` has not seen accepted, stop
    /// starting parts at `deadline`, settle a final outcome, and report.
    Send {
        conversation: ConversationId,
        delivery: OutboundDelivery,
        progress: Progress,
        deadline: Instant,
    },
    /// Record a final outcome (no send).
    Settle {
        delivery: OutboundDelivery,
        outcome: DeliveryOutcome,
    },
    /// Hand the reply back to the outbox, due after `delay`.
    Defer {
        conversation: ConversationId,
        delivery: OutboundDelivery,
        delay: Duration,
    },
}

enum State {
    /// In memory, waiting to be sent (not before `not_before`).
    Held {
        delivery: OutboundDelivery,
        taken_at: Instant,
        not_before: Instant,
    },
    /// A send is in flight.
    Sending {
        delivery: OutboundDelivery,
        taken_at: Instant,
    },
    /// Handed back to the outbox, expected back around `due`.
    Away { due: Instant },
}

struct Slot {
    message_id: MessageId,
    state: State,
    /// Sends started, including those of earlier hand-outs.
    attempts: u32,
    progress: Progress,
    last_reason: Option<String>,
    created_at_ms: u64,
}

/// Final outcomes of recent replies, oldest forgotten first.
struct Recent {
    map: HashMap<MessageId, DeliveryOutcome>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl Recent {
    fn insert(&mut self, id: MessageId, outcome: DeliveryOutcome) {
        if self.map.insert(id, outcome).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// What one deliverer leaves to the next on the same instance: the outbox
/// may hand the same replies out again (a settle that failed, a deferral
/// that did not reach Redis), and the next deliverer must neither send a
/// reply again whose outcome is known nor send again the parts of a reply
/// the provider accepted. Oldest first; at most the recent capacity of each.
#[derive(Debug, Default)]
pub struct Memory {
    outcomes: Vec<(MessageId, DeliveryOutcome)>,
    progress: Vec<(MessageId, Progress)>,
}

/// Every conversation with replies in memory or away.
pub(crate) struct Queues {
    limits: Limits,
    convs: HashMap<ConversationId, VecDeque<Slot>>,
    recent: Recent,
    /// Progress of replies sent in part by an earlier deliverer, taken up
    /// when they arrive.
    carried: HashMap<MessageId, Progress>,
    in_memory: usize,
    in_flight: usize,
    draining: bool,
}

impl Queues {
    pub(crate) fn new(limits: Limits, memory: Memory) -> Queues {
        let mut recent = Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: limits.recent_capacity,
        };
        for (id, outcome) in memory.outcomes {
            recent.insert(id, outcome);
        }
        let skip = memory.progress.len().saturating_sub(limits.recent_capacity);
        Queues {
            carried: memory.progress.into_iter().skip(skip).collect(),
            limits,
            convs: HashMap::new(),
            recent,
            in_memory: 0,
            in_flight: 0,
            draining: false,
        }
    }

    /// What the next deliverer on this instance should know (see
    /// [`Memory`]).
    pub(crate) fn into_memory(mut self) -> Memory {
        let outcomes = self
            .recent
            .order
            .iter()
            .filter_map(|id| self.recent.map.remove(id).map(|o| (*id, o)))
            .collect();
        let mut progress: Vec<(MessageId, Progress)> = self.carried.drain().collect();
        for slot in self.convs.values().flatten() {
            if slot.progress != Progress::default() {
                progress.push((slot.message_id, slot.progress.clone()));
            }
        }
        Memory { outcomes, progress }
    }

    /// Replies held in memory (waiting or being sent).
    pub(crate) fn in_memory(&self) -> usize {
        self.in_memory
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The outbox handed out `delivery` at `taken_at`.
    pub(crate) fn arrive(
        &mut self,
        delivery: OutboundDelivery,
        taken_at: Instant,
        now: Now,
    ) -> Vec<Action> {
        let id = delivery.message.message_id;
        let conversation = delivery.message.conversation_id;
        if let Some(outcome) = self.recent.map.get(&id) {
            // Sent already; its settle was lost, or it was in the outbox twice.
            return vec![Action::Settle {
                delivery,
                outcome: outcome.clone(),
            }];
        }
        let mut actions = Vec::new();
        let queue = self.convs.entry(conversation).or_default();
        match queue.iter_mut().find(|s| s.message_id == id) {
            None => {
                queue.push_back(Slot {
                    message_id: id,
                    attempts: delivery.attempt.saturating_sub(1),
                    progress: self.carried.remove(&id).unwrap_or_default(),
                    last_reason: None,
                    created_at_ms: delivery.message.created_at.as_millis(),
                    state: State::Held {
                        delivery,
                        taken_at,
                        not_before: now.at,
                    },
                });
                self.in_memory += 1;
            }
            Some(slot) => match &mut slot.state {
                State::Away { .. } => {
                    // Back from the outbox: it takes its place again.
                    slot.state = State::Held {
                        delivery,
                        taken_at,
                        not_before: now.at,
                    };
                    self.in_memory += 1;
                }
                State::Held {
                    delivery: held,
                    taken_at: since,
                    ..
                }
                | State::Sending {
                    delivery: held,
                    taken_at: since,
                } => {
                    if held.handle == delivery.handle {
                        // The outbox handed the same entry out again: its
                        // visibility clock restarted.
                        *since = taken_at;
                    } else {
                        // The same reply twice in the outbox: the copy waits
                        // until this one has an outcome to settle it with.
                        actions.push(Action::Defer {
                            conversation,
                            delivery,
                            delay: self.limits.backoff_base.max(Duration::from_secs(1)),
                        });
                    }
                }
            },
        }
        self.pump(conversation, now, &mut actions);
        actions
    }

    /// A send task of the head of `conversation` ended without an outcome
    /// (it panicked): tried again, from the progress the slot kept, so
    /// that the parts the provider accepted before are not sent again.
    pub(crate) fn lost(
        &mut self,
        conversation: ConversationId,
        id: MessageId,
        now: Now,
    ) -> Vec<Action> {
        let progress = self
            .convs
            .get(&conversation)
            .and_then(VecDeque::front)
            .filter(|head| head.message_id == id)
            .map(|head| head.progress.clone())
            .unwrap_or_default();
        self.sent(
            conversation,
            id,
            SendOutcome::retry(None, "internal error"),
            progress,
            now,
        )
    }

    /// A send of the head of `conversation` finished with `outcome` (a final
    /// one is settled already by the send job).
    pub(crate) fn sent(
        &mut self,
        conversation: ConversationId,
        id: MessageId,
        outcome: SendOutcome,
        progress: Progress,
        now: Now,
    ) -> Vec<Action> {
        let was_full = self.in_flight >= self.limits.max_in_flight;
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut actions = Vec::new();
        let limits = &self.limits;
        if let Some(queue) = self.convs.get_mut(&conversation)
            && let Some(head) = queue.front_mut()
            && head.message_id == id
            && let State::Sending { .. } = head.state
        {
            let placeholder = State::Away { due: now.at };
            let State::Sending { delivery, taken_at } =
                std::mem::replace(&mut head.state, placeholder)
            else {
                return actions;
            };
            head.progress = progress;
            match outcome {
                SendOutcome::Retry { after, reason } => {
                    head.last_reason = Some(reason);
                    if let Some(reason) = give_up(limits, head, now) {
                        count_gave_up(&delivery);
                        queue.pop_front();
                        self.in_memory -= 1;
                        let outcome = DeliveryOutcome::Failed { reason };
                        self.recent.insert(id, outcome.clone());
                        actions.push(Action::Settle { delivery, outcome });
                    } else {
                        let backoff =
                            backoff(limits.backoff_base, limits.backoff_cap, head.attempts);
                        let delay = match after {
                            // A pause between parts: resume at once.
                            Some(after) if after.is_zero() => after,
                            // The provider's hint is a minimum.
                            Some(after) => after.max(backoff),
                            None => backoff,
                        };
                        let fits = now.at + delay < taken_at + limits.hold_budget;
                        if !self.draining && delay <= limits.memory_wait_max && fits {
                            head.state = State::Held {
                                delivery,
                                taken_at,
                                not_before: now.at + delay,
                            };
                        } else {
                            head.state = State::Away {
                                due: now.at + delay,
                            };
                            self.in_memory -= 1;
                            actions.push(Action::Defer {
                                conversation,
                                delivery,
                                delay,
                            });
                        }
                    }
                }
                final_outcome => {
                    let outcome = final_outcome.to_delivery_outcome(&head.progress);
                    queue.pop_front();
                    self.in_memory -= 1;
                    if let Some(outcome) = outcome {
                        self.recent.insert(id, outcome);
                    }
                }
            }
        }
        if was_full {
            self.pump_all(now, &mut actions);
        } else {
            self.pump(conversation, now, &mut actions);
        }
        actions
    }

    /// Handing `id` back to the outbox failed: it stays pending there and is
    /// handed out again once its visibility timeout passes.
    pub(crate) fn defer_failed(&mut self, conversation: ConversationId, id: MessageId, now: Now) {
        let visibility = self.limits.visibility;
        if let Some(slot) = self
            .convs
            .get_mut(&conversation)
            .and_then(|q| q.iter_mut().find(|s| s.message_id == id))
            && let State::Away { due } = &mut slot.state
        {
            *due = (*due).max(now.at + visibility);
        }
    }

    /// Timers: replies that waited long enough, replies that must leave
    /// memory before the outbox hands them out again, replies that never
    /// came back.
    pub(crate) fn tick(&mut self, now: Now) -> Vec<Action> {
        let mut actions = Vec::new();
        let limits = &self.limits;
        let carried = &mut self.carried;
        for (conversation, queue) in &mut self.convs {
            queue.retain_mut(|slot| match slot.state {
                State::Away { due } if now.at > due + limits.away_grace => {
                    tracing::warn!(conversation_id = %conversation, message_id = %slot.message_id,
                        "A reply handed back to the outbox did not come back in time; later replies of its conversation no longer wait for it.");
                    // When it does come back, its accepted parts are not
                    // sent again.
                    if slot.progress != Progress::default() {
                        carried.insert(slot.message_id, std::mem::take(&mut slot.progress));
                        // Bounded as the next deliverer's memory is: a
                        // reply that never comes back is forgotten.
                        if carried.len() > limits.recent_capacity
                            && let Some(old) =
                                carried.keys().find(|k| **k != slot.message_id).copied()
                        {
                            carried.remove(&old);
                        }
                    }
                    false
                }
                _ => true,
            });
            // The head's own timers are the pump's; later replies that must
            // leave memory go back behind everything ahead of them.
            let mut floor = now.at;
            for (position, slot) in queue.iter_mut().enumerate() {
                match &slot.state {
                    State::Away { due } => floor = floor.max(*due),
                    State::Sending { .. } => {}
                    State::Held {
                        taken_at,
                        not_before,
                        ..
                    } => {
                        if position == 0 || now.at < *taken_at + limits.hold_budget {
                            floor = floor.max(*not_before);
                            continue;
                        }
                        let due = floor + GAP;
                        floor = due;
                        if let State::Held { delivery, .. } =
                            std::mem::replace(&mut slot.state, State::Away { due })
                        {
                            self.in_memory -= 1;
                            actions.push(Action::Defer {
                                conversation: *conversation,
                                delivery,
                                delay: due - now.at,
                            });
                        }
                    }
                }
            }
        }
        self.pump_all(now, &mut actions);
        actions
    }

    /// Shutting down: no more sends. Every reply still in memory goes back
    /// to the outbox, in order per conversation: one batch per conversation,
    /// to be carried out one after the other so their due times increase.
    pub(crate) fn drain(&mut self, now: Now) -> Vec<Vec<Action>> {
        self.draining = true;
        let mut batches = Vec::new();
        for (conversation, queue) in &mut self.convs {
            let mut floor = now.at;
            let mut batch = Vec::new();
            for slot in queue.iter_mut() {
                match &slot.state {
                    State::Away { due } => floor = floor.max(*due),
                    State::Sending { .. } => {}
                    State::Held { .. } => {
                        let due = floor + GAP;
                        floor = due;
                        if let State::Held { delivery, .. } =
                            std::mem::replace(&mut slot.state, State::Away { due })
                        {
                            self.in_memory -= 1;
                            batch.push(Action::Defer {
                                conversation: *conversation,
                                delivery,
                                delay: due - now.at,
                            });
                        }
                    }
                }
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
        }
        batches
    }

    /// Stop starting sends; retries go back to the outbox.
    pub(crate) fn stop_sending(&mut self) {
        self.draining = true;
    }

    fn pump_all(&mut self, now: Now, actions: &mut Vec<Action>) {
        let ids: Vec<ConversationId> = self.convs.keys().copied().collect();
        for id in ids {
            self.pump(id, now, actions);
        }
    }

    /// Moves the head of `conversation` on: gives it up, hands it back, or
    /// starts its send, as its timers and the in-flight limit allow.
    fn pump(&mut self, conversation: ConversationId, now: Now, actions: &mut Vec<Action>) {
        let limits = &self.limits;
        let Some(queue) = self.convs.get_mut(&conversation) else {
            return;
        };
        loop {
            let Some(head) = queue.front_mut() else {
                self.convs.remove(&conversation);
                return;
            };
            let State::Held {
                taken_at,
                not_before,
                ..
            } = head.state
            else {
                return;
            };
            if self.draining {
                return;
            }
            if let Some(reason) = give_up(limits, head, now) {
                let id = head.message_id;
                if let Some(Slot {
                    state: State::Held { delivery, .. },
                    ..
                }) = queue.pop_front()
                {
                    count_gave_up(&delivery);
                    self.in_memory -= 1;
                    let outcome = DeliveryOutcome::Failed { reason };
                    self.recent.insert(id, outcome.clone());
                    actions.push(Action::Settle { delivery, outcome });
                }
                continue;
            }
            if now.at >= taken_at + limits.hold_budget {
                // Too close to the outbox handing it out again: back to the
                // outbox, which returns it with a fresh visibility clock.
                let delay = not_before.saturating_duration_since(now.at);
                let away = State::Away {
                    due: now.at + delay,
                };
                if let State::Held { delivery, .. } = std::mem::replace(&mut head.state, away) {
                    self.in_memory -= 1;
                    actions.push(Action::Defer {
                        conversation,
                        delivery,
                        delay,
                    });
                }
                return;
            }
            if not_before > now.at || self.in_flight >= limits.max_in_flight {
                return;
            }
            let sending = State::Sending {
                delivery: match &head.state {
                    State::Held { delivery, .. } => delivery.clone(),
                    _ => return,
                },
                taken_at,
            };
            let State::Held { delivery, .. } = std::mem::replace(&mut head.state, sending) else {
                return;
            };
            head.attempts = head.attempts.saturating_add(1);
            self.in_flight += 1;
            actions.push(Action::Send {
                conversation,
                delivery,
                progress: head.progress.clone(),
                deadline: taken_at + limits.send_window,
            });
            return;
        }
    }
}

/// Counts a reply given up on, as the provider's refusals are counted:
/// `switchboard_social_send_failures_total{kind="gave_up"}`.
fn count_gave_up(delivery: &OutboundDelivery) {
    let platform = crate::send::platform_of(&delivery.message.to.scheme)
        .map_or("unknown", crate::Platform::as_str);
    metrics::counter!("switchboard_social_send_failures_total", "platform" => platform, "kind" => FailureKind::GaveUp.as_str())
        .increment(1);
}

/// Why `slot` is given up, when it is: too many attempts, or too old.
fn give_up(limits: &Limits, slot: &Slot, now: Now) -> Option<String> {
    let age = Duration::from_millis(now.wall_ms.saturating_sub(slot.created_at_ms));
    let too_old = age > limits.give_up_after;
    if slot.attempts < limits.max_attempts && !too_old {
        return None;
    }
    let last = slot.last_reason.as_deref().unwrap_or("no answer yet");
    Some(if slot.attempts == 0 {
        format!(
            "Not delivered: the reply waited more than {} to be sent.",
            human(limits.give_up_after)
        )
    } else {
        format!(
            "Not delivered: gave up after {} attempts over {}. Last error: {last}",
            slot.attempts,
            human(age)
        )
    })
}

/// A duration for people: "90 s", "45 min", "24 h".
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        format!("{secs} s")
    } else if secs < 2 * 3600 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h", secs / 3600)
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
