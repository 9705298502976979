//! The JSON error every client sees,
//! `{"error": {"code": "...", "message": "..."}}` ([`ApiError`]), shared by
//! the data plane and the admin API, and the deploy errors. Which status and
//! code each domain error is answered with is the admin API's table
//! (`admin/error.rs`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

/// Response header carrying the invocation id. Defined here, where error
/// responses carry it too, so this module needs nothing of `invocation`
/// (which re-exports it).
pub const INVOCATION_ID_HEADER: &str = "wisp-invocation-id";

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
    /// No alias of that name.
    #[error("{0}")]
    AliasNotFound(String),
    /// Precompiled code this host will not load: unsigned, signed by a
    /// key it does not trust, or changed after signing.
    #[error("{0}")]
    Untrusted(String),
    /// A runtime-only build was given wasm to compile.
    #[error("{0}")]
    NoCompiler(String),
    /// Precompiled code for other engine settings (target, engine, wasmtime
    /// build or limits) than this host's.
    #[error("{0}")]
    EngineMismatch(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: NATS cannot be reached, so nothing was changed.
    #[error("{0}")]
    ClusterUnavailable(String),
    /// Cluster mode: the function changed on another host meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// Anything else (logged; the client sees a generic message).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::cluster::ClusterError> for DeployError {
    fn from(e: crate::cluster::ClusterError) -> DeployError {
        use crate::cluster::ClusterError::*;
        match e {
            Unavailable(_) => DeployError::ClusterUnavailable(e.to_string()),
            Conflict(m) => DeployError::Conflict(m),
            Invalid(m) => DeployError::Internal(m),
            NoKey => DeployError::Internal(e.to_string()),
        }
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
            resp.headers_mut().insert(INVOCATION_ID_HEADER, v);
        }
        resp
    }
}
