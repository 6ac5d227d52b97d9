//! Queues, routing rules and their overflow steps: the `[routing]`
//! configuration, and the checked, compiled form the engine works with.
//!
//! Overflow steps only ever *add* eligible agents (lower a minimum, accept
//! another skill, borrow another queue's agents), so an agent eligible at
//! step `k` stays eligible at every later step. The engine relies on that:
//! each agent sits in one "ring" per queue, the first step it qualifies at
//! (Genesys calls these bullseye rings).

use crate::answers::AutoAnswers;
use crate::hours::{Schedule, ScheduleConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use switchboard_core::ChannelKind;

/// How the engine ranks the agents who could take a contact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Highest proficiency in the queue's skills, then least occupied, then
    /// longest idle.
    #[default]
    BestMatch,
    /// Lowest load ÷ capacity, then longest idle.
    LeastOccupied,
    /// Agents with nothing to do first, longest since they had nothing to
    /// do; then agents holding work, longest since their last offer.
    LongestIdle,
    /// Longest since the agent was last offered a contact of any queue.
    RoundRobin,
    /// Highest proficiency summed over all the agent's skills (generalists
    /// first), then least occupied.
    MostSkilled,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BestMatch => "best_match",
            Strategy::LeastOccupied => "least_occupied",
            Strategy::LongestIdle => "longest_idle",
            Strategy::RoundRobin => "round_robin",
            Strategy::MostSkilled => "most_skilled",
        }
    }
}

/// What happens to a contact handed to routing while its queue is closed
/// (outside its schedule's hours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterHours {
    /// It waits, never offered while the queue is closed, and is routed in
    /// waiting order when it opens.
    #[default]
    Wait,
    /// The channel's routing ends it (disposition `after_hours`) after the
    /// automatic answer.
    Close,
}

impl AfterHours {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterHours::Wait => "wait",
            AfterHours::Close => "close",
        }
    }
}

/// `[[routing.queues.overflow]]`: what changes once a contact has waited
/// `after_secs` in the queue.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowStepConfig {
    pub after_secs: u64,
    /// New minimum proficiency per skill; 0 drops the requirement.
    #[serde(default)]
    pub relax: BTreeMap<String, u8>,
    /// Agents with all of these skills (at these minimums) become eligible
    /// too.
    #[serde(default)]
    pub also_skills: BTreeMap<String, u8>,
    /// Agents eligible for these queues (at their first step) become
    /// eligible too.
    #[serde(default)]
    pub also_queues: Vec<String>,
    /// Move the contact to this queue (it starts at that queue's first step
    /// but keeps its waiting time for priority).
    #[serde(default)]
    pub move_to: Option<String>,
    /// Send the customer this automatic answer (once per step).
    #[serde(default)]
    pub auto_answer: Option<String>,
}

/// `[[routing.queues]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    /// Required skills and their minimum proficiency (1–5).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Higher is served first.
    #[serde(default)]
    pub priority: i32,
    /// Seconds within which a contact should be answered (service level).
    #[serde(default = "defaults::service_level_secs")]
    pub service_level_secs: u64,
    #[serde(default)]
    pub strategy: Strategy,
    /// Without it, one priority level is worth `priority_weight_secs` of
    /// waiting, so low-priority contacts age and never starve. With it, a
    /// higher priority always goes first.
    #[serde(default)]
    pub strict_priority: bool,
    #[serde(default = "defaults::priority_weight_secs")]
    pub priority_weight_secs: u64,
    /// Offers of this queue are accepted without the agent's answer.
    #[serde(default)]
    pub auto_accept: bool,
    #[serde(default)]
    pub overflow: Vec<OverflowStepConfig>,
    /// Business hours: a `[[routing.schedules]]` name; none: always open.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Contacts arriving while the queue is closed: `wait` or `close`.
    #[serde(default)]
    pub after_hours: AfterHours,
}

/// `[[routing.rules]]`: the first rule whose every given condition holds
/// sends the contact to its queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub queue: String,
    #[serde(default)]
    pub channels: Vec<ChannelKind>,
    /// Channel adapter names (`[[channels]] name`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// The address the customer wrote to: mailbox, page, phone number,
    /// widget id. Compared without regard to case.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Any of these words in the subject or the first message.
    #[serde(default)]
    pub words: Vec<String>,
    /// The customer's language (`uk`, `pl`, …).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Customer attributes that must all be equal (`vip = "true"`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Added to the queue's priority for contacts this rule matched.
    #[serde(default)]
    pub priority: i32,
}

mod defaults {
    pub fn service_level_secs() -> u64 {
        60
    }
    pub fn priority_weight_secs() -> u64 {
        60
    }
}

