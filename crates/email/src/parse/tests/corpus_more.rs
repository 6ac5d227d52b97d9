//! Corpus mails 06 to 12: HTML, attachments, auto replies, bounces, list
//! mail, broken MIME, SMTPUTF8 (helpers and files in `corpus.rs`).

use super::corpus::{
    C06, C07, C08, C09, C10, C11, C12, assert_plain_customer, ids, mailbox, parsed,
};
use crate::parse::*;

#[test]
fn c06_polish_html_only_latin2_without_script() {
    let m = parsed(C06);
    assert_eq!(m.kind, MailKind::Customer);
    assert_eq!(m.from, mailbox("anna@customer.example", Some("Anna Nowak")));
    assert_eq!(m.subject.as_deref(), Some("Faktura do zamówienia 5512"));
    assert_eq!(m.text, "Dzień dobry,\nproszę o fakturę do zamówienia 5512.");
    assert!(!m.text.contains("alert") && !m.text.contains('<'));
    let html = m.html.as_deref().expect("the HTML is kept");
    assert!(html.starts_with("<html><body><p>Dzień dobry,</p>"));
    assert!(html.contains("<script>alert(1)</script>"));
    assert!(m.attachments.is_empty());
}

#[test]
fn c07_alternative_with_pdf() {
    let m = parsed(C07);
    assert_eq!(m.kind, MailKind::Customer);
    assert_eq!(m.from, mailbox("john@customer.example", Some("John Smith")));
    assert_eq!(m.to, ids(&["billing@support.example.com"]));
    assert_eq!(m.subject.as_deref(), Some("Receipt for refund"));
    assert_eq!(m.text, "Please see the attached receipt.");
    assert_eq!(
        m.html.as_deref(),
        Some("<p>Please see the attached <i>receipt</i>.</p>")
    );
    assert_eq!(m.attachments.len(), 1);
    let pdf = &m.attachments[0];
    assert_eq!(pdf.name, "receipt-4411.pdf");
    assert_eq!(pdf.content_type, "application/pdf");
    // The decoded file: a 25-byte header, then 0..=255 eight times.
    let mut expected = b"%PDF-1.4\n% tiny test pdf\n".to_vec();
    for _ in 0..8 {
        expected.extend(0..=255u8);
    }
    assert_eq!(pdf.bytes.len(), 2073);
    assert_eq!(pdf.bytes, expected);
    assert_eq!(m.skipped_attachments, 0);
}

#[test]
fn c08_out_of_office_auto_reply() {
    let m = parsed(C08);
    assert_eq!(m.kind, MailKind::AutoReply);
    assert!(m.no_auto_answer);
    assert_eq!(m.from, mailbox("john@customer.example", Some("John Smith")));
    assert_eq!(
        m.subject.as_deref(),
        Some("Automatic reply: Re: Receipt for refund")
    );
    assert_eq!(m.text, "I am out of office until Monday.");
    assert_eq!(m.in_reply_to, ids(&["agent-reply-2@support.example.com"]));
    assert_eq!(
        m.message_id.as_deref(),
        Some("179536974799.3898.9933633313100424952@mail.customer.example")
    );
}

#[test]
fn c09_bounce_delivery_status() {
    let m = parsed(C09);
    let expected = Bounce {
        original_message_id: Some("agent-reply-3@support.example.com".into()),
        recipient: Some("nobody@customer.example".into()),
        original_recipient: None,
        status: Some("5.1.1".into()),
        action: Some("failed".into()),
        permanent: true,
        diagnostic: None,
    };
    // A bounce, although it carries Auto-Submitted too.
    assert_eq!(m.kind, MailKind::Bounce(expected));
    assert!(m.no_auto_answer);
    assert_eq!(
        m.from,
        mailbox(
            "mailer-daemon@mx.customer.example",
            Some("Mail Delivery System")
        )
    );
    assert_eq!(
        m.text,
        "This is the mail system. Your message could not be delivered."
    );
    assert_eq!(
        m.message_id.as_deref(),
        Some("bounce-1@mx.customer.example")
    );
    // The report parts are summed up in `Bounce`, not attachments.
    assert!(m.attachments.is_empty());
    assert_eq!(m.skipped_attachments, 0);
}

#[test]
fn c10_bulk_list_mail() {
    let m = parsed(C10);
    assert_eq!(m.kind, MailKind::Bulk);
    assert!(m.no_auto_answer);
    assert_eq!(m.from, mailbox("news@shop.example", Some("Newsletter")));
    assert_eq!(m.subject.as_deref(), Some("Weekly deals"));
    assert_eq!(m.text, "Deals of the week.");
}

#[test]
fn c11_malformed_is_read_as_far_as_it_goes() {
    let m = parsed(C11);
    assert_eq!(m.kind, MailKind::Customer);
    assert!(!m.no_auto_answer);
    assert_eq!(m.message_id, None);
    assert_eq!(m.date_ms, None);
    assert_eq!(m.from, mailbox("broken@customer.example", None));
    assert_eq!(m.to, ids(&["help@support.example.com"]));
    // An encoded word that does not decode is kept as sent.
    assert_eq!(m.subject.as_deref(), Some("=?utf-8?B?not-valid-base64!!?="));
    // The valid base64 before the garbage: "SGVsbG8gd29ybGQ".
    assert_eq!(m.text, "Hello world");
    // The unterminated binary part, as sent (not a lossy UTF-8 copy).
    assert_eq!(m.attachments.len(), 1);
    let part = &m.attachments[0];
    assert_eq!(
        (part.name.as_str(), part.content_type.as_str()),
        ("attachment-1", "application/octet-stream")
    );
    assert!(part.bytes.starts_with(&[0x00, 0x01, 0x02, 0xff]));
}

#[test]
fn c12_smtputf8_raw_utf8_headers() {
    let m = parsed(C12);
    assert_plain_customer(&m);
    assert_eq!(m.from, mailbox("тарас@клієнт.укр", Some("Тарас")));
    assert_eq!(m.subject.as_deref(), Some("Питання щодо гарантії"));
    assert_eq!(m.text, "Чи діє гарантія на ремонт?");
    assert_eq!(m.message_id.as_deref(), Some("utf8-hdr-1@клієнт.укр"));
    assert_eq!(m.date_ms, Some(1_795_345_200_000));
}
