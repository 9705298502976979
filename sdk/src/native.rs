//! Stand-ins for the host's capabilities when the SDK is compiled for the
//! machine it runs on (`cargo test`), so handlers are tested natively: an
//! in-memory key-value store and configuration, private to each thread
//! (each test has its own), and log lines on stderr. Same signatures as the
//! generated bindings they replace.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The host's default limits, so native tests see the same errors (the
/// rules themselves are the host's: wisp-rules).
const MAX_KEY: u64 = wisp_rules::DEFAULT_KV_MAX_KEY_BYTES;
const MAX_VALUE: usize = 1 << 20;
const MAX_PAGE: u32 = 1000;

/// Values and their expiry.
type Store = BTreeMap<String, (Vec<u8>, Option<Instant>)>;

thread_local! {
    static KV: RefCell<Store> = const { RefCell::new(BTreeMap::new()) };
    static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    static PUBLISHED: RefCell<Vec<(String, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn reset() {
    KV.with_borrow_mut(BTreeMap::clear);
    CONFIG.with_borrow_mut(BTreeMap::clear);
    PUBLISHED.with_borrow_mut(Vec::clear);
}

pub(crate) fn published() -> Vec<(String, Vec<u8>)> {
    PUBLISHED.with_borrow(Clone::clone)
}

pub(crate) mod topics {
    use super::*;
    use crate::events::PublishError;

    /// The host's payload limit (256 KiB by default).
    const MAX_PAYLOAD: usize = 256 << 10;

    pub(crate) fn publish(
        topic: &str,
        payload: &[u8],
        _content_type: Option<&str>,
    ) -> Result<String, PublishError> {
        wisp_rules::validate_topic(topic).map_err(|e| PublishError::InvalidTopic(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(PublishError::PayloadTooLarge(MAX_PAYLOAD as u64));
        }
        PUBLISHED.with_borrow_mut(|p| {
            p.push((topic.to_string(), payload.to_vec()));
            Ok(p.len().to_string())
        })
    }
}

pub(crate) fn set_config(key: &str, value: &str) {
    CONFIG.with_borrow_mut(|c| c.insert(key.to_string(), value.to_string()));
}

pub(crate) mod kv {
    use super::*;
    pub(crate) use crate::bindings::wisp::function::kv::{Error, KeyPage};

    fn check_key(key: &str) -> Result<(), Error> {
        wisp_rules::check_kv_key(key, MAX_KEY).map_err(|e| Error::InvalidKey(e.to_string()))
    }

    /// Runs `f` on the store with expired keys removed.
    fn with_store<R>(f: impl FnOnce(&mut Store) -> R) -> R {
        KV.with_borrow_mut(|store| {
            let now = Instant::now();
            store.retain(|_, (_, expiry)| expiry.is_none_or(|at| at > now));
            f(store)
        })
    }

    pub(crate) fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key(key)?;
        Ok(with_store(|s| s.get(key).map(|(v, _)| v.clone())))
    }

    pub(crate) fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), Error> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(Error::ValueTooLarge(MAX_VALUE as u64));
        }
        let expiry = ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        with_store(|s| s.insert(key.to_string(), (value.to_vec(), expiry)));
        Ok(())
    }

    pub(crate) fn delete(key: &str) -> Result<bool, Error> {
        check_key(key)?;
        Ok(with_store(|s| s.remove(key).is_some()))
    }

    pub(crate) fn list_keys(
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        if cursor.is_some_and(|c| !c.starts_with(prefix)) {
            return Err(Error::InvalidCursor);
        }
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        with_store(|s| {
            let mut keys: Vec<String> = s
                .keys()
                .filter(|k| k.starts_with(prefix) && cursor.is_none_or(|c| k.as_str() > c))
                .take(limit + 1)
                .cloned()
                .collect();
            let more = keys.len() > limit;
            keys.truncate(limit);
            let cursor = more.then(|| keys.last().cloned()).flatten();
            Ok(KeyPage { keys, cursor })
        })
    }

    pub(crate) fn increment(key: &str, delta: i64) -> Result<i64, Error> {
        check_key(key)?;
        with_store(|s| {
            let current = match s.get(key) {
                None => 0,
                Some((v, _)) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or(Error::NotANumber)?,
            };
            let new = current.checked_add(delta).ok_or(Error::NotANumber)?;
            let expiry = s.get(key).and_then(|(_, e)| *e);
            s.insert(key.to_string(), (new.to_string().into_bytes(), expiry));
            Ok(new)
        })
    }

    pub(crate) fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        check_key(key)?;
        if new.len() > MAX_VALUE {
            return Err(Error::ValueTooLarge(MAX_VALUE as u64));
        }
        with_store(|s| {
            if s.get(key).map(|(v, _)| v.as_slice()) != expected {
                return Ok(false);
            }
            s.insert(key.to_string(), (new.to_vec(), None));
            Ok(true)
        })
    }
}

pub(crate) mod config {
    use super::*;

    pub(crate) fn get(key: &str) -> Option<String> {
        CONFIG.with_borrow(|c| c.get(key).cloned())
    }

    pub(crate) fn keys() -> Vec<String> {
        CONFIG.with_borrow(|c| c.keys().cloned().collect())
    }
}

pub(crate) mod log {
    pub(crate) use crate::bindings::wisp::function::log::Level;

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        eprintln!("{level} {message}");
    }
}
