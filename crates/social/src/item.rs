//! What a webhook delivery means, whatever provider sent it.
//!
//! Every parser in [`crate::parse`] turns one delivery into a list of
//! [`SocialItem`]s, in the order the provider listed them. Only a
//! [`SocialItem::Message`] becomes an [`InboundEvent`] (and so possibly a new
//! contact); edits, receipts and echoes concern messages that already exist,
//! and [`SocialItem::Ignored`] says what was knowingly skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent, Timestamp};

/// The messaging service a customer wrote on. Its [`Platform::as_str`] is the
/// scheme of the customer's [`CustomerIdentity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// Facebook Messenger (`object: "page"`).
    Messenger,
    /// Instagram Direct (`object: "instagram"`).
    Instagram,
    /// WhatsApp Cloud API (`object: "whatsapp_business_account"`).
    WhatsApp,
    Telegram,
    /// Switchboard's own signed webhook format ([`crate::parse::generic`]).
    Generic,
}

impl Platform {
    /// The identity scheme and metrics label: `messenger`, `instagram`,
    /// `whatsapp`, `telegram` or `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
            Self::WhatsApp => "whatsapp",
            Self::Telegram => "telegram",
            Self::Generic => "generic",
        }
    }
}

/// One thing a delivery told us.
#[derive(Debug, Clone, PartialEq)]
pub enum SocialItem {
    /// A customer wrote (or pressed a button): goes to the intake.
    Message(SocialMessage),
    /// A customer changed the text of a message sent earlier.
    Edit(MessageEdit),
    /// What happened to one of our replies (or, for a Messenger watermark,
    /// to all of them up to a time).
    Receipt(Receipt),
    /// Our own reply, sent by us or from the provider's inbox, echoed back.
    /// It concerns no customer message and creates no contact.
    Echo(Echo),
    /// An event we knowingly skip (reactions, group chats, unsupported
    /// types, …): acknowledged to the provider, counted, not stored.
    Ignored(Ignored),
    /// One event of a batch that could not be read (a field missing or of
    /// the wrong type), while the batch itself could: the others are
    /// stored, this one is counted and logged with where it failed.
    Unreadable(Unreadable),
}

/// A new message from a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct SocialMessage {
    pub platform: Platform,
    /// What the customer wrote to: the Facebook page id, the Instagram
    /// professional account id (both `entry[].id`), the WhatsApp
    /// `metadata.phone_number_id`, or the generic payload's `account`.
    /// `None` for Telegram: the update does not say which bot it is for, the
    /// adapter knows it from its configuration and may fill it in.
    pub account: Option<String>,
    /// The customer, as the platform scopes them: Messenger's page-scoped id
    /// (PSID, `sender.id`), Instagram's IGSID (`sender.id`), WhatsApp's `wa_id`
    /// (`messages[].from`: the phone number in international form without
    /// `+`), Telegram's `chat.id` (the id replies are sent to; in the private
    /// chats we accept it equals the user's id), the generic `customer.id`.
    pub customer: CustomerIdentity,
    /// The name the platform shows, when it gives one: WhatsApp
    /// `contacts[].profile.name`, Telegram `first_name` + `last_name` (or
    /// `username`), the generic `customer.name`. Messenger and Instagram do not
    /// send names in webhooks (they take a Graph API call). At most 256 bytes.
    pub customer_name: Option<String>,
    /// The provider's id for this message, the deduplication key: Messenger
    /// and Instagram `message.mid` (for a postback `postback.mid`, or
    /// `postback:<sender>:<timestamp>` when Meta sends none), WhatsApp
    /// `messages[].id` (`wamid.…`), Telegram `"<chat.id>:<message_id>"`
    /// (Telegram's `message_id` is only unique within a chat, and an edit
    /// must find the message by it; `update_id` changes with every update),
    /// the generic `id`.
    pub provider_message_id: String,
    /// The text: `text`, or the caption of a media message, or the title of
    /// a button the customer pressed. May be empty when there are
    /// attachments.
    pub text: String,
    /// The developer-defined payload of a pressed button (Messenger
    /// `postback.payload` and `quick_reply.payload`, WhatsApp
    /// `button.payload` and `interactive.*_reply.id`).
    pub payload: Option<String>,
    /// Media and other non-text parts, as references to fetch later.
    pub attachments: Vec<AttachmentRef>,
    /// The customer's language when the platform tells it (Telegram
    /// `from.language_code`), at most 35 bytes.
    pub language: Option<String>,
    /// When the provider says the message was sent.
    pub sent_at: Option<Timestamp>,
}