/// A problem in the routing configuration: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct PlanError {
    pub key: String,
    pub problem: String,
}

fn err(key: String, problem: impl Into<String>) -> PlanError {
    PlanError {
        key,
        problem: problem.into(),
    }
}

/// Skill names interned as small numbers.
#[derive(Debug, Clone, Default)]
pub struct SkillTable {
    ids: HashMap<String, u16>,
}

impl SkillTable {
    pub fn intern(&mut self, name: &str) -> u16 {
        let next = u16::try_from(self.ids.len()).unwrap_or(u16::MAX);
        *self.ids.entry(name.to_owned()).or_insert(next)
    }

    pub fn get(&self, name: &str) -> Option<u16> {
        self.ids.get(name).copied()
    }
}

/// A set of skill requirements: every listed skill at least at its minimum.
pub type Requirement = Vec<(u16, u8)>;

/// One step of a queue, compiled.
#[derive(Debug, Clone)]
pub struct Step {
    /// Seconds in the queue before this step applies (0 for the first).
    pub after_ms: u64,
    /// An agent is eligible when any of these requirements holds.
    pub any_of: Vec<Requirement>,
    /// … or when eligible for the first step of any of these queues.
    pub also_queues: Vec<usize>,
    pub move_to: Option<usize>,
    pub auto_answer: Option<String>,
}

/// A queue, compiled.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub priority: i32,
    pub service_level_secs: u64,
    pub strategy: Strategy,
    pub strict_priority: bool,
    pub priority_weight_ms: u64,
    pub auto_accept: bool,
    /// The skills of the first step: what "best match" scores.
    pub scored: Requirement,
    /// Step 0 is the queue's own requirement; then the overflow steps.
    pub steps: Vec<Step>,
    /// Business hours; `None`: always open.
    pub schedule: Option<Arc<Schedule>>,
    pub after_hours: AfterHours,
}

impl Queue {
    /// Whether it takes contacts at `now` (ms).
    pub fn is_open(&self, now: u64) -> bool {
        self.schedule.as_ref().is_none_or(|s| s.is_open(now))
    }

    /// The open time between `from` and `to` (ms): overflow steps count
    /// only the time the queue was open.
    pub fn open_ms(&self, from: u64, to: u64) -> u64 {
        match &self.schedule {
            None => to.saturating_sub(from),
            Some(s) => s.open_ms_between(from, to),
        }
    }

    /// When `after_ms` of open time has passed since `from`; `None` when
    /// the queue does not open long enough within the schedule's horizon.
    pub fn due(&self, from: u64, after_ms: u64) -> Option<u64> {
        match &self.schedule {
            None => Some(from.saturating_add(after_ms)),
            Some(_) if after_ms == 0 => Some(from),
            Some(s) => s.after_open(from, after_ms),
        }
    }
}

/// A rule, compiled (lower-cased where compared without case).
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub queue: usize,
    pub channels: Vec<ChannelKind>,
    pub sources: Vec<String>,
    pub addresses: Vec<String>,
    /// Each configured word as its tokens ([`crate::rules::tokens`]): one
    /// for `refund`, two for `e-mail` (matched as a run).
    pub words: Vec<Vec<String>>,
    pub languages: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub priority: i32,
}

/// The checked routing configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    pub queues: Vec<Queue>,
    pub rules: Vec<Rule>,
    /// Where contacts no rule matches go.
    pub default_queue: usize,
    pub skills: SkillTable,
    /// `[[routing.schedules]]`, checked.
    pub schedules: Vec<Arc<Schedule>>,
    /// The acknowledgement and the after-hours answer.
    pub answers: AutoAnswers,
}

/// The queue contacts go to when no queue is configured at all.
pub const GENERAL_QUEUE: &str = "general";

/// The most overflow steps a queue may have.
pub const MAX_OVERFLOW_STEPS: usize = 32;

impl Plan {
    /// Checks and compiles. `key` is the configuration path of the section
    /// (`routing`), for error messages.
    pub fn compile(
        key: &str,
        queues: &[QueueConfig],
        rules: &[RuleConfig],
        default_queue: &str,
    ) -> Result<Plan, PlanError> {
        Self::compile_with_schedules(key, queues, rules, default_queue, &[])
    }

