//! The end of DATA: the message to the sink, the answer to the client.

use super::commands::Session;
use super::reply::combine;
use super::{Envelope, Protocol, Reply};
use tracing::{debug, warn};

impl Session {
    /// The body is complete: hand it to the sink and answer.
    pub(super) async fn deliver(&mut self, body: Vec<u8>, out: &mut Vec<u8>) {
        let Some(tx) = self.tx.take() else { return };
        let envelope = Envelope {
            mail_from: tx.mail_from,
            recipients: tx.recipients,
            smtputf8: tx.smtputf8,
            peer: self.peer,
            tls: self.tls,
        };
        let mut replies = self.sink.deliver(&envelope, &body).await;
        let wanted = envelope.recipients.len();
        if replies.len() != wanted {
            warn!(
                got = replies.len(),
                wanted, "The mail sink answered for the wrong number of recipients."
            );
            replies.resize_with(wanted, || {
                Reply::temporary("Error: no answer for this recipient")
            });
        }
        let outcome = if replies.iter().all(Reply::is_positive) {
            "accepted"
        } else if replies.iter().any(Reply::is_transient) {
            "temporary"
        } else {
            "rejected"
        };
        debug!(
            bytes = body.len(),
            recipients = wanted,
            outcome,
            "Message received."
        );
        self.count_message(outcome);
        metrics::histogram!("switchboard_email_message_bytes", "source" => self.settings.name.clone())
            .record(body.len() as f64);
        self.answer(&replies, out);
    }

    /// The body was over the size limit (and not kept).
    pub(super) fn too_large(&mut self, out: &mut Vec<u8>) {
        self.refuse_body(Reply::too_large(), "too_large", out);
    }

    /// The body did not fit in the listener's budget (and was not kept).
    pub(super) fn no_room(&mut self, out: &mut Vec<u8>) {
        self.refuse_body(Reply::no_room(), "no_room", out);
    }

    /// The body ended in `<CRLF>.<CR>…<CR><LF>` (and was not kept).
    pub(super) fn bad_end_of_data(&mut self, out: &mut Vec<u8>) {
        self.refuse_body(Reply::bad_end_of_data(), "bad_end_of_data", out);
    }

    fn refuse_body(&mut self, reply: Reply, outcome: &'static str, out: &mut Vec<u8>) {
        let Some(tx) = self.tx.take() else { return };
        debug!(
            recipients = tx.recipients.len(),
            outcome, "Message refused."
        );
        self.count_message(outcome);
        let replies = vec![reply; tx.recipients.len()];
        self.answer(&replies, out);
    }

    /// LMTP: one reply per recipient; SMTP: one for the message.
    fn answer(&self, replies: &[Reply], out: &mut Vec<u8>) {
        match self.settings.protocol {
            Protocol::Lmtp => replies.iter().for_each(|r| r.write(out)),
            Protocol::Smtp => combine(replies).write(out),
        }
    }

    pub(super) fn count_message(&self, outcome: &'static str) {
        metrics::counter!("switchboard_email_messages_total",
            "source" => self.settings.name.clone(), "outcome" => outcome)
        .increment(1);
    }
}
