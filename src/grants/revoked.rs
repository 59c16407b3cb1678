//! The revoked access tokens a gateway refuses (SPEC §7): a set of `jti`s, each until its
//! `exp`, read on every request after the verified-token cache. Empty, the check is one atomic
//! load; otherwise one read lock and one hash lookup.
//!
//! The issuer's own revocations enter it as they happen (same process: at once); with
//! `[store]`, a poller brings in every instance's (see `PgStore::revoked_since`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::RwLock;

/// Revoked `jti`s and their `exp`.
#[derive(Debug, Default)]
pub struct Revoked {
    any: AtomicBool,
    set: RwLock<HashMap<String, u64>>,
    /// The store's revocation sequence read so far (PostgreSQL).
    pub(crate) cursor: AtomicI64,
}

impl Revoked {
    /// Whether access token `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.read().contains_key(jti)
    }

    /// Adds revoked tokens, and forgets those that expired before `now`.
    pub fn extend(&self, revoked: impl IntoIterator<Item = (String, u64)>, now: u64) {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        set.extend(revoked);
        set.retain(|_, exp| *exp >= now);
        self.any.store(!set.is_empty(), Ordering::Release);
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
        // A map of plain values stays consistent even if a writer panicked.
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_tokens_are_held_until_they_expire() {
        let revoked = Revoked::default();
        assert!(!revoked.contains("a") && revoked.is_empty());
        revoked.extend([("a".to_owned(), 100), ("b".to_owned(), 50)], 10);
        assert!(revoked.contains("a") && revoked.contains("b") && !revoked.contains("c"));
        assert_eq!(revoked.len(), 2);
        assert!(!revoked.is_empty());
        revoked.extend([], 60);
        assert!(revoked.contains("a") && !revoked.contains("b"));
        assert_eq!(revoked.len(), 1);
        revoked.extend([], 101);
        assert!(!revoked.contains("a") && revoked.is_empty());
    }
}