    /// [`Plan::compile`] with business hours: queues may name these
    /// schedules.
    pub fn compile_with_schedules(
        key: &str,
        queues: &[QueueConfig],
        rules: &[RuleConfig],
        default_queue: &str,
        schedules: &[ScheduleConfig],
    ) -> Result<Plan, PlanError> {
        let schedules: Vec<Arc<Schedule>> = crate::hours::compile_all(key, schedules)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let general;
        let queues = if queues.is_empty() {
            general = [QueueConfig::general()];
            &general[..]
        } else {
            queues
        };
        let mut index = HashMap::new();
        for (i, q) in queues.iter().enumerate() {
            let k = format!("{key}.queues[{i}].name");
            check_name(&k, &q.name)?;
            if index.insert(q.name.clone(), i).is_some() {
                return Err(err(k, format!("queue {:?} is defined twice", q.name)));
            }
        }
        let lookup = |k: String, name: &str| -> Result<usize, PlanError> {
            index
                .get(name)
                .copied()
                .ok_or_else(|| err(k, format!("no queue is named {name:?}")))
        };
        let mut skills = SkillTable::default();
        let mut compiled = Vec::with_capacity(queues.len());
        for (i, q) in queues.iter().enumerate() {
            let qk = format!("{key}.queues[{i}]");
            let mut current: BTreeMap<String, u8> = q.skills.clone();
            check_levels(&format!("{qk}.skills"), &current, 1)?;
            at_most(
                &format!("{qk}.service_level_secs"),
                q.service_level_secs,
                WEEK_SECS,
            )?;
            at_most(
                &format!("{qk}.priority_weight_secs"),
                q.priority_weight_secs,
                DAY_SECS,
            )?;
            if q.priority_weight_secs == 0 && !q.strict_priority {
                return Err(err(
                    format!("{qk}.priority_weight_secs"),
                    "must be at least 1 (or set strict_priority)",
                ));
            }
            let base = requirement(&mut skills, &current);
            let mut steps = vec![Step {
                after_ms: 0,
                any_of: vec![base.clone()],
                also_queues: Vec::new(),
                move_to: None,
                auto_answer: None,
            }];
            // The engine keeps an agent's ring (the first step they are
            // eligible at) in a byte; no queue needs this many anyway.
            if q.overflow.len() > MAX_OVERFLOW_STEPS {
                return Err(err(
                    format!("{qk}.overflow"),
                    format!("at most {MAX_OVERFLOW_STEPS} steps"),
                ));
            }
            let mut last_after = 0;
            for (j, o) in q.overflow.iter().enumerate() {
                let ok = format!("{qk}.overflow[{j}]");
                if o.after_secs == 0 || o.after_secs <= last_after {
                    return Err(err(
                        format!("{ok}.after_secs"),
                        "must be above 0 and above the previous step's",
                    ));
                }
                at_most(&format!("{ok}.after_secs"), o.after_secs, WEEK_SECS)?;
                last_after = o.after_secs;
                // Checked as the other answers are: an empty text went out
                // as an empty message, and a misspelt placeholder as is.
                if let Some(text) = &o.auto_answer {
                    crate::answers::Template::parse(&format!("{ok}.auto_answer"), text, "")?;
                }
                for (name, level) in &o.relax {
                    let Some(old) = current.get(name).copied() else {
                        return Err(err(
                            format!("{ok}.relax.{name}"),
                            "the queue does not require this skill",
                        ));
                    };
                    if *level > old {
                        return Err(err(
                            format!("{ok}.relax.{name}"),
                            "an overflow step may only lower a minimum",
                        ));
                    }
                    if *level == 0 {
                        current.remove(name);
                    } else {
                        current.insert(name.clone(), *level);
                    }
                }
                check_levels(&format!("{ok}.also_skills"), &o.also_skills, 1)?;
                let prev = steps[steps.len() - 1].clone();
                let mut any_of = prev.any_of.clone();
                any_of.push(requirement(&mut skills, &current));
                if !o.also_skills.is_empty() {
                    any_of.push(requirement(&mut skills, &o.also_skills));
                }
                let mut also_queues = prev.also_queues.clone();
                for (n, name) in o.also_queues.iter().enumerate() {
                    also_queues.push(lookup(format!("{ok}.also_queues[{n}]"), name)?);
                }
                let move_to = match &o.move_to {
                    Some(name) => {
                        let target = lookup(format!("{ok}.move_to"), name)?;
                        if target == i {
                            return Err(err(
                                format!("{ok}.move_to"),
                                "a queue cannot move to itself",
                            ));
                        }
                        Some(target)
                    }
                    None => None,
                };
                if move_to.is_some() && j + 1 != q.overflow.len() {
                    return Err(err(
                        format!("{ok}.move_to"),
                        "only the last overflow step may move contacts to another queue",
                    ));
                }
                steps.push(Step {
                    after_ms: o.after_secs * 1000,
                    any_of,
                    also_queues,
                    move_to,
                    auto_answer: o.auto_answer.clone(),
                });
            }
            let schedule = match &q.schedule {
                None => None,
                Some(name) => Some(
                    schedules
                        .iter()
                        .find(|s| s.name == *name)
                        .cloned()
                        .ok_or_else(|| {
                            err(
                                format!("{qk}.schedule"),
                                format!("no schedule is named {name:?} (see [[{key}.schedules]])"),
                            )
                        })?,
                ),
            };
            if q.after_hours == AfterHours::Close && schedule.is_none() {
                return Err(err(
                    format!("{qk}.after_hours"),
                    "\"close\" needs a schedule (the queue is never closed without one)",
                ));
            }
            compiled.push(Queue {
                name: q.name.clone(),
                priority: q.priority,
                service_level_secs: q.service_level_secs,
                strategy: q.strategy,
                strict_priority: q.strict_priority,
                priority_weight_ms: q.priority_weight_secs.saturating_mul(1000),
                auto_accept: q.auto_accept,
                scored: base,
                steps,
                schedule,
                after_hours: q.after_hours,
            });
        }
        let mut compiled_rules = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let rk = format!("{key}.rules[{i}]");
            check_name(&format!("{rk}.name"), &r.name)?;
            let mut words = Vec::with_capacity(r.words.len());
            for (j, w) in r.words.iter().enumerate() {
                let t = crate::rules::tokens(w);
                if t.is_empty() {
                    return Err(err(
                        format!("{rk}.words[{j}]"),
                        "must contain a letter or a digit",
                    ));
                }
                words.push(t);
            }
            compiled_rules.push(Rule {
                name: r.name.clone(),
                queue: lookup(format!("{rk}.queue"), &r.queue)?,
                channels: r.channels.clone(),
                sources: r.sources.clone(),
                addresses: r.addresses.iter().map(|a| a.to_lowercase()).collect(),
                words,
                languages: r.languages.iter().map(|l| l.to_lowercase()).collect(),
                attributes: r.attributes.clone(),
                priority: r.priority,
            });
        }
        let default_queue = if default_queue.is_empty() {
            0
        } else {
            lookup(format!("{key}.default_queue"), default_queue)?
        };
        Ok(Plan {
            queues: compiled,
            rules: compiled_rules,
            default_queue,
            skills,
            schedules,
            answers: AutoAnswers::default(),
        })
    }

    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.queues.iter().position(|q| q.name == name)
    }
}

