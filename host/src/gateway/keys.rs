//! The data plane's check of private functions (`--auth key`): a request
//! must carry one of the function's invoke keys, in `wisp-key: <key>` or
//! `Authorization: Bearer <key>`; else 401 before anything is
//! instantiated. The key never reaches the guest: `wisp-key` is always
//! removed, `Authorization` when it carried the key (a guest's own scheme
//! in `Authorization` passes through when the key came in `wisp-key`).
//! Keys are never logged nor echoed.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::InvokeKeys;
use crate::auth::keys::KeyRefused;
use crate::error::ApiError;

/// The header that carries an invoke key (besides `Authorization`).
pub const KEY_HEADER: &str = "wisp-key";

/// Checks the key a request to private `function` carries and removes it
/// from the headers: none if it may go on, else the 401 to answer.
pub(super) fn admit(
    keys: &InvokeKeys,
    function: &str,
    headers: &mut HeaderMap,
) -> Option<Response> {
    let from_header = headers
        .get(KEY_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim());
    let from_bearer = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    };
    let (given, bearer) = match from_header {
        Some(k) => (Some(k), false),
        None => (from_bearer(), true),
    };
    let checked = keys.check(function, given.filter(|k| !k.is_empty()));
    if checked.is_ok() && bearer {
        headers.remove(header::AUTHORIZATION);
    }
    headers.remove(KEY_HEADER);
    checked.err().map(|refused| refusal(function, refused))
}

fn refusal(function: &str, refused: KeyRefused) -> Response {
    let message = match refused {
        KeyRefused::Missing => format!(
            "missing invoke key: function {function:?} is private; send `Authorization: Bearer \
             <key>` or `{KEY_HEADER}: <key>` (keys: `wisp key create {function}`)"
        ),
        KeyRefused::Invalid => {
            format!("invalid invoke key for function {function:?} (unknown or revoked)")
        }
        KeyRefused::Expired(name) => {
            format!("the invoke key `{name}` of function {function:?} expired: create a new one")
        }
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NewKey;
    use crate::store::Store;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    async fn message(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
        v["error"]["message"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn the_key_is_checked_and_never_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let keys = InvokeKeys::open(&store).unwrap();
        let key = keys.create("f", NewKey::default()).await.unwrap().key;
        let bearer = format!("Bearer {key}");

        // In Authorization: accepted, and the header removed.
        let mut h = headers(&[("authorization", &bearer), ("x-other", "1")]);
        assert!(admit(&keys, "f", &mut h).is_none());
        assert!(h.get("authorization").is_none());
        assert_eq!(h["x-other"], "1");

        // In wisp-key: accepted, removed; the guest's own Authorization
        // kept.
        let mut h = headers(&[(KEY_HEADER, &key), ("authorization", "Basic dTpw")]);
        assert!(admit(&keys, "f", &mut h).is_none());
        assert!(h.get(KEY_HEADER).is_none());
        assert_eq!(h["authorization"], "Basic dTpw");

        // Refused: nothing, another scheme, an empty or wrong key, another
        // function's; never echoing the key.
        for (function, pairs, why) in [
            ("f", vec![], "missing"),
            ("f", vec![("authorization", "Basic dTpw")], "missing"),
            ("f", vec![(KEY_HEADER, "")], "missing"),
            ("f", vec![(KEY_HEADER, "wispk_0000")], "invalid"),
            ("g", vec![(KEY_HEADER, key.as_str())], "invalid"),
            ("g", vec![("authorization", bearer.as_str())], "invalid"),
        ] {
            let mut h = headers(&pairs);
            let refused = admit(&keys, function, &mut h).expect("refused");
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let m = message(refused).await;
            assert!(m.contains(why) && !m.contains(&key), "{m}");
            assert!(h.get(KEY_HEADER).is_none());
        }
    }
}
