//! Raw RFC 5322 bytes → what the email channel needs. No I/O, never panics
//! (fuzzed: `fuzz/fuzz_targets/email_parse.rs`); broken MIME is decoded as
//! far as it goes.
//!
//! MIME, charsets and header fields are read by `mail-parser`; this module
//! picks what Switchboard uses, repairs what that parser leaves undecoded
//! (unknown charset labels in encoded words, a whole mailbox inside one
//! encoded word, a body part with broken base64), classifies the mail
//! (RFC 3834 auto replies, RFC 3464 bounces, list mail) and holds the
//! threading helpers (subject tags, signed plus-addresses).

mod attach;
mod classify;
mod encoded;
mod headers;
mod text;
mod threading;

#[cfg(test)]
mod tests;

pub use threading::{
    conversation_tag, looks_plus_addressed, plus_address, tagged_subject, verify_plus_address,
};

pub use classify::automated_sender;
use headers::Headers;
use mail_parser::MessageParser;

/// Bounds on what [`parse`] keeps of a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLimits {
    /// The readable text is clipped to this many bytes (on a character
    /// boundary, the clipping noted at the end). Default 64 KiB, the intake's
    /// limit.
    pub max_text_bytes: usize,
    /// At most this many attachments are kept; the rest are counted in
    /// [`ParsedMail::skipped_attachments`]. Default 20.
    pub max_attachments: usize,
    /// An attachment larger than this (decoded) is skipped and counted.
    /// Default 10 MiB.
    pub max_attachment_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_text_bytes: 64 * 1024,
            max_attachments: 20,
            max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

/// An address with its display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Trimmed and lower-cased; at most 320 bytes, no control characters.
    pub address: String,
    /// The decoded display name, without control characters, at most 256
    /// bytes; `None` when absent or blank.
    pub name: Option<String>,
}

/// A file attached to a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name as sent, reduced to its last path segment, without
    /// control characters or `\ / : * ? " < > |`, at most 200 bytes (the
    /// extension kept); `attachment-N` (N counting from 1) when it has none.
    pub name: String,
    /// `type/subtype` in lower case, e.g. `application/pdf`;
    /// `application/octet-stream` when the part does not say.
    pub content_type: String,
    /// The decoded content. Text parts (`text/*` other than the body) are
    /// given in UTF-8, whatever their charset was.
    pub bytes: Vec<u8>,
}

/// What kind of mail it is, for routing and for the auto-answer rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailKind {
    /// Written by a person: a new inquiry or a reply.
    Customer,
    /// An automatic answer (out of office, vacation; RFC 3834).
    AutoReply,
    /// A delivery status notification about a mail we sent (RFC 3464).
    Bounce(Bounce),
    /// Bulk or mailing-list mail (`Precedence: bulk|list|junk`, `List-*`).
    Bulk,
}

/// What a delivery status notification says (RFC 3464, codes RFC 3463).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounce {
    /// The Message-ID (without angle brackets) of the mail that failed, from
    /// the returned headers or message.
    pub original_message_id: Option<String>,
    /// The recipient it failed for (`Final-Recipient`, else
    /// `Original-Recipient`), without the `rfc822;` type, lower-cased.
    pub recipient: Option<String>,
    /// `Original-Recipient` when the report gives it and it differs from
    /// `recipient` (an alias the MTA rewrote): the address the mail was
    /// sent to, under which its reply is found.
    pub original_recipient: Option<String>,
    /// The status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The action, lower-cased: `failed`, `delayed`, `delivered`, `relayed`,
    /// `expanded`.
    pub action: Option<String>,
    /// A permanent failure: a `5.x.x` status, or `failed` without a status.
    pub permanent: bool,
    /// The `Diagnostic-Code` text, without its type (`smtp;`).
    pub diagnostic: Option<String>,
}

