//! Config and secrets for guests (`wisp:function/config`): per-function
//! settings set through the admin API, read at invocation time.
//!
//! Settings and secrets share one key space per function (a key is one or
//! the other) and are stored in separate trees. Each deployed function holds
//! an immutable [`ConfigSnapshot`] in the registry; a change writes the
//! store, then swaps in a registry whose entry for the function has the new
//! snapshot, so the next invocation sees it with no lock on the request path
//! and no redeploy.
//!
//! Secrets: readable by the guest, never returned by the admin API (masked
//! as [`MASK`]), never in a log line or error message (only key names are).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capabilities::bindings::wisp::function::config as wit;
use crate::config::config_limits::{MAX_KEY_LEN, MAX_KEYS, MAX_VALUE_BYTES};
use crate::store::StoreError;

pub(crate) mod store;

pub(crate) use store::{ConfigChange, ConfigItem, ConfigStore};

/// What the admin API shows instead of a secret's value.
pub const MASK: &str = "********";

/// Why a config change or read was refused. Nothing is stored when any of
/// these is returned. Messages name keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key name is not `[A-Za-z0-9_.-]{1,128}`.
    #[error("{0}")]
    InvalidKey(String),
    /// A value is over 64 KiB.
    #[error("{0}")]
    ValueTooLarge(String),
    /// A value holds a NUL character.
    #[error("{0}")]
    InvalidValue(String),
    /// The change would leave more than 256 keys.
    #[error("{0}")]
    TooManyKeys(String),
    /// A malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// The key is not set.
    #[error("config key {0:?} is not set")]
    KeyNotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: NATS cannot be reached, so nothing was changed.
    #[error("{0}")]
    ClusterUnavailable(String),
    /// Cluster mode: the config changed on another host meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// Cluster mode: this host has no cluster key, and the change needs it.
    #[error("{0}")]
    NoClusterKey(String),
}

impl From<crate::cluster::ClusterError> for ConfigError {
    fn from(e: crate::cluster::ClusterError) -> ConfigError {
        use crate::cluster::ClusterError::*;
        match e {
            Unavailable(_) => ConfigError::ClusterUnavailable(e.to_string()),
            Conflict(m) => ConfigError::Conflict(m),
            NoKey => ConfigError::NoClusterKey(e.to_string()),
            Invalid(m) => ConfigError::Store(StoreError::Corrupt {
                key: "cluster config".into(),
                reason: m,
            }),
        }
    }
}

/// One setting or secret as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigEntry {
    /// Key name.
    pub key: String,
    /// The value; `********` for a secret.
    pub value: String,
    /// Whether it is a secret.
    pub secret: bool,
}

/// A function's config as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigList {
    /// Function name.
    pub name: String,
    /// Settings and secrets by key; secrets masked.
    pub entries: Vec<ConfigEntry>,
}

/// Body of `PUT /v1/functions/{name}/config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// Keys and values to set, all or none.
    pub values: BTreeMap<String, String>,
    /// Store them as secrets (never shown again).
    #[serde(default)]
    pub secret: bool,
}

// ---------------------------------------------------------------------------
// Policy: pure functions

/// A key is `[A-Za-z0-9_.-]`, 1 to 128 characters.
pub(crate) fn check_key(key: &str) -> Result<(), ConfigError> {
    let ok_chars = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if key.is_empty() || key.len() > MAX_KEY_LEN || !ok_chars {
        // The key is not secret, but may be arbitrary text: show it escaped
        // and cut.
        let shown: String = key.chars().take(40).collect();
        return Err(ConfigError::InvalidKey(format!(
            "invalid config key {shown:?}: use 1 to {MAX_KEY_LEN} characters of A-Z, a-z, 0-9, \
             `_`, `.` and `-`"
        )));
    }
    Ok(())
}

