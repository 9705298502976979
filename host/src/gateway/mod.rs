//! The data plane: every request goes to the function whose route matches
//! its path best (on its host first: [`vhost`]), or gets a 404; CORS of
//! functions that set it is answered here ([`cors`]), and private functions
//! want their invoke key ([`keys`]). Connections are served on threads of
//! their own ([`serve`]), each bounded in time and number
//! ([`connection`]). The gateway knows the deployed functions and the
//! invoker ([`Gateway`]), not the host that owns them.

pub(crate) mod connection;
pub(crate) mod cors;
pub(crate) mod keys;
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
use crate::function::registry::{Deployed, Registry, RouteTarget};
use crate::invocation::Invoker;
use crate::invocation::cgi::ScriptName;
use crate::routes::Route;

/// What the data plane needs of a host: what is deployed (swapped whole on
/// every change, read without a lock) and the invoker that runs it.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub(crate) registry: Arc<ArcSwap<Registry>>,
    pub(crate) invoker: Arc<Invoker>,
    /// Private functions' invoke keys.
    pub(crate) keys: crate::auth::InvokeKeys,
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

/// Selects an alias of the routed function (the default: the route's
/// choice, the active version or an alias).
pub const ALIAS_HEADER: &str = "wisp-alias";
/// Pins a version of the routed function, if it allows it
/// (`--version-pinning`); on responses, the version that answered.
pub const VERSION_HEADER: &str = "wisp-version";

async fn route(gateway: &Gateway, mut request: Request<Body>) -> Response<Body> {
    let target = {
        let registry = gateway.registry.load();
        // HTTP/2's :authority or HTTP/1.1's Host, for functions with hosts.
        let (host, path) = (vhost::request_host(&request), request.uri().path());
        match registry.routes.lookup_on(host, path) {
            Some((r, target)) => {
                // A private function: the key first, so that a request
                // without one learns nothing more (not even whether an
                // alias or a pinned version exists). The active version's
                // setting holds for every route, alias and pinned version
                // of the function (none active: closed). A CORS preflight
                // carries no credentials (browsers send none): the host
                // answers it without the function, so it needs no key.
                let active = registry.by_name.get(target.function());
                let private = active.is_none_or(|a| !a.auth.is_public());
                let preflight =
                    active.is_some_and(|a| a.cors.is_some()) && cors::is_preflight(&request);
                if private
                    && !preflight
                    && let Some(refused) =
                        keys::admit(&gateway.keys, target.function(), request.headers_mut())
                {
                    return refused;
                }
                choose(&registry, target, request.headers()).map(|d| {
                    // Preview-1 (CGI) functions see the matched route as
                    // SCRIPT_NAME; components need nothing (and pay nothing).
                    let script = matches!(d.pre, Prepared::Module(_)).then(|| {
                        let (Route::Exact(p) | Route::Prefix(p)) = r;
                        ScriptName(Arc::from(p.as_str()))
                    });
                    (script, d)
                })
            }
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                format!("no function is routed at {}", request.uri().path()),
            )),
        }
    };
    match target {
        Ok((script, target)) => {
            if let Some(script) = script {
                request.extensions_mut().insert(script);
            }
            let version = target.version;
            let mut response = serve(gateway, target, request).await;
            response
                .headers_mut()
                .insert(VERSION_HEADER, http::HeaderValue::from(version));
            response
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// Runs a request on the version chosen for it, through the function's
/// rate limit and CORS.
async fn serve(gateway: &Gateway, target: Arc<Deployed>, request: Request<Body>) -> Response<Body> {
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

/// The version that serves a request routed to `target`: the route's (the
/// active version, or a weighted draw of its alias), unless the request
/// names an alias (`wisp-alias`) or pins a version (`wisp-version`, when
/// the function allows it; any version that serves: the active one, or one
/// an alias points to).
fn choose(
    registry: &Registry,
    target: &RouteTarget,
    headers: &http::HeaderMap,
) -> Result<Arc<Deployed>, ApiError> {
    let function = target.function();
    let aliases = registry.aliases.get(function);
    let active = registry.by_name.get(function);
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("").trim());
    if let Some(v) = header(VERSION_HEADER) {
        let pinnable = active.is_some_and(|a| a.version_pinning);
        if !pinnable {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "version_pinning_off",
                format!(
                    "function {function:?} does not allow pinning a version (deploy it with \
                     --version-pinning to allow `{VERSION_HEADER}`)"
                ),
            ));
        }
        let version: Option<u64> = v.parse().ok();
        let found = version.and_then(|n| match active {
            Some(a) if a.version == n => Some(a.clone()),
            _ => aliases.and_then(|a| a.versions.get(&n)).cloned(),
        });
        return found.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "version_not_serving",
                format!(
                    "version {v:?} of function {function:?} is not serving: a pinned version is \
                     the active one or one an alias points to"
                ),
            )
        });
    }
    if let Some(name) = header(ALIAS_HEADER) {
        return aliases
            .and_then(|a| a.by_name.get(name))
            .map(|a| a.choose().clone())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "alias_not_found",
                    format!("function {function:?} has no alias {name:?}"),
                )
            });
    }
    Ok(match target {
        RouteTarget::Active(d) => d.clone(),
        RouteTarget::Alias(a) => a.choose().clone(),
    })
}
