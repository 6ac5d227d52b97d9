//! What goes wrong: the sink, sizes, the password.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchboard_testkit::dovecot::Dovecot;

use super::support::{Fetcher, RedisState, Sink, checkpoint, mail, settings};
use crate::imap::AfterIntake;
use crate::test_counters::Counters;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_temporary_sink_error_keeps_the_message_for_the_next_round() {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    sink.temporary.store(2, Ordering::SeqCst);
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    dovecot.append("support", "INBOX", &mail(1));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(1, WITHIN).await;
    assert_eq!(sink.calls.load(Ordering::SeqCst), 3);
    assert_eq!(sink.uids(), vec![1]);
    assert_eq!(checkpoint(&state, &settings, Some(1)).await.1, 1);
    let label = &settings.label;
    let key =
        |o: &str| format!("switchboard_email_imap_messages_total{{mailbox={label},outcome={o}}}");
    assert_eq!(counters.get(&key("temporary")), 2);
    assert_eq!(counters.get(&key("stored")), 1);
    fetcher.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_skipped_and_counted_and_later_ones_arrive() {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let mut settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    settings.max_message_bytes = 2000;
    let mut big = mail(1);
    big.extend(std::iter::repeat_n(b'x', 5000));
    big.extend(b"\r\n");
    dovecot.append("support", "INBOX", &big);
    dovecot.append("support", "INBOX", &mail(2));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(1, WITHIN).await;
    assert_eq!(sink.uids(), vec![2]);
    assert_eq!(checkpoint(&state, &settings, Some(2)).await.1, 2);
    let label = &settings.label;
    let key = format!("switchboard_email_imap_messages_total{{mailbox={label},outcome=too_large}}");
    assert_eq!(counters.get(&key), 1);
    // The large one stays, unread, for a person to look at.
    let flags = dovecot.messages("support", "INBOX");
    assert_eq!(flags[0], (1, String::new()));
    dovecot.append("support", "INBOX", &mail(3));
    sink.wait_for(2, WITHIN).await;
    assert_eq!(sink.uids(), vec![2, 3]);
    fetcher.stop().await;
}

#[tokio::test]
async fn a_rejected_message_is_left_in_the_mailbox_even_when_taken_ones_are_deleted() {
    let sink = Sink::default();
    sink.reject.store(1, Ordering::SeqCst);
    left_in_the_mailbox(sink, "rejected").await;
}

/// Bulk mail not routed, or an automatic mail about no reply of ours: the
/// intake keeps no copy, so `delete` must not remove the only one.
#[tokio::test]
async fn a_message_taken_but_not_kept_is_left_in_the_mailbox_when_taken_ones_are_deleted() {
    let sink = Sink::default();
    sink.leave.store(1, Ordering::SeqCst);
    left_in_the_mailbox(sink, "not_kept").await;
}

/// Two messages, `after = delete`, the first not stored by `sink`: the
/// second is deleted, the first stays, counted under `outcome`.
async fn left_in_the_mailbox(sink: Sink, outcome: &str) {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(sink), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let settings = settings(&dovecot, "INBOX", AfterIntake::Delete);
    dovecot.append("support", "INBOX", &mail(1));
    dovecot.append("support", "INBOX", &mail(2));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(1, WITHIN).await;
    assert_eq!(sink.uids(), vec![2]);
    checkpoint(&state, &settings, Some(2)).await;
    // Taken: deleted. Refused: still there, for a person to look at.
    assert_eq!(
        dovecot.messages("support", "INBOX"),
        vec![(1, String::new())]
    );
    let label = &settings.label;
    let key = format!("switchboard_email_imap_messages_total{{mailbox={label},outcome={outcome}}}");
    assert_eq!(counters.get(&key), 1, "{}", counters.dump());
    fetcher.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_retried_with_backoff_until_shutdown() {
    let dovecot = Dovecot::start();
    dovecot.append("support", "INBOX", &mail(1));
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let mut settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    settings.password = "wrong".into();
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let label = &settings.label;
    let failures = counters.get(&format!(
        "switchboard_email_imap_errors_total{{kind=login,mailbox={label}}}"
    ));
    // 0 s, then after 0.5–1 s, then after 1–2 s more: 2 or 3 tries, not dozens.
    assert!(
        (2..=4).contains(&failures),
        "{failures} login failures: {}\n{}",
        counters.dump(),
        dovecot.log()
    );
    assert!(dovecot.log().contains("auth failed"), "{}", dovecot.log());
    let took = fetcher.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(sink.len(), 0);
    assert_eq!(sink.calls.load(Ordering::SeqCst), 0);
    assert_eq!(state.value(&format!("{label}:checkpoint")).await, None);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_and_shutdown_is_prompt() {
    let port = switchboard_testkit::free_port();
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let mut settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    settings.port = port;
    drop(dovecot);
    let label = settings.label.clone();
    let fetcher = Fetcher::start(settings, &sink, &state);
    // Retried: a second failed connection (after 0.5–1 s), and the task
    // still running (a fetcher that gave up would also stop at once).
    let key = format!("switchboard_email_imap_errors_total{{kind=connect,mailbox={label}}}");
    let started = std::time::Instant::now();
    while counters.get(&key) < 2 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counters.get(&key) >= 2, "{}", counters.dump());
    assert!(!fetcher.task.is_finished(), "the fetcher gave up");
    let took = fetcher.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(sink.len(), 0);
}

/// A message the server cannot give (here: its Maildir file unreadable,
/// so Dovecot answers its body FETCH with NO) fails the session each time;
/// after `BODY_FAILURES` sessions in a row, and not before
/// `pass_over_after` (five failures alone took as little as 15 s: a
/// server's passing fault cost the mail), it is passed over, counted
/// `unreadable` and left in the mailbox, and later mail arrives.
#[tokio::test]
async fn a_message_that_cannot_be_fetched_is_passed_over_after_five_sessions() {
    use std::os::unix::fs::PermissionsExt;
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let mut settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    // Sessions are retried after 0.5, 1, 2, 4, 8 s (±), so five failures
    // alone were passed over after 15.5–31 s.
    settings.pass_over_after = Duration::from_secs(35);
    dovecot.append("support", "INBOX", &mail(1));
    dovecot.append("support", "INBOX", &mail(2));
    // Dovecot has listed both (sizes and flags are in its index); then the
    // first one's file becomes unreadable to it.
    assert_eq!(dovecot.messages("support", "INBOX").len(), 2);
    let first: Vec<_> = ["cur", "new"]
        .iter()
        .flat_map(|d| std::fs::read_dir(dovecot.maildir("support").join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|f| {
            String::from_utf8_lossy(&std::fs::read(f).unwrap()).contains("<q1@example.com>")
        })
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    let first = &first[0];
    std::fs::set_permissions(first, std::fs::Permissions::from_mode(0o000)).unwrap();
    let started = std::time::Instant::now();
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(1, Duration::from_secs(90)).await;
    assert!(
        started.elapsed() >= settings.pass_over_after,
        "passed over after {:?}",
        started.elapsed()
    );
    assert_eq!(
        sink.uids(),
        vec![2],
        "{}\n{}",
        counters.dump(),
        dovecot.log()
    );
    let label = &settings.label;
    let key =
        |o: &str| format!("switchboard_email_imap_messages_total{{mailbox={label},outcome={o}}}");
    assert_eq!(counters.get(&key("unreadable")), 1, "{}", counters.dump());
    assert_eq!(counters.get(&key("gone")), 0, "never taken for expunged");
    assert_eq!(checkpoint(&state, &settings, Some(2)).await.1, 2);
    // Still there, unread, for a person to look at.
    assert_eq!(dovecot.messages("support", "INBOX")[0], (1, String::new()));
    fetcher.stop().await;
}

/// A scripted IMAP server on a free port, for answers Dovecot cannot be
/// made to give on demand. `answer` gets the upper-cased command (without
/// its tag), the number of the connection (from 1) and how many times this
/// connection sent a command containing `BODY.PEEK` before, and returns
/// the response lines, `{tag}` standing for the command's tag. LOGIN,
/// LOGOUT and CAPABILITY (no IDLE) are answered for it.
async fn scripted_server(answer: fn(&str, usize, usize) -> String) -> u16 {
    scripted_server_with("IMAP4rev1", answer).await
}

/// A [`scripted_server`] whose CAPABILITY lists `capabilities`.
async fn scripted_server_with(
    capabilities: &'static str,
    answer: fn(&str, usize, usize) -> String,
) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut sessions = 0;
        while let Ok((socket, _)) = listener.accept().await {
            sessions += 1;
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"* OK ready\r\n").await;
            let mut body_fetches = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.splitn(2, ' ');
                let tag = words.next().unwrap_or("*").to_owned();
                let command = words.next().unwrap_or("").to_ascii_uppercase();
                let text = if command.starts_with("CAPABILITY") {
                    format!("* CAPABILITY {capabilities}\r\n{{tag}} OK done\r\n")
                } else if command.starts_with("LOGOUT") {
                    "* BYE\r\n{tag} OK bye\r\n".to_owned()
                } else if command.starts_with("LOGIN") {
                    "{tag} OK logged in\r\n".to_owned()
                } else {
                    let text = answer(&command, sessions, body_fetches);
                    body_fetches += usize::from(command.contains("BODY.PEEK"));
                    text
                };
                if write
                    .write_all(text.replace("{tag}", &tag).as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    port
}

/// Settings for the `support` mailbox of a [`scripted_server`], no IDLE,
/// polled every 60 s.
fn scripted_settings(port: u16, pass_over_after: Duration) -> crate::imap::MailboxSettings {
    crate::imap::MailboxSettings {
        label: format!("imap://support@127.0.0.1:{port}/INBOX"),
        host: "127.0.0.1".into(),
        port,
        security: crate::imap::Security::None,
        user: "support".into(),
        password: "secret".into(),
        folder: "INBOX".into(),
        after: AfterIntake::Seen,
        poll_interval: Duration::from_secs(60),
        idle: false,
        max_message_bytes: 1 << 20,
        pass_over_after,
        tls_roots: None,
    }
}

/// A message whose second fetch of a session fails (the first came back
/// without the body) counts towards passing over it like one whose first
/// fails: after five sessions it is passed over and the checkpoint moves,
/// rather than the session failing on it for ever. The server lists one
/// message (UID 1), answers its first body fetch of each session with
/// flags only and the second with `NO`: what a server with a damaged
/// message may do.
#[tokio::test]
async fn a_message_whose_second_fetch_fails_is_passed_over_too() {
    let port = scripted_server(|command, _, body_fetches| {
        if command.starts_with("SELECT") {
            "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\n\
             {tag} OK [READ-WRITE] selected\r\n"
                .to_owned()
        } else if command.contains("RFC822.SIZE") {
            "* 1 FETCH (UID 1 RFC822.SIZE 100 FLAGS ())\r\n{tag} OK done\r\n".to_owned()
        } else if command.contains("BODY.PEEK") && body_fetches == 0 {
            "* 1 FETCH (UID 1 FLAGS ())\r\n{tag} OK done\r\n".to_owned()
        } else if command.contains("BODY.PEEK") {
            "{tag} NO the message cannot be read\r\n".to_owned()
        } else {
            "{tag} OK done\r\n".to_owned()
        }
    })
    .await;
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let counters = Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let settings = scripted_settings(port, Duration::from_secs(1));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    let label = &settings.label;
    let key =
        format!("switchboard_email_imap_messages_total{{mailbox={label},outcome=unreadable}}");
    // Sessions are retried after 0.5, 1, 2, 4 s (±): the sixth passes over.
    let started = std::time::Instant::now();
    while counters.get(&key) == 0 && started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counters.get(&key), 1, "{}", counters.dump());
    assert_eq!(checkpoint(&state, &settings, Some(1)).await, (7, 1));
    assert_eq!(sink.len(), 0);
    fetcher.stop().await;
}

/// Mail announced during a listing that found nothing is fetched at once,
/// not at the next poll (60 s here): the listing read the server's
/// `EXISTS` itself, and the session's queue never saw it. The server's
/// mailbox is empty when the first listing runs and gets a message while
/// it does: its answer finds nothing but says `* 1 EXISTS`; later
/// listings give the message.
#[tokio::test]
async fn mail_announced_during_an_empty_listing_is_fetched_at_once() {
    static LISTINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let port = scripted_server(|command, _, _| {
        let body = String::from_utf8(mail(1)).unwrap();
        if command.starts_with("SELECT") {
            "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\n\
             {tag} OK [READ-WRITE] selected\r\n"
                .to_owned()
        } else if command.contains("RFC822.SIZE") && LISTINGS.fetch_add(1, Ordering::SeqCst) == 0 {
            "* 1 EXISTS\r\n{tag} OK done\r\n".to_owned()
        } else if command.contains("RFC822.SIZE") {
            format!(
                "* 1 FETCH (UID 1 RFC822.SIZE {} FLAGS ())\r\n{{tag}} OK done\r\n",
                body.len()
            )
        } else if command.contains("BODY.PEEK") {
            format!(
                "* 1 FETCH (UID 1 BODY[] {{{}}}\r\n{body})\r\n{{tag}} OK done\r\n",
                body.len()
            )
        } else {
            "{tag} OK done\r\n".to_owned()
        }
    })
    .await;
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = scripted_settings(port, Duration::from_secs(600));
    let fetcher = Fetcher::start(settings, &sink, &state);
    sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(sink.uids(), vec![1]);
    fetcher.stop().await;
}

/// A server that fails every session right after a good round (here it
/// offers IDLE and refuses it) is reconnected to with a growing backoff.
/// The good round reset the backoff, so the session was connected, logged
/// in and selected again every second, for ever (providers lock accounts
/// for less).
#[tokio::test]
async fn a_session_failing_after_each_good_round_backs_off() {
    static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let port = scripted_server_with("IMAP4rev1 IDLE", |command, sessions, _| {
        if command.starts_with("SELECT") {
            SESSIONS.store(sessions, std::sync::atomic::Ordering::SeqCst);
            "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 1] n\r\n\
             {tag} OK [READ-WRITE] selected\r\n"
                .to_owned()
        } else if command.starts_with("IDLE") {
            "{tag} BAD not today\r\n".to_owned()
        } else {
            "{tag} OK done\r\n".to_owned()
        }
    })
    .await;
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let mut settings = scripted_settings(port, Duration::from_secs(600));
    settings.idle = true;
    let fetcher = Fetcher::start(settings, &sink, &state);
    tokio::time::sleep(Duration::from_secs(6)).await;
    fetcher.stop().await;
    // Sessions at 0 s and after 0.5-1, 1-2 and 2-4 s more: at most four
    // in 6 s (every 0.5-1 s: six or more).
    let sessions = SESSIONS.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&sessions), "{sessions} sessions in 6 s");
}
