//! A visitor's message with attachments as the chat session stores it
//! (`session.rs`: the visitor's text, then one `attachment_line` per
//! upload, each on its own line) and as it reads it back for the visitor's
//! tabs (`split_attachments`); and `attachment_id_ok` (the media id check
//! of `uploads.rs`, through `switchboard_chat::fuzzing`) on the text. Must
//! not panic.
//!
//! Besides: the stored text reads back as the visitor's text (less any CR,
//! which the line split drops when attachments follow) and exactly the
//! attachments stored, whatever the visitor wrote; a media id is 22
//! base64url characters.
//!
//! Input layout: the parts between `0xff` bytes. The first is the
//! visitor's text (lossy UTF-8), each of up to 10 more an upload's
//! `X-Filename` (lossy UTF-8, through `file_name`); an upload's first byte
//! also chooses its type, its id is made of its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_chat::fuzzing::{attachment_id_ok, file_name};
use switchboard_chat::protocol::Attachment;
use switchboard_chat::uploads::{attachment_line, split_attachments};

const TYPES: [&str; 4] = ["image/png", "image/jpeg", "application/pdf", "text/plain"];
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn id_documented(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn upload(i: usize, raw: &[u8]) -> Attachment {
    let id: String = (0..22)
        .map(|k| {
            let b = raw.get(k).copied().unwrap_or(0).wrapping_add(i as u8);
            char::from(ID_ALPHABET[usize::from(b) % ID_ALPHABET.len()])
        })
        .collect();
    assert!(attachment_id_ok(&id), "{id:?}");
    Attachment {
        id,
        name: file_name(&String::from_utf8_lossy(raw)),
        content_type: TYPES[usize::from(raw.first().copied().unwrap_or(0)) % TYPES.len()].into(),
        size: raw.len() as u64 * 1000,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    assert_eq!(attachment_id_ok(&text), id_documented(&text), "{text:?}");
    let uploads: Vec<Attachment> = parts
        .take(10)
        .enumerate()
        .map(|(i, p)| upload(i, p))
        .collect();

    // As `Conn::message` builds the stored text.
    let mut body = text.clone();
    for a in &uploads {
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&attachment_line(a));
    }

    let (read_text, read) = split_attachments(&body);
    let expected: Vec<Attachment> = uploads
        .iter()
        .map(|a| Attachment {
            name: a.name.replace(']', " "),
            ..a.clone()
        })
        .collect();
    assert_eq!(read, expected, "the attachments of {body:?}");
    if uploads.is_empty() {
        assert_eq!(read_text, text, "the text of {body:?}");
    } else {
        assert_eq!(
            read_text.replace('\r', ""),
            text.replace('\r', ""),
            "the text of {body:?}"
        );
    }
});
