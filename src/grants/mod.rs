//! Durable grants (SPEC §6, §7): authorization codes, refresh tokens and their families,
//! consents and revoked access tokens. Codes and refresh tokens are random, handed out once,
//! and stored only as their SHA-256. Two stores keep them: the embedded redb file (the
//! default) and PostgreSQL (`[store]`, for a fleet); both take each state change as one atomic
//! step and pass one test suite (`tests/it/grants.rs`).

mod postgres;
mod redb;
mod revoked;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::random_token;

pub use postgres::{Health, PgStore};
pub use redb::RedbStore;
pub use revoked::Revoked;

/// How long a redeemed code is remembered, so that a replay revokes what it issued.
const KEEP_REDEEMED_CODE: u64 = 24 * 3600;

/// The store failed; the request that needed it gets `503 temporarily_unavailable` when the
/// store cannot be reached, a server error otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached, or did not answer in time.
    #[error("the grant store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error, or a record is unreadable.
    #[error("the grant store failed: {0}")]
    Failed(String),
    /// Another process holds the lock of the redb file at this path: most likely another
    /// isogate on the same `data_dir`.
    #[error(
        "{0} is locked by another process: another isogate may be using this data_dir; stop it, \
         or give each isogate a data_dir of its own"
    )]
    Locked(std::path::PathBuf),
    /// The database's schema is newer than this binary knows: another, newer isogate
    /// migrated it. Never downgraded.
    #[error(
        "the store's schema is at version {found}, newer than this isogate knows ({known}); \
         run the newer isogate, or a database of this version's own"
    )]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest version this binary knows.
        known: usize,
    },
}

impl StoreError {
    pub(crate) fn failed(e: impl std::fmt::Display) -> Self {
        StoreError::Failed(e.to_string())
    }
}

/// What a user let a client have: remembered by a code and by every refresh token after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The client it was granted to.
    pub client_id: String,
    /// The user (`sub`).
    pub subject: String,
    /// Every scope granted, as requested (`offline_access` and identity scopes included).
    pub scopes: Vec<String>,
    /// The `resource` values of the authorize request (RFC 8707), possibly none.
    pub resources: Vec<String>,
    /// When the user logged in (seconds since the epoch).
    pub auth_time: u64,
    /// The thumbprint of the DPoP key a public client's refresh tokens are bound to (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// An authorization code's grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// What was authorized.
    pub authorization: Authorization,
    /// The redirect URI the code was sent to; redemption must name it again.
    pub redirect_uri: String,
    /// The PKCE S256 challenge, when the client sent one.
    pub code_challenge: Option<String>,
    /// The OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<String>,
}

/// A refresh token's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    /// What the user authorized, unchanged for the token's whole family.
    pub authorization: Authorization,
    /// The family: every refresh token rotated from one code redemption.
    pub family: String,
    /// The absolute end of the family (seconds since the epoch).
    pub absolute_expiry: u64,
    /// The end of this token unless used before (seconds since the epoch).
    pub sliding_expiry: u64,
    /// Rotated away (one-time use): using it again revokes the family.
    pub consumed: bool,
    /// When it was rotated away (seconds since the epoch), for the reuse grace.
    #[serde(default)]
    pub consumed_at: Option<u64>,
}

/// How refresh tokens of a client behave.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Rotate on every use (`refresh_token_usage = "one_time"`).
    pub one_time: bool,
    /// `refresh_token_lifetime`.
    pub absolute: Duration,
    /// `refresh_token_sliding_lifetime`; zero for none.
    pub sliding: Duration,
    /// `refresh_token_reuse_grace`: a rotated token used again this soon after its rotation
    /// gets new tokens too, instead of revoking the family; zero for never.
    pub reuse_grace: Duration,
}

