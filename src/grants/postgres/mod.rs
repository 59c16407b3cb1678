//! The fleet's store (SPEC §7): the grants in PostgreSQL, shared by every isogate on the same
//! database. Each state change is one conditional statement (a code is spent by `UPDATE …
//! WHERE family IS NULL … RETURNING`, a refresh token rotated by `UPDATE … WHERE consumed_at
//! IS NULL …`), with what it hands out written in the same statement; only the rare refusals
//! (a replay, a reuse, a revocation) take a short transaction. See `docs/store.md`.
//!
//! The schema is created and migrated when the store is first reached, under an advisory lock
//! so that instances starting together are safe; a schema newer than this binary knows is
//! refused. Every wait (for a connection, for a statement) is bounded by `connect_timeout`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{
    Authorization, CodeGrant, CodeRefusal, Consent, RefreshGrant, RefreshPolicy, RefreshRefusal,
    RegisteredClient, Spend, StoreError, Use, Verdict, KEEP_REDEEMED_CODE,
};
use crate::config::StoreConfig;

/// Runs `$body` (an expression that may use `?` and yields `Result<_, OpError>`) with `$c`,
/// a pooled connection, within `connect_timeout`; again after a serialization failure, a
/// deadlock or a lost race. A macro rather than a function taking an async closure: the
/// futures stay `Send` for any lifetime, as the listeners need.
macro_rules! run {
    ($store:expr, |$c:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let outcome = run!(@inner store, |$c| $body);
        store.note(&outcome);
        outcome
    }};
    (@inner $store:ident, |$c:ident| $body:expr) => {{
        let store = $store;
        'run: {
            let mut client = match store.client().await {
                Ok(client) => client,
                Err(e) => break 'run Err(e),
            };
            let mut tries = 0;
            loop {
                let $c = &mut client;
                let outcome: Result<Result<_, OpError>, _> =
                    tokio::time::timeout(store.timeout, async { $body }).await;
                match outcome {
                    Err(_) => {
                        // Mid-statement: the connection's state is unknown, so it is not
                        // reused.
                        drop(Conn::take(client));
                        break Err(store.timed_out());
                    }
                    Ok(Err(e)) if e.retryable() && tries < RETRIES => tries += 1,
                    Ok(result) => break result.map_err(OpError::into_store),
                }
            }
        }
    }};
}

mod sessions;

/// The schema versions this binary knows, in order: `MIGRATIONS[n]` takes version `n` to
/// `n + 1`. Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    // 1: grants.
    "CREATE TABLE isogate_codes (
        hash BYTEA PRIMARY KEY,
        grant_json TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        family TEXT,
        keep_until BIGINT NOT NULL
    );
    CREATE TABLE isogate_families (
        id TEXT PRIMARY KEY,
        revoked BOOLEAN NOT NULL,
        keep_until BIGINT NOT NULL
    );
    CREATE TABLE isogate_refresh_tokens (
        hash BYTEA PRIMARY KEY,
        family TEXT NOT NULL,
        client_id TEXT NOT NULL,
        authorization_json TEXT NOT NULL,
        absolute_expiry BIGINT NOT NULL,
        sliding_expiry BIGINT NOT NULL,
        consumed_at BIGINT
    );
    CREATE TABLE isogate_access_tokens (
        jti TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        exp BIGINT NOT NULL
    );
    CREATE INDEX isogate_access_tokens_by_family ON isogate_access_tokens (family);
    CREATE SEQUENCE isogate_revocation_seq;
    CREATE TABLE isogate_revoked_tokens (
        jti TEXT PRIMARY KEY,
        exp BIGINT NOT NULL,
        seq BIGINT NOT NULL DEFAULT nextval('isogate_revocation_seq'),
        revoked_at BIGINT NOT NULL
            DEFAULT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
    );
    CREATE INDEX isogate_revoked_tokens_by_seq ON isogate_revoked_tokens (seq);
    CREATE INDEX isogate_revoked_tokens_by_time ON isogate_revoked_tokens (revoked_at);
    CREATE TABLE isogate_consents (
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        resource TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (subject, client_id, scope, resource)
    );",
    // 2: sign-ins (times in milliseconds since the epoch).
    "CREATE TABLE isogate_sessions (
        hash BYTEA PRIMARY KEY,
        subject TEXT NOT NULL,
        auth_time BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE isogate_pending (
        hash BYTEA PRIMARY KEY,
        request_json TEXT NOT NULL,
        csrf TEXT NOT NULL,
        session TEXT,
        browser TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE isogate_login_failures (
        key TEXT PRIMARY KEY,
        count INT NOT NULL,
        last_at BIGINT NOT NULL
    );",
    // 3: clients that registered themselves (SPEC §9).
    "CREATE TABLE isogate_clients (
        client_id TEXT PRIMARY KEY,
        client_json TEXT NOT NULL,
        issued_at BIGINT NOT NULL
    );",
    // 4: spent client assertions (private_key_jwt, SPEC §9), until they expire.
    "CREATE TABLE isogate_assertions (
        key BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );",
];

