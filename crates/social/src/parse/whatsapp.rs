//! WhatsApp Cloud API changes: `entry[].changes[]` with `field: "messages"`
//! and a `value` holding
//!
//! - `metadata.phone_number_id`: our business number, the [`account`];
//! - `contacts[]`: `wa_id` and `profile.name` of the customers who wrote;
//! - `messages[]`: `from` (the customer's `wa_id`), `id` (`wamid.…`),
//!   `timestamp` (unix seconds, as a string), `type` and an object named
//!   after the type: `text.body`; `image`/`video`/`audio`/`document`/
//!   `sticker` with the media `id` (fetched later through the Graph API),
//!   `mime_type`, `caption`, `filename`; `location`; `contacts`;
//!   `interactive.button_reply`/`list_reply` and `button` (replies to our
//!   buttons); `reaction`, `system`, `unsupported`… are ignored;
//! - `statuses[]`: what happened to a message we sent: `id` (our `wamid`),
//!   `status` (`sent`, `delivered`, `read`, `failed`), `timestamp`,
//!   `recipient_id`, `errors[]` (`code`, `title`).
//!
//! Other fields (`message_template_status_update`, `account_update`, …) are
//! ignored, one item per change. Deliveries are retried for up to 7 days,
//! so the `wamid` is what deduplicates.
//!
//! [`account`]: crate::SocialMessage::account

use super::meta::Change;
use super::{Items, ParseError, customer, display_name, from_secs, from_value, non_blank};
use crate::item::{
    AttachmentKind, AttachmentRef, GeoPoint, Platform, Receipt, ReceiptStatus, ReceiptTarget,
    SocialItem, SocialMessage,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use switchboard_core::Timestamp;

const WA: Platform = Platform::WhatsApp;

/// Reads one change of a `whatsapp_business_account` body; `path` is where
/// it is (`entry[0].changes[1]`), for errors.
pub(crate) fn parse_change(
    change: Change,
    path: &str,
    items: &mut Items,
) -> Result<(), ParseError> {
    if change.field != "messages" {
        items.event()?;
        items.ignore(WA, "change");
        return Ok(());
    }
    let value: Value = match from_value(change.value, &format!("{path}.value")) {
        Ok(value) => value,
        Err(e) => {
            // Counted as one event, so that a batch of unreadable changes
            // is bounded by MAX_EVENTS too.
            items.event()?;
            return Err(e);
        }
    };
    let account = Some(value.metadata.phone_number_id).filter(|a| !a.is_empty());
    if value.messages.is_empty() && value.statuses.is_empty() {
        // Nothing to store, but counted: an error report, or a change
        // carrying nothing we read (a field Meta adds later).
        items.event()?;
        items.ignore(
            WA,
            if value.errors.is_empty() {
                "empty_change"
            } else {
                "error"
            },
        );
    }
    // Each message and status is read on its own: one unreadable event
    // does not refuse the others (`Items::unreadable`).
    for (k, message) in value.messages.into_iter().enumerate() {
        items.event()?;
        let path = format!("{path}.value.messages[{k}]");
        let read = from_value::<Message>(message, &path).and_then(|message| {
            let name = value
                .contacts
                .iter()
                .find(|c| c.wa_id.as_deref() == Some(message.from.as_str()))
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.name.as_deref())
                .and_then(display_name);
            match self::message(message, &path, name, account.clone())? {
                Ok(m) => items.push(SocialItem::Message(m)),
                Err(reason) => items.ignore(WA, reason),
            }
            Ok(())
        });
        items.unreadable(WA, read)?;
    }
    for (k, status) in value.statuses.into_iter().enumerate() {
        items.event()?;
        let path = format!("{path}.value.statuses[{k}]");
        let read = from_value::<Status>(status, &path)
            .and_then(|status| self::status(status, &path, account.clone(), items));
        items.unreadable(WA, read)?;
    }
    Ok(())
}

