//! The inbound side of the social adapters: HTTP handlers that check a
//! delivery, read it, and hand what it says to the intake, answering 200
//! only once everything in it is stored.
//!
//! Every adapter ([`meta`], [`telegram`], [`generic`]) does the same four
//! steps; the shared ones are here:
//!
//! 1. read the body, refusing more than `max_body_bytes` (413);
//! 2. check the signature on the raw bytes (401, nothing parsed or stored);
//! 3. parse it into [`SocialItem`]s (400);
//! 4. [`Webhook::store`]: messages go to the intake as events (a new
//!    contact or appended to the open one), edits and receipts as updates;
//!    echoes of our own replies and ignored events are only counted.
//!
//! A delivery is acknowledged (200) only when every item is stored or
//! knowingly skipped; if the store is unavailable the answer is 503 and the
//! provider retries the whole delivery, which the intake's dedupe makes
//! harmless. Every outcome is counted in `switchboard_social_deliveries_total`
//! and `switchboard_social_items_total`.
//!
//! What the intake would refuse for good depends on who sent it
//! ([`OnInvalid`]): our own generic format is refused (422) so the sender
//! can correct it; a provider's message is fitted (its text cut to the
//! intake's limit) so that it is stored, because a provider retries a
//! refused delivery forever or disables the webhook.

pub mod generic;
pub mod meta;
pub mod telegram;

use crate::item::fit;
use crate::send::deliver::{Deliverer, DeliverySettings, Memory};
use crate::send::{SendConfig, Sender, Senders, http_client};
use crate::{
    MessageEdit, ParseError, Receipt, ReceiptStatus, ReceiptTarget, SignatureError, SocialItem,
};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use metrics::counter;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use switchboard_channel::logs::LogThrottle;
use switchboard_channel::{ChannelContext, ChannelError, Intake};
use switchboard_core::{
    Change, ChannelKind, InboundUpdate, IntakeError, InvalidEvent, ReplyStatus, UpdateOutcome,
};
use tracing::{debug, info, warn};

/// The default largest delivery accepted, in bytes (Telegram sends one
/// update per request; the generic format is ours).
pub(crate) fn default_max_body() -> usize {
    1024 * 1024
}

/// The default largest Meta delivery accepted: Meta batches up to 1,000
/// events and documents WhatsApp webhook payloads of up to 3 MB. A larger
/// one is refused (413), and Meta would send it again for days, every
/// message in it lost.
pub(crate) fn default_meta_max_body() -> usize {
    3 * 1024 * 1024
}

/// What every webhook handler needs.
#[derive(Debug)]
pub(crate) struct Webhook {
    /// The adapter's name: the `source` of what it stores.
    pub name: String,
    pub intake: Arc<dyn Intake>,
    pub max_body: usize,
    /// The accounts (page, Instagram account, phone number id, bot) this
    /// adapter answers for; an item for another is counted and skipped.
    /// `None`: the adapter has a single implicit account.
    pub accounts: Option<HashSet<String>>,
    /// What becomes of an item the intake would refuse.
    pub on_invalid: OnInvalid,
}

/// What becomes of an item the intake would refuse for good (a text over
/// `[intake] max_text_bytes`, an `account` over 320 bytes, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnInvalid {
    /// Our own format: the delivery is refused (422) naming the event, so
    /// the sender learns of it and can correct it.
    Refuse,
    /// A provider's format: texts are cut to the intake's limit (ending in
    /// [`crate::item::CUT_MARK`]) so that the message is stored; what the
    /// intake still refuses is counted, logged with the reason, and
    /// acknowledged (a provider retries a refused delivery forever, or
    /// disables the webhook).
    Fit,
}

/// Why a delivery was not acknowledged.
#[derive(Debug)]
pub(crate) enum Refusal {
    TooLarge,
    /// The body did not arrive within the daemon's deadline for bodies.
    TooSlow,
    /// The body could not be read to its end (broken chunked framing, a
    /// client that went away).
    Broken(String),
    Signature(SignatureError),
    Parse(ParseError),
    /// The intake refused an event for good (only with [`OnInvalid::Refuse`]).
    Invalid(String),
    Unavailable(String),
}

