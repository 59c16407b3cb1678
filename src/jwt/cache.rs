//! The verified-token cache: what signature verification proved, keyed by the token's SHA-256.
//!
//! Verifying an ES256 signature costs more CPU than proxying a whole request, and a client sends
//! the same token many times, so the claims a verification produced are kept until `exp`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_lc_rs::digest::{digest, SHA256};
use rustc_hash::FxHashMap;

use super::verify::Claims;

/// A token's place in the cache: its SHA-256 ([`key`]).
pub type Key = [u8; 32];

/// Claims of tokens whose signature verified, by SHA-256 of the token, each with the generation
/// of the key set ([`TrustedKeys::generation`](super::verify::TrustedKeys::generation)) that
/// verified it.
///
/// The cache holds the proof of signature only, never a decision: callers re-run the time
/// ([`check_time`](super::verify::check_time)), `aud` and `scope` checks on every hit.
///
/// It never holds more than its capacity. When full, an insert first drops entries that expired
/// (as of the latest `now` given to [`get`](Self::get)) or were verified under an older
/// generation (at most once per second or per generation, as that walks every entry), then
/// evicts the oldest inserted: tokens are mostly issued with one lifetime, so the oldest is about
/// the next to expire anyway.
pub struct VerifiedCache<T = Claims> {
    capacity: usize,
    inner: Mutex<Inner<T>>,
}

/// What the cache keeps per token: the claims, perhaps with what their user derived from them
/// once. An entry lives until `exp`.
pub trait Expiring {
    /// Expiry, seconds since the epoch.
    fn exp(&self) -> u64;
}

impl Expiring for Claims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

struct Inner<T> {
    /// Fx rather than SipHash: a key is already a SHA-256 digest, and only tokens that verified
    /// are inserted.
    entries: FxHashMap<Key, Entry<T>>,
    /// Keys in insertion order with the `seq` they were inserted with; a pair whose entry has
    /// since been removed or replaced is stale and skipped.
    order: VecDeque<(Key, u64)>,
    next_seq: u64,
    /// The latest `now` given to `get`.
    now: u64,
    /// The `now` and generation of the last sweep.
    swept: Option<(u64, u64)>,
}

struct Entry<T> {
    claims: Arc<T>,
    generation: u64,
    seq: u64,
}

impl<T: Expiring> fmt::Debug for VerifiedCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Expiring> VerifiedCache<T> {
    /// An empty cache that holds at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        VerifiedCache {
            capacity,
            inner: Mutex::new(Inner {
                entries: FxHashMap::default(),
                order: VecDeque::new(),
                next_seq: 0,
                now: 0,
                swept: None,
            }),
        }
    }

    /// The claims `token` was verified to carry under key-set `generation`, unless they expired
    /// by `now` (seconds since the epoch; the entry is then removed) or were verified under
    /// another generation.
    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<T>> {
        self.get_key(&key(token.as_bytes()), now, generation)
    }

    /// [`get`](Self::get) for the token whose [`key`] this is.
    pub fn get_key(&self, key: &Key, now: u64, generation: u64) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.now = inner.now.max(now);
        let entry = inner.entries.get(key)?;
        if entry.claims.exp() <= now {
            inner.entries.remove(key);
            return None;
        }
        (entry.generation == generation).then(|| Arc::clone(&entry.claims))
    }

    /// Remembers that `token` verified under key-set `generation` with `claims`.
    pub fn insert(&self, token: &str, claims: Arc<T>, generation: u64) {
        self.insert_key(key(token.as_bytes()), claims, generation);
    }

    /// [`insert`](Self::insert) for the token whose [`key`] this is.
    pub fn insert_key(&self, key: Key, claims: Arc<T>, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if claims.exp() <= inner.now {
            return;
        }
        if !inner.entries.contains_key(&key) && inner.entries.len() >= self.capacity {
            inner.make_room(self.capacity, generation);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            key,
            Entry {
                claims,
                generation,
                seq,
            },
        );
        inner.order.push_back((key, seq));
        if inner.order.len() > self.capacity.saturating_mul(2) {
            inner.drop_stale_order();
        }
    }

    /// Forgets every token, e.g. when the trusted key set changes.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
    }

    /// The number of tokens held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Every critical section leaves the maps consistent, so a panic elsewhere while the lock
        // was held does not make the contents wrong.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Expiring> Inner<T> {
    /// Makes room for one more entry below `capacity`.
    fn make_room(&mut self, capacity: usize, generation: u64) {
        if self.swept != Some((self.now, generation)) {
            self.swept = Some((self.now, generation));
            let now = self.now;
            self.entries
                .retain(|_, entry| entry.claims.exp() > now && entry.generation >= generation);
        }
        while self.entries.len() >= capacity {
            let Some((key, seq)) = self.order.pop_front() else {
                // Unreachable (every entry has its pair in `order`), but never grow regardless.
                let any = self.entries.keys().next().copied();
                if let Some(key) = any {
                    self.entries.remove(&key);
                }
                continue;
            };
            if self.entries.get(&key).is_some_and(|entry| entry.seq == seq) {
                self.entries.remove(&key);
            }
        }
    }

    /// Drops the pairs of `order` whose entry is gone or was replaced, so it stays within twice
    /// the capacity however entries leave.
    fn drop_stale_order(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(key, seq)| entries.get(key).is_some_and(|entry| entry.seq == *seq));
    }
}

