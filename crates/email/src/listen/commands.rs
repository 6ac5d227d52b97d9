//! The session state and the answer to each command (no I/O: replies are
//! appended to an output buffer the dialogue loop flushes).

use super::reply::plain;
use super::{ListenerSettings, MailSink, Protocol, RcptVerdict, Reply};
use smtp_proto::{
    EXT_8BIT_MIME, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS, EhloResponse, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom,
    RcptTo, Request,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::debug;

/// What the dialogue loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// 354 sent: the body follows.
    Data,
    /// 220 sent: the TLS handshake follows.
    StartTls,
    /// 221 sent: close.
    Quit,
}

/// A mail transaction in progress (after `MAIL FROM`).
pub(super) struct Transaction {
    pub(super) mail_from: String,
    pub(super) smtputf8: bool,
    pub(super) recipients: Vec<String>,
}

/// The longest recipient address taken (RFC 5321 4.5.3.1.3: a path is at
/// most 256 octets with its angle brackets).
const MAX_ADDRESS_BYTES: usize = 254;

/// One session's state.
pub(super) struct Session {
    pub(super) settings: Arc<ListenerSettings>,
    pub(super) sink: Arc<dyn MailSink>,
    pub(super) peer: SocketAddr,
    pub(super) tls: bool,
    greeted: bool,
    pub(super) tx: Option<Transaction>,
    pub(super) errors: usize,
    /// Commands refused for what they asked (a recipient that is not ours,
    /// too many, a message too large): not protocol errors, so not counted
    /// towards [`super::MAX_ERRORS`], but they do not move the session on
    /// either (they give it no more time).
    pub(super) refusals: usize,
    /// When the connection was accepted.
    pub(super) started: std::time::Instant,
}

impl Session {
    pub(super) fn new(
        settings: Arc<ListenerSettings>,
        sink: Arc<dyn MailSink>,
        peer: SocketAddr,
    ) -> Self {
        Self {
            settings,
            sink,
            peer,
            tls: false,
            greeted: false,
            tx: None,
            errors: 0,
            refusals: 0,
            started: std::time::Instant::now(),
        }
    }

    /// After the TLS handshake: everything said before is forgotten.
    pub(super) fn started_tls(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.tx = None;
    }

    pub(super) fn greeting(&self, out: &mut Vec<u8>) {
        let (name, kind) = (&self.settings.hostname, self.settings.protocol.as_str());
        plain(
            220,
            &format!("{name} {} Switchboard ready", kind.to_uppercase()),
        )
        .write(out);
    }

    /// A protocol error: answered, counted towards [`super::MAX_ERRORS`]
    /// and in `switchboard_email_commands_refused_total{source, code}`.
    pub(super) fn error(&mut self, out: &mut Vec<u8>, code: u16, status: &str, text: &str) {
        self.errors += 1;
        refused(&self.settings.name, code);
        Reply::new(code, status, text).write(out);
    }

    /// Answers one command.
    pub(super) fn command(&mut self, request: Request<String>, out: &mut Vec<u8>) -> Flow {
        let lmtp = self.settings.protocol == Protocol::Lmtp;
        match request {
            Request::Lhlo { .. } if lmtp => self.ehlo(out),
            Request::Ehlo { .. } if !lmtp => self.ehlo(out),
            Request::Helo { .. } if !lmtp => {
                self.greeted = true;
                self.tx = None;
                plain(250, &self.settings.hostname).write(out);
            }
            Request::Lhlo { .. } | Request::Ehlo { .. } | Request::Helo { .. } => {
                let hello = if lmtp { "LHLO" } else { "EHLO" };
                self.error(
                    out,
                    500,
                    "5.5.1",
                    &format!(
                        "Error: this is {}, use {hello}",
                        self.settings.protocol.as_str().to_uppercase()
                    ),
                );
            }
            Request::Mail { from } => self.mail(from, out),
            Request::Rcpt { to } => self.rcpt(to, out),
            Request::Data => return self.data(out),
            Request::Rset => {
                self.tx = None;
                Reply::new(250, "2.0.0", "Ok").write(out);
            }
            Request::Noop { .. } => Reply::new(250, "2.0.0", "Ok").write(out),
            Request::Vrfy { .. } => {
                Reply::new(252, "2.0.0", "Send some mail, I'll try my best").write(out);
            }
            Request::Help { .. } => {
                Reply::new(214, "2.0.0", "See RFC 5321 and RFC 2033").write(out);
            }
            Request::Quit => {
                Reply::new(221, "2.0.0", "Bye").write(out);
                return Flow::Quit;
            }
            Request::StartTls => return self.starttls(out),
            other => {
                let text = format!("Error: command {} not implemented", other.name());
                self.error(out, 502, "5.5.1", &text);
            }
        }
        Flow::Continue
    }

    fn ehlo(&mut self, out: &mut Vec<u8>) {
        self.greeted = true;
        self.tx = None;
        let mut ehlo = EhloResponse::new(self.settings.hostname.as_str());
        ehlo.capabilities =
            EXT_PIPELINING | EXT_8BIT_MIME | EXT_SMTP_UTF8 | EXT_ENHANCED_STATUS_CODES | EXT_SIZE;
        if self.settings.tls.is_some() && !self.tls {
            ehlo.capabilities |= EXT_START_TLS;
        }
        ehlo.size = self.settings.max_message_bytes;
        // Writing to a Vec cannot fail.
        let written = ehlo.write(&mut *out);
        debug_assert!(written.is_ok());
    }

