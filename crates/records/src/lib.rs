//! Switchboard's records: what happened to every contact and how well
//! customers are served (docs/records.md).
//!
//! The routing scripts write the raw records in the same atomic step as
//! each change (`crates/store/src/records.rs`): a timeline per contact, KPI
//! facts, an index of contacts by time and one per person. This crate
//! reads them:
//!
//! - [`kpi`]: the KPI definitions, folded from facts over rolling windows.
//! - [`Recorder`]: each instance follows the facts, keeps the last day in
//!   memory, answers KPI reports, sets the `switchboard_kpi_*` gauges,
//!   samples the waiting contacts for the wallboard's chart and sweeps
//!   contacts older than the retention.
//! - [`record`]: one contact's whole record (for the API and the export).
#![forbid(unsafe_code)]

pub mod kpi;
pub mod record;
mod service;

pub use service::{Recorder, Window};

use serde::Deserialize;

/// `[records]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// A contact is resolved at first contact when the same person opens no
    /// new contact (on any channel) within this many days of its close.
    #[serde(default = "defaults::fcr_days")]
    pub fcr_days: u64,
    /// How often the waiting contacts per queue are sampled for the
    /// wallboard's chart (one instance samples; an hour is kept).
    #[serde(default = "defaults::sample_secs")]
    pub sample_secs: u64,
    /// How often the KPI gauges on /metrics are refreshed.
    #[serde(default = "defaults::metrics_secs")]
    pub metrics_secs: u64,
}

mod defaults {
    pub fn fcr_days() -> u64 {
        3
    }
    pub fn sample_secs() -> u64 {
        15
    }
    pub fn metrics_secs() -> u64 {
        10
    }
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            fcr_days: defaults::fcr_days(),
            sample_secs: defaults::sample_secs(),
            metrics_secs: defaults::metrics_secs(),
        }
    }
}

impl RecordsConfig {
    /// Checks the section; errors name the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.fcr_days == 0 || self.fcr_days > 90 {
            return Err(("records.fcr_days".into(), "must be 1 to 90".into()));
        }
        if !(1..=3600).contains(&self.sample_secs) {
            return Err(("records.sample_secs".into(), "must be 1 to 3600".into()));
        }
        if !(1..=3600).contains(&self.metrics_secs) {
            return Err(("records.metrics_secs".into(), "must be 1 to 3600".into()));
        }
        Ok(())
    }
}
