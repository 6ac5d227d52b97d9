//! Which queue a new contact goes to: the first rule whose every condition
//! holds, else the default queue.

use crate::plan::Plan;
use std::collections::BTreeMap;
use switchboard_core::ChannelKind;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// What the rules look at, read from the contact the intake stored.
#[derive(Debug, Clone, Default)]
pub struct ContactFacts {
    pub channel: Option<ChannelKind>,
    pub source: String,
    pub address: String,
    pub subject: String,
    /// The beginning of the first message.
    pub text: String,
    pub language: String,
    pub attributes: BTreeMap<String, String>,
}

/// Where the rules sent a contact, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub queue: usize,
    /// The rule that matched; `None` when the default queue applied.
    pub rule: Option<String>,
    /// The queue's priority plus the rule's.
    pub priority: i32,
}

pub fn place(plan: &Plan, facts: &ContactFacts) -> Placement {
    for rule in &plan.rules {
        if matches(rule, facts) {
            let queue = &plan.queues[rule.queue];
            return Placement {
                queue: rule.queue,
                rule: Some(rule.name.clone()),
                priority: queue.priority.saturating_add(rule.priority),
            };
        }
    }
    Placement {
        queue: plan.default_queue,
        rule: None,
        priority: plan.queues[plan.default_queue].priority,
    }
}

fn matches(rule: &crate::plan::Rule, f: &ContactFacts) -> bool {
    if !rule.channels.is_empty() && !f.channel.is_some_and(|c| rule.channels.contains(&c)) {
        return false;
    }
    if !rule.sources.is_empty() && !rule.sources.contains(&f.source) {
        return false;
    }
    if !rule.addresses.is_empty() && !rule.addresses.contains(&f.address.to_lowercase()) {
        return false;
    }
    if !rule.languages.is_empty() {
        let lang = f.language.to_lowercase();
        // `uk-UA` matches a rule for `uk`.
        let primary = lang.split(['-', '_']).next().unwrap_or("");
        if !rule.languages.iter().any(|l| *l == lang || l == primary) {
            return false;
        }
    }
    if rule
        .attributes
        .iter()
        .any(|(k, v)| f.attributes.get(k) != Some(v))
    {
        return false;
    }
    if !rule.words.is_empty() {
        let haystack = tokens(&format!("{} {}", f.subject, f.text));
        let found = rule.words.iter().any(|word| {
            !word.is_empty()
                && haystack
                    .windows(word.len())
                    .any(|run| run == word.as_slice())
        });
        if !found {
            return false;
        }
    }
    true
}

/// The words of `text` for `words` rules, lower-cased: runs of letters and
/// digits, with apostrophes inside a word kept as part of it (`з'єднання`,
/// `don't`; the typewriter, typographic and modifier-letter apostrophes
/// are one). A hyphen or any other character separates words, so a rule
/// word such as `e-mail` is its run of words (`e`, `mail`).
///
/// The text is put in Unicode normal form C first, so `café` typed with a
/// combining accent (as some mail clients send it) is the same word as
/// `café` in one character; and combining marks inside a word belong to
/// it (the virama of `नमस्ते`, which no precomposed letter absorbs).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.nfc() {
        let mark = is_combining_mark(c) && !word.is_empty();
        if (c.is_alphanumeric() || mark) && c != '\u{2bc}' {
            word.extend(c.to_lowercase());
        } else if matches!(c, '\'' | '\u{2019}' | '\u{2bc}') && !word.is_empty() {
            word.push('\'');
        } else {
            push_word(&mut out, &mut word);
        }
    }
    push_word(&mut out, &mut word);
    out
}

