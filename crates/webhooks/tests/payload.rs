//! What a `contact.closed` body is built from, read from a real
//! redis-server: no more of a long conversation than the body keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent, Timestamp};
use switchboard_store::{Conversations, IntakeSettings, RedisIntake, Store, StoreConfig};
use switchboard_testkit::RedisServer;
use switchboard_webhooks::payload::{self, MAX_TRANSCRIPT_TEXT_BYTES};
use switchboard_webhooks::{Event, EventType};

/// A store on `redis`, and its intake.
fn store_and_intake(redis: &RedisServer) -> (Store, RedisIntake) {
    let store = Store::new(StoreConfig::local(redis.url(), 1)).unwrap();
    let intake = RedisIntake::new(
        store.clone(),
        IntakeSettings {
            dedupe_window: Duration::from_secs(3600),
            limits: Default::default(),
        },
    );
    (store, intake)
}

/// The `contact.closed` event of `contact`, closed by olena.
fn closed(contact: switchboard_core::ContactId, channel: &str) -> Event {
    Event {
        id: "closed-1".into(),
        kind: EventType::ContactClosed,
        contact,
        conversation: None,
        at: Timestamp::now().as_millis(),
        seq: None,
        dir: None,
        agent: Some("olena".into()),
        channel: Some(channel.into()),
        disposition: Some("done".into()),
        outcome: Some("closed".into()),
    }
}

/// 40 mails of 64,000 bytes (2.4 MiB of text) in one conversation: the
/// facts hold the first 16 (all that fit in 1 MiB of text), not all 40,
/// and the body says the transcript is cut.
#[tokio::test]
async fn a_closed_contact_reads_no_more_than_its_body_keeps() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    let mut contact = None;
    for n in 0..40 {
        let receipt = intake
            .submit_event(InboundEvent {
                channel: ChannelKind::Email,
                source: "support".into(),
                address: "support@example.com".into(),
                customer: CustomerIdentity::new("email", "long@example.net").unwrap(),
                customer_name: None,
                provider_message_id: Some(format!("<long-{n}@example.net>")),
                subject: Some("a long thread".into()),
                text: format!("{n:05} {}", "x".repeat(63_994)),
                language: None,
                attributes: Default::default(),
                sent_at: None,
                new_contact: false,
                media: Vec::new(),
            })
            .await
            .unwrap();
        contact.get_or_insert(receipt.contact_id);
    }
    let event = closed(contact.unwrap(), "email");
    let facts = payload::load(&Conversations::new(store.clone()), &event)
        .await
        .unwrap();
    assert_eq!(facts.transcript.len(), MAX_TRANSCRIPT_TEXT_BYTES / 64_000);
    assert!(facts.log_truncated);
    let body = payload::body(&event, &facts);
    assert_eq!(body["transcript_truncated"], true);
    assert_eq!(body["transcript"].as_array().unwrap().len(), 16);
    assert!(
        body["transcript"][15]["text"]
            .as_str()
            .unwrap()
            .starts_with("00015 ")
    );
}

/// Notes are read past, not kept: a conversation of 50 notes of 60,000
/// bytes and two messages holds the two messages (the body drops notes),
/// and a closed contact whose data is gone says its transcript may be cut.
#[tokio::test]
async fn a_closed_contact_keeps_only_its_messages() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    let conversations = Conversations::new(store.clone());
    let submit = |n: u32| InboundEvent {
        channel: ChannelKind::Chat,
        source: "site".into(),
        address: "widget".into(),
        customer: CustomerIdentity::new("visitor", "v1").unwrap(),
        customer_name: None,
        provider_message_id: Some(format!("m-{n}")),
        subject: None,
        text: format!("message {n}"),
        language: None,
        attributes: Default::default(),
        sent_at: None,
        new_contact: false,
        media: Vec::new(),
    };
    let first = intake.submit_event(submit(1)).await.unwrap();
    for _ in 0..50 {
        conversations
            .note(
                &first.conversation_id,
                &first.contact_id,
                "olena",
                &"n".repeat(60_000),
            )
            .await
            .unwrap();
    }
    intake.submit_event(submit(2)).await.unwrap();
    let mut event = closed(first.contact_id, "chat");
    let facts = payload::load(&conversations, &event).await.unwrap();
    let texts: Vec<&str> = facts.transcript.iter().map(|e| e.dir.as_str()).collect();
    assert_eq!(texts, ["in", "in"]);
    let body = payload::body(&event, &facts);
    assert_eq!(body["transcript_truncated"], false);
    assert_eq!(body["transcript"].as_array().unwrap().len(), 2);

    // The contact's data removed (past the records' retention) before the
    // event was delivered: an empty transcript, said to be cut.
    event.contact = switchboard_core::ContactId::new(first.contact_id.partition());
    event.conversation = Some(first.conversation_id);
    let mut gone = payload::load(&conversations, &event).await.unwrap();
    assert!(gone.contact.is_none());
    gone.transcript.clear();
    let body = payload::body(&event, &gone);
    assert_eq!(body["transcript_truncated"], true);
}
