//! What the interactive pages remember between requests: signed-in sessions, authorize
//! requests waiting for a login or a consent, and failed logins (for the slowdown). Without
//! `[store]` they live in this process's memory, each map bounded (a restart signs everybody
//! out); with it, in PostgreSQL, so that every instance of a fleet sees the same ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;

use super::authorize::AuthorizeRequest;
use crate::grants::{hash, PgStore, StoreError};
use crate::protocol::random_token;

/// How long a sign-in lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a login or consent page stays usable.
const PENDING_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Most entries of each map.
const MAX_ENTRIES: usize = 10_000;
/// Failed logins per username or address allowed before the slowdown starts.
pub(crate) const FREE_FAILURES: u32 = 5;
/// Failures older than this are forgotten.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait the slowdown imposes.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user's `sub`.
    pub subject: String,
    /// When they signed in (seconds since the epoch).
    pub auth_time: u64,
    pub(crate) expires: SystemTime,
}

/// What is kept of a session id, the bearer secret in the browser's cookie: its SHA-256.
/// Sessions are found by it, and a consent page remembers its session by it, so that neither
/// memory nor a database row holds an id that would sign someone in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(Vec<u8>);

impl SessionKey {
    /// The key of the session id `id`.
    pub fn of(id: &str) -> Self {
        SessionKey(hash(id))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as text (base64url), as a pending row keeps it.
    pub(crate) fn to_text(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// The key from [`SessionKey::to_text`]; `None` for anything else.
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        (bytes.len() == 32).then_some(SessionKey(bytes))
    }
}

/// An authorize request waiting for the user.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The validated request.
    pub request: AuthorizeRequest,
    /// The anti-forgery token: in the page's form and in its cookie.
    pub csrf: String,
    /// Set once the user has signed in, while the consent page is shown.
    pub session: Option<SessionKey>,
    /// The browser cookie of the browser the page was shown in.
    pub browser: String,
    pub(crate) expires: SystemTime,
}

/// Login attempts since the last success, for one username or address.
#[derive(Debug)]
pub(crate) struct Failures {
    pub(crate) count: u32,
    pub(crate) last: SystemTime,
}

impl Failures {
    /// How long an attempt at `now` must wait, if at all.
    pub(crate) fn wait(&self, now: SystemTime) -> Option<Duration> {
        let since = now.duration_since(self.last).unwrap_or_default();
        if since >= FAILURE_WINDOW {
            return None;
        }
        let wait = self.next_allowed().duration_since(now).unwrap_or_default();
        (!wait.is_zero()).then_some(wait)
    }

    /// When the next attempt may be made.
    fn next_allowed(&self) -> SystemTime {
        if self.count < FREE_FAILURES {
            return self.last;
        }
        let doublings = (self.count - FREE_FAILURES).min(6);
        self.last + Duration::from_secs(1 << doublings).min(MAX_WAIT)
    }
}

/// Why a session, a pending request or a count could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The map in memory is full.
    #[error("too many sign-ins are in progress")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sessions, pending requests and failure counts, in memory or in PostgreSQL.
pub struct Sessions {
    backend: Backend,
}

enum Backend {
    Memory(Mutex<Inner>),
    Postgres(Arc<PgStore>),
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            backend: Backend::Memory(Mutex::default()),
        }
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionKey, Session>,
    pending: HashMap<String, Pending>,
    failures: HashMap<String, Failures>,
}

impl Inner {
    /// Counts an attempt against each of `keys`, unless one must wait.
    fn attempt(&mut self, keys: &[String], now: SystemTime) -> Result<(), Duration> {
        let wait = keys
            .iter()
            .filter_map(|k| self.failures.get(k))
            .filter_map(|f| f.wait(now))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        self.failures.retain(|_, f| since(f.last) < FAILURE_WINDOW);
        for key in keys {
            if self.failures.len() >= MAX_ENTRIES && !self.failures.contains_key(key) {
                continue;
            }
            let failures = self.failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            failures.count += 1;
            failures.last = now;
        }
        Ok(())
    }
}

impl Sessions {
    /// Sessions kept in PostgreSQL, shared by a fleet.
    pub fn postgres(store: Arc<PgStore>) -> Self {
        Sessions {
            backend: Backend::Postgres(store),
        }
    }

    fn memory(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: every update is one insert or
        // remove.
        inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session with this key, live at `now`.
    pub async fn session(
        &self,
        key: &SessionKey,
        now: SystemTime,
    ) -> Result<Option<Session>, StoreError> {
        match &self.backend {
            Backend::Memory(inner) => Ok(Self::memory(inner)
                .sessions
                .get(key)
                .filter(|s| s.expires > now)
                .cloned()),
            Backend::Postgres(store) => store.session(key, now).await,
        }
    }

    /// Signs `subject` in at `now`; returns the session id for the cookie.
    pub async fn sign_in(&self, subject: &str, now: SystemTime) -> Result<String, SessionError> {
        let id = random_token();
        let key = SessionKey::of(&id);
        let session = Session {
            subject: subject.to_owned(),
            auth_time: crate::jwt::numeric_date(now),
            expires: now + SESSION_LIFETIME,
        };
        match &self.backend {
            Backend::Memory(inner) => {
                let mut inner = Self::memory(inner);
                inner.sessions.retain(|_, s| s.expires > now);
                if inner.sessions.len() >= MAX_ENTRIES {
                    return Err(SessionError::Full);
                }
                inner.sessions.insert(key, session);
            }
            Backend::Postgres(store) => store.sign_in(&key, &session).await?,
        }
        Ok(id)
    }

    /// Keeps `request` for the page about to be shown at `now`; returns its id.
    pub async fn park(
        &self,
        request: AuthorizeRequest,
        session: Option<SessionKey>,
        browser: &str,
        now: SystemTime,
    ) -> Result<(String, Pending), SessionError> {
        let id = random_token();
        let pending = Pending {
            request,
            csrf: random_token(),
            session,
            browser: browser.to_owned(),
            expires: now + PENDING_LIFETIME,
        };
        match &self.backend {
            Backend::Memory(inner) => {
                let mut inner = Self::memory(inner);
                inner.pending.retain(|_, p| p.expires > now);
                if inner.pending.len() >= MAX_ENTRIES {
                    return Err(SessionError::Full);
                }
                inner.pending.insert(id.clone(), pending.clone());
            }
            Backend::Postgres(store) => store.park(&id, &pending).await?,
        }
        Ok((id, pending))
    }

    /// The pending request `id`, still live at `now`.
    pub async fn pending(&self, id: &str, now: SystemTime) -> Result<Option<Pending>, StoreError> {
        match &self.backend {
            Backend::Memory(inner) => Ok(Self::memory(inner)
                .pending
                .get(id)
                .filter(|p| p.expires > now)
                .cloned()),
            Backend::Postgres(store) => store.pending(id, now).await,
        }
    }

    /// Forgets the pending request `id` (it was answered).
    pub async fn finish(&self, id: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(inner) => {
                Self::memory(inner).pending.remove(id);
                Ok(())
            }
            Backend::Postgres(store) => store.finish(id).await,
        }
    }

