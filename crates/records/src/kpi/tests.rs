//! The KPI definitions on small hand-computed scripts.
#![allow(clippy::unwrap_used)]

use super::*;

const MIN: u64 = 60_000;

fn target(q: &str) -> u64 {
    if q == "sales" { 20_000 } else { 60_000 }
}

fn entered(k: &mut Kpis, at: u64, c: &str, q: &str) {
    entered_as(k, at, c, q, false);
}

/// `moved`: an entry after the contact's answer (a transfer).
fn entered_as(k: &mut Kpis, at: u64, c: &str, q: &str, moved: bool) {
    k.add(
        at,
        Fact::Entered {
            contact: c.into(),
            queue: q.into(),
            channel: "chat".into(),
            moved,
        },
    );
}

fn answered(k: &mut Kpis, at: u64, c: &str, q: &str, ag: &str, wait_ms: u64) {
    k.add(
        at,
        Fact::Answered {
            contact: c.into(),
            queue: q.into(),
            channel: "chat".into(),
            agent: ag.into(),
            wait_ms,
            moved: false,
        },
    );
}

fn closed(k: &mut Kpis, at: u64, c: &str, q: &str, ag: &str, handle_ms: u64) {
    k.add(
        at,
        Fact::Closed {
            contact: c.into(),
            queue: q.into(),
            channel: "chat".into(),
            agent: ag.into(),
            handle_ms: Some(handle_ms),
        },
    );
}

fn rated(k: &mut Kpis, at: u64, score: u8) {
    k.add(
        at,
        Fact::Rated {
            queue: "sales".into(),
            channel: "chat".into(),
            agent: "ann".into(),
            score,
        },
    );
}

#[test]
fn a_small_day_gives_the_hand_computed_figures() {
    let t0 = 1_000 * MIN;
    let mut k = Kpis::default();
    // c1: answered after 10 s (within 20 s), handled 5 min.
    entered(&mut k, t0, "c1", "sales");
    answered(&mut k, t0 + 10_000, "c1", "sales", "ann", 10_000);
    closed(&mut k, t0 + 10_000 + 5 * MIN, "c1", "sales", "ann", 5 * MIN);
    // c2: answered after 30 s (late), handled 3 min; c3: abandoned.
    entered(&mut k, t0 + MIN, "c2", "sales");
    answered(&mut k, t0 + MIN + 30_000, "c2", "sales", "ann", 30_000);
    closed(&mut k, t0 + 4 * MIN + 30_000, "c2", "sales", "ann", 3 * MIN);
    entered(&mut k, t0 + 2 * MIN, "c3", "sales");
    k.add(
        t0 + 2 * MIN + 40_000,
        Fact::Abandoned {
            contact: "c3".into(),
            queue: "sales".into(),
            channel: "chat".into(),
            wait_ms: 40_000,
            moved: false,
        },
    );
    // c1's customer comes back: c1 was not resolved at first contact.
    k.add(
        t0 + 7 * MIN,
        Fact::Reopened {
            contact: "c1".into(),
        },
    );
    rated(&mut k, t0 + 8 * MIN, 4);
    rated(&mut k, t0 + 8 * MIN, 5);
    let r = k.report("1h", t0 + 10 * MIN, 60 * MIN, &target);
    let s = &r.queues["sales"];
    assert_eq!((s.offered, s.answered, s.abandoned, s.closed), (3, 2, 1, 2));
    assert_eq!(s.asa_secs, Some(20.0));
    assert_eq!(s.service_level, Some(0.3333));
    assert_eq!(s.abandonment_rate, Some(0.3333));
    assert_eq!(s.aht_secs, Some(240.0));
    assert_eq!((s.reopened, s.fcr_rate), (1, Some(0.5)));
    assert_eq!((s.csat_count, s.csat_avg), (2, Some(4.5)));
    assert_eq!((s.wait_p50_secs, s.wait_p90_secs), (Some(10.0), Some(30.0)));
    assert_eq!(r.agents["ann"].answered, 2);
    assert_eq!(r.total, *s);
    // The 5-minute window ending then, (t0+5m, t0+10m], sees c1's close
    // (at t0+5m10s, reopened since) and the ratings, nothing else.
    let r5 = k.report("5m", t0 + 10 * MIN, 5 * MIN, &target);
    assert_eq!(r5.total.offered, 0);
    assert_eq!(r5.total.csat_count, 2);
    assert_eq!((r5.total.closed, r5.total.fcr_rate), (1, Some(0.0)));
    assert_eq!(r5.total.aht_secs, Some(300.0));
}

