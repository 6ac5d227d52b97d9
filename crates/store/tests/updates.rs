//! Edits and reply statuses against a real redis-server: they find their
//! message by the provider's id, apply once, never go back, and never make a
//! contact.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use redis::AsyncCommands;
use std::time::Duration;
use switchboard_channel::Outbox;
use switchboard_core::{
    Change, ChannelKind, CustomerIdentity, DeliveryOutcome, InboundUpdate, IntakeOutcome,
    OutboundMessage, ReplyStatus, Timestamp, UpdateOutcome,
};
use switchboard_store::{Conversations, RedisOutbox};
use switchboard_testkit::RedisServer;

fn update(provider_id: &str, update_id: Option<&str>, change: Change) -> InboundUpdate {
    InboundUpdate {
        channel: ChannelKind::Chat,
        source: "website".into(),
        customer: CustomerIdentity::new("visitor", "v1").unwrap(),
        provider_message_id: provider_id.into(),
        update_id: update_id.map(str::to_owned),
        change,
        at: None,
    }
}

fn edit(text: &str) -> Change {
    Change::Edited { text: text.into() }
}

fn status(s: ReplyStatus) -> Change {
    Change::Status {
        status: s,
        detail: None,
    }
}

/// A reply to the contact of `first` through `source`, to `to`.
fn reply_to(
    first: &switchboard_core::IntakeReceipt,
    channel: ChannelKind,
    source: &str,
    from: &str,
    to: &CustomerIdentity,
    text: &str,
) -> OutboundMessage {
    OutboundMessage {
        message_id: switchboard_core::MessageId::new(),
        contact_id: first.contact_id,
        conversation_id: first.conversation_id,
        channel,
        source: source.into(),
        from_address: from.into(),
        to: to.clone(),
        subject: None,
        text: text.into(),
        in_reply_to: None,
        references: Vec::new(),
        created_at: Timestamp::now(),
        automatic: false,
    }
}

/// Takes the next reply from `outbox` and settles it as accepted by the
/// provider under `provider_id`.
async fn settle_accepted(outbox: &RedisOutbox, provider_id: &str) {
    let delivery = outbox
        .next(Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    outbox
        .settle(
            &delivery,
            DeliveryOutcome::delivered(Some(provider_id.into())),
        )
        .await
        .unwrap();
}

/// A private Redis, its store and intake, and one customer message
/// (`tg-1`, "Helo") to update.
async fn one_message() -> (
    RedisServer,
    switchboard_store::Store,
    switchboard_store::RedisIntake,
    switchboard_core::IntakeReceipt,
) {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("v1", Some("tg-1"), "Helo"))
        .await
        .unwrap();
    (redis, store, intake, first)
}

