//! Exponential backoff with jitter, and a sleep that ends on shutdown.

use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Delays doubling from `base` up to `max`.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(super) fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            current: base,
        }
    }

    /// The next delay (between half and all of the current step), and
    /// doubles the step.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = jitter(self.current);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to the first step (after a success).
    pub(super) fn reset(&mut self) {
        self.current = self.base;
    }
}

/// A random duration between half of `d` and `d`.
pub(super) fn jitter(d: Duration) -> Duration {
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    d.mul_f64(factor)
}

/// Sleeps for `d`; false when `stop` was cancelled first.
pub(super) async fn sleep(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(300)));
        assert!(delays[11] >= Duration::from_secs(150));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