impl Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::TooSlow => "body_timeout",
            Self::Broken(_) => "broken_body",
            Self::Signature(_) => "bad_signature",
            Self::Parse(_) => "bad_payload",
            Self::Invalid(_) => "invalid_event",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Webhook {
    /// The body, if it is no larger than allowed.
    pub(crate) async fn read(&self, body: Body) -> Result<axum::body::Bytes, Refusal> {
        read_body(body, self.max_body).await
    }

    /// The answer to a delivery, counted.
    pub(crate) fn answer(&self, result: Result<usize, Refusal>) -> Response {
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(r) => r.kind(),
        };
        counter!("switchboard_social_deliveries_total", "source" => self.name.clone(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(items) => {
                debug!(source = %self.name, items, "Webhook delivery stored.");
                (StatusCode::OK, "EVENT_RECEIVED").into_response()
            }
            Err(Refusal::TooLarge) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {} bytes", self.max_body),
            ),
            Err(Refusal::TooSlow) => {
                debug!(source = %self.name, "Webhook delivery refused: the body did not arrive in time.");
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the body did not arrive in time".into(),
                )
            }
            Err(Refusal::Broken(m)) => {
                debug!(source = %self.name, error = %m, "Webhook delivery refused: the body could not be read.");
                error(
                    StatusCode::BAD_REQUEST,
                    "broken_body",
                    format!("the body could not be read: {m}"),
                )
            }
            Err(Refusal::Signature(e)) => {
                // Anyone can send these: one line a minute at warn.
                static BAD_SIGNATURES: LogThrottle =
                    LogThrottle::new(std::time::Duration::from_secs(60));
                switchboard_channel::warn_throttled!(BAD_SIGNATURES, source = %self.name, error = %e, "Webhook delivery refused: bad signature.");
                error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
            }
            Err(Refusal::Parse(e)) => {
                // The kind and the place, not the message: serde quotes
                // the value, which may be a customer's text.
                debug!(source = %self.name, kind = e.kind(), at = e.path(), "Webhook delivery refused: unreadable body.");
                error(StatusCode::BAD_REQUEST, e.kind(), e.to_string())
            }
            Err(Refusal::Invalid(m)) => {
                debug!(source = %self.name, error = %m, "Webhook delivery refused: an event the intake does not take.");
                error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", m)
            }
            Err(Refusal::Unavailable(m)) => {
                warn!(source = %self.name, error = %m, "Webhook delivery not stored; the provider will retry.");
                // The store's own words stay in the log.
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the delivery could not be stored now; retry later".to_owned(),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
        }
    }

    /// Stores every item of a delivery, in order. `Err` when the store is
    /// unavailable (then nothing may be acknowledged), or when an event the
    /// intake refuses ends the delivery ([`OnInvalid::Refuse`]): the items
    /// before it are stored, and a corrected delivery repeating them is
    /// harmless (dedupe).
    pub(crate) async fn store(&self, items: Vec<SocialItem>) -> Result<usize, Refusal> {
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let kind = kind_of(&item);
            let outcome = match self.store_item(item).await {
                Ok(outcome) => outcome,
                Err(Refusal::Invalid(reason)) => {
                    self.count(kind, "invalid");
                    return Err(Refusal::Invalid(format!("events[{index}]: {reason}")));
                }
                Err(other) => return Err(other),
            };
            self.count(kind, outcome);
        }
        Ok(count)
    }

    pub(crate) fn count(&self, kind: &'static str, outcome: &'static str) {
        counter!("switchboard_social_items_total",
            "source" => self.name.clone(), "kind" => kind, "outcome" => outcome)
        .increment(1);
    }

    fn known(&self, account: Option<&str>) -> bool {
        match (&self.accounts, account) {
            (None, _) => true,
            (Some(set), Some(a)) => set.contains(a),
            (Some(_), None) => false,
        }
    }

    /// The intake's text limit, when texts are fitted to it.
    fn text_room(&self) -> usize {
        match self.on_invalid {
            OnInvalid::Fit => self.intake.limits().max_text_bytes,
            OnInvalid::Refuse => usize::MAX,
        }
    }

    /// Counts and logs a text cut to fit the intake's limit.
    fn cut(&self, kind: &'static str, id: &str, bytes: usize) {
        info!(source = %self.name, kind, provider_message_id = %id, bytes,
            max = self.text_room(), "A text over the intake's limit was cut to fit it.");
        counter!("switchboard_social_texts_cut_total", "source" => self.name.clone(), "kind" => kind)
            .increment(1);
    }

    /// What an intake error means for the delivery: a refusal for good is
    /// logged with its reason, then refuses the delivery or is acknowledged
    /// as `invalid` ([`OnInvalid`]); anything else is retried by the sender.
    fn refused(
        &self,
        kind: &'static str,
        id: &str,
        error: IntakeError,
    ) -> Result<&'static str, Refusal> {
        match error {
            IntakeError::Invalid(e) => {
                warn!(source = %self.name, kind, provider_message_id = %id, error = %e,
                    "The intake refused an item for good.");
                match self.on_invalid {
                    OnInvalid::Refuse => Err(Refusal::Invalid(in_our_words(&e))),
                    OnInvalid::Fit => Ok("invalid"),
                }
            }
            e => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    async fn store_item(&self, item: SocialItem) -> Result<&'static str, Refusal> {
        match item {
            SocialItem::Message(m) => {
                if !self.known(m.account.as_deref()) {
                    // Another app's number on the same webhook sends these
                    // all the time: counted each, logged once a minute.
                    static UNKNOWN_ACCOUNTS: LogThrottle =
                        LogThrottle::new(std::time::Duration::from_secs(60));
                    switchboard_channel::warn_throttled!(UNKNOWN_ACCOUNTS, source = %self.name, account = ?m.account, "A message for an account that is not configured was skipped (logged at most once a minute; counted in switchboard_social_items_total).");
                    return Ok("unknown_account");
                }
                let id = m.provider_message_id.clone();
                let bytes = m.text.len();
                let (event, cut) = m.into_inbound_within(&self.name, self.text_room());
                if cut {
                    self.cut("message", &id, bytes);
                }
                match self.intake.submit(event).await {
                    Ok(receipt) => Ok(receipt.outcome.as_str()),
                    Err(e) => self.refused("message", &id, e),
                }
            }
            SocialItem::Edit(edit) => self.store_edit(edit).await,
            SocialItem::Receipt(receipt) => self.store_receipt(receipt).await,
            SocialItem::Echo(_) => Ok("skipped"),
            SocialItem::Ignored(ignored) => {
                debug!(source = %self.name, reason = ignored.reason, "Webhook event ignored.");
                Ok(ignored.reason)
            }
            SocialItem::Unreadable(u) => {
                // Where and what kind only: the parser's words may quote
                // the customer's text.
                warn!(source = %self.name, platform = u.platform.as_str(), path = %u.path, kind = u.kind,
                    "An event of a webhook delivery could not be read; the others are stored.");
                Ok(u.kind)
            }
        }
    }

    /// An edit updates the message it edits. When that message is unknown
    /// (older than the dedupe window, or its delivery never reached us) the
    /// new text is stored as a message, so the customer's words are not lost.
    async fn store_edit(&self, edit: MessageEdit) -> Result<&'static str, Refusal> {
        if !self.known(edit.account.as_deref()) {
            static UNKNOWN_ACCOUNTS: LogThrottle =
                LogThrottle::new(std::time::Duration::from_secs(60));
            switchboard_channel::warn_throttled!(UNKNOWN_ACCOUNTS, source = %self.name, account = ?edit.account, "An edit for an account that is not configured was skipped (logged at most once a minute; counted).");
            return Ok("unknown_account");
        }
        let update_id = edit_id(&edit);
        let text = fit(&edit.text, self.text_room());
        if text.len() != edit.text.len() {
            self.cut("edit", &update_id, edit.text.len());
        }
        let update = InboundUpdate {
            channel: ChannelKind::Social,
            source: self.name.clone(),
            customer: edit.customer.clone(),
            provider_message_id: edit.provider_message_id.clone(),
            update_id: Some(update_id.clone()),
            change: Change::Edited { text: text.clone() },
            at: edit.edited_at,
        };
        match self.intake.update(update).await {
            Ok(UpdateOutcome::UnknownMessage) => {
                let message = crate::SocialMessage {
                    platform: edit.platform,
                    account: edit.account,
                    customer: edit.customer,
                    customer_name: None,
                    provider_message_id: update_id.clone(),
                    text,
                    payload: None,
                    attachments: Vec::new(),
                    language: None,
                    sent_at: edit.edited_at,
                };
                match self.intake.submit(message.into_inbound(&self.name)).await {
                    Ok(_) => Ok("stored_as_message"),
                    Err(e) => self.refused("edit", &update_id, e),
                }
            }
            Ok(outcome) => Ok(outcome.as_str()),
            Err(e) => self.refused("edit", &update_id, e),
        }
    }

    /// A receipt for one of our replies records how far it got. Read
    /// watermarks (Messenger's "everything before this time was read") and
    /// receipts without a customer are counted only.
    async fn store_receipt(&self, receipt: Receipt) -> Result<&'static str, Refusal> {
        // Another app's number or page on the same webhook: its statuses
        // are not about our replies, whatever their ids match. At debug:
        // statuses come by the thousand.
        if !self.known(receipt.account.as_deref()) {
            debug!(source = %self.name, account = ?receipt.account, "A receipt for an account that is not configured was skipped.");
            return Ok("unknown_account");
        }
        let (ReceiptTarget::Message(id), Some(customer)) = (&receipt.target, receipt.customer)
        else {
            return Ok("unsupported");
        };
        let (status, detail) = match &receipt.status {
            ReceiptStatus::Sent => (ReplyStatus::Sent, None),
            ReceiptStatus::Delivered => (ReplyStatus::Delivered, None),
            ReceiptStatus::Read => (ReplyStatus::Read, None),
            ReceiptStatus::Failed { code, title } => (
                ReplyStatus::Failed,
                Some(match (code, title) {
                    (Some(c), Some(t)) => format!("{t} ({c})"),
                    (None, Some(t)) => t.clone(),
                    (Some(c), None) => format!("error {c}"),
                    (None, None) => "failed".into(),
                }),
            ),
        };
        let update = InboundUpdate {
            channel: ChannelKind::Social,
            source: self.name.clone(),
            customer,
            provider_message_id: id.clone(),
            update_id: Some(receipt_id(id, status)),
            change: Change::Status { status, detail },
            at: receipt.at,
        };
        match self.intake.update(update).await {
            Ok(outcome) => Ok(outcome.as_str()),
            Err(e) => self.refused("receipt", id, e),
        }
    }
}

