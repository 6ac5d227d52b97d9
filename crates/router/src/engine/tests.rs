use super::*;
use crate::plan::{OverflowStepConfig, Plan, QueueConfig, Strategy as Selection};
use proptest::prelude::*;
use std::collections::BTreeMap;
use switchboard_core::Partition;

fn queue(name: &str, skills: &[(&str, u8)]) -> QueueConfig {
    QueueConfig {
        name: name.into(),
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        ..QueueConfig::general()
    }
}

fn engine(queues: Vec<QueueConfig>) -> Engine {
    let plan = Plan::compile("routing", &queues, &[], "").expect("valid plan");
    Engine::new(Arc::new(plan), &[])
}

fn agent_id(name: &str) -> AgentId {
    name.parse().expect("valid agent id")
}

fn profile(name: &str, skills: &[(&str, u8)], capacity: [u32; 4]) -> AgentProfile {
    AgentProfile {
        id: agent_id(name),
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        capacity,
        total_capacity: None,
    }
}

fn available(idle_since: u64) -> AgentStatus {
    AgentStatus {
        availability: Availability::Available,
        connected: true,
        load: [0; 4],
        idle_since,
        last_offer_at: 0,
        online_until: 0,
    }
}

fn contact(queue: usize, channel: ChannelKind, since: u64) -> WaitingContact {
    WaitingContact {
        id: ContactId::new(Partition(0)),
        channel,
        queue,
        priority: 0,
        waiting_since: since,
        queued_at: since,
        rule: None,
        sticky: None,
        sticky_remembered: false,
        excluded: Vec::new(),
        excluded_at: 0,
    }
}

const CHAT: [u32; 4] = [3, 0, 0, 0];

#[test]
fn best_match_prefers_proficiency_then_occupancy_then_idle() {
    let mut e = engine(vec![queue("billing", &[("billing", 2)])]);
    e.upsert_agent(profile("novice", &[("billing", 2)], CHAT), available(0));
    e.upsert_agent(profile("expert", &[("billing", 5)], CHAT), available(100));
    e.upsert_agent(profile("unskilled", &[("sales", 5)], CHAT), available(0));
    let d = e.next_decision(1000);
    assert!(d.is_none(), "nobody waits yet");
    e.add_contact(contact(0, ChannelKind::Chat, 1000), 1000);
    let d = e.next_decision(1000).expect("a decision");
    assert_eq!(d.agent.as_str(), "expert");
    assert_eq!(d.explanation.chosen.as_deref(), Some("expert"));
    assert_eq!(d.explanation.candidates[0].agent, "expert");
    assert_eq!(d.explanation.candidates[1].agent, "novice");
    assert_eq!(d.explanation.excluded.not_skilled, 1);

    // Two experts: the less occupied one, then the one idle longest.
    let mut e = engine(vec![queue("billing", &[("billing", 2)])]);
    e.upsert_agent(profile("busy", &[("billing", 5)], CHAT), {
        let mut s = available(0);
        s.load = [1, 0, 0, 0];
        s
    });
    e.upsert_agent(
        profile("idle-recently", &[("billing", 5)], CHAT),
        available(500),
    );
    e.upsert_agent(
        profile("idle-longest", &[("billing", 5)], CHAT),
        available(200),
    );
    e.add_contact(contact(0, ChannelKind::Chat, 1000), 1000);
    assert_eq!(
        e.next_decision(1000).expect("decision").agent.as_str(),
        "idle-longest"
    );
    e.add_contact(contact(0, ChannelKind::Chat, 1000), 1000);
    assert_eq!(
        e.next_decision(1000).expect("decision").agent.as_str(),
        "idle-recently"
    );
}

#[test]
fn other_strategies() {
    let mut rr = queue("rr", &[]);
    rr.strategy = Selection::RoundRobin;
    let mut ms = queue("ms", &[]);
    ms.strategy = Selection::MostSkilled;
    let mut e = engine(vec![rr, ms]);
    e.upsert_agent(profile("a", &[("x", 1)], [10, 0, 0, 0]), available(0));
    e.upsert_agent(
        profile("b", &[("x", 5), ("y", 5)], [10, 0, 0, 0]),
        available(0),
    );
    let mut order = Vec::new();
    for t in 1..=4 {
        e.add_contact(contact(0, ChannelKind::Chat, t), t);
        order.push(e.next_decision(t).expect("decision").agent.to_string());
    }
    assert_eq!(order, ["a", "b", "a", "b"], "round robin alternates");
    e.add_contact(contact(1, ChannelKind::Chat, 10), 10);
    assert_eq!(e.next_decision(10).expect("decision").agent.as_str(), "b");
}

/// Longest idle: an agent with nothing to do goes before one holding work,
/// whenever that one last had nothing to do.
#[test]
fn longest_idle_prefers_an_agent_with_nothing_to_do() {
    let mut idle = queue("idle", &[]);
    idle.strategy = Selection::LongestIdle;
    let mut e = engine(vec![idle]);
    let mut busy = available(0);
    busy.load = [1, 0, 0, 0];
    busy.last_offer_at = 50;
    e.upsert_agent(profile("busy", &[], CHAT), busy);
    e.upsert_agent(profile("free", &[], CHAT), available(100));
    e.add_contact(contact(0, ChannelKind::Chat, 200), 200);
    assert_eq!(e.next_decision(200).expect("d").agent.as_str(), "free");
}

#[test]
fn capacity_presence_and_voice_are_respected() {
    let mut e = engine(vec![queue("q", &[])]);
    e.upsert_agent(profile("a", &[], [1, 0, 0, 1]), available(0));
    e.add_contact(contact(0, ChannelKind::Email, 1), 1);
    assert!(e.next_decision(1).is_none(), "no email capacity");
    e.add_contact(contact(0, ChannelKind::Voice, 1), 1);
    let d = e.next_decision(1).expect("voice offered");
    assert_eq!(d.contact.channel, ChannelKind::Voice);
    let chat = contact(0, ChannelKind::Chat, 2);
    e.add_contact(chat.clone(), 2);
    assert!(e.next_decision(2).is_none(), "on a call: no chat");
    let why = e.explain_waiting(&chat.id, 3).expect("waiting");
    assert_eq!(why.excluded.by_reason.get("on_call"), Some(&1), "{why:?}");

    // The call ends: the chat goes to the agent.
    let mut s = e.agent_status(&agent_id("a")).expect("known");
    s.load = [0; 4];
    e.update_agent(&agent_id("a"), s);
    let d = e.next_decision(3).expect("chat offered");
    assert_eq!(d.contact.channel, ChannelKind::Chat);

    // Away and disconnected agents get nothing.
    let mut away = available(0);
    away.availability = Availability::Away;
    e.upsert_agent(profile("b", &[], CHAT), away);
    let mut gone = available(0);
    gone.connected = false;
    e.upsert_agent(profile("c", &[], CHAT), gone);
    e.add_contact(contact(0, ChannelKind::Chat, 4), 4);
    e.add_contact(contact(0, ChannelKind::Chat, 4), 4);
    // "a" has chat capacity 1 and holds one.
    assert!(e.next_decision(4).is_none());
}

fn e_contact_ids(e: &Engine) -> Vec<ContactId> {
    e.contact_ix.keys().cloned().collect()
}