/// Why a refresh token is refused (each is `invalid_grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshRefusal {
    /// Never issued, swept, or issued to another client.
    #[error("the refresh token is unknown")]
    Unknown,
    /// Past its absolute or sliding lifetime.
    #[error("the refresh token has expired")]
    Expired,
    /// Its family was revoked.
    #[error("the refresh token has been revoked")]
    Revoked,
    /// A rotated-away token was used again: the family is revoked now.
    #[error("the refresh token was already used; every token issued with it is revoked")]
    Reused,
}

/// A refresh token used successfully.
#[derive(Debug)]
pub struct Refreshed {
    /// The grant it carried.
    pub grant: RefreshGrant,
    /// The refresh token to return: a new one after rotation, else the one presented.
    pub token: String,
}

/// A consent a user gave a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The `(scope, API resource)` pairs approved (`""` for an identity scope or
    /// `offline_access`); see [`crate::resources::consent_pairs`]. A consent stored before pairs
    /// were kept reads as approving nothing, so the user is asked again.
    #[serde(default)]
    pub approved: BTreeSet<(String, String)>,
}

/// A client that registered itself (SPEC §9), as stored: the metadata it was accepted with.
/// What it may do is worked out from this and `[issuer.registration]` at each request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    /// Made by isogate: `reg_` and 128 random bits.
    pub client_id: String,
    /// `client_name`, shown on the consent page.
    pub client_name: Option<String>,
    /// `redirect_uris`.
    pub redirect_uris: Vec<String>,
    /// `grant_types`.
    pub grant_types: Vec<String>,
    /// `token_endpoint_auth_method`: `none`, `client_secret_basic` or `private_key_jwt`.
    pub token_endpoint_auth_method: String,
    /// `jwks` of a private_key_jwt client, as the JSON it registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// `jwks_uri` of a private_key_jwt client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// `scope`, space-separated.
    pub scope: String,
    /// The secret's stored form (`sha256:…`), for a confidential client.
    pub secret: Option<String>,
    /// `client_id_issued_at`, seconds since the epoch.
    pub issued_at: u64,
}

/// An access token about to be handed out, recorded in the same step that spends the code or
/// refresh token it comes from: revoking the grant later revokes it too.
#[derive(Debug, Clone, Copy)]
pub struct AccessToken<'a> {
    /// Its `jti`.
    pub jti: &'a str,
    /// Its `exp` (seconds since the epoch).
    pub exp: u64,
}

/// A code redeemed: the family of everything issued from it.
#[derive(Debug)]
pub struct Redeemed {
    /// The family id.
    pub family: String,
    /// The first refresh token, when one was asked for.
    pub refresh_token: Option<String>,
}

/// Where the grants are kept.
#[derive(Clone)]
enum Backend {
    Redb(Arc<RedbStore>),
    Postgres(Arc<PgStore>),
}

/// The grants, over the embedded store or PostgreSQL (SPEC §7). Every state change is one
/// atomic step of the store, so two requests racing with the same code or refresh token
/// cannot both win, on one instance or many.
#[derive(Clone)]
pub struct Grants {
    backend: Backend,
    /// The revoked access tokens the gateway refuses, kept current by this store.
    revoked: Arc<Revoked>,
}

/// Runs a redb call off the async threads (a commit waits for the disk).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::failed(e)))
}

/// Calls `$op` on the backend: on redb off the async threads, with owned arguments.
macro_rules! on_backend {
    ($self:ident, |$store:ident| $call:expr) => {
        match &$self.backend {
            Backend::Redb(store) => {
                let $store = store.clone();
                blocking(move || $call).await
            }
            Backend::Postgres(store) => {
                let $store = store.clone();
                async move { $call.await }.await
            }
        }
    };
}