/// The advisory lock held while migrating ("isogate" in ASCII).
const MIGRATION_LOCK: i64 = 0x0069_736f_6761_7465;
/// The advisory lock of the sweep: one instance at a time.
const SWEEP_LOCK: i64 = MIGRATION_LOCK + 1;
/// How long after it was numbered a revocation is read again, in milliseconds: a transaction
/// that numbered one commits within this.
const LATE_COMMITS_MS: i64 = 30_000;
/// How often a statement is tried again after a serialization failure or a deadlock.
const RETRIES: usize = 3;

/// The grants in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    timeout: Duration,
    /// The schema is known to be current.
    migrated: AtomicBool,
    /// Serialises this instance's migration attempts.
    migrating: tokio::sync::Mutex<()>,
    /// Whether the last statement reached the store, and if not why: for `/config`.
    health: std::sync::Mutex<Health>,
    /// Where to connect, and with which TLS, for the connection that listens.
    pg: tokio_postgres::Config,
    tls: Option<rustls::ClientConfig>,
}

/// What `/config` says of the store.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    /// The last statement reached the store.
    pub up: bool,
    /// Why the last one that did not reach it failed.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Whether the last statement reached the store, and the last reason it did not.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes whether a statement reached the store.
    fn note<T>(&self, outcome: &Result<T, StoreError>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Err(StoreError::Unavailable(why)) => {
                health.up = false;
                health.last_error = Some(why.clone());
            }
            _ => health.up = true,
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "no answer within connect_timeout ({})",
            humantime::format_duration(self.timeout)
        ))
    }

    /// A pool for `config`; nothing is connected until the first use.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let mut pg = config.pg.clone();
        pg.connect_timeout(config.connect_timeout);
        pg.application_name("isogate");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = match &config.tls_roots {
            Some(roots) => Some(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(StoreError::failed)?
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
            ),
            None => None,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(
                pg.clone(),
                tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone()),
                manager_config,
            ),
            None => Manager::from_config(pg.clone(), tokio_postgres::NoTls, manager_config),
        };
        let wait = Some(config.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(StoreError::failed)?;
        Ok(PgStore {
            pool,
            timeout: config.connect_timeout,
            migrated: AtomicBool::new(false),
            migrating: tokio::sync::Mutex::new(()),
            health: std::sync::Mutex::default(),
            pg,
            tls,
        })
    }

    /// Wakes `wake` whenever any instance commits a revocation (`LISTEN isogate_revoked`), and
    /// once each time the listening connection is (re)established, as something may have been
    /// missed meanwhile. Reconnects a second after a failure; runs until dropped.
    pub async fn listen(&self, wake: &tokio::sync::Notify) {
        loop {
            let outcome = match &self.tls {
                None => match self.pg.connect(tokio_postgres::NoTls).await {
                    Ok(connected) => drive(connected, wake).await,
                    Err(e) => Err(e),
                },
                Some(tls) => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls.clone());
                    match self.pg.connect(tls).await {
                        Ok(connected) => drive(connected, wake).await,
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "listening for revocations failed; again in a second");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// A pooled connection to a current schema, within `connect_timeout`.
    async fn client(&self) -> Result<Conn, StoreError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if !self.migrated.load(Ordering::Acquire) {
            let _one = self.migrating.lock().await;
            if !self.migrated.load(Ordering::Acquire) {
                let deadline = self.timeout.max(Duration::from_secs(30));
                match tokio::time::timeout(deadline, migrate(&mut client)).await {
                    Ok(Ok(())) => self.migrated.store(true, Ordering::Release),
                    Ok(Err(e)) => return Err(e.into_store()),
                    Err(_) => {
                        drop(Conn::take(client));
                        return Err(StoreError::Unavailable(
                            "migrating the schema timed out".into(),
                        ));
                    }
                }
            }
        }
        Ok(client)
    }

    /// Brings the schema to the newest version this binary knows, unless it is known to be
    /// there already: at start, and on the first use after the store was unreachable.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let outcome = self.client().await.map(drop);
        self.note(&outcome);
        outcome
    }

    /// How long a trivial query takes, within `connect_timeout`.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        run!(self, |c| {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })?;
        Ok(start.elapsed())
    }

    pub(super) async fn insert_code(
        &self,
        key: Vec<u8>,
        grant: CodeGrant,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let json = to_json(&grant)?;
        let expires_at = int(expires_at);
        run!(self, |c| {
            exec(
                &*c,
                "INSERT INTO isogate_codes (hash, grant_json, expires_at, family, keep_until)
                 VALUES ($1, $2, $3, NULL, $3)",
                &[&key, &json, &expires_at],
            )
            .await?;
            Ok(())
        })
    }

    /// The code's grant while redeemable; a redeemed code revokes its family.
    pub(super) async fn code(
        &self,
        key: Vec<u8>,
        now: u64,
    ) -> Result<Result<CodeGrant, CodeRefusal>, StoreError> {
        run!(self, |c| {
            let row = one(
                &*c,
                "SELECT grant_json, expires_at, family FROM isogate_codes WHERE hash = $1",
                &[&key],
            )
            .await?;
            if let Some(row) = row {
                let family: Option<String> = row.try_get(2)?;
                if family.is_none() && now <= uint(row.try_get(1)?) {
                    return Ok(Ok(from_json(row.try_get(0)?)?));
                }
            }
            Ok(Err(refuse_code(c, &key, now).await?))
        })
    }

    /// Spends the code, and writes its family, its access token and its first refresh token,
    /// in one statement.
    pub(super) async fn redeem_code(
        &self,
        key: Vec<u8>,
        now: u64,
        spend: Spend,
    ) -> Result<Result<(), CodeRefusal>, StoreError> {
        let refresh = spend.refresh.as_ref();
        let refresh_key = refresh.map(|(key, _)| key.clone());
        let (client_id, authorization, absolute, sliding) = match refresh {
            Some((_, grant)) => (
                Some(grant.authorization.client_id.clone()),
                Some(to_json(&grant.authorization)?),
                Some(int(grant.absolute_expiry)),
                Some(int(grant.sliding_expiry)),
            ),
            None => (None, None, None, None),
        };
        let keep = int((now + KEEP_REDEEMED_CODE)
            .max(spend.exp)
            .max(refresh.map_or(0, |(_, g)| g.absolute_expiry)));
        let (code_keep, at, exp) = (int(now + KEEP_REDEEMED_CODE), int(now), int(spend.exp));
        run!(self, |c| {
            let spent = one(
                &*c,
                "WITH spent AS (
                     UPDATE isogate_codes SET family = $2, keep_until = $3
                     WHERE hash = $1 AND family IS NULL AND expires_at >= $4
                     RETURNING hash
                 ), family AS (
                     INSERT INTO isogate_families (id, revoked, keep_until)
                     SELECT $2, FALSE, $5 FROM spent
                 ), access AS (
                     INSERT INTO isogate_access_tokens (jti, family, exp)
                     SELECT $6, $2, $7 FROM spent
                 ), refresh AS (
                     INSERT INTO isogate_refresh_tokens (hash, family, client_id,
                         authorization_json, absolute_expiry, sliding_expiry, consumed_at)
                     SELECT $8, $2, $9, $10, $11, $12, NULL FROM spent
                     WHERE $8::BYTEA IS NOT NULL
                 )
                 SELECT 1 FROM spent",
                &[
                    &key,
                    &spend.family,
                    &code_keep,
                    &at,
                    &keep,
                    &spend.jti,
                    &exp,
                    &refresh_key,
                    &client_id,
                    &authorization,
                    &absolute,
                    &sliding,
                ],
            )
            .await?;
            if spent.is_some() {
                return Ok(Ok(()));
            }
            Ok(Err(refuse_code(c, &key, now).await?))
        })
    }

    /// The refresh token and whether its family is revoked.
    pub(super) async fn refresh(
        &self,
        key: Vec<u8>,
    ) -> Result<Option<(RefreshGrant, bool)>, StoreError> {
        run!(self, |c| {
            match one(&*c, SELECT_REFRESH, &[&key]).await? {
                Some(row) => Ok(Some(refresh_row(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Uses the refresh token: on the common path one statement rotates or slides it, writes
    /// its successor and records the access token; a refusal is then judged (and a reuse
    /// revokes the family) in a short transaction.
    pub(super) async fn use_refresh(
        &self,
        key: Vec<u8>,
        now: u64,
        used: Use,
    ) -> Result<Result<RefreshGrant, RefreshRefusal>, StoreError> {
        let (at, exp) = (int(now), int(used.exp));
        let grace = int(used.policy.reuse_grace.as_secs());
        let slide = int(used.policy.sliding.as_secs());
        let one_time = used.policy.one_time;
        run!(self, |c| {
            let row = one(
                &*c,
                "WITH fam AS (
                     UPDATE isogate_families f SET keep_until = GREATEST(f.keep_until, $8::BIGINT)
                     FROM isogate_refresh_tokens r
                     WHERE r.hash = $1 AND f.id = r.family AND NOT f.revoked
                     RETURNING f.id
                 ), used AS (
                     UPDATE isogate_refresh_tokens r SET
                         consumed_at = CASE WHEN $5::BOOLEAN
                             THEN COALESCE(r.consumed_at, $3::BIGINT) ELSE r.consumed_at END,
                         sliding_expiry = CASE WHEN $5::BOOLEAN OR $6::BIGINT = 0
                             THEN r.sliding_expiry
                             ELSE LEAST($3::BIGINT + $6::BIGINT, r.absolute_expiry) END
                     FROM fam
                     WHERE r.hash = $1 AND r.family = fam.id AND r.client_id = $2
                       AND $3::BIGINT <= LEAST(r.absolute_expiry, r.sliding_expiry)
                       AND (r.consumed_at IS NULL
                            OR ($4::BIGINT > 0 AND $3::BIGINT <= r.consumed_at + $4::BIGINT))
                     RETURNING r.family, r.client_id, r.authorization_json, r.absolute_expiry,
                         r.sliding_expiry
                 ), access AS (
                     INSERT INTO isogate_access_tokens (jti, family, exp)
                     SELECT $7, family, $8::BIGINT FROM used
                 ), next AS (
                     INSERT INTO isogate_refresh_tokens (hash, family, client_id,
                         authorization_json, absolute_expiry, sliding_expiry, consumed_at)
                     SELECT $9, family, client_id, authorization_json, absolute_expiry,
                         CASE WHEN $6::BIGINT = 0 THEN absolute_expiry
                             ELSE LEAST($3::BIGINT + $6::BIGINT, absolute_expiry) END,
                         NULL
                     FROM used WHERE $9::BYTEA IS NOT NULL
                 )
                 SELECT family, authorization_json, absolute_expiry, sliding_expiry FROM used",
                &[
                    &key,
                    &used.client_id,
                    &at,
                    &grace,
                    &one_time,
                    &slide,
                    &used.jti,
                    &exp,
                    &used.successor,
                ],
            )
            .await?;
            if let Some(row) = row {
                let absolute_expiry = uint(row.try_get(2)?);
                let sliding_expiry = if one_time {
                    super::sliding(used.policy, now, absolute_expiry)
                } else {
                    uint(row.try_get(3)?)
                };
                return Ok(Ok(RefreshGrant {
                    authorization: from_json::<Authorization>(row.try_get(1)?)?,
                    family: row.try_get(0)?,
                    absolute_expiry,
                    sliding_expiry,
                    consumed: false,
                    consumed_at: None,
                }));
            }
            // Refused: say why. Usable after all, it changed between the two statements: try
            // again.
            match judge_refresh(c, &key, &used.client_id, used.policy, now).await? {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(OpError::Raced),
            }
        })
    }

    /// Judges a use of the token without using it; a reuse revokes the family. `None`: it
    /// is usable.
    pub(super) async fn judge_refresh(
        &self,
        key: Vec<u8>,
        client_id: String,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Option<RefreshRefusal>, StoreError> {
        run!(self, |c| judge_refresh(c, &key, &client_id, policy, now)
            .await)
    }

    pub(super) async fn revoke_refresh(
        &self,
        key: Vec<u8>,
        client_id: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        run!(self, |c| {
            let tx = c.transaction().await?;
            let row = one(
                &tx,
                "SELECT family, client_id FROM isogate_refresh_tokens WHERE hash = $1",
                &[&key],
            )
            .await?;
            let Some(row) = row else { return Ok(false) };
            let (family, owner): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if owner != client_id {
                return Ok(false);
            }
            revoke_family(&tx, &family, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub(super) async fn access_token_revoked(&self, jti: String) -> Result<bool, StoreError> {
        run!(self, |c| {
            let sql = "SELECT 1 FROM isogate_revoked_tokens WHERE jti = $1";
            Ok(one(&*c, sql, &[&jti]).await?.is_some())
        })
    }

    /// Revokes access token `jti` until its `exp`.
    pub(super) async fn revoke_access_token(
        &self,
        jti: String,
        exp: u64,
    ) -> Result<(), StoreError> {
        let exp = int(exp);
        run!(self, |c| {
            exec(
                &*c,
                "WITH revoked AS (
                     INSERT INTO isogate_revoked_tokens (jti, exp) VALUES ($1, $2)
                     ON CONFLICT (jti) DO NOTHING RETURNING 1
                 )
                 SELECT pg_notify('isogate_revoked', '') FROM revoked",
                &[&jti, &exp],
            )
            .await?;
            Ok(())
        })
    }

    /// The revocations after sequence number `cursor`, and those of the last
    /// `LATE_COMMITS_MS` in any case (a revocation numbered before another may commit after
    /// it), with the highest sequence number read.
    pub(super) async fn revoked_since(
        &self,
        cursor: i64,
        now: u64,
    ) -> Result<(Vec<(String, u64)>, i64), StoreError> {
        let at = int(now);
        run!(self, |c| {
            let rows = all(
                &*c,
                "SELECT jti, exp, seq FROM isogate_revoked_tokens
                 WHERE (seq > $1 OR revoked_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - $2)
                   AND exp >= $3",
                &[&cursor, &LATE_COMMITS_MS, &at],
            )
            .await?;
            let mut next = cursor;
            let mut revoked = Vec::with_capacity(rows.len());
            for row in rows {
                next = next.max(row.try_get(2)?);
                revoked.push((row.try_get(0)?, uint(row.try_get(1)?)));
            }
            Ok((revoked, next))
        })
    }

    pub(super) async fn consent(
        &self,
        subject: String,
        client_id: String,
        now: u64,
    ) -> Result<Option<Consent>, StoreError> {
        let at = int(now);
        run!(self, |c| {
            let rows = all(
                &*c,
                "SELECT scope, resource FROM isogate_consents
                 WHERE subject = $1 AND client_id = $2 AND expires_at >= $3",
                &[&subject, &client_id, &at],
            )
            .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut approved = BTreeSet::new();
            for row in rows {
                approved.insert((row.try_get(0)?, row.try_get(1)?));
            }
            Ok(Some(Consent { approved }))
        })
    }

    pub(super) async fn remember_consent(
        &self,
        subject: String,
        client_id: String,
        approved: BTreeSet<(String, String)>,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let (until, at) = (int(until), int(now));
        let (scopes, resources): (Vec<String>, Vec<String>) = approved.into_iter().unzip();
        run!(self, |c| {
            let tx = c.transaction().await?;
            // What is still in force stays, for the new lifetime; what has expired does not
            // come back.
            exec(
                &tx,
                "UPDATE isogate_consents SET expires_at = $3
                 WHERE subject = $1 AND client_id = $2 AND expires_at >= $4",
                &[&subject, &client_id, &until, &at],
            )
            .await?;
            exec(
                &tx,
                "INSERT INTO isogate_consents (subject, client_id, scope, resource, expires_at)
                 SELECT $1, $2, s, r, $3 FROM UNNEST($4::TEXT[], $5::TEXT[]) AS t (s, r)
                 ON CONFLICT (subject, client_id, scope, resource)
                 DO UPDATE SET expires_at = EXCLUDED.expires_at",
                &[&subject, &client_id, &until, &scopes, &resources],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn register_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        let json = to_json(&client)?;
        let issued_at = int(client.issued_at);
        run!(self, |c| {
            let inserted = exec(
                &*c,
                "INSERT INTO isogate_clients (client_id, client_json, issued_at)
                 VALUES ($1, $2, $3) ON CONFLICT (client_id) DO NOTHING",
                &[&client.client_id, &json, &issued_at],
            )
            .await?;
            if inserted == 0 {
                return Err(OpError::Store(StoreError::Failed(
                    "a random client_id collided with a stored one".into(),
                )));
            }
            Ok(())
        })
    }

    pub(super) async fn registered_client(
        &self,
        client_id: String,
    ) -> Result<Option<RegisteredClient>, StoreError> {
        run!(self, |c| {
            let row = one(
                &*c,
                "SELECT client_json FROM isogate_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
            match row {
                Some(row) => Ok(Some(from_json(&row.try_get::<_, String>(0)?)?)),
                None => Ok(None),
            }
        })
    }

    /// Removes what expired before `now`, unless another instance is sweeping; returns how
    /// many rows.
    /// Records the assertion `key` as spent until `expires_at`, in one statement: false when
    /// it was spent before, at any instance, and has not expired by `now`.
    pub(super) async fn spend_assertion(
        &self,
        key: Vec<u8>,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (until, at) = (int(expires_at), int(now));
        run!(self, |c| {
            let spent = exec(
                &*c,
                "INSERT INTO isogate_assertions (key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE isogate_assertions.expires_at < $3",
                &[&key, &until, &at],
            )
            .await?;
            Ok(spent == 1)
        })
    }

    pub(super) async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let at = int(now);
        run!(self, |c| {
            let tx = c.transaction().await?;
            let locked = one(&tx, "SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
                .await?
                .map(|row| row.try_get::<_, bool>(0))
                .transpose()?
                .unwrap_or(false);
            if !locked {
                return Ok(0);
            }
            let mut removed = 0;
            let grants = [
                "DELETE FROM isogate_codes WHERE keep_until < $1",
                "DELETE FROM isogate_refresh_tokens WHERE absolute_expiry < $1",
                "DELETE FROM isogate_families WHERE keep_until < $1",
                "DELETE FROM isogate_access_tokens WHERE exp < $1",
                "DELETE FROM isogate_revoked_tokens WHERE exp < $1",
                "DELETE FROM isogate_consents WHERE expires_at < $1",
                "DELETE FROM isogate_assertions WHERE expires_at < $1",
            ];
            for sql in grants.into_iter().chain(sessions::SWEEP) {
                removed += exec(&tx, sql, &[&at]).await?;
            }
            tx.commit().await?;
            Ok(usize::try_from(removed).unwrap_or(usize::MAX))
        })
    }
}

pub(super) type Conn = deadpool_postgres::Object;

const SELECT_REFRESH: &str = "
    SELECT r.family, r.authorization_json, r.absolute_expiry, r.sliding_expiry, r.consumed_at,
        COALESCE(f.revoked, FALSE)
    FROM isogate_refresh_tokens r LEFT JOIN isogate_families f ON f.id = r.family
    WHERE r.hash = $1";

fn refresh_row(row: &Row) -> Result<(RefreshGrant, bool), OpError> {
    let consumed_at: Option<i64> = row.try_get(4)?;
    let grant = RefreshGrant {
        family: row.try_get(0)?,
        authorization: from_json(row.try_get(1)?)?,
        absolute_expiry: uint(row.try_get(2)?),
        sliding_expiry: uint(row.try_get(3)?),
        consumed: consumed_at.is_some(),
        consumed_at: consumed_at.map(uint),
    };
    Ok((grant, row.try_get(5)?))
}

/// What using the refresh token would come to, in the order of the rules; a reuse revokes
/// its family. `None`: it is usable.
async fn judge_refresh(
    c: &mut Conn,
    key: &[u8],
    client_id: &str,
    policy: RefreshPolicy,
    now: u64,
) -> Result<Option<RefreshRefusal>, OpError> {
    let tx = c.transaction().await?;
    let Some(row) = one(&tx, SELECT_REFRESH, &[&key]).await? else {
        return Ok(Some(RefreshRefusal::Unknown));
    };
    let (grant, revoked) = refresh_row(&row)?;
    let refusal = match grant.judge(revoked, client_id, policy, now) {
        Verdict::Use => return Ok(None),
        Verdict::Refuse(refusal) => refusal,
        Verdict::RevokeFamily => {
            revoke_family(&tx, &grant.family, now).await?;
            RefreshRefusal::Reused
        }
    };
    tx.commit().await?;
    Ok(Some(refusal))
}

/// Why the code cannot be redeemed; a redeemed one revokes its family.
async fn refuse_code(c: &mut Conn, key: &[u8], now: u64) -> Result<CodeRefusal, OpError> {
    let tx = c.transaction().await?;
    let row = one(
        &tx,
        "SELECT family, expires_at FROM isogate_codes WHERE hash = $1",
        &[&key],
    )
    .await?;
    let Some(row) = row else {
        return Ok(CodeRefusal::Unknown);
    };
    let family: Option<String> = row.try_get(0)?;
    let refusal = match family {
        Some(family) => {
            revoke_family(&tx, &family, now).await?;
            CodeRefusal::Replayed
        }
        None if now > uint(row.try_get(1)?) => CodeRefusal::Expired,
        None => return Err(OpError::Raced),
    };
    tx.commit().await?;
    Ok(refusal)
}

/// Revokes `family`: its refresh tokens stop working, its access tokens are revoked. Two
/// statements: the second reads after the first holds the family's row, so an access token
/// recorded by a refresh that committed meanwhile is revoked too.
async fn revoke_family(
    tx: &deadpool_postgres::Transaction<'_>,
    family: &str,
    now: u64,
) -> Result<(), OpError> {
    let keep = int(now + KEEP_REDEEMED_CODE);
    exec(
        tx,
        "UPDATE isogate_families SET revoked = TRUE, keep_until = GREATEST(keep_until, $2)
         WHERE id = $1",
        &[&family, &keep],
    )
    .await?;
    let access_tokens = exec(
        tx,
        "INSERT INTO isogate_revoked_tokens (jti, exp)
         SELECT jti, exp FROM isogate_access_tokens WHERE family = $1
         ON CONFLICT (jti) DO NOTHING",
        &[&family],
    )
    .await?;
    // Delivered when the transaction commits: every instance reads the revocations then.
    exec(tx, "SELECT pg_notify('isogate_revoked', '')", &[]).await?;
    tracing::info!(family, access_tokens, "grant family revoked");
    Ok(())
}

/// Sends `LISTEN isogate_revoked` on `connected` and wakes `wake` on each notification, until
/// the connection ends.
async fn drive<S, T>(
    (client, mut connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
    wake: &tokio::sync::Notify,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::future::Future;
    use std::task::Poll;
    let mut listen = std::pin::pin!(client.batch_execute("LISTEN isogate_revoked"));
    let mut listening = false;
    std::future::poll_fn(|cx| {
        // The connection must be polled for the LISTEN to be sent and answered.
        if !listening {
            if let Poll::Ready(result) = listen.as_mut().poll(cx) {
                result?;
                listening = true;
                wake.notify_one();
            }
        }
        loop {
            match connection.poll_message(cx) {
                Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notification(_)))) => {
                    wake.notify_one()
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Brings the schema up to date in one transaction, under an advisory lock.
async fn migrate(client: &mut Conn) -> Result<(), OpError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS isogate_schema (id INT PRIMARY KEY, version INT NOT NULL)",
    )
    .await?;
    let found: i32 = match tx
        .query_opt("SELECT version FROM isogate_schema WHERE id = 1", &[])
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => 0,
    };
    let known = MIGRATIONS.len();
    let from = usize::try_from(found).unwrap_or(usize::MAX);
    if from > known {
        return Err(OpError::Store(StoreError::SchemaTooNew { found, known }));
    }
    if from == known {
        return Ok(());
    }
    for migration in &MIGRATIONS[from..] {
        tx.batch_execute(migration).await?;
    }
    let version = i32::try_from(known).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO isogate_schema (id, version) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
        &[&version],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(from = found, to = known, "store schema migrated");
    Ok(())
}

/// A statement's failure, before it is told apart for the caller.
#[derive(Debug)]
enum OpError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
    /// The state changed between two statements: try again.
    Raced,
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Pg(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl OpError {
    fn retryable(&self) -> bool {
        match self {
            OpError::Raced => true,
            OpError::Pg(e) => matches!(
                e.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            ),
            OpError::Store(_) => false,
        }
    }

    fn into_store(self) -> StoreError {
        match self {
            OpError::Store(e) => e,
            OpError::Raced => StoreError::Failed("the record kept changing; try again".into()),
            OpError::Pg(e) => {
                let message = match e.as_db_error() {
                    Some(db) => format!("{}: {}", db.code().code(), db.message()),
                    None => e.to_string(),
                };
                // A connection that broke, or a server that is shutting down or starting.
                let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
                let unreachable = e.is_closed()
                    || io
                    || e.code().is_some_and(|c| {
                        c.code().starts_with("08")
                            || *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CRASH_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                    });
                if unreachable {
                    StoreError::Unavailable(message)
                } else {
                    StoreError::Failed(message)
                }
            }
        }
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

async fn one(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, OpError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn all(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Vec<Row>, OpError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn exec(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64, OpError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::failed)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, OpError> {
    serde_json::from_str(text).map_err(|e| {
        OpError::Store(StoreError::Failed(format!(
            "a stored grant is unreadable: {e}"
        )))
    })
}

/// Seconds since the epoch as PostgreSQL's BIGINT.
pub(super) fn int(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

pub(super) fn uint(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}
