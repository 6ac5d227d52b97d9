//! Changes to messages that exist already: a customer's edit (a new entry
//! in the conversation log pointing at the message it edits), an automatic
//! answer to one of our replies (an `auto` entry in the log) and a
//! provider's status for one of our replies (kept per reply, never going
//! back: `read` stays `read` when a late `delivered` arrives).
//!
//! Both find their message by the provider's id: an inbound message through
//! its dedupe key (so an edit is matched within the dedupe window), a reply
//! through the key the outbox writes when the provider accepts it
//! ([`crate::keys::KeySpace::reply_ref`], kept [`REPLY_REF_TTL`]); a reply
//! sent on another source than its conversation's is found through
//! [`crate::keys::KeySpace::reply_home`].

use crate::{RedisIntake, StoreError};
use metrics::counter;
use std::time::Duration;
use switchboard_core::{
    Change, ChannelKind, InboundUpdate, IntakeError, MessageId, Partition, ReplyStatus, Timestamp,
    UpdateOutcome,
};
use tracing::debug;

/// How long a reply's provider id is remembered for its receipts.
pub const REPLY_REF_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a social provider's status that came before its reply was
/// settled is kept for the settle ([`UpdateOutcome::Early`]): longer than a
/// settle that failed takes to be retried (the outbox's visibility timeout,
/// 60 s, and the deliverer's handing out again).
pub const EARLY_STATUS_TTL: Duration = Duration::from_secs(600);

impl RedisIntake {
    /// Applies `update` durably (or finds there is nothing to apply).
    pub async fn submit_update(&self, update: InboundUpdate) -> Result<UpdateOutcome, IntakeError> {
        let channel = update.channel.as_str();
        let source = update.source.clone();
        let kind = match update.change {
            Change::Edited { .. } => "edit",
            Change::AutoReply { .. } => "auto_reply",
            Change::Status { .. } => "status",
        };
        let result = self.store_update(update).await;
        match &result {
            Ok(outcome) => counter!("switchboard_intake_updates_total",
                "channel" => channel, "source" => source, "kind" => kind, "outcome" => outcome.as_str())
            .increment(1),
            Err(error) => counter!("switchboard_intake_errors_total",
                "channel" => channel, "source" => source, "error_type" => error.kind())
            .increment(1),
        }
        result
    }

    async fn store_update(&self, update: InboundUpdate) -> Result<UpdateOutcome, IntakeError> {
        if let Some(refused) = self.refusal() {
            return Err(refused);
        }
        let update = update.validate(self.settings.limits)?;
        let keys = self.store.keys();
        let p = keys.partition_of(&update.source, &update.customer);
        let outcome = self.update_in(&update, p).await?;
        if !matches!(
            outcome,
            UpdateOutcome::UnknownMessage | UpdateOutcome::Early
        ) || matches!(update.change, Change::Edited { .. })
        {
            return Ok(outcome);
        }
        // A reply whose conversation lives in another partition (see
        // `KeySpace::reply_home`) is applied there.
        let mut conn = self.store.conn();
        let home: Option<u16> = self
            .store
            .bounded(
                redis::cmd("GET")
                    .arg(keys.reply_home(p, &update.source, &update.provider_message_id))
                    .query_async(&mut conn),
            )
            .await
            .map_err(|e| IntakeError::Unavailable(e.to_string()))?;
        match home.map(Partition) {
            Some(home) if home != p && home.0 < keys.partitions() => {
                self.update_in(&update, home).await
            }
            _ => Ok(outcome),
        }
    }

    /// Runs the update script for `update` against partition `p`.
    async fn update_in(
        &self,
        update: &InboundUpdate,
        p: Partition,
    ) -> Result<UpdateOutcome, IntakeError> {
        let keys = self.store.keys();
        let now = Timestamp::now();
        // The mark's key, and where marks were kept before (until
        // 2026-11-26: among messages' marks, so a message whose id was
        // `update:<id>` clashed with it); the old one is only read, until
        // it expires.
        let (has_id, own_key, old_key) = match &update.update_id {
            Some(id) => (
                "1",
                keys.update_seen(p, &update.source, id),
                keys.dedupe_before_2026_11_27(p, &update.source, &format!("update:{id}")),
            ),
            None => ("0", keys.routing(p), keys.routing(p)),
        };
        let at = update.at.unwrap_or(now);
        let mut invocation = self.update_script.prepare_invoke();
        invocation.key(own_key);
        match &update.change {
            Change::Edited { text } => {
                let entry = serde_json::json!({
                    "of_provider_message_id": update.provider_message_id,
                    "text": text,
                    "edited_at": at,
                });
                invocation
                    .key(keys.dedupe(
                        p,
                        &update.source,
                        &update.customer,
                        &update.provider_message_id,
                    ))
                    .arg(has_id)
                    .arg(self.settings.dedupe_window.as_secs().max(1))
                    .arg("edit")
                    .arg(now.as_millis())
                    .arg(keys.tag(p))
                    .arg(MessageId::new().to_string())
                    .arg(entry.to_string());
            }
            Change::AutoReply { text } => {
                let entry = serde_json::json!({
                    "of_provider_message_id": update.provider_message_id,
                    "text": text,
                    "received_at": at,
                });
                invocation
                    .key(keys.reply_ref(p, &update.source, &update.provider_message_id))
                    .arg(has_id)
                    .arg(self.settings.dedupe_window.as_secs().max(1))
                    .arg("auto")
                    .arg(now.as_millis())
                    .arg(keys.tag(p))
                    .arg(MessageId::new().to_string())
                    .arg(entry.to_string());
            }
            Change::Status { status, detail } => {
                let entry = serde_json::json!({ "status": status, "detail": detail, "at": at });
                invocation
                    .key(keys.reply_ref(p, &update.source, &update.provider_message_id))
                    .arg(has_id)
                    .arg(self.settings.dedupe_window.as_secs().max(1))
                    .arg("status")
                    .arg(now.as_millis())
                    .arg(keys.tag(p))
                    .arg(rank(*status))
                    .arg(entry.to_string())
                    // A social provider's receipt names our reply by the
                    // exact id it gave it, and may come before we recorded
                    // that id: kept for the settle. (Email matches replies
                    // by guessing among references: not kept.)
                    .arg(if update.channel == ChannelKind::Social {
                        "1"
                    } else {
                        ""
                    })
                    .arg(EARLY_STATUS_TTL.as_secs());
            }
        }
        invocation.key(old_key);
        // Only a status reads it (see `KeySpace::replying`).
        invocation.key(keys.replying(p, &update.source, &update.customer));
        let mut conn = self.store.conn();
        let reply: String = self
            .store
            .bounded(invocation.invoke_async(&mut conn))
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => IntakeError::Unavailable(m),
                other => IntakeError::Unavailable(other.to_string()),
            })?;
        let outcome = match reply.split('|').next() {
            Some("applied") => UpdateOutcome::Applied,
            Some("stale") => UpdateOutcome::Stale,
            Some("duplicate") => UpdateOutcome::Duplicate,
            Some("unknown") => UpdateOutcome::UnknownMessage,
            Some("early") => UpdateOutcome::Early,
            _ => {
                return Err(IntakeError::Unavailable(format!(
                    "unexpected update reply {reply:?}"
                )));
            }
        };
        debug!(reply = %reply, outcome = outcome.as_str(), "Update applied.");
        Ok(outcome)
    }
}

fn rank(status: ReplyStatus) -> u8 {
    match status {
        ReplyStatus::Sent => 1,
        ReplyStatus::Delivered => 2,
        ReplyStatus::Read => 3,
        ReplyStatus::Failed => 4,
    }
}
