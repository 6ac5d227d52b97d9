//! What agents and supervisors can do, shared by the HTTP API and the
//! websocket. Each action checks who may do it and hands the change to the
//! routing state's scripts, which check it again atomically.

use crate::Inner;
use crate::error::ApiError;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_core::{ContactId, ConversationId, Timestamp};
use switchboard_store::{Answer, NamedReply, RouteRecord, StoreError};
use tracing::info;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Agent(String),
    Supervisor,
}

impl Caller {
    /// The agent's id, or `supervisor` (reserved: no agent has it).
    pub fn name(&self) -> &str {
        match self {
            Caller::Agent(id) => id,
            Caller::Supervisor => "supervisor",
        }
    }

    pub fn agent(&self) -> Result<&str, ApiError> {
        match self {
            Caller::Agent(id) => Ok(id),
            Caller::Supervisor => Err(ApiError::forbidden(
                "this is an agent's action; sign in with an agent token",
            )),
        }
    }

    pub fn supervisor(&self) -> Result<(), ApiError> {
        match self {
            Caller::Supervisor => Ok(()),
            Caller::Agent(_) => Err(ApiError::forbidden("supervisors only")),
        }
    }
}

fn now() -> u64 {
    Timestamp::now().as_millis()
}

pub fn contact_id(text: &str) -> Result<ContactId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found("unknown_contact", format!("no contact {text:?}")))
}

#[derive(Debug, Serialize)]
pub struct Held {
    pub contact_id: String,
    pub state: String,
    pub channel: String,
    pub queue: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub offer_until: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Inner {
    /// The routing record of a contact the caller may see: one they hold,
    /// or any for a supervisor.
    pub async fn visible(&self, caller: &Caller, id: &ContactId) -> Result<RouteRecord, ApiError> {
        let rec = self.state.route_record(id).await?;
        match (caller, rec) {
            (Caller::Supervisor, Some(rec)) => Ok(rec),
            (Caller::Agent(agent), Some(rec))
                if rec.agent == *agent && (rec.state == "offered" || rec.state == "assigned") =>
            {
                Ok(rec)
            }
            (Caller::Agent(_), Some(_)) => Err(ApiError::forbidden(format!(
                "contact {id} is not offered or assigned to you"
            ))),
            (_, None) => Err(ApiError::not_found(
                "unknown_contact",
                format!("no contact {id} in routing"),
            )),
        }
    }

    /// The routing record of a contact the caller may act on towards its
    /// customer (reply, type, note): one assigned to them (an offer is
    /// only seen until it is accepted), or any for a supervisor.
    pub async fn handled(&self, caller: &Caller, id: &ContactId) -> Result<RouteRecord, ApiError> {
        let rec = self.visible(caller, id).await?;
        if matches!(caller, Caller::Agent(_)) && rec.state != "assigned" {
            return Err(ApiError::conflict("not_assigned", "accept the offer first"));
        }
        Ok(rec)
    }

    pub async fn me(&self, agent: &str) -> Result<Value, ApiError> {
        let Some((rec, live)) = self.state.agent(agent).await? else {
            return Err(ApiError::not_found(
                "unknown_agent",
                format!("no agent {agent}"),
            ));
        };
        let mut held = Vec::new();
        for c in self.state.held(agent).await? {
            let Ok(id) = c.parse::<ContactId>() else {
                continue;
            };
            if let Some(r) = self.state.route_record(&id).await? {
                // Read after the set: closed, requeued or taken by someone
                // else in between, it is no longer this agent's, and is
                // neither listed nor followed.
                if r.agent != agent || (r.state != "offered" && r.state != "assigned") {
                    continue;
                }
                // Its live events come here while the agent is connected
                // here (a fresh session, or a resync).
                self.hub.hold(&c, agent);
                held.push(Held {
                    contact_id: c,
                    state: r.state,
                    channel: r.channel,
                    queue: r.queue,
                    offer_until: r.offer_until,
                });
            }
        }
        Ok(json!({
            "id": rec.id,
            "name": rec.name,
            "skills": rec.skills.iter().map(|(s, l)| (s.clone(), *l)).collect::<std::collections::BTreeMap<_, _>>(),
            "capacity": crate::frames::Loads::from(rec.capacity),
            "total_capacity": if rec.total_capacity == 0 { rec.capacity.iter().sum() } else { rec.total_capacity },
            "presence": live.presence,
            "reason": live.reason,
            "online": live.online_until > now(),
            "loads": crate::frames::Loads::from(live.loads),
            "held": held,
        }))
    }

    pub async fn set_presence(
        &self,
        agent: &str,
        presence: &str,
        reason: &str,
    ) -> Result<(), ApiError> {
        // Wrap-up is set by closing a contact; an agent ends it by going
        // available.
        if !["available", "away", "offline"].contains(&presence) {
            return Err(ApiError::bad_request(
                "invalid_presence",
                format!("presence must be available, away or offline, not {presence:?}"),
            ));
        }
        if reason.chars().count() > 200 {
            return Err(ApiError::bad_request(
                "invalid_presence",
                "reason: at most 200 characters",
            ));
        }
        let r = self
            .state
            .set_presence(agent, Some((presence, reason)), None, None)
            .await?;
        if r != "ok" {
            return Err(ApiError::refused(&r, ""));
        }
        info!(agent_id = agent, presence, "Presence changed.");
        // Offers pending for an agent who went away or offline are taken
        // back by the routing leader (within a sweep, ~0.25 s).
        Ok(())
    }

    /// Keeps the agent's session alive for the session TTL (`POST
    /// /me/heartbeat`).
    pub async fn heartbeat(&self, agent: &str) -> Result<u64, ApiError> {
        self.keep_session(agent, "http").await
    }

    /// Keeps `holder`'s session of the agent alive for the session TTL:
    /// `http` for heartbeats, the hub's name for this instance's sockets.
    pub async fn keep_session(&self, agent: &str, holder: &str) -> Result<u64, ApiError> {
        let until = now() + self.session_ttl().as_millis() as u64;
        let r = self.state.keep_session(agent, holder, until).await?;
        if r != "ok" {
            return Err(ApiError::refused(&r, ""));
        }
        Ok(until)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.settings.session_ttl_secs.max(3))
    }

