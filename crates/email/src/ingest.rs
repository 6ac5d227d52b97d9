//! From raw mail to the intake: one place for the listener and the IMAP
//! fetcher. A customer's mail becomes a contact (or joins their open
//! conversation); an auto reply is recorded next to the reply it answers;
//! a bounce marks the reply it returns as failed; bulk mail is counted and
//! left alone unless configured. Nothing is acknowledged before the intake
//! (and the attachment store) has it.

use crate::attachments::AttachmentStore;
use crate::config::{Accepts, BulkPolicy, CustomerAddress};
use crate::parse::{self, MailKind, ParseLimits, ParsedMail};
use metrics::counter;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use switchboard_channel::Intake;
use switchboard_core::{
    Change, ChannelKind, CustomerIdentity, InboundEvent, InboundUpdate, IntakeError, ReplyStatus,
    Timestamp, UpdateOutcome,
};
use tracing::{info, warn};

/// The provider id of a mail without a Message-ID, fetched over IMAP:
/// `imap:<mailbox label>:<UIDVALIDITY>:<UID>`.
pub const IMAP_ID: &str = "imap:";
/// The provider id of any other mail without a Message-ID: the first 32
/// hex digits of its SHA-256.
pub const DIGEST_ID: &str = "sha256:";

/// Whether a stored provider id is one of ours, made up for a mail without
/// a Message-ID: nothing threads on it (and the IMAP one names the
/// mailbox's login and host).
pub fn is_made_up_id(id: &str) -> bool {
    id.starts_with(IMAP_ID) || id.starts_with(DIGEST_ID)
}

/// Mails up to this size are parsed where they arrive; larger ones on the
/// blocking pool: a 25 MiB mail takes up to a quarter of a second (HTML to
/// text, base64), which would hold a runtime thread that carries every
/// other connection (the daemon may run on one).
const PARSE_INLINE_MAX: usize = 256 * 1024;

/// [`parse::parse`], off the runtime's threads for a large mail. A parse
/// that panics (a defect) refuses the mail, counted and logged, rather than
/// ending the session that carried it.
async fn parse_mail(raw: &[u8], limits: &ParseLimits) -> Result<ParsedMail, IngestError> {
    if raw.len() <= PARSE_INLINE_MAX {
        return refused_if_panics(|| parse::parse(raw, limits));
    }
    let (raw, limits) = (raw.to_vec(), limits.clone());
    tokio::task::spawn_blocking(move || parse::parse(&raw, &limits))
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                // The runtime is shutting down: taken again later.
                IngestError::Temporary("shutting down".into())
            } else {
                tracing::error!(error = %e, "Parsing a mail failed.");
                IngestError::Rejected("the message could not be parsed".into())
            }
        })
}

/// Runs a parse where the caller is, a panic in it refused as the blocking
/// pool's join error is: it unwound the mail session's task, which dropped
/// the connection with no answer and nothing counted, and the MTA sent the
/// same mail again for days.
fn refused_if_panics(parse: impl FnOnce() -> ParsedMail) -> Result<ParsedMail, IngestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).map_err(|_| {
        tracing::error!("Parsing a mail panicked.");
        IngestError::Rejected("the message could not be parsed".into())
    })
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Stored as a customer message (`created`, `appended` or `duplicate`).
    Stored {
        contact_id: String,
        outcome: &'static str,
    },
    /// An auto reply or a bounce, applied to the reply it concerns (or not
    /// found: nothing to apply).
    Update {
        kind: &'static str,
        outcome: &'static str,
    },
    /// Bulk mail left alone.
    Ignored { kind: &'static str },
}

impl Taken {
    /// Whether something of the mail is kept: stored, or applied to the
    /// reply it concerns (now or before). Bulk mail left alone, and an
    /// automatic mail or delay notice that changed nothing, are not.
    pub fn kept(&self) -> bool {
        match self {
            Taken::Stored { .. } => true,
            Taken::Update { outcome, .. } => matches!(*outcome, "applied" | "duplicate"),
            Taken::Ignored { .. } => false,
        }
    }
}

