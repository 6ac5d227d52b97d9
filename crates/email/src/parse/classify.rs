//! What kind of mail: bounce (RFC 3464), auto reply (RFC 3834), list or
//! bulk mail, or a customer's.

use super::headers::{Headers, clean_address, clean_id, clean_line, clip};
use super::{Bounce, MailKind, Mailbox};
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

/// Only this much of a report part is read.
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// A diagnostic is clipped to this many bytes.
const MAX_DIAGNOSTIC_BYTES: usize = 1024;

/// Subject starts that mark an automatic answer, lower-cased. Taken into
/// account only together with a header hinting at one (never alone).
const AUTO_SUBJECTS: [&str; 12] = [
    "automatic reply",
    "auto:",
    "autoreply",
    "auto reply",
    "auto-reply",
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "réponse automatique",
    "автоответ",
    "автоматична відповідь",
];

/// Bounce first (they often carry `Auto-Submitted` too), then auto reply,
/// then bulk.
pub(super) fn kind(
    msg: &Message<'_>,
    hdrs: &Headers<'_>,
    subject: Option<&str>,
    from: Option<&Mailbox>,
) -> MailKind {
    if let Some(bounce) = bounce(msg, from) {
        MailKind::Bounce(bounce)
    } else if is_auto_reply(hdrs, subject) {
        MailKind::AutoReply
    } else if is_bulk(hdrs) {
        MailKind::Bulk
    } else {
        MailKind::Customer
    }
}

/// `Auto-Submitted` present and not `no` (parameters ignored), or
/// `X-Autoreply`/`X-Autorespond`, or an auto-reply subject together with
/// `X-Auto-Response-Suppress`, `Precedence: auto_reply` or a null
/// `Return-Path`.
fn is_auto_reply(hdrs: &Headers<'_>, subject: Option<&str>) -> bool {
    let submitted = hdrs.raw("Auto-Submitted").is_some_and(|v| {
        let v = first_token(&v);
        !v.is_empty() && v != "no"
    });
    if submitted || hdrs.has("X-Autoreply") || hdrs.has("X-Autorespond") {
        return true;
    }
    let hinted = hdrs.has("X-Auto-Response-Suppress")
        || precedence(hdrs).as_deref() == Some("auto_reply")
        || hdrs.raw("Return-Path").as_deref() == Some("<>");
    let subject = subject.map(str::to_lowercase).unwrap_or_default();
    hinted
        && AUTO_SUBJECTS
            .iter()
            .any(|s| subject.starts_with(s) || (s.starts_with("out of") && subject.contains(s)))
}

/// An address only software sends from, never answered automatically
/// (RFC 5230 section 4.6, Sieve's vacation: `MAILER-DAEMON`, `LISTSERV`,
/// `majordomo`, `owner-*`, `*-request`; and the usual "no reply" names).
/// Case is ignored; `+` tags are not part of the name.
pub fn automated_sender(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let local = local
        .split('+')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bare: String = local
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    matches!(local.as_str(), "mailer-daemon" | "listserv" | "majordomo")
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || matches!(bare.as_str(), "noreply" | "donotreply" | "noreplies")
}

/// `Precedence: bulk|list|junk`, or any `List-*` field (RFC 2369, 2919).
fn is_bulk(hdrs: &Headers<'_>) -> bool {
    let precedence = precedence(hdrs);
    matches!(precedence.as_deref(), Some("bulk" | "list" | "junk")) || hdrs.has_prefix("List-")
}

fn precedence(hdrs: &Headers<'_>) -> Option<String> {
    hdrs.raw("Precedence").map(|v| first_token(&v))
}

