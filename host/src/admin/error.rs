//! The admin API's one table from errors to answers: the status and code of
//! every domain error ([`DeployError`], [`KvError`], [`ConfigError`],
//! [`EventError`], [`TokenError`]) and of every request axum refuses before a handler runs
//! (a body, a path, a query). Each becomes an [`ApiError`], the JSON
//! `{"error": {"code", "message"}}` every client sees; the domain modules
//! know nothing of HTTP.
//!
//! Messages: a refusal keeps the error's own message (it says what was
//! wrong with the request, and names keys, never values); a store failure
//! or internal error (code `internal`) is logged here and answered without
//! details.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum_extra::extract::QueryRejection;

use super::extract::MAX_JSON_BODY_BYTES;
use crate::error::{ApiError, DeployError};
use crate::{ConfigError, EventError, KvError, LogError, TokenError};

/// The code of store failures and internal errors, whose details stay in
/// the host log.
const INTERNAL: &str = "internal";

/// The answer to a domain error of `status` and `code`.
fn answer(status: StatusCode, code: &'static str, error: &dyn std::error::Error) -> ApiError {
    if code == INTERNAL {
        tracing::error!(error = %error, "admin request failed");
        return ApiError::new(status, code, "internal error; see the host log");
    }
    ApiError::new(status, code, error.to_string())
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        use DeployError::*;
        let (status, code) = match &e {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidWasm(_) => (StatusCode::BAD_REQUEST, "invalid_wasm"),
            NotAComponent(_) => (StatusCode::BAD_REQUEST, "not_a_component"),
            MissingExport(_) => (StatusCode::BAD_REQUEST, "missing_export"),
            UnsatisfiedImports(_) => (StatusCode::BAD_REQUEST, "unsatisfied_imports"),
            InvalidRoute(_) => (StatusCode::BAD_REQUEST, "invalid_route"),
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            RouteConflict(_) => (StatusCode::CONFLICT, "route_conflict"),
            Untrusted(_) => (StatusCode::BAD_REQUEST, "untrusted_artifact"),
            EngineMismatch(_) => (StatusCode::BAD_REQUEST, "engine_mismatch"),
            NoCompiler(_) => (StatusCode::BAD_REQUEST, "no_compiler"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            VersionNotFound(_) => (StatusCode::NOT_FOUND, "version_not_found"),
            AliasNotFound(_) => (StatusCode::NOT_FOUND, "alias_not_found"),
            ClusterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Store(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> ApiError {
        use KvError::*;
        let (status, code) = match &e {
            InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            // A server error, but the client's to read: its message says
            // which limit the write would pass.
            QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            NotANumber => (StatusCode::CONFLICT, "not_a_number"),
            InvalidCursor => (StatusCode::BAD_REQUEST, "invalid_cursor"),
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            ClusterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        use ConfigError::*;
        let (status, code) = match &e {
            InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_config_key"),
            ValueTooLarge(_) => (StatusCode::BAD_REQUEST, "config_value_too_large"),
            InvalidValue(_) => (StatusCode::BAD_REQUEST, "invalid_config_value"),
            TooManyKeys(_) => (StatusCode::BAD_REQUEST, "too_many_config_keys"),
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            KeyNotFound(_) => (StatusCode::NOT_FOUND, "config_key_not_found"),
            ClusterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            NoClusterKey(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_key_missing"),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        use LogError::*;
        let (status, code) = match &e {
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Store(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> ApiError {
        use EventError::*;
        let (status, code) = match &e {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            TopicQuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "topic_quota_exceeded"),
            HostQuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "host_quota_exceeded"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            SubscriptionNotFound { .. } => (StatusCode::NOT_FOUND, "subscription_not_found"),
            ClusterUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            EventNotFound(_) => (StatusCode::NOT_FOUND, "event_not_found"),
            ScheduleNotFound(_) => (StatusCode::NOT_FOUND, "schedule_not_found"),
            JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found"),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        let error = answer(status, code, &e);
        // A full queue or quota drains as subscribers catch up: worth a
        // retry soon.
        if status == StatusCode::TOO_MANY_REQUESTS {
            return error.retry_after(1);
        }
        error
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        use TokenError::*;
        let (status, code) = match &e {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidScope(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
            InvalidExpiry(_) | InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            NameTaken(_) => (StatusCode::CONFLICT, "token_exists"),
            TooMany => (StatusCode::CONFLICT, "too_many_tokens"),
            NotFound(_) => (StatusCode::NOT_FOUND, "token_not_found"),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

impl From<crate::KeyError> for ApiError {
    fn from(e: crate::KeyError) -> ApiError {
        use crate::KeyError::*;
        let (status, code) = match &e {
            InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidExpiry(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            NameTaken(..) => (StatusCode::CONFLICT, "key_exists"),
            TooMany(_) => (StatusCode::CONFLICT, "too_many_keys"),
            NotFound(..) => (StatusCode::NOT_FOUND, "key_not_found"),
            Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        };
        answer(status, code, &e)
    }
}

// ------------------------------------------------------------ rejections

/// `413 payload_too_large` for a request body over `limit` bytes.
pub(crate) fn body_too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// `400 invalid_argument`: a malformed request.
pub(crate) fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
}

/// An error for a rejection axum answered with `status` and `text`: 4xx
/// keep their text (it describes the request), 5xx are logged and answered
/// without details.
fn rejected(status: StatusCode, text: String) -> ApiError {
    if status.is_server_error() {
        tracing::error!(%status, error = %text, "admin request rejected");
        return ApiError::new(status, INTERNAL, "internal error; see the host log");
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_argument",
    };
    ApiError::new(status, code, text)
}

/// A body that could not be read: 413 past the admin API's JSON body
/// limit, else 400.
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return body_too_large(MAX_JSON_BODY_BYTES as u64);
        }
        rejected(
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
            JsonRejection::JsonDataError(r) => rejected(StatusCode::BAD_REQUEST, r.body_text()),
            other => rejected(other.status(), other.body_text()),
        }
    }
}

/// Path parameters that do not decode (a bad percent-encoding, or bytes
/// that are not UTF-8): 400.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        rejected(
            rejection.status(),
            format!("bad path: {}", rejection.body_text()),
        )
    }
}

/// Query parameters that do not decode or are of the wrong type: 400,
/// naming the parameter.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        // The rejection's own text starts "Failed to deserialize query
        // string"; its source names the parameter and what was wrong.
        let detail = std::error::Error::source(&rejection)
            .map_or_else(|| rejection.body_text(), ToString::to_string);
        rejected(
            rejection.status(),
            format!("bad query parameters: {detail}"),
        )
    }
}
