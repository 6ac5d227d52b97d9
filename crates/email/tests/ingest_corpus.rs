//! Every file of the email corpus (`tests/corpus/email`, from
//! `../shared/corpus/email` with its EXPECTED.tsv) through the ingest into
//! the real intake on a private redis-server, checked against what
//! EXPECTED.tsv says must happen; plus the bounce and auto reply of a reply
//! Switchboard really sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_channel::{MediaSource, Outbox};
use switchboard_core::DeliveryOutcome;
use switchboard_email::attachments::AttachmentStore;
use switchboard_email::config::{Accepts, BulkPolicy, CustomerAddress, EmailConfig};
use switchboard_email::ingest::{Arrival, Ingest, Taken};
use switchboard_email::parse::ParseLimits;
use switchboard_store::{
    Conversations, IntakeSettings, RedisIntake, RedisOutbox, Store, StoreConfig,
};
use switchboard_testkit::RedisServer;

fn corpus(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/corpus/email/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct World {
    redis: RedisServer,
    store: Store,
    ingest: Ingest,
    _dir: tempfile::TempDir,
}

const THREAD_SECRET: &str = "corpus-thread-secret-0123";

fn world(bulk: BulkPolicy) -> World {
    world_with(bulk, CustomerAddress::From)
}

fn world_with(bulk: BulkPolicy, customer_address: CustomerAddress) -> World {
    let redis = RedisServer::start();
    let store = Store::new(StoreConfig::local(redis.url(), 4)).unwrap();
    let intake = RedisIntake::new(
        store.clone(),
        IntakeSettings {
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            limits: Default::default(),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config: EmailConfig = toml::from_str(&format!(
        r#"
        name = "mail"
        addresses = ["help@support.example.com", "billing@support.example.com"]
        attachments_dir = "{}"
        [listen]
        address = "127.0.0.1:1"
        [smtp]
        host = "127.0.0.1"
        thread_secret = "{THREAD_SECRET}"
        "#,
        dir.path().display()
    ))
    .unwrap();
    let ingest = Ingest {
        source: "mail".into(),
        intake: Arc::new(intake),
        attachments: AttachmentStore::open(dir.path(), 10 << 20).unwrap(),
        limits: ParseLimits::default(),
        bulk,
        accepts: Accepts::of(&config),
        customer_address,
        reply_to_senders: vec![
            "forms@shop.example".into(),
            "No-Reply@Shop.Example".into(),
            "@forms.example".into(),
        ],
    };
    World {
        redis,
        store,
        ingest,
        _dir: dir,
    }
}

impl World {
    async fn take(&self, name: &str, rcpt: &str) -> Taken {
        let arrival = Arrival {
            rcpt: Some(rcpt),
            envelope_from: Some("sender@mx.customer.example"),
            ..Arrival::default()
        };
        self.ingest.take(&corpus(name), arrival).await.unwrap()
    }

    async fn contact(&self, id: &str) -> HashMap<String, String> {
        Conversations::new(self.store.clone())
            .contact(&id.parse().unwrap())
            .await
            .unwrap()
            .expect("contact stored")
    }

    /// The text of the contact's first message.
    async fn first_text(&self, id: &str) -> String {
        let contact = self.contact(id).await;
        let log = Conversations::new(self.store.clone())
            .transcript(&contact["conversation"].parse().unwrap(), "-", 100)
            .await
            .unwrap();
        let msg: serde_json::Value = serde_json::from_str(&log[0].msg).unwrap();
        msg["text"].as_str().unwrap().to_owned()
    }

    async fn contacts(&self) -> usize {
        let mut conn = redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = conn.keys("sb:*:contact:*").await.unwrap();
        keys.len()
    }
}

fn stored(taken: &Taken, outcome: &str) -> String {
    match taken {
        Taken::Stored {
            contact_id,
            outcome: o,
        } if *o == outcome => contact_id.clone(),
        other => panic!("expected a stored ({outcome}) contact, got {other:?}"),
    }
}

#[tokio::test]
async fn every_corpus_file_gets_its_expected_outcome() {
    let w = world(BulkPolicy::Ignore);

    // 01: a new contact; subject and body decoded exactly.
    let c01 = stored(
        &w.take("01-uk-plain-utf8.eml", "help@support.example.com")
            .await,
        "created",
    );
    let f = w.contact(&c01).await;
    assert_eq!(f["customer"], "email:olena@customer.example");
    assert_eq!(f["address"], "help@support.example.com");
    assert_eq!(f["channel"], "email");
    assert_eq!(f["subject"], "Замовлення #4411 не доставлено");
    assert_eq!(f["customer_name"], "Olena Kovalenko");
    assert_eq!(
        w.first_text(&c01).await.trim_end(),
        "Добрий день!\nМоє замовлення #4411 досі не доставлене. Допоможіть, будь ласка."
    );

    // 03: the threaded follow-up joins the same conversation.
    let c03 = stored(
        &w.take("03-uk-followup-threaded.eml", "help@support.example.com")
            .await,
        "appended",
    );
    assert_eq!(c03, c01);
    // The same delivery again (a mail server retrying) is stored once.
    let again = stored(
        &w.take("03-uk-followup-threaded.eml", "help@support.example.com")
            .await,
        "duplicate",
    );
    assert_eq!(again, c01);
    // A reply answers the follow-up, and its References name the thread
    // the follow-up continues (its own References: the first mail and our
    // reply to it), then the follow-up (they named the follow-up alone).
    let reply = Conversations::new(w.store.clone())
        .outbound_to(&c01.parse().unwrap(), "Перевіряю.")
        .await
        .unwrap();
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some("order-4411-followup@mail.customer.example")
    );
    assert_eq!(
        reply.references,
        [
            "order-4411@mail.customer.example",
            "agent-reply-1@support.example.com"
        ]
    );

    // 04, 05: other charsets decoded to UTF-8.
    let c04 = stored(
        &w.take("04-ru-cp1251-8bit.eml", "help@support.example.com")
            .await,
        "created",
    );
    let f = w.contact(&c04).await;
    assert_eq!(f["customer_name"], "Иван Петров");
    assert_eq!(f["subject"], "Возврат товара");
    assert_eq!(
        w.first_text(&c04).await.trim_end(),
        "Здравствуйте! Хочу вернуть товар, он пришёл повреждённым."
    );
    let c05 = stored(
        &w.take("05-zh-big5-base64.eml", "help@support.example.com")
            .await,
        "created",
    );
    assert_eq!(w.contact(&c05).await["subject"], "帳戶無法登入");
    assert_eq!(
        w.first_text(&c05).await.trim_end(),
        "您好，我的帳戶無法登入，請協助重設密碼。"
    );

    // 06: readable text from HTML only, the script gone.
    let c06 = stored(
        &w.take("06-pl-html-only-latin2.eml", "help@support.example.com")
            .await,
        "created",
    );
    let text06 = w.first_text(&c06).await;
    assert!(
        !text06.contains("<script") && !text06.contains("alert("),
        "{text06}"
    );
    assert!(!text06.contains('<'), "no tags: {text06}");
    for words in ["Dzień dobry", "fakturę", "zamówienia 5512"] {
        assert!(text06.contains(words), "{words:?} in {text06}");
    }

    // 07: to billing@, text part used, the PDF kept and retrievable.
    let c07 = stored(
        &w.take(
            "07-en-alternative-with-pdf.eml",
            "billing@support.example.com",
        )
        .await,
        "created",
    );
    assert_eq!(
        w.contact(&c07).await["address"],
        "billing@support.example.com"
    );
    let text07 = w.first_text(&c07).await;
    let line = text07
        .lines()
        .find(|l| l.starts_with("[attachment: "))
        .unwrap_or_else(|| panic!("no attachment line: {text07}"));
    assert!(line.contains("application/pdf"), "{line}");
    let media_id = line
        .rsplit("media id ")
        .next()
        .unwrap()
        .trim_end_matches(']');
    let pdf = w.ingest.attachments.fetch("", media_id).await.unwrap();
    assert!(pdf.bytes.starts_with(b"%PDF"), "{:?}", &pdf.bytes[..8]);
    assert!(
        line.contains(&format!("{} bytes", pdf.bytes.len())),
        "{line}"
    );

    // 08, 09: an auto reply and a bounce naming replies we never sent:
    // recorded nowhere, no contact, still accepted.
    let before = w.contacts().await;
    assert!(matches!(
        w.take("08-auto-replied-ooo.eml", "help@support.example.com")
            .await,
        Taken::Update {
            kind: "auto_reply",
            ..
        }
    ));
    assert!(matches!(
        w.take("09-bounce-dsn.eml", "help@support.example.com")
            .await,
        Taken::Update { kind: "bounce", .. }
    ));
    // 10: bulk mail is not routed by default.
    assert_eq!(
        w.take("10-bulk-list.eml", "help@support.example.com").await,
        Taken::Ignored { kind: "bulk" }
    );
    assert_eq!(w.contacts().await, before);

    // 11: broken MIME still becomes a contact.
    let c11 = stored(
        &w.take("11-malformed-no-msgid.eml", "help@support.example.com")
            .await,
        "created",
    );
    assert!(!w.first_text(&c11).await.trim().is_empty());
    // Without a Message-ID, the same bytes again are the same message.
    stored(
        &w.take("11-malformed-no-msgid.eml", "help@support.example.com")
            .await,
        "duplicate",
    );

    // 12: raw UTF-8 headers and addresses.
    let c12 = stored(
        &w.take("12-smtputf8-raw-headers.eml", "help@support.example.com")
            .await,
        "created",
    );
    let f = w.contact(&c12).await;
    assert_eq!(f["customer"], "email:тарас@клієнт.укр");
    assert_eq!(f["customer_name"], "Тарас");
    assert_eq!(f["subject"], "Питання щодо гарантії");
    assert_eq!(
        w.first_text(&c12).await.trim_end(),
        "Чи діє гарантія на ремонт?"
    );
}

#[tokio::test]
async fn bulk_mail_is_routed_when_configured() {
    let w = world(BulkPolicy::Route);
    stored(
        &w.take("10-bulk-list.eml", "help@support.example.com").await,
        "created",
    );
}

#[tokio::test]
async fn a_bounce_fails_our_reply_and_an_auto_reply_is_logged_next_to_it() {
    let w = world(BulkPolicy::Ignore);
    let contact = stored(
        &w.take("01-uk-plain-utf8.eml", "help@support.example.com")
            .await,
        "created",
    );
    let conversations = Conversations::new(w.store.clone());
    let contact_id = contact.parse().unwrap();
    let reply = conversations
        .outbound_to(&contact_id, "Добрий день!")
        .await
        .unwrap();
    // The reply answers the customer's message.
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some("order-4411@mail.customer.example")
    );
    conversations.reply(&reply, "olha").await.unwrap();
    let outbox = RedisOutbox::new(w.store.clone(), "mail", "i1", Duration::from_secs(30)).unwrap();
    let delivery = outbox.next(Duration::from_secs(1)).await.unwrap().unwrap();
    let sent_id = switchboard_email::outbound::message_id_for(&delivery.message);
    outbox
        .settle(&delivery, DeliveryOutcome::delivered(Some(sent_id.clone())))
        .await
        .unwrap();

    // Without a Message-ID: delivered twice (a lost 250), logged once.
    let ooo = String::from_utf8(corpus("08-auto-replied-ooo.eml"))
        .unwrap()
        .replace("john@customer.example", "olena@customer.example")
        .replace("agent-reply-2@support.example.com", &sent_id)
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("Message-ID:"))
        .collect::<String>();
    assert!(!ooo.contains("Message-ID: <1795"), "the header is gone");
    for expected in ["applied", "duplicate"] {
        let taken = w
            .ingest
            .take(ooo.as_bytes(), Arrival::default())
            .await
            .unwrap();
        assert_eq!(
            taken,
            Taken::Update {
                kind: "auto_reply",
                outcome: expected
            }
        );
    }

    // The customer's address is an alias the MTA rewrote: the report names
    // both, and the reply is found under the one it was sent to.
    let keys = w.store.keys();
    let sent_to =
        switchboard_core::CustomerIdentity::new("email", "olena@customer.example").unwrap();
    let alias = (0..50)
        .map(|i| format!("olena.k{i}@mail.customer.example"))
        .find(|a| {
            let c = switchboard_core::CustomerIdentity::new("email", a).unwrap();
            keys.partition_of("mail", &c) != keys.partition_of("mail", &sent_to)
        })
        .unwrap();
    let bounce = String::from_utf8(corpus("09-bounce-dsn.eml"))
        .unwrap()
        .replace(
            "Final-Recipient: rfc822; nobody@customer.example",
            &format!("Original-Recipient: rfc822; olena@customer.example\r\nFinal-Recipient: rfc822; {alias}"),
        )
        .replace("agent-reply-3@support.example.com", &sent_id);
    let taken = w
        .ingest
        .take(bounce.as_bytes(), Arrival::default())
        .await
        .unwrap();
    assert_eq!(
        taken,
        Taken::Update {
            kind: "bounce",
            outcome: "applied"
        }
    );

    let f = w.contact(&contact).await;
    let conversation = f["conversation"].parse().unwrap();
    let log = conversations
        .transcript(&conversation, "-", 100)
        .await
        .unwrap();
    let auto: Vec<_> = log.iter().filter(|e| e.dir == "auto").collect();
    assert_eq!(auto.len(), 1, "{log:?}");
    assert!(auto[0].msg.contains("out of office"), "{:?}", auto[0]);
    let states = conversations.reply_states(&conversation).await.unwrap();
    let (_, status) = &states[&reply.message_id.to_string()];
    let status = status.as_deref().expect("a status");
    assert!(
        status.contains("\"failed\"") && status.contains("5.1.1"),
        "{status}"
    );
    // Neither made a contact.
    assert_eq!(w.contacts().await, 1);
}

