//! The control plane: the admin REST API under `/v1`, its OpenAPI document,
//! health and metrics. Every route but health needs the bearer token.

use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, OptionalFromRequest, Path, RawQuery, Request,
    State,
};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa::openapi::{RefOr, Schema};

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
    modifiers(&BearerAuth, &EdgeResponses),
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

/// What the layers and extractors in front of the handlers answer, added to
/// every operation they apply to, so that the document lists every status a
/// route can give: 401 (the token check) on all but health; 400 where there
/// are path parameters (one that does not decode, `ApiPath`); 400, 413 and
/// 415 where the body is JSON (`ApiJson`). Parameters that name a function
/// or a topic in a path, or the path a function sees, get their rule as a
/// pattern and an example; `u64`s are documented as such.
struct EdgeResponses;

/// A function name (`routes::validate_name`).
const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A topic name (`events::validate_topic`).
const TOPIC_PATTERN: &str = "^[a-z0-9._-]{1,63}$";

impl utoipa::Modify for EdgeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::SecurityRequirement;
        use utoipa::openapi::path::ParameterIn;
        let schemas = openapi
            .components
            .iter_mut()
            .flat_map(|c| c.schemas.values_mut());
        for schema in schemas {
            if let RefOr::T(Schema::Object(object)) = schema {
                for property in object.properties.values_mut() {
                    if let RefOr::T(Schema::Object(property)) = property {
                        unsigned_64(property);
                    }
                }
            }
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                // `security(())`: no requirement, as health has.
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.contains(&SecurityRequirement::default()));
                if !public {
                    add_error(
                        op,
                        401,
                        "unauthorized: the bearer token is missing or wrong",
                    );
                }
                let mut path_params = false;
                for param in op.parameters.iter_mut().flatten() {
                    path_params |= param.parameter_in == ParameterIn::Path;
                    if let Some(RefOr::T(Schema::Object(schema))) = &mut param.schema {
                        unsigned_64(schema);
                    }
                    let (pattern, example) = match (param.name.as_str(), &param.parameter_in) {
                        ("name" | "function", ParameterIn::Path) => (NAME_PATTERN, "hello"),
                        ("topic", ParameterIn::Path) => (TOPIC_PATTERN, "orders"),
                        // What a function invoked through the API sees
                        // (empty: `/`).
                        ("path", ParameterIn::Query) => ("^(/|$)", "/hello?x=1"),
                        _ => continue,
                    };
                    if let Some(RefOr::T(Schema::Object(schema))) = &mut param.schema {
                        schema.pattern = Some(pattern.into());
                        schema.examples = vec![example.into()];
                    }
                }
                if path_params {
                    add_error(
                        op,
                        400,
                        "invalid_argument: a path parameter does not decode (percent-encoding, UTF-8)",
                    );
                }
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    add_error(
                        op,
                        400,
                        "invalid_argument: malformed JSON, an unknown or missing field, a wrong type",
                    );
                    add_error(
                        op,
                        413,
                        "payload_too_large: the body is over the JSON body limit (2 MiB)",
                    );
                    add_error(
                        op,
                        415,
                        "unsupported_media_type: the body is not sent as `application/json`",
                    );
                }
            }
        }
    }
}

/// utoipa documents a `u64` as `int64` with minimum 0; the server takes the
/// whole `u64` range, which is `uint64` (the format utoipa itself writes
/// with its `non_strict_integers` feature).
fn unsigned_64(schema: &mut utoipa::openapi::schema::Object) {
    use utoipa::openapi::{KnownFormat, SchemaFormat};
    let int64 = schema.format == Some(SchemaFormat::KnownFormat(KnownFormat::Int64));
    let unsigned = match schema.minimum {
        Some(utoipa::Number::Int(0) | utoipa::Number::UInt(0)) => true,
        Some(utoipa::Number::Float(min)) => min == 0.0,
        _ => false,
    };
    if int64 && unsigned {
        schema.format = Some(SchemaFormat::Custom("uint64".into()));
    }
}

