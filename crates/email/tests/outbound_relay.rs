//! Replies out through a relay that misbehaves, against a real Redis
//! outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use switchboard_channel::Outbox;
use switchboard_core::{
    ChannelKind, ContactId, ConversationId, CustomerIdentity, MessageId, OutboundMessage,
    Partition, Timestamp,
};
use switchboard_email::config::SmtpConfig;
use switchboard_email::outbound::Sender;
use switchboard_store::{RedisOutbox, Store, StoreConfig};
use switchboard_testkit::RedisServer;

/// A reply to `to` in the `mail` outbox, and the outbox's delivery of it.
async fn queued_reply(
    store: &Store,
    to: &str,
    text: &str,
) -> (
    OutboundMessage,
    RedisOutbox,
    switchboard_channel::OutboundDelivery,
) {
    let reply = OutboundMessage {
        message_id: MessageId::new(),
        contact_id: ContactId::new(Partition(1)),
        conversation_id: ConversationId::new(Partition(1)),
        channel: ChannelKind::Email,
        source: "mail".into(),
        from_address: "help@support.example.com".into(),
        to: CustomerIdentity::new("email", to).unwrap(),
        subject: Some("Order 4411".into()),
        text: text.into(),
        in_reply_to: None,
        references: Vec::new(),
        created_at: Timestamp::now(),
        automatic: false,
    };
    RedisOutbox::enqueue_to(store, &reply).await.unwrap();
    let outbox = RedisOutbox::new(store.clone(), "mail", "test", Duration::from_secs(60)).unwrap();
    let delivery = outbox
        .next(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the reply");
    (reply, outbox, delivery)
}

/// What the outbox recorded of `reply` (its delivery state JSON), if
/// anything.
async fn settled(redis: &RedisServer, store: &Store, reply: &OutboundMessage) -> Option<String> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("HGET")
        .arg(store.keys().conversation_delivery(&reply.conversation_id))
        .arg(reply.message_id.to_string())
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A relay that takes the connection and never says a word (a stuck
/// content filter does the same after the data): the delivery gives up
/// within `timeout_secs` and is deferred. It used to wait for ever, holding
/// up every later reply of the channel, until another instance took it over
/// after the outbox's timeout and sent it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_answers_defers_the_reply() {
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config: SmtpConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout_secs = 1"
    ))
    .unwrap();
    let sender = Sender::new("mail", &config).unwrap();

    let (_, outbox, delivery) =
        queued_reply(&store, "olena@customer.example", "It ships today.").await;

    tokio::time::timeout(
        Duration::from_secs(10),
        sender.deliver(&outbox, "mail", delivery),
    )
    .await
    .expect("the delivery gives up on a silent relay");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deferred: usize = redis::cmd("ZCARD")
        .arg(store.keys().outbox_deferred("mail"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deferred, 1, "deferred for a retry");
    assert!(
        outbox
            .next(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "not handed out again before its retry is due"
    );
}

/// A customer address that needs SMTPUTF8, and a relay (a real Postfix)
/// that does not offer it: the reply fails at once with the reason, rather
/// than being retried for hours with no chance of success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_the_relay_cannot_take_fails_at_once() {
    use switchboard_testkit::postfix::{Postfix, PostfixOptions};
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    let postfix = Postfix::start(
        PostfixOptions::new()
            .local_domain("customer.example")
            .main_cf("smtputf8_enable", "no"),
    );
    let config: SmtpConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout_secs = 5",
        postfix.smtp_port()
    ))
    .unwrap();
    let sender = Sender::new("mail", &config).unwrap();
    let (reply, outbox, delivery) =
        queued_reply(&store, "олена@customer.example", "Відправлено сьогодні.").await;
    tokio::time::timeout(
        Duration::from_secs(20),
        sender.deliver(&outbox, "mail", delivery),
    )
    .await
    .expect("the delivery ends");
    let state = settled(&redis, &store, &reply)
        .await
        .expect("settled, not deferred");
    assert!(
        state.contains("\"failed\"") && state.contains("SMTPUTF8"),
        "{state}"
    );
    assert!(postfix.maildir_messages("customer.example").is_empty());
}

/// A relay that refuses the channel's credentials (a real Postfix
/// authenticating against a real Dovecot: `535 5.7.8`) defers the reply
/// for a retry and counts it, rather than settling it failed for good: a
/// rotated password failed every reply sent until someone noticed. With
/// the right password the same relay takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_refuses_our_credentials_defers_the_reply() {
    use switchboard_testkit::dovecot::Dovecot;
    use switchboard_testkit::postfix::{Postfix, PostfixOptions};
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    let dovecot = Dovecot::start_with_users(&[("relay", "right-password")]);
    let sasl = format!("inet:127.0.0.1:{}", dovecot.auth_port());
    let postfix = Postfix::start(
        PostfixOptions::new()
            .local_domain("customer.example")
            .main_cf("smtpd_sasl_auth_enable", "yes")
            .main_cf("smtpd_sasl_type", "dovecot")
            .main_cf("smtpd_sasl_path", &sasl)
            .main_cf("mynetworks", "")
            .main_cf(
                "smtpd_relay_restrictions",
                "permit_sasl_authenticated, reject",
            ),
    );
    let sender = |password: &str| {
        let config: SmtpConfig = toml::from_str(&format!(
            "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout_secs = 10\n\
             user = \"relay\"\npassword = \"{password}\"",
            postfix.smtp_port()
        ))
        .unwrap();
        Sender::new("mail", &config).unwrap()
    };
    let counters = switchboard_testkit::counters::Counters::default();
    let recorder = metrics::set_default_local_recorder(&counters);
    let (reply, outbox, delivery) =
        queued_reply(&store, "olena@customer.example", "It ships today.").await;
    tokio::time::timeout(
        Duration::from_secs(20),
        sender("wrong-password").deliver(&outbox, "mail", delivery),
    )
    .await
    .expect("the delivery ends");
    drop(recorder);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(
        settled(&redis, &store, &reply).await,
        None,
        "not settled failed"
    );
    let deferred: usize = redis::cmd("ZCARD")
        .arg(store.keys().outbox_deferred("mail"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deferred, 1, "deferred for a retry");
    assert_eq!(
        counters.get("switchboard_email_relay_auth_failures_total{source=mail}"),
        1,
        "{}",
        counters.dump()
    );
    assert!(
        postfix.log().contains("authentication failed"),
        "{}",
        postfix.log()
    );

    // The same relay with the right password takes the reply.
    let (reply, outbox, delivery) =
        queued_reply(&store, "olena@customer.example", "It ships today, really.").await;
    sender("right-password")
        .deliver(&outbox, "mail", delivery)
        .await;
    let settled = settled(&redis, &store, &reply).await.expect("settled");
    assert!(settled.contains("\"delivered\""), "{settled}");
    postfix.wait_for_maildir("customer.example", 1, Duration::from_secs(20));
}
