//! The durable store behind the grants: a few tables of byte records, each with an expiry,
//! and one atomic compare-and-swap. Everything the grant logic needs is built on these four
//! calls, so a shared networked store (for many isogate instances) implements this trait and
//! nothing else changes.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// The tables of grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Authorization codes, by SHA-256 of the code.
    Codes,
    /// Refresh tokens, by SHA-256 of the token.
    RefreshTokens,
    /// Refresh token families (one per code redemption): revoked or not, and the access
    /// tokens issued in them.
    Families,
    /// Consents, by subject and client.
    Consents,
}

impl Table {
    const ALL: [Table; 4] = [
        Table::Codes,
        Table::RefreshTokens,
        Table::Families,
        Table::Consents,
    ];

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Codes => "codes",
            Table::RefreshTokens => "refresh_tokens",
            Table::Families => "families",
            Table::Consents => "consents",
        })
    }
}

/// The store failed; the request that needed it gets a server error.
#[derive(Debug, thiserror::Error)]
#[error("the grant store failed: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn new(e: impl std::fmt::Display) -> Self {
        StoreError(e.to_string())
    }
}

/// A record's bytes and when it may be swept (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The serialised record.
    pub value: Vec<u8>,
    /// After this second the record is expired and [`GrantStore::sweep`] removes it.
    pub expires_at: u64,
}

/// Durable, atomic storage of grants.
pub trait GrantStore: Send + Sync {
    /// The record under `key`, expired or not.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError>;

    /// Stores `record` under `key` when the current record is `expected` (`None`: absent),
    /// in one atomic, durable step. Returns whether it was stored.
    fn swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&Record>,
        record: &Record,
    ) -> Result<bool, StoreError>;

    /// Removes every record that expired before `now`; returns how many.
    fn sweep(&self, now: u64) -> Result<usize, StoreError>;
}

/// [`GrantStore`] in one redb file: ACID, and every commit is durable before it returns, so a
/// grant survives a crash (`kill -9`) as soon as it is handed out.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `dir/grants.redb`, creating `dir` with mode 0700 when missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("grants.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(StoreError::new)?;
        for table in Table::ALL {
            tx.open_table(table.definition()).map_err(StoreError::new)?;
        }
        tx.commit().map_err(StoreError::new)?;
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

impl GrantStore for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let tx = self.db.begin_read().map_err(StoreError::new)?;
        let table = tx.open_table(table.definition()).map_err(StoreError::new)?;
        let found = table.get(key).map_err(StoreError::new)?;
        Ok(found.and_then(|v| decode(v.value())))
    }

    fn swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&Record>,
        record: &Record,
    ) -> Result<bool, StoreError> {
        // redb runs one write transaction at a time: reading and writing inside it is atomic.
        let tx = self.db.begin_write().map_err(StoreError::new)?;
        {
            let mut open = tx.open_table(table.definition()).map_err(StoreError::new)?;
            let current = open
                .get(key)
                .map_err(StoreError::new)?
                .and_then(|v| decode(v.value()));
            if current.as_ref() != expected {
                return Ok(false);
            }
            open.insert(key, encode(record).as_slice())
                .map_err(StoreError::new)?;
        }
        tx.commit().map_err(StoreError::new)?;
        Ok(true)
    }

    fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(StoreError::new)?;
        let mut removed = 0;
        for table in Table::ALL {
            let mut open = tx.open_table(table.definition()).map_err(StoreError::new)?;
            open.retain(|_, v| {
                let keep = decode(v).is_some_and(|r| r.expires_at >= now);
                removed += usize::from(!keep);
                keep
            })
            .map_err(StoreError::new)?;
        }
        tx.commit().map_err(StoreError::new)?;
        Ok(removed)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str, expires_at: u64) -> Record {
        Record {
            value: value.as_bytes().to_vec(),
            expires_at,
        }
    }

    #[test]
    fn swap_is_compare_and_set_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("data")).unwrap();
        let a = record("a", 100);
        assert!(store.swap(Table::Codes, b"k", None, &a).unwrap());
        // A second insert of an absent key loses: the key is there now.
        assert!(!store.swap(Table::Codes, b"k", None, &a).unwrap());
        let b = record("b", 100);
        assert!(store.swap(Table::Codes, b"k", Some(&a), &b).unwrap());
        assert!(!store.swap(Table::Codes, b"k", Some(&a), &a).unwrap());
        // Tables are separate.
        assert_eq!(store.get(Table::RefreshTokens, b"k").unwrap(), None);
        drop(store);
        let store = RedbStore::open(&dir.path().join("data")).unwrap();
        assert_eq!(store.get(Table::Codes, b"k").unwrap(), Some(b));
    }

    #[test]
    fn sweep_removes_only_expired_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store
            .swap(Table::Codes, b"old", None, &record("x", 10))
            .unwrap();
        store
            .swap(Table::Consents, b"new", None, &record("y", 30))
            .unwrap();
        assert_eq!(store.sweep(20).unwrap(), 1);
        assert_eq!(store.get(Table::Codes, b"old").unwrap(), None);
        assert!(store.get(Table::Consents, b"new").unwrap().is_some());
    }
}
