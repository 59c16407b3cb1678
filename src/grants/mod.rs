//! Durable grants (SPEC §6): authorization codes, refresh tokens and their families, and
//! consents. Codes and refresh tokens are random, handed out once, and stored only as their
//! SHA-256; every state change is one compare-and-swap on the [`GrantStore`], so two requests
//! racing with the same code or refresh token cannot both win.

pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::protocol::random_token;

pub use store::{GrantStore, Record, RedbStore, StoreError, Table};

/// How long a redeemed code is remembered, so that a replay revokes what it issued.
const KEEP_REDEEMED_CODE: u64 = 24 * 3600;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeRecord {
    grant: CodeGrant,
    expires_at: u64,
    /// Once redeemed: the family of what was issued from it.
    redeemed: Option<String>,
}

/// The outcome of redeeming a code.
#[derive(Debug)]
pub enum Redemption {
    /// The first use: the grant, and the new family everything issued from it belongs to.
    Redeemed {
        /// What the code remembers.
        grant: CodeGrant,
        /// The family id for refresh tokens and access tokens issued now.
        family: String,
    },
    /// Used before; its family has now been revoked.
    Replayed,
    /// Older than its lifetime.
    Expired,
    /// Never issued (or swept).
    Unknown,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FamilyRecord {
    revoked: bool,
    /// `jti` and `exp` of the access tokens issued in the family.
    access_tokens: Vec<(String, u64)>,
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

/// The grant logic over a [`GrantStore`].
#[derive(Clone)]
pub struct Grants {
    store: Arc<dyn GrantStore>,
}

impl Grants {
    /// Grants kept in `store`.
    pub fn new(store: Arc<dyn GrantStore>) -> Self {
        Grants { store }
    }

    /// Grants kept in `dir/grants.redb` (see [`RedbStore::open`]).
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Grants::new(Arc::new(RedbStore::open(dir)?)))
    }

    /// Stores a new code for `grant`, valid for `lifetime`; returns the code.
    pub fn issue_code(
        &self,
        grant: CodeGrant,
        lifetime: Duration,
        now: u64,
    ) -> Result<String, StoreError> {
        let code = random_token();
        let expires_at = now + lifetime.as_secs();
        let record = CodeRecord {
            grant,
            expires_at,
            redeemed: None,
        };
        self.insert(Table::Codes, &hash(&code), &record, expires_at)?;
        Ok(code)
    }

    /// The grant of `code` while it can be redeemed (issued, unused and unexpired), to check
    /// a request before [`Grants::redeem_code`] spends the code.
    pub fn code(&self, code: &str, now: u64) -> Result<Option<CodeGrant>, StoreError> {
        Ok(self
            .read::<CodeRecord>(Table::Codes, &hash(code))?
            .map(|(_, r)| r)
            .filter(|r| r.redeemed.is_none() && now <= r.expires_at)
            .map(|r| r.grant))
    }

    /// Redeems `code` once. A second redemption revokes everything issued from the first.
    pub fn redeem_code(&self, code: &str, now: u64) -> Result<Redemption, StoreError> {
        let key = hash(code);
        let Some((current, record)) = self.read::<CodeRecord>(Table::Codes, &key)? else {
            return Ok(Redemption::Unknown);
        };
        if let Some(family) = &record.redeemed {
            self.revoke_family(family, now)?;
            return Ok(Redemption::Replayed);
        }
        if now > record.expires_at {
            return Ok(Redemption::Expired);
        }
        let family = random_token();
        let redeemed = CodeRecord {
            redeemed: Some(family.clone()),
            ..record.clone()
        };
        let updated = to_record(&redeemed, now + KEEP_REDEEMED_CODE)?;
        if !self
            .store
            .swap(Table::Codes, &key, Some(&current), &updated)?
        {
            // Another request redeemed it between our read and write: this one is the replay.
            return self.redeem_code(code, now);
        }
        Ok(Redemption::Redeemed {
            grant: record.grant,
            family,
        })
    }

