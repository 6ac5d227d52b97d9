//! The webhook event feed against a real redis-server: what the intake and
//! replies write into it, the mover copying routing events exactly once and
//! in order (also when run twice, or after a mover died half-way), and the
//! delivery primitives (lease, consumer group, claim of a dead holder's
//! entries, trimming).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, intake_for, raw, store_for};
use std::time::Duration;
use switchboard_core::{ContactId, IntakeOutcome, Partition};
use switchboard_store::{Conversations, EventFeed, FeedEntry, Store};
use switchboard_testkit::RedisServer;

/// The entries of the feed of `p`.
async fn feed_of(store: &Store, p: Partition) -> Vec<FeedEntry> {
    let mut conn = raw_conn(store).await;
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut conn, store.keys().feed(p))
            .await
            .unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| FeedEntry {
            partition: p,
            fields: e
                .map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value::<String>(v.clone()).unwrap(),
                    )
                })
                .collect(),
            entry_id: e.id,
        })
        .collect()
}

async fn raw_conn(store: &Store) -> redis::aio::MultiplexedConnection {
    redis::Client::open(store.config().url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn kinds(entries: &[FeedEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.get("type").unwrap_or_default().to_owned(),
                e.get("dir").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A routing event as routing's scripts copy it to `{r}:hooks`.
async fn routing_event(redis: &RedisServer, kind: &str, contact: &ContactId, n: u64) {
    let mut conn = raw(redis).await;
    let _: String = redis::cmd("XADD")
        .arg("sb:{r}:hooks")
        .arg("*")
        .arg("type")
        .arg(kind)
        .arg("contact")
        .arg(contact.to_string())
        .arg("agent")
        .arg(if kind == "abandoned" { "" } else { "olena" })
        .arg("channel")
        .arg("chat")
        .arg("disposition")
        .arg(if kind == "closed" { "resolved" } else { "" })
        .arg("at")
        .arg(1_800_000_000_000u64 + n)
        .arg("n")
        .arg(n)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_intake_writes_created_then_messages_and_nothing_for_duplicates() {
    let redis = RedisServer::start();
    // Off by default: nothing in any feed.
    let plain = store_for(&redis, 4);
    let receipt = intake_for(&plain)
        .submit_event(event("quiet", Some("q1"), "hi"))
        .await
        .unwrap();
    let p = receipt.contact_id.partition();
    assert!(feed_of(&plain, p).await.is_empty());

    let store = store_for(&redis, 4).with_event_feed(true);
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("olena", Some("m1"), "hello"))
        .await
        .unwrap();
    assert_eq!(first.outcome, IntakeOutcome::Created);
    let second = intake
        .submit_event(event("olena", Some("m2"), "are you there?"))
        .await
        .unwrap();
    assert_eq!(second.outcome, IntakeOutcome::Appended);
    let again = intake
        .submit_event(event("olena", Some("m2"), "are you there?"))
        .await
        .unwrap();
    assert_eq!(again.outcome, IntakeOutcome::Duplicate);

    let p = first.contact_id.partition();
    let feed = feed_of(&store, p).await;
    let contact = first.contact_id.to_string();
    let mine: Vec<&FeedEntry> = feed
        .iter()
        .filter(|e| e.get("contact") == Some(contact.as_str()))
        .collect();
    assert_eq!(mine.len(), 3, "{feed:?}");
    assert_eq!(mine[0].get("type"), Some("contact.created"));
    assert_eq!(
        mine[0].get("id"),
        Some(format!("{contact}:created").as_str())
    );
    assert_eq!(
        mine[0].get("conversation"),
        Some(first.conversation_id.to_string().as_str())
    );
    for (entry, receipt) in [(mine[1], &first), (mine[2], &second)] {
        assert_eq!(entry.get("type"), Some("message.created"));
        assert_eq!(entry.get("dir"), Some("in"));
        assert_eq!(entry.get("seq"), Some(receipt.seq.as_str()));
        assert_eq!(
            entry.get("id"),
            Some(format!("{contact}:message:{}", receipt.seq).as_str())
        );
        assert!(entry.get("at").unwrap().parse::<u64>().unwrap() > 0);
    }
}

#[tokio::test]
async fn replies_follow_the_assignment_and_notes_are_not_events() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4).with_event_feed(true);
    let receipt = intake_for(&store)
        .submit_event(event("petro", Some("m1"), "hello"))
        .await
        .unwrap();
    let contact = receipt.contact_id;
    let p = contact.partition();

    // Routing assigned the contact; the mover has not run yet.
    routing_event(&redis, "accepted", &contact, 1).await;
    let conversations = Conversations::new(store.clone());
    let reply = conversations
        .outbound_to(&contact, "Hi, Olena here.")
        .await
        .unwrap();
    let seq = conversations.reply(&reply, "olena").await.unwrap();
    conversations
        .note(&receipt.conversation_id, &contact, "olena", "internal")
        .await
        .unwrap();

    // The reply moved the assignment into the feed before itself.
    let feed = feed_of(&store, p).await;
    assert_eq!(
        kinds(&feed),
        [
            ("contact.created".into(), String::new()),
            ("message.created".into(), "in".into()),
            ("contact.assigned".into(), String::new()),
            ("message.created".into(), "out".into()),
        ]
    );
    assert_eq!(
        feed[2].get("id"),
        Some(format!("{contact}:assigned:1").as_str())
    );
    assert_eq!(feed[2].get("agent"), Some("olena"));
    assert_eq!(
        feed[2].get("conversation"),
        Some(receipt.conversation_id.to_string().as_str())
    );
    assert_eq!(feed[3].get("seq"), Some(seq.as_str()));

    // The mover finds the assignment copied already and only deletes it.
    routing_event(&redis, "closed", &contact, 2).await;
    let feed_ops = EventFeed::new(store.clone());
    let moved = feed_ops.move_routing_events(100).await.unwrap();
    assert_eq!((moved.copied, moved.already), (1, 1));
    let feed = feed_of(&store, p).await;
    assert_eq!(feed.len(), 5);
    let closed = &feed[4];
    assert_eq!(closed.get("type"), Some("contact.closed"));
    assert_eq!(closed.get("outcome"), Some("closed"));
    assert_eq!(closed.get("disposition"), Some("resolved"));
    assert_eq!(closed.get("at"), Some("1800000000002"));
}

/// With more routing events waiting than one look at the head covers
/// (the mover's holder died, or lags), a reply still follows its
/// assignment: the contact's recent events are at the end.
#[tokio::test]
async fn a_reply_follows_its_assignment_behind_a_long_backlog() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4).with_event_feed(true);
    let receipt = intake_for(&store)
        .submit_event(event("petro", Some("m1"), "hello"))
        .await
        .unwrap();
    let contact = receipt.contact_id;
    let others = ContactId::new(Partition(0));
    for n in 1..=1200 {
        routing_event(&redis, "accepted", &others, n).await;
    }
    routing_event(&redis, "accepted", &contact, 1201).await;
    let conversations = Conversations::new(store.clone());
    let reply = conversations
        .outbound_to(&contact, "Hi, Olena here.")
        .await
        .unwrap();
    conversations.reply(&reply, "olena").await.unwrap();
    let feed_ops = EventFeed::new(store.clone());
    while feed_ops.move_routing_events(500).await.unwrap().copied > 0 {}
    let feed = feed_of(&store, contact.partition()).await;
    let mine: Vec<(String, String)> = kinds(&feed)
        .into_iter()
        .zip(&feed)
        .filter(|(_, e)| e.get("contact") == Some(contact.to_string().as_str()))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        mine,
        [
            ("contact.created".into(), String::new()),
            ("message.created".into(), "in".into()),
            ("contact.assigned".into(), String::new()),
            ("message.created".into(), "out".into()),
        ]
    );
}

