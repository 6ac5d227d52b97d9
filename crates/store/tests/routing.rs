//! Routing streams and outboxes against a real redis-server.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use redis::AsyncCommands;
use std::time::Duration;
use switchboard_channel::Outbox;
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, DeliveryOutcome, MessageId,
    OutboundMessage, Partition, Timestamp,
};
use switchboard_store::{RedisOutbox, RoutingStreams};
use switchboard_testkit::RedisServer;

/// A private Redis with `n` new contacts in `partitions` partitions, all
/// taken by reader `a` (which then "dies"), and a second reader `b`.
async fn all_taken_by_a(
    partitions: u16,
    n: usize,
) -> (
    RedisServer,
    switchboard_store::Store,
    RoutingStreams,
    RoutingStreams,
    Vec<switchboard_store::QueuedContact>,
) {
    let redis = RedisServer::start();
    let store = store_for(&redis, partitions);
    let intake = intake_for(&store);
    let block = Duration::from_millis(100);
    let mut a = RoutingStreams::new(store.clone(), "a".into(), block).unwrap();
    let b = RoutingStreams::new(store.clone(), "b".into(), block).unwrap();
    a.ensure_groups().await.unwrap();
    for i in 0..n {
        intake
            .submit_event(event(&format!("vs_{i}"), None, "hi"))
            .await
            .unwrap();
    }
    let mut taken = Vec::new();
    while taken.len() < n {
        taken.extend(a.read(100).await.unwrap());
    }
    (redis, store, a, b, taken)
}

/// Reclaiming goes on through the pending list: entries that keep failing
/// (claimed, never marked routed) do not hide the ones behind them.
#[tokio::test]
async fn reclaiming_reaches_entries_behind_ones_that_keep_failing() {
    let (_redis, _store, _a, mut b, taken) = all_taken_by_a(1, 12).await;
    assert_eq!(taken.len(), 12);
    // b claims two at a time and never gets them routed (they fail); every
    // entry is reached all the same.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        for entry in b.reclaim(Duration::from_millis(10), 2).await.unwrap() {
            seen.insert(entry.contact_id);
        }
    }
    assert_eq!(seen.len(), 12);
}

/// One partition failing (here its group is gone) does not hold back what
/// the others claimed: those are handed on at once. They were claimed,
/// pending under this reader with their idle time reset, and returned to
/// nobody, so they waited for another reclaim. And the failing partition's
/// group is recreated before the next pass, so it is not left unread while
/// the others keep the passes successful.
#[tokio::test]
async fn a_failing_partition_does_not_hold_back_the_others() {
    let (redis, store, _a, mut b, taken) = all_taken_by_a(2, 10).await;
    let on = |p: u16| {
        taken
            .iter()
            .filter(|e| e.contact_id.partition() == Partition(p))
            .count()
    };
    let (zero, one) = (on(0), on(1));
    assert!(zero > 0 && one > 0, "both partitions: {zero} and {one}");
    let mut conn = raw(&redis).await;
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(store.keys().routing(Partition(1)))
        .arg("router")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reclaimed = b.reclaim(Duration::from_millis(10), 100).await.unwrap();
    assert_eq!(reclaimed.len(), zero, "partition 0's, at once");
    assert!(
        reclaimed
            .iter()
            .all(|e| e.contact_id.partition() == Partition(0))
    );
    // The failure made the reader recreate the groups before its next
    // pass: partition 1's group is back (from the start of its stream),
    // and what waits there is read.
    let again = b.read(100).await.unwrap();
    assert_eq!(again.len(), one, "partition 1's entries, read again");
    assert!(
        again
            .iter()
            .all(|e| e.contact_id.partition() == Partition(1))
    );
}

