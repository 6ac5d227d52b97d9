//! No input makes `parse` panic, and what it returns keeps its promises.

use super::corpus::files;
use crate::parse::*;

/// What every parsed mail promises, whatever came in.
fn check(m: &ParsedMail, limits: &ParseLimits) {
    assert!(m.text.len() <= limits.max_text_bytes, "text over the limit");
    assert!(!m.text.contains('\r') && !m.text.contains('\0'));
    assert!(m.attachments.len() <= limits.max_attachments);
    for a in &m.attachments {
        assert!(a.bytes.len() <= limits.max_attachment_bytes);
        assert!(!a.name.is_empty() && a.name.len() <= 200);
        assert!(!a.name.contains(['/', '\\']) && !a.name.chars().any(char::is_control));
        assert!(a.content_type.contains('/'));
    }
    let addresses = m.from.iter().chain(&m.reply_to).map(|b| &b.address);
    for address in addresses.chain(&m.to).chain(&m.cc) {
        assert!(!address.is_empty() && address.len() <= 320);
        assert_eq!(*address, address.to_lowercase());
        assert!(!address.chars().any(|c| c.is_control() || c.is_whitespace()));
    }
    for name in m
        .from
        .iter()
        .chain(&m.reply_to)
        .filter_map(|b| b.name.as_ref())
    {
        assert!(name.len() <= 256 && !name.chars().any(char::is_control));
    }
    if let Some(subject) = &m.subject {
        assert!(subject.len() <= 1024 && !subject.chars().any(char::is_control));
    }
    let ids = m
        .message_id
        .iter()
        .chain(&m.in_reply_to)
        .chain(&m.references);
    for id in ids {
        assert!(!id.is_empty() && id.len() <= 512 && !id.contains(['<', '>', ' ']));
    }
    assert!(m.references.len() <= 100);
    if let Some(language) = &m.language {
        assert!(language.len() <= 35);
    }
    if let Some(tag) = &m.tag {
        assert!((1..=64).contains(&tag.len()));
    }
    let auto = m.kind != MailKind::Customer;
    assert!(!auto || m.no_auto_answer);
}

#[test]
fn every_truncation_of_every_corpus_mail() {
    let limits = ParseLimits::default();
    for (name, raw) in files() {
        for end in 0..=raw.len() {
            let m = parse(&raw[..end], &limits);
            check(&m, &limits);
            let _ = name;
        }
    }
}

#[test]
fn tiny_limits() {
    for max_text_bytes in [0, 1, 2, 5, 6, 7, 20] {
        let limits = ParseLimits {
            max_text_bytes,
            max_attachments: 0,
            max_attachment_bytes: 0,
        };
        for (_, raw) in files() {
            let m = parse(raw, &limits);
            check(&m, &limits);
            assert!(m.attachments.is_empty());
        }
    }
    let pdf = files()
        .iter()
        .find(|(n, _)| n.starts_with("07"))
        .map(|(_, r)| *r);
    let m = parse(
        pdf.unwrap_or_default(),
        &ParseLimits {
            max_attachment_bytes: 2072,
            ..ParseLimits::default()
        },
    );
    assert_eq!((m.attachments.len(), m.skipped_attachments), (0, 1));
    let m = parse(
        pdf.unwrap_or_default(),
        &ParseLimits {
            max_attachments: 0,
            ..ParseLimits::default()
        },
    );
    assert_eq!((m.attachments.len(), m.skipped_attachments), (0, 1));
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Bytes that matter to MIME, so that mutations hit structure.
const SPICE: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"--",
    b"=?",
    b"?=",
    b"=?utf-8?B?",
    b"=?big5_tw?q?=A4",
    b"\r\n\r\n",
    b":",
    b";",
    b"<",
    b">",
    b"<script",
    b"</",
    b"<!--",
    b"=\r\n",
    b"boundary=\"B1\"",
    b"\r\n--B1\r\n",
    b"Content-Type: multipart/mixed; boundary=B1\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Type: text/html\r\n",
    b"[#",
    b"\xff",
    b"\xd0",
];

#[test]
fn mutated_corpus_mails() {
    let limits = ParseLimits::default();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let (_, raw) = files()[round % files().len()];
        let mut bytes = raw.to_vec();
        for _ in 0..1 + noise.below(8) {
            let at = noise.below(bytes.len() + 1);
            match noise.below(4) {
                0 if at < bytes.len() => bytes[at] = (noise.next() & 0xff) as u8,
                1 => {
                    let spice = SPICE[noise.below(SPICE.len())];
                    bytes.splice(at..at, spice.iter().copied());
                }
                2 if at < bytes.len() => {
                    let end = (at + noise.below(64)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let from = noise.below(bytes.len());
                    let end = (from + noise.below(128)).min(bytes.len());
                    let copy = bytes[from..end].to_vec();
                    bytes.splice(at..at, copy);
                }
            }
        }
        check(&parse(&bytes, &limits), &limits);
    }
}

#[test]
fn random_bytes() {
    let limits = ParseLimits::default();
    let mut noise = Noise(42);
    for _ in 0..2000 {
        let len = noise.below(600);
        let bytes: Vec<u8> = (0..len)
            .map(|_| match noise.below(3) {
                0 => (noise.next() & 0xff) as u8,
                _ => {
                    let alphabet = b" :\r\n=?-<>;aB\t";
                    alphabet[noise.below(alphabet.len())]
                }
            })
            .collect();
        check(&parse(&bytes, &limits), &limits);
    }
}

/// Shapes that could make a parser slow or deep; each must finish quickly.
#[test]
fn pathological_shapes() {
    let limits = ParseLimits::default();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut nested = Vec::new();
    for i in 0..2000 {
        nested.extend(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n").bytes(),
        );
    }
    cases.push(nested);
    let mut messages = b"Subject: x\r\n".to_vec();
    for _ in 0..500 {
        messages.extend(b"Content-Type: message/rfc822\r\n\r\nSubject: y\r\n");
    }
    cases.push(messages);
    cases.push(format!("Subject: {}\r\n\r\nx", "=?big5_tw?B?".repeat(50_000)).into_bytes());
    cases.push(format!("Subject: \u{fffd}{}\r\n\r\nx", "=?a?b?".repeat(50_000)).into_bytes());
    cases.push(format!("Subject: {}\r\n\r\nx", "[#".repeat(100_000)).into_bytes());
    cases.push(format!("References: {}\r\n\r\nx", "<a@b> ".repeat(50_000)).into_bytes());
    cases.push(format!("To: {}\r\n\r\nx", "a@b, ".repeat(50_000)).into_bytes());
    let html = format!(
        "{}{}{}",
        "<div>".repeat(30_000),
        "<script".repeat(30_000),
        "</".repeat(30_000)
    );
    cases.push(format!("Content-Type: text/html\r\n\r\n{html}").into_bytes());
    cases.push(format!("Content-Type: text/html\r\n\r\n{}", "<!--".repeat(50_000)).into_bytes());
    let report = "Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n";
    cases.push(format!("{report}Action: failed\r\n{}", " x\r\n".repeat(50_000)).into_bytes());
    cases.push(format!("{report}{}", "Status: 5.1.1\r\n\r\n".repeat(20_000)).into_bytes());
    cases.push(vec![b'\n'; 200_000]);
    cases.push(vec![0xff; 200_000]);
    for case in cases {
        let started = std::time::Instant::now();
        check(&parse(&case, &limits), &limits);
        assert!(
            started.elapsed().as_secs() < 10,
            "too slow: {} bytes",
            case.len()
        );
    }
}