    pub async fn answer(&self, agent: &str, contact: &str, accept: bool) -> Result<(), ApiError> {
        let id = contact_id(contact)?;
        let action = if accept {
            Answer::Accept
        } else {
            Answer::Decline
        };
        let r = self.state.answer(action, &id, agent, now(), 0).await?;
        if r != "ok" {
            return Err(ApiError::refused(&r, contact));
        }
        info!(
            contact_id = contact,
            agent_id = agent,
            accept,
            "Offer answered."
        );
        Ok(())
    }

    pub async fn close(
        &self,
        agent: &str,
        contact: &str,
        disposition: &str,
    ) -> Result<(), ApiError> {
        let id = contact_id(contact)?;
        if disposition.chars().count() > 64 {
            return Err(ApiError::bad_request(
                "invalid_disposition",
                "at most 64 characters",
            ));
        }
        let now = now();
        let wrap = self.routing.wrap_up_secs * 1000;
        let r = self
            .state
            .close(
                &id,
                agent,
                now,
                disposition,
                if wrap > 0 { now + wrap } else { 0 },
                Duration::from_secs(self.routing.retention_days * 86_400),
                Duration::from_secs(self.routing.sticky_memory_days * 86_400),
            )
            .await?;
        if r != "ok" {
            return Err(ApiError::refused(&r, contact));
        }
        info!(
            contact_id = contact,
            agent_id = agent,
            disposition,
            "Contact closed."
        );
        Ok(())
    }

    /// Sends a contact back to a queue (its own or another), optionally for
    /// one agent first.
    pub async fn transfer(
        &self,
        caller: &Caller,
        contact: &str,
        queue: Option<&str>,
        agent: Option<&str>,
    ) -> Result<(), ApiError> {
        let id = contact_id(contact)?;
        let rec = self.visible(caller, &id).await?;
        // A transfer is only of what someone accepted (the requeue script
        // checks it again, against a re-offer in between).
        if rec.state != "assigned" {
            return Err(ApiError::conflict(
                "not_assigned",
                "only an accepted contact can be transferred",
            ));
        }
        if let Some(q) = queue
            && self.plan.queue_index(q).is_none()
        {
            return Err(ApiError::bad_request(
                "unknown_queue",
                format!("no queue {q:?}"),
            ));
        }
        if let Some(a) = agent
            && self.state.agent(a).await?.is_none()
        {
            return Err(ApiError::not_found(
                "unknown_agent",
                format!("no agent {a:?}"),
            ));
        }
        if queue.is_none() && agent.is_none() {
            return Err(ApiError::bad_request(
                "invalid_transfer",
                "give a queue or an agent",
            ));
        }
        let now = now();
        let first = agent.map(|a| (a, now + self.routing.sticky_wait_secs.max(30) * 1000));
        // Another queue, its priority: the contact keeps its rule's part.
        let priority_of = |name: &str| {
            self.plan
                .queue_index(name)
                .and_then(|q| self.plan.queues.get(q))
                .map_or(0, |q| q.priority)
        };
        let to_queue = queue.map(|q| (q, priority_of(q).saturating_sub(priority_of(&rec.queue))));
        let r = self
            .state
            .requeue(&id, &rec.agent, now, to_queue, "transfer", first)
            .await?;
        if r != "ok" {
            return Err(ApiError::refused(&r, contact));
        }
        info!(contact_id = contact, agent_id = %rec.agent, to_queue = queue, to_agent_id = agent, "Contact transferred.");
        Ok(())
    }