/// The intake's reason, in the words of the generic format (whose
/// `account` is the event's `address`).
fn in_our_words(e: &InvalidEvent) -> String {
    match e {
        InvalidEvent::TooLong {
            field: "address",
            max,
        } => format!("account is longer than {max} bytes"),
        e => e.to_string(),
    }
}

/// The metrics label of an item.
fn kind_of(item: &SocialItem) -> &'static str {
    match item {
        SocialItem::Message(_) => "message",
        SocialItem::Edit(_) => "edit",
        SocialItem::Receipt(_) => "receipt",
        SocialItem::Echo(_) => "echo",
        SocialItem::Ignored(_) => "ignored",
        SocialItem::Unreadable(_) => "unreadable",
    }
}

/// The longest id the intake keeps (a provider message id, an update id).
pub(crate) const MAX_ID_BYTES: usize = 512;

/// The id of an edit, its dedupe key (and its message id when it is stored
/// as a message): `<message id>:edit:<edited_at in ms>`, or, when the
/// provider gives no time, `<message id>:edit:<the first 16 hex digits of
/// the new text's SHA-256>`, so that two different edits are two edits and
/// a repeated delivery of one edit is applied once. A time in whole
/// seconds (Telegram's `edit_date`) is followed by the text's digits too
/// (`…:edit:<ms>:<16 hex digits>`): two edits within one second are two.
/// An id that would be longer than the intake keeps is `edit:<SHA-256 of
/// it>`.
fn edit_id(edit: &MessageEdit) -> String {
    let text = || sha256_hex(&edit.text)[..16].to_owned();
    let suffix = match edit.edited_at {
        Some(at) if at.as_millis() % 1000 == 0 => format!("{}:{}", at.as_millis(), text()),
        Some(at) => at.as_millis().to_string(),
        None => text(),
    };
    fitted(
        format!("{}:edit:{suffix}", edit.provider_message_id),
        "edit",
    )
}

