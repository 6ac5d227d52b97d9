//! The routing state's scripts against a real redis-server: the invariants
//! that make several instances safe (fencing, capacity, one offer at a
//! time) are checked here, where they live.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, intake_for, store_for};
use std::time::Duration;
use switchboard_core::{ChannelKind, ContactId, Partition};
use switchboard_store::{AgentRecord, Answer, NewRoute, Offer, RoutingState};
use switchboard_testkit::RedisServer;

const NOW: u64 = 1_800_000_000_000;

fn agent(id: &str, capacity: [u32; 4]) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        name: format!("Agent {id}"),
        skills: vec![("billing".into(), 3)],
        capacity,
        total_capacity: 0,
        token_sha256: format!("{id:0>64}"),
    }
}

/// A private Redis, the routing state on it, and the routing lease
/// (instance "one").
async fn leading() -> (RedisServer, RoutingState, String) {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    let token = state
        .acquire_lease("one", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    (redis, state, token)
}

async fn online(state: &RoutingState, id: &str, cap: [u32; 4]) {
    state.upsert_agent(&agent(id, cap), "test").await.unwrap();
    let r = state
        .set_presence(id, Some(("available", "")), Some(NOW + 3_600_000), None)
        .await
        .unwrap();
    assert_eq!(r, "ok");
}

async fn waiting(state: &RoutingState, channel: ChannelKind) -> ContactId {
    waiting_in(state, channel, "general", 0).await
}

async fn waiting_in(
    state: &RoutingState,
    channel: ChannelKind,
    queue: &str,
    priority: i32,
) -> ContactId {
    let id = ContactId::new(Partition(1));
    let queued = state
        .enqueue(&NewRoute {
            contact: &id,
            queue,
            channel,
            priority,
            since: NOW,
            now: NOW,
            rule: "",
            source: "web",
            customer: "visitor:1",
            sticky: None,
            sticky_memory: None,
            person: "",
        })
        .await
        .unwrap();
    assert!(queued);
    id
}

/// A waiting chat contact offered to `agent` and accepted.
/// Offers `c` to `agent`, who accepts it.
async fn offer_and_accept(state: &RoutingState, token: &str, c: &ContactId, agent: &str) {
    assert_eq!(state.offer(&offer(token, c, agent)).await.unwrap(), "ok");
    assert_eq!(
        state
            .answer(Answer::Accept, c, agent, NOW, 3)
            .await
            .unwrap(),
        "ok"
    );
}

async fn accepted(state: &RoutingState, token: &str, agent: &str) -> ContactId {
    let c = waiting(state, ChannelKind::Chat).await;
    offer_and_accept(state, token, &c, agent).await;
    c
}

fn offer<'a>(token: &'a str, contact: &'a ContactId, agent: &'a str) -> Offer<'a> {
    Offer {
        token,
        contact,
        agent,
        now: NOW,
        until: NOW + 30_000,
        auto_accept: false,
        interrupt_voice: "",
        explanation: "{}",
        step: 0,
        exclusion: Duration::ZERO,
    }
}

