//! A token bucket, and buckets kept per key (a client address, an agent):
//! the one rate limiter of the chat channel's limits and the agent API's.
//! In memory, per instance.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
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

    /// Returns `n` tokens spent for nothing, up to a full bucket.
    pub fn refund(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.per_minute);
    }

    /// Whether the bucket is full again (its owner has been idle).
    pub fn full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_minute / 60.0 >= self.per_minute
    }
}

/// One bucket of `per_minute` tokens per key (a client address, a
/// visitor, an agent). Keys idle long enough for their bucket to be full
/// again are forgotten once more than `max_keys` are kept.
#[derive(Debug)]
pub struct PerKey<K> {
    per_minute: u32,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
    /// When the map was last swept of idle keys.
    swept_at: Mutex<Option<Instant>>,
}

/// A map of allowances over its size is swept of idle keys at most this
/// often: a flood of new keys (addresses, sessions) that are all busy would
/// otherwise have every new one scan the whole map under its lock.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a sweep is due at `now` (and, if so, notes it).
pub fn sweep_due(swept_at: &Mutex<Option<Instant>>, now: Instant) -> bool {
    let mut at = swept_at.lock().unwrap_or_else(|e| e.into_inner());
    if at.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
        return false;
    }
    *at = Some(now);
    true
}

impl<K: Hash + Eq> PerKey<K> {
    pub fn new(per_minute: u32) -> PerKey<K> {
        PerKey::with_keys(per_minute, 100_000)
    }

    pub fn with_keys(per_minute: u32, max_keys: usize) -> PerKey<K> {
        PerKey {
            per_minute,
            max_keys,
            buckets: Mutex::new(HashMap::new()),
            swept_at: Mutex::new(None),
        }
    }

    /// Takes a token of `key`'s bucket; false when there is none.
    pub fn take<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.take_at(key, Instant::now())
    }

    pub fn take_at<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(now);
        }
        if buckets.len() >= self.max_keys && sweep_due(&self.swept_at, now) {
            // Forget keys whose bucket is full again (idle ones).
            buckets.retain(|_, b| !b.full(now));
        }
        let mut bucket = Bucket::new(self.per_minute);
        let taken = bucket.take(now);
        buckets.insert(key.to_owned(), bucket);
        taken
    }

    /// Gives back a token taken by [`take_at`](Self::take_at) for a
    /// request that turned out not to count (up to a full bucket).
    pub fn give_back<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.refund(1.0);
        }
    }

    /// Whether `key` has a token left, taking none: a key never seen has.
    pub fn has_token_at<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.get_mut(key).is_none_or(|b| b.available(now) >= 1.0)
    }

    /// The seconds until `key` has a token again (0 when it has one).
    pub fn wait_secs_at<Q>(&self, key: &Q, now: Instant) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get_mut(key) else {
            return 0;
        };
        let short = 1.0 - bucket.available(now);
        if short <= 0.0 || self.per_minute == 0 {
            return 0;
        }
        (short * 60.0 / f64::from(self.per_minute)).ceil() as u64
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

/// The address a client's allowances are kept under: an IPv6 address by
/// its /64 (one subscriber's usual share), an IPv4 address as it is.
pub fn client_key(ip: IpAddr) -> IpAddr {
    // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d:
    // its own address, not one /64 shared by every IPv4 client.
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::{Bucket, PerKey, client_key};
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    #[test]
    fn each_key_has_its_own_bucket() {
        let per = PerKey::<String>::new(30);
        let start = Instant::now();
        for n in 0..30 {
            assert!(per.take_at("olena", start), "token {n}");
        }
        assert!(!per.take_at("olena", start), "one more");
        assert!(!per.has_token_at("olena", start));
        assert_eq!(per.wait_secs_at("olena", start), 2);
        assert!(per.take_at("petro", start), "another key");
        assert!(per.has_token_at("nobody", start), "a key never seen");
        assert_eq!(per.wait_secs_at("nobody", start), 0);
        let later = start + Duration::from_secs(2);
        assert!(per.has_token_at("olena", later), "refilled, one every 2 s");
        assert!(per.take_at("olena", later));
        assert!(!per.has_token_at("olena", later));
        per.give_back("olena");
        assert!(per.has_token_at("olena", later), "given back");
        assert!(per.take_at("olena", later));
        assert!(!per.take_at("olena", later));
        // Never more than a full bucket.
        per.give_back("petro");
        per.give_back("petro");
        per.give_back("nobody");
        for n in 0..30 {
            assert!(per.take_at("petro", start), "token {n}");
        }
        assert!(!per.take_at("petro", start), "full is full");
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let per = PerKey::<String>::with_keys(30, 1024);
        let start = Instant::now();
        for n in 0..1024 {
            assert!(per.take_at(&format!("agent{n}"), start));
        }
        assert_eq!(per.keys(), 1024);
        // Half a minute later none of them is full again: all are kept.
        assert!(per.take_at("one-more", start + Duration::from_secs(1)));
        assert_eq!(per.keys(), 1025);
        // A minute later every bucket is full: forgotten for the newcomer.
        assert!(per.take_at("newcomer", start + Duration::from_secs(120)));
        assert_eq!(per.keys(), 1);
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let key = |s: &str| client_key(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:198.51.100.7"), key("198.51.100.7"));
        assert_ne!(key("::ffff:198.51.100.7"), key("::ffff:198.51.100.8"));
        assert_eq!(
            key("198.51.100.7"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

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
