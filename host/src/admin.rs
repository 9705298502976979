//! The control plane: the admin REST API under `/v1`, its OpenAPI document,
//! health and metrics. Every route but health needs the bearer token.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use crate::Host;
use crate::api::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};
use crate::config::Limits;
use crate::error::{ApiError, DeployError, ErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "Wisp admin API", description = "Deploy, version, roll back, delete and invoke WebAssembly functions."),
    paths(health, list_functions, deploy, get_function, delete_function, versions, rollback, invoke, metrics_text, openapi_json),
    components(schemas(FunctionInfo, FunctionSummary, VersionInfo, Limits, ErrorBody, crate::error::ErrorDetail, RollbackRequest, Health, Deleted)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Health status.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// Answer to a delete.
#[derive(Serialize, utoipa::ToSchema)]
struct Deleted {
    deleted: String,
}

/// Body of a rollback.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct RollbackRequest {
    /// The version to make active; default: the newest one older than the
    /// active version.
    version: Option<u64>,
}

/// Builds the admin router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    let protected = Router::new()
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            post(deploy).get(get_function).delete(delete_function),
        )
        .route("/v1/functions/{name}/versions", get(versions))
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/invoke", any(invoke))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(host.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        })
        .with_state(host)
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

#[utoipa::path(get, path = "/v1/health", security(()), responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
async fn metrics_text(State(host): State<Host>) -> Response {
    match &host.inner.prometheus {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are recorded by the embedding application's recorder",
        )
        .into_response(),
    }
}

#[utoipa::path(get, path = "/v1/functions", responses((status = 200, body = [FunctionSummary])))]
async fn list_functions(State(host): State<Host>) -> Result<Json<Vec<FunctionSummary>>, DeployError> {
    Ok(Json(host.functions()?))
}

#[utoipa::path(
    post,
    path = "/v1/functions/{name}",
    params(
        ("name" = String, Path, description = "Function name: [a-z0-9-], 1 to 63 characters"),
        ("route" = Option<Vec<String>>, Query, description = "Route, repeatable: `/exact` or `/prefix/*`"),
        ("env" = Option<Vec<String>>, Query, description = "Environment variable KEY=VALUE, repeatable"),
        ("timeout_ms" = Option<u64>, Query, description = "Timeout override"),
        ("memory_bytes" = Option<u64>, Query, description = "Memory cap override"),
        ("max_body_bytes" = Option<u64>, Query, description = "Request body cap override"),
    ),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses(
        (status = 201, body = FunctionInfo, description = "Deployed; the new version is active and durable"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_wasm, not_a_component, missing_export, unsatisfied_imports, invalid_route, invalid_argument"),
        (status = 409, body = ErrorBody, description = "route_conflict"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
    )
)]
async fn deploy(State(host): State<Host>, Path(name): Path<String>, req: Request) -> Response {
    let options: DeployOptions = match serde_html_form::from_str(req.uri().query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => {
            return DeployError::InvalidArgument(format!("bad query parameters: {e}")).into_response();
        }
    };
    let limit = host.config().max_upload_bytes;
    let too_large = || {
        DeployError::TooLarge(format!("the upload is larger than the limit of {limit} bytes"))
            .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let body = match axum::body::to_bytes(req.into_body(), limit as usize).await {
        Ok(b) => b,
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                return too_large();
            }
            return DeployError::InvalidArgument(format!("reading the upload failed: {e}"))
                .into_response();
        }
    };
    match host.deploy(&name, body, options).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/v1/functions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = FunctionInfo), (status = 404, body = ErrorBody)))]
async fn get_function(State(host): State<Host>, Path(name): Path<String>) -> Result<Json<FunctionInfo>, DeployError> {
    Ok(Json(host.function(&name)?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
async fn delete_function(State(host): State<Host>, Path(name): Path<String>) -> Result<Json<Deleted>, DeployError> {
    host.delete(&name).await?;
    Ok(Json(Deleted { deleted: name }))
}

#[utoipa::path(get, path = "/v1/functions/{name}/versions", params(("name" = String, Path)),
    responses((status = 200, body = [VersionInfo]), (status = 404, body = ErrorBody)))]
async fn versions(State(host): State<Host>, Path(name): Path<String>) -> Result<Json<Vec<VersionInfo>>, DeployError> {
    Ok(Json(host.versions(&name)?))
}

#[utoipa::path(post, path = "/v1/functions/{name}/rollback", params(("name" = String, Path)),
    request_body(content = RollbackRequest, description = "Optional: {\"version\": N}"),
    responses((status = 200, body = FunctionInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(State(host): State<Host>, Path(name): Path<String>, body: axum::body::Bytes) -> Result<Json<FunctionInfo>, DeployError> {
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| DeployError::InvalidArgument(format!("bad rollback body: {e}")))?
    };
    Ok(Json(host.rollback(&name, req.version).await?))
}

#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invoke",
    params(("name" = String, Path), ("path" = Option<String>, Query, description = "Path and query the function sees; default `/`")),
    request_body(content = Vec<u8>, description = "Passed to the function as is"),
    responses((status = 200, description = "The function's response, with header wisp-invocation-id"), (status = 404, body = ErrorBody))
)]
async fn invoke(State(host): State<Host>, Path(name): Path<String>, req: Request) -> Response {
    #[derive(Deserialize)]
    struct Q {
        path: Option<String>,
    }
    let q: Q = match serde_html_form::from_str(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return DeployError::InvalidArgument(format!("bad query: {e}")).into_response(),
    };
    let path = q.path.unwrap_or_else(|| "/".into());
    let uri: axum::http::Uri = match path.parse() {
        Ok(u) if path.starts_with('/') => u,
        _ => {
            return DeployError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            ))
            .into_response();
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    // The admin token is not the function's business.
    parts.headers.remove(header::AUTHORIZATION);
    match host.invoke(&name, Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
