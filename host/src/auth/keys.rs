//! Invoke keys of private functions (`wisp deploy --auth key`): their tree,
//! and the table of them in memory that a data-plane request to a private
//! function is checked against (no disk, no lock on that path).
//!
//! Tree `invoke_keys`: `FUNCTION/ID` → [`KeyRecord`] (JSON). A record holds
//! the key's sha256, never the key: the key is shown once, when created.
//! Keys are per function, at most [`MAX_KEYS`] each; they go with their
//! function (a delete, and a new function of the same name, purge them).
//!
//! The design is the admin tokens' (`tokens.rs`): random keys with a
//! recognisable prefix, sha256 hashes compared in constant time, the
//! table swapped whole after each change.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::now_ms;
use super::secret::{self, Credential, MAX_NAME, Mismatch, plain_name};
use crate::store::{Durability, Json, Store, StoreError, Tree};

/// What every invoke key starts with (recognisable by a secret scanner;
/// distinct from an admin token's `wisp_`).
const PREFIX: &str = "wispk_";
/// Most keys one function has: each request to it checks every one.
pub(crate) const MAX_KEYS: usize = 100;

/// Who may invoke a function on the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionAuth {
    /// Anyone who reaches the data plane (the default).
    #[default]
    Public,
    /// Only requests with one of the function's invoke keys
    /// (`Authorization: Bearer <key>` or `wisp-key: <key>`).
    Key,
}

impl FunctionAuth {
    /// Parses `public` or `key`; the error names both.
    pub fn parse(s: &str) -> Result<FunctionAuth, String> {
        match s.trim() {
            "public" => Ok(FunctionAuth::Public),
            "key" => Ok(FunctionAuth::Key),
            other => Err(format!(
                "invalid auth {other:?}: `public` (anyone may invoke the function) or `key` (a \
                 request needs one of its invoke keys)"
            )),
        }
    }

    /// Whether this is the default (left out of stored records).
    pub fn is_public(&self) -> bool {
        *self == FunctionAuth::Public
    }
}

/// An invoke key to create (`POST /v1/functions/{name}/keys`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Its name: 1 to 64 letters, digits, `.`, `_` or `-`; unique within
    /// the function. Without it, `key-` and the key's id.
    #[serde(default)]
    #[schema(example = "partner-a")]
    pub name: Option<String>,
    /// When it expires: a duration from now (`30d`, `12h`, `90s`) or an
    /// RFC 3339 time. Never, without it.
    #[serde(default)]
    #[schema(example = "30d")]
    pub expires: Option<String>,
}

/// An invoke key as listed: never the key, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Its id (random, not derived from the key).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it expires (ms since the Unix epoch); never, if absent.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// An invoke key just created: the only time the key itself is shown.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key. Only its hash is kept: it cannot be shown again.
    pub key: String,
    /// What was created.
    pub info: KeyInfo,
}

/// Why an invoke key could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The name is malformed.
    #[error("{0}")]
    InvalidName(String),
    /// The expiry does not parse, is zero or has passed.
    #[error("{0}")]
    InvalidExpiry(String),
    /// No function of that name.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// A key of that name exists for the function.
    #[error("function {0:?} has a key named {1:?}: revoke it first, or choose another name")]
    NameTaken(String, String),
    /// The function has as many keys as it may.
    #[error("function {0:?} has {MAX_KEYS} keys, the most it may have: revoke some first")]
    TooMany(String),
    /// No key of that name or id.
    #[error("function {0:?} has no key named (or with the id) {1:?}")]
    NotFound(String, String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key as stored: everything but the key itself.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub function: String,
    pub id: String,
    pub name: String,
    /// Hex of the key's sha256.
    pub sha256: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

impl Json for KeyRecord {}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the hash reaches a log line through `{:?}`.
        f.debug_struct("KeyRecord")
            .field("function", &self.function)
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    fn tree_key(&self) -> String {
        format!("{}/{}", self.function, self.id)
    }

    fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        }
    }
}