#[test]
fn voice_may_be_interrupted_by_configured_channels() {
    let plan = Plan::compile("routing", &[queue("q", &[])], &[], "").expect("valid");
    let mut e = Engine::new(Arc::new(plan), &[ChannelKind::Email]);
    let mut on_call = available(0);
    on_call.load = [0, 0, 0, 1];
    e.upsert_agent(profile("a", &[], [1, 1, 0, 1]), on_call);
    e.add_contact(contact(0, ChannelKind::Chat, 1), 1);
    e.add_contact(contact(0, ChannelKind::Email, 1), 1);
    let d = e.next_decision(1).expect("email may interrupt");
    assert_eq!(d.contact.channel, ChannelKind::Email);
    assert!(e.next_decision(1).is_none());
}

#[test]
fn overflow_steps_apply_at_their_time() {
    let mut q = queue("billing", &[("billing", 4)]);
    q.overflow = vec![
        OverflowStepConfig {
            after_secs: 30,
            relax: [("billing".to_string(), 2)].into(),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 60,
            also_queues: vec!["sales".into()],
            auto_answer: Some("Still looking for someone".into()),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 120,
            move_to: Some("fallback".into()),
            ..Default::default()
        },
    ];
    let mut e = engine(vec![
        q,
        queue("sales", &[("sales", 1)]),
        queue("fallback", &[("ops", 1)]),
    ]);
    e.upsert_agent(
        profile("junior", &[("billing", 2)], [1, 0, 0, 0]),
        available(0),
    );
    e.upsert_agent(
        profile("seller", &[("sales", 3)], [1, 0, 0, 0]),
        available(0),
    );
    e.upsert_agent(profile("ops", &[("ops", 1)], [1, 0, 0, 0]), available(0));
    let start = 1_000_000;
    e.add_contact(contact(0, ChannelKind::Chat, start), start);
    assert!(e.next_decision(start).is_none(), "nobody has billing 4");
    assert_eq!(e.next_timer(), Some(start + 30_000));
    assert!(e.advance(start + 29_999).is_empty(), "not yet");
    assert!(e.next_decision(start + 29_999).is_none());
    let actions = e.advance(start + 30_000);
    assert!(matches!(
        actions[..],
        [StepAction::Overflowed { step: 1, .. }]
    ));
    let d = e.next_decision(start + 30_000).expect("relaxed");
    assert_eq!((d.agent.as_str(), d.step), ("junior", 1));

    // A second contact: junior is full now; at 60 s sales agents join.
    e.add_contact(contact(0, ChannelKind::Chat, start), start);
    e.advance(start + 30_000);
    assert!(e.next_decision(start + 30_000).is_none());
    let actions = e.advance(start + 60_000);
    assert!(actions.iter().any(|a| matches!(a,
        StepAction::AutoAnswer { contact, step: 2, text, .. }
            if *contact == e_contact_ids(&e)[0] && text == "Still looking for someone")));
    let d = e.next_decision(start + 60_000).expect("borrowed");
    assert_eq!((d.agent.as_str(), d.step), ("seller", 2));
    assert_eq!(d.explanation.step, 2);

    // A third: at 120 s it moves to the fallback queue.
    e.add_contact(contact(0, ChannelKind::Chat, start), start);
    e.advance(start + 60_000);
    assert!(e.next_decision(start + 60_000).is_none());
    let actions = e.advance(start + 120_000);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, StepAction::Moved { from: 0, to: 2, .. }))
    );
    let d = e.next_decision(start + 120_000).expect("fallback");
    assert_eq!((d.agent.as_str(), d.contact.queue), ("ops", 2));
}

/// A contact that comes back after a step's time (an offer that lasted
/// past it, a failover) gets that step's automatic answer when added with
/// catching up, for the steps due within the window asked for; plain
/// `add_contact` does not (the answer would be looked up for every
/// contact a reload adds).
#[test]
fn a_contact_added_past_a_step_catches_up_its_automatic_answer() {
    let mut q = queue("q", &[]);
    q.overflow = vec![
        OverflowStepConfig {
            after_secs: 10,
            auto_answer: Some("Still looking".into()),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 20,
            auto_answer: Some("Still looking, sorry".into()),
            ..Default::default()
        },
    ];
    let mut e = engine(vec![q]);
    let start = 1_000_000;
    let c = contact(0, ChannelKind::Chat, start);
    let id = c.id;
    e.add_contact_catching_up(c, start + 25_000, start + 15_000);
    let actions = e.advance(start + 25_000);
    assert!(
        matches!(&actions[..], [StepAction::AutoAnswer { contact, step: 2, text, .. }] if *contact == id && text == "Still looking, sorry"),
        "only the step due within the window: {actions:?}"
    );
    assert!(e.advance(start + 25_001).is_empty(), "once");
    let mut e2 = engine(vec![{
        let mut q = queue("q", &[]);
        q.overflow = vec![OverflowStepConfig {
            after_secs: 10,
            auto_answer: Some("Still looking".into()),
            ..Default::default()
        }];
        q
    }]);
    e2.add_contact(contact(0, ChannelKind::Chat, start), start + 25_000);
    assert!(e2.advance(start + 25_000).is_empty());
}

#[test]
fn contacts_added_late_start_at_the_step_their_wait_reached() {
    let mut q = queue("q", &[("a", 5)]);
    q.overflow = vec![OverflowStepConfig {
        after_secs: 10,
        relax: [("a".to_string(), 1)].into(),
        ..Default::default()
    }];
    let mut e = engine(vec![q]);
    e.upsert_agent(profile("x", &[("a", 1)], CHAT), available(0));
    // Reloaded after a failover: it has waited 15 s already.
    e.add_contact(contact(0, ChannelKind::Chat, 0), 15_000);
    assert_eq!(e.next_decision(15_000).expect("step 1").step, 1);
}

/// Queue `first` (skill `a`) moves its contacts to `second` (skill `b`)
/// after 60 s.
fn first_moves_to_second() -> Vec<QueueConfig> {
    let mut q = queue("first", &[("a", 1)]);
    q.overflow = vec![OverflowStepConfig {
        after_secs: 60,
        move_to: Some("second".into()),
        ..Default::default()
    }];
    vec![q, queue("second", &[("b", 1)])]
}

#[test]
fn contacts_reloaded_after_their_move_time_are_in_the_target_queue() {
    let mut e = engine(first_moves_to_second());
    e.upsert_agent(profile("b-agent", &[("b", 1)], CHAT), available(0));
    e.add_contact(contact(0, ChannelKind::Chat, 0), 61_000);
    let d = e.next_decision(61_000).expect("moved, then offered");
    assert_eq!((d.contact.queue, d.contact.queued_at), (1, 60_000));
}

