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

/// A reply queued in a fresh Redis and delivered once through the relay
/// on `port` (`settings`: more of `[channels.smtp]`), within 10 s: the
/// server, the store, the reply and its outbox.
async fn delivered_once(
    port: u16,
    settings: &str,
) -> (RedisServer, Store, OutboundMessage, RedisOutbox) {
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    let config: SmtpConfig =
        toml::from_str(&format!("host = \"127.0.0.1\"\nport = {port}\n{settings}")).unwrap();
    let sender = Sender::new("mail", &config).unwrap();
    let (reply, outbox, delivery) =
        queued_reply(&store, "olena@customer.example", "It ships today.").await;
    tokio::time::timeout(
        Duration::from_secs(10),
        sender.deliver(&outbox, "mail", delivery),
    )
    .await
    .expect("the delivery ends");
    (redis, store, reply, outbox)
}

/// A relay that takes the connection and never says a word (a stuck
/// content filter does the same after the data): the delivery gives up
/// within `timeout_secs` and is deferred. It used to wait for ever, holding
/// up every later reply of the channel, until another instance took it over
/// after the outbox's timeout and sent it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_never_answers_defers_the_reply() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // The delivery gives up on a silent relay (within 10 s).
    let (redis, store, _, outbox) =
        delivered_once(port, "security = \"none\"\ntimeout_secs = 1").await;
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

/// A relay on a local port that answers every command, takes any data
/// (`250`) and records the command lines, but never answers `QUIT`, as
/// one behind a firewall that drops the connection once the data is in.
/// It offers AUTH, and not STARTTLS.
async fn relay_silent_at_quit() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = relay.accept().await {
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 relay.test ESMTP\r\n").await.unwrap();
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let answer: &[u8] = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    log.lock().unwrap().push("<data>".to_owned());
                    b"250 2.0.0 queued\r\n"
                } else {
                    log.lock().unwrap().push(line.clone());
                    if line.starts_with("EHLO") {
                        b"250-relay.test\r\n250 AUTH PLAIN LOGIN\r\n"
                    } else if line == "DATA" {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if line == "QUIT" {
                        break;
                    } else {
                        b"250 2.1.0 ok\r\n"
                    }
                };
                write.write_all(answer).await.unwrap();
            }
            held.push((lines, write));
        }
    });
    (port, seen)
}

/// A relay that takes the reply (250 to its data) but never answers the
/// QUIT after it: the reply is delivered, once. lettre's transport sent
/// the QUIT within the same time limit, so the reply the relay had taken
/// was deferred and sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_silent_after_taking_the_reply_gets_it_once() {
    let (port, seen) = relay_silent_at_quit().await;
    let (redis, store, reply, outbox) =
        delivered_once(port, "security = \"none\"\ntimeout_secs = 2").await;
    let settled = settled(&redis, &store, &reply).await.expect("settled");
    assert!(settled.contains("\"delivered\""), "{settled}");
    assert!(
        outbox
            .next(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "not to be sent again"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|l| *l == "<data>").count(),
        1,
        "{seen:?}"
    );
}

/// `security = "start_tls"` and a relay that does not offer STARTTLS: the
/// reply is deferred without a word of it said in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_starttls_gets_nothing_in_the_clear() {
    let (port, seen) = relay_silent_at_quit().await;
    let (redis, store, reply, _) = delivered_once(
        port,
        "security = \"start_tls\"\ntimeout_secs = 2\nuser = \"relay\"\npassword = \"secret\"",
    )
    .await;
    assert_eq!(settled(&redis, &store, &reply).await, None, "deferred");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| l.starts_with("EHLO")),
        "only the greeting before giving up: {seen:?}"
    );
    assert!(!seen.is_empty());
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