/// A contact ended because its queue was closed (routing's `by: policy`)
/// reaches webhooks as `closed` with its `after_hours` disposition, as the
/// KPIs count it; one the customer left is `abandoned`. Both were
/// `abandoned`, and a CRM counted the business's closes as the customers'.
#[tokio::test]
async fn an_after_hours_end_is_closed_not_abandoned() {
    use switchboard_core::ChannelKind;
    use switchboard_store::{NewRoute, RoutingState};
    let redis = RedisServer::start();
    let store = store_for(&redis, 4).with_event_feed(true);
    let feed = EventFeed::new(store.clone());
    let state = RoutingState::new(store.clone());
    let mut conn = raw(&redis).await;
    let _: () = redis::cmd("SET")
        .arg("sb:{r}:hooks:on")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = 1_800_000_000_000;
    let retention = Duration::from_secs(86_400);
    let mut ended = Vec::new();
    for (customer, policy) in [("visitor:night", true), ("visitor:left", false)] {
        let id = ContactId::new(Partition(1));
        let queued = state
            .enqueue(&NewRoute {
                contact: &id,
                queue: "general",
                channel: ChannelKind::Chat,
                priority: 0,
                since: now,
                now,
                rule: "",
                source: "web",
                customer,
                sticky: None,
                sticky_memory: None,
                person: "",
            })
            .await
            .unwrap();
        assert!(queued);
        let outcome = if policy {
            state
                .end_if_waiting(&id, now + 1, "after_hours", retention, None, None)
                .await
        } else {
            state
                .end_by_channel(&id, now + 1, "left", 0, retention, Duration::ZERO)
                .await
        };
        assert_eq!(outcome.unwrap(), "abandoned");
        ended.push(id);
    }
    feed.move_routing_events(100).await.unwrap();
    let entries = feed_of(&store, Partition(1)).await;
    let outcome = |id: &ContactId| {
        entries
            .iter()
            .find(|e| e.get("contact") == Some(id.to_string().as_str()))
            .and_then(|e| e.get("outcome").map(str::to_owned))
    };
    assert_eq!(outcome(&ended[0]).as_deref(), Some("closed"));
    assert_eq!(outcome(&ended[1]).as_deref(), Some("abandoned"));
}

