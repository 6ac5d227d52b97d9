//! Header fields: lookup by name, addresses, message ids, subject, date,
//! language, and the small string helpers the other modules share.

use super::{Mailbox, encoded};
use mail_parser::{Addr, Header, HeaderValue, Message};
use std::borrow::Cow;

pub(super) const MAX_SUBJECT_BYTES: usize = 1024;
pub(super) const MAX_NAME_BYTES: usize = 256;
pub(super) const MAX_ADDRESS_BYTES: usize = 320;
pub(super) const MAX_ID_BYTES: usize = 512;
/// Message ids kept of one field (References can be long).
const MAX_IDS: usize = 100;
/// Addresses kept of To or Cc.
const MAX_ADDRESSES: usize = 100;

/// The header fields of one part, with the raw bytes their offsets point
/// into.
pub(super) struct Headers<'a> {
    raw: &'a [u8],
    list: &'a [Header<'a>],
}

impl<'a> Headers<'a> {
    /// The top-level fields of a message.
    pub(super) fn root(msg: &'a Message<'a>) -> Headers<'a> {
        Headers {
            raw: msg.raw_message.as_ref(),
            list: msg.parts.first().map_or(&[][..], |p| p.headers.as_slice()),
        }
    }

    /// The fields named `name` (case-insensitive), in order.
    pub(super) fn all(&self, name: &'a str) -> impl Iterator<Item = &'a Header<'a>> + 'a {
        self.list
            .iter()
            .filter(move |h| h.name.as_str().eq_ignore_ascii_case(name))
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.list
            .iter()
            .any(|h| h.name.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether any field's name starts with `prefix` (case-insensitive).
    pub(super) fn has_prefix(&self, prefix: &str) -> bool {
        self.list.iter().any(|h| {
            let name = h.name.as_str().as_bytes();
            name.len() >= prefix.len()
                && name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
    }

    /// The first field's value as sent (unfolded, trimmed, lossy UTF-8).
    pub(super) fn raw(&self, name: &'a str) -> Option<String> {
        self.all(name).next().map(|h| clean_line(&self.raw_of(h)))
    }

    fn raw_of(&self, h: &Header<'_>) -> Cow<'a, str> {
        let range = h.offset_start as usize..h.offset_end as usize;
        String::from_utf8_lossy(self.raw.get(range).unwrap_or_default())
    }

    /// The decoded subject on one line; `None` when absent or blank.
    pub(super) fn subject(&self) -> Option<String> {
        let h = self.all("Subject").next()?;
        let raw = self.raw_of(h);
        let decoded = match &h.value {
            HeaderValue::Text(t) => encoded::repair(t, &raw),
            HeaderValue::TextList(l) => encoded::repair(&l.join(" "), &raw),
            _ => encoded::decode(&raw),
        };
        Some(clean_line(&decoded)).filter(|s| !s.is_empty())
    }

    /// The first usable mailbox of the first field `name` (From, Reply-To).
    pub(super) fn mailbox(&self, name: &'a str) -> Option<Mailbox> {
        let h = self.all(name).next()?;
        let mut mailbox = h.value.as_address()?.iter().find_map(mailbox_of)?;
        let garbled = mailbox
            .name
            .as_deref()
            .is_some_and(|n| n.contains('\u{fffd}'));
        let raw = self.raw_of(h);
        if garbled && raw.contains("=?") {
            // An encoded word in a charset mail-parser does not know.
            let decoded = encoded::decode(&raw);
            if let Some((name, address)) = split_mailbox(&decoded)
                && address.trim().eq_ignore_ascii_case(&mailbox.address)
            {
                mailbox.name = clean_name(&name);
            }
        }
        Some(mailbox)
    }

    /// Every address of every field `name` (To, Cc), lower-cased, once each.
    pub(super) fn addresses(&self, name: &'a str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let addrs = self
            .all(name)
            .filter_map(|h| h.value.as_address())
            .flat_map(|a| a.iter());
        for mailbox in addrs.filter_map(mailbox_of) {
            if out.len() >= MAX_ADDRESSES {
                break;
            }
            if !out.contains(&mailbox.address) {
                out.push(mailbox.address);
            }
        }
        out
    }

    /// The message ids of every field `name`, without angle brackets; the
    /// first and the last ones when there are more than `MAX_IDS`.
    pub(super) fn ids(&self, name: &'a str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for h in self.all(name) {
            let values: Vec<&str> = match &h.value {
                HeaderValue::Text(t) => vec![t.as_ref()],
                HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
                _ => Vec::new(),
            };
            ids.extend(values.into_iter().filter_map(clean_id));
        }
        if ids.len() > MAX_IDS {
            ids.drain(1..ids.len() - (MAX_IDS - 1));
        }
        ids
    }

    /// The `Date` field in Unix milliseconds, when valid and not before 1970.
    pub(super) fn date_ms(&self) -> Option<u64> {
        let h = self.all("Date").next()?;
        let date = h.value.as_datetime().filter(|d| d.is_valid())?;
        u64::try_from(date.to_timestamp()).ok()?.checked_mul(1000)
    }

    /// The first language of `Content-Language`, when it looks like a BCP 47
    /// tag: 1 to 35 bytes of letters, digits and `-`, starting with a letter.
    pub(super) fn language(&self) -> Option<String> {
        let raw = self.raw("Content-Language")?;
        let first = raw.split(',').next()?.trim();
        let ok = first.len() <= 35
            && first.starts_with(|c: char| c.is_ascii_alphabetic())
            && first
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| first.to_owned())
    }
}

/// A mailbox from a parsed address, repairing a whole `Name <address>`
/// that arrived inside one encoded word (mail-parser then sees a name only).
pub(super) fn mailbox_of(addr: &Addr<'_>) -> Option<Mailbox> {
    let mut name = addr.name.as_deref().map(str::to_owned);
    let mut address = addr.address.as_deref().map(str::to_owned);
    if address.as_deref().is_none_or(|a| !a.contains('@'))
        && let Some((n, a)) = name.as_deref().and_then(split_mailbox)
    {
        name = Some(n);
        address = Some(a);
    }
    let address = clean_address(&address?)?;
    Some(Mailbox {
        address,
        name: name.as_deref().and_then(clean_name),
    })
}

/// Splits `Name <local@domain>` into its name and address.
pub(super) fn split_mailbox(s: &str) -> Option<(String, String)> {
    let open = s.rfind('<')?;
    let close = open + s[open..].find('>')?;
    let address = s[open + 1..close].trim();
    if !address.contains('@') {
        return None;
    }
    let name = s[..open].trim().trim_matches('"').trim();
    Some((name.to_owned(), address.to_owned()))
}

/// Trimmed, lower-cased, at most 320 bytes, no blanks or control characters.
pub(super) fn clean_address(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let ok = !address.is_empty()
        && address.len() <= MAX_ADDRESS_BYTES
        && !address.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| address.to_lowercase())
}

/// A display name on one line, at most 256 bytes; `None` when blank.
fn clean_name(name: &str) -> Option<String> {
    let name = clean_line(name);
    let name = clip(name.trim_matches('"'), MAX_NAME_BYTES).trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A message id without its angle brackets; `None` when empty, over 512
/// bytes, or containing blanks or control characters.
pub(super) fn clean_id(id: &str) -> Option<String> {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id).trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>');
    ok.then(|| id.to_owned())
}

/// One line: every run of control characters (folding, tabs) becomes one
/// space; trimmed.
pub(super) fn clean_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_control() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() && !out.ends_with(' ') && c != ' ' {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out.trim().to_owned()
}

pub(super) use switchboard_core::clip;