/// The cache key of `token`: its SHA-256.
pub fn key(token: &[u8]) -> Key {
    let mut key = [0; 32];
    // SHA-256 is always 32 bytes long.
    key.copy_from_slice(digest(&SHA256, token).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "https://issuer.test".into(),
            sub: Some("alice".into()),
            client_id: Some("app".into()),
            aud: vec!["urn:api".into()],
            scope: vec!["read".into()],
            exp,
            nbf: None,
            jti: None,
            jkt: None,
        })
    }

    #[test]
    fn a_token_hits_until_it_expires_and_is_then_removed() {
        let cache = VerifiedCache::new(10);
        assert!(cache.get("t1", 100, 1).is_none());
        cache.insert("t1", claims(200), 1);
        assert_eq!(cache.get("t1", 100, 1).unwrap().exp, 200);
        assert_eq!(cache.get("t1", 199, 1).unwrap().exp, 200);
        assert!(cache.get("t2", 100, 1).is_none(), "another token misses");
        assert!(cache.get("t1", 200, 1).is_none(), "exp <= now is a miss");
        assert!(cache.is_empty(), "and the entry is gone");
    }

    #[test]
    fn another_generation_never_hits() {
        let cache = VerifiedCache::new(10);
        cache.insert("t", claims(200), 1);
        assert!(cache.get("t", 100, 2).is_none());
        assert!(cache.get("t", 100, 1).is_some());
        // Inserted after a clear, but verified under the old key set: still a miss.
        cache.clear();
        cache.insert("t", claims(200), 1);
        assert!(cache.get("t", 100, 2).is_none());
        cache.insert("t", claims(200), 2);
        assert!(cache.get("t", 100, 2).is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn clear_empties() {
        let cache = VerifiedCache::new(10);
        cache.insert("a", claims(200), 1);
        cache.insert("b", claims(200), 1);
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.get("a", 100, 1).is_none());
    }

    #[test]
    fn capacity_is_never_exceeded_and_the_oldest_goes_first() {
        let cache = VerifiedCache::new(3);
        for i in 0..100u64 {
            cache.insert(&format!("t{i}"), claims(1000 + i), 1);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t96", 10, 1).is_none());
        for i in 97..100 {
            assert!(cache.get(&format!("t{i}"), 10, 1).is_some(), "t{i}");
        }
    }

    #[test]
    fn when_full_expired_and_older_generation_entries_go_before_live_ones() {
        let cache = VerifiedCache::new(3);
        cache.insert("live", claims(1000), 2);
        cache.insert("expired", claims(50), 2);
        cache.insert("old-generation", claims(1000), 1);
        assert!(
            cache.get("unrelated", 100, 2).is_none(),
            "tells the cache it is 100"
        );
        cache.insert("new", claims(1000), 2);
        assert!(cache.get("live", 100, 2).is_some(), "the oldest, but alive");
        assert!(cache.get("new", 100, 2).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn reinserting_a_token_does_not_evict_or_grow() {
        let cache = VerifiedCache::new(2);
        cache.insert("a", claims(200), 1);
        cache.insert("b", claims(200), 1);
        for _ in 0..10 {
            cache.insert("a", claims(200), 1);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b", 100, 1).is_some());
    }

    #[test]
    fn already_expired_claims_are_not_stored() {
        let cache = VerifiedCache::new(2);
        assert!(cache.get("x", 100, 1).is_none());
        cache.insert("a", claims(100), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn churn_below_capacity_keeps_the_order_queue_bounded() {
        let cache = VerifiedCache::new(4);
        for now in 0..1000u64 {
            let token = format!("t{}", now % 2);
            if cache.get(&token, now, 1).is_none() {
                cache.insert(&token, claims(now + 2), 1);
            }
            assert!(cache.lock().order.len() <= 8);
        }
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let cache = VerifiedCache::new(0);
        cache.insert("a", claims(200), 1);
        assert!(cache.is_empty());
        assert!(cache.get("a", 100, 1).is_none());
    }

    #[test]
    fn is_shared_between_threads() {
        let cache = Arc::new(VerifiedCache::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        let token = format!("{t}-{i}");
                        cache.insert(&token, claims(1000), 1);
                        let _ = cache.get(&token, 10, 1);
                        assert!(cache.len() <= 64);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(cache.len(), 64);
    }
}