#[tokio::test]
async fn entries_are_marked_routed_once_even_when_reclaimed() {
    // Reader a takes everything, then "dies" before moving it.
    let (redis, store, a, mut b, taken) = all_taken_by_a(2, 10).await;
    assert!(b.read(100).await.unwrap().is_empty());
    // Not idle long enough yet: nothing to reclaim.
    assert!(
        b.reclaim(Duration::from_secs(60), 100)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reclaimed = b.reclaim(Duration::from_millis(10), 100).await.unwrap();
    assert_eq!(reclaimed.len(), 10);
    for entry in &reclaimed {
        let fields = b.contact_fields(&entry.contact_id).await.unwrap();
        assert_eq!(fields.get("preview").map(String::as_str), Some("hi"));
        assert!(b.mark_routed(entry).await.unwrap());
    }
    // The first reader wakes up and tries again: nothing changes.
    for entry in &taken {
        assert!(!a.mark_routed(entry).await.unwrap());
    }
    let mut conn = raw(&redis).await;
    for p in store.keys().all_partitions() {
        let left: usize = conn.xlen(store.keys().routing(p)).await.unwrap();
        assert_eq!(left, 0, "stream entries are deleted once handled");
    }
    let state: String = conn
        .hget(store.keys().contact(&taken[0].contact_id), "state")
        .await
        .unwrap();
    assert_eq!(state, "queued");
}

/// An entry that names no contact (never written by Switchboard) is set
/// aside, acknowledged, and does not hold back the contacts read or
/// reclaimed with it.
#[tokio::test]
async fn an_unreadable_entry_does_not_strand_the_contacts_around_it() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let intake = intake_for(&store);
    let block = Duration::from_millis(100);
    let mut a = RoutingStreams::new(store.clone(), "a".into(), block).unwrap();
    let mut b = RoutingStreams::new(store.clone(), "b".into(), block).unwrap();
    a.ensure_groups().await.unwrap();
    let stream = store.keys().routing(Partition(0));
    let mut conn = raw(&redis).await;
    let bad = |conn: &mut redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        let mut conn = conn.clone();
        async move {
            let _: String = redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("contact")
                .arg("not-an-id")
                .arg("at")
                .arg("1")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    let pending = |conn: &mut redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        let mut conn = conn.clone();
        async move {
            let summary: (usize, Option<String>, Option<String>, redis::Value) =
                redis::cmd("XPENDING")
                    .arg(&stream)
                    .arg("router")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            summary.0
        }
    };

    // Read: the good one comes back, the bad one is set aside.
    bad(&mut conn).await;
    let first = intake
        .submit_event(event("around_1", None, "hi"))
        .await
        .unwrap();
    let read = a.read(100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.contact_id).collect::<Vec<_>>(),
        [first.contact_id]
    );
    assert!(a.mark_routed(&read[0]).await.unwrap());
    assert_eq!(pending(&mut conn).await, 0, "the bad entry is acknowledged");

    // Reclaim: a reader took both and died; the next one gets the good one.
    bad(&mut conn).await;
    let second = intake
        .submit_event(event("around_2", None, "hi"))
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("router")
        .arg("dead")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending(&mut conn).await, 2);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let reclaimed = b.reclaim(Duration::from_millis(10), 100).await.unwrap();
    assert_eq!(
        reclaimed.iter().map(|e| e.contact_id).collect::<Vec<_>>(),
        [second.contact_id]
    );
    assert!(b.mark_routed(&reclaimed[0]).await.unwrap());
    assert_eq!(pending(&mut conn).await, 0);
    let left: usize = conn.xlen(&stream).await.unwrap();
    assert_eq!(
        left, 2,
        "unreadable entries stay in the stream for inspection"
    );
}

