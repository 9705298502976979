//! Function records, their versions and the artifacts they run: the trees
//! and records of the function domain.
//!
//! Trees:
//! - `functions`: name → [`FunctionRecord`] (JSON).
//! - `artifacts`: sha256 (hex) → the uploaded wasm bytes, deduplicated.
//! - `refs`: sha256 → how many function versions use the artifact (u64
//!   BE); an artifact and its compiled code go when the count reaches
//!   zero. Written in the same transactions as `artifacts`, so a key here
//!   means the artifact is stored: existence checks read this tree, since a
//!   read of an artifact loads its whole value into the store's cache.
//!
//! Writes that belong together (a deploy, a delete) are one transaction,
//! acknowledged once flushed, so an acknowledged deploy survives `kill -9`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::{Limits, Reuse};
use crate::store::{Durability, Json, Store, StoreError, Tree, TxError};

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
    /// Whether a request may pin a serving version (`wisp-version`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub version_pinning: bool,
    /// Who may invoke the function on the data plane (the active
    /// version's setting holds for all its routes, aliases and versions).
    #[serde(default, skip_serializing_if = "crate::auth::FunctionAuth::is_public")]
    pub auth: crate::auth::FunctionAuth,
    /// For a preview-1 module: the read-only directory granted to it,
    /// relative to `<data-dir>/static/` (checked at deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
    /// For a WASI 0.3 component: instance reuse (absent: a fresh instance
    /// per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// For precompiled code (a signed `.cwasm` from `wisp compile`): what it
    /// was compiled from, and who signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precompiled: Option<PrecompiledFrom>,
    /// CORS answered by the host (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::gateway::cors::Cors>,
    /// Hosts the routes are for, lower case (empty: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Where a version's precompiled code came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrecompiledFrom {
    /// The sha256 of the wasm it was compiled from.
    pub source_sha256: String,
    /// The id of the key that signed it.
    pub signed_by: String,
    /// The target it was compiled for.
    pub target: String,
}

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
    /// Aliases by name (`function/aliases.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, crate::function::aliases::AliasRecord>,
}

impl Json for FunctionRecord {}

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
pub(crate) struct NewVersion {
    /// The function record after the deploy (with the new version active).
    pub record: FunctionRecord,
    /// The artifact's hash (hex).
    pub sha256: String,
    /// The artifact bytes (stored if not already there).
    pub artifact: Bytes,
}

/// The function records and artifacts; cheap to clone.
#[derive(Clone)]
pub(crate) struct Records {
    store: Store,
    functions: Tree<String, FunctionRecord>,
    artifacts: Tree<String, Bytes>,
    refs: Tree<String, u64>,
}

impl Records {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<Records, StoreError> {
        Ok(Records {
            functions: store.tree("functions")?,
            artifacts: store.tree("artifacts")?,
            refs: store.tree("refs")?,
            store: store.clone(),
        })
    }

    /// A function record.
    pub fn get(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        self.functions.get(&name.to_string())
    }

    /// Every function record, by name.
    pub fn all(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.functions
            .scan()
            .into_iter()
            .map(|kv| kv.map(|(_, record)| record))
            .collect()
    }

    /// An artifact's bytes.
    pub fn artifact(&self, sha256: &str) -> Result<Option<Bytes>, StoreError> {
        self.artifacts.get(&sha256.to_string())
    }

    /// Whether an artifact is stored, without reading it (see `refs` in the
    /// module docs): at open this runs for every compiled-code file, and
    /// reading the artifacts instead kept all of them in the cache.
    pub fn has_artifact(&self, sha256: &str) -> Result<bool, StoreError> {
        self.refs.contains(&sha256.to_string())
    }

    /// Number of stored artifacts (tests, metrics).
    pub fn artifact_count(&self) -> usize {
        self.refs.len()
    }