/// A key as the request check holds it: its hash decoded.
#[derive(Clone)]
struct Entry {
    record: KeyRecord,
    hash: [u8; 32],
}

impl Entry {
    fn new(record: KeyRecord) -> Result<Entry, StoreError> {
        let hash = secret::decode_hash(&record.sha256).map_err(|reason| StoreError::Corrupt {
            key: format!("invoke_keys/{}", record.tree_key()),
            reason,
        })?;
        Ok(Entry { record, hash })
    }
}

impl Credential for Entry {
    fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    fn name(&self) -> &str {
        &self.record.name
    }
    fn id(&self) -> &str {
        &self.record.id
    }
    fn expires_ms(&self) -> Option<u64> {
        self.record.expires_ms
    }
}

/// Why a data-plane request to a private function was refused (401).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyRefused {
    /// It sent no key.
    Missing,
    /// No such key of this function (never created, or revoked).
    Invalid,
    /// The key named here expired.
    Expired(String),
}

/// Each function's keys, by function name.
type Table = HashMap<String, Arc<Vec<Entry>>>;

/// The invoke keys: their tree, and the table of them in memory; cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct InvokeKeys {
    store: Store,
    tree: Tree<String, KeyRecord>,
    /// Every key, swapped whole after each change: what a request to a
    /// private function is checked against. Holds exactly what the tree
    /// does (bounded by the functions and [`MAX_KEYS`] each).
    table: Arc<ArcSwap<Table>>,
    /// Serialises changes, so that a name is checked and taken (or a key
    /// found and removed) with nothing in between.
    changes: Arc<Mutex<()>>,
}

impl InvokeKeys {
    /// Opens the tree and loads the table.
    pub fn open(store: &Store) -> Result<InvokeKeys, StoreError> {
        let tree: Tree<String, KeyRecord> = store.tree("invoke_keys")?;
        let mut table: HashMap<String, Vec<Entry>> = HashMap::new();
        for item in tree.scan() {
            let (_, record) = item?;
            table
                .entry(record.function.clone())
                .or_default()
                .push(Entry::new(record)?);
        }
        Ok(InvokeKeys {
            store: store.clone(),
            tree,
            table: Arc::new(ArcSwap::from_pointee(
                table.into_iter().map(|(f, v)| (f, Arc::new(v))).collect(),
            )),
            changes: Arc::default(),
        })
    }

    /// Checks a key sent to `function`: one of its keys, unexpired. Only
    /// hashes are compared, each in constant time and every one of them.
    pub fn check(&self, function: &str, given: Option<&str>) -> Result<(), KeyRefused> {
        let given = given.ok_or(KeyRefused::Missing)?;
        let table = self.table.load();
        let keys = table.get(function).map(|v| v.as_slice()).unwrap_or(&[]);
        match secret::check(keys, given) {
            Ok(_) => Ok(()),
            Err(Mismatch::Unknown) => Err(KeyRefused::Invalid),
            Err(Mismatch::Expired(name)) => Err(KeyRefused::Expired(name)),
        }
    }

