//! Telegram Bot API updates, as posted to a webhook set with `setWebhook`:
//! one `Update` per request, with `update_id` and one optional field saying
//! what happened. Read here:
//!
//! - `message`: a new message; `edited_message`: a new version of an
//!   earlier one (same `chat.id` and `message_id`, with `edit_date`);
//! - every other kind (`channel_post`, `callback_query`, `my_chat_member`,
//!   …) is ignored.
//!
//! A `Message` has `message_id` (unique only within its chat), `from` (the
//! user: `first_name`, `last_name`, `username`, `language_code`), `chat`
//! (`id`, `type`), `date` (unix seconds), and `text` or a media field with
//! an optional `caption`: `photo` (the same picture in several sizes: the
//! largest is kept), `document`, `video`, `audio`, `voice`, `video_note`,
//! `animation` (also sent as `document`: counted once), `sticker`,
//! `location`, `contact`. Media carry a `file_id` to fetch with `getFile`.
//!
//! Only private chats are contacts: in a group the bot would see everyone's
//! messages (and replies would go to the whole group), so group, supergroup
//! and channel messages are ignored.

use super::{
    Items, ParseError, customer, display_name, from_secs, from_slice, from_value, language,
    non_blank,
};
use crate::item::{
    AttachmentKind, AttachmentRef, GeoPoint, MessageEdit, Platform, SocialItem, SocialMessage,
};
use serde::Deserialize;

const TG: Platform = Platform::Telegram;

/// Parses one Telegram webhook update (already checked with
/// [`verify_telegram_token`](crate::verify_telegram_token)). It gives at
/// most one item.
pub fn parse_telegram(body: &[u8]) -> Result<Vec<SocialItem>, ParseError> {
    let update: Update = from_slice(body)?;
    let mut items = Items::default();
    items.event()?;
    // An update whose message cannot be read is that update's problem:
    // kept as `Unreadable` (counted, logged) and acknowledged, rather than
    // refused and retried by Telegram until it gives up. Only a body that
    // is no update at all is refused.
    let read = if let Some(m) = update.message {
        from_value::<Message>(m, "message")
            .and_then(|m| message(m, "message"))
            .map(|m| match m {
                Ok(m) => items.push(SocialItem::Message(m)),
                Err(reason) => items.ignore(TG, reason),
            })
    } else if let Some(m) = update.edited_message {
        from_value::<Message>(m, "edited_message")
            .and_then(|m| edit(m, "edited_message"))
            .map(|e| match e {
                Ok(e) => items.push(SocialItem::Edit(e)),
                Err(reason) => items.ignore(TG, reason),
            })
    } else {
        items.ignore(TG, "unsupported_update");
        Ok(())
    };
    items.unreadable(TG, read)?;
    Ok(items.into_vec())
}

#[derive(Deserialize)]
struct Update {
    /// Not used (the message id deduplicates), but required: a body without
    /// it is not an update.
    #[serde(rename = "update_id")]
    _update_id: i64,
    /// Read as a [`Message`] on its own (see [`parse_telegram`]).
    message: Option<serde_json::Value>,
    edited_message: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    from: Option<User>,
    chat: Chat,
    #[serde(default)]
    date: u64,
    edit_date: Option<u64>,
    text: Option<String>,
    caption: Option<String>,
    #[serde(default)]
    photo: Vec<PhotoSize>,
    document: Option<File>,
    animation: Option<File>,
    video: Option<File>,
    video_note: Option<File>,
    audio: Option<File>,
    voice: Option<File>,
    sticker: Option<Sticker>,
    location: Option<Location>,
    contact: Option<Contact>,
}