#[test]
fn occupancy_integrates_an_agents_states_over_the_window() {
    let t0 = 1_000 * MIN;
    let mut k = Kpis::default();
    let state = |online: bool, presence: &str, busy: bool| Fact::Agent {
        agent: "ann".into(),
        online,
        presence: presence.into(),
        busy,
    };
    k.add(t0, state(true, "available", false)); // idle 10 min
    k.add(t0 + 10 * MIN, state(true, "available", true)); // busy 30 min
    k.add(t0 + 40 * MIN, state(true, "away", false)); // away 10 min: not counted
    k.add(t0 + 50 * MIN, state(true, "available", false)); // idle 10 min
    let r = k.report("1h", t0 + 60 * MIN, 60 * MIN, &target);
    assert_eq!(r.agents["ann"].occupancy, Some(0.6));
    // A window starting in the middle of the first state counts its rest.
    let r = k.report("5m", t0 + 12 * MIN, 5 * MIN, &target);
    assert_eq!(r.agents["ann"].occupancy, Some(0.4));
    // Pruning keeps the state in force at the cut.
    k.prune(t0 + 20 * MIN);
    let r = k.report("5m", t0 + 25 * MIN, 5 * MIN, &target);
    assert_eq!(r.agents["ann"].occupancy, Some(1.0));
}