/// The value before any `;` parameter, trimmed, lower-cased.
fn first_token(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A delivery status notification: `multipart/report;
/// report-type=delivery-status`, or a `message/delivery-status` part in a
/// mail from MAILER-DAEMON or postmaster.
fn bounce(msg: &Message<'_>, from: Option<&Mailbox>) -> Option<Bounce> {
    let report = msg
        .parts
        .first()
        .and_then(|p| p.content_type())
        .is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
                && ct.attribute("report-type").is_some_and(|t| {
                    t.eq_ignore_ascii_case("delivery-status")
                        || t.eq_ignore_ascii_case("global-delivery-status")
                })
        });
    let status = msg.parts.iter().find(|p| {
        is_type(p, "message", "delivery-status") || is_type(p, "message", "global-delivery-status")
    });
    let daemon = from.is_some_and(|f| {
        let local = f.address.split('@').next().unwrap_or_default();
        local == "mailer-daemon" || local == "postmaster"
    });
    if !(report || (status.is_some() && daemon)) {
        return None;
    }
    let mut bounce = Bounce {
        original_message_id: original_message_id(msg),
        ..Bounce::default()
    };
    if let Some(part) = status {
        read_status(&lossy_head(part.contents()), &mut bounce);
    }
    bounce.permanent = match &bounce.status {
        Some(status) => status.starts_with('5'),
        None => bounce.action.as_deref() == Some("failed"),
    };
    Some(bounce)
}

fn is_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
    })
}

fn lossy_head(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_REPORT_BYTES)]).into_owned()
}

/// The per-recipient fields of the first failed recipient (else the first
/// recipient).
fn read_status(text: &str, bounce: &mut Bounce) {
    let blocks = blocks(text);
    let is_recipient = |b: &&Vec<(String, String)>| {
        b.iter()
            .any(|(n, _)| n == "final-recipient" || n == "action" || n == "status")
    };
    let field = |b: &Vec<(String, String)>, name: &str| {
        b.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| clean_line(v))
    };
    let failed = blocks
        .iter()
        .filter(is_recipient)
        .find(|b| field(b, "action").is_some_and(|a| first_token(&a) == "failed"));
    let Some(block) = failed.or_else(|| blocks.iter().find(is_recipient)) else {
        return;
    };
    let address = |name: &str| {
        field(block, name)
            .as_deref()
            .map(without_type)
            .and_then(clean_address)
    };
    let original = address("original-recipient");
    bounce.recipient = address("final-recipient").or_else(|| original.clone());
    bounce.original_recipient = original.filter(|o| Some(o) != bounce.recipient.as_ref());
    bounce.action = field(block, "action")
        .map(|a| first_token(&a))
        .filter(|a| !a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_alphabetic()));
    bounce.status = field(block, "status").and_then(|s| status_code(&s));
    bounce.diagnostic = field(block, "diagnostic-code")
        .map(|d| clip(without_type(&d), MAX_DIAGNOSTIC_BYTES).to_owned())
        .filter(|d| !d.is_empty());
}

/// `5.1.1` from `5.1.1 (bad mailbox)`: class 2, 4 or 5, then two numbers of
/// one to three digits.
fn status_code(value: &str) -> Option<String> {
    let code = value.split_whitespace().next()?;
    let mut parts = code.split('.');
    let class = parts.next()?;
    let number = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let ok = matches!(class, "2" | "4" | "5")
        && number(parts.next())
        && number(parts.next())
        && parts.next().is_none();
    ok.then(|| code.to_owned())
}

/// `rfc822; a@b` → `a@b`, `smtp; 550 …` → `550 …`: the value after a
/// leading type token.
fn without_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// The Message-ID of the returned mail: a message/rfc822 part, or the
/// header block of a text/rfc822-headers part.
fn original_message_id(msg: &Message<'_>) -> Option<String> {
    msg.parts.iter().skip(1).find_map(|part| match &part.body {
        PartType::Message(nested) => Headers::root(nested).ids("Message-ID").into_iter().next(),
        _ if is_type(part, "text", "rfc822-headers")
            || is_type(part, "message", "global-headers")
            || is_type(part, "message", "rfc822")
            || is_type(part, "message", "global") =>
        {
            let text = lossy_head(part.contents());
            let blocks = blocks(&text);
            let first = blocks.first()?;
            let (_, id) = first.iter().find(|(n, _)| n == "message-id")?;
            clean_id(id.split_whitespace().next().unwrap_or_default())
        }
        _ => None,
    })
}

/// Header-style fields (`Name: value`, folded lines joined), in blocks
/// separated by blank lines; names lower-cased.
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in text.lines() {
        let Some(block) = blocks.last_mut() else {
            break;
        };
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(Vec::new());
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    blocks
}