/// What Switchboard takes from one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMail {
    /// The Message-ID, without angle brackets (at most 512 bytes).
    pub message_id: Option<String>,
    /// In-Reply-To, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// References, without angle brackets, in order (the first and the last
    /// ones kept when there are very many).
    pub references: Vec<String>,
    /// The first address of `From`.
    pub from: Option<Mailbox>,
    /// The first address of `Reply-To`.
    pub reply_to: Option<Mailbox>,
    /// The addresses of every `To` field, lower-cased.
    pub to: Vec<String>,
    /// The addresses of every `Cc` field, lower-cased.
    pub cc: Vec<String>,
    /// The decoded subject on one line, at most 1024 bytes.
    pub subject: Option<String>,
    /// The readable text: the text/plain body, else text derived from the
    /// HTML body (scripts and styles dropped). Line ends are `\n`, control
    /// characters other than `\n` and `\t` are removed; clipped to
    /// [`ParseLimits::max_text_bytes`], ending in [`CLIPPED_MARK`] when clipped.
    pub text: String,
    /// The HTML body as received (decoded to UTF-8). Kept, never rendered by
    /// Switchboard.
    pub html: Option<String>,
    /// The attachments within the limits.
    pub attachments: Vec<Attachment>,
    /// Attachments skipped: beyond `max_attachments` or larger than
    /// `max_attachment_bytes`.
    pub skipped_attachments: usize,
    /// What kind of mail it is.
    pub kind: MailKind,
    /// Never answer automatically: auto replies, bounces, bulk and list mail,
    /// and mail carrying `X-Auto-Response-Suppress` or a null `Return-Path`.
    /// The channel adds mail whose envelope sender is null, and mail whose
    /// customer address only software writes from ([`automated_sender`]).
    pub no_auto_answer: bool,
    /// The `Date` field as Unix milliseconds, when valid and after 1970.
    pub date_ms: Option<u64>,
    /// The first language of `Content-Language`, when it looks like a BCP 47
    /// tag (at most 35 bytes).
    pub language: Option<String>,
    /// The conversation tag found in the subject (see [`conversation_tag`]).
    pub tag: Option<String>,
}

/// What ends a clipped [`ParsedMail::text`].
pub const CLIPPED_MARK: &str = "\n[…]";

/// Reads a raw mail (RFC 5322, as received over LMTP/SMTP or fetched from
/// IMAP). Never fails: what cannot be read is left out, and bytes without
/// any header become the text of a [`MailKind::Customer`] mail.
pub fn parse(raw: &[u8], limits: &ParseLimits) -> ParsedMail {
    let parsed = MessageParser::new().parse(raw);
    let Some(msg) = parsed.as_ref().filter(|m| !m.parts.is_empty()) else {
        return ParsedMail::unreadable(raw, limits);
    };
    let hdrs = Headers::root(msg);
    let subject_full = hdrs.subject();
    let tag = subject_full.as_deref().and_then(conversation_tag);
    let from = hdrs.mailbox("From");
    let kind = classify::kind(msg, &hdrs, subject_full.as_deref(), from.as_ref());
    let no_auto_answer = kind != MailKind::Customer
        || hdrs.has("X-Auto-Response-Suppress")
        || hdrs.raw("Return-Path").as_deref() == Some("<>");
    let body = text::body(msg, limits.max_text_bytes);
    let is_bounce = matches!(kind, MailKind::Bounce(_));
    let (attachments, skipped_attachments) = attach::collect(msg, limits, &body.used, is_bounce);
    ParsedMail {
        message_id: hdrs.ids("Message-ID").into_iter().next(),
        in_reply_to: hdrs.ids("In-Reply-To"),
        references: hdrs.ids("References"),
        from,
        reply_to: hdrs.mailbox("Reply-To"),
        to: hdrs.addresses("To"),
        cc: hdrs.addresses("Cc"),
        subject: subject_full.map(|s| headers::clip(&s, headers::MAX_SUBJECT_BYTES).to_owned()),
        text: body.text,
        html: body.html,
        attachments,
        skipped_attachments,
        kind,
        no_auto_answer,
        date_ms: hdrs.date_ms(),
        language: hdrs.language(),
        tag,
    }
}

impl ParsedMail {
    /// What is left of bytes without a readable header: their text.
    fn unreadable(raw: &[u8], limits: &ParseLimits) -> ParsedMail {
        ParsedMail {
            message_id: None,
            in_reply_to: Vec::new(),
            references: Vec::new(),
            from: None,
            reply_to: None,
            to: Vec::new(),
            cc: Vec::new(),
            subject: None,
            text: text::finish(&String::from_utf8_lossy(raw), limits.max_text_bytes),
            html: None,
            attachments: Vec::new(),
            skipped_attachments: 0,
            kind: MailKind::Customer,
            no_auto_answer: false,
            date_ms: None,
            language: None,
            tag: None,
        }
    }
}
