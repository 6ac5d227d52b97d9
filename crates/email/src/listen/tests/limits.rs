//! Limits, timeouts, shutdown.

use super::{Client, TestSink, settings, start};
use crate::listen::{MAX_ERRORS, Protocol};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn size_over_the_limit_at_mail_from() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test> SIZE=10001", "552 5.3.4")
        .await;
    c.expect("MAIL FROM:<a@b.test> SIZE=10000", "250 2.1.0")
        .await;
    // Counted like a body over the limit (it was not counted at all).
    let too_large = format!(
        "switchboard_email_messages_total{{outcome=too_large,source={}}}",
        settings(Protocol::Lmtp).name
    );
    assert_eq!(counters.get(&too_large), 1, "{}", counters.dump());
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

/// Bodies held at once by all sessions are bounded: while one session
/// holds 12 KiB of a body, another's 8 KiB does not fit a 16 KiB budget and
/// is answered 452 (try again later), counted; once the first is stored,
/// the second goes through.
#[tokio::test]
async fn bodies_over_the_listeners_budget_are_answered_try_again_later() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.max_message_bytes = 20_000;
    s.budget = crate::listen::ListenerSettings::budget(16 * 1024);
    let name = s.name.clone();
    let server = start(s, sink.clone()).await;
    let line = format!("{}\r\n", "x".repeat(998));
    let mut first = Client::connect(&server).await;
    first.lhlo().await;
    first.expect("MAIL FROM:<a@b.test>", "250").await;
    first.expect("RCPT TO:<one@support.test>", "250").await;
    first.expect("DATA", "354").await;
    for _ in 0..12 {
        first.send(&line).await;
    }
    let mut second = Client::connect(&server).await;
    second.lhlo().await;
    // The first's twelve lines are read before the second's DATA ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Over the size limit as well: 552 (never send it again), not 452.
    second.expect("MAIL FROM:<a@b.test>", "250").await;
    second.expect("RCPT TO:<two@support.test>", "250").await;
    second.expect("DATA", "354").await;
    for _ in 0..21 {
        second.send(&line).await;
    }
    second.send(".\r\n").await;
    assert_eq!(
        second.reply().await[0],
        "552 5.3.4 Error: message size exceeds fixed limit"
    );
    for attempt in ["refused", "taken"] {
        second.expect("MAIL FROM:<a@b.test>", "250").await;
        second.expect("RCPT TO:<two@support.test>", "250").await;
        second.expect("DATA", "354").await;
        for _ in 0..8 {
            second.send(&line).await;
        }
        second.send(".\r\n").await;
        let reply = second.reply().await[0].clone();
        if attempt == "refused" {
            assert_eq!(
                reply, "452 4.3.1 Error: insufficient system storage, try again later",
                "{attempt}"
            );
            first.send(".\r\n").await;
            assert_eq!(first.reply().await[0], "250 2.0.0 stored");
        } else {
            assert_eq!(reply, "250 2.0.0 stored", "{attempt}");
        }
    }
    assert_eq!(sink.got().len(), 2);
    let no_room = format!("switchboard_email_messages_total{{outcome=no_room,source={name}}}");
    assert_eq!(counters.get(&no_room), 1, "{}", counters.dump());
}

/// The size limit is of the body as stored (dot-stuffing undone), exactly
/// at the limit taken and one byte over refused, both when the body is
/// held and when it is drained because the budget had no room for it (452
/// at the limit, 552 over it).
#[tokio::test]
async fn the_size_limit_is_exact_and_of_the_unstuffed_body() {
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.max_message_bytes = 20_000;
    s.budget = crate::listen::ListenerSettings::budget(24 * 1024);
    let budget = s.budget.clone();
    let server = start(s, sink.clone()).await;
    // 20 lines of 1,000 bytes once unstuffed (1,001 on the wire); the
    // last one a byte longer for one byte over.
    async fn body(c: &mut Client<tokio::net::TcpStream>, over: bool) -> String {
        c.expect("MAIL FROM:<a@b.test>", "250").await;
        c.expect("RCPT TO:<one@support.test>", "250").await;
        c.expect("DATA", "354").await;
        for n in 0..20 {
            let x = if over && n == 19 { 998 } else { 997 };
            c.send(&format!("..{}\r\n", "x".repeat(x))).await;
        }
        c.send(".\r\n").await;
        c.reply().await[0].clone()
    }
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    // Held: the budget has room while nobody else holds a body.
    assert_eq!(body(&mut c, false).await, "250 2.0.0 stored");
    assert_eq!(sink.got()[0].1.len(), 20_000);
    assert_eq!(
        body(&mut c, true).await,
        "552 5.3.4 Error: message size exceeds fixed limit"
    );
    // Drained: another session holds 12 KiB of the 24 KiB budget.
    let mut first = Client::connect(&server).await;
    first.lhlo().await;
    first.expect("MAIL FROM:<a@b.test>", "250").await;
    first.expect("RCPT TO:<one@support.test>", "250").await;
    first.expect("DATA", "354").await;
    for _ in 0..12 {
        first.send(&format!("{}\r\n", "x".repeat(998))).await;
    }
    // Until the listener has read them (12 of the 24 KiB permits taken).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while budget.available_permits() > 12 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(budget.available_permits(), 12);
    assert_eq!(
        body(&mut c, false).await,
        "452 4.3.1 Error: insufficient system storage, try again later",
        "at the limit once unstuffed, though over it on the wire"
    );
    assert_eq!(
        body(&mut c, true).await,
        "552 5.3.4 Error: message size exceeds fixed limit",
        "one byte over"
    );
    first.send(".\r\n").await;
    assert_eq!(first.reply().await[0], "250 2.0.0 stored");
    assert_eq!(sink.got().len(), 2);
}

