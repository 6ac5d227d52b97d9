//! The email channel of a running daemon against a real Postfix and a real
//! Dovecot on loopback:
//!
//! - Postfix relays `support.example.com` to Switchboard's LMTP listener
//!   (a transport map); mail submitted to Postfix becomes a routed contact;
//!   the agent's reply leaves through lettre to Postfix, which delivers it
//!   into the customer domain's Maildir with the threading headers set; the
//!   customer's answer to it joins the same conversation; the billing
//!   address's rule routes 07 and its PDF is served to the agent; an auto
//!   reply and a newsletter open no contact.
//! - Faults: Redis stopped during an LMTP delivery (451, Postfix keeps the
//!   mail and its retry succeeds, stored once); the relay down (the reply
//!   waits in the outbox and goes out when it is back); the relay refusing
//!   a reply for good (failed at once, with the reason for the agent).
//! - IMAP: a Dovecot mailbox fetched with IDLE, marked seen, and not
//!   fetched again after the daemon restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::time::Duration;
use switchboard_e2e::*;
use switchboard_testkit::dovecot::Dovecot;
use switchboard_testkit::postfix::{Postfix, PostfixOptions};

const SUPERVISOR: &str = "supervisor-token-0123456789";
const OLHA: &str = "olha-agent-token-0123456789";
const HELP: &str = "help@support.example.com";
const BILLING: &str = "billing@support.example.com";

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/corpus/email").join(name)).unwrap()
}

/// Routing (a general and a billing queue, one agent) plus an email
/// channel whose `[channels.*]` tables follow.
fn config(attachments: &std::path::Path, channel_tables: &str) -> String {
    format!(
        r#"
[routing]
wrap_up_secs = 0

[[routing.queues]]
name = "general"

[[routing.queues]]
name = "billing"
skills = {{ billing = 1 }}

[[routing.rules]]
name = "money"
queue = "billing"
addresses = ["{BILLING}"]

[[routing.agents]]
id = "olha"
skills = {{ billing = 3 }}
capacity = {{ email = 5 }}
token = "{OLHA}"

[agent_api]
supervisor_token = "{SUPERVISOR}"

[[channels]]
type = "email"
name = "mail"
addresses = ["{HELP}", "{BILLING}"]
attachments_dir = "{}"
{channel_tables}
"#,
        attachments.display()
    )
}

fn listener_and_relay(lmtp: u16, relay: u16) -> String {
    format!(
        r#"
[channels.listen]
address = "127.0.0.1:{lmtp}"
protocol = "lmtp"
command_timeout_secs = 30

[channels.smtp]
host = "127.0.0.1"
port = {relay}
security = "none"
retry_secs = 1
timeout_secs = 5
"#
    )
}

async fn online(base: &str) -> AgentSocket {
    // Once the presence is answered, not after a guessed pause.
    AgentSocket::connect_available(base, OLHA).await
}

/// Waits for the next offer, accepts it and returns its contact id.
async fn accept_next(agent: &mut AgentSocket) -> String {
    let (offer, seen) = agent.until("offer", Duration::from_secs(20)).await;
    let offer = offer.unwrap_or_else(|| panic!("no offer; frames: {seen:?}"));
    assert_eq!(offer["channel"], "email");
    let id = offer["contact_id"].as_str().unwrap().to_owned();
    agent
        .send(json!({"type": "accept", "contact_id": id}))
        .await;
    let (assigned, _) = agent.until("assigned", Duration::from_secs(10)).await;
    assert_eq!(assigned.expect("assigned")["contact_id"], id.as_str());
    id
}

async fn contact(http: &Http, base: &str, id: &str) -> Value {
    let reply = http
        .call(
            "GET",
            &format!("{base}/api/v1/contacts/{id}"),
            Some(SUPERVISOR),
            None,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

fn entries<'a>(contact: &'a Value, dir: &str) -> Vec<&'a Value> {
    contact["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dir"] == dir)
        .collect()
}