/// The update id of a delivery receipt: `<message id>:<status>`, so that
/// each status is applied once.
fn receipt_id(id: &str, status: ReplyStatus) -> String {
    fitted(format!("{id}:{}", status.as_str()), "receipt")
}

/// `id`, or `<kind>:<its SHA-256>` when it is longer than the intake keeps
/// (a provider's id may be as long as the limit itself).
fn fitted(id: String, kind: &str) -> String {
    if id.len() <= MAX_ID_BYTES {
        id
    } else {
        format!("{kind}:{}", sha256_hex(&id))
    }
}

/// A body of at most `max` bytes; one that is larger and one that broke off
/// are told apart (413 and 400).
async fn read_body(body: Body, max: usize) -> Result<axum::body::Bytes, Refusal> {
    use switchboard_channel::body::ReadError;
    switchboard_channel::body::read(body, max)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(_) => Refusal::TooLarge,
            ReadError::TooSlow => Refusal::TooSlow,
            ReadError::Broken(m) => Refusal::Broken(m),
        })
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub(crate) fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The outbound half of an adapter: its senders, built (and so checked)
/// with the adapter, and the loop that delivers its outbox through them.
pub(crate) struct Replies {
    senders: Arc<Senders>,
}

impl Replies {
    pub(crate) fn new(name: &str, configs: Vec<SendConfig>) -> Result<Replies, ChannelError> {
        let client = http_client(std::time::Duration::from_secs(5))
            .map_err(|e| config_error(name, "replies", &e.to_string()))?;
        let senders = configs
            .into_iter()
            .map(|c| Sender::new(c, client.clone()))
            .collect::<Result<Vec<_>, _>>()
            .and_then(Senders::new)
            .map_err(|e| config_error(name, "replies", &e.to_string()))?;
        Ok(Replies {
            senders: Arc::new(senders),
        })
    }

