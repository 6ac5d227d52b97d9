//! Every mail of `tests/corpus/email` (see its EXPECTED.tsv), with the
//! exact decoded values (checked against Python's `email` package).

use crate::parse::*;

macro_rules! corpus {
    ($($name:ident = $file:literal;)+) => {
        $(pub(super) const $name: &[u8] = include_bytes!(concat!("../../../../../tests/corpus/email/", $file));)+
        const FILES: &[(&str, &[u8])] = &[$(($file, $name)),+];
    };
}

corpus! {
    C01 = "01-uk-plain-utf8.eml";
    C02 = "02-outbound-agent-reply.eml";
    C03 = "03-uk-followup-threaded.eml";
    C04 = "04-ru-cp1251-8bit.eml";
    C05 = "05-zh-big5-base64.eml";
    C06 = "06-pl-html-only-latin2.eml";
    C07 = "07-en-alternative-with-pdf.eml";
    C08 = "08-auto-replied-ooo.eml";
    C09 = "09-bounce-dsn.eml";
    C10 = "10-bulk-list.eml";
    C11 = "11-malformed-no-msgid.eml";
    C12 = "12-smtputf8-raw-headers.eml";
}

/// Every corpus file, for the robustness tests.
pub(super) fn files() -> &'static [(&'static str, &'static [u8])] {
    FILES
}

pub(super) fn parsed(raw: &[u8]) -> ParsedMail {
    parse(raw, &ParseLimits::default())
}

pub(super) fn mailbox(address: &str, name: Option<&str>) -> Option<Mailbox> {
    Some(Mailbox {
        address: address.to_owned(),
        name: name.map(str::to_owned),
    })
}

pub(super) fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// A plain customer mail without threading, HTML or attachments.
pub(super) fn assert_plain_customer(m: &ParsedMail) {
    assert_eq!(m.kind, MailKind::Customer);
    assert!(!m.no_auto_answer);
    assert_eq!(m.html, None);
    assert!(m.attachments.is_empty());
    assert_eq!(m.skipped_attachments, 0);
    assert_eq!(m.to, ids(&["help@support.example.com"]));
    assert!(m.cc.is_empty() && m.reply_to.is_none());
    assert_eq!((m.tag.as_deref(), m.language.as_deref()), (None, None));
}

#[test]
fn every_corpus_file_is_tested() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corpus/email");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    on_disk.sort();
    let tested: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(on_disk, tested);
}

#[test]
fn c01_ukrainian_plain_utf8() {
    let m = parsed(C01);
    assert_plain_customer(&m);
    assert_eq!(
        m.from,
        mailbox("olena@customer.example", Some("Olena Kovalenko"))
    );
    assert_eq!(m.subject.as_deref(), Some("Замовлення #4411 не доставлено"));
    assert_eq!(
        m.text,
        "Добрий день!\nМоє замовлення #4411 досі не доставлене. Допоможіть, будь ласка."
    );
    assert_eq!(
        m.message_id.as_deref(),
        Some("order-4411@mail.customer.example")
    );
    assert!(m.in_reply_to.is_empty() && m.references.is_empty());
    assert_eq!(m.date_ms, Some(1_795_341_600_000));
}

#[test]
fn c02_outbound_agent_reply() {
    let m = parsed(C02);
    assert_eq!(m.kind, MailKind::Customer);
    assert_eq!(m.from, mailbox("help@support.example.com", Some("Support")));
    assert_eq!(m.to, ids(&["olena@customer.example"]));
    assert_eq!(
        m.subject.as_deref(),
        Some("Re: Замовлення #4411 не доставлено")
    );
    assert_eq!(m.text, "Відповідь агента (outbound, for threading tests).");
    assert_eq!(
        m.message_id.as_deref(),
        Some("agent-reply-1@support.example.com")
    );
    assert_eq!(m.in_reply_to, ids(&["order-4411@mail.customer.example"]));
    assert_eq!(m.references, ids(&["order-4411@mail.customer.example"]));
}

#[test]
fn c03_followup_threads_onto_01_and_02() {
    let m = parsed(C03);
    assert_plain_customer(&m);
    assert_eq!(
        m.from,
        mailbox("olena@customer.example", Some("Olena Kovalenko"))
    );
    assert_eq!(
        m.subject.as_deref(),
        Some("Re: Re: Замовлення #4411 не доставлено")
    );
    assert_eq!(
        m.text,
        "Дякую! Ще питання: чи можна змінити адресу?\n\n> Відповідь агента"
    );
    assert_eq!(
        m.message_id.as_deref(),
        Some("order-4411-followup@mail.customer.example")
    );
    assert_eq!(m.in_reply_to, ids(&["agent-reply-1@support.example.com"]));
    assert_eq!(
        m.references,
        ids(&[
            "order-4411@mail.customer.example",
            "agent-reply-1@support.example.com"
        ])
    );
    // The thread: 03 answers 02, which answers 01.
    let (first, reply) = (parsed(C01), parsed(C02));
    assert_eq!(m.in_reply_to.first(), reply.message_id.as_ref());
    assert_eq!(reply.in_reply_to.first(), first.message_id.as_ref());
    assert_eq!(m.references.first(), first.message_id.as_ref());
}

#[test]
fn c04_russian_windows_1251_8bit() {
    let m = parsed(C04);
    assert_plain_customer(&m);
    assert_eq!(
        m.from,
        mailbox("ivan@customer.example", Some("Иван Петров"))
    );
    assert_eq!(m.subject.as_deref(), Some("Возврат товара"));
    assert_eq!(
        m.text,
        "Здравствуйте! Хочу вернуть товар, он пришёл повреждённым."
    );
    assert_eq!(
        m.message_id.as_deref(),
        Some("ru-return-1@mail.customer.example")
    );
    assert_eq!(m.date_ms, Some(1_795_331_100_000)); // 10:05 +0300
}

#[test]
fn c05_chinese_big5_base64() {
    let m = parsed(C05);
    assert_plain_customer(&m);
    // The whole `name <address>` is one encoded word: repaired.
    assert_eq!(m.from, mailbox("chen@customer.example", Some("陳小姐")));
    // Charset label `big5_tw`, unknown to mail-parser: repaired.
    assert_eq!(m.subject.as_deref(), Some("帳戶無法登入"));
    assert_eq!(m.text, "您好，我的帳戶無法登入，請協助重設密碼。");
    assert_eq!(
        m.message_id.as_deref(),
        Some("zh-login-1@mail.customer.example")
    );
    assert_eq!(m.date_ms, Some(1_795_341_600_000));
}
