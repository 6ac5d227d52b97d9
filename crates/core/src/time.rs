//! Wall-clock timestamps in milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The manual clock's reading in ms; 0 while the system clock is used.
static MANUAL_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch (UTC). Plain and sortable; what Redis
/// stream ids use too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time. A clock before 1970 reads as 0. While a manual
    /// clock is set ([`Timestamp::set_manual`]) it reads that instead.
    pub fn now() -> Self {
        let manual = MANUAL_MS.load(Ordering::Relaxed);
        if manual != 0 {
            return Timestamp(manual);
        }
        Self::system()
    }

    /// The system clock, whatever the manual clock says.
    pub fn system() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Stops the process's clock at `at` ([`Timestamp::now`] returns it
    /// until set again). For tests that play a day of traffic through a
    /// real daemon (`[testing] manual_clock`); never in production. `at`
    /// 0 goes back to the system clock.
    pub fn set_manual(at: Timestamp) {
        MANUAL_MS.store(at.0, Ordering::Relaxed);
    }

    /// Whether a manual clock is set.
    pub fn is_manual() -> bool {
        MANUAL_MS.load(Ordering::Relaxed) != 0
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
