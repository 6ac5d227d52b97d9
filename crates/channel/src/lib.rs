//! The channel plug-in contract.
//!
//! A channel adapter (chat, email, social, voice, the intake API) is built
//! from its configuration with a [`ChannelContext`]: its name, the
//! [`Intake`] to hand inbound events to, its [`Outbox`] of replies to deliver,
//! and the drain and shutdown tokens. It declares the [`Resource`]s it claims so that two
//! adapters cannot collide, may serve HTTP routes under
//! `/channels/{name}/` on the daemon's shared server, and runs its own
//! background work until shutdown. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod body;
pub mod files;
pub mod limits;
pub mod live;
pub mod logs;
pub mod net;
pub mod secret;

use futures::future::BoxFuture;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_core::{
    ContactId, CustomerIdentity, DeliveryOutcome, InboundEvent, InboundUpdate, IntakeError,
    IntakeReceipt, OutboundMessage, UpdateOutcome,
};
use tokio_util::sync::CancellationToken;

pub use live::{
    ConversationLog, LiveBus, LiveEvent, LiveFollows, LiveKind, LiveSignal, LogEntry, entry_text,
};
pub use secret::{Secret, SecretError, SecretValue, bearer, bearer_bytes, same_secret};

/// The one entry point for inbound events. An `Ok` receipt means the event is
/// durably stored: only then may the adapter acknowledge its sender.
pub trait Intake: Send + Sync + fmt::Debug {
    fn submit(&self, event: InboundEvent) -> BoxFuture<'_, Result<IntakeReceipt, IntakeError>>;
    /// Applies a change to a message that exists already (an edit, a
    /// receipt for a reply). An `Ok` outcome, whatever it is, means there is
    /// nothing left to store: the adapter may acknowledge its sender.
    fn update(&self, update: InboundUpdate) -> BoxFuture<'_, Result<UpdateOutcome, IntakeError>>;
    /// What a message with this provider id from this customer was stored
    /// as (within the dedupe window); `None` when it was not.
    fn lookup<'a>(
        &'a self,
        source: &'a str,
        customer: &'a CustomerIdentity,
        provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntakeReceipt>, IntakeError>>;
    /// The limits events are checked against (`[intake]` in the
    /// configuration), so that an adapter can fit what it builds (an email
    /// with its attachment lines) instead of having it refused.
    fn limits(&self) -> switchboard_core::inbound::EventLimits {
        switchboard_core::inbound::EventLimits::default()
    }
}

/// Where a contact is in routing, as a channel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// `waiting`, `offered`, `assigned` or `closed`.
    pub state: String,
    /// The agent it is offered or assigned to.
    pub agent: Option<String>,
    /// That agent's display name, when known.
    pub agent_name: Option<String>,
    pub queue: String,
    /// The channel adapter the contact came in through.
    pub source: String,
    /// While offered: when the offer runs out (ms since the epoch). It
    /// tells one offer from the next, even to the same agent.
    pub offer_until: Option<u64>,
    /// While offered or assigned: routing's stamp of the offer (or the
    /// auto-assignment) that made it so, as `offer_until` gives it while
    /// offered. It tells one assignment from the next, even to the same
    /// agent.
    pub stamp: Option<u64>,
}

