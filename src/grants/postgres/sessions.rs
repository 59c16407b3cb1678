//! Sessions, pending sign-ins and login-failure counts in PostgreSQL (SPEC §7): what a fleet's
//! instances must agree on for a browser to sign in at one and go on at another. Session and
//! pending ids are bearer secrets: stored as their SHA-256 (a pending row names its session by
//! that hash too, base64url in its `session` column).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{all, exec, from_json, int, one, to_json, uint, Conn, OpError, PgStore, RETRIES};
use crate::grants::{hash, StoreError};
use crate::issuer::session::{Failures, Pending, Session, SessionKey, FAILURE_WINDOW};

impl PgStore {
    pub(crate) async fn session(
        &self,
        key: &SessionKey,
        now: SystemTime,
    ) -> Result<Option<Session>, StoreError> {
        let (key, at) = (key.as_bytes(), millis(now));
        run!(self, |c| {
            let row = one(
                &*c,
                "SELECT subject, auth_time, expires_at FROM isogate_sessions
                 WHERE hash = $1 AND expires_at > $2",
                &[&key, &at],
            )
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(Session {
                subject: row.try_get(0)?,
                auth_time: uint(row.try_get(1)?),
                expires: time(row.try_get(2)?),
            }))
        })
    }

    pub(crate) async fn sign_in(
        &self,
        key: &SessionKey,
        session: &Session,
    ) -> Result<(), StoreError> {
        let key = key.as_bytes();
        let (auth_time, expires) = (int(session.auth_time), millis(session.expires));
        run!(self, |c| {
            exec(
                &*c,
                "INSERT INTO isogate_sessions (hash, subject, auth_time, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[&key, &session.subject, &auth_time, &expires],
            )
            .await?;
            Ok(())
        })
    }

    pub(crate) async fn park(&self, id: &str, pending: &Pending) -> Result<(), StoreError> {
        let key = hash(id);
        let request = to_json(&pending.request)?;
        let session = pending.session.as_ref().map(SessionKey::to_text);
        let expires = millis(pending.expires);
        run!(self, |c| {
            exec(
                &*c,
                "INSERT INTO isogate_pending (hash, request_json, csrf, session, browser, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key,
                    &request,
                    &pending.csrf,
                    &session,
                    &pending.browser,
                    &expires,
                ],
            )
            .await?;
            Ok(())
        })
    }

    pub(crate) async fn pending(
        &self,
        id: &str,
        now: SystemTime,
    ) -> Result<Option<Pending>, StoreError> {
        let (key, at) = (hash(id), millis(now));
        run!(self, |c| {
            let row = one(
                &*c,
                "SELECT request_json, csrf, session, browser, expires_at FROM isogate_pending
                 WHERE hash = $1 AND expires_at > $2",
                &[&key, &at],
            )
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(Pending {
                request: from_json(row.try_get(0)?)?,
                csrf: row.try_get(1)?,
                // A row written by an older version holds the id itself, which as a key
                // finds no session: its consent page answers as expired.
                session: row
                    .try_get::<_, Option<String>>(2)?
                    .and_then(|text| SessionKey::from_text(&text)),
                browser: row.try_get(3)?,
                expires: time(row.try_get(4)?),
            }))
        })
    }

    pub(crate) async fn finish(&self, id: &str) -> Result<(), StoreError> {
        let key = hash(id);
        run!(self, |c| {
            exec(&*c, "DELETE FROM isogate_pending WHERE hash = $1", &[&key]).await?;
            Ok(())
        })
    }

    /// Counts an attempt against each of `keys` unless one must wait, fleet-wide: the rows
    /// are locked (in key order, so two attempts never deadlock) while the wait is judged.
    pub(crate) async fn attempt(
        &self,
        keys: &[String],
        now: SystemTime,
    ) -> Result<Result<(), Duration>, StoreError> {
        let at = millis(now);
        let forgotten = at.saturating_sub(millis_of(FAILURE_WINDOW));
        let mut keys = keys.to_vec();
        keys.sort();
        run!(self, |c| {
            let tx = c.transaction().await?;
            exec(
                &tx,
                "INSERT INTO isogate_login_failures (key, count, last_at)
                 SELECT k, 0, 0 FROM UNNEST($1::TEXT[]) AS t (k)
                 ON CONFLICT (key) DO NOTHING",
                &[&keys],
            )
            .await?;
            let rows = all(
                &tx,
                "SELECT count, last_at FROM isogate_login_failures
                 WHERE key = ANY($1) ORDER BY key FOR UPDATE",
                &[&keys],
            )
            .await?;
            let mut wait = None;
            for row in rows {
                let failures = Failures {
                    count: u32::try_from(row.try_get::<_, i32>(0)?).unwrap_or(0),
                    last: time(row.try_get(1)?),
                };
                wait = wait.max(failures.wait(now));
            }
            if let Some(wait) = wait {
                tx.commit().await?;
                return Ok(Err(wait));
            }
            exec(
                &tx,
                "UPDATE isogate_login_failures
                 SET count = CASE WHEN last_at <= $2 THEN 1 ELSE count + 1 END, last_at = $3
                 WHERE key = ANY($1)",
                &[&keys, &forgotten, &at],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    pub(crate) async fn succeeded(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        run!(self, |c| {
            exec(
                &*c,
                "DELETE FROM isogate_login_failures WHERE key = ANY($1)",
                &[&keys],
            )
            .await?;
            Ok(())
        })
    }
}

/// The sweep's statements for these tables (`$1`: now in seconds).
pub(super) const SWEEP: [&str; 3] = [
    "DELETE FROM isogate_sessions WHERE expires_at < $1::BIGINT * 1000",
    "DELETE FROM isogate_pending WHERE expires_at < $1::BIGINT * 1000",
    "DELETE FROM isogate_login_failures WHERE last_at < ($1::BIGINT - 900) * 1000",
];

/// Milliseconds since the epoch: the slowdown waits are shorter than a second.
fn millis(at: SystemTime) -> i64 {
    millis_of(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}
