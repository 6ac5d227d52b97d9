//! The bookkeeping on its own, with a hand-driven clock.

use super::*;
use switchboard_core::{
    ChannelKind, ContactId, CustomerIdentity, OutboundMessage, Partition, Timestamp,
};

const WALL: u64 = 1_795_341_600_000;

fn limits() -> Limits {
    Limits {
        hold_budget: Duration::from_secs(40),
        send_window: Duration::from_secs(55),
        memory_wait_max: Duration::from_secs(10),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(60),
        give_up_after: Duration::from_secs(24 * 3600),
        max_attempts: 1000,
        visibility: Duration::from_secs(60),
        away_grace: Duration::from_secs(60),
        max_in_flight: 64,
        recent_capacity: 100,
    }
}

struct Clock(Instant);

impl Clock {
    fn at(&self, secs: f64) -> Now {
        Now {
            at: self.0 + Duration::from_secs_f64(secs),
            wall_ms: WALL + (secs * 1000.0) as u64,
        }
    }
}

fn conversation() -> ConversationId {
    ConversationId::new(Partition(0))
}

fn reply(conversation: ConversationId, text: &str) -> OutboundDelivery {
    OutboundDelivery {
        handle: format!("{text}-1"),
        attempt: 1,
        handouts: 1,
        message: OutboundMessage {
            message_id: MessageId::new(),
            contact_id: ContactId::new(Partition(0)),
            conversation_id: conversation,
            channel: ChannelKind::Social,
            source: "social".into(),
            from_address: "1001".into(),
            to: CustomerIdentity::new("messenger", "42").expect("identity"),
            subject: None,
            text: text.into(),
            in_reply_to: None,
            references: Vec::new(),
            created_at: Timestamp(WALL),
            automatic: false,
        },
    }
}

/// The same reply handed out again under a new handle (after a defer).
fn returned(d: &OutboundDelivery, n: u32) -> OutboundDelivery {
    OutboundDelivery {
        handle: format!("{}-{n}", d.message.text),
        attempt: n,
        handouts: 1,
        message: d.message.clone(),
    }
}

/// What the actions do, as short strings: `send a`, `defer a 30000`, `settle a failed`.
fn show(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send { delivery, .. } => format!("send {}", delivery.message.text),
            Action::Defer {
                delivery, delay, ..
            } => format!("defer {} {}", delivery.message.text, delay.as_millis()),
            Action::Settle { delivery, outcome } => format!(
                "settle {} {}",
                delivery.message.text,
                match outcome {
                    DeliveryOutcome::Delivered { .. } => "delivered",
                    DeliveryOutcome::Failed { .. } => "failed",
                }
            ),
        })
        .collect()
}

fn delivered() -> SendOutcome {
    SendOutcome::Delivered {
        provider_message_id: Some("m_1".into()),
    }
}

fn retry(after: Option<u64>) -> SendOutcome {
    SendOutcome::retry(after.map(Duration::from_secs), "HTTP 500")
}

fn sent(q: &mut Queues, d: &OutboundDelivery, outcome: SendOutcome, now: Now) -> Vec<String> {
    show(&q.sent(
        d.message.conversation_id,
        d.message.message_id,
        outcome,
        Progress::default(),
        now,
    ))
}

fn arrive(q: &mut Queues, d: &OutboundDelivery, clock: &Clock, secs: f64) -> Vec<String> {
    let now = clock.at(secs);
    show(&q.arrive(d.clone(), now.at, now))
}

#[test]
fn one_send_at_a_time_per_conversation_and_others_go_ahead() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let (a, b) = (conversation(), conversation());
    let (a1, a2, b1) = (reply(a, "a1"), reply(a, "a2"), reply(b, "b1"));
    assert_eq!(arrive(&mut q, &a1, &clock, 0.0), ["send a1"]);
    assert!(arrive(&mut q, &a2, &clock, 0.0).is_empty());
    assert_eq!(arrive(&mut q, &b1, &clock, 0.0), ["send b1"]);
    assert_eq!((q.in_memory(), q.in_flight()), (3, 2));
    assert_eq!(sent(&mut q, &a1, delivered(), clock.at(0.1)), ["send a2"]);
    assert!(sent(&mut q, &b1, delivered(), clock.at(0.1)).is_empty());
    assert!(sent(&mut q, &a2, delivered(), clock.at(0.2)).is_empty());
    assert_eq!((q.in_memory(), q.in_flight()), (0, 0));
    assert!(q.convs.is_empty());
}