/// A reference to a non-text part of a message. Nothing is downloaded while
/// parsing: WhatsApp and Telegram give a media id to fetch through their API
/// (WhatsApp `GET /<media id>`, Telegram `getFile`), Messenger and Instagram a
/// CDN `url` that expires.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentRef {
    pub kind: AttachmentKind,
    /// WhatsApp `image.id` (etc.), Telegram `file_id`.
    pub media_id: Option<String>,
    /// Messenger and Instagram `attachments[].payload.url`, a generic `url`.
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub filename: Option<String>,
    /// Text shown with it: the media caption, a location's name and address,
    /// a shared contact's name and phone number, a sticker's emoji.
    pub caption: Option<String>,
    /// For a shared location.
    pub location: Option<GeoPoint>,
}

impl AttachmentRef {
    /// An attachment of `kind` with nothing else known yet.
    pub fn new(kind: AttachmentKind) -> Self {
        AttachmentRef {
            kind,
            media_id: None,
            url: None,
            mime_type: None,
            filename: None,
            caption: None,
            location: None,
        }
    }
}

/// What kind of part an attachment is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttachmentKind {
    Image,
    Video,
    Audio,
    /// A recorded voice note (Telegram `voice`, WhatsApp `audio.voice`).
    Voice,
    /// A file: Messenger `file`, WhatsApp and Telegram `document`.
    Document,
    Sticker,
    Location,
    /// A shared contact card.
    Contact,
    /// Anything else, with the provider's type (Instagram `share`,
    /// `story_mention`, `ig_reel`, Messenger `fallback`, …), at most 32 bytes.
    Other(String),
}

impl AttachmentKind {
    /// A short label; every `Other` reads `other` (bounded for metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Location => "location",
            Self::Contact => "contact",
            Self::Other(_) => "other",
        }
    }

    fn describe(&self) -> &str {
        match self {
            Self::Other(t) => t,
            k => k.as_str(),
        }
    }
}

/// A point on the map, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

/// A customer edited a message: Messenger `message_edit`, Telegram
/// `edited_message`, a generic `edit`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEdit {
    pub platform: Platform,
    /// As [`SocialMessage::account`].
    pub account: Option<String>,
    pub customer: CustomerIdentity,
    /// The [`SocialMessage::provider_message_id`] of the edited message.
    pub provider_message_id: String,
    /// The whole new text (or caption).
    pub text: String,
    /// When it was edited (Telegram `edit_date`, Messenger `timestamp`).
    pub edited_at: Option<Timestamp>,
}

/// What happened to a message we sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub platform: Platform,
    /// As [`SocialMessage::account`].
    pub account: Option<String>,
    /// Whom our message went to, when the provider says (WhatsApp
    /// `recipient_id`, Messenger `sender.id` of the read/delivery event).
    pub customer: Option<CustomerIdentity>,
    pub target: ReceiptTarget,
    pub status: ReceiptStatus,
    /// When it happened, per the provider.
    pub at: Option<Timestamp>,
}

/// Which of our messages a receipt is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptTarget {
    /// The provider's id of our message, as it answered when we sent it
    /// (WhatsApp `statuses[].id`, Messenger `delivery.mids[]`, Instagram
    /// `read.mid`).
    Message(String),
    /// Every message we sent to this customer up to this time (Messenger
    /// `read.watermark` / `delivery.watermark`, in milliseconds).
    Watermark(Timestamp),
}