#[tokio::test]
async fn the_mover_copies_each_routing_event_once_in_order() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4).with_event_feed(true);
    let feed = EventFeed::new(store.clone());
    let a = ContactId::new(Partition(2));
    let b = ContactId::new(Partition(3));
    routing_event(&redis, "assigned", &a, 10).await;
    routing_event(&redis, "accepted", &b, 11).await;
    // Not webhook events: deleted, never copied.
    let mut conn = raw(&redis).await;
    let _: String = redis::cmd("XADD")
        .arg("sb:{r}:hooks")
        .arg("*")
        .arg("type")
        .arg("offered")
        .arg("contact")
        .arg(a.to_string())
        .arg("n")
        .arg(12)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("sb:{r}:hooks")
        .arg("*")
        .arg("type")
        .arg("closed")
        .arg("contact")
        .arg("not-a-contact")
        .arg("n")
        .arg(13)
        .query_async(&mut conn)
        .await
        .unwrap();
    routing_event(&redis, "closed", &a, 14).await;
    routing_event(&redis, "abandoned", &b, 15).await;

    // A mover that died after copying b's events, before deleting them
    // (or an agent's reply to b that moved them first).
    let early = feed.move_routing_events_of(&b).await.unwrap();
    assert_eq!(early.copied, 2);
    // Two passes, as two instances whose leases overlapped would run them.
    let first = feed.move_routing_events(2).await.unwrap();
    assert_eq!((first.copied, first.already), (1, 1));
    let rest = feed.move_routing_events(100).await.unwrap();
    assert_eq!((rest.copied, rest.already, rest.ignored), (1, 1, 2));
    let again = feed.move_routing_events(100).await.unwrap();
    assert_eq!(again, Default::default());
    let left: u64 = redis::cmd("XLEN")
        .arg("sb:{r}:hooks")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);

    let fa = feed_of(&store, a.partition()).await;
    let ids: Vec<&str> = fa.iter().filter_map(|e| e.get("id")).collect();
    assert_eq!(ids, [format!("{a}:assigned:10"), format!("{a}:closed:14")]);
    let fb = feed_of(&store, b.partition()).await;
    let ids: Vec<&str> = fb.iter().filter_map(|e| e.get("id")).collect();
    assert_eq!(ids, [format!("{b}:assigned:11"), format!("{b}:closed:15")]);
    assert_eq!(fb[1].get("outcome"), Some("abandoned"));
    assert_eq!(fb[1].get("agent"), None);

    // The same routing event appended twice (a replayed copy) is copied once.
    routing_event(&redis, "closed", &a, 14).await;
    let moved = feed.move_routing_events(100).await.unwrap();
    assert_eq!((moved.copied, moved.already), (0, 1));
    assert_eq!(feed_of(&store, a.partition()).await.len(), 2);

    // Routing's numbering started again (its counter deleted, or rolled
    // back by a failover): another contact's event of a number copied
    // before is copied all the same. It was taken for a copy and dropped.
    let c = ContactId::new(Partition(2));
    routing_event(&redis, "assigned", &c, 10).await;
    routing_event(&redis, "closed", &c, 14).await;
    let moved = feed.move_routing_events(100).await.unwrap();
    assert_eq!((moved.copied, moved.already), (2, 0));
    let ids: Vec<String> = feed_of(&store, c.partition())
        .await
        .iter()
        .filter_map(|e| e.get("id").map(str::to_owned))
        .collect();
    assert_eq!(
        ids,
        [
            format!("{a}:assigned:10"),
            format!("{a}:closed:14"),
            format!("{c}:assigned:10"),
            format!("{c}:closed:14")
        ]
    );
}