#[test]
fn a_short_wait_is_spent_in_memory_and_holds_the_conversation() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a = conversation();
    let (a1, a2) = (reply(a, "a1"), reply(a, "a2"));
    arrive(&mut q, &a1, &clock, 0.0);
    arrive(&mut q, &a2, &clock, 0.0);
    assert!(sent(&mut q, &a1, retry(Some(2)), clock.at(0.1)).is_empty());
    assert!(show(&q.tick(clock.at(1.0))).is_empty());
    assert_eq!(show(&q.tick(clock.at(2.2))), ["send a1"]);
    assert_eq!(sent(&mut q, &a1, delivered(), clock.at(2.3)), ["send a2"]);
}

#[test]
fn a_long_wait_goes_back_to_the_outbox_and_the_reply_keeps_its_place() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let (a, b) = (conversation(), conversation());
    let (a1, a2, b1) = (reply(a, "a1"), reply(a, "a2"), reply(b, "b1"));
    arrive(&mut q, &a1, &clock, 0.0);
    arrive(&mut q, &a2, &clock, 0.0);
    assert_eq!(
        sent(&mut q, &a1, retry(Some(30)), clock.at(0.0)),
        ["defer a1 30000"]
    );
    assert_eq!(q.in_memory(), 1);
    // Another conversation is not held up.
    assert_eq!(arrive(&mut q, &b1, &clock, 1.0), ["send b1"]);
    // a1 comes back under a new handle; it goes first, then a2.
    assert_eq!(arrive(&mut q, &returned(&a1, 2), &clock, 30.0), ["send a1"]);
    assert_eq!(sent(&mut q, &a1, delivered(), clock.at(30.1)), ["send a2"]);
}

#[test]
fn a_backoff_without_retry_after_grows() {
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.memory_wait_max = Duration::ZERO;
    let mut q = Queues::new(limits, Memory::default());
    let a1 = reply(conversation(), "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    let first = q.sent(
        a1.message.conversation_id,
        a1.message.message_id,
        retry(None),
        Progress::default(),
        clock.at(0.0),
    );
    let Some(Action::Defer { delay, .. }) = first.first() else {
        panic!("not deferred: {first:?}");
    };
    assert!(*delay >= Duration::from_millis(500) && *delay <= Duration::from_secs(1));
    assert_eq!(arrive(&mut q, &returned(&a1, 2), &clock, 2.0), ["send a1"]);
    let second = q.sent(
        a1.message.conversation_id,
        a1.message.message_id,
        retry(None),
        Progress::default(),
        clock.at(2.0),
    );
    let Some(Action::Defer { delay, .. }) = second.first() else {
        panic!("not deferred: {second:?}");
    };
    assert!(*delay >= Duration::from_secs(1) && *delay <= Duration::from_secs(2));
}

#[test]
fn replies_behind_an_absent_head_leave_memory_before_the_visibility_timeout() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a = conversation();
    let (a1, a2, a3) = (reply(a, "a1"), reply(a, "a2"), reply(a, "a3"));
    arrive(&mut q, &a1, &clock, 0.0);
    arrive(&mut q, &a2, &clock, 0.0);
    arrive(&mut q, &a3, &clock, 5.0);
    assert_eq!(
        sent(&mut q, &a1, retry(Some(120)), clock.at(0.0)),
        ["defer a1 120000"]
    );
    assert!(show(&q.tick(clock.at(39.0))).is_empty());
    // a2's hold budget (40 s) is up: it is due just after a1; a3 stays.
    assert_eq!(show(&q.tick(clock.at(40.0))), ["defer a2 80010"]);
    assert_eq!(show(&q.tick(clock.at(45.0))), ["defer a3 75020"]);
    assert_eq!(q.in_memory(), 0);
    // They come back in any order; they are sent in theirs.
    assert!(arrive(&mut q, &returned(&a3, 2), &clock, 120.0).is_empty());
    assert!(arrive(&mut q, &returned(&a2, 2), &clock, 120.0).is_empty());
    assert_eq!(
        arrive(&mut q, &returned(&a1, 2), &clock, 120.0),
        ["send a1"]
    );
    assert_eq!(sent(&mut q, &a1, delivered(), clock.at(120.1)), ["send a2"]);
    assert_eq!(sent(&mut q, &a2, delivered(), clock.at(120.2)), ["send a3"]);
}