/// An edit of `tg-1` named `id`.
async fn edit_once(intake: &switchboard_store::RedisIntake, id: &str, text: &str) -> UpdateOutcome {
    intake
        .submit_update(update("tg-1", Some(id), edit(text)))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_edit_is_logged_once_against_its_message() {
    let (redis, store, intake, first) = one_message().await;
    assert_eq!(first.outcome, IntakeOutcome::Created);

    let applied = edit_once(&intake, "u-7", "Hello").await;
    assert_eq!(applied, UpdateOutcome::Applied);
    let again = edit_once(&intake, "u-7", "Hello").await;
    assert_eq!(again, UpdateOutcome::Duplicate);
    let unknown = intake
        .submit_update(update("tg-404", Some("u-8"), edit("?")))
        .await
        .unwrap();
    assert_eq!(unknown, UpdateOutcome::UnknownMessage);

    let log = Conversations::new(store.clone())
        .transcript(&first.conversation_id, "-", 100)
        .await
        .unwrap();
    let dirs: Vec<&str> = log.iter().map(|e| e.dir.as_str()).collect();
    assert_eq!(dirs, ["in", "edit"], "one message, one edit");
    assert!(log[1].msg.contains("\"text\":\"Hello\""), "{}", log[1].msg);
    assert!(log[1].msg.contains("\"of_provider_message_id\":\"tg-1\""));

    // No new contact: only the first is in the routing stream.
    let mut conn = raw(&redis).await;
    let mut queued = 0;
    for p in store.keys().all_partitions() {
        let n: usize = conn.xlen(store.keys().routing(p)).await.unwrap();
        queued += n;
    }
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn reply_statuses_move_forward_only() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("v1", Some("m-1"), "Hi"))
        .await
        .unwrap();
    let outbox = RedisOutbox::new(store.clone(), "website", "i1", Duration::from_secs(30)).unwrap();
    let reply = reply_to(
        &first,
        ChannelKind::Chat,
        "website",
        "widget-1",
        &CustomerIdentity::new("visitor", "v1").unwrap(),
        "Hello!",
    );
    outbox.enqueue(&reply).await.unwrap();

    // Before the provider accepted it, a status finds nothing.
    let early = intake
        .submit_update(update("wamid.R1", None, status(ReplyStatus::Delivered)))
        .await
        .unwrap();
    assert_eq!(early, UpdateOutcome::UnknownMessage);

    settle_accepted(&outbox, "wamid.R1").await;
    let apply = |s: ReplyStatus, id: &'static str| {
        let intake = intake.clone();
        async move {
            intake
                .submit_update(update("wamid.R1", Some(id), status(s)))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        apply(ReplyStatus::Delivered, "s1").await,
        UpdateOutcome::Applied
    );
    assert_eq!(apply(ReplyStatus::Read, "s2").await, UpdateOutcome::Applied);
    assert_eq!(
        apply(ReplyStatus::Read, "s2").await,
        UpdateOutcome::Duplicate
    );
    assert_eq!(
        apply(ReplyStatus::Delivered, "s3").await,
        UpdateOutcome::Stale
    );

    let mut conn = raw(&redis).await;
    let stored: String = conn
        .hget(
            store.keys().conversation_status(&first.conversation_id),
            reply.message_id.to_string(),
        )
        .await
        .unwrap();
    assert!(stored.starts_with("3|"), "{stored}");
    assert!(stored.contains("\"status\":\"read\""), "{stored}");
}

#[tokio::test]
async fn an_auto_reply_is_logged_next_to_the_reply_it_answers() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let first = intake
        .submit_event(event("v1", Some("m-1"), "Hi"))
        .await
        .unwrap();
    let outbox = RedisOutbox::new(store.clone(), "website", "i1", Duration::from_secs(30)).unwrap();
    let reply = reply_to(
        &first,
        ChannelKind::Chat,
        "website",
        "widget-1",
        &CustomerIdentity::new("visitor", "v1").unwrap(),
        "Hello!",
    );
    outbox.enqueue(&reply).await.unwrap();
    let ooo = || Change::AutoReply {
        text: "I am out of office until Monday.".into(),
    };
    let early = intake
        .submit_update(update("reply-1@support.example", None, ooo()))
        .await
        .unwrap();
    assert_eq!(early, UpdateOutcome::UnknownMessage);
    settle_accepted(&outbox, "reply-1@support.example").await;
    let applied = intake
        .submit_update(update("reply-1@support.example", Some("ooo-1"), ooo()))
        .await
        .unwrap();
    assert_eq!(applied, UpdateOutcome::Applied);
    let again = intake
        .submit_update(update("reply-1@support.example", Some("ooo-1"), ooo()))
        .await
        .unwrap();
    assert_eq!(again, UpdateOutcome::Duplicate);

    let log = Conversations::new(store.clone())
        .transcript(&first.conversation_id, "-", 100)
        .await
        .unwrap();
    let autos: Vec<_> = log.iter().filter(|e| e.dir == "auto").collect();
    assert_eq!(autos.len(), 1, "{log:?}");
    assert!(autos[0].msg.contains("out of office"), "{:?}", autos[0]);
    assert!(autos[0].msg.contains("reply-1@support.example"));
    // Never a new contact: the conversation still has its one contact.
    let contacts: Vec<String> = raw(&redis).await.keys("sb:*:contact:*").await.unwrap();
    assert_eq!(contacts.len(), 1, "{contacts:?}");
}

