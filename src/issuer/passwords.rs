//! Password checks for the login page, a bounded number at a time.
//!
//! One Argon2id check takes about 19 MiB and tens of milliseconds of one CPU. Unbounded, a few
//! hundred concurrent logins (no credentials needed) would take the process, gateway included,
//! to gigabytes. So at most one check per CPU runs at once; the rest wait up to
//! [`QUEUE_WAIT`] for their turn and are then turned away, with their password unchecked.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How long a login waits for a turn before it is refused as busy.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The bounded password checker.
pub struct Passwords {
    turns: Arc<Semaphore>,
}

impl Passwords {
    /// At most `at_once` checks at a time (at least one).
    pub fn new(at_once: usize) -> Self {
        Passwords {
            turns: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// One check per CPU the process may use.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Whether `password` matches the PHC string `phc`. Without `phc` (an unknown username)
    /// the password is checked against a hash of nothing known, so that the answer takes as
    /// long as for a real user and is `false`. `None` when no turn came within
    /// [`QUEUE_WAIT`].
    pub async fn verify(&self, phc: Option<String>, password: &str) -> Option<bool> {
        let turn = tokio::time::timeout(QUEUE_WAIT, self.turns.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let presented = password.as_bytes().to_vec();
        let checked = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            match phc {
                Some(phc) => crate::secret::verify_password(&phc, &presented),
                None => {
                    crate::secret::verify_password(unknown_user_hash(), &presented);
                    false
                }
            }
        })
        .await;
        Some(checked.unwrap_or(false))
    }
}

/// The hash an unknown username's password is checked against.
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| crate::secret::hash_password(b"isogate-no-such-user").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_waits_for_a_turn_and_is_refused_when_none_comes() {
        let passwords = Passwords::new(1);
        let phc = crate::secret::hash_password(b"right").unwrap();
        assert_eq!(
            passwords.verify(Some(phc.clone()), "right").await,
            Some(true)
        );
        assert_eq!(
            passwords.verify(Some(phc.clone()), "wrong").await,
            Some(false)
        );
        assert_eq!(passwords.verify(None, "right").await, Some(false));
        // Every turn taken: the next check is refused unchecked after the wait.
        let held = passwords.turns.clone().acquire_owned().await.unwrap();
        tokio::time::pause();
        assert_eq!(passwords.verify(Some(phc), "right").await, None);
        drop(held);
    }
}