#[test]
fn a_head_that_waited_too_long_in_memory_is_handed_back_instead_of_sent() {
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.max_in_flight = 1;
    let mut q = Queues::new(limits, Memory::default());
    let (a1, b1) = (reply(conversation(), "a1"), reply(conversation(), "b1"));
    assert_eq!(arrive(&mut q, &a1, &clock, 0.0), ["send a1"]);
    // b1 waits for a send slot until its hold budget is gone.
    assert!(arrive(&mut q, &b1, &clock, 0.0).is_empty());
    assert_eq!(show(&q.tick(clock.at(40.0))), ["defer b1 0"]);
    assert!(sent(&mut q, &a1, delivered(), clock.at(41.0)).is_empty());
    assert_eq!(arrive(&mut q, &returned(&b1, 2), &clock, 41.0), ["send b1"]);
}

#[test]
fn the_in_flight_limit_holds_across_conversations() {
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.max_in_flight = 1;
    let mut q = Queues::new(limits, Memory::default());
    let (a1, b1) = (reply(conversation(), "a1"), reply(conversation(), "b1"));
    assert_eq!(arrive(&mut q, &a1, &clock, 0.0), ["send a1"]);
    assert!(arrive(&mut q, &b1, &clock, 0.0).is_empty());
    assert_eq!(sent(&mut q, &a1, delivered(), clock.at(0.5)), ["send b1"]);
}

#[test]
fn gives_up_after_max_attempts_or_age() {
    let counters = switchboard_testkit::counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.max_attempts = 2;
    limits.give_up_after = Duration::from_secs(3600);
    let mut q = Queues::new(limits, Memory::default());
    let a1 = reply(conversation(), "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    sent(&mut q, &a1, retry(Some(1)), clock.at(0.0));
    assert_eq!(show(&q.tick(clock.at(1.0))), ["send a1"]);
    let actions = q.sent(
        a1.message.conversation_id,
        a1.message.message_id,
        retry(Some(1)),
        Progress::default(),
        clock.at(1.0),
    );
    let [
        Action::Settle {
            outcome: DeliveryOutcome::Failed { reason },
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("not given up: {actions:?}");
    };
    assert_eq!(
        reason,
        "Not delivered: gave up after 2 attempts over 1 s. Last error: HTTP 500"
    );
    // Too old before its first send: failed without one.
    let old = reply(conversation(), "old");
    assert_eq!(arrive(&mut q, &old, &clock, 3601.0), ["settle old failed"]);
    assert_eq!(q.in_memory(), 0);
    assert_eq!(
        counters.get("switchboard_social_send_failures_total{kind=gave_up,platform=messenger}"),
        2
    );
}

#[test]
fn a_known_outcome_is_settled_again_without_sending() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a1 = reply(conversation(), "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    sent(&mut q, &a1, delivered(), clock.at(0.1));
    assert_eq!(
        arrive(&mut q, &returned(&a1, 1), &clock, 61.0),
        ["settle a1 delivered"]
    );
    assert_eq!(q.in_memory(), 0);
}

#[test]
fn the_same_entry_again_refreshes_and_a_copy_waits() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a = conversation();
    let (a1, a2) = (reply(a, "a1"), reply(a, "a2"));
    arrive(&mut q, &a1, &clock, 0.0);
    arrive(&mut q, &a2, &clock, 0.0);
    // a2's entry handed out again (its visibility clock restarted at 30 s).
    assert!(arrive(&mut q, &a2, &clock, 30.0).is_empty());
    assert!(show(&q.tick(clock.at(45.0))).is_empty());
    // A second entry of the same reply waits in the outbox.
    assert_eq!(
        arrive(&mut q, &returned(&a2, 7), &clock, 46.0),
        ["defer a2 1000"]
    );
    assert_eq!(q.in_memory(), 2);
}

#[test]
fn a_reply_that_never_comes_back_stops_holding_the_conversation() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a = conversation();
    let (a1, a2) = (reply(a, "a1"), reply(a, "a2"));
    arrive(&mut q, &a1, &clock, 0.0);
    sent(&mut q, &a1, retry(Some(20)), clock.at(0.0));
    assert!(arrive(&mut q, &a2, &clock, 70.0).is_empty());
    assert!(show(&q.tick(clock.at(80.0))).is_empty());
    // Due at 20 s, grace 60 s: from 80 s on a2 goes alone.
    assert_eq!(show(&q.tick(clock.at(80.1))), ["send a2"]);
    // A failed defer comes back only after the visibility timeout.
    let b = conversation();
    let b1 = reply(b, "b1");
    arrive(&mut q, &b1, &clock, 100.0);
    sent(&mut q, &b1, retry(Some(20)), clock.at(100.0));
    q.defer_failed(b, b1.message.message_id, clock.at(100.0));
    let b2 = reply(b, "b2");
    arrive(&mut q, &b2, &clock, 150.0);
    assert!(
        show(&q.tick(clock.at(200.0)))
            .iter()
            .all(|a| a != "send b2")
    );
}

