//! The tasks the deliver loop starts: the outbox reader, one send, and
//! outbox writes (settle, defer).

use super::queue::Action;
use crate::send::{FailureKind, Progress, SendOutcome, Senders};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_channel::{OutboundDelivery, Outbox, OutboxError};
use switchboard_core::{ConversationId, DeliveryOutcome, MessageId};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The result of one task the dispatcher started.
#[derive(Debug)]
pub(super) enum Done {
    Sent {
        conversation: ConversationId,
        id: MessageId,
        outcome: SendOutcome,
        progress: Progress,
    },
    Deferred {
        conversation: ConversationId,
        id: MessageId,
        ok: bool,
    },
    Other,
}

/// Takes deliveries from the outbox while there is room in memory.
pub(super) async fn read(
    outbox: Arc<dyn Outbox>,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<(OutboundDelivery, Instant)>,
    shutdown: CancellationToken,
    poll_wait: Duration,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        // Not cancelled half-way: a delivery read is passed on even during
        // shutdown, so it is handed back in order rather than left pending.
        match outbox.next(poll_wait).await {
            Ok(Some(delivery)) => {
                permit.forget();
                pause = Duration::from_millis(100);
                if tx.send((delivery, Instant::now())).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(OutboxError::Corrupt { handle, reason }) => {
                metrics::counter!("switchboard_social_outbox_errors_total", "op" => "corrupt")
                    .increment(1);
                tracing::error!(handle = %handle, reason = %reason, "An outbox entry cannot be read; the outbox set it aside.");
            }
            Err(OutboxError::Unavailable(reason)) => {
                metrics::counter!("switchboard_social_outbox_errors_total", "op" => "next")
                    .increment(1);
                tracing::warn!(reason = %reason, "The outbox is unavailable; trying again.");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Sends one reply (the parts not yet accepted) and settles a final outcome.
pub(super) async fn send(
    outbox: Arc<dyn Outbox>,
    senders: Arc<Senders>,
    conversation: ConversationId,
    delivery: OutboundDelivery,
    mut progress: Progress,
    deadline: Instant,
) -> Done {
    let msg = &delivery.message;
    let span = tracing::info_span!(
        "social_reply",
        conversation_id = %conversation,
        contact_id = %msg.contact_id,
        message_id = %msg.message_id,
        attempt = delivery.attempt,
    );
    async {
        let outcome = match senders.for_message(msg) {
            Ok(sender) => sender.send_until(msg, &mut progress, Some(deadline)).await,
            Err(unroutable) => {
                tracing::error!(reason = %unroutable, "A reply has no sender.");
                // Counted as every permanent failure is; no request was
                // made, so not as a send.
                let platform =
                    crate::send::platform_of(&msg.to.scheme).map_or("unknown", |p| p.as_str());
                metrics::counter!("switchboard_social_send_failures_total",
                    "platform" => platform, "kind" => FailureKind::Unroutable.as_str())
                .increment(1);
                SendOutcome::failed(FailureKind::Unroutable, None, unroutable.to_string())
            }
        };
        if let Some(final_outcome) = outcome.to_delivery_outcome(&progress) {
            // Counted once its outcome is recorded: one that could not be
            // is settled (and counted) when the outbox hands it out again.
            if let Err(error) = outbox.settle(&delivery, final_outcome).await {
                metrics::counter!("switchboard_social_outbox_errors_total", "op" => "settle")
                    .increment(1);
                tracing::warn!(error = %error, "Could not record a reply's outcome; it is settled when the outbox hands it out again.");
            } else {
                metrics::counter!("switchboard_social_replies_total", "outcome" => outcome.label())
                    .increment(1);
            }
        }
        Done::Sent {
            conversation,
            id: msg.message_id,
            outcome,
            progress,
        }
    }
    .instrument(span)
    .await
}

/// Settles or defers, one after the other (a batch keeps its order).
pub(super) async fn outbox_write(outbox: Arc<dyn Outbox>, actions: Vec<Action>) -> Done {
    let mut last = Done::Other;
    for action in actions {
        last = match action {
            Action::Settle { delivery, outcome } => {
                let label = match outcome {
                    DeliveryOutcome::Delivered { .. } => "delivered",
                    DeliveryOutcome::Failed { .. } => "failed",
                };
                if let Err(error) = outbox.settle(&delivery, outcome).await {
                    metrics::counter!("switchboard_social_outbox_errors_total", "op" => "settle")
                        .increment(1);
                    tracing::warn!(message_id = %delivery.message.message_id, error = %error, "Could not record a reply's outcome.");
                } else {
                    metrics::counter!("switchboard_social_replies_total", "outcome" => label)
                        .increment(1);
                }
                Done::Other
            }
            Action::Defer {
                conversation,
                delivery,
                delay,
            } => {
                let id = delivery.message.message_id;
                let ok = match outbox.defer(&delivery, delay).await {
                    Ok(()) => {
                        metrics::counter!("switchboard_social_replies_total", "outcome" => "deferred")
                            .increment(1);
                        true
                    }
                    Err(error) => {
                        metrics::counter!("switchboard_social_outbox_errors_total", "op" => "defer")
                            .increment(1);
                        tracing::warn!(message_id = %id, error = %error, "Could not hand a reply back to the outbox; it comes back after the visibility timeout.");
                        false
                    }
                };
                Done::Deferred {
                    conversation,
                    id,
                    ok,
                }
            }
            Action::Send { .. } => Done::Other,
        };
    }
    last
}
