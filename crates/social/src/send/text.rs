//! Cutting a long reply into messages the platform accepts.
//!
//! Agents write what they need to; platforms cap one message: Messenger
//! "UTF-8 and less than 2000 characters", Instagram "1000 bytes or less",
//! WhatsApp a text `body` of at most 4096 characters, Telegram 1–4096
//! characters. We **split** rather than refuse: a reply over the limit goes
//! out as several messages, in order, cut at the last paragraph break, line
//! break or space that fits (a word longer than the limit is cut inside).
//! Whitespace at a cut is dropped. At most [`MAX_PARTS`] messages per reply:
//! beyond that the reply is refused ([`FailureKind::TooLong`]) rather than
//! flooding the customer.
//!
//! "Characters" are counted as UTF-16 code units, which is what the
//! JavaScript and Java back ends of these platforms count; it is never less
//! than the number of Unicode scalar values, so it errs on the safe side.
//!
//! [`FailureKind::TooLong`]: super::FailureKind::TooLong

use crate::Platform;

/// The most messages one reply is cut into.
pub const MAX_PARTS: usize = 10;

/// The most one message may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLimit {
    /// At most this many UTF-16 code units.
    Utf16(usize),
    /// At most this many bytes of UTF-8.
    Bytes(usize),
    /// No limit of ours (the generic bridge cuts as its service needs).
    None,
}

impl TextLimit {
    /// The limit of one text message on `platform`.
    pub fn of(platform: Platform) -> TextLimit {
        match platform {
            // "less than 2000 characters"
            Platform::Messenger => TextLimit::Utf16(1999),
            Platform::Instagram => TextLimit::Bytes(1000),
            Platform::WhatsApp | Platform::Telegram => TextLimit::Utf16(4096),
            Platform::Generic => TextLimit::None,
        }
    }

    fn weight(self, c: char) -> usize {
        match self {
            TextLimit::Utf16(_) => c.len_utf16(),
            TextLimit::Bytes(_) => c.len_utf8(),
            TextLimit::None => 0,
        }
    }

    fn max(self) -> usize {
        match self {
            TextLimit::Utf16(n) | TextLimit::Bytes(n) => n.max(1),
            TextLimit::None => usize::MAX,
        }
    }

    /// How much of the limit `text` takes.
    pub fn measure(self, text: &str) -> usize {
        match self {
            TextLimit::Utf16(_) => text.encode_utf16().count(),
            TextLimit::Bytes(_) => text.len(),
            TextLimit::None => 0,
        }
    }
}

/// Cuts `text` into parts within `limit`, in order. A text that fits is one
/// part, unchanged. Returns no part for a text that is only whitespace.
pub fn split(text: &str, limit: TextLimit) -> Vec<&str> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    if limit.measure(text) <= limit.max() {
        return vec![text];
    }
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while limit.measure(rest) > limit.max() {
        let cut = cut_point(rest, limit);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        if !head.is_empty() {
            parts.push(head);
        }
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// The byte index to cut `text` at: after the last paragraph break, else line
/// break, else whitespace, within the limit and past its first half (so parts
/// are not tiny); else the last character boundary that fits. Never 0.
fn cut_point(text: &str, limit: TextLimit) -> usize {
    let max = limit.max();
    let mut used = 0;
    let mut fits = 0;
    let mut half = 0;
    for (i, c) in text.char_indices() {
        used += limit.weight(c);
        if used > max {
            break;
        }
        fits = i + c.len_utf8();
        if used <= max / 2 {
            half = fits;
        }
    }
    if fits == 0 {
        // Even the first character is over the limit: it goes alone.
        return text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let window = text.get(..fits).unwrap_or(text);
    let after = |pos: Option<usize>, len: usize| pos.map(|p| p + len).filter(|&p| p > half);
    after(window.rfind("\n\n"), 2)
        .or_else(|| after(window.rfind('\n'), 1))
        .or_else(|| {
            let ws = window.char_indices().rev().find(|(_, c)| c.is_whitespace());
            ws.and_then(|(i, c)| after(Some(i), c.len_utf8()))
        })
        .unwrap_or(fits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_unchanged_part() {
        assert_eq!(split("  hello  ", TextLimit::Utf16(10)), ["  hello  "]);
        assert_eq!(split("x", TextLimit::None), ["x"]);
        assert!(split(" \n\t", TextLimit::Utf16(10)).is_empty());
        assert!(split("", TextLimit::None).is_empty());
    }

    #[test]
    fn cuts_at_paragraphs_then_lines_then_spaces() {
        let text = "first paragraph\n\nsecond one here";
        assert_eq!(
            split(text, TextLimit::Utf16(20)),
            ["first paragraph", "second one here"]
        );
        let text = "line one\nline two is longer";
        assert_eq!(
            split(text, TextLimit::Utf16(12)),
            ["line one", "line two is", "longer"]
        );
        let text = "aaaa bbbb cccc dddd";
        assert_eq!(
            split(text, TextLimit::Utf16(10)),
            ["aaaa bbbb", "cccc dddd"]
        );
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_inside() {
        assert_eq!(
            split("abcdefghij", TextLimit::Utf16(4)),
            ["abcd", "efgh", "ij"]
        );
    }

    #[test]
    fn counts_utf16_units_and_bytes_and_never_cuts_a_character() {
        // U+1F600 is two UTF-16 units and four bytes.
        let text = "😀😀😀";
        assert_eq!(split(text, TextLimit::Utf16(4)), ["😀😀", "😀"]);
        assert_eq!(split(text, TextLimit::Bytes(5)), ["😀", "😀", "😀"]);
        // A character over the whole limit still goes, alone.
        assert_eq!(split("😀a", TextLimit::Bytes(2)), ["😀", "a"]);
        let cyrillic = "Привіт світ";
        for part in split(cyrillic, TextLimit::Bytes(8)) {
            assert!(part.len() <= 8, "{part}");
        }
    }

    #[test]
    fn every_part_fits_and_nothing_but_whitespace_is_lost() {
        let text = "The order 12345 left our warehouse today. ".repeat(300);
        for limit in [
            TextLimit::Utf16(1999),
            TextLimit::Bytes(1000),
            TextLimit::Utf16(4096),
        ] {
            let parts = split(&text, limit);
            assert!(parts.len() > 1);
            for part in &parts {
                assert!(limit.measure(part) <= limit.max());
                assert!(!part.is_empty());
            }
            let joined: String = parts.concat().split_whitespace().collect();
            let original: String = text.split_whitespace().collect();
            assert_eq!(joined, original);
        }
    }

    #[test]
    fn platform_limits() {
        assert_eq!(TextLimit::of(Platform::Messenger), TextLimit::Utf16(1999));
        assert_eq!(TextLimit::of(Platform::Instagram), TextLimit::Bytes(1000));
        assert_eq!(TextLimit::of(Platform::WhatsApp), TextLimit::Utf16(4096));
        assert_eq!(TextLimit::of(Platform::Telegram), TextLimit::Utf16(4096));
        assert_eq!(TextLimit::of(Platform::Generic), TextLimit::None);
    }
}
