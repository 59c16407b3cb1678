//! The embedded store: the grants in one redb file, a few tables of JSON records, each with
//! an expiry. redb runs one write transaction at a time, so each state change reads and
//! writes inside one transaction; every commit is durable before it returns, so a grant
//! survives a crash (`kill -9`) as soon as it is handed out.

use std::path::Path;

use std::collections::BTreeSet;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{
    CodeGrant, CodeRefusal, Consent, RefreshGrant, RefreshPolicy, RefreshRefusal, RegisteredClient,
    Spend, StoreError, Use, Verdict, KEEP_REDEEMED_CODE,
};

/// The tables of grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// Authorization codes, by SHA-256 of the code.
    Codes,
    /// Refresh tokens, by SHA-256 of the token.
    RefreshTokens,
    /// Refresh token families (one per code redemption): revoked or not, and the access
    /// tokens issued in them.
    Families,
    /// Consents, by subject and client.
    Consents,
    /// Clients that registered themselves, by `client_id`; never expire.
    Clients,
    /// Spent client assertions (private_key_jwt), by SHA-256 of `client_id` and `jti`, until
    /// the assertion expires.
    Assertions,
}

impl Table {
    const ALL: [Table; 6] = [
        Table::Codes,
        Table::RefreshTokens,
        Table::Families,
        Table::Consents,
        Table::Clients,
        Table::Assertions,
    ];

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Codes => "codes",
            Table::RefreshTokens => "refresh_tokens",
            Table::Families => "families",
            Table::Consents => "consents",
            Table::Clients => "clients",
            Table::Assertions => "assertions",
        })
    }
}

/// The grants in one redb file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `dir/grants.redb`, creating `dir` with mode 0700 when missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)
            .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("grants.redb");
        let db = Database::create(&path).map_err(|e| match e {
            // redb locks the file while it is open, in any process.
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => StoreError::Locked(path.clone()),
            e => StoreError::Failed(format!("cannot open {}: {e}", path.display())),
        })?;
        let tx = db.begin_write().map_err(StoreError::failed)?;
        for table in Table::ALL {
            tx.open_table(table.definition())
                .map_err(StoreError::failed)?;
        }
        tx.commit().map_err(StoreError::failed)?;
        Ok(RedbStore { db })
    }
}

/// Stored as 8 bytes of big-endian expiry, then the value.
fn encode(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + record.value.len());
    bytes.extend_from_slice(&record.expires_at.to_be_bytes());
    bytes.extend_from_slice(&record.value);
    bytes
}

fn decode(bytes: &[u8]) -> Option<Record> {
    let (expiry, value) = bytes.split_first_chunk::<8>()?;
    Some(Record {
        value: value.to_vec(),
        expires_at: u64::from_be_bytes(*expiry),
    })
}

/// A record's bytes and when it may be swept (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// The serialised record.
    value: Vec<u8>,
    /// After this second the record is expired and [`RedbStore::sweep`] removes it.
    expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeRecord {
    grant: CodeGrant,
    expires_at: u64,
    /// Once redeemed: the family of what was issued from it.
    redeemed: Option<String>,
}

impl CodeRecord {
    /// Issued, unused and unexpired at `now`.
    fn redeemable(&self, now: u64) -> bool {
        self.redeemed.is_none() && now <= self.expires_at
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FamilyRecord {
    revoked: bool,
    /// `jti` and `exp` of the access tokens issued in the family.
    access_tokens: Vec<(String, u64)>,
}

/// One write transaction's tables, read and written as JSON records.
struct Tx(WriteTransaction);

impl Tx {
    fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<(u64, T)>, StoreError> {
        let open = self
            .0
            .open_table(table.definition())
            .map_err(StoreError::failed)?;
        typed(&open, key)
    }

    fn put<T: Serialize>(
        &self,
        table: Table,
        key: &[u8],
        value: &T,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let record = Record {
            value: serde_json::to_vec(value).map_err(StoreError::failed)?,
            expires_at,
        };
        let mut open = self
            .0
            .open_table(table.definition())
            .map_err(StoreError::failed)?;
        open.insert(key, encode(&record).as_slice())
            .map_err(StoreError::failed)?;
        Ok(())
    }

    /// Stores a new record under a random key.
    fn insert<T: Serialize>(
        &self,
        table: Table,
        key: &[u8],
        value: &T,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        if self.exists(table, key)? {
            return Err(StoreError::Failed(
                "a random key collided with a stored one".into(),
            ));
        }
        self.put(table, key, value, expires_at)
    }

    fn exists(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let open = self
            .0
            .open_table(table.definition())
            .map_err(StoreError::failed)?;
        let found = open.get(key).map_err(StoreError::failed)?.is_some();
        Ok(found)
    }

    fn commit(self) -> Result<(), StoreError> {
        self.0.commit().map_err(StoreError::failed)
    }

    fn family(&self, id: &str) -> Result<Option<(u64, FamilyRecord)>, StoreError> {
        self.get(Table::Families, id.as_bytes())
    }

    fn family_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.family(id)?.is_some_and(|(_, f)| f.revoked))
    }

