//! Why a contact went to an agent, or waits: what the router records for
//! every decision and `GET /api/v1/contacts/{id}/routing` returns.

use serde::Serialize;
use std::collections::BTreeMap;

/// An agent considered for a contact, in ranking order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub agent: String,
    /// The first overflow step the agent qualifies at (0: the queue's own
    /// requirement).
    pub ring: usize,
    /// Proficiency summed over the queue's skills.
    pub score: u32,
    /// Load ÷ capacity over all channels, in millionths.
    pub occupancy_ppm: u64,
    pub idle_since: u64,
    pub last_offer_at: u64,
}

/// The agents who were not candidates, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exclusions {
    /// Agents without the skills the contact's step requires.
    pub not_skilled: u32,
    /// Skilled agents who could not take it, by reason: `offline`, `away`,
    /// `wrap_up`, `disconnected`, `at_capacity`, `on_call`.
    pub by_reason: BTreeMap<String, u32>,
    /// Agents who declined or missed this contact before.
    pub declined: Vec<String>,
}

/// One routing decision, or why there was none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub queue: String,
    /// The rule that placed the contact; none when the default queue applied.
    pub rule: Option<String>,
    /// The overflow step in force (0: none yet).
    pub step: usize,
    pub strategy: String,
    pub priority: i32,
    pub waited_ms: u64,
    /// The agent the customer had last, when sticky routing applied.
    pub sticky_agent: Option<String>,
    /// Who was chosen; none when the contact keeps waiting.
    pub chosen: Option<String>,
    /// The best-ranked eligible agents, best first (at most five).
    pub candidates: Vec<Candidate>,
    /// Eligible agents counted in all (the candidates are the first few).
    pub eligible: u32,
    pub excluded: Exclusions,
}
