//! Functions and their versions: deploy, list, show, roll back, delete.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath, ApiQuery, BodyError, read_body};
use super::{Binary, Deleted};
use crate::Host;
use crate::error::{ApiError, DeployError, ErrorBody};
use crate::function::wire::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(list_functions))
        .routes(routes!(deploy, get_function, delete_function))
        .routes(routes!(versions))
        .routes(routes!(rollback))
}

/// Body of a rollback.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackRequest {
    /// The version to make active; default: the newest one older than the
    /// active version.
    version: Option<u64>,
}

#[utoipa::path(get, path = "/v1/functions", responses((status = 200, body = [FunctionSummary])))]
pub(super) async fn list_functions(
    State(host): State<Host>,
) -> Result<Json<Vec<FunctionSummary>>, ApiError> {
    Ok(Json(host.functions().list()?))
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
        ("config_env" = Option<bool>, Query, description = "Pass the function's plain settings (not secrets) as environment variables; default: inherited, else false"),
        ("version_pinning" = Option<bool>, Query, description = "Let a request pin a serving version (the active one, or one an alias points to) with the `wisp-version` header; default: inherited, else false"),
        ("auth" = Option<String>, Query, description = "Who may invoke the function on the data plane: `public` (anyone) or `key` (a request needs one of its invoke keys, `/v1/functions/{name}/keys`); default: inherited, else public"),
        ("kv_max_key_bytes" = Option<u64>, Query, description = "Key-value key size override"),
        ("kv_max_value_bytes" = Option<u64>, Query, description = "Key-value value size override"),
        ("kv_max_total_bytes" = Option<u64>, Query, description = "Key-value total (keys and values) override"),
        ("allow_outbound" = Option<Vec<String>>, Query, description = "Outbound HTTP allow-list entry, repeatable: `https://api.example.com`, `*.example.com`, `host:port`, `host:*`"),
        ("concurrency" = Option<u32>, Query, description = "Invocations running at once, 1 to the host's max in-flight; default: inherited, else the host's per-function share"),
        ("queue" = Option<u32>, Query, description = "Requests that may wait for a slot beyond `concurrency` (0: 429 at once); default: inherited, else 0"),
        ("queue_timeout_ms" = Option<u64>, Query, description = "How long one request may wait for a slot before 429, at least 1; default: inherited, else 10000"),
        ("reuse" = Option<String>, Query, description = "WASI 0.3 components only: requests one instance serves before it is retired, `N` or `A..B` (picked at random per instance); `1` turns reuse off (the default: a fresh instance per request)"),
        ("reuse_concurrency" = Option<u32>, Query, description = "With reuse: requests one instance serves at once (default 1)"),
        ("idle_timeout_ms" = Option<u64>, Query, description = "With reuse: how long an idle instance is kept, ms (default 10000)"),
        ("rate_limit" = Option<String>, Query, description = "Data-plane rate limit: `N/s`, `N/m` or `N/h`, optionally `,burst=B` (default burst: the rate per second, at least 1); past it 429 `rate_limited` with Retry-After; `none` or `off` removes it; default: inherited, else none"),
        ("cors_origin" = Option<Vec<String>>, Query, description = "CORS origin, repeatable: `scheme://host[:port]` or `*`; the host answers preflights from listed origins (204; others 403 `cors_origin_not_allowed`) without invoking the function, and adds `Access-Control-Allow-Origin` to responses; `none` removes CORS; default: inherited, else none (OPTIONS reach the function)"),
        ("cors_credentials" = Option<bool>, Query, description = "With CORS origins: allow credentials (`Access-Control-Allow-Credentials: true`); refused with `*`; default: inherited, else false"),
        ("host" = Option<Vec<String>>, Query, description = "Host, repeatable: `api.example.com` or `*.example.com`; the routes then serve only requests for these hosts (Host / :authority, port ignored), and conflict only with routes on the same host; `none` removes them; default: inherited, else any host"),
    ),
    request_body(content((Binary = "application/wasm"), (Binary = "application/octet-stream")), description = "The component (any content type)"),
    responses(
        (status = 201, body = FunctionInfo, description = "Deployed; the new version is active and durable"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_wasm, not_a_component, missing_export, unsatisfied_imports, invalid_route, invalid_argument, untrusted_artifact (precompiled code not signed by a trusted key), engine_mismatch (precompiled for other engine settings)"),
        (status = 409, body = ErrorBody, description = "route_conflict: another function serves one of the routes on the same host (or both on any host)"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
    )
)]
pub(super) async fn deploy(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(options): ApiQuery<DeployOptions>,
    req: Request,
) -> Result<(StatusCode, Json<FunctionInfo>), ApiError> {
    let limit = host.config().max_upload_bytes;
    let (parts, body) = req.into_parts();
    let wasm = read_body(&parts.headers, body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => DeployError::TooLarge(format!(
                "the upload is larger than the limit of {limit} bytes"
            )),
            BodyError::Read(e) => {
                DeployError::InvalidArgument(format!("reading the upload failed: {e}"))
            }
        })?;
    let info = host.functions().deploy(&name, wasm, options).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/v1/functions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = FunctionInfo), (status = 404, body = ErrorBody)))]
pub(super) async fn get_function(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    Ok(Json(host.functions().get(&name)?))
}

/// Query of a function's delete.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Delete it even if it has aliases.
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/functions/{name}", params(("name" = String, Path), DeleteQuery),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has aliases and `force` is not set")))]
pub(super) async fn delete_function(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    match q.force {
        true => host.functions().delete_forced(&name).await?,
        false => host.functions().delete(&name).await?,
    }
    Ok(Json(Deleted { deleted: name }))
}

#[utoipa::path(get, path = "/v1/functions/{name}/versions", params(("name" = String, Path)),
    responses((status = 200, body = [VersionInfo]), (status = 404, body = ErrorBody)))]
pub(super) async fn versions(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    Ok(Json(host.functions().versions(&name)?))
}

#[utoipa::path(post, path = "/v1/functions/{name}/rollback", params(("name" = String, Path)),
    request_body(content = Option<RollbackRequest>, description = "Optional: {\"version\": N}"),
    responses((status = 200, body = FunctionInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn rollback(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    body: Option<ApiJson<RollbackRequest>>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok(Json(host.functions().rollback(&name, req.version).await?))
}
