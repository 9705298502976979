//! The control plane: the admin REST API under `/v1`, its OpenAPI document,
//! health and metrics. Every route but health needs the bearer token.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use crate::Host;
use crate::api::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};
use crate::capabilities::logs::{LogEntry, LogLevel, LogPage, LogQuery, LogStream};
use crate::config::Limits;
use crate::error::{ApiError, DeployError, ErrorBody};
use crate::{ConfigEntry, ConfigError, ConfigList, KeyList, KvError, SetConfig};

#[derive(OpenApi)]
#[openapi(
    info(title = "Wisp admin API", description = "Deploy, version, roll back, delete and invoke WebAssembly functions."),
    paths(health, list_functions, deploy, get_function, delete_function, versions, function_logs, rollback, invoke, metrics_text, openapi_json, kv_list, kv_get, kv_put, kv_delete, config_list, config_set, config_unset,
        crate::events::admin::publish, crate::events::admin::invoke_async, crate::events::admin::list_subscriptions, crate::events::admin::create_subscription, crate::events::admin::delete_subscription, crate::events::admin::get_event, crate::events::admin::dead_letters, crate::events::admin::purge_dead_letters, crate::events::admin::redrive, crate::events::admin::list_schedules, crate::events::admin::create_schedule, crate::events::admin::delete_schedule, crate::events::admin::start_job, crate::events::admin::list_jobs, crate::events::admin::get_job, crate::events::admin::cancel_job),
    components(schemas(crate::events::Published, crate::events::NewSubscription, crate::events::Subscription, crate::events::RetryPolicy, crate::events::EventInfo, crate::events::DeliveryRecord, crate::events::DeliveryStatus, crate::events::RedriveRequest, crate::events::Redriven, crate::events::Purged, crate::events::NewSchedule, crate::events::Schedule, crate::events::NewJob, crate::events::JobInfo, crate::events::JobState, crate::events::JobCounts, crate::events::JobTask, LogPage, LogEntry, LogStream, LogLevel, FunctionInfo, FunctionSummary, VersionInfo, Limits, ErrorBody, crate::error::ErrorDetail, RollbackRequest, Health, Deleted, KeyList, KvStored, ConfigList, ConfigEntry, SetConfig)),
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
        .route("/v1/functions/{name}/logs", get(function_logs))
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/invoke", any(invoke))
        .route("/v1/functions/{name}/kv", get(kv_list))
        .route(
            "/v1/functions/{name}/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .route(
            "/v1/functions/{name}/config",
            get(config_list).put(config_set),
        )
        .route("/v1/functions/{name}/config/{key}", delete(config_unset))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
        .merge(crate::events::admin::routes())
        .route_layer(middleware::from_fn_with_state(host.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        })
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(host)
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
async fn list_functions(
    State(host): State<Host>,
) -> Result<Json<Vec<FunctionSummary>>, DeployError> {
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
        ("config_env" = Option<bool>, Query, description = "Pass the function's plain settings (not secrets) as environment variables; default: inherited, else false"),
        ("kv_max_key_bytes" = Option<u64>, Query, description = "Key-value key size override"),
        ("kv_max_value_bytes" = Option<u64>, Query, description = "Key-value value size override"),
        ("kv_max_total_bytes" = Option<u64>, Query, description = "Key-value total (keys and values) override"),
        ("allow_outbound" = Option<Vec<String>>, Query, description = "Outbound HTTP allow-list entry, repeatable: `https://api.example.com`, `*.example.com`, `host:port`, `host:*`"),
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
            return DeployError::InvalidArgument(format!("bad query parameters: {e}"))
                .into_response();
        }
    };
    let limit = host.config().max_upload_bytes;
    let too_large = || {
        DeployError::TooLarge(format!(
            "the upload is larger than the limit of {limit} bytes"
        ))
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
async fn get_function(
    State(host): State<Host>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, DeployError> {
    Ok(Json(host.function(&name)?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
async fn delete_function(
    State(host): State<Host>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, DeployError> {
    host.delete(&name).await?;
    Ok(Json(Deleted { deleted: name }))
}

#[utoipa::path(get, path = "/v1/functions/{name}/logs",
    params(("name" = String, Path), LogQuery),
    responses(
        (status = 200, body = LogPage, description = "The function's log lines (stdout, stderr, log calls, host notes), oldest first"),
        (status = 400, body = ErrorBody, description = "invalid_argument (since, limit)"),
        (status = 404, body = ErrorBody),
    ))]
async fn function_logs(
    State(host): State<Host>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<LogPage>, DeployError> {
    let q: LogQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| DeployError::InvalidArgument(format!("bad query parameters: {e}")))?;
    Ok(Json(host.logs(&name, q).await?))
}

#[utoipa::path(get, path = "/v1/functions/{name}/versions", params(("name" = String, Path)),
    responses((status = 200, body = [VersionInfo]), (status = 404, body = ErrorBody)))]
async fn versions(
    State(host): State<Host>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, DeployError> {
    Ok(Json(host.versions(&name)?))
}

#[utoipa::path(post, path = "/v1/functions/{name}/rollback", params(("name" = String, Path)),
    request_body(content = RollbackRequest, description = "Optional: {\"version\": N}"),
    responses((status = 200, body = FunctionInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    State(host): State<Host>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<FunctionInfo>, DeployError> {
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

// ---------------------------------------------------------------------------
// Key-value and config (capabilities::kv, capabilities::settings). Keys in
// paths are percent-decoded (`a%2Fb` is the key `a/b`; so is `a/b`).

/// Query of `GET /v1/functions/{name}/kv`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct KvListQuery {
    /// Only keys starting with this.
    prefix: Option<String>,
    /// The cursor of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000; default 100.
    limit: Option<u32>,
}

/// Query of `PUT /v1/functions/{name}/kv/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct KvPutQuery {
    /// The key expires this many milliseconds from now.
    ttl_ms: Option<u64>,
}

/// Answer to a key-value write.
#[derive(Serialize, utoipa::ToSchema)]
struct KvStored {
    key: String,
    bytes: u64,
}

fn kv_query<T: serde::de::DeserializeOwned>(query: Option<&str>) -> Result<T, KvError> {
    serde_html_form::from_str(query.unwrap_or(""))
        .map_err(|e| KvError::InvalidArgument(format!("bad query parameters: {e}")))
}

/// Path parameters with our JSON error when they do not decode.
fn path_params<T>(
    params: Result<Path<T>, axum::extract::rejection::PathRejection>,
) -> Result<T, ApiError> {
    params.map(|Path(p)| p).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad path: {}", e.body_text()),
        )
    })
}

#[utoipa::path(get, path = "/v1/functions/{name}/kv",
    params(("name" = String, Path), KvListQuery),
    responses(
        (status = 200, body = KeyList, description = "A page of keys in byte order; pass `cursor` back for the next page"),
        (status = 400, body = ErrorBody, description = "invalid_cursor, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
async fn kv_list(
    State(host): State<Host>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<KeyList>, KvError> {
    let q: KvListQuery = kv_query(query.as_deref())?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit as usize > crate::capabilities::kv::MAX_PAGE {
        return Err(KvError::InvalidArgument(format!(
            "limit must be between 1 and {} (got {limit})",
            crate::capabilities::kv::MAX_PAGE
        )));
    }
    let prefix = q.prefix.unwrap_or_default();
    Ok(Json(
        host.kv_list(&name, &prefix, q.cursor.as_deref(), limit)
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/functions/{name}/kv/{key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, body = Vec<u8>, content_type = "application/octet-stream", description = "The value, as stored"),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found (unset or expired)"),
    ))]
async fn kv_get(
    State(host): State<Host>,
    params: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    let (name, key) = match path_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match host.kv_get(&name, &key).await {
        Ok(value) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(put, path = "/v1/functions/{name}/kv/{key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded"), KvPutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value, raw bytes"),
    responses(
        (status = 200, body = KvStored, description = "Stored and durable"),
        (status = 400, body = ErrorBody, description = "invalid_key, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "value_too_large: over the function's value limit"),
        (status = 507, body = ErrorBody, description = "quota_exceeded: the function's keys and values would pass its total limit"),
    ))]
async fn kv_put(
    State(host): State<Host>,
    params: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    let (name, key) = match path_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let q: KvPutQuery = kv_query(req.uri().query())?;
        let limit = host.kv_max_value_bytes(&name)?;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(KvError::ValueTooLarge { limit });
        }
        let cap = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
        let body = axum::body::to_bytes(req.into_body(), cap)
            .await
            .map_err(|e| {
                let over = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if over {
                    KvError::ValueTooLarge { limit }
                } else {
                    KvError::InvalidArgument(format!("reading the value failed: {e}"))
                }
            })?;
        host.kv_set(&name, &key, &body, q.ttl_ms).await?;
        Ok(KvStored {
            key,
            bytes: body.len() as u64,
        })
    }
    .await;
    match result {
        Ok(stored) => Json(stored).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(delete, path = "/v1/functions/{name}/kv/{key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, body = Deleted),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found"),
    ))]
async fn kv_delete(
    State(host): State<Host>,
    params: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    let (name, key) = match path_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match host.kv_delete(&name, &key).await {
        Ok(()) => Json(Deleted { deleted: key }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, path = "/v1/functions/{name}/config",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = ConfigList, description = "Settings and secrets by key; secret values are masked as `********`"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
async fn config_list(
    State(host): State<Host>,
    Path(name): Path<String>,
) -> Result<Json<ConfigList>, ConfigError> {
    Ok(Json(host.config_list(&name)?))
}

#[utoipa::path(put, path = "/v1/functions/{name}/config",
    params(("name" = String, Path)),
    request_body(content = SetConfig, description = "Keys and values to set, all or none; `secret: true` stores them as secrets"),
    responses(
        (status = 200, body = ConfigList, description = "Stored and durable; the next invocation sees it (secrets masked)"),
        (status = 400, body = ErrorBody, description = "invalid_config_key, config_value_too_large, invalid_config_value, too_many_config_keys, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
async fn config_set(
    State(host): State<Host>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ConfigList>, ConfigError> {
    // Our own message, not serde's: serde's can quote a (secret) value.
    let req: SetConfig = serde_json::from_slice(&body).map_err(|e| {
        ConfigError::InvalidArgument(format!(
            "the body must be JSON {{\"values\": {{\"KEY\": \"VALUE\", ...}}, \"secret\": false}} \
             with string values (error at line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(Json(host.set_config(&name, req.values, req.secret).await?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/config/{key}",
    params(("name" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, body = ConfigList, description = "Removed; the next invocation no longer sees it"),
        (status = 400, body = ErrorBody, description = "invalid_config_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, config_key_not_found"),
    ))]
async fn config_unset(
    State(host): State<Host>,
    params: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Response {
    let (name, key) = match path_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match host.unset_config(&name, &[key]).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => e.into_response(),
    }
}