/// The state a receipt reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Accepted by the provider's servers (WhatsApp `sent`).
    Sent,
    /// On the customer's device.
    Delivered,
    Read,
    /// It will not arrive. WhatsApp gives `errors[].code` and `.title`
    /// (e.g. 131047: the 24-hour window closed).
    Failed {
        code: Option<i64>,
        title: Option<String>,
    },
}

impl ReceiptStatus {
    /// A short label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed { .. } => "failed",
        }
    }
}

/// One of our own messages echoed back (Messenger and Instagram
/// `message.is_echo = true`). Meta also echoes what a person typed in the
/// page's own inbox, so this is how such replies could be recorded later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub platform: Platform,
    /// As [`SocialMessage::account`].
    pub account: Option<String>,
    /// The `mid` of our message.
    pub provider_message_id: String,
}

/// An event knowingly skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub platform: Platform,
    /// Why, as a short fixed label fit for metrics (`reaction`,
    /// `group_chat`, `no_content`, `unsupported_type`, …).
    pub reason: &'static str,
}

/// An event of a batch that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub platform: Platform,
    /// Where in the body, e.g. `entry[0].messaging[1].message.mid`.
    pub path: String,
    /// What was wrong, as [`ParseError::kind`](crate::ParseError::kind)
    /// gives it (`json`, `invalid`). The error's own words are not kept:
    /// they may quote the customer's text.
    pub kind: &'static str,
}

/// Longest attribute value the intake accepts.
const MAX_ATTRIBUTE_BYTES: usize = 1024;

impl SocialMessage {
    /// The event handed to the intake, for the adapter named `source`.
    ///
    /// `address` is the [`account`](Self::account) (empty when unknown),
    /// the channel is [`ChannelKind::Social`], and the attribute `platform`
    /// says which service it came from (so routing rules can tell WhatsApp
    /// from Instagram). Each attachment is summarized on its own line after
    /// the text (kind, file name, MIME type, caption, location, media id or
    /// URL), its media id (if any) goes in `media` (what the agent API will
    /// serve), and the attribute `attachments` lists their kinds. A button's payload goes in the
    /// attribute `payload`. The event is not validated here; the intake does
    /// that.
    pub fn into_inbound(self, source: &str) -> InboundEvent {
        self.into_inbound_within(source, usize::MAX).0
    }

    /// As [`into_inbound`](Self::into_inbound), with the text made to fit
    /// `max_text_bytes` (the intake's limit, `Intake::limits`) rather than
    /// be refused: the customer's own text is cut at a character boundary,
    /// ending in [`CUT_MARK`], to leave the attachment lines room (they are
    /// cut too only when they alone do not fit). True when anything was cut.
    pub fn into_inbound_within(self, source: &str, max_text_bytes: usize) -> (InboundEvent, bool) {
        let mut attributes = BTreeMap::new();
        attributes.insert("platform".to_owned(), self.platform.as_str().to_owned());
        if !self.attachments.is_empty() {
            let kinds: Vec<&str> = self.attachments.iter().map(|a| a.kind.as_str()).collect();
            attributes.insert(
                "attachments".to_owned(),
                clip(&kinds.join(","), MAX_ATTRIBUTE_BYTES).to_owned(),
            );
        }
        if let Some(payload) = &self.payload {
            attributes.insert(
                "payload".to_owned(),
                clip(payload, MAX_ATTRIBUTE_BYTES).to_owned(),
            );
        }
        // Captions are compared with the message's own text only (not with
        // the summaries added so far): linear in the number of attachments.
        let lines: Vec<String> = self
            .attachments
            .iter()
            .map(|a| summarize(a, &self.text))
            .collect();
        let (text, cut) = join_within(&self.text, &lines.join("\n"), max_text_bytes);
        // What the agent API may fetch for this conversation (an id the
        // intake would refuse is left out rather than lose the message).
        let media = self
            .attachments
            .iter()
            .filter_map(|a| a.media_id.clone())
            .filter(|id| {
                !id.is_empty() && id.len() <= switchboard_core::inbound::MAX_MEDIA_ID_BYTES
            })
            .take(switchboard_core::inbound::MAX_MEDIA)
            .collect();
        let event = InboundEvent {
            channel: ChannelKind::Social,
            source: source.to_owned(),
            address: self.account.unwrap_or_default(),
            customer: self.customer,
            customer_name: self.customer_name,
            provider_message_id: Some(self.provider_message_id),
            subject: None,
            text,
            language: self.language,
            attributes,
            sent_at: self.sent_at,
            new_contact: false,
            media,
        };
        (event, cut)
    }
}

