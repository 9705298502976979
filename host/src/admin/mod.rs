//! The control plane: the admin REST API under `/v1`, its OpenAPI document,
//! health and metrics. Every route but health needs the bearer token.
//!
//! - this module: the router (routes, the token check, 404 and 405);
//! - `error`: the one table from errors to answers (status, code);
//! - `extract`: extractors whose rejections are that JSON error, and the
//!   reading of bodies under a limit;
//! - `openapi`: the document;
//! - the handlers, by concern: `functions` (and versions), `invoke`,
//!   `logs`, `kv`, `config`, `events`, `schedules`, `jobs`, `health`
//!   (and metrics).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde::Serialize;
use subtle::ConstantTimeEq;

use self::extract::MAX_JSON_BODY_BYTES;
use self::openapi::Binary;
use crate::Host;
use crate::error::ApiError;

mod config;
mod error;
mod events;
mod extract;
mod functions;
mod health;
mod invoke;
mod jobs;
mod kv;
mod logs;
mod openapi;
mod schedules;
#[cfg(test)]
mod tests;

pub use self::openapi::openapi;

/// Answer to a delete.
#[derive(Serialize, utoipa::ToSchema)]
struct Deleted {
    deleted: String,
}

/// Builds the admin router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    let protected = Router::new()
        .route("/v1/functions", get(functions::list_functions))
        .route(
            "/v1/functions/{name}",
            post(functions::deploy)
                .get(functions::get_function)
                .delete(functions::delete_function),
        )
        .route("/v1/functions/{name}/versions", get(functions::versions))
        .route("/v1/functions/{name}/logs", get(logs::function_logs))
        .route("/v1/functions/{name}/rollback", post(functions::rollback))
        .route("/v1/functions/{name}/invoke", any(invoke::invoke))
        .route("/v1/functions/{name}/kv", get(kv::kv_list))
        .route(
            "/v1/functions/{name}/kv/{*key}",
            get(kv::kv_get).put(kv::kv_put).delete(kv::kv_delete),
        )
        .route(
            "/v1/functions/{name}/config",
            get(config::config_list).put(config::config_set),
        )
        .route(
            "/v1/functions/{name}/config/{key}",
            delete(config::config_unset),
        )
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(health::metrics_text))
        .route("/v1/topics/{topic}/events", post(events::publish))
        .route(
            "/v1/functions/{name}/invoke-async",
            post(invoke::invoke_async),
        )
        .route(
            "/v1/subscriptions",
            get(events::list_subscriptions).post(events::create_subscription),
        )
        .route(
            "/v1/subscriptions/{function}/{topic}",
            delete(events::delete_subscription),
        )
        .route("/v1/events/{id}", get(events::get_event))
        .route(
            "/v1/functions/{name}/dlq",
            get(events::dead_letters).delete(events::purge_dead_letters),
        )
        .route("/v1/functions/{name}/dlq/redrive", post(events::redrive))
        .route(
            "/v1/schedules",
            get(schedules::list_schedules).post(schedules::create_schedule),
        )
        .route("/v1/schedules/{id}", delete(schedules::delete_schedule))
        .route("/v1/functions/{name}/jobs", post(jobs::start_job))
        .route("/v1/jobs", get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        // Before the token check is layered on, so that a client without
        // the token learns nothing of the protected routes' methods.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(host.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health::health))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        })
        // The limit `ApiJson` bodies are read with (uploads, values and
        // payloads are read by their handlers, with limits of their own).
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(host)
}

/// A known path with a method it does not serve. Axum adds the `Allow`
/// header.
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed here; the Allow header lists those that are"),
    )
}

/// An error answered to a request that came with a body closes the
/// connection (`Connection: close`). The body may not have been read (an
/// upload refused for its name, its query or its token is answered before
/// it is sent whole); without the header a client would send its next
/// request on a connection the server then drops (`IncompleteMessage`).
async fn close_after_refused_body(req: Request, next: Next) -> Response {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut resp = next.run(req).await;
    let status = resp.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Checks `Authorization: Bearer <token>` in constant time. The token is
/// never logged.
async fn require_token(State(host): State<Host>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match given {
        Some(t) => bool::from(t.as_bytes().ct_eq(host.admin_token().as_bytes())),
        None => false,
    };
    if !ok {
        let msg = if given.is_none() {
            "missing bearer token: send `Authorization: Bearer <token>` (the CLI reads WISP_ADMIN_TOKEN)"
        } else {
            "invalid bearer token"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response();
    }
    next.run(req).await
}