    /// Delivers the adapter's outbox until shutdown (nothing to do when it
    /// sends no replies: they stay in the outbox).
    ///
    /// One instance delivers an outbox at a time
    /// ([`switchboard_channel::Outbox::hold_delivery`]),
    /// because the deliverer keeps each conversation's replies in order in
    /// its memory. The others wait and take over when the holder stops
    /// renewing (it died, or shut down and released it); replies the holder
    /// had taken come back through the outbox's visibility timeout, or at
    /// once when it hands them back on shutdown.
    pub(crate) fn run(self, ctx: ChannelContext) -> BoxFuture<'static, Result<(), ChannelError>> {
        Box::pin(async move {
            if self.senders.is_empty() {
                ctx.shutdown.cancelled().await;
                return Ok(());
            }
            // Known outcomes and partial sends, from one hold to the next.
            let mut memory = Memory::default();
            while !ctx.shutdown.is_cancelled() {
                let asked = tokio::time::Instant::now();
                match ctx.outbox.hold_delivery(HOLD_LEASE).await {
                    Ok(true) => memory = self.deliver_while_held(&ctx, memory, asked).await?,
                    Ok(false) => {}
                    Err(error) => {
                        // Nothing is delivered meanwhile, by this instance
                        // nor (Redis down) any other: counted, and said.
                        counter!("switchboard_social_outbox_errors_total", "op" => "hold")
                            .increment(1);
                        switchboard_channel::warn_throttled!(HOLD_FAILED, source = %ctx.name, %error, "Could not ask for the outbox's lease; replies wait until Redis answers.");
                    }
                }
                tokio::select! {
                    () = ctx.shutdown.cancelled() => {}
                    () = tokio::time::sleep(HOLD_LEASE / 3) => {}
                }
            }
            Ok(())
        })
    }

    async fn deliver_while_held(
        &self,
        ctx: &ChannelContext,
        memory: Memory,
        held_since: tokio::time::Instant,
    ) -> Result<Memory, ChannelError> {
        let deliverer = Deliverer::new(
            ctx.outbox.clone(),
            self.senders.clone(),
            DeliverySettings {
                source: ctx.name.clone(),
                ..DeliverySettings::default()
            },
        )
        .map_err(|e| ChannelError::Config(format!("channels.{}: {e}", ctx.name)))?
        .remembering(memory);
        debug!(source = %ctx.name, "This instance delivers the outbox now.");
        let stop = ctx.shutdown.child_token();
        let mut running = tokio::spawn(deliverer.run(stop.clone()));
        let renew = || ctx.outbox.hold_delivery(HOLD_LEASE);
        let ran = hold_while(renew, held_since, &mut running, &stop, &ctx.name).await;
        let memory = ended(ran, &ctx.name);
        if ctx.shutdown.is_cancelled() {
            let _ = ctx.outbox.release_delivery().await;
        }
        Ok(memory)
    }
}

