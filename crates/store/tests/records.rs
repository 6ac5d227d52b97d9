//! The records the routing scripts keep, against a real redis-server: the
//! timeline and KPI facts of a contact, the person index, ratings once, and
//! the retention sweep (contacts ended before the cut go with their
//! conversation, open ones stay whatever their age).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;
use switchboard_core::{ChannelKind, ContactId};
use switchboard_store::{NewRoute, Records, RoutingState};
use switchboard_testkit::RedisServer;

const T0: u64 = 1_800_000_000_000;

async fn queue(state: &RoutingState, contact: &ContactId, person: &str, now: u64) {
    let queued = state
        .enqueue(&NewRoute {
            contact,
            queue: "general",
            channel: ChannelKind::Chat,
            priority: 0,
            since: now,
            now,
            rule: "",
            source: "website",
            customer: "website:visitor:x",
            sticky: None,
            sticky_memory: None,
            person,
        })
        .await
        .unwrap();
    assert!(queued);
}

#[tokio::test]
async fn the_sweep_deletes_old_closed_contacts_with_their_conversation() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let state = RoutingState::new(store.clone());
    let records = Records::new(store.clone());
    let old = intake
        .submit_event(event("ann", Some("m1"), "hello"))
        .await
        .unwrap();
    let open = intake
        .submit_event(event("bob", Some("m2"), "hi"))
        .await
        .unwrap();
    queue(&state, &old.contact_id, "visitor:ann", T0).await;
    queue(&state, &open.contact_id, "visitor:bob", T0).await;
    let ended = state
        .end_by_channel(
            &old.contact_id,
            T0 + 1000,
            "left",
            0,
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(ended, "abandoned");

    // The timeline and the facts of the abandoned contact.
    let (timeline, more) = records.timeline(&old.contact_id, 100).await.unwrap();
    assert!(!more);
    let kinds: Vec<String> = timeline
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["enqueued", "abandoned"]);
    // Read within a bound: the first entries, and that there are more.
    let (first, more) = records.timeline(&old.contact_id, 1).await.unwrap();
    assert_eq!(first, timeline[..1]);
    assert!(more);
    let (both, more) = records.timeline(&old.contact_id, 2).await.unwrap();
    assert_eq!((both.len(), more), (2, false));
    let facts = records.kpi_facts("-", 100).await.unwrap();
    let abandoned = facts
        .iter()
        .find(|f| f.fields["k"] == "abandoned")
        .expect("an abandoned fact");
    assert_eq!(abandoned.fields["w"], "1000");
    assert_eq!(abandoned.fields["q"], "general");
    // Reading on from the last fact gives nothing new.
    let last = facts.last().unwrap().id.clone();
    assert!(records.kpi_facts(&last, 100).await.unwrap().is_empty());
    assert_eq!(
        records
            .contacts_between(0, u64::MAX, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        records.person_contacts("visitor:ann", 5).await.unwrap(),
        [(old.contact_id.to_string(), T0)]
    );

    // A caller who hung up before the hand-off: abandoned, indexed too.
    let early = intake
        .submit_event(event("cyd", Some("m3"), "bye"))
        .await
        .unwrap();
    let ended = state
        .end_by_channel(
            &early.contact_id,
            T0,
            "left",
            0,
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(ended, "abandoned");
    assert_eq!(
        records
            .contacts_between(0, u64::MAX, 0, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // Retention counts from the end: nothing ended before T0.
    assert_eq!(records.sweep(T0 - 1, 100).await.unwrap(), 0);
    // `early` ended at T0, `old` at T0 + 1 s: one, then the other.
    assert_eq!(records.sweep(T0, 100).await.unwrap(), 1);
    assert_eq!(records.sweep(T0 + 1000, 100).await.unwrap(), 1);
    let early_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", early.conversation_id))
        .query_async(&mut raw(&redis).await)
        .await
        .unwrap();
    assert!(early_keys.is_empty(), "left behind: {early_keys:?}");
    let mut conn = raw(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", old.contact_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "left behind: {keys:?}");
    let conv: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*conv:{}*", old.conversation_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(conv.is_empty(), "conversation left behind: {conv:?}");
    let left = records.contacts_between(0, u64::MAX, 0, 10).await.unwrap();
    assert_eq!(left, [(open.contact_id.to_string(), T0)]);
    assert!(
        state
            .route_record(&open.contact_id)
            .await
            .unwrap()
            .is_some()
    );
    let open_conv: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*conv:{}*", open.conversation_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!open_conv.is_empty());
}

/// A contact open longer than the retention stays in its person's history
/// (the index was trimmed by queue time at each new contact), leaves it
/// when the sweep deletes it, and the index does not expire under it.
#[tokio::test]
async fn a_persons_contacts_leave_their_index_with_the_sweep_not_by_age() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let state = RoutingState::new(store.clone());
    let records = Records::new(store.clone());
    records.write_settings(60_000, 3600).await.unwrap();
    let long = intake
        .submit_event(event("ann", Some("m1"), "an old thread"))
        .await
        .unwrap();
    let later = intake
        .submit_event(event("ann-2", Some("m2"), "and a new one"))
        .await
        .unwrap();
    queue(&state, &long.contact_id, "visitor:ann", T0).await;
    // Three retentions later, still open, the same person comes back.
    let t1 = T0 + 3 * 3_600_000;
    queue(&state, &later.contact_id, "visitor:ann", t1).await;
    assert_eq!(
        records.person_contacts("visitor:ann", 5).await.unwrap(),
        [
            (later.contact_id.to_string(), t1),
            (long.contact_id.to_string(), T0)
        ]
    );
    // Each contact's history is what came before it, without itself.
    let (long_id, later_id) = (long.contact_id.to_string(), later.contact_id.to_string());
    assert_eq!(
        records
            .person_contacts_before("visitor:ann", &long_id, 5)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        records
            .person_contacts_before("visitor:ann", &later_id, 5)
            .await
            .unwrap(),
        [(long_id.clone(), T0)]
    );
    // Two contacts queued in one millisecond: the one with the smaller id
    // came first (the index's own order), and only it is the other's
    // history.
    let twin = intake
        .submit_event(event("ann-3", Some("m3"), "at the same moment"))
        .await
        .unwrap();
    queue(&state, &twin.contact_id, "visitor:ann", t1).await;
    let twin_id = twin.contact_id.to_string();
    let (first, second) = if twin_id < later_id {
        (twin_id.clone(), later_id.clone())
    } else {
        (later_id.clone(), twin_id.clone())
    };
    assert_eq!(
        records
            .person_contacts_before("visitor:ann", &first, 5)
            .await
            .unwrap(),
        [(long_id.clone(), T0)]
    );
    assert_eq!(
        records
            .person_contacts_before("visitor:ann", &second, 5)
            .await
            .unwrap(),
        [(first.clone(), t1), (long_id.clone(), T0)]
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(store.keys().route("person:visitor:ann"))
        .query_async(&mut raw(&redis).await)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "no expiry while it has members");
    // Ended, then swept once its retention (here 1 s) has passed: out of
    // the index. The routing record that names the person outlives the
    // retention, so the sweep still finds it.
    let ended = state
        .end_by_channel(
            &long.contact_id,
            t1 + 1,
            "left",
            0,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(ended, "abandoned");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(records.sweep(t1 + 1, 100).await.unwrap(), 1);
    assert_eq!(
        records.person_contacts("visitor:ann", 5).await.unwrap(),
        [(second, t1), (first, t1)]
    );
}

#[tokio::test]
async fn a_contact_is_rated_once() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let state = RoutingState::new(store.clone());
    let records = Records::new(store.clone());
    let r = intake
        .submit_event(event("ann", Some("m1"), "hello"))
        .await
        .unwrap();
    let unknown = ContactId::new(r.contact_id.partition());
    assert_eq!(
        records.rate(&unknown, 5, T0).await.unwrap(),
        "unknown_contact"
    );
    queue(&state, &r.contact_id, "visitor:ann", T0).await;
    assert_eq!(records.rate(&r.contact_id, 4, T0).await.unwrap(), "ok");
    assert_eq!(
        records.rate(&r.contact_id, 1, T0).await.unwrap(),
        "already_rated"
    );
    let rated: Vec<_> = records
        .kpi_facts("-", 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.fields["k"] == "rated")
        .collect();
    assert_eq!(rated.len(), 1);
    assert_eq!(rated[0].fields["s"], "4");
}

/// Paging through the contacts by position: contacts removed ahead of the
/// position meanwhile (the retention sweep) shift nothing, and contacts
/// queued in the same millisecond are all read, once.
#[tokio::test]
async fn contact_pages_hold_their_position_while_contacts_are_removed() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let records = Records::new(store.clone());
    let mut conn = raw(&redis).await;
    let key = store.keys().route("contacts");
    // c1..c7; c3, c4 and c5 share a millisecond.
    for (id, at) in [
        ("c1", 10),
        ("c2", 20),
        ("c3", 30),
        ("c4", 30),
        ("c5", 30),
        ("c6", 40),
        ("c7", 50),
    ] {
        let _: i64 = redis::AsyncCommands::zadd(&mut conn, &key, id, at)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page = records.contacts_page(0, u64::MAX, None, 2).await.unwrap();
    let mut removed = false;
    while !page.is_empty() {
        seen.extend(page.iter().map(|(id, _)| id.clone()));
        let (last, at) = page.last().cloned().unwrap();
        if !removed {
            // The sweep removes the oldest two after the first page.
            let _: i64 = redis::AsyncCommands::zrem(&mut conn, &key, &["c1", "c2"])
                .await
                .unwrap();
            removed = true;
        }
        page = records
            .contacts_page(0, u64::MAX, Some((&last, at)), 2)
            .await
            .unwrap();
    }
    assert_eq!(seen, ["c1", "c2", "c3", "c4", "c5", "c6", "c7"]);
}

/// Two instances sweeping at once delete each contact once, and count it
/// once: the count is of the contacts this sweep took out of the index.
#[tokio::test]
async fn overlapping_sweeps_count_each_contact_once() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let records = Records::new(store.clone());
    let mut conn = raw(&redis).await;
    for _ in 0..200 {
        let id = ContactId::new(switchboard_core::Partition(1));
        let _: i64 = redis::cmd("ZADD")
            .arg(store.keys().route("closed"))
            .arg(T0)
            .arg(id.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(records.sweep(T0, 500), records.sweep(T0, 500));
    assert_eq!(a.unwrap() + b.unwrap(), 200);
    assert_eq!(records.sweep(T0, 500).await.unwrap(), 0);
}