#[tokio::test]
async fn a_batch_is_marked_routed_with_one_call_per_partition() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let mut a = RoutingStreams::new(store.clone(), "a".into(), Duration::from_millis(100)).unwrap();
    a.ensure_groups().await.unwrap();
    for i in 0..40 {
        intake
            .submit_event(event(&format!("batch_{i}"), None, "hi"))
            .await
            .unwrap();
    }
    let mut taken = Vec::new();
    while taken.len() < 40 {
        taken.extend(a.read(100).await.unwrap());
    }
    let partitions: std::collections::BTreeSet<_> = taken.iter().map(|e| e.partition).collect();
    assert!(partitions.len() > 1, "spread over partitions");
    let mut conn = raw(&redis).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    let all: Vec<_> = taken.iter().collect();
    assert_eq!(a.mark_routed_all(&all).await.unwrap(), 40);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stat = |name: &str| {
        info.lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split([':', ',']).find_map(|p| p.strip_prefix(name)))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    // Calls refused with NOSCRIPT (the script was not loaded yet) are
    // retried by the client after loading it.
    assert_eq!(
        stat("calls=") - stat("failed_calls="),
        partitions.len(),
        "{info}"
    );
    // Again: nothing new is marked, nothing breaks.
    assert_eq!(a.mark_routed_all(&all).await.unwrap(), 0);
    for p in store.keys().all_partitions() {
        let left: usize = conn.xlen(store.keys().routing(p)).await.unwrap();
        assert_eq!(left, 0);
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(store.keys().routing(p))
            .arg("router")
            .query_async(&mut conn)
            .await
            .unwrap();
        let redis::Value::Array(summary) = pending else {
            panic!("{pending:?}")
        };
        assert_eq!(summary[0], redis::Value::Int(0), "nothing left pending");
    }
    for e in &taken {
        let state: String = conn
            .hget(store.keys().contact(&e.contact_id), "state")
            .await
            .unwrap();
        assert_eq!(state, "queued");
    }
}

fn reply(text: &str) -> OutboundMessage {
    let p = Partition(0);
    OutboundMessage {
        message_id: MessageId::new(),
        contact_id: ContactId::new(p),
        conversation_id: ConversationId::new(p),
        channel: ChannelKind::Chat,
        source: "website".into(),
        from_address: "widget-1".into(),
        to: CustomerIdentity::new("visitor", "vs_1").unwrap(),
        subject: None,
        text: text.into(),
        in_reply_to: None,
        references: Vec::new(),
        created_at: Timestamp::now(),
        automatic: false,
    }
}