/// An offline-form answer: the conversation is the chat source's, the
/// reply is forwarded to the email channel's outbox and mailed from there,
/// and its bounce and the customer's out-of-office answer arrive at the
/// email source, in another partition. They still find the reply.
#[tokio::test]
async fn receipts_of_a_reply_forwarded_to_another_source_find_it() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let keys = store.keys();
    let intake = intake_for(&store);
    // An email source whose partition for this customer is not the chat
    // source's (with 4 partitions that depends on the sources' names).
    let customer = CustomerIdentity::new("email", "olena@example.com").unwrap();
    let source = ["mail", "email", "inbox", "support-mail", "mail-2"]
        .into_iter()
        .find(|s| keys.partition_of("website", &customer) != keys.partition_of(s, &customer))
        .unwrap();
    let mut form = event("v1", Some("form-1"), "Please call me back");
    form.customer = customer.clone();
    let first = intake.submit_event(form).await.unwrap();
    let chat = RedisOutbox::new(store.clone(), "website", "i1", Duration::from_secs(30)).unwrap();
    let mail = RedisOutbox::new(store.clone(), source, "i1", Duration::from_secs(30)).unwrap();
    let reply = reply_to(
        &first,
        ChannelKind::Chat,
        "website",
        "widget-1",
        &customer,
        "We will call you.",
    );
    chat.enqueue(&reply).await.unwrap();
    let handed = chat
        .next(Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    let mut forwarded = reply.clone();
    forwarded.channel = ChannelKind::Email;
    forwarded.source = source.into();
    chat.forward(&handed, forwarded).await.unwrap();
    let delivery = mail
        .next(Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    mail.settle(
        &delivery,
        DeliveryOutcome::delivered(Some("r1@support.example".into())),
    )
    .await
    .unwrap();

    let at_mail = |change: Change, id: &str| InboundUpdate {
        channel: ChannelKind::Email,
        source: source.into(),
        customer: customer.clone(),
        provider_message_id: "r1@support.example".into(),
        update_id: Some(id.into()),
        change,
        at: None,
    };
    let ooo = Change::AutoReply {
        text: "Out of office.".into(),
    };
    assert_eq!(
        intake
            .submit_update(at_mail(ooo.clone(), "ooo-1"))
            .await
            .unwrap(),
        UpdateOutcome::Applied
    );
    assert_eq!(
        intake.submit_update(at_mail(ooo, "ooo-1")).await.unwrap(),
        UpdateOutcome::Duplicate
    );
    let bounce = Change::Status {
        status: ReplyStatus::Failed,
        detail: Some("bounced: 550 no such user".into()),
    };
    assert_eq!(
        intake.submit_update(at_mail(bounce, "b-1")).await.unwrap(),
        UpdateOutcome::Applied
    );
    let mut conn = raw(&redis).await;
    let stored: String = conn
        .hget(
            keys.conversation_status(&first.conversation_id),
            reply.message_id.to_string(),
        )
        .await
        .unwrap();
    assert!(stored.contains("\"status\":\"failed\""), "{stored}");
    let log = Conversations::new(store.clone())
        .transcript(&first.conversation_id, "-", 100)
        .await
        .unwrap();
    assert_eq!(log.iter().filter(|e| e.dir == "auto").count(), 1, "{log:?}");
    // A receipt for an id nobody sent is still unknown.
    let mut stray = at_mail(status(ReplyStatus::Read), "s-9");
    stray.provider_message_id = "nobody@example".into();
    assert_eq!(
        intake.submit_update(stray).await.unwrap(),
        UpdateOutcome::UnknownMessage
    );
}

/// An update's mark is kept apart from messages' marks: a message whose
/// provider id reads `update:<id>` is not taken for an update applied with
/// that id (it got 503 for as long as the mark lived), and the reverse.
#[tokio::test]
async fn update_marks_and_message_marks_do_not_clash() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    intake
        .submit_event(event("v1", Some("tg-1"), "Helo"))
        .await
        .unwrap();
    let applied = edit_once(&intake, "u-7", "Hello").await;
    assert_eq!(applied, UpdateOutcome::Applied);
    let message = intake
        .submit_event(event("v1", Some("update:u-7"), "Another message"))
        .await
        .unwrap();
    assert_eq!(message.outcome, IntakeOutcome::Appended);
    // The update is still known as applied once.
    let again = edit_once(&intake, "u-7", "Hello").await;
    assert_eq!(again, UpdateOutcome::Duplicate);
    // A mark of the old form (before 2026-11-26) still says "applied".
    let mut conn = raw(&redis).await;
    let p = message.contact_id.partition();
    let _: () = conn
        .set(
            store
                .keys()
                .dedupe_before_2026_11_27(p, "website", "update:u-9"),
            "1",
        )
        .await
        .unwrap();
    let old = edit_once(&intake, "u-9", "Hi").await;
    assert_eq!(old, UpdateOutcome::Duplicate);
}

