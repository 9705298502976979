//! The embedded store: the only module that knows sled.
//!
//! Trees:
//! - `artifacts`: sha256 (hex) → the uploaded wasm bytes, deduplicated.
//! - `compiled`: `sha256/engine-key` → wasmtime's serialized compiled code,
//!   so a restart (with the same engine settings) never recompiles.
//! - `refs`: sha256 → how many function versions use the artifact; an
//!   artifact and its compiled code go when the count reaches zero.
//! - `functions`: name → [`FunctionRecord`] (JSON).
//! - `logs`: `name \0 seq` → a function's log lines (see the logs section).
//! - `kv`, `kv_usage`: key-value entries per function and the bytes they
//!   take; `config`, `secrets`: settings and secrets per function (see the
//!   kv, config and secrets section).
//!
//! Writes that belong together (a deploy, a delete) happen in one sled
//! transaction, and every write a client is told about is flushed first
//! ([`Store::flush`]), so an acknowledged deploy survives `kill -9`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use crate::capabilities::logs::LogEntry;
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
    /// Outbound HTTP allow-list entries, as given (validated at deploy).
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Whether the function's plain settings (not its secrets) are also
    /// environment variables of the guest.
    #[serde(default)]
    pub config_env: bool,
    /// For a preview-1 module: the read-only directory granted to it,
    /// relative to `<data-dir>/static/` (checked at deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
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
        Ok(self
            .compiled
            .get(compiled_key(sha256, engine_key).as_bytes())?)
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
            for key in self
                .compiled
                .scan_prefix(format!("{sha}/").as_bytes())
                .keys()
            {
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

// ------------------------------------------------------------------ logs
//
// Tree `logs`: `name \0 seq` (seq big-endian, from sled's monotonic id
// generator, so a function's lines are in write order) -> JSON LogEntry.
// Lines are not flushed one by one: the writer flushes on request (admin
// reads, shutdown) and sled's background flush bounds what a crash loses.

fn log_prefix(function: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(function.len() + 1);
    k.extend_from_slice(function.as_bytes());
    k.push(0);
    k
}

fn log_key(function: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(function);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    fn logs(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("logs")?)
    }

    /// Appends log lines to a function's log (in one batch).
    pub fn append_logs(&self, function: &str, entries: &[LogEntry]) -> Result<(), StoreError> {
        let logs = self.logs()?;
        let mut batch = sled::Batch::default();
        for e in entries {
            let seq = self.db.generate_id()?;
            batch.insert(log_key(function, seq), encode(e));
        }
        logs.apply_batch(batch)?;
        Ok(())
    }

    /// Number of lines in a function's log.
    pub fn log_count(&self, function: &str) -> u64 {
        self.logs()
            .map(|t| t.scan_prefix(log_prefix(function)).keys().count() as u64)
            .unwrap_or(0)
    }

    /// Removes a function's oldest lines: at least `excess` of them, and
    /// all written before `oldest_kept_ms`. Returns how many were removed.
    pub fn prune_logs(
        &self,
        function: &str,
        excess: u64,
        oldest_kept_ms: u64,
    ) -> Result<u64, StoreError> {
        let logs = self.logs()?;
        let mut removed = 0;
        for item in logs.scan_prefix(log_prefix(function)) {
            let (key, value) = item?;
            if removed >= excess {
                let entry: LogEntry = decode(&key, &value)?;
                if entry.time_ms >= oldest_kept_ms {
                    break;
                }
            }
            logs.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Up to `limit` lines of a function's log after `after` (a seq), at or
    /// after `since_ms`, of one invocation if given, oldest first.
    pub fn read_logs(
        &self,
        function: &str,
        after: Option<u64>,
        since_ms: Option<u64>,
        invocation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let logs = self.logs()?;
        let prefix = log_prefix(function);
        let start = match after {
            Some(seq) => log_key(function, seq.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in logs.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let mut entry: LogEntry = decode(&key, &value)?;
            if since_ms.is_some_and(|t| entry.time_ms < t)
                || invocation.is_some_and(|id| entry.invocation_id != id)
            {
                continue;
            }
            entry.seq = read_u64(&key[prefix.len()..]);
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes a function's whole log (the function was deleted).
    pub fn purge_logs(&self, function: &str) -> Result<(), StoreError> {
        let logs = self.logs()?;
        for key in logs.scan_prefix(log_prefix(function)).keys() {
            logs.remove(key?)?;
        }
        Ok(())
    }
}

// ------------------------------------------------- kv, config and secrets
//
// Trees (one namespace per function; function names never contain NUL, so
// `name \0` is an exact prefix):
// - `kv`: `name \0 key` -> 8 bytes expiry (ms since the epoch, big-endian;
//   0: never) followed by the value.
// - `kv_usage`: name -> bytes the function's entries take (u64 BE): key
//   bytes plus value bytes of every stored entry, expired ones included
//   until they are reclaimed. Updated in the same transaction as `kv`, so
//   it is exact under concurrent writers.
// - `config`: `name \0 key` -> a plain setting (UTF-8).
// - `secrets`: `name \0 key` -> a secret (UTF-8). Apart from `config` so
//   that nothing listing settings can read a secret by accident.
//
// What may be written (limits, quota, expiry, CAS) is decided by the
// caller (capabilities::kv, capabilities::settings); this section only
// reads, writes atomically and encodes.

/// A stored key-value entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The value.
    pub value: IVec,
    /// When it expires, ms since the epoch; `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// What a key-value update writes.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    /// Nothing.
    Keep,
    /// The key gets this value and expiry.
    Put {
        /// The value.
        value: Vec<u8>,
        /// Expiry, ms since the epoch.
        expires_at_ms: Option<u64>,
    },
    /// The key goes.
    Remove,
}

/// A key-value update the caller refused (`Rejected`), or a store failure.
#[derive(Debug)]
pub enum KvUpdateError<E> {
    /// The caller's decision function refused the update; nothing written.
    Rejected(E),
    /// The store failed; nothing written.
    Store(StoreError),
}

/// A config item: a plain setting or a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigItem {
    /// Key name.
    pub key: String,
    /// Value.
    pub value: String,
    /// Whether it is a secret (kept in the `secrets` tree).
    pub secret: bool,
}

impl std::fmt::Debug for ConfigItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret's value never reaches a log line, even through `{:?}`.
        let value: &dyn std::fmt::Debug = if self.secret {
            &"********"
        } else {
            &self.value
        };
        f.debug_struct("ConfigItem")
            .field("key", &self.key)
            .field("value", value)
            .field("secret", &self.secret)
            .finish()
    }
}

/// One change to a function's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Sets `key` (removing it from the other tree, so a key is either a
    /// setting or a secret).
    Set(ConfigItem),
    /// Removes `key`, setting or secret.
    Remove(String),
}