#[test]
fn draining_hands_everything_back_in_order() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let (a, b) = (conversation(), conversation());
    let (a1, a2, a3, b1) = (
        reply(a, "a1"),
        reply(a, "a2"),
        reply(a, "a3"),
        reply(b, "b1"),
    );
    arrive(&mut q, &a1, &clock, 0.0);
    arrive(&mut q, &a2, &clock, 0.0);
    arrive(&mut q, &a3, &clock, 0.0);
    assert_eq!(
        sent(&mut q, &a1, retry(Some(30)), clock.at(0.0)),
        ["defer a1 30000"]
    );
    arrive(&mut q, &b1, &clock, 0.0);
    sent(&mut q, &b1, retry(Some(2)), clock.at(0.0));
    q.stop_sending();
    assert!(show(&q.tick(clock.at(3.0))).is_empty());
    let mut batches: Vec<Vec<String>> = q.drain(clock.at(3.0)).iter().map(|b| show(b)).collect();
    batches.sort();
    assert_eq!(
        batches,
        [
            vec!["defer a2 27010".to_owned(), "defer a3 27020".to_owned()],
            vec!["defer b1 10".to_owned()],
        ]
    );
    assert_eq!(q.in_memory(), 0);
}

/// A provider's `Retry-After: 0` (or a date in the past) is no reason to
/// retry at once: the backoff applies (it used to resend in a tight loop
/// until `max_attempts` ran out, and the reply failed for good). A hint is
/// a minimum; a pause between parts of a long reply still resumes at once.
#[test]
fn a_zero_retry_after_backs_off_and_a_hint_is_a_minimum() {
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.memory_wait_max = Duration::ZERO;
    let mut q = Queues::new(limits, Memory::default());
    let a1 = reply(conversation(), "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    let delay_of = |actions: Vec<Action>| match actions.first() {
        Some(Action::Defer { delay, .. }) => *delay,
        other => panic!("not deferred: {other:?}"),
    };
    let first = q.sent(
        a1.message.conversation_id,
        a1.message.message_id,
        retry(Some(0)),
        Progress::default(),
        clock.at(0.0),
    );
    assert!(delay_of(first) >= Duration::from_millis(500));
    // The third attempt's backoff (2–4 s) outweighs a hint of 1 s.
    for (n, at) in [(2, 2.0), (3, 5.0)] {
        assert_eq!(arrive(&mut q, &returned(&a1, n), &clock, at), ["send a1"]);
        let next = q.sent(
            a1.message.conversation_id,
            a1.message.message_id,
            retry(Some(1)),
            Progress::default(),
            clock.at(at),
        );
        if n == 3 {
            assert!(delay_of(next) >= Duration::from_secs(2));
        }
    }
    let pause = SendOutcome::pause("paused after part 1 of 3");
    assert!(matches!(pause, SendOutcome::Retry { after: Some(d), .. } if d.is_zero()));
}

