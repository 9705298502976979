//! Errors that reach clients, each with its HTTP status and JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// Why a deploy (or rollback) was refused. Nothing is stored when any of
/// these is returned.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The name is not `[a-z0-9-]{1,63}`.
    #[error("{0}")]
    InvalidName(String),
    /// Not a WebAssembly binary, or it does not compile.
    #[error("{0}")]
    InvalidWasm(String),
    /// A core module where a component is needed.
    #[error("{0}")]
    NotAComponent(String),
    /// No `wasi:http/incoming-handler` export.
    #[error("{0}")]
    MissingExport(String),
    /// Imports the host does not provide (named in the message).
    #[error("{0}")]
    UnsatisfiedImports(String),
    /// A route string is malformed.
    #[error("{0}")]
    InvalidRoute(String),
    /// A parameter is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A route is already served by another function.
    #[error("{0}")]
    RouteConflict(String),
    /// The upload is over the size cap.
    #[error("{0}")]
    TooLarge(String),
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// No such version.
    #[error("{0}")]
    VersionNotFound(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (logged; the client sees a generic message).
    #[error("internal error: {0}")]
    Internal(String),
}

impl DeployError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use DeployError::*;
        match self {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidWasm(_) => (StatusCode::BAD_REQUEST, "invalid_wasm"),
            NotAComponent(_) => (StatusCode::BAD_REQUEST, "not_a_component"),
            MissingExport(_) => (StatusCode::BAD_REQUEST, "missing_export"),
            UnsatisfiedImports(_) => (StatusCode::BAD_REQUEST, "unsatisfied_imports"),
            InvalidRoute(_) => (StatusCode::BAD_REQUEST, "invalid_route"),
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            RouteConflict(_) => (StatusCode::CONFLICT, "route_conflict"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            VersionNotFound(_) => (StatusCode::NOT_FOUND, "version_not_found"),
            Store(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for DeployError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "admin request failed");
            return ApiError::new(status, code, "internal error; see the host log").into_response();
        }
        ApiError::new(status, code, self.to_string()).into_response()
    }
}

/// The JSON error every client sees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `route_conflict`.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The invocation this error belongs to, for invocation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// An error response under construction.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u32>,
}

impl ApiError {
    /// A new error response.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    message: message.into(),
                    invocation_id: None,
                },
            },
            retry_after: None,
        }
    }

    /// Tags the error with an invocation id.
    pub fn invocation(mut self, id: &str) -> ApiError {
        self.body.error.invocation_id = Some(id.to_string());
        self
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `413 payload_too_large` for a request body over `limit` bytes.
    pub fn body_too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// An error for a rejection axum answered with `status` and `text`:
    /// 4xx keep their text (it describes the request), 5xx are logged and
    /// answered without details.
    fn from_rejection(status: StatusCode, text: String) -> ApiError {
        if status.is_server_error() {
            tracing::error!(%status, error = %text, "admin request rejected");
            return ApiError::new(status, "internal", "internal error; see the host log");
        }
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_argument",
        };
        ApiError::new(status, code, text)
    }
}

/// A body that could not be read: 413 past the admin API's JSON body
/// limit, else 400.
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::body_too_large(crate::admin::MAX_JSON_BODY_BYTES as u64);
        }
        ApiError::from_rejection(
            StatusCode::BAD_REQUEST,
            format!("reading the request body failed: {}", rejection.body_text()),
        )
    }
}

/// A JSON body that was refused: malformed or not of the expected shape
/// (400, naming the unknown or missing field), not declared JSON (415), too
/// large (413).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::BytesRejection(r) => r.into(),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with `Content-Type: application/json`",
            ),
            // axum answers 422 for JSON of the wrong shape; the API's
            // contract is 400 invalid_argument for every malformed input.
            JsonRejection::JsonDataError(r) => {
                ApiError::from_rejection(StatusCode::BAD_REQUEST, r.body_text())
            }
            other => ApiError::from_rejection(other.status(), other.body_text()),
        }
    }
}

/// Path parameters that do not decode (a bad percent-encoding, or bytes
/// that are not UTF-8): 400.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::from_rejection(
            rejection.status(),
            format!("bad path: {}", rejection.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = self.body.error.invocation_id.clone();
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(id) = id
            && let Ok(v) = HeaderValue::from_str(&id)
        {
            resp.headers_mut()
                .insert(crate::invoke::INVOCATION_ID_HEADER, v);
        }
        resp
    }
}
