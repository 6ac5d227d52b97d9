//! Automatic answers sent by routing itself: the first acknowledgement of a
//! new contact (`[routing.acknowledgement]`) and the answer outside
//! business hours (`[routing.after_hours_answer]`). Both are templates per
//! channel and language:
//!
//! ```toml
//! [routing.after_hours_answer]
//! default = "We are closed. We will answer by {reply_by}."   # any channel, any language
//! uk = "Ми зачинені. Відповімо до {reply_by}."                # any channel, Ukrainian
//! [routing.after_hours_answer.email]
//! en = "Hello {name}, we are closed. We will answer by {reply_by} ({timezone})."
//! ```
//!
//! The contact's language (`uk-UA`) is looked up as `uk-ua`, then `uk`,
//! then `en`, then `default`; at each of them the channel's table first,
//! then the texts for every channel. Placeholders: `{name}`, `{opens_at}`,
//! `{reply_by}`, `{timezone}`; `{{` and `}}` are literal braces.

use crate::plan::PlanError;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use switchboard_core::ChannelKind;

/// One key of a templates table: a text (a language or `default`, for
/// every channel) or a channel's own table (language → text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateEntry {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for TemplateEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TemplateEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, or a table of texts by language")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TemplateEntry, E> {
                Ok(TemplateEntry::Text(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TemplateEntry, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(TemplateEntry::Table(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[routing.acknowledgement]` or `[routing.after_hours_answer]`, as
/// written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TemplatesConfig(pub BTreeMap<String, TemplateEntry>);

/// What a template can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Name,
    OpensAt,
    ReplyBy,
    Timezone,
}

const SLOTS: [(&str, Slot); 4] = [
    ("name", Slot::Name),
    ("opens_at", Slot::OpensAt),
    ("reply_by", Slot::ReplyBy),
    ("timezone", Slot::Timezone),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Slot),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// The language key it was found under (`uk`, `en`, `default`): the
    /// name fallback is looked up with it.
    language: String,
}

/// What fills a template's placeholders.
#[derive(Debug, Clone, Default)]
pub struct Fill<'a> {
    /// The customer's name as the channel gave it (may be empty).
    pub name: &'a str,
    /// `{opens_at}`: the queue's next opening, local time (empty: none in
    /// sight).
    pub opens_at: &'a str,
    /// `{reply_by}`: the opening plus the queue's service level.
    pub reply_by: &'a str,
    /// `{timezone}`: the queue's time zone (`UTC` without a schedule).
    pub timezone: &'a str,
}

fn err(key: String, problem: impl Into<String>) -> PlanError {
    PlanError {
        key,
        problem: problem.into(),
    }
}

impl Template {
    /// Parses `text`; `key` names it in errors.
    pub fn parse(key: &str, text: &str, language: &str) -> Result<Template, PlanError> {
        if text.trim().is_empty() {
            return Err(err(
                key.to_owned(),
                "is empty (remove the key to send nothing)",
            ));
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(err(
                            key.to_owned(),
                            "a \"{\" is not closed (write \"{{\" for a brace)",
                        ));
                    }
                    let Some((_, slot)) = SLOTS.iter().find(|(n, _)| *n == name) else {
                        return Err(err(
                            key.to_owned(),
                            format!(
                                "unknown placeholder {{{name}}} (known: {{name}}, {{opens_at}}, {{reply_by}}, {{timezone}}; \"{{{{\" for a brace)"
                            ),
                        ));
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Slot(*slot));
                }
                '}' => {
                    return Err(err(
                        key.to_owned(),
                        "a \"}\" without \"{\" (write \"}}\" for a brace)",
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template {
            parts,
            language: language.to_owned(),
        })
    }

    /// The language key the template was found under.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The text with its placeholders filled. An empty `{name}` takes the
    /// space before it along ("Hello {name}, …" reads "Hello, …"), or the
    /// comma and spaces after it at the start ("{name}, …").
    pub fn render(&self, fill: &Fill<'_>) -> String {
        let mut out = String::new();
        let mut drop_lead = false;
        let mut after_empty = false;
        for part in &self.parts {
            match part {
                Part::Text(t) => {
                    let t = if drop_lead {
                        drop_lead = false;
                        t.trim_start_matches([',', ' '])
                    } else {
                        t.as_str()
                    };
                    // "Hello, {name}!" without a name: "Hello!".
                    if std::mem::take(&mut after_empty)
                        && out.ends_with(',')
                        && t.starts_with([',', '!', '.', '?', ';', ':'])
                    {
                        out.pop();
                    }
                    out.push_str(t);
                }
                Part::Slot(Slot::Name) => {
                    let name = clean_name(fill.name);
                    if name.is_empty() {
                        if out.is_empty() {
                            drop_lead = true;
                        } else if out.ends_with(' ') {
                            out.pop();
                        }
                        after_empty = true;
                    } else {
                        out.push_str(&name);
                    }
                }
                Part::Slot(Slot::OpensAt) => out.push_str(fill.opens_at),
                Part::Slot(Slot::ReplyBy) => out.push_str(fill.reply_by),
                Part::Slot(Slot::Timezone) => out.push_str(fill.timezone),
            }
        }
        out
    }
}

/// A customer's name as it may go into a message: no control characters,
/// at most 64 characters, trimmed.
fn clean_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Normalizes a language tag for lookups: lower case, `_` as `-`.
fn normal(tag: &str) -> String {
    tag.trim().to_ascii_lowercase().replace('_', "-")
}

fn language_ok(tag: &str) -> bool {
    tag == "default"
        || (!tag.is_empty()
            && tag.len() <= 35
            && tag.split('-').all(|p| {
                !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric())
            }))
}

/// The order a contact's language is looked up in.
fn candidates(language: &str) -> Vec<String> {
    let lang = normal(language);
    let mut out: Vec<String> = Vec::with_capacity(4);
    if !lang.is_empty() {
        out.push(lang.clone());
        if let Some((primary, _)) = lang.split_once('-') {
            out.push(primary.to_owned());
        }
    }
    for fallback in ["en", "default"] {
        if !out.iter().any(|c| c == fallback) {
            out.push(fallback.to_owned());
        }
    }
    out
}

fn channel_ix(c: ChannelKind) -> usize {
    ChannelKind::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// A templates table, checked.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    /// For every channel, by language (`default` included).
    all: BTreeMap<String, Template>,
    /// Per channel (in [`ChannelKind::ALL`] order), by language.
    channels: [BTreeMap<String, Template>; 4],
}

impl Templates {
    /// Checks `[routing.<key>]`; `key` is its full path.
    pub fn compile(key: &str, config: &TemplatesConfig) -> Result<Templates, PlanError> {
        let mut out = Templates::default();
        for (k, entry) in &config.0 {
            let channel = ChannelKind::ALL.iter().find(|c| c.as_str() == k);
            match (entry, channel) {
                (TemplateEntry::Text(text), None) => {
                    let lang = normal(k);
                    if !language_ok(&lang) {
                        return Err(err(
                            format!("{key}.{k}"),
                            "expected a language tag (en, uk, pt-BR), default, or a channel table (chat, email, social, voice)",
                        ));
                    }
                    let t = Template::parse(&format!("{key}.{k}"), text, &lang)?;
                    out.all.insert(lang, t);
                }
                (TemplateEntry::Text(_), Some(c)) => {
                    return Err(err(
                        format!("{key}.{k}"),
                        format!(
                            "a channel's texts are a table by language: [{key}.{}] en = \"…\"",
                            c.as_str()
                        ),
                    ));
                }
                (TemplateEntry::Table(_), None) => {
                    return Err(err(
                        format!("{key}.{k}"),
                        "a table here must be named after a channel: chat, email, social or voice",
                    ));
                }
                (TemplateEntry::Table(table), Some(c)) => {
                    for (lang_key, text) in table {
                        let lang = normal(lang_key);
                        let tk = format!("{key}.{k}.{lang_key}");
                        if !language_ok(&lang) {
                            return Err(err(
                                tk,
                                "expected a language tag (en, uk, pt-BR) or default",
                            ));
                        }
                        let t = Template::parse(&tk, text, &lang)?;
                        out.channels[channel_ix(*c)].insert(lang, t);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.channels.iter().all(BTreeMap::is_empty)
    }

    /// The template for a contact of `channel` in `language`, if any.
    pub fn pick(&self, channel: ChannelKind, language: &str) -> Option<&Template> {
        let own = &self.channels[channel_ix(channel)];
        candidates(language)
            .iter()
            .find_map(|l| own.get(l).or_else(|| self.all.get(l)))
    }
}

/// `[routing.name_fallback]`: the word `{name}` becomes when the customer
/// gave none, by language (`en = "there"`, `default = ""`).
#[derive(Debug, Clone, Default)]
pub struct NameFallback(BTreeMap<String, String>);

impl NameFallback {
    pub fn compile(
        key: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<NameFallback, PlanError> {
        let mut out = BTreeMap::new();
        for (k, v) in config {
            let lang = normal(k);
            if !language_ok(&lang) {
                return Err(err(
                    format!("{key}.{k}"),
                    "expected a language tag (en, uk, pt-BR) or default",
                ));
            }
            if v.contains(['{', '}']) {
                return Err(err(format!("{key}.{k}"), "a plain word, without braces"));
            }
            out.insert(lang, v.clone());
        }
        Ok(NameFallback(out))
    }

    /// For a template found under `language` (`uk`, `en`, `default`).
    pub fn for_template(&self, template: &Template) -> &str {
        self.0
            .get(template.language())
            .or_else(|| self.0.get("default"))
            .map_or("", String::as_str)
    }
}

/// Every automatic answer of routing, checked.
#[derive(Debug, Clone, Default)]
pub struct AutoAnswers {
    pub acknowledgement: Templates,
    pub after_hours: Templates,
    pub name_fallback: NameFallback,
    /// At most this many automatic answers (acknowledgements, after-hours
    /// and overflow-step answers together) per customer and source an hour
    /// (`routing.auto_answers_per_customer_hour`; 0: no limit).
    pub per_customer_hour: u32,
}

impl AutoAnswers {
    /// Renders `template` for a customer called `name` (may be empty).
    pub fn render(&self, template: &Template, name: &str, fill: Fill<'_>) -> String {
        let fallback = self.name_fallback.for_template(template);
        let name = if clean_name(name).is_empty() {
            fallback
        } else {
            name
        };
        template.render(&Fill { name, ..fill })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn table(entries: &[(&str, TemplateEntry)]) -> TemplatesConfig {
        TemplatesConfig(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn text(s: &str) -> TemplateEntry {
        TemplateEntry::Text(s.to_owned())
    }

    fn langs(pairs: &[(&str, &str)]) -> TemplateEntry {
        TemplateEntry::Table(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    const FILL: Fill<'static> = Fill {
        name: "Olena",
        opens_at: "2026-05-04 09:00",
        reply_by: "2026-05-04 10:00",
        timezone: "Europe/Kyiv",
    };

    #[test]
    fn placeholders_are_filled_and_braces_escaped() {
        let t = Template::parse(
            "k",
            "Hello {name}, we open at {opens_at} and answer by {reply_by} ({timezone}). {{not a slot}}",
            "en",
        )
        .unwrap();
        assert_eq!(
            t.render(&FILL),
            "Hello Olena, we open at 2026-05-04 09:00 and answer by 2026-05-04 10:00 (Europe/Kyiv). {not a slot}"
        );
    }

    #[test]
    fn an_empty_name_leaves_a_readable_text() {
        let no_name = Fill { name: "  ", ..FILL };
        let r = |s: &str| Template::parse("k", s, "en").unwrap().render(&no_name);
        assert_eq!(r("Hello {name}, we are closed."), "Hello, we are closed.");
        assert_eq!(r("Hello {name}!"), "Hello!");
        assert_eq!(r("{name}, we are closed."), "we are closed.");
        assert_eq!(r("Dear {name} we are closed."), "Dear we are closed.");
        assert_eq!(r("Hello, {name}, we are closed."), "Hello, we are closed.");
        // The configured fallback word.
        let answers = AutoAnswers {
            name_fallback: NameFallback::compile(
                "routing.name_fallback",
                &[("en".to_string(), "there".to_string())].into(),
            )
            .unwrap(),
            ..AutoAnswers::default()
        };
        let en = Template::parse("k", "Hello {name}, thanks.", "en").unwrap();
        assert_eq!(
            answers.render(&en, "", FILL.clone()),
            "Hello there, thanks."
        );
        let uk = Template::parse("k", "Вітаємо, {name}!", "uk").unwrap();
        assert_eq!(answers.render(&uk, "", FILL.clone()), "Вітаємо!");
        assert_eq!(
            answers.render(&uk, "Олена", FILL.clone()),
            "Вітаємо, Олена!"
        );
        // Control characters never reach the customer.
        assert_eq!(
            Template::parse("k", "Hi {name}.", "en")
                .unwrap()
                .render(&Fill {
                    name: "Ev\u{7}e\n",
                    ..FILL
                }),
            "Hi Eve."
        );
    }

    #[test]
    fn bad_templates_name_the_key() {
        let e =
            Template::parse("routing.after_hours_answer.email.en", "Hi {nmae}", "en").unwrap_err();
        assert_eq!(e.key, "routing.after_hours_answer.email.en");
        assert!(
            e.problem.contains("unknown placeholder {nmae}"),
            "{}",
            e.problem
        );
        assert!(Template::parse("k", "Hi {name", "en").is_err());
        assert!(Template::parse("k", "Hi name}", "en").is_err());
        assert!(Template::parse("k", "  ", "en").is_err());

        let key = "routing.after_hours_answer";
        let e =
            Templates::compile(key, &table(&[("email", langs(&[("en", "Hi {x}")]))])).unwrap_err();
        assert_eq!(e.key, "routing.after_hours_answer.email.en");
        let e = Templates::compile(key, &table(&[("email", text("Hi"))])).unwrap_err();
        assert_eq!(e.key, "routing.after_hours_answer.email");
        let e = Templates::compile(key, &table(&[("fax", langs(&[("en", "Hi")]))])).unwrap_err();
        assert_eq!(e.key, "routing.after_hours_answer.fax");
        let e = Templates::compile(key, &table(&[("not a language", text("Hi"))])).unwrap_err();
        assert_eq!(e.key, "routing.after_hours_answer.not a language");
    }

    #[test]
    fn the_language_and_channel_are_picked_in_order() {
        let t = Templates::compile(
            "routing.acknowledgement",
            &table(&[
                ("default", text("any")),
                ("uk", text("uk any channel")),
                (
                    "email",
                    langs(&[
                        ("en", "email en"),
                        ("pt-BR", "email pt-br"),
                        ("default", "email default"),
                    ]),
                ),
                ("chat", langs(&[("uk-UA", "chat uk-ua")])),
            ]),
        )
        .unwrap();
        let pick = |c, l: &str| t.pick(c, l).map(|t| t.render(&FILL)).unwrap_or_default();
        assert_eq!(
            pick(ChannelKind::Email, "uk"),
            "uk any channel",
            "language before channel"
        );
        assert_eq!(pick(ChannelKind::Email, "pt_br"), "email pt-br");
        assert_eq!(pick(ChannelKind::Email, "de"), "email en", "then English");
        assert_eq!(pick(ChannelKind::Chat, "uk-UA"), "chat uk-ua");
        assert_eq!(pick(ChannelKind::Chat, "uk"), "uk any channel");
        assert_eq!(pick(ChannelKind::Chat, "de"), "any");
        assert_eq!(pick(ChannelKind::Social, ""), "any");
        let none = Templates::compile("k", &TemplatesConfig::default()).unwrap();
        assert!(none.is_empty());
        assert!(none.pick(ChannelKind::Chat, "en").is_none());
        // The language it was found under picks the name fallback.
        assert_eq!(t.pick(ChannelKind::Email, "de").unwrap().language(), "en");
        assert_eq!(
            t.pick(ChannelKind::Voice, "de").unwrap().language(),
            "default"
        );
    }
}