/// A customer answers a reply: to its `Reply-To`, the signed plus-address.
/// The mail is ours and the contact's address is the mailbox itself; a
/// forged plus-address is not ours.
#[tokio::test]
async fn an_answer_to_a_signed_reply_to_address_is_taken() {
    let w = world(BulkPolicy::Ignore);
    let signed = switchboard_email::parse::plus_address(
        "help@support.example.com",
        "1-01jabcdef",
        THREAD_SECRET.as_bytes(),
    );
    assert!(w.ingest.accepts.accepts(&signed), "{signed}");
    let id = stored(&w.take("01-uk-plain-utf8.eml", &signed).await, "created");
    assert_eq!(w.contact(&id).await["address"], "help@support.example.com");
    let forged = switchboard_email::parse::plus_address(
        "help@support.example.com",
        "1-01jabcdef",
        b"another secret, not ours",
    );
    assert!(!w.ingest.accepts.accepts(&forged));
}

/// Mail from one of the channel's own addresses (a spoof, or a forwarding
/// loop) is refused with a clear reason, not made a contact whose replies
/// would go to our own mailbox and come back as customer mail.
#[tokio::test]
async fn mail_from_our_own_address_is_refused() {
    let w = world(BulkPolicy::Ignore);
    let raw = String::from_utf8(corpus("01-uk-plain-utf8.eml"))
        .unwrap()
        .replace("olena@customer.example", "help@support.example.com");
    let taken = w.ingest.take(raw.as_bytes(), Arrival::default()).await;
    match taken {
        Err(switchboard_email::ingest::IngestError::Rejected(reason)) => {
            assert!(reason.contains("own addresses"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.contacts().await, 0);
}

/// Mail that no one would read an automatic answer to is marked so: a null
/// envelope sender (a notification), or a customer address only software
/// sends from. A web form's noreply sender with the person in Reply-To is
/// answered when Reply-To names the customer.
#[tokio::test]
async fn mail_from_software_is_marked_for_no_automatic_answer() {
    let mail = |from: &str, n: u32| {
        format!(
            "From: {from}\r\nReply-To: Olena <olena@customer.example>\r\n\
             To: help@support.example.com\r\nSubject: Your order\r\n\
             Message-ID: <auto-{n}@shop.example>\r\n\r\nWhere is my order?\r\n"
        )
    };
    let rcpt = Some("help@support.example.com");
    for (policy, from, null_sender, want) in [
        (CustomerAddress::From, "anna@shop.example", false, false),
        (CustomerAddress::From, "anna@shop.example", true, true),
        (
            CustomerAddress::From,
            "No-Reply <no-reply@shop.example>",
            false,
            true,
        ),
        (
            CustomerAddress::ReplyTo,
            "No-Reply <no-reply@shop.example>",
            false,
            false,
        ),
        (
            CustomerAddress::From,
            "owner-staff@lists.example",
            false,
            true,
        ),
    ] {
        let w = world_with(BulkPolicy::Ignore, policy);
        let arrival = Arrival {
            rcpt,
            envelope_from: (!null_sender).then_some("bounces@shop.example"),
            null_sender,
            ..Arrival::default()
        };
        let taken = w
            .ingest
            .take(mail(from, 1).as_bytes(), arrival)
            .await
            .unwrap();
        let id = stored(&taken, "created");
        let attributes: HashMap<String, String> =
            serde_json::from_str(&w.contact(&id).await["attributes"]).unwrap();
        assert_eq!(
            attributes.get("no_auto_answer").map(String::as_str) == Some("true"),
            want,
            "{policy:?} {from} null sender {null_sender}"
        );
    }
}

/// A long mail with an attachment: its text is cut so that the text and the
/// attachment's line fit the intake's limit together (it used to be refused
/// for good, 550, for being over the limit after the line was added).
#[tokio::test]
async fn a_long_mail_with_an_attachment_is_cut_to_fit_not_refused() {
    let w = world(BulkPolicy::Ignore);
    let long = "Довгий рядок тексту. ".repeat(3000); // ~ 100 KB of UTF-8
    let raw = format!(
        "From: Olena <olena@customer.example>\r\nTo: help@support.example.com\r\n\
         Subject: a long one\r\nMessage-ID: <long-1@customer.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         {long}\r\n--b1\r\nContent-Type: image/png; name=\"logo.png\"\r\n\
         Content-Disposition: attachment; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         iVBORw0KGgo=\r\n--b1--\r\n"
    );
    let arrival = Arrival {
        rcpt: Some("help@support.example.com"),
        envelope_from: Some("olena@customer.example"),
        ..Arrival::default()
    };
    let taken = w.ingest.take(raw.as_bytes(), arrival).await.unwrap();
    let id = stored(&taken, "created");
    let text = w.first_text(&id).await;
    assert!(text.len() <= 64 * 1024, "{} bytes", text.len());
    assert!(text.starts_with("Довгий рядок тексту."));
    assert!(text.contains("[…]"), "marked as cut");
    assert!(
        text.contains("[attachment: logo.png, image/png"),
        "the attachment's line is kept: {}",
        &text[text.len().saturating_sub(300)..]
    );
}

/// A web form's mail: sent from the form's address, the person's in
/// Reply-To. By default the customer is the sender; with
/// `customer_address = "reply_to"` it is the person (each form's writer a
/// customer of their own, replies to them), unless Reply-To names one of
/// the channel's own addresses.
#[tokio::test]
async fn a_web_form_mail_is_the_reply_to_persons_with_reply_to() {
    let form = |reply_to: &str, n: u32| {
        format!(
            "From: Website <forms@shop.example>\r\nReply-To: {reply_to}\r\n\
             To: help@support.example.com\r\nSubject: Contact form\r\n\
             Message-ID: <form-{n}@shop.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n\
             Where is my order?\r\n"
        )
    };
    let arrival = Arrival {
        rcpt: Some("help@support.example.com"),
        envelope_from: Some("forms@shop.example"),
        ..Arrival::default()
    };
    for (policy, reply_to, want) in [
        (
            CustomerAddress::From,
            "Olena <olena@customer.example>",
            "email:forms@shop.example",
        ),
        (
            CustomerAddress::ReplyTo,
            "Olena <olena@customer.example>",
            "email:olena@customer.example",
        ),
        (
            CustomerAddress::ReplyTo,
            "help@support.example.com",
            "email:forms@shop.example",
        ),
    ] {
        let w = world_with(BulkPolicy::Ignore, policy);
        let taken = w
            .ingest
            .take(form(reply_to, 1).as_bytes(), arrival)
            .await
            .unwrap();
        let id = stored(&taken, "created");
        assert_eq!(
            w.contact(&id).await["customer"],
            want,
            "{policy:?} {reply_to}"
        );
    }
}

/// With `customer_address = "reply_to"`, only the configured form senders'
/// Reply-To is the customer: a stranger writing `Reply-To: <Olena>` from
/// their own address is kept under their own address, not appended to
/// Olena's open conversation (where the agent would have read it as hers,
/// and answered her).
#[tokio::test]
async fn a_reply_to_from_a_sender_not_listed_is_not_the_customer() {
    let w = world_with(BulkPolicy::Ignore, CustomerAddress::ReplyTo);
    let mail = |from: &str, n: u32| {
        format!(
            "From: {from}\r\nReply-To: Olena <olena@customer.example>\r\n\
             To: help@support.example.com\r\nSubject: About my order\r\n\
             Message-ID: <rt-{n}@example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n\
             Please send it to another address.\r\n"
        )
    };
    let arrival = Arrival {
        rcpt: Some("help@support.example.com"),
        ..Arrival::default()
    };
    // The form (a listed domain's sender) opens Olena's conversation.
    let form = w
        .ingest
        .take(mail("Website <web@forms.example>", 1).as_bytes(), arrival)
        .await
        .unwrap();
    let olenas = stored(&form, "created");
    assert_eq!(
        w.contact(&olenas).await["customer"],
        "email:olena@customer.example"
    );
    // A stranger's mail naming her in Reply-To is the stranger's own.
    let forged = w
        .ingest
        .take(
            mail("Mallory <mallory@evil.example>", 2).as_bytes(),
            arrival,
        )
        .await
        .unwrap();
    let id = stored(&forged, "created");
    assert_ne!(id, olenas, "appended to Olena's conversation");
    assert_eq!(
        w.contact(&id).await["customer"],
        "email:mallory@evil.example"
    );
}