/// Why a message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Try again later (Redis or the disk unavailable): 451 / retry.
    #[error("temporarily unavailable: {0}")]
    Temporary(String),
    /// It can never be taken: 550 / skip.
    #[error("{0}")]
    Rejected(String),
}

impl From<IntakeError> for IngestError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(i) => IngestError::Rejected(format!("invalid message: {i}")),
            other => IngestError::Temporary(other.to_string()),
        }
    }
}

/// Takes raw mail in for one email channel.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub source: String,
    pub intake: Arc<dyn Intake>,
    pub attachments: AttachmentStore,
    pub limits: ParseLimits,
    pub bulk: BulkPolicy,
    pub accepts: Accepts,
    pub customer_address: CustomerAddress,
    /// `reply_to_senders`: whose `Reply-To` names the customer.
    pub reply_to_senders: Vec<String>,
}

/// How one message arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrival<'a> {
    /// The envelope recipient it was delivered to (the listener).
    pub rcpt: Option<&'a str>,
    /// The address to use when neither the envelope nor the headers name
    /// one of the channel's (an IMAP mailbox's own).
    pub default_address: Option<&'a str>,
    /// The envelope sender (`MAIL FROM`), when there was one.
    pub envelope_from: Option<&'a str>,
    /// The envelope sender was null (`MAIL FROM:<>`): a notification,
    /// never answered automatically (RFC 3834 section 2, RFC 5321 4.5.5).
    pub null_sender: bool,
    /// The message's name when it has no Message-ID (an IMAP UID); a hash
    /// of the bytes otherwise.
    pub fallback_id: Option<&'a str>,
}

impl Ingest {
    /// Takes one message. A repeat (same Message-ID, or the same
    /// fallback id) is stored once.
    pub async fn take(&self, raw: &[u8], arrival: Arrival<'_>) -> Result<Taken, IngestError> {
        let mut mail = match parse_mail(raw, &self.limits).await {
            Ok(mail) => mail,
            Err(e) => {
                let outcome = match &e {
                    IngestError::Temporary(_) => "temporary",
                    IngestError::Rejected(_) => "rejected",
                };
                counter!("switchboard_email_intake_total",
                    "source" => self.source.clone(), "kind" => "unparsed", "outcome" => outcome)
                .increment(1);
                return Err(e);
            }
        };
        mail.no_auto_answer |= arrival.null_sender;
        // A signed plus-address (a reply's Reply-To) stands for its mailbox.
        let address = arrival
            .rcpt
            .map(|r| self.accepts.address_for(r).unwrap_or_else(|| r.to_owned()))
            .or_else(|| {
                mail.to
                    .iter()
                    .chain(&mail.cc)
                    .find_map(|a| self.accepts.address_for(a))
            })
            .or_else(|| arrival.default_address.map(str::to_owned))
            .unwrap_or_else(|| self.accepts.default_address());
        let (envelope_from, fallback_id) = (arrival.envelope_from, arrival.fallback_id);
        let kind = match &mail.kind {
            MailKind::Customer => "customer",
            MailKind::AutoReply => "auto_reply",
            MailKind::Bounce(_) => "bounce",
            MailKind::Bulk => "bulk",
        };
        let result = self
            .take_parsed(mail, raw, &address, envelope_from, fallback_id)
            .await;
        let outcome = match &result {
            Ok(Taken::Stored { outcome, .. }) => *outcome,
            Ok(Taken::Update { outcome, .. }) => *outcome,
            Ok(Taken::Ignored { .. }) => "ignored",
            Err(IngestError::Temporary(_)) => "temporary",
            Err(IngestError::Rejected(_)) => "rejected",
        };
        counter!("switchboard_email_intake_total",
            "source" => self.source.clone(), "kind" => kind, "outcome" => outcome)
        .increment(1);
        result
    }

