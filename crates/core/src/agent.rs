//! Agents and their skills. The router (its own crate) decides with these.

use crate::{AgentId, ChannelKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A skill with a proficiency from 1 (basic) to 5 (expert). Languages are
/// skills too (`lang:uk`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Skill {
    pub name: String,
    pub proficiency: u8,
}

/// Whether an agent can take work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    Offline,
    Available,
    Away {
        reason: String,
    },
    /// After closing a contact, until the wrap-up time ends.
    WrapUp,
}

/// A human who answers contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub display_name: String,
    pub skills: Vec<Skill>,
    /// How many contacts of each channel the agent may hold at once.
    pub capacity: BTreeMap<ChannelKind, u32>,
    /// An optional limit over all channels together.
    pub total_capacity: Option<u32>,
}
