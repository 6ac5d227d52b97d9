//! Agents' replies out over SMTP (lettre): from the address the customer
//! wrote to, threaded with Message-ID, In-Reply-To and References, with
//! the conversation's tag in the subject. A reply stays in the channel's
//! durable outbox until the relay accepts it: temporary failures are
//! retried with backoff, permanent ones (5xx) are shown to the agent.

use crate::config::{Security, SmtpConfig};
use crate::parse;
use lettre::Message;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use metrics::{counter, histogram};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_channel::{ChannelContext, ChannelError, OutboundDelivery, Outbox};
use switchboard_core::{DeliveryOutcome, OutboundMessage};
use tracing::{Instrument, info, info_span, warn};

/// The longest one delivery may take, whatever `timeout_secs` says: below
/// the outbox's visibility timeout (60 s, `switchboard::app`), after which
/// another instance would take the reply over and send it a second time.
const MAX_SEND: Duration = Duration::from_secs(45);

/// The outbox's visibility timeout (`switchboard::app`'s
/// `OUTBOX_VISIBILITY`): a reply handed out this long ago may be taken
/// over by another instance.
const VISIBILITY: Duration = Duration::from_secs(60);

/// The last settle is tried this long before [`VISIBILITY`] runs out: one
/// try may take Redis's connect and response timeouts (3 s by default).
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// How long a QUIT after an accepted reply may take: best effort, since
/// the reply is the relay's once it answered the data.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one channel's replies.
pub struct Sender {
    relay: Relay,
    /// The limit on one whole delivery: connection, dialogue and the
    /// relay's answer to the data (lettre's own timeout covers only the
    /// connection).
    send_timeout: Duration,
    retry: Duration,
    max_attempts: u32,
    thread_secret: Option<Vec<u8>>,
    /// The channel's name, in metrics.
    source: String,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// The relay client for `config` (no connection is made yet).
    pub fn new(name: &str, config: &SmtpConfig) -> Result<Sender, ChannelError> {
        let err =
            |e: &dyn std::fmt::Display| crate::config::config_error(name, "smtp", &e.to_string());
        let tls = match config.security {
            Security::None => RelayTls::None,
            Security::StartTls => {
                RelayTls::StartTls(TlsParameters::new(config.host.clone()).map_err(|e| err(&e))?)
            }
            Security::Tls => {
                RelayTls::Wrapper(TlsParameters::new(config.host.clone()).map_err(|e| err(&e))?)
            }
        };
        let credentials = match (&config.user, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.resolve()?.expose().to_owned(),
            )),
            _ => None,
        };
        let thread_secret = match &config.thread_secret {
            Some(s) => Some(s.resolve()?.expose().as_bytes().to_vec()),
            None => None,
        };
        Ok(Sender {
            relay: Relay {
                host: config.host.clone(),
                port: config.port(),
                tls,
                credentials,
                connect_timeout: Duration::from_secs(config.timeout_secs.max(1)),
                hello: ClientId::default(),
            },
            send_timeout: Duration::from_secs(config.timeout_secs.max(1)).min(MAX_SEND),
            retry: Duration::from_secs(config.retry_secs),
            max_attempts: config.max_attempts,
            thread_secret,
            source: name.to_owned(),
        })
    }

    /// Delivers the outbox until shutdown.
    pub async fn run(self: Arc<Self>, ctx: ChannelContext) -> Result<(), ChannelError> {
        let outbox = ctx.outbox.clone();
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                next = outbox.next(Duration::from_secs(5)) => next,
            };
            match next {
                Ok(Some(delivery)) => {
                    let span = info_span!("email_reply",
                        contact_id = %delivery.message.contact_id,
                        message_id = %delivery.message.message_id,
                        attempt = delivery.attempt);
                    self.deliver(outbox.as_ref(), &ctx.name, delivery)
                        .instrument(span)
                        .await;
                }
                Ok(None) => {}
                Err(e) => {
                    let op = match &e {
                        switchboard_channel::OutboxError::Corrupt { .. } => "corrupt",
                        switchboard_channel::OutboxError::Unavailable(_) => "next",
                    };
                    metrics::counter!("switchboard_email_outbox_errors_total", "op" => op)
                        .increment(1);
                    warn!(error = %e, "Email outbox unavailable; retrying.");
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Sends one reply and settles or defers it.
    pub async fn deliver(&self, outbox: &dyn Outbox, source: &str, delivery: OutboundDelivery) {
        let started = Instant::now();
        let (outcome, settle) = match build(&delivery.message, self.thread_secret.as_deref()) {
            Err(reason) => ("failed", Ok(DeliveryOutcome::Failed { reason })),
            Ok((message, message_id)) => match self.send(message).await {
                Ok(()) => (
                    "delivered",
                    Ok(DeliveryOutcome::delivered(Some(message_id))),
                ),
                Err(SendError::Refused(e)) => (
                    "failed",
                    Ok(DeliveryOutcome::Failed {
                        reason: format!("the mail server refused it: {e}"),
                    }),
                ),
                Err(e) if delivery.attempt >= self.max_attempts => (
                    "failed",
                    Ok(DeliveryOutcome::Failed {
                        reason: format!("gave up after {} attempts: {e}", delivery.attempt),
                    }),
                ),
                Err(e) => ("deferred", Err(e.to_string())),
            },
        };
        histogram!("switchboard_email_send_seconds", "source" => source.to_owned())
            .record(started.elapsed().as_secs_f64());
        counter!("switchboard_email_replies_total", "source" => source.to_owned(), "outcome" => outcome)
            .increment(1);
        let result = match settle {
            Ok(outcome) => {
                match &outcome {
                    DeliveryOutcome::Delivered { .. } => {
                        info!("Email reply accepted by the relay.")
                    }
                    DeliveryOutcome::Failed { reason } => {
                        warn!(reason = %reason, "Email reply failed.")
                    }
                }
                // Tried until shortly before the reply could be taken over:
                // one the relay took whose outcome is not recorded by then
                // is sent a second time.
                let patience = VISIBILITY
                    .saturating_sub(started.elapsed())
                    .saturating_sub(SETTLE_MARGIN)
                    .max(Duration::from_secs(3));
                settle_final(outbox, &delivery, outcome, patience).await
            }
            Err(error) => {
                let delay = backoff(self.retry, delivery.attempt);
                warn!(error = %error, retry_in_secs = delay.as_secs(), "Email reply deferred.");
                outbox.defer(&delivery, delay).await
            }
        };
        if let Err(e) = result {
            // Not settled: the outbox hands it out again after its timeout.
            metrics::counter!("switchboard_email_outbox_errors_total", "op" => "settle")
                .increment(1);
            warn!(error = %e, "Could not record the reply's outcome.");
        }
    }
}

impl Sender {
    /// Hands `message` to the relay within `send_timeout`.
    async fn send(&self, message: Message) -> Result<(), SendError> {
        let envelope = message.envelope();
        let international = envelope
            .to()
            .iter()
            .chain(envelope.from())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        let raw = message.formatted();
        let attempt = async {
            let mut conn = self.relay.connect().await?;
            let sent = conn.send(envelope, &raw).await;
            Ok::<_, lettre::transport::smtp::Error>((conn, sent))
        };
        // The relay's answer to the data decides; the QUIT after it is
        // outside the limit. (lettre's transport QUITs inside the send: a
        // relay slow to answer it turned a reply it had taken into a
        // timeout, and the reply was sent a second time.)
        let sent = match tokio::time::timeout(self.send_timeout, attempt).await {
            Ok(Ok((mut conn, sent))) => {
                if sent.is_ok() {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
                    });
                } else {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.abort()).await;
                    });
                }
                Ok(sent)
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(elapsed) => Err(elapsed),
        };
        match sent {
            Ok(Ok(_)) => Ok(()),
            // A refusal of our credentials is the relay's configuration, not
            // the reply's: every reply would fail for good until someone
            // fixed the password. Retried (up to `max_attempts`) instead,
            // and counted for an alert.
            Ok(Err(e)) if e.is_permanent() && refuses_credentials(&e) => {
                metrics::counter!("switchboard_email_relay_auth_failures_total",
                    "source" => self.source.clone())
                .increment(1);
                Err(SendError::Temporary(format!(
                    "the mail server refused our credentials ({e}): check [email.smtp] user and password"
                )))
            }
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Refused(e.to_string())),
            // lettre refuses an address that needs SMTPUTF8 on a relay that
            // does not offer it before saying a word: no retry can help.
            Ok(Err(e)) if e.is_client() && international => Err(SendError::Refused(format!(
                "the address needs SMTPUTF8, which the mail server does not offer ({e})"
            ))),
            Ok(Err(e)) => Err(SendError::Temporary(e.to_string())),
            Err(_) => Err(SendError::Temporary(format!(
                "the mail server did not finish within {} s",
                self.send_timeout.as_secs()
            ))),
        }
    }
}

