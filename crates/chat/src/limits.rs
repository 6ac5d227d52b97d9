//! Token buckets for `rate_per_session` and `rate_per_ip`: in memory, per
//! instance (a visitor who spreads frames over several instances gets each
//! instance's allowance; acceptable for flood protection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A bucket of `per_minute` tokens, refilled continuously.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    per_minute: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_minute: u32) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            per_minute: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_minute / 60.0 >= self.per_minute
    }
}

/// One bucket per client address.
#[derive(Debug)]
pub struct PerIp {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl PerIp {
    pub fn new(per_minute: u32) -> PerIp {
        PerIp {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn take(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forget addresses whose bucket is full again (idle ones).
            buckets.retain(|_, b| !b.full(now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(self.per_minute))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_per_minute() {
        let start = Instant::now();
        let mut b = Bucket::new(2);
        assert!(b.take(start));
        assert!(b.take(start));
        assert!(!b.take(start));
        assert!(b.take(start + Duration::from_secs(30)));
        let ips = PerIp::new(1);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(ips.take(ip));
        assert!(!ips.take(ip));
        assert!(ips.take([127, 0, 0, 2].into()));
    }
}
