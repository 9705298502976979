//! A function's key-value namespace (`capabilities::kv`). Keys in paths
//! are percent-decoded (`a%2Fb` is the key `a/b`; so is `a/b`).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiPath, ApiQuery, BodyError, read_body};
use super::{Binary, Deleted};
use crate::capabilities::kv::MAX_PAGE;
use crate::error::{ApiError, ErrorBody};
use crate::{Host, KeyList, KvError};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(kv_list))
        .routes(routes!(kv_get, kv_put, kv_delete))
}

/// Query of `GET /v1/functions/{name}/kv`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct KvListQuery {
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
pub(super) struct KvPutQuery {
    /// The key expires this many milliseconds from now.
    ttl_ms: Option<u64>,
}

/// Answer to a key-value write.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct KvStored {
    key: String,
    bytes: u64,
}

#[utoipa::path(get, path = "/v1/functions/{name}/kv",
    params(("name" = String, Path), KvListQuery),
    responses(
        (status = 200, body = KeyList, description = "A page of keys in byte order; pass `cursor` back for the next page"),
        (status = 400, body = ErrorBody, description = "invalid_cursor, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn kv_list(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<KvListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit as usize > MAX_PAGE {
        return Err(KvError::InvalidArgument(format!(
            "limit must be between 1 and {MAX_PAGE} (got {limit})"
        ))
        .into());
    }
    let prefix = q.prefix.unwrap_or_default();
    let page = host
        .kv(&name)
        .list(&prefix, q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(page))
}

#[utoipa::path(get, path = "/v1/functions/{name}/kv/{*key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, body = Binary, content_type = "application/octet-stream", description = "The value, as stored"),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found (unset or expired)"),
    ))]
pub(super) async fn kv_get(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let value = host.kv(&name).get(&key).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response())
}

#[utoipa::path(put, path = "/v1/functions/{name}/kv/{*key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded"), KvPutQuery),
    request_body(content = Option<Binary>, content_type = "application/octet-stream", description = "The value, raw bytes"),
    responses(
        (status = 200, body = KvStored, description = "Stored and durable"),
        (status = 400, body = ErrorBody, description = "invalid_key, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "value_too_large: over the function's value limit"),
        (status = 507, body = ErrorBody, description = "quota_exceeded: the function's keys and values would pass its total limit"),
    ))]
pub(super) async fn kv_put(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<KvPutQuery>,
    req: Request,
) -> Result<Json<KvStored>, ApiError> {
    let limit = host.kv(&name).max_value_bytes()?;
    let (parts, body) = req.into_parts();
    let value = read_body(&parts.headers, body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => KvError::ValueTooLarge { limit },
            BodyError::Read(e) => {
                KvError::InvalidArgument(format!("reading the value failed: {e}"))
            }
        })?;
    host.kv(&name).set(&key, &value, q.ttl_ms).await?;
    Ok(Json(KvStored {
        key,
        bytes: value.len() as u64,
    }))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/kv/{*key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, body = Deleted),
        (status = 400, body = ErrorBody, description = "invalid_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found"),
    ))]
pub(super) async fn kv_delete(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    host.kv(&name).delete(&key).await?;
    Ok(Json(Deleted { deleted: key }))
}