#[tokio::test]
async fn offers_are_fenced_single_and_within_capacity() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    let token = state
        .acquire_lease("one", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("lease free");
    assert!(token.starts_with("1:"), "{token}");
    assert_eq!(
        state
            .acquire_lease("two", Duration::from_secs(10))
            .await
            .unwrap(),
        None,
        "held by one"
    );
    online(&state, "a", [1, 0, 0, 1]).await;
    online(&state, "b", [1, 0, 0, 0]).await;
    let c1 = waiting(&state, ChannelKind::Chat).await;
    let c2 = waiting(&state, ChannelKind::Chat).await;

    assert_eq!(
        state.offer(&offer("2:two", &c1, "a")).await.unwrap(),
        "fenced"
    );
    assert_eq!(state.offer(&offer(&token, &c1, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.offer(&offer(&token, &c1, "b")).await.unwrap(),
        "not_waiting",
        "never offered to two agents at once"
    );
    assert_eq!(
        state.offer(&offer(&token, &c2, "a")).await.unwrap(),
        "at_capacity"
    );
    assert_eq!(
        state.offer(&offer(&token, &c2, "nobody")).await.unwrap(),
        "unknown_agent"
    );

    // A call blocks other channels.
    let call = waiting(&state, ChannelKind::Voice).await;
    assert_eq!(
        state
            .answer(Answer::Decline, &c1, "a", NOW, 3)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(state.offer(&offer(&token, &call, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.offer(&offer(&token, &c2, "a")).await.unwrap(),
        "on_call"
    );
    let mut o = offer(&token, &c2, "a");
    o.interrupt_voice = "chat,email";
    assert_eq!(
        state.offer(&o).await.unwrap(),
        "ok",
        "chat may interrupt when configured"
    );

    // Declined: waiting again, and not for the agent who declined.
    assert_eq!(
        state.offer(&offer(&token, &c1, "a")).await.unwrap(),
        "declined_before"
    );
    let rec = state.route_record(&c1).await.unwrap().unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.excluded.clone()),
        ("waiting", vec!["a".to_string()])
    );
    assert_eq!(state.offer(&offer(&token, &c1, "b")).await.unwrap(), "ok");

    // Load equals what each agent holds.
    for id in ["a", "b"] {
        let (_, live) = state.agent(id).await.unwrap().unwrap();
        let held = state.held(id).await.unwrap();
        assert_eq!(live.loads.iter().sum::<u32>() as usize, held.len(), "{id}");
    }
    assert_eq!(state.decisions(&c1).await.unwrap().len(), 2);
}

#[tokio::test]
async fn accept_expire_autopause_close_and_sticky() {
    let (redis, state, token) = leading().await;
    online(&state, "a", [5, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(
        state.answer(Answer::Accept, &c, "a", NOW, 2).await.unwrap(),
        "not_offered"
    );
    assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.answer(Answer::Accept, &c, "b", NOW, 2).await.unwrap(),
        "not_offered"
    );
    assert_eq!(
        state.answer(Answer::Accept, &c, "a", NOW, 2).await.unwrap(),
        "ok"
    );
    assert_eq!(
        state
            .close(
                &c,
                "a",
                NOW + 1,
                "solved",
                NOW + 30_000,
                Duration::from_secs(60),
                Duration::from_secs(600)
            )
            .await
            .unwrap(),
        "ok"
    );
    let (_, live) = state.agent("a").await.unwrap().unwrap();
    assert_eq!((live.presence.as_str(), live.loads), ("wrap_up", [0; 4]));
    assert_eq!(live.idle_since, NOW + 1);
    assert_eq!(
        state.sticky_agent("visitor:1").await.unwrap().as_deref(),
        Some("a")
    );
    // The customer comes back: the enqueue script finds the remembered
    // agent itself and gives it the deadline asked for.
    for (customer, expected) in [("visitor:1", "a"), ("visitor:2", "")] {
        let back = ContactId::new(Partition(1));
        let new_route = NewRoute {
            contact: &back,
            queue: "general",
            channel: ChannelKind::Chat,
            priority: 0,
            since: NOW + 2,
            now: NOW + 2,
            rule: "",
            source: "web",
            customer,
            sticky: None,
            sticky_memory: Some(NOW + 20_000),
            person: "",
        };
        assert!(state.enqueue(&new_route).await.unwrap());
        let rec = state.route_record(&back).await.unwrap().unwrap();
        assert_eq!(rec.sticky, expected, "{customer}");
        // Remembered, not a transfer's target: the router checks skills.
        assert_eq!(rec.sticky_remembered, !expected.is_empty(), "{customer}");
        let until = if expected.is_empty() { 0 } else { NOW + 20_000 };
        assert_eq!(rec.sticky_until, until, "{customer}");
        state
            .end_by_channel(
                &back,
                NOW + 3,
                "customer_left",
                0,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .await
            .unwrap();
    }
    // The wrap-up runs until NOW + 30 s (later than the clock): a sweep
    // with an old view cannot end it early.
    let end_wrap_up = || state.set_presence("a", Some(("available", "")), None, Some("wrap_up"));
    assert_eq!(end_wrap_up().await.unwrap(), "unchanged");
    let mut conn = common::raw(&redis).await;
    let _: () = redis::AsyncCommands::hset(&mut conn, "sb:{r}:agent:a", "wrap_until", 1)
        .await
        .unwrap();
    assert_eq!(end_wrap_up().await.unwrap(), "ok", "over: ended");
    assert_eq!(
        end_wrap_up().await.unwrap(),
        "unchanged",
        "no longer in wrap-up"
    );

    // Two missed offers in a row set the agent away.
    for i in 0..2 {
        let c = waiting(&state, ChannelKind::Chat).await;
        assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
        assert_eq!(
            state.answer(Answer::Expire, &c, "a", NOW, 2).await.unwrap(),
            "not_due"
        );
        assert_eq!(
            state
                .answer(Answer::Expire, &c, "a", NOW + 30_000, 2)
                .await
                .unwrap(),
            "ok"
        );
        let (_, live) = state.agent("a").await.unwrap().unwrap();
        let expected = if i == 0 { "available" } else { "away" };
        assert_eq!(live.presence, expected);
    }
    let (_, live) = state.agent("a").await.unwrap().unwrap();
    assert_eq!(
        (live.reason.as_str(), live.loads),
        ("missed_offers", [0; 4])
    );
    assert_eq!(state.waiting().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_pass_neither_counts_as_missed_nor_ends_a_run_of_misses() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [0, 0, 0, 1]).await;
    // Missed on the phone, then passed over (no phone for another call),
    // then missed again: the second miss is the second in a row.
    let mut calls = Vec::new();
    for (i, action) in [Answer::Miss, Answer::Pass, Answer::Miss]
        .into_iter()
        .enumerate()
    {
        let c = waiting(&state, ChannelKind::Voice).await;
        assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
        assert_eq!(state.answer(action, &c, "a", NOW, 2).await.unwrap(), "ok");
        let (_, live) = state.agent("a").await.unwrap().unwrap();
        let expected = if i == 2 { "away" } else { "available" };
        assert_eq!(live.presence, expected, "after {action:?}");
        assert_eq!(live.loads, [0; 4]);
        calls.push(c);
    }
    // The passed call waits again, the agent left out of it.
    let passed = state.route_record(&calls[1]).await.unwrap().unwrap();
    assert_eq!(passed.state, "waiting");
    assert!(passed.excluded.contains(&"a".to_owned()), "{passed:?}");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_old_token_is_refused() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    // Long enough to be renewed on a loaded machine before it lapses.
    let old = state
        .acquire_lease("paused", Duration::from_millis(1000))
        .await
        .unwrap()
        .unwrap();
    assert!(
        state
            .renew_lease(&old, Duration::from_millis(1000))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let new = state
        .acquire_lease("successor", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("expired lease is free");
    assert!(new.starts_with("2:"), "epoch went up: {new}");
    assert!(
        !state
            .renew_lease(&old, Duration::from_secs(10))
            .await
            .unwrap()
    );
    online(&state, "a", [3, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(state.offer(&offer(&old, &c, "a")).await.unwrap(), "fenced");
    assert_eq!(state.offer(&offer(&new, &c, "a")).await.unwrap(), "ok");
    assert!(!state.release_lease(&old).await.unwrap());
    assert!(state.release_lease(&new).await.unwrap());
}

#[tokio::test]
async fn racing_offers_never_overrun_capacity_or_double_assign() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    let token = state
        .acquire_lease("one", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    for i in 0..10 {
        online(&state, &format!("a{i}"), [3, 0, 0, 0]).await;
    }
    let mut contacts = Vec::new();
    for _ in 0..100 {
        contacts.push(waiting(&state, ChannelKind::Chat).await);
    }
    // 40 tasks each try every contact with every agent, in different orders.
    let mut tasks = Vec::new();
    for t in 0..40usize {
        let state = state.clone();
        let token = token.clone();
        let contacts = contacts.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for k in 0..contacts.len() {
                let c = &contacts[(k * 7 + t) % contacts.len()];
                let agent = format!("a{}", (k + t) % 10);
                if state.offer(&offer(&token, c, &agent)).await.unwrap() == "ok" {
                    ok.push((c.to_string(), agent));
                }
            }
            ok
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 30, "10 agents x capacity 3");
    let mut seen = std::collections::HashSet::new();
    for (c, _) in &all {
        assert!(seen.insert(c.clone()), "{c} offered twice");
    }
    for i in 0..10 {
        let id = format!("a{i}");
        let (_, live) = state.agent(&id).await.unwrap().unwrap();
        assert_eq!(live.loads[0], 3);
        assert_eq!(state.held(&id).await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn events_carry_the_agent_state_and_enqueue_is_idempotent() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    let start = state.last_event_id().await.unwrap();
    assert_eq!(start, "0-0");
    online(&state, "a", [2, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    let again = state
        .enqueue(&NewRoute {
            contact: &c,
            queue: "other",
            channel: ChannelKind::Chat,
            priority: 9,
            since: NOW,
            now: NOW,
            rule: "",
            source: "web",
            customer: "visitor:1",
            sticky: None,
            sticky_memory: None,
            person: "",
        })
        .await
        .unwrap();
    assert!(!again, "a second enqueue changes nothing");
    let mut conn = state.event_reader(Duration::from_millis(100)).unwrap();
    let events = state
        .read_events(&mut conn, &start, Duration::from_millis(100), 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["agent", "presence", "enqueued"]);
    let live = events[1].live.clone().unwrap();
    assert_eq!(
        (live.presence.as_str(), live.online_until),
        ("available", NOW + 3_600_000)
    );
    assert_eq!(events[2].contact.as_deref(), Some(c.to_string().as_str()));
    // The enqueued event carries the contact's record, so the leader needs
    // no read; events that cannot make a contact wait again carry none.
    let rec = events[2].record.as_ref().expect("the record in the event");
    assert_eq!(rec.contact, c.to_string());
    assert_eq!(
        (rec.state.as_str(), rec.queue.as_str(), rec.channel.as_str()),
        ("waiting", "general", "chat"),
        "{rec:?}"
    );
    assert_eq!((rec.since, rec.queued_at), (NOW, NOW));
    assert!(events[0].record.is_none() && events[1].record.is_none());
}

#[tokio::test]
async fn reading_events_when_there_are_none_returns_after_the_block_time() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    online(&state, "a", [2, 0, 0, 0]).await;
    let last = state.last_event_id().await.unwrap();
    let mut conn = state.event_reader(Duration::from_millis(100)).unwrap();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let events = state
            .read_events(&mut conn, &last, Duration::from_millis(100), 100)
            .await
            .unwrap();
        assert!(events.is_empty());
        // It waited (a read that does not block would spin the leader),
        // and not much longer than asked.
        assert!(
            (Duration::from_millis(90)..Duration::from_millis(900)).contains(&started.elapsed()),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_blocked_reader_wakes_up_for_a_new_event() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    online(&state, "a", [2, 0, 0, 0]).await;
    let last = state.last_event_id().await.unwrap();
    let mut conn = state.event_reader(Duration::from_millis(2000)).unwrap();
    let writer = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        waiting(&writer, ChannelKind::Chat).await;
    });
    let started = std::time::Instant::now();
    // One read blocking for up to 2 s: the event written at 300 ms wakes
    // it then, not at the end of its block time.
    let events = state
        .read_events(&mut conn, &last, Duration::from_millis(2000), 100)
        .await
        .unwrap();
    let woke = started.elapsed();
    assert_eq!(events.len(), 1, "after {woke:?}");
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(1500)).contains(&woke),
        "woke after {woke:?}"
    );
}

#[tokio::test]
async fn tokens_identify_one_agent_each() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    let mut a = agent("a", [1, 0, 0, 0]);
    assert!(state.upsert_agent(&a, "test").await.unwrap());
    assert_eq!(
        state
            .agent_by_token(&a.token_sha256)
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    let mut b = agent("b", [1, 0, 0, 0]);
    b.token_sha256 = a.token_sha256.clone();
    assert!(
        state.upsert_agent(&b, "test").await.is_err(),
        "same token as a"
    );
    // A new token replaces the old one.
    let old = a.token_sha256.clone();
    a.token_sha256 = "f".repeat(64);
    assert!(!state.upsert_agent(&a, "test").await.unwrap());
    assert_eq!(state.agent_by_token(&old).await.unwrap(), None);
    assert_eq!(
        state
            .agent_by_token(&a.token_sha256)
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
}

#[tokio::test]
async fn a_customer_who_leaves_is_abandoned_and_a_held_contact_released() {
    let (_redis, state, token) = leading().await;
    online(&state, "a1", [0, 0, 0, 1]).await;
    let retention = Duration::from_secs(3600);

    // Waiting: out of the queue, never offered again.
    let w = waiting(&state, ChannelKind::Voice).await;
    assert_eq!(
        state
            .end_by_channel(
                &w,
                NOW + 5,
                "abandoned",
                0,
                retention,
                Duration::from_secs(600)
            )
            .await
            .unwrap(),
        "abandoned"
    );
    assert!(state.waiting().await.unwrap().is_empty());
    assert_eq!(
        state.offer(&offer(&token, &w, "a1")).await.unwrap(),
        "not_waiting"
    );

    // Offered: the offer is withdrawn and the agent's voice load freed.
    let o = waiting(&state, ChannelKind::Voice).await;
    assert_eq!(state.offer(&offer(&token, &o, "a1")).await.unwrap(), "ok");
    assert_eq!(state.agent("a1").await.unwrap().unwrap().1.loads[3], 1);
    assert_eq!(
        state
            .end_by_channel(
                &o,
                NOW + 6,
                "abandoned",
                0,
                retention,
                Duration::from_secs(600)
            )
            .await
            .unwrap(),
        "abandoned"
    );
    assert_eq!(state.agent("a1").await.unwrap().unwrap().1.loads[3], 0);
    assert!(state.held("a1").await.unwrap().is_empty());
    assert!(
        state
            .due_offers(NOW + 100_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Neither remembers an agent: nobody had the customer yet.
    assert_eq!(state.sticky_agent("visitor:1").await.unwrap(), None);

    // Assigned: closed by the channel, the agent in wrap-up.
    let a = waiting(&state, ChannelKind::Voice).await;
    assert_eq!(state.offer(&offer(&token, &a, "a1")).await.unwrap(), "ok");
    assert_eq!(
        state
            .answer(Answer::Accept, &a, "a1", NOW + 7, 1)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        state
            .end_by_channel(
                &a,
                NOW + 60_000,
                "completed",
                NOW + 90_000,
                retention,
                Duration::from_secs(600)
            )
            .await
            .unwrap(),
        "closed"
    );
    let (_, live) = state.agent("a1").await.unwrap().unwrap();
    assert_eq!((live.loads[3], live.presence.as_str()), (0, "wrap_up"));
    // The caller who hung up is remembered for the agent who answered, as
    // an agent's close remembers them (it was not: a voice customer never
    // came back to their agent).
    assert_eq!(
        state.sticky_agent("visitor:1").await.unwrap().as_deref(),
        Some("a1")
    );
    let rec = state.route_record(&a).await.unwrap().unwrap();
    assert_eq!(rec.state, "closed");
    assert_eq!(
        state
            .end_by_channel(&a, NOW + 61_000, "completed", 0, retention, Duration::ZERO)
            .await
            .unwrap(),
        "already_closed"
    );
    // Not handed to routing yet: abandoned now, and the hand-off's enqueue
    // later does nothing.
    let early = ContactId::new(Partition(2));
    assert_eq!(
        state
            .end_by_channel(&early, NOW, "canceled", 0, retention, Duration::ZERO)
            .await
            .unwrap(),
        "abandoned"
    );
    let queued = state
        .enqueue(&NewRoute {
            contact: &early,
            queue: "general",
            channel: ChannelKind::Voice,
            priority: 0,
            since: NOW,
            now: NOW,
            rule: "",
            source: "web",
            customer: "visitor:1",
            sticky: None,
            sticky_memory: None,
            person: "",
        })
        .await
        .unwrap();
    assert!(!queued, "never queued after it was abandoned");
    assert_eq!(
        state.route_record(&early).await.unwrap().unwrap().state,
        "closed"
    );
}

/// A customer who writes again after their contact was closed (by the
/// agent, or abandoned through the channel) starts a new contact, routed
/// again; before that, messages join the open one.
#[tokio::test]
async fn a_message_after_the_close_starts_a_new_contact() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = common::intake_for(&store);
    let state = RoutingState::new(store.clone());
    let token = state
        .acquire_lease("one", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    online(&state, "a", [5, 0, 0, 0]).await;
    let route = |contact: ContactId| {
        let state = state.clone();
        async move {
            state
                .enqueue(&NewRoute {
                    contact: &contact,
                    queue: "general",
                    channel: ChannelKind::Chat,
                    priority: 0,
                    since: NOW,
                    now: NOW,
                    rule: "",
                    source: "website",
                    customer: "visitor:v1",
                    sticky: None,
                    sticky_memory: None,
                    person: "",
                })
                .await
                .unwrap();
            contact
        }
    };
    let first = intake
        .submit_event(common::event("v1", Some("m1"), "hello"))
        .await
        .unwrap();
    let again = intake
        .submit_event(common::event("v1", Some("m2"), "still there?"))
        .await
        .unwrap();
    assert_eq!(again.contact_id, first.contact_id, "joins the open contact");
    let c = route(first.contact_id).await;
    assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.answer(Answer::Accept, &c, "a", NOW, 2).await.unwrap(),
        "ok"
    );
    let retention = Duration::from_secs(60);
    let closed = state
        .close(&c, "a", NOW + 1, "solved", 0, retention, retention)
        .await
        .unwrap();
    assert_eq!(closed, "ok");

    let second = intake
        .submit_event(common::event("v1", Some("m3"), "one more question"))
        .await
        .unwrap();
    assert_eq!(second.outcome, switchboard_core::IntakeOutcome::Created);
    assert_ne!(second.contact_id, first.contact_id);
    assert_ne!(second.conversation_id, first.conversation_id);
    // A repeat of a message of the closed contact is still that contact's.
    let repeat = intake
        .submit_event(common::event("v1", Some("m1"), "hello"))
        .await
        .unwrap();
    assert_eq!(repeat.contact_id, first.contact_id);

    // Abandoned through the channel (the customer left while waiting).
    let waiting = route(second.contact_id).await;
    assert_eq!(
        state
            .end_by_channel(&waiting, NOW + 2, "abandoned", 0, retention, Duration::ZERO)
            .await
            .unwrap(),
        "abandoned"
    );
    let third = intake
        .submit_event(common::event("v1", Some("m4"), "hello again"))
        .await
        .unwrap();
    assert_ne!(third.contact_id, second.contact_id);
}

/// A requeue's own `reason` (why) and the agent's away reason travel
/// side by side in the event: readers get each right.
#[tokio::test]
async fn a_requeued_event_keeps_its_reason_apart_from_the_agents() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.answer(Answer::Accept, &c, "a", NOW, 3).await.unwrap(),
        "ok"
    );
    assert_eq!(
        state
            .set_presence("a", Some(("away", "lunch")), None, None)
            .await
            .unwrap(),
        "ok"
    );
    let before = state.last_event_id().await.unwrap();
    assert_eq!(
        state
            .requeue(&c, "a", NOW + 1, None, "transfer", None)
            .await
            .unwrap(),
        "ok"
    );
    let mut conn = state.event_reader(Duration::from_millis(100)).unwrap();
    let events = state
        .read_events(&mut conn, &before, Duration::from_millis(100), 10)
        .await
        .unwrap();
    let requeued = events
        .iter()
        .find(|e| e.kind == "requeued")
        .expect("requeued");
    assert_eq!(requeued.fields["reason"], "transfer");
    let live = requeued.live.as_ref().expect("the agent's state");
    assert_eq!(
        (live.presence.as_str(), live.reason.as_str()),
        ("away", "lunch")
    );
    let rec = requeued.record.as_ref().expect("the record");
    assert_eq!(rec.state, "waiting");
}

/// A decline or a miss keeps the agent from the contact only for the
/// offer's `exclusion`, counted from the contact's latest exclusion: then
/// every agent it excluded may be offered it again (a contact the whole
/// team declined was stranded until the customer gave up).
#[tokio::test]
async fn exclusions_lapse_together_after_the_latest() {
    let (redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await;
    online(&state, "b", [2, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    let at = |agent: &'static str, now: u64, exclusion: u64| Offer {
        now,
        exclusion: Duration::from_millis(exclusion),
        ..offer(&token, &c, agent)
    };
    assert_eq!(state.offer(&at("a", NOW, 0)).await.unwrap(), "ok");
    assert_eq!(
        state
            .answer(Answer::Decline, &c, "a", NOW + 10, 3)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(state.offer(&at("b", NOW + 20, 0)).await.unwrap(), "ok");
    assert_eq!(
        state
            .answer(Answer::Expire, &c, "b", NOW + 40_000, 3)
            .await
            .unwrap(),
        "ok"
    );
    let rec = state.route_record(&c).await.unwrap().expect("record");
    assert_eq!(rec.excluded, ["a", "b"]);
    assert_eq!(rec.excluded_at, NOW + 40_000);
    // a declined 40 s before b missed it: both wait for b's 60 s.
    assert_eq!(
        state.offer(&at("a", NOW + 90_000, 60_000)).await.unwrap(),
        "declined_before"
    );
    // Without a lapse (0), never again.
    assert_eq!(
        state.offer(&at("a", NOW + 200_000, 0)).await.unwrap(),
        "declined_before"
    );
    assert_eq!(
        state.offer(&at("a", NOW + 100_000, 60_000)).await.unwrap(),
        "ok"
    );
    // The lapsed exclusions are forgotten: a's new decline excludes a
    // alone, not b again with it (nor a twice).
    assert_eq!(
        state
            .answer(Answer::Decline, &c, "a", NOW + 110_000, 3)
            .await
            .unwrap(),
        "ok"
    );
    let rec = state.route_record(&c).await.unwrap().expect("record");
    assert_eq!(rec.excluded, ["a"]);
    assert_eq!(
        state.offer(&at("a", NOW + 110_001, 60_000)).await.unwrap(),
        "declined_before"
    );
    assert_eq!(
        state.offer(&at("b", NOW + 110_001, 60_000)).await.unwrap(),
        "ok"
    );
    assert_eq!(
        state
            .answer(Answer::Decline, &c, "b", NOW + 120_000, 3)
            .await
            .unwrap(),
        "ok"
    );
    // Exclusions without a time (an older version's) never lapse.
    let mut conn = common::raw(&redis).await;
    let _: () = redis::cmd("HDEL")
        .arg(state.store().keys().route_contact(&c))
        .arg("excluded_at")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        state.offer(&at("a", NOW + 900_000, 60_000)).await.unwrap(),
        "declined_before"
    );
}

#[tokio::test]
async fn a_transfer_to_an_agent_who_declined_before_asks_them_again() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await;
    online(&state, "b", [2, 0, 0, 0]).await;
    online(&state, "x", [2, 0, 0, 0]).await;
    let c = waiting(&state, ChannelKind::Chat).await;
    for declines in ["b", "x"] {
        assert_eq!(
            state.offer(&offer(&token, &c, declines)).await.unwrap(),
            "ok"
        );
        assert_eq!(
            state
                .answer(Answer::Decline, &c, declines, NOW, 3)
                .await
                .unwrap(),
            "ok"
        );
    }
    assert_eq!(
        state.offer(&offer(&token, &c, "b")).await.unwrap(),
        "declined_before"
    );
    assert_eq!(state.offer(&offer(&token, &c, "a")).await.unwrap(), "ok");
    assert_eq!(
        state.answer(Answer::Accept, &c, "a", NOW, 3).await.unwrap(),
        "ok"
    );
    // a sends it to b by name: b is asked, x still is not.
    assert_eq!(
        state
            .requeue(
                &c,
                "a",
                NOW + 1,
                None,
                "transfer",
                Some(("b", NOW + 60_000))
            )
            .await
            .unwrap(),
        "ok"
    );
    let rec = state.route_record(&c).await.unwrap().expect("record");
    assert_eq!(rec.sticky, "b");
    assert!(!rec.sticky_remembered, "a transfer's target is not checked");
    // a worked on it until now: idle from the transfer ("longest idle"
    // ranked them idle since before it).
    let (_, live) = state.agent("a").await.unwrap().unwrap();
    assert_eq!((live.loads, live.idle_since), ([0; 4], NOW + 1));
    assert_eq!(rec.excluded, ["x"]);
    assert_eq!(
        state.offer(&offer(&token, &c, "x")).await.unwrap(),
        "declined_before"
    );
    assert_eq!(state.offer(&offer(&token, &c, "b")).await.unwrap(), "ok");
}

#[tokio::test]
async fn an_end_only_while_waiting_leaves_an_offered_contact_alone() {
    let (_redis, state, token) = leading().await;
    online(&state, "a1", [2, 0, 0, 0]).await;
    let retention = Duration::from_secs(3600);
    // Offered meanwhile (its queue opened): the after-hours end is too late.
    let o = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(state.offer(&offer(&token, &o, "a1")).await.unwrap(), "ok");
    assert_eq!(
        state
            .end_if_waiting(&o, NOW + 5, "after_hours", retention, None, None)
            .await
            .unwrap(),
        "not_waiting"
    );
    assert_eq!(
        state.route_record(&o).await.unwrap().expect("record").state,
        "offered"
    );
    assert_eq!(state.agent("a1").await.unwrap().unwrap().1.loads[0], 1);
    // Decided by a leader that lost the lease since (it was paused, and
    // may have missed the contact's transfer to an open queue): refused.
    let w = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(
        state
            .end_if_waiting(&w, NOW + 6, "after_hours", retention, Some("0:stale"), None)
            .await
            .unwrap(),
        "fenced"
    );
    assert_eq!(
        state.route_record(&w).await.unwrap().expect("record").state,
        "waiting"
    );
    // Still waiting, decided by the leader: ended.
    assert_eq!(
        state
            .end_if_waiting(&w, NOW + 6, "after_hours", retention, Some(&token), None)
            .await
            .unwrap(),
        "abandoned"
    );
    assert_eq!(
        state.offer(&offer(&token, &w, "a1")).await.unwrap(),
        "not_waiting"
    );
    // Closed by the business's hours, not left by the customer: no
    // abandon in the KPIs (it lowered the service level).
    assert_eq!(kpi_kinds(&state, &w).await, ["enqueued"]);
    // Decided on the queue it was placed in (the hand-off handled again),
    // while it now waits in another (transferred there meanwhile): left
    // alone. It was ended as after hours while waiting in an open queue.
    let moved = waiting_in(&state, ChannelKind::Chat, "billing", 0).await;
    assert_eq!(
        state
            .end_if_waiting(
                &moved,
                NOW + 7,
                "after_hours",
                retention,
                None,
                Some("general")
            )
            .await
            .unwrap(),
        "not_waiting"
    );
    assert_eq!(
        state
            .route_record(&moved)
            .await
            .unwrap()
            .expect("record")
            .state,
        "waiting"
    );
    assert_eq!(
        state
            .end_if_waiting(
                &moved,
                NOW + 7,
                "after_hours",
                retention,
                None,
                Some("billing")
            )
            .await
            .unwrap(),
        "abandoned"
    );
}

/// A contact answered, put back in its queue (its agent's session ended),
/// then left by the customer while it waited again: it was answered, so
/// the KPIs do not count it abandoned as well (one contact was both, and
/// its queue's abandonment rate and service level were off).
#[tokio::test]
async fn an_answered_contact_left_after_a_requeue_is_not_also_abandoned() {
    let (_redis, state, token) = leading().await;
    online(&state, "a1", [2, 0, 0, 0]).await;
    let c = accepted(&state, &token, "a1").await;
    assert_eq!(
        state
            .requeue(&c, "a1", NOW + 10, None, "agent_disconnected", None)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(left(&state, &c, NOW + 20).await, "abandoned");
    assert_eq!(kpi_kinds(&state, &c).await, ["enqueued", "answered"]);
}

/// A contact put back because its channel cannot reach the agent it was
/// assigned to (a call, no phone) leaves that agent out from then on, and
/// enters its queue again in the KPIs: nobody answered the customer, so
/// hanging up now counts as abandoned.
#[tokio::test]
async fn an_unreachable_agents_contact_enters_its_queue_again_without_them() {
    let (_redis, state, token) = leading().await;
    online(&state, "a1", [2, 0, 0, 0]).await;
    let c = accepted(&state, &token, "a1").await;
    assert_eq!(
        state.requeue_unreachable(&c, "a1", NOW + 10).await.unwrap(),
        "ok"
    );
    let rec = state.route_record(&c).await.unwrap().unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.excluded.clone()),
        ("waiting", vec!["a1".to_owned()])
    );
    assert_eq!(
        state.requeue_unreachable(&c, "a1", NOW + 11).await.unwrap(),
        "not_held"
    );
    assert_eq!(left(&state, &c, NOW + 20).await, "abandoned");
    assert_eq!(
        kpi_kinds(&state, &c).await,
        ["enqueued", "answered", "enqueued", "abandoned"]
    );
}

/// The customer left (`end_by_channel`, reason `left`) at `now`: its outcome.
async fn left(state: &RoutingState, c: &ContactId, now: u64) -> String {
    state
        .end_by_channel(c, now, "left", 0, Duration::from_secs(3600), Duration::ZERO)
        .await
        .unwrap()
}

/// The kinds of the KPI facts recorded for contact `c`, in order.
async fn kpi_kinds(state: &RoutingState, c: &ContactId) -> Vec<String> {
    let facts = switchboard_store::Records::new(state.store().clone())
        .kpi_facts("-", 100)
        .await
        .unwrap();
    facts
        .iter()
        .filter(|f| f.fields.get("c") == Some(&c.to_string()))
        .filter_map(|f| f.fields.get("k").cloned())
        .collect()
}

/// A contact from the intake, handed to routing, offered to and accepted by
/// `agent`.
async fn assigned_from_intake(
    state: &RoutingState,
    intake: &switchboard_store::RedisIntake,
    token: &str,
    customer: &str,
    agent: &str,
) -> ContactId {
    let receipt = intake
        .submit_event(event(customer, None, "hello"))
        .await
        .unwrap();
    let c = receipt.contact_id;
    let who = format!("visitor:{customer}");
    let route = NewRoute {
        contact: &c,
        queue: "general",
        channel: ChannelKind::Chat,
        priority: 0,
        since: NOW,
        now: NOW,
        rule: "",
        source: "website",
        customer: &who,
        sticky: None,
        sticky_memory: None,
        person: "",
    };
    assert!(state.enqueue(&route).await.unwrap());
    offer_and_accept(state, token, &c, agent).await;
    c
}

/// Makes the customer's open-conversation key unusable (a hash instead
/// of a string), so that ending their conversation fails; its value, for
/// [`mend_open`].
async fn break_open(conn: &mut redis::aio::MultiplexedConnection, open: &str) -> String {
    let kept: String = redis::AsyncCommands::get(conn, open).await.unwrap();
    let _: () = redis::AsyncCommands::del(conn, open).await.unwrap();
    let _: () = redis::AsyncCommands::hset(conn, open, "x", "1")
        .await
        .unwrap();
    kept
}

/// Puts the open-conversation key back as it was.
async fn mend_open(conn: &mut redis::aio::MultiplexedConnection, open: &str, kept: String) {
    let _: () = redis::AsyncCommands::del(conn, open).await.unwrap();
    let _: () = redis::AsyncCommands::set(conn, open, kept).await.unwrap();
}

/// The open-conversation key, once the conversation has ended: none.
async fn open_left(conn: &mut redis::aio::MultiplexedConnection, open: &str) -> Option<String> {
    redis::AsyncCommands::get(conn, open).await.unwrap()
}

/// A close whose conversation cannot be ended first is refused (an error,
/// the contact still assigned), not made with the conversation left open:
/// the customer's next messages would join a closed contact, never routed.
#[tokio::test]
async fn a_close_is_refused_when_its_conversation_cannot_be_ended() {
    let (redis, state, token) = leading().await;
    let store = state.store().clone();
    let intake = intake_for(&store);
    online(&state, "a1", [3, 0, 0, 0]).await;
    let c = assigned_from_intake(&state, &intake, &token, "stuck", "a1").await;
    let customer = event("stuck", None, "").customer;
    let k = store.keys();
    let open = k.open_conversation(k.partition_of("website", &customer), "website", &customer);
    let mut conn = common::raw(&redis).await;
    let kept = break_open(&mut conn, &open).await;
    let day = Duration::from_secs(86_400);
    let close = || state.close(&c, "a1", NOW + 1, "solved", 0, day, day);
    assert!(close().await.is_err());
    let rec = state.route_record(&c).await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.agent.as_str()), ("assigned", "a1"));
    // Once it can, the retried close does both.
    mend_open(&mut conn, &open, kept).await;
    assert_eq!(close().await.unwrap(), "ok");
    assert_eq!(
        open_left(&mut conn, &open).await,
        None,
        "no longer the customer's open conversation"
    );
}

/// The same for a contact its channel ends (a call hung up, the intake
/// API's end): refused while its conversation cannot be ended, and an end
/// decided for a waiting contact (after hours) that ran routing's script
/// before the conversation failed is finished by its retry.
#[tokio::test]
async fn a_channel_end_is_refused_when_its_conversation_cannot_be_ended() {
    let (redis, state, token) = leading().await;
    let store = state.store().clone();
    let intake = intake_for(&store);
    online(&state, "a1", [3, 0, 0, 0]).await;
    let c = assigned_from_intake(&state, &intake, &token, "hung-up", "a1").await;
    let k = store.keys();
    let open_of = |who: &str| {
        let customer = event(who, None, "").customer;
        k.open_conversation(k.partition_of("website", &customer), "website", &customer)
    };
    let mut conn = common::raw(&redis).await;
    let open = open_of("hung-up");
    let kept = break_open(&mut conn, &open).await;
    let day = Duration::from_secs(86_400);
    let end = || state.end_by_channel(&c, NOW + 1, "completed", 0, day, Duration::ZERO);
    assert!(end().await.is_err());
    let rec = state.route_record(&c).await.unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.agent.as_str()), ("assigned", "a1"));
    mend_open(&mut conn, &open, kept).await;
    assert_eq!(end().await.unwrap(), "closed");
    assert_eq!(
        open_left(&mut conn, &open).await,
        None,
        "no longer the customer's open conversation"
    );

    // A waiting contact ended after hours: routing's script runs first.
    let w = intake
        .submit_event(event("night", Some("night-1"), "hello?"))
        .await
        .unwrap();
    let open = open_of("night");
    let kept = break_open(&mut conn, &open).await;
    let end_waiting =
        || state.end_if_waiting(&w.contact_id, NOW + 2, "after_hours", day, None, None);
    assert!(end_waiting().await.is_err());
    mend_open(&mut conn, &open, kept).await;
    assert_eq!(end_waiting().await.unwrap(), "already_closed");
    assert_eq!(
        open_left(&mut conn, &open).await,
        None,
        "the retry ended the conversation"
    );
}

/// Closing ends the contact's conversation, so that the customer's next
/// message is a new contact (routed), also when the close is retried after
/// its first answer was lost; an agent who does not hold the contact ends
/// nothing.
#[tokio::test]
async fn a_close_ends_the_conversation_even_when_retried() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let state = RoutingState::new(store.clone());
    let intake = intake_for(&store);
    let token = state
        .acquire_lease("one", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    online(&state, "a1", [3, 0, 0, 0]).await;
    online(&state, "b1", [3, 0, 0, 0]).await;
    let day = Duration::from_secs(86_400);
    let next = |customer: &'static str, id: &'static str| {
        let intake = intake.clone();
        async move {
            intake
                .submit_event(event(customer, Some(id), "me again"))
                .await
                .unwrap()
                .contact_id
        }
    };

    // The close script ran, its answer was lost: the retry ends the
    // conversation.
    let c = assigned_from_intake(&state, &intake, &token, "retry", "a1").await;
    let k = store.keys();
    let script = redis::Script::new(concat!(
        include_str!("../src/lua/route/common.lua"),
        "\n",
        include_str!("../src/lua/route/close.lua")
    ));
    let mut conn = common::raw(&redis).await;
    let out: String = script
        .key(k.route_contact(&c))
        .key(k.route_agent("a1"))
        .key(k.route_held("a1"))
        .key(k.route("events"))
        .arg(c.to_string())
        .arg("a1")
        .arg(NOW + 1)
        .arg("done")
        .arg(0)
        .arg(86_400)
        .arg(86_400)
        .arg(1000)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(out, "ok");
    assert_eq!(
        state
            .close(&c, "a1", NOW + 2, "done", 0, day, day)
            .await
            .unwrap(),
        "not_assigned"
    );
    assert_ne!(next("retry", "r2").await, c, "a new contact");

    // Someone else's contact, or one only offered: nothing ends.
    let held = assigned_from_intake(&state, &intake, &token, "held", "a1").await;
    assert_eq!(
        state
            .close(&held, "b1", NOW + 3, "done", 0, day, day)
            .await
            .unwrap(),
        "not_assigned"
    );
    assert_eq!(next("held", "h2").await, held, "still the same contact");
}

/// A close that loses a race with a transfer (refused: the contact is no
/// longer the agent's) leaves the customer's conversation open: their next
/// message joins the contact the next agent holds. The conversation was
/// ended before the close was refused, and stayed ended. Many rounds of
/// the race, one side or the other delayed by up to 6 round trips
/// (`stagger`) so that each side wins some; each must leave the conversation open or the
/// contact closed. (Found by a review.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_loses_to_a_transfer_leaves_the_conversation_open() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = common::intake_for(&store);
    let conversations = switchboard_store::Conversations::new(store.clone());
    let state = RoutingState::new(store.clone());
    let token = state
        .acquire_lease("one", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    online(&state, "a", [200, 0, 0, 0]).await;
    let day = Duration::from_secs(86_400);
    let (mut raw_a, mut raw_b) = (common::raw(&redis).await, common::raw(&redis).await);
    let mut refused = 0;
    for round in 0..150 {
        let visitor = format!("v{round}");
        let c = assigned_from_intake(&state, &intake, &token, &visitor, "a").await;
        let (late, early) = stagger(round);
        let (closed, moved) = tokio::join!(
            async {
                round_trips(&mut raw_a, early).await;
                state.close(&c, "a", NOW + 1, "done", 0, day, day).await
            },
            async {
                round_trips(&mut raw_b, late).await;
                state
                    .requeue(&c, "a", NOW + 1, None, "transfer", None)
                    .await
            }
        );
        let (closed, moved) = (closed.unwrap(), moved.unwrap());
        let customer = switchboard_core::CustomerIdentity::new("visitor", &visitor).unwrap();
        let open = conversations
            .open_conversation("website", &customer)
            .await
            .unwrap()
            .map(|(_, contact)| contact);
        if closed == "ok" {
            assert_ne!(moved, "ok", "round {round}: both won");
            assert_eq!(open, None, "round {round}: closed, so not open");
        } else {
            refused += 1;
            assert_eq!(moved, "ok", "round {round}: neither won");
            assert_eq!(
                open,
                Some(c),
                "round {round}: the close was refused ({closed}, transfer {moved}), the conversation must stay the open one"
            );
        }
    }
    // The refused close happened (otherwise the test proved nothing; the
    // transfer usually wins: the close ends the conversation first).
    assert!(refused > 0, "no close lost the race in 150 rounds");
    assert!(refused < 150, "no close won the race in 150 rounds");

    // Against the channel ending the contact (the visitor left): whoever
    // wins, the contact is closed and its conversation must stay ended
    // (reopening it would send the customer's next message to a closed
    // contact, never routed).
    let mut lost = 0;
    for round in 150..300 {
        let visitor = format!("v{round}");
        let c = assigned_from_intake(&state, &intake, &token, &visitor, "a").await;
        let (late, early) = stagger(round);
        let (closed, ended) = tokio::join!(
            async {
                round_trips(&mut raw_a, late).await;
                state.close(&c, "a", NOW + 1, "done", 0, day, day).await
            },
            async {
                round_trips(&mut raw_b, early).await;
                state
                    .end_by_channel(&c, NOW + 1, "left", 0, day, Duration::ZERO)
                    .await
            }
        );
        let (closed, ended) = (closed.unwrap(), ended.unwrap());
        if closed != "ok" {
            lost += 1;
        }
        let customer = switchboard_core::CustomerIdentity::new("visitor", &visitor).unwrap();
        let open = conversations
            .open_conversation("website", &customer)
            .await
            .unwrap();
        assert_eq!(
            open, None,
            "round {round}: close {closed}, channel {ended}: the contact is closed, its conversation must be ended"
        );
    }
    assert!(lost > 0, "the channel never won the race in 150 rounds");
    assert!(lost < 150, "the close never won the race in 150 rounds");
}

/// How many Redis round trips to delay each side of a race in `round`:
/// (0, 6) to (6, 0). Both sides take several round trips (close 3 before
/// its script, end_by_channel 4, requeue none), so which script runs first
/// depends on where their steps fall; started together they move in
/// lockstep and one side always wins (it did, on a CI machine: the channel
/// never beat the close). A wide stagger either way makes every
/// interleaving happen, with a margin of several round trips.
fn stagger(round: usize) -> (usize, usize) {
    let n = round % 13;
    (n.saturating_sub(6), 6usize.saturating_sub(n))
}

/// Delays one side of a race by `n` Redis round trips.
async fn round_trips(raw: &mut redis::aio::MultiplexedConnection, n: usize) {
    for _ in 0..n {
        let _: String = redis::cmd("PING").query_async(raw).await.unwrap();
    }
}

/// An agent is online while any holder keeps a session (one instance's
/// sockets, another's, heartbeats): one ending leaves the others in force,
/// and the last ending takes the agent offline at once.
#[tokio::test]
async fn an_agents_session_lasts_while_any_holder_keeps_it() {
    let redis = RedisServer::start();
    let state = RoutingState::new(store_for(&redis, 4));
    state
        .upsert_agent(&agent("a", [1, 0, 0, 0]), "test")
        .await
        .unwrap();
    let now = || switchboard_core::Timestamp::now().as_millis();
    let until = || async { state.agent("a").await.unwrap().unwrap().1.online_until };
    let keep = |holder: &'static str, until: u64| {
        let state = state.clone();
        async move { state.keep_session("a", holder, until).await.unwrap() }
    };
    assert_eq!(keep("ws:x", now() + 30_000).await, "ok");
    assert_eq!(keep("http", now() + 20_000).await, "ok");
    assert!(
        until().await >= now() + 25_000,
        "the latest holder's deadline"
    );
    keep("ws:x", now()).await;
    let left = until().await;
    assert!(
        left > now() + 15_000 && left <= now() + 20_000,
        "the heartbeat's deadline is left: {left}"
    );
    keep("http", now()).await;
    assert!(until().await <= now(), "the last holder gone: offline");
    // A holder whose deadline passed without an end is pruned.
    keep("ws:y", now() + 300).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    keep("ws:x", now() + 10_000).await;
    keep("ws:x", now()).await;
    assert!(
        until().await <= now(),
        "ws:y lapsed; nobody holds a session"
    );
    assert_eq!(
        state
            .keep_session("nobody", "ws:x", now() + 1_000)
            .await
            .unwrap(),
        "unknown_agent"
    );
}

/// What the leader's sweep does to an agent whose session lapsed is checked
/// again in the scripts: a leader whose view is old (paused, deposed) or
/// who raced the agent's return takes nothing from an agent who is back.
/// An offer is revoked only while the session is over or the agent is away
/// or offline, and an assigned contact goes back only once the grace after
/// the session's end has passed. A requeue never takes back an offer.
#[tokio::test]
async fn a_lapsed_sessions_contacts_are_taken_back_only_while_it_is_over() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await; // online until NOW + 1 h
    let offered = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(
        state.offer(&offer(&token, &offered, "a")).await.unwrap(),
        "ok"
    );
    let assigned = accepted(&state, &token, "a").await;
    // A transfer-style requeue of the offer: refused (an offer is answered,
    // not transferred).
    assert_eq!(
        state
            .requeue(&offered, "a", NOW, None, "transfer", None)
            .await
            .unwrap(),
        "not_held"
    );
    // The agent is online: a stale sweep takes nothing.
    assert_eq!(
        state
            .answer(Answer::Revoke, &offered, "a", NOW, 0)
            .await
            .unwrap(),
        "online"
    );
    assert_eq!(
        state
            .requeue_lapsed(&assigned, "a", NOW, 30_000)
            .await
            .unwrap(),
        "online"
    );
    // The session ended at NOW + 1 h: within the grace, the assigned
    // contact stays; after it, it goes back.
    let ended = NOW + 3_600_000;
    assert_eq!(
        state
            .requeue_lapsed(&assigned, "a", ended + 10_000, 30_000)
            .await
            .unwrap(),
        "online"
    );
    assert_eq!(
        state
            .requeue_lapsed(&assigned, "a", ended + 30_000, 30_000)
            .await
            .unwrap(),
        "ok"
    );
    // Away while online: the offer may be taken back, and the agent is
    // not barred from it.
    state
        .set_presence("a", Some(("away", "lunch")), None, None)
        .await
        .unwrap();
    assert_eq!(
        state
            .answer(Answer::Revoke, &offered, "a", NOW, 0)
            .await
            .unwrap(),
        "ok"
    );
    let rec = state.route_record(&offered).await.unwrap().expect("record");
    assert_eq!(rec.state, "waiting");
    assert!(rec.excluded.is_empty(), "{:?}", rec.excluded);
    assert!(state.held("a").await.unwrap().is_empty());
}

/// A close during the wrap-up of an earlier one restarts the wrap-up: the
/// agent gets the whole wrap-up time after the last close, not the rest
/// of the first one's.
#[tokio::test]
async fn a_close_during_wrap_up_starts_it_again() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(accepted(&state, &token, "a").await);
    }
    let keep = Duration::from_secs(60);
    let close = |c: ContactId, at: u64| {
        let state = state.clone();
        async move {
            state
                .close(&c, "a", at, "solved", at + 30_000, keep, keep)
                .await
                .unwrap()
        }
    };
    assert_eq!(close(held[0], NOW + 1_000).await, "ok");
    assert_eq!(close(held[1], NOW + 25_000).await, "ok");
    let (_, live) = state.agent("a").await.unwrap().unwrap();
    assert_eq!(
        (live.presence.as_str(), live.wrap_until),
        ("wrap_up", NOW + 55_000),
        "30 s after the second close"
    );
}

/// A transfer to another queue takes that queue's priority: the new
/// queue's less the old one's is added, the rule's part kept.
#[tokio::test]
async fn a_transfer_to_another_queue_changes_the_priority_by_the_queues_difference() {
    let (_redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 0]).await;
    // vip's 10 and a rule's 2.
    let c = waiting_in(&state, ChannelKind::Chat, "vip", 12).await;
    offer_and_accept(&state, &token, &c, "a").await;
    assert_eq!(
        state
            .requeue(&c, "a", NOW + 1, Some(("general", -10)), "transfer", None)
            .await
            .unwrap(),
        "ok"
    );
    let rec = state.route_record(&c).await.unwrap().unwrap();
    assert_eq!((rec.queue.as_str(), rec.priority), ("general", 2));
}