/// `text`, then `lines` on the lines after it, within `max` bytes: the
/// text is cut first. True when anything was cut.
fn join_within(text: &str, lines: &str, max: usize) -> (String, bool) {
    if lines.is_empty() {
        return (fit(text, max), text.len() > max);
    }
    let room = max.saturating_sub(lines.len() + 1);
    let mut out = fit(text, room);
    let mut cut = text.len() > room;
    if !out.is_empty() {
        out.push('\n');
    }
    let room = max.saturating_sub(out.len());
    cut |= lines.len() > room;
    out.push_str(&fit(lines, room));
    (out, cut)
}

/// What ends a text cut to fit the intake's limit.
pub const CUT_MARK: &str = "\n[…]";

/// `text`, cut at a character boundary to at most `room` bytes and ending
/// in [`CUT_MARK`] when cut (the mark counted).
pub(crate) fn fit(text: &str, room: usize) -> String {
    if text.len() <= room {
        return text.to_owned();
    }
    let mark = if room >= CUT_MARK.len() { CUT_MARK } else { "" };
    format!("{}{mark}", clip(text, room - mark.len()).trim_end())
}

/// `[attachment: image, image/jpeg, media id MEDIA-ID-1]`; the caption is
/// left out when the text already carries it.
fn summarize(a: &AttachmentRef, text: &str) -> String {
    let mut line = format!("[attachment: {}", a.kind.describe());
    if let Some(name) = &a.filename {
        // Shown to agents: no line breaks, no bidirectional controls.
        let name: String = name
            .chars()
            .filter(|c| !switchboard_channel::files::hidden_in_a_name(*c))
            .collect();
        let _ = write!(line, " \"{name}\"");
    }
    if let Some(mime) = &a.mime_type {
        let _ = write!(line, ", {mime}");
    }
    if let Some(p) = a.location {
        let _ = write!(line, ", {},{}", p.latitude, p.longitude);
    }
    if let Some(caption) = a.caption.as_deref().filter(|c| !text.contains(*c)) {
        let _ = write!(line, ", \"{caption}\"");
    }
    if let Some(id) = &a.media_id {
        let _ = write!(line, ", media id {id}");
    } else if let Some(url) = &a.url {
        let _ = write!(line, ", {url}");
    }
    line.push(']');
    line
}