/// What a channel may ask of routing about its own contacts: a voice
/// channel rings the chosen agent's phone and tells routing whether it was
/// answered, and ends a call the caller hung up. Every answer is the routing
/// state's own (`ok`, `not_offered`, `abandoned`, `closed`, …).
pub trait Routing: Send + Sync + fmt::Debug {
    /// The contact's place in routing; `None` while routing does not know it.
    fn route<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<RouteView>, IntakeError>>;
    /// The agent took (`accept`) or missed the contact offered to them on
    /// the channel itself (their phone was answered, or rang out). A miss
    /// counts like a missed offer.
    fn answer<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
        accept: bool,
    ) -> BoxFuture<'a, Result<String, IntakeError>>;
    /// The channel cannot reach the agent the contact is offered to (no
    /// phone of theirs in its configuration): the offer goes on to the
    /// next agent, and is not counted as the agent's miss (which could
    /// set them away for a configuration mistake). Routing's own answer
    /// is that of a decline; by default, a miss. A contact already
    /// assigned to that agent (accepted in the console, an auto-accepting
    /// queue) goes back to its queue, the agent left out of it as after a
    /// decline (`ok`; `not_held` when it is neither).
    fn pass<'a>(
        &'a self,
        contact: &'a ContactId,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        self.answer(contact, agent, false)
    }
    /// The customer went away or the channel ended the contact: waiting or
    /// offered, it is abandoned (never offered again); assigned, it is
    /// closed with `disposition` and its agent enters wrap-up.
    fn end<'a>(
        &'a self,
        contact: &'a ContactId,
        disposition: &'a str,
    ) -> BoxFuture<'a, Result<String, IntakeError>>;
    /// The customer's satisfaction rating of a contact (CSAT, 1 to 5), from
    /// the channel (a widget's rating, a post-call survey). The first
    /// rating counts: `ok`, `already_rated` or `unknown_contact`.
    fn rate<'a>(
        &'a self,
        contact: &'a ContactId,
        score: u8,
    ) -> BoxFuture<'a, Result<String, IntakeError>> {
        let _ = (contact, score);
        Box::pin(async { Ok("unknown_contact".to_owned()) })
    }
    /// A waiting contact's place in its queue (1 = next); `None` when it is
    /// not waiting.
    fn queue_position<'a>(
        &'a self,
        contact: &'a ContactId,
    ) -> BoxFuture<'a, Result<Option<u32>, IntakeError>> {
        let _ = contact;
        Box::pin(async { Ok(None) })
    }
    /// Whether an agent could take a contact of `channel` now: online,
    /// available and below their capacity for it, and some queue its
    /// contacts may go to is open (business hours). A chat widget offers
    /// its offline form otherwise. May be a few seconds old.
    fn agents_available(
        &self,
        channel: switchboard_core::ChannelKind,
    ) -> BoxFuture<'_, Result<bool, IntakeError>> {
        let _ = channel;
        Box::pin(async { Ok(true) })
    }
    /// An agent's display name (for a channel that shows customers who
    /// wrote, such as chat); `None` when unknown.
    fn agent_name<'a>(
        &'a self,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, IntakeError>> {
        let _ = agent;
        Box::pin(async { Ok(None) })
    }
}

/// A customer's attachment, fetched from the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// As the provider gave it; the agent API never serves it inline.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Why an attachment could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("the provider does not know this attachment (or no longer has it)")]
    NotFound,
    #[error("the attachment is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the provider could not be reached: {0}")]
    Unavailable(String),
}

/// Attachments kept as references (media ids) and fetched through the
/// provider's API when an agent opens them.
pub trait MediaSource: Send + Sync + fmt::Debug {
    /// The attachment `media_id` received by `account` (the contact's
    /// address: page, phone number id, bot).
    fn fetch<'a>(
        &'a self,
        account: &'a str,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<Media, MediaError>>;
}

/// One outbound message taken from an adapter's outbox, to be settled.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundDelivery {
    /// The outbox's handle for this delivery (opaque to the adapter).
    pub handle: String,
    /// How many times it was handed out before, including this one.
    pub attempt: u32,
    /// How many times the outbox had handed this entry out when it made
    /// this delivery; 0 for one looked up by its handle ([`Outbox::pending`]),
    /// which may be settled through any instance. Otherwise settling or
    /// deferring it does nothing once another instance took the entry over
    /// (past the visibility timeout): a late answer would send it a second
    /// time or overwrite the new holder's outcome.
    pub handouts: u32,
    pub message: OutboundMessage,
}

/// Why the outbox could not be read or settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox temporarily unavailable: {0}")]
    Unavailable(String),
    /// An entry that is no delivery: the outbox has set it aside (it is
    /// not handed out again).
    #[error("corrupt outbox entry {handle}: {reason}")]
    Corrupt { handle: String, reason: String },
}