impl Grants {
    /// Grants kept in `dir/grants.redb` (see [`RedbStore::open`]).
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Grants {
            backend: Backend::Redb(Arc::new(RedbStore::open(dir)?)),
            revoked: Arc::default(),
        })
    }

    /// Grants kept in PostgreSQL (see [`PgStore`]).
    pub fn postgres(store: Arc<PgStore>) -> Self {
        Grants {
            backend: Backend::Postgres(store),
            revoked: Arc::default(),
        }
    }

    /// The revoked access tokens, for the gateway.
    pub fn revoked(&self) -> &Arc<Revoked> {
        &self.revoked
    }

    /// Brings [`Grants::revoked`] up to date with the store: every revocation of this instance
    /// and, on PostgreSQL, of every other. Called after each revocation here, and every second
    /// on PostgreSQL.
    pub async fn sync_revocations(&self, now: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(store) => {
                let store = store.clone();
                let revoked = blocking(move || store.revoked(now)).await?;
                self.revoked.extend(revoked, now);
            }
            Backend::Postgres(store) => {
                let cursor = self
                    .revoked
                    .cursor
                    .load(std::sync::atomic::Ordering::Acquire);
                let (revoked, next) = store.revoked_since(cursor, now).await?;
                self.revoked.extend(revoked, now);
                self.revoked
                    .cursor
                    .fetch_max(next, std::sync::atomic::Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// After a step that revoked something: the gateway learns of it at once. A failure here
    /// only delays it to the next poll.
    async fn revoked_now(&self, now: u64) {
        if let Err(e) = self.sync_revocations(now).await {
            tracing::warn!(error = %e, "reading the revoked access tokens failed");
        }
    }

    /// Revokes access token `jti` (one of this issuer's, expiring at `exp`): the gateway
    /// refuses it from now on, and introspection answers inactive.
    pub async fn revoke_access_token(
        &self,
        jti: &str,
        exp: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        on_backend!(self, |store| store.revoke_access_token(jti, exp))?;
        self.revoked_now(now).await;
        Ok(())
    }

    /// The PostgreSQL store, when the grants are kept there.
    pub fn pg(&self) -> Option<&Arc<PgStore>> {
        match &self.backend {
            Backend::Postgres(store) => Some(store),
            Backend::Redb(_) => None,
        }
    }

    /// Stores a new code for `grant`, valid for `lifetime`; returns the code.
    pub async fn issue_code(
        &self,
        grant: CodeGrant,
        lifetime: Duration,
        now: u64,
    ) -> Result<String, StoreError> {
        let code = random_token();
        let key = hash(&code);
        let expires_at = now + lifetime.as_secs();
        on_backend!(self, |store| store.insert_code(key, grant, expires_at))?;
        Ok(code)
    }

    /// The grant of `code` while it can be redeemed (issued, unused and unexpired), to check
    /// a request before [`Grants::redeem_code`] spends the code. A code redeemed before is a
    /// replay: everything issued from it is revoked now.
    pub async fn code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Result<CodeGrant, CodeRefusal>, StoreError> {
        let key = hash(code);
        let found = on_backend!(self, |store| store.code(key, now))?;
        if found == Err(CodeRefusal::Replayed) {
            self.revoked_now(now).await;
        }
        Ok(found)
    }

    /// Spends `code` (issued for `authorization`) once, recording `access` and, with
    /// `refresh`, a first refresh token under that policy, all in one step. A code spent
    /// before is a replay: everything issued from the first redemption is revoked.
    pub async fn redeem_code(
        &self,
        code: &str,
        authorization: &Authorization,
        now: u64,
        access: AccessToken<'_>,
        refresh: Option<RefreshPolicy>,
    ) -> Result<Result<Redeemed, CodeRefusal>, StoreError> {
        let key = hash(code);
        let family = random_token();
        let refresh_token = refresh.map(|_| random_token());
        let spend = Spend {
            family: family.clone(),
            jti: access.jti.to_owned(),
            exp: access.exp,
            refresh: refresh_token
                .as_deref()
                .zip(refresh)
                .map(|(token, policy)| {
                    let first = first_refresh(authorization.clone(), &family, policy, now);
                    (hash(token), first)
                }),
        };
        let spent = on_backend!(self, |store| store.redeem_code(key, now, spend))?;
        if spent == Err(CodeRefusal::Replayed) {
            self.revoked_now(now).await;
        }
        Ok(spent.map(|()| Redeemed {
            family,
            refresh_token,
        }))
    }

    /// Uses `token` for `client_id`: checks it, then rotates it (one-time use) or slides its
    /// expiry (reuse), recording `access` in its family in the same step. Using a rotated-away
    /// token revokes its whole family, unless it was rotated within `policy.reuse_grace`: then
    /// it gets a new successor of its own (several tabs or workers refreshing at once each get
    /// a working token).
    pub async fn use_refresh(
        &self,
        token: &str,
        client_id: &str,
        policy: RefreshPolicy,
        now: u64,
        access: AccessToken<'_>,
    ) -> Result<Result<Refreshed, RefreshRefusal>, StoreError> {
        let key = hash(token);
        let successor = policy.one_time.then(random_token);
        let used = Use {
            client_id: client_id.to_owned(),
            policy,
            jti: access.jti.to_owned(),
            exp: access.exp,
            successor: successor.as_deref().map(hash),
        };
        let grant = on_backend!(self, |store| store.use_refresh(key, now, used))?;
        if matches!(grant, Err(RefreshRefusal::Reused)) {
            self.revoked_now(now).await;
        }
        Ok(grant.map(|grant| Refreshed {
            grant,
            token: successor.unwrap_or_else(|| token.to_owned()),
        }))
    }

    /// Why `token` cannot be used by `client_id` under `policy` (after
    /// [`Grants::usable_refresh`] found nothing): a rotated-away token used again revokes its
    /// family here.
    pub async fn refuse_refresh(
        &self,
        token: &str,
        client_id: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<RefreshRefusal, StoreError> {
        let key = hash(token);
        let client_id = client_id.to_owned();
        let judged = on_backend!(self, |store| store
            .judge_refresh(key, client_id, policy, now))?;
        // Usable after all (it changed meanwhile): refused all the same, as nothing was used.
        Ok(judged.unwrap_or(RefreshRefusal::Unknown))
    }

    /// The refresh token `token` as stored, when it is live (for introspection).
    pub async fn refresh_grant(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        self.refresh_grant_within(token, Duration::ZERO, now).await
    }

    /// The refresh token `token` as stored, when [`Grants::use_refresh`] would take it under
    /// `policy`: live, or rotated away within the policy's reuse grace.
    pub async fn usable_refresh(
        &self,
        token: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        self.refresh_grant_within(token, policy.reuse_grace, now)
            .await
    }

    async fn refresh_grant_within(
        &self,
        token: &str,
        grace: Duration,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        let key = hash(token);
        let found = on_backend!(self, |store| store.refresh(key))?;
        Ok(found
            .filter(|(grant, revoked)| !revoked && grant.usable(grace, now))
            .map(|(grant, _)| grant))
    }

    /// Revokes the family of refresh token `token` when it belongs to `client_id` (RFC 7009:
    /// anything else is silently ignored). Returns whether something was revoked.
    pub async fn revoke_refresh(
        &self,
        token: &str,
        client_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let key = hash(token);
        let client_id = client_id.to_owned();
        let revoked = on_backend!(self, |store| store.revoke_refresh(key, client_id, now))?;
        if revoked {
            self.revoked_now(now).await;
        }
        Ok(revoked)
    }

    /// Whether access token `jti` was revoked (its family was).
    pub async fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        on_backend!(self, |store| store.access_token_revoked(jti))
    }

    /// What `subject` consented to for `client_id`, if it is still in force at `now`.
    pub async fn consent(
        &self,
        subject: &str,
        client_id: &str,
        now: u64,
    ) -> Result<Option<Consent>, StoreError> {
        let (subject, client_id) = (subject.to_owned(), client_id.to_owned());
        on_backend!(self, |store| store.consent(subject, client_id, now))
    }

    /// Adds `approved` to what `subject` approved for `client_id` (pairs approved before stay),
    /// and keeps the whole for `lifetime` from `now`.
    pub async fn remember_consent(
        &self,
        subject: &str,
        client_id: &str,
        approved: &BTreeSet<(String, String)>,
        lifetime: Duration,
        now: u64,
    ) -> Result<(), StoreError> {
        let (subject, client_id) = (subject.to_owned(), client_id.to_owned());
        let approved = approved.clone();
        let until = now + lifetime.as_secs();
        on_backend!(self, |store| store
            .remember_consent(subject, client_id, approved, until, now))
    }

    /// Stores a client that registered itself. Its id is random: one already taken is an
    /// error, never overwritten.
    pub async fn register_client(&self, client: &RegisteredClient) -> Result<(), StoreError> {
        let client = client.clone();
        on_backend!(self, |store| store.register_client(client))
    }

    /// The registered client `client_id`, if there is one.
    pub async fn registered_client(
        &self,
        client_id: &str,
    ) -> Result<Option<RegisteredClient>, StoreError> {
        let client_id = client_id.to_owned();
        on_backend!(self, |store| store.registered_client(client_id))
    }

    /// Spends the client assertion `jti` of `client_id` (private_key_jwt, SPEC §9), kept until
    /// `expires_at`: false when it was spent before, at this instance or another.
    pub async fn spend_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(client_id.as_bytes());
        context.update(&[0]);
        context.update(jti.as_bytes());
        let key = context.finish().as_ref().to_vec();
        on_backend!(self, |store| store.spend_assertion(key, expires_at, now))
    }

    /// Removes expired grants; returns how many.
    pub async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        on_backend!(self, |store| store.sweep(now))
    }
}

