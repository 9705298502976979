//! The embedded store: the only module that knows sled.
//!
//! Trees:
//! - `artifacts`: sha256 (hex) → the uploaded wasm bytes, deduplicated.
//! - `compiled`: `sha256/engine-key` → wasmtime's serialized compiled code,
//!   so a restart (with the same engine settings) never recompiles.
//! - `refs`: sha256 → how many function versions use the artifact; an
//!   artifact and its compiled code go when the count reaches zero.
//! - `functions`: name → [`FunctionRecord`] (JSON).
//!
//! Writes that belong together (a deploy, a delete) happen in one sled
//! transaction, and every write a client is told about is flushed first
//! ([`Store::flush`]), so an acknowledged deploy survives `kill -9`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use crate::config::Limits;

/// Store failures. Callers answer 500 for these; the details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded.
    #[error("store: corrupt record {key:?}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
}

/// One immutable version of a function: the artifact plus the configuration
/// it was deployed with. Rolling back restores both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, 3…: never reused within a function.
    pub version: u64,
    /// sha256 of the artifact, hex.
    pub sha256: String,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Routes, as given (`/x`, `/api/*`).
    pub routes: Vec<String>,
    /// Environment variables the guest sees.
    pub env: BTreeMap<String, String>,
    /// Effective limits.
    pub limits: Limits,
}

/// A function: its versions and which one is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Validated name.
    pub name: String,
    /// The version serving requests.
    pub active_version: u64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// Last change (deploy, rollback), ms since the epoch.
    pub updated_at_ms: u64,
    /// Every version, oldest first.
    pub versions: Vec<VersionRecord>,
}

impl FunctionRecord {
    /// The active version's record.
    pub fn active(&self) -> &VersionRecord {
        self.version(self.active_version)
            .expect("the active version is always among the versions")
    }

    /// A version by number.
    pub fn version(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The number the next version gets.
    pub fn next_version(&self) -> u64 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }
}

/// What a deploy writes, all or nothing.
pub struct NewVersion<'a> {
    /// The function record after the deploy (with the new version active).
    pub record: &'a FunctionRecord,
    /// The artifact's hash and bytes (stored if not already there).
    pub sha256: &'a str,
    /// The artifact bytes.
    pub artifact: &'a [u8],
    /// Compiled code for this engine (stored if given).
    pub compiled: Option<(&'a str, &'a [u8])>,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    artifacts: sled::Tree,
    compiled: sled::Tree,
    refs: sled::Tree,
    functions: sled::Tree,
}

