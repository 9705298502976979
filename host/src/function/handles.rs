//! A deployed function's data, settings and log as the admin API and
//! embedders reach them (`Host::kv`, `Host::settings`, `Host::logs`):
//! handles that find the function in the registry or its records and then
//! call the capability's own operations, under the same limits and with
//! the same errors as the function's own calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::capabilities::kv::{KeyList, KvError, KvNamespace};
use crate::capabilities::logs::{
    Following, LogError, LogPage, LogQuery, LogSink, LogStore, now_ms, parse_since,
};
use crate::capabilities::outbound;
use crate::capabilities::settings::{
    ConfigChange, ConfigError, ConfigItem, ConfigList, ConfigSnapshot, ConfigStore, applied,
    guest_env, masked, plan_set, plan_unset, replacing,
};
use crate::cluster::Cluster;
use crate::function::records::{FunctionRecord, Records};
use crate::function::registry::{Deployed, Registry};

/// One function's key-value data, as the admin API and embedders reach it
/// (`Host::kv`): the same namespace, limits and errors
/// as the function's own calls.
pub struct Kv<'a> {
    registry: &'a ArcSwap<Registry>,
    function: &'a str,
}

impl<'a> Kv<'a> {
    pub(crate) fn new(registry: &'a ArcSwap<Registry>, function: &'a str) -> Kv<'a> {
        Kv { registry, function }
    }

    /// The namespace of the deployed function.
    fn namespace(&self) -> Result<Arc<KvNamespace>, KvError> {
        self.registry
            .load()
            .by_name
            .get(self.function)
            .map(|d| d.kv.clone())
            .ok_or_else(|| KvError::FunctionNotFound(self.function.to_string()))
    }

    /// The largest value the function may store, bytes.
    pub fn max_value_bytes(&self) -> Result<u64, KvError> {
        Ok(self.namespace()?.max_value_bytes())
    }

    /// The value of `key`; [`KvError::KeyNotFound`] if it is not set.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, KvError> {
        self.namespace()?
            .get(key.to_string())
            .await?
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))
    }

    /// Sets `key` (expiring after `ttl_ms` if given), under the same limits
    /// as the function's own writes. Durable when this returns.
    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.namespace()?
            .set(key.to_string(), value.to_vec(), ttl_ms)
            .await
    }

    /// Deletes `key`; [`KvError::KeyNotFound`] if it was not set.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        if self.namespace()?.delete(key.to_string()).await? {
            Ok(())
        } else {
            Err(KvError::KeyNotFound(key.to_string()))
        }
    }

    /// A page of the keys starting with `prefix`, after `cursor`.
    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyList, KvError> {
        self.namespace()?
            .list(prefix.to_string(), cursor.map(str::to_string), limit)
            .await
    }
}

/// One function's settings and secrets, as the admin API and embedders
/// reach them (`Host::settings`).
pub struct Settings<'a> {
    /// Serialises changes with deploys, rollbacks and deletes.
    pub(crate) admin_lock: &'a tokio::sync::Mutex<()>,
    pub(crate) records: &'a Records,
    pub(crate) store: &'a ConfigStore,
    pub(crate) registry: &'a ArcSwap<Registry>,
    pub(crate) function: &'a str,
    /// Cluster mode: where settings and secrets are kept first.
    pub(crate) cluster: Option<&'a Cluster>,
}

impl Settings<'_> {
    fn require_function(&self) -> Result<FunctionRecord, ConfigError> {
        self.records
            .get(self.function)?
            .ok_or_else(|| ConfigError::FunctionNotFound(self.function.to_string()))
    }

    /// The settings and secrets, secrets masked.
    pub fn list(&self) -> Result<ConfigList, ConfigError> {
        self.require_function()?;
        Ok(masked(self.function, &self.store.items(self.function)?))
    }

    /// Sets several settings (or, with `secret`, secrets) at once, all or
    /// none. Durable, and seen by the next invocation, when this returns.
    pub async fn set(
        &self,
        values: BTreeMap<String, String>,
        secret: bool,
    ) -> Result<ConfigList, ConfigError> {
        self.change(|current| plan_set(current, &values, secret))
            .await
    }

    /// Removes settings or secrets; every key must be set (otherwise
    /// nothing is removed).
    pub async fn unset(&self, keys: &[String]) -> Result<ConfigList, ConfigError> {
        self.change(|current| plan_unset(current, keys)).await
    }

    async fn change(
        &self,
        plan: impl FnOnce(&[ConfigItem]) -> Result<Vec<ConfigChange>, ConfigError>,
    ) -> Result<ConfigList, ConfigError> {
        let name = self.function;
        // Serialised with deploys, rollbacks and deletes: the registry entry
        // rebuilt below must not race one of theirs.
        let _guard = self.admin_lock.lock().await;
        let record = self.require_function()?;
        let store = self.store;
        // Cluster mode: the change is planned on the cluster's config and
        // written there first (then this host's copy is made the same).
        let (current, revision) = match self.cluster {
            Some(cluster) => {
                let shared = cluster.config(name).await?;
                if shared.withheld {
                    return Err(crate::cluster::ClusterError::NoKey.into());
                }
                (shared.items, shared.revision)
            }
            None => (store.items(name)?, None),
        };
        let changes = plan(&current)?;
        // The outbound allow-list set through config is checked like the
        // one given at deploy, before anything is stored.
        for change in &changes {
            if let ConfigChange::Set(item) = change
                && item.key == outbound::CONFIG_KEY
            {
                outbound::effective(&[], Some(&item.value))
                    .map_err(|e| ConfigError::InvalidValue(e.to_string()))?;
            }
        }
        let keys: Vec<String> = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(i) => i.key.clone(),
                ConfigChange::Remove(k) => k.clone(),
            })
            .collect();
        let changes = match self.cluster {
            Some(cluster) => {
                let next = applied(&current, &changes);
                cluster.put_config(name, &next, revision).await?;
                replacing(&store.items(name)?, &next)
            }
            None => changes,
        };
        // On the store's writer, answered once flushed.
        store.apply(name, changes).await?;
        let items = store.items(name)?;
        tracing::info!(function = name, keys = ?keys, "config changed");
        reconfigure(self.registry, &record, items.clone());
        Ok(masked(name, &items))
    }
}

