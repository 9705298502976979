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