/// One `statuses[]` element: a receipt of one of our messages.
fn status(
    status: Status,
    path: &str,
    account: Option<String>,
    items: &mut Items,
) -> Result<(), ParseError> {
    let status_kind = match status.status.as_str() {
        "sent" => ReceiptStatus::Sent,
        "delivered" => ReceiptStatus::Delivered,
        "read" => ReceiptStatus::Read,
        "failed" => {
            let first = status.errors.into_iter().next();
            ReceiptStatus::Failed {
                code: first.as_ref().and_then(|e| e.code),
                title: first.and_then(|e| non_blank(e.title)),
            }
        }
        _ => {
            items.ignore(WA, "unknown_status");
            return Ok(());
        }
    };
    let recipient = status
        .recipient_id
        .map(|id| customer(WA, &id, || format!("{path}.recipient_id")))
        .transpose()?;
    let at = status
        .timestamp
        .map(|t| seconds(&t, path))
        .transpose()?
        .flatten();
    items.push(SocialItem::Receipt(Receipt {
        platform: WA,
        account,
        customer: recipient,
        target: ReceiptTarget::Message(status.id),
        status: status_kind,
        at,
    }));
    Ok(())
}

#[derive(Deserialize)]
struct Value {
    metadata: Metadata,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
    #[serde(default)]
    statuses: Vec<serde_json::Value>,
    #[serde(default)]
    errors: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: Option<String>,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
    image: Option<Media>,
    video: Option<Media>,
    audio: Option<Media>,
    document: Option<Media>,
    sticker: Option<Media>,
    location: Option<Location>,
    contacts: Option<Vec<SharedContact>>,
    interactive: Option<Interactive>,
    button: Option<Button>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct Media {
    id: Option<String>,
    mime_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    /// `audio.voice`: recorded in WhatsApp as a voice note.
    #[serde(default)]
    voice: bool,
}

#[derive(Deserialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct SharedContact {
    name: Option<ContactName>,
    #[serde(default)]
    phones: Vec<Phone>,
}

#[derive(Deserialize)]
struct ContactName {
    formatted_name: Option<String>,
}

#[derive(Deserialize)]
struct Phone {
    phone: Option<String>,
}

#[derive(Deserialize)]
struct Interactive {
    button_reply: Option<Reply>,
    list_reply: Option<Reply>,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize)]
struct Button {
    text: Option<String>,
    payload: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    recipient_id: Option<String>,
    #[serde(default)]
    errors: Vec<StatusError>,
}

#[derive(Deserialize)]
struct StatusError {
    code: Option<i64>,
    title: Option<String>,
}

