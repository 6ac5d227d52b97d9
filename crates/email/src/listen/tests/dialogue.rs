//! The dialogue: LMTP and SMTP transactions, PIPELINING, DATA.

use super::{Client, TestSink, settings, start};
use crate::listen::{Protocol, Reply, session};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const BODY: &str = "Subject: hi\r\n\r\nHello.\r\n";

#[tokio::test]
async fn lmtp_dialogue_with_an_unknown_recipient() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let sink = Arc::new(TestSink::default());
    let server = start(settings(Protocol::Lmtp), sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.send("LHLO client.test\r\n").await;
    let lhlo = c.reply().await;
    assert_eq!(lhlo[0], "250-mx.test you had me at EHLO");
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "SIZE 10000",
    ] {
        assert!(lhlo.iter().any(|l| l[4..] == *ext), "{ext} in {lhlo:?}");
    }
    assert!(lhlo.last().unwrap().starts_with("250 "));
    assert!(
        !lhlo
            .iter()
            .any(|l| l.contains("STARTTLS") || l.contains("AUTH"))
    );
    c.expect("MAIL FROM:<a@b.test> SIZE=30 BODY=8BITMIME", "250 2.1.0")
        .await;
    c.expect("RCPT TO:<Help@Support.TEST>", "250 2.1.5").await;
    c.expect("RCPT TO:<nobody@elsewhere.test>", "550 5.1.1")
        .await;
    let refused = format!(
        "switchboard_email_recipients_refused_total{{source={}}}",
        settings(Protocol::Lmtp).name
    );
    assert_eq!(counters.get(&refused), 1, "{}", counters.dump());
    c.expect("RCPT TO:<busy@elsewhere.test>", "450 4.2.1 busy")
        .await;
    c.expect("DATA", "354 ").await;
    c.send(&format!("{BODY}.\r\n")).await;
    assert_eq!(c.reply().await, ["250 2.0.0 stored"]);
    c.expect("QUIT", "221 2.0.0").await;
    assert_eq!(c.line().await, "", "closed after QUIT");

    let got = sink.got();
    assert_eq!(got.len(), 1);
    let (envelope, data) = &got[0];
    assert_eq!(envelope.mail_from, "a@b.test");
    assert_eq!(envelope.recipients, ["help@support.test"]);
    assert!(!envelope.smtputf8 && !envelope.tls);
    assert_eq!(envelope.peer.ip(), server.address.ip());
    assert_eq!(data, BODY.as_bytes());
}

