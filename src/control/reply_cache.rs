//! Answers to retransmitted ng requests: the SIP proxy resends a request (same cookie) when our
//! reply is lost or late, and executing an offer twice would allocate ports and keys twice.
//!
//! The cache is bounded in entries and in bytes, evicts entries older than the TTL, and takes
//! the current time from the caller, so it stays pure and testable.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A bounded, TTL-evicting map from request cookie to the encoded reply datagram.
pub struct ReplyCache {
    max_entries: usize,
    max_bytes: usize,
    ttl: Duration,
    bytes: usize,
    entries: HashMap<Vec<u8>, (Instant, Zeroizing<Vec<u8>>)>,
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl fmt::Debug for ReplyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyCache")
            .field("entries", &self.entries.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ReplyCache {
    /// A cache holding at most `max_entries` replies totalling at most `max_bytes`, each for
    /// at most `ttl` (rtpengine keeps replies for about 30 s).
    pub fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> ReplyCache {
        ReplyCache {
            max_entries,
            max_bytes,
            ttl,
            bytes: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached reply for a cookie, if one was stored less than the TTL ago.
    pub fn get(&mut self, cookie: &[u8], now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.entries.get(cookie).map(|(_, r)| r.as_slice())
    }

    /// Stores the reply sent for a cookie (replacing an older one), evicting expired entries
    /// first and then the oldest ones until the bounds hold. A reply larger than the byte bound
    /// is not stored.
    pub fn insert(&mut self, cookie: &[u8], reply: Vec<u8>, now: Instant) {
        self.expire(now);
        let size = cookie.len() + reply.len();
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        if let Some((_, old)) = self.entries.remove(cookie) {
            self.bytes -= cookie.len() + old.len();
            self.order.retain(|(_, c)| c != cookie);
        }
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
        self.bytes += size;
        self.entries
            .insert(cookie.to_vec(), (now, Zeroizing::new(reply)));
        self.order.push_back((now, cookie.to_vec()));
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, cookie)) = self.order.pop_front() else {
            return false;
        };
        if let Some((_, r)) = self.entries.remove(&cookie) {
            self.bytes -= cookie.len() + r.len();
        }
        true
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl {
                break;
            }
            self.evict_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmission_gets_the_cached_reply_until_the_ttl() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, 1 << 20, Duration::from_secs(30));
        assert_eq!(c.get(b"abc", t0), None);
        c.insert(b"abc", b"abc d6:result4:ponge".to_vec(), t0);
        assert_eq!(
            c.get(b"abc", t0 + Duration::from_secs(29)),
            Some(&b"abc d6:result4:ponge"[..])
        );
        assert_eq!(c.get(b"abc", t0 + Duration::from_secs(30)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn entry_and_byte_bounds_evict_the_oldest() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(2, 1 << 20, Duration::from_secs(30));
        c.insert(b"1", vec![1], t0);
        c.insert(b"2", vec![2], t0);
        c.insert(b"3", vec![3], t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"1", t0), None);
        assert_eq!(c.get(b"3", t0), Some(&[3u8][..]));

        let mut c = ReplyCache::new(100, 10, Duration::from_secs(30));
        c.insert(b"a", vec![0; 4], t0); // 5 bytes
        c.insert(b"b", vec![0; 4], t0); // 10 bytes
        c.insert(b"c", vec![0; 4], t0); // evicts a
        assert_eq!(c.get(b"a", t0), None);
        assert!(c.get(b"b", t0).is_some() && c.get(b"c", t0).is_some());
        c.insert(b"big", vec![0; 100], t0); // larger than the bound: not stored
        assert_eq!(c.get(b"big", t0), None);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn replacing_a_cookie_keeps_accounting_right() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(2, 100, Duration::from_secs(30));
        c.insert(b"x", vec![1; 10], t0);
        c.insert(b"x", vec![2; 10], t0 + Duration::from_secs(1));
        c.insert(b"y", vec![3; 10], t0);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.get(b"x", t0 + Duration::from_secs(2)),
            Some(&[2u8; 10][..])
        );
        for i in 0..1000u32 {
            c.insert(&i.to_be_bytes(), vec![0; 30], t0);
        }
        assert!(c.len() <= 2);
    }
}