#[tokio::test]
async fn a_new_holder_delivers_what_the_dead_one_left_first() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 2).with_event_feed(true);
    let feed = EventFeed::new(store.clone());
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("mariia", Some("m1"), "one"))
        .await
        .unwrap();
    let p = first.contact_id.partition();
    for i in 2..=4 {
        intake
            .submit_event(event("mariia", Some(&format!("m{i}")), "more"))
            .await
            .unwrap();
    }
    let group = "hook:crm";
    feed.ensure_group(p, group, 0).await.unwrap();
    feed.ensure_group(p, group, 0).await.unwrap();

    // One holder at a time.
    let lease = Duration::from_millis(300);
    assert!(feed.hold(p, "crm", "a", lease).await.unwrap());
    assert!(!feed.hold(p, "crm", "b", lease).await.unwrap());
    assert!(feed.hold(p, "crm", "a", lease).await.unwrap());

    // "a" takes two, settles the first and dies.
    let batch = feed.next(p, group, "a", 2).await.unwrap();
    assert_eq!(batch.entries.len(), 2);
    assert_eq!(batch.entries[0].get("type"), Some("contact.created"));
    feed.ack(p, group, &batch.entries[0].entry_id)
        .await
        .unwrap();
    let unsettled = batch.entries[1].entry_id.clone();
    assert_eq!(feed.backlog(p, group).await.unwrap(), Some(4));
    // A group created mid-stream (a webhook's starts at now - max_age),
    // whose lag Redis 7 cannot tell until it has read the last entry: its
    // backlog is counted all the same (it was None, and the gauge stood at
    // 0 while events piled up behind a receiver that was down).
    let entries = feed_of(&store, p).await;
    assert!(entries.len() >= 4, "{}", entries.len());
    let late = "hook:late";
    let mut conn = raw_conn(&store).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(store.keys().feed(p))
        .arg(late)
        .arg(&entries[1].entry_id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let after_second = entries.len() as u64 - 2;
    assert_eq!(feed.backlog(p, late).await.unwrap(), Some(after_second));
    assert_eq!(feed.backlog(p, "hook:none").await.unwrap(), None);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(feed.hold(p, "crm", "b", lease).await.unwrap());
    let batch = feed.next(p, group, "b", 10).await.unwrap();
    assert_eq!(batch.entries.len(), 1, "the pending one first, alone");
    assert_eq!(batch.entries[0].entry_id, unsettled);
    feed.ack(p, group, &unsettled).await.unwrap();
    let batch = feed.next(p, group, "b", 10).await.unwrap();
    let got: Vec<&str> = batch.entries.iter().filter_map(|e| e.get("type")).collect();
    assert_eq!(got, ["message.created"; 3]);
    assert!(
        batch
            .entries
            .windows(2)
            .all(|w| w[0].entry_id < w[1].entry_id)
    );

    // "b" dies holding them; the feed is trimmed meanwhile: the next
    // holder is told they are gone.
    feed.trim(Duration::ZERO).await.unwrap();
    let mut conn = raw(&redis).await;
    // `~` trims whole nodes only; drop the rest exactly.
    let _: i64 = redis::cmd("XTRIM")
        .arg(store.keys().feed(p))
        .arg("MINID")
        .arg("99999999999999")
        .query_async(&mut conn)
        .await
        .unwrap();
    feed.release(p, "crm", "b").await.unwrap();
    assert!(feed.hold(p, "crm", "c", lease).await.unwrap());
    let batch = feed.next(p, group, "c", 10).await.unwrap();
    assert!(batch.entries.is_empty());
    assert_eq!(batch.gone.len(), 3);
    let batch = feed.next(p, group, "c", 10).await.unwrap();
    assert_eq!(batch, Default::default());
}

