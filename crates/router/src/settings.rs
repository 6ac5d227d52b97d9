//! The `[routing]` configuration section: queues, rules, agents and the
//! timings of offers, wrap-up and reconnection.

use crate::answers::{AutoAnswers, NameFallback, Templates, TemplatesConfig};
use crate::hours::ScheduleConfig;
use crate::plan::{Plan, PlanError, QueueConfig, RuleConfig, check_levels};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use switchboard_channel::Secret;
use switchboard_core::{AgentId, ChannelKind};
use switchboard_store::AgentRecord;

/// `[routing.offer_timeout_secs]`: how long an agent has to accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferTimeouts {
    #[serde(default = "defaults::chat")]
    pub chat: u64,
    #[serde(default = "defaults::email")]
    pub email: u64,
    #[serde(default = "defaults::social")]
    pub social: u64,
    #[serde(default = "defaults::voice")]
    pub voice: u64,
}

impl Default for OfferTimeouts {
    fn default() -> Self {
        OfferTimeouts {
            chat: defaults::chat(),
            email: defaults::email(),
            social: defaults::social(),
            voice: defaults::voice(),
        }
    }
}

impl OfferTimeouts {
    pub fn of(&self, channel: ChannelKind) -> Duration {
        Duration::from_secs(match channel {
            ChannelKind::Chat => self.chat,
            ChannelKind::Email => self.email,
            ChannelKind::Social => self.social,
            ChannelKind::Voice => self.voice,
        })
    }
}

/// `[[routing.agents]]`: an agent defined in configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: AgentId,
    #[serde(default)]
    pub name: String,
    /// Skill → proficiency 1–5 (`"lang:uk" = 5`).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Contacts held at once per channel (`chat = 3, email = 5`); a channel
    /// not listed gets none.
    #[serde(default)]
    pub capacity: BTreeMap<ChannelKind, u32>,
    /// At most this many over all channels; unset: the sum.
    #[serde(default)]
    pub total_capacity: Option<u32>,
    /// The agent's sign-in token (at least 16 characters), as a secret …
    #[serde(default)]
    pub token: Option<Secret>,
    /// … or only its SHA-256, hex, so the file holds no token at all.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where contacts no rule matches go; empty: the first queue.
    #[serde(default)]
    pub default_queue: String,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub offer_timeout_secs: OfferTimeouts,
    /// Missed offers in a row that set an agent away (0: never).
    #[serde(default = "defaults::missed_offers_before_away")]
    pub missed_offers_before_away: u32,
    /// After closing a contact the agent is in wrap-up this long (0: none).
    #[serde(default = "defaults::wrap_up_secs")]
    pub wrap_up_secs: u64,
    /// A disconnected agent's contacts go back to the queue after this
    /// long, unless the agent comes back. Offers are taken back at once.
    #[serde(default = "defaults::reconnect_grace_secs")]
    pub reconnect_grace_secs: u64,
    /// A returning customer waits this long for the agent they had last.
    #[serde(default = "defaults::sticky_wait_secs")]
    pub sticky_wait_secs: u64,
    /// How long the last agent of a customer is remembered (0: no sticky
    /// routing).
    #[serde(default = "defaults::sticky_memory_days")]
    pub sticky_memory_days: u64,
    /// An agent who declined or missed a contact is not offered it again
    /// until this long after its latest decline or miss; then every agent
    /// it excluded may be (0: never, for as long as it waits).
    #[serde(default = "defaults::declined_again_after_secs")]
    pub declined_again_after_secs: u64,
    /// Channels whose contacts may be offered to an agent on a call.
    #[serde(default)]
    pub interrupt_voice: Vec<ChannelKind>,
    /// A call still assigned this long after it was answered is taken to
    /// have ended unreported (its hangup lost) and is closed as
    /// `call_end_lost`, freeing its agent (0: never).
    #[serde(default = "defaults::max_call_secs")]
    pub max_call_secs: u64,
    /// The routing lease: an instance that stops renewing it for this long
    /// is replaced as the router by another.
    #[serde(default = "defaults::lease_ms")]
    pub lease_ms: u64,
    /// Closed contacts' routing records are kept this long.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u64,
    /// `[[routing.schedules]]`: business hours and holidays in a time zone,
    /// named by queues (`schedule = "office"`).
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// `[routing.acknowledgement]`: sent once to every new contact when it
    /// is handed to routing, by channel and language (none: nothing sent).
    #[serde(default)]
    pub acknowledgement: TemplatesConfig,
    /// `[routing.after_hours_answer]`: sent once to a contact handed to
    /// routing while its queue is closed, instead of the acknowledgement.
    #[serde(default)]
    pub after_hours_answer: TemplatesConfig,
    /// At most this many automatic answers (acknowledgements, after-hours
    /// and overflow-step answers together) go to one customer on one
    /// source in an hour (0: no limit): an autoresponder that does not say
    /// it is one cannot keep a mail loop going with us.
    #[serde(default = "defaults::auto_answers_per_customer_hour")]
    pub auto_answers_per_customer_hour: u32,
    /// `[routing.name_fallback]`: what `{name}` reads when the customer gave
    /// no name, by language (`en = "there"`); unset: nothing, and the space
    /// before it goes too.
    #[serde(default)]
    pub name_fallback: BTreeMap<String, String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        // Every field has a default; an empty table is valid.
        RoutingConfig {
            queues: Vec::new(),
            rules: Vec::new(),
            default_queue: String::new(),
            agents: Vec::new(),
            offer_timeout_secs: OfferTimeouts::default(),
            missed_offers_before_away: defaults::missed_offers_before_away(),
            wrap_up_secs: defaults::wrap_up_secs(),
            reconnect_grace_secs: defaults::reconnect_grace_secs(),
            sticky_wait_secs: defaults::sticky_wait_secs(),
            sticky_memory_days: defaults::sticky_memory_days(),
            declined_again_after_secs: defaults::declined_again_after_secs(),
            interrupt_voice: Vec::new(),
            max_call_secs: defaults::max_call_secs(),
            lease_ms: defaults::lease_ms(),
            retention_days: defaults::retention_days(),
            schedules: Vec::new(),
            acknowledgement: TemplatesConfig::default(),
            after_hours_answer: TemplatesConfig::default(),
            name_fallback: BTreeMap::new(),
            auto_answers_per_customer_hour: defaults::auto_answers_per_customer_hour(),
        }
    }
}

