//! Key-value storage for guests (`wisp:function/kv`): one namespace per
//! function in the host's store, with key, value and total-size limits.
//!
//! Three layers:
//! - pure policy (no sled, no wasm): key and value checks, quota
//!   accounting, expiry, cursors, counters; unit-tested at the bottom;
//! - [`KvNamespace`]: one function's namespace, the operations the guest and
//!   the admin API share, each a read-decide-write transaction through
//!   [`Store::kv_update`] (so quota accounting is exact under concurrent
//!   writers) and flushed before a write is acknowledged;
//! - the guest binding (`kv::Host` on [`InvocationState`]) and the admin
//!   methods on [`Host`](crate::Host).
//!
//! Accounting: an entry takes `key bytes + value bytes`; a function's usage
//! is the sum over its stored entries. Replacing a value counts the
//! difference, deleting gives the bytes back. An expired entry is absent to
//! every reader and its bytes are reclaimed when it is touched (get, set,
//! delete, increment, compare-and-swap) or listed. A write that would pass
//! the total is refused, unless it shrinks the usage.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::capabilities::bindings::wisp::function::kv as wit;
use crate::config::Limits;
use crate::error::ApiError;
use crate::invoke::InvocationState;
use crate::store::{KvEntry, KvUpdateError, KvWrite, Store, StoreError};

/// Most keys one `list-keys` page returns.
pub const MAX_PAGE: usize = 1000;