/// The feed's retention (docs/webhooks.md): entries older than it go,
/// whole stream nodes at a time, in every partition; newer ones stay.
#[tokio::test]
async fn trimming_drops_what_is_older_than_the_retention() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 2).with_event_feed(true);
    let feed = EventFeed::new(store.clone());
    let mut conn = raw(&redis).await;
    // Nodes of two entries, so that `~` trims exactly at node bounds.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = switchboard_core::Timestamp::now().as_millis();
    let day = 86_400_000;
    for p in [Partition(0), Partition(1)] {
        for i in 0..10u64 {
            let _: String = redis::cmd("XADD")
                .arg(store.keys().feed(p))
                .arg(format!("{}-{i}", now - 2 * day))
                .arg("type")
                .arg("old")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        for _ in 0..4 {
            let _: String = redis::cmd("XADD")
                .arg(store.keys().feed(p))
                .arg("*")
                .arg("type")
                .arg("new")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    feed.trim(Duration::from_secs(86_400)).await.unwrap();
    for p in [Partition(0), Partition(1)] {
        let left: Vec<String> = feed_of(&store, p)
            .await
            .iter()
            .map(|e| e.get("type").unwrap_or_default().to_owned())
            .collect();
        assert_eq!(left, ["new"; 4], "partition {p:?}");
    }
}

#[tokio::test]
async fn announcing_turns_routing_copies_on_for_a_while() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 2);
    let feed = EventFeed::new(store.clone());
    feed.announce(Duration::from_secs(60)).await.unwrap();
    let mut conn = raw(&redis).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("sb:{r}:hooks:on")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    assert!(feed.hold_mover("a", Duration::from_secs(5)).await.unwrap());
    assert!(!feed.hold_mover("b", Duration::from_secs(5)).await.unwrap());
    feed.release_mover("a").await.unwrap();
    assert!(feed.hold_mover("b", Duration::from_secs(5)).await.unwrap());

    // A blocked wait returns when a routing event arrives.
    let mut waiter = store.dedicated_connection(Duration::from_secs(2)).unwrap();
    let none = feed
        .wait_routing_events(&mut waiter, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(!none);
    let feed2 = feed.clone();
    let waiting = tokio::spawn(async move {
        feed2
            .wait_routing_events(&mut waiter, Duration::from_secs(2))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    routing_event(&redis, "assigned", &ContactId::new(Partition(1)), 1).await;
    assert!(waiting.await.unwrap());
}

/// A copy that fails half-way (the feed key is not a stream) leaves no
/// mark: once the key is right, the event is copied, not skipped as if it
/// had been.
#[tokio::test]
async fn a_copy_that_failed_is_copied_later_not_skipped() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4).with_event_feed(true);
    let feed = EventFeed::new(store.clone());
    let a = ContactId::new(Partition(2));
    let mut conn = raw(&redis).await;
    let broken = store.keys().feed(a.partition());
    let _: () = redis::AsyncCommands::set(&mut conn, &broken, "not a stream")
        .await
        .unwrap();
    routing_event(&redis, "assigned", &a, 20).await;
    assert!(feed.move_routing_events(100).await.is_err());
    let _: () = redis::AsyncCommands::del(&mut conn, &broken).await.unwrap();
    let moved = feed.move_routing_events(100).await.unwrap();
    assert_eq!((moved.copied, moved.already), (1, 0));
    let ids: Vec<String> = feed_of(&store, a.partition())
        .await
        .iter()
        .filter_map(|e| e.get("id").map(str::to_owned))
        .collect();
    assert_eq!(ids, [format!("{a}:assigned:20")]);
}