    /// Stores a new refresh token for `authorization` in `family`; returns the token.
    pub fn issue_refresh(
        &self,
        authorization: Authorization,
        family: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<String, StoreError> {
        let absolute_expiry = now + policy.absolute.as_secs();
        let grant = RefreshGrant {
            authorization,
            family: family.to_owned(),
            absolute_expiry,
            sliding_expiry: sliding(policy, now, absolute_expiry),
            consumed: false,
            consumed_at: None,
        };
        self.store_refresh(&grant)
    }

    fn store_refresh(&self, grant: &RefreshGrant) -> Result<String, StoreError> {
        let token = random_token();
        self.insert(
            Table::RefreshTokens,
            &hash(&token),
            grant,
            grant.absolute_expiry,
        )?;
        Ok(token)
    }

    /// Uses `token` for `client_id`: checks it, then rotates it (one-time use) or slides its
    /// expiry (reuse). Using a rotated-away token revokes its whole family, unless it was
    /// rotated within `policy.reuse_grace`: then it gets a new successor of its own (several
    /// tabs or workers refreshing at once each get a working token).
    pub fn use_refresh(
        &self,
        token: &str,
        client_id: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Result<Refreshed, RefreshRefusal>, StoreError> {
        let key = hash(token);
        let Some((current, grant)) = self.read::<RefreshGrant>(Table::RefreshTokens, &key)? else {
            return Ok(Err(RefreshRefusal::Unknown));
        };
        if grant.authorization.client_id != client_id {
            return Ok(Err(RefreshRefusal::Unknown));
        }
        if self.family_revoked(&grant.family)? {
            return Ok(Err(RefreshRefusal::Revoked));
        }
        let in_grace = grant.consumed_at.is_some_and(|at| {
            !policy.reuse_grace.is_zero() && now <= at.saturating_add(policy.reuse_grace.as_secs())
        });
        if grant.consumed && !in_grace {
            self.revoke_family(&grant.family, now)?;
            return Ok(Err(RefreshRefusal::Reused));
        }
        if now > grant.absolute_expiry.min(grant.sliding_expiry) {
            return Ok(Err(RefreshRefusal::Expired));
        }
        if grant.consumed {
            // Within the grace: a successor of its own; the token stays consumed.
            let next = RefreshGrant {
                consumed: false,
                consumed_at: None,
                sliding_expiry: sliding(policy, now, grant.absolute_expiry),
                ..grant
            };
            let token = self.store_refresh(&next)?;
            return Ok(Ok(Refreshed { grant: next, token }));
        }
        let updated = if policy.one_time {
            RefreshGrant {
                consumed: true,
                consumed_at: Some(now),
                ..grant.clone()
            }
        } else {
            RefreshGrant {
                sliding_expiry: sliding(policy, now, grant.absolute_expiry),
                ..grant.clone()
            }
        };
        let record = to_record(&updated, grant.absolute_expiry)?;
        if !self
            .store
            .swap(Table::RefreshTokens, &key, Some(&current), &record)?
        {
            // Raced by another use of the same token: judge again on what is stored now.
            return self.use_refresh(token, client_id, policy, now);
        }
        if !policy.one_time {
            return Ok(Ok(Refreshed {
                grant: updated,
                token: token.to_owned(),
            }));
        }
        let next = RefreshGrant {
            consumed: false,
            consumed_at: None,
            sliding_expiry: sliding(policy, now, grant.absolute_expiry),
            ..grant
        };
        let token = self.store_refresh(&next)?;
        Ok(Ok(Refreshed { grant: next, token }))
    }

    /// The refresh token `token` as stored, when it is live (for introspection).
    pub fn refresh_grant(&self, token: &str, now: u64) -> Result<Option<RefreshGrant>, StoreError> {
        self.refresh_grant_within(token, Duration::ZERO, now)
    }

    /// The refresh token `token` as stored, when [`Grants::use_refresh`] would take it under
    /// `policy`: live, or rotated away within the policy's reuse grace.
    pub fn usable_refresh(
        &self,
        token: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        self.refresh_grant_within(token, policy.reuse_grace, now)
    }

    fn refresh_grant_within(
        &self,
        token: &str,
        grace: Duration,
        now: u64,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        let Some((_, grant)) = self.read::<RefreshGrant>(Table::RefreshTokens, &hash(token))?
        else {
            return Ok(None);
        };
        let in_grace = grant
            .consumed_at
            .is_some_and(|at| !grace.is_zero() && now <= at.saturating_add(grace.as_secs()));
        let live = (!grant.consumed || in_grace)
            && now <= grant.absolute_expiry.min(grant.sliding_expiry)
            && !self.family_revoked(&grant.family)?;
        Ok(live.then_some(grant))
    }

    /// Revokes the family of refresh token `token` when it belongs to `client_id` (RFC 7009:
    /// anything else is silently ignored). Returns whether something was revoked.
    pub fn revoke_refresh(
        &self,
        token: &str,
        client_id: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        match self.read::<RefreshGrant>(Table::RefreshTokens, &hash(token))? {
            Some((_, grant)) if grant.authorization.client_id == client_id => {
                self.revoke_family(&grant.family, now)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Remembers that access token `jti` (expiring at `exp`) was issued in `family`, so that
    /// revoking the family makes it inactive at introspection.
    pub fn record_access_token(&self, family: &str, jti: &str, exp: u64) -> Result<(), StoreError> {
        let mut revoked = false;
        self.update_family(family, exp, |f| {
            f.access_tokens.push((jti.to_owned(), exp));
            revoked = f.revoked;
        })?;
        if revoked {
            // Revoked while this token was being issued (a replay racing the redemption).
            self.mark_revoked(jti, exp)?;
        }
        Ok(())
    }

    fn mark_revoked(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let key = revoked_jti_key(jti);
        if self.store.get(Table::Families, &key)?.is_none() {
            let marker = Record {
                value: Vec::new(),
                expires_at: exp,
            };
            self.store.swap(Table::Families, &key, None, &marker)?;
        }
        Ok(())
    }

    /// Whether access token `jti` belongs to a revoked family.
    pub fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(Table::Families, &revoked_jti_key(jti))?
            .is_some())
    }

    fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self
            .read::<FamilyRecord>(Table::Families, family.as_bytes())?
            .is_some_and(|(_, f)| f.revoked))
    }

    /// Revokes `family`: its refresh tokens stop working and its access tokens introspect as
    /// inactive.
    pub fn revoke_family(&self, family: &str, now: u64) -> Result<(), StoreError> {
        let mut issued = Vec::new();
        self.update_family(family, now + KEEP_REDEEMED_CODE, |f| {
            f.revoked = true;
            issued = f.access_tokens.clone();
        })?;
        for (jti, exp) in issued {
            self.mark_revoked(&jti, exp)?;
        }
        tracing::info!("grant family revoked");
        Ok(())
    }

    fn update_family(
        &self,
        family: &str,
        keep_until: u64,
        mut change: impl FnMut(&mut FamilyRecord),
    ) -> Result<(), StoreError> {
        loop {
            let current = self.read::<FamilyRecord>(Table::Families, family.as_bytes())?;
            let (expected, mut record) = match current {
                Some((raw, record)) => (Some(raw), record),
                None => (None, FamilyRecord::default()),
            };
            change(&mut record);
            let expires_at = expected
                .as_ref()
                .map_or(keep_until, |r| r.expires_at.max(keep_until));
            let updated = to_record(&record, expires_at)?;
            if self.store.swap(
                Table::Families,
                family.as_bytes(),
                expected.as_ref(),
                &updated,
            )? {
                return Ok(());
            }
        }
    }

    /// The scopes `subject` consented to for `client_id`, if any.
    pub fn consent(&self, subject: &str, client_id: &str) -> Result<Option<Consent>, StoreError> {
        Ok(self
            .read::<Consent>(Table::Consents, &consent_key(subject, client_id))?
            .map(|(_, c)| c))
    }

    /// Adds `approved` to what `subject` approved for `client_id` (pairs approved before stay),
    /// and keeps the whole for `lifetime` from `now`.
    pub fn remember_consent(
        &self,
        subject: &str,
        client_id: &str,
        approved: &BTreeSet<(String, String)>,
        lifetime: Duration,
        now: u64,
    ) -> Result<(), StoreError> {
        let key = consent_key(subject, client_id);
        loop {
            let current = self.store.get(Table::Consents, &key)?;
            let mut consent: Consent = current
                .as_ref()
                .filter(|r| r.expires_at > now)
                .and_then(|r| serde_json::from_slice(&r.value).ok())
                .unwrap_or_default();
            consent.approved.extend(approved.iter().cloned());
            let record = to_record(&consent, now + lifetime.as_secs())?;
            if self
                .store
                .swap(Table::Consents, &key, current.as_ref(), &record)?
            {
                return Ok(());
            }
        }
    }

    /// Removes expired grants; returns how many.
    pub fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        self.store.sweep(now)
    }

