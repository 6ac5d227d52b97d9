//! The routing state in Redis: agents, waiting contacts, offers and the
//! routing lease, all under one hash tag (`<prefix>:{r}`).
//!
//! Every change is one Lua script (`lua/route/*.lua`) that checks and
//! writes atomically and appends an event to the routing event stream. The
//! invariants live in the scripts, not in any instance's memory:
//!
//! - a contact is offered only while it is `waiting`, so never to two
//!   agents at once;
//! - an offer is written only if the agent's per-channel and total load
//!   stay within capacity and the offering instance holds the lease
//!   (fencing token), so a paused instance that wakes up with a stale view
//!   is refused;
//! - load counters change only together with the set of contacts the agent
//!   holds, so each agent's load equals what it really holds.

use crate::RedisConn;
use crate::{Store, StoreError};
use redis::Script;
use std::collections::HashMap;
use std::time::Duration;
use switchboard_core::{ChannelKind, ContactId};

/// What an end keeps and for how long: the ended record (the retention),
/// the customer's agent when an assigned contact ends (sticky memory; zero
/// for none), and `only_in` (`waiting` to end only a waiting contact).
struct Ends<'a> {
    retention: Duration,
    sticky_memory: Duration,
    only_in: &'a str,
    /// The routing leader's lease token for an end it decided ('' for
    /// none): refused (`fenced`) once another instance leads.
    fence: &'a str,
    /// With `only_in = "waiting"`: the queue it must still wait in ('' for
    /// any).
    queue: &'a str,
}

/// How long an ended contact's routing record lives: the retention, and a
/// day more. The retention sweep deletes it (and takes it out of its
/// person's index, which the record names) once the retention has passed;
/// the expiry is a backstop should no sweep run, and must not beat it.
fn record_expiry(retention: Duration) -> u64 {
    retention.as_secs().max(1) + 86_400
}

/// Routing events kept in the stream (approximate trim). Instances read it
/// live; a reader that falls this far behind reloads a snapshot.
pub const EVENTS_MAXLEN: u64 = 100_000;

macro_rules! route_script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("lua/route/common.lua"),
            "\n",
            include_str!(concat!("lua/route/", $name, ".lua"))
        ))
    };
}

struct Scripts {
    enqueue: Script,
    offer: Script,
    answer: Script,
    close: Script,
    presence: Script,
    requeue: Script,
    abandon: Script,
    lease: Script,
    agent: Script,
    retire: Script,
    lapse: Script,
}

/// An agent's profile as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub skills: Vec<(String, u8)>,
    /// Per channel: chat, email, social, voice.
    pub capacity: [u32; 4],
    /// 0: the sum of the channels.
    pub total_capacity: u32,
    /// SHA-256 of the agent's token, hex.
    pub token_sha256: String,
}

/// An agent's changing state, as stored and as carried by events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentLive {
    pub presence: String,
    pub reason: String,
    pub online_until: u64,
    pub idle_since: u64,
    pub last_offer_at: u64,
    pub wrap_until: u64,
    pub loads: [u32; 4],
    pub ver: u64,
}

/// A contact in the routing state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRecord {
    pub contact: String,
    /// `waiting`, `offered`, `assigned` or `closed`.
    pub state: String,
    pub queue: String,
    pub channel: String,
    pub priority: i32,
    pub since: u64,
    pub queued_at: u64,
    pub rule: String,
    pub source: String,
    pub customer: String,
    pub sticky: String,
    pub sticky_until: u64,
    /// `sticky` is the customer's last agent (`sticky_from = memory`), not
    /// the target of a transfer.
    pub sticky_remembered: bool,
    pub excluded: Vec<String>,
    /// When the latest agent was excluded, ms (0: never, or unknown).
    pub excluded_at: u64,
    pub agent: String,
    pub offer_until: u64,
    pub fields: HashMap<String, String>,
}

/// A contact to put in the routing state.
#[derive(Debug, Clone)]
pub struct NewRoute<'a> {
    pub contact: &'a ContactId,
    pub queue: &'a str,
    pub channel: ChannelKind,
    pub priority: i32,
    pub since: u64,
    pub now: u64,
    pub rule: &'a str,
    pub source: &'a str,
    pub customer: &'a str,
    pub sticky: Option<(&'a str, u64)>,
    /// Without `sticky`: the deadline to wait for the customer's last agent
    /// if Redis remembers one (looked up in the same script, no extra round
    /// trip); `None` not to look.
    pub sticky_memory: Option<u64>,
    /// The person across channels (`CustomerIdentity::person_key`); empty
    /// when unknown.
    pub person: &'a str,
}

/// An offer to write.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    pub token: &'a str,
    pub contact: &'a ContactId,
    pub agent: &'a str,
    pub now: u64,
    pub until: u64,
    pub auto_accept: bool,
    pub interrupt_voice: &'a str,
    pub explanation: &'a str,
    pub step: usize,
    /// How long a decline or miss keeps the agent from the contact,
    /// counted from its latest exclusion; zero: as long as it waits.
    pub exclusion: Duration,
}

/// What an agent does with an offer, or what happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Decline,
    /// The deadline passed (counts as missed).
    Expire,
    /// The agent's session ended, or they went away or offline (refused
    /// with `online` otherwise).
    Revoke,
    /// The agent missed it on the channel itself (their phone rang out):
    /// an expiry before the deadline, counted as missed.
    Miss,
    /// The channel cannot reach the agent (a call for an agent with no
    /// phone): a decline (the agent is left out of this contact) that
    /// neither counts as missed nor ends the agent's run of missed offers.
    Pass,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Answer::Accept => "accept",
            Answer::Decline => "decline",
            Answer::Expire => "expire",
            Answer::Revoke => "revoke",
            Answer::Miss => "miss",
            Answer::Pass => "pass",
        }
    }
}

