//! The data plane: every request goes to the function whose route matches
//! its path best, or gets a 404.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

use crate::Host;

/// Builds the data-plane router (no socket): nest or serve it.
pub fn router(host: Host) -> Router {
    Router::new().fallback(handle).with_state(host)
}

async fn handle(State(host): State<Host>, req: Request) -> Response {
    host.handle(req).await
}

/// The data plane as `wisp serve` runs it: what
/// `router(host).into_make_service_with_connect_info::<SocketAddr>()` does,
/// without the router. Routing is the host's own route table; an axum
/// `Router` around a single fallback only added work to every request (its
/// own matching, a boxed service cloned per request, extractors), which was
/// measurable next to the invocation itself.
///
/// Makes one [`Gateway`] per accepted connection.
#[derive(Clone)]
pub(crate) struct MakeGateway(pub Host);

impl<'a> tower::Service<IncomingStream<'a, TcpListener>> for MakeGateway {
    type Response = Gateway;
    type Error = Infallible;
    type Future = Ready<Result<Gateway, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, TcpListener>) -> Self::Future {
        ready(Ok(Gateway {
            host: self.0.clone(),
            remote: *stream.remote_addr(),
        }))
    }
}

/// One connection's data-plane service: each request to [`Host::handle`],
/// with the peer's address as [`ConnectInfo`] (preview-1 functions see it as
/// `REMOTE_ADDR`), as the router would have it.
#[derive(Clone)]
pub(crate) struct Gateway {
    host: Host,
    remote: SocketAddr,
}

impl tower::Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.remote));
        let host = self.host.clone();
        Box::pin(async move { Ok(host.handle(req).await) })
    }
}