#[test]
fn facts_parse_from_their_stored_fields() {
    let fields: HashMap<String, String> = [
        ("k", "answered"),
        ("at", "1234"),
        ("c", "3-abc"),
        ("q", "sales"),
        ("ch", "email"),
        ("ag", "ann"),
        ("w", "4500"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(
        Fact::parse(&fields),
        Some((
            1234,
            Fact::Answered {
                contact: "3-abc".into(),
                queue: "sales".into(),
                channel: "email".into(),
                agent: "ann".into(),
                wait_ms: 4500,
                moved: false,
            }
        ))
    );
    let mut unknown = fields.clone();
    unknown.insert("k".into(), "something_new".into());
    assert_eq!(Fact::parse(&unknown), None);
}

/// Damaged facts (times far out of range) give absurd figures, never an
/// overflow: the sums saturate.
#[test]
fn absurd_durations_saturate_rather_than_overflow() {
    let mut k = Kpis::default();
    let t0 = 100 * MIN;
    entered(&mut k, t0, "c1", "sales");
    answered(&mut k, t0 + 1, "c1", "sales", "ann", u64::MAX);
    entered(&mut k, t0 + 2, "c2", "sales");
    answered(&mut k, t0 + 3, "c2", "sales", "ann", u64::MAX);
    closed(&mut k, t0 + 4, "c1", "sales", "ann", u64::MAX);
    closed(&mut k, t0 + 5, "c2", "sales", "ann", u64::MAX);
    let r = k.report("1h", t0 + MIN, 60 * MIN, &target);
    assert_eq!(r.total.closed, 2);
    assert!(
        r.total.aht_secs.is_some_and(|s| s > 1e12),
        "{:?}",
        r.total.aht_secs
    );
    assert!(
        r.total.asa_secs.is_some_and(|s| s > 1e12),
        "{:?}",
        r.total.asa_secs
    );
}

/// A fact without its time, or a rating without a score of 1 to 5, is
/// damaged: skipped (the caller counts it), never read as 0.
#[test]
fn damaged_facts_are_skipped_not_read_as_zero() {
    let fields = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let rated = |s: Option<&str>| {
        let mut f = fields(&[("k", "rated"), ("at", "1800000000000"), ("q", "sales")]);
        if let Some(s) = s {
            f.insert("s".into(), s.into());
        }
        Fact::parse(&f)
    };
    assert!(matches!(
        rated(Some("4")),
        Some((1_800_000_000_000, Fact::Rated { score: 4, .. }))
    ));
    for bad in [None, Some("0"), Some("6"), Some("-1"), Some("x")] {
        assert!(rated(bad).is_none(), "score {bad:?}");
    }
    let entered = fields(&[("k", "enqueued"), ("c", "c1"), ("q", "sales")]);
    assert!(Fact::parse(&entered).is_none(), "no time");
    let mut timed = entered.clone();
    timed.insert("at".into(), "1800000000000".into());
    assert!(Fact::parse(&timed).is_some());
    timed.insert("at".into(), "soon".into());
    assert!(Fact::parse(&timed).is_none(), "an unreadable time");
}

/// The position in the fact stream: facts at or before it were added.
#[test]
fn the_position_tells_facts_added_from_new_ones() {
    let mut kpis = Kpis::default();
    assert_eq!(kpis.position(), "-");
    assert!(kpis.is_after("1-0"));
    kpis.passed("1795341600000-3".into());
    assert_eq!(kpis.position(), "1795341600000-3");
    assert!(!kpis.is_after("1795341600000-3"));
    assert!(!kpis.is_after("1795341600000-2"));
    assert!(
        !kpis.is_after("999999999999-9"),
        "compared as numbers, not text"
    );
    assert!(kpis.is_after("1795341600000-4"));
    assert!(kpis.is_after("1795341600000-10"));
    assert!(kpis.is_after("1795341600001-0"));
}

/// A call whose end was never reported, closed by routing `max_call_secs`
/// after its answer (`call_end_lost`), counts as closed but not in the
/// average handle time: its four hours made a queue of five-minute calls
/// look like one of seven.
#[test]
fn a_call_closed_for_a_lost_end_is_not_in_the_handle_time() {
    let fact = |d: &str| {
        let fields: HashMap<String, String> = [
            ("k", "closed"),
            ("at", "1234"),
            ("c", "3-abc"),
            ("q", "sales"),
            ("ch", "voice"),
            ("ag", "ann"),
            ("h", "14400000"),
            ("d", d),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        Fact::parse(&fields).unwrap()
    };
    assert!(matches!(
        fact("resolved").1,
        Fact::Closed {
            handle_ms: Some(14_400_000),
            ..
        }
    ));
    let (_, lost) = fact("call_end_lost");
    assert!(
        matches!(
            lost,
            Fact::Closed {
                handle_ms: None,
                ..
            }
        ),
        "{lost:?}"
    );

    let mut k = Kpis::default();
    let t0 = 100 * MIN;
    entered(&mut k, t0, "c1", "sales");
    answered(&mut k, t0 + 1, "c1", "sales", "ann", 1_000);
    closed(&mut k, t0 + 5 * MIN, "c1", "sales", "ann", 5 * MIN);
    k.add(t0 + 6 * MIN, lost);
    let r = k.report("1h", t0 + 10 * MIN, 60 * MIN, &target);
    assert_eq!(r.total.closed, 2);
    assert_eq!(r.total.aht_secs, Some(300.0));
}

/// A contact answered in one queue and transferred to another counts for
/// both queues, but once in the total and its channel: offered once,
/// answered once, and never abandoned there when the caller hangs up while
/// waiting in the second queue (it was answered).
#[test]
fn a_transferred_contact_counts_once_in_the_totals() {
    let mut k = Kpis::default();
    let t0 = 100 * MIN;
    entered(&mut k, t0, "c1", "sales");
    answered(&mut k, t0 + 10_000, "c1", "sales", "ann", 10_000);
    k.add(
        t0 + MIN,
        Fact::Transferred {
            contact: "c1".into(),
            queue: "sales".into(),
            channel: "chat".into(),
            agent: "ann".into(),
        },
    );
    entered_as(&mut k, t0 + MIN, "c1", "billing", true);
    k.add(
        t0 + MIN + 5_000,
        Fact::Answered {
            contact: "c1".into(),
            queue: "billing".into(),
            channel: "chat".into(),
            agent: "bob".into(),
            wait_ms: 5_000,
            moved: true,
        },
    );
    // c2: answered, transferred, and abandoned while waiting in billing.
    entered(&mut k, t0, "c2", "sales");
    answered(&mut k, t0 + 1_000, "c2", "sales", "ann", 1_000);
    entered_as(&mut k, t0 + MIN, "c2", "billing", true);
    k.add(
        t0 + 2 * MIN,
        Fact::Abandoned {
            contact: "c2".into(),
            queue: "billing".into(),
            channel: "chat".into(),
            wait_ms: MIN,
            moved: true,
        },
    );
    let r = k.report("1h", t0 + 10 * MIN, 60 * MIN, &target);
    let counts = |f: &Figures| (f.offered, f.answered, f.abandoned);
    assert_eq!(counts(&r.total), (2, 2, 0), "the total counts contacts");
    assert_eq!(counts(&r.channels["chat"]), (2, 2, 0));
    assert_eq!(counts(&r.queues["sales"]), (2, 2, 0));
    assert_eq!(
        counts(&r.queues["billing"]),
        (2, 1, 1),
        "each queue its entries"
    );
    assert_eq!(r.agents["bob"].answered, 1);
    assert_eq!(r.total.abandonment_rate, Some(0.0));
}