/// One entry of the routing event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub id: String,
    /// `enqueued`, `offered`, `assigned`, `accepted`, `declined`, `expired`,
    /// `revoked`, `closed`, `requeued`, `abandoned`, `presence`, `agent`.
    pub kind: String,
    pub contact: Option<String>,
    pub agent: Option<String>,
    pub live: Option<AgentLive>,
    /// The contact's routing record after the change, for the events after
    /// which it may be waiting again (`enqueued`, `requeued`, `declined`,
    /// `expired`, `revoked`); `None` for others and for events written
    /// before records were carried.
    pub record: Option<RouteRecord>,
    pub fields: HashMap<String, String>,
}

impl RouteEvent {
    /// The event's number in the stream (1, 2, 3, …; 0 for events written
    /// before numbering). A jump means events were trimmed unread.
    pub fn number(&self) -> u64 {
        self.fields
            .get("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The routing state.
#[derive(Clone)]
pub struct RoutingState {
    store: Store,
    scripts: std::sync::Arc<Scripts>,
    /// The channels that may interrupt an agent's call (`routing.
    /// interrupt_voice`, comma-separated): an offer of another channel
    /// accepted while the agent is on a call is taken back instead.
    interrupt_voice: std::sync::Arc<str>,
}

impl std::fmt::Debug for RoutingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingState").finish_non_exhaustive()
    }
}

fn channel_index(c: &str) -> Option<usize> {
    ["chat", "email", "social", "voice"]
        .iter()
        .position(|x| *x == c)
}

fn parse_loads(s: &str) -> [u32; 4] {
    let mut out = [0; 4];
    for (i, v) in s.split(',').take(4).enumerate() {
        out[i] = v.parse().unwrap_or(0);
    }
    out
}

pub(crate) fn live_from(map: &HashMap<String, String>) -> AgentLive {
    let n = |k: &str| map.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let loads = match map.get("loads") {
        Some(l) => parse_loads(l),
        None => {
            let mut out = [0; 4];
            for (i, c) in ["chat", "email", "social", "voice"].iter().enumerate() {
                out[i] = map
                    .get(&format!("l:{c}"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            out
        }
    };
    AgentLive {
        presence: map
            .get("presence")
            .cloned()
            .unwrap_or_else(|| "offline".into()),
        // Events carry the agent's as `away_reason` (their own `reason` is
        // why a contact was requeued); the agent's hash and older events
        // as `reason`.
        reason: map
            .get("away_reason")
            .or_else(|| map.get("reason"))
            .cloned()
            .unwrap_or_default(),
        online_until: n("online_until"),
        idle_since: n("idle_since"),
        last_offer_at: n("last_offer_at"),
        wrap_until: n("wrap_until"),
        loads,
        ver: n("ver"),
    }
}

impl RoutingState {
    pub fn new(store: Store) -> RoutingState {
        RoutingState {
            store,
            scripts: std::sync::Arc::new(Scripts {
                enqueue: route_script!("enqueue"),
                offer: route_script!("offer"),
                answer: route_script!("answer"),
                close: route_script!("close"),
                presence: route_script!("presence"),
                requeue: route_script!("requeue"),
                abandon: route_script!("abandon"),
                lease: route_script!("lease"),
                agent: route_script!("agent"),
                retire: route_script!("retire"),
                lapse: route_script!("lapse"),
            }),
            interrupt_voice: "".into(),
        }
    }

    /// The channels that may interrupt a call (`routing.interrupt_voice`,
    /// comma-separated); none unless set.
    #[must_use]
    pub fn with_interrupt_voice(mut self, csv: &str) -> RoutingState {
        self.interrupt_voice = csv.into();
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn conn(&self) -> RedisConn {
        self.store.conn()
    }

    /// A connection of its own for blocking reads of the event stream.
    pub fn event_reader(&self, block: Duration) -> Result<RedisConn, StoreError> {
        self.store.dedicated_connection(block)
    }

    pub async fn upsert_agent(
        &self,
        agent: &AgentRecord,
        origin: &str,
    ) -> Result<bool, StoreError> {
        let k = self.store.keys();
        let skills: HashMap<&str, u8> =
            agent.skills.iter().map(|(s, l)| (s.as_str(), *l)).collect();
        let skills = serde_json::to_string(&skills).unwrap_or_else(|_| "{}".into());
        let cap = serde_json::to_string(&agent.capacity).unwrap_or_else(|_| "[0,0,0,0]".into());
        let mut inv = self.scripts.agent.prepare_invoke();
        inv.key(k.route_agent(&agent.id))
            .key(k.route("agents"))
            .key(k.route("events"))
            .key(k.route(&format!("token:{}", agent.token_sha256)))
            .arg(&agent.id)
            .arg(&agent.name)
            .arg(skills)
            .arg(cap)
            .arg(agent.total_capacity)
            .arg(&agent.token_sha256)
            .arg(EVENTS_MAXLEN)
            .arg(origin)
            .arg(k.route("token:"));
        let mut conn = self.conn();
        let reply: redis::Value = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        match reply {
            redis::Value::Int(1) => Ok(true),
            redis::Value::Int(_) => Ok(false),
            _ => Err(StoreError::Conflict(format!(
                "agent {}: another agent has the same token",
                agent.id
            ))),
        }
    }

    /// Retires an agent the configuration created (`origin` config) and no
    /// longer names: its token stops signing in, it goes offline and gets
    /// no work. True when retired; false for an agent of the API.
    pub async fn retire_agent(&self, id: &str) -> Result<bool, StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.retire.prepare_invoke();
        inv.key(k.route_agent(id))
            .key(k.route("events"))
            .arg(id)
            .arg(k.route("token:"))
            .arg(EVENTS_MAXLEN)
            .arg(switchboard_core::Timestamp::now().as_millis());
        let mut conn = self.conn();
        let outcome: String = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(outcome == "ok")
    }

    /// Records that `id`'s session has ended (at `now`, ms) when it held
    /// nothing, so no other script did: its occupancy goes offline.
    pub async fn record_lapse(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.lapse.prepare_invoke();
        inv.key(k.route_agent(id))
            .key(k.route("events"))
            .arg(id)
            .arg(now);
        let mut conn = self.conn();
        let _: String = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// The agent a token (its SHA-256, hex) belongs to.
    pub async fn agent_by_token(&self, digest: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route(&format!("token:{digest}"));
        self.store
            .bounded(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    /// Keeps a one-time websocket ticket for `agent` for `ttl`: `digest` is
    /// the ticket's SHA-256 (the ticket itself is never stored), and
    /// `token_digest` the digest of the token it was issued for, so that
    /// the session it opens follows that token (and a revoked token's
    /// ticket opens nothing).
    pub async fn issue_ticket(
        &self,
        digest: &str,
        agent: &str,
        token_digest: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route(&format!("ticket:{digest}"));
        self.store
            .bounded(
                redis::cmd("SET")
                    .arg(key)
                    .arg(format!("{token_digest}|{agent}"))
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64)
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    /// Takes the ticket whose SHA-256 is `digest`, once: the digest of the
    /// token it was issued for and its agent, or `None` when it is unknown,
    /// used or expired.
    pub async fn redeem_ticket(
        &self,
        digest: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route(&format!("ticket:{digest}"));
        let value: Option<String> = self
            .store
            .bounded(redis::cmd("GETDEL").arg(key).query_async(&mut conn))
            .await?;
        Ok(value.and_then(|v| {
            v.split_once('|')
                .map(|(token, agent)| (token.to_owned(), agent.to_owned()))
        }))
    }

    /// Puts a new contact in the routing state; false when it was known.
    pub async fn enqueue(&self, r: &NewRoute<'_>) -> Result<bool, StoreError> {
        let k = self.store.keys();
        let (sticky, sticky_until) = r.sticky.unwrap_or(("", 0));
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(k.route_contact(r.contact))
            .key(k.route("waiting"))
            .key(k.route("events"))
            .arg(r.contact.to_string())
            .arg(r.queue)
            .arg(r.channel.as_str())
            .arg(r.priority)
            .arg(r.since)
            .arg(r.now)
            .arg(r.rule)
            .arg(r.source)
            .arg(r.customer)
            .arg(sticky)
            .arg(sticky_until)
            .arg(EVENTS_MAXLEN)
            .arg(r.person)
            .arg(r.sticky_memory.map(|t| t.to_string()).unwrap_or_default());
        let mut conn = self.conn();
        let queued: i64 = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(queued == 1)
    }

    /// Writes an offer if every invariant holds. `Ok("ok")` or the reason it
    /// was refused (`fenced`, `not_waiting`, `at_capacity`, …).
    pub async fn offer(&self, o: &Offer<'_>) -> Result<String, StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.offer.prepare_invoke();
        inv.key(k.route("leader"))
            .key(k.route_contact(o.contact))
            .key(k.route_agent(o.agent))
            .key(k.route_held(o.agent))
            .key(k.route("waiting"))
            .key(k.route("offers"))
            .key(k.route("events"))
            .key(k.route_decisions(o.contact))
            .arg(o.token)
            .arg(o.contact.to_string())
            .arg(o.agent)
            .arg(o.now)
            .arg(o.until)
            .arg(if o.auto_accept { "1" } else { "0" })
            .arg(o.interrupt_voice)
            .arg(o.explanation)
            .arg(EVENTS_MAXLEN)
            .arg(o.step)
            .arg(o.exclusion.as_millis().to_string());
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    /// Accept, decline, expire or revoke an offer. `Ok("ok")`, or
    /// `not_offered` / `not_due`.
    pub async fn answer(
        &self,
        action: Answer,
        contact: &ContactId,
        agent: &str,
        now: u64,
        missed_before_away: u32,
    ) -> Result<String, StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.answer.prepare_invoke();
        inv.key(k.route_contact(contact))
            .key(k.route_agent(agent))
            .key(k.route_held(agent))
            .key(k.route("waiting"))
            .key(k.route("offers"))
            .key(k.route("events"))
            .arg(action.as_str())
            .arg(contact.to_string())
            .arg(agent)
            .arg(now)
            .arg(missed_before_away)
            .arg(EVENTS_MAXLEN)
            .arg(&*self.interrupt_voice);
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    /// Closes an assigned contact. `Ok("ok")` or `not_assigned` (also for
    /// a contact this agent closed already: the API's documented 409 for a
    /// second close; its conversation is ended again all the same).
    #[allow(clippy::too_many_arguments)]
    pub async fn close(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        disposition: &str,
        wrap_until: u64,
        retention: Duration,
        sticky_memory: Duration,
    ) -> Result<String, StoreError> {
        // The conversation ends first, while the agent still holds the
        // contact: a message the customer sends from now on starts a new
        // contact (routed; sticky routing prefers this agent) instead of
        // joining one that is being closed, and a crash between the two
        // steps leaves nothing that a retried close cannot finish.
        let (state, holder) = self.state_and_agent(contact).await?;
        let ended = state.as_deref() == Some("assigned") && holder.as_deref() == Some(agent);
        if ended {
            // Not closed unless it ended: closed with its conversation
            // still the customer's open one, the customer's next messages
            // would join a contact routing is done with, and never be
            // routed. The error goes back (503): a retried close does both.
            self.try_end_conversation(contact).await?;
        }
        let k = self.store.keys();
        let mut inv = self.scripts.close.prepare_invoke();
        inv.key(k.route_contact(contact))
            .key(k.route_agent(agent))
            .key(k.route_held(agent))
            .key(k.route("events"))
            .arg(contact.to_string())
            .arg(agent)
            .arg(now)
            .arg(disposition)
            .arg(wrap_until)
            .arg(record_expiry(retention))
            .arg(sticky_memory.as_secs())
            .arg(EVENTS_MAXLEN);
        let mut conn = self.conn();
        let outcome: String = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        // On a retry of a close whose answer was lost (a timeout after the
        // script ran), the contact is this agent's and closed.
        let closed_by_agent = outcome == "ok"
            || (outcome == "not_assigned"
                && self.state_and_agent(contact).await?
                    == (Some("closed".to_owned()), Some(agent.to_owned())));
        if closed_by_agent && !ended {
            // A retry (the first attempt ended it already), or an accept
            // that landed between the read above and the script: either
            // way the conversation must end, or the customer's next
            // messages join a closed contact. Its error goes back (503),
            // and the retried close ends it.
            self.try_end_conversation(contact).await?;
        }
        if ended && !closed_by_agent {
            self.reopen_if_live(contact).await;
        }
        Ok(outcome)
    }

    /// After a close that routing refused although the conversation was
    /// already ended: if the contact lives on (taken from the agent between
    /// the check and the close: a transfer, a requeue), so must its
    /// conversation. If it was closed instead (the channel ended it, or the
    /// next holder closed it), the conversation stays ended; a close that
    /// comes while reopening is caught by looking again afterwards.
    async fn reopen_if_live(&self, contact: &ContactId) {
        let live = |state: &Result<(Option<String>, Option<String>), StoreError>| matches!(state, Ok((Some(s), _)) if matches!(s.as_str(), "waiting" | "offered" | "assigned"));
        if !live(&self.state_and_agent(contact).await) {
            return;
        }
        if let Err(e) = crate::Conversations::new(self.store.clone())
            .reopen(contact)
            .await
        {
            metrics::counter!("switchboard_store_conversation_end_errors_total").increment(1);
            tracing::warn!(contact_id = %contact, error = %e, "Could not reopen the conversation of a close that was refused.");
            return;
        }
        if matches!(self.state_and_agent(contact).await, Ok((Some(s), _)) if s == "closed") {
            self.end_conversation(contact).await;
        }
    }

    /// After routing closed or abandoned `contact`: its conversation is no
    /// longer the customer's open one (a separate step: the conversation
    /// lives in its partition, routing state under the routing tag). A
    /// failure is logged and counted; the customer's next message then still
    /// joins the closed conversation, as before this step existed.
    async fn end_conversation(&self, contact: &ContactId) {
        let _ = self.try_end_conversation(contact).await;
    }

    /// [`Self::end_conversation`], with its error (counted and logged).
    async fn try_end_conversation(&self, contact: &ContactId) -> Result<(), StoreError> {
        let ended = crate::Conversations::new(self.store.clone())
            .end(contact)
            .await;
        if let Err(e) = &ended {
            metrics::counter!("switchboard_store_conversation_end_errors_total").increment(1);
            tracing::warn!(contact_id = %contact, error = %e, "Could not end the contact's conversation.");
        }
        ended
    }

    /// The customer went away or the channel ended the contact: a waiting
    /// or offered contact is abandoned (never offered again), an assigned
    /// one closed with `disposition` and its agent put in wrap-up until
    /// `wrap_until` (0: none). One routing does not know yet (not handed
    /// off) is abandoned too: its closed record makes the later hand-off a
    /// no-op. `Ok` with `abandoned`, `closed` or `already_closed`.
    pub async fn end_by_channel(
        &self,
        contact: &ContactId,
        now: u64,
        disposition: &str,
        wrap_until: u64,
        retention: Duration,
        sticky_memory: Duration,
    ) -> Result<String, StoreError> {
        let ends = Ends {
            retention,
            sticky_memory,
            only_in: "",
            fence: "",
            queue: "",
        };
        self.end_contact(contact, now, disposition, wrap_until, ends)
            .await
    }

    /// Abandons `contact` only while it is waiting (not offered, not
    /// assigned, not yet handed to routing): for ends decided before an
    /// offer may have been made (a queue closed for the night), and, with
    /// `queue`, only while it waits in that queue (a transfer to another
    /// meanwhile keeps it). `Ok` with `abandoned`, `not_waiting` or
    /// `already_closed`.
    pub async fn end_if_waiting(
        &self,
        contact: &ContactId,
        now: u64,
        disposition: &str,
        retention: Duration,
        fence: Option<&str>,
        queue: Option<&str>,
    ) -> Result<String, StoreError> {
        let ends = Ends {
            retention,
            sticky_memory: Duration::ZERO,
            only_in: "waiting",
            fence: fence.unwrap_or_default(),
            queue: queue.unwrap_or_default(),
        };
        self.end_contact(contact, now, disposition, 0, ends).await
    }

    /// Closes `contact` only while it is assigned to `agent` (the routing
    /// leader's end of a call whose hangup was lost, decided on a read
    /// that may be old): `closed`, or why not (`not_assigned`, `changed`:
    /// another agent has it, `already_closed`). The conversation ends
    /// after routing's close.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_if_assigned_to(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        disposition: &str,
        wrap_until: u64,
        retention: Duration,
        sticky_memory: Duration,
    ) -> Result<String, StoreError> {
        let ends = Ends {
            retention,
            sticky_memory,
            only_in: "assigned",
            fence: "",
            queue: "",
        };
        let outcome = self
            .abandon(contact, agent, now, disposition, wrap_until, &ends)
            .await?;
        if outcome == "closed" {
            self.try_end_conversation(contact).await?;
        }
        Ok(outcome)
    }

    /// One run of `abandon.lua` for `contact` as held by `agent`.
    async fn abandon(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        disposition: &str,
        wrap_until: u64,
        ends: &Ends<'_>,
    ) -> Result<String, StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.abandon.prepare_invoke();
        inv.key(k.route_contact(contact))
            .key(k.route("waiting"))
            .key(k.route("offers"))
            .key(k.route("events"))
            .key(k.route_agent(agent))
            .key(k.route_held(agent))
            .key(k.route("leader"))
            .arg(contact.to_string())
            .arg(agent)
            .arg(now)
            .arg(disposition)
            .arg(wrap_until)
            .arg(record_expiry(ends.retention))
            .arg(EVENTS_MAXLEN)
            .arg(ends.only_in)
            .arg(ends.sticky_memory.as_secs())
            .arg(ends.fence)
            .arg(ends.queue);
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    async fn end_contact(
        &self,
        contact: &ContactId,
        now: u64,
        disposition: &str,
        wrap_until: u64,
        ends: Ends<'_>,
    ) -> Result<String, StoreError> {
        let only_in = ends.only_in;
        // The conversation ends first (see `close`), unless the end is only
        // for a waiting contact: decided earlier, it may come too late.
        let ended = only_in.is_empty()
            && self.route_field(contact, "state").await?.as_deref() != Some("closed");
        if ended {
            // Not ended in routing unless its conversation ended: the
            // customer's next messages would join a closed contact and
            // never be routed. The error goes back (503 to the channel,
            // whose retry does both), routing untouched.
            self.try_end_conversation(contact).await?;
        }
        // The script checks that the agent is still the one read here; a
        // change in between (an offer made meanwhile) means: read again.
        for _ in 0..5 {
            let agent = self
                .route_field(contact, "agent")
                .await?
                .unwrap_or_default();
            let outcome = self
                .abandon(contact, &agent, now, disposition, wrap_until, &ends)
                .await?;
            if outcome != "changed" {
                // After routing's script (an end decided earlier, for a
                // waiting contact): a failure goes back too, and the retry,
                // which finds the contact closed, ends the conversation then
                // (ending one already ended changes nothing).
                if !ended && matches!(outcome.as_str(), "abandoned" | "closed" | "already_closed") {
                    self.try_end_conversation(contact).await?;
                }
                return Ok(outcome);
            }
        }
        Err(StoreError::Conflict(format!(
            "contact {contact} kept changing hands; try again"
        )))
    }

    /// Sets presence (`None` keeps it) and/or the session deadline (`None`
    /// keeps it; `Some(0)` ends the session). With `only_if`, nothing
    /// changes unless the presence is that now. `Ok("ok")`,
    /// `unknown_agent` or `unchanged`.
    pub async fn set_presence(
        &self,
        agent: &str,
        presence: Option<(&str, &str)>,
        online_until: Option<u64>,
        only_if: Option<&str>,
    ) -> Result<String, StoreError> {
        self.presence_script(agent, presence, online_until, only_if, "")
            .await
    }

    /// Keeps `holder`'s session of the agent live until `until` (ms; a
    /// time already past ends it). The agent is online while any holder's
    /// session is: `holder` names one instance's websockets, or `http` for
    /// heartbeats. `Ok("ok")` or `unknown_agent`.
    pub async fn keep_session(
        &self,
        agent: &str,
        holder: &str,
        until: u64,
    ) -> Result<String, StoreError> {
        self.presence_script(agent, None, Some(until), None, holder)
            .await
    }

    async fn presence_script(
        &self,
        agent: &str,
        presence: Option<(&str, &str)>,
        online_until: Option<u64>,
        only_if: Option<&str>,
        holder: &str,
    ) -> Result<String, StoreError> {
        let k = self.store.keys();
        let (p, reason) = presence.unwrap_or(("", ""));
        let mut inv = self.scripts.presence.prepare_invoke();
        inv.key(k.route_agent(agent))
            .key(k.route("events"))
            .key(k.route_sessions(agent))
            .arg(agent)
            .arg(p)
            .arg(reason)
            .arg(online_until.map(|v| v.to_string()).unwrap_or_default())
            .arg(EVENTS_MAXLEN)
            .arg(if presence.is_none() { "1" } else { "0" })
            .arg(only_if.unwrap_or(""))
            .arg(switchboard_core::Timestamp::now().as_millis())
            .arg(holder);
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    /// Puts a contact assigned to an agent back in a queue (`None`: its
    /// own), optionally for one agent first (a transfer to an agent).
    /// `Ok("ok")` or `not_held`.
    pub async fn requeue(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        queue: Option<(&str, i32)>,
        reason: &str,
        first_for: Option<(&str, u64)>,
    ) -> Result<String, StoreError> {
        self.requeue_script(contact, agent, now, (queue, reason), first_for, None, false)
            .await
    }

    /// Puts a contact assigned to an agent its channel cannot reach (a
    /// call, and no phone of theirs) back in its queue, the agent left out
    /// of it from now on: `Ok("ok")` or `not_held`.
    pub async fn requeue_unreachable(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
    ) -> Result<String, StoreError> {
        self.requeue_script(contact, agent, now, (None, "unreachable"), None, None, true)
            .await
    }

    /// Puts a contact back in its queue because its agent's session ended
    /// `grace` ago or more: `Ok("ok")`, `not_held`, or `online` when the
    /// agent came back meanwhile (checked in the same step).
    pub async fn requeue_lapsed(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        grace: u64,
    ) -> Result<String, StoreError> {
        self.requeue_script(
            contact,
            agent,
            now,
            (None, "agent_disconnected"),
            None,
            Some(grace),
            false,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn requeue_script(
        &self,
        contact: &ContactId,
        agent: &str,
        now: u64,
        (queue, reason): (Option<(&str, i32)>, &str),
        first_for: Option<(&str, u64)>,
        grace: Option<u64>,
        exclude: bool,
    ) -> Result<String, StoreError> {
        let (sticky, sticky_until) = first_for.unwrap_or(("", 0));
        let (queue, priority_change) = queue.unwrap_or(("", 0));
        let k = self.store.keys();
        let mut inv = self.scripts.requeue.prepare_invoke();
        inv.key(k.route_contact(contact))
            .key(k.route_agent(agent))
            .key(k.route_held(agent))
            .key(k.route("waiting"))
            .key(k.route("offers"))
            .key(k.route("events"))
            .arg(contact.to_string())
            .arg(agent)
            .arg(now)
            .arg(queue)
            .arg(reason)
            .arg(EVENTS_MAXLEN)
            .arg(sticky)
            .arg(sticky_until)
            .arg(grace.map(|g| g.to_string()).unwrap_or_default())
            .arg(priority_change)
            .arg(if exclude { "1" } else { "" });
        let mut conn = self.conn();
        self.store.bounded(inv.invoke_async(&mut conn)).await
    }

    /// Tries to take the routing lease: the fencing token when taken.
    pub async fn acquire_lease(
        &self,
        instance: &str,
        lease: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.lease("acquire", instance, lease).await
    }

    /// Extends the lease; false when it was lost (expired and taken).
    pub async fn renew_lease(&self, token: &str, lease: Duration) -> Result<bool, StoreError> {
        Ok(self.lease("renew", token, lease).await?.as_deref() == Some("1"))
    }

    pub async fn release_lease(&self, token: &str) -> Result<bool, StoreError> {
        Ok(self
            .lease("release", token, Duration::ZERO)
            .await?
            .as_deref()
            == Some("1"))
    }

    async fn lease(
        &self,
        action: &str,
        who: &str,
        lease: Duration,
    ) -> Result<Option<String>, StoreError> {
        let k = self.store.keys();
        let mut inv = self.scripts.lease.prepare_invoke();
        inv.key(k.route("leader"))
            .key(k.route("epoch"))
            .arg(action)
            .arg(who)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut conn = self.conn();
        let v: redis::Value = self.store.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(match v {
            redis::Value::Nil => None,
            redis::Value::Int(i) => Some(i.to_string()),
            other => redis::from_redis_value::<String>(other).ok(),
        })
    }

    /// The current lease holder's token, if any.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route("leader");
        self.store
            .bounded(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    // ---- reads ----

    pub async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route("agents");
        self.store
            .bounded(redis::cmd("SMEMBERS").arg(key).query_async(&mut conn))
            .await
    }

    /// An agent's profile and state; `None` when unknown.
    pub async fn agent(&self, id: &str) -> Result<Option<(AgentRecord, AgentLive)>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_agent(id);
        let map: HashMap<String, String> = self
            .store
            .bounded(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some(agent_from(id, &map)))
    }

    /// Every agent, read in one pipeline.
    pub async fn agents(&self) -> Result<Vec<(AgentRecord, AgentLive)>, StoreError> {
        let ids = self.agent_ids().await?;
        self.agents_by_id(&ids).await
    }

    /// The agents named, read in pipelines of 500 (one round trip each);
    /// unknown ones are left out.
    pub async fn agents_by_id(
        &self,
        ids: &[String],
    ) -> Result<Vec<(AgentRecord, AgentLive)>, StoreError> {
        let k = self.store.keys();
        let maps: Vec<HashMap<String, String>> = self
            .per_key("HGETALL", ids.iter().map(|id| k.route_agent(id)).collect())
            .await?;
        Ok(ids
            .iter()
            .zip(maps)
            .filter(|(_, map)| !map.is_empty())
            .map(|(id, map)| agent_from(id, &map))
            .collect())
    }

    /// `cmd <key>` for each of `keys`, in pipelines of 500 (one round trip
    /// each): the answers, in order.
    async fn per_key<T: redis::FromRedisValue>(
        &self,
        cmd: &str,
        keys: Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd(cmd).arg(key);
            }
            let mut conn = self.conn();
            let answers: Vec<T> = self.store.bounded(pipe.query_async(&mut conn)).await?;
            out.extend(answers);
        }
        Ok(out)
    }

    /// The routing records of `contacts`, in order (`None` for one not
    /// known), in pipelined reads.
    pub async fn route_records(
        &self,
        contacts: &[ContactId],
    ) -> Result<Vec<Option<RouteRecord>>, StoreError> {
        let k = self.store.keys();
        let maps: Vec<HashMap<String, String>> = self
            .per_key(
                "HGETALL",
                contacts.iter().map(|id| k.route_contact(id)).collect(),
            )
            .await?;
        Ok(maps
            .into_iter()
            .map(|m| (!m.is_empty()).then(|| record_from(m)))
            .collect())
    }

    pub async fn route_record(
        &self,
        contact: &ContactId,
    ) -> Result<Option<RouteRecord>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_contact(contact);
        let map: HashMap<String, String> = self
            .store
            .bounded(redis::cmd("HGETALL").arg(key).query_async(&mut conn))
            .await?;
        Ok((!map.is_empty()).then(|| record_from(map)))
    }

    /// The stored contact's fields (channel, language, attributes, …);
    /// empty when it is unknown.
    pub async fn contact_fields(
        &self,
        contact: &ContactId,
    ) -> Result<HashMap<String, String>, StoreError> {
        crate::routing::contact_fields(&self.store, contact).await
    }

    /// The agent a contact is offered or assigned to, if any: two fields,
    /// not the whole record (asked for every live message an instance's
    /// agents might hold).
    pub async fn holder(&self, contact: &ContactId) -> Result<Option<String>, StoreError> {
        let (state, agent) = self.state_and_agent(contact).await?;
        Ok(match (state.as_deref(), agent) {
            (Some("offered" | "assigned"), Some(agent)) if !agent.is_empty() => Some(agent),
            _ => None,
        })
    }

    /// A contact's routing state and agent (one read).
    async fn state_and_agent(
        &self,
        contact: &ContactId,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_contact(contact);
        self.store
            .bounded(
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("state")
                    .arg("agent")
                    .query_async(&mut conn),
            )
            .await
    }

    async fn route_field(
        &self,
        contact: &ContactId,
        field: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_contact(contact);
        self.store
            .bounded(
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut conn),
            )
            .await
    }

    /// Every waiting contact with its record, read in pipelines.
    pub async fn waiting(&self) -> Result<Vec<RouteRecord>, StoreError> {
        let mut conn = self.conn();
        let k = self.store.keys();
        let ids = self.waiting_ids().await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(k.route(&format!("c:{id}")));
            }
            let maps: Vec<HashMap<String, String>> =
                self.store.bounded(pipe.query_async(&mut conn)).await?;
            out.extend(
                maps.into_iter()
                    .filter(|m| m.get("state").map(String::as_str) == Some("waiting"))
                    .map(record_from),
            );
        }
        Ok(out)
    }

    /// The ids in the waiting set (some may have moved on since).
    async fn waiting_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        self.store
            .bounded(
                redis::cmd("ZRANGE")
                    .arg(self.store.keys().route("waiting"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await
    }

    /// Every waiting contact's queue and when it entered it (ms; its
    /// creation when older records lack `queued_at`): four fields each,
    /// not the whole record ([`RoutingState::waiting_by_queue`] without
    /// the leader's summary).
    pub(crate) async fn waiting_queues(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.conn();
        let k = self.store.keys();
        let ids = self.waiting_ids().await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET")
                    .arg(k.route(&format!("c:{id}")))
                    .arg("state")
                    .arg("queue")
                    .arg("queued_at")
                    .arg("since");
            }
            let rows: Vec<[Option<String>; 4]> =
                self.store.bounded(pipe.query_async(&mut conn)).await?;
            out.extend(
                rows.into_iter()
                    .filter_map(|[state, queue, queued_at, since]| {
                        (state.as_deref() == Some("waiting")).then(|| {
                            let at = |v: Option<String>| {
                                v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                            };
                            let queued = match at(queued_at) {
                                0 => at(since),
                                q => q,
                            };
                            (queue.unwrap_or_default(), queued)
                        })
                    }),
            );
        }
        Ok(out)
    }

    /// A waiting contact's place in its queue: 1 + the contacts of the same
    /// queue waiting longer (among the 1,000 longest-waiting ahead of it).
    /// `None` when it is not waiting. Priorities are not counted: an
    /// estimate for the customer, not the leader's order.
    pub async fn queue_position(&self, contact: &ContactId) -> Result<Option<u32>, StoreError> {
        let k = self.store.keys();
        let mut conn = self.conn();
        let id = contact.to_string();
        let record = k.route_contact(contact);
        let (score, queue, state): (Option<String>, Option<String>, Option<String>) = self
            .store
            .bounded(
                redis::pipe()
                    .cmd("ZSCORE")
                    .arg(k.route("waiting"))
                    .arg(&id)
                    .cmd("HGET")
                    .arg(&record)
                    .arg("queue")
                    .cmd("HGET")
                    .arg(&record)
                    .arg("state")
                    .query_async(&mut conn),
            )
            .await?;
        let (Some(score), Some(queue)) = (score, queue) else {
            return Ok(None);
        };
        if state.as_deref() != Some("waiting") {
            return Ok(None);
        }
        let ahead: Vec<String> = self
            .store
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.route("waiting"))
                    .arg("-inf")
                    .arg(format!("({score}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
        if ahead.is_empty() {
            return Ok(Some(1));
        }
        let mut pipe = redis::pipe();
        for other in &ahead {
            pipe.cmd("HMGET")
                .arg(k.route(&format!("c:{other}")))
                .arg("queue")
                .arg("state");
        }
        let fields: Vec<(Option<String>, Option<String>)> =
            self.store.bounded(pipe.query_async(&mut conn)).await?;
        let same = fields
            .iter()
            .filter(|(q, s)| q.as_deref() == Some(&queue) && s.as_deref() == Some("waiting"))
            .count();
        Ok(Some(
            u32::try_from(same).unwrap_or(u32::MAX).saturating_add(1),
        ))
    }

    /// Offers whose deadline passed.
    pub async fn due_offers(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route("offers");
        self.store
            .bounded(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(now)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await
    }

    /// [`Self::held`] of each of `agents`, in order, in pipelined reads.
    pub async fn held_by_each(&self, agents: &[&str]) -> Result<Vec<Vec<String>>, StoreError> {
        let k = self.store.keys();
        self.per_key(
            "SMEMBERS",
            agents.iter().map(|agent| k.route_held(agent)).collect(),
        )
        .await
    }

    /// The contacts an agent holds (offered or assigned).
    pub async fn held(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_held(agent);
        self.store
            .bounded(redis::cmd("SMEMBERS").arg(key).query_async(&mut conn))
            .await
    }

    /// The routing decisions recorded for a contact, oldest first (JSON).
    pub async fn decisions(&self, contact: &ContactId) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_decisions(contact);
        self.store
            .bounded(
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await
    }

    /// Appends a record to a contact's routing decisions (the last 50 are
    /// kept, for 90 days after the last one).
    pub async fn record_decision(&self, contact: &ContactId, json: &str) -> Result<(), StoreError> {
        let key = self.store.keys().route_decisions(contact);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(-50)
            .arg(-1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(90 * 24 * 3600)
            .ignore();
        let mut conn = self.conn();
        self.store.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// The agent a customer had last, if remembered.
    pub async fn sticky_agent(&self, customer_key: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route_sticky(customer_key);
        self.store
            .bounded(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    /// The id of the newest event ("0-0" when none): read a snapshot after
    /// taking it, then follow events from it, and nothing is missed.
    pub async fn last_event_id(&self) -> Result<String, StoreError> {
        Ok(self.last_event().await?.0)
    }

    /// The id of the newest routing event and its number (`n`; 0 when none
    /// or unnumbered): where a reader that loaded the state goes on, and
    /// what the next event's number must follow (a gap says it missed some).
    pub async fn last_event(&self) -> Result<(String, u64), StoreError> {
        let mut conn = self.conn();
        let key = self.store.keys().route("events");
        let reply: redis::Value = self
            .store
            .bounded(
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        let newest = match reply {
            redis::Value::Array(entries) => entries
                .into_iter()
                .next()
                .and_then(crate::events::from_entry),
            _ => None,
        };
        Ok(newest.map_or_else(|| ("0-0".into(), 0), |e| (e.id.clone(), e.number())))
    }

    /// Events after `after`, waiting up to `block` for the first. Uses the
    /// given (dedicated) connection.
    pub async fn read_events(
        &self,
        conn: &mut RedisConn,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<RouteEvent>, StoreError> {
        let key = self.store.keys().route("events");
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&key)
            .arg(after);
        let reply: redis::Value = tokio::time::timeout(
            block + self.store.config().response_timeout,
            cmd.query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("XREAD timed out".into()))??;
        Ok(crate::events::from_xread(reply))
    }
}

fn agent_from(id: &str, map: &HashMap<String, String>) -> (AgentRecord, AgentLive) {
    let skills: HashMap<String, u8> = map
        .get("skills")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let mut skills: Vec<(String, u8)> = skills.into_iter().collect();
    skills.sort();
    let capacity: [u32; 4] = map
        .get("cap")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or([0; 4]);
    (
        AgentRecord {
            id: id.to_owned(),
            name: map.get("name").cloned().unwrap_or_default(),
            skills,
            capacity,
            total_capacity: map
                .get("cap_total")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            token_sha256: map.get("token").cloned().unwrap_or_default(),
        },
        live_from(map),
    )
}

pub(crate) fn record_from(map: HashMap<String, String>) -> RouteRecord {
    let s = |k: &str| map.get(k).cloned().unwrap_or_default();
    let n = |k: &str| map.get(k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    RouteRecord {
        contact: s("id"),
        state: s("state"),
        queue: s("queue"),
        channel: s("channel"),
        priority: map
            .get("priority")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        since: n("since"),
        queued_at: n("queued_at"),
        rule: s("rule"),
        source: s("source"),
        customer: s("customer"),
        sticky: s("sticky"),
        sticky_until: n("sticky_until"),
        sticky_remembered: map.get("sticky_from").is_some_and(|f| f == "memory"),
        excluded: s("excluded")
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        excluded_at: n("excluded_at"),
        agent: s("agent"),
        offer_until: n("offer_until"),
        fields: map,
    }
}

/// The channel index (chat 0, email 1, social 2, voice 3) of a stored name.
pub fn channel_slot(name: &str) -> Option<usize> {
    channel_index(name)
}