#[tokio::test]
async fn outbox_delivers_defers_and_redelivers_after_a_crash() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let outbox =
        RedisOutbox::new(store.clone(), "website", "i1", Duration::from_millis(300)).unwrap();
    let wait = Duration::from_millis(100);
    assert!(outbox.next(wait).await.unwrap().is_none());

    outbox.enqueue(&reply("one")).await.unwrap();
    outbox.enqueue(&reply("two")).await.unwrap();
    let first = outbox.next(wait).await.unwrap().unwrap();
    assert_eq!((first.message.text.as_str(), first.attempt), ("one", 1));
    // A temporary failure: deferred, then handed out again with attempt 2.
    // Deferred long enough that "two" comes first on a loaded machine.
    outbox
        .defer(&first, Duration::from_millis(1000))
        .await
        .unwrap();
    let second = outbox.next(wait).await.unwrap().unwrap();
    assert_eq!(second.message.text, "two");
    outbox
        .settle(&second, DeliveryOutcome::delivered(Some("p2".into())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retried = outbox.next(wait).await.unwrap().unwrap();
    assert_eq!((retried.message.text.as_str(), retried.attempt), ("one", 2));

    // Another instance takes over a delivery that was never settled.
    let other =
        RedisOutbox::new(store.clone(), "website", "i2", Duration::from_millis(1500)).unwrap();
    assert!(other.next(wait).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let again = other.next(wait).await.unwrap().unwrap();
    assert_eq!(again.message.message_id, retried.message.message_id);
    other
        .settle(
            &again,
            DeliveryOutcome::Failed {
                reason: "window closed".into(),
            },
        )
        .await
        .unwrap();
    assert!(other.next(wait).await.unwrap().is_none());

    let mut conn = raw(&redis).await;
    let state: String = conn
        .hget(
            store
                .keys()
                .conversation_delivery(&again.message.conversation_id),
            again.message.message_id.to_string(),
        )
        .await
        .unwrap();
    assert!(state.contains("window closed"), "{state}");

    // An instance that stalled past the visibility timeout defers a
    // delivery another instance took over and settled meanwhile: the late
    // defer changes nothing (it scheduled the reply a second time).
    outbox.enqueue(&reply("three")).await.unwrap();
    let stalled = outbox.next(wait).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let taken = other.next(wait).await.unwrap().unwrap();
    assert_eq!(taken.message.message_id, stalled.message.message_id);
    other
        .settle(&taken, DeliveryOutcome::delivered(None))
        .await
        .unwrap();
    outbox.defer(&stalled, Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        outbox.next(wait).await.unwrap().is_none(),
        "a settled reply came back"
    );
    assert!(other.next(wait).await.unwrap().is_none());
}

/// The backlog of an outbox: waiting, in flight, deferred, and the age of
/// the oldest not settled.
#[tokio::test]
async fn an_outbox_backlog_counts_each_state() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let empty = switchboard_store::outbox::backlog(&store, "website")
        .await
        .unwrap();
    assert_eq!(empty, switchboard_store::outbox::Backlog::default());
    let outbox = RedisOutbox::new(store.clone(), "website", "i1", Duration::from_secs(30)).unwrap();
    let wait = Duration::from_millis(50);
    for n in 0..4 {
        outbox.enqueue(&reply(&format!("r{n}"))).await.unwrap();
    }
    let first = outbox.next(wait).await.unwrap().unwrap();
    let second = outbox.next(wait).await.unwrap().unwrap();
    outbox
        .defer(&second, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = switchboard_store::outbox::backlog(&store, "website")
        .await
        .unwrap();
    assert_eq!((b.waiting, b.in_flight, b.deferred), (2, 1, 1), "{b:?}");
    assert!(
        b.oldest_age_ms.is_some_and(|ms| (20..10_000).contains(&ms)),
        "{b:?}"
    );
    outbox
        .settle(&first, DeliveryOutcome::delivered(None))
        .await
        .unwrap();
    let b = switchboard_store::outbox::backlog(&store, "website")
        .await
        .unwrap();
    assert_eq!((b.waiting, b.in_flight, b.deferred), (2, 0, 1), "{b:?}");
}

/// A stale delivery behind more than ten that are in progress (XAUTOCLAIM
/// looks at ten pending entries per call for a COUNT of 1) is still taken
/// over: the scan goes on where the last call stopped.
#[tokio::test]
async fn a_stale_delivery_behind_many_in_progress_is_taken_over() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let visibility = Duration::from_millis(300);
    let busy = RedisOutbox::new(store.clone(), "website", "busy", visibility).unwrap();
    let wait = Duration::from_millis(50);
    for n in 0..13 {
        busy.enqueue(&reply(&format!("r{n}"))).await.unwrap();
    }
    let mut taken = Vec::new();
    for _ in 0..13 {
        taken.push(busy.next(wait).await.unwrap().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The first twelve are still being worked on (claimed again: not
    // idle); the last is stale.
    let stream = store.keys().outbox("website");
    let mut conn = raw(&redis).await;
    let mut claim = redis::cmd("XCLAIM");
    claim.arg(&stream).arg("delivery").arg("busy").arg(0);
    for d in &taken[..12] {
        claim.arg(&d.handle);
    }
    claim.arg("JUSTID");
    let _: Vec<String> = claim.query_async(&mut conn).await.unwrap();

    let other = RedisOutbox::new(store.clone(), "website", "other", visibility).unwrap();
    let mut found = None;
    for _ in 0..3 {
        if let Some(d) = other.next(wait).await.unwrap() {
            found = Some(d);
            break;
        }
    }
    let found = found.expect("the stale delivery is taken over");
    assert_eq!(found.message.text, "r12");
}

#[tokio::test]
async fn one_instance_at_a_time_holds_the_right_to_deliver() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let lease = Duration::from_millis(400);
    let one = RedisOutbox::new(store.clone(), "website", "one", Duration::from_secs(30)).unwrap();
    let two = RedisOutbox::new(store.clone(), "website", "two", Duration::from_secs(30)).unwrap();
    let other = RedisOutbox::new(store.clone(), "meta", "two", Duration::from_secs(30)).unwrap();
    assert!(one.hold_delivery(lease).await.unwrap());
    assert!(!two.hold_delivery(lease).await.unwrap(), "held by one");
    assert!(
        other.hold_delivery(lease).await.unwrap(),
        "another outbox is free"
    );
    assert!(
        one.hold_delivery(lease).await.unwrap(),
        "renewed by its holder"
    );
    // Released: the other instance takes over at once.
    two.release_delivery().await.unwrap();
    assert!(
        !two.hold_delivery(lease).await.unwrap(),
        "only the holder releases"
    );
    one.release_delivery().await.unwrap();
    assert!(two.hold_delivery(lease).await.unwrap());
    // Not renewed: it lapses.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(one.hold_delivery(lease).await.unwrap());
}

/// An outbox whose key was deleted (a flush, a Redis that lost its data)
/// gets its consumer group back, and a deferred member that is not a
/// delivery does not block the others.
#[tokio::test]
async fn an_outbox_recovers_a_lost_group_and_skips_unreadable_deferred_members() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let outbox =
        RedisOutbox::new(store.clone(), "website", "i1", Duration::from_millis(300)).unwrap();
    let wait = Duration::from_millis(100);
    outbox.enqueue(&reply("one")).await.unwrap();
    let first = outbox.next(wait).await.unwrap().unwrap();
    outbox
        .settle(&first, DeliveryOutcome::delivered(None))
        .await
        .unwrap();

    let mut conn = raw(&redis).await;
    let keys = store.keys();
    let _: i64 = conn.del(keys.outbox("website")).await.unwrap();
    outbox.enqueue(&reply("two")).await.unwrap();
    // The first read after the loss may fail (NOGROUP); the next finds it.
    let mut found = None;
    for _ in 0..3 {
        if let Ok(Some(d)) = outbox.next(wait).await {
            found = Some(d);
            break;
        }
    }
    let second = found.expect("delivered after the group was made again");
    assert_eq!(second.message.text, "two");
    outbox
        .settle(&second, DeliveryOutcome::delivered(None))
        .await
        .unwrap();

    let _: i64 = conn
        .zadd(
            keys.outbox_deferred("website"),
            "garbage-without-separator",
            0,
        )
        .await
        .unwrap();
    outbox.enqueue(&reply("three")).await.unwrap();
    let third = outbox.next(wait).await.unwrap().expect("not blocked");
    assert_eq!(third.message.text, "three");
    let left: usize = conn.zcard(keys.outbox_deferred("website")).await.unwrap();
    assert_eq!(left, 0, "the unreadable member is removed");
}

/// An entry that is no delivery is moved aside (counted, kept for
/// inspection), not handed out for ever ahead of the replies behind it;
/// a delivery handed out again and again without an answer counts each
/// hand-out as an attempt, and past the limit is settled as failed (the
/// agent sees it), not handed out for ever.
#[tokio::test]
async fn unreadable_and_never_settled_deliveries_do_not_stay_for_ever() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let keys = store.keys();
    let visibility = Duration::from_millis(20);
    let outbox = RedisOutbox::new(store.clone(), "website", "i1", visibility).unwrap();
    let wait = Duration::from_millis(20);
    let mut conn = raw(&redis).await;
    outbox.enqueue(&reply("warm")).await.unwrap();
    let warm = outbox.next(wait).await.unwrap().unwrap();
    outbox
        .settle(&warm, DeliveryOutcome::delivered(None))
        .await
        .unwrap();

    let _: String = conn
        .xadd(keys.outbox("website"), "*", &[("msg", "{not json")])
        .await
        .unwrap();
    let err = outbox.next(wait).await.expect_err("unreadable");
    assert!(
        matches!(err, switchboard_channel::OutboxError::Corrupt { .. }),
        "{err:?}"
    );
    let aside: usize = conn.xlen(keys.outbox_unreadable("website")).await.unwrap();
    assert_eq!(aside, 1, "kept for inspection");
    let left: usize = conn.xlen(keys.outbox("website")).await.unwrap();
    assert_eq!(left, 0, "no longer in the outbox");

    let never = reply("never settled");
    outbox.enqueue(&never).await.unwrap();
    let mut attempts = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        match outbox.next(wait).await.unwrap() {
            Some(d) => attempts.push(d.attempt),
            None if attempts.len() >= 20 => break,
            None => {}
        }
    }
    assert_eq!(attempts.len(), 20, "{attempts:?}");
    assert_eq!(attempts.first(), Some(&1));
    assert_eq!(attempts.last(), Some(&20), "each hand-out is an attempt");
    assert!(outbox.next(wait).await.unwrap().is_none());
    let state: Option<String> = conn
        .hget(
            keys.conversation_delivery(&never.conversation_id),
            never.message_id.to_string(),
        )
        .await
        .unwrap();
    let state = state.expect("an outcome is recorded");
    assert!(state.contains("handed out 21 times"), "{state}");
}

