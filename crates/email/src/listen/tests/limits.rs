//! Limits, timeouts, shutdown.

use super::{Client, TestSink, settings, start};
use crate::listen::{MAX_ERRORS, Protocol};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn size_over_the_limit_at_mail_from() {
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test> SIZE=10001", "552 5.3.4")
        .await;
    c.expect("MAIL FROM:<a@b.test> SIZE=10000", "250 2.1.0")
        .await;
}

#[tokio::test]
async fn body_over_the_limit_is_read_to_the_end_and_refused() {
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.max_message_bytes = 100_000;
    let server = start(s, sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("RCPT TO:<two@support.test>", "250").await;
    c.expect("DATA", "354").await;
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..300 {
        c.send(&line).await;
    }
    // A line that looks like a command inside the dropped body.
    c.send("MAIL FROM:<evil@b.test>\r\n.\r\n").await;
    assert_eq!(
        c.reply().await[0],
        "552 5.3.4 Error: message size exceeds fixed limit"
    );
    assert_eq!(
        c.reply().await[0],
        "552 5.3.4 Error: message size exceeds fixed limit"
    );
    assert!(sink.got().is_empty());
    // Still usable.
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send("small\r\n.\r\n").await;
    assert_eq!(c.reply().await[0], "250 2.0.0 stored");
    assert_eq!(sink.got()[0].1, b"small\r\n");
}

#[tokio::test]
async fn over_long_command_line() {
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    // In pieces and at once; the rest of the line is dropped, not parsed.
    let long = format!("NOOP {}", "a".repeat(20_000));
    c.send(&long[..3000]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&format!("{}\r\n", &long[3000..])).await;
    assert!(c.reply().await[0].starts_with("500 5.5.2"));
    c.send(&format!(
        "MAIL FROM:<{}@b.test>\r\nNOOP\r\n",
        "a".repeat(10_000)
    ))
    .await;
    assert!(c.reply().await[0].starts_with("500 5.5.2"));
    assert!(c.reply().await[0].starts_with("250 2.0.0"));
}

#[tokio::test]
async fn too_many_recipients() {
    let mut s = settings(Protocol::Lmtp);
    s.max_recipients = 2;
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("RCPT TO:<unknown@else.test>", "550 5.1.1").await;
    c.expect("RCPT TO:<two@support.test>", "250").await;
    c.expect("RCPT TO:<three@support.test>", "452 4.5.3").await;
}

#[tokio::test]
async fn idle_timeout() {
    let mut s = settings(Protocol::Lmtp);
    s.command_timeout = Duration::from_millis(300);
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    assert_eq!(c.line().await, "421 4.4.2 mx.test Error: timeout exceeded");
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn too_many_errors() {
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    for _ in 1..MAX_ERRORS {
        c.expect("BOGUS", "500 5.5.2").await;
    }
    c.send("BOGUS\r\n").await;
    assert!(c.reply().await[0].starts_with("500 5.5.2"));
    assert!(c.reply().await[0].starts_with("421 4.7.0"));
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn require_tls_refuses_mail() {
    let mut s = settings(Protocol::Smtp);
    s.require_tls = true;
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.ehlo().await;
    c.expect("MAIL FROM:<a@b.test>", "530 5.7.0").await;
}

#[tokio::test]
async fn sessions_over_the_limit_are_refused() {
    let mut s = settings(Protocol::Lmtp);
    s.max_sessions = 1;
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut first = Client::connect(&server).await;
    let mut second = Client::raw(&server).await;
    assert_eq!(
        second.line().await,
        "421 4.3.2 mx.test Error: too many connections"
    );
    assert_eq!(second.line().await, "");
    first.expect("QUIT", "221").await;
    assert_eq!(first.line().await, "");
    // The slot is free again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = Client::connect(&server).await;
    third.expect("NOOP", "250").await;
}

#[tokio::test]
async fn shutdown_while_idle_and_during_data() {
    let sink = Arc::new(TestSink::default());
    let server = start(settings(Protocol::Lmtp), sink.clone()).await;
    let mut idle = Client::connect(&server).await;
    let mut busy = Client::connect(&server).await;
    busy.lhlo().await;
    busy.expect("MAIL FROM:<a@b.test>", "250").await;
    busy.expect("RCPT TO:<help@support.test>", "250").await;
    busy.expect("DATA", "354").await;
    busy.send("Subject: x\r\n\r\n").await;

    server.shutdown.cancel();
    assert_eq!(idle.line().await, "421 4.3.2 mx.test Service shutting down");
    assert_eq!(idle.line().await, "");
    busy.send("body\r\n.\r\n").await;
    assert_eq!(busy.reply().await[0], "250 2.0.0 stored");
    assert_eq!(busy.line().await, "421 4.3.2 mx.test Service shutting down");
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sink.got()[0].1, b"Subject: x\r\n\r\nbody\r\n");
    assert!(
        tokio::net::TcpStream::connect(server.address)
            .await
            .is_err()
    );
}