/// Renews the outbox's lease (`renew`) while the deliverer `running` runs,
/// and stops it (`stop`) when the lease is lost: refused, or not renewed in
/// time. Returns how the deliverer ended.
async fn hold_while<'a, F>(
    mut renew: F,
    held_since: tokio::time::Instant,
    running: &mut tokio::task::JoinHandle<Memory>,
    stop: &tokio_util::sync::CancellationToken,
    source: &str,
) -> Result<Memory, tokio::task::JoinError>
where
    F: FnMut() -> BoxFuture<'a, Result<bool, switchboard_channel::OutboxError>>,
{
    // When the lease last held, counted from the asking (Redis set it no
    // earlier), so the holder stops while the lease still stands.
    let mut renewed = held_since;
    // After a failed renewal the next comes sooner, so that a short Redis
    // hiccup does not hand the outbox over.
    let mut next = HOLD_RENEW;
    loop {
        tokio::select! {
            ran = &mut *running => return ran,
            () = tokio::time::sleep(next.min(lease_left(renewed))) => {}
        }
        let asked = tokio::time::Instant::now();
        let left = lease_left(renewed);
        match tokio::time::timeout(left, renew()).await {
            Ok(Ok(true)) => {
                renewed = asked;
                next = HOLD_RENEW;
            }
            Ok(Ok(false)) => stop.cancel(),
            Ok(Err(_)) | Err(_) if lease_left(renewed).is_zero() => {
                counter!("switchboard_social_outbox_errors_total", "op" => "hold").increment(1);
                warn!(%source, "The outbox's lease could not be renewed in time; this instance stops delivering.");
                stop.cancel();
            }
            Ok(Err(_)) | Err(_) => {
                counter!("switchboard_social_outbox_errors_total", "op" => "hold").increment(1);
                next = HOLD_RETRY;
            }
        }
        if stop.is_cancelled() {
            return (&mut *running).await;
        }
    }
}

/// What a deliverer that ended leaves for the next: its memory, or none
/// when it panicked (counted and logged: replies whose settle it had not
/// written may then be sent again).
fn ended(ran: Result<Memory, tokio::task::JoinError>, source: &str) -> Memory {
    ran.unwrap_or_else(|error| {
        counter!("switchboard_social_outbox_errors_total", "op" => "deliverer").increment(1);
        tracing::error!(%source, %error, "The outbox deliverer failed; the next one starts afresh.");
        Memory::default()
    })
}

/// Failures to ask for the outbox's lease: logged at most once a minute.
static HOLD_FAILED: switchboard_channel::logs::LogThrottle =
    switchboard_channel::logs::LogThrottle::new(std::time::Duration::from_secs(60));

