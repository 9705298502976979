//! The function's configuration: settings and secrets set through the admin
//! API (`wisp config set NAME KEY=VALUE`, with `--secret` for secrets).
//! Both are read the same way; a change takes effect at the next invocation,
//! without a redeploy.
//!
//! ```no_run
//! let greeting = wisp_sdk::config::get("greeting").unwrap_or_else(|| "hello".into());
//! ```
//!
//! Outside a Wisp host (`cargo test`), values come from
//! [`testing::set_config`](crate::testing::set_config).

#[cfg(target_arch = "wasm32")]
use crate::bindings::wisp::function::config as sys;
#[cfg(not(target_arch = "wasm32"))]
use crate::native::config as sys;

/// The value of setting or secret `key`, or `None` if it is not set.
///
/// ```no_run
/// match wisp_sdk::config::get("api-key") {
///     Some(key) => { /* use it; never echo it back */ }
///     None => { /* not configured */ }
/// }
/// ```
pub fn get(key: &str) -> Option<String> {
    sys::get(key)
}

/// The value of `key`, or an error that answers `500` saying which setting
/// is missing: for settings the function cannot work without.
///
/// ```no_run
/// fn handler() -> Result<String, wisp_sdk::Error> {
///     let upstream = wisp_sdk::config::require("upstream")?;
///     Ok(upstream)
/// }
/// ```
pub fn require(key: &str) -> Result<String, crate::Error> {
    get(key).ok_or_else(|| {
        crate::Error::internal(format!(
            "the function is not configured: setting `{key}` is missing (wisp config set)"
        ))
        .with_code("missing_config")
    })
}

/// The names of all settings and secrets (not their values), sorted.
///
/// ```no_run
/// for key in wisp_sdk::config::keys() {
///     wisp_sdk::log::info(&format!("configured: {key}"));
/// }
/// ```
pub fn keys() -> Vec<String> {
    let mut keys = sys::keys();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_config() {
        crate::testing::reset();
        assert_eq!(get("greeting"), None);
        assert_eq!(require("greeting").unwrap_err().status(), 500);
        crate::testing::set_config("greeting", "hi");
        crate::testing::set_config("api-key", "s3cret");
        assert_eq!(get("greeting").as_deref(), Some("hi"));
        assert_eq!(keys(), ["api-key", "greeting"]);
    }
}