    async fn take_parsed(
        &self,
        mail: ParsedMail,
        raw: &[u8],
        address: &str,
        envelope_from: Option<&str>,
        fallback_id: Option<&str>,
    ) -> Result<Taken, IngestError> {
        match &mail.kind {
            MailKind::Bounce(bounce) => {
                let detail = bounce_detail(bounce);
                let failed = bounce.permanent
                    || bounce
                        .action
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case("failed"));
                if !failed {
                    info!(detail = %detail, "A delay notice: the reply is still on its way.");
                    return Ok(Taken::Update {
                        kind: "bounce",
                        outcome: "delayed",
                    });
                }
                let (Some(final_recipient), Some(original)) = (
                    bounce.recipient.as_deref(),
                    bounce.original_message_id.as_deref(),
                ) else {
                    info!(detail = %detail, "A bounce that names no reply of ours; nothing to mark.");
                    return Ok(Taken::Update {
                        kind: "bounce",
                        outcome: "unknown_message",
                    });
                };
                let change = Change::Status {
                    status: ReplyStatus::Failed,
                    detail: Some(detail),
                };
                // The reply is found under the address it was sent to:
                // the original recipient when an alias was rewritten.
                let mut outcome = UpdateOutcome::UnknownMessage;
                for recipient in bounce
                    .original_recipient
                    .iter()
                    .map(String::as_str)
                    .chain([final_recipient])
                {
                    outcome = self
                        .update(
                            recipient,
                            &[original.to_owned()],
                            Some(dedupe_id(mail.message_id.as_deref(), fallback_id, raw)),
                            change.clone(),
                        )
                        .await?;
                    if outcome != UpdateOutcome::UnknownMessage {
                        break;
                    }
                }
                Ok(Taken::Update {
                    kind: "bounce",
                    outcome: outcome.as_str(),
                })
            }
            MailKind::AutoReply => {
                let Some(from) = sender(&mail, envelope_from) else {
                    return Ok(Taken::Update {
                        kind: "auto_reply",
                        outcome: "unknown_message",
                    });
                };
                let mut refs = mail.in_reply_to.clone();
                refs.extend(mail.references.iter().rev().cloned());
                let change = Change::AutoReply {
                    text: mail.text.clone(),
                };
                let update_id = dedupe_id(mail.message_id.as_deref(), fallback_id, raw);
                let outcome = self.update(&from, &refs, Some(update_id), change).await?;
                if outcome == UpdateOutcome::UnknownMessage {
                    info!(message_id = ?mail.message_id, "An automatic mail that answers no reply of ours; not stored.");
                }
                Ok(Taken::Update {
                    kind: "auto_reply",
                    outcome: outcome.as_str(),
                })
            }
            MailKind::Bulk if self.bulk == BulkPolicy::Ignore => {
                info!(message_id = ?mail.message_id, "Bulk or list mail not routed (bulk = \"ignore\").");
                Ok(Taken::Ignored { kind: "bulk" })
            }
            MailKind::Customer | MailKind::Bulk => {
                self.store_customer_mail(mail, raw, address, envelope_from, fallback_id)
                    .await
            }
        }
    }

    /// Applies `change` to the first of `refs` that names one of our replies.
    async fn update(
        &self,
        customer: &str,
        refs: &[String],
        update_id: Option<String>,
        change: Change,
    ) -> Result<UpdateOutcome, IngestError> {
        let customer = CustomerIdentity::new("email", customer)
            .map_err(|e| IngestError::Rejected(format!("customer address: {e}")))?;
        for reference in refs.iter().take(20) {
            let update = InboundUpdate {
                channel: ChannelKind::Email,
                source: self.source.clone(),
                customer: customer.clone(),
                provider_message_id: reference.clone(),
                update_id: update_id.clone(),
                change: change.clone(),
                at: None,
            };
            let outcome = self.intake.update(update).await?;
            if outcome != UpdateOutcome::UnknownMessage {
                return Ok(outcome);
            }
        }
        Ok(UpdateOutcome::UnknownMessage)
    }

    async fn store_customer_mail(
        &self,
        mail: ParsedMail,
        raw: &[u8],
        address: &str,
        envelope_from: Option<&str>,
        fallback_id: Option<&str>,
    ) -> Result<Taken, IngestError> {
        let from = self
            .customer_of(&mail, envelope_from)
            .ok_or_else(|| IngestError::Rejected("the mail names no sender".into()))?;
        if self.accepts.is_own(&from) {
            // Our replies to it would come back to us: a loop, or a spoof.
            return Err(IngestError::Rejected(
                "the sender is one of this channel's own addresses; not taken (it would loop)"
                    .into(),
            ));
        }
        let customer = CustomerIdentity::new("email", &from)
            .map_err(|e| IngestError::Rejected(format!("sender address: {e}")))?;
        // The attachments' lines go after the text, which is cut to leave
        // them room: the whole must fit the intake's limit, or the mail
        // would be refused for good.
        let mut lines = String::new();
        let mut media = Vec::new();
        for attachment in mail.attachments {
            let size = attachment.bytes.len();
            let id = self
                .attachments
                .keep(&attachment.content_type, attachment.bytes)
                .await
                .map_err(|e| IngestError::Temporary(format!("attachment store: {e}")))?;
            let _ = write!(
                lines,
                "\n[attachment: {}, {}, {size} bytes, media id {id}]",
                attachment.name, attachment.content_type
            );
            media.push(id);
        }
        if mail.skipped_attachments > 0 {
            let _ = write!(
                lines,
                "\n[{} attachment(s) not kept: over the size or count limit]",
                mail.skipped_attachments
            );
        }
        let max = self.limits.max_text_bytes;
        let mut text = fit(&mail.text, max.saturating_sub(lines.len()));
        text.push_str(fit(&lines, max.saturating_sub(text.len())).as_str());
        let mut attributes = BTreeMap::new();
        if let Some(tag) = &mail.tag {
            attributes.insert("email_thread".to_owned(), tag.clone());
        }
        // The thread this mail continues, for the References of our reply
        // to it (RFC 5322 §3.6.4: its References and its own id).
        if let Some(thread) = thread_of(&mail.references, &mail.in_reply_to) {
            attributes.insert(switchboard_core::THREAD_ATTRIBUTE.to_owned(), thread);
        }
        // Answers to an address only software sends from (noreply@,
        // MAILER-DAEMON, a list's -request) reach no one, or loop.
        if mail.no_auto_answer || parse::automated_sender(&from) {
            attributes.insert("no_auto_answer".to_owned(), "true".to_owned());
        }
        let provider_message_id = dedupe_id(mail.message_id.as_deref(), fallback_id, raw);
        let event = InboundEvent {
            channel: ChannelKind::Email,
            source: self.source.clone(),
            address: address.to_ascii_lowercase(),
            customer,
            customer_name: mail.from.as_ref().and_then(|m| m.name.clone()),
            provider_message_id: Some(provider_message_id),
            subject: mail.subject.clone().filter(|s| !s.trim().is_empty()),
            text: if text.trim().is_empty() && mail.subject.is_none() {
                "(empty message)".into()
            } else {
                text
            },
            language: mail.language.clone(),
            attributes,
            sent_at: mail.date_ms.map(Timestamp),
            new_contact: false,
            media,
        };
        let receipt = self.intake.submit(event).await.map_err(|e| {
            if matches!(e, IntakeError::Invalid(_)) {
                warn!(error = %e, "Mail refused by the intake.");
            }
            IngestError::from(e)
        })?;
        info!(contact_id = %receipt.contact_id, outcome = receipt.outcome.as_str(), "Mail taken in.");
        Ok(Taken::Stored {
            contact_id: receipt.contact_id.to_string(),
            outcome: receipt.outcome.as_str(),
        })
    }
}