/// An update for a message whose conversation the retention sweep deleted
/// finds nothing, and brings back none of its keys.
#[tokio::test]
async fn an_update_after_the_sweep_brings_nothing_back() {
    let (redis, store, intake, first) = one_message().await;
    let keys = store.keys();
    let log = keys.conversation_log(&first.conversation_id);
    let mut conn = raw(&redis).await;
    // As the sweep leaves it (the dedupe mark lives on until it expires).
    let _: () = conn
        .del(&[keys.conversation(&first.conversation_id), log.clone()])
        .await
        .unwrap();
    let edited = edit_once(&intake, "u-1", "Hello").await;
    assert_eq!(edited, UpdateOutcome::UnknownMessage);
    let back: bool = conn.exists(&log).await.unwrap();
    assert!(!back, "the log is not brought back");
}

/// A WhatsApp customer's message, and a reply to it in the outbox (not
/// handed out yet).
struct WhatsApp {
    redis: RedisServer,
    store: switchboard_store::Store,
    intake: switchboard_store::RedisIntake,
    customer: CustomerIdentity,
    first: switchboard_core::IntakeReceipt,
    outbox: RedisOutbox,
    reply: OutboundMessage,
}

impl WhatsApp {
    async fn with_a_reply_queued(text: &str) -> WhatsApp {
        let redis = RedisServer::start();
        let store = store_for(&redis, 4);
        let intake = intake_for(&store);
        let customer = CustomerIdentity::new("whatsapp", "380501234567").unwrap();
        let first = intake
            .submit_event(switchboard_core::InboundEvent {
                channel: ChannelKind::Social,
                source: "meta".into(),
                address: "1001".into(),
                customer: customer.clone(),
                ..event("v1", Some("wamid.IN1"), "Hi")
            })
            .await
            .unwrap();
        let outbox =
            RedisOutbox::new(store.clone(), "meta", "i1", Duration::from_secs(30)).unwrap();
        let reply = reply_to(&first, ChannelKind::Social, "meta", "1001", &customer, text);
        outbox.enqueue(&reply).await.unwrap();
        WhatsApp {
            redis,
            store,
            intake,
            customer,
            first,
            outbox,
            reply,
        }
    }

    /// WhatsApp's `status` for provider message `part`, with update id `id`.
    async fn receipt(
        &self,
        status: ReplyStatus,
        part: &str,
        id: &str,
        detail: Option<&str>,
    ) -> UpdateOutcome {
        self.intake
            .submit_update(InboundUpdate {
                channel: ChannelKind::Social,
                source: "meta".into(),
                customer: self.customer.clone(),
                provider_message_id: part.into(),
                update_id: Some(id.into()),
                change: Change::Status {
                    status,
                    detail: detail.map(str::to_owned),
                },
                at: None,
            })
            .await
            .unwrap()
    }
}

/// A social provider's receipt that comes before its reply is settled (it
/// outran our record of the provider's answer) is kept, the highest one,
/// and applied when the reply is settled; before, it was acknowledged and
/// lost, and a reply that failed at the provider showed as delivered.
#[tokio::test]
async fn a_social_receipt_before_the_settle_is_applied_at_the_settle() {
    let w = WhatsApp::with_a_reply_queued("Hello!").await;
    let (redis, store, first, outbox, reply) = (&w.redis, &w.store, &w.first, &w.outbox, &w.reply);
    let receipt = |s: ReplyStatus, id: &'static str| w.receipt(s, "wamid.OUT1", id, Some("131047"));
    // `sent` then `failed` arrive before the settle: kept, the higher wins.
    assert_eq!(receipt(ReplyStatus::Sent, "r1").await, UpdateOutcome::Early);
    assert_eq!(
        receipt(ReplyStatus::Failed, "r2").await,
        UpdateOutcome::Early
    );
    assert_eq!(
        receipt(ReplyStatus::Delivered, "r3").await,
        UpdateOutcome::Early
    );
    settle_accepted(outbox, "wamid.OUT1").await;
    let states = Conversations::new(store.clone())
        .reply_states(&first.conversation_id)
        .await
        .unwrap();
    let (delivered, status) = &states[&reply.message_id.to_string()];
    assert!(delivered.is_some());
    let status = status.as_deref().expect("the early status, applied");
    assert!(
        status.contains("\"failed\"") && status.contains("131047"),
        "{status}"
    );
    // Applied once: the kept status is gone, and later receipts apply as
    // they always did (a lower one is stale).
    let mut conn = raw(redis).await;
    let kept: bool = conn
        .exists(format!(
            "{}:early",
            store
                .keys()
                .reply_ref(first.conversation_id.partition(), "meta", "wamid.OUT1")
        ))
        .await
        .unwrap();
    assert!(!kept);
    assert_eq!(receipt(ReplyStatus::Read, "r4").await, UpdateOutcome::Stale);
}