/// The newest event's id and number: a reader that starts there expects
/// the next event to be numbered one more (the leader's gap check from
/// its first event on).
#[tokio::test]
async fn the_last_event_gives_the_number_the_next_one_follows() {
    let (_redis, state, _token) = leading().await;
    assert_eq!(state.last_event().await.unwrap(), ("0-0".to_owned(), 0));
    online(&state, "a", [2, 0, 0, 0]).await;
    waiting(&state, ChannelKind::Chat).await;
    let (id, n) = state.last_event().await.unwrap();
    assert!(n > 0, "numbered");
    assert_eq!(id, state.last_event_id().await.unwrap());
    waiting(&state, ChannelKind::Chat).await;
    let mut conn = state.event_reader(Duration::from_millis(100)).unwrap();
    let events = state
        .read_events(&mut conn, &id, Duration::from_millis(100), 10)
        .await
        .unwrap();
    assert_eq!(events.first().map(|e| e.number()), Some(n + 1));
}

/// The occupancy facts of `agent`: (online, presence) in order.
async fn occupancy_of(state: &RoutingState, agent: &str) -> Vec<(String, String)> {
    let facts = switchboard_store::Records::new(state.store().clone())
        .kpi_facts("-", 100)
        .await
        .unwrap();
    facts
        .iter()
        .filter(|f| f.fields.get("k").map(String::as_str) == Some("agent"))
        .filter(|f| f.fields.get("ag").map(String::as_str) == Some(agent))
        .map(|f| (f.fields["o"].clone(), f.fields["p"].clone()))
        .collect()
}

