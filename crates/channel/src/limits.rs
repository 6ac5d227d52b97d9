//! A token bucket: the one rate limiter of the chat channel's limits and
//! the agent websocket's. In memory, per instance.

use std::time::Instant;

/// A bucket of `per_minute` tokens, refilled continuously, full at first.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    per_minute: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_minute: u32) -> Bucket {
        Bucket::of(f64::from(per_minute))
    }

    /// A bucket of a fractional or large size (bytes per minute).
    pub fn of(per_minute: f64) -> Bucket {
        Bucket {
            tokens: per_minute,
            per_minute,
            at: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.available(now) >= 1.0 {
            self.spend(1.0);
            true
        } else {
            false
        }
    }

    /// The tokens there are now.
    pub fn available(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        // Callers read the clock before taking the bucket's lock: an
        // earlier `now` after a later one must not move the time of a
        // bucket being refilled back, or the same stretch would be refilled
        // twice. A full bucket takes any reading (one made just before the
        // bucket was: its first spend counts from then).
        self.at = if self.tokens >= self.per_minute {
            now
        } else {
            self.at.max(now)
        };
        self.tokens
    }

    /// Spends `n` tokens (after [`available`](Self::available) said there
    /// are enough).
    pub fn spend(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// Whether the bucket is full again (its owner has been idle).
    pub fn full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_minute / 60.0 >= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::Bucket;
    use std::time::{Duration, Instant};

    #[test]
    fn buckets_refill_per_minute() {
        let mut b = Bucket::new(2);
        let start = Instant::now();
        assert!(b.take(start));
        assert!(b.take(start));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_secs(30)));
        assert!(!b.full(start + Duration::from_secs(30)));
        assert!(b.full(start + Duration::from_secs(90)));
    }

    #[test]
    fn an_earlier_clock_reading_refills_nothing_twice() {
        let mut b = Bucket::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            assert!(b.take(start));
        }
        let later = start + Duration::from_secs(10);
        assert!((b.available(later) - 10.0).abs() < 1e-9);
        assert!((b.available(start) - 10.0).abs() < 1e-9);
        assert!((b.available(later) - 10.0).abs() < 1e-9, "refilled twice");
    }
}