/// The message, or the reason it is skipped.
fn message(
    m: Message,
    path: &str,
    customer_name: Option<String>,
    account: Option<String>,
) -> Result<Result<SocialMessage, &'static str>, ParseError> {
    let customer = customer(WA, &m.from, || format!("{path}.from"))?;
    let sent_at = seconds(&m.timestamp, path)?;
    let missing =
        |field: &str| ParseError::invalid(format!("{path}.{field}"), "missing for this type");
    let mut text = String::new();
    let mut payload = None;
    let mut attachments = Vec::new();
    match m.kind.as_str() {
        "text" => text = m.text.ok_or_else(|| missing("text"))?.body,
        "image" | "video" | "audio" | "document" | "sticker" => {
            let (media, kind) = match m.kind.as_str() {
                "image" => (m.image, AttachmentKind::Image),
                "video" => (m.video, AttachmentKind::Video),
                "audio" => (m.audio, AttachmentKind::Audio),
                "document" => (m.document, AttachmentKind::Document),
                _ => (m.sticker, AttachmentKind::Sticker),
            };
            let media = media.ok_or_else(|| missing(&m.kind))?;
            let mut a = AttachmentRef::new(if media.voice {
                AttachmentKind::Voice
            } else {
                kind
            });
            a.media_id = non_blank(media.id);
            a.mime_type = non_blank(media.mime_type);
            a.filename = non_blank(media.filename);
            a.caption = non_blank(media.caption);
            text = a.caption.clone().unwrap_or_default();
            attachments.push(a);
        }
        "location" => {
            let l = m.location.ok_or_else(|| missing("location"))?;
            let mut a = AttachmentRef::new(AttachmentKind::Location);
            a.location = Some(GeoPoint {
                latitude: l.latitude,
                longitude: l.longitude,
            });
            let words: Vec<String> = [l.name, l.address].into_iter().flatten().collect();
            a.caption = non_blank(Some(words.join(", ")));
            attachments.push(a);
        }
        "contacts" => {
            for c in m.contacts.ok_or_else(|| missing("contacts"))? {
                let mut words: Vec<String> =
                    c.name.and_then(|n| n.formatted_name).into_iter().collect();
                words.extend(c.phones.into_iter().filter_map(|p| p.phone));
                let mut a = AttachmentRef::new(AttachmentKind::Contact);
                a.caption = non_blank(Some(words.join(" ")));
                attachments.push(a);
            }
        }
        "interactive" => {
            let i = m.interactive.ok_or_else(|| missing("interactive"))?;
            let Some(reply) = i.button_reply.or(i.list_reply) else {
                return Ok(Err("unsupported_type"));
            };
            payload = non_blank(reply.id);
            text = reply.title.unwrap_or_default();
        }
        "button" => {
            let b = m.button.ok_or_else(|| missing("button"))?;
            payload = non_blank(b.payload);
            text = b.text.unwrap_or_default();
        }
        "reaction" => return Ok(Err("reaction")),
        "system" => return Ok(Err("system")),
        _ => return Ok(Err("unsupported_type")),
    }
    if text.trim().is_empty() && attachments.is_empty() {
        return Ok(Err("no_content"));
    }
    Ok(Ok(SocialMessage {
        platform: WA,
        account,
        customer,
        customer_name,
        provider_message_id: m.id,
        text,
        payload,
        attachments,
        language: None,
        sent_at,
    }))
}

/// WhatsApp's `timestamp`: unix seconds as a decimal string.
fn seconds(s: &str, path: &str) -> Result<Option<Timestamp>, ParseError> {
    s.trim()
        .parse::<u64>()
        .map(from_secs)
        .map_err(|_| ParseError::invalid(format!("{path}.timestamp"), "not unix seconds"))
}

#[cfg(test)]
mod tests {
    use crate::parse::{ParseError, corpus, parse_meta};
    use crate::{
        AttachmentKind, Ignored, Platform, Receipt, ReceiptStatus, ReceiptTarget, SocialItem,
    };
    use switchboard_core::{CustomerIdentity, Timestamp};

