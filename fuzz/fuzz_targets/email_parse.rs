//! `switchboard_email::parse::parse` on arbitrary bytes (a raw mail as an
//! LMTP/SMTP client or an IMAP server hands it over). Must not panic.
//!
//! The input is parsed twice: with the default limits and with tight ones
//! (16 bytes of text, one attachment of at most 64 bytes), and each result
//! must keep what `ParsedMail` documents: text within the limit, without CR
//! or control characters other than `\n` and `\t`; at most the allowed
//! attachments, each within the size, with a safe name (1 to 200 bytes, no
//! path separator or control character) and a `type/subtype`; addresses
//! trimmed, lower-cased, 1 to 320 bytes, without blanks; names (≤ 256
//! bytes) and the subject (≤ 1024 bytes) on one line; message ids 1 to 512
//! bytes without brackets or blanks, at most 100 references; a language of
//! at most 35 bytes; the tag is the subject's; anything but a customer's
//! mail is never answered automatically; the tight parse is the default one
//! less text and attachments.
//!
//! Then the threading helpers: `tagged_subject` of the subject carries the
//! tag (found again by `conversation_tag`), is one line and stays the same
//! when applied again; a plus-address for the tag verifies to the mailbox
//! and the lower-cased tag; the input as an address never panics
//! `verify_plus_address`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_email::parse::{
    MailKind, ParseLimits, ParsedMail, conversation_tag, parse, plus_address, tagged_subject,
    verify_plus_address,
};

fn one_line(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn check(m: &ParsedMail, limits: &ParseLimits) {
    assert!(m.text.len() <= limits.max_text_bytes);
    assert!(
        !m.text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    );
    assert!(m.attachments.len() <= limits.max_attachments);
    for a in &m.attachments {
        assert!(a.bytes.len() <= limits.max_attachment_bytes);
        assert!(!a.name.is_empty() && a.name.len() <= 200, "{:?}", a.name);
        assert!(
            !a.name.contains(['/', '\\']) && one_line(&a.name),
            "{:?}",
            a.name
        );
        assert!(a.content_type.contains('/') && one_line(&a.content_type));
    }
    let mailboxes = m.from.iter().chain(&m.reply_to);
    let addresses = mailboxes
        .clone()
        .map(|b| &b.address)
        .chain(&m.to)
        .chain(&m.cc);
    for address in addresses {
        assert!(!address.is_empty() && address.len() <= 320, "{address:?}");
        assert_eq!(*address, address.to_lowercase());
        assert!(!address.chars().any(|c| c.is_control() || c.is_whitespace()));
    }
    for name in mailboxes.filter_map(|b| b.name.as_ref()) {
        assert!(
            !name.is_empty() && name.len() <= 256 && one_line(name),
            "{name:?}"
        );
    }
    if let Some(subject) = &m.subject {
        assert!(!subject.is_empty() && subject.len() <= 1024 && one_line(subject));
    }
    let ids = m
        .message_id
        .iter()
        .chain(&m.in_reply_to)
        .chain(&m.references);
    for id in ids {
        assert!(!id.is_empty() && id.len() <= 512, "{id:?}");
        assert!(!id.contains(['<', '>']) && !id.chars().any(char::is_whitespace));
    }
    assert!(m.references.len() <= 100);
    assert!(m.language.as_ref().is_none_or(|l| l.len() <= 35));
    if let Some(tag) = &m.tag {
        assert!((1..=64).contains(&tag.len()));
    }
    assert!(m.kind == MailKind::Customer || m.no_auto_answer);
}

fuzz_target!(|data: &[u8]| {
    let defaults = ParseLimits::default();
    let mail = parse(data, &defaults);
    check(&mail, &defaults);
    let tight = ParseLimits {
        max_text_bytes: 16,
        max_attachments: 1,
        max_attachment_bytes: 64,
    };
    let small = parse(data, &tight);
    check(&small, &tight);
    // Only the text and the attachments depend on the limits.
    let without_body = |m: &ParsedMail| ParsedMail {
        text: String::new(),
        attachments: Vec::new(),
        skipped_attachments: 0,
        ..m.clone()
    };
    assert_eq!(without_body(&mail), without_body(&small));
    assert!(mail.text.starts_with(small.text.trim_end_matches("\n[…]")));
    let all = mail.attachments.len() + mail.skipped_attachments;
    assert_eq!(all, small.attachments.len() + small.skipped_attachments);

    let tag = mail.tag.clone().unwrap_or_else(|| "SB-1".to_owned());
    let tagged = tagged_subject(mail.subject.as_deref(), &tag);
    assert!(one_line(&tagged));
    assert_eq!(conversation_tag(&tagged).as_deref(), Some(tag.as_str()));
    assert_eq!(tagged_subject(Some(&tagged), &tag), tagged);
    let address = plus_address("help@support.example.com", &tag, b"fuzz");
    let verified = verify_plus_address(&address, b"fuzz");
    let expected = (
        "help@support.example.com".to_owned(),
        tag.to_ascii_lowercase(),
    );
    assert_eq!(verified, Some(expected));
    let _ = verify_plus_address(&String::from_utf8_lossy(data), b"fuzz");
});