/// A value is at most 64 KiB of UTF-8 without NUL.
pub(crate) fn check_value(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ConfigError::ValueTooLarge(format!(
            "the value of config key {key:?} is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(ConfigError::InvalidValue(format!(
            "the value of config key {key:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// The changes that set `values` over `current`, all checked first.
pub(crate) fn plan_set(
    current: &[ConfigItem],
    values: &BTreeMap<String, String>,
    secret: bool,
) -> Result<Vec<ConfigChange>, ConfigError> {
    if values.is_empty() {
        return Err(ConfigError::InvalidArgument(
            "no values given: send {\"values\": {\"KEY\": \"VALUE\"}}".into(),
        ));
    }
    for (key, value) in values {
        check_key(key)?;
        check_value(key, value)?;
    }
    let new_keys = values
        .keys()
        .filter(|k| !current.iter().any(|c| &c.key == *k))
        .count();
    let total = current.len() + new_keys;
    if total > MAX_KEYS {
        return Err(ConfigError::TooManyKeys(format!(
            "a function has at most {MAX_KEYS} config keys; this change would make {total}"
        )));
    }
    Ok(values
        .iter()
        .map(|(key, value)| {
            ConfigChange::Set(ConfigItem {
                key: key.clone(),
                value: value.clone(),
                secret,
            })
        })
        .collect())
}

/// The changes that remove `keys`; every one must be set.
pub(crate) fn plan_unset(
    current: &[ConfigItem],
    keys: &[String],
) -> Result<Vec<ConfigChange>, ConfigError> {
    if keys.is_empty() {
        return Err(ConfigError::InvalidArgument("no keys given".into()));
    }
    for key in keys {
        check_key(key)?;
        if !current.iter().any(|c| &c.key == key) {
            return Err(ConfigError::KeyNotFound(key.clone()));
        }
    }
    Ok(keys.iter().cloned().map(ConfigChange::Remove).collect())
}

/// `current` with `changes` applied, by key.
pub(crate) fn applied(current: &[ConfigItem], changes: &[ConfigChange]) -> Vec<ConfigItem> {
    let mut items: BTreeMap<String, ConfigItem> =
        current.iter().map(|i| (i.key.clone(), i.clone())).collect();
    for change in changes {
        match change {
            ConfigChange::Set(item) => {
                items.insert(item.key.clone(), item.clone());
            }
            ConfigChange::Remove(key) => {
                items.remove(key);
            }
        }
    }
    items.into_values().collect()
}

/// The changes that make `current` into `next` (nothing if they are the
/// same).
pub(crate) fn replacing(current: &[ConfigItem], next: &[ConfigItem]) -> Vec<ConfigChange> {
    let mut changes: Vec<ConfigChange> = current
        .iter()
        .filter(|c| !next.iter().any(|n| n.key == c.key))
        .map(|c| ConfigChange::Remove(c.key.clone()))
        .collect();
    changes.extend(
        next.iter()
            .filter(|n| !current.contains(n))
            .cloned()
            .map(ConfigChange::Set),
    );
    changes
}

/// The admin view: secrets masked.
pub(crate) fn masked(name: &str, items: &[ConfigItem]) -> ConfigList {
    ConfigList {
        name: name.to_string(),
        entries: items
            .iter()
            .map(|i| ConfigEntry {
                key: i.key.clone(),
                value: if i.secret {
                    MASK.to_string()
                } else {
                    i.value.clone()
                },
                secret: i.secret,
            })
            .collect(),
    }
}

/// What the guest's environment holds: the version's variables and, with
/// `config_env`, the plain settings (not secrets), which win over a
/// variable of the same name (they are the newer, changeable source).
pub(crate) fn guest_env(
    version_env: &BTreeMap<String, String>,
    config_env: bool,
    config: &ConfigSnapshot,
) -> Vec<(String, String)> {
    let mut env = version_env.clone();
    if config_env {
        for (k, v) in config.plain() {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.into_iter().collect()
}

/// A function's settings and secrets at one moment: immutable, shared by
/// every invocation through an `Arc`.
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct ConfigSnapshot {
    /// key → (value, secret)
    items: BTreeMap<String, (String, bool)>,
}

impl std::fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: values may be secrets.
        f.debug_set().entries(self.items.keys()).finish()
    }
}

impl ConfigSnapshot {
    pub fn from_items(items: Vec<ConfigItem>) -> ConfigSnapshot {
        ConfigSnapshot {
            items: items
                .into_iter()
                .map(|i| (i.key, (i.value, i.secret)))
                .collect(),
        }
    }

    /// A setting's or secret's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items.get(key).map(|(v, _)| v.as_str())
    }

    /// All key names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.items.keys().map(String::as_str)
    }

    /// Plain settings (no secrets).
    pub fn plain(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items
            .iter()
            .filter(|(_, (_, secret))| !secret)
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }
}

/// Reads a function's config from the store into a snapshot.
pub(crate) fn load_snapshot(
    store: &ConfigStore,
    name: &str,
) -> Result<Arc<ConfigSnapshot>, StoreError> {
    Ok(Arc::new(ConfigSnapshot::from_items(store.items(name)?)))
}

// ---------------------------------------------------------------------------
// The guest binding

/// What `wisp:function/config` sees of an invocation: the function's
/// settings and secrets as of its start.
pub(crate) struct ConfigView<'a>(pub(crate) &'a ConfigSnapshot);

