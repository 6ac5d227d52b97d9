//! The readable text of a mail and its HTML body.

use super::{CLIPPED_MARK, encoded, headers::clip};
use mail_parser::decoders::{base64::base64_decode, html::html_to_text};
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

/// The body as Switchboard keeps it.
pub(super) struct Body {
    /// Finished (see [`finish`]) and clipped.
    pub(super) text: String,
    /// The first HTML body part, as received.
    pub(super) html: Option<String>,
    /// Parts read as text that mail-parser listed as attachments.
    pub(super) used: Vec<u32>,
}

/// The text/plain body parts (HTML ones converted where a message has no
/// text/plain alternative), joined by a blank line. Without any, the first
/// plain text part mail-parser gave up on (broken encoding) is read as far
/// as it goes.
pub(super) fn body(msg: &Message<'_>, max: usize) -> Body {
    let mut pieces: Vec<String> = Vec::new();
    let mut total = 0;
    for part in msg
        .text_body
        .iter()
        .filter_map(|&id| msg.parts.get(id as usize))
    {
        let piece = part_text(part);
        if piece.trim().is_empty() {
            continue;
        }
        total += piece.len();
        pieces.push(piece);
        if total > max {
            break;
        }
    }
    let mut used = Vec::new();
    if pieces.is_empty()
        && let Some(&id) = msg.attachments.iter().find(|&&id| is_stray_text(msg, id))
        && let Some(part) = msg.parts.get(id as usize)
    {
        pieces.push(part_text(part));
        used.push(id);
    }
    let html = msg
        .html_body
        .iter()
        .filter_map(|&id| msg.parts.get(id as usize))
        .find_map(|part| match &part.body {
            PartType::Html(html) => Some(html.to_string()),
            _ => None,
        });
    Body {
        text: finish(&pieces.join("\n\n"), max),
        html,
        used,
    }
}

/// A text/plain (or untyped) part without a file name that mail-parser put
/// among the attachments because its encoding is broken.
fn is_stray_text(msg: &Message<'_>, id: u32) -> bool {
    let Some(part) = msg.parts.get(id as usize) else {
        return false;
    };
    let plain = part.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
    });
    let attached = part
        .content_disposition()
        .is_some_and(|d| d.is_attachment());
    matches!(part.body, PartType::Text(_)) && plain && !attached && part.attachment_name().is_none()
}

fn part_text(part: &MessagePart<'_>) -> String {
    match &part.body {
        PartType::Text(text) if part.is_encoding_problem => {
            broken_base64(part, text).unwrap_or_else(|| text.to_string())
        }
        PartType::Text(text) => text.to_string(),
        PartType::Html(html) => html_text(html),
        _ => String::new(),
    }
}

/// A base64 part mail-parser could not decode: the valid base64 before the
/// first foreign character, when that decodes to clean text (otherwise the
/// part is probably not base64 at all, and its raw text is better).
fn broken_base64(part: &MessagePart<'_>, raw: &str) -> Option<String> {
    let declared = part
        .content_transfer_encoding()
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    if !declared {
        return None;
    }
    let valid = raw
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || b"+/= \t\r\n".contains(b))
        .count();
    let bytes = base64_decode(raw.get(..valid)?.as_bytes())?;
    let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
    let text = encoded::decode_charset(charset.unwrap_or("utf-8"), &bytes);
    let clean = !text.trim().is_empty()
        && !text
            .chars()
            .any(|c| c == '\u{fffd}' || (c.is_control() && !"\t\r\n".contains(c)));
    clean.then_some(text)
}

/// Readable text of an HTML body: mail-parser's conversion of the HTML
/// after [`prepare`].
pub(super) fn html_text(html: &str) -> String {
    html_to_text(&prepare(html))
}