    /// Changes family `id` (created when missing), kept at least until `keep_until`.
    fn update_family(
        &self,
        id: &str,
        keep_until: u64,
        change: impl FnOnce(&mut FamilyRecord),
    ) -> Result<FamilyRecord, StoreError> {
        let (expires_at, mut family) = self
            .family(id)?
            .unwrap_or((keep_until, FamilyRecord::default()));
        change(&mut family);
        self.put(
            Table::Families,
            id.as_bytes(),
            &family,
            expires_at.max(keep_until),
        )?;
        Ok(family)
    }

    /// Revokes family `id`: its refresh tokens stop working, its access tokens are revoked.
    fn revoke_family(&self, id: &str, now: u64) -> Result<(), StoreError> {
        let family = self.update_family(id, now + KEEP_REDEEMED_CODE, |f| f.revoked = true)?;
        for (jti, exp) in &family.access_tokens {
            self.mark_revoked(jti, *exp)?;
        }
        tracing::info!(
            family = %id,
            access_tokens = family.access_tokens.len(),
            "grant family revoked"
        );
        Ok(())
    }

    /// Marks access token `jti` revoked until `exp` (an empty record: its presence says it).
    fn mark_revoked(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let mut open = self
            .0
            .open_table(Table::Families.definition())
            .map_err(StoreError::failed)?;
        let marker = encode(&Record {
            value: Vec::new(),
            expires_at: exp,
        });
        open.insert(revoked_jti_key(jti).as_slice(), marker.as_slice())
            .map_err(StoreError::failed)?;
        Ok(())
    }

    /// Records access token `jti` in family `id`, kept at least until `keep_until`.
    fn record_access_token(
        &self,
        id: &str,
        jti: &str,
        exp: u64,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        self.update_family(id, keep_until, |f| {
            f.access_tokens.push((jti.to_owned(), exp))
        })?;
        Ok(())
    }

    /// Judges a use of the refresh token under `key` by `client_id`: its grant when it may be
    /// used, else why not (a reuse has revoked its family here, to be committed).
    fn judge_refresh(
        &self,
        key: &[u8],
        client_id: &str,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Result<RefreshGrant, RefreshRefusal>, StoreError> {
        let Some((_, grant)) = self.get::<RefreshGrant>(Table::RefreshTokens, key)? else {
            return Ok(Err(RefreshRefusal::Unknown));
        };
        let revoked = self.family_revoked(&grant.family)?;
        Ok(match grant.judge(revoked, client_id, policy, now) {
            Verdict::Use => Ok(grant),
            Verdict::Refuse(refusal) => Err(refusal),
            Verdict::RevokeFamily => {
                self.revoke_family(&grant.family, now)?;
                Err(RefreshRefusal::Reused)
            }
        })
    }
}

impl RedbStore {
    fn write(&self) -> Result<Tx, StoreError> {
        self.db.begin_write().map(Tx).map_err(StoreError::failed)
    }

    fn read<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<(u64, T)>, StoreError> {
        let tx = self.db.begin_read().map_err(StoreError::failed)?;
        let open = tx
            .open_table(table.definition())
            .map_err(StoreError::failed)?;
        typed(&open, key)
    }

    pub(super) fn insert_code(
        &self,
        key: Vec<u8>,
        grant: CodeGrant,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        let record = CodeRecord {
            grant,
            expires_at,
            redeemed: None,
        };
        tx.insert(Table::Codes, &key, &record, expires_at)?;
        tx.commit()
    }

    /// The code's grant while redeemable; a redeemed code revokes its family.
    pub(super) fn code(
        &self,
        key: Vec<u8>,
        now: u64,
    ) -> Result<Result<CodeGrant, CodeRefusal>, StoreError> {
        match self.read::<CodeRecord>(Table::Codes, &key)? {
            Some((_, record)) if record.redeemable(now) => Ok(Ok(record.grant)),
            _ => {
                let tx = self.write()?;
                let refusal = refuse_code(&tx, &key, now)?;
                tx.commit()?;
                Ok(Err(refusal))
            }
        }
    }

