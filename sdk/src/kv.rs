//! Key-value storage: one namespace per function, kept by the host.
//!
//! Keys are non-empty UTF-8 strings (at most 512 bytes by default), values
//! are bytes (at most 1 MiB by default), and a function's keys and values
//! together are bounded (64 MiB by default). Every call is a host call that
//! completes before it returns; a call that fails writes nothing. A value
//! written by one invocation is visible to the next.
//!
//! ```no_run
//! use wisp_sdk::{kv, Error};
//!
//! fn visit() -> Result<String, Error> {
//!     let n = kv::increment("visits", 1)?;
//!     kv::set("last-visit", b"just now")?;
//!     Ok(format!("visit number {n}"))
//! }
//! ```
//!
//! Outside a Wisp host (`cargo test` on your machine), the calls work on an
//! in-memory store private to the thread, so handlers that use key-value
//! are tested natively; see [`testing`](crate::testing).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StatusCode;
use crate::bindings::wisp::function::kv as wit;

#[cfg(target_arch = "wasm32")]
use crate::bindings::wisp::function::kv as sys;
#[cfg(not(target_arch = "wasm32"))]
use crate::native::kv as sys;

/// Why a key-value call failed: the host's `wisp:function/kv.error`, plus
/// [`Error::Json`] for the typed helpers. These are values to handle, never
/// traps; `?` in a handler turns them into a [`wisp_sdk::Error`](crate::Error)
/// response with a fitting status.
///
/// ```
/// use wisp_sdk::kv;
///
/// let e = kv::Error::QuotaExceeded(64 << 20);
/// assert_eq!(e.code(), "quota-exceeded");
/// assert_eq!(e.to_string(), "the function's key-value quota (67108864 bytes) would be exceeded");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty or longer than the limit (the message says which).
    InvalidKey(String),
    /// The value is larger than the limit, in bytes.
    ValueTooLarge(u64),
    /// The write would take the function's keys and values past its total
    /// limit, in bytes.
    QuotaExceeded(u64),
    /// `increment` on a value that is not a decimal 64-bit integer, or one
    /// that would overflow.
    NotANumber,
    /// The cursor was not one [`list_page`] returned.
    InvalidCursor,
    /// The host's store failed; the details are in the host's log.
    Internal(String),
    /// Not from the host: [`get_json`] found a value that is not JSON for
    /// the type asked for, or [`set_json`] could not serialize its value.
    Json(String),
}

impl Error {
    /// The error's name as in the WIT (`invalid-key`, `value-too-large`,
    /// `quota-exceeded`, `not-a-number`, `invalid-cursor`, `internal`), or
    /// `json` for [`Error::Json`].
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidKey(_) => "invalid-key",
            Error::ValueTooLarge(_) => "value-too-large",
            Error::QuotaExceeded(_) => "quota-exceeded",
            Error::NotANumber => "not-a-number",
            Error::InvalidCursor => "invalid-cursor",
            Error::Internal(_) => "internal",
            Error::Json(_) => "json",
        }
    }

    /// The status a handler answers with when it passes this error on
    /// with `?`: `400` for an invalid key or cursor, `413` for a value too
    /// large, `507` for a full quota, `409` for `increment` on a value that
    /// is not a number, `500` otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidKey(_) | Error::InvalidCursor => StatusCode::BAD_REQUEST,
            Error::ValueTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::NotANumber => StatusCode::CONFLICT,
            Error::Internal(_) | Error::Json(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::ValueTooLarge(limit) => {
                write!(f, "the value is larger than the limit of {limit} bytes")
            }
            Error::QuotaExceeded(limit) => write!(
                f,
                "the function's key-value quota ({limit} bytes) would be exceeded"
            ),
            Error::NotANumber => {
                f.write_str("the value is not a 64-bit decimal integer (or would overflow)")
            }
            Error::InvalidCursor => f.write_str("invalid cursor"),
            Error::Internal(why) => write!(f, "key-value store failure: {why}"),
            Error::Json(why) => write!(f, "JSON: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidKey(why) => Error::InvalidKey(why),
            wit::Error::ValueTooLarge(limit) => Error::ValueTooLarge(limit),
            wit::Error::QuotaExceeded(limit) => Error::QuotaExceeded(limit),
            wit::Error::NotANumber => Error::NotANumber,
            wit::Error::InvalidCursor => Error::InvalidCursor,
            wit::Error::Internal(why) => Error::Internal(why),
        }
    }
}

