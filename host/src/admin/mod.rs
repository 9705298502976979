//! The control plane: the admin REST API under `/v1`, its OpenAPI document,
//! health and metrics. Every route but health needs the bearer token.
//!
//! - this module: the router (the routes of every concern, the token
//!   check, 404 and 405), built with utoipa-axum so that the OpenAPI
//!   document comes from the same routes;
//! - `error`: the one table from errors to answers (status, code);
//! - `extract`: extractors whose rejections are that JSON error, and the
//!   reading of bodies under a limit;
//! - `openapi`: the document;
//! - the handlers, by concern: `functions` (and versions), `invoke`,
//!   `logs` (and their live stream), `stats`, `kv`, `config`, `events`,
//!   `schedules`, `jobs`, `health` (and metrics), `tokens` (and the audit
//!   log, and whoami);
//! - `ui`: the dashboard's assets at `/ui/` (public, not in the document);
//! - `access`: the token and scope check, and the audit log's writing.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;

use self::extract::MAX_JSON_BODY_BYTES;
use self::openapi::Binary;
use crate::Host;
use crate::error::ApiError;

mod access;
mod aliases;
mod config;
mod error;
mod events;
mod extract;
mod functions;
mod health;
mod invoke;
mod jobs;
mod keys;
mod kv;
mod logs;
mod openapi;
mod schedules;
mod stats;
#[cfg(test)]
mod tests;
mod tokens;
mod ui;

pub use self::openapi::openapi;

/// Answer to a delete.
#[derive(Serialize, utoipa::ToSchema)]
struct Deleted {
    deleted: String,
}

/// Every route of the API, each with its documentation.
struct Routes {
    /// Answered without the token: health.
    public: OpenApiRouter<Host>,
    /// Behind the token and scope check: everything else.
    protected: OpenApiRouter<Host>,
}

fn routes() -> Routes {
    Routes {
        public: health::public_routes(),
        protected: OpenApiRouter::new()
            .merge(functions::routes())
            .merge(aliases::routes())
            .merge(keys::routes())
            .merge(logs::routes())
            .merge(stats::routes())
            .merge(invoke::routes())
            .merge(kv::routes())
            .merge(config::routes())
            .merge(events::routes())
            .merge(schedules::routes())
            .merge(jobs::routes())
            .merge(health::routes())
            .merge(tokens::routes())
            .merge(openapi::routes()),
    }
}

/// Builds the admin router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    let Routes { public, protected } = routes();
    let (public, _) = public.split_for_parts();
    let public = public.merge(ui::router());
    let (protected, _) = protected.split_for_parts();
    let protected = protected
        // Before the token check is layered on, so that a client without
        // the token learns nothing of the protected routes' methods.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            host.clone(),
            access::require_scope,
        ));
    public
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