fn ns_prefix(function: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(function.len() + 1);
    k.extend_from_slice(function.as_bytes());
    k.push(0);
    k
}

fn ns_key(function: &str, key: &str) -> Vec<u8> {
    let mut k = ns_prefix(function);
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode_kv(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_kv(key: &[u8], stored: IVec) -> Result<KvEntry, StoreError> {
    if stored.len() < 8 {
        return Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key-value entry shorter than its header".into(),
        });
    }
    let expires = read_u64(&stored[..8]);
    Ok(KvEntry {
        value: stored.subslice(8, stored.len() - 8),
        expires_at_ms: (expires != 0).then_some(expires),
    })
}

impl Store {
    fn kv_trees(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        Ok((self.db.open_tree("kv")?, self.db.open_tree("kv_usage")?))
    }

    fn config_trees(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        Ok((self.db.open_tree("config")?, self.db.open_tree("secrets")?))
    }

    /// A function's key-value entry, expired or not.
    pub fn kv_get(&self, function: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let (kv, _) = self.kv_trees()?;
        let k = ns_key(function, key);
        kv.get(&k)?.map(|v| decode_kv(&k, v)).transpose()
    }

    /// Bytes a function's key-value entries take (see the `kv_usage` tree).
    /// (Tests check the accounting with it.)
    #[cfg(test)]
    pub fn kv_usage(&self, function: &str) -> Result<u64, StoreError> {
        let (_, usage) = self.kv_trees()?;
        Ok(usage
            .get(function.as_bytes())?
            .map(|v| read_u64(&v))
            .unwrap_or(0))
    }

