//! Classification of hand-made mails: auto replies, list mail, bounces.

use super::units::{FROM, mail};
use crate::parse::*;

#[test]
fn auto_replies() {
    let auto = |extra: &str| mail(&format!("{FROM}\n{extra}"), "x").kind == MailKind::AutoReply;
    assert!(auto("Auto-Submitted: auto-replied"));
    assert!(auto("Auto-Submitted: Auto-Generated; owner-email=\"a@b\""));
    assert!(auto("X-Autoreply: yes"));
    assert!(auto("X-Autorespond: whatever"));
    assert!(!auto("Auto-Submitted: no"));
    assert!(!auto("Auto-Submitted: No ; comment"));
    // By subject only together with a hint.
    let subject = "From: a@b.example\nSubject: Out of Office: Re: x";
    assert_eq!(mail(subject, "x").kind, MailKind::Customer);
    for hint in [
        "X-Auto-Response-Suppress: All",
        "Precedence: auto_reply",
        "Return-Path: <>",
    ] {
        let m = mail(&format!("{subject}\n{hint}"), "x");
        assert_eq!(m.kind, MailKind::AutoReply, "{hint}");
    }
    let m = mail(
        "From: a@b.example\nSubject: Automatic reply: x\nReturn-Path: <>",
        "x",
    );
    assert_eq!(m.kind, MailKind::AutoReply);
    // The hint alone is no auto reply, but never answered.
    let m = mail(&format!("{FROM}\nX-Auto-Response-Suppress: All"), "x");
    assert_eq!((m.kind, m.no_auto_answer), (MailKind::Customer, true));
}

#[test]
fn bulk_and_list_mail() {
    for extra in [
        "Precedence: bulk",
        "Precedence: LIST",
        "Precedence: junk",
        "List-Id: <a.b>",
        "List-Unsubscribe: <mailto:u@b>",
        "List-Post: <mailto:l@b>",
    ] {
        let m = mail(&format!("{FROM}\n{extra}"), "x");
        assert_eq!(
            (m.kind, m.no_auto_answer),
            (MailKind::Bulk, true),
            "{extra}"
        );
    }
    let m = mail(&format!("{FROM}\nPrecedence: first-class"), "x");
    assert_eq!((m.kind, m.no_auto_answer), (MailKind::Customer, false));
    // An auto reply from a list is an auto reply.
    let m = mail(
        &format!("{FROM}\nList-Id: <a.b>\nAuto-Submitted: auto-replied"),
        "x",
    );
    assert_eq!(m.kind, MailKind::AutoReply);
}

#[test]
fn mail_that_no_one_reads_is_never_answered() {
    let answerable = |head: &str| !mail(head, "Hello, my order is late.").no_auto_answer;
    assert!(answerable("From: anna@shop.example"));
    // A null Return-Path alone (the delivering server's record of an
    // empty envelope sender): a notification, whatever its subject.
    assert!(!answerable("From: anna@shop.example\nReturn-Path: <>"));
    assert!(answerable(
        "From: anna@shop.example\nReturn-Path: <anna@shop.example>"
    ));
}

#[test]
fn addresses_only_software_sends_from() {
    for sender in [
        "MAILER-DAEMON@mx.example",
        "listserv@lists.example",
        "Majordomo@lists.example",
        "owner-staff@lists.example",
        "staff-request@lists.example",
        "noreply@shop.example",
        "no-reply@shop.example",
        "No_Reply+orders@shop.example",
        "do-not-reply@shop.example",
        "donotreply@shop.example",
    ] {
        assert!(automated_sender(sender), "{sender}");
    }
    // Names that merely contain those words are people.
    for sender in [
        "reply@shop.example",
        "noreen@shop.example",
        "owner@shop.example",
        "requests@shop.example",
        "postmaster@shop.example",
    ] {
        assert!(!automated_sender(sender), "{sender}");
    }
}

const DSN_HEAD: &str = "From: MAILER-DAEMON@mx.example\nTo: help@support.example.com\nAuto-Submitted: auto-replied\nContent-Type: multipart/mixed; boundary=\"B\"";

fn dsn(head: &str, status: &str, returned: &str) -> ParsedMail {
    let body = format!(
        "--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example\r\n\r\n{status}\r\n--B\r\n{returned}\r\n--B--\r\n"
    );
    mail(head, &body)
}