impl Ingest {
    /// The customer's address: the sender, or with `customer_address =
    /// "reply_to"`, in mail from one of `reply_to_senders`, a `Reply-To`
    /// that is not one of ours (which would make replies go to ourselves).
    fn customer_of(&self, mail: &ParsedMail, envelope_from: Option<&str>) -> Option<String> {
        let from = mail
            .from
            .as_ref()
            .map(|m| m.address.to_ascii_lowercase())
            .unwrap_or_default();
        let trusted = self.reply_to_senders.iter().any(|s| {
            let s = s.to_ascii_lowercase();
            match s.strip_prefix('@') {
                Some(domain) => from.rsplit_once('@').is_some_and(|(_, d)| d == domain),
                None => from == s,
            }
        });
        let reply_to = mail
            .reply_to
            .as_ref()
            .filter(|_| trusted)
            .map(|m| m.address.clone())
            .filter(|a| crate::config::address_ok(a) && !self.accepts.accepts(a));
        match (self.customer_address, reply_to) {
            (CustomerAddress::ReplyTo, Some(reply_to)) => Some(reply_to),
            _ => sender(mail, envelope_from),
        }
    }
}

/// The sender: From, else the envelope's MAIL FROM.
fn sender(mail: &ParsedMail, envelope_from: Option<&str>) -> Option<String> {
    mail.from
        .as_ref()
        .map(|m| m.address.clone())
        .filter(|a| crate::config::address_ok(a))
        .or_else(|| {
            envelope_from
                .filter(|a| crate::config::address_ok(a))
                .map(str::to_owned)
        })
}

