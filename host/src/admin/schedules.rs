//! Schedules: cron expressions that enqueue an event for a function at
//! each tick.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::Host;
use crate::error::{ApiError, ErrorBody};
use crate::events::{NewSchedule, Schedule};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules, create_schedule))
        .routes(routes!(delete_schedule))
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ScheduleQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/schedules", params(ScheduleQuery),
    responses((status = 200, body = [Schedule])))]
pub(super) async fn list_schedules(
    State(host): State<Host>,
    ApiQuery(q): ApiQuery<ScheduleQuery>,
) -> Result<Json<Vec<Schedule>>, ApiError> {
    Ok(Json(host.events().schedules(q.function.as_deref())?))
}

#[utoipa::path(post, path = "/v1/schedules",
    request_body(content = NewSchedule),
    responses(
        (status = 201, body = Schedule, description = "Created and durable; each tick enqueues one event for the function"),
        (status = 400, body = ErrorBody, description = "invalid_argument (cron expression, time zone, path, content type)"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
    ))]
pub(super) async fn create_schedule(
    State(host): State<Host>,
    ApiJson(new): ApiJson<NewSchedule>,
) -> Result<(StatusCode, Json<Schedule>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(host.events().add_schedule(new).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; no further ticks"), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_schedule(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    host.events().delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
