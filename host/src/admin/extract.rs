//! Extractors whose rejection is the API's JSON error ([`ApiError`]), so
//! that no malformed request is answered with axum's plain-text
//! rejections, and the one way request bodies are read under a limit.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::{body_too_large, invalid_argument};
use crate::auth::Caller;
use crate::error::ApiError;

/// Largest JSON request body of the admin API, in bytes: the router's
/// `DefaultBodyLimit`, which axum's `Json` reads bodies under.
pub(crate) const MAX_JSON_BODY_BYTES: usize = 2 << 20;

/// Path parameters; a bad percent-encoding or bytes that are not UTF-8 are
/// answered 400 `invalid_argument` ("bad path: ...").
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// Query parameters, with repeated keys (`route=/a&route=/b`) collected
/// into a `Vec` (serde_html_form, through axum-extra's `Query`); one that
/// does not decode or has the wrong type is answered 400
/// `invalid_argument` ("bad query parameters: ...").
#[derive(FromRequestParts)]
#[from_request(via(axum_extra::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// A JSON request body. Axum's `Json` does the work (content type, the
/// router's body limit, serde); its rejections become `ApiError`s: 415 for
/// a body not sent as JSON, 400 for malformed JSON or an unknown or missing
/// field (request types deny unknown fields), 413 past the limit, from the
/// declared length before anything is read.
///
/// As `Option<ApiJson<T>>`: an empty body is `None`, whatever its content
/// type (a rollback or redrive with no body). Written by hand, not derived,
/// for these two: a derived extractor has neither the early 413 nor the
/// optional form.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if declared_length(req.headers()).is_some_and(|n| n > MAX_JSON_BODY_BYTES as u64) {
            return Err(body_too_large(MAX_JSON_BODY_BYTES as u64));
        }
        let Json(value) = <Json<T> as FromRequest<S>>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&parts.headers, body, MAX_JSON_BODY_BYTES as u64)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => body_too_large(MAX_JSON_BODY_BYTES as u64),
                BodyError::Read(e) => {
                    invalid_argument(format!("reading the request body failed: {e}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let req = Request::from_parts(parts, Body::from(bytes));
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is (or declares itself) longer than the limit.
    TooLarge,
    /// The connection failed while it was read.
    Read(axum::Error),
}

/// The body's declared length (`Content-Length`), if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a body of at most `limit` bytes: refused from its declared length
/// before anything is read (a client waiting to send it gets its answer
/// now), else as soon as more than `limit` bytes arrived. Uploads, values
/// and payloads are read with this, each under a limit of its own; JSON
/// bodies under the router's.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, BodyError> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, cap).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            BodyError::TooLarge
        } else {
            BodyError::Read(e)
        }
    })
}

/// The caller the token check found (`access::require_scope` leaves it in
/// the request's extensions), for the routes that answer each caller with
/// what it may see. A route not behind the check has none: a bug, answered
/// 500 and logged.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a route that needs the caller is not behind the token check");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the host log",
            )
        })
    }
}