/// The delivery state of the contact's last reply (`""` while queued).
async fn reply_state(http: &Http, base: &str, id: &str) -> String {
    let c = contact(http, base, id).await;
    entries(&c, "out")
        .last()
        .and_then(|e| e["delivery"]["outcome"]["state"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// How many contacts Redis holds.
async fn contacts(redis_url: &str) -> usize {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut conn, "sb:*:contact:*")
        .await
        .unwrap();
    keys.len()
}

fn header(mail: &mail_parser::Message, name: &str) -> String {
    mail.header_raw(name).unwrap_or_default().trim().to_owned()
}

fn submit(postfix: &Postfix, from: &str, to: &str, raw: &[u8]) {
    let answer = postfix.send(from, to, raw);
    assert!(answer.is_ok(), "postfix refused the submission: {answer:?}");
}

#[tokio::test]
async fn mail_relayed_by_postfix_is_routed_and_the_reply_lands_in_the_thread() {
    let lmtp = free_port();
    let postfix = Postfix::start(
        PostfixOptions::new()
            .lmtp_domain("support.example.com", lmtp)
            .local_domain("customer.example"),
    );
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(files.path(), &listener_and_relay(lmtp, postfix.smtp_port())),
    );
    let base = daemon.base();
    let http = Http::new();
    let mut olha = online(&base).await;

    // 01 through Postfix: a routed contact, decoded exactly.
    submit(
        &postfix,
        "olena@customer.example",
        HELP,
        &corpus("01-uk-plain-utf8.eml"),
    );
    let first = accept_next(&mut olha).await;
    let c = contact(&http, &base, &first).await;
    assert_eq!(c["channel"], "email");
    assert_eq!(c["address"], HELP);
    assert_eq!(c["customer"], "email:olena@customer.example");
    assert_eq!(c["subject"], "Замовлення #4411 не доставлено");
    assert_eq!(c["routing"]["queue"], "general");
    // Postfix delivered over LMTP to the listener (its log line is written
    // after our 250, and may come after the offer).
    postfix.wait_for_log(
        &format!("relay=127.0.0.1[127.0.0.1]:{lmtp}"),
        Duration::from_secs(10),
    );

    // The agent's reply reaches the customer's mailbox, threaded.
    let answer = "Добрий день, Олено! Посилка вже в дорозі.";
    olha.send(json!({"type": "reply", "contact_id": first, "text": answer}))
        .await;
    let mails = postfix.wait_for_maildir("customer.example", 1, Duration::from_secs(30));
    let mail = mail_parser::MessageParser::default()
        .parse(&mails[0][..])
        .unwrap();
    assert_eq!(
        mail.from().unwrap().first().unwrap().address().unwrap(),
        HELP
    );
    assert_eq!(
        mail.to().unwrap().first().unwrap().address().unwrap(),
        "olena@customer.example"
    );
    assert_eq!(
        header(&mail, "In-Reply-To"),
        "<order-4411@mail.customer.example>"
    );
    assert!(header(&mail, "References").contains("<order-4411@mail.customer.example>"));
    let subject = mail.subject().unwrap().to_owned();
    assert!(
        subject.starts_with("Re: Замовлення #4411 не доставлено") && subject.contains("[#"),
        "{subject}"
    );
    assert!(mail.body_text(0).unwrap().contains(answer));
    let reply_id = header(&mail, "Message-ID");
    assert!(
        eventually(Duration::from_secs(10), || async {
            reply_state(&http, &base, &first).await == "delivered"
        })
        .await,
        "the reply is recorded as delivered"
    );

    // The customer answers the reply: same conversation, no new offer.
    let answer_back = format!(
        "From: Olena Kovalenko <olena@customer.example>\r\nTo: {HELP}\r\n\
         Subject: Re: {}\r\nMessage-ID: <olena-2@mail.customer.example>\r\n\
         In-Reply-To: {reply_id}\r\nReferences: <order-4411@mail.customer.example> {reply_id}\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0200\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Дякую, чекаю!\r\n",
        header(&mail, "Subject").trim_start_matches("Re: ")
    );
    submit(
        &postfix,
        "olena@customer.example",
        HELP,
        answer_back.as_bytes(),
    );
    // 03 (References to the first mail) joins it too.
    submit(
        &postfix,
        "olena@customer.example",
        HELP,
        &corpus("03-uk-followup-threaded.eml"),
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            entries(&contact(&http, &base, &first).await, "in").len() == 3
        })
        .await,
        "both answers joined the first contact: {}",
        contact(&http, &base, &first).await
    );
    let c = contact(&http, &base, &first).await;
    let texts: Vec<&str> = entries(&c, "in")
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap_or_default())
        .collect();
    assert!(texts[1].contains("Дякую, чекаю!"), "{texts:?}");
    assert_eq!(contacts(&redis.url()).await, 1);

    // 07 to billing@: the billing rule routes it, its PDF is served.
    submit(
        &postfix,
        "john@customer.example",
        BILLING,
        &corpus("07-en-alternative-with-pdf.eml"),
    );
    let billing = accept_next(&mut olha).await;
    let c = contact(&http, &base, &billing).await;
    assert_eq!(
        (
            c["routing"]["queue"].as_str(),
            c["routing"]["rule"].as_str()
        ),
        (Some("billing"), Some("money"))
    );
    let text = entries(&c, "in")[0]["message"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("[attachment: "))
        .unwrap_or_else(|| panic!("no attachment line in {text}"));
    assert!(line.contains("application/pdf"), "{line}");
    let media = line
        .rsplit("media id ")
        .next()
        .unwrap()
        .trim_end_matches(']');
    let pdf = http
        .call(
            "GET",
            &format!("{base}/api/v1/contacts/{billing}/media/{media}"),
            Some(OLHA),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pdf.status, 200);
    assert!(pdf.body.starts_with("%PDF"), "{:?}", &pdf.body[..8]);

    // An out-of-office and a newsletter: accepted by Postfix and by us,
    // no contact.
    submit(
        &postfix,
        "john@customer.example",
        HELP,
        &corpus("08-auto-replied-ooo.eml"),
    );
    submit(
        &postfix,
        "news@shop.example",
        HELP,
        &corpus("10-bulk-list.eml"),
    );
    postfix.wait_for_empty_queue(Duration::from_secs(20));
    assert_eq!(contacts(&redis.url()).await, 2);
    // 01, answer, 03, 07, 08, 10 over LMTP; the reply into the Maildir.
    // (The last line may reach the log a moment after the queue emptied.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = postfix.log();
        if log.matches("status=sent").count() >= 7 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(log.matches("status=sent").count(), 7, "{log}");
    assert!(
        olha.until("offer", Duration::from_millis(500))
            .await
            .0
            .is_none()
    );
}