/// A body that goes on far past the limit is not read for ever: past
/// 4 × the limit (at least 1 MiB) dropped, the message gets its 552 and the
/// session ends.
#[tokio::test]
async fn a_body_without_end_is_refused_and_the_session_ended() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let sink = Arc::new(TestSink::default());
    let mut s = settings(Protocol::Lmtp);
    s.max_message_bytes = 100_000;
    let name = s.name.clone();
    let server = start(s, sink.clone()).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("DATA", "354").await;
    let line = format!("{}\r\n", "x".repeat(998));
    // 100,000 + 1 MiB + 30 KB, never ended with "."; the server may end
    // the session before the last lines (write errors ignored).
    for _ in 0..(100_000 + 1024 * 1024 + 30_000) / 1000 {
        use tokio::io::AsyncWriteExt;
        if c.io.get_mut().write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    assert_eq!(
        c.reply().await[0],
        "552 5.3.4 Error: message size exceeds fixed limit"
    );
    assert_eq!(c.line().await, "", "the session ends");
    assert!(sink.got().is_empty());
    let ended = format!("switchboard_email_sessions_total{{outcome=too_large,source={name}}}");
    assert_eq!(counters.get(&ended), 1, "{}", counters.dump());
}

/// Likewise a command line that never ends.
#[tokio::test]
async fn a_command_line_without_end_ends_the_session() {
    let server = start(settings(Protocol::Lmtp), Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    let chunk = "a".repeat(10_000);
    c.send("NOOP ").await;
    for _ in 0..(1024 * 1024 + 30_000) / chunk.len() {
        c.send(&chunk).await;
    }
    assert!(c.reply().await[0].starts_with("500 5.5.2"));
    assert_eq!(c.line().await, "421 4.7.0 mx.test Error: line too long");
    assert_eq!(c.line().await, "");
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

/// Writes `bytes` one at a time, `gap` apart, ignoring write errors (the
/// server may have closed already).
async fn dribble<S: tokio::io::AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], gap: Duration) {
    use tokio::io::AsyncWriteExt;
    for b in bytes {
        if io.write_all(&[*b]).await.is_err() || io.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
    }
}

/// Each read arrives well within the timeout, but the command line never
/// ends: the line as a whole must arrive within the timeout.
#[tokio::test]
async fn a_command_dribbled_a_byte_at_a_time_times_out() {
    let mut s = settings(Protocol::Lmtp);
    s.command_timeout = Duration::from_millis(400);
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    // 1.6 s of dribbling if the server let it go on; it ends the session
    // after 0.4 s, and the writes fail soon after.
    let started = std::time::Instant::now();
    dribble(
        c.io.get_mut(),
        b"NOOP and a very long",
        Duration::from_millis(80),
    )
    .await;
    assert_eq!(c.line().await, "421 4.4.2 mx.test Error: timeout exceeded");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.line().await, "");
}

