//! Meta's webhook body: `{"object": …, "entry": [ … ]}`, shared by
//! Messenger (`object: "page"`), Instagram (`"instagram"`) and WhatsApp
//! Cloud (`"whatsapp_business_account"`, read in [`super::whatsapp`]).
//!
//! Messenger and Instagram put events in `entry[].messaging[]`, each with
//! `sender.id` (the customer's PSID or IGSID; for an echo, the page),
//! `recipient.id`, `timestamp` (milliseconds) and one of:
//!
//! - `message`: `mid`, `text`, `attachments[]` (`type`, `payload.url`),
//!   `quick_reply.payload`; `is_echo: true` when it is our own message
//!   echoed back ([`Echo`]); Instagram sets `is_deleted` when the customer
//!   unsends, `is_unsupported` for content it cannot show;
//! - `message_edit`: `mid` of the edited message and the new `text`;
//! - `postback`: a button pressed (`title`, `payload`, `mid`): a message
//!   whose text is the title, so the customer's intent reaches an agent;
//! - `read`: Messenger `watermark` (everything we sent up to that time in
//!   ms) or Instagram `mid`;
//! - `delivery`: `mids[]` and/or `watermark` (Messenger only);
//! - `reaction`, `referral`, `optin`, …: ignored.
//!
//! `entry[].id` is the page or Instagram account: the [`account`] of every
//! item. `entry[].changes[]` (feed, comments) are ignored for these objects,
//! and so is `entry[].standby[]` (threads another app owns under
//! Messenger's handover protocol), each counted.
//!
//! [`Echo`]: crate::Echo
//! [`account`]: crate::SocialMessage::account

use super::{
    Items, ParseError, customer, from_millis, from_slice, from_value, non_blank, whatsapp,
};
use crate::item::{
    AttachmentKind, AttachmentRef, Echo, GeoPoint, MessageEdit, Platform, Receipt, ReceiptStatus,
    ReceiptTarget, SocialItem, SocialMessage, clip,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use switchboard_core::{CustomerIdentity, Timestamp};

/// Parses a Meta webhook body (already verified with
/// [`verify_meta_signature`](crate::verify_meta_signature)).
pub fn parse_meta(body: &[u8]) -> Result<Vec<SocialItem>, ParseError> {
    let envelope: Envelope = from_slice(body)?;
    let platform = match envelope.object.as_str() {
        "page" => Platform::Messenger,
        "instagram" => Platform::Instagram,
        "whatsapp_business_account" => Platform::WhatsApp,
        other => return Err(ParseError::WrongObject(clip(other, 64).to_owned())),
    };
    let mut items = Items::default();
    for (i, entry) in envelope.entry.into_iter().enumerate() {
        for (j, change) in entry.changes.into_iter().enumerate() {
            if platform == Platform::WhatsApp {
                let path = format!("entry[{i}].changes[{j}]");
                let read = whatsapp::parse_change(change, &path, &mut items);
                items.unreadable(platform, read)?;
            } else {
                items.event()?;
                items.ignore(platform, "change");
            }
        }
        for _ in &entry.standby {
            items.event()?;
            items.ignore(platform, "standby");
        }
        for (j, event) in entry.messaging.into_iter().enumerate() {
            items.event()?;
            let path = || format!("entry[{i}].messaging[{j}]");
            let read = from_value::<Messaging>(event, &path())
                .and_then(|event| messaging(platform, &entry.id, event, path, &mut items));
            items.unreadable(platform, read)?;
        }
    }
    Ok(items.into_vec())
}

#[derive(Deserialize)]
struct Envelope {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    id: String,
    /// Each event read on its own (`Messaging`), so that one unreadable
    /// event does not refuse the batch.
    #[serde(default)]
    messaging: Vec<serde_json::Value>,
    #[serde(default)]
    changes: Vec<Change>,
    /// Messenger's handover protocol: events of a thread another app
    /// (e.g. the Page Inbox) owns now. Not ours to answer; counted.
    #[serde(default)]
    standby: Vec<IgnoredAny>,
}

/// One `entry[].changes[]` element. The `value` is read according to
/// `field` (only WhatsApp's `messages` is), so it is kept as JSON until then.
#[derive(Deserialize)]
pub(crate) struct Change {
    #[serde(default)]
    pub(crate) field: String,
    #[serde(default)]
    pub(crate) value: serde_json::Value,
}

#[derive(Deserialize)]
struct Messaging {
    sender: Option<Party>,
    timestamp: Option<u64>,
    message: Option<Message>,
    message_edit: Option<Edit>,
    postback: Option<Postback>,
    read: Option<Read>,
    delivery: Option<Delivery>,
    reaction: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Party {
    /// Absent for a Chat Plugin guest, who has a `user_ref` instead.
    id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    mid: String,
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    is_deleted: bool,
    #[serde(default)]
    attachments: Vec<Attachment>,
    quick_reply: Option<QuickReply>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "type", default)]
    kind: String,
    payload: Option<Payload>,
}

