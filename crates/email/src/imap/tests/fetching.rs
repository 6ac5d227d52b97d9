//! The happy paths: once each, in order, the after-intake actions, restarts,
//! IDLE, UIDVALIDITY changes, two instances.

use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_testkit::dovecot::Dovecot;

use super::support::{Fetcher, RedisState, Sink, checkpoint, mail, settings};
use crate::imap::AfterIntake;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn each_message_once_in_uid_order_marked_seen_and_not_again_after_a_restart() {
    let dovecot = Dovecot::start();
    for n in 1..=3 {
        dovecot.append("support", "INBOX", &mail(n));
    }
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(3, WITHIN).await;
    assert_eq!(sink.uids(), vec![1, 2, 3]);
    {
        let got = sink.got.lock().unwrap();
        for (i, (uid, raw, fallback)) in got.iter().enumerate() {
            assert_eq!(raw, &mail(i as u32 + 1));
            assert!(fallback.starts_with(&format!("imap:{}:", settings.label)));
            assert!(fallback.ends_with(&format!(":{uid}")));
        }
    }
    // The checkpoint is written once the after-intake action is done.
    checkpoint(&state, &settings, Some(3)).await;
    let flags = dovecot.messages("support", "INBOX");
    assert!(flags.iter().all(|(_, f)| f.contains("\\Seen")), "{flags:?}");
    fetcher.stop().await;

    // A new fetcher on the same state takes in only what is new.
    dovecot.append("support", "INBOX", &mail(4));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(4, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.uids(), vec![1, 2, 3, 4]);
    fetcher.stop().await;
}

#[tokio::test]
async fn moves_taken_in_messages_to_a_folder() {
    let dovecot = Dovecot::start();
    dovecot.create_folder("support", "Done");
    for n in 1..=2 {
        dovecot.append("support", "INBOX", &mail(n));
    }
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Move("Done".into()));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(2, WITHIN).await;
    checkpoint(&state, &settings, Some(2)).await;
    assert_eq!(dovecot.messages("support", "INBOX"), vec![]);
    assert_eq!(dovecot.messages("support", "Done").len(), 2);
    dovecot.append("support", "INBOX", &mail(3));
    sink.wait_for(3, WITHIN).await;
    assert_eq!(sink.uids(), vec![1, 2, 3]);
    fetcher.stop().await;
}

#[tokio::test]
async fn deletes_taken_in_messages() {
    let dovecot = Dovecot::start();
    for n in 1..=2 {
        dovecot.append("support", "INBOX", &mail(n));
    }
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Delete);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(2, WITHIN).await;
    checkpoint(&state, &settings, Some(2)).await;
    assert_eq!(dovecot.messages("support", "INBOX"), vec![]);
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![1, 2]);
}