/// How long the right to deliver an outbox lasts unless renewed.
const HOLD_LEASE: std::time::Duration = std::time::Duration::from_secs(9);
/// How often its holder renews it.
const HOLD_RENEW: std::time::Duration = std::time::Duration::from_secs(2);
/// How soon a renewal that failed is tried again.
const HOLD_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a holder whose lease last held at `renewed` may go on: it
/// stops a third of the lease (3 s) before the lease can run out in
/// Redis, so that no other instance holds it while this one still starts
/// sends; Redis failing for up to about 4 s after a renewal is ridden out.
fn lease_left(renewed: tokio::time::Instant) -> std::time::Duration {
    (HOLD_LEASE * 2 / 3).saturating_sub(renewed.elapsed())
}

/// A configuration error naming the key.
pub(crate) fn config_error(name: &str, key: &str, problem: &str) -> ChannelError {
    ChannelError::Config(format!("channels.{name}.{key}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Platform;
    use switchboard_core::{CustomerIdentity, Timestamp};

    /// A body cut off by the daemon's deadline is a timeout (408), not a
    /// broken body (400); one that broke off is broken.
    #[tokio::test]
    async fn a_body_past_the_deadline_is_told_from_a_broken_one() {
        let cut = |e: axum::Error| {
            Body::from_stream(futures::stream::iter([Err::<axum::body::Bytes, _>(e)]))
        };
        let slow = read_body(
            cut(axum::Error::new(switchboard_channel::body::BodyTooSlow)),
            100,
        )
        .await;
        assert!(
            matches!(slow, Err(Refusal::TooSlow)),
            "{:?}",
            slow.err().map(|r| r.kind())
        );
        let broken = read_body(cut(axum::Error::new(std::io::Error::other("reset"))), 100).await;
        assert!(
            matches!(broken, Err(Refusal::Broken(_))),
            "{:?}",
            broken.err().map(|r| r.kind())
        );
    }

    fn edit(text: &str, edited_at: Option<u64>) -> MessageEdit {
        MessageEdit {
            platform: Platform::Generic,
            account: None,
            customer: CustomerIdentity::new("generic", "u-42").expect("identity"),
            provider_message_id: "m-1".into(),
            text: text.into(),
            edited_at: edited_at.map(Timestamp),
        }
    }

    #[test]
    fn edits_without_a_time_are_told_apart_by_their_text() {
        let first = edit_id(&edit("Hello again", None));
        let second = edit_id(&edit("Hello again and again", None));
        assert_ne!(first, second);
        assert_eq!(first, edit_id(&edit("Hello again", None)));
        assert!(first.starts_with("m-1:edit:"), "{first}");
        assert_eq!(first.len(), "m-1:edit:".len() + 16);
        assert_eq!(
            edit_id(&edit("Hello again", Some(1_795_341_700_123))),
            "m-1:edit:1795341700123"
        );
        // Whole seconds (Telegram): two edits within one second are two,
        // a repeated delivery of one is one.
        let second = Some(1_795_341_700_000);
        let (a, b) = (
            edit_id(&edit("Hello again", second)),
            edit_id(&edit("Hello again!", second)),
        );
        assert_ne!(a, b);
        assert_eq!(a, edit_id(&edit("Hello again", second)));
        assert!(a.starts_with("m-1:edit:1795341700000:"), "{a}");
        let mut long = edit("Hello again", None);
        long.provider_message_id = "x".repeat(512);
        let id = edit_id(&long);
        assert!(id.starts_with("edit:") && id.len() <= MAX_ID_BYTES, "{id}");
    }

    /// The lease holder rides out a renewal that fails now and then (one
    /// such failure made it give the outbox up), and stops before the lease
    /// can lapse when renewals keep failing, or at once when refused.
    #[tokio::test(start_paused = true)]
    async fn the_holder_rides_out_a_failed_renewal_and_stops_before_the_lease_lapses() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use switchboard_channel::OutboxError;
        use tokio::time::{Duration, Instant};
        // Runs until stopped; answers `calls` renewals with `answer(n)`.
        async fn hold(answer: fn(u32) -> Result<bool, OutboxError>) -> (Duration, u32) {
            let stop = tokio_util::sync::CancellationToken::new();
            let inner = stop.clone();
            let mut running = tokio::spawn(async move {
                inner.cancelled().await;
                Memory::default()
            });
            let calls = AtomicU32::new(0);
            let started = Instant::now();
            let renew = || -> BoxFuture<'_, Result<bool, OutboxError>> {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                // Redis takes a moment to answer.
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    answer(n)
                })
            };
            let outcome = tokio::time::timeout(
                Duration::from_secs(60),
                hold_while(renew, started, &mut running, &stop, "meta"),
            )
            .await;
            let stopped = started.elapsed();
            assert!(outcome.is_ok_and(|r| r.is_ok()), "the holder never stopped");
            (stopped, calls.load(Ordering::SeqCst))
        }
        // Every fourth renewal fails: it holds on.
        let flaky = tokio::time::timeout(
            Duration::from_secs(30),
            hold(|n| {
                if n % 4 == 1 {
                    Err(OutboxError::Unavailable("blip".into()))
                } else {
                    Ok(true)
                }
            }),
        )
        .await;
        assert!(
            flaky.is_err(),
            "gave the outbox up over a single failed renewal: {flaky:?}"
        );
        // Redis gone: it stops 6 s after the lease was last taken, before
        // the 9 s lease can lapse.
        let (stopped, calls) = hold(|_| Err(OutboxError::Unavailable("down".into()))).await;
        assert!(
            stopped <= Duration::from_millis(6100) && stopped >= Duration::from_secs(5),
            "{stopped:?}"
        );
        assert!(calls >= 3, "{calls} renewals tried");
        // Another instance holds it: it stops at the first refusal (2 s).
        let (stopped, _) = hold(|_| Ok(false)).await;
        assert_eq!(stopped, Duration::from_millis(2010));
    }

    /// A deliverer that panicked leaves no memory and is counted; one that
    /// ended leaves its memory, uncounted.
    #[tokio::test]
    async fn a_deliverer_that_panicked_is_counted() {
        let counters = switchboard_testkit::counters::Counters::default();
        let _recorder = metrics::set_default_local_recorder(&counters);
        let panicked = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("a deliverer's bug");
            }
            Memory::default()
        })
        .await;
        assert!(panicked.as_ref().is_err_and(|e| e.is_panic()));
        let _ = ended(panicked, "meta");
        let _ = ended(Ok(Memory::default()), "meta");
        assert_eq!(
            counters.get("switchboard_social_outbox_errors_total{op=deliverer}"),
            1,
            "{}",
            counters.dump()
        );
    }

    /// A body that broke off was answered 413 `too_large` and counted so.
    #[tokio::test]
    async fn a_broken_body_is_not_too_large() {
        let broken = Body::from_stream(futures::stream::iter([
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let refusal = read_body(broken, 1000).await.expect_err("broken");
        assert_eq!(refusal.kind(), "broken_body");
        let big = Body::from(vec![b'x'; 1001]);
        assert_eq!(
            read_body(big, 1000).await.expect_err("too large").kind(),
            "too_large"
        );
        let fits = read_body(Body::from("{}"), 1000).await.expect("fits");
        assert_eq!(&fits[..], b"{}");
    }

    /// A receipt of a message whose id is near the limit was refused with
    /// 422 (`update_id` too long), a field the sender never sent.
    #[test]
    fn receipt_ids_fit_the_intake_whatever_the_message_id() {
        assert_eq!(
            receipt_id("wamid.1", ReplyStatus::Delivered),
            "wamid.1:delivered"
        );
        let long = "x".repeat(505);
        let delivered = receipt_id(&long, ReplyStatus::Delivered);
        let read = receipt_id(&long, ReplyStatus::Read);
        assert!(delivered.len() <= MAX_ID_BYTES, "{delivered}");
        assert!(delivered.starts_with("receipt:"), "{delivered}");
        assert_ne!(delivered, read);
    }
}