/// An adapter's durable queue of replies to deliver. A delivery that is
/// neither settled nor deferred (the adapter crashed) is handed out again.
pub trait Outbox: Send + Sync + fmt::Debug {
    /// The next message to deliver, waiting at most `wait` for one.
    fn next(&self, wait: Duration) -> BoxFuture<'_, Result<Option<OutboundDelivery>, OutboxError>>;
    /// Records the final outcome and removes the delivery from the outbox;
    /// does nothing (and counts a late settlement) when another instance
    /// has taken the delivery over or settled it meanwhile.
    fn settle<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        outcome: DeliveryOutcome,
    ) -> BoxFuture<'a, Result<(), OutboxError>>;
    /// A temporary failure: hand the delivery out again after `delay`
    /// (backoff, or a provider's `Retry-After`). Order among the adapter's
    /// deliveries to the same customer is the adapter's concern.
    fn defer<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        delay: Duration,
    ) -> BoxFuture<'a, Result<(), OutboxError>>;
    /// Takes, or renews, the right to deliver this outbox for `lease`.
    /// One instance holds it at a time, so that an adapter that keeps its
    /// replies in order in memory keeps them in order across instances too.
    /// True while this instance holds it.
    fn hold_delivery(&self, lease: Duration) -> BoxFuture<'_, Result<bool, OutboxError>>;
    /// Gives the right up (on shutdown), so another instance takes over at
    /// once rather than when the lease runs out.
    fn release_delivery(&self) -> BoxFuture<'_, Result<(), OutboxError>>;
    /// A delivery handed out earlier and neither settled nor deferred, by
    /// its handle: for adapters whose clients acknowledge deliveries later,
    /// perhaps through another instance (the intake API's pulled replies).
    /// `None` when it is settled, deferred (it comes back with a new handle)
    /// or unknown.
    fn pending<'a>(
        &'a self,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<Option<OutboundDelivery>, OutboxError>> {
        let _ = handle;
        Box::pin(async { Ok(None) })
    }
    /// Hands a delivery over to another adapter's outbox: `message` (with
    /// that adapter as its `source`) is enqueued there, then the delivery is
    /// removed from this outbox. A crash between the two hands it over
    /// again, and the other outbox takes each message id once (7 days).
    fn forward<'a>(
        &'a self,
        delivery: &'a OutboundDelivery,
        message: OutboundMessage,
    ) -> BoxFuture<'a, Result<(), OutboxError>>;
}

/// Why the adapter's state could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("channel state temporarily unavailable: {0}")]
    Unavailable(String),
}

/// A small durable key-value store of the adapter's own (shared by every
/// instance running the same adapter): checkpoints such as an IMAP
/// mailbox's UIDVALIDITY and last UID, and leases so that one instance at a
/// time does a job (fetching one mailbox).
pub trait ChannelState: Send + Sync + fmt::Debug {
    /// The value stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StateError>>;
    /// Stores `value` under `key`, durably when this returns `Ok`.
    fn set<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), StateError>>;
    /// Stores `value` under `key` for `ttl`: a marker that need not outlive
    /// what it is about. (The default keeps it, for stores without expiry.)
    fn set_for<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let _ = ttl;
        self.set(key, value)
    }
    /// Removes the value stored under `key` (by [`Self::set`] or
    /// [`Self::set_for`]), if any.
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StateError>>;
    /// Takes, or renews, the lease `key` for `lease`. True while this
    /// instance holds it; one instance holds a lease at a time.
    fn hold<'a>(&'a self, key: &'a str, lease: Duration)
    -> BoxFuture<'a, Result<bool, StateError>>;
    /// Gives the lease up, if this instance holds it.
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StateError>>;
    /// Sets `field` of the map `map` to `value`, durably when this returns
    /// `Ok` (a small registry: the calls a voice channel follows, by
    /// contact, so that a restarted instance follows them again).
    fn put_entry<'a>(
        &'a self,
        map: &'a str,
        field: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;
    /// Removes `field` from the map `map`.
    fn remove_entry<'a>(
        &'a self,
        map: &'a str,
        field: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;
    /// Every field of the map `map`, with its value.
    fn entries<'a>(
        &'a self,
        map: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StateError>>;
}

/// Everything an adapter is built with.
#[derive(Debug, Clone)]
pub struct ChannelContext {
    /// The adapter's configured name, unique in the daemon. It is the
    /// `source` of every event the adapter submits.
    pub name: String,
    pub intake: Arc<dyn Intake>,
    pub outbox: Arc<dyn Outbox>,
    /// Routing, for channels that take part in it (voice).
    pub routing: Arc<dyn Routing>,
    /// The adapter's own durable state (checkpoints, leases).
    pub state: Arc<dyn ChannelState>,
    /// The live doorbell: new log entries, typing, read marks (chat).
    pub live: Arc<dyn LiveBus>,
    /// The conversation logs of the channel's customers (chat resumes
    /// from them).
    pub conversations: Arc<dyn ConversationLog>,
    /// Cancelled when the daemon starts to drain, no later than `shutdown`:
    /// stop taking new inbound work that does not come through the shared
    /// HTTP server (own listeners, mailbox fetchers); what is in flight
    /// finishes. The shared server stops accepting at the same moment.
    pub draining: CancellationToken,
    /// Cancelled when the daemon shuts down, after the drain: stop taking
    /// new work, finish what is in flight, return from
    /// [`ChannelAdapter::run`].
    pub shutdown: CancellationToken,
}

