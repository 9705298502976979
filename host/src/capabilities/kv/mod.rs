//! Key-value storage for guests (`wisp:function/kv`): one namespace per
//! function in the host's store, with key, value and total-size limits.
//!
//! Layers:
//! - pure policy (no store, no wasm): key and value checks, quota
//!   accounting, expiry, cursors, counters; unit-tested at the bottom;
//! - [`store`]: the trees, key encoding and records;
//! - [`KvNamespace`] (`namespace`): one function's namespace, the
//!   operations the guest and the admin API share, each a
//!   read-decide-write transaction on the store's writer (so quota
//!   accounting is exact under concurrent writers) and flushed before a
//!   write is acknowledged, never blocking the calling thread;
//! - the guest binding (`kv::Host` on [`InvocationState`]); the admin
//!   handle, `Kv`, is in `function/handles.rs`.
//!
//! Accounting: an entry takes `key bytes + value bytes`; a function's usage
//! is the sum over its stored entries. Replacing a value counts the
//! difference, deleting gives the bytes back. An expired entry is absent to
//! every reader and its bytes are reclaimed when it is touched (get, set,
//! delete, increment, compare-and-swap) or listed. A write that would pass
//! the total is refused, unless it shrinks the usage.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::capabilities::bindings::wisp::function::kv as wit;
use crate::config::Limits;
use crate::store::{StoreError, TxError};

mod namespace;
pub(crate) mod store;

pub(crate) use namespace::KvNamespace;

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
    /// Cluster mode: the cluster's key-value data cannot be reached.
    #[error("{0}")]
    ClusterUnavailable(String),
}

impl KvError {
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
            KvError::ClusterUnavailable(e) => {
                tracing::warn!(function, error = %e, "key-value data unreachable");
                wit::Error::Internal("the cluster's key-value data cannot be reached now".into())
            }
            other => wit::Error::Internal(other.to_string()),
        }
    }
}

impl From<TxError<KvError>> for KvError {
    fn from(e: TxError<KvError>) -> KvError {
        match e {
            TxError::Abort(e) => e,
            TxError::Store(e) => KvError::Store(e),
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

/// A key is a non-empty UTF-8 string of at most `max` bytes; the rule is
/// shared with the SDK ([`wisp_rules::check_kv_key`]).
pub(crate) fn check_key(key: &str, max: u64) -> Result<(), KvError> {
    wisp_rules::check_kv_key(key, max).map_err(|e| KvError::InvalidKey(e.to_string()))
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

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
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

// ---------------------------------------------------------------------------
// The guest binding

/// What `wisp:function/kv` sees of an invocation: the function's
/// namespace, nothing else.
pub(crate) struct KvView<'a>(pub(crate) &'a KvNamespace);

/// `wisp:function/kv` in the linker: its functions get a [`KvView`] of the
/// invocation's state.
pub(crate) struct KvCapability;

impl wasmtime::component::HasData for KvCapability {
    type Data<'a> = KvView<'a>;
}

impl wit::Host for KvView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit::Error> {
        let ns = self.0;
        ns.get(key).await.map_err(|e| e.into_guest(&ns.function))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), wit::Error> {
        let ns = self.0;
        ns.set(key, value, ttl_ms)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }

    async fn delete(&mut self, key: String) -> Result<bool, wit::Error> {
        let ns = self.0;
        ns.delete(key).await.map_err(|e| e.into_guest(&ns.function))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<wit::KeyPage, wit::Error> {
        let ns = self.0;
        let page = ns
            .list(prefix, cursor, limit)
            .await
            .map_err(|e| e.into_guest(&ns.function))?;
        Ok(wit::KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, wit::Error> {
        let ns = self.0;
        ns.increment(key, delta)
            .await
            .map_err(|e| e.into_guest(&ns.function))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, wit::Error> {
        let ns = self.0;
        ns.compare_and_swap(key, expected, new)
            .await
            .map_err(|e| e.into_guest(&ns.function))
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
}
