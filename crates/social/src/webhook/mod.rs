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

pub mod generic;
pub mod meta;
pub mod telegram;

use crate::send::deliver::{Deliverer, DeliverySettings};
use crate::send::{SendConfig, Sender, Senders, http_client};
use crate::{
    MessageEdit, ParseError, Receipt, ReceiptStatus, ReceiptTarget, SignatureError, SocialItem,
};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use metrics::counter;
use std::collections::HashSet;
use std::sync::Arc;
use switchboard_channel::{ChannelContext, ChannelError, Intake};
use switchboard_core::{
    Change, ChannelKind, InboundUpdate, IntakeError, ReplyStatus, UpdateOutcome,
};
use tracing::{debug, warn};

/// The default largest delivery accepted, in bytes (Meta batches up to 1000
/// events; Telegram sends one update per request).
pub(crate) fn default_max_body() -> usize {
    1024 * 1024
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
}

/// Why a delivery was not acknowledged.
#[derive(Debug)]
pub(crate) enum Refusal {
    TooLarge,
    Signature(SignatureError),
    Parse(ParseError),
    Unavailable(String),
}

impl Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Signature(_) => "bad_signature",
            Self::Parse(_) => "bad_payload",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Webhook {
    /// The body, if it is no larger than allowed.
    pub(crate) async fn read(&self, body: Body) -> Result<axum::body::Bytes, Refusal> {
        axum::body::to_bytes(body, self.max_body)
            .await
            .map_err(|_| Refusal::TooLarge)
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
            Err(Refusal::Signature(e)) => {
                warn!(source = %self.name, error = %e, "Webhook delivery refused: bad signature.");
                error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
            }
            Err(Refusal::Parse(e)) => {
                debug!(source = %self.name, error = %e, "Webhook delivery refused: unreadable body.");
                error(StatusCode::BAD_REQUEST, e.kind(), e.to_string())
            }
            Err(Refusal::Unavailable(m)) => {
                warn!(source = %self.name, error = %m, "Webhook delivery not stored; the provider will retry.");
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
        }
    }

    /// Stores every item of a delivery, in order. `Err` only when the store
    /// is unavailable: then nothing may be acknowledged.
    pub(crate) async fn store(&self, items: Vec<SocialItem>) -> Result<usize, Refusal> {
        let count = items.len();
        for item in items {
            let (kind, outcome) = self.store_item(item).await?;
            counter!("switchboard_social_items_total",
                "source" => self.name.clone(), "kind" => kind, "outcome" => outcome)
            .increment(1);
        }
        Ok(count)
    }

    fn known(&self, account: Option<&str>) -> bool {
        match (&self.accounts, account) {
            (None, _) => true,
            (Some(set), Some(a)) => set.contains(a),
            (Some(_), None) => false,
        }
    }

    async fn store_item(&self, item: SocialItem) -> Result<(&'static str, &'static str), Refusal> {
        match item {
            SocialItem::Message(m) => {
                if !self.known(m.account.as_deref()) {
                    warn!(source = %self.name, account = ?m.account, "A message for an account that is not configured was skipped.");
                    return Ok(("message", "unknown_account"));
                }
                let event = m.into_inbound(&self.name);
                match self.intake.submit(event).await {
                    Ok(receipt) => Ok(("message", receipt.outcome.as_str())),
                    Err(IntakeError::Invalid(e)) => {
                        warn!(source = %self.name, error = %e, "A message was refused by the intake.");
                        Ok(("message", "invalid"))
                    }
                    Err(e) => Err(Refusal::Unavailable(e.to_string())),
                }
            }
            SocialItem::Edit(edit) => self.store_edit(edit).await,
            SocialItem::Receipt(receipt) => self.store_receipt(receipt).await,
            SocialItem::Echo(_) => Ok(("echo", "skipped")),
            SocialItem::Ignored(ignored) => {
                debug!(source = %self.name, reason = ignored.reason, "Webhook event ignored.");
                Ok(("ignored", ignored.reason))
            }
        }
    }

    /// An edit updates the message it edits. When that message is unknown
    /// (older than the dedupe window, or its delivery never reached us) the
    /// new text is stored as a message, so the customer's words are not lost.
    async fn store_edit(&self, edit: MessageEdit) -> Result<(&'static str, &'static str), Refusal> {
        if !self.known(edit.account.as_deref()) {
            return Ok(("edit", "unknown_account"));
        }
        let edited_at = edit.edited_at.map(|t| t.as_millis()).unwrap_or(0);
        let update_id = format!("{}:edit:{edited_at}", edit.provider_message_id);
        let update = InboundUpdate {
            channel: ChannelKind::Social,
            source: self.name.clone(),
            customer: edit.customer.clone(),
            provider_message_id: edit.provider_message_id.clone(),
            update_id: Some(update_id.clone()),
            change: Change::Edited {
                text: edit.text.clone(),
            },
            at: edit.edited_at,
        };
        match self.intake.update(update).await {
            Ok(UpdateOutcome::UnknownMessage) => {
                let message = crate::SocialMessage {
                    platform: edit.platform,
                    account: edit.account,
                    customer: edit.customer,
                    customer_name: None,
                    provider_message_id: update_id,
                    text: edit.text,
                    payload: None,
                    attachments: Vec::new(),
                    language: None,
                    sent_at: edit.edited_at,
                };
                match self.intake.submit(message.into_inbound(&self.name)).await {
                    Ok(_) => Ok(("edit", "stored_as_message")),
                    Err(IntakeError::Invalid(_)) => Ok(("edit", "invalid")),
                    Err(e) => Err(Refusal::Unavailable(e.to_string())),
                }
            }
            Ok(outcome) => Ok(("edit", outcome.as_str())),
            Err(IntakeError::Invalid(_)) => Ok(("edit", "invalid")),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }

    /// A receipt for one of our replies records how far it got. Read
    /// watermarks (Messenger's "everything before this time was read") and
    /// receipts without a customer are counted only.
    async fn store_receipt(
        &self,
        receipt: Receipt,
    ) -> Result<(&'static str, &'static str), Refusal> {
        let (ReceiptTarget::Message(id), Some(customer)) = (&receipt.target, receipt.customer)
        else {
            return Ok(("receipt", "unsupported"));
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
            update_id: Some(format!("{id}:{}", status.as_str())),
            change: Change::Status { status, detail },
            at: receipt.at,
        };
        match self.intake.update(update).await {
            Ok(outcome) => Ok(("receipt", outcome.as_str())),
            Err(IntakeError::Invalid(_)) => Ok(("receipt", "invalid")),
            Err(e) => Err(Refusal::Unavailable(e.to_string())),
        }
    }
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
            while !ctx.shutdown.is_cancelled() {
                match ctx.outbox.hold_delivery(HOLD_LEASE).await {
                    Ok(true) => self.deliver_while_held(&ctx).await?,
                    Ok(false) => {}
                    Err(error) => {
                        debug!(source = %ctx.name, %error, "Could not ask for the outbox.")
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

    async fn deliver_while_held(&self, ctx: &ChannelContext) -> Result<(), ChannelError> {
        let deliverer = Deliverer::new(
            ctx.outbox.clone(),
            self.senders.clone(),
            DeliverySettings::default(),
        )
        .map_err(|e| ChannelError::Config(format!("channels.{}: {e}", ctx.name)))?;
        debug!(source = %ctx.name, "This instance delivers the outbox now.");
        let stop = ctx.shutdown.child_token();
        let mut running = tokio::spawn(deliverer.run(stop.clone()));
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut running => break,
                () = tokio::time::sleep(HOLD_LEASE / 3) => {}
            }
            match ctx.outbox.hold_delivery(HOLD_LEASE).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => stop.cancel(),
                Err(_) if renewed.elapsed() >= HOLD_LEASE => stop.cancel(),
                Err(_) => {}
            }
            if stop.is_cancelled() {
                let _ = running.await;
                break;
            }
        }
        if ctx.shutdown.is_cancelled() {
            let _ = ctx.outbox.release_delivery().await;
        }
        Ok(())
    }
}

/// How long the right to deliver an outbox lasts unless renewed.
const HOLD_LEASE: std::time::Duration = std::time::Duration::from_secs(6);

/// A configuration error naming the key.
pub(crate) fn config_error(name: &str, key: &str, problem: &str) -> ChannelError {
    ChannelError::Config(format!("channels.{name}.{key}: {problem}"))
}