/// A forward to another outbox (the offline form's answer by mail) that is
/// retried, after a lost answer or a crash before the removal, queues the
/// message there once.
#[tokio::test]
async fn a_forward_retried_queues_the_message_once() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let wait = Duration::from_millis(50);
    let chat = RedisOutbox::new(store.clone(), "website", "i1", Duration::from_secs(30)).unwrap();
    chat.enqueue(&reply("see you by mail")).await.unwrap();
    let delivery = chat.next(wait).await.unwrap().unwrap();
    let mut mail = delivery.message.clone();
    mail.source = "mail".into();
    mail.channel = ChannelKind::Email;
    // The first try fails in Redis (the mail outbox is of the wrong type
    // here; out of memory would do the same): the retry still queues it.
    // The once-mark was set before the XADD, so the retry found it and
    // queued nothing, and the customer never got the mail.
    let mut conn = raw(&redis).await;
    let mail_outbox = store.keys().outbox("mail");
    let _: () = conn.set(&mail_outbox, "not a stream").await.unwrap();
    assert!(chat.forward(&delivery, mail.clone()).await.is_err());
    let _: () = conn.del(&mail_outbox).await.unwrap();
    chat.forward(&delivery, mail.clone()).await.unwrap();
    chat.forward(&delivery, mail).await.unwrap();
    let queued: usize = conn.xlen(&mail_outbox).await.unwrap();
    assert_eq!(queued, 1);
}

