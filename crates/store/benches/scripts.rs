//! What each script of a contact's life costs Redis: the intake of its
//! first message and of three follow-ups, then routing (enqueue, offer,
//! accept, close), run for many contacts against a private redis-server,
//! one phase at a time, with `INFO commandstats` read around each phase,
//! so the figure is Redis's own time per call (inner commands included),
//! not the round trip. Run with:
//!
//!   cargo bench -p switchboard-store --bench scripts
//!
//! SWITCHBOARD_BENCH_CONTACTS (default 20,000) sets the contacts per run.
//! Use it to compare a change to the Lua scripts before and after (the
//! end-to-end figures are in docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use switchboard_core::{ChannelKind, ContactId, Partition};
use switchboard_core::{CustomerIdentity, InboundEvent};
use switchboard_store::{
    AgentRecord, Answer, IntakeSettings, NewRoute, Offer, RedisIntake, RoutingState, Store,
    StoreConfig,
};
use switchboard_testkit::RedisServer;

const NOW: u64 = 1_800_000_000_000;
const AGENTS: usize = 100;

/// Calls and microseconds of EVALSHA so far.
async fn evalsha(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .unwrap_or("");
    let field = |name: &str| {
        line.split([':', ','])
            .find_map(|p| p.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls="), field("usec="))
}

fn main() {
    let contacts: usize = std::env::var("SWITCHBOARD_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    runtime.block_on(async {
        let store = Store::new(StoreConfig {
            url: redis.url(),
            password: None,
            key_prefix: "sb".into(),
            partitions: 8,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            topology: Default::default(),
        })
        .unwrap();
        let intake = RedisIntake::new(
            store.clone(),
            IntakeSettings {
                dedupe_window: Duration::from_secs(7 * 24 * 3600),
                limits: Default::default(),
            },
        );
        let state = RoutingState::new(store);
        let mut stats = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for i in 0..AGENTS {
            let id = format!("a{i:03}");
            let agent = AgentRecord {
                id: id.clone(),
                name: format!("Agent {i}"),
                skills: vec![("billing".into(), 3)],
                capacity: [u32::try_from(contacts / AGENTS + 1).unwrap(), 0, 0, 0],
                total_capacity: 0,
                token_sha256: format!("{id:0>64}"),
            };
            state.upsert_agent(&agent, "bench").await.unwrap();
            state
                .set_presence(&id, Some(("available", "")), Some(u64::MAX / 2), None)
                .await
                .unwrap();
        }
        let token = state
            .acquire_lease("bench", Duration::from_secs(600))
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<ContactId> = (0..contacts)
            .map(|i| ContactId::new(Partition(u16::try_from(i % 8).unwrap())))
            .collect();
        let agent_of = |i: usize| format!("a{:03}", i % AGENTS);
        let customers: Vec<String> = (0..contacts).map(|i| format!("visitor:v{i}")).collect();

        println!("scripts, {contacts} contacts, {AGENTS} agents: Redis time per call");
        let phase = |name: &'static str, before: (u64, u64), after: (u64, u64)| {
            let calls = after.0 - before.0;
            let usec = after.1 - before.1;
            println!(
                "  {name:<22} {calls:>7} calls  {:>6.1} us/call",
                usec as f64 / calls.max(1) as f64
            );
        };

        // As the intake bench submits: a provider id each, a short text.
        let message = |customer: usize, n: usize| InboundEvent {
            channel: ChannelKind::Chat,
            source: "web".into(),
            address: "widget-1".into(),
            customer: CustomerIdentity::new("visitor", &format!("v{customer}")).unwrap(),
            customer_name: None,
            provider_message_id: Some(format!("m{customer}-{n}")),
            subject: None,
            text: "benchmark message of an ordinary length, about sixty bytes".into(),
            language: None,
            attributes: Default::default(),
            sent_at: None,
            new_contact: false,
            media: Vec::new(),
        };
        let before = evalsha(&mut stats).await;
        for customer in 0..contacts {
            intake.submit_event(message(customer, 0)).await.unwrap();
        }
        phase("intake, first message", before, evalsha(&mut stats).await);
        let before = evalsha(&mut stats).await;
        for n in 1..4 {
            for customer in 0..contacts {
                intake.submit_event(message(customer, n)).await.unwrap();
            }
        }
        phase("intake, follow-up", before, evalsha(&mut stats).await);

        let before = evalsha(&mut stats).await;
        for (i, id) in ids.iter().enumerate() {
            let queued = state
                .enqueue(&NewRoute {
                    contact: id,
                    queue: "general",
                    channel: ChannelKind::Chat,
                    priority: 0,
                    // Distinct times, as in life (equal sorted-set scores
                    // would make Redis compare members instead).
                    since: NOW + i as u64,
                    now: NOW + i as u64,
                    rule: "",
                    source: "web",
                    customer: &customers[i],
                    sticky: None,
                    sticky_memory: Some(NOW + 30_000),
                    person: "",
                })
                .await
                .unwrap();
            assert!(queued);
        }
        phase("enqueue", before, evalsha(&mut stats).await);

        let before = evalsha(&mut stats).await;
        for (i, id) in ids.iter().enumerate() {
            let agent = agent_of(i);
            let outcome = state
                .offer(&Offer {
                    token: &token,
                    contact: id,
                    agent: &agent,
                    now: NOW + 1,
                    until: NOW + 30_000,
                    auto_accept: false,
                    interrupt_voice: "",
                    explanation: r#"{"at":1,"kind":"offer","explanation":{"candidates":[{"agent":"a001","score":0}],"chosen":"a001"}}"#,
                    step: 0,
                    exclusion: Duration::ZERO,
                })
                .await
                .unwrap();
            assert_eq!(outcome, "ok");
        }
        phase("offer", before, evalsha(&mut stats).await);

        let before = evalsha(&mut stats).await;
        for (i, id) in ids.iter().enumerate() {
            let outcome = state
                .answer(Answer::Accept, id, &agent_of(i), NOW + 2, 3)
                .await
                .unwrap();
            assert_eq!(outcome, "ok");
        }
        phase("accept", before, evalsha(&mut stats).await);

        let before = evalsha(&mut stats).await;
        for (i, id) in ids.iter().enumerate() {
            let outcome = state
                .close(
                    id,
                    &agent_of(i),
                    NOW + 3,
                    "done",
                    0,
                    Duration::from_secs(3600),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();
            assert_eq!(outcome, "ok");
        }
        phase("close", before, evalsha(&mut stats).await);
    });
}
