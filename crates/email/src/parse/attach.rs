//! Attachments: which parts, their bytes, type and a safe file name.

use super::{Attachment, ParseLimits, encoded, headers::clip};
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};
use std::borrow::Cow;

/// A file name is clipped to this many bytes (its extension kept).
const MAX_NAME_BYTES: usize = 200;
/// The longest extension (with its dot) kept when clipping a name.
const MAX_EXTENSION_BYTES: usize = 16;
/// Parts of a delivery report that [`super::Bounce`] sums up; not listed as
/// attachments of a bounce.
const REPORT_TYPES: [&str; 4] = [
    "message/delivery-status",
    "message/global-delivery-status",
    "text/rfc822-headers",
    "message/global-headers",
];

/// The attachments within `limits`, and how many were skipped. `used`: parts
/// already read as the text.
pub(super) fn collect(
    msg: &Message<'_>,
    limits: &ParseLimits,
    used: &[u32],
    is_bounce: bool,
) -> (Vec<Attachment>, usize) {
    let mut kept: Vec<Attachment> = Vec::new();
    let mut skipped = 0;
    for &id in msg.attachments.iter().filter(|id| !used.contains(id)) {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let content_type = content_type(part);
        if is_bounce && REPORT_TYPES.contains(&content_type.as_str()) {
            continue;
        }
        let bytes = bytes(msg, part);
        if kept.len() >= limits.max_attachments || bytes.len() > limits.max_attachment_bytes {
            skipped += 1;
            continue;
        }
        let name = part
            .attachment_name()
            .and_then(file_name)
            .unwrap_or_else(|| format!("attachment-{}", kept.len() + 1));
        kept.push(Attachment {
            name,
            content_type,
            bytes: bytes.into_owned(),
        });
    }
    (kept, skipped)
}

/// The decoded content (a nested message: as sent, or as decoded when it
/// came base64-encoded). A part whose encoding mail-parser could not read
/// holds a lossy UTF-8 copy; unless it is text, it is taken from the raw
/// mail as sent instead.
fn bytes<'a>(msg: &'a Message<'a>, part: &'a MessagePart<'a>) -> Cow<'a, [u8]> {
    if matches!(part.body, PartType::Text(_)) && part.is_encoding_problem && !is_text(part) {
        let range = part.offset_body as usize..part.offset_end as usize;
        if let Some(raw) = msg.raw_message.get(range) {
            return Cow::Borrowed(raw);
        }
    }
    Cow::Borrowed(part.contents())
}

fn is_text(part: &MessagePart<'_>) -> bool {
    part.content_type()
        .is_none_or(|ct| ct.ctype().eq_ignore_ascii_case("text"))
}

/// `type/subtype` in lower case. Without a (sane) Content-Type: `text/plain`
/// (RFC 2045's default), `message/rfc822` for a nested message.
pub(super) fn content_type(part: &MessagePart<'_>) -> String {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) if token_ok(ct.ctype()) && token_ok(sub) => {
                format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase()
            }
            None if ct.ctype().eq_ignore_ascii_case("text") => "text/plain".to_owned(),
            _ => "application/octet-stream".to_owned(),
        },
        None if matches!(part.body, PartType::Message(_)) => "message/rfc822".to_owned(),
        None => "text/plain".to_owned(),
    }
}

/// A file name safe to show and to store: its last path segment, encoded
/// words decoded, without control or bidirectional control characters, with `: * ? " < > |` as `_`,
/// at most 200 bytes (the extension kept); `None` when nothing is left or
/// only dots.
pub(super) fn file_name(name: &str) -> Option<String> {
    let decoded = if name.contains("=?") {
        Cow::Owned(encoded::decode(name))
    } else {
        Cow::Borrowed(name)
    };
    let base = decoded.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !switchboard_channel::files::hidden_in_a_name(*c))
        .map(|c| if ":*?\"<>|".contains(c) { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().all(|c| c == '.') {
        return None; // also empty
    }
    if cleaned.len() <= MAX_NAME_BYTES {
        return Some(cleaned.to_owned());
    }
    let extension = cleaned
        .rfind('.')
        .filter(|&dot| dot > 0 && cleaned.len() - dot <= MAX_EXTENSION_BYTES)
        .map_or("", |dot| &cleaned[dot..]);
    let stem = clip(cleaned, MAX_NAME_BYTES - extension.len());
    Some(format!("{}{extension}", stem.trim_end()))
}