#[tokio::test]
async fn redis_down_gives_451_a_relay_down_keeps_the_reply_and_a_refusal_fails_it() {
    let lmtp = free_port();
    let mut postfix = Postfix::start(
        PostfixOptions::new()
            .lmtp_domain("support.example.com", lmtp)
            .local_domain("customer.example")
            // Retry deferred mail soon (the test flushes anyway).
            .main_cf("minimal_backoff_time", "1s")
            .main_cf("maximal_backoff_time", "2s")
            .main_cf("queue_run_delay", "1s")
            // Only our domains: mail for others is refused (554), as a
            // relay refuses what it will not deliver.
            .main_cf("smtpd_relay_restrictions", "reject_unauth_destination"),
    );
    let mut redis = RedisServer::start_with(&["--appendfsync", "always"]);
    let files = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(files.path(), &listener_and_relay(lmtp, postfix.smtp_port())),
    );
    let base = daemon.base();
    let http = Http::new();
    let mut olha = online(&base).await;

    // Redis stops; Postfix hands the mail over, gets 451 and keeps it.
    redis.stop();
    submit(
        &postfix,
        "ivan@customer.example",
        HELP,
        &corpus("04-ru-cp1251-8bit.eml"),
    );
    let log = postfix.wait_for_log("status=deferred", Duration::from_secs(30));
    assert!(
        log.contains("451"),
        "deferred with a 451 from the listener:\n{log}"
    );
    assert_eq!(postfix.queue_len(), 1);

    // Redis is back: the retry succeeds; stored once.
    redis.restart();
    postfix.flush();
    let contact_id = accept_next(&mut olha).await;
    postfix.wait_for_empty_queue(Duration::from_secs(30));
    let stored = stored_messages(&redis.url()).await;
    let copies = stored
        .iter()
        .filter(|(provider, _, _)| provider.contains("ru-return-1@mail.customer.example"))
        .count();
    assert_eq!(copies, 1, "{stored:?}");
    let c = contact(&http, &base, &contact_id).await;
    assert_eq!(c["subject"], "Возврат товара");

    // The relay is down: the reply waits in the outbox...
    postfix.stop();
    olha.send(json!({"type": "reply", "contact_id": contact_id, "text": "Оформим возврат."}))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(reply_state(&http, &base, &contact_id).await, "");
    // ...and leaves once it is back, once.
    postfix.restart();
    let mails = postfix.wait_for_maildir("customer.example", 1, Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(10), || async {
            reply_state(&http, &base, &contact_id).await == "delivered"
        })
        .await
    );
    let mail = mail_parser::MessageParser::default()
        .parse(&mails[0][..])
        .unwrap();
    assert_eq!(
        header(&mail, "In-Reply-To"),
        "<ru-return-1@mail.customer.example>"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(postfix.maildir_messages("customer.example").len(), 1);

    // A reply the relay refuses for good (5xx) is failed, with the reason,
    // for the agent to see; it is not retried.
    let stranger = "From: Stranger <someone@elsewhere.example>\r\nTo: help@support.example.com\r\n\
         Subject: Hello\r\nMessage-ID: <stranger-1@elsewhere.example>\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0200\r\n\r\nAnyone there?\r\n";
    submit(
        &postfix,
        "someone@elsewhere.example",
        HELP,
        stranger.as_bytes(),
    );
    let other = accept_next(&mut olha).await;
    olha.send(json!({"type": "reply", "contact_id": other, "text": "Yes, hello!"}))
        .await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            reply_state(&http, &base, &other).await == "failed"
        })
        .await,
        "{}",
        contact(&http, &base, &other).await
    );
    let c = contact(&http, &base, &other).await;
    let reason = entries(&c, "out")[0]["delivery"]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("554"), "{reason}");
    assert_eq!(entries(&c, "out")[0]["delivery"]["attempts"], 1);
}