    /// Counts a login attempt against each of `keys` (a username, a client address) before its
    /// password is checked, so that parallel attempts cannot all pass the check on one count
    /// (on every instance of a fleet). Refused, uncounted, with how long to wait, while any of
    /// the keys must wait; a success clears the count with [`Sessions::succeeded`].
    pub async fn attempt(
        &self,
        keys: &[String],
        now: SystemTime,
    ) -> Result<Result<(), Duration>, StoreError> {
        match &self.backend {
            Backend::Memory(inner) => Ok(Self::memory(inner).attempt(keys, now)),
            Backend::Postgres(store) => store.attempt(keys, now).await,
        }
    }

    /// Clears the failures of each of `keys` after a successful login.
    pub async fn succeeded(&self, keys: &[String]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(inner) => {
                let mut inner = Self::memory(inner);
                for key in keys {
                    inner.failures.remove(key);
                }
                Ok(())
            }
            Backend::Postgres(store) => store.succeeded(keys).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_slowdown_starts_after_the_free_failures_and_doubles() {
        let sessions = Sessions::default();
        let keys = ["user:alice".to_owned()];
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for _ in 0..FREE_FAILURES {
            assert_eq!(sessions.attempt(&keys, start).await.unwrap(), Ok(()));
        }
        // The sixth waits a second after the fifth, and is not counted.
        assert_eq!(
            sessions.attempt(&keys, start).await.unwrap(),
            Err(Duration::from_secs(1))
        );
        let later = start + Duration::from_millis(400);
        assert_eq!(
            sessions.attempt(&keys, later).await.unwrap(),
            Err(Duration::from_millis(600))
        );
        let then = start + Duration::from_secs(1);
        assert_eq!(sessions.attempt(&keys, then).await.unwrap(), Ok(()));
        assert_eq!(
            sessions.attempt(&keys, then).await.unwrap(),
            Err(Duration::from_secs(2))
        );
        // Another key is not slowed down; success clears.
        assert_eq!(
            sessions
                .attempt(&["user:bob".to_owned()], then)
                .await
                .unwrap(),
            Ok(())
        );
        sessions.succeeded(&keys).await.unwrap();
        assert_eq!(sessions.attempt(&keys, then).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn failures_are_forgotten_after_the_window() {
        let sessions = Sessions::default();
        let keys = ["addr:192.0.2.1".to_owned()];
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for _ in 0..FREE_FAILURES {
            assert_eq!(sessions.attempt(&keys, start).await.unwrap(), Ok(()));
        }
        assert!(sessions.attempt(&keys, start).await.unwrap().is_err());
        assert_eq!(
            sessions
                .attempt(&keys, start + FAILURE_WINDOW)
                .await
                .unwrap(),
            Ok(())
        );
    }

    #[tokio::test]
    async fn sessions_and_pending_requests_end_with_their_lifetimes() {
        let sessions = Sessions::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let id = sessions.sign_in("818727", start).await.unwrap();
        let session = sessions
            .session(&SessionKey::of(&id), start)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (session.subject.as_str(), session.auth_time),
            ("818727", 1_750_000_000)
        );
        let last = start + SESSION_LIFETIME - Duration::from_secs(1);
        assert!(sessions
            .session(&SessionKey::of(&id), last)
            .await
            .unwrap()
            .is_some());
        assert!(sessions
            .session(&SessionKey::of(&id), start + SESSION_LIFETIME)
            .await
            .unwrap()
            .is_none());
        assert!(sessions
            .session(&SessionKey::of("other"), start)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_session_key_is_the_ids_hash_and_reads_back_from_its_text() {
        let sessions = Sessions::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let id = sessions.sign_in("818727", now).await.unwrap();
        let key = SessionKey::of(&id);
        assert_eq!(key.as_bytes().len(), 32);
        assert!(!key.to_text().contains(&id));
        assert_eq!(SessionKey::from_text(&key.to_text()).as_ref(), Some(&key));
        assert!(sessions.session(&key, now).await.unwrap().is_some());
        // What an older version wrote in a pending row, the id itself, finds no session.
        let old = SessionKey::from_text(&id).expect("43 base64url characters");
        assert!(sessions.session(&old, now).await.unwrap().is_none());
        assert_eq!(SessionKey::from_text("not base64!"), None);
        assert_eq!(SessionKey::from_text("c2hvcnQ"), None);
    }
}