fn bounce_of(m: &ParsedMail) -> Bounce {
    match &m.kind {
        MailKind::Bounce(b) => b.clone(),
        other => panic!("not a bounce: {other:?}"),
    }
}

#[test]
fn bounces() {
    let returned = "Content-Type: message/rfc822\r\n\r\nMessage-ID: <reply-9@support.example.com>\r\nSubject: x\r\n\r\nbody";
    let status = "Original-Recipient: rfc822;Old@Customer.Example\r\nFinal-Recipient: rfc822; Nobody@Customer.Example\r\n\
                  Action: failed\r\nStatus: 5.1.1 (bad mailbox)\r\nDiagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>:\r\n Recipient address rejected";
    let m = dsn(DSN_HEAD, status, returned);
    let expected = Bounce {
        original_message_id: Some("reply-9@support.example.com".into()),
        recipient: Some("nobody@customer.example".into()),
        original_recipient: Some("old@customer.example".into()),
        status: Some("5.1.1".into()),
        action: Some("failed".into()),
        permanent: true,
        diagnostic: Some("550 5.1.1 <nobody@customer.example>: Recipient address rejected".into()),
    };
    assert_eq!(bounce_of(&m), expected);
    assert!(m.no_auto_answer);
    // The returned message stays an attachment; the status part does not.
    let types: Vec<&str> = m
        .attachments
        .iter()
        .map(|a| a.content_type.as_str())
        .collect();
    assert_eq!(types, ["message/rfc822"]);
    assert!(m.attachments[0].bytes.starts_with(b"Message-ID: <reply-9@"));

    // A delay: temporary; the first failed recipient wins over others.
    let delayed = dsn(
        DSN_HEAD,
        "Final-Recipient: rfc822; a@b.example\r\nAction: delayed\r\nStatus: 4.4.1",
        "",
    );
    let b = bounce_of(&delayed);
    assert_eq!(
        (b.action.as_deref(), b.status.as_deref(), b.permanent),
        (Some("delayed"), Some("4.4.1"), false)
    );
    let two = "Final-Recipient: rfc822; a@b.example\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\nFinal-Recipient: rfc822; c@d.example\r\nAction: failed\r\nStatus: 5.2.2";
    let b = bounce_of(&dsn(DSN_HEAD, two, ""));
    assert_eq!(
        (b.recipient.as_deref(), b.permanent),
        (Some("c@d.example"), true)
    );
    // An alias the MTA rewrote: both addresses, the original apart.
    let aliased = "Original-Recipient: rfc822; Olena@Customer.example\r\nFinal-Recipient: rfc822; olena.k@mail.customer.example\r\nAction: failed\r\nStatus: 5.1.1";
    let b = bounce_of(&dsn(DSN_HEAD, aliased, ""));
    assert_eq!(
        (b.recipient.as_deref(), b.original_recipient.as_deref()),
        (
            Some("olena.k@mail.customer.example"),
            Some("olena@customer.example")
        )
    );
    // Failed without a (valid) status: permanent.
    let b = bounce_of(&dsn(
        DSN_HEAD,
        "Final-Recipient: a@b.example\r\nAction: failed\r\nStatus: x.1",
        "",
    ));
    assert_eq!(
        (b.recipient.as_deref(), b.status, b.permanent),
        (Some("a@b.example"), None, true)
    );

    // A status part from anyone else, outside multipart/report: not a bounce.
    let m = dsn(
        &DSN_HEAD.replace("MAILER-DAEMON", "olena"),
        status,
        returned,
    );
    assert_eq!(m.kind, MailKind::AutoReply);
    let m = dsn(
        &DSN_HEAD.replace("MAILER-DAEMON", "postmaster"),
        status,
        returned,
    );
    assert!(matches!(m.kind, MailKind::Bounce(_)));
    // multipart/report; report-type=delivery-status from anyone is.
    let report = DSN_HEAD.replace(
        "multipart/mixed;",
        "multipart/report; report-type=\"Delivery-Status\";",
    );
    let m = dsn(&report.replace("MAILER-DAEMON", "olena"), status, returned);
    assert_eq!(
        bounce_of(&m).original_message_id.as_deref(),
        Some("reply-9@support.example.com")
    );
}