#[tokio::test]
async fn lmtp_answers_each_recipient_after_data() {
    let sink = TestSink::with_replies(vec![Reply::ok("one"), Reply::temporary("two later")]);
    let server = start(settings(Protocol::Lmtp), sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("RCPT TO:<two@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    assert_eq!(c.reply().await, ["250 2.0.0 one"]);
    assert_eq!(c.reply().await, ["451 4.3.0 two later"]);
    c.expect("NOOP", "250 2.0.0").await;
    assert_eq!(
        sink.got()[0].0.recipients,
        ["one@support.test", "two@support.test"]
    );
}

#[tokio::test]
async fn smtp_gives_one_combined_reply() {
    let cases = [
        (vec![Reply::ok("a"), Reply::ok("b")], "250 2.0.0 a"),
        (
            vec![
                Reply::ok("a"),
                Reply::rejected("no"),
                Reply::temporary("later"),
            ],
            "451 4.3.0 later",
        ),
        (
            vec![Reply::ok("a"), Reply::rejected("no"), Reply::ok("c")],
            "550 5.6.0 no",
        ),
    ];
    for (replies, expected) in cases {
        let n = replies.len();
        let sink = TestSink::with_replies(replies);
        let server = start(settings(Protocol::Smtp), sink.clone()).await;
        let mut c = Client::connect(&server).await;
        assert!(c.cmd("LHLO x").await.starts_with("500 5.5.1"));
        c.send("EHLO client.test\r\n").await;
        assert!(c.reply().await.len() > 3);
        c.expect("MAIL FROM:<a@b.test>", "250").await;
        for i in 0..n {
            c.expect(&format!("RCPT TO:<r{i}@support.test>"), "250")
                .await;
        }
        c.expect("DATA", "354").await;
        c.send(&format!("{BODY}.\r\n")).await;
        assert_eq!(c.reply().await, [expected]);
        c.expect("HELO again.test", "250 mx.test").await;
        assert_eq!(sink.got()[0].0.recipients.len(), n);
    }
}

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let sink = Arc::new(TestSink::default());
    let server = start(settings(Protocol::Lmtp), sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.send(concat!(
        "LHLO client.test\r\n",
        "MAIL FROM:<a@b.test> BODY=8BITMIME\r\n",
        "RCPT TO:<one@support.test>\r\n",
        "RCPT TO:<stranger@else.test>\r\n",
        "RCPT TO:<two@support.test>\r\n",
        "DATA\r\n",
    ))
    .await;
    assert!(c.reply().await.last().unwrap().starts_with("250 "));
    for expected in ["250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354 "] {
        let reply = c.reply().await;
        assert!(reply[0].starts_with(expected), "{expected}: {reply:?}");
    }
    c.send(&format!("{BODY}.\r\nRSET\r\nNOOP\r\nQUIT\r\n"))
        .await;
    for expected in [
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
        "221 2.0.0",
    ] {
        assert!(c.reply().await[0].starts_with(expected));
    }
    assert_eq!(sink.got()[0].1, BODY.as_bytes());
}

/// Runs one message with `body` (as sent, stuffed) through `session` on a
/// duplex pipe and returns what the sink got.
async fn through_session(mail_from: &str, body: &[u8]) -> (String, Vec<u8>) {
    let sink = Arc::new(TestSink::default());
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer = "192.0.2.1:2525".parse().unwrap();
    let settings = Arc::new(settings(Protocol::Lmtp));
    let task = tokio::spawn(session(
        server,
        peer,
        settings,
        sink.clone(),
        CancellationToken::new(),
    ));
    let mut c = Client {
        io: tokio::io::BufReader::new(client),
    };
    c.reply().await;
    c.lhlo().await;
    c.expect(&format!("MAIL FROM:{mail_from}"), "250 2.1.0")
        .await;
    c.expect("RCPT TO:<help@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send_bytes(body).await;
    assert_eq!(c.reply().await, ["250 2.0.0 stored"]);
    c.expect("QUIT", "221").await;
    task.await.unwrap();
    let (envelope, data) = sink.got().remove(0);
    (envelope.mail_from, data)
}

#[tokio::test]
async fn dot_unstuffing() {
    let (_, data) =
        through_session("<a@b.test>", b"..leading dot\r\nx\r\n..\r\n...two\r\n.\r\n").await;
    assert_eq!(data, b".leading dot\r\nx\r\n.\r\n..two\r\n");
    let (_, data) = through_session("<a@b.test>", b".\r\n").await;
    assert_eq!(data, b"");
}

#[tokio::test]
async fn null_sender_is_accepted() {
    let (from, data) = through_session("<>", format!("{BODY}.\r\n").as_bytes()).await;
    assert_eq!(from, "");
    assert_eq!(data, BODY.as_bytes());
}

#[tokio::test]
async fn smtputf8_and_8bitmime_with_raw_utf8() {
    let body = "Subject: Grüße\r\n\r\nこんにちは – ça va?\r\n".as_bytes();
    let mut sent = body.to_vec();
    sent.extend_from_slice(b".\r\n");
    let (from, data) = through_session("<jörg@exämple.test> SMTPUTF8 BODY=8BITMIME", &sent).await;
    assert_eq!(from, "jörg@exämple.test");
    assert_eq!(data, body);

    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<jörg@exämple.test>", "553 5.6.7").await;
    c.expect("MAIL FROM:<a@b.test> SMTPUTF8", "250").await;
    c.expect("RCPT TO:<zoë@support.test>", "250 2.1.5").await;
    // Without SMTPUTF8 a non-ASCII recipient is refused: one recipient,
    // not the message.
    c.expect("RSET", "250").await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<zoë@support.test>", "553 5.6.7").await;
    // The refusals are counted (they were not): the MAIL FROM's as a
    // message, the RCPT TO's as a recipient.
    let name = settings(Protocol::Lmtp).name;
    let rejected = format!("switchboard_email_messages_total{{outcome=rejected,source={name}}}");
    assert_eq!(counters.get(&rejected), 1, "{}", counters.dump());
    let refused = format!("switchboard_email_recipients_refused_total{{source={name}}}");
    assert_eq!(counters.get(&refused), 1, "{}", counters.dump());
}

#[tokio::test]
async fn rset_clears_the_transaction() {
    let sink = Arc::new(TestSink::default());
    let server = start(settings(Protocol::Lmtp), sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.expect("MAIL FROM:<a@b.test>", "503 5.5.1").await;
    c.lhlo().await;
    c.expect("RCPT TO:<help@support.test>", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("MAIL FROM:<a@b.test>", "503 5.5.1").await;
    c.expect("RCPT TO:<help@support.test>", "250").await;
    c.expect("RSET", "250 2.0.0").await;
    c.expect("RCPT TO:<help@support.test>", "503 5.5.1").await;
    c.expect("DATA", "503 5.5.1").await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("DATA", "503 5.5.1").await; // LMTP (RFC 2033 4.2)
    c.expect("VRFY someone", "252").await;
    c.expect("HELP", "214").await;
    c.expect("EXPN list", "502 5.5.1").await;
    c.expect("AUTH PLAIN", "502 5.5.1").await;
    c.expect("STARTTLS", "502 5.5.1").await;
    c.expect("FROBNICATE", "500 5.5.2").await;
    assert!(sink.got().is_empty());
}

/// Found by the `email_lmtp` fuzz target: `MAIL FROM` without a colon is
/// answered on its own line, and the next line is a command of its own.
#[tokio::test]
async fn a_mail_from_without_a_colon_does_not_swallow_the_next_line() {
    let sink = Arc::new(TestSink::default());
    let server = start(settings(Protocol::Smtp), sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.ehlo().await;
    c.expect("MAIL FROM", "501 5.5.4").await;
    c.expect("RCPT TO", "501 5.5.4").await;
    // Pipelined: the colon-less line does not join the next one.
    c.send("MAIL FROM\r\n:<x@y.test>\r\nNOOP\r\n").await;
    assert!(c.reply().await[0].starts_with("501 5.5.4"));
    assert!(
        c.reply().await[0].starts_with("50"),
        "the orphan line is refused"
    );
    assert!(c.reply().await[0].starts_with("250"), "NOOP answered");
    c.expect("MAIL FROM:<a@b.test>", "250 2.1.0").await;
}

/// Found by the `email_lmtp` fuzz target: a body of exactly the size limit
/// is accepted whether or not a read ends between the final CR and LF.
#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted_however_it_is_split() {
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.max_message_bytes = 256;
    let server = start(s, sink.clone()).await;
    let body = format!("{}\r\n", "x".repeat(254));
    for split in [false, true] {
        let mut c = Client::connect(&server).await;
        c.lhlo().await;
        c.expect("MAIL FROM:<a@b.test>", "250").await;
        c.expect("RCPT TO:<one@support.test>", "250").await;
        c.expect("DATA", "354").await;
        if split {
            // A read ends between the final CR and LF.
            c.send(&format!("{body}.\r")).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            c.send("\n").await;
        } else {
            c.send(&format!("{body}.\r\n")).await;
        }
        assert_eq!(c.reply().await, ["250 2.0.0 stored"], "split: {split}");
    }
    assert_eq!(sink.got().len(), 2);
    assert_eq!(sink.got()[1].1.len(), 256);
}

/// `<CRLF>.<CR><CR><LF>` is not an end of data a sender may use: smtp-proto
/// takes it for one, and what follows it (here a second transaction, as
/// in SMTP smuggling) would run as the sender's next commands. The message
/// is refused for every recipient, counted, and the session ends, however
/// the bytes are split; a body held, one drained (no room in the budget)
/// and one discarded (over the size limit) alike.
#[tokio::test]
async fn a_bare_cr_in_the_end_of_data_refuses_the_message_and_ends_the_session() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let smuggled = "MAIL FROM:<ceo@support.test>\r\nRCPT TO:<help@support.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nPay.\r\n.\r\n";
    let long = format!("{}\r\n", "x".repeat(998));
    for (round, kept) in ["held", "drained", "discarded"].into_iter().enumerate() {
        let drained = kept != "held";
        let sink = Arc::new(TestSink::default());
        let mut s = settings(Protocol::Lmtp);
        match kept {
            // No room in the listener's budget: drained.
            "drained" => {
                s.max_message_bytes = 20_000;
                s.budget = crate::listen::ListenerSettings::budget(1024);
            }
            // Over the size limit: discarded.
            "discarded" => s.max_message_bytes = 1_000,
            _ => {}
        }
        let name = s.name.clone();
        let server = start(s, sink.clone()).await;
        for split in [None, Some(1), Some(2), Some(3)] {
            let mut c = Client::connect(&server).await;
            c.lhlo().await;
            c.expect("MAIL FROM:<a@b.test>", "250").await;
            c.expect("RCPT TO:<one@support.test>", "250").await;
            c.expect("RCPT TO:<two@support.test>", "250").await;
            c.expect("DATA", "354").await;
            let body = if drained {
                long.repeat(2)
            } else {
                BODY.to_owned()
            };
            let end = format!(".\r\r\n{smuggled}");
            let wire = format!("{body}{end}");
            match split {
                None => c.send(&wire).await,
                Some(n) => {
                    // The CRs split from the dot, from each other and
                    // from the LF.
                    let at = body.len() + n;
                    c.send(&wire[..at]).await;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    c.send(&wire[at..]).await;
                }
            }
            for _ in 0..2 {
                assert_eq!(
                    c.reply().await,
                    ["550 5.5.2 Error: bare <CR> in the end-of-data sequence"],
                    "{kept}, split {split:?}"
                );
            }
            assert_eq!(c.line().await, "", "closed: {kept}, split {split:?}");
        }
        assert!(sink.got().is_empty(), "nothing stored, nothing smuggled");
        let refused =
            format!("switchboard_email_messages_total{{outcome=bad_end_of_data,source={name}}}");
        assert_eq!(
            counters.get(&refused),
            4 * (round as u64 + 1),
            "{}",
            counters.dump()
        );
    }
}

/// A recipient longer than a path may be (RFC 5321) is refused at RCPT,
/// counted, and the message goes to the others. Accepted, it made the
/// intake refuse the whole message after DATA, for every recipient.
#[tokio::test]
async fn an_over_long_recipient_is_refused_at_rcpt() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let sink = Arc::new(TestSink::default());
    let s = settings(Protocol::Lmtp);
    let name = s.name.clone();
    let server = start(s, sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    let long = format!("{}@support.test", "a".repeat(241));
    assert_eq!(long.len(), 254);
    c.expect(&format!("RCPT TO:<{long}>"), "250").await;
    let longer = format!("{}@support.test", "a".repeat(242));
    c.expect(&format!("RCPT TO:<{longer}>"), "501 5.1.3").await;
    c.expect("RCPT TO:<help@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(&format!("{BODY}.\r\n")).await;
    assert_eq!(c.reply().await, ["250 2.0.0 stored"]);
    assert_eq!(c.reply().await, ["250 2.0.0 stored"]);
    assert_eq!(
        sink.got()[0].0.recipients,
        [long.as_str(), "help@support.test"]
    );
    let refused = format!("switchboard_email_recipients_refused_total{{source={name}}}");
    assert_eq!(counters.get(&refused), 1, "{}", counters.dump());
}
