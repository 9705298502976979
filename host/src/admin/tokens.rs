//! Admin tokens (create, list, revoke) and the audit log of admin writes:
//! every route here needs the `admin` scope (see `access`), but
//! `/v1/whoami`, which any token may ask.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::Host;
use crate::auth::{
    AuditPage, AuditQuery, Caller, CreatedToken, NewToken, TokenError, TokenInfo, WhoAmI,
};
use crate::error::{ApiError, ErrorBody};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(read_audit))
        .routes(routes!(whoami))
}

#[utoipa::path(get, path = "/v1/whoami",
    responses((status = 200, body = WhoAmI, description = "The name and scopes of the token sent. Any valid token")))]
pub(super) async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name().to_string(),
        scopes: caller.scopes(),
    })
}

#[utoipa::path(get, path = "/v1/tokens",
    responses((status = 200, body = [TokenInfo], description = "Every token of this host by name: never a token, nor a hash")))]
pub(super) async fn list_tokens(State(host): State<Host>) -> Json<Vec<TokenInfo>> {
    Json(host.inner.tokens.list())
}

#[utoipa::path(post, path = "/v1/tokens",
    request_body(content = NewToken),
    responses(
        (status = 201, body = CreatedToken, description = "Created and durable. The token is in this answer only: the host keeps its hash"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_scope, invalid_argument (expires)"),
        (status = 409, body = ErrorBody, description = "token_exists (the name is taken), too_many_tokens"),
    ))]
pub(super) async fn create_token(
    State(host): State<Host>,
    ApiJson(new): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let created = host.inner.tokens.create(new).await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // A secret: no cache in between keeps it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/v1/tokens/{token}",
    params(("token" = String, Path, description = "The token's name or id")),
    responses(
        (status = 200, body = TokenInfo, description = "Revoked: from now on the token is refused (401)"),
        (status = 404, body = ErrorBody, description = "token_not_found"),
    ))]
pub(super) async fn revoke_token(
    State(host): State<Host>,
    ApiPath(token): ApiPath<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(host.inner.tokens.revoke(&token).await?))
}

#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses(
        (status = 200, body = AuditPage, description = "Admin writes (every request but GET and HEAD with a valid token), oldest first: who, method, path, when, status"),
        (status = 400, body = ErrorBody, description = "invalid_argument (since, limit)"),
    ))]
pub(super) async fn read_audit(
    State(host): State<Host>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    // Up to ten thousand entries decoded: on the blocking pool.
    let audit = host.inner.audit.clone();
    let page = tokio::task::spawn_blocking(move || audit.read(&query))
        .await
        .map_err(|e| {
            TokenError::Store(std::io::Error::other(format!("audit read: {e}")).into())
        })??;
    Ok(Json(page))
}
