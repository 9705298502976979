//! Jobs: one function run over an array of indices, with parallelism and
//! retries.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::Host;
use crate::error::{ApiError, ErrorBody};
use crate::events::{JobInfo, NewJob};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(start_job))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
}

#[utoipa::path(post, path = "/v1/functions/{name}/jobs", params(("name" = String, Path)),
    request_body(content = NewJob),
    responses(
        (status = 202, body = JobInfo, description = "Durable; one POST per array index, with wisp-job-id, wisp-job-index and wisp-job-array-size headers"),
        (status = 400, body = ErrorBody, description = "invalid_argument (array, parallelism, retries, path, content type)"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 429, body = ErrorBody, description = "topic_quota_exceeded, host_quota_exceeded: its tasks do not fit in the event storage quotas (Retry-After)"),
    ))]
pub(super) async fn start_job(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    // Read up to the admin API's JSON limit; the payload's own limit is
    // checked when the job starts.
    ApiJson(new): ApiJson<NewJob>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(host.jobs().start(&name, new).await?),
    ))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct JobQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", params(JobQuery),
    responses((status = 200, body = [JobInfo], description = "Jobs, oldest first, with counts by state (no per-index list)")))]
pub(super) async fn list_jobs(
    State(host): State<Host>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Json<Vec<JobInfo>>, ApiError> {
    Ok(Json(host.jobs().list(q.function.as_deref()).await?))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobInfo, description = "The job, its state (running, succeeded, failed, cancelled) and each index's"),
        (status = 404, body = ErrorBody, description = "job_not_found (unknown, or removed after its retention)"),
    ))]
pub(super) async fn get_job(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobInfo>, ApiError> {
    Ok(Json(host.jobs().get(&id).await?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobInfo, description = "Cancelled: pending indices are not run; running ones finish"),
        (status = 404, body = ErrorBody, description = "job_not_found"),
    ))]
pub(super) async fn cancel_job(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobInfo>, ApiError> {
    Ok(Json(host.jobs().cancel(&id).await?))
}