/// A session that runs out with nothing held, and an agent retired from
/// the configuration, each end the agent's online time in the KPIs: no
/// other event records it, and occupancy counted them online and idle
/// until their next event.
#[tokio::test]
async fn a_lapsed_session_and_a_retirement_end_the_online_time() {
    let (_redis, state, _token) = leading().await;
    online(&state, "a1", [1, 0, 0, 0]).await;
    assert_eq!(
        occupancy_of(&state, "a1").await,
        [("1".to_owned(), "available".to_owned())]
    );
    let after = NOW + 3_600_000 + 1;
    state.record_lapse("a1", after).await.unwrap();
    state.record_lapse("a1", after + 1).await.unwrap();
    assert_eq!(
        occupancy_of(&state, "a1").await,
        [
            ("1".to_owned(), "available".to_owned()),
            ("0".to_owned(), "available".to_owned())
        ],
        "offline once"
    );

    state
        .upsert_agent(&agent("a2", [1, 0, 0, 0]), "config")
        .await
        .unwrap();
    state
        .set_presence("a2", Some(("available", "")), Some(NOW + 3_600_000), None)
        .await
        .unwrap();
    assert!(state.retire_agent("a2").await.unwrap());
    assert_eq!(
        occupancy_of(&state, "a2")
            .await
            .last()
            .map(|(o, _)| o.as_str()),
        Some("0")
    );
}