mod defaults {
    pub fn auto_answers_per_customer_hour() -> u32 {
        10
    }
    pub fn chat() -> u64 {
        30
    }
    pub fn email() -> u64 {
        120
    }
    pub fn social() -> u64 {
        60
    }
    pub fn voice() -> u64 {
        // The Twilio channel's hold pause (5) and ring timeout (20) and a
        // margin (docs/voice.md): the offer outlives the ringing.
        30
    }
    pub fn max_call_secs() -> u64 {
        4 * 3600
    }
    pub fn declined_again_after_secs() -> u64 {
        120
    }
    pub fn missed_offers_before_away() -> u32 {
        3
    }
    pub fn wrap_up_secs() -> u64 {
        30
    }
    pub fn reconnect_grace_secs() -> u64 {
        60
    }
    pub fn sticky_wait_secs() -> u64 {
        30
    }
    pub fn sticky_memory_days() -> u64 {
        30
    }
    pub fn lease_ms() -> u64 {
        3000
    }
    pub fn retention_days() -> u64 {
        30
    }
}

/// The shortest agent token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// SHA-256 of a token, hex: what Redis stores and sign-in compares.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl RoutingConfig {
    /// Checks everything (secrets are read) and compiles the plan.
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let plan = self.routing_plan()?;
        if self.lease_ms < 500 {
            return Err(PlanError {
                key: "routing.lease_ms".into(),
                problem: "must be at least 500".into(),
            });
        }
        use crate::plan::{WEEK_SECS, at_most};
        for (key, value, max) in [
            ("routing.lease_ms", self.lease_ms, 600_000),
            ("routing.wrap_up_secs", self.wrap_up_secs, WEEK_SECS),
            (
                "routing.reconnect_grace_secs",
                self.reconnect_grace_secs,
                WEEK_SECS,
            ),
            ("routing.sticky_wait_secs", self.sticky_wait_secs, 3600),
            ("routing.max_call_secs", self.max_call_secs, WEEK_SECS),
            ("routing.sticky_memory_days", self.sticky_memory_days, 3650),
            (
                "routing.declined_again_after_secs",
                self.declined_again_after_secs,
                WEEK_SECS,
            ),
            (
                "routing.offer_timeout_secs.chat",
                self.offer_timeout_secs.chat,
                3600,
            ),
            (
                "routing.offer_timeout_secs.email",
                self.offer_timeout_secs.email,
                3600,
            ),
            (
                "routing.offer_timeout_secs.social",
                self.offer_timeout_secs.social,
                3600,
            ),
            (
                "routing.offer_timeout_secs.voice",
                self.offer_timeout_secs.voice,
                3600,
            ),
        ] {
            at_most(key, value, max)?;
        }
        let t = &self.offer_timeout_secs;
        if [t.chat, t.email, t.social, t.voice].contains(&0) {
            return Err(PlanError {
                key: "routing.offer_timeout_secs".into(),
                problem: "every channel's offer timeout must be at least 1 second".into(),
            });
        }
        if !(1..=36_500).contains(&self.retention_days) {
            // 0 is no "keep for ever" here: the sweep would delete every
            // contact a minute after it ends.
            return Err(PlanError {
                key: "routing.retention_days".into(),
                problem: "must be 1 to 36500 (days closed contacts are kept)".into(),
            });
        }
        self.agent_records()?;
        Ok(plan)
    }

    /// The plan without the agents' checks (no secrets are read): queues,
    /// rules, schedules and automatic answers.
    pub fn routing_plan(&self) -> Result<Plan, PlanError> {
        let mut plan = Plan::compile_with_schedules(
            "routing",
            &self.queues,
            &self.rules,
            &self.default_queue,
            &self.schedules,
        )?;
        plan.answers = AutoAnswers {
            acknowledgement: Templates::compile("routing.acknowledgement", &self.acknowledgement)?,
            after_hours: Templates::compile(
                "routing.after_hours_answer",
                &self.after_hours_answer,
            )?,
            name_fallback: NameFallback::compile("routing.name_fallback", &self.name_fallback)?,
            per_customer_hour: self.auto_answers_per_customer_hour,
        };
        Ok(plan)
    }

    /// The configured agents as stored, tokens hashed.
    pub fn agent_records(&self) -> Result<Vec<AgentRecord>, PlanError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.agents.len());
        for (i, a) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("routing.agents[{i}].{field}");
            let fail = |field: &str, problem: String| PlanError {
                key: key(field),
                problem,
            };
            if !seen.insert(a.id.clone()) {
                return Err(fail("id", format!("agent {} is defined twice", a.id)));
            }
            check_agent_id(a.id.as_str()).map_err(|problem| fail("id", problem))?;
            check_levels(&key("skills"), &a.skills, 1)?;
            let digest = match (&a.token, &a.token_sha256) {
                (Some(secret), None) => {
                    let value = secret.resolve().map_err(|e| fail("token", e.to_string()))?;
                    if value.expose().len() < MIN_TOKEN_LEN {
                        return Err(fail(
                            "token",
                            format!("must be at least {MIN_TOKEN_LEN} characters"),
                        ));
                    }
                    token_digest(value.expose())
                }
                (None, Some(hex)) => {
                    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(fail("token_sha256", "must be 64 hex digits".into()));
                    }
                    hex.to_ascii_lowercase()
                }
                (Some(_), Some(_)) => {
                    return Err(fail("token", "set token or token_sha256, not both".into()));
                }
                (None, None) => {
                    return Err(fail(
                        "token",
                        "every agent needs token or token_sha256".into(),
                    ));
                }
            };
            let mut capacity = [0u32; 4];
            for (channel, n) in &a.capacity {
                capacity[ChannelKind::ALL
                    .iter()
                    .position(|c| c == channel)
                    .unwrap_or(0)] = *n;
            }
            check_capacity(&capacity, a.total_capacity)
                .map_err(|(field, problem)| fail(field, problem))?;
            out.push(AgentRecord {
                id: a.id.to_string(),
                name: if a.name.is_empty() {
                    a.id.to_string()
                } else {
                    a.name.clone()
                },
                skills: a.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                capacity,
                total_capacity: a.total_capacity.unwrap_or(0),
                token_sha256: digest,
            });
        }
        Ok(out)
    }

    pub fn interrupt_voice_csv(&self) -> String {
        self.interrupt_voice
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Ids no agent may have: records name the supervisor (a note's author)
/// and Switchboard itself (automatic answers, shown to customers without a
/// name) by these words, so an agent of either id would pass for them.
pub const RESERVED_AGENT_IDS: [&str; 2] = ["supervisor", "switchboard"];

/// Refuses an agent id that is reserved (ASCII case ignored).
pub fn check_agent_id(id: &str) -> Result<(), String> {
    match RESERVED_AGENT_IDS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(id))
    {
        Some(r) => Err(format!(
            "\"{r}\" is reserved: records name the supervisor and Switchboard itself so"
        )),
        None => Ok(()),
    }
}

/// The most contacts of one channel an agent may hold at once.
pub const MAX_CAPACITY: u32 = 1000;

/// An agent's capacities (chat, email, social, voice) and optional total:
/// at least one channel above 0, none above [`MAX_CAPACITY`], a total no
/// larger than their sum could be. On error, the field and the problem.
pub fn check_capacity(
    capacity: &[u32; 4],
    total: Option<u32>,
) -> Result<(), (&'static str, String)> {
    if capacity.iter().all(|c| *c == 0) {
        return Err((
            "capacity",
            "give the agent capacity on at least one channel".into(),
        ));
    }
    if capacity.iter().any(|c| *c > MAX_CAPACITY) {
        return Err((
            "capacity",
            format!("at most {MAX_CAPACITY} contacts per channel"),
        ));
    }
    if total.is_some_and(|t| t > 4 * MAX_CAPACITY) {
        return Err(("total_capacity", format!("at most {}", 4 * MAX_CAPACITY)));
    }
    Ok(())
}

#[cfg(test)]
mod capacity_tests {
    #![allow(clippy::unwrap_used)]
    use super::{MAX_CAPACITY, check_capacity};

    #[test]
    fn capacities_are_bounded_so_their_sum_fits() {
        assert!(check_capacity(&[3, 5, 4, 1], None).is_ok());
        assert!(check_capacity(&[MAX_CAPACITY; 4], Some(4 * MAX_CAPACITY)).is_ok());
        assert_eq!(check_capacity(&[0; 4], None).unwrap_err().0, "capacity");
        assert_eq!(
            check_capacity(&[u32::MAX, u32::MAX, 0, 0], None)
                .unwrap_err()
                .0,
            "capacity"
        );
        assert_eq!(
            check_capacity(&[1, 0, 0, 0], Some(4 * MAX_CAPACITY + 1))
                .unwrap_err()
                .0,
            "total_capacity"
        );
    }
}

#[cfg(test)]
mod digest_tests {
    /// Lower-case hex of SHA-256, as stored since the first version: a
    /// change would sign every agent out.
    #[test]
    fn a_token_digest_is_lower_case_hex_of_sha256() {
        assert_eq!(
            super::token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

#[cfg(test)]
mod agent_id_tests {
    #![allow(clippy::unwrap_used)]
    use super::RoutingConfig;

    fn agents(id: &str) -> RoutingConfig {
        serde_json::from_value(serde_json::json!({"agents": [{
            "id": id,
            "capacity": {"chat": 1},
            "token_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }]}))
        .unwrap()
    }

    /// Records name the supervisor "supervisor" (a note's author) and
    /// automatic answers "switchboard": an agent of either id, in any
    /// case, would pass for them.
    #[test]
    fn the_supervisors_name_is_no_agent_id() {
        assert!(agents("supervisors").agent_records().is_ok());
        for id in ["supervisor", "SUPERVISOR", "switchboard"] {
            let e = agents(id).agent_records().unwrap_err();
            assert_eq!(e.key, "routing.agents[0].id");
            assert!(e.problem.contains("reserved"), "{}", e.problem);
        }
    }
}