#[derive(Deserialize)]
struct User {
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    language_code: Option<String>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct PhotoSize {
    file_id: String,
    #[serde(default)]
    width: u64,
    #[serde(default)]
    height: u64,
}

#[derive(Deserialize)]
struct File {
    file_id: String,
    file_name: Option<String>,
    mime_type: Option<String>,
}

#[derive(Deserialize)]
struct Sticker {
    file_id: String,
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
struct Contact {
    phone_number: String,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// The new message, or why it is skipped.
fn message(mut m: Message, path: &str) -> Result<Result<SocialMessage, &'static str>, ParseError> {
    if m.chat.kind != "private" {
        return Ok(Err("group_chat"));
    }
    let customer = customer(TG, &m.chat.id.to_string(), || format!("{path}.chat.id"))?;
    let name = m
        .from
        .as_ref()
        .and_then(|u| name(&u.first_name, &u.last_name, &u.username))
        .or_else(|| name(&m.chat.first_name, &m.chat.last_name, &m.chat.username));
    let lang = language(m.from.as_ref().and_then(|u| u.language_code.as_deref()));
    let provider_message_id = message_key(m.chat.id, m.message_id);
    let sent_at = from_secs(m.date);
    let text = m
        .text
        .take()
        .or_else(|| m.caption.clone())
        .unwrap_or_default();
    let attachments = attachments(m);
    if text.trim().is_empty() && attachments.is_empty() {
        return Ok(Err("no_content"));
    }
    Ok(Ok(SocialMessage {
        platform: TG,
        account: None,
        customer,
        customer_name: name,
        provider_message_id,
        text,
        payload: None,
        attachments,
        language: lang,
        sent_at,
    }))
}

/// The edit, or why it is skipped (an edit without text is e.g. a live
/// location moving).
fn edit(m: Message, path: &str) -> Result<Result<MessageEdit, &'static str>, ParseError> {
    if m.chat.kind != "private" {
        return Ok(Err("group_chat"));
    }
    let customer = customer(TG, &m.chat.id.to_string(), || format!("{path}.chat.id"))?;
    let Some(text) = non_blank(m.text.or(m.caption)) else {
        return Ok(Err("no_text"));
    };
    Ok(Ok(MessageEdit {
        platform: TG,
        account: None,
        customer,
        provider_message_id: message_key(m.chat.id, m.message_id),
        text,
        edited_at: m.edit_date.and_then(from_secs),
    }))
}

/// `"<chat id>:<message id>"`: Telegram numbers messages per chat.
fn message_key(chat_id: i64, message_id: i64) -> String {
    format!("{chat_id}:{message_id}")
}

/// "First Last", else the username.
fn name(
    first: &Option<String>,
    last: &Option<String>,
    username: &Option<String>,
) -> Option<String> {
    let full: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .collect();
    display_name(&full.join(" ")).or_else(|| username.as_deref().and_then(display_name))
}

fn attachments(m: Message) -> Vec<AttachmentRef> {
    let caption = non_blank(m.caption);
    let mut out = Vec::new();
    let mut file = |kind: AttachmentKind, f: File| {
        let mut a = AttachmentRef::new(kind);
        a.media_id = Some(f.file_id);
        a.filename = non_blank(f.file_name);
        a.mime_type = non_blank(f.mime_type);
        a.caption = caption.clone();
        out.push(a);
    };
    // The sizes of one picture: keep the largest.
    if let Some(p) = m
        .photo
        .into_iter()
        .max_by_key(|p| p.width.saturating_mul(p.height))
    {
        file(
            AttachmentKind::Image,
            File {
                file_id: p.file_id,
                file_name: None,
                mime_type: None,
            },
        );
    }
    // An animation is also sent as `document`, for old clients.
    match (m.animation, m.document) {
        (Some(f), _) => file(AttachmentKind::Video, f),
        (None, Some(f)) => file(AttachmentKind::Document, f),
        (None, None) => {}
    }
    for (kind, f) in [
        (AttachmentKind::Video, m.video),
        (AttachmentKind::Video, m.video_note),
        (AttachmentKind::Audio, m.audio),
        (AttachmentKind::Voice, m.voice),
    ] {
        if let Some(f) = f {
            file(kind, f);
        }
    }
    if let Some(s) = m.sticker {
        let mut a = AttachmentRef::new(AttachmentKind::Sticker);
        a.media_id = Some(s.file_id);
        a.caption = non_blank(s.emoji);
        out.push(a);
    }
    if let Some(l) = m.location {
        let mut a = AttachmentRef::new(AttachmentKind::Location);
        a.location = Some(GeoPoint {
            latitude: l.latitude,
            longitude: l.longitude,
        });
        out.push(a);
    }
    if let Some(c) = m.contact {
        let words: Vec<String> = [c.first_name, c.last_name, Some(c.phone_number)]
            .into_iter()
            .flatten()
            .collect();
        let mut a = AttachmentRef::new(AttachmentKind::Contact);
        a.caption = non_blank(Some(words.join(" ")));
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ignored;
    use crate::parse::corpus;
    use switchboard_core::Timestamp;

    #[test]
    fn private_text() {
        let items = parse_telegram(&corpus::read("telegram-text.json")).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.platform, Platform::Telegram);
        assert_eq!(m.account, None);
        assert_eq!(m.customer.to_string(), "telegram:5550001");
        assert_eq!(m.customer_name.as_deref(), Some("Оксана"));
        assert_eq!(m.provider_message_id, "5550001:1365");
        assert_eq!(m.text, "Добрий вечір! Коли відкриється магазин?");
        assert_eq!(m.language.as_deref(), Some("uk"));
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_606_000)));
        assert!(m.attachments.is_empty());
        let event = m.clone().into_inbound("telegram");
        assert_eq!(event.language.as_deref(), Some("uk"));
        assert_eq!(event.address, "");
        assert!(event.validate(Default::default()).is_ok());
    }

    #[test]
    fn photo_with_caption_keeps_the_largest_size() {
        let items = parse_telegram(&corpus::read("telegram-photo.json")).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.provider_message_id, "5550001:1366");
        assert_eq!(m.text, "чек");
        let [a] = m.attachments.as_slice() else {
            panic!("{m:?}")
        };
        assert_eq!(a.kind, AttachmentKind::Image);
        assert_eq!(a.media_id.as_deref(), Some("AgAD-large"));
        assert_eq!(a.caption.as_deref(), Some("чек"));
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_607_000)));
    }

    #[test]
    fn edit_refers_to_the_earlier_message() {
        let text = parse_telegram(&corpus::read("telegram-text.json")).expect("parses");
        let [SocialItem::Message(original)] = text.as_slice() else {
            panic!("{text:?}")
        };
        let items = parse_telegram(&corpus::read("telegram-edited.json")).expect("parses");
        let [SocialItem::Edit(e)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(e.provider_message_id, original.provider_message_id);
        assert_eq!(e.provider_message_id, "5550001:1365");
        assert_eq!(e.customer, original.customer);
        assert_eq!(e.text, "Добрий вечір! Коли відкриється магазин завтра?");
        assert_eq!(e.edited_at, Some(Timestamp(1_795_341_700_000)));
        assert_eq!(e.account, None);
    }

    fn update(message: &str) -> Result<Vec<SocialItem>, ParseError> {
        parse_telegram(format!(r#"{{"update_id":1,"message":{message}}}"#).as_bytes())
    }

    #[test]
    fn media_kinds_and_names() {
        let items = update(
            r#"{"message_id":7,"from":{"id":9,"is_bot":false,"first_name":"A","last_name":"B"},"chat":{"id":9,"type":"private"},"date":1,
                "animation":{"file_id":"AN","mime_type":"video/mp4"},"document":{"file_id":"AN","mime_type":"video/mp4"}}"#,
        )
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.customer_name.as_deref(), Some("A B"));
        assert_eq!(m.attachments.len(), 1, "the animation is counted once");
        assert_eq!(m.attachments[0].kind, AttachmentKind::Video);

        let items = update(
            r#"{"message_id":8,"from":{"id":9,"is_bot":false,"first_name":" ","username":"olena_k"},"chat":{"id":9,"type":"private"},"date":1,
                "voice":{"file_id":"V","mime_type":"audio/ogg"}}"#,
        )
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.customer_name.as_deref(), Some("olena_k"));
        assert_eq!(m.text, "");
        assert_eq!(m.attachments[0].kind, AttachmentKind::Voice);

        let items = update(
            r#"{"message_id":9,"chat":{"id":9,"type":"private","first_name":"Chat"},"date":1,
                "document":{"file_id":"D","file_name":"a.pdf"},"caption":"invoice"}"#,
        )
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.customer_name.as_deref(), Some("Chat"));
        assert_eq!(m.text, "invoice");
        assert_eq!(m.attachments[0].filename.as_deref(), Some("a.pdf"));
    }

    #[test]
    fn skipped_updates() {
        let ignored = |reason| {
            vec![SocialItem::Ignored(Ignored {
                platform: Platform::Telegram,
                reason,
            })]
        };
        let group = update(
            r#"{"message_id":1,"chat":{"id":-100,"type":"supergroup"},"date":1,"text":"hi"}"#,
        );
        assert_eq!(group, Ok(ignored("group_chat")));
        let service = update(
            r#"{"message_id":1,"chat":{"id":9,"type":"private"},"date":1,"new_chat_title":"x"}"#,
        );
        assert_eq!(service, Ok(ignored("no_content")));
        let callback = parse_telegram(br#"{"update_id":5,"callback_query":{"id":"1","data":"x"}}"#);
        assert_eq!(callback, Ok(ignored("unsupported_update")));
        let live_location = parse_telegram(
            br#"{"update_id":6,"edited_message":{"message_id":1,"chat":{"id":9,"type":"private"},"date":1,"edit_date":2,"location":{"latitude":1.0,"longitude":2.0}}}"#,
        );
        assert_eq!(live_location, Ok(ignored("no_text")));
    }

    #[test]
    fn refusals_name_the_field() {
        let e = parse_telegram(b"[]").expect_err("not an object");
        assert_eq!(e.kind(), "json");
        let e = parse_telegram(br#"{"callback_query":{}}"#).expect_err("no update_id");
        assert!(
            matches!(&e, ParseError::Json { path, .. } if path == "."),
            "{e}"
        );
    }

    /// An update whose message cannot be read is kept as `Unreadable`,
    /// with where it failed, and not refused.
    #[test]
    fn an_unreadable_message_is_named_not_refused() {
        let unreadable = |items: Result<Vec<SocialItem>, ParseError>| match items
            .expect("the update reads")
            .as_slice()
        {
            [SocialItem::Unreadable(u)] => (u.path.clone(), u.kind),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            unreadable(update(r#"{"message_id":1,"date":1,"text":"no chat"}"#)),
            ("message".to_owned(), "json")
        );
        assert_eq!(
            unreadable(update(
                r#"{"message_id":1,"chat":{"id":"nine","type":"private"},"text":"x"}"#
            )),
            ("message.chat.id".to_owned(), "json")
        );
        assert_eq!(
            unreadable(parse_telegram(
                br#"{"update_id":7,"edited_message":{"message_id":"one","chat":{"id":9,"type":"private"},"date":1,"text":"x"}}"#
            )),
            ("edited_message.message_id".to_owned(), "json")
        );
    }
}