/// A reply sent in three parts: a receipt for any part finds it, whether it
/// comes after the settle or before it (kept, then applied). Before, only
/// the last part's id was recorded: WhatsApp failing part 1 went unseen
/// and the reply showed as delivered.
#[tokio::test]
async fn a_receipt_for_any_part_of_a_reply_finds_it() {
    let w = WhatsApp::with_a_reply_queued("A long answer").await;
    let (store, first, outbox, reply) = (&w.store, &w.first, &w.outbox, &w.reply);
    let receipt =
        |s: ReplyStatus, part: &'static str, id: &'static str| w.receipt(s, part, id, None);
    // Part 2's `sent` comes before the settle: kept.
    assert_eq!(
        receipt(ReplyStatus::Sent, "wamid.P2", "r1").await,
        UpdateOutcome::Early
    );
    let delivery = outbox
        .next(Duration::from_millis(500))
        .await
        .unwrap()
        .unwrap();
    outbox
        .settle(
            &delivery,
            DeliveryOutcome::Delivered {
                provider_message_id: Some("wamid.P3".into()),
                earlier_ids: vec!["wamid.P1".into(), "wamid.P2".into()],
            },
        )
        .await
        .unwrap();
    let status = || async {
        let states = Conversations::new(store.clone())
            .reply_states(&first.conversation_id)
            .await
            .unwrap();
        states[&reply.message_id.to_string()].1.clone()
    };
    let kept = status().await.expect("part 2's early status, applied");
    assert!(kept.contains("\"sent\""), "{kept}");
    // Part 3 delivered, then part 1 failed: the reply failed.
    assert_eq!(
        receipt(ReplyStatus::Delivered, "wamid.P3", "r2").await,
        UpdateOutcome::Applied
    );
    assert_eq!(
        receipt(ReplyStatus::Failed, "wamid.P1", "r3").await,
        UpdateOutcome::Applied
    );
    let failed = status().await.expect("a status");
    assert!(failed.contains("\"failed\""), "{failed}");
}

/// A status for a message we never sent (another app on the same WhatsApp
/// number): with no reply to that customer on its way it is unknown, not
/// kept as early for ten minutes (and counted so) as before.
#[tokio::test]
async fn a_status_of_a_message_we_never_sent_is_not_kept() {
    let redis = RedisServer::start();
    let store = store_for(&redis, 4);
    let intake = intake_for(&store);
    let customer = CustomerIdentity::new("whatsapp", "380501234999").unwrap();
    let outcome = intake
        .submit_update(InboundUpdate {
            channel: ChannelKind::Social,
            source: "meta".into(),
            customer: customer.clone(),
            provider_message_id: "wamid.NEVER".into(),
            update_id: Some("n1".into()),
            change: Change::Status {
                status: ReplyStatus::Delivered,
                detail: None,
            },
            at: None,
        })
        .await
        .unwrap();
    assert_eq!(outcome, UpdateOutcome::UnknownMessage);
    let p = store.keys().partition_of("meta", &customer);
    let kept: bool = raw(&redis)
        .await
        .exists(format!(
            "{}:early",
            store.keys().reply_ref(p, "meta", "wamid.NEVER")
        ))
        .await
        .unwrap();
    assert!(!kept);
}
