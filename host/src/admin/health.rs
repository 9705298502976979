//! Health (no token) and the Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Host;
use crate::error::ApiError;

/// The route answered without the token: health.
pub(super) fn public_routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The routes behind the token: metrics.
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new().routes(routes!(metrics_text))
}

/// Health status.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/v1/health", security(()), responses((status = 200, body = Health)))]
pub(super) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(super) async fn metrics_text(State(host): State<Host>) -> Result<Response, ApiError> {
    match &host.inner.prometheus {
        Some(h) => Ok((
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are recorded by the embedding application's recorder",
        )),
    }
}
