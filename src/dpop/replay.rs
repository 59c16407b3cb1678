//! The `jti`s of the proofs accepted within the window, per process and bounded: two
//! generations of a hash set, so that forgetting is a swap rather than a scan.

use std::sync::Mutex;

use rustc_hash::FxHashSet;

use super::ProofError;

/// The most proofs remembered at once by default: about 40 MB at worst.
const DEFAULT_CAPACITY: usize = 1_000_000;

/// The proofs seen within the window (see `docs/dpop.md`).
#[derive(Debug)]
pub struct Replay {
    capacity: usize,
    seen: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: FxHashSet<[u8; 16]>,
    previous: FxHashSet<[u8; 16]>,
    /// When `current` began, seconds since the epoch.
    started: u64,
}

impl Default for Replay {
    fn default() -> Self {
        Replay::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Replay {
    /// A cache that remembers at most `capacity` proofs.
    pub fn with_capacity(capacity: usize) -> Self {
        Replay {
            capacity,
            seen: Mutex::new(Generations::default()),
        }
    }

    /// Records the proof `jti` of the key `thumbprint` at `now`, to be remembered for at least
    /// `window` seconds: [`ProofError::Replayed`] when it is remembered already,
    /// [`ProofError::Full`] when there is no room.
    pub fn record(
        &self,
        thumbprint: &str,
        jti: &str,
        now: u64,
        window: u64,
    ) -> Result<(), ProofError> {
        let key = key(thumbprint, jti);
        // A poisoned lock only means another thread panicked while holding it; the sets are
        // still sets.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.forget(now, window.max(1));
        if seen.current.contains(&key) || seen.previous.contains(&key) {
            return Err(ProofError::Replayed);
        }
        if seen.current.len() + seen.previous.len() >= self.capacity {
            return Err(ProofError::Full);
        }
        seen.current.insert(key);
        Ok(())
    }

    /// How many proofs are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.current.len() + seen.previous.len()
    }
}

impl Generations {
    /// An entry lands in `current`, moves to `previous` at the first call a window after
    /// `current` began, and is dropped a window after that: it lives at least one window.
    fn forget(&mut self, now: u64, window: u64) {
        if now < self.started.saturating_add(window) {
            return;
        }
        if now >= self.started.saturating_add(2 * window) {
            // Both generations are older than a window.
            self.previous.clear();
            self.current.clear();
        } else {
            self.previous = std::mem::take(&mut self.current);
        }
        self.started = now;
    }
}

/// 128 bits of SHA-256 over the thumbprint and the `jti`: one client's `jti`s never collide
/// with another's, and an entry is 16 bytes whatever the `jti`'s length.
fn key(thumbprint: &str, jti: &str) -> [u8; 16] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(thumbprint.as_bytes());
    context.update(b".");
    context.update(jti.as_bytes());
    let digest = context.finish();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest.as_ref()[..16]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_refused_again_for_at_least_a_window_then_forgotten() {
        let replay = Replay::default();
        let window = 180;
        replay.record("k", "a", 1_000, window).unwrap();
        assert_eq!(
            replay.record("k", "a", 1_000, window),
            Err(ProofError::Replayed)
        );
        // Another key's proof with the same jti is another proof.
        replay.record("other", "a", 1_000, window).unwrap();
        // Just under a window later: still remembered, across the swap of generations.
        replay.record("k", "b", 1_100, window).unwrap();
        assert_eq!(
            replay.record("k", "a", 1_179, window),
            Err(ProofError::Replayed)
        );
        assert_eq!(
            replay.record("k", "b", 1_279, window),
            Err(ProofError::Replayed)
        );
        // The generation that holds it (retired at 1,279) is dropped a window later.
        assert_eq!(
            replay.record("k", "a", 1_458, window),
            Err(ProofError::Replayed)
        );
        replay.record("k", "a", 1_279 + window, window).unwrap();
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let replay = Replay::with_capacity(2);
        replay.record("k", "1", 10, 60).unwrap();
        replay.record("k", "2", 10, 60).unwrap();
        assert_eq!(replay.record("k", "3", 11, 60), Err(ProofError::Full));
        assert_eq!(replay.len(), 2);
        // The window passes: room again, and the old ones still count as seen until dropped.
        replay.record("k", "3", 80, 60).unwrap_err();
        replay.record("k", "3", 200, 60).unwrap();
        assert_eq!(replay.len(), 1);
    }
}
