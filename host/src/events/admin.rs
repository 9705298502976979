//! The event plane's admin endpoints (merged into the admin router, behind
//! its bearer-token check): publish, asynchronous invocation,
//! subscriptions, event status, dead letters and redrive.

use axum::extract::{RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;

use super::{
    DeliveryRecord, EventError, EventInfo, JobInfo, NewJob, NewSchedule, NewSubscription,
    Published, Purged, RedriveRequest, Redriven, Schedule, Subscription,
};
use crate::Host;
use crate::admin::{ApiJson, ApiPath};

/// Most dead deliveries one listing returns.
const MAX_DLQ_PAGE: usize = 1000;

/// The routes, for the protected part of the admin router.
pub(crate) fn routes() -> Router<Host> {
    Router::new()
        .route("/v1/topics/{topic}/events", post(publish))
        .route("/v1/functions/{name}/invoke-async", post(invoke_async))
        .route(
            "/v1/subscriptions",
            get(list_subscriptions).post(create_subscription),
        )
        .route(
            "/v1/subscriptions/{function}/{topic}",
            delete(delete_subscription),
        )
        .route("/v1/events/{id}", get(get_event))
        .route(
            "/v1/functions/{name}/dlq",
            get(dead_letters).delete(purge_dead_letters),
        )
        .route("/v1/functions/{name}/dlq/redrive", post(redrive))
        .route("/v1/schedules", get(list_schedules).post(create_schedule))
        .route("/v1/schedules/{id}", delete(delete_schedule))
        .route("/v1/functions/{name}/jobs", post(start_job))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
}

/// Reads a body of at most `limit` bytes (413 past it, from the declared
/// length when there is one, before reading anything).
async fn read_payload(
    req: Request,
    limit: u64,
) -> Result<(http::request::Parts, Bytes), EventError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(EventError::PayloadTooLarge { limit });
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, cap).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            EventError::PayloadTooLarge { limit }
        } else {
            EventError::InvalidArgument(format!("reading the payload failed: {e}"))
        }
    })?;
    Ok((parts, bytes))
}

#[utoipa::path(post, path = "/v1/topics/{topic}/events",
    params(("topic" = String, Path, description = "Topic name: [a-z0-9._-], 1 to 63 characters")),
    request_body(content = Option<crate::admin::Binary>, content_type = "application/octet-stream", description = "The payload (any content type), delivered as is with its content type"),
    responses(
        (status = 202, body = Published, description = "Durable; delivered to every current subscriber, at least once"),
        (status = 400, body = crate::ErrorBody, description = "invalid_name; invalid_argument (a content type over 255 bytes or not printable ASCII)"),
        (status = 413, body = crate::ErrorBody, description = "payload_too_large"),
        (status = 429, body = crate::ErrorBody, description = "queue_full: the topic has too many pending deliveries; topic_quota_exceeded, host_quota_exceeded: the topic (or all topics) hold too many bytes of undelivered events (Retry-After)"),
    ))]
pub(crate) async fn publish(
    State(host): State<Host>,
    ApiPath(topic): ApiPath<String>,
    req: Request,
) -> Response {
    let result = async {
        super::validate_topic(&topic).map_err(EventError::InvalidName)?;
        let (parts, payload) = read_payload(req, host.config().event_max_payload_bytes).await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        host.publish(&topic, payload, content_type).await
    }
    .await;
    match result {
        Ok(p) => (StatusCode::ACCEPTED, Json(p)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Headers of an asynchronous invocation that are not passed on.
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
];

#[utoipa::path(post, path = "/v1/functions/{name}/invoke-async",
    params(("name" = String, Path), ("path" = Option<String>, Query, description = "Path and query the function sees; default `/`")),
    request_body(content = Option<crate::admin::Binary>, content_type = "application/octet-stream", description = "Passed to the function as is (any content type), with the request's headers"),
    responses(
        (status = 202, body = Published, description = "Durable; the function gets a POST with it, retried on failure"),
        (status = 400, body = crate::ErrorBody, description = "invalid_argument: `path` is not an absolute path, or a content type over 255 bytes"),
        (status = 404, body = crate::ErrorBody, description = "function_not_found"),
        (status = 413, body = crate::ErrorBody, description = "payload_too_large"),
        (status = 429, body = crate::ErrorBody, description = "queue_full, topic_quota_exceeded, host_quota_exceeded (Retry-After)"),
    ))]
