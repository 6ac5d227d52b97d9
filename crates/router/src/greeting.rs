//! What the hand-off does for a new contact besides queueing it: the first
//! acknowledgement, and outside its queue's business hours the after-hours
//! answer, a recorded explanation and, for `after_hours = "close"`, the
//! end of the contact (see docs/routing.md, "Business hours and automatic
//! answers").
//!
//! Every answer goes through [`Conversations::automatic_reply`], guarded
//! once per contact and key (`ack`, `after_hours`), so a routing-stream
//! entry handled twice (a slow instance, a crash between the steps) sends
//! nothing twice.

use crate::Router;
use crate::answers::Fill;
use crate::plan::{AfterHours, Plan, Queue};
use crate::rules::ContactFacts;
use metrics::counter;
use std::collections::HashMap;
use std::time::Duration;
use switchboard_core::{ChannelKind, ContactId};
use switchboard_store::{AutoReply, Conversations, RoutingState, StoreError};
use tracing::{info, warn};

/// The automatic-reply keys (`Conversations::automatic_reply`).
pub const ACK_KEY: &str = "ack";
pub const AFTER_HOURS_KEY: &str = "after_hours";

/// The disposition of a contact closed because its queue was closed.
pub const AFTER_HOURS_DISPOSITION: &str = "after_hours";

/// What the hand-off still has to do once the contact is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing: it waits (for an agent, or for the opening).
    Wait,
    /// End it (`after_hours = "close"`).
    End,
}

fn attribute(facts: &ContactFacts, name: &str) -> bool {
    facts.attributes.get(name).is_some_and(|v| v == "true")
}

/// A flag among a stored contact's attributes (`fields`, as
/// `RoutingState::contact_fields` reads them): `"true"`.
pub(crate) fn stored_flag(fields: &HashMap<String, String>, name: &str) -> bool {
    fields
        .get("attributes")
        .and_then(|a| serde_json::from_str::<HashMap<String, String>>(a).ok())
        .is_some_and(|a| a.get(name).is_some_and(|v| v == "true"))
}

impl Router {
    /// Before a new contact is queued: its automatic answers, and the
    /// after-hours decision when its queue is closed at `now`.
    pub(crate) async fn greet(
        &self,
        contact: &ContactId,
        fields: &HashMap<String, String>,
        facts: &ContactFacts,
        queue_ix: usize,
        now: u64,
    ) -> Result<Then, StoreError> {
        let queue = &self.plan.queues[queue_ix];
        let channel = facts.channel.unwrap_or(ChannelKind::Chat);
        let closed = !queue.is_open(now);
        let answers = &self.plan.answers;
        let ack = answers.acknowledgement.pick(channel, &facts.language);
        if !closed && ack.is_none() {
            return Ok(Then::Wait);
        }
        // An offline form is a message left for later: it waits, whatever
        // the queue says.
        let end = closed && queue.after_hours == AfterHours::Close && !attribute(facts, "offline");
        let then = if end { Then::End } else { Then::Wait };
        if let Some(known) = self.state.route_record(contact).await? {
            // Handed off before (this entry is handled again): the answers
            // went out then. A contact still waiting is ended as planned
            // (one closed already has its conversation ended by `queue`).
            return Ok(if end && known.state == "waiting" {
                Then::End
            } else {
                Then::Wait
            });
        }
        // Auto replies, bounces and bulk mail never become contacts; mail
        // that asks for no automatic answer (X-Auto-Response-Suppress, bulk
        // routed anyway) is marked so by its channel.
        let suppressed = attribute(facts, "no_auto_answer");
        let Opening {
            opens,
            opens_at,
            reply_by,
            timezone,
        } = opening(queue, now);
        let name = fields.get("customer_name").map_or("", String::as_str);
        let fill = Fill {
            name: "",
            opens_at: &opens_at,
            reply_by: &reply_by,
            timezone,
        };
        let conversations = Conversations::new(self.state.store().clone());
        let after = if closed {
            answers.after_hours.pick(channel, &facts.language)
        } else {
            None
        };
        if closed {
            let answered = match after {
                None => format!("no automatic answer is configured for {}", channel.as_str()),
                Some(_) if suppressed => {
                    "no automatic answer: the contact is marked no_auto_answer".to_owned()
                }
                Some(t) => {
                    let text = answers.render(t, name, fill.clone());
                    let outcome = send(
                        &conversations,
                        contact,
                        AFTER_HOURS_KEY,
                        &text,
                        answers.per_customer_hour,
                    )
                    .await;
                    format!("automatic answer {}", outcome.replace('_', " "))
                }
            };
            let action = if end {
                AfterHours::Close
            } else {
                AfterHours::Wait
            };
            counter!("switchboard_router_after_hours_total",
                "queue" => queue.name.clone(), "action" => action.as_str())
            .increment(1);
            let until = match opens {
                Some(_) => format!("closed until {opens_at} ({timezone})"),
                None => "closed, with no opening in sight".to_owned(),
            };
            let then_text = if end {
                format!("the contact is closed (disposition {AFTER_HOURS_DISPOSITION})")
            } else {
                "the contact waits for the opening".to_owned()
            };
            let detail = format!("queue {} is {until}; {answered}; {then_text}", queue.name);
            info!(contact_id = %contact, queue = %queue.name, action = action.as_str(), "Contact arrived outside business hours.");
            let record = serde_json::json!({
                "at": now,
                "kind": "after_hours",
                "queue": queue.name,
                "opens_at": opens_at,
                "timezone": timezone,
                "action": action.as_str(),
                "detail": detail,
            });
            if let Err(error) = self
                .state
                .record_decision(contact, &record.to_string())
                .await
            {
                warn!(%error, contact_id = %contact, "Could not record the after-hours decision.");
            }
        }
        if let Some(t) = ack {
            let outcome = if suppressed {
                "suppressed"
            } else if after.is_some() {
                // One automatic answer is enough: the after-hours one.
                "after_hours"
            } else {
                let text = answers.render(t, name, fill);
                send(
                    &conversations,
                    contact,
                    ACK_KEY,
                    &text,
                    answers.per_customer_hour,
                )
                .await
            };
            counter!("switchboard_router_acknowledgements_total",
                "channel" => channel.as_str(), "outcome" => outcome)
            .increment(1);
        }
        Ok(then)
    }

