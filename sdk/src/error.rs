//! The error type handlers return, and extractors reject requests with.

use std::fmt;

use http::StatusCode;
use serde::Serialize;

use crate::{IntoResponse, Response};

/// An error that answers the request: a status and a message, sent as
/// Wisp's JSON error body, `{"error": {"code": "...", "message": "..."}}`.
///
/// Return it from a handler (usually as the `Err` of a `Result`); `?` turns
/// the SDK's other errors ([`kv::Error`](crate::kv::Error),
/// [`HttpError`](crate::http::HttpError)) into one with a fitting status.
/// Extractors reject a request with one too (status `400`).
///
/// The code defaults to the status's name in snake case (`not_found`,
/// `bad_request`, ...); [`with_code`](Error::with_code) sets another.
///
/// ```
/// use wisp_sdk::{Error, IntoResponse, StatusCode};
///
/// fn find(id: u64) -> Result<String, Error> {
///     if id == 7 {
///         Ok("seven".into())
///     } else {
///         Err(Error::new(StatusCode::NOT_FOUND, format!("no item {id}")))
///     }
/// }
///
/// let resp = find(8).into_response();
/// assert_eq!(resp.status(), 404);
/// assert_eq!(
///     resp.body(),
///     br#"{"error":{"code":"not_found","message":"no item 8"}}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: StatusCode,
    code: String,
    message: String,
}

impl Error {
    /// An error with `status` and `message`; the code is the status's name
    /// (`404` → `not_found`).
    ///
    /// A status outside `100..=999` becomes `500`.
    pub fn new(status: impl crate::IntoStatus, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(status.into_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Error {
            status,
            code: default_code(status),
            message: message.into(),
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(StatusCode::NOT_FOUND, message)
    }

    /// `500 Internal Server Error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Replaces the machine-readable code (e.g. `"todo_not_found"`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `404` → `not_found`, `418` → `im_a_teapot`; `error` for a status with no
/// name.
fn default_code(status: StatusCode) -> String {
    let Some(reason) = status.canonical_reason() else {
        return "error".to_string();
    };
    let mut code = String::with_capacity(reason.len());
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() {
            code.push(c.to_ascii_lowercase());
        } else if c == ' ' || c == '-' {
            code.push('_');
        }
    }
    code
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(self.status, &self.code, &self.message)
    }
}

/// Wisp's JSON error body with `status`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        code: &'a str,
        message: &'a str,
    }
    let body = serde_json::to_vec(&Envelope {
        error: Detail { code, message },
    })
    .unwrap_or_default();
    Response::new(status)
        .with_header(http::header::CONTENT_TYPE, "application/json")
        .with_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_statuses() {
        assert_eq!(Error::new(404, "x").code(), "not_found");
        assert_eq!(Error::new(405, "x").code(), "method_not_allowed");
        assert_eq!(Error::new(418, "x").code(), "im_a_teapot");
        assert_eq!(Error::new(500, "x").code(), "internal_server_error");
        assert_eq!(Error::new(599, "x").code(), "error");
        assert_eq!(Error::new(42, "x").status(), 500);
        assert_eq!(Error::bad_request("x").with_code("nope").code(), "nope");
    }

    #[test]
    fn becomes_a_json_response() {
        let r = Error::new(StatusCode::CONFLICT, "taken \"x\"").into_response();
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.body(),
            br#"{"error":{"code":"conflict","message":"taken \"x\""}}"#
        );
    }
}
