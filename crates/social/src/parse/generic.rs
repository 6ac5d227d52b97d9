//! Switchboard's own webhook format, for messaging services without an
//! adapter of their own (a bridge posts what its service received). Signed
//! as [`verify_generic`](crate::verify_generic) describes.
//!
//! ```json
//! {"events": [
//!   {"type": "message", "id": "m-1", "account": "shop-1",
//!    "customer": {"id": "u-42", "name": "Olena"},
//!    "text": "Hello", "language": "uk", "sent_at": 1795341600000,
//!    "attachments": [{"kind": "image", "url": "https://…", "mime_type": "image/png",
//!                     "filename": "a.png", "caption": "…"}]},
//!   {"type": "edit", "id": "m-1", "customer": {"id": "u-42"}, "text": "Hello again",
//!    "edited_at": 1795341700000},
//!   {"type": "receipt", "id": "<the id the bridge gave our reply>", "customer": {"id": "u-42"},
//!    "status": "failed", "at": 1795341800000, "error": {"code": 7, "title": "blocked"}}
//! ]}
//! ```
//!
//! - `id`: the message's id on the service (1 to 512 bytes), the
//!   deduplication key: a retried delivery must repeat it.
//! - `customer.id` becomes the identity `generic:<id>`.
//! - Times are milliseconds since the epoch; `status` is one of `sent`,
//!   `delivered`, `read`, `failed`; attachment `kind` one of `image`,
//!   `video`, `audio`, `voice`, `document`, `sticker`, `location` (with
//!   `latitude` and `longitude`), `contact`, with `media_id` or `url`.
//! - `account`, `name`, `language`, `payload`, `attachments` and times are
//!   optional. A message needs text or an attachment.
//! - What the intake refuses (a text over its limit, an `account` over 320
//!   bytes) is answered 422 `invalid_event`, never cut
//!   ([`crate::webhook`]).
//! - An edit without `edited_at` is told apart from other edits of the
//!   message by its text.
//!
//! Unlike the providers' formats this one is ours, so unknown fields are
//! refused (a misspelt field would otherwise be lost silently).

use super::{
    Items, ParseError, customer, display_name, from_millis, from_slice, language, non_blank,
};
use crate::item::{
    AttachmentKind, AttachmentRef, GeoPoint, MessageEdit, Platform, Receipt, ReceiptStatus,
    ReceiptTarget, SocialItem, SocialMessage,
};
use serde::Deserialize;
use switchboard_core::CustomerIdentity;

const GENERIC: Platform = Platform::Generic;