/// `?` in a handler: the status of [`Error::status`], code `kv_` and the
/// WIT name (`kv_quota_exceeded`), and the error's text. A store failure's
/// details stay out of the response.
impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        let message = match &e {
            Error::Internal(_) => "key-value store failure".to_string(),
            other => other.to_string(),
        };
        crate::Error::new(e.status(), message)
            .with_code(format!("kv_{}", e.code().replace('-', "_")))
    }
}

/// The value of `key`, or `None` if it is not set (or has expired).
///
/// ```no_run
/// let greeting = wisp_sdk::kv::get("greeting")?.unwrap_or_else(|| b"hello".to_vec());
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(sys::get(key)?)
}

/// The value of `key` as UTF-8 text (`Error::Json` if it is not UTF-8), or
/// `None` if it is not set.
///
/// ```no_run
/// let name: Option<String> = wisp_sdk::kv::get_string("name")?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    get(key)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|e| Error::Json(format!("`{key}` is not UTF-8: {e}")))
        })
        .transpose()
}

/// The value of `key` deserialized from JSON, or `None` if it is not set.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Todo { title: String, done: bool }
///
/// let todo: Option<Todo> = wisp_sdk::kv::get_json("todo:1")?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Json(format!("the value of `{key}`: {e}")))
        })
        .transpose()
}

/// Sets `key` to `value`, with no expiry.
///
/// ```no_run
/// wisp_sdk::kv::set("greeting", "hello")?;
/// wisp_sdk::kv::set("blob", vec![0u8, 1, 2])?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(sys::set(key, value.as_ref(), None)?)
}

/// Sets `key` to `value`, expiring `ttl` from now (rounded down to
/// milliseconds, at least 1 ms).
///
/// ```no_run
/// use std::time::Duration;
///
/// wisp_sdk::kv::set_with_ttl("session:abc", "ann", Duration::from_secs(3600))?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<(), Error> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    Ok(sys::set(key, value.as_ref(), Some(ms))?)
}

/// Sets `key` to `value` serialized as JSON.
///
/// ```no_run
/// #[derive(serde::Serialize)]
/// struct Todo { title: String, done: bool }
///
/// wisp_sdk::kv::set_json("todo:1", &Todo { title: "docs".into(), done: false })?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::Json(e.to_string()))?;
    set(key, bytes)
}

/// Deletes `key`; `true` if it was set.
///
/// ```no_run
/// if !wisp_sdk::kv::delete("todo:1")? {
///     // it was not there
/// }
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn delete(key: &str) -> Result<bool, Error> {
    Ok(sys::delete(key)?)
}

/// Adds `delta` to the decimal integer stored at `key` (0 if unset),
/// atomically, and returns the new value. The value is stored as text, so
/// [`get`] returns e.g. `b"42"`.
///
/// ```no_run
/// let id = wisp_sdk::kv::increment("next-id", 1)?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    Ok(sys::increment(key, delta)?)
}

/// Sets `key` to `new` only if its value is `expected` (`None`: only if it
/// is not set). `true` if it was set; `false` if the value was different,
/// and then nothing is written.
///
/// ```no_run
/// use wisp_sdk::kv;
///
/// // Claim a name once.
/// let claimed = kv::compare_and_swap("owner", None, "ann")?;
/// // Optimistic update.
/// let old = kv::get("doc")?;
/// let updated = kv::compare_and_swap("doc", old.as_deref(), "v2")?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
) -> Result<bool, Error> {
    Ok(sys::compare_and_swap(key, expected, new.as_ref())?)
}

/// One page of [`list_page`]: keys in byte order, and the cursor of the
/// next page (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// Pass it to [`list_page`] for the next page; `None` on the last one.
    pub cursor: Option<String>,
}

