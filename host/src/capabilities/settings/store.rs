//! The config domain's trees, keys and records.
//!
//! Trees (one namespace per function; function names never contain NUL, so
//! `name \0` is an exact prefix):
//! - `config`: `name \0 key` → a plain setting (UTF-8).
//! - `secrets`: `name \0 key` → a secret (UTF-8). Apart from `config` so
//!   that nothing listing settings can read a secret by accident.
//!
//! What may be written is decided by the caller ([`super`]); this file
//! only reads, writes atomically and encodes.

use crate::store::{Durability, Store, StoreError, Tree};

/// A config item: a plain setting or a secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConfigItem {
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
pub(crate) enum ConfigChange {
    /// Sets `key` (removing it from the other tree, so a key is either a
    /// setting or a secret).
    Set(ConfigItem),
    /// Removes `key`, setting or secret.
    Remove(String),
}

/// Key of a setting or secret: the function, then the key.
use crate::store::FunctionKey as SettingKey;
/// Every setting (or secret) of one function.
use crate::store::OfFunction as Of;

/// The config and secrets trees; cheap to clone.
#[derive(Clone)]
pub(crate) struct ConfigStore {
    store: Store,
    config: Tree<SettingKey, String>,
    secrets: Tree<SettingKey, String>,
}

impl ConfigStore {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<ConfigStore, StoreError> {
        Ok(ConfigStore {
            config: store.tree("config")?,
            secrets: store.tree("secrets")?,
            store: store.clone(),
        })
    }

    /// A function's settings and secrets, by key.
    pub fn items(&self, function: &str) -> Result<Vec<ConfigItem>, StoreError> {
        let mut items = Vec::new();
        for (tree, secret) in [(&self.config, false), (&self.secrets, true)] {
            for kv in tree.scan().within(&Of(function)) {
                let (k, value) = kv?;
                items.push(ConfigItem {
                    key: k.key,
                    value,
                    secret,
                });
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// Applies config changes in one transaction over both trees; answers
    /// once flushed.
    pub async fn apply(
        &self,
        function: &str,
        changes: Vec<ConfigChange>,
    ) -> Result<(), StoreError> {
        let (config, secrets) = (self.config.clone(), self.secrets.clone());
        let function = function.to_string();
        self.store
            .write(Durability::Flushed, move |w| {
                w.transaction((&config, &secrets), |(config, secrets)| {
                    for change in &changes {
                        match change {
                            ConfigChange::Set(item) => {
                                let k = SettingKey::new(&function, &item.key);
                                let (into, other) = if item.secret {
                                    (&secrets, &config)
                                } else {
                                    (&config, &secrets)
                                };
                                other.remove(&k)?;
                                into.insert(&k, &item.value)?;
                            }
                            ConfigChange::Remove(key) => {
                                let k = SettingKey::new(&function, key);
                                config.remove(&k)?;
                                secrets.remove(&k)?;
                            }
                        }
                    }
                    Ok::<_, crate::store::Abort<std::convert::Infallible>>(())
                })
            })
            .await?
            .map_err(StoreError::from)
    }

    /// Removes a function's settings and secrets (see
    /// [`KvStore::purge`](crate::capabilities::kv::store::KvStore::purge)
    /// for when). Not flushed.
    pub async fn purge(&self, function: &str) -> Result<(), StoreError> {
        let this = self.clone();
        let function = function.to_string();
        tokio::task::spawn_blocking(move || this.purge_blocking(&function))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("purge task: {e}"))))?
    }

    fn purge_blocking(&self, function: &str) -> Result<(), StoreError> {
        let mut batches = Vec::new();
        for tree in [&self.config, &self.secrets] {
            let mut batch = tree.batch();
            for key in tree.scan().within(&Of(function)).keys() {
                batch.remove(&key?);
            }
            batches.push((tree.clone(), batch));
        }
        self.store.write_blocking(Durability::Committed, move |w| {
            batches
                .into_iter()
                .try_for_each(|(tree, batch)| tree.apply(w, batch))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::settings::plan_set;
    use futures::executor::block_on;

    fn item(key: &str, value: &str, secret: bool) -> ConfigItem {
        ConfigItem {
            key: key.into(),
            value: value.into(),
            secret,
        }
    }

    fn values(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn store_round_trip_keeps_trees_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(&Store::open(dir.path(), 1 << 20).unwrap()).unwrap();
        let set = plan_set(&[], &values(&[("A", "1"), ("S", "x")]), false).unwrap();
        block_on(store.apply("f", set)).unwrap();
        // Turning A into a secret moves it between trees.
        let set = plan_set(&[], &values(&[("A", "2")]), true).unwrap();
        block_on(store.apply("f", set)).unwrap();
        assert_eq!(
            store.items("f").unwrap(),
            [item("A", "2", true), item("S", "x", false)]
        );
        assert!(store.items("g").unwrap().is_empty());
        block_on(store.apply("f", vec![ConfigChange::Remove("A".into())])).unwrap();
        assert_eq!(store.items("f").unwrap(), [item("S", "x", false)]);
        store.purge_blocking("f").unwrap();
        assert!(store.items("f").unwrap().is_empty());
    }
}
