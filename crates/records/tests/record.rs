//! A contact's record against a real redis-server: its transcript stops at
//! a byte budget as well as at a count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use switchboard_core::{ChannelKind, CustomerIdentity, InboundEvent};
use switchboard_records::record::{
    RECORD_TRANSCRIPT_MAX_BYTES, Sources, contact_record, transcript_page,
};
use switchboard_store::{
    Conversations, IntakeSettings, Records, RedisIntake, RoutingState, Store, StoreConfig,
};
use switchboard_testkit::RedisServer;

fn mail(customer: &str, n: usize, text: String) -> InboundEvent {
    InboundEvent {
        channel: ChannelKind::Email,
        source: "support".into(),
        address: "support@example.com".into(),
        customer: CustomerIdentity::new("email", customer).unwrap(),
        customer_name: None,
        provider_message_id: Some(format!("<{customer}-{n}@example.net>")),
        subject: Some("a long thread".into()),
        text,
        language: None,
        attributes: Default::default(),
        sent_at: None,
        new_contact: false,
        media: Vec::new(),
    }
}

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

/// A conversation of 140 mails of 64,000 bytes (8.5 MiB of text) gives a
/// record of the first ones within 8 MiB, marked truncated; a short one is
/// whole. (The record is built in memory at once: 10,000 such mails were
/// ~640 MiB of text before the budget.)
#[tokio::test]
async fn a_records_transcript_stops_at_its_byte_budget() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    let sources = Sources {
        conversations: Conversations::new(store.clone()),
        state: RoutingState::new(store.clone()),
        records: Records::new(store.clone()),
    };
    let mut long = None;
    for n in 0..140 {
        let text = format!("{n:05} {}", "x".repeat(63_994));
        let receipt = intake
            .submit_event(mail("long@example.net", n, text))
            .await
            .unwrap();
        long.get_or_insert(receipt.contact_id);
    }
    let short = intake
        .submit_event(mail("short@example.net", 0, "hello".into()))
        .await
        .unwrap()
        .contact_id;
    intake
        .submit_event(mail("short@example.net", 1, "again".into()))
        .await
        .unwrap();

    let record = contact_record(&sources, &long.unwrap())
        .await
        .unwrap()
        .expect("a record");
    let transcript = record["transcript"].as_array().unwrap();
    assert_eq!(record["transcript_truncated"], true);
    let text: usize = transcript
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap().len())
        .sum();
    assert!(
        (120..140).contains(&transcript.len()) && text <= RECORD_TRANSCRIPT_MAX_BYTES,
        "{} entries, {text} bytes of text",
        transcript.len()
    );
    // The first ones, in order.
    for (n, entry) in transcript.iter().enumerate() {
        assert!(
            entry["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{n:05} ")),
            "entry {n}"
        );
    }

    let record = contact_record(&sources, &short)
        .await
        .unwrap()
        .expect("a record");
    assert_eq!(record["transcript_truncated"], false);
    assert_eq!(record["transcript"].as_array().unwrap().len(), 2);
}

/// The agent API's transcript pages stop at a byte budget as well as at a
/// count, keep at least one entry, and say whether more follow; paging
/// through them gives every entry once, in order.
#[tokio::test]
async fn transcript_pages_stop_at_their_byte_budget_and_say_more_follow() {
    let redis = RedisServer::start();
    let (store, intake) = store_and_intake(&redis);
    let conversations = Conversations::new(store.clone());
    let mut conversation = None;
    for n in 0..10 {
        let text = format!("{n:05} {}", "x".repeat(994));
        let receipt = intake
            .submit_event(mail("pages@example.net", n, text))
            .await
            .unwrap();
        conversation.get_or_insert(receipt.conversation_id);
    }
    let conversation = conversation.unwrap();
    let text = |e: &serde_json::Value| e["message"]["text"].as_str().unwrap()[..5].to_owned();
    // 3,500 bytes: three entries of ~1,000 bytes each (and their JSON).
    let (page, more) = transcript_page(&conversations, &conversation, "-", 500, 3_500)
        .await
        .unwrap();
    assert!(more);
    assert!((2..=3).contains(&page.len()), "{} entries", page.len());
    // A budget smaller than one entry still gives one.
    let (one, more) = transcript_page(&conversations, &conversation, "-", 500, 10)
        .await
        .unwrap();
    assert_eq!((one.len(), more), (1, true));
    // Paged through: all ten, in order, the last page saying no more.
    let mut seen = Vec::new();
    let mut after = "-".to_owned();
    loop {
        let (page, more) = transcript_page(&conversations, &conversation, &after, 4, 3_500)
            .await
            .unwrap();
        seen.extend(page.iter().map(text));
        after = page.last().unwrap()["seq"].as_str().unwrap().to_owned();
        if !more {
            break;
        }
    }
    let want: Vec<String> = (0..10).map(|n| format!("{n:05}")).collect();
    assert_eq!(seen, want);
    // Exactly a count's worth: no more to say.
    let (all, more) = transcript_page(&conversations, &conversation, "-", 10, 1 << 20)
        .await
        .unwrap();
    assert_eq!((all.len(), more), (10, false));
}
