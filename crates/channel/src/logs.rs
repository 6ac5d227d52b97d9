//! Logging what strangers can make happen at will, without flooding.
//!
//! A refusal anyone can trigger (a bad signature, a websocket from a
//! foreign origin) is counted every time; its log line is written at
//! `warn` once per period, saying how many were left out since, and the
//! others at `debug`. A flood then costs the disk one line a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of refusal's log lines: at most one a period at `warn`.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    left_out: u64,
}

impl LogThrottle {
    /// At most one line each `every`; usable in a `static`.
    pub const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            state: Mutex::new(State {
                last: None,
                left_out: 0,
            }),
        }
    }

    /// `Some(n)` when this one is to be logged at `warn`, `n` being how many
    /// were left out since the last; `None` otherwise (log it at `debug`).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Self::admit`] at `now`.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            state.left_out += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}

/// Logs a refusal through `throttle`: at `warn` with `left_out` (how many
/// were logged at `debug` since the last), or at `debug`.
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($field:tt)+) => {
        match $throttle.admit() {
            Some(left_out) => ::tracing::warn!(left_out, $($field)+),
            None => ::tracing::debug!($($field)+),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;
    use std::time::{Duration, Instant};

    #[test]
    fn one_line_a_period_with_the_count_left_out() {
        let throttle = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(throttle.admit_at(t0), Some(0));
        for s in 1..60 {
            assert_eq!(throttle.admit_at(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(61)), None);
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(200)), Some(1));
        assert_eq!(throttle.admit_at(t0 + Duration::from_secs(300)), Some(0));
    }
}
