//! Hand-made mails and the helpers: classification, headers, limits.

use crate::parse::*;

pub(super) fn mail(head: &str, body: &str) -> ParsedMail {
    let raw = format!("{}\r\n\r\n{body}", head.trim_end().replace('\n', "\r\n"));
    parse(raw.as_bytes(), &ParseLimits::default())
}

pub(super) const FROM: &str =
    "From: Olena <olena@customer.example>\nTo: help@support.example.com\nSubject: Hi";

#[test]
fn header_fields() {
    let m = mail(
        "From: =?big5_tw?b?s6+kcKlq?= <Chen@Customer.Example>\nReply-To: \"Desk\" <DESK@x.example>\n\
         To: A@x.example, team: b@x.example, c@x.example;\nTo: a@x.example\nCc: <d@x.example>\n\
         Subject: a\n  folded\tsubject\nContent-Language: de-DE, en\nDate: Mon, 1 Jan 1969 00:00:00 +0000\n\
         Message-ID: <one@x>\nIn-Reply-To: <p1@x> <p2@x>",
        "x",
    );
    let from = m.from.as_ref().expect("from");
    assert_eq!(
        (from.address.as_str(), from.name.as_deref()),
        ("chen@customer.example", Some("陳小姐"))
    );
    let reply_to = m.reply_to.as_ref().expect("reply-to");
    assert_eq!(
        (reply_to.address.as_str(), reply_to.name.as_deref()),
        ("desk@x.example", Some("Desk"))
    );
    assert_eq!(m.to, ["a@x.example", "b@x.example", "c@x.example"]);
    assert_eq!(m.cc, ["d@x.example"]);
    assert_eq!(m.subject.as_deref(), Some("a folded subject"));
    assert_eq!(m.language.as_deref(), Some("de-DE"));
    assert_eq!(m.date_ms, None); // before 1970
    assert_eq!(m.message_id.as_deref(), Some("one@x"));
    assert_eq!(m.in_reply_to, ["p1@x", "p2@x"]);

    let m = mail(
        "From: a@b.example\nContent-Language: <script>\nDate: not a date",
        "x",
    );
    assert_eq!((m.language, m.date_ms), (None, None));

    let refs: Vec<String> = (0..150).map(|i| format!("<r{i}@x>")).collect();
    let m = mail(
        &format!("From: a@b.example\nReferences: {}", refs.join("\n ")),
        "x",
    );
    assert_eq!(m.references.len(), 100);
    assert_eq!(
        (m.references[0].as_str(), m.references[1].as_str()),
        ("r0@x", "r51@x")
    );
    assert_eq!(m.references.last().map(String::as_str), Some("r149@x"));

    let m = mail("From: a@b.example\nSubject: Re: Refund [#SB-77]", "x");
    assert_eq!(m.tag.as_deref(), Some("SB-77"));
}

#[test]
fn text_is_clipped_on_a_character_boundary() {
    let body = "Дякую! ".repeat(100); // 13 bytes each
    let raw = format!("From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}");
    let limits = ParseLimits {
        max_text_bytes: 100,
        ..ParseLimits::default()
    };
    let m = parse(raw.as_bytes(), &limits);
    assert!(
        m.text.len() <= 100 && m.text.ends_with(CLIPPED_MARK),
        "{:?}",
        m.text
    );
    assert!(body.starts_with(m.text.trim_end_matches(CLIPPED_MARK)));
    let limits = ParseLimits {
        max_text_bytes: 3,
        ..ParseLimits::default()
    };
    assert_eq!(parse(raw.as_bytes(), &limits).text, "Д");
}

#[test]
fn html_to_readable_text() {
    let html = |h: &str| {
        mail(
            "From: a@b.example\nContent-Type: text/html; charset=utf-8",
            h,
        )
        .text
    };
    assert_eq!(
        html("<p>a</p><script type=\"text/javascript\">alert(1)</script>b"),
        "a\nb"
    );
    assert_eq!(html("<SCRIPT src=x>evil()</SCRIPT >after"), "after");
    assert_eq!(html("<style media=\"x>y\">p{}</style>text"), "text");
    assert_eq!(
        html("<!-- <script> -->visible<script>x</script>"),
        "visible"
    );
    assert_eq!(html("before<script>never closed"), "before");
    assert_eq!(html("<div>one</div><div>two</div>"), "one\ntwo");
    assert_eq!(html("<table><tr><td>x</td><td>y</td></tr></table>"), "x y");
    assert_eq!(html("<ul><li>1</li><li>2</li></ul>"), "1\n2");
    assert_eq!(html("x &amp; y &lt;b&gt; z"), "x & y <b> z");
    assert_eq!(html("a&#0;b"), "ab");
    assert_eq!(html("<scripts>kept</scripts>"), "kept");
}