/// What one deliverer knew reaches the next one of the instance (the
/// adapter starts a new one each time it takes the outbox's lease again,
/// as after a Redis outage, which is also when settles fail): a reply
/// whose outcome is known is settled from memory, not sent again, and a
/// reply sent in part resumes after its accepted parts.
#[test]
fn the_next_deliverer_knows_outcomes_and_progress() {
    let clock = Clock(Instant::now());
    let mut first = Queues::new(limits(), Memory::default());
    let (a, b) = (conversation(), conversation());
    let (a1, b1) = (reply(a, "a1"), reply(b, "b1"));
    arrive(&mut first, &a1, &clock, 0.0);
    arrive(&mut first, &b1, &clock, 0.0);
    assert!(sent(&mut first, &a1, delivered(), clock.at(0.1)).is_empty());
    let part = Progress {
        parts_sent: 1,
        provider_message_id: Some("m_part".into()),
        earlier_ids: Vec::new(),
    };
    let deferred = first.sent(
        b,
        b1.message.message_id,
        retry(Some(30)),
        part.clone(),
        clock.at(0.1),
    );
    assert_eq!(show(&deferred), ["defer b1 30000"]);

    let mut next = Queues::new(limits(), first.into_memory());
    let again = next.arrive(returned(&a1, 2), clock.at(60.0).at, clock.at(60.0));
    assert_eq!(show(&again), ["settle a1 delivered"]);
    let resumed = next.arrive(returned(&b1, 2), clock.at(60.0).at, clock.at(60.0));
    match resumed.as_slice() {
        [Action::Send { progress, .. }] => assert_eq!(progress, &part),
        other => panic!("{:?}", show(other)),
    }
}

/// A reply sent in part, handed back and not back within the grace, stops
/// holding its conversation; when it does come back, its accepted parts
/// are not sent again.
#[test]
fn a_late_reply_keeps_its_accepted_parts() {
    let clock = Clock(Instant::now());
    let mut q = Queues::new(limits(), Memory::default());
    let a = conversation();
    let a1 = reply(a, "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    let part = Progress {
        parts_sent: 2,
        provider_message_id: Some("m_part".into()),
        earlier_ids: Vec::new(),
    };
    let deferred = q.sent(
        a,
        a1.message.message_id,
        retry(Some(20)),
        part.clone(),
        clock.at(0.0),
    );
    assert_eq!(show(&deferred), ["defer a1 20000"]);
    assert!(show(&q.tick(clock.at(80.1))).is_empty());
    let back = q.arrive(returned(&a1, 2), clock.at(90.0).at, clock.at(90.0));
    match back.as_slice() {
        [Action::Send { progress, .. }] => assert_eq!(progress, &part),
        other => panic!("{:?}", show(other)),
    }
}

/// A send task that panicked leaves the reply's progress as it was: the
/// parts the provider accepted in an earlier attempt are not sent again
/// (it was reset, and the next attempt sent them all).
#[test]
fn a_lost_send_task_keeps_the_progress() {
    let clock = Clock(Instant::now());
    let mut limits = limits();
    limits.memory_wait_max = Duration::ZERO;
    let mut q = Queues::new(limits, Memory::default());
    let a1 = reply(conversation(), "a1");
    arrive(&mut q, &a1, &clock, 0.0);
    let accepted = Progress {
        parts_sent: 2,
        provider_message_id: Some("m.2".into()),
        earlier_ids: vec!["m.1".into()],
    };
    let (conversation, id) = (a1.message.conversation_id, a1.message.message_id);
    q.sent(
        conversation,
        id,
        retry(None),
        accepted.clone(),
        clock.at(0.0),
    );
    assert_eq!(arrive(&mut q, &returned(&a1, 2), &clock, 2.0), ["send a1"]);
    let lost = q.lost(conversation, id, clock.at(2.0));
    assert!(
        matches!(lost.first(), Some(Action::Defer { .. })),
        "tried again later: {lost:?}"
    );
    let now = clock.at(10.0);
    let again = q.arrive(returned(&a1, 3), now.at, now);
    match again.first() {
        Some(Action::Send { progress, .. }) => assert_eq!(*progress, accepted),
        other => panic!("not sent again: {other:?}"),
    }
}