/// `wisp:function/config` in the linker: its functions get a
/// [`ConfigView`] of the invocation's state.
pub(crate) struct ConfigCapability;

impl wasmtime::component::HasData for ConfigCapability {
    type Data<'a> = ConfigView<'a>;
}

impl wit::Host for ConfigView<'_> {
    fn get(&mut self, key: String) -> Option<String> {
        self.0.get(&key).map(str::to_string)
    }

    fn keys(&mut self) -> Vec<String> {
        self.0.keys().map(str::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: &str, secret: bool) -> ConfigItem {
        ConfigItem {
            key: key.into(),
            value: value.into(),
            secret,
        }
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_names() {
        for good in ["A", "db.url", "API_KEY", "x-1", &"k".repeat(128)] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", "a=b", "a\0", &"k".repeat(129)] {
            let e = check_key(bad).unwrap_err();
            assert!(matches!(e, ConfigError::InvalidKey(_)), "{bad}");
        }
        let msg = check_key("a b").unwrap_err().to_string();
        assert!(msg.contains("\"a b\"") && msg.contains("A-Z"), "{msg}");
    }

    #[test]
    fn values_are_checked_without_being_shown() {
        assert!(check_value("k", &"v".repeat(MAX_VALUE_BYTES)).is_ok());
        let big = "s3cr3t".repeat(MAX_VALUE_BYTES);
        let e = check_value("k", &big).unwrap_err();
        assert!(matches!(e, ConfigError::ValueTooLarge(_)));
        assert!(!e.to_string().contains("s3cr3t"));
        let e = check_value("k", "s3cr3t\0").unwrap_err();
        assert!(matches!(e, ConfigError::InvalidValue(_)));
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn planning_a_set() {
        let current = vec![item("A", "1", false), item("S", "x", true)];
        let plan = plan_set(&current, &values(&[("A", "2"), ("B", "3")]), true).unwrap();
        assert_eq!(plan.len(), 2);
        assert!(matches!(&plan[0], ConfigChange::Set(i) if i.key == "A" && i.secret));
        assert!(matches!(
            plan_set(&current, &BTreeMap::new(), false),
            Err(ConfigError::InvalidArgument(_))
        ));
        // One bad pair refuses the whole set.
        assert!(matches!(
            plan_set(&current, &values(&[("ok", "1"), ("not ok", "2")]), false),
            Err(ConfigError::InvalidKey(_))
        ));
        // The key count: replacing does not count, new keys do.
        let full: Vec<ConfigItem> = (0..MAX_KEYS)
            .map(|i| item(&format!("k{i}"), "v", false))
            .collect();
        assert!(plan_set(&full, &values(&[("k0", "new")]), false).is_ok());
        let e = plan_set(&full, &values(&[("k0", "new"), ("extra", "v")]), false).unwrap_err();
        assert!(matches!(e, ConfigError::TooManyKeys(_)), "{e}");
    }

    #[test]
    fn planning_an_unset() {
        let current = vec![item("A", "1", false), item("S", "x", true)];
        assert_eq!(plan_unset(&current, &["S".into()]).unwrap().len(), 1);
        assert!(matches!(
            plan_unset(&current, &["A".into(), "B".into()]),
            Err(ConfigError::KeyNotFound(k)) if k == "B"
        ));
    }

    #[test]
    fn secrets_are_masked_and_never_debug_printed() {
        let items = vec![item("A", "plain", false), item("S", "hunter2", true)];
        let list = masked("f", &items);
        assert_eq!(list.entries[0].value, "plain");
        assert_eq!(list.entries[1].value, MASK);
        assert!(list.entries[1].secret);
        assert!(!serde_json::to_string(&list).unwrap().contains("hunter2"));
        assert!(!format!("{items:?}").contains("hunter2"));
        let snap = ConfigSnapshot::from_items(items);
        assert!(!format!("{snap:?}").contains("hunter2"));
        // The guest reads both.
        assert_eq!(snap.get("S"), Some("hunter2"));
        assert_eq!(snap.keys().collect::<Vec<_>>(), ["A", "S"]);
    }

    #[test]
    fn environment_from_config() {
        let env = values(&[("A", "env"), ("B", "env")]);
        let snap =
            ConfigSnapshot::from_items(vec![item("B", "cfg", false), item("S", "hunter2", true)]);
        assert_eq!(
            guest_env(&env, false, &snap),
            [("A".into(), "env".into()), ("B".into(), "env".into())]
        );
        // Settings join (and win); secrets never become variables.
        assert_eq!(
            guest_env(&env, true, &snap),
            [("A".into(), "env".into()), ("B".into(), "cfg".into())]
        );
    }
}