/// Parses a generic webhook body (already checked with
/// [`verify_generic`](crate::verify_generic)).
pub fn parse_generic(body: &[u8]) -> Result<Vec<SocialItem>, ParseError> {
    let body: Body = from_slice(body)?;
    let mut items = Items::default();
    for (i, event) in body.events.into_iter().enumerate() {
        items.event()?;
        let path = format!("events[{i}]");
        items.push(match event {
            Event::Message(m) => SocialItem::Message(message(m, &path)?),
            Event::Edit(e) => SocialItem::Edit(MessageEdit {
                platform: GENERIC,
                account: non_blank(e.account),
                customer: e.customer.identity(&path)?,
                provider_message_id: id(e.id, &path)?,
                text: edit_text(e.text, &path)?,
                edited_at: e.edited_at.and_then(from_millis),
            }),
            Event::Receipt(r) => SocialItem::Receipt(Receipt {
                platform: GENERIC,
                account: non_blank(r.account),
                customer: Some(r.customer.identity(&path)?),
                target: ReceiptTarget::Message(id(r.id, &path)?),
                status: match r.status {
                    Status::Sent => ReceiptStatus::Sent,
                    Status::Delivered => ReceiptStatus::Delivered,
                    Status::Read => ReceiptStatus::Read,
                    Status::Failed => ReceiptStatus::Failed {
                        code: r.error.as_ref().and_then(|e| e.code),
                        title: r.error.and_then(|e| non_blank(e.title)),
                    },
                },
                at: r.at.and_then(from_millis),
            }),
        });
    }
    Ok(items.into_vec())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    events: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    Message(Message),
    Edit(Edit),
    Receipt(ReceiptEvent),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    id: String,
    account: Option<String>,
    customer: Customer,
    #[serde(default)]
    text: String,
    payload: Option<String>,
    language: Option<String>,
    sent_at: Option<u64>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    id: String,
    account: Option<String>,
    customer: Customer,
    text: String,
    edited_at: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptEvent {
    id: String,
    account: Option<String>,
    /// Required: our replies' statuses are kept per customer, so one
    /// without it could never be applied (it was answered 200 and lost).
    customer: Customer,
    status: Status,
    at: Option<u64>,
    error: Option<ErrorInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorInfo {
    code: Option<i64>,
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Customer {
    id: String,
    name: Option<String>,
}

impl Customer {
    fn identity(&self, path: &str) -> Result<CustomerIdentity, ParseError> {
        customer(GENERIC, &self.id, || format!("{path}.customer.id"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attachment {
    kind: Kind,
    media_id: Option<String>,
    url: Option<String>,
    mime_type: Option<String>,
    filename: Option<String>,
    caption: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Image,
    Video,
    Audio,
    Voice,
    Document,
    Sticker,
    Location,
    Contact,
}

fn message(m: Message, path: &str) -> Result<SocialMessage, ParseError> {
    let customer = m.customer.identity(path)?;
    let mut attachments = Vec::with_capacity(m.attachments.len());
    for (k, a) in m.attachments.into_iter().enumerate() {
        attachments.push(attachment(a, &format!("{path}.attachments[{k}]"))?);
    }
    if m.text.trim().is_empty() && attachments.is_empty() {
        return Err(ParseError::invalid(
            format!("{path}.text"),
            "a message needs text or an attachment",
        ));
    }
    Ok(SocialMessage {
        platform: GENERIC,
        account: non_blank(m.account),
        customer,
        customer_name: m.customer.name.as_deref().and_then(display_name),
        provider_message_id: id(m.id, path)?,
        text: m.text,
        payload: non_blank(m.payload),
        attachments,
        language: language(m.language.as_deref()),
        sent_at: m.sent_at.and_then(from_millis),
    })
}

fn attachment(a: Attachment, path: &str) -> Result<AttachmentRef, ParseError> {
    let mut out = AttachmentRef::new(match a.kind {
        Kind::Image => AttachmentKind::Image,
        Kind::Video => AttachmentKind::Video,
        Kind::Audio => AttachmentKind::Audio,
        Kind::Voice => AttachmentKind::Voice,
        Kind::Document => AttachmentKind::Document,
        Kind::Sticker => AttachmentKind::Sticker,
        Kind::Location => AttachmentKind::Location,
        Kind::Contact => AttachmentKind::Contact,
    });
    out.location = match (a.latitude, a.longitude) {
        (Some(latitude), Some(longitude)) => Some(GeoPoint {
            latitude,
            longitude,
        }),
        (None, None) => None,
        _ => {
            return Err(ParseError::invalid(
                path.to_owned(),
                "latitude and longitude go together",
            ));
        }
    };
    out.media_id = non_blank(a.media_id);
    out.url = non_blank(a.url);
    out.mime_type = non_blank(a.mime_type);
    out.filename = non_blank(a.filename);
    out.caption = non_blank(a.caption);
    Ok(out)
}

/// A message id: 1 to 512 bytes, what the intake stores.
/// An edit's new text: never blank (an edit to nothing would be logged
/// against a known message, and refused as a message for an unknown one).
fn edit_text(text: String, path: &str) -> Result<String, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::invalid(
            format!("{path}.text"),
            "must not be blank",
        ));
    }
    Ok(text)
}

fn id(id: String, path: &str) -> Result<String, ParseError> {
    if id.trim().is_empty() || id.len() > 512 {
        return Err(ParseError::invalid(
            format!("{path}.id"),
            "must be 1 to 512 bytes",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::Timestamp;

    const BODY: &str = r#"{"events":[
        {"type":"message","id":"m-1","account":"shop-1","customer":{"id":"u-42","name":"Olena"},
         "text":"Hello","language":"uk","sent_at":1795341600000,
         "attachments":[{"kind":"image","url":"https://files.example/a.png","mime_type":"image/png"},
                        {"kind":"location","latitude":50.45,"longitude":30.52}]},
        {"type":"edit","id":"m-1","customer":{"id":"u-42"},"text":"Hello again","edited_at":1795341700000},
        {"type":"receipt","id":"r-9","customer":{"id":"u-42"},"status":"failed","at":1795341800000,
         "error":{"code":7,"title":"blocked"}},
        {"type":"receipt","id":"r-10","customer":{"id":"u-42"},"status":"read"}
    ]}"#;

    #[test]
    fn a_blank_edit_is_refused_naming_its_text() {
        let body = r#"{"events":[{"type":"edit","id":"m-1","customer":{"id":"u"},"text":" "}]}"#;
        let e = parse_generic(body.as_bytes()).expect_err("blank");
        assert_eq!(e.to_string(), "events[0].text: must not be blank");
    }

    #[test]
    fn documented_example() {
        let items = parse_generic(BODY.as_bytes()).expect("parses");
        let [message, edit, failed, read] = <[SocialItem; 4]>::try_from(items).expect("four");
        let SocialItem::Message(m) = message else {
            panic!("{message:?}")
        };
        assert_eq!(m.platform, Platform::Generic);
        assert_eq!(m.account.as_deref(), Some("shop-1"));
        assert_eq!(m.customer.to_string(), "generic:u-42");
        assert_eq!(m.customer_name.as_deref(), Some("Olena"));
        assert_eq!(m.provider_message_id, "m-1");
        assert_eq!(m.text, "Hello");
        assert_eq!(m.language.as_deref(), Some("uk"));
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_600_000)));
        assert_eq!(m.attachments.len(), 2);
        assert_eq!(
            m.attachments[0].url.as_deref(),
            Some("https://files.example/a.png")
        );
        assert_eq!(
            m.attachments[1].location,
            Some(GeoPoint {
                latitude: 50.45,
                longitude: 30.52
            })
        );

        let SocialItem::Edit(e) = edit else {
            panic!("{edit:?}")
        };
        assert_eq!(
            (e.provider_message_id.as_str(), e.text.as_str()),
            ("m-1", "Hello again")
        );
        assert_eq!(e.edited_at, Some(Timestamp(1_795_341_700_000)));

        let SocialItem::Receipt(r) = failed else {
            panic!("{failed:?}")
        };
        assert_eq!(r.target, ReceiptTarget::Message("r-9".into()));
        assert_eq!(
            r.status,
            ReceiptStatus::Failed {
                code: Some(7),
                title: Some("blocked".into())
            }
        );
        let SocialItem::Receipt(r) = read else {
            panic!("{read:?}")
        };
        assert_eq!(r.status, ReceiptStatus::Read);
        assert_eq!(
            r.customer.map(|c| c.to_string()).as_deref(),
            Some("generic:u-42")
        );
    }

    #[test]
    fn refusals() {
        let cases: [(&str, &str); 9] = [
            (
                r#"{"events":[{"type":"message","id":"m","customer":{"id":"u"}}]}"#,
                "events[0].text",
            ),
            (
                r#"{"events":[{"type":"message","id":" ","customer":{"id":"u"},"text":"x"}]}"#,
                "events[0].id",
            ),
            (
                r#"{"events":[{"type":"message","id":"m","customer":{"id":""},"text":"x"}]}"#,
                "events[0].customer.id",
            ),
            (
                r#"{"events":[{"type":"message","id":"m","customer":{"id":"u"},"text":"x","colour":"red"}]}"#,
                "events[0]",
            ),
            (r#"{"events":[{"type":"poke","id":"m"}]}"#, "events[0].type"),
            (
                r#"{"events":[{"type":"receipt","id":"m","customer":{"id":"u"},"status":"lost"}]}"#,
                "events[0]",
            ),
            (
                r#"{"events":[{"type":"receipt","id":"m","status":"read"}]}"#,
                "events[0]",
            ),
            (
                r#"{"events":[{"type":"message","id":"m","customer":{"id":"u"},"attachments":[{"kind":"location","latitude":1.0}]}]}"#,
                "events[0].attachments[0]",
            ),
            (r#"{"events":[],"extra":1}"#, "extra"),
        ];
        for (body, want) in cases {
            match parse_generic(body.as_bytes()) {
                Err(ParseError::Json { path, .. } | ParseError::Invalid { path, .. }) => {
                    assert_eq!(path, want, "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(parse_generic(b"").map_err(|e| e.kind()), Err("json"));
    }

    #[test]
    fn oversized_batch_is_refused() {
        let event = r#"{"type":"receipt","id":"r","customer":{"id":"u"},"status":"read"}"#;
        let body = |n| format!(r#"{{"events":[{}]}}"#, vec![event; n].join(","));
        let max = crate::parse::MAX_EVENTS;
        assert_eq!(
            parse_generic(body(max).as_bytes()).map(|v| v.len()),
            Ok(max)
        );
        assert_eq!(
            parse_generic(body(max + 1).as_bytes()),
            Err(ParseError::TooMany { max })
        );
    }
}