#[derive(Deserialize, Default)]
struct Payload {
    url: Option<String>,
    title: Option<String>,
    /// Present (a number) when the image is a sticker.
    sticker_id: Option<IgnoredAny>,
    coordinates: Option<Coordinates>,
}

#[derive(Deserialize)]
struct Coordinates {
    lat: f64,
    long: f64,
}

#[derive(Deserialize)]
struct QuickReply {
    payload: Option<String>,
}

#[derive(Deserialize)]
struct Edit {
    mid: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Postback {
    mid: Option<String>,
    title: Option<String>,
    payload: Option<String>,
}

#[derive(Deserialize)]
struct Read {
    watermark: Option<u64>,
    mid: Option<String>,
}

#[derive(Deserialize)]
struct Delivery {
    #[serde(default)]
    mids: Vec<String>,
    watermark: Option<u64>,
}

fn messaging(
    platform: Platform,
    account: &str,
    event: Messaging,
    path: impl Fn() -> String,
    items: &mut Items,
) -> Result<(), ParseError> {
    let account = Some(account.to_owned()).filter(|a| !a.is_empty());
    let sent_at = event.timestamp.and_then(from_millis);
    let sender_id = event.sender.and_then(|s| s.id);
    // The customer, for events that come from them; an echo's sender is
    // the page, so it is not read for echoes.
    let sender = |items: &mut Items| -> Result<Option<CustomerIdentity>, ParseError> {
        let Some(id) = sender_id.as_deref() else {
            items.ignore(platform, "no_sender_id");
            return Ok(None);
        };
        customer(platform, id, || format!("{}.sender.id", path())).map(Some)
    };

    if let Some(message) = event.message {
        if message.is_echo {
            items.push(SocialItem::Echo(Echo {
                platform,
                account,
                provider_message_id: message.mid,
            }));
            return Ok(());
        }
        if message.is_deleted {
            items.ignore(platform, "deleted");
            return Ok(());
        }
        let Some(customer) = sender(items)? else {
            return Ok(());
        };
        let attachments: Vec<AttachmentRef> =
            message.attachments.into_iter().map(attachment).collect();
        let text = message.text.unwrap_or_default();
        if text.trim().is_empty() && attachments.is_empty() {
            items.ignore(platform, "no_content");
            return Ok(());
        }
        items.push(SocialItem::Message(SocialMessage {
            platform,
            account,
            customer,
            customer_name: None,
            provider_message_id: message.mid,
            text,
            payload: non_blank(message.quick_reply.and_then(|q| q.payload)),
            attachments,
            language: None,
            sent_at,
        }));
    } else if let Some(edit) = event.message_edit {
        let Some(customer) = sender(items)? else {
            return Ok(());
        };
        if edit.text.trim().is_empty() {
            // An edit to nothing (or one whose text Meta left out).
            items.ignore(platform, "no_content");
            return Ok(());
        }
        items.push(SocialItem::Edit(MessageEdit {
            platform,
            account,
            customer,
            provider_message_id: edit.mid,
            text: edit.text,
            edited_at: sent_at,
        }));
    } else if let Some(postback) = event.postback {
        let Some(customer) = sender(items)? else {
            return Ok(());
        };
        let payload = non_blank(postback.payload);
        let Some(text) = non_blank(postback.title).or_else(|| payload.clone()) else {
            items.ignore(platform, "no_content");
            return Ok(());
        };
        // Older postbacks carry no `mid`; sender and time identify a
        // redelivery of the same tap.
        let id = postback.mid.or_else(|| {
            event
                .timestamp
                .map(|t| format!("postback:{}:{t}", customer.value))
        });
        let Some(provider_message_id) = id else {
            items.ignore(platform, "no_id");
            return Ok(());
        };
        items.push(SocialItem::Message(SocialMessage {
            platform,
            account,
            customer,
            customer_name: None,
            provider_message_id,
            text,
            payload,
            attachments: Vec::new(),
            language: None,
            sent_at,
        }));
    } else if let Some(read) = event.read {
        let target = match (read.mid, read.watermark.and_then(from_millis)) {
            (Some(mid), _) => ReceiptTarget::Message(mid),
            (None, Some(watermark)) => ReceiptTarget::Watermark(watermark),
            (None, None) => {
                items.ignore(platform, "no_target");
                return Ok(());
            }
        };
        let customer = optional_customer(platform, sender_id.as_deref(), &path)?;
        items.push(receipt(
            platform,
            account,
            customer,
            target,
            ReceiptStatus::Read,
            sent_at,
        ));
    } else if let Some(delivery) = event.delivery {
        let customer = optional_customer(platform, sender_id.as_deref(), &path)?;
        let mut targets: Vec<ReceiptTarget> = delivery
            .mids
            .into_iter()
            .map(ReceiptTarget::Message)
            .collect();
        if targets.is_empty() {
            match delivery.watermark.and_then(from_millis) {
                Some(w) => targets.push(ReceiptTarget::Watermark(w)),
                None => items.ignore(platform, "no_target"),
            }
        }
        for target in targets {
            let status = ReceiptStatus::Delivered;
            items.push(receipt(
                platform,
                account.clone(),
                customer.clone(),
                target,
                status,
                sent_at,
            ));
        }
    } else if event.reaction.is_some() {
        items.ignore(platform, "reaction");
    } else {
        items.ignore(platform, "unsupported_event");
    }
    Ok(())
}

fn optional_customer(
    platform: Platform,
    id: Option<&str>,
    path: &impl Fn() -> String,
) -> Result<Option<CustomerIdentity>, ParseError> {
    id.map(|id| customer(platform, id, || format!("{}.sender.id", path())))
        .transpose()
}

fn receipt(
    platform: Platform,
    account: Option<String>,
    customer: Option<CustomerIdentity>,
    target: ReceiptTarget,
    status: ReceiptStatus,
    at: Option<Timestamp>,
) -> SocialItem {
    SocialItem::Receipt(Receipt {
        platform,
        account,
        customer,
        target,
        status,
        at,
    })
}

fn attachment(a: Attachment) -> AttachmentRef {
    let payload = a.payload.unwrap_or_default();
    let kind = match a.kind.as_str() {
        "image" if payload.sticker_id.is_some() => AttachmentKind::Sticker,
        "image" => AttachmentKind::Image,
        "video" => AttachmentKind::Video,
        "audio" => AttachmentKind::Audio,
        "file" => AttachmentKind::Document,
        "location" => AttachmentKind::Location,
        other => AttachmentKind::Other(clip(other, 32).to_owned()),
    };
    let mut out = AttachmentRef::new(kind);
    out.url = non_blank(payload.url);
    out.caption = non_blank(payload.title);
    out.location = payload.coordinates.map(|c| GeoPoint {
        latitude: c.lat,
        longitude: c.long,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::corpus;

    fn only_message(items: Vec<SocialItem>) -> SocialMessage {
        match <[SocialItem; 1]>::try_from(items) {
            Ok([SocialItem::Message(m)]) => m,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    #[test]
    fn messenger_text() {
        let items = parse_meta(&corpus::read("meta-messenger-text.json")).expect("parses");
        let m = only_message(items);
        assert_eq!(m.platform, Platform::Messenger);
        assert_eq!(m.account.as_deref(), Some("105550001"));
        assert_eq!(m.customer.to_string(), "messenger:6001002003");
        assert_eq!(m.customer_name, None);
        assert_eq!(m.provider_message_id, "m_AbC123-messenger-1");
        assert_eq!(m.text, "Привіт! Де моє замовлення?");
        assert!(m.attachments.is_empty());
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_600_000)));
        let event = m.into_inbound("meta");
        assert_eq!(event.address, "105550001");
        assert!(event.validate(Default::default()).is_ok());
    }

    #[test]
    fn messenger_batch_two_messages_a_read_and_an_echo() {
        let items = parse_meta(&corpus::read("meta-messenger-batched.json")).expect("parses");
        assert_eq!(items.len(), 4);
        let [first, second, read, echo] = <[SocialItem; 4]>::try_from(items).expect("four");
        let SocialItem::Message(first) = first else {
            panic!("{first:?}")
        };
        assert_eq!(first.customer.to_string(), "messenger:6001002003");
        assert_eq!(first.provider_message_id, "m_batch-1");
        assert_eq!(first.text, "first");
        let SocialItem::Message(second) = second else {
            panic!("{second:?}")
        };
        assert_eq!(second.customer.to_string(), "messenger:6001002004");
        assert_eq!(second.provider_message_id, "m_batch-2");
        assert_eq!(second.text, "second, other user");
        assert_eq!(second.sent_at, Some(Timestamp(1_795_341_601_001)));
        assert_eq!(
            read,
            SocialItem::Receipt(Receipt {
                platform: Platform::Messenger,
                account: Some("105550001".into()),
                customer: Some(CustomerIdentity::new("messenger", "6001002003").expect("valid")),
                target: ReceiptTarget::Watermark(Timestamp(1_795_341_600_000)),
                status: ReceiptStatus::Read,
                at: Some(Timestamp(1_795_341_601_002)),
            })
        );
        assert_eq!(
            echo,
            SocialItem::Echo(Echo {
                platform: Platform::Messenger,
                account: Some("105550001".into()),
                provider_message_id: "m_batch-3".into(),
            })
        );
    }

    #[test]
    fn instagram_text() {
        let items = parse_meta(&corpus::read("meta-instagram-text.json")).expect("parses");
        let m = only_message(items);
        assert_eq!(m.platform, Platform::Instagram);
        assert_eq!(m.account.as_deref(), Some("178410000"));
        assert_eq!(m.customer.to_string(), "instagram:IGSID-9911");
        assert_eq!(m.provider_message_id, "aWdfZAG1faXRlbTpJR-ig-1");
        assert_eq!(m.text, "Czy macie ten rozmiar?");
        assert_eq!(m.sent_at, Some(Timestamp(1_795_341_602_000)));
    }

    fn one_event(object: &str, event: &str) -> Result<Vec<SocialItem>, ParseError> {
        let body = format!(
            r#"{{"object":"{object}","entry":[{{"id":"P1","time":1,"messaging":[{event}]}}]}}"#
        );
        parse_meta(body.as_bytes())
    }

    #[test]
    fn attachments_quick_replies_and_postbacks() {
        let m = only_message(
            one_event(
                "page",
                r#"{"sender":{"id":"U1"},"timestamp":5,"message":{"mid":"m1","attachments":[
                {"type":"image","payload":{"url":"https://cdn/x.jpg"}},
                {"type":"image","payload":{"url":"https://cdn/s.png","sticker_id":369239263222822}},
                {"type":"file","payload":{"url":"https://cdn/a.pdf"}},
                {"type":"location","payload":{"coordinates":{"lat":50.45,"long":30.52},"title":"Shop"}},
                {"type":"story_mention","payload":{"url":"https://cdn/story"}},
                {"type":"fallback","payload":null}]}}"#,
            )
            .expect("parses"),
        );
        let kinds: Vec<&str> = m.attachments.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["image", "sticker", "document", "location", "other", "other"]
        );
        assert_eq!(m.attachments[0].url.as_deref(), Some("https://cdn/x.jpg"));
        assert_eq!(m.attachments[3].caption.as_deref(), Some("Shop"));
        assert_eq!(
            m.attachments[3].location,
            Some(GeoPoint {
                latitude: 50.45,
                longitude: 30.52
            })
        );
        assert_eq!(
            m.attachments[4].kind,
            AttachmentKind::Other("story_mention".into())
        );
        assert_eq!(m.text, "");

        let m = only_message(
            one_event(
                "page",
                r#"{"sender":{"id":"U1"},"message":{"mid":"m2","text":"Red","quick_reply":{"payload":"COLOR_RED"}}}"#,
            )
            .expect("parses"),
        );
        assert_eq!(
            (m.text.as_str(), m.payload.as_deref()),
            ("Red", Some("COLOR_RED"))
        );

        let m = only_message(
            one_event(
                "page",
                r#"{"sender":{"id":"U1"},"timestamp":7,"postback":{"title":"Talk to a human","payload":"HUMAN"}}"#,
            )
            .expect("parses"),
        );
        assert_eq!(m.text, "Talk to a human");
        assert_eq!(m.payload.as_deref(), Some("HUMAN"));
        assert_eq!(m.provider_message_id, "postback:U1:7");
    }

    #[test]
    fn edits_deliveries_and_skipped_events() {
        let items = one_event(
            "page",
            r#"{"sender":{"id":"U1"},"timestamp":9,"message_edit":{"mid":"m1","text":"new","num_edit":1}}"#,
        )
        .expect("parses");
        assert_eq!(
            items,
            [SocialItem::Edit(MessageEdit {
                platform: Platform::Messenger,
                account: Some("P1".into()),
                customer: CustomerIdentity::new("messenger", "U1").expect("valid"),
                provider_message_id: "m1".into(),
                text: "new".into(),
                edited_at: Some(Timestamp(9)),
            })]
        );

        // An edit without text is skipped (counted), not logged as empty.
        let items = one_event(
            "page",
            r#"{"sender":{"id":"U1"},"timestamp":9,"message_edit":{"mid":"m1","num_edit":1}}"#,
        )
        .expect("parses");
        assert!(
            matches!(items.as_slice(), [SocialItem::Ignored(i)] if i.reason == "no_content"),
            "{items:?}"
        );

        let items = one_event(
            "page",
            r#"{"sender":{"id":"U1"},"delivery":{"mids":["a","b"],"watermark":3}}"#,
        )
        .expect("parses");
        let targets: Vec<_> = items
            .iter()
            .map(|i| match i {
                SocialItem::Receipt(r) if r.status == ReceiptStatus::Delivered => r.target.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                ReceiptTarget::Message("a".into()),
                ReceiptTarget::Message("b".into())
            ]
        );

        let items = one_event(
            "instagram",
            r#"{"sender":{"id":"IG1"},"read":{"mid":"ours-1"}}"#,
        )
        .expect("parses");
        let [SocialItem::Receipt(r)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!(r.target, ReceiptTarget::Message("ours-1".into()));

        for (event, reason) in [
            (
                r#"{"sender":{"id":"U1"},"reaction":{"mid":"m","action":"react"}}"#,
                "reaction",
            ),
            (
                r#"{"sender":{"id":"U1"},"optin":{"ref":"x"}}"#,
                "unsupported_event",
            ),
            (
                r#"{"sender":{"id":"U1"},"message":{"mid":"m","is_deleted":true}}"#,
                "deleted",
            ),
            (
                r#"{"sender":{"id":"U1"},"message":{"mid":"m","is_unsupported":true}}"#,
                "no_content",
            ),
            (
                r#"{"sender":{"user_ref":"guest"},"message":{"mid":"m","text":"hi"}}"#,
                "no_sender_id",
            ),
        ] {
            let items = one_event("page", event).expect("parses");
            assert_eq!(
                items,
                [SocialItem::Ignored(crate::Ignored {
                    platform: Platform::Messenger,
                    reason
                })],
                "{event}"
            );
        }
    }

    /// A thread another app owns (handover protocol): counted as ignored,
    /// not left out without a word.
    #[test]
    fn standby_events_are_ignored_and_counted() {
        let body = r#"{"object":"page","entry":[{"id":"P1","time":1,"standby":[
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1,"message":{"mid":"m.1","text":"hi"}}]}]}"#;
        assert_eq!(
            parse_meta(body.as_bytes()).expect("parses"),
            [SocialItem::Ignored(crate::Ignored {
                platform: Platform::Messenger,
                reason: "standby"
            })]
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let e = parse_meta(b"{not json").expect_err("malformed");
        assert_eq!(e.kind(), "json");

        let e = parse_meta(br#"{"object":"user","entry":[]}"#).expect_err("wrong object");
        assert_eq!(e, ParseError::WrongObject("user".into()));

        let e = parse_meta(br#"{"object":"page"}"#).expect_err("no entry");
        assert!(
            matches!(&e, ParseError::Json { path, .. } if path == "."),
            "{e}"
        );

        // One event that cannot be read is that event's problem, not the
        // batch's: it is kept as `Unreadable`, with where it failed.
        assert_eq!(
            unreadable(one_event(
                "page",
                r#"{"sender":{"id":"U1"},"message":{"text":"no mid"}}"#,
            )),
            ("entry[0].messaging[0].message".to_owned(), "json")
        );
        assert_eq!(
            unreadable(one_event(
                "page",
                r#"{"sender":{"id":"U1"},"timestamp":"soon","message":{"mid":"m"}}"#,
            )),
            ("entry[0].messaging[0].timestamp".to_owned(), "json")
        );
        assert_eq!(
            unreadable(one_event(
                "page",
                r#"{"sender":{"id":" "},"message":{"mid":"m","text":"hi"}}"#,
            )),
            ("entry[0].messaging[0].sender.id".to_owned(), "invalid")
        );
    }

    /// The one unreadable event of a delivery: where, and what kind.
    fn unreadable(items: Result<Vec<SocialItem>, ParseError>) -> (String, &'static str) {
        match items.expect("the batch reads").as_slice() {
            [SocialItem::Unreadable(u)] => (u.path.clone(), u.kind),
            other => panic!("{other:?}"),
        }
    }

    /// A batch with one unreadable event between two good ones: both good
    /// ones are read, in order. Before, the whole batch was refused (400),
    /// Meta retried it as it was, and its good messages were lost once
    /// Meta gave up.
    #[test]
    fn one_unreadable_event_leaves_the_rest_of_the_batch() {
        let body = r#"{"object":"page","entry":[
            {"id":"P1","time":1,"messaging":[
                {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1,"message":{"mid":"m.1","text":"first"}},
                {"sender":{"id":"U2"},"recipient":{"id":"P1"},"timestamp":2,"message":{"text":"no mid"}}]},
            {"id":"P1","time":1,"messaging":[
                {"sender":{"id":"U3"},"recipient":{"id":"P1"},"timestamp":3,"message":{"mid":"m.3","text":"third"}}]}]}"#;
        let items = parse_meta(body.as_bytes()).expect("the batch reads");
        let [
            SocialItem::Message(first),
            SocialItem::Unreadable(bad),
            SocialItem::Message(third),
        ] = items.as_slice()
        else {
            panic!("{items:?}")
        };
        assert_eq!(
            (first.text.as_str(), third.text.as_str()),
            ("first", "third")
        );
        assert_eq!(bad.path, "entry[0].messaging[1].message");
    }

    #[test]
    fn oversized_batch_is_refused() {
        let event = r#"{"sender":{"id":"U1"},"message":{"mid":"m","text":"hi"}}"#;
        let events = vec![event; crate::parse::MAX_EVENTS];
        assert_eq!(
            one_event("page", &events.join(",")).map(|items| items.len()),
            Ok(crate::parse::MAX_EVENTS)
        );
        let events = vec![event; crate::parse::MAX_EVENTS + 1];
        assert_eq!(
            one_event("page", &events.join(",")),
            Err(ParseError::TooMany {
                max: crate::parse::MAX_EVENTS
            })
        );
    }
}