/// Drops comments and `script`/`style` elements (mail-parser's conversion
/// keeps the content of a `<script type=…>`), and puts a `<br>` after the
/// end of block elements and a blank after table cells, so that their texts
/// do not run together. Not an HTML parser: only what the conversion needs.
pub(super) fn prepare(html: &str) -> String {
    let b = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let (mut copied, mut at) = (0, 0);
    while let Some(found) = html.get(at..).and_then(|s| s.find('<')) {
        let lt = at + found;
        if b[lt..].starts_with(b"<!--") {
            out.push_str(&html[copied..lt]);
            copied = find_from(html, lt + 4, "-->").map_or(html.len(), |e| e + 3);
            at = copied;
            continue;
        }
        let closing = b.get(lt + 1) == Some(&b'/');
        let start = lt + 1 + usize::from(closing);
        let len = b[start..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let name = &html[start..start + len];
        if !closing && (name.eq_ignore_ascii_case("script") || name.eq_ignore_ascii_case("style")) {
            out.push_str(&html[copied..lt]);
            copied = element_end(html, start + len, name);
            at = copied;
            continue;
        }
        let extra = match name.to_ascii_lowercase().as_str() {
            "td" | "th" if closing => " ",
            "div" | "li" | "tr" | "table" | "ul" | "ol" | "blockquote" | "pre" | "section"
            | "article" | "header" | "footer" | "dd" | "dt" | "h1" | "h2" | "h3" | "h4" | "h5"
            | "h6"
                if closing =>
            {
                "<br>"
            }
            "hr" => "<br>",
            _ => "",
        };
        if !extra.is_empty() {
            let end = find_from(html, start + len, ">").map_or(html.len(), |e| e + 1);
            out.push_str(&html[copied..end]);
            out.push_str(extra);
            copied = end;
            at = end;
            continue;
        }
        at = lt + 1;
    }
    out.push_str(&html[copied..]);
    out
}

/// Where the element `name` opened before `from` ends: after the `>` of its
/// end tag (any case), or the end of the input.
fn element_end(html: &str, from: usize, name: &str) -> usize {
    let b = html.as_bytes();
    let mut at = from;
    while let Some(pos) = find_from(html, at, "</") {
        let name_at = pos + 2;
        let matches = b
            .get(name_at..name_at + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()));
        let ends = !b
            .get(name_at + name.len())
            .is_some_and(u8::is_ascii_alphanumeric);
        if matches && ends {
            return find_from(html, name_at, ">").map_or(html.len(), |e| e + 1);
        }
        at = name_at;
    }
    html.len()
}

fn find_from(s: &str, from: usize, needle: &str) -> Option<usize> {
    s.get(from..)?.find(needle).map(|i| from + i)
}

/// The length of the longest prefix of `s` without line ends or control
/// characters other than `\t` (`char::is_control`: C0, DEL and C1, the
/// last encoded as 0xC2 0x80..=0x9F). Always a character boundary.
fn ordinary_prefix(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if (x < 0x20 && x != b'\t')
            || x == 0x7f
            || (x == 0xc2 && b.get(i + 1).is_some_and(|y| (0x80..=0x9f).contains(y)))
        {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// Line ends as `\n`, no control characters but `\n` and `\t`, at most one
/// blank line in a row, no blank lines around; then clipped to `max` bytes,
/// ending in [`CLIPPED_MARK`] when clipped (the mark counted in `max`).
pub(super) fn finish(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut newlines = 0;
    let mut rest = text;
    while !rest.is_empty() {
        // Runs of ordinary characters are copied whole (most of a body).
        let end = ordinary_prefix(rest);
        if end > 0 {
            out.push_str(&rest[..end]);
            newlines = 0;
            rest = &rest[end..];
        }
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        let after = chars.as_str();
        match c {
            // CR LF: the LF makes the line end.
            '\r' if after.starts_with('\n') => {}
            '\r' | '\n' => {
                newlines += 1;
                if newlines <= 2 && !out.is_empty() {
                    out.push('\n');
                }
            }
            // Any other control character is dropped.
            _ => {}
        }
        rest = after;
    }
    let trimmed_len = out.trim_end().len();
    out.truncate(trimmed_len);
    if out.len() <= max {
        return out;
    }
    if max < CLIPPED_MARK.len() {
        return clip(&out, max).to_owned();
    }
    let mut clipped = clip(&out, max - CLIPPED_MARK.len()).trim_end().to_owned();
    clipped.push_str(CLIPPED_MARK);
    clipped
}

#[cfg(test)]
mod finish_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The character-by-character definition `finish` had before its
    /// fast path: both must agree on any text.
    fn reference(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut newlines = 0;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let c = match c {
                '\r' if chars.peek() == Some(&'\n') => continue,
                '\r' | '\n' => '\n',
                '\t' => '\t',
                c if c.is_control() => continue,
                c => c,
            };
            if c == '\n' {
                newlines += 1;
                if newlines > 2 || out.is_empty() {
                    continue;
                }
            } else {
                newlines = 0;
            }
            out.push(c);
        }
        let trimmed_len = out.trim_end().len();
        out.truncate(trimmed_len);
        out
    }

    #[test]
    fn the_fast_path_agrees_with_the_definition() {
        let alphabet = [
            'a', ' ', '\t', '\r', '\n', '\u{0}', '\u{1b}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}',
            '\u{a0}', 'ї', '字', '😀', '\u{2028}', 'Â',
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            assert_eq!(finish(&text, usize::MAX), reference(&text), "{text:?}");
        }
        for c in '\u{0}'..='\u{ff}' {
            let text = format!("x{c}y\r\n\r\n\r\nz{c}");
            assert_eq!(finish(&text, usize::MAX), reference(&text), "{c:?}");
        }
    }
}