/// Ends the word being read (an apostrophe at its end is a closing quote,
/// not part of it).
fn push_word(out: &mut Vec<String>, word: &mut String) {
    while word.ends_with('\'') {
        word.pop();
    }
    if !word.is_empty() {
        out.push(std::mem::take(word));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{QueueConfig, RuleConfig};

    fn queue(name: &str, priority: i32) -> QueueConfig {
        QueueConfig {
            name: name.into(),
            priority,
            ..QueueConfig::general()
        }
    }

    fn rule(name: &str, queue: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            queue: queue.into(),
            channels: vec![],
            sources: vec![],
            addresses: vec![],
            words: vec![],
            languages: vec![],
            attributes: BTreeMap::new(),
            priority: 0,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_catches_the_rest() {
        let mut vip = rule("vip", "priority");
        vip.attributes.insert("vip".into(), "true".into());
        vip.priority = 5;
        let mut billing = rule("billing-words", "billing");
        billing.words = vec!["Invoice".into(), "refund".into()];
        let mut ukrainian = rule("uk", "ukrainian");
        ukrainian.languages = vec!["uk".into()];
        let mut mailbox = rule("mailbox", "billing");
        mailbox.channels = vec![ChannelKind::Email];
        mailbox.addresses = vec!["Billing@Example.com".into()];
        let plan = Plan::compile(
            "routing",
            &[
                queue("general", 0),
                queue("priority", 10),
                queue("billing", 1),
                queue("ukrainian", 0),
            ],
            &[vip, billing, ukrainian, mailbox],
            "general",
        )
        .expect("valid");

        let mut f = ContactFacts {
            channel: Some(ChannelKind::Chat),
            text: "Where is my refund?".into(),
            ..Default::default()
        };
        assert_eq!(place(&plan, &f).rule.as_deref(), Some("billing-words"));
        f.attributes.insert("vip".into(), "true".into());
        let p = place(&plan, &f);
        assert_eq!((p.queue, p.priority), (1, 15));

        let f = ContactFacts {
            channel: Some(ChannelKind::Chat),
            text: "refunding".into(),
            language: "uk-UA".into(),
            ..Default::default()
        };
        assert_eq!(
            place(&plan, &f).rule.as_deref(),
            Some("uk"),
            "whole words only"
        );

        let f = ContactFacts {
            channel: Some(ChannelKind::Email),
            address: "billing@example.COM".into(),
            ..Default::default()
        };
        assert_eq!(place(&plan, &f).queue, 2);
        let f = ContactFacts {
            channel: Some(ChannelKind::Chat),
            address: "billing@example.com".into(),
            ..Default::default()
        };
        let p = place(&plan, &f);
        assert_eq!((p.queue, p.rule), (0, None));
    }

    /// Words with apostrophes (Ukrainian `з'єднання`, in any of its three
    /// apostrophes) and hyphens match whole, and their fragments do not.
    /// They were split at the apostrophe: the rule never matched, and a
    /// fragment (`єднання`) did.
    #[test]
    fn words_with_apostrophes_and_hyphens_match_whole() {
        let mut link = rule("link", "support");
        link.words = vec!["з'єднання".into(), "E-Mail".into()];
        let mut fragment = rule("fragment", "support");
        fragment.words = vec!["єднання".into(), "mail".into()];
        let plan = Plan::compile(
            "routing",
            &[queue("general", 0), queue("support", 0)],
            &[link],
            "general",
        )
        .expect("valid");
        let rule_of = |plan: &Plan, text: &str| {
            let f = ContactFacts {
                channel: Some(ChannelKind::Chat),
                text: text.into(),
                ..Default::default()
            };
            place(plan, &f).rule
        };
        for text in [
            "Немає з'єднання",
            "немає з\u{2019}єднання з сервером",
            "немає з\u{2bc}єднання",
            "my e-mail bounced",
            "'E-MAIL' bounced",
        ] {
            assert_eq!(rule_of(&plan, text).as_deref(), Some("link"), "{text}");
        }
        for text in ["немає єднання", "my email bounced", "mail-order"] {
            assert_eq!(rule_of(&plan, text), None, "{text}");
        }
        let plan = Plan::compile(
            "routing",
            &[queue("general", 0), queue("support", 0)],
            &[fragment],
            "general",
        )
        .expect("valid");
        assert_eq!(rule_of(&plan, "немає з'єднання"), None, "not a fragment");
        assert_eq!(rule_of(&plan, "e-mail").as_deref(), Some("fragment"));
        assert_eq!(
            tokens("'quoted' don't  Wi-Fi"),
            ["quoted", "don't", "wi", "fi"]
        );
    }

    /// The same word written with a combining accent or with a
    /// precomposed letter is one word, and a combining mark does not split
    /// a word. Before, `cafe\u{301}` was the word `cafe` (the accent ended
    /// it) and `नमस्ते` was two words, split at its virama.
    #[test]
    fn words_are_compared_in_normal_form_c() {
        let mut r = rule("r", "support");
        r.words = vec!["café".into(), "cafe\u{301}s".into(), "नमस्ते".into()];
        let plan = Plan::compile(
            "routing",
            &[queue("general", 0), queue("support", 0)],
            &[r],
            "general",
        )
        .expect("valid");
        let rule_of = |text: &str| {
            let f = ContactFacts {
                text: text.into(),
                ..Default::default()
            };
            place(&plan, &f).rule
        };
        for text in ["le cafe\u{301} est froid", "CAFÉS", "नमस्ते जी"] {
            assert_eq!(rule_of(text).as_deref(), Some("r"), "{text}");
        }
        for text in ["cafe", "नमस", "ते"] {
            assert_eq!(rule_of(text), None, "{text}");
        }
        assert_eq!(tokens("cafe\u{301}-bar"), ["caf\u{e9}", "bar"]);
        assert_eq!(tokens("नमस्ते"), ["नमस्ते"]);
        assert_eq!(tokens("\u{301}x"), ["x"], "a mark alone is no word");
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let mut empty = rule("r", "a");
        empty.words = vec!["refund".into(), " - ".into()];
        let e = Plan::compile("routing", &[queue("a", 0)], &[empty], "")
            .expect_err("a word without letters");
        assert_eq!(e.key, "routing.rules[0].words[1]");
        let e = Plan::compile("routing", &[queue("a", 0)], &[rule("r", "nope")], "")
            .expect_err("unknown queue");
        assert_eq!(e.key, "routing.rules[0].queue");
        let e = Plan::compile("routing", &[queue("a", 0), queue("a", 1)], &[], "")
            .expect_err("duplicate");
        assert_eq!(e.key, "routing.queues[1].name");
        let mut q = queue("a", 0);
        q.skills.insert("billing".into(), 3);
        q.overflow.push(crate::plan::OverflowStepConfig {
            after_secs: 30,
            relax: [("billing".to_string(), 4)].into(),
            ..Default::default()
        });
        let e = Plan::compile("routing", &[q], &[], "").expect_err("raising a minimum");
        assert_eq!(e.key, "routing.queues[0].overflow[0].relax.billing");
        let mut q = queue("a", 0);
        q.skills.insert("billing".into(), 9);
        assert!(Plan::compile("routing", &[q], &[], "").is_err());
        let plan = Plan::compile("routing", &[], &[], "").expect("no queues: general");
        assert_eq!(plan.queues[0].name, "general");
    }
}