#[test]
fn attachments_and_limits() {
    let part = |name: &str, body: &str| {
        format!(
            "--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{body}\r\n"
        )
    };
    let long = format!("{}.tar.gz", "n".repeat(300));
    let body = format!(
        "--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n{}{}{}{}{}--B--\r\n",
        part("../../etc/passwd", "1"),
        part("a:b*c?.txt", "22"),
        part(&long, "333"),
        part("..", "4444"),
        part("=?utf-8?B?0YTQsNC50Lsu0L/QtNGE?=", "55555"),
    );
    let m = mail(
        "From: a@b.example\nContent-Type: multipart/mixed; boundary=B",
        &body,
    );
    assert_eq!(m.text, "see attached");
    let names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
    let clipped = format!("{}.gz", "n".repeat(197));
    assert_eq!(
        names,
        [
            "passwd",
            "a_b_c_.txt",
            clipped.as_str(),
            "attachment-4",
            "файл.пдф"
        ]
    );
    let sizes: Vec<usize> = m.attachments.iter().map(|a| a.bytes.len()).collect();
    assert_eq!(sizes, [1, 2, 3, 4, 5]);

    let raw =
        format!("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n{body}");
    let limits = ParseLimits {
        max_attachments: 2,
        max_attachment_bytes: 4,
        ..ParseLimits::default()
    };
    let m = parse(raw.as_bytes(), &limits);
    let sizes: Vec<usize> = m.attachments.iter().map(|a| a.bytes.len()).collect();
    assert_eq!((sizes, m.skipped_attachments), (vec![1, 2], 3));
}

/// A name reversed by U+202E (right-to-left override), shown to agents as
/// `invoiceexe.pdf`, loses the control.
#[test]
fn an_attachment_name_loses_its_bidirectional_controls() {
    let body = "--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"=?utf-8?B?aW52b2ljZeKArmZkcC5leGU=?=\"\r\n\r\nx\r\n--B--\r\n";
    let m = mail(
        "From: a@b.example\nContent-Type: multipart/mixed; boundary=B",
        body,
    );
    let names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["invoicefdp.exe"]);
}

#[test]
fn nested_messages_are_attached_decoded() {
    let inner = "Message-ID: <in@x>\r\nSubject: inner\r\n\r\ninner body\r\n";
    let b64 = "TWVzc2FnZS1JRDogPGluQHg+DQpTdWJqZWN0OiBpbm5lcg0KDQppbm5lciBib2R5DQo=";
    for (encoding, body) in [("7bit", inner), ("base64", b64)] {
        let body = format!(
            "--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: message/rfc822\r\n\
             Content-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n--B--\r\n"
        );
        let m = mail(
            "From: a@b.example\nContent-Type: multipart/mixed; boundary=B",
            &body,
        );
        assert_eq!(m.text, "hi");
        assert_eq!(m.attachments.len(), 1, "{encoding}");
        let attached = &m.attachments[0];
        assert_eq!(
            (attached.name.as_str(), attached.content_type.as_str()),
            ("attachment-1", "message/rfc822")
        );
        assert_eq!(attached.bytes, inner.as_bytes(), "{encoding}");
    }
}

#[test]
fn file_names_are_safe() {
    use crate::parse::attach::file_name;
    assert_eq!(
        file_name("C:\\Users\\x\\report.pdf").as_deref(),
        Some("report.pdf")
    );
    assert_eq!(file_name("a/b\\c|d<e>f\"g").as_deref(), Some("c_d_e_f_g"));
    assert_eq!(
        file_name(" tab\tand\u{7}bell.txt ").as_deref(),
        Some("tabandbell.txt")
    );
    assert_eq!(file_name("dir/").as_deref(), None);
    assert_eq!(file_name("...").as_deref(), None);
    assert_eq!(file_name("").as_deref(), None);
    let long = format!("{}.verylongextension-over-16", "ж".repeat(150));
    let clipped = file_name(&long).expect("a name");
    assert!(clipped.len() <= 200 && long.starts_with(&clipped));
}

#[test]
fn unreadable_input_is_text() {
    let limits = ParseLimits::default();
    let m = parse(b"", &limits);
    assert_eq!(
        (m.text.as_str(), m.kind, m.from),
        ("", MailKind::Customer, None)
    );
    let m = parse(b"\r\n\r\njust a body", &limits);
    assert_eq!(m.text, "just a body");
}