    /// Reads `key` and the function's usage, lets `decide` choose what to
    /// write and the usage after it, and writes both in one transaction.
    /// `decide` may run more than once (a conflicting writer makes sled
    /// retry), so it must only compute. Returns its value and whether
    /// anything was written. Not flushed: the caller flushes before it
    /// acknowledges.
    pub fn kv_update<T, E>(
        &self,
        function: &str,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), E>,
    ) -> Result<(T, bool), KvUpdateError<E>> {
        let (kv, usage) = self.kv_trees().map_err(KvUpdateError::Store)?;
        let k = ns_key(function, key);
        let result = (&kv, &usage).transaction(|(kv, usage)| {
            let old =
                match kv.get(&k)? {
                    Some(v) => Some(decode_kv(&k, v).map_err(|e| {
                        ConflictableTransactionError::Abort(KvUpdateError::Store(e))
                    })?),
                    None => None,
                };
            let used = usage
                .get(function.as_bytes())?
                .map(|v| read_u64(&v))
                .unwrap_or(0);
            let (write, new_usage, out) = decide(old, used)
                .map_err(|e| ConflictableTransactionError::Abort(KvUpdateError::Rejected(e)))?;
            let wrote = match write {
                KvWrite::Keep => false,
                KvWrite::Put {
                    value,
                    expires_at_ms,
                } => {
                    kv.insert(k.as_slice(), encode_kv(&value, expires_at_ms))?;
                    true
                }
                KvWrite::Remove => {
                    kv.remove(k.as_slice())?;
                    true
                }
            };
            if wrote && new_usage != used {
                if new_usage == 0 {
                    usage.remove(function.as_bytes())?;
                } else {
                    usage.insert(function.as_bytes(), &new_usage.to_be_bytes())?;
                }
            }
            Ok((out, wrote))
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => KvUpdateError::Store(StoreError::Sled(e)),
        })
    }

    /// Up to `max` keys of a function that start with `prefix`, after
    /// `after` if given, in byte order, each with its expiry (values are not
    /// read).
    pub fn kv_scan(
        &self,
        function: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Option<u64>)>, StoreError> {
        let (kv, _) = self.kv_trees()?;
        let ns = ns_prefix(function);
        let full_prefix = ns_key(function, prefix);
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(ns_key(function, a)),
            None => std::ops::Bound::Included(full_prefix.clone()),
        };
        let mut out = Vec::new();
        for item in kv.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            let entry = decode_kv(&k, v)?;
            let key =
                String::from_utf8(k[ns.len()..].to_vec()).map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "key-value key is not UTF-8".into(),
                })?;
            out.push((key, entry.expires_at_ms));
        }
        Ok(out)
    }

    /// A function's settings and secrets, by key.
    pub fn config_items(&self, function: &str) -> Result<Vec<ConfigItem>, StoreError> {
        let (config, secrets) = self.config_trees()?;
        let ns = ns_prefix(function);
        let mut items = Vec::new();
        for (tree, secret) in [(&config, false), (&secrets, true)] {
            for item in tree.scan_prefix(&ns) {
                let (k, v) = item?;
                let corrupt = |reason: &str| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: reason.into(),
                };
                let key = std::str::from_utf8(&k[ns.len()..])
                    .map_err(|_| corrupt("config key is not UTF-8"))?
                    .to_string();
                let value = String::from_utf8(v.to_vec())
                    .map_err(|_| corrupt("config value is not UTF-8"))?;
                items.push(ConfigItem { key, value, secret });
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// Applies config changes in one transaction over both trees. Not
    /// flushed.
    pub fn config_apply(&self, function: &str, changes: &[ConfigChange]) -> Result<(), StoreError> {
        let (config, secrets) = self.config_trees()?;
        (&config, &secrets)
            .transaction(|(config, secrets)| {
                for change in changes {
                    match change {
                        ConfigChange::Set(item) => {
                            let k = ns_key(function, &item.key);
                            let (into, other) = if item.secret {
                                (secrets, config)
                            } else {
                                (config, secrets)
                            };
                            other.remove(k.as_slice())?;
                            into.insert(k.as_slice(), item.value.as_bytes())?;
                        }
                        ConfigChange::Remove(key) => {
                            let k = ns_key(function, key);
                            config.remove(k.as_slice())?;
                            secrets.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_on)
    }

    /// Removes a function's key-value entries, usage counter, settings and
    /// secrets. Called right after the function record is deleted (and
    /// before a name is deployed for the first time, which catches anything
    /// a crash between the two, or a write racing the delete, left behind).
    /// Not atomic with the record's delete: it can be large, and a leftover
    /// is invisible (no function) and removed by the next first deploy.
    pub fn purge_function_data(&self, function: &str) -> Result<(), StoreError> {
        let (kv, usage) = self.kv_trees()?;
        let (config, secrets) = self.config_trees()?;
        let ns = ns_prefix(function);
        for tree in [&kv, &config, &secrets] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(&ns).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        usage.remove(function.as_bytes())?;
        Ok(())
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or_default()
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
                    config_env: false,
                    allow_outbound: Vec::new(),
                    static_dir: None,
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