/// An instance that held a delivery past the visibility timeout, after
/// another took it over, can neither defer it (which would send it a
/// third time) nor record its outcome over the new holder's.
#[tokio::test]
async fn a_superseded_holder_neither_defers_nor_settles() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 1);
    let keys = store.keys();
    let visibility = Duration::from_millis(100);
    let wait = Duration::from_millis(20);
    let a = RedisOutbox::new(store.clone(), "website", "a", visibility).unwrap();
    let b = RedisOutbox::new(store.clone(), "website", "b", visibility).unwrap();
    let message = reply("slow one");
    a.enqueue(&message).await.unwrap();
    let stale = a.next(wait).await.unwrap().unwrap();
    assert_eq!(stale.handouts, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = b.next(wait).await.unwrap().expect("taken over");
    assert_eq!(
        (taken.handle.as_str(), taken.handouts),
        (stale.handle.as_str(), 2)
    );

    a.defer(&stale, Duration::from_millis(0)).await.unwrap();
    let mut conn = raw(&redis).await;
    let deferred: usize = conn.zcard(keys.outbox_deferred("website")).await.unwrap();
    assert_eq!(deferred, 0, "the stale holder's defer is refused");
    a.settle(
        &stale,
        DeliveryOutcome::Failed {
            reason: "the stale holder gave up".into(),
        },
    )
    .await
    .unwrap();
    let state_key = keys.conversation_delivery(&message.conversation_id);
    let state: Option<String> = conn
        .hget(&state_key, message.message_id.to_string())
        .await
        .unwrap();
    assert_eq!(state, None, "the stale holder's outcome is not recorded");
    b.settle(&taken, DeliveryOutcome::delivered(None))
        .await
        .unwrap();
    let state: Option<String> = conn
        .hget(&state_key, message.message_id.to_string())
        .await
        .unwrap();
    assert!(state.expect("recorded").contains("delivered"));
    assert!(
        a.next(wait).await.unwrap().is_none(),
        "nothing left to send"
    );

    // Nor forward it to another outbox (the offline form's answer by mail)
    // after the new holder settled it failed: the customer would get the
    // mail while the agent sees the reply failed.
    let offline = reply("by mail");
    a.enqueue(&offline).await.unwrap();
    let stale = a.next(wait).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = b.next(wait).await.unwrap().expect("taken over");
    b.settle(
        &taken,
        DeliveryOutcome::Failed {
            reason: "no address".into(),
        },
    )
    .await
    .unwrap();
    let mut mail = stale.message.clone();
    mail.source = "mail".into();
    mail.channel = ChannelKind::Email;
    a.forward(&stale, mail).await.unwrap();
    let forwarded: usize = conn.xlen(keys.outbox("mail")).await.unwrap();
    assert_eq!(forwarded, 0, "the stale holder's forward is refused");

    // Handed out again to the same instance (it held it past the timeout
    // itself): its first hand-out is still its own to settle.
    let mine = reply("held long");
    a.enqueue(&mine).await.unwrap();
    let first = a.next(wait).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = a.next(wait).await.unwrap().expect("handed out again");
    assert_eq!(
        (again.handle.as_str(), again.handouts),
        (first.handle.as_str(), 2)
    );
    a.settle(&first, DeliveryOutcome::delivered(None))
        .await
        .unwrap();
    let state: Option<String> = conn
        .hget(
            keys.conversation_delivery(&mine.conversation_id),
            mine.message_id.to_string(),
        )
        .await
        .unwrap();
    assert!(state.expect("recorded").contains("delivered"));
}

