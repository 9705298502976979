//! The event plane's endpoints: publish, subscriptions, event status, dead
//! letters and redrive.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Binary;
use super::extract::{ApiJson, ApiPath, ApiQuery, BodyError, read_body};
use crate::Host;
use crate::error::{ApiError, ErrorBody};
use crate::events::{
    DeliveryRecord, EventError, EventInfo, NewSubscription, Published, Purged, RedriveRequest,
    Redriven, Subscription, validate_topic,
};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(list_subscriptions, create_subscription))
        .routes(routes!(delete_subscription))
        .routes(routes!(get_event))
        .routes(routes!(dead_letters, purge_dead_letters))
        .routes(routes!(redrive))
}

/// Most dead deliveries one listing returns.
const MAX_DLQ_PAGE: usize = 1000;

/// Reads an event payload under the host's limit (413 past it, from the
/// declared length when there is one, before reading anything).
pub(super) async fn read_payload(
    host: &Host,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, EventError> {
    let limit = host.config().event_max_payload_bytes;
    read_body(headers, body, limit).await.map_err(|e| match e {
        BodyError::TooLarge => EventError::PayloadTooLarge { limit },
        BodyError::Read(e) => {
            EventError::InvalidArgument(format!("reading the payload failed: {e}"))
        }
    })
}

#[utoipa::path(post, path = "/v1/topics/{topic}/events",
    params(("topic" = String, Path, description = "Topic name: [a-z0-9._-], 1 to 63 characters")),
    request_body(content = Option<Binary>, content_type = "application/octet-stream", description = "The payload (any content type), delivered as is with its content type"),
    responses(
        (status = 202, body = Published, description = "Durable; delivered to every current subscriber, at least once"),
        (status = 400, body = ErrorBody, description = "invalid_name; invalid_argument (a content type over 255 bytes or not printable ASCII)"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 429, body = ErrorBody, description = "queue_full: the topic has too many pending deliveries; topic_quota_exceeded, host_quota_exceeded: the topic (or all topics) hold too many bytes of undelivered events (Retry-After)"),
    ))]
pub(super) async fn publish(
    State(host): State<Host>,
    ApiPath(topic): ApiPath<String>,
    req: Request,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    validate_topic(&topic).map_err(EventError::InvalidName)?;
    let (parts, body) = req.into_parts();
    let payload = read_payload(&host, &parts.headers, body).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let published = host.events().publish(&topic, payload, content_type).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}

/// Query of `GET /v1/subscriptions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SubscriptionQuery {
    /// Only this function's.
    function: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions", params(SubscriptionQuery),
    responses((status = 200, body = [Subscription])))]
pub(super) async fn list_subscriptions(
    State(host): State<Host>,
    ApiQuery(q): ApiQuery<SubscriptionQuery>,
) -> Result<Json<Vec<Subscription>>, ApiError> {
    Ok(Json(host.events().subscriptions(q.function.as_deref())?))
}

#[utoipa::path(post, path = "/v1/subscriptions",
    request_body(content = NewSubscription),
    responses(
        (status = 201, body = Subscription, description = "Created (or updated) and durable; it gets every event published from now on"),
        (status = 400, body = ErrorBody, description = "invalid_name, invalid_argument"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn create_subscription(
    State(host): State<Host>,
    ApiJson(new): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(host.events().subscribe(new).await?),
    ))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{function}/{topic}",
    params(("function" = String, Path), ("topic" = String, Path)),
    responses((status = 204, description = "Removed; its pending deliveries are cancelled"), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_subscription(
    State(host): State<Host>,
    ApiPath((function, topic)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    host.events().unsubscribe(&function, &topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/events/{id}", params(("id" = String, Path)),
    responses(
        (status = 200, body = EventInfo, description = "The event and, per subscription, its delivery: status (pending, running, done, dead, cancelled), attempts, last error"),
        (status = 404, body = ErrorBody, description = "event_not_found (unknown, or removed after its retention)"),
    ))]
pub(super) async fn get_event(
    State(host): State<Host>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventInfo>, ApiError> {
    Ok(Json(host.events().event(&id).await?))
}

/// Query of `GET /v1/functions/{name}/dlq`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DlqQuery {
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    topic: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/functions/{name}/dlq", params(("name" = String, Path), DlqQuery),
    responses((status = 200, body = [DeliveryRecord], description = "Dead deliveries, oldest event first"), (status = 400, body = ErrorBody, description = "invalid_argument (limit)"), (status = 404, body = ErrorBody)))]
pub(super) async fn dead_letters(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DlqQuery>,
) -> Result<Json<Vec<DeliveryRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_DLQ_PAGE {
        return Err(EventError::InvalidArgument(format!(
            "limit must be between 1 and {MAX_DLQ_PAGE} (got {limit})"
        ))
        .into());
    }
    Ok(Json(
        host.events()
            .dead_letters(&name, q.topic.as_deref(), limit)
            .await?,
    ))
}

/// Query of `DELETE /v1/functions/{name}/dlq`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PurgeQuery {
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    topic: Option<String>,
}

#[utoipa::path(delete, path = "/v1/functions/{name}/dlq", params(("name" = String, Path), PurgeQuery),
    responses(
        (status = 200, body = Purged, description = "Removed from the dead-letter list (no longer redrivable); their events are removed at the next sweep. Durable"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
    ))]
pub(super) async fn purge_dead_letters(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PurgeQuery>,
) -> Result<Json<Purged>, ApiError> {
    Ok(Json(
        host.events()
            .purge_dead_letters(&name, q.topic.as_deref())
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/functions/{name}/dlq/redrive", params(("name" = String, Path)),
    request_body(content = Option<RedriveRequest>, description = "Optional: {\"topic\": T, \"ids\": [...]}; default: every dead delivery of the function"),
    responses((status = 200, body = Redriven, description = "Pending again, due now, attempts reset"), (status = 404, body = ErrorBody)))]
pub(super) async fn redrive(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    body: Option<ApiJson<RedriveRequest>>,
) -> Result<Json<Redriven>, ApiError> {
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    Ok(Json(host.events().redrive(&name, req).await?))
}
