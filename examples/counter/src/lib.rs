//! Counts requests per path, atomically, in the function's key-value store.
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! wisp deploy counter --from examples/counter --route '/count/*'
//! # or: cargo build --release --target wasm32-wasip2 -p counter
//! #     wisp deploy counter target/wasm32-wasip2/release/counter.wasm --route '/count/*'
//! curl http://127.0.0.1:8080/count/a      # {"key":"/count/a","count":1}
//! curl http://127.0.0.1:8080/count/a      # {"key":"/count/a","count":2}
//! curl 'http://127.0.0.1:8080/count/a?key=total'
//! ```
//!
//! The counter is the request's path, or `?key=NAME` to share one counter
//! between paths. Concurrent requests never lose a count: `kv::increment`
//! is atomic in the host.

use wisp_sdk::{Error, Json, Request, kv};

#[wisp_sdk::handler]
fn count(req: Request) -> Result<Json<serde_json::Value>, Error> {
    let key = req
        .query()
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .filter(|key| !key.is_empty())
        .unwrap_or(req.path())
        .to_string();
    let count = kv::increment(&format!("count:{key}"), 1)?;
    Ok(Json(serde_json::json!({ "key": key, "count": count })))
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{IntoResponse, Method};

    use super::*;

    #[test]
    fn counts_per_path_and_key() {
        wisp_sdk::testing::reset();
        let get = |uri: &str| {
            count(Request::new(Method::GET, uri))
                .into_response()
                .into_body()
        };
        assert_eq!(get("/count/a"), br#"{"count":1,"key":"/count/a"}"#);
        assert_eq!(get("/count/a"), br#"{"count":2,"key":"/count/a"}"#);
        assert_eq!(get("/count/b"), br#"{"count":1,"key":"/count/b"}"#);
        assert_eq!(get("/x?key=total"), br#"{"count":1,"key":"total"}"#);
        assert_eq!(get("/y?key=total"), br#"{"count":2,"key":"total"}"#);
    }
}