/// A retired agent's socket, still open until its token check closes it,
/// cannot bring it back: its session and presence changes are refused, and
/// it gets no offer. It used to be made available again, and offered work.
#[tokio::test]
async fn a_retired_agent_cannot_come_back_through_an_open_socket() {
    let (_redis, state, token) = leading().await;
    state
        .upsert_agent(&agent("a2", [1, 0, 0, 0]), "config")
        .await
        .unwrap();
    state
        .keep_session("a2", "i1", NOW + 3_600_000)
        .await
        .unwrap();
    state
        .set_presence("a2", Some(("available", "")), None, None)
        .await
        .unwrap();
    assert!(state.retire_agent("a2").await.unwrap());
    assert_eq!(
        state
            .keep_session("a2", "i1", NOW + 3_600_000)
            .await
            .unwrap(),
        "unknown_agent"
    );
    assert_eq!(
        state
            .set_presence("a2", Some(("available", "")), None, None)
            .await
            .unwrap(),
        "unknown_agent"
    );
    let (_, live) = state.agent("a2").await.unwrap().unwrap();
    assert_eq!(live.presence, "offline");
    assert!(live.online_until < NOW, "{}", live.online_until);
    let w = waiting(&state, ChannelKind::Chat).await;
    assert_ne!(state.offer(&offer(&token, &w, "a2")).await.unwrap(), "ok");
    // Named by the configuration again: back as before.
    state
        .upsert_agent(&agent("a2", [1, 0, 0, 0]), "config")
        .await
        .unwrap();
    assert_eq!(
        state
            .set_presence("a2", Some(("available", "")), Some(NOW + 3_600_000), None)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(state.offer(&offer(&token, &w, "a2")).await.unwrap(), "ok");
}

/// A transfer to another agent of the same queue is neither a transfer
/// (sent on to another queue) nor a new offer, and the next agent's accept
/// is not a second answer: the queue's figures count the contact once.
/// To another queue it is all three.
#[tokio::test]
async fn a_transfer_within_a_queue_counts_the_contact_once() {
    let (_redis, state, token) = leading().await;
    online(&state, "a1", [2, 0, 0, 0]).await;
    online(&state, "a2", [2, 0, 0, 0]).await;
    let c = accepted(&state, &token, "a1").await;
    assert_eq!(
        state
            .requeue(&c, "a1", NOW + 1, None, "transfer", None)
            .await
            .unwrap(),
        "ok"
    );
    offer_and_accept(&state, &token, &c, "a2").await;
    assert_eq!(kpi_kinds(&state, &c).await, ["enqueued", "answered"]);
    assert_eq!(
        state
            .requeue(&c, "a2", NOW + 2, Some(("sales", 0)), "transfer", None)
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        kpi_kinds(&state, &c).await,
        ["enqueued", "answered", "transferred", "enqueued"]
    );
    // Answered before: its entry into sales, and its answer there, are
    // marked (`x`): they count for sales, not again in the totals. So are
    // its entry again when the agent could not be reached, and its
    // abandonment after that.
    offer_and_accept(&state, &token, &c, "a1").await;
    assert_eq!(
        state.requeue_unreachable(&c, "a1", NOW + 3).await.unwrap(),
        "ok"
    );
    assert_eq!(left(&state, &c, NOW + 4).await, "abandoned");
    let marks: Vec<(String, String)> = switchboard_store::Records::new(state.store().clone())
        .kpi_facts("-", 100)
        .await
        .unwrap()
        .iter()
        .filter(|f| f.fields.get("c") == Some(&c.to_string()))
        .map(|f| {
            (
                f.fields.get("k").cloned().unwrap_or_default(),
                f.fields.get("x").cloned().unwrap_or_default(),
            )
        })
        .collect();
    let mark = |k: &str, x: &str| (k.to_owned(), x.to_owned());
    assert_eq!(
        marks,
        [
            mark("enqueued", ""),
            mark("answered", ""),
            mark("transferred", ""),
            mark("enqueued", "1"),
            mark("answered", "1"),
            mark("enqueued", "1"),
            mark("abandoned", "1"),
        ]
    );
}

/// Each queue's waiting contacts: the leader's published summary while it
/// is fresh, else counted from the waiting contacts (only those still
/// waiting: an offered one is not).
#[tokio::test]
async fn queue_summaries_come_from_the_leader_while_fresh() {
    use switchboard_store::QueueWaiting;
    let (_redis, state, token) = leading().await;
    online(&state, "olena", [1, 0, 0, 0]).await;
    waiting_in(&state, ChannelKind::Chat, "general", 0).await;
    waiting_in(&state, ChannelKind::Chat, "billing", 0).await;
    let offered = waiting_in(&state, ChannelKind::Chat, "billing", 0).await;
    assert_eq!(
        state
            .offer(&offer(&token, &offered, "olena"))
            .await
            .unwrap(),
        "ok"
    );
    let now = NOW + 10_000;
    // No summary: counted.
    let counted = state.waiting_by_queue(now).await.unwrap();
    let one = QueueWaiting {
        waiting: 1,
        oldest_queued_at: NOW,
    };
    assert_eq!(counted.get("general"), Some(&one));
    assert_eq!(counted.get("billing"), Some(&one));
    assert_eq!(one.longest_wait_ms(now), 10_000);
    // The leader's, while fresh.
    let published = QueueWaiting {
        waiting: 7,
        oldest_queued_at: NOW - 5_000,
    };
    let summary = [("general".to_owned(), published)].into_iter().collect();
    state.publish_queue_summary(now, summary).await.unwrap();
    let read = state.waiting_by_queue(now + 1_000).await.unwrap();
    assert_eq!(read.get("general"), Some(&published));
    assert_eq!(read.get("billing"), None);
    // Too old by the reader's clock: counted again.
    let read = state.waiting_by_queue(now + 6_000).await.unwrap();
    assert_eq!(read, counted);
}

/// A contact whose enqueue failed half-way (here the waiting set is of the
/// wrong type, as a stray key would make it) is queued by the routing
/// entry's retry. The contact's hash, which says "queued already", was
/// written first: the retry found it and left the contact out of the
/// waiting set for ever (Redis does not undo a script's earlier writes).
#[tokio::test]
async fn an_enqueue_that_failed_half_way_is_finished_by_the_retry() {
    let (redis, state, _) = leading().await;
    let waiting_key = state.store().keys().route("waiting");
    let mut conn = common::raw(&redis).await;
    let _: () = redis::AsyncCommands::set(&mut conn, &waiting_key, "not a set")
        .await
        .unwrap();
    let id = ContactId::new(Partition(1));
    let route = NewRoute {
        contact: &id,
        queue: "general",
        channel: ChannelKind::Chat,
        priority: 0,
        since: NOW,
        now: NOW,
        rule: "",
        source: "web",
        customer: "visitor:1",
        sticky: None,
        sticky_memory: None,
        person: "visitor:1",
    };
    assert!(state.enqueue(&route).await.is_err());
    let _: () = redis::AsyncCommands::del(&mut conn, &waiting_key)
        .await
        .unwrap();
    assert!(state.enqueue(&route).await.unwrap(), "queued by the retry");
    assert!(!state.enqueue(&route).await.unwrap(), "once");
    let waiting: Vec<String> = state
        .waiting()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.contact)
        .collect();
    assert_eq!(waiting, vec![id.to_string()]);
}