/// Up to `limit` keys (at most 1000) that start with `prefix`, after
/// `cursor` if given. [`list_keys`] follows the cursors for you.
///
/// ```no_run
/// let first = wisp_sdk::kv::list_page("todo:", None, 10)?;
/// if let Some(cursor) = first.cursor.as_deref() {
///     let second = wisp_sdk::kv::list_page("todo:", Some(cursor), 10)?;
/// }
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn list_page(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KeyPage, Error> {
    let page = sys::list_keys(prefix, cursor, limit)?;
    Ok(KeyPage {
        keys: page.keys,
        cursor: page.cursor,
    })
}

/// Every key that starts with `prefix`, in byte order, fetched a page at a
/// time as the iterator advances. A failed page is yielded as an `Err`,
/// after which the iterator ends.
///
/// ```no_run
/// let keys: Vec<String> = wisp_sdk::kv::list_keys("todo:").collect::<Result<_, _>>()?;
/// # Ok::<(), wisp_sdk::kv::Error>(())
/// ```
pub fn list_keys(prefix: &str) -> Keys {
    Keys {
        prefix: prefix.to_string(),
        page: Vec::new().into_iter(),
        next: Some(None),
    }
}

/// The iterator of [`list_keys`].
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    page: std::vec::IntoIter<String>,
    /// The cursor of the next page to fetch: `Some(None)` for the first
    /// page, `None` once the last page (or an error) was seen.
    next: Option<Option<String>>,
}

/// Keys fetched per host call by [`list_keys`].
const PAGE: u32 = 256;

impl Iterator for Keys {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            let cursor = self.next.take()?;
            match list_page(&self.prefix, cursor.as_deref(), PAGE) {
                Ok(page) => {
                    self.next = page.cursor.map(Some);
                    self.page = page.keys.into_iter();
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_responses() {
        let e: crate::Error = Error::QuotaExceeded(10).into();
        assert_eq!((e.status().as_u16(), e.code()), (507, "kv_quota_exceeded"));
        let e: crate::Error = Error::Internal("sled: io".into()).into();
        assert_eq!(e.message(), "key-value store failure");
        assert_eq!(Error::NotANumber.status(), 409);
    }

    #[test]
    fn native_store_round_trips() {
        crate::testing::reset();
        assert_eq!(get("a"), Ok(None));
        set("a", "1").unwrap();
        assert_eq!(get_string("a"), Ok(Some("1".into())));
        assert_eq!(increment("a", 41), Ok(42));
        assert_eq!(get("a"), Ok(Some(b"42".to_vec())));
        set("b", "x").unwrap();
        assert_eq!(increment("b", 1), Err(Error::NotANumber));
        assert_eq!(set("", "x").unwrap_err().code(), "invalid-key");
        set_json("j", &vec![1, 2]).unwrap();
        assert_eq!(get_json::<Vec<u8>>("j"), Ok(Some(vec![1, 2])));
        assert!(matches!(get_json::<u8>("j"), Err(Error::Json(_))));
        assert_eq!(compare_and_swap("c", None, "1"), Ok(true));
        assert_eq!(compare_and_swap("c", None, "2"), Ok(false));
        assert_eq!(compare_and_swap("c", Some(b"1"), "2"), Ok(true));
        assert_eq!(delete("c"), Ok(true));
        assert_eq!(delete("c"), Ok(false));
        set_with_ttl("t", "x", Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(get("t"), Ok(None));
    }

    #[test]
    fn list_keys_follows_cursors() {
        crate::testing::reset();
        for i in 0..600 {
            set(&format!("k:{i:04}"), "v").unwrap();
        }
        set("other", "v").unwrap();
        let keys: Vec<String> = list_keys("k:").collect::<Result<_, _>>().unwrap();
        assert_eq!(keys.len(), 600);
        assert_eq!(keys[599], "k:0599");
        let page = list_page("k:", None, 2).unwrap();
        assert_eq!(page.keys, ["k:0000", "k:0001"]);
        let next = list_page("k:", page.cursor.as_deref(), 2).unwrap();
        assert_eq!(next.keys, ["k:0002", "k:0003"]);
        assert_eq!(
            list_page("k:", Some("zzz"), 2).unwrap_err(),
            Error::InvalidCursor
        );
    }
}
