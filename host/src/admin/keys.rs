//! A private function's invoke keys (create, list, revoke): the keys a
//! data-plane request to a function deployed with `--auth key` must carry.
//! Writes need `deploy:NAME`, the list `read:*` or `deploy:NAME` (see
//! `access`); writes go to the audit log like every admin write.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath};
use crate::Host;
use crate::auth::{CreatedKey, KeyError, KeyInfo, NewKey};
use crate::error::{ApiError, ErrorBody};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// 404 unless `name` is deployed.
fn deployed(host: &Host, name: &str) -> Result<(), KeyError> {
    if host.inner.registry.load().by_name.contains_key(name) {
        Ok(())
    } else {
        Err(KeyError::FunctionNotFound(name.to_string()))
    }
}

#[utoipa::path(get, path = "/v1/functions/{name}/keys", params(("name" = String, Path)),
    responses(
        (status = 200, body = [KeyInfo], description = "The function's invoke keys by name: never a key, nor a hash"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn list_keys(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    deployed(&host, &name)?;
    Ok(Json(host.inner.invoke_keys.list(&name)))
}

#[utoipa::path(post, path = "/v1/functions/{name}/keys", params(("name" = String, Path)),
    request_body(content = NewKey),
    responses(
        (status = 201, body = CreatedKey, description = "Created and durable. The key is in this answer only: the host keeps its hash"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_argument (expires)"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 409, body = ErrorBody, description = "key_exists (the name is taken), too_many_keys"),
    ))]
pub(super) async fn create_key(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiJson(new): ApiJson<NewKey>,
) -> Result<Response, ApiError> {
    // Under the admin lock: a delete of the function (which purges its
    // keys) cannot run between the check and the write.
    let created = {
        let _guard = host.inner.admin_lock.lock().await;
        deployed(&host, &name)?;
        host.inner.invoke_keys.create(&name, new).await?
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // A secret: no cache in between keeps it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/v1/functions/{name}/keys/{key}",
    params(("name" = String, Path), ("key" = String, Path, description = "The key's name or id")),
    responses(
        (status = 200, body = KeyInfo, description = "Revoked: from now on the key is refused (401)"),
        (status = 404, body = ErrorBody, description = "function_not_found, key_not_found"),
    ))]
pub(super) async fn revoke_key(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<Json<KeyInfo>, ApiError> {
    deployed(&host, &name)?;
    Ok(Json(host.inner.invoke_keys.revoke(&name, &key).await?))
}
