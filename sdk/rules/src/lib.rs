//! The validation rules that Wisp's host and its SDK share, in one place so
//! that they cannot drift apart: what a function name, a topic name, a route
//! and a key-value key may be.
//!
//! The host refuses what these refuse (at deploy, at publish, in every
//! key-value call), and `wisp-sdk`'s native stand-ins for the host refuse
//! the same, with the same messages, so that a handler tested with
//! `cargo test` sees what it would see deployed.
//!
//! ```
//! use wisp_rules::{Route, check_kv_key, validate_function_name, validate_topic};
//!
//! assert!(validate_function_name("hello-world").is_ok());
//! assert!(validate_topic("orders.eu").is_ok());
//! assert_eq!(Route::parse("/api/*").unwrap(), Route::Prefix("/api".into()));
//! assert!(check_kv_key("", 512).is_err());
//! ```
//!
//! Pure functions without dependencies: no wasmtime, no sockets, no
//! allocation beyond the error messages.

#![deny(missing_docs)]

use std::fmt;

mod route;

pub use route::{MAX_ROUTE_LEN, Route, RouteError};

/// Longest function name, in characters (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// Longest topic name, in characters.
pub const MAX_TOPIC_LEN: usize = 63;

/// The host's default limit on a key-value key, in bytes (a function may be
/// deployed with another).
pub const DEFAULT_KV_MAX_KEY_BYTES: u64 = 512;

// ---------------------------------------------------------------- names

/// Why a function name was refused. Its `Display` is the message the host
/// answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty, or longer than [`MAX_NAME_LEN`].
    Length {
        /// The name as given.
        name: String,
    },
    /// A character other than `a-z`, `0-9` and `-`.
    Character {
        /// The name as given.
        name: String,
    },
    /// Starts or ends with `-`.
    Dash {
        /// The name as given.
        name: String,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Length { name } => write!(
                f,
                "invalid function name {name:?}: a name is 1 to {MAX_NAME_LEN} characters long"
            ),
            NameError::Character { name } => write!(
                f,
                "invalid function name {name:?}: use only lowercase letters, digits and '-'"
            ),
            NameError::Dash { name } => write!(
                f,
                "invalid function name {name:?}: a name does not start or end with '-'"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a function name: `[a-z0-9-]`, 1 to 63 characters, not starting or
/// ending with `-` (so it is a valid DNS label).
pub fn validate_function_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length { name: name.into() });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(NameError::Character { name: name.into() });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Dash { name: name.into() });
    }
    Ok(())
}

// --------------------------------------------------------------- topics

/// Why a topic name was refused. Its `Display` is the message the host
/// answers with (and a guest's `publish` gets).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty, or longer than [`MAX_TOPIC_LEN`].
    Length {
        /// The topic as given.
        topic: String,
    },
    /// A character other than `a-z`, `0-9`, `-`, `.` and `_`.
    Character {
        /// The topic as given.
        topic: String,
        /// The first character refused.
        found: char,
    },
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Length { topic } => write!(
                f,
                "topic name {topic:?} must be 1 to {MAX_TOPIC_LEN} characters long"
            ),
            TopicError::Character { topic, found } => write!(
                f,
                "topic name {topic:?} may only contain a-z, 0-9, '-', '.' and '_' (found {found:?})"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name: `[a-z0-9._-]`, 1 to 63 characters. (The host's own
/// topics, `invoke:NAME` for asynchronous invocations, are refused: no
/// publisher can use them.)
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Length {
            topic: topic.into(),
        });
    }
    if let Some(found) = topic
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_'))
    {
        return Err(TopicError::Character {
            topic: topic.into(),
            found,
        });
    }
    Ok(())
}

// ------------------------------------------------------ key-value keys

/// Why a key-value key was refused. Its `Display` is the message the host
/// answers with (and a guest's call gets as `invalid-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than the function's limit.
    TooLong {
        /// Its length, bytes.
        len: usize,
        /// The limit, bytes.
        max: u64,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("the key is empty"),
            KeyError::TooLong { len, max } => {
                write!(f, "the key is {len} bytes; the limit is {max} bytes")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks a key-value key: a non-empty UTF-8 string (which `&str` already
/// is) of at most `max` bytes (the function's limit,
/// [`DEFAULT_KV_MAX_KEY_BYTES`] unless it was deployed with another).
pub fn check_kv_key(key: &str, max: u64) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() as u64 > max {
        return Err(KeyError::TooLong {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        for ok in ["a", "hello", "my-fn-2", "0", &"a".repeat(63)] {
            assert_eq!(validate_function_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Hello", "a_b", "a.b", "-a", "a-", "ü", &"a".repeat(64)] {
            assert!(validate_function_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_function_name("A").unwrap_err().to_string(),
            "invalid function name \"A\": use only lowercase letters, digits and '-'"
        );
        assert_eq!(
            validate_function_name("").unwrap_err().to_string(),
            "invalid function name \"\": a name is 1 to 63 characters long"
        );
        assert_eq!(
            validate_function_name("a-").unwrap_err().to_string(),
            "invalid function name \"a-\": a name does not start or end with '-'"
        );
    }

    #[test]
    fn topics() {
        for ok in ["orders", "a.b-c_d", "0", &"t".repeat(63)] {
            assert_eq!(validate_topic(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Orders", "a b", "invoke:f", "a/b", &"t".repeat(64)] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_topic("Bad Topic").unwrap_err().to_string(),
            "topic name \"Bad Topic\" may only contain a-z, 0-9, '-', '.' and '_' (found 'B')"
        );
        assert_eq!(
            validate_topic("").unwrap_err().to_string(),
            "topic name \"\" must be 1 to 63 characters long"
        );
    }

    #[test]
    fn kv_keys() {
        assert_eq!(check_kv_key("k", 1), Ok(()));
        assert_eq!(check_kv_key("a/b c:ü", 512), Ok(()));
        assert_eq!(check_kv_key("", 512), Err(KeyError::Empty));
        // Bytes, not characters: `ü` is two.
        assert_eq!(
            check_kv_key("ü", 1),
            Err(KeyError::TooLong { len: 2, max: 1 })
        );
        assert_eq!(
            check_kv_key(&"k".repeat(513), DEFAULT_KV_MAX_KEY_BYTES)
                .unwrap_err()
                .to_string(),
            "the key is 513 bytes; the limit is 512 bytes"
        );
        assert_eq!(KeyError::Empty.to_string(), "the key is empty");
    }
}
