//! Each function's last hour (invocations, 5xx answers, latency
//! percentiles) as this host counted it in memory: for the dashboard's
//! charts, without a Prometheus.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiPath, ApiQuery};
use crate::Host;
use crate::auth::Caller;
use crate::auth::scope::Need;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::{FunctionStats, HostStats, StatsQuery};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(function_stats))
        .routes(routes!(host_stats))
}

#[utoipa::path(get, path = "/v1/functions/{name}/stats",
    params(("name" = String, Path), StatsQuery),
    responses(
        (status = 200, body = FunctionStats, description = "The function's last hour on this host (all its versions), oldest first, in steps of `step` seconds (default 10). In memory only: empty after a restart"),
        (status = 400, body = ErrorBody, description = "invalid_argument (step)"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn function_stats(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<FunctionStats>, ApiError> {
    Ok(Json(host.functions().stats(&name, query.step)?))
}

#[utoipa::path(get, path = "/v1/stats",
    params(StatsQuery),
    responses(
        (status = 200, body = HostStats, description = "The last hour of every function the token may read (others are left out), by name, in steps of `step` seconds (default 60). Any valid token"),
        (status = 400, body = ErrorBody, description = "invalid_argument (step)"),
    ))]
pub(super) async fn host_stats(
    State(host): State<Host>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<HostStats>, ApiError> {
    let readable = |name: &str| caller.allows(&Need::ReadFunction(name.to_string()));
    Ok(Json(host.functions().all_stats(query.step, readable)?))
}