#[tokio::test]
async fn an_imap_mailbox_is_fetched_with_idle_and_not_again_after_a_restart() {
    let dovecot = Dovecot::start();
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let imap = format!(
        r#"
[[channels.imap]]
host = "127.0.0.1"
port = {}
security = "none"
user = "{}"
password = "{}"
folder = "INBOX"
address = "{HELP}"
idle = true
poll_interval_secs = 300

[channels.smtp]
host = "127.0.0.1"
port = 1
security = "none"
"#,
        dovecot.port(),
        dovecot.user(),
        dovecot.password()
    );
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(files.path(), &imap),
    );
    let base = daemon.base();
    let http = Http::new();
    let mut olha = online(&base).await;
    // Let the fetcher log in and enter IDLE before the mail arrives: with
    // polling every 300 s only IDLE can bring it within the wait below.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let user = dovecot.user().to_owned();
    let uid = dovecot.append(&user, "INBOX", &corpus("05-zh-big5-base64.eml"));
    let id = accept_next(&mut olha).await;
    let c = contact(&http, &base, &id).await;
    assert_eq!(c["subject"], "帳戶無法登入");
    assert_eq!(c["address"], HELP);
    assert!(
        eventually(Duration::from_secs(5), || async {
            dovecot
                .messages(&user, "INBOX")
                .iter()
                .any(|(u, flags)| *u == uid && flags.contains("\\Seen"))
        })
        .await,
        "marked seen: {:?}",
        dovecot.messages(&user, "INBOX")
    );

    // After a restart (SIGTERM: the mailbox's lease is released; after a
    // crash the next instance waits for it to lapse) only what is new is
    // fetched.
    drop(olha);
    daemon.restart_gracefully();
    let mut olha = online(&base).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    dovecot.append(&user, "INBOX", &corpus("06-pl-html-only-latin2.eml"));
    let second = accept_next(&mut olha).await;
    assert_ne!(second, id);
    let stored = stored_messages(&redis.url()).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        olha.until("offer", Duration::from_secs(2))
            .await
            .0
            .is_none()
    );
}

/// Reads an LMTP/SMTP reply (all its lines) and returns its last line.
async fn lmtp_reply(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a reply within 10 s")
            .unwrap()
            .expect("the connection is open");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    }
}

/// A message in the middle of DATA when the daemon is told to stop is
/// still taken (250) and stored, though no HTTP request was in flight:
/// the intake stays open while the channels drain. It closed as soon as
/// the HTTP server had drained, and the message got 451.
#[tokio::test]
async fn a_message_in_data_at_sigterm_is_still_taken() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let redis = switchboard_testkit::RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let lmtp = free_port();
    let mut daemon = Daemon::start(
        env!("CARGO_BIN_EXE_switchboard-under-test"),
        &redis.url(),
        &config(files.path(), &listener_and_relay(lmtp, free_port())),
    );
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", lmtp)).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (read, mut write) = stream.expect("the LMTP listener").into_split();
    let mut lines = BufReader::new(read).lines();
    assert!(lmtp_reply(&mut lines).await.starts_with("220"));
    for (command, want) in [
        ("LHLO client.example.com".to_owned(), "250"),
        ("MAIL FROM:<ann@customer.example>".to_owned(), "250"),
        (format!("RCPT TO:<{HELP}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        let reply = lmtp_reply(&mut lines).await;
        assert!(reply.starts_with(want), "{command}: {reply}");
    }
    write
        .write_all(
            format!(
                "From: Ann <ann@customer.example>\r\nTo: {HELP}\r\n\
                 Subject: Stopping\r\nMessage-ID: <stop-1@customer.example>\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    write
        .write_all(b"Are you still there?\r\n.\r\n")
        .await
        .unwrap();
    let reply = lmtp_reply(&mut lines).await;
    assert!(reply.starts_with("250"), "{reply}\n{}", daemon.log());
    assert_eq!(contacts(&redis.url()).await, 1);
    let status = daemon.wait(Duration::from_secs(40));
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}
