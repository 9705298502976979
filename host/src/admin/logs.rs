//! A function's log: its lines (stdout, stderr, log calls, host notes).

use axum::Json;
use axum::extract::State;

use super::extract::{ApiPath, ApiQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Host;
use crate::capabilities::logs::{LogPage, LogQuery};
use crate::error::{ApiError, ErrorBody};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new().routes(routes!(function_logs))
}

#[utoipa::path(get, path = "/v1/functions/{name}/logs",
    params(("name" = String, Path), LogQuery),
    responses(
        (status = 200, body = LogPage, description = "The function's log lines (stdout, stderr, log calls, host notes), oldest first"),
        (status = 400, body = ErrorBody, description = "invalid_argument (since, limit)"),
        (status = 404, body = ErrorBody),
    ))]
pub(super) async fn function_logs(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    Ok(Json(host.logs(&name).read(query).await?))
}
