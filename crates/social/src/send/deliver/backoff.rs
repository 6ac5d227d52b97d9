//! Exponential backoff with jitter, for retries the provider gave no wait for.

use std::time::Duration;

/// `base · 2^(attempt-1)`, capped at `cap`, then "equal jitter": half of it
/// fixed and half random, so retries of many replies after one outage
/// spread out instead of arriving together, while none comes back sooner
/// than half the nominal wait. `attempt` counts from 1.
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let nominal = nominal(base, cap, attempt);
    let half = nominal / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = if spread == 0 {
        0
    } else {
        rand::random_range(0..=spread)
    };
    half + Duration::from_millis(jitter)
}

fn nominal(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    base.checked_mul(1u32 << exponent).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(nominal(base, cap, 0), base);
        assert_eq!(nominal(base, cap, 1), base);
        assert_eq!(nominal(base, cap, 2), Duration::from_secs(2));
        assert_eq!(nominal(base, cap, 6), Duration::from_secs(32));
        assert_eq!(nominal(base, cap, 7), cap);
        assert_eq!(nominal(base, cap, u32::MAX), cap);
        for attempt in 1..40 {
            let n = nominal(base, cap, attempt);
            let d = backoff(base, cap, attempt);
            assert!(d >= n / 2 && d <= n, "{attempt}: {d:?}");
        }
        assert_eq!(backoff(Duration::ZERO, cap, 3), Duration::ZERO);
    }
}
