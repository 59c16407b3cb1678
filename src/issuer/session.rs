//! What the interactive pages remember between requests, in memory: signed-in sessions,
//! authorize requests waiting for a login or a consent, and failed logins (for the slowdown).
//! Each map is bounded; a restart signs everybody out, while codes, refresh tokens and
//! consents live on in the grant store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::authorize::AuthorizeRequest;
use crate::protocol::random_token;

/// How long a sign-in lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a login or consent page stays usable.
const PENDING_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Most entries of each map.
const MAX_ENTRIES: usize = 10_000;
/// Failed logins per username or address allowed before the slowdown starts.
const FREE_FAILURES: u32 = 5;
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait the slowdown imposes.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user's `sub`.
    pub subject: String,
    /// When they signed in (seconds since the epoch).
    pub auth_time: u64,
    expires: SystemTime,
}

/// An authorize request waiting for the user.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The validated request.
    pub request: AuthorizeRequest,
    /// The anti-forgery token: in the page's form and in its cookie.
    pub csrf: String,
    /// Set once the user has signed in, while the consent page is shown.
    pub session: Option<String>,
    /// The browser cookie of the browser the page was shown in.
    pub browser: String,
    expires: SystemTime,
}

/// Login attempts since the last success, for one username or address.
#[derive(Debug)]
struct Failures {
    count: u32,
    last: SystemTime,
}

impl Failures {
    /// When the next attempt may be made.
    fn next_allowed(&self) -> SystemTime {
        if self.count < FREE_FAILURES {
            return self.last;
        }
        let doublings = (self.count - FREE_FAILURES).min(6);
        self.last + Duration::from_secs(1 << doublings).min(MAX_WAIT)
    }
}

/// The full map could not take another entry.
#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins are in progress")]
pub struct Full;

/// Sessions, pending requests and failure counts.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    pending: HashMap<String, Pending>,
    failures: HashMap<String, Failures>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: every update is one insert or
        // remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session with this id, live at `now`.
    pub fn session(&self, id: &str, now: SystemTime) -> Option<Session> {
        self.lock()
            .sessions
            .get(id)
            .filter(|s| s.expires > now)
            .cloned()
    }

    /// Signs `subject` in at `now`; returns the session id for the cookie.
    pub fn sign_in(&self, subject: &str, now: SystemTime) -> Result<String, Full> {
        let mut inner = self.lock();
        inner.sessions.retain(|_, s| s.expires > now);
        if inner.sessions.len() >= MAX_ENTRIES {
            return Err(Full);
        }
        let id = random_token();
        inner.sessions.insert(
            id.clone(),
            Session {
                subject: subject.to_owned(),
                auth_time: crate::jwt::numeric_date(now),
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(id)
    }

    /// Keeps `request` for the page about to be shown at `now`; returns its id.
    pub fn park(
        &self,
        request: AuthorizeRequest,
        session: Option<String>,
        browser: &str,
        now: SystemTime,
    ) -> Result<(String, Pending), Full> {
        let mut inner = self.lock();
        inner.pending.retain(|_, p| p.expires > now);
        if inner.pending.len() >= MAX_ENTRIES {
            return Err(Full);
        }
        let id = random_token();
        let pending = Pending {
            request,
            csrf: random_token(),
            session,
            browser: browser.to_owned(),
            expires: now + PENDING_LIFETIME,
        };
        inner.pending.insert(id.clone(), pending.clone());
        Ok((id, pending))
    }

    /// The pending request `id`, still live at `now`.
    pub fn pending(&self, id: &str, now: SystemTime) -> Option<Pending> {
        self.lock()
            .pending
            .get(id)
            .filter(|p| p.expires > now)
            .cloned()
    }

    /// Forgets the pending request `id` (it was answered).
    pub fn finish(&self, id: &str) {
        self.lock().pending.remove(id);
    }

    /// Counts a login attempt against each of `keys` (a username, a client address) before its
    /// password is checked, so that parallel attempts cannot all pass the check on one count.
    /// Refused, uncounted, with how long to wait, while any of the keys must wait; a success
    /// clears the count with [`Sessions::succeeded`].
    pub fn attempt(&self, keys: &[String], now: SystemTime) -> Result<(), Duration> {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let mut inner = self.lock();
        let wait = keys
            .iter()
            .filter_map(|k| inner.failures.get(k))
            .filter(|f| since(f.last) < FAILURE_WINDOW)
            .map(|f| f.next_allowed().duration_since(now).unwrap_or_default())
            .filter(|wait| !wait.is_zero())
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        inner.failures.retain(|_, f| since(f.last) < FAILURE_WINDOW);
        for key in keys {
            if inner.failures.len() >= MAX_ENTRIES && !inner.failures.contains_key(key) {
                continue;
            }
            let failures = inner.failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            failures.count += 1;
            failures.last = now;
        }
        Ok(())
    }

    /// Clears the failures of each of `keys` after a successful login.
    pub fn succeeded(&self, keys: &[String]) {
        let mut inner = self.lock();
        for key in keys {
            inner.failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowdown_starts_after_the_free_failures_and_doubles() {
        let sessions = Sessions::default();
        let keys = ["user:alice".to_owned()];
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for _ in 0..FREE_FAILURES {
            assert_eq!(sessions.attempt(&keys, start), Ok(()));
        }
        // The sixth waits a second after the fifth, and is not counted.
        assert_eq!(sessions.attempt(&keys, start), Err(Duration::from_secs(1)));
        let later = start + Duration::from_millis(400);
        assert_eq!(
            sessions.attempt(&keys, later),
            Err(Duration::from_millis(600))
        );
        let then = start + Duration::from_secs(1);
        assert_eq!(sessions.attempt(&keys, then), Ok(()));
        assert_eq!(sessions.attempt(&keys, then), Err(Duration::from_secs(2)));
        // Another key is not slowed down; success clears.
        assert_eq!(sessions.attempt(&["user:bob".to_owned()], then), Ok(()));
        sessions.succeeded(&keys);
        assert_eq!(sessions.attempt(&keys, then), Ok(()));
    }

    #[test]
    fn failures_are_forgotten_after_the_window() {
        let sessions = Sessions::default();
        let keys = ["addr:192.0.2.1".to_owned()];
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for _ in 0..FREE_FAILURES {
            assert_eq!(sessions.attempt(&keys, start), Ok(()));
        }
        assert!(sessions.attempt(&keys, start).is_err());
        assert_eq!(sessions.attempt(&keys, start + FAILURE_WINDOW), Ok(()));
    }

    #[test]
    fn sessions_and_pending_requests_end_with_their_lifetimes() {
        let sessions = Sessions::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let id = sessions.sign_in("818727", start).unwrap();
        let session = sessions.session(&id, start).unwrap();
        assert_eq!(
            (session.subject.as_str(), session.auth_time),
            ("818727", 1_750_000_000)
        );
        let last = start + SESSION_LIFETIME - Duration::from_secs(1);
        assert!(sessions.session(&id, last).is_some());
        assert!(sessions.session(&id, start + SESSION_LIFETIME).is_none());
        assert!(sessions.session("other", start).is_none());
    }
}
