//! The data plane: every request goes to the function whose route matches
//! its path best (on its host first: [`vhost`]), or gets a 404; CORS of
//! functions that set it is answered here ([`cors`]). Connections are served on threads of
//! their own ([`serve`]), each bounded in time and number
//! ([`connection`]). The gateway knows the deployed functions and the
//! invoker ([`Gateway`]), not the host that owns them.

pub(crate) mod connection;
pub(crate) mod cors;
pub(crate) mod serve;
pub(crate) mod tls;
pub(crate) mod vhost;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

pub use self::serve::Listeners;
pub use self::tls::{Tls, TlsError};
use crate::error::ApiError;
use crate::function::prepare::Prepared;
use crate::function::registry::Registry;
use crate::invocation::Invoker;
use crate::invocation::cgi::ScriptName;
use crate::routes::Route;

/// What the data plane needs of a host: what is deployed (swapped whole on
/// every change, read without a lock) and the invoker that runs it.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) registry: Arc<ArcSwap<Registry>>,
    pub(crate) invoker: Arc<Invoker>,
}

/// Builds the data-plane router (no socket): nest or serve it.
pub(crate) fn router(gateway: Gateway) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

async fn handle(State(gateway): State<Gateway>, req: Request) -> Response {
    gateway.route(req).await
}

impl Gateway {
    /// Routes a data-plane request: the longest matching route's function,
    /// or 404. The route table is an immutable snapshot read without a lock.
    pub(crate) async fn route(&self, request: Request<Body>) -> Response<Body> {
        route(self, request).await
    }
}

async fn route(gateway: &Gateway, mut request: Request<Body>) -> Response<Body> {
    let target = {
        let registry = gateway.registry.load();
        // HTTP/2's :authority or HTTP/1.1's Host, for functions with hosts.
        let (host, path) = (vhost::request_host(&request), request.uri().path());
        registry.routes.lookup_on(host, path).map(|(r, d)| {
            // Preview-1 (CGI) functions see the matched route as
            // SCRIPT_NAME; components need nothing (and pay nothing).
            let script = matches!(d.pre, Prepared::Module(_)).then(|| {
                let (Route::Exact(p) | Route::Prefix(p)) = r;
                ScriptName(Arc::from(p.as_str()))
            });
            (script, d.clone())
        })
    };
    match target {
        Some((script, target)) => {
            if let Some(script) = script {
                request.extensions_mut().insert(script);
            }
            let Some(cors) = target.cors.clone() else {
                if let Some(refused) = crate::invocation::rate::refusal(&target) {
                    return refused;
                }
                return gateway.invoker.invoke(target, request).await;
            };
            // The function's CORS: preflights answered here, without an
            // instance (nor a token); responses marked.
            if cors::is_preflight(&request) {
                return cors::preflight(&cors, &target.name, &request);
            }
            let origin = request.headers().get(axum::http::header::ORIGIN).cloned();
            let mut resp = match crate::invocation::rate::refusal(&target) {
                None => gateway.invoker.invoke(target, request).await,
                Some(refused) => refused,
            };
            cors::decorate(&cors, origin.as_ref(), &mut resp);
            resp
        }
        None => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("no function is routed at {}", request.uri().path()),
        )),
    }
}