    #[test]
    fn whatsapp_text() {
        let items = parse_meta(&corpus::read("meta-whatsapp-text.json")).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.platform, Platform::WhatsApp);
        assert_eq!(m.account.as_deref(), Some("106540352242922"));
        assert_eq!(m.customer.to_string(), "whatsapp:380501234567");
        assert_eq!(m.customer_name.as_deref(), Some("Іван"));
        assert_eq!(
            m.provider_message_id,
            "wamid.HBgLMzgwNTAxMjM0NTY3FQIAEhgg-1"
        );
        assert_eq!(m.text, "Доброго дня, потрібна допомога з оплатою");
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_603_000)));
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn whatsapp_repeat_gives_the_same_message_id() {
        // SIGNATURES.tsv repeats this delivery: the intake stores it once
        // because both parse to the same provider message id.
        let body = corpus::read("meta-whatsapp-text.json");
        let first = parse_meta(&body).expect("parses");
        let again = parse_meta(&body).expect("parses");
        assert_eq!(first, again);
        assert_eq!(first.len(), 1);
    }

    #[test]
    fn whatsapp_status_is_a_receipt_for_our_message() {
        let items = parse_meta(&corpus::read("meta-whatsapp-status.json")).expect("parses");
        assert_eq!(
            items,
            [SocialItem::Receipt(Receipt {
                platform: Platform::WhatsApp,
                account: Some("106540352242922".into()),
                customer: Some(CustomerIdentity::new("whatsapp", "380501234567").expect("valid")),
                target: ReceiptTarget::Message("wamid.OUR-REPLY-1".into()),
                status: ReceiptStatus::Delivered,
                at: Some(Timestamp(1_795_341_604_000)),
            })]
        );
    }

    #[test]
    fn whatsapp_image_is_an_attachment_reference() {
        let items = parse_meta(&corpus::read("meta-whatsapp-image.json")).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.provider_message_id, "wamid.IMG-1");
        assert_eq!(m.customer_name.as_deref(), Some("Іван"));
        assert_eq!(m.text, "фото пошкодження");
        let [a] = m.attachments.as_slice() else {
            panic!("{m:?}")
        };
        assert_eq!(a.kind, AttachmentKind::Image);
        assert_eq!(a.media_id.as_deref(), Some("MEDIA-ID-1"));
        assert_eq!(a.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(a.caption.as_deref(), Some("фото пошкодження"));
        assert_eq!(a.url, None);
        let event = m.clone().into_inbound("meta");
        assert_eq!(
            event.text,
            "фото пошкодження\n[attachment: image, image/jpeg, media id MEDIA-ID-1]"
        );
        assert_eq!(
            event.attributes.get("attachments").map(String::as_str),
            Some("image")
        );
    }

    fn value(inner: &str) -> Result<Vec<SocialItem>, ParseError> {
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"PN"}},{inner}}}}}]}}]}}"#
        );
        parse_meta(body.as_bytes())
    }

    fn msg(kind: &str, body: &str) -> String {
        format!(
            r#""messages":[{{"from":"380501234567","id":"wamid.X","timestamp":"1795341605","type":"{kind}",{body}}}]"#
        )
    }

    #[test]
    fn other_message_types() {
        let items = value(&msg(
            "document",
            r#""document":{"id":"D1","filename":"invoice.pdf","mime_type":"application/pdf"}"#,
        ))
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.text, "");
        assert_eq!(m.attachments[0].kind, AttachmentKind::Document);
        assert_eq!(m.attachments[0].filename.as_deref(), Some("invoice.pdf"));
        assert_eq!(m.customer_name, None);

        let items = value(&msg(
            "audio",
            r#""audio":{"id":"A1","mime_type":"audio/ogg; codecs=opus","voice":true}"#,
        ))
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.attachments[0].kind, AttachmentKind::Voice);

        let items = value(&msg("location", r#""location":{"latitude":50.45,"longitude":30.52,"name":"Shop","address":"Main st 1"}"#)).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.attachments[0].caption.as_deref(), Some("Shop, Main st 1"));

        let items = value(&msg("contacts", r#""contacts":[{"name":{"formatted_name":"Olena K"},"phones":[{"phone":"+380501112233"}]}]"#)).expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(m.attachments[0].kind, AttachmentKind::Contact);
        assert_eq!(
            m.attachments[0].caption.as_deref(),
            Some("Olena K +380501112233")
        );

        let items = value(&msg(
            "interactive",
            r#""interactive":{"type":"button_reply","button_reply":{"id":"YES","title":"Так"}}"#,
        ))
        .expect("parses");
        let [SocialItem::Message(m)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(
            (m.text.as_str(), m.payload.as_deref()),
            ("Так", Some("YES"))
        );

        for (kind, body, reason) in [
            (
                "reaction",
                r#""reaction":{"message_id":"wamid.O","emoji":"👍"}"#,
                "reaction",
            ),
            (
                "unsupported",
                r#""errors":[{"code":131051}]"#,
                "unsupported_type",
            ),
            ("system", r#""system":{"body":"changed number"}"#, "system"),
        ] {
            let items = value(&msg(kind, body)).expect("parses");
            assert_eq!(
                items,
                [SocialItem::Ignored(Ignored {
                    platform: Platform::WhatsApp,
                    reason
                })]
            );
        }
    }

    #[test]
    fn failed_status_carries_the_error() {
        let items = value(
            r#""statuses":[{"id":"wamid.O","status":"failed","timestamp":"1795341604","recipient_id":"380501234567",
               "errors":[{"code":131047,"title":"Re-engagement message"}]}]"#,
        )
        .expect("parses");
        let [SocialItem::Receipt(r)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(
            r.status,
            ReceiptStatus::Failed {
                code: Some(131047),
                title: Some("Re-engagement message".into())
            }
        );
    }

    #[test]
    fn other_fields_are_ignored_whatever_their_value() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[
            {"field":"message_template_status_update","value":{"event":"APPROVED","metadata":"not an object"}}]}]}"#;
        assert_eq!(
            parse_meta(body).expect("parses"),
            [SocialItem::Ignored(Ignored {
                platform: Platform::WhatsApp,
                reason: "change"
            })]
        );
    }

    /// A messages change with neither messages, statuses nor errors is
    /// counted as ignored, not passed over without a trace.
    #[test]
    fn an_empty_messages_change_is_counted() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"106540352242922"}}}]}]}"#;
        assert_eq!(
            parse_meta(body).expect("parses"),
            [SocialItem::Ignored(Ignored {
                platform: Platform::WhatsApp,
                reason: "empty_change"
            })]
        );
    }

    /// An unreadable change or event is kept as `Unreadable`, with where
    /// it failed; the other events of the change and of the batch are read.
    #[test]
    fn unreadable_events_name_the_field() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messages":[]}}]}]}"#;
        assert_eq!(
            unreadable(parse_meta(body)),
            ("entry[0].changes[0].value".to_owned(), "json")
        );
        assert_eq!(
            unreadable(value(&msg("image", r#""text":{"body":"no image object"}"#))),
            (
                "entry[0].changes[0].value.messages[0].image".to_owned(),
                "invalid"
            )
        );
        assert_eq!(
            unreadable(value(
                r#""messages":[{"from":"380501234567","id":"wamid.X","timestamp":"yesterday","type":"text","text":{"body":"hi"}}]"#
            )),
            (
                "entry[0].changes[0].value.messages[0].timestamp".to_owned(),
                "invalid"
            )
        );
        assert_eq!(
            unreadable(value(
                r#""messages":[{"from":"380501234567","id":"wamid.X","timestamp":"1","type":"text","text":{"body":5}}]"#
            )),
            (
                "entry[0].changes[0].value.messages[0].text.body".to_owned(),
                "json"
            )
        );
        // Between two good messages and before a status.
        let items = value(
            r#""messages":[
                {"from":"380501234567","id":"wamid.A","timestamp":"1","type":"text","text":{"body":"first"}},
                {"id":"wamid.B","timestamp":"1","type":"text","text":{"body":"no from"}},
                {"from":"380501234567","id":"wamid.C","timestamp":"1","type":"text","text":{"body":"third"}}],
               "statuses":[{"id":"wamid.OUR","status":"read","timestamp":"1","recipient_id":"380501234567"}]"#,
        )
        .expect("the batch reads");
        let [
            SocialItem::Message(a),
            SocialItem::Unreadable(b),
            SocialItem::Message(c),
            SocialItem::Receipt(_),
        ] = items.as_slice()
        else {
            panic!("{items:?}")
        };
        assert_eq!((a.text.as_str(), c.text.as_str()), ("first", "third"));
        assert_eq!(b.path, "entry[0].changes[0].value.messages[1]");
    }

    /// Unreadable changes count as events too: a batch of them is bounded.
    #[test]
    fn too_many_unreadable_changes_are_refused() {
        let bad = r#"{"field":"messages","value":{"messages":[]}}"#;
        let body = |n: usize| {
            format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{}]}}]}}"#,
                vec![bad; n].join(",")
            )
        };
        let items = parse_meta(body(crate::parse::MAX_EVENTS).as_bytes()).expect("at the limit");
        assert_eq!(items.len(), crate::parse::MAX_EVENTS);
        assert_eq!(
            parse_meta(body(crate::parse::MAX_EVENTS + 1).as_bytes()),
            Err(ParseError::TooMany {
                max: crate::parse::MAX_EVENTS
            })
        );
    }

    fn unreadable(items: Result<Vec<SocialItem>, ParseError>) -> (String, &'static str) {
        match items.expect("the batch reads").as_slice() {
            [SocialItem::Unreadable(u)] => (u.path.clone(), u.kind),
            other => panic!("{other:?}"),
        }
    }
}
