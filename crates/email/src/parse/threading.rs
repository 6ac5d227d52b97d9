//! Threading helpers: the conversation tag in subjects and signed
//! plus-addresses (`help+<id>.<sig>@domain`) for replies.

use super::headers::clean_line;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest tag id.
const MAX_TAG_BYTES: usize = 64;
/// Hex digits of the truncated HMAC in a plus-address (64 bits).
const SIGNATURE_HEX: usize = 16;

/// Reply prefixes (lower-cased, before the colon) that [`tagged_subject`]
/// does not stack: English, German, Dutch, Nordic, Polish, Portuguese,
/// Italian, Turkish, Ukrainian, Russian, Chinese.
const REPLY_PREFIXES: [&str; 16] = [
    "re",
    "aw",
    "antw",
    "antwort",
    "sv",
    "vs",
    "odp",
    "res",
    "rif",
    "r",
    "ynt",
    "відп",
    "відповідь",
    "отв",
    "ответ",
    "回复",
];

fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// The conversation tag in a subject: the id of the last `[#id]` in it,
/// where the id is 1 to 64 characters of `A-Za-z0-9-` (e.g. `SB-1234` from
/// `Re: Refund [#SB-1234]`). The last one, because [`tagged_subject`] puts
/// ours at the end and mail clients only add in front.
pub fn conversation_tag(subject: &str) -> Option<String> {
    let b = subject.as_bytes();
    let mut found = None;
    let mut at = 0;
    while let Some(pos) = subject.get(at..).and_then(|s| s.find("[#")) {
        let start = at + pos + 2;
        let len = b[start..].iter().take_while(|&&c| is_tag_byte(c)).count();
        if (1..=MAX_TAG_BYTES).contains(&len) && b.get(start + len) == Some(&b']') {
            found = Some(&subject[start..start + len]);
        }
        at = start;
    }
    found.map(str::to_owned)
}

/// The subject of a reply: `Re: <subject> [#tag]`. Reply prefixes already
/// there (`Re:`, `RE[2]:`, `AW:`, `Відп:` …, repeated) become one `Re:`, the
/// tag already in the subject is not repeated, the subject is put on one
/// line (no CR/LF can reach the header). Without a subject: `Re: [#tag]`.
/// A tag with characters outside `A-Za-z0-9-` has them dropped (and is
/// clipped to 64); nothing left: no tag.
pub fn tagged_subject(subject: Option<&str>, tag: &str) -> String {
    let tag: String = tag
        .bytes()
        .filter(|&b| is_tag_byte(b))
        .map(char::from)
        .take(MAX_TAG_BYTES)
        .collect();
    let mut rest = clean_line(subject.unwrap_or_default());
    if !tag.is_empty() {
        rest = remove_tag(&rest, &tag);
    }
    let mut rest = rest.as_str();
    while let Some(stripped) = strip_reply_prefix(rest) {
        rest = stripped;
    }
    let mut out = String::from("Re:");
    for word in rest.split_whitespace() {
        out.push(' ');
        out.push_str(word);
    }
    if !tag.is_empty() {
        out.push_str(&format!(" [#{tag}]"));
    }
    out
}

/// `subject` without any `[#tag]` (ASCII case ignored).
fn remove_tag(subject: &str, tag: &str) -> String {
    let needle = format!("[#{tag}]");
    let mut out = String::with_capacity(subject.len());
    let mut rest = subject;
    while let Some(pos) = find_ignore_case(rest, &needle) {
        out.push_str(&rest[..pos]);
        out.push(' ');
        rest = &rest[pos + needle.len()..];
    }
    out.push_str(rest);
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    (0..h.len().checked_sub(n.len())? + 1).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// The subject after one leading reply prefix (`Re:`, `RE[2]:`, `Aw (3):`,
/// `回复：`), trimmed; `None` when it does not start with one.
fn strip_reply_prefix(subject: &str) -> Option<&str> {
    let colon = subject.find([':', '：'])?;
    let head = subject[..colon].trim();
    let head = match head.find(['[', '(']) {
        Some(open) if head.ends_with([']', ')']) => {
            let count = &head[open + 1..head.len() - 1];
            count
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then_some(head[..open].trim())?
        }
        _ => head,
    };
    let lower = head.to_lowercase();
    REPLY_PREFIXES.contains(&lower.as_str()).then(|| {
        let after = colon + subject[colon..].chars().next().map_or(1, char::len_utf8);
        subject[after..].trim_start()
    })
}

fn signature(id: &str, secret: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(id.as_bytes());
    Some(mac)
}

/// A reply address that says which conversation a reply belongs to and
/// cannot be made up: `help@support.example.com` and id `3-01J…` give
/// `help+3-01j….<sig>@support.example.com`, where `sig` is the first 16 hex
/// digits of HMAC-SHA256(secret, id). The id is put in lower case (and
/// signed so), since mail systems, and [`super::parse`], lower-case
/// addresses; it should be made of `A-Za-z0-9-_.` and, with `help+` and
/// the signature, fit the 64 bytes of a local part.
pub fn plus_address(mailbox: &str, id: &str, secret: &[u8]) -> String {
    let id = id.to_ascii_lowercase();
    let sig = signature(&id, secret)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    let sig = sig.get(..SIGNATURE_HEX).unwrap_or_default();
    match mailbox.trim().rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{id}.{sig}@{domain}"),
        None => format!("{}+{id}.{sig}", mailbox.trim()),
    }
}

/// Checks an address made by [`plus_address`] (compared in constant time):
/// the base mailbox (`help@support.example.com`) and the id, both lower
/// case. `None` for any other address, a wrong signature, or an empty
/// secret.
pub fn verify_plus_address(address: &str, secret: &[u8]) -> Option<(String, String)> {
    if secret.is_empty() {
        return None;
    }
    let PlusParts {
        base,
        domain,
        id,
        sig,
    } = plus_parts(address)?;
    let sig = hex::decode(sig).ok()?;
    signature(&id, secret)?.verify_truncated_left(&sig).ok()?;
    Some((format!("{base}@{domain}"), id))
}

/// Whether `address` has the shape of a [`plus_address`]
/// (`local+id.<16 hex>@domain`), signed right or not.
pub fn looks_plus_addressed(address: &str) -> bool {
    plus_parts(address).is_some()
}

/// The parts of an address shaped like a [`plus_address`], lower case.
struct PlusParts {
    base: String,
    domain: String,
    id: String,
    sig: String,
}

fn plus_parts(address: &str) -> Option<PlusParts> {
    let address = address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase();
    let (local, domain) = address.rsplit_once('@')?;
    let (base, tagged) = local.rsplit_once('+')?;
    let (id, sig) = tagged.rsplit_once('.')?;
    let well_formed = !base.is_empty()
        && !domain.is_empty()
        && !id.is_empty()
        && sig.len() == SIGNATURE_HEX
        && sig.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| PlusParts {
        base: base.to_owned(),
        domain: domain.to_owned(),
        id: id.to_owned(),
        sig: sig.to_owned(),
    })
}