#[tokio::test]
async fn mail_arriving_during_idle_is_prompt_and_shutdown_during_idle_too() {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    checkpoint(&state, &settings, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // in IDLE now
    for n in 1..=2 {
        let appended = Instant::now();
        dovecot.append("support", "INBOX", &mail(n));
        sink.wait_for(n as usize, WITHIN).await;
        let took = appended.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = fetcher.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_new_uidvalidity_refetches_what_is_new_without_losing_any() {
    let dovecot = Dovecot::start();
    dovecot.create_folder("support", "Support");
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "Support", AfterIntake::Seen);
    for n in 1..=2 {
        dovecot.append("support", "Support", &mail(n));
    }
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(2, WITHIN).await;
    let (first_validity, _) = checkpoint(&state, &settings, Some(2)).await;
    fetcher.stop().await;

    // Recreated: the same UIDs again, a new UIDVALIDITY.
    dovecot.delete_folder("support", "Support");
    dovecot.create_folder("support", "Support");
    for n in 3..=4 {
        dovecot.append("support", "Support", &mail(n));
    }
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(4, WITHIN).await;
    let (validity, _) = checkpoint(&state, &settings, Some(2)).await;
    assert_ne!(validity, first_validity);
    fetcher.stop().await;
    let got: Vec<Vec<u8>> = sink
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(got, (1..=4).map(mail).collect::<Vec<_>>());

    // A checkpoint of another UIDVALIDITY: what is seen is not taken again,
    // what is not yet seen is.
    let key = format!("{}:checkpoint", settings.label);
    state.put(&key, "1:99").await;
    dovecot.append("support", "Support", &mail(5));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(5, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![1, 2, 1, 2, 3]);
    assert_eq!(checkpoint(&state, &settings, Some(3)).await, (validity, 3));
}

/// A checkpoint past the folder's UIDNEXT under the same UIDVALIDITY (a
/// mailbox restored from a backup, an index rebuilt reusing UIDs: against
/// the RFC, but it happens) is reset as a new UIDVALIDITY is: new mail is
/// taken in, what was read before is not taken again. Every UID up to the
/// old checkpoint was passed over, silently.
#[tokio::test]
async fn a_checkpoint_past_uidnext_is_reset_and_new_mail_taken_in() {
    let dovecot = Dovecot::start();
    dovecot.create_folder("support", "Support");
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "Support", AfterIntake::Seen);
    for n in 1..=2 {
        dovecot.append("support", "Support", &mail(n));
    }
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(2, WITHIN).await;
    let (validity, _) = checkpoint(&state, &settings, Some(2)).await;
    fetcher.stop().await;
    let key = format!("{}:checkpoint", settings.label);
    state.put(&key, &format!("{validity}:500:1")).await;
    dovecot.append("support", "Support", &mail(3));
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(3, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![1, 2, 3]);
    assert_eq!(checkpoint(&state, &settings, Some(3)).await, (validity, 3));
}

/// The first pass, interrupted (a temporary intake error) after the first
/// message: what was there and read before is still passed over, as the
/// first pass would have. It used to be imported once the checkpoint had
/// moved past 0.
#[tokio::test]
async fn an_interrupted_first_pass_still_passes_over_old_read_mail() {
    let dovecot = Dovecot::start();
    for n in 1..=3 {
        dovecot.append("support", "INBOX", &mail(n));
    }
    dovecot.command(
        "support",
        &["SELECT INBOX", "UID STORE 1,3 +FLAGS (\\Seen)"],
        b"",
    );
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    sink.temporary.store(1, std::sync::atomic::Ordering::SeqCst);
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(1, WITHIN).await;
    checkpoint(&state, &settings, Some(3)).await;
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![2], "only the unread one");
}

/// Mail that was there at the start is listed a window at a time (three
/// UIDs in tests): after a window whose messages were all expunged the
/// next message is searched for (UIDs 4 to 13 are gone here, over three
/// windows), and the rest is taken in, in order.
#[tokio::test]
async fn old_mail_is_taken_in_a_window_at_a_time_across_expunged_ones() {
    let dovecot = Dovecot::start();
    for n in 1..=16 {
        dovecot.append("support", "INBOX", &mail(n));
    }
    dovecot.command(
        "support",
        &[
            "SELECT INBOX",
            "UID STORE 4:13 +FLAGS (\\Deleted)",
            "EXPUNGE",
        ],
        b"",
    );
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    sink.wait_for(6, WITHIN).await;
    checkpoint(&state, &settings, Some(16)).await;
    dovecot.append("support", "INBOX", &mail(17));
    sink.wait_for(7, WITHIN).await;
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![1, 2, 3, 14, 15, 16, 17]);
}

/// A mailbox empty at the first start: mail that arrives later is taken
/// in even when it is already read (someone opened it in webmail before
/// the next poll). It used to be passed over silently.
#[tokio::test]
async fn mail_read_before_the_poll_is_still_taken_in() {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let fetcher = Fetcher::start(settings.clone(), &sink, &state);
    checkpoint(&state, &settings, Some(0)).await;
    dovecot.command("support", &["APPEND INBOX (\\Seen) {}"], &mail(1));
    sink.wait_for(1, WITHIN).await;
    fetcher.stop().await;
    assert_eq!(sink.uids(), vec![1]);
}

#[tokio::test]
async fn two_instances_take_each_message_in_once() {
    let dovecot = Dovecot::start();
    let (sink, state) = (Arc::new(Sink::default()), RedisState::new());
    let settings = settings(&dovecot, "INBOX", AfterIntake::Seen);
    let a = Fetcher::start(settings.clone(), &sink, &state);
    let b = Fetcher::start(settings.clone(), &sink, &state.instance());
    for n in 1..=5 {
        dovecot.append("support", "INBOX", &mail(n));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.wait_for(5, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.uids(), vec![1, 2, 3, 4, 5]);
    a.stop().await;
    b.stop().await;
}