/// The same within a message body: fewer than PROGRESS_BYTES per timeout
/// ends the session; a body that keeps coming does not.
#[tokio::test]
async fn a_body_dribbled_a_byte_at_a_time_times_out_but_a_slow_steady_one_does_not() {
    let mut s = settings(Protocol::Lmtp);
    s.command_timeout = Duration::from_millis(400);
    let sink = Arc::new(TestSink::default());
    let server = start(s, sink.clone()).await;

    // Steady: 512 bytes every 100 ms (twice PROGRESS_BYTES per timeout),
    // 1.5 s in all (several timeouts), under the 10,000-byte size limit.
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send("Subject: slow\r\n\r\n").await;
    let line = format!("{}\r\n", "x".repeat(510));
    for _ in 0..15 {
        c.send(&line).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.send(".\r\n").await;
    assert!(
        c.line().await.starts_with("250 "),
        "a slow but steady body is taken"
    );

    // Dribbled: one byte every 80 ms.
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("DATA", "354").await;
    let started = std::time::Instant::now();
    dribble(c.io.get_mut(), &[b'y'; 25], Duration::from_millis(80)).await;
    assert_eq!(c.line().await, "421 4.4.2 mx.test Error: timeout exceeded");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// A body that keeps coming, a kilobyte per timeout, ends `max_session`
/// after it began: the timeout renewed at each kilobyte without end.
#[tokio::test]
async fn a_body_that_never_ends_is_cut_at_max_session() {
    let mut s = settings(Protocol::Lmtp);
    s.command_timeout = Duration::from_millis(400);
    s.max_session = Duration::from_millis(1000);
    s.max_message_bytes = 1_000_000;
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("DATA", "354").await;
    let started = std::time::Instant::now();
    let line = format!("{}\r\n", "x".repeat(1100));
    // 3 s of steady body if the server let it go on.
    for _ in 0..15 {
        use tokio::io::AsyncWriteExt;
        let io = c.io.get_mut();
        if io.write_all(line.as_bytes()).await.is_err() || io.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.line().await, "421 4.4.2 mx.test Error: timeout exceeded");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
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

/// Commands refused are counted by code: an unknown one, a line too long,
/// a recipient over the limit (they were answered, and counted nowhere).
#[tokio::test]
async fn refused_commands_are_counted() {
    let counters = crate::test_counters::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let mut s = settings(Protocol::Lmtp);
    s.max_recipients = 1;
    let name = s.name.clone();
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("XYZZY", "500").await;
    c.expect(&"X".repeat(5000), "500").await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    c.expect("RCPT TO:<one@support.test>", "250").await;
    c.expect("RCPT TO:<two@support.test>", "452").await;
    let key = |code: &str| {
        format!("switchboard_email_commands_refused_total{{code={code},source={name}}}")
    };
    assert_eq!(counters.get(&key("500")), 2, "{}", counters.dump());
    assert_eq!(counters.get(&key("452")), 1, "{}", counters.dump());
}

/// NOOP (or RSET, VRFY, HELP) now and then does not keep a session, and
/// its slot, for ever: only a command that moves the session on gives it a
/// whole timeout again.
#[tokio::test]
async fn noops_do_not_hold_a_session() {
    let mut s = settings(Protocol::Lmtp);
    s.command_timeout = Duration::from_millis(600);
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    let started = std::time::Instant::now();
    let mut answered = 0;
    for command in [
        "NOOP", "RSET", "VRFY x", "HELP", "NOOP", "NOOP", "NOOP", "NOOP",
    ] {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.send(&format!("{command}\r\n")).await;
        let line = c.line().await;
        if line.starts_with("421 4.4.2") {
            break;
        }
        assert!(line.starts_with('2'), "{command}: {line}");
        answered += 1;
    }
    assert!(
        answered < 4 && started.elapsed() < Duration::from_millis(1500),
        "{answered} answered in {:?}",
        started.elapsed()
    );
    // Nor do long ones (a kilobyte of padding each).
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    let started = std::time::Instant::now();
    let padded = format!("NOOP {}", "x".repeat(1000));
    let mut answered = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.send(&format!("{padded}\r\n")).await;
        let line = c.line().await;
        if line.starts_with("421 4.4.2") {
            break;
        }
        answered += 1;
    }
    assert!(
        answered < 4 && started.elapsed() < Duration::from_millis(1500),
        "{answered} padded NOOPs answered in {:?}",
        started.elapsed()
    );
    // Nor do refused recipients (they are no protocol error, so the error
    // limit does not end it either): they used to renew the time, so
    // `RCPT TO:<x@nowhere>` now and then held a slot for ever.
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    c.expect("MAIL FROM:<a@b.test>", "250").await;
    let started = std::time::Instant::now();
    let mut answered = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.send("RCPT TO:<x@nowhere.test>\r\n").await;
        let line = c.line().await;
        if line.starts_with("421 4.4.2") {
            break;
        }
        assert!(line.starts_with("550"), "{line}");
        answered += 1;
    }
    assert!(
        answered < 4 && started.elapsed() < Duration::from_millis(1500),
        "{answered} refused recipients answered in {:?}",
        started.elapsed()
    );
    // A command that moves the session on does give it more time: four
    // rounds (over a second) past the 600 ms timeout, each with room to
    // spare on a loaded machine.
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.expect("MAIL FROM:<a@b.test>", "250").await;
        c.expect("RSET", "250").await;
    }
}

/// A session ends at the first command after `max_session`, however it
/// keeps moving on: `MAIL` and `RSET` now and then renew the command
/// timeout, and held a session slot for ever.
#[tokio::test]
async fn a_session_ends_after_its_longest_time() {
    let mut s = settings(Protocol::Lmtp);
    s.max_session = Duration::from_millis(1200);
    let server = start(s, Arc::new(TestSink::default())).await;
    let mut c = Client::connect(&server).await;
    c.lhlo().await;
    let started = std::time::Instant::now();
    let mut ended = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send("MAIL FROM:<a@b.test>\r\n").await;
        let line = c.line().await;
        if line.starts_with("421 4.4.2") {
            ended = Some(started.elapsed());
            break;
        }
        assert!(line.starts_with("250"), "{line}");
        c.expect("RSET", "250").await;
    }
    let ended = ended.expect("the session ended");
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_secs(3),
        "ended after {ended:?}"
    );
}