/// What spending a code writes (keys hashed).
#[derive(Debug)]
pub(crate) struct Spend {
    family: String,
    jti: String,
    exp: u64,
    /// The first refresh token's key and state.
    refresh: Option<(Vec<u8>, RefreshGrant)>,
}

/// What using a refresh token writes (keys hashed).
#[derive(Debug)]
pub(crate) struct Use {
    client_id: String,
    policy: RefreshPolicy,
    jti: String,
    exp: u64,
    /// The successor's key, for one-time use.
    successor: Option<Vec<u8>>,
}

/// Why a code is refused (each is `invalid_grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    /// Redeemed before: everything issued from it is revoked now.
    #[error("the code was already used; every token issued from it is revoked")]
    Replayed,
    /// Older than its lifetime.
    #[error("the code has expired")]
    Expired,
    /// Never issued (or swept).
    #[error("the code is unknown")]
    Unknown,
}

impl RefreshGrant {
    /// Whether it can be used at `now`: unexpired, and not rotated away (or rotated within
    /// `grace`).
    fn usable(&self, grace: Duration, now: u64) -> bool {
        (!self.consumed || self.in_grace(grace, now))
            && now <= self.absolute_expiry.min(self.sliding_expiry)
    }

    fn in_grace(&self, grace: Duration, now: u64) -> bool {
        self.consumed_at
            .is_some_and(|at| !grace.is_zero() && now <= at.saturating_add(grace.as_secs()))
    }