    /// After the contact is queued: ends it when its queue was closed and
    /// says `after_hours = "close"` (only while it is still waiting, so a
    /// contact an agent took meanwhile is left alone).
    /// `queue`: the queue the contact was placed in, where it must still
    /// wait to be ended (this entry handled again after a transfer to an
    /// open queue: that one decides).
    pub(crate) async fn after_queueing(
        &self,
        contact: &ContactId,
        then: Then,
        queue: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        if then != Then::End {
            return Ok(());
        }
        let outcome = self
            .state
            .end_if_waiting(
                contact,
                now,
                AFTER_HOURS_DISPOSITION,
                Duration::from_secs(self.config.retention_days.saturating_mul(86_400).max(1)),
                None,
                Some(queue),
            )
            .await?;
        info!(contact_id = %contact, outcome = %outcome, "Contact closed outside business hours.");
        Ok(())
    }
}

/// What is left of a closing's work on a contact ([`close_after_hours`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Nothing.
    Done,
    /// Its end failed: [`end_after_hours`] again.
    End,
    /// The contact could not be read: all of [`close_after_hours`] again.
    Again,
}

/// When a closed queue opens next, as the answers' placeholders show it.
pub(crate) struct Opening<'a> {
    /// `None`: no opening within the schedule's horizon.
    pub opens: Option<u64>,
    pub opens_at: String,
    pub reply_by: String,
    pub timezone: &'a str,
}

pub(crate) fn opening(queue: &Queue, now: u64) -> Opening<'_> {
    let schedule = queue.schedule.as_deref();
    let format = |t: u64| match schedule {
        Some(s) => s.format_local(t),
        None => crate::hours::format_in(&jiff::tz::TimeZone::UTC, t),
    };
    let opens = schedule.map_or(Some(now), |s| s.next_opening(now));
    let reply_by = queue.due(
        opens.unwrap_or(now),
        queue.service_level_secs.saturating_mul(1000),
    );
    Opening {
        opens,
        opens_at: opens.map(format).unwrap_or_default(),
        reply_by: if opens.is_some() {
            reply_by.map(format).unwrap_or_default()
        } else {
            String::new()
        },
        timezone: schedule.map_or("UTC", |s| s.timezone.as_str()),
    }
}