pub(crate) async fn invoke_async(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> Response {
    #[derive(Deserialize)]
    struct Q {
        path: Option<String>,
    }
    let result = async {
        let q: Q = serde_html_form::from_str(req.uri().query().unwrap_or(""))
            .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
        let path = q.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let (parts, payload) = read_payload(req, host.config().event_max_payload_bytes).await?;
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| !DROPPED_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        host.invoke_async(&name, path, headers, payload).await
    }
    .await;
    match result {
        Ok(p) => (StatusCode::ACCEPTED, Json(p)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query of `GET /v1/subscriptions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubscriptionQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions", params(SubscriptionQuery),
    responses((status = 200, body = [Subscription])))]
pub(crate) async fn list_subscriptions(
    State(host): State<Host>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Subscription>>, EventError> {
    let q: SubscriptionQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
    Ok(Json(host.subscriptions(q.function.as_deref())?))
}

#[utoipa::path(post, path = "/v1/subscriptions",
    request_body(content = NewSubscription),
    responses(
        (status = 201, body = Subscription, description = "Created (or updated) and durable; it gets every event published from now on"),
        (status = 400, body = crate::ErrorBody, description = "invalid_name, invalid_argument"),
        (status = 404, body = crate::ErrorBody, description = "function_not_found"),
    ))]
pub(crate) async fn create_subscription(
    State(host): State<Host>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Subscription>), EventError> {
    Ok((StatusCode::CREATED, Json(host.subscribe(new).await?)))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{function}/{topic}",
    params(("function" = String, Path), ("topic" = String, Path)),
    responses((status = 204, description = "Removed; its pending deliveries are cancelled"), (status = 404, body = crate::ErrorBody)))]
pub(crate) async fn delete_subscription(
    State(host): State<Host>,
    ApiPath((function, topic)): ApiPath<(String, String)>,
) -> Result<StatusCode, EventError> {
    host.unsubscribe(&function, &topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/events/{id}", params(("id" = String, Path)),
    responses(
        (status = 200, body = EventInfo, description = "The event and, per subscription, its delivery: status (pending, running, done, dead, cancelled), attempts, last error"),
        (status = 404, body = crate::ErrorBody, description = "event_not_found (unknown, or removed after its retention)"),
    ))]
pub(crate) async fn get_event(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventInfo>, EventError> {
    Ok(Json(host.event(&id)?))
}

/// Query of `GET /v1/functions/{name}/dlq`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DlqQuery {
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    topic: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/functions/{name}/dlq", params(("name" = String, Path), DlqQuery),
    responses((status = 200, body = [DeliveryRecord], description = "Dead deliveries, oldest event first"), (status = 400, body = crate::ErrorBody, description = "invalid_argument (limit)"), (status = 404, body = crate::ErrorBody)))]
pub(crate) async fn dead_letters(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<DeliveryRecord>>, EventError> {
    let q: DlqQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_DLQ_PAGE {
        return Err(EventError::InvalidArgument(format!(
            "limit must be between 1 and {MAX_DLQ_PAGE} (got {limit})"
        )));
    }
    Ok(Json(host.dead_letters(&name, q.topic.as_deref(), limit)?))
}

/// Query of `DELETE /v1/functions/{name}/dlq`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PurgeQuery {
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    topic: Option<String>,
}

#[utoipa::path(delete, path = "/v1/functions/{name}/dlq", params(("name" = String, Path), PurgeQuery),
    responses(
        (status = 200, body = Purged, description = "Removed from the dead-letter list (no longer redrivable); their events are removed at the next sweep. Durable"),
        (status = 404, body = crate::ErrorBody, description = "function_not_found"),
    ))]
pub(crate) async fn purge_dead_letters(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Purged>, EventError> {
    let q: PurgeQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
    Ok(Json(
        host.purge_dead_letters(&name, q.topic.as_deref()).await?,
    ))
}

#[utoipa::path(post, path = "/v1/functions/{name}/dlq/redrive", params(("name" = String, Path)),
    request_body(content = Option<RedriveRequest>, description = "Optional: {\"topic\": T, \"ids\": [...]}; default: every dead delivery of the function"),
    responses((status = 200, body = Redriven, description = "Pending again, due now, attempts reset"), (status = 404, body = crate::ErrorBody)))]
pub(crate) async fn redrive(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    body: Option<ApiJson<RedriveRequest>>,
) -> Result<Json<Redriven>, EventError> {
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok(Json(host.redrive(&name, req).await?))
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScheduleQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/schedules", params(ScheduleQuery),
    responses((status = 200, body = [Schedule])))]
pub(crate) async fn list_schedules(
    State(host): State<Host>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Schedule>>, EventError> {
    let q: ScheduleQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
    Ok(Json(host.schedules(q.function.as_deref())?))
}

#[utoipa::path(post, path = "/v1/schedules",
    request_body(content = NewSchedule),
    responses(
        (status = 201, body = Schedule, description = "Created and durable; each tick enqueues one event for the function"),
        (status = 400, body = crate::ErrorBody, description = "invalid_argument (cron expression, time zone, path, content type)"),
        (status = 404, body = crate::ErrorBody, description = "function_not_found"),
        (status = 413, body = crate::ErrorBody, description = "payload_too_large"),
    ))]
pub(crate) async fn create_schedule(
    State(host): State<Host>,
    ApiJson(new): ApiJson<NewSchedule>,
) -> Result<(StatusCode, Json<Schedule>), EventError> {
    Ok((StatusCode::CREATED, Json(host.add_schedule(new).await?)))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; no further ticks"), (status = 404, body = crate::ErrorBody)))]
pub(crate) async fn delete_schedule(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, EventError> {
    host.delete_schedule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/functions/{name}/jobs", params(("name" = String, Path)),
    request_body(content = NewJob),
    responses(
        (status = 202, body = JobInfo, description = "Durable; one POST per array index, with wisp-job-id, wisp-job-index and wisp-job-array-size headers"),
        (status = 400, body = crate::ErrorBody, description = "invalid_argument (array, parallelism, retries, path, content type)"),
        (status = 404, body = crate::ErrorBody, description = "function_not_found"),
        (status = 413, body = crate::ErrorBody, description = "payload_too_large"),
        (status = 429, body = crate::ErrorBody, description = "topic_quota_exceeded, host_quota_exceeded: its tasks do not fit in the event storage quotas (Retry-After)"),
    ))]
pub(crate) async fn start_job(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    // Read up to the admin API's JSON limit; the payload's own limit is
    // checked when the job starts.
    ApiJson(new): ApiJson<NewJob>,
) -> Result<(StatusCode, Json<JobInfo>), EventError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(host.start_job(&name, new).await?),
    ))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", params(JobQuery),
    responses((status = 200, body = [JobInfo], description = "Jobs, oldest first, with counts by state (no per-index list)")))]
pub(crate) async fn list_jobs(
    State(host): State<Host>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<JobInfo>>, EventError> {
    let q: JobQuery = serde_html_form::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| EventError::InvalidArgument(format!("bad query: {e}")))?;
    Ok(Json(host.jobs(q.function.as_deref())?))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobInfo, description = "The job, its state (running, succeeded, failed, cancelled) and each index's"),
        (status = 404, body = crate::ErrorBody, description = "job_not_found (unknown, or removed after its retention)"),
    ))]
pub(crate) async fn get_job(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobInfo>, EventError> {
    Ok(Json(host.job(&id)?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobInfo, description = "Cancelled: pending indices are not run; running ones finish"),
        (status = 404, body = crate::ErrorBody, description = "job_not_found"),
    ))]
pub(crate) async fn cancel_job(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobInfo>, EventError> {
    Ok(Json(host.cancel_job(&id).await?))
}
