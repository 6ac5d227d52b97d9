//! Token buckets for `rate_per_session` (per visitor) and `rate_per_ip`, and for uploads
//! (`upload_rate_per_session`, `upload_bytes_per_session`): in memory, per
//! instance (a visitor who spreads frames over several instances gets each
//! instance's allowance; acceptable for flood protection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

pub use switchboard_channel::limits::{Bucket, PerKey, client_key};

/// Frames per client address (`rate_per_ip`).
pub type PerIp = PerKey<IpAddr>;
/// Frames per visitor (`rate_per_session`: every socket of one visitor on
/// this instance draws on the same allowance, so reconnecting or opening
/// more tabs does not refill it).
pub type PerVisitor = PerKey<String>;

/// Sockets open at once per client address, at most `max` each.
#[derive(Debug)]
pub struct OpenPerIp {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl OpenPerIp {
    pub fn new(max: u32) -> OpenPerIp {
        OpenPerIp {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more socket of `ip`; false, and nothing counted, at the
    /// limit. Each `true` is matched by one [`close`](OpenPerIp::close).
    pub fn open(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn close(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// Uploads per visitor: a bucket of files and one of bytes, each refilled
/// per minute.
#[derive(Debug)]
pub struct UploadQuota {
    files: u32,
    bytes: u64,
    buckets: Mutex<HashMap<String, (Bucket, Bucket)>>,
    swept_at: Mutex<Option<Instant>>,
}

impl UploadQuota {
    pub fn new(files_per_minute: u32, bytes_per_minute: u64) -> UploadQuota {
        UploadQuota {
            files: files_per_minute,
            bytes: bytes_per_minute,
            buckets: Mutex::new(HashMap::new()),
            swept_at: Mutex::new(None),
        }
    }

    /// Gives back one upload of `bytes` charged by [`take`](Self::take)
    /// for an upload refused by another allowance.
    pub fn give_back(&self, visitor: &str, bytes: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((files, size)) = buckets.get_mut(visitor) {
            files.refund(1.0);
            size.refund(bytes as f64);
        }
    }

    /// Charges `visitor` one upload of `bytes`; false, and nothing
    /// charged, when either allowance is short.
    pub fn take(&self, visitor: &str, bytes: u64) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 && switchboard_channel::limits::sweep_due(&self.swept_at, now) {
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
        assert!(ips.take(&ip));
        assert!(!ips.take(&ip));
        assert!(ips.take(&[127, 0, 0, 2].into()));
    }

    #[test]
    fn uploads_are_charged_files_and_bytes() {
        let quota = UploadQuota::new(2, 100);
        assert!(quota.take("a", 60));
        // Short of bytes: refused, and the file is not charged.
        assert!(!quota.take("a", 60));
        assert!(quota.take("a", 40));
        // Given back (another allowance refused it): one more fits.
        quota.give_back("a", 40);
        assert!(quota.take("a", 40));
        assert!(!quota.take("a", 1));
        // Short of files.
        assert!(!quota.take("a", 0));
        assert!(quota.take("b", 100));
    }
}

#[cfg(test)]
mod open_tests {
    use super::*;

    #[test]
    fn open_sockets_are_capped_per_address() {
        let open = OpenPerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(open.open(a) && open.open(a));
        assert!(!open.open(a), "at the limit");
        open.close(a);
        assert!(open.open(a), "one closed, one more");
        open.close(a);
        open.close(a);
        open.close(a);
        assert_eq!(open.count(a), 0, "never below zero, forgotten at zero");
    }
}