    /// What using it at `now` does, on a family revoked or not: SPEC §6's refresh rules in
    /// their order, the same on every store.
    fn judge(&self, revoked: bool, client_id: &str, policy: RefreshPolicy, now: u64) -> Verdict {
        if self.authorization.client_id != client_id {
            return Verdict::Refuse(RefreshRefusal::Unknown);
        }
        if revoked {
            return Verdict::Refuse(RefreshRefusal::Revoked);
        }
        if self.consumed && !self.in_grace(policy.reuse_grace, now) {
            return Verdict::RevokeFamily;
        }
        if now > self.absolute_expiry.min(self.sliding_expiry) {
            return Verdict::Refuse(RefreshRefusal::Expired);
        }
        Verdict::Use
    }

    /// The token after a use at `now` (rotated away, or slid), and its successor under
    /// one-time use.
    fn used(&self, policy: RefreshPolicy, now: u64) -> (RefreshGrant, Option<RefreshGrant>) {
        let slid = sliding(policy, now, self.absolute_expiry);
        if !policy.one_time {
            let updated = RefreshGrant {
                sliding_expiry: slid,
                ..self.clone()
            };
            return (updated.clone(), None);
        }
        let spent = RefreshGrant {
            consumed: true,
            // Within the grace, it stays consumed since its first rotation.
            consumed_at: self.consumed_at.or(Some(now)),
            ..self.clone()
        };
        let next = RefreshGrant {
            consumed: false,
            consumed_at: None,
            sliding_expiry: slid,
            ..self.clone()
        };
        (spent, Some(next))
    }
}