    fn mail(&mut self, from: MailFrom<String>, out: &mut Vec<u8>) {
        if !self.greeted {
            let hello = if self.settings.protocol == Protocol::Lmtp {
                "LHLO"
            } else {
                "EHLO/HELO"
            };
            return self.error(out, 503, "5.5.1", &format!("Error: send {hello} first"));
        }
        if self.settings.require_tls && !self.tls {
            return self.error(out, 530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if self.tx.is_some() {
            return self.error(out, 503, "5.5.1", "Error: nested MAIL command");
        }
        let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
        let unsupported = from.flags & !known != 0
            || from.trans_id.is_some()
            || from.env_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.auth.is_some()
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0;
        if unsupported {
            return self.error(out, 555, "5.5.4", "Unsupported MAIL FROM parameter");
        }
        if from.size > self.settings.max_message_bytes {
            // Refused before the body is sent, counted as the body would be.
            self.refusals += 1;
            self.count_message("too_large");
            return Reply::too_large().write(out);
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            // The message cannot be taken as sent: refused, counted.
            self.refusals += 1;
            self.count_message("rejected");
            return non_ascii(out);
        }
        Reply::new(250, "2.1.0", "Ok").write(out);
        self.tx = Some(Transaction {
            mail_from: from.address,
            smtputf8,
            recipients: Vec::new(),
        });
    }

    fn rcpt(&mut self, to: RcptTo<String>, out: &mut Vec<u8>) {
        let Some(tx) = &mut self.tx else {
            return self.error(out, 503, "5.5.1", "Error: need MAIL command");
        };
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return self.error(out, 555, "5.5.4", "Unsupported RCPT TO parameter");
        }
        if to.address.is_empty() {
            return self.error(out, 501, "5.1.3", "Error: empty recipient address");
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            // One recipient refused; the message may still go to others.
            self.refusals += 1;
            metrics::counter!("switchboard_email_recipients_refused_total",
                "source" => self.settings.name.clone())
            .increment(1);
            return non_ascii(out);
        }
        if tx.recipients.len() >= self.settings.max_recipients {
            self.refusals += 1;
            refused(&self.settings.name, 452);
            return Reply::new(452, "4.5.3", "Error: too many recipients").write(out);
        }
        let address = to.address.to_lowercase();
        if address.len() > MAX_ADDRESS_BYTES {
            // RFC 5321's limit. As the first recipient (the contact's
            // address), one over the intake's 320 bytes refused the whole
            // message after DATA, for every recipient.
            self.refusals += 1;
            metrics::counter!("switchboard_email_recipients_refused_total",
                "source" => self.settings.name.clone())
            .increment(1);
            return Reply::new(501, "5.1.3", "Error: recipient address too long").write(out);
        }
        match self.sink.recipient(&address) {
            RcptVerdict::Accept => {
                Reply::new(250, "2.1.5", "Ok").write(out);
                tx.recipients.push(address);
            }
            RcptVerdict::Unknown => {
                // Not ours (no relay): refused and counted.
                self.refusals += 1;
                metrics::counter!("switchboard_email_recipients_refused_total",
                    "source" => self.settings.name.clone())
                .increment(1);
                Reply::unknown_recipient(&address).write(out)
            }
            RcptVerdict::Refuse(reply) => {
                self.refusals += 1;
                reply.write(out)
            }
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) -> Flow {
        match &self.tx {
            None => self.error(out, 503, "5.5.1", "Error: need MAIL command"),
            Some(tx) if tx.recipients.is_empty() => {
                // RFC 2033 4.2 asks LMTP for 503; SMTP servers say 554.
                let code = if self.settings.protocol == Protocol::Lmtp {
                    503
                } else {
                    554
                };
                self.error(out, code, "5.5.1", "Error: no valid recipients");
            }
            Some(_) => {
                plain(354, "End data with <CR><LF>.<CR><LF>").write(out);
                return Flow::Data;
            }
        }
        Flow::Continue
    }

    fn starttls(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.tls {
            self.error(out, 503, "5.5.1", "Error: TLS already active");
        } else if self.settings.tls.is_none() {
            self.error(out, 502, "5.5.1", "Error: command STARTTLS not implemented");
        } else {
            Reply::new(220, "2.0.0", "Ready to start TLS").write(out);
            return Flow::StartTls;
        }
        Flow::Continue
    }
}

/// The refusal of a non-ASCII address in a transaction without SMTPUTF8.
fn non_ascii(out: &mut Vec<u8>) {
    debug!("Refused a non-ASCII address without SMTPUTF8.");
    Reply::new(553, "5.6.7", "Error: non-ASCII address without SMTPUTF8").write(out);
}

/// Counts a command refused with `code` (not a recipient that is not ours,
/// nor a message: those have their own counters).
fn refused(source: &str, code: u16) {
    metrics::counter!("switchboard_email_commands_refused_total",
        "source" => source.to_owned(), "code" => code.to_string())
    .increment(1);
}