/// Makes the deployed function see its new settings and secrets: the next
/// invocations (and instances built from now on) get them.
pub(crate) fn reconfigure(
    registry_swap: &ArcSwap<Registry>,
    record: &FunctionRecord,
    items: Vec<ConfigItem>,
) {
    let name = record.name.as_str();
    {
        let snapshot = Arc::new(ConfigSnapshot::from_items(items));
        let registry = registry_swap.load();
        // Each deployed version with the new settings, as its own record
        // says to pass them.
        let with_settings = |old: &Arc<Deployed>| {
            let Some(v) = record.version(old.version) else {
                return old.clone();
            };
            // Validated above (and at deploy), so this cannot fail; keep
            // the old list rather than panic if it somehow does.
            let allow_outbound =
                outbound::effective(&v.allow_outbound, snapshot.get(outbound::CONFIG_KEY))
                    .map(Arc::new)
                    .unwrap_or_else(|_| old.allow_outbound.clone());
            Arc::new(Deployed {
                allow_outbound,
                env: guest_env(&v.env, v.config_env, &snapshot),
                config: snapshot.clone(),
                // Instances built from now on see the new config.
                reuse: old.reuse.as_ref().map(|r| r.fresh()),
                ..Deployed::clone(old)
            })
        };
        if let Some(old) = registry.by_name.get(name) {
            let active = with_settings(old);
            let mut next = registry.with(active.clone());
            // The versions its aliases point to, the active one shared.
            if let Some(aliases) = registry.aliases.get(name) {
                let versions: std::collections::BTreeMap<u64, Arc<Deployed>> = aliases
                    .versions
                    .iter()
                    .map(|(&v, d)| match v == active.version {
                        true => (v, active.clone()),
                        false => (v, with_settings(d)),
                    })
                    .collect();
                let rebuilt = crate::function::registry::Aliases::with_versions(aliases, versions);
                next = next.with_aliases(name, Some(Arc::new(rebuilt)));
            }
            registry_swap.store(Arc::new(next));
        }
    }
}

/// One function's log, as the admin API and embedders read it
/// (`Host::logs`).
pub struct Logs<'a> {
    pub(crate) records: &'a Records,
    pub(crate) sink: &'a LogSink,
    pub(crate) store: &'a LogStore,
    pub(crate) function: &'a str,
    /// Cluster mode: the log of every host is read there.
    pub(crate) cluster: Option<&'a Cluster>,
}

impl Logs<'_> {
    /// Follows the lines this host stores from now on (every function's:
    /// the caller keeps the function's own). Refused for a function that
    /// does not exist, and when as many streams are open as the host
    /// serves. Lines other hosts of a cluster store are not seen here:
    /// each host streams its own.
    pub(crate) fn follow(&self) -> Result<Following, LogError> {
        if self.records.get(self.function)?.is_none() {
            return Err(LogError::FunctionNotFound(self.function.to_string()));
        }
        self.sink.follow().ok_or(LogError::TooManyStreams)
    }

    /// Reads the function's log (its lines since the last delete of the
    /// function, within the retention bounds). Lines written before this
    /// call are included.
    pub async fn read(&self, q: LogQuery) -> Result<LogPage, LogError> {
        if self.records.get(self.function)?.is_none() {
            return Err(LogError::FunctionNotFound(self.function.to_string()));
        }
        let since = q
            .since
            .as_deref()
            .map(|s| parse_since(s, now_ms()))
            .transpose()
            .map_err(LogError::InvalidArgument)?;
        let limit = q.limit.unwrap_or(1000);
        if limit == 0 || limit > 10_000 {
            return Err(LogError::InvalidArgument(
                "limit must be between 1 and 10000".into(),
            ));
        }
        if let Some(shared) = self.cluster.and_then(Cluster::logs) {
            // This host's lines so far are published once the writer has
            // them (it waits for the cluster's ack).
            self.sink.sync_blocking_async().await;
            let entries = shared
                .read(
                    self.function,
                    q.after,
                    since,
                    q.invocation.as_deref(),
                    limit,
                )
                .await
                .map_err(|e| {
                    LogError::Internal(format!("reading the cluster's log failed: {e:#}"))
                })?;
            let cursor = entries.last().map(|e| e.seq).or(q.after);
            return Ok(LogPage { entries, cursor });
        }
        let (sink, store) = (self.sink.clone(), self.store.clone());
        let name = self.function.to_string();
        let entries = tokio::task::spawn_blocking(move || {
            sink.sync_blocking();
            store.read(&name, q.after, since, q.invocation.as_deref(), limit)
        })
        .await
        .map_err(|e| LogError::Internal(e.to_string()))??;
        let cursor = entries.last().map(|e| e.seq).or(q.after);
        Ok(LogPage { entries, cursor })
    }
}
