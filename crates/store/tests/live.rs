//! The live doorbell against a real redis-server: the intake and replies
//! ring it, a subscription resyncs after Redis comes back, and publishing
//! while Redis is down fails nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, intake_for, store_for};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::time::Duration;
use switchboard_channel::{LiveEvent, LiveFollows, LiveKind, LiveSignal};
use switchboard_core::IntakeOutcome;
use switchboard_store::{Conversations, Live};
use switchboard_testkit::RedisServer;

async fn next(signals: &mut BoxStream<'static, LiveSignal>) -> LiveSignal {
    tokio::time::timeout(Duration::from_secs(10), signals.next())
        .await
        .expect("a signal within 10 s")
        .expect("the subscription lives")
}

async fn next_event(signals: &mut BoxStream<'static, LiveSignal>) -> LiveEvent {
    loop {
        if let LiveSignal::Event(e) = next(signals).await {
            return e;
        }
    }
}

/// A subscription on `store`'s bus, past its first resync.
async fn subscribed(
    store: &switchboard_store::Store,
) -> (Live, LiveFollows, BoxStream<'static, LiveSignal>) {
    let live = Live::new(store.clone());
    let follows = LiveFollows::default();
    let mut signals = live.subscribe(follows.clone());
    assert_eq!(next(&mut signals).await, LiveSignal::Resync, "resync first");
    (live, follows, signals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_and_replies_ring_the_doorbell() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let (_live, follows, mut signals) = subscribed(&store).await;

    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("v-1", Some("m0"), "hi"))
        .await
        .unwrap();
    // Events arrive for the contacts followed, once they are followed.
    let contact = first.contact_id.to_string();
    follows.follow(&contact);
    assert_eq!(
        next(&mut signals).await,
        LiveSignal::Followed(contact.clone())
    );
    // Another customer's, not followed here, do not.
    intake
        .submit_event(event("v-2", Some("n1"), "not for us"))
        .await
        .unwrap();
    // The intake writes the doorbell's JSON around this text.
    let text = "hello \"there\",\n\\ <b>ї</b> \u{1F600}";
    let receipt = intake
        .submit_event(event("v-1", Some("m1"), text))
        .await
        .unwrap();
    assert_eq!(receipt.contact_id, first.contact_id, "appended");
    // (The first message's doorbell, rung by a task of its own, may come
    // after the follow.)
    let mut e = next_event(&mut signals).await;
    if e.seq == first.seq {
        e = next_event(&mut signals).await;
    }
    assert_eq!(e.kind, LiveKind::Log);
    assert_eq!(e.conv, receipt.conversation_id.to_string());
    assert_eq!(e.contact, receipt.contact_id.to_string());
    assert_eq!(
        (e.seq.as_str(), e.dir.as_str(), e.source.as_str()),
        (receipt.seq.as_str(), "in", "website")
    );
    // The doorbell carries the entry's text and time (no read back).
    assert_eq!(e.text.as_deref(), Some(text));
    assert!(e.at > 0);

    // A duplicate stores nothing and rings nothing.
    let dup = intake
        .submit_event(event("v-1", Some("m1"), text))
        .await
        .unwrap();
    assert_eq!(dup.outcome, IntakeOutcome::Duplicate);
    assert_eq!(dup.seq, receipt.seq, "the first copy's seq");

    let conversations = Conversations::new(store.clone());
    let message = conversations
        .outbound_to(&receipt.contact_id, "an answer")
        .await
        .unwrap();
    let seq = conversations.reply(&message, "olena").await.unwrap();
    let e = next_event(&mut signals).await;
    assert_eq!(
        (e.seq.as_str(), e.dir.as_str()),
        (seq.as_str(), "out"),
        "no event for the duplicate"
    );
    assert_eq!(e.text.as_deref(), Some("an answer"));
    let note = conversations
        .note(
            &receipt.conversation_id,
            &receipt.contact_id,
            "olena",
            "vip",
        )
        .await
        .unwrap();
    let e = next_event(&mut signals).await;
    assert_eq!((e.seq.as_str(), e.dir.as_str()), (note.as_str(), "note"));
    assert_eq!(e.source, "website");
    // Unfollowed: its events stop.
    follows.unfollow(&contact);
    tokio::time::sleep(Duration::from_millis(300)).await;
    conversations
        .note(&receipt.conversation_id, &receipt.contact_id, "olena", "x")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), signals.next())
            .await
            .is_err(),
        "nothing after the unfollow"
    );
    assert_eq!(
        conversations
            .entry_at(&receipt.conversation_id, &seq)
            .await
            .unwrap()
            .map(|e| e.dir),
        Some("out".into())
    );
    let open = conversations
        .open_conversation("website", &event("v-1", None, "x").customer)
        .await
        .unwrap();
    assert_eq!(open, Some((receipt.conversation_id, receipt.contact_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resyncs_after_redis_comes_back_and_publishing_never_fails() {
    let mut redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let live = Live::new(store.clone());
    let follows = LiveFollows::default();
    follows.follow("1-01ARZ3NDEKTSV4RRFFQ69G5FAV");
    let mut signals = live.subscribe(follows);
    assert_eq!(next(&mut signals).await, LiveSignal::Resync);

    redis.stop();
    // Publishing while Redis is away returns (and only counts an error).
    let event = LiveEvent {
        conv: "0-01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        contact: String::new(),
        source: "website".into(),
        kind: LiveKind::Typing,
        seq: String::new(),
        dir: String::new(),
        on: true,
        who: "visitor".into(),
        name: String::new(),
        text: None,
        at: 0,
    };
    tokio::time::timeout(Duration::from_secs(5), live.publish(&event))
        .await
        .expect("publish gives up within the store's timeouts");

    redis.restart();
    assert_eq!(
        next(&mut signals).await,
        LiveSignal::Resync,
        "resync after the gap"
    );
    live.publish(&event).await;
    assert_eq!(next_event(&mut signals).await, event);
    // A contact followed before the gap is followed after it.
    let event = LiveEvent {
        contact: "1-01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        ..event
    };
    live.publish(&event).await;
    assert_eq!(next_event(&mut signals).await, event);
}

/// The intake's doorbells go out in the order of the messages (one task
/// publishes them, several per round trip), so a follower sees one
/// customer's quick messages in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intakes_doorbells_keep_the_order_of_the_messages() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let (_live, follows, mut signals) = subscribed(&store).await;
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("v-order", Some("o0"), "first"))
        .await
        .unwrap();
    let contact = first.contact_id.to_string();
    follows.follow(&contact);
    assert_eq!(next(&mut signals).await, LiveSignal::Followed(contact));
    // Submitted from many tasks at once, each waiting for the one before,
    // so that the order is known and the intake is busy.
    let mut seqs = Vec::new();
    let mut others = Vec::new();
    for i in 1..=300 {
        let noise = intake.clone();
        others.push(tokio::spawn(async move {
            noise
                .submit_event(event(&format!("v-noise-{i}"), None, "noise"))
                .await
                .unwrap();
        }));
        let r = intake
            .submit_event(event("v-order", Some(&format!("o{i}")), &format!("m{i}")))
            .await
            .unwrap();
        seqs.push(r.seq);
    }
    for t in others {
        t.await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < seqs.len() {
        let e = next_event(&mut signals).await;
        if e.seq != first.seq {
            seen.push(e.seq);
        }
    }
    assert_eq!(seen, seqs, "doorbells out of order or missing");
}

/// On a Redis Cluster, where one pipeline may not span slots, the
/// intake's doorbells for contacts of different slots all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intakes_doorbells_arrive_on_a_cluster() {
    let cluster = switchboard_testkit::RedisCluster::start(3);
    let urls = cluster.urls();
    let store = switchboard_store::Store::new(switchboard_store::StoreConfig {
        topology: switchboard_store::Topology::Cluster {
            seeds: urls[1..].to_vec(),
        },
        ..switchboard_store::StoreConfig::local(urls[0].clone(), 4)
    })
    .unwrap();
    let (live, follows, mut signals) = subscribed(&store).await;
    let intake = intake_for(&store);
    let mut contacts = std::collections::HashMap::new();
    for i in 0..40 {
        let r = intake
            .submit_event(event(&format!("v-c{i}"), None, "hello"))
            .await
            .unwrap();
        let contact = r.contact_id.to_string();
        follows.follow(&contact);
        // (The first messages' own doorbells may come in between.)
        while next(&mut signals).await != LiveSignal::Followed(contact.clone()) {}
        contacts.insert(contact, r.conversation_id);
    }
    // Rung all at once, so that the doorbell's task finds them waiting
    // together (one pipeline on a single Redis; not on a cluster).
    let doorbell = live.doorbell();
    let mut expected = std::collections::HashSet::new();
    for (i, (contact, conv)) in contacts.iter().enumerate() {
        let seq = format!("1-{i}");
        doorbell.ring(LiveEvent::log(conv, contact, "website", &seq, "in"));
        expected.insert(seq);
    }
    let mut seen = std::collections::HashSet::new();
    while !expected.is_subset(&seen) {
        let e = next_event(&mut signals).await;
        assert!(contacts.contains_key(&e.contact));
        seen.insert(e.seq);
    }
}