/// Where replies go and how to connect (what lettre's transport did for
/// us, less its QUIT inside the send).
struct Relay {
    host: String,
    port: u16,
    tls: RelayTls,
    credentials: Option<Credentials>,
    /// lettre's limit on the TCP connection.
    connect_timeout: Duration,
    hello: ClientId,
}

/// `security`, with what TLS needs.
enum RelayTls {
    None,
    StartTls(TlsParameters),
    Wrapper(TlsParameters),
}

impl Relay {
    /// A connection that has said EHLO, upgraded to TLS as configured and
    /// signed in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let wrapper = match &self.tls {
            RelayTls::Wrapper(p) => Some(p.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.connect_timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        if let RelayTls::StartTls(p) = &self.tls {
            // Refused when the relay does not offer STARTTLS.
            conn.starttls(p.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

/// Whether the relay's answer is about our authentication (RFC 4954:
/// 530 authentication required, 534 mechanism too weak, 535 credentials
/// invalid, 538 encryption required for it), not about this reply.
fn refuses_credentials(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| matches!(u16::from(code), 530 | 534 | 535 | 538))
}

/// Why a reply was not handed over.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// A `5xx`: sending it again would not help.
    #[error("{0}")]
    Refused(String),
    /// Anything else: a `4xx`, no connection, no answer in time.
    #[error("{0}")]
    Temporary(String),
}

/// Records a final outcome, trying again (0.25 s doubling to 4 s) for up
/// to `patience`: a reply the relay took but whose outcome is not recorded
/// is handed out again after the outbox's timeout and sent a second time,
/// so a Redis that comes back within it (a restart, a failover) spares
/// the customer the second copy. It used to give up after ~4 s.
async fn settle_final(
    outbox: &dyn Outbox,
    delivery: &OutboundDelivery,
    outcome: DeliveryOutcome,
    patience: Duration,
) -> Result<(), switchboard_channel::OutboxError> {
    let until = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(250);
    loop {
        match outbox.settle(delivery, outcome.clone()).await {
            Err(e) if tokio::time::Instant::now() + wait <= until => {
                warn!(error = %e, "Could not record the reply's outcome yet; trying again.");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(4));
            }
            result => return result,
        }
    }
}

/// `retry · 2^(attempt-1)`, at most an hour, with ±20 % jitter.
fn backoff(retry: Duration, attempt: u32) -> Duration {
    let base = retry
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(12))
        .min(Duration::from_secs(3600));
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// `<message.conversation@domain>`: the same on every attempt, so a retry
/// after a crash is recognisably the same mail.
pub fn message_id_for(message: &OutboundMessage) -> String {
    let domain = message
        .from_address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("switchboard.invalid");
    format!(
        "{}.{}@{domain}",
        message.message_id, message.conversation_id
    )
}

/// The mail for `message` and its Message-ID (without brackets).
pub fn build(
    message: &OutboundMessage,
    thread_secret: Option<&[u8]>,
) -> Result<(Message, String), String> {
    let from: Mailbox = message
        .from_address
        .parse()
        .map_err(|e| format!("cannot send from {:?}: {e}", message.from_address))?;
    let to: Mailbox = message
        .to
        .value
        .parse()
        .map_err(|e| format!("cannot send to {:?}: {e}", message.to.value))?;
    let id = message_id_for(message);
    let tag = message.conversation_id.to_string();
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(parse::tagged_subject(message.subject.as_deref(), &tag))
        .message_id(Some(format!("<{id}>")))
        .date_now();
    if let Some(secret) = thread_secret {
        let plus = parse::plus_address(&message.from_address, &tag, secret);
        if let Ok(reply_to) = plus.parse::<Mailbox>() {
            builder = builder.reply_to(reply_to);
        }
    }
    // Only a real Message-ID threads (not our fallback ids).
    let parent = message.in_reply_to.as_deref().filter(|p| real_id(p));
    if let Some(parent) = parent {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    if let Some(references) = references(message, parent) {
        builder = builder.references(references);
    }
    if message.automatic {
        // Not a person's: autoresponders and helpdesks do not answer it
        // (RFC 3834 section 5; Exchange reads the second).
        builder = builder.header(AutoSubmitted).header(AutoResponseSuppress);
    }
    let mail = builder
        .header(ContentType::TEXT_PLAIN)
        .body(message.text.clone())
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    Ok((mail, id))
}

/// `Auto-Submitted: auto-replied` (RFC 3834): an automatic answer.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-replied".into())
    }
}

