//! A function's settings and secrets (`capabilities::settings`). Messages
//! name keys, never values.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath};
use crate::error::{ApiError, ErrorBody};
use crate::{ConfigError, ConfigList, Host, SetConfig};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(config_list, config_set))
        .routes(routes!(config_unset))
}

#[utoipa::path(get, path = "/v1/functions/{name}/config",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = ConfigList, description = "Settings and secrets by key; secret values are masked as `********`"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn config_list(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ConfigList>, ApiError> {
    Ok(Json(host.settings(&name).list()?))
}

#[utoipa::path(put, path = "/v1/functions/{name}/config",
    params(("name" = String, Path)),
    request_body(content = SetConfig, description = "Keys and values to set, all or none; `secret: true` stores them as secrets"),
    responses(
        (status = 200, body = ConfigList, description = "Stored and durable; the next invocation sees it (secrets masked)"),
        (status = 400, body = ErrorBody, description = "invalid_config_key, config_value_too_large, invalid_config_value, too_many_config_keys, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn config_set(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    // Syntax errors (serde's message for them quotes no input), a missing
    // content type, a body over the limit: refused as any JSON body.
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<ConfigList>, ApiError> {
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
    Ok(Json(
        host.settings(&name).set(req.values, req.secret).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/config/{key}",
    params(("name" = String, Path), ("key" = String, Path)),
    responses(
        (status = 200, body = ConfigList, description = "Removed; the next invocation no longer sees it"),
        (status = 400, body = ErrorBody, description = "invalid_config_key"),
        (status = 404, body = ErrorBody, description = "function_not_found, config_key_not_found"),
    ))]
pub(super) async fn config_unset(
    State(host): State<Host>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<Json<ConfigList>, ApiError> {
    Ok(Json(host.settings(&name).unset(&[key]).await?))
}