/// Documents `status` with the error body, unless the operation already
/// does.
fn add_error(op: &mut utoipa::openapi::path::Operation, status: u16, description: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
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

/// Raw bytes: a body taken or answered as is.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct Binary(#[allow(dead_code)] Vec<u8>);

/// Answer to a delete.
#[derive(Serialize, utoipa::ToSchema)]
struct Deleted {
    deleted: String,
}

/// Body of a rollback.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
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
        // Before the token check is layered on, so that a client without
        // the token learns nothing of the protected routes' methods.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(host.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
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

// ---------------------------------------------------------------------------
// Extractors whose rejection is the API's JSON error (`ApiError`), so that
// no malformed request is answered with axum's plain-text rejections.

/// Largest JSON request body of the admin API, in bytes.
pub(crate) const MAX_JSON_BODY_BYTES: usize = 2 << 20;

/// A JSON request body. Axum's `Json` does the work (content type, the
/// router's body limit, serde); its rejections become `ApiError`s: 415 for
/// a body not sent as JSON, 400 for malformed JSON or an unknown or missing
/// field (request types deny unknown fields), 413 past the limit.
///
/// As `Option<ApiJson<T>>`: an empty body is `None`, whatever its content
/// type (a rollback or redrive with no body).
pub(crate) struct ApiJson<T>(pub T);

/// 413 from the declared length, before anything is read.
fn refuse_declared_length(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JSON_BODY_BYTES as u64) {
        return Err(ApiError::body_too_large(MAX_JSON_BODY_BYTES as u64));
    }
    Ok(())
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        refuse_declared_length(&req)?;
        let Json(value) = <Json<T> as FromRequest<S>>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        refuse_declared_length(&req)?;
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_JSON_BODY_BYTES)
            .await
            .map_err(|e| {
                let over = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if over {
                    ApiError::body_too_large(MAX_JSON_BODY_BYTES as u64)
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_argument",
                        format!("reading the request body failed: {e}"),
                    )
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Path parameters; a bad percent-encoding or bytes that are not UTF-8 are
/// answered 400 `invalid_argument` in the API's JSON.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
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
    request_body(content((Binary = "application/wasm"), (Binary = "application/octet-stream")), description = "The component (any content type)"),
    responses(
        (status = 201, body = FunctionInfo, description = "Deployed; the new version is active and durable"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_wasm, not_a_component, missing_export, unsatisfied_imports, invalid_route, invalid_argument"),
        (status = 409, body = ErrorBody, description = "route_conflict"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
    )
)]
async fn deploy(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> Response {
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
    ApiPath(name): ApiPath<String>,
) -> Result<Json<FunctionInfo>, DeployError> {
    Ok(Json(host.function(&name)?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
async fn delete_function(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
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
    ApiPath(name): ApiPath<String>,
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
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<VersionInfo>>, DeployError> {
    Ok(Json(host.versions(&name)?))
}

#[utoipa::path(post, path = "/v1/functions/{name}/rollback", params(("name" = String, Path)),
    request_body(content = Option<RollbackRequest>, description = "Optional: {\"version\": N}"),
    responses((status = 200, body = FunctionInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollback(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    body: Option<ApiJson<RollbackRequest>>,
) -> Result<Json<FunctionInfo>, DeployError> {
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok(Json(host.rollback(&name, req.version).await?))
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
async fn invoke(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> Response {
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
    #[param(minimum = 1, maximum = 1000)]
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

#[utoipa::path(get, path = "/v1/functions/{name}/kv",
    params(("name" = String, Path), KvListQuery),
    responses(
        (status = 200, body = KeyList, description = "A page of keys in byte order; pass `cursor` back for the next page"),
        (status = 400, body = ErrorBody, description = "invalid_cursor, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
async fn kv_list(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
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
        (status = 200, body = Binary, content_type = "application/octet-stream", description = "The value, as stored"),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found (unset or expired)"),
    ))]
async fn kv_get(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Response {
    match host.kv_get(&name, &key).await {
        Ok(value) => ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(put, path = "/v1/functions/{name}/kv/{key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded"), KvPutQuery),
    request_body(content = Option<Binary>, content_type = "application/octet-stream", description = "The value, raw bytes"),
    responses(
        (status = 200, body = KvStored, description = "Stored and durable"),
        (status = 400, body = ErrorBody, description = "invalid_key, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "value_too_large: over the function's value limit"),
        (status = 507, body = ErrorBody, description = "quota_exceeded: the function's keys and values would pass its total limit"),
    ))]
async fn kv_put(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
    req: Request,
) -> Response {
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
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Response {
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
    ApiPath(name): ApiPath<String>,
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
    ApiPath(name): ApiPath<String>,
    // Syntax errors (serde's message for them quotes no input), a missing
    // content type, a body over the limit: refused as any JSON body.
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<ConfigList>, ConfigError> {
    // Our own message, not serde's, for the shape: serde's can quote a
    // (secret) value. An unknown field is named: a field name is no value.
    let req: SetConfig = serde_json::from_value(body).map_err(|e| {
        let serde_message = e.to_string();
        let unknown = if serde_message.starts_with("unknown field") {
            format!("{serde_message}: ")
        } else {
            String::new()
        };
        ConfigError::InvalidArgument(format!(
            "{unknown}the body must be JSON {{\"values\": {{\"KEY\": \"VALUE\", ...}}, \"secret\": false}} \
             with string values"
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
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Response {
    match host.unset_config(&name, &[key]).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    const TOKEN: &str = "a-test-token-a-test-token";

    async fn call(host: &Host, req: Request) -> (StatusCode, serde_json::Value) {
        let resp = router(host.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// A JSON body with no declared length, in chunks, one past the limit.
    fn streamed_body_over_the_limit() -> Body {
        let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
        let chunks = MAX_JSON_BODY_BYTES / chunk.len() + 1;
        let stream =
            futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        Body::from_stream(stream)
    }

    /// The document lists what the token check and the extractors answer
    /// on every operation they apply to.
    #[test]
    fn the_document_lists_the_edge_errors_of_every_operation() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let what = format!("{method} {path}");
                let responses = &op["responses"];
                let error = |status: &str| {
                    let schema = &responses[status]["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{what} lacks {status}"
                    );
                };
                if path != "/v1/health" {
                    error("401");
                }
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                if params.iter().any(|p| p["in"] == "path") {
                    error("400");
                }
                if op["requestBody"]["content"]
                    .get("application/json")
                    .is_some()
                {
                    for status in ["400", "413", "415"] {
                        error(status);
                    }
                }
                for p in &params {
                    if p["in"] == "path" && matches!(p["name"].as_str(), Some("name" | "function"))
                    {
                        assert_eq!(p["schema"]["pattern"], NAME_PATTERN, "{what}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "{checked} operations");
        // u64s are documented as such, in parameters and bodies.
        let ttl = &doc["paths"]["/v1/functions/{name}/kv/{key}"]["put"]["parameters"][2];
        assert_eq!(ttl["name"], "ttl_ms");
        assert_eq!(ttl["schema"]["format"], "uint64");
        let version = &doc["components"]["schemas"]["RollbackRequest"]["properties"]["version"];
        assert_eq!(version["format"], "uint64");
        // Request types refuse unknown fields, and say so.
        for request in [
            "RollbackRequest",
            "NewSubscription",
            "NewSchedule",
            "NewJob",
            "RedriveRequest",
            "SetConfig",
        ] {
            let schema = &doc["components"]["schemas"][request];
            assert_eq!(schema["additionalProperties"], false, "{request}");
        }
    }

    #[tokio::test]
    async fn a_streamed_json_body_over_the_limit_is_refused_with_json() {
        let host = Host::builder()
            .temporary()
            .admin_token(TOKEN)
            .build()
            .unwrap();
        for (method, path) in [
            (Method::POST, "/v1/subscriptions"),
            (Method::POST, "/v1/schedules"),
            (Method::POST, "/v1/functions/f/jobs"),
            (Method::PUT, "/v1/functions/f/config"),
            // Optional bodies are read the same way.
            (Method::POST, "/v1/functions/f/rollback"),
            (Method::POST, "/v1/functions/f/dlq/redrive"),
        ] {
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(streamed_body_over_the_limit())
                .unwrap();
            let (status, body) = call(&host, req).await;
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{method} {path}: {body}"
            );
            assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(&MAX_JSON_BODY_BYTES.to_string()),
                "{message}"
            );
        }
        assert!(host.subscriptions(None).unwrap().is_empty());
        assert!(host.schedules(None).unwrap().is_empty());
    }
}
