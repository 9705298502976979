//! Health (no token) and the Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Host;
use crate::cluster::Member;
use crate::error::ApiError;

/// The route answered without the token: health.
pub(super) fn public_routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The routes behind the token: metrics, the cluster's hosts.
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(metrics_text))
        .routes(routes!(hosts))
}

/// Health status.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: &'static str,
    /// Cluster mode: this host's node name.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Cluster mode: the connection and the members seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterHealth>,
}

/// A cluster host's view of its cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ClusterHealth {
    /// Whether it is connected to NATS now.
    connected: bool,
    /// Hosts seen alive at its latest heartbeat (itself included).
    members: usize,
}

/// Answers without asking NATS: a host that lost its cluster still serves
/// (and says so here).
#[utoipa::path(get, path = "/v1/health", security(()), responses((status = 200, body = Health)))]
pub(super) async fn health(State(host): State<Host>) -> Json<Health> {
    let cluster = host.cluster();
    Json(Health {
        status: "ok",
        node: cluster.map(|c| c.node().to_string()),
        cluster: cluster.map(|c| ClusterHealth {
            connected: c.connected(),
            members: c.members_seen(),
        }),
    })
}

/// The hosts of the cluster.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Hosts {
    /// By node name; a host not in a cluster lists nothing.
    hosts: Vec<Member>,
}

/// The live hosts of the cluster (a heartbeat within the last 10 s).
#[utoipa::path(get, path = "/v1/hosts", responses(
    (status = 200, body = Hosts),
    (status = 503, description = "cluster_unavailable", body = crate::ErrorBody),
))]
pub(super) async fn hosts(State(host): State<Host>) -> Result<Json<Hosts>, ApiError> {
    let Some(cluster) = host.cluster() else {
        return Ok(Json(Hosts { hosts: Vec::new() }));
    };
    let hosts = cluster.hosts().await.map_err(crate::DeployError::from)?;
    Ok(Json(Hosts { hosts }))
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
