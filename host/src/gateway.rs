//! The data plane: every request goes to the function whose route matches
//! its path best, or gets a 404.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use hyper::body::Incoming;

use crate::Host;

/// Builds the data-plane router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    Router::new().fallback(handle).with_state(host)
}

async fn handle(State(host): State<Host>, req: Request) -> Response {
    host.handle(req).await
}

/// One connection's data-plane service as [`Host::serve`] runs it: each
/// request straight to [`Host::handle`], with the peer's address as
/// [`ConnectInfo`] (preview-1 functions see it as `REMOTE_ADDR`), as
/// `router(host).into_make_service_with_connect_info::<SocketAddr>()` would
/// have it. Routing is the host's own route table; an axum `Router` around a
/// single fallback only added work to every request (its own matching, a
/// boxed service cloned per request, extractors), which was measurable next
/// to the invocation itself.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) host: Host,
    pub(crate) remote: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.remote));
        let host = self.host.clone();
        Box::pin(async move { Ok(host.handle(req).await) })
    }
}
