//! The data plane: every request goes to the function whose route matches
//! its path best, or gets a 404.

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::Host;

/// Builds the data-plane router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    Router::new().fallback(handle).with_state(host)
}

async fn handle(State(host): State<Host>, req: Request) -> Response {
    host.handle(req).await
}