    pub(super) fn redeem_code(
        &self,
        key: Vec<u8>,
        now: u64,
        spend: Spend,
    ) -> Result<Result<(), CodeRefusal>, StoreError> {
        let tx = self.write()?;
        let record = match tx.get::<CodeRecord>(Table::Codes, &key)? {
            Some((_, record)) if record.redeemable(now) => record,
            _ => {
                let refusal = refuse_code(&tx, &key, now)?;
                tx.commit()?;
                return Ok(Err(refusal));
            }
        };
        let mut keep = (now + KEEP_REDEEMED_CODE).max(spend.exp);
        if let Some((refresh_key, first)) = &spend.refresh {
            keep = keep.max(first.absolute_expiry);
            tx.insert(
                Table::RefreshTokens,
                refresh_key,
                first,
                first.absolute_expiry,
            )?;
        }
        tx.record_access_token(&spend.family, &spend.jti, spend.exp, keep)?;
        let redeemed = CodeRecord {
            redeemed: Some(spend.family.clone()),
            ..record
        };
        tx.put(Table::Codes, &key, &redeemed, now + KEEP_REDEEMED_CODE)?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// The refresh token and whether its family is revoked.
    pub(super) fn refresh(&self, key: Vec<u8>) -> Result<Option<(RefreshGrant, bool)>, StoreError> {
        let Some((_, grant)) = self.read::<RefreshGrant>(Table::RefreshTokens, &key)? else {
            return Ok(None);
        };
        let revoked = self
            .read::<FamilyRecord>(Table::Families, grant.family.as_bytes())?
            .is_some_and(|(_, f)| f.revoked);
        Ok(Some((grant, revoked)))
    }

    pub(super) fn use_refresh(
        &self,
        key: Vec<u8>,
        now: u64,
        used: Use,
    ) -> Result<Result<RefreshGrant, RefreshRefusal>, StoreError> {
        let tx = self.write()?;
        let grant = match tx.judge_refresh(&key, &used.client_id, used.policy, now)? {
            Ok(grant) => grant,
            Err(refusal) => {
                // Only a reuse changed anything (its family is revoked).
                if refusal == RefreshRefusal::Reused {
                    tx.commit()?;
                }
                return Ok(Err(refusal));
            }
        };
        let (updated, next) = grant.used(used.policy, now);
        tx.put(
            Table::RefreshTokens,
            &key,
            &updated,
            updated.absolute_expiry,
        )?;
        let issued = match (next, &used.successor) {
            (Some(next), Some(successor)) => {
                tx.insert(Table::RefreshTokens, successor, &next, next.absolute_expiry)?;
                next
            }
            _ => updated,
        };
        tx.record_access_token(&grant.family, &used.jti, used.exp, used.exp)?;
        tx.commit()?;
        Ok(Ok(issued))
    }

    /// Judges a use of the token without using it; a reuse revokes the family. `None`: it
    /// is usable.
    pub(super) fn judge_refresh(
        &self,
        key: Vec<u8>,
        client_id: String,
        policy: RefreshPolicy,
        now: u64,
    ) -> Result<Option<RefreshRefusal>, StoreError> {
        let tx = self.write()?;
        let judged = tx.judge_refresh(&key, &client_id, policy, now)?;
        // Only a reuse changed anything (its family is revoked).
        if judged.as_ref().err() == Some(&RefreshRefusal::Reused) {
            tx.commit()?;
        }
        Ok(judged.err())
    }

    pub(super) fn revoke_refresh(
        &self,
        key: Vec<u8>,
        client_id: String,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        match tx.get::<RefreshGrant>(Table::RefreshTokens, &key)? {
            Some((_, grant)) if grant.authorization.client_id == client_id => {
                tx.revoke_family(&grant.family, now)?;
                tx.commit()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) fn access_token_revoked(&self, jti: String) -> Result<bool, StoreError> {
        // A marker: its presence is the answer.
        let tx = self.db.begin_read().map_err(StoreError::failed)?;
        let open = tx
            .open_table(Table::Families.definition())
            .map_err(StoreError::failed)?;
        let found = open
            .get(revoked_jti_key(&jti).as_slice())
            .map_err(StoreError::failed)?;
        Ok(found.is_some())
    }

    /// Revokes access token `jti` until its `exp`.
    pub(super) fn revoke_access_token(&self, jti: String, exp: u64) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.mark_revoked(&jti, exp)?;
        tx.commit()
    }

    /// Every revoked access token that has not expired at `now`.
    pub(super) fn revoked(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(StoreError::failed)?;
        let open = tx
            .open_table(Table::Families.definition())
            .map_err(StoreError::failed)?;
        let prefix = REVOKED_JTI.as_bytes();
        let mut revoked = Vec::new();
        for entry in open.range(prefix..).map_err(StoreError::failed)? {
            let (key, value) = entry.map_err(StoreError::failed)?;
            let Some(jti) = key.value().strip_prefix(prefix) else {
                break;
            };
            let exp = decode(value.value()).map_or(0, |r| r.expires_at);
            if exp >= now {
                revoked.push((String::from_utf8_lossy(jti).into_owned(), exp));
            }
        }
        Ok(revoked)
    }

    pub(super) fn consent(
        &self,
        subject: String,
        client_id: String,
        now: u64,
    ) -> Result<Option<Consent>, StoreError> {
        Ok(self
            .read::<Consent>(Table::Consents, &consent_key(&subject, &client_id))?
            .filter(|(expires_at, _)| *expires_at >= now)
            .map(|(_, c)| c))
    }

    pub(super) fn remember_consent(
        &self,
        subject: String,
        client_id: String,
        approved: BTreeSet<(String, String)>,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let key = consent_key(&subject, &client_id);
        let tx = self.write()?;
        let mut consent = tx
            .get::<Consent>(Table::Consents, &key)?
            .filter(|(expires_at, _)| *expires_at >= now)
            .map(|(_, c)| c)
            .unwrap_or_default();
        consent.approved.extend(approved);
        tx.put(Table::Consents, &key, &consent, until)?;
        tx.commit()
    }

    pub(super) fn register_client(&self, client: RegisteredClient) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.insert(
            Table::Clients,
            client.client_id.as_bytes(),
            &client,
            u64::MAX,
        )?;
        tx.commit()
    }

    pub(super) fn registered_client(
        &self,
        client_id: String,
    ) -> Result<Option<RegisteredClient>, StoreError> {
        Ok(self
            .read::<RegisteredClient>(Table::Clients, client_id.as_bytes())?
            .map(|(_, c)| c))
    }

    /// Records the assertion `key` as spent until `expires_at`; false when it was spent before
    /// and has not expired by `now`.
    pub(super) fn spend_assertion(
        &self,
        key: Vec<u8>,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        if tx
            .get::<()>(Table::Assertions, &key)?
            .is_some_and(|(until, ())| until >= now)
        {
            return Ok(false);
        }
        tx.put(Table::Assertions, &key, &(), expires_at)?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes every record that expired before `now`; returns how many.
    pub(super) fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(StoreError::failed)?;
        let mut removed = 0;
        for table in Table::ALL {
            let mut open = tx
                .open_table(table.definition())
                .map_err(StoreError::failed)?;
            open.retain(|_, v| {
                let keep = decode(v).is_some_and(|r| r.expires_at >= now);
                removed += usize::from(!keep);
                keep
            })
            .map_err(StoreError::failed)?;
        }
        tx.commit().map_err(StoreError::failed)?;
        Ok(removed)
    }
}

/// The record under `key` in `table` (read or written), with its expiry.
fn typed<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<(u64, T)>, StoreError> {
    let Some(record) = table
        .get(key)
        .map_err(StoreError::failed)?
        .and_then(|v| decode(v.value()))
    else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&record.value)
        .map_err(|e| StoreError::Failed(format!("a stored grant is unreadable: {e}")))?;
    Ok(Some((record.expires_at, value)))
}

/// Why the code under `key` cannot be redeemed; a redeemed one revokes its family.
fn refuse_code(tx: &Tx, key: &[u8], now: u64) -> Result<CodeRefusal, StoreError> {
    Ok(match tx.get::<CodeRecord>(Table::Codes, key)? {
        None => CodeRefusal::Unknown,
        Some((
            _,
            CodeRecord {
                redeemed: Some(family),
                ..
            },
        )) => {
            tx.revoke_family(&family, now)?;
            CodeRefusal::Replayed
        }
        Some((_, record)) if now > record.expires_at => CodeRefusal::Expired,
        Some(_) => CodeRefusal::Unknown,
    })
}

fn consent_key(subject: &str, client_id: &str) -> Vec<u8> {
    // Length-prefixed, so no two (subject, client) pairs share a key.
    format!("{}:{subject}{client_id}", subject.len()).into_bytes()
}

/// Where revoked access tokens are marked, in the families' table.
const REVOKED_JTI: &str = "revoked-jti:";

fn revoked_jti_key(jti: &str) -> Vec<u8> {
    format!("{REVOKED_JTI}{jti}").into_bytes()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