/// A contact back from an offer that lasted past its queue's move is
/// placed where the move put it, and the step and the move are recorded
/// (by the next `advance`), as when the engine held it: its next offer's
/// record would otherwise show another queue with no word of how it got
/// there. Steps due before the offer were recorded then, not again.
#[test]
fn a_move_made_while_offered_is_recorded() {
    let mut q = queue("first", &[("a", 1)]);
    q.overflow = vec![
        OverflowStepConfig {
            after_secs: 5,
            relax: [("a".to_string(), 1)].into(),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 60,
            move_to: Some("second".into()),
            ..Default::default()
        },
    ];
    let mut e = engine(vec![q, queue("second", &[("b", 1)])]);
    // Offered at 10 s (step 1 was due at 5 s, recorded then), declined at
    // 70 s: the move at 60 s came due meanwhile.
    e.add_contact_after_offer(contact(0, ChannelKind::Chat, 0), 70_000, 10_000);
    let actions = e.advance(70_000);
    assert!(
        matches!(
            actions[..],
            [
                StepAction::Overflowed {
                    step: 2,
                    queue: 0,
                    ..
                },
                StepAction::Moved { from: 0, to: 1, .. }
            ]
        ),
        "{actions:?}"
    );
    // A reload records nothing it cannot tell was recorded before.
    let mut e2 = engine(first_moves_to_second());
    e2.add_contact_catching_up(contact(0, ChannelKind::Chat, 0), 70_000, 0);
    assert!(e2.advance(70_000).is_empty());
}

/// A record of an older version without `queued_at` counts its steps from
/// its creation: from 0 (the epoch) every step, the move included, was due
/// at once.
#[test]
fn a_record_without_queued_at_counts_from_its_creation() {
    let mut e = engine(first_moves_to_second());
    e.upsert_agent(profile("a-agent", &[("a", 1)], CHAT), available(0));
    let mut old = contact(0, ChannelKind::Chat, 100_000);
    old.queued_at = 0;
    e.add_contact(old, 101_000);
    let d = e.next_decision(101_000).expect("offered where it came");
    assert_eq!((d.contact.queue, d.contact.queued_at), (0, 100_000));
}

/// Supervisors' figures name the queue a contact came to, whether it moved
/// while this engine held it or before it was loaded (a failover): the
/// leader's summary used to count it in the target queue, the counted one
/// (from the records, while no leader publishes) in the first, so the
/// wallboard jumped at every change of leader.
#[test]
fn the_queue_summary_names_the_queue_a_moved_contact_came_to() {
    let mut e = engine(first_moves_to_second());
    e.add_contact(contact(0, ChannelKind::Chat, 1_000), 1_000);
    let actions = e.advance(61_000);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, StepAction::Moved { from: 0, to: 1, .. }))
    );
    e.add_contact(contact(0, ChannelKind::Chat, 500), 62_000);
    assert_eq!(e.queue_summary(), vec![(2, 500), (0, 0)]);
}

#[test]
fn priority_ages_and_strict_priority_does_not() {
    let mut aging = queue("aging", &[]);
    aging.priority_weight_secs = 60;
    let mut e = engine(vec![aging]);
    let mut old_low = contact(0, ChannelKind::Chat, 0);
    old_low.priority = 0;
    let mut new_high = contact(0, ChannelKind::Chat, 90_000);
    new_high.priority = 1;
    let (old_id, new_id) = (old_low.id, new_high.id);
    e.add_contact(old_low.clone(), 100_000);
    e.add_contact(new_high.clone(), 100_000);
    assert!(e.next_decision(100_000).is_none());
    e.upsert_agent(profile("a", &[], [1, 0, 0, 0]), available(0));
    // One level is worth 60 s; the old one waited 90 s longer.
    assert_eq!(e.next_decision(100_000).expect("d").contact.id, old_id);

    let mut strict = queue("strict", &[]);
    strict.strict_priority = true;
    let mut e = engine(vec![strict]);
    e.add_contact(old_low, 100_000);
    e.add_contact(new_high, 100_000);
    e.upsert_agent(profile("a", &[], [1, 0, 0, 0]), available(0));
    assert_eq!(e.next_decision(100_000).expect("d").contact.id, new_id);
}

/// As docs/routing.md says: an agent who serves a strict queue and another
/// gets the strict queue's contacts of priority above 0 first, however long
/// the other queue's waited; its priority 0 ranks by waiting time with the
/// others, and below 0 after them.
#[test]
fn strict_priority_reaches_across_queues() {
    let mut strict = queue("strict", &[]);
    strict.strict_priority = true;
    let mut aging = queue("aging", &[]);
    aging.priority_weight_secs = 60;
    let mut e = engine(vec![strict, aging]);
    let mut old_other = contact(1, ChannelKind::Chat, 0);
    old_other.priority = 5;
    let mut new_urgent = contact(0, ChannelKind::Chat, 100_000);
    new_urgent.priority = 1;
    let mut new_plain = contact(0, ChannelKind::Chat, 50_000);
    new_plain.priority = 0;
    let mut low = contact(0, ChannelKind::Chat, 0);
    low.priority = -1;
    let order = [new_urgent.id, old_other.id, new_plain.id, low.id];
    for c in [low, new_plain, old_other, new_urgent] {
        e.add_contact(c, 100_000);
    }
    e.upsert_agent(profile("a", &[], [4, 0, 0, 0]), available(0));
    let mut served = Vec::new();
    while let Some(d) = e.next_decision(100_000) {
        served.push(d.contact.id);
    }
    assert_eq!(served, order);
}

/// The offer's record names the agent chosen among its candidates even
/// when a sticky pick ranks below the five best (it was sorted in, then
/// cut off with the sixth and later).
#[test]
fn the_chosen_agent_is_among_the_recorded_candidates() {
    let mut e = engine(vec![queue("q", &[])]);
    for i in 0..6 {
        e.upsert_agent(profile(&format!("idle{i}"), &[], CHAT), available(0));
    }
    // The busiest of all: ranked last by occupancy.
    let mut busy = available(0);
    busy.load = [2, 0, 0, 0];
    e.upsert_agent(profile("last", &[], CHAT), busy);
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(c, 0);
    let d = e.next_decision(0).expect("sticky");
    assert_eq!(d.agent.as_str(), "last");
    let names: Vec<&str> = d
        .explanation
        .candidates
        .iter()
        .map(|c| c.agent.as_str())
        .collect();
    assert!(names.contains(&"last"), "{names:?}");
}

#[test]
fn sticky_contacts_wait_for_their_agent_then_go_to_anyone() {
    let mut e = engine(vec![queue("q", &[])]);
    let mut busy = available(0);
    busy.load = [1, 0, 0, 0];
    e.upsert_agent(profile("last", &[], [1, 0, 0, 0]), busy);
    e.upsert_agent(profile("other", &[], [1, 0, 0, 0]), available(0));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(c, 0);
    assert!(e.next_decision(0).is_none(), "waits for its agent");
    // The agent frees up within the wait: it gets the contact.
    e.update_agent(&agent_id("last"), available(10));
    let d = e.next_decision(10).expect("sticky");
    assert_eq!(d.agent.as_str(), "last");
    assert_eq!(d.explanation.sticky_agent.as_deref(), Some("last"));

    // It does not free up: after the wait, anyone.
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(c, 20);
    assert!(e.next_decision(20).is_none());
    let actions = e.advance(30_000);
    assert!(matches!(actions[..], [StepAction::StickyExpired { .. }]));
    assert_eq!(e.next_decision(30_000).expect("d").agent.as_str(), "other");
}