/// A mail's id for applying it once: its Message-ID, else the id the
/// fetcher gives it, else a digest of its bytes (a mail without a
/// Message-ID delivered twice is the same bytes).
fn dedupe_id(message_id: Option<&str>, fallback_id: Option<&str>, raw: &[u8]) -> String {
    message_id
        .or(fallback_id)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{DIGEST_ID}{}", &hex::encode(Sha256::digest(raw))[..32]))
}

/// What the agent is shown for a bounced reply.
fn bounce_detail(b: &parse::Bounce) -> String {
    let mut out = String::from("bounced");
    if let Some(s) = &b.status {
        let _ = write!(
            out,
            " ({s}{})",
            if b.permanent {
                ", permanent"
            } else {
                ", temporary"
            }
        );
    }
    if let Some(r) = &b.recipient {
        let _ = write!(out, ": {r}");
    }
    if let Some(d) = &b.diagnostic {
        let _ = write!(out, ": {}", d.chars().take(300).collect::<String>());
    }
    out
}

/// `text`, cut at a character boundary to at most `room` bytes, ending in
/// [`parse::CLIPPED_MARK`] when cut (the mark counted).
fn fit(text: &str, room: usize) -> String {
    if text.len() <= room {
        return text.to_owned();
    }
    let mark = if room >= parse::CLIPPED_MARK.len() {
        parse::CLIPPED_MARK
    } else {
        ""
    };
    let mut end = room - mark.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", text[..end].trim_end())
}

/// At most this many bytes of ids in [`switchboard_core::THREAD_ATTRIBUTE`]
/// (an attribute's limit is 1024): the thread's first id and as many of its
/// latest as fit.
const MAX_THREAD_BYTES: usize = 1000;

