//! Reads a setting (`greeting`) and a secret (`api-key`) from the function's
//! configuration. The secret is never sent back: the answer says only
//! whether it is set and how long it is.
//!
//! Build, deploy and configure it (from the workspace root, with
//! `wisp serve` running):
//!
//! ```text
//! wisp deploy config --from examples/config --route /config
//! # or: cargo build --release --target wasm32-wasip2 -p config
//! #     wisp deploy config target/wasm32-wasip2/release/config.wasm --route /config
//! wisp config set config greeting='hello from config'
//! wisp config set config api-key=s3cret-s3cret --secret
//! curl http://127.0.0.1:8080/config
//! # {"greeting":"hello from config","api_key":{"present":true,"length":13},"keys":["api-key","greeting"]}
//! ```
//!
//! A change takes effect at the next request, without a redeploy.

use serde::Serialize;
use wisp_sdk::{Json, config};

#[derive(Serialize)]
struct Answer {
    /// The setting, or `null` when it is not set.
    greeting: Option<String>,
    api_key: SecretInfo,
    /// Names of everything configured (names are not secret; values are).
    keys: Vec<String>,
}

#[derive(Serialize)]
struct SecretInfo {
    present: bool,
    /// Length in characters, 0 when absent.
    length: usize,
}

#[wisp_sdk::handler]
fn show() -> Json<Answer> {
    let api_key = config::get("api-key");
    Json(Answer {
        greeting: config::get("greeting"),
        api_key: SecretInfo {
            present: api_key.is_some(),
            length: api_key.map_or(0, |k| k.chars().count()),
        },
        keys: config::keys(),
    })
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{IntoResponse, testing};

    use super::*;

    #[test]
    fn never_shows_the_secret() {
        testing::reset();
        let body = show().into_response().into_body();
        assert_eq!(
            body,
            br#"{"greeting":null,"api_key":{"present":false,"length":0},"keys":[]}"#
        );
        testing::set_config("greeting", "hi");
        testing::set_config("api-key", "s3cret-value");
        let body = String::from_utf8(show().into_response().into_body()).unwrap();
        assert_eq!(
            body,
            r#"{"greeting":"hi","api_key":{"present":true,"length":12},"keys":["api-key","greeting"]}"#
        );
        assert!(!body.contains("s3cret"));
    }
}
