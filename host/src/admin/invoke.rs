//! Invoking a function through the API: at once (`invoke`, the function's
//! own response) or asynchronously (`invoke-async`, a durable event
//! delivered with retries).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Binary;
use super::events::read_payload;
use super::extract::{ApiPath, ApiQuery};
use crate::Host;
use crate::error::{ApiError, ErrorBody};
use crate::events::Published;

/// The routes, each with its documentation.
pub(super) fn routes() -> OpenApiRouter<Host> {
    // Every method reaches the function, as with axum's `any`, not only
    // those the document lists.
    let (schemas, paths, methods) = routes!(invoke);
    OpenApiRouter::new()
        .routes((schemas, paths, methods.fallback(invoke)))
        .routes(routes!(invoke_async))
}

/// Query of both invocations.
#[derive(Debug, Default, Deserialize)]
pub(super) struct InvokeQuery {
    /// The path and query the function sees; default `/`.
    path: Option<String>,
}

impl InvokeQuery {
    /// The path and query the function sees: absolute, with an optional
    /// query.
    fn target(self) -> Result<(String, Uri), ApiError> {
        let path = self.path.unwrap_or_else(|| "/".into());
        match path.parse::<Uri>() {
            Ok(uri) if path.starts_with('/') => Ok((path, uri)),
            _ => Err(super::error::invalid_argument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            ))),
        }
    }
}

#[utoipa::path(
    method(get, post, put, delete, patch, options, head, trace),
    path = "/v1/functions/{name}/invoke",
    params(("name" = String, Path), ("path" = Option<String>, Query, description = "Path and query the function sees; default `/`")),
    request_body(content = Option<Binary>, content_type = "application/octet-stream", description = "Passed to the function as is, with its content type"),
    responses(
        (status = 200, description = "The function's response, with header wisp-invocation-id"),
        (status = "default", description = "The function's response, whatever its status"),
        (status = 400, body = ErrorBody, description = "invalid_argument: `path` is not an absolute path"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large: over the function's body limit"),
        (status = 429, body = ErrorBody, description = "the function is at its concurrency limit"),
        (status = 500, body = ErrorBody, description = "the function trapped or broke a limit"),
        (status = 503, body = ErrorBody, description = "the host is at its limit of invocations in flight"),
        (status = 504, body = ErrorBody, description = "the function ran out of time"),
    )
)]
pub(super) async fn invoke(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<InvokeQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let (_, uri) = query.target()?;
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    // The admin token is not the function's business.
    parts.headers.remove(header::AUTHORIZATION);
    Ok(host
        .functions()
        .invoke(&name, Request::from_parts(parts, body))
        .await?)
}

/// Headers of an asynchronous invocation that are not passed on.
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
];

#[utoipa::path(post, path = "/v1/functions/{name}/invoke-async",
    params(("name" = String, Path), ("path" = Option<String>, Query, description = "Path and query the function sees; default `/`")),
    request_body(content = Option<Binary>, content_type = "application/octet-stream", description = "Passed to the function as is (any content type), with the request's headers"),
    responses(
        (status = 202, body = Published, description = "Durable; the function gets a POST with it, retried on failure"),
        (status = 400, body = ErrorBody, description = "invalid_argument: `path` is not an absolute path, or a content type over 255 bytes"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 429, body = ErrorBody, description = "queue_full, topic_quota_exceeded, host_quota_exceeded (Retry-After)"),
    ))]
pub(super) async fn invoke_async(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<InvokeQuery>,
    req: Request,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let (path, _) = query.target()?;
    let (parts, body) = req.into_parts();
    let payload = read_payload(&host, &parts.headers, body).await?;
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| !DROPPED_HEADERS.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let published = host
        .events()
        .invoke_async(&name, path, headers, payload)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}
