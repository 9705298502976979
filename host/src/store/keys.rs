//! Key shapes more than one domain stores under: a string key within a
//! function's namespace (key-value entries, settings, secrets).

use super::tree::{Key, Prefix};

/// A function's name, a NUL, then a string key. A function name never
/// holds a NUL (see `routes::validate_name`), so the first NUL ends it; the
/// key may hold NULs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FunctionKey {
    pub function: String,
    pub key: String,
}

impl FunctionKey {
    pub fn new(function: &str, key: &str) -> FunctionKey {
        FunctionKey {
            function: function.to_string(),
            key: key.to_string(),
        }
    }
}

impl Key for FunctionKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = OfFunction(&self.function).encode_prefix();
        k.extend_from_slice(self.key.as_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let at = bytes.iter().position(|&b| b == 0)?;
        Some(FunctionKey {
            function: String::from_utf8(bytes[..at].to_vec()).ok()?,
            key: String::from_utf8(bytes[at + 1..].to_vec()).ok()?,
        })
    }
}

/// Every [`FunctionKey`] of one function.
pub(crate) struct OfFunction<'a>(pub &'a str);

impl Prefix<FunctionKey> for OfFunction<'_> {
    fn encode_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + 1);
        k.extend_from_slice(self.0.as_bytes());
        k.push(0);
        k
    }
}
