//! Folding a busy day's KPI facts into the report of a window.
//!
//!   cargo bench -p switchboard-records --bench fold
//!
//! A day of 50,000 contacts (50 queues, 200 agents, 4 channels): each
//! entered, answered or abandoned, closed, some rated, some reopened, and
//! the agents' state changes: ~250,000 facts. Prints how long adding them
//! takes and one report per window, then runs criterion on the 24 h and
//! 5 min reports. Figures: docs/benchmarks.md.
#![allow(clippy::unwrap_used)]

use criterion::Criterion;
use std::hint::black_box;
use std::time::Instant;
use switchboard_records::kpi::{Fact, Kpis};

const DAY: u64 = 86_400_000;
const T0: u64 = 1_800_000_000_000;

fn day() -> Vec<(u64, Fact)> {
    let mut facts = Vec::new();
    let channels = ["chat", "email", "social", "voice"];
    for i in 0..50_000u64 {
        let at = T0 + i * DAY / 50_000;
        let c = format!("c{i}");
        let q = format!("q{}", i % 50);
        let ch = channels[(i % 4) as usize].to_owned();
        let ag = format!("a{}", i % 200);
        facts.push((
            at,
            Fact::Entered {
                contact: c.clone(),
                queue: q.clone(),
                channel: ch.clone(),
                moved: false,
            },
        ));
        if i % 10 == 0 {
            facts.push((
                at + 30_000,
                Fact::Abandoned {
                    contact: c,
                    queue: q,
                    channel: ch,
                    wait_ms: 30_000,
                    moved: false,
                },
            ));
            continue;
        }
        let wait = (i * 7919) % 120_000;
        facts.push((
            at + wait,
            Fact::Answered {
                contact: c.clone(),
                queue: q.clone(),
                channel: ch.clone(),
                agent: ag.clone(),
                wait_ms: wait,
                moved: false,
            },
        ));
        facts.push((
            at + wait,
            Fact::Agent {
                agent: ag.clone(),
                online: true,
                presence: "available".into(),
                busy: true,
            },
        ));
        let handle = 60_000 + (i * 104_729) % 600_000;
        facts.push((
            at + wait + handle,
            Fact::Closed {
                contact: c.clone(),
                queue: q.clone(),
                channel: ch.clone(),
                agent: ag.clone(),
                handle_ms: Some(handle),
            },
        ));
        facts.push((
            at + wait + handle,
            Fact::Agent {
                agent: ag.clone(),
                online: true,
                presence: "available".into(),
                busy: false,
            },
        ));
        if i % 3 == 0 {
            facts.push((
                at + wait + handle + 1000,
                Fact::Rated {
                    queue: q,
                    channel: ch,
                    agent: ag,
                    score: (i % 5 + 1) as u8,
                },
            ));
        }
        if i % 17 == 0 {
            facts.push((
                at + wait + handle + 3_600_000,
                Fact::Reopened { contact: c },
            ));
        }
    }
    facts.sort_by_key(|(t, _)| *t);
    facts
}

fn main() {
    let facts = day();
    let n = facts.len();
    let started = Instant::now();
    let mut kpis = Kpis::default();
    for (at, f) in facts {
        kpis.add(at, f);
    }
    println!("added {n} facts in {:?}", started.elapsed());
    let now = T0 + DAY + 3_600_000;
    let target = |_: &str| 60_000;
    for (name, window) in [("5m", 300_000), ("1h", 3_600_000), ("24h", DAY)] {
        let started = Instant::now();
        let r = kpis.report(name, now, window, &target);
        println!(
            "report {name}: {:?} ({} answered, {} queues, {} agents)",
            started.elapsed(),
            r.total.answered,
            r.queues.len(),
            r.agents.len()
        );
    }
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    c.bench_function("report 24h of 50k contacts", |b| {
        b.iter(|| black_box(kpis.report("24h", now, DAY, &target)))
    });
    c.bench_function("report 5m of 50k contacts", |b| {
        b.iter(|| black_box(kpis.report("5m", now, 300_000, &target)))
    });
    c.final_summary();
}
