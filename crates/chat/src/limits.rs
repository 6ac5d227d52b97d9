//! Token buckets for `rate_per_session` and `rate_per_ip`, and for uploads
//! (`upload_rate_per_session`, `upload_bytes_per_session`): in memory, per
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
        Bucket::of(f64::from(per_minute))
    }

    fn of(per_minute: f64) -> Bucket {
        Bucket {
            tokens: per_minute,
            per_minute,
            at: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Adds what has come in since the last look.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
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

/// Uploads per visitor: a bucket of files and one of bytes, each refilled
/// per minute.
#[derive(Debug)]
pub struct UploadQuota {
    files: u32,
    bytes: u64,
    buckets: Mutex<HashMap<String, (Bucket, Bucket)>>,
}

impl UploadQuota {
    pub fn new(files_per_minute: u32, bytes_per_minute: u64) -> UploadQuota {
        UploadQuota {
            files: files_per_minute,
            bytes: bytes_per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `visitor` one upload of `bytes`; false, and nothing
    /// charged, when either allowance is short.
    pub fn take(&self, visitor: &str, bytes: u64) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, (files, size)| !(files.full(now) && size.full(now)));
        }
        let (files, size) = buckets
            .entry(visitor.to_owned())
            .or_insert_with(|| (Bucket::new(self.files), Bucket::of(self.bytes as f64)));
        files.refill(now);
        size.refill(now);
        let bytes = bytes as f64;
        if files.tokens >= 1.0 && size.tokens >= bytes {
            files.tokens -= 1.0;
            size.tokens -= bytes;
            true
        } else {
            false
        }
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

    #[test]
    fn uploads_are_charged_files_and_bytes() {
        let quota = UploadQuota::new(2, 100);
        assert!(quota.take("a", 60));
        // Short of bytes: refused, and the file is not charged.
        assert!(!quota.take("a", 60));
        assert!(quota.take("a", 40));
        // Short of files.
        assert!(!quota.take("a", 0));
        assert!(quota.take("b", 100));
    }
}