/// What a refresh token's use comes to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Use,
    Refuse(RefreshRefusal),
    /// A rotated-away token came back: revoke the family, refuse as reused.
    RevokeFamily,
}

/// A refresh token's first state, in `family` from `now`.
fn first_refresh(
    authorization: Authorization,
    family: &str,
    policy: RefreshPolicy,
    now: u64,
) -> RefreshGrant {
    let absolute_expiry = now + policy.absolute.as_secs();
    RefreshGrant {
        authorization,
        family: family.to_owned(),
        absolute_expiry,
        sliding_expiry: sliding(policy, now, absolute_expiry),
        consumed: false,
        consumed_at: None,
    }
}
fn sliding(policy: RefreshPolicy, now: u64, absolute_expiry: u64) -> u64 {
    if policy.sliding.is_zero() {
        absolute_expiry
    } else {
        (now + policy.sliding.as_secs()).min(absolute_expiry)
    }
}

/// The key a code, refresh token, session or pending id is stored under: its SHA-256.
pub(crate) fn hash(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn grant(consumed_at: Option<u64>) -> RefreshGrant {
        RefreshGrant {
            authorization: Authorization {
                client_id: "web".into(),
                subject: "818727".into(),
                scopes: vec!["read".into()],
                resources: vec!["urn:invoices".into()],
                auth_time: NOW,
                jkt: None,
            },
            family: "f".into(),
            absolute_expiry: NOW + 1000,
            sliding_expiry: NOW + 100,
            consumed: consumed_at.is_some(),
            consumed_at,
        }
    }

    fn policy(grace: u64) -> RefreshPolicy {
        RefreshPolicy {
            one_time: true,
            absolute: Duration::from_secs(1000),
            sliding: Duration::from_secs(100),
            reuse_grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn a_refresh_is_judged_by_client_then_revocation_then_reuse_then_expiry() {
        let judge = |g: &RefreshGrant, revoked, client, grace, at| {
            g.judge(revoked, client, policy(grace), at)
        };
        let live = grant(None);
        let spent = grant(Some(NOW));
        assert_eq!(judge(&live, false, "web", 0, NOW), Verdict::Use);
        // Another client's token is unknown to it, whatever else holds.
        assert_eq!(
            judge(&spent, true, "other", 0, NOW + 5000),
            Verdict::Refuse(RefreshRefusal::Unknown)
        );
        // A revoked family comes before a reuse.
        assert_eq!(
            judge(&spent, true, "web", 0, NOW),
            Verdict::Refuse(RefreshRefusal::Revoked)
        );
        // A reuse revokes even when the token has expired meanwhile.
        assert_eq!(
            judge(&spent, false, "web", 0, NOW + 5000),
            Verdict::RevokeFamily
        );
        // Within the grace (to its last second) it is used; after it, a reuse.
        assert_eq!(judge(&spent, false, "web", 30, NOW + 30), Verdict::Use);
        assert_eq!(
            judge(&spent, false, "web", 30, NOW + 31),
            Verdict::RevokeFamily
        );
        // Each lifetime ends it after its last second.
        assert_eq!(judge(&live, false, "web", 0, NOW + 100), Verdict::Use);
        assert_eq!(
            judge(&live, false, "web", 0, NOW + 101),
            Verdict::Refuse(RefreshRefusal::Expired)
        );
        let long_sliding = RefreshGrant {
            sliding_expiry: NOW + 5000,
            ..grant(None)
        };
        assert_eq!(
            judge(&long_sliding, false, "web", 0, NOW + 1001),
            Verdict::Refuse(RefreshRefusal::Expired)
        );
        // A token rotated before the grace existed (no time kept) is a reuse.
        let old = RefreshGrant {
            consumed: true,
            consumed_at: None,
            ..grant(None)
        };
        assert_eq!(judge(&old, false, "web", 30, NOW), Verdict::RevokeFamily);
        assert!(!old.usable(Duration::from_secs(30), NOW));
    }

    #[test]
    fn a_use_rotates_or_slides_and_the_grace_counts_from_the_first_rotation() {
        let (spent, next) = grant(None).used(policy(0), NOW + 10);
        assert!(spent.consumed);
        assert_eq!(spent.consumed_at, Some(NOW + 10));
        let next = next.unwrap();
        assert!(!next.consumed && next.consumed_at.is_none());
        assert_eq!(next.sliding_expiry, NOW + 110);
        assert_eq!(next.absolute_expiry, NOW + 1000);
        // Used again within the grace: it stays consumed since the first rotation, and its
        // own successor starts unused.
        let (again, successor) = spent.used(policy(30), NOW + 20);
        assert_eq!(again.consumed_at, Some(NOW + 10));
        let successor = successor.unwrap();
        assert!(!successor.consumed && successor.consumed_at.is_none());
        // The sliding window never passes the absolute end; none means the absolute end.
        let (_, late) = grant(None).used(policy(0), NOW + 950);
        assert_eq!(late.unwrap().sliding_expiry, NOW + 1000);
        let no_sliding = RefreshPolicy {
            sliding: Duration::ZERO,
            ..policy(0)
        };
        let (_, next) = grant(None).used(no_sliding, NOW + 10);
        assert_eq!(next.unwrap().sliding_expiry, NOW + 1000);
        // Reuse: the same token, slid.
        let reuse = RefreshPolicy {
            one_time: false,
            ..policy(0)
        };
        let (slid, none) = grant(None).used(reuse, NOW + 50);
        assert!(none.is_none() && !slid.consumed);
        assert_eq!(slid.sliding_expiry, NOW + 150);
    }

    #[test]
    fn a_first_refresh_token_lives_its_lifetimes_from_now() {
        let first = first_refresh(grant(None).authorization, "fam", policy(0), NOW);
        assert_eq!(first.family, "fam");
        assert_eq!(first.absolute_expiry, NOW + 1000);
        assert_eq!(first.sliding_expiry, NOW + 100);
        assert!(!first.consumed && first.consumed_at.is_none());
    }

    #[test]
    fn a_redeemed_code_is_remembered_for_a_day() {
        // So that a replay within a day still finds what it issued, and revokes it
        // (tests/it/grants.rs shows it on both stores).
        assert_eq!(KEEP_REDEEMED_CODE, 24 * 60 * 60);
    }

    #[test]
    fn a_token_is_usable_while_live_or_within_the_grace() {
        let spent = grant(Some(NOW));
        assert!(grant(None).usable(Duration::ZERO, NOW + 100));
        assert!(!grant(None).usable(Duration::ZERO, NOW + 101));
        assert!(!spent.usable(Duration::ZERO, NOW));
        assert!(spent.usable(Duration::from_secs(30), NOW + 30));
        assert!(!spent.usable(Duration::from_secs(30), NOW + 31));
    }
}