/// The thread a mail continues: its References, or its one In-Reply-To
/// (RFC 5322 §3.6.4), as [`switchboard_core::THREAD_ATTRIBUTE`] keeps it.
fn thread_of(references: &[String], in_reply_to: &[String]) -> Option<String> {
    let ids: &[String] = if !references.is_empty() {
        references
    } else if in_reply_to.len() == 1 {
        in_reply_to
    } else {
        return None;
    };
    let (first, rest) = ids.split_first()?;
    let mut kept: Vec<&str> = Vec::new();
    let mut bytes = first.len();
    for id in rest.iter().rev() {
        if bytes + 1 + id.len() > MAX_THREAD_BYTES {
            break;
        }
        bytes += 1 + id.len();
        kept.push(id);
    }
    (first.len() <= MAX_THREAD_BYTES).then(|| {
        std::iter::once(first.as_str())
            .chain(kept.into_iter().rev())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod thread_tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i:03}@mail.example")).collect()
    }

    #[test]
    fn a_mail_keeps_the_thread_it_continues_within_an_attribute() {
        // References first; a lone In-Reply-To when there are none.
        assert_eq!(
            thread_of(&ids(2), &["x@y".into()]).as_deref(),
            Some("m000@mail.example m001@mail.example")
        );
        assert_eq!(thread_of(&[], &["x@y".into()]).as_deref(), Some("x@y"));
        assert_eq!(thread_of(&[], &["x@y".into(), "z@y".into()]), None);
        assert_eq!(thread_of(&[], &[]), None);
        // A long thread: its first id and as many of the latest as fit.
        let long = thread_of(&ids(100), &[]).expect("a thread");
        assert!(long.len() <= MAX_THREAD_BYTES, "{}", long.len());
        let kept: Vec<&str> = long.split(' ').collect();
        assert_eq!(kept[0], "m000@mail.example");
        assert_eq!(kept[kept.len() - 1], "m099@mail.example");
        assert_eq!(
            kept[1],
            format!("m{:03}@mail.example", 100 - (kept.len() - 1))
        );
    }
}

#[cfg(test)]
mod kept_tests {
    use super::Taken;

    /// What `after` may delete: only mail of which something is kept.
    #[test]
    fn only_stored_or_applied_mail_is_kept() {
        let update = |outcome| Taken::Update {
            kind: "bounce",
            outcome,
        };
        let stored = Taken::Stored {
            contact_id: "0-c".into(),
            outcome: "created",
        };
        assert!(stored.kept());
        assert!(update("applied").kept());
        assert!(update("duplicate").kept());
        for outcome in ["unknown_message", "delayed", "stale"] {
            assert!(!update(outcome).kept(), "{outcome}");
        }
        assert!(!Taken::Ignored { kind: "bulk" }.kept());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod parse_tests {
    use super::{PARSE_INLINE_MAX, parse_mail};
    use crate::parse::ParseLimits;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A parse that panics is a refusal, wherever it ran.
    #[test]
    fn a_parse_that_panics_is_refused() {
        let refused = super::refused_if_panics(|| panic!("a defect"));
        assert!(
            matches!(refused, Err(super::IngestError::Rejected(_))),
            "{refused:?}"
        );
    }

    fn mail(body_bytes: usize) -> Vec<u8> {
        let mut raw = b"From: Olena <olena@example.com>\r\nTo: support@example.com\r\n\
Subject: Invoice\r\nMessage-ID: <big@example.com>\r\n\r\n"
            .to_vec();
        while raw.len() < body_bytes {
            raw.extend_from_slice(b"The invoice is wrong, please check it.\r\n");
        }
        raw
    }

    /// Whether the runtime ran another task while `raw` was parsed (on a
    /// current-thread runtime it can only when the parse was elsewhere).
    async fn others_ran_during(raw: &[u8]) -> bool {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        let parsed = parse_mail(raw, &ParseLimits::default()).await.unwrap();
        assert_eq!(parsed.subject.as_deref(), Some("Invoice"));
        ran.load(Ordering::SeqCst)
    }

    /// A large mail is parsed on the blocking pool, a small one where it is.
    #[tokio::test]
    async fn a_large_mail_is_parsed_off_the_runtime() {
        assert!(others_ran_during(&mail(PARSE_INLINE_MAX + 1)).await);
        assert!(!others_ran_during(&mail(10_000)).await);
    }
}