impl QueueConfig {
    /// The one queue of a configuration that defines none: every agent,
    /// every contact.
    pub fn general() -> QueueConfig {
        QueueConfig {
            name: GENERAL_QUEUE.into(),
            skills: BTreeMap::new(),
            priority: 0,
            service_level_secs: defaults::service_level_secs(),
            strategy: Strategy::default(),
            strict_priority: false,
            priority_weight_secs: defaults::priority_weight_secs(),
            auto_accept: false,
            overflow: Vec::new(),
            schedule: None,
            after_hours: AfterHours::Wait,
        }
    }
}

fn requirement(skills: &mut SkillTable, levels: &BTreeMap<String, u8>) -> Requirement {
    levels
        .iter()
        .map(|(name, level)| (skills.intern(name), *level))
        .collect()
}

pub(crate) const DAY_SECS: u64 = 86_400;
pub(crate) const WEEK_SECS: u64 = 7 * DAY_SECS;

/// A duration or count from the configuration no larger than `max`: the
/// times computed from it (milliseconds, deadlines) must not overflow, and
/// a value past it is a typo, not a plan.
pub(crate) fn at_most(key: &str, value: u64, max: u64) -> Result<(), PlanError> {
    if value > max {
        return Err(err(key.to_owned(), format!("must be at most {max}")));
    }
    Ok(())
}

pub(crate) fn check_name(key: &str, name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            key.to_owned(),
            "expected 1 to 64 characters of A-Za-z0-9._-",
        ))
    }
}

/// Proficiency levels are 1 (basic) to 5 (expert).
pub fn check_levels(key: &str, levels: &BTreeMap<String, u8>, min: u8) -> Result<(), PlanError> {
    for (name, level) in levels {
        if name.is_empty() || name.chars().count() > 64 {
            return Err(err(
                format!("{key}.{name}"),
                "a skill name is 1 to 64 characters",
            ));
        }
        if *level < min || *level > 5 {
            return Err(err(
                format!("{key}.{name}"),
                format!("proficiency must be between {min} and 5"),
            ));
        }
    }
    Ok(())
}