/// Consumers left behind by restarted instances are deleted once they have
/// nothing pending and have not read for the idle limit; one with pending
/// entries, a recent one and the caller's own are kept.
#[tokio::test]
async fn dead_consumers_are_deleted_only_when_nothing_is_pending() {
    let (redis, store, _a, mut b, taken) = all_taken_by_a(1, 3).await;
    assert_eq!(taken.len(), 3);
    let stream = store.keys().routing(Partition(0));
    let group = switchboard_store::routing::GROUP;
    let raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let consumer = |name: &'static str| {
        let (mut raw, stream) = (raw.clone(), stream.clone());
        async move {
            let made: i64 = redis::cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(&stream)
                .arg(group)
                .arg(name)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert_eq!(made, 1);
        }
    };
    consumer("gone-with-nothing").await;
    let names = |raw: redis::aio::MultiplexedConnection| {
        let stream = stream.clone();
        async move {
            let mut raw = raw;
            let infos: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream)
                .arg(group)
                .query_async(&mut raw)
                .await
                .unwrap();
            let mut names: Vec<String> = infos
                .iter()
                .map(|i| redis::from_redis_value(i["name"].clone()).unwrap())
                .collect();
            names.sort();
            names
        }
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    // `a` still holds all three entries: kept, as is the idle empty one
    // while it is younger than the limit.
    let idle = Duration::from_millis(200);
    let young = Duration::from_secs(60);
    assert_eq!(
        switchboard_store::groups::prune_consumers(&store, &stream, group, "b", young)
            .await
            .unwrap(),
        0
    );
    let deleted = switchboard_store::groups::prune_consumers(&store, &stream, group, "b", idle)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only the empty idle consumer");
    assert_eq!(names(raw.clone()).await, vec!["a".to_owned()]);
    // `b` takes `a`'s entries over: `a` has nothing pending now, and goes
    // once it has been idle long enough; `b` (the caller) stays.
    assert_eq!(
        b.reclaim(Duration::from_millis(1), 10).await.unwrap().len(),
        3
    );
    let pruner = switchboard_store::Pruner::new(idle, Duration::from_secs(3600));
    pruner
        .maybe(&store, [stream.clone()], group, "b", "routing")
        .await;
    assert_eq!(
        names(raw.clone()).await,
        vec!["b".to_owned()],
        "a new pruner looks at once, and `a` has been idle long enough"
    );
    consumer("c").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    pruner
        .maybe(&store, [stream.clone()], group, "b", "routing")
        .await;
    assert_eq!(
        names(raw.clone()).await,
        vec!["b".to_owned(), "c".to_owned()],
        "not again before `every` has passed"
    );
    let soon = switchboard_store::Pruner::new(idle, Duration::ZERO);
    soon.maybe(&store, [stream.clone()], group, "b", "routing")
        .await;
    assert_eq!(names(raw.clone()).await, vec!["b".to_owned()]);
    // A stream or group that does not exist: nothing to do, no error.
    assert_eq!(
        switchboard_store::groups::prune_consumers(&store, "sb:{p0}:nothing", group, "b", idle)
            .await
            .unwrap(),
        0
    );
}