    /// Writes a new version atomically: the artifact (if new), its
    /// reference count and the function record. Answers once flushed.
    pub async fn put_version(&self, new: NewVersion) -> Result<(), StoreError> {
        let this = self.clone();
        self.store
            .write(Durability::Flushed, move |w| {
                w.transaction(
                    (&this.artifacts, &this.refs, &this.functions),
                    |(artifacts, refs, functions)| {
                        // A count means the artifact is stored (not read:
                        // see `refs`).
                        let count = refs.get(&new.sha256)?.unwrap_or(0);
                        if count == 0 {
                            artifacts.insert(&new.sha256, &new.artifact)?;
                        }
                        refs.insert(&new.sha256, &(count + 1))?;
                        functions.insert(&new.record.name, &new.record)?;
                        Ok(())
                    },
                )
            })
            .await?
            .map_err(|e: TxError<StoreError>| e.into())
    }

    /// Replaces a function record whose versions did not change
    /// (rollback). Answers once flushed.
    pub async fn update(&self, record: FunctionRecord) -> Result<(), StoreError> {
        let functions = self.functions.clone();
        self.store
            .write(Durability::Flushed, move |w| {
                functions.insert(w, &record.name, &record)
            })
            .await?
    }

    /// Makes `record` the function's record, whatever it was (a copy of
    /// the cluster's), atomically with the reference counts of every
    /// artifact its versions use and no longer use; stores the `fetched`
    /// artifacts this host did not have. Returns the hashes of artifacts
    /// nothing uses any more (their compiled code goes once this returns).
    /// Answers once flushed.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub async fn replace(
        &self,
        record: FunctionRecord,
        fetched: Vec<(String, Bytes)>,
    ) -> Result<Vec<String>, StoreError> {
        let this = self.clone();
        self.store
            .write(Durability::Flushed, move |w| {
                w.transaction(
                    (&this.artifacts, &this.refs, &this.functions),
                    |(artifacts, refs, functions)| {
                        // +1 for each version of the new record, -1 for
                        // each of the old.
                        let mut change: BTreeMap<&str, i64> = BTreeMap::new();
                        let old = functions.get(&record.name)?;
                        for v in old.iter().flat_map(|r| &r.versions) {
                            *change.entry(v.sha256.as_str()).or_default() -= 1;
                        }
                        for v in &record.versions {
                            *change.entry(v.sha256.as_str()).or_default() += 1;
                        }
                        let mut freed = Vec::new();
                        for (sha, delta) in change {
                            let sha = sha.to_string();
                            let count = refs.get(&sha)?.unwrap_or(0);
                            let left = (count as i64 + delta).max(0) as u64;
                            if left == 0 {
                                if count > 0 {
                                    refs.remove(&sha)?;
                                    artifacts.remove(&sha)?;
                                    freed.push(sha);
                                }
                                continue;
                            }
                            if count == 0 {
                                let Some((_, bytes)) = fetched.iter().find(|(s, _)| *s == sha)
                                else {
                                    return Err(crate::store::Abort::with(StoreError::Corrupt {
                                        key: format!("artifacts/{sha}"),
                                        reason: "a version's artifact was neither stored nor \
                                                 fetched"
                                            .into(),
                                    }));
                                };
                                artifacts.insert(&sha, bytes)?;
                            }
                            refs.insert(&sha, &left)?;
                        }
                        functions.insert(&record.name, &record)?;
                        Ok(freed)
                    },
                )
            })
            .await?
            .map_err(|e: TxError<StoreError>| StoreError::from(e))
    }

    /// Deletes a function and, atomically with it, every artifact no other
    /// version still uses; returns those artifacts' hashes (their compiled
    /// code goes once this returns, flushed: see
    /// [`Compiled::drop_freed`](super::compiled::Compiled::drop_freed)), or
    /// `None` if there was no such function.
    pub async fn delete(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        let Some(record) = self.get(name)? else {
            return Ok(None);
        };
        let mut uses: BTreeMap<String, u64> = BTreeMap::new();
        for v in &record.versions {
            *uses.entry(v.sha256.clone()).or_default() += 1;
        }
        let this = self.clone();
        let name = name.to_string();
        let freed = self
            .store
            .write(Durability::Flushed, move |w| {
                w.transaction(
                    (&this.artifacts, &this.refs, &this.functions),
                    |(artifacts, refs, functions)| {
                        let mut freed = Vec::new();
                        for (sha, n) in &uses {
                            let left = refs.get(sha)?.unwrap_or(0).saturating_sub(*n);
                            if left == 0 {
                                refs.remove(sha)?;
                                artifacts.remove(sha)?;
                                freed.push(sha.clone());
                            } else {
                                refs.insert(sha, &left)?;
                            }
                        }
                        functions.remove(&name)?;
                        Ok(freed)
                    },
                )
            })
            .await?
            .map_err(|e: TxError<StoreError>| StoreError::from(e))?;
        Ok(Some(freed))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::function::compiled::Compiled;

    pub(crate) fn record(name: &str, versions: &[(u64, &str)]) -> FunctionRecord {
        FunctionRecord {
            name: name.into(),
            active_version: versions.last().unwrap().0,
            created_at_ms: 1,
            updated_at_ms: 1,
            aliases: BTreeMap::new(),
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
                    version_pinning: false,
                    auth: Default::default(),
                    allow_outbound: Vec::new(),
                    static_dir: None,
                    reuse: None,
                    precompiled: None,
                    cors: None,
                    hosts: Vec::new(),
                })
                .collect(),
        }
    }

    /// Stores a version of `name` (its versions so far, by artifact) with
    /// the artifact of the last.
    pub(crate) fn put(records: &Records, name: &str, versions: &[(u64, &str)], artifact: &[u8]) {
        futures::executor::block_on(records.put_version(NewVersion {
            record: record(name, versions),
            sha256: versions.last().unwrap().1.to_string(),
            artifact: Bytes::copy_from_slice(artifact),
        }))
        .unwrap();
    }

    fn delete(records: &Records, name: &str) -> Option<Vec<String>> {
        futures::executor::block_on(records.delete(name)).unwrap()
    }

    #[test]
    fn deploy_dedupes_and_delete_frees_only_unused_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let records = Records::open(&store).unwrap();
        let compiled = Compiled::open(&store, dir.path(), &records).unwrap();
        compiled.put("a1", "e", b"c1").unwrap();
        put(&records, "a", &[(1, "a1")], b"one");
        put(&records, "a", &[(1, "a1"), (2, "a2")], b"two");
        put(&records, "b", &[(1, "a1")], b"one");
        assert_eq!(records.artifact_count(), 2);
        assert_eq!(records.get("a").unwrap().unwrap().active_version, 2);
        let file = compiled.code("a1", "e").unwrap().unwrap();
        let file = file.name().to_path_buf();
        assert_eq!(std::fs::read(&file).unwrap(), b"c1");

        assert_eq!(delete(&records, "a").unwrap(), ["a2"]);
        compiled.drop_freed(&["a2".into()]).unwrap();
        assert!(records.get("a").unwrap().is_none());
        // a1 is still used by b; a2 is gone.
        assert!(records.artifact("a1").unwrap().is_some());
        assert!(compiled.code("a1", "e").unwrap().is_some());
        assert!(records.artifact("a2").unwrap().is_none());
        let freed = delete(&records, "b").unwrap();
        assert_eq!(freed, ["a1"]);
        assert_eq!(records.artifact_count(), 0);
        assert!(file.exists(), "kept until the deletion is flushed");
        compiled.drop_freed(&freed).unwrap();
        assert!(compiled.code("a1", "e").unwrap().is_none());
        assert!(!file.exists());
        assert!(compiled.sums_are_empty(), "its checksum went with it");
        assert!(delete(&records, "b").is_none());
    }
}
