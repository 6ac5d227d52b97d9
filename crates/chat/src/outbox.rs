//! Agents' replies on the chat channel.
//!
//! `Conversations::reply` puts a reply in this channel's outbox and then
//! appends it to the conversation log; the visitor's sessions read it from
//! the log (woken by the doorbell). So delivering a chat reply only means
//! settling it once it is in the log: `Delivered` (no provider id). A reply
//! not in the log after a few tries (the append failed) is `Failed`, so the
//! agent sees it never reached the visitor.
//!
//! A reply to an offline-form contact (customer `email:…`) is forwarded to
//! the outbox of the configured email channel, which mails it (from
//! `offline.address`) and records its outcome.

use crate::Shared;
use metrics::counter;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{OutboundDelivery, Outbox};
use switchboard_core::{ChannelKind, DeliveryOutcome};
use tracing::{Instrument, debug, info, info_span, warn};

/// How often a reply is looked for in the log before it counts as lost.
const LOG_ATTEMPTS: u32 = 10;

pub async fn run(shared: Arc<Shared>) {
    let outbox = shared.ctx.outbox.clone();
    let shutdown = shared.ctx.shutdown.clone();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = outbox.next(Duration::from_secs(5)) => next,
        };
        match next {
            Ok(Some(delivery)) => {
                let span = info_span!("chat_reply",
                    contact_id = %delivery.message.contact_id,
                    conversation_id = %delivery.message.conversation_id,
                    message_id = %delivery.message.message_id,
                    attempt = delivery.attempt);
                deliver(&shared, outbox.as_ref(), delivery)
                    .instrument(span)
                    .await;
            }
            Ok(None) => {}
            Err(error) => {
                counter!("switchboard_chat_outbox_errors_total", "op" => error_op(&error))
                    .increment(1);
                warn!(%error, "Chat outbox unavailable; retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn deliver(shared: &Shared, outbox: &dyn Outbox, delivery: OutboundDelivery) {
    let message = &delivery.message;
    // The outcome counted once it is written (a settle that fails is
    // handed out again, and would be counted twice).
    let (result, outcome) = if message.to.scheme == "email" {
        match &shared.config.offline {
            Some(offline) => {
                let mut mail = message.clone();
                mail.channel = ChannelKind::Email;
                mail.source = offline.email_channel.clone();
                mail.from_address = offline.address.clone();
                if mail.subject.is_none() {
                    let title = shared
                        .config
                        .widget(&message.from_address)
                        .and_then(|w| w.title.clone())
                        .unwrap_or_else(|| "Your message".into());
                    mail.subject = Some(title);
                }
                info!(email_channel = %offline.email_channel, "Offline-form answer forwarded to email.");
                (outbox.forward(&delivery, mail).await, Some("forwarded"))
            }
            None => (
                outbox
                    .settle(
                        &delivery,
                        DeliveryOutcome::Failed {
                            reason: "this chat has no offline email channel configured".into(),
                        },
                    )
                    .await,
                Some("failed"),
            ),
        }
    } else {
        let found = shared
            .ctx
            .conversations
            .find_recent(
                &message.conversation_id,
                &message.message_id.to_string(),
                200,
            )
            .await;
        match found {
            Ok(Some(_)) => (
                outbox
                    .settle(&delivery, DeliveryOutcome::delivered(None))
                    .await,
                Some("delivered"),
            ),
            Ok(None) if delivery.attempt < LOG_ATTEMPTS => {
                debug!("Reply not in the log yet; looking again shortly.");
                (
                    outbox.defer(&delivery, Duration::from_millis(500)).await,
                    None,
                )
            }
            Ok(None) => {
                warn!("A chat reply never reached the conversation log.");
                (
                    outbox
                        .settle(
                            &delivery,
                            DeliveryOutcome::Failed {
                                reason: "the reply was not recorded in the conversation".into(),
                            },
                        )
                        .await,
                    Some("failed"),
                )
            }
            Err(error) => {
                debug!(%error, "Cannot read the log; deferring the reply.");
                (outbox.defer(&delivery, Duration::from_secs(1)).await, None)
            }
        }
    };
    match result {
        Ok(()) => {
            if let Some(outcome) = outcome {
                counter!("switchboard_chat_replies_total", "outcome" => outcome).increment(1);
            }
        }
        Err(error) => {
            counter!("switchboard_chat_outbox_errors_total", "op" => "settle").increment(1);
            warn!(%error, "Could not settle a chat reply; it is handed out again later.");
        }
    }
}

/// `next` for an outbox that cannot be read, `corrupt` for an entry that
/// is no delivery (the outbox set it aside).
fn error_op(error: &switchboard_channel::OutboxError) -> &'static str {
    match error {
        switchboard_channel::OutboxError::Corrupt { .. } => "corrupt",
        switchboard_channel::OutboxError::Unavailable(_) => "next",
    }
}
