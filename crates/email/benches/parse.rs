//! Parsing cost per mail: `parse::parse` with the default limits on every
//! mail of the test corpus (`tests/corpus/email`), a generated 10 KiB
//! plain-text mail, the same text as an HTML-only mail, and a 1 MiB mail
//! with a base64 attachment.
//!
//!   cargo bench -p switchboard-email --bench parse
//!   cargo bench -p switchboard-email --bench parse -- --warm-up-time 1 --measurement-time 3
//!
//! Figures: docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput};
use std::fmt::Write as _;
use std::hint::black_box;
use switchboard_email::parse::{ParseLimits, parse};

macro_rules! corpus {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/corpus/email/",
            $name
        )) as &[u8])),*]
    };
}

const CORPUS: [(&str, &[u8]); 12] = corpus![
    "01-uk-plain-utf8.eml",
    "02-outbound-agent-reply.eml",
    "03-uk-followup-threaded.eml",
    "04-ru-cp1251-8bit.eml",
    "05-zh-big5-base64.eml",
    "06-pl-html-only-latin2.eml",
    "07-en-alternative-with-pdf.eml",
    "08-auto-replied-ooo.eml",
    "09-bounce-dsn.eml",
    "10-bulk-list.eml",
    "11-malformed-no-msgid.eml",
    "12-smtputf8-raw-headers.eml",
];

const HEADERS: &str = "From: Customer 42 <customer42@mail.example.net>\r\n\
    To: Support <help@support.example.com>\r\n\
    Subject: Question about my order 4411\r\n\
    Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
    Message-ID: <bench-1@mail.example.net>\r\n\
    MIME-Version: 1.0\r\n";

/// ~`bytes` of 70-character lines of ordinary words.
fn lines(bytes: usize) -> Vec<String> {
    let words = [
        "order",
        "delivery",
        "invoice",
        "refund",
        "account",
        "password",
        "parcel",
        "address",
        "payment",
        "support",
        "please",
        "thanks",
        "yesterday",
        "tomorrow",
        "number",
        "again",
    ];
    let (mut out, mut size, mut n) = (Vec::new(), 0, 0usize);
    while size < bytes {
        let mut line = String::new();
        while line.len() < 70 {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(words[(n * 7 + line.len()) % words.len()]);
            n += 1;
        }
        size += line.len() + 2;
        out.push(line);
    }
    out
}

/// A 10 KiB text/plain mail, as the LMTP bench sends.
fn plain_10k() -> Vec<u8> {
    let mut m = format!(
        "{HEADERS}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n"
    );
    for l in lines(10 * 1024 - m.len()) {
        m.push_str(&l);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// The same text as an HTML-only mail (the HTML-to-text path).
fn html_10k() -> Vec<u8> {
    let mut m = format!(
        "{HEADERS}Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         <html><head><style>p {{ margin: 0 }}</style></head><body>\r\n"
    );
    for l in lines(10 * 1024 - m.len() - 200) {
        let _ = write!(m, "<p>{l} <b>bold</b></p>\r\n");
    }
    m.push_str("</body></html>\r\n");
    m.into_bytes()
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A short text body and a ~760 KiB PDF-like attachment: ~1 MiB on the wire.
fn attachment_1m() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let payload: Vec<u8> = (0..760 * 1024)
        .map(|_| {
            // xorshift: incompressible bytes, like a real PDF or image.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut m = format!(
        "{HEADERS}Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Please see the attached receipt.\r\n\
         --b1\r\n\
         Content-Type: application/pdf; name=\"receipt.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"receipt.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    let encoded = base64(&payload);
    for line in encoded.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap());
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

fn main() {
    let limits = ParseLimits::default();
    let generated = [
        ("generated-10k-plain", plain_10k()),
        ("generated-10k-html", html_10k()),
        ("generated-1m-attachment", attachment_1m()),
    ];
    // What each case yields, so that a figure is never for a mail the
    // parser gave up on.
    let cases: Vec<(&str, &[u8])> = CORPUS
        .iter()
        .copied()
        .chain(generated.iter().map(|(n, m)| (*n, m.as_slice())))
        .collect();
    for (name, raw) in &cases {
        let mail = parse(raw, &limits);
        println!(
            "{name}: {} bytes in, {:?}, text {} bytes, html {}, {} attachment(s) ({} bytes)",
            raw.len(),
            mail.kind,
            mail.text.len(),
            mail.html.as_ref().map_or(0, String::len),
            mail.attachments.len(),
            mail.attachments
                .iter()
                .map(|a| a.bytes.len())
                .sum::<usize>()
        );
    }
    let big = parse(&generated[2].1, &limits);
    assert_eq!(big.attachments.len(), 1, "the 1 MiB attachment is decoded");
    assert_eq!(big.attachments[0].bytes.len(), 760 * 1024);

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("parse");
    for (name, raw) in cases {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), raw, |b, raw| {
            b.iter(|| parse(black_box(raw), &limits))
        });
    }
    group.finish();
    c.final_summary();
}