fn compiled_key(sha256: &str, engine_key: &str) -> String {
    format!("{sha256}/{engine_key}")
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

fn abort_on<E>(e: TransactionError<E>) -> StoreError
where
    E: Into<StoreError>,
{
    match e {
        TransactionError::Abort(e) => e.into(),
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, with sled's page cache bounded
    /// to `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_bytes)
            // Durability comes from explicit flushes before acknowledging a
            // write; the periodic background flush only bounds the loss of
            // unacknowledged data and is kept at sled's default.
            .mode(sled::Mode::LowSpace)
            .open()?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            artifacts: db.open_tree("artifacts")?,
            compiled: db.open_tree("compiled")?,
            refs: db.open_tree("refs")?,
            functions: db.open_tree("functions")?,
            db,
        })
    }

    /// Flushes everything written so far to disk. Called before answering a
    /// client that a write succeeded.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A function record.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        match self.functions.get(name.as_bytes())? {
            Some(bytes) => Ok(Some(decode(name.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every function record, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.functions
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// An artifact's bytes.
    pub fn artifact(&self, sha256: &str) -> Result<Option<IVec>, StoreError> {
        Ok(self.artifacts.get(sha256.as_bytes())?)
    }

    /// Compiled code of an artifact for an engine.
    pub fn compiled(&self, sha256: &str, engine_key: &str) -> Result<Option<IVec>, StoreError> {
        Ok(self.compiled.get(compiled_key(sha256, engine_key).as_bytes())?)
    }

    /// Stores compiled code for an artifact that is already stored (after a
    /// recompile on an engine change). Not flushed: it can always be rebuilt.
    pub fn put_compiled(
        &self,
        sha256: &str,
        engine_key: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if self.artifacts.contains_key(sha256.as_bytes())? {
            self.compiled
                .insert(compiled_key(sha256, engine_key).as_bytes(), bytes)?;
        }
        Ok(())
    }

    /// Writes a new version atomically: artifact (if new), compiled code,
    /// the artifact's reference count, and the function record.
    pub fn put_version(&self, new: NewVersion<'_>) -> Result<(), StoreError> {
        let record = encode(new.record);
        let ckey = new.compiled.map(|(k, _)| compiled_key(new.sha256, k));
        (&self.artifacts, &self.compiled, &self.refs, &self.functions)
            .transaction(|(artifacts, compiled, refs, functions)| {
                let sha = new.sha256.as_bytes();
                if artifacts.get(sha)?.is_none() {
                    artifacts.insert(sha, new.artifact)?;
                }
                if let (Some(key), Some((_, bytes))) = (&ckey, new.compiled) {
                    compiled.insert(key.as_bytes(), bytes)?;
                }
                let count = refs.get(sha)?.map(|v| read_u64(&v)).unwrap_or(0);
                refs.insert(sha, &(count + 1).to_be_bytes())?;
                functions.insert(new.record.name.as_bytes(), record.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_on)
    }

    /// Replaces a function record whose versions did not change (rollback).
    pub fn update_function(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        self.functions
            .insert(record.name.as_bytes(), encode(record))?;
        Ok(())
    }

    /// Deletes a function and, atomically with it, every artifact (and its
    /// compiled code for `engine_key`) no other version still uses. Returns
    /// false if there was no such function.
    pub fn delete_function(&self, name: &str, engine_key: &str) -> Result<bool, StoreError> {
        let Some(record) = self.function(name)? else {
            return Ok(false);
        };
        let mut uses: BTreeMap<&str, u64> = BTreeMap::new();
        for v in &record.versions {
            *uses.entry(v.sha256.as_str()).or_default() += 1;
        }
        let freed = (&self.artifacts, &self.compiled, &self.refs, &self.functions)
            .transaction(|(artifacts, compiled, refs, functions)| {
                let mut freed = Vec::new();
                for (sha, n) in &uses {
                    let count = refs.get(sha.as_bytes())?.map(|v| read_u64(&v)).unwrap_or(0);
                    let left = count.saturating_sub(*n);
                    if left == 0 {
                        refs.remove(sha.as_bytes())?;
                        artifacts.remove(sha.as_bytes())?;
                        compiled.remove(compiled_key(sha, engine_key).as_bytes())?;
                        freed.push(sha.to_string());
                    } else {
                        refs.insert(sha.as_bytes(), &left.to_be_bytes())?;
                    }
                }
                functions.remove(name.as_bytes())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(freed)
            })
            .map_err(abort_on)?;
        // Compiled code from other engine versions is not referenced by any
        // record; dropping it outside the transaction is safe either way.
        for sha in freed {
            for key in self.compiled.scan_prefix(format!("{sha}/").as_bytes()).keys() {
                self.compiled.remove(key?)?;
            }
        }
        Ok(true)
    }

    /// Number of stored artifacts (tests, metrics).
    pub fn artifact_count(&self) -> usize {
        self.artifacts.len()
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, versions: &[(u64, &str)]) -> FunctionRecord {
        FunctionRecord {
            name: name.into(),
            active_version: versions.last().unwrap().0,
            created_at_ms: 1,
            updated_at_ms: 1,
            versions: versions
                .iter()
                .map(|(v, sha)| VersionRecord {
                    version: *v,
                    sha256: sha.to_string(),
                    size_bytes: 3,
                    created_at_ms: 1,
                    routes: vec!["/x".into()],
                    env: BTreeMap::new(),
                    limits: Limits::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn deploy_dedupes_and_delete_frees_only_unused_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let a = record("a", &[(1, "s1")]);
        store
            .put_version(NewVersion {
                record: &a,
                sha256: "s1",
                artifact: b"one",
                compiled: Some(("e", b"c1")),
            })
            .unwrap();
        let a2 = record("a", &[(1, "s1"), (2, "s2")]);
        store
            .put_version(NewVersion {
                record: &a2,
                sha256: "s2",
                artifact: b"two",
                compiled: None,
            })
            .unwrap();
        let b = record("b", &[(1, "s1")]);
        store
            .put_version(NewVersion {
                record: &b,
                sha256: "s1",
                artifact: b"one",
                compiled: None,
            })
            .unwrap();
        assert_eq!(store.artifact_count(), 2);
        assert_eq!(store.function("a").unwrap().unwrap().active_version, 2);

        assert!(store.delete_function("a", "e").unwrap());
        assert!(store.function("a").unwrap().is_none());
        // s1 is still used by b; s2 is gone.
        assert!(store.artifact("s1").unwrap().is_some());
        assert!(store.compiled("s1", "e").unwrap().is_some());
        assert!(store.artifact("s2").unwrap().is_none());
        assert!(store.delete_function("b", "e").unwrap());
        assert_eq!(store.artifact_count(), 0);
        assert!(store.compiled("s1", "e").unwrap().is_none());
        assert!(!store.delete_function("b", "e").unwrap());
    }
}