/// `X-Auto-Response-Suppress: All`: Exchange's own flag for the same.
#[derive(Debug, Clone, Copy)]
struct AutoResponseSuppress;

impl lettre::message::header::Header for AutoResponseSuppress {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoResponseSuppress)
    }
    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "All".into())
    }
}

/// A Message-ID as the customer's mail gave it: not one of our fallback
/// ids, and one that fits between angle brackets.
fn real_id(id: &str) -> bool {
    !crate::ingest::is_made_up_id(id)
        && id.is_ascii()
        && id.contains('@')
        && !id.contains(['<', '>', ' '])
}

/// At most this many ids in References: the first (the thread's root) and
/// the latest ones (trimmed as RFC 5537 §3.4.4 describes for long threads).
const MAX_REFERENCES: usize = 20;

/// The References of a reply: the thread of the message it answers
/// (`message.references`, oldest first), then that message (RFC 5322
/// §3.6.4); each once, fallback and non-ASCII ids left out; `None` when
/// none is left.
fn references(message: &OutboundMessage, parent: Option<&str>) -> Option<String> {
    let mut ids: Vec<&str> = Vec::new();
    for id in message.references.iter().map(String::as_str).chain(parent) {
        if real_id(id) && !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_REFERENCES {
        ids.drain(1..ids.len() - (MAX_REFERENCES - 1));
    }
    (!ids.is_empty()).then(|| {
        ids.iter()
            .map(|id| format!("<{id}>"))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_channel::OutboxError;
    use switchboard_core::{
        ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, Partition, Timestamp,
    };

    fn reply() -> OutboundMessage {
        OutboundMessage {
            message_id: MessageId::new(),
            contact_id: ContactId::new(Partition(3)),
            conversation_id: ConversationId::new(Partition(3)),
            channel: ChannelKind::Email,
            source: "mail".into(),
            from_address: "help@support.example.com".into(),
            to: CustomerIdentity::new("email", "olena@customer.example").expect("valid"),
            subject: Some("Замовлення #4411".into()),
            text: "Добрий день!\n<b>not html</b>".into(),
            in_reply_to: Some("order-4411@mail.customer.example".into()),
            references: Vec::new(),
            created_at: Timestamp::now(),
            automatic: false,
        }
    }

    /// An outbox whose settle fails `failing` times, then succeeds.
    #[derive(Debug, Default)]
    struct Flaky {
        failing: std::sync::atomic::AtomicU32,
        tries: std::sync::atomic::AtomicU32,
    }

    impl Outbox for Flaky {
        fn next(
            &self,
            _: Duration,
        ) -> futures::future::BoxFuture<'_, Result<Option<OutboundDelivery>, OutboxError>> {
            Box::pin(async { Ok(None) })
        }
        fn settle<'a>(
            &'a self,
            _: &'a OutboundDelivery,
            _: DeliveryOutcome,
        ) -> futures::future::BoxFuture<'a, Result<(), OutboxError>> {
            use std::sync::atomic::Ordering;
            self.tries.fetch_add(1, Ordering::SeqCst);
            let failed = self
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            Box::pin(async move {
                if failed {
                    Err(OutboxError::Unavailable("redis is restarting".into()))
                } else {
                    Ok(())
                }
            })
        }
        fn defer<'a>(
            &'a self,
            _: &'a OutboundDelivery,
            _: Duration,
        ) -> futures::future::BoxFuture<'a, Result<(), OutboxError>> {
            Box::pin(async { Ok(()) })
        }
        fn hold_delivery(
            &self,
            _: Duration,
        ) -> futures::future::BoxFuture<'_, Result<bool, OutboxError>> {
            Box::pin(async { Ok(true) })
        }
        fn release_delivery(&self) -> futures::future::BoxFuture<'_, Result<(), OutboxError>> {
            Box::pin(async { Ok(()) })
        }
        fn forward<'a>(
            &'a self,
            _: &'a OutboundDelivery,
            _: OutboundMessage,
        ) -> futures::future::BoxFuture<'a, Result<(), OutboxError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// A Redis away for ~30 s (a restart): the outcome is recorded once it
    /// is back, within the patience; it gave up after ~4 s, and the reply
    /// went to the customer a second time.
    #[tokio::test(start_paused = true)]
    async fn an_outcome_is_recorded_when_redis_comes_back_within_the_patience() {
        use std::sync::atomic::Ordering;
        let delivery = OutboundDelivery {
            handle: "1-0".into(),
            attempt: 1,
            handouts: 1,
            message: reply(),
        };
        // 0.25 + 0.5 + 1 + 2 + 4 × 6 = 27.75 s of failures.
        let outbox = Flaky::default();
        outbox.failing.store(10, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let settled = settle_final(
            &outbox,
            &delivery,
            DeliveryOutcome::delivered(None),
            Duration::from_secs(50),
        )
        .await;
        assert!(settled.is_ok(), "{settled:?}");
        assert_eq!(outbox.tries.load(Ordering::SeqCst), 11);
        assert!(started.elapsed() < Duration::from_secs(50));
        // Past the patience it gives up (the outbox hands the reply out
        // again).
        let outbox = Flaky::default();
        outbox.failing.store(1_000, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let settled = settle_final(
            &outbox,
            &delivery,
            DeliveryOutcome::delivered(None),
            Duration::from_secs(20),
        )
        .await;
        assert!(settled.is_err());
        assert!(started.elapsed() <= Duration::from_secs(20));
    }

    #[test]
    fn a_reply_threads_and_carries_the_tag() {
        let r = reply();
        let (mail, id) = build(&r, Some(b"0123456789abcdef")).expect("builds");
        let text = String::from_utf8(mail.formatted()).expect("utf-8");
        assert!(id.ends_with("@support.example.com"), "{id}");
        assert!(text.contains(&format!("Message-ID: <{id}>")), "{text}");
        assert!(
            text.contains("In-Reply-To: <order-4411@mail.customer.example>"),
            "{text}"
        );
        assert!(
            text.contains("References: <order-4411@mail.customer.example>"),
            "{text}"
        );
        assert!(text.contains("From: help@support.example.com"), "{text}");
        assert!(text.contains("To: olena@customer.example"), "{text}");
        assert!(text.contains("Reply-To: help+"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8"),
            "{text}"
        );
        assert_eq!(message_id_for(&r), id, "stable across attempts");
        // A person's reply says nothing of being automatic.
        assert!(!text.contains("Auto-Submitted"), "{text}");
    }

    /// Switchboard's own answers (acknowledgements, after-hours) say they
    /// are automatic (RFC 3834), so that the customer's autoresponder does
    /// not answer them.
    #[test]
    fn an_automatic_answer_says_so() {
        let r = OutboundMessage {
            automatic: true,
            ..reply()
        };
        let (mail, _) = build(&r, None).expect("builds");
        let text = String::from_utf8(mail.formatted()).expect("utf-8");
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"), "{text}");
        assert!(text.contains("X-Auto-Response-Suppress: All\r\n"), "{text}");
    }

    #[test]
    fn fallback_ids_do_not_thread_and_bad_addresses_fail() {
        let mut r = reply();
        r.in_reply_to = Some("sha256:abcd".into());
        let (mail, _) = build(&r, None).expect("builds");
        let text = String::from_utf8(mail.formatted()).expect("utf-8");
        assert!(!text.contains("In-Reply-To"), "{text}");
        assert!(!text.contains("Reply-To"), "{text}");
        // An IMAP mail's made-up id names the mailbox's login and host.
        r.in_reply_to = Some("imap:imap://support@imap.example.com:993/INBOX:1712:7".into());
        let (mail, _) = build(&r, None).expect("builds");
        let text = String::from_utf8(mail.formatted()).expect("utf-8");
        assert!(!text.contains("In-Reply-To"), "{text}");
        assert!(!text.contains("imap.example.com"), "{text}");
        r.from_address = "not an address".into();
        assert!(build(&r, None).is_err());
    }

    /// The mail as text with folded header lines joined.
    fn unfolded(mail: Message) -> String {
        String::from_utf8(mail.formatted())
            .expect("utf-8")
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ")
    }

    /// References name the thread of the message answered, oldest first,
    /// then that message (RFC 5322 §3.6.4), each once and without fallback
    /// ids; a long thread keeps its root and its latest ids. Before, they
    /// named the parent alone.
    #[test]
    fn references_carry_the_thread() {
        let mut r = reply();
        r.references = vec![
            "first@c.example".into(),
            "sha256:abcd".into(),
            "second@c.example".into(),
            "order-4411@mail.customer.example".into(),
        ];
        let (mail, _) = build(&r, None).expect("builds");
        let text = unfolded(mail);
        assert!(
            text.contains(
                "References: <first@c.example> <second@c.example> \
                 <order-4411@mail.customer.example>\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("In-Reply-To: <order-4411@mail.customer.example>\r\n"),
            "{text}"
        );

        r.references = (0..30).map(|i| format!("r{i}@c.example")).collect();
        let (mail, _) = build(&r, None).expect("builds");
        let text = unfolded(mail);
        let line = text
            .lines()
            .find(|l| l.starts_with("References: "))
            .expect("references");
        let ids: Vec<&str> = line["References: ".len()..].split(' ').collect();
        assert_eq!(ids.len(), MAX_REFERENCES, "{line}");
        assert_eq!(ids[0], "<r0@c.example>", "the root is kept: {line}");
        assert_eq!(ids[1], "<r12@c.example>", "{line}");
        assert_eq!(
            ids[MAX_REFERENCES - 1],
            "<order-4411@mail.customer.example>",
            "{line}"
        );

        // Without a real parent, the earlier real ids still thread.
        r.in_reply_to = Some("sha256:abcd".into());
        r.references = vec!["first@c.example".into()];
        let (mail, _) = build(&r, None).expect("builds");
        let text = unfolded(mail);
        assert!(text.contains("References: <first@c.example>\r\n"), "{text}");
        assert!(!text.contains("In-Reply-To"), "{text}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let one = backoff(Duration::from_secs(60), 1);
        assert!(one >= Duration::from_secs(48) && one <= Duration::from_secs(72));
        let many = backoff(Duration::from_secs(60), 30);
        assert!(many <= Duration::from_secs(4320));
    }
}
