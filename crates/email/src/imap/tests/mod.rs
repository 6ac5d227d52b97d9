//! The fetcher against a real Dovecot (`switchboard_testkit::dovecot`).
#![allow(clippy::unwrap_used)]

mod failures;
mod fetching;
mod support;
mod tls;

use super::checkpoint::Checkpoint;

#[test]
fn checkpoints_parse_and_format() {
    let cp = Checkpoint::parse("1700000000:42:10").unwrap();
    assert_eq!((cp.validity, cp.last, cp.baseline), (1_700_000_000, 42, 10));
    assert_eq!(cp.format(), "1700000000:42:10");
    assert!(cp.was_there(9) && !cp.was_there(10));
    // An earlier version's, without a baseline.
    let cp = Checkpoint::parse(" 7:0\n").unwrap();
    assert_eq!((cp.last, cp.baseline), (0, 0));
    for bad in ["", "7", "7:", ":3", "a:b", "7:-1", "7:3:x", "7:3:4:5"] {
        assert!(Checkpoint::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn the_password_is_not_in_debug_output() {
    let settings = super::MailboxSettings {
        label: "imap://support@mail.example.com:993/INBOX".into(),
        host: "mail.example.com".into(),
        port: 993,
        security: super::Security::Tls,
        user: "support".into(),
        password: "hunter2-very-secret".into(),
        folder: "INBOX".into(),
        after: super::AfterIntake::Seen,
        poll_interval: std::time::Duration::from_secs(60),
        idle: true,
        max_message_bytes: 1000,
        pass_over_after: super::PASS_OVER_AFTER,
        tls_roots: None,
    };
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("redacted"),
        "{shown}"
    );
}