pub(crate) use switchboard_core::clip;

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> SocialMessage {
        SocialMessage {
            platform: Platform::WhatsApp,
            account: Some("106540352242922".into()),
            customer: CustomerIdentity::new("whatsapp", "380501234567").expect("valid identity"),
            customer_name: Some("Іван".into()),
            provider_message_id: "wamid.1".into(),
            text: "фото".into(),
            payload: None,
            attachments: vec![],
            language: None,
            sent_at: Some(Timestamp(1_795_341_605_000)),
        }
    }

    #[test]
    fn text_message_becomes_an_inbound_event() {
        let event = message().into_inbound("meta");
        assert_eq!(event.channel, ChannelKind::Social);
        assert_eq!(event.source, "meta");
        assert_eq!(event.address, "106540352242922");
        assert_eq!(event.customer.to_string(), "whatsapp:380501234567");
        assert_eq!(event.customer_name.as_deref(), Some("Іван"));
        assert_eq!(event.provider_message_id.as_deref(), Some("wamid.1"));
        assert_eq!(event.text, "фото");
        assert_eq!(
            event.attributes.get("platform").map(String::as_str),
            Some("whatsapp")
        );
        assert_eq!(event.attributes.len(), 1);
        assert_eq!(event.sent_at, Some(Timestamp(1_795_341_605_000)));
        assert!(event.validate(Default::default()).is_ok());
    }

    #[test]
    fn attachments_are_summarized_in_text_and_attributes() {
        let mut m = message();
        let mut image = AttachmentRef::new(AttachmentKind::Image);
        image.media_id = Some("MEDIA-1".into());
        image.mime_type = Some("image/jpeg".into());
        image.caption = Some("фото".into());
        let mut place = AttachmentRef::new(AttachmentKind::Location);
        place.location = Some(GeoPoint {
            latitude: 50.45,
            longitude: 30.52,
        });
        place.caption = Some("Shop".into());
        let mut share = AttachmentRef::new(AttachmentKind::Other("story_mention".into()));
        share.url = Some("https://cdn.example/x".into());
        m.attachments = vec![image, place, share];
        m.payload = Some("BUY".into());
        let event = m.into_inbound("meta");
        assert_eq!(
            event.text,
            "фото\n[attachment: image, image/jpeg, media id MEDIA-1]\n\
             [attachment: location, 50.45,30.52, \"Shop\"]\n\
             [attachment: story_mention, https://cdn.example/x]"
        );
        assert_eq!(
            event.attributes.get("attachments").map(String::as_str),
            Some("image,location,other")
        );
        assert_eq!(
            event.attributes.get("payload").map(String::as_str),
            Some("BUY")
        );
    }

    #[test]
    fn attachment_alone_gives_text() {
        let mut m = message();
        m.text = String::new();
        let mut doc = AttachmentRef::new(AttachmentKind::Document);
        doc.filename = Some("invoice.pdf".into());
        m.attachments = vec![doc];
        let event = m.into_inbound("meta");
        assert_eq!(event.text, "[attachment: document \"invoice.pdf\"]");
        assert!(event.validate(Default::default()).is_ok());
    }

    /// A file name reversed by a bidirectional control (shown to agents as
    /// `invoiceexe.pdf`) or broken over lines loses those characters.
    #[test]
    fn a_file_name_loses_its_bidirectional_controls_and_line_breaks() {
        let mut m = message();
        m.text = String::new();
        let mut doc = AttachmentRef::new(AttachmentKind::Document);
        doc.filename = Some("invoice\u{202E}fdp.exe\n[x]".into());
        m.attachments = vec![doc];
        let event = m.into_inbound("meta");
        assert_eq!(event.text, "[attachment: document \"invoicefdp.exe[x]\"]");
    }

    #[test]
    fn a_long_text_is_cut_to_fit_leaving_the_attachment_lines() {
        let limits = switchboard_core::inbound::EventLimits {
            max_text_bytes: 64 * 1024,
        };
        let mut m = message();
        m.text = "ї".repeat(40_000);
        let mut image = AttachmentRef::new(AttachmentKind::Image);
        image.media_id = Some("MEDIA-1".into());
        m.attachments = vec![image];
        let (event, cut) = m.into_inbound_within("meta", limits.max_text_bytes);
        assert!(cut);
        assert!(event.text.len() <= limits.max_text_bytes);
        assert!(
            event
                .text
                .ends_with("ї\n[…]\n[attachment: image, media id MEDIA-1]"),
            "{} bytes",
            event.text.len()
        );
        assert!(event.validate(limits).is_ok());

        // What fits is left as it is.
        let (event, cut) = message().into_inbound_within("meta", 8);
        assert!(!cut);
        assert_eq!(event.text, "фото");
        let (event, cut) = message().into_inbound_within("meta", 7);
        assert!(cut);
        assert_eq!(event.text, "\n[…]");
    }

    #[test]
    fn fit_cuts_at_a_character_boundary_with_the_mark() {
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("abcdefgh", 8), "abcdefgh");
        assert_eq!(fit("abcdefghi", 8), "ab\n[…]");
        assert_eq!(fit("аб вгд", 9), "а\n[…]");
        assert_eq!(fit("abc", 2), "ab");
    }
}