    pub async fn note(
        &self,
        caller: &Caller,
        contact: &str,
        text: &str,
    ) -> Result<String, ApiError> {
        let id = contact_id(contact)?;
        self.handled(caller, &id).await?;
        self.check_text(text)?;
        let fields = self.contact_fields(&id).await?;
        let conv = conversation_of(&fields)?;
        Ok(self
            .conversations
            .note(&conv, &id, caller.name(), text)
            .await?)
    }

    /// Sends a reply to the customer on the channel the contact came in on.
    /// With a `client_id`, a retry (after a lost answer or a 503) is sent
    /// and logged once and answers the first attempt's ids.
    pub async fn reply(
        &self,
        agent: &str,
        contact: &str,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let id = contact_id(contact)?;
        if let Some(c) = client_id
            && !client_id_ok(c)
        {
            return Err(ApiError::bad_request(
                "invalid_client_id",
                "client_id: 1 to 64 characters of A-Za-z0-9._:-",
            ));
        }
        if let Err(refused) = self.handled(&Caller::Agent(agent.to_owned()), &id).await {
            // A retry of a reply this agent named while the contact was
            // theirs is finished though it has left them since (closed,
            // transferred): its first attempt may be queued already.
            let retry = client_id
                .filter(|_| matches!(refused.status, StatusCode::CONFLICT | StatusCode::FORBIDDEN));
            return match retry {
                Some(c) => self
                    .send_reply(agent, &id, text, Some((c, true)))
                    .await?
                    .ok_or(refused),
                None => Err(refused),
            };
        }
        self.send_reply(agent, &id, text, client_id.map(|c| (c, false)))
            .await?
            .ok_or_else(|| ApiError::conflict("refused", "the reply was not sent"))
    }

    /// Queues and logs a reply (`named`: its client's name, and whether
    /// only a retry of a reply named so is to be finished). `None`: only a
    /// retry, and no reply has that name.
    async fn send_reply(
        &self,
        agent: &str,
        id: &ContactId,
        text: &str,
        named: Option<(&str, bool)>,
    ) -> Result<Option<(String, String)>, ApiError> {
        self.check_text(text)?;
        let mut message = self
            .conversations
            .outbound_to(id, text)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => ApiError::conflict("refused", m),
                other => other.into(),
            })?;
        let channel = message.channel;
        let (seq, first) = match named {
            Some((c, only_retry)) => match self
                .conversations
                .reply_once(&mut message, agent, c, only_retry)
                .await?
            {
                NamedReply::Sent { seq, first } => (seq, first),
                NamedReply::Conflict(why) => return Err(ApiError::conflict("conflict", why)),
                NamedReply::Unknown => return Ok(None),
            },
            None => (self.conversations.reply(&message, agent).await?, true),
        };
        if first {
            metrics::counter!("switchboard_agent_replies_total", "channel" => channel.as_str())
                .increment(1);
        }
        info!(contact_id = %id, agent_id = agent, message_id = %message.message_id, "Reply handed to the outbox.");
        Ok(Some((message.message_id.to_string(), seq)))
    }

    fn check_text(&self, text: &str) -> Result<(), ApiError> {
        if text.trim().is_empty() {
            return Err(ApiError::bad_request("invalid_text", "text is empty"));
        }
        if text.len() > self.settings.max_text_bytes {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("text is longer than {} bytes", self.settings.max_text_bytes),
            ));
        }
        Ok(())
    }

    pub async fn contact_fields(
        &self,
        id: &ContactId,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        self.conversations
            .contact(id)
            .await?
            .ok_or_else(|| ApiError::not_found("unknown_contact", format!("no contact {id}")))
    }
}

/// A client's name for a reply: 1 to 64 characters of A-Za-z0-9._:-.
fn client_id_ok(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub fn conversation_of(
    fields: &std::collections::HashMap<String, String>,
) -> Result<ConversationId, ApiError> {
    fields
        .get("conversation")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ApiError::conflict("refused", "the contact has no conversation"))
}
