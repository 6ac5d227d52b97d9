//! Who is calling: a caller id as providers send it → a normalized number.
//!
//! Providers and PBXs write numbers differently: Twilio sends E.164
//! (`+380501234567`), Zammad-style PBXs international digits without `+`
//! (`493055571600`) or national ones with a trunk prefix (`02214710334`),
//! people type `+1 (555) 010-0100`. [`normalize_phone`] gives one spelling
//! per number where it can, so the same caller is the same customer:
//!
//! | given | normalized |
//! |---|---|
//! | `+380 50 123-45-67`, `tel:+380501234567`, `00380501234567` | `+380501234567` |
//! | `493055571600` (7 to 15 digits, no trunk prefix) | `+493055571600` |
//! | `02214710334` (a national number: leading `0`) | `02214710334` (as dialled: the country is unknown) |
//! | `201` (fewer than 7 digits: an extension) | `201` |
//!
//! Withheld numbers are no one in particular ([`Caller::Anonymous`]):
//! `anonymous`, `restricted`, `unknown`, `unavailable`, `private`,
//! `blocked`, `withheld`, an empty `From`, `sip:anonymous@…`, and the
//! numbers Twilio writes for them (`+266696687` "ANONYMOUS", `+7378742833`
//! "RESTRICTED", `+2562533` "BLOCKED", `+8656696` "UNKNOWN",
//! `+86282452253` "UNAVAILABLE": the words on a phone keypad).

/// A caller, classified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A number, normalized by [`normalize_phone`].
    Phone(String),
    /// The number is withheld.
    Anonymous,
    /// Something else: a SIP URI, a `client:` identity, a name (trimmed).
    Other(String),
}

/// Twilio's stand-ins for withheld numbers, normalized.
const TWILIO_WITHHELD: [&str; 5] = [
    "+266696687",
    "+7378742833",
    "+2562533",
    "+8656696",
    "+86282452253",
];

const WITHHELD_WORDS: [&str; 7] = [
    "anonymous",
    "restricted",
    "unknown",
    "unavailable",
    "private",
    "blocked",
    "withheld",
];

/// Classifies what a provider gave as the caller (`From`, CTI `from`).
pub fn classify_caller(raw: &str) -> Caller {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    if raw.is_empty()
        || WITHHELD_WORDS.contains(&lower.as_str())
        || lower.starts_with("sip:anonymous@")
        || lower.starts_with("sips:anonymous@")
    {
        return Caller::Anonymous;
    }
    match normalize_phone(raw) {
        Some(number) if TWILIO_WITHHELD.contains(&number.as_str()) => Caller::Anonymous,
        Some(number) => Caller::Phone(number),
        None => Caller::Other(raw.to_owned()),
    }
}

/// A phone number in one spelling (see the module's table), or `None` when
/// `raw` is not a phone number: letters, more than 15 digits, a `+`
/// followed by fewer than 3 digits or by `0`.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("tel:").unwrap_or(raw);
    let (international, rest) = match raw.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 17 {
        return None;
    }
    let (international, digits) = match digits.strip_prefix("00") {
        Some(rest) if !international => (true, rest.to_owned()),
        _ => (international, digits),
    };
    if international {
        let ok = (3..=15).contains(&digits.len()) && !digits.starts_with('0');
        return ok.then(|| format!("+{digits}"));
    }
    if digits.len() > 15 {
        None
    } else if digits.len() >= 7 && !digits.starts_with('0') {
        Some(format!("+{digits}"))
    } else {
        Some(digits)
    }
}

/// Configured blocked callers, normalized as callers are.
pub fn blocked_set(blocked: &[String]) -> std::collections::HashSet<String> {
    blocked
        .iter()
        .map(|b| match classify_caller(b) {
            Caller::Phone(n) => n,
            _ => b.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_one_spelling() {
        for (raw, want) in [
            ("+380501234567", Some("+380501234567")),
            (" +380 50 123-45-67 ", Some("+380501234567")),
            ("tel:+380501234567", Some("+380501234567")),
            ("00380501234567", Some("+380501234567")),
            ("+1 (555) 010-0100", Some("+15550100100")),
            ("493055571600", Some("+493055571600")),
            ("02214710334", Some("02214710334")),
            ("201", Some("201")),
            ("+0123456", None),
            ("+12", None),
            ("+1234567890123456", None),
            ("1234567890123456", None),
            ("12a4", None),
            ("+", None),
            ("", None),
            ("++380501234567", None),
            ("sip:olena@pbx.example", None),
            ("00", None),
        ] {
            assert_eq!(normalize_phone(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn callers_are_classified() {
        assert_eq!(
            classify_caller("+380501234567"),
            Caller::Phone("+380501234567".into())
        );
        for withheld in [
            "",
            "  ",
            "anonymous",
            "Anonymous",
            "RESTRICTED",
            "+266696687",
            "266696687",
            "+7378742833",
            "+2562533",
            "+8656696",
            "+86282452253",
            "sip:anonymous@anonymous.invalid",
        ] {
            assert_eq!(classify_caller(withheld), Caller::Anonymous, "{withheld:?}");
        }
        assert_eq!(
            classify_caller("client:agent_olena"),
            Caller::Other("client:agent_olena".into())
        );
        assert_eq!(
            classify_caller(" sip:+380501234567@trunk.example "),
            Caller::Other("sip:+380501234567@trunk.example".into())
        );
    }
}