    /// A function's keys, by name (no key, no hash).
    pub fn list(&self, function: &str) -> Vec<KeyInfo> {
        let table = self.table.load();
        let mut list: Vec<KeyInfo> = table
            .get(function)
            .map(|v| v.iter().map(|e| e.record.info()).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Creates a key of `function` (which the caller checked exists, and
    /// keeps from being deleted meanwhile): checks everything first
    /// (nothing is stored for a refused request), then stores its hash,
    /// durably, before answering the key.
    pub async fn create(&self, function: &str, new: NewKey) -> Result<CreatedKey, KeyError> {
        let now = now_ms();
        let id = secret::new_id();
        let name = new.name.unwrap_or_else(|| format!("key-{id}"));
        if !plain_name(&name) {
            return Err(KeyError::InvalidName(format!(
                "invalid key name {name:?}: 1 to {MAX_NAME} letters, digits, `.`, `_` or `-`"
            )));
        }
        let expires_ms = new
            .expires
            .as_deref()
            .map(|e| secret::parse_expiry(e, now))
            .transpose()
            .map_err(KeyError::InvalidExpiry)?;

        let _changing = self.changes.lock().await;
        let table = self.table.load();
        let keys = table.get(function).map(|v| v.as_slice()).unwrap_or(&[]);
        if keys.iter().any(|e| e.record.name == name) {
            return Err(KeyError::NameTaken(function.to_string(), name));
        }
        if keys.len() >= MAX_KEYS {
            return Err(KeyError::TooMany(function.to_string()));
        }
        let (key, sha256) = secret::issue(PREFIX);
        let record = KeyRecord {
            function: function.to_string(),
            id,
            name,
            sha256,
            created_ms: now,
            expires_ms,
        };
        let (tree, stored) = (self.tree.clone(), record.clone());
        self.store
            .write(Durability::Flushed, move |w| {
                tree.insert(w, &stored.tree_key(), &stored)
            })
            .await??;
        let info = record.info();
        self.swap(&table, function, |old| {
            let mut next = old.to_vec();
            next.push(Entry::new(record)?);
            Ok(next)
        })?;
        Ok(CreatedKey { key, info })
    }

    /// Revokes the function's key of that name, or else of that id;
    /// answers what it was. From the answer on, the key is refused.
    pub async fn revoke(&self, function: &str, name_or_id: &str) -> Result<KeyInfo, KeyError> {
        let _changing = self.changes.lock().await;
        let table = self.table.load();
        let keys = table.get(function).map(|v| v.as_slice()).unwrap_or(&[]);
        let record = secret::find(keys, name_or_id)
            .map(|e| e.record.clone())
            .ok_or_else(|| KeyError::NotFound(function.to_string(), name_or_id.to_string()))?;
        let (tree, key) = (self.tree.clone(), record.tree_key());
        self.store
            .write(Durability::Flushed, move |w| tree.remove(w, &key))
            .await??;
        self.swap(&table, function, |old| {
            Ok(old
                .iter()
                .filter(|e| e.record.id != record.id)
                .cloned()
                .collect())
        })?;
        Ok(record.info())
    }

    /// Removes every key of `function` (it was deleted, or a new function
    /// takes its name), durably.
    pub async fn purge(&self, function: &str) -> Result<(), StoreError> {
        let _changing = self.changes.lock().await;
        let table = self.table.load();
        let Some(keys) = table.get(function) else {
            return Ok(());
        };
        let doomed: Vec<String> = keys.iter().map(|e| e.record.tree_key()).collect();
        let tree = self.tree.clone();
        self.store
            .write(Durability::Flushed, move |w| {
                for key in &doomed {
                    tree.remove(w, key)?;
                }
                Ok::<(), StoreError>(())
            })
            .await??;
        self.swap(&table, function, |_| Ok(Vec::new()))
    }

    /// Stores a new table: `table` with `function`'s keys replaced by what
    /// `change` makes of them (none: the function's entry goes).
    fn swap(
        &self,
        table: &Table,
        function: &str,
        change: impl FnOnce(&[Entry]) -> Result<Vec<Entry>, StoreError>,
    ) -> Result<(), StoreError> {
        let old = table.get(function).map(|v| v.as_slice()).unwrap_or(&[]);
        let keys = change(old)?;
        let mut next = table.clone();
        if keys.is_empty() {
            next.remove(function);
        } else {
            next.insert(function.to_string(), Arc::new(keys));
        }
        self.table.store(Arc::new(next));
        Ok(())
    }
}

/// Without the secret: a `{:?}` in a log line must not leak it.
impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &"***")
            .field("info", &self.info)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::hash;

    #[test]
    fn auth_is_public_or_key() {
        assert_eq!(FunctionAuth::parse("public").unwrap(), FunctionAuth::Public);
        assert_eq!(FunctionAuth::parse(" key ").unwrap(), FunctionAuth::Key);
        for bad in ["", "foo", "Key", "private"] {
            let e = FunctionAuth::parse(bad).unwrap_err();
            assert!(e.contains("`public`") && e.contains("`key`"), "{e}");
        }
        assert_eq!(
            serde_json::to_string(&FunctionAuth::Key).unwrap(),
            "\"key\""
        );
    }

    #[tokio::test]
    async fn a_key_is_stored_as_its_hash_and_checked_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let keys = InvokeKeys::open(&store).unwrap();
        let created = keys
            .create(
                "hello",
                NewKey {
                    name: Some("a".into()),
                    expires: None,
                },
            )
            .await
            .unwrap();
        assert!(created.key.starts_with("wispk_"));
        assert_eq!(created.key.len(), PREFIX.len() + 64);
        let stored = keys
            .tree
            .get(&format!("hello/{}", created.info.id))
            .unwrap()
            .unwrap();
        assert_eq!(stored.sha256, hex::encode(hash(created.key.as_bytes())));
        assert!(
            !serde_json::to_string(&stored)
                .unwrap()
                .contains(&created.key)
        );

        assert_eq!(keys.check("hello", Some(&created.key)), Ok(()));
        // Per function: the key opens nothing else.
        assert_eq!(
            keys.check("other", Some(&created.key)),
            Err(KeyRefused::Invalid)
        );
        assert_eq!(keys.check("hello", None), Err(KeyRefused::Missing));
        assert_eq!(
            keys.check("hello", Some("wispk_nope")),
            Err(KeyRefused::Invalid)
        );

        // Reopened (a restart), the table is the tree's.
        assert_eq!(
            InvokeKeys::open(&store).unwrap().list("hello"),
            keys.list("hello")
        );

        let dup = keys
            .create(
                "hello",
                NewKey {
                    name: Some("a".into()),
                    expires: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(dup, KeyError::NameTaken(..)), "{dup}");
        let bad = keys
            .create(
                "hello",
                NewKey {
                    name: Some("a b".into()),
                    expires: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(bad, KeyError::InvalidName(_)), "{bad}");
        let past = keys
            .create(
                "hello",
                NewKey {
                    name: None,
                    expires: Some("2020-01-01T00:00:00Z".into()),
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(past, KeyError::InvalidExpiry(_)), "{past}");
        assert_eq!(keys.list("hello").len(), 1);

        keys.revoke("hello", &created.info.id).await.unwrap();
        assert_eq!(
            keys.check("hello", Some(&created.key)),
            Err(KeyRefused::Invalid)
        );
        assert!(matches!(
            keys.revoke("hello", "a").await.unwrap_err(),
            KeyError::NotFound(..)
        ));
        assert!(InvokeKeys::open(&store).unwrap().list("hello").is_empty());
    }

    #[tokio::test]
    async fn keys_expire_are_capped_and_go_with_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let keys = InvokeKeys::open(&store).unwrap();
        let soon = keys
            .create(
                "f",
                NewKey {
                    name: Some("soon".into()),
                    expires: Some("1ms".into()),
                },
            )
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            keys.check("f", Some(&soon.key)),
            Err(KeyRefused::Expired("soon".into()))
        );
        for _ in 1..MAX_KEYS {
            keys.create("f", NewKey::default()).await.unwrap();
        }
        let e = keys.create("f", NewKey::default()).await.unwrap_err();
        assert!(matches!(e, KeyError::TooMany(_)), "{e}");
        keys.purge("f").await.unwrap();
        assert!(keys.list("f").is_empty());
        assert_eq!(keys.tree.len(), 0);
        assert!(InvokeKeys::open(&store).unwrap().list("f").is_empty());
    }
}