/// A contact waiting in a closed queue that says `after_hours = "close"`
/// (it waited when the queue closed, or came into it while closed): the
/// after-hours answer (when one is configured for its channel and
/// language, and the message did not ask for none), then the end of the
/// contact. An offline form waits, as at arrival; so does a contact no
/// longer waiting (the hand-off ended it already). Returns what happened,
/// for the routing record, and what is left to try again ([`Closing`]),
/// or `None` when nothing was done.
///
/// `token` is the leader's lease token: a leader that lost the lease (it
/// was paused, and may have missed the contact's transfer to an open
/// queue) neither answers nor ends the contact.
pub(crate) async fn close_after_hours(
    state: &RoutingState,
    plan: &Plan,
    contact: &ContactId,
    queue_ix: usize,
    now: u64,
    retention: Duration,
    token: &str,
) -> Option<(String, Closing)> {
    let queue = &plan.queues[queue_ix];
    let read = async {
        let waiting = state
            .route_record(contact)
            .await?
            .is_some_and(|r| r.state == "waiting");
        let leading = state.leader().await?.as_deref() == Some(token);
        Ok::<_, StoreError>((waiting && leading, state.contact_fields(contact).await?))
    };
    let fields = match read.await {
        Ok((true, f)) => f,
        Ok((false, _)) => return None,
        Err(error) => {
            warn!(%error, contact_id = %contact, "Could not read a contact to close after hours.");
            // Tried again whole (the answer too): the closing is noticed
            // once, and the contact would wait for the next opening.
            return Some((
                format!(
                    "queue {} closed; the contact could not be read: tried again",
                    queue.name
                ),
                Closing::Again,
            ));
        }
    };
    let flag = |name: &str| stored_flag(&fields, name);
    if flag("offline") {
        return None;
    }
    let channel = fields
        .get("channel")
        .and_then(|c| c.parse().ok())
        .unwrap_or(ChannelKind::Chat);
    let language = fields.get("language").map_or("", String::as_str);
    let name = fields.get("customer_name").map_or("", String::as_str);
    let o = opening(queue, now);
    let answered = match plan.answers.after_hours.pick(channel, language) {
        None => format!("no automatic answer is configured for {}", channel.as_str()),
        Some(_) if flag("no_auto_answer") => {
            "no automatic answer: the contact is marked no_auto_answer".to_owned()
        }
        Some(t) => {
            let fill = Fill {
                name: "",
                opens_at: &o.opens_at,
                reply_by: &o.reply_by,
                timezone: o.timezone,
            };
            let text = plan.answers.render(t, name, fill);
            let conversations = Conversations::new(state.store().clone());
            let outcome = send(
                &conversations,
                contact,
                AFTER_HOURS_KEY,
                &text,
                plan.answers.per_customer_hour,
            )
            .await;
            format!("automatic answer {}", outcome.replace('_', " "))
        }
    };
    let (ended, left) = match end_after_hours(state, contact, now, retention, token).await {
        Ok(outcome) => (outcome, Closing::Done),
        Err(error) => {
            warn!(%error, contact_id = %contact, "Could not close a contact after hours; tried again shortly.");
            ("failed (tried again)".to_owned(), Closing::End)
        }
    };
    counter!("switchboard_router_after_hours_total",
        "queue" => queue.name.clone(), "action" => "closed_at_closing")
    .increment(1);
    info!(contact_id = %contact, queue = %queue.name, outcome = %ended, "Queue closed: waiting contact closed after hours.");
    Some((
        format!(
            "queue {} is closed (until {} {}) while the contact waits; {answered}; ended: {ended} (disposition {AFTER_HOURS_DISPOSITION})",
            queue.name, o.opens_at, o.timezone
        ),
        left,
    ))
}

/// The after-hours end of a contact the leader found waiting in a closed
/// queue (its first try, or again after one failed): abandons it if it
/// still waits, and ends its conversation (again) if routing closed it;
/// either is harmless when done already. The store's outcome
/// (`abandoned`, `already_closed`, `not_waiting`: offered meanwhile;
/// `fenced`: `token` no longer holds the lease).
pub(crate) async fn end_after_hours(
    state: &RoutingState,
    contact: &ContactId,
    now: u64,
    retention: Duration,
    token: &str,
) -> Result<String, StoreError> {
    state
        .end_if_waiting(
            contact,
            now,
            AFTER_HOURS_DISPOSITION,
            retention,
            Some(token),
            None,
        )
        .await
}

/// Sends one automatic answer: `sent`, `already_sent`, `limited` (the
/// customer had `per_hour` this hour) or `failed` (logged; never fails the
/// hand-off).
async fn send(
    conversations: &Conversations,
    contact: &ContactId,
    key: &str,
    text: &str,
    per_hour: u32,
) -> &'static str {
    match conversations
        .automatic_reply(contact, key, text, per_hour)
        .await
    {
        Ok(outcome) => {
            if outcome == AutoReply::Limited {
                info!(contact_id = %contact, key, "No automatic answer: the customer had their allowance this hour.");
            }
            outcome.as_str()
        }
        Err(error) => {
            warn!(%error, contact_id = %contact, key, "Could not send an automatic answer.");
            "failed"
        }
    }
}
