//! Token buckets for `rate_per_session` and `rate_per_ip`, and for uploads
//! (`upload_rate_per_session`, `upload_bytes_per_session`): in memory, per
//! instance (a visitor who spreads frames over several instances gets each
//! instance's allowance; acceptable for flood protection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub use switchboard_channel::limits::Bucket;

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
        let bytes = bytes as f64;
        if files.available(now) >= 1.0 && size.available(now) >= bytes {
            files.spend(1.0);
            size.spend(bytes);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_a_bucket_each() {
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