/// Why a key-value operation failed. The first five are the guest-visible
/// reasons (the WIT `error` variant); the rest only come from the admin API.
/// Nothing is written when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The key is empty or too long.
    #[error("{0}")]
    InvalidKey(String),
    /// The value is over the function's value limit.
    #[error("the value is larger than the limit of {limit} bytes")]
    ValueTooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// The write would take the function past its total limit.
    #[error("the write would take the function's keys and values past its limit of {limit} bytes")]
    QuotaExceeded {
        /// The limit, bytes.
        limit: u64,
    },
    /// `increment` on a value that is not a decimal i64, or an overflow.
    #[error("the stored value is not a decimal 64-bit integer, or the result would overflow")]
    NotANumber,
    /// A cursor that no listing of this prefix returned.
    #[error("the cursor is not one a listing of this prefix returned")]
    InvalidCursor,
    /// A malformed admin parameter (ttl, limit).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// The key is not set (admin get and delete).
    #[error("key {0:?} is not set")]
    KeyNotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KvError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            KvError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            KvError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            KvError::QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            KvError::NotANumber => (StatusCode::CONFLICT, "not_a_number"),
            KvError::InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
            KvError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            KvError::FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            KvError::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            KvError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The guest's view of the error; store failures are logged here and
    /// reach the guest without details.
    fn into_guest(self, function: &str) -> wit::Error {
        match self {
            KvError::InvalidKey(m) => wit::Error::InvalidKey(m),
            KvError::ValueTooLarge { limit } => wit::Error::ValueTooLarge(limit),
            KvError::QuotaExceeded { limit } => wit::Error::QuotaExceeded(limit),
            KvError::NotANumber => wit::Error::NotANumber,
            KvError::InvalidCursor => wit::Error::InvalidCursor,
            KvError::Store(e) => {
                tracing::error!(function, error = %e, "key-value store failure");
                wit::Error::Internal("the host's store failed; see the host log".into())
            }
            other => wit::Error::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Not `is_server_error`: 507 quota_exceeded is the client's to read.
        if let KvError::Store(_) = self {
            tracing::error!(error = %self, "key-value admin request failed");
            return ApiError::new(status, code, "internal error; see the host log").into_response();
        }
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

impl<E: Into<KvError>> From<KvUpdateError<E>> for KvError {
    fn from(e: KvUpdateError<E>) -> KvError {
        match e {
            KvUpdateError::Rejected(e) => e.into(),
            KvUpdateError::Store(e) => KvError::Store(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Policy: pure functions

/// The key-value limits of one function (from its [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KvLimits {
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub max_total_bytes: u64,
}

impl From<&Limits> for KvLimits {
    fn from(l: &Limits) -> KvLimits {
        KvLimits {
            max_key_bytes: l.kv_max_key_bytes,
            max_value_bytes: l.kv_max_value_bytes,
            max_total_bytes: l.kv_max_total_bytes,
        }
    }
}

/// A key is a non-empty UTF-8 string of at most `max` bytes.
pub(crate) fn check_key(key: &str, max: u64) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::InvalidKey("the key is empty".into()));
    }
    if key.len() as u64 > max {
        return Err(KvError::InvalidKey(format!(
            "the key is {} bytes; the limit is {max} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// A value is at most `max` bytes.
pub(crate) fn check_value(len: usize, max: u64) -> Result<(), KvError> {
    if len as u64 > max {
        return Err(KvError::ValueTooLarge { limit: max });
    }
    Ok(())
}

/// Bytes an entry takes against the quota.
pub(crate) fn entry_size(key: &str, value_len: usize) -> u64 {
    key.len() as u64 + value_len as u64
}

/// The function's usage after replacing an entry of `old` bytes (0: none)
/// with one of `new` bytes (0: removed). A write that grows the usage past
/// `max_total` is refused; one that shrinks it always passes (a function
/// over a lowered limit can still clean up).
pub(crate) fn account(usage: u64, old: u64, new: u64, max_total: u64) -> Result<u64, KvError> {
    let after = usage.saturating_sub(old).saturating_add(new);
    if new > old && after > max_total {
        return Err(KvError::QuotaExceeded { limit: max_total });
    }
    Ok(after)
}

/// Whether an entry expiring at `expires_at_ms` is gone at `now_ms`.
pub(crate) fn is_expired(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_some_and(|t| now_ms >= t)
}

/// When an entry written at `now_ms` with `ttl_ms` expires. A TTL of 0
/// expires it at once.
pub(crate) fn expiry(now_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    // Never 0: 0 means "no expiry" in the stored header.
    ttl_ms.map(|ttl| now_ms.saturating_add(ttl).max(1))
}

/// A page size: 1 to [`MAX_PAGE`]; 0 asks for the largest page.
pub(crate) fn page_limit(requested: u32) -> usize {
    match requested as usize {
        0 => MAX_PAGE,
        n => n.min(MAX_PAGE),
    }
}

const CURSOR_TAG: &str = "k1.";

/// The cursor after `last_key`: opaque to callers (a version tag and the
/// key in hex), so its format can change.
pub(crate) fn encode_cursor(last_key: &str) -> String {
    format!("{CURSOR_TAG}{}", hex::encode(last_key))
}

/// The key a cursor stands for; it must be one a listing of `prefix`
/// returned.
pub(crate) fn decode_cursor(cursor: &str, prefix: &str) -> Result<String, KvError> {
    let hex_part = cursor
        .strip_prefix(CURSOR_TAG)
        .ok_or(KvError::InvalidCursor)?;
    let bytes = hex::decode(hex_part).map_err(|_| KvError::InvalidCursor)?;
    let key = String::from_utf8(bytes).map_err(|_| KvError::InvalidCursor)?;
    if key.is_empty() || !key.starts_with(prefix) {
        return Err(KvError::InvalidCursor);
    }
    Ok(key)
}

/// The counter stored in `value` (decimal text), plus `delta`.
pub(crate) fn add_to_counter(value: Option<&[u8]>, delta: i64) -> Result<i64, KvError> {
    let current = match value {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(KvError::NotANumber)?,
    };
    current.checked_add(delta).ok_or(KvError::NotANumber)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The live part of a stored entry: `None` when absent or expired.
fn live(entry: &Option<KvEntry>, now: u64) -> Option<&KvEntry> {
    entry.as_ref().filter(|e| !is_expired(e.expires_at_ms, now))
}

// ---------------------------------------------------------------------------
// One function's namespace

/// A page of keys and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub cursor: Option<String>,
}

/// One function's key-value namespace: shared by its invocations (one per
/// deployed version, in the registry) and used by the admin API.
pub(crate) struct KvNamespace {
    store: Store,
    function: Arc<str>,
    limits: KvLimits,
}

impl KvNamespace {
    pub fn new(store: Store, function: Arc<str>, limits: &Limits) -> KvNamespace {
        KvNamespace {
            store,
            function,
            limits: limits.into(),
        }
    }

    /// The function's value limit (the admin API caps uploads with it).
    pub fn max_value_bytes(&self) -> u64 {
        self.limits.max_value_bytes
    }

    fn update<T>(
        &self,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), KvError>,
    ) -> Result<(T, bool), KvError> {
        Ok(self.store.kv_update(&self.function, key, decide)?)
    }

    /// Removes `key` if it is (still) expired at `now`: reclaims its bytes.
    fn reclaim(&self, key: &str, now: u64) -> Result<(), KvError> {
        self.update(key, |old, usage| match old {
            Some(e) if is_expired(e.expires_at_ms, now) => {
                let used = account(usage, entry_size(key, e.value.len()), 0, u64::MAX)?;
                Ok((KvWrite::Remove, used, ()))
            }
            _ => Ok((KvWrite::Keep, usage, ())),
        })?;
        Ok(())
    }

    pub fn get_at(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        match self.store.kv_get(&self.function, key)? {
            None => Ok(None),
            Some(e) if !is_expired(e.expires_at_ms, now) => Ok(Some(e.value.to_vec())),
            Some(_) => {
                // Not flushed: a reclaim nobody was told about can be redone.
                self.reclaim(key, now)?;
                Ok(None)
            }
        }
    }

    /// Returns whether anything was written (then the caller flushes).
    pub fn set_at(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        check_value(value.len(), self.limits.max_value_bytes)?;
        let expires_at_ms = expiry(now, ttl_ms);
        let max_total = self.limits.max_total_bytes;
        let ((), wrote) = self.update(key, |old, usage| {
            let old_size = old.map_or(0, |e| entry_size(key, e.value.len()));
            let used = account(usage, old_size, entry_size(key, value.len()), max_total)?;
            let write = KvWrite::Put {
                value: value.to_vec(),
                expires_at_ms,
            };
            Ok((write, used, ()))
        })?;
        Ok(wrote)
    }

    /// True if the key was set (and not expired).
    pub fn delete_at(&self, key: &str, now: u64) -> Result<(bool, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        self.update(key, |old, usage| match old {
            None => Ok((KvWrite::Keep, usage, false)),
            Some(e) => {
                let used = account(usage, entry_size(key, e.value.len()), 0, u64::MAX)?;
                Ok((KvWrite::Remove, used, !is_expired(e.expires_at_ms, now)))
            }
        })
    }

    pub fn increment_at(&self, key: &str, delta: i64, now: u64) -> Result<(i64, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        let limits = self.limits;
        self.update(key, |old, usage| {
            let current = live(&old, now);
            let n = add_to_counter(current.map(|e| &e.value[..]), delta)?;
            let text = n.to_string().into_bytes();
            check_value(text.len(), limits.max_value_bytes)?;
            let old_size = old.as_ref().map_or(0, |e| entry_size(key, e.value.len()));
            let used = account(
                usage,
                old_size,
                entry_size(key, text.len()),
                limits.max_total_bytes,
            )?;
            // A counter keeps its expiry; an expired one starts afresh.
            let expires_at_ms = current.and_then(|e| e.expires_at_ms);
            Ok((
                KvWrite::Put {
                    value: text,
                    expires_at_ms,
                },
                used,
                n,
            ))
        })
    }

    pub fn compare_and_swap_at(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        now: u64,
    ) -> Result<(bool, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        check_value(new.len(), self.limits.max_value_bytes)?;
        let max_total = self.limits.max_total_bytes;
        self.update(key, |old, usage| {
            let current = live(&old, now).map(|e| &e.value[..]);
            if current != expected {
                return Ok((KvWrite::Keep, usage, false));
            }
            let old_size = old.as_ref().map_or(0, |e| entry_size(key, e.value.len()));
            let used = account(usage, old_size, entry_size(key, new.len()), max_total)?;
            let write = KvWrite::Put {
                value: new.to_vec(),
                expires_at_ms: None,
            };
            Ok((write, used, true))
        })
    }

    pub fn list_at(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
        now: u64,
    ) -> Result<KeyList, KvError> {
        let limit = page_limit(limit);
        let mut after = cursor.map(|c| decode_cursor(c, prefix)).transpose()?;
        let mut keys = Vec::new();
        let mut expired = Vec::new();
        // One more than a page, to know whether there is a next one.
        while keys.len() <= limit {
            let want = limit + 1 - keys.len();
            let batch = self
                .store
                .kv_scan(&self.function, prefix, after.as_deref(), want)?;
            let done = batch.len() < want;
            after = batch.last().map(|(k, _)| k.clone()).or(after);
            for (key, expires) in batch {
                if is_expired(expires, now) {
                    expired.push(key);
                } else {
                    keys.push(key);
                }
            }
            if done {
                break;
            }
        }
        for key in &expired {
            self.reclaim(key, now)?;
        }
        let cursor = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| encode_cursor(k))
        } else {
            None
        };
        Ok(KeyList { keys, cursor })
    }

    async fn flush_if(&self, wrote: bool) -> Result<(), KvError> {
        if wrote {
            // A write the caller is told about is on disk first.
            self.store.flush().await?;
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.get_at(key, now_ms())
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        let wrote = self.set_at(key, value, ttl_ms, now_ms())?;
        self.flush_if(wrote).await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let (was_set, wrote) = self.delete_at(key, now_ms())?;
        self.flush_if(wrote).await?;
        Ok(was_set)
    }

    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let (n, wrote) = self.increment_at(key, delta, now_ms())?;
        self.flush_if(wrote).await?;
        Ok(n)
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let (swapped, wrote) = self.compare_and_swap_at(key, expected, new, now_ms())?;
        self.flush_if(wrote).await?;
        Ok(swapped)
    }

    pub async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyList, KvError> {
        self.list_at(prefix, cursor, limit, now_ms())
    }
}

// ---------------------------------------------------------------------------
// The guest binding

impl wit::Host for InvocationState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        let ns = &self.kv;
        ns.get(&key).await.map_err(|e| e.into_guest(&ns.function))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), wit::Error> {
        let ns = &self.kv;
        ns.set(&key, &value, ttl_ms)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }

    async fn delete(&mut self, key: String) -> Result<bool, wit::Error> {
        let ns = &self.kv;
        ns.delete(&key)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<wit::KeyPage, wit::Error> {
        let ns = &self.kv;
        let page = ns
            .list(&prefix, cursor.as_deref(), limit)
            .await
            .map_err(|e| e.into_guest(&ns.function))?;
        Ok(wit::KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, wit::Error> {
        let ns = &self.kv;
        ns.increment(&key, delta)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, wit::Error> {
        let ns = &self.kv;
        ns.compare_and_swap(&key, expected.as_deref(), &new)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }
}

// ---------------------------------------------------------------------------
// The admin side

impl crate::Host {
    /// The namespace of a deployed function.
    fn kv_namespace(&self, name: &str) -> Result<Arc<KvNamespace>, KvError> {
        self.inner
            .registry
            .load()
            .by_name
            .get(name)
            .map(|d| d.kv.clone())
            .ok_or_else(|| KvError::FunctionNotFound(name.to_string()))
    }

    /// The largest value `name` may store, bytes.
    pub fn kv_max_value_bytes(&self, name: &str) -> Result<u64, KvError> {
        Ok(self.kv_namespace(name)?.max_value_bytes())
    }

    /// The value of `key` in function `name`'s key-value namespace.
    pub async fn kv_get(&self, name: &str, key: &str) -> Result<Vec<u8>, KvError> {
        self.kv_namespace(name)?
            .get(key)
            .await?
            .ok_or_else(|| KvError::KeyNotFound(key.to_string()))
    }

    /// Sets `key` (expiring after `ttl_ms` if given), under the same limits
    /// as the function's own writes. Durable when this returns.
    pub async fn kv_set(
        &self,
        name: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.kv_namespace(name)?.set(key, value, ttl_ms).await
    }

    /// Deletes `key`; [`KvError::KeyNotFound`] if it was not set.
    pub async fn kv_delete(&self, name: &str, key: &str) -> Result<(), KvError> {
        if self.kv_namespace(name)?.delete(key).await? {
            Ok(())
        } else {
            Err(KvError::KeyNotFound(key.to_string()))
        }
    }

    /// A page of `name`'s keys starting with `prefix`, after `cursor`.
    pub async fn kv_list(
        &self,
        name: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyList, KvError> {
        self.kv_namespace(name)?.list(prefix, cursor, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked() {
        assert!(check_key("a", 512).is_ok());
        assert!(check_key(&"x".repeat(512), 512).is_ok());
        assert!(matches!(check_key("", 512), Err(KvError::InvalidKey(m)) if m.contains("empty")));
        assert!(
            matches!(check_key(&"x".repeat(513), 512), Err(KvError::InvalidKey(m)) if m.contains("513"))
        );
        // Bytes, not characters.
        assert!(check_key(&"é".repeat(256), 512).is_ok());
        assert!(check_key(&"é".repeat(257), 512).is_err());
        assert!(check_value(10, 10).is_ok());
        assert!(matches!(
            check_value(11, 10),
            Err(KvError::ValueTooLarge { limit: 10 })
        ));
    }

    #[test]
    fn quota_accounting() {
        assert_eq!(entry_size("ab", 3), 5);
        // New entry.
        assert_eq!(account(0, 0, 5, 10).unwrap(), 5);
        // Exactly at the limit passes; one over fails.
        assert_eq!(account(5, 0, 5, 10).unwrap(), 10);
        assert!(matches!(
            account(6, 0, 5, 10),
            Err(KvError::QuotaExceeded { limit: 10 })
        ));
        // Replacing counts the difference.
        assert_eq!(account(10, 5, 5, 10).unwrap(), 10);
        assert_eq!(account(10, 5, 3, 10).unwrap(), 8);
        assert!(account(10, 5, 6, 10).is_err());
        // Deleting gives the bytes back.
        assert_eq!(account(10, 5, 0, 10).unwrap(), 5);
        // Over a lowered limit: shrinking still works, growing does not.
        assert_eq!(account(20, 5, 4, 10).unwrap(), 19);
        assert!(account(20, 5, 6, 10).is_err());
    }

    #[test]
    fn expiry_decisions() {
        assert!(!is_expired(None, u64::MAX));
        assert!(!is_expired(Some(100), 99));
        assert!(is_expired(Some(100), 100));
        assert!(is_expired(Some(100), 101));
        assert_eq!(expiry(1000, None), None);
        assert_eq!(expiry(1000, Some(500)), Some(1500));
        assert_eq!(expiry(u64::MAX - 1, Some(500)), Some(u64::MAX));
        // A TTL of 0 expires at once, and is never stored as "no expiry".
        assert_eq!(expiry(0, Some(0)), Some(1));
        assert!(is_expired(expiry(1000, Some(0)), 1000));
    }

    #[test]
    fn cursors_round_trip_and_are_checked() {
        for key in ["a", "user/42", "é\0x", &"k".repeat(512)] {
            let c = encode_cursor(key);
            assert_eq!(decode_cursor(&c, "").unwrap(), key);
        }
        let c = encode_cursor("user/42");
        assert_eq!(decode_cursor(&c, "user/").unwrap(), "user/42");
        // A cursor from another prefix, garbage, or no tag.
        assert!(matches!(
            decode_cursor(&c, "admin/"),
            Err(KvError::InvalidCursor)
        ));
        assert!(decode_cursor("k1.zz", "").is_err());
        assert!(decode_cursor("user/42", "").is_err());
        assert!(decode_cursor(&format!("k1.{}", hex::encode([0xff, 0xfe])), "").is_err());
        assert!(decode_cursor("k1.", "").is_err());
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(0), MAX_PAGE);
        assert_eq!(page_limit(1), 1);
        assert_eq!(page_limit(1000), 1000);
        assert_eq!(page_limit(5000), 1000);
    }

    #[test]
    fn counters() {
        assert_eq!(add_to_counter(None, 5).unwrap(), 5);
        assert_eq!(add_to_counter(Some(b"41"), 1).unwrap(), 42);
        assert_eq!(add_to_counter(Some(b"-3"), -4).unwrap(), -7);
        assert!(matches!(
            add_to_counter(Some(b"abc"), 1),
            Err(KvError::NotANumber)
        ));
        assert!(add_to_counter(Some(b""), 1).is_err());
        assert!(add_to_counter(Some(b" 1"), 1).is_err());
        assert!(add_to_counter(Some(b"\xff"), 1).is_err());
        assert!(add_to_counter(Some(i64::MAX.to_string().as_bytes()), 1).is_err());
        assert!(add_to_counter(Some(i64::MIN.to_string().as_bytes()), -1).is_err());
    }

    // -- against a real (temporary) store

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    fn ns(store: &Store, name: &str, total: u64) -> KvNamespace {
        let limits = Limits {
            kv_max_key_bytes: 16,
            kv_max_value_bytes: 64,
            kv_max_total_bytes: total,
            ..Limits::default()
        };
        KvNamespace::new(store.clone(), Arc::from(name), &limits)
    }

    #[test]
    fn namespaces_are_isolated() {
        let (_d, store) = store();
        let a = ns(&store, "a", 1000);
        let ab = ns(&store, "ab", 1000);
        a.set_at("k", b"from a", None, 0).unwrap();
        // "a\0k" vs "ab\0k": a name that is a prefix of another shares nothing.
        assert_eq!(ab.get_at("k", 0).unwrap(), None);
        ab.set_at("k", b"from ab", None, 0).unwrap();
        assert_eq!(a.get_at("k", 0).unwrap().unwrap(), b"from a");
        assert_eq!(a.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        assert_eq!(ab.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        assert_eq!(store.kv_usage("a").unwrap(), 7);
        assert_eq!(store.kv_usage("ab").unwrap(), 8);
        store.purge_function_data("a").unwrap();
        assert_eq!(a.get_at("k", 0).unwrap(), None);
        assert_eq!(store.kv_usage("a").unwrap(), 0);
        assert_eq!(ab.get_at("k", 0).unwrap().unwrap(), b"from ab");
    }

    #[test]
    fn failed_writes_write_nothing() {
        let (_d, store) = store();
        let n = ns(&store, "f", 20);
        n.set_at("k", b"abcdefghij", None, 0).unwrap(); // 11 bytes
        let before = (store.kv_usage("f").unwrap(), n.get_at("k", 0).unwrap());
        assert!(matches!(
            n.set_at("", b"x", None, 0),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            n.set_at(&"x".repeat(17), b"x", None, 0),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            n.set_at("v", &[0; 65], None, 0),
            Err(KvError::ValueTooLarge { limit: 64 })
        ));
        // 11 + 10 > 20.
        assert!(matches!(
            n.set_at("k2", b"012345678", None, 0),
            Err(KvError::QuotaExceeded { limit: 20 })
        ));
        // Growing k past the total fails too; the old value stays.
        assert!(n.set_at("k", &[1; 20], None, 0).is_err());
        assert!(matches!(
            n.increment_at("k", 1, 0),
            Err(KvError::NotANumber)
        ));
        assert!(
            n.compare_and_swap_at("k", Some(b"abcdefghij"), &[1; 20], 0)
                .is_err()
        );
        assert_eq!(
            (store.kv_usage("f").unwrap(), n.get_at("k", 0).unwrap()),
            before
        );
        assert_eq!(n.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        // Exactly up to the limit is fine: 11 + 9.
        n.set_at("k2", b"0123456", None, 0).unwrap();
        assert_eq!(store.kv_usage("f").unwrap(), 20);
        // Replacing with a smaller value and deleting give bytes back.
        n.set_at("k", b"0", None, 0).unwrap();
        assert_eq!(store.kv_usage("f").unwrap(), 11);
        assert_eq!(n.delete_at("k2", 0).unwrap(), (true, true));
        assert_eq!(store.kv_usage("f").unwrap(), 2);
        assert_eq!(n.delete_at("k2", 0).unwrap(), (false, false));
    }

    #[test]
    fn compare_and_swap_semantics() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        // None: only if unset.
        assert!(n.compare_and_swap_at("k", None, b"1", 0).unwrap().0);
        assert!(!n.compare_and_swap_at("k", None, b"2", 0).unwrap().0);
        assert!(!n.compare_and_swap_at("k", Some(b"x"), b"2", 0).unwrap().0);
        assert_eq!(n.get_at("k", 0).unwrap().unwrap(), b"1");
        assert!(n.compare_and_swap_at("k", Some(b"1"), b"22", 0).unwrap().0);
        assert_eq!(n.get_at("k", 0).unwrap().unwrap(), b"22");
        assert_eq!(store.kv_usage("f").unwrap(), 3);
        // An expired value counts as unset.
        n.set_at("t", b"old", Some(10), 0).unwrap();
        assert!(
            !n.compare_and_swap_at("t", Some(b"old"), b"new", 10)
                .unwrap()
                .0
        );
        assert!(n.compare_and_swap_at("t", None, b"new", 10).unwrap().0);
        assert_eq!(n.get_at("t", 10_000).unwrap().unwrap(), b"new");
        assert_eq!(store.kv_usage("f").unwrap(), 3 + 4);
    }

    #[test]
    fn increments() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        assert_eq!(n.increment_at("c", 5, 0).unwrap().0, 5);
        assert_eq!(n.increment_at("c", -7, 0).unwrap().0, -2);
        assert_eq!(n.get_at("c", 0).unwrap().unwrap(), b"-2");
        assert_eq!(store.kv_usage("f").unwrap(), 3);
        n.set_at("s", b"text", None, 0).unwrap();
        assert!(matches!(
            n.increment_at("s", 1, 0),
            Err(KvError::NotANumber)
        ));
        n.set_at("m", i64::MAX.to_string().as_bytes(), None, 0)
            .unwrap();
        assert!(matches!(
            n.increment_at("m", 1, 0),
            Err(KvError::NotANumber)
        ));
        // A counter with a TTL keeps it; once expired it starts from 0.
        n.set_at("t", b"10", Some(100), 0).unwrap();
        assert_eq!(n.increment_at("t", 1, 50).unwrap().0, 11);
        assert_eq!(n.get_at("t", 99).unwrap().unwrap(), b"11");
        assert_eq!(n.get_at("t", 100).unwrap(), None);
        assert_eq!(n.increment_at("t", 1, 200).unwrap().0, 1);
        assert_eq!(n.get_at("t", u64::MAX).unwrap().unwrap(), b"1");
    }

    #[test]
    fn ttl_expiry_and_reclaiming() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        n.set_at("a", b"1", Some(100), 1000).unwrap();
        n.set_at("b", b"2", Some(200), 1000).unwrap();
        n.set_at("c", b"3", None, 1000).unwrap();
        assert_eq!(store.kv_usage("f").unwrap(), 6);
        assert_eq!(n.get_at("a", 1099).unwrap().unwrap(), b"1");
        // Touched after expiry: absent, and its bytes are reclaimed.
        assert_eq!(n.get_at("a", 1100).unwrap(), None);
        assert_eq!(store.kv_usage("f").unwrap(), 4);
        assert!(store.kv_get("f", "a").unwrap().is_none());
        // Listed after expiry: skipped and reclaimed.
        assert_eq!(n.list_at("", None, 0, 1200).unwrap().keys, ["c"]);
        assert_eq!(store.kv_usage("f").unwrap(), 2);
        // Deleting an expired key says it was not set, and reclaims it.
        n.set_at("d", b"4", Some(1), 0).unwrap();
        assert_eq!(n.delete_at("d", 5).unwrap(), (false, true));
        assert_eq!(store.kv_usage("f").unwrap(), 2);
        // A set without TTL clears an earlier TTL.
        n.set_at("e", b"5", Some(10), 0).unwrap();
        n.set_at("e", b"5", None, 0).unwrap();
        assert_eq!(n.get_at("e", 1_000_000).unwrap().unwrap(), b"5");
    }

    #[test]
    fn listing_pages_and_prefixes() {
        let (_d, store) = store();
        let n = ns(&store, "f", 100_000);
        for i in 0..25 {
            n.set_at(&format!("user/{i:02}"), b"x", None, 0).unwrap();
        }
        n.set_at("other", b"x", None, 0).unwrap();
        // Expired keys in the middle of a page do not shorten it.
        n.set_at("user/05x", b"x", Some(1), 0).unwrap();
        let mut all = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = n.list_at("user/", cursor.as_deref(), 10, 10).unwrap();
            pages += 1;
            assert!(page.keys.len() <= 10);
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let want: Vec<String> = (0..25).map(|i| format!("user/{i:02}")).collect();
        assert_eq!(all, want);
        // Exactly a page: no cursor.
        let page = n.list_at("user/1", None, 10, 10).unwrap();
        assert_eq!(page.keys.len(), 10);
        assert_eq!(page.cursor, None);
        // A cursor for another prefix is refused.
        let c = n.list_at("user/", None, 1, 10).unwrap().cursor.unwrap();
        assert!(matches!(
            n.list_at("other", Some(&c), 1, 10),
            Err(KvError::InvalidCursor)
        ));
        assert!(matches!(
            n.list_at("", Some("nope"), 1, 10),
            Err(KvError::InvalidCursor)
        ));
    }

    #[test]
    fn quota_is_exact_under_concurrent_writers() {
        let (_d, store) = store();
        // Room for 100 entries of 10 bytes ("kNN" + 7 bytes).
        let n = Arc::new(ns(&store, "f", 1000));
        let counters = Arc::new(ns(&store, "g", 1000));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let n = n.clone();
                let counters = counters.clone();
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0..40 {
                        // Threads overlap on keys: replacing and creating.
                        let key = format!("k{:02}", (t * 17 + i) % 150 % 100);
                        let value = vec![b'v'; 7];
                        match n.set_at(&key, &value, None, 0) {
                            Ok(_) => ok += 1,
                            Err(KvError::QuotaExceeded { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                        if i % 5 == 0 {
                            n.delete_at(&format!("k{:02}", (t + i) % 100), 0).unwrap();
                        }
                        counters.increment_at("counter", 1, 0).unwrap();
                    }
                    ok
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let listed = n.list_at("", None, 0, 0).unwrap().keys;
        let mut actual = 0;
        for key in &listed {
            actual += entry_size(key, n.get_at(key, 0).unwrap().unwrap().len());
        }
        assert_eq!(store.kv_usage("f").unwrap(), actual);
        assert!(actual <= 1000);
        assert_eq!(counters.get_at("counter", 0).unwrap().unwrap(), b"320");
        assert_eq!(store.kv_usage("g").unwrap(), 7 + 3);
    }
}
