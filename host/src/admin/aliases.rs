//! A function's aliases: list, set (create or change), delete.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Deleted;
use super::extract::{ApiJson, ApiPath};
use crate::Host;
use crate::error::{ApiError, ErrorBody};
use crate::function::aliases::{AliasInfo, AliasSpec};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(list_aliases))
        .routes(routes!(set_alias, delete_alias))
}

#[utoipa::path(get, path = "/v1/functions/{name}/aliases", params(("name" = String, Path)),
    responses((status = 200, body = [AliasInfo]), (status = 404, body = ErrorBody)))]
pub(super) async fn list_aliases(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<AliasInfo>>, ApiError> {
    Ok(Json(host.functions().aliases(&name)?))
}

#[utoipa::path(put, path = "/v1/functions/{name}/aliases/{alias}",
    params(("name" = String, Path), ("alias" = String, Path, description = "Alias name: [a-z0-9-], 1 to 63 characters")),
    request_body = AliasSpec,
    responses(
        (status = 200, body = AliasInfo, description = "Set; requests follow it at once"),
        (status = 400, body = ErrorBody, description = "Bad name, weights or routes"),
        (status = 404, body = ErrorBody, description = "No such function or version"),
        (status = 409, body = ErrorBody, description = "A route is served by another function or alias"),
    ))]
pub(super) async fn set_alias(
    State(host): State<Host>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(spec): ApiJson<AliasSpec>,
) -> Result<Json<AliasInfo>, ApiError> {
    Ok(Json(host.functions().set_alias(&name, &alias, spec).await?))
}

#[utoipa::path(delete, path = "/v1/functions/{name}/aliases/{alias}",
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_alias(
    State(host): State<Host>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    host.functions().delete_alias(&name, &alias).await?;
    Ok(Json(Deleted { deleted: alias }))
}
