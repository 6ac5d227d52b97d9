//! RFC 2047 encoded words, for what mail-parser leaves garbled: a charset
//! label it does not know (`big5_tw`, `x-…`) comes out as replacement
//! characters there. Used only when its result has some.

use mail_parser::decoders::{base64::base64_decode, charsets::map::charset_decoder};

/// The longest encoded text looked at in one word (RFC 2047 allows 75
/// bytes per word; senders exceed that). Bounds the work on garbage.
const MAX_WORD_BYTES: usize = 2048;

/// `decoded` (mail-parser's reading of `raw`), or this module's own reading
/// when that has fewer replacement characters.
pub(super) fn repair(decoded: &str, raw: &str) -> String {
    let garbled = |s: &str| s.matches('\u{fffd}').count();
    let bad = garbled(decoded);
    if bad == 0 || !raw.contains("=?") {
        return decoded.to_owned();
    }
    let ours = decode(raw);
    if garbled(&ours) < bad {
        ours
    } else {
        decoded.to_owned()
    }
}

/// Decodes the encoded words of a header value (blanks between adjacent
/// words dropped, adjacent words in one charset decoded together, so that a
/// character split across two words survives). What is not a well-formed
/// encoded word is kept as it is.
pub(super) fn decode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending: Option<(String, Vec<u8>)> = None;
    let mut rest = raw;
    while let Some(word) = next_word(rest) {
        let before = &rest[..word.start];
        if pending.is_none() || !before.trim().is_empty() {
            flush(&mut out, pending.take());
            out.push_str(before);
        }
        match &mut pending {
            Some((charset, bytes)) if charset.eq_ignore_ascii_case(&word.charset) => {
                bytes.extend_from_slice(&word.bytes);
            }
            _ => {
                flush(&mut out, pending.take());
                pending = Some((word.charset, word.bytes));
            }
        }
        rest = &rest[word.end..];
    }
    flush(&mut out, pending);
    out.push_str(rest);
    out
}

fn flush(out: &mut String, pending: Option<(String, Vec<u8>)>) {
    if let Some((charset, bytes)) = pending {
        out.push_str(&decode_charset(&charset, &bytes));
    }
}

struct Word {
    start: usize,
    end: usize,
    charset: String,
    bytes: Vec<u8>,
}

/// The first well-formed `=?charset?B|Q?text?=` in `s`.
fn next_word(s: &str) -> Option<Word> {
    let mut from = 0;
    while let Some(found) = s.get(from..)?.find("=?") {
        let start = from + found;
        if let Some(word) = word_at(s, start) {
            return Some(word);
        }
        from = start + 2;
    }
    None
}

fn word_at(s: &str, start: usize) -> Option<Word> {
    let body = s.get(start + 2..)?;
    let q1 = body
        .bytes()
        .take(65)
        .position(|b| b == b'?')
        .filter(|&i| i > 0)?;
    let charset = &body[..q1];
    if charset.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let after = &body[q1 + 1..];
    let (kind, text) = (after.as_bytes().first()?, after.get(1..)?);
    let text = text.strip_prefix('?')?;
    let window = super::headers::clip(text, MAX_WORD_BYTES);
    let text_end = window.find("?=")?;
    let encoded = &text[..text_end];
    if encoded.contains(|c: char| c.is_whitespace()) {
        return None;
    }
    let bytes = match kind {
        b'B' | b'b' => base64_decode(encoded.as_bytes())?,
        b'Q' | b'q' => q_decode(encoded.as_bytes()),
        _ => return None,
    };
    // start + "=?" + charset + "?" + kind + "?" + text + "?="
    let end = start + 2 + q1 + 3 + text_end + 2;
    Some(Word {
        start,
        end,
        charset: charset.to_owned(),
        bytes,
    })
}

fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'=');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Decodes `bytes` in `charset` (an RFC 2231 `*language` ignored). A label
/// mail-parser does not know is tried without its last `-`/`_` parts
/// (`big5_tw` → `big5`, `big5-hkscs-2008` → `big5-hkscs`); UTF-8 (lossy)
/// when nothing fits.
pub(super) fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let mut label = charset.split('*').next().unwrap_or_default().trim();
    for _ in 0..3 {
        if label.eq_ignore_ascii_case("utf-8") || label.eq_ignore_ascii_case("utf8") {
            break;
        }
        if let Some(decoder) = charset_decoder(label.as_bytes()) {
            return decoder(bytes);
        }
        match label.rfind(['-', '_']) {
            Some(cut) if cut >= 3 => label = &label[..cut],
            _ => break,
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}