/// A chat offered before a call, accepted once the agent has the call, is
/// taken back (`on_call`) and waits for another agent, not for them: no
/// new work during a call unless its channel may interrupt one. A
/// channel that may is accepted as usual.
#[tokio::test]
async fn an_offer_accepted_during_a_call_is_taken_back() {
    let (redis, state, token) = leading().await;
    online(&state, "a", [2, 0, 0, 1]).await;
    let chat = waiting(&state, ChannelKind::Chat).await;
    assert_eq!(state.offer(&offer(&token, &chat, "a")).await.unwrap(), "ok");
    let call = waiting(&state, ChannelKind::Voice).await;
    offer_and_accept(&state, &token, &call, "a").await;
    // A run of missed offers (planted): the take-back, an answer, ends it.
    let mut raw = common::raw(&redis).await;
    let _: () = redis::cmd("HSET")
        .arg(state.store().keys().route_agent("a"))
        .arg("missed")
        .arg(2)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        state
            .answer(Answer::Accept, &chat, "a", NOW + 1, 3)
            .await
            .unwrap(),
        "on_call"
    );
    let rec = state.route_record(&chat).await.unwrap().unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.agent.as_str(), rec.excluded.len()),
        ("waiting", "", 0),
        "back in its queue, the agent not excluded"
    );
    let (_, live) = state.agent("a").await.unwrap().unwrap();
    assert_eq!(live.loads, [0, 0, 0, 1], "the chat's load released");
    let run: String = redis::cmd("HGET")
        .arg(state.store().keys().route_agent("a"))
        .arg("missed")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(run, "0", "an answer ends the run of missed offers");

    // Chat may interrupt: accepted.
    let state = state.with_interrupt_voice("chat");
    let mut o = offer(&token, &chat, "a");
    o.interrupt_voice = "chat";
    assert_eq!(state.offer(&o).await.unwrap(), "ok");
    assert_eq!(
        state
            .answer(Answer::Accept, &chat, "a", NOW + 2, 3)
            .await
            .unwrap(),
        "ok"
    );
}