/// Something an adapter claims exclusively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A TCP listener of its own (e.g. LMTP).
    TcpListener(SocketAddr),
    /// A mailbox it fetches from (e.g. `imap://user@host/INBOX`).
    Mailbox(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::TcpListener(addr) => write!(f, "tcp listener {addr}"),
            Resource::Mailbox(m) => write!(f, "mailbox {m}"),
        }
    }
}

/// A channel another one hands work to ([`ChannelConfig::hands_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The configuration key that names it, e.g. `offline.email_channel`.
    pub key: &'static str,
    /// The channel's configured name.
    pub channel: String,
    /// The type it must have (`type = …` in `[[channels]]`), e.g. `email`.
    pub channel_type: &'static str,
}

/// Why an adapter could not be built or stopped running.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The configuration is wrong; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A channel's configuration: the one thing the daemon needs from a channel
/// crate besides its name in the registry.
pub trait ChannelConfig: fmt::Debug + Send + Sync {
    /// The adapter's configured name (`name = …`), unique in the daemon.
    fn name(&self) -> &str;
    /// Checks the configuration without side effects (no sockets, but secrets
    /// are read), for `switchboard validate`.
    fn validate(&self) -> Result<(), ChannelError>;
    /// What the adapter will claim, known before it is built.
    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }
    /// The other channels it hands work to (a chat's offline form is
    /// answered by mail): each must be configured, of the type named, or
    /// that work would wait in an outbox nobody reads.
    fn hands_to(&self) -> Vec<Handoff> {
        Vec::new()
    }
    /// The longest its own settings let a request body take to arrive
    /// (chat uploads), with the key that sets it: the daemon's deadline
    /// for every body (`http.body_timeout_secs`) must not be shorter, or it
    /// would cut those bodies off first.
    fn body_time(&self) -> Option<(&'static str, std::time::Duration)> {
        None
    }
    /// The shortest offer its own settings need on its channel kind, with
    /// the key that sets that need (Twilio's hold loop asks routing only
    /// every `hold_pause_secs`): the daemon refuses a shorter
    /// `routing.offer_timeout_secs` for that kind, whose offers would run
    /// out before the agent's phone could ring.
    fn offer_time(
        &self,
    ) -> Option<(
        switchboard_core::ChannelKind,
        &'static str,
        std::time::Duration,
    )> {
        None
    }
    /// Whether the adapter finds a contact again by the provider id of its
    /// first event for as long as the contact lasts (a call's `answer` and
    /// `hangup` name its call id, looked up through [`Intake::lookup`]):
    /// the intake keeps that id for `[intake] dedupe_window_secs`, which
    /// the daemon then refuses to be shorter than the longest call.
    fn finds_contacts_by_provider_id(&self) -> bool {
        false
    }
    /// Builds the adapter.
    fn build(&self, ctx: ChannelContext) -> Result<Box<dyn ChannelAdapter>, ChannelError>;
}

/// A running channel.
pub trait ChannelAdapter: Send {
    /// HTTP routes served under `/channels/{name}` on the shared server
    /// (webhooks, websockets). `None` when the adapter serves none.
    fn routes(&self) -> Option<axum::Router> {
        None
    }
    /// Where agents' requests for the channel's attachments go, when the
    /// channel keeps attachments as references.
    fn media(&self) -> Option<Arc<dyn MediaSource>> {
        None
    }
    /// Runs the adapter's own work (listeners, pollers, outbox delivery) until
    /// the context's shutdown token is cancelled.
    fn run(self: Box<Self>) -> BoxFuture<'static, Result<(), ChannelError>>;
}

/// Reads a websocket frame of JSON into `T`, which must be an object: serde
/// would also read an internally tagged enum from an array
/// (`["accept","r","1-ABC"]`), which no protocol of ours is. The error is
/// the message for the client.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err("a frame is a JSON object".into());
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}