    fn insert<T: Serialize>(
        &self,
        table: Table,
        key: &[u8],
        value: &T,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let record = to_record(value, expires_at)?;
        if self.store.swap(table, key, None, &record)? {
            Ok(())
        } else {
            Err(StoreError::new("a random key collided with a stored one"))
        }
    }

    fn read<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<(Record, T)>, StoreError> {
        let Some(record) = self.store.get(table, key)? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&record.value)
            .map_err(|e| StoreError::new(format!("a stored grant is unreadable: {e}")))?;
        Ok(Some((record, value)))
    }
}

fn to_record<T: Serialize>(value: &T, expires_at: u64) -> Result<Record, StoreError> {
    Ok(Record {
        value: serde_json::to_vec(value).map_err(|e| StoreError::new(e.to_string()))?,
        expires_at,
    })
}

fn sliding(policy: RefreshPolicy, now: u64, absolute_expiry: u64) -> u64 {
    if policy.sliding.is_zero() {
        absolute_expiry
    } else {
        (now + policy.sliding.as_secs()).min(absolute_expiry)
    }
}

fn consent_key(subject: &str, client_id: &str) -> Vec<u8> {
    // Length-prefixed, so no two (subject, client) pairs share a key.
    format!("{}:{subject}{client_id}", subject.len()).into_bytes()
}

fn revoked_jti_key(jti: &str) -> Vec<u8> {
    format!("revoked-jti:{jti}").into_bytes()
}

/// The key a code or refresh token is stored under: its SHA-256.
fn hash(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests;