/// A returning customer whose last agent has signed out does not wait for
/// them (docs/routing.md: "if they are signed in").
#[test]
fn a_sticky_contact_of_a_signed_out_agent_goes_to_the_queue_at_once() {
    let mut e = engine(vec![queue("q", &[])]);
    let mut gone = available(0);
    gone.connected = false;
    e.upsert_agent(profile("last", &[], CHAT), gone);
    e.upsert_agent(profile("other", &[], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(c, 10);
    let d = e.next_decision(10).expect("offered now");
    assert_eq!(d.agent.as_str(), "other");
    assert_eq!(d.explanation.sticky_agent, None);
}

/// A returning customer's agent lost their connection a moment ago (a page
/// reload) and is within the reconnect grace: a contact added now (as at a
/// reload of the routing state, which adds every waiting contact again)
/// waits for them, as one waiting already does; it went to the queue at
/// once. Past the grace, a contact added goes to the queue at once.
#[test]
fn a_sticky_contact_added_within_its_agents_reconnect_grace_waits() {
    let mut e = engine(vec![queue("q", &[])]);
    e.set_reconnect_grace(std::time::Duration::from_secs(20));
    let mut reloading = available(0);
    reloading.connected = false;
    reloading.online_until = 5;
    e.upsert_agent(profile("last", &[], CHAT), reloading);
    e.upsert_agent(profile("other", &[], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 60_000));
    e.add_contact(c, 10);
    assert!(e.next_decision(10).is_none(), "waits for its agent");
    let mut late = contact(0, ChannelKind::Chat, 0);
    late.sticky = Some((agent_id("last"), 60_000));
    let late_id = late.id;
    e.add_contact(late, 30_000);
    let d = e.next_decision(30_000).expect("offered now");
    assert_eq!((d.contact.id, d.agent.as_str()), (late_id, "other"));
}

/// Likewise when the agent goes offline while the customer waits for them;
/// a lost connection alone (a page reload) keeps the wait.
#[test]
fn a_sticky_contact_is_let_go_when_its_agent_signs_out() {
    let mut e = engine(vec![queue("q", &[])]);
    let mut busy = available(0);
    busy.load = [1, 0, 0, 0];
    e.upsert_agent(profile("last", &[], [1, 0, 0, 0]), busy);
    e.upsert_agent(profile("other", &[], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(c, 10);
    assert!(e.next_decision(10).is_none(), "waits for its agent");
    let mut reloading = busy;
    reloading.connected = false;
    e.update_agent(&agent_id("last"), reloading);
    assert!(e.next_decision(15).is_none(), "still waits");
    let mut gone = busy;
    gone.availability = Availability::Offline;
    e.update_agent(&agent_id("last"), gone);
    let d = e.next_decision(20).expect("offered at once");
    assert_eq!(d.agent.as_str(), "other");
}

/// A returning customer's last agent is waited for only if the contact's
/// queue would offer it to them: their new message in another language
/// goes to that language's agents at once. A transfer to an agent is the
/// sender's choice and waits for them whatever the queue asks.
#[test]
fn a_remembered_agent_who_lacks_the_queues_skills_is_not_waited_for() {
    let mut e = engine(vec![queue("fr", &[("french", 3)])]);
    let mut busy = available(0);
    busy.load = [1, 0, 0, 0];
    e.upsert_agent(profile("last", &[("english", 5)], [1, 0, 0, 0]), busy);
    e.upsert_agent(profile("fr1", &[("french", 4)], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    c.sticky_remembered = true;
    e.add_contact(c, 10);
    let d = e.next_decision(10).expect("offered now");
    assert_eq!(d.agent.as_str(), "fr1");
    assert_eq!(d.explanation.sticky_agent, None);

    // The same agent as a transfer's target: the contact waits for them.
    let mut t = contact(0, ChannelKind::Chat, 0);
    t.sticky = Some((agent_id("last"), 30_000));
    e.add_contact(t, 20);
    assert!(
        e.next_decision(20).is_none(),
        "waits for the transfer's target"
    );

    // Nor one who would qualify only at a later step that relaxes the
    // skills: the wait is for someone who can answer now.
    let mut q = queue("fr", &[("french", 3)]);
    q.overflow = vec![OverflowStepConfig {
        after_secs: 30,
        relax: [("french".to_string(), 1)].into(),
        ..Default::default()
    }];
    let mut e = engine(vec![q]);
    e.upsert_agent(profile("last", &[("french", 1)], [1, 0, 0, 0]), busy);
    e.upsert_agent(profile("fr1", &[("french", 4)], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    c.sticky_remembered = true;
    e.add_contact(c, 10);
    assert_eq!(
        e.next_decision(10).expect("offered now").agent.as_str(),
        "fr1"
    );

    // A remembered agent who qualifies is waited for.
    let mut e = engine(vec![queue("fr", &[("french", 3)])]);
    e.upsert_agent(profile("last", &[("french", 3)], [1, 0, 0, 0]), busy);
    e.upsert_agent(profile("fr1", &[("french", 4)], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    c.sticky_remembered = true;
    e.add_contact(c, 10);
    assert!(
        e.next_decision(10).is_none(),
        "waits for its qualified agent"
    );
}

#[test]
fn a_sticky_contact_its_agent_declined_goes_to_the_queue_at_once() {
    let mut e = engine(vec![queue("q", &[])]);
    e.upsert_agent(profile("last", &[], CHAT), available(0));
    e.upsert_agent(profile("other", &[], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.sticky = Some((agent_id("last"), 30_000));
    c.excluded = vec![agent_id("last")];
    e.add_contact(c, 10);
    // Not offered to the agent who declined (the store would refuse it,
    // again and again), nor kept waiting for them until the deadline.
    let d = e.next_decision(10).expect("offered now");
    assert_eq!(d.agent.as_str(), "other");
    assert_eq!(d.explanation.sticky_agent, None);
    assert!(e.next_decision(10).is_none());
}

/// The exclusions of a declined or missed contact lapse
/// (`set_exclusion`), counted from the latest: a contact that the only
/// agent able to take it declined is offered to them again then, not
/// stranded. Without a lapse, never.
#[test]
fn exclusions_lapse_after_the_latest_decline() {
    let mut e = engine(vec![queue("q", &[])]);
    e.set_exclusion(Duration::from_secs(60));
    e.upsert_agent(profile("only", &[], CHAT), available(0));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.excluded = vec![agent_id("only")];
    c.excluded_at = 1_000;
    let id = c.id;
    e.add_contact(c.clone(), 2_000);
    assert!(e.next_decision(2_000).is_none(), "excluded for now");
    assert_eq!(e.next_timer(), Some(61_000));
    assert!(e.advance(60_999).is_empty());
    assert!(e.next_decision(60_999).is_none());
    e.advance(61_000);
    let d = e.next_decision(61_000).expect("offered again");
    assert_eq!((d.contact.id, d.agent.as_str()), (id, "only"));
    assert!(d.contact.excluded.is_empty());
    assert_eq!(e.next_timer(), None);

    // Lapsed already when it is added (a leader that took over later).
    let mut e = engine(vec![queue("q", &[])]);
    e.set_exclusion(Duration::from_secs(60));
    e.upsert_agent(profile("only", &[], CHAT), available(0));
    e.add_contact(c.clone(), 61_000);
    assert_eq!(
        e.next_decision(61_000).expect("offered").agent.as_str(),
        "only"
    );

    // A removed contact's lapse goes with it.
    let mut e = engine(vec![queue("q", &[])]);
    e.set_exclusion(Duration::from_secs(60));
    e.add_contact(c.clone(), 2_000);
    e.remove_contact(&id);
    assert_eq!(e.next_timer(), None);

    // Excluded without a time (an older version's record): no lapse.
    let mut e = engine(vec![queue("q", &[])]);
    e.set_exclusion(Duration::from_secs(60));
    let mut old = c.clone();
    old.excluded_at = 0;
    e.add_contact(old, 2_000);
    assert_eq!(e.next_timer(), None);

    // No lapse: excluded for as long as it waits.
    let mut e = engine(vec![queue("q", &[])]);
    e.upsert_agent(profile("only", &[], CHAT), available(0));
    e.add_contact(c, 2_000);
    assert_eq!(e.next_timer(), None);
    e.advance(10_000_000);
    assert!(e.next_decision(10_000_000).is_none());
}

#[test]
fn declined_agents_are_not_offered_the_contact_again() {
    let mut e = engine(vec![queue("q", &[])]);
    e.upsert_agent(profile("a", &[], CHAT), available(0));
    e.upsert_agent(profile("b", &[], CHAT), available(1));
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.excluded = vec![agent_id("a")];
    e.add_contact(c, 0);
    let d = e.next_decision(0).expect("d");
    assert_eq!(d.agent.as_str(), "b");
    assert_eq!(d.explanation.excluded.declined, ["a"]);
    // a is free but declined it: not counted among the eligible too.
    assert_eq!(d.explanation.eligible, 1);
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.excluded = vec![agent_id("a"), agent_id("b")];
    e.add_contact(c, 0);
    assert!(e.next_decision(0).is_none());
}

/// A contact that the first agents of the pool, farther than the matcher
/// scans, all declined still goes to a free agent further down (one who
/// nominated it), not only at the next change.
#[test]
fn a_contact_declined_by_the_first_agents_of_a_large_pool_still_finds_one() {
    let mut e = engine(vec![queue("q", &[])]);
    let n = SCAN_LIMIT + 6;
    for i in 0..n {
        e.upsert_agent(profile(&format!("a{i}"), &[], CHAT), available(i as u64));
    }
    let mut c = contact(0, ChannelKind::Chat, 0);
    c.excluded = (0..=SCAN_LIMIT)
        .map(|i| agent_id(&format!("a{i}")))
        .collect();
    e.add_contact(c, 0);
    let d = e
        .next_decision(0)
        .expect("an agent beyond the declined ones");
    let taken: usize = d.agent.as_str()[1..].parse().expect("a0…a69");
    assert_eq!(taken, SCAN_LIMIT + 1, "the longest idle of those left");
}

#[test]
fn adding_the_same_contact_twice_changes_nothing() {
    let mut e = engine(vec![queue("q", &[])]);
    let c = contact(0, ChannelKind::Chat, 0);
    e.add_contact(c.clone(), 0);
    e.add_contact(c.clone(), 0);
    assert_eq!(e.waiting_count(), 1);
    assert_eq!(e.remove_contact(&c.id), Some(c.clone()));
    assert_eq!(e.remove_contact(&c.id), None);
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Contact {
        queue: usize,
        channel: usize,
        priority: i32,
    },
    Finish {
        agent: usize,
        channel: usize,
    },
    Presence {
        agent: usize,
        available: bool,
    },
    Tick {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..4usize, -2..3i32).prop_map(|(queue, channel, priority)| Op::Contact { queue, channel, priority }),
        2 => (0..12usize, 0..4usize).prop_map(|(agent, channel)| Op::Finish { agent, channel }),
        1 => (0..12usize, any::<bool>()).prop_map(|(agent, available)| Op::Presence { agent, available }),
        1 => (1..40_000u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

type Skills = Vec<(usize, u8)>;

fn agent_spec() -> impl Strategy<Value = (Skills, [u32; 4], Option<u32>)> {
    (
        proptest::collection::vec((0..4usize, 1..=5u8), 0..4),
        [0..4u32, 0..4u32, 0..3u32, 0..2u32],
        proptest::option::of(1..6u32),
    )
}

const SKILLS: [&str; 4] = ["billing", "sales", "lang:uk", "tech"];
const CHANNELS: [ChannelKind; 4] = [
    ChannelKind::Chat,
    ChannelKind::Email,
    ChannelKind::Social,
    ChannelKind::Voice,
];

fn property_plan() -> Vec<QueueConfig> {
    let mut billing = queue("billing", &[("billing", 4), ("lang:uk", 2)]);
    billing.overflow = vec![
        OverflowStepConfig {
            after_secs: 20,
            relax: [("billing".to_string(), 2)].into(),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 45,
            also_skills: [("tech".to_string(), 4)].into(),
            ..Default::default()
        },
    ];
    let mut sales = queue("sales", &[("sales", 1)]);
    sales.strategy = Selection::LeastOccupied;
    sales.overflow = vec![OverflowStepConfig {
        after_secs: 30,
        also_queues: vec!["billing".into()],
        ..Default::default()
    }];
    let mut general = queue("general", &[]);
    general.strategy = Selection::RoundRobin;
    vec![billing, sales, general]
}

/// Whether `skills` qualify for queue `q` at `step` of [`property_plan`],
/// written out by hand from the configuration above.
fn qualifies(skills: &BTreeMap<&str, u8>, q: usize, step: usize) -> bool {
    let has = |s: &str, min: u8| skills.get(s).is_some_and(|l| *l >= min);
    let billing0 = has("billing", 4) && has("lang:uk", 2);
    match q {
        0 => {
            billing0
                || (step >= 1 && has("billing", 2) && has("lang:uk", 2))
                || (step >= 2 && has("tech", 4))
        }
        1 => has("sales", 1) || (step >= 1 && billing0),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens, every offer goes to an agent who is available,
    /// skilled for the contact's queue at its step, and below capacity
    /// after taking it; and every contact is offered at most once.
    #[test]
    fn offers_respect_skills_capacity_and_presence(
        agents in proptest::collection::vec(agent_spec(), 1..12),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let plan = Plan::compile("routing", &property_plan(), &[], "").expect("valid");
        let mut e = Engine::new(Arc::new(plan), &[]);
        let mut load: Vec<[u32; 4]> = vec![[0; 4]; agents.len()];
        let mut avail: Vec<bool> = vec![true; agents.len()];
        let mut skill_maps = Vec::new();
        for (i, (skills, capacity, total)) in agents.iter().enumerate() {
            let mut p = profile(&format!("a{i}"), &[], *capacity);
            p.skills = skills.iter().map(|(s, l)| (SKILLS[*s].to_string(), *l)).collect();
            p.total_capacity = *total;
            let mut m = BTreeMap::new();
            for (s, l) in skills { m.insert(SKILLS[*s], *l); }
            skill_maps.push(m);
            e.upsert_agent(p, available(0));
        }
        let mut now = 1_000_000u64;
        let mut offered = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Contact { queue, channel, priority } => {
                    let mut c = contact(queue, CHANNELS[channel], now);
                    c.priority = priority;
                    e.add_contact(c, now);
                }
                Op::Finish { agent, channel } => {
                    let a = agent % agents.len();
                    if load[a][channel] > 0 {
                        load[a][channel] -= 1;
                        let mut s = e.agent_status(&agent_id(&format!("a{a}"))).expect("known");
                        s.load = load[a];
                        s.idle_since = now;
                        e.update_agent(&agent_id(&format!("a{a}")), s);
                    }
                }
                Op::Presence { agent, available: on } => {
                    let a = agent % agents.len();
                    avail[a] = on;
                    let mut s = e.agent_status(&agent_id(&format!("a{a}"))).expect("known");
                    s.availability = if on { Availability::Available } else { Availability::Away };
                    e.update_agent(&agent_id(&format!("a{a}")), s);
                }
                Op::Tick { ms } => {
                    now += ms;
                    e.advance(now);
                }
            }
            while let Some(d) = e.next_decision(now) {
                let a: usize = d.agent.as_str()[1..].parse().expect("index");
                let c = ch(d.contact.channel);
                prop_assert!(avail[a], "offered to an agent who is away");
                prop_assert!(offered.insert(d.contact.id), "offered twice");
                load[a][c] += 1;
                let (_, capacity, total) = &agents[a];
                prop_assert!(load[a][c] <= capacity[c], "over channel capacity: {:?} > {:?}", load[a], capacity);
                let sum: u32 = load[a].iter().sum();
                let cap = total.unwrap_or_else(|| capacity.iter().sum());
                prop_assert!(sum <= cap, "over total capacity");
                if c != 3 {
                    prop_assert_eq!(load[a][3], 0, "work offered during a call");
                }
                prop_assert!(
                    qualifies(&skill_maps[a], d.contact.queue, d.step),
                    "agent {} skills {:?} not qualified for queue {} step {}",
                    a, skill_maps[a], d.contact.queue, d.step
                );
                let waited = now - d.contact.queued_at;
                let due = [0, 20_000, 45_000];
                let due = if d.contact.queue == 0 { due[d.step] } else if d.contact.queue == 1 { [0, 30_000][d.step] } else { 0 };
                prop_assert!(waited >= due, "step {} applied after {} ms", d.step, waited);
            }
        }
        // Nothing left waiting that some agent could take right now.
        for (a, (_, capacity, total)) in agents.iter().enumerate() {
            if !avail[a] { continue; }
            let sum: u32 = load[a].iter().sum();
            let cap = total.unwrap_or_else(|| capacity.iter().sum());
            for slot in e.contacts.iter().flatten() {
                let c = ch(slot.contact.channel);
                let fits = load[a][c] < capacity[c] && sum < cap && (c == 3 || load[a][3] == 0);
                prop_assert!(
                    !(fits && qualifies(&skill_maps[a], slot.contact.queue, slot.step)),
                    "agent a{} could take a waiting contact", a
                );
            }
        }
    }

    /// With static agents, the engine's choice for one contact equals a
    /// brute-force ranking of every agent by the queue's strategy.
    #[test]
    fn the_choice_equals_a_brute_force_ranking(
        agents in proptest::collection::vec((agent_spec(), 0..3u32, 0..1000u64), 1..30),
        queue_ix in 0..3usize,
    ) {
        let plan = Plan::compile("routing", &property_plan(), &[], "").expect("valid");
        let mut e = Engine::new(Arc::new(plan), &[]);
        let mut expected: Option<(u64, u64, u64, usize)> = None;
        for (i, ((skills, _, _), load, idle)) in agents.iter().enumerate() {
            let capacity = [5, 0, 0, 0];
            let mut p = profile(&format!("a{i}"), &[], capacity);
            p.skills = skills.iter().map(|(s, l)| (SKILLS[*s].to_string(), *l)).collect();
            let mut status = available(*idle);
            status.load = [*load, 0, 0, 0];
            // Round robin: nobody was offered yet.
            let last_offer = if queue_ix == 2 { 0 } else { (*idle * 7) % 1000 };
            status.last_offer_at = last_offer;
            e.upsert_agent(p, status);
            let mut m = BTreeMap::new();
            for (s, l) in skills { m.insert(SKILLS[*s], *l); }
            if !qualifies(&m, queue_ix, 0) { continue; }
            // The same skill can appear twice in the generated list; the
            // engine keeps the last, as a map would.
            let score: u64 = match queue_ix {
                0 => u64::from(*m.get("billing").unwrap_or(&0)) + u64::from(*m.get("lang:uk").unwrap_or(&0)),
                1 => u64::from(*m.get("sales").unwrap_or(&0)),
                _ => 0,
            };
            let occupancy = u64::from(*load) * 1_000_000 / 5;
            // Idle: since nothing to do, or for a busy agent since the
            // last offer.
            let idle = if *load > 0 { last_offer } else { *idle };
            let key = match queue_ix {
                0 => (u64::MAX - score, occupancy, idle, i),
                1 => (occupancy, idle, 0, i),
                _ => (0, 0, 0, i), // round robin: nobody was offered yet
            };
            if expected.is_none_or(|k| key < k) { expected = Some(key); }
        }
        e.add_contact(contact(queue_ix, ChannelKind::Chat, 0), 0);
        let got = e.next_decision(0).map(|d| d.agent.to_string());
        prop_assert_eq!(got, expected.map(|k| format!("a{}", k.3)));
    }
}

// ---- business hours ----

fn utc(local: &str) -> u64 {
    let dt: jiff::civil::DateTime = local.parse().expect("a local time");
    let ts = jiff::tz::TimeZone::UTC
        .to_timestamp(dt)
        .expect("an instant");
    u64::try_from(ts.as_millisecond()).expect("after 1970")
}

/// Queue 0 "office" (UTC, Monday to Friday 09:00-17:00), queue 1 "always".
fn office_engine(office: QueueConfig) -> Engine {
    office_engine_with(office, queue("always", &[]))
}

/// As [`office_engine`], with queue 1 as given (named "always").
fn office_engine_with(mut office: QueueConfig, always: QueueConfig) -> Engine {
    use crate::hours::{ScheduleConfig, WeekHours};
    let day = vec!["09:00-17:00".to_string()];
    let schedule = ScheduleConfig {
        name: "office".into(),
        timezone: "UTC".into(),
        hours: WeekHours {
            mon: day.clone(),
            tue: day.clone(),
            wed: day.clone(),
            thu: day.clone(),
            fri: day,
            ..WeekHours::default()
        },
        holidays: vec![],
    };
    office.schedule = Some("office".into());
    let queues = vec![office, always, queue("fallback", &[])];
    let plan =
        Plan::compile_with_schedules("routing", &queues, &[], "", &[schedule]).expect("valid plan");
    Engine::new(Arc::new(plan), &[])
}

#[test]
fn a_closed_queue_is_skipped_and_served_in_order_at_opening() {
    let mut e = office_engine(queue("office", &[]));
    // 2026-05-01 is a Friday.
    let evening = utc("2026-05-01T18:00");
    let mut one = profile("a", &[], [1, 0, 0, 0]);
    one.total_capacity = Some(1);
    e.upsert_agent(one, available(0));
    assert!(e.advance(evening).is_empty());
    assert!(!e.is_queue_open(0));
    assert!(e.is_queue_open(1));
    let older = contact(0, ChannelKind::Chat, evening - 60_000);
    let newer = contact(0, ChannelKind::Chat, evening);
    e.add_contact(newer.clone(), evening);
    e.add_contact(older.clone(), evening);
    assert!(
        e.next_decision(evening).is_none(),
        "closed: nobody is offered"
    );
    // The agent frees up (a status change): still nothing from the closed
    // queue.
    e.update_agent(&agent_id("a"), available(1));
    assert!(e.next_decision(evening + 1000).is_none());
    // The engine wakes at the opening: Monday 09:00.
    let monday = utc("2026-05-04T09:00");
    assert_eq!(e.next_timer(), Some(monday));
    assert!(e.next_decision(monday - 1).is_none());
    e.advance(monday);
    assert!(e.is_queue_open(0));
    let d = e.next_decision(monday).expect("offered at the opening");
    assert_eq!(d.contact.id, older.id, "longest waiting first");
    assert!(e.next_decision(monday).is_none(), "the agent is full");
    // And it closes again at 17:00.
    assert_eq!(e.next_timer(), Some(utc("2026-05-04T17:00")));
    e.advance(utc("2026-05-04T17:00"));
    assert!(!e.is_queue_open(0));
}

#[test]
fn an_open_queue_beside_a_closed_one_is_served_at_once() {
    let mut e = office_engine(queue("office", &[]));
    let night = utc("2026-05-02T03:00");
    e.upsert_agent(profile("a", &[], CHAT), available(0));
    e.advance(night);
    e.add_contact(contact(0, ChannelKind::Chat, night - 5), night);
    let open = contact(1, ChannelKind::Chat, night);
    e.add_contact(open.clone(), night);
    let d = e.next_decision(night).expect("the open queue");
    assert_eq!(d.contact.id, open.id);
    assert!(e.next_decision(night).is_none());
    // A sticky contact of the closed queue waits too, even for its agent.
    let mut sticky = contact(0, ChannelKind::Chat, night);
    sticky.sticky = Some((agent_id("a"), night + 3_600_000));
    e.add_contact(sticky, night);
    assert!(e.next_decision(night).is_none());
}

#[test]
fn overflow_steps_count_only_open_time() {
    let mut q = queue("office", &[]);
    q.overflow = vec![
        OverflowStepConfig {
            after_secs: 60,
            auto_answer: Some("Still looking".into()),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 120,
            move_to: Some("fallback".into()),
            ..Default::default()
        },
    ];
    let mut e = office_engine(q);
    // Arrives 30 s before Friday's closing: 30 s of open time that day.
    let arrived = utc("2026-05-01T16:59:30");
    e.advance(arrived);
    let c = contact(0, ChannelKind::Chat, arrived);
    e.add_contact(c.clone(), arrived);
    // Nothing fires over the weekend …
    assert!(e.advance(utc("2026-05-02T12:00")).is_empty());
    assert!(
        e.advance(utc("2026-05-04T09:00")).is_empty(),
        "not at the opening either"
    );
    // … the step comes 30 s into Monday.
    let step = utc("2026-05-04T09:00:30");
    let timers: Vec<u64> = e.timers.iter().map(|(t, _)| *t).collect();
    assert!(timers.contains(&step), "{timers:?}");
    let actions = e.advance(step);
    assert!(matches!(actions[0], StepAction::Overflowed { step: 1, .. }));
    assert!(matches!(actions[1], StepAction::AutoAnswer { step: 1, .. }));
    // The move after 120 s of open time.
    let actions = e.advance(utc("2026-05-04T09:01:30"));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, StepAction::Moved { to: 2, .. })),
        "{actions:?}"
    );

    // A leader reloading the contact on Monday morning places it where open
    // time says: step 1 after 70 s, moved after 120 s.
    let mut e2 = {
        let mut q = queue("office", &[]);
        q.overflow = vec![
            OverflowStepConfig {
                after_secs: 60,
                ..Default::default()
            },
            OverflowStepConfig {
                after_secs: 120,
                move_to: Some("fallback".into()),
                ..Default::default()
            },
        ];
        office_engine(q)
    };
    let now = utc("2026-05-04T09:00:40");
    e2.advance(now);
    e2.add_contact(c.clone(), now);
    let slot = e2.contacts[e2.contact_ix[&c.id] as usize]
        .as_ref()
        .expect("waiting");
    assert_eq!((slot.contact.queue, slot.step), (0, 1));
    let mut e3 = office_engine({
        let mut q = queue("office", &[]);
        q.overflow = vec![OverflowStepConfig {
            after_secs: 120,
            move_to: Some("fallback".into()),
            ..Default::default()
        }];
        q
    });
    let now = utc("2026-05-04T09:05");
    e3.advance(now);
    e3.add_contact(c.clone(), now);
    let slot = e3.contacts[e3.contact_ix[&c.id] as usize]
        .as_ref()
        .expect("waiting");
    assert_eq!(slot.contact.queue, 2, "moved");
    assert_eq!(
        slot.contact.queued_at,
        utc("2026-05-04T09:01:30"),
        "when the move happened"
    );
}

#[test]
fn contacts_waiting_at_closing_time_are_closed_when_the_queue_says_so() {
    let mut close = queue("office", &[]);
    close.after_hours = crate::plan::AfterHours::Close;
    for (office, expect_closed) in [(close, true), (queue("office", &[]), false)] {
        let mut e = office_engine(office);
        // 2026-05-04 is a Monday; nobody to take the contacts.
        let afternoon = utc("2026-05-04T16:59");
        assert!(e.advance(afternoon).is_empty());
        assert!(e.is_queue_open(0));
        let waiting = contact(0, ChannelKind::Chat, afternoon - 60_000);
        let elsewhere = contact(1, ChannelKind::Chat, afternoon);
        e.add_contact(waiting.clone(), afternoon);
        e.add_contact(elsewhere, afternoon);
        assert!(e.advance(afternoon + 30_000).is_empty(), "still open");
        let actions = e.advance(utc("2026-05-04T17:00"));
        assert!(!e.is_queue_open(0));
        if expect_closed {
            assert!(
                matches!(actions[..], [StepAction::ClosedAfterHours { contact, queue: 0 }] if contact == waiting.id),
                "{actions:?}"
            );
            // Said once, at the closing, not at every later look.
            assert!(e.advance(utc("2026-05-04T18:00")).is_empty());
        } else {
            assert!(
                actions.is_empty(),
                "a `wait` queue keeps its contacts: {actions:?}"
            );
        }
        // The engine keeps the contact until its end is reported.
        assert!(e.is_waiting(&waiting.id));
    }
}

#[test]
fn a_contact_coming_into_a_closed_close_queue_is_reported_too() {
    let mut close = queue("office", &[]);
    close.after_hours = crate::plan::AfterHours::Close;
    let mut e = office_engine(close);
    // Sunday: closed all day. A leader loading its state now (or a
    // contact declined back into the queue) sees a waiting contact there.
    let sunday = utc("2026-05-03T12:00");
    let c = contact(0, ChannelKind::Chat, sunday - 3_600_000);
    e.add_contact(c.clone(), sunday);
    let actions = e.advance(sunday);
    assert!(
        matches!(actions[..], [StepAction::ClosedAfterHours { contact, queue: 0 }] if contact == c.id),
        "{actions:?}"
    );
    // The open queue beside it: nothing.
    e.add_contact(contact(1, ChannelKind::Chat, sunday), sunday);
    assert!(e.advance(sunday + 1).is_empty());
}

/// A contact that an overflow step moves into a closed `close` queue is
/// ended then, as one reloaded into it after a failover is: it waited in
/// it until the opening while the leader lived, and was ended only if a
/// failover came first.
#[test]
fn a_contact_moved_into_a_closed_close_queue_is_reported() {
    let mut close = queue("office", &[]);
    close.after_hours = crate::plan::AfterHours::Close;
    let mut always = queue("always", &[]);
    always.overflow = vec![OverflowStepConfig {
        after_secs: 30,
        move_to: Some("office".into()),
        ..Default::default()
    }];
    let mut e = office_engine_with(close, always);
    let sunday = utc("2026-05-03T12:00");
    let c = contact(1, ChannelKind::Chat, sunday);
    e.add_contact(c.clone(), sunday);
    assert!(e.advance(sunday + 29_999).is_empty());
    let actions = e.advance(sunday + 30_000);
    assert!(
        matches!(
            actions[..],
            [
                StepAction::Overflowed { .. },
                StepAction::Moved { from: 1, to: 0, .. },
                StepAction::ClosedAfterHours { contact, queue: 0 }
            ] if contact == c.id
        ),
        "{actions:?}"
    );
}

/// A step's automatic answer due at the closing comes before the closing
/// that ends the contact: the leader sends one contact's steps in order,
/// so the customer does not read "still looking" after "we are closed".
#[test]
fn a_closing_comes_after_the_answers_due_with_it() {
    let mut close = queue("office", &[]);
    close.after_hours = crate::plan::AfterHours::Close;
    close.overflow = vec![OverflowStepConfig {
        after_secs: 30,
        auto_answer: Some("Still looking".into()),
        ..Default::default()
    }];
    let mut e = office_engine(close);
    let before = utc("2026-05-04T16:59:30");
    assert!(e.advance(before).is_empty());
    let c = contact(0, ChannelKind::Chat, before);
    e.add_contact(c.clone(), before);
    let actions = e.advance(utc("2026-05-04T17:00"));
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            StepAction::Overflowed { .. } => "overflowed",
            StepAction::AutoAnswer { .. } => "auto_answer",
            StepAction::ClosedAfterHours { .. } => "closed",
            StepAction::Moved { .. } => "moved",
            StepAction::StickyExpired { .. } => "sticky",
        })
        .collect();
    assert_eq!(
        kinds,
        ["overflowed", "auto_answer", "closed"],
        "{actions:?}"
    );
    assert!(actions.iter().all(|a| *a.contact() == c.id));
}

/// An agent who frees up finds a contact they may take behind more than
/// `SCAN_LIMIT` contacts they declined: it waited, unseen, until an
/// overflow step or the exclusions' lapse marked it again.
#[test]
fn a_free_agent_finds_work_behind_many_contacts_they_declined() {
    let mut e = engine(vec![queue("q", &[])]);
    let mut busy = available(0);
    busy.load = [1, 0, 0, 0];
    e.upsert_agent(profile("a", &[], [1, 0, 0, 0]), busy);
    for i in 0..(SCAN_LIMIT as u64 + 6) {
        let mut c = contact(0, ChannelKind::Chat, i);
        c.excluded = vec![agent_id("a")];
        e.add_contact(c, 100);
    }
    let other = contact(0, ChannelKind::Chat, 1_000);
    e.add_contact(other.clone(), 1_000);
    assert!(e.next_decision(1_000).is_none(), "a is busy");
    e.update_agent(&agent_id("a"), available(2_000));
    let d = e.next_decision(2_000).expect("the contact a may take");
    assert_eq!(d.contact.id, other.id);
}

/// A contact caught up past a move: the answers of the steps it passed in
/// the queue it left (the moving step's included) go out too, not only
/// those of the queue it is in now.
#[test]
fn catching_up_across_a_move_keeps_the_left_queues_answers() {
    let mut a = queue("a", &[]);
    a.overflow = vec![
        OverflowStepConfig {
            after_secs: 30,
            auto_answer: Some("Still looking".into()),
            ..Default::default()
        },
        OverflowStepConfig {
            after_secs: 60,
            auto_answer: Some("Passing you on".into()),
            move_to: Some("b".into()),
            ..Default::default()
        },
    ];
    let mut e = engine(vec![a, queue("b", &[])]);
    let start = 1_000_000;
    let c = contact(0, ChannelKind::Chat, start);
    let id = c.id;
    // The leader died 25 s in; its successor loads the contact at 65 s.
    e.add_contact_catching_up(c, start + 65_000, start + 25_000);
    assert!(e.is_waiting(&id));
    let texts: Vec<(usize, String)> = e
        .advance(start + 65_000)
        .into_iter()
        .filter_map(|a| match a {
            StepAction::AutoAnswer { queue, text, .. } => Some((queue, text)),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [
            (0, "Still looking".to_string()),
            (0, "Passing you on".to_string())
        ]
    );
}

/// Moves may go round (`a` to `b`, `b` back to `a`: follow the sun with
/// each queue's own hours). A contact caught up after a failover is where
/// the rounds put it, however many hops: the catch-up stopped after one hop
/// per queue, at a moving step with no next one, and the contact never
/// moved again.
#[test]
fn catching_up_follows_moves_that_go_round() {
    let moving = |name: &str, to: &str| {
        let mut q = queue(name, &[]);
        q.overflow = vec![OverflowStepConfig {
            after_secs: 60,
            move_to: Some(to.into()),
            ..Default::default()
        }];
        q
    };
    let mut e = engine(vec![moving("a", "b"), moving("b", "a")]);
    let start = 1_000_000;
    let c = contact(0, ChannelKind::Chat, start);
    let id = c.id;
    // a -> b at 60 s, b -> a at 120 s, a -> b at 180 s: in b, 20 s in.
    e.add_contact_catching_up(c, start + 200_000, start + 199_000);
    assert_eq!(e.next_timer(), Some(start + 240_000), "b's move is next");
    let placed = e.remove_contact(&id).expect("waiting");
    assert_eq!((placed.queue, placed.queued_at), (1, start + 180_000));
}

/// Past the bound on the hops a catch-up follows (1,000; here moves of a
/// second and 1,500 s of waiting), the contact makes its move at once and
/// starts the next queue afresh, so it keeps moving. It was left at a
/// moving step with no timer, and never moved again.
#[test]
fn catching_up_past_the_bound_keeps_the_contact_moving() {
    let moving = |name: &str, to: &str| {
        let mut q = queue(name, &[]);
        q.overflow = vec![OverflowStepConfig {
            after_secs: 1,
            move_to: Some(to.into()),
            ..Default::default()
        }];
        q
    };
    let mut e = engine(vec![moving("a", "b"), moving("b", "a")]);
    let start = 1_000_000;
    let now = start + 1_500_000;
    let c = contact(0, ChannelKind::Chat, start);
    let id = c.id;
    e.add_contact_catching_up(c, now, now - 1_000);
    assert_eq!(e.next_timer(), Some(now + 1_000), "its next move is due");
    let placed = e.remove_contact(&id).expect("waiting");
    assert_eq!((placed.queue, placed.queued_at), (0, now));
}
