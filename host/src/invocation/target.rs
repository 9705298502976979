//! What one invocation runs: the active version of a function, with its
//! pre-instantiation and everything its invocations need (limits,
//! environment, key-value namespace, settings, admission). Built by
//! `function/` once per deployed version (compiled, checked and
//! pre-instantiated there) and swapped in with the registry; an invocation
//! only reads it.

use std::sync::Arc;

use wasmtime::InstancePre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
#[cfg(feature = "p3")]
use wasmtime_wasi_http::p3::bindings::ServicePre;

#[cfg(not(feature = "p3"))]
use super::no_p3::ServicePre;

use super::InvocationState;
use super::cgi::CgiState;
use crate::capabilities::event_bindings::EventsPre;
use crate::capabilities::kv::KvNamespace;
use crate::capabilities::outbound::AllowList;
use crate::capabilities::settings::ConfigSnapshot;
use crate::config::Limits;
use crate::metrics::FunctionMetrics;
use crate::routes::Route;

/// The active version of one function, ready to instantiate. Cloned (cheap:
/// handles and `Arc`s) to swap in a new config snapshot without a redeploy.
#[derive(Clone)]
pub(crate) struct Deployed {
    pub name: String,
    /// The name again, shared cheaply with each invocation's state.
    pub name_arc: Arc<str>,
    pub version: u64,
    /// Whether a request may pin a serving version of the function
    /// (`wisp-version`): the active version's setting.
    pub version_pinning: bool,
    /// Who may invoke the function on the data plane: the active version's
    /// setting is the function's (the gateway reads it there).
    pub auth: crate::auth::FunctionAuth,
    /// Built once per deployed version; instantiation per request starts
    /// here. A component, or a preview-1 module run CGI-style.
    pub pre: Prepared,
    /// The read-only directory granted to a preview-1 module (at `/static`
    /// in the guest), under `<data-dir>/static/`.
    pub static_dir: Option<std::path::PathBuf>,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// Hosts the function may send HTTP requests to.
    pub allow_outbound: Arc<AllowList>,
    pub metrics: FunctionMetrics,
    /// The function's key-value namespace (store handle and its limits).
    pub kv: Arc<KvNamespace>,
    /// The function's settings and secrets as of the last change; replaced
    /// (with a new registry) when they change.
    pub config: Arc<ConfigSnapshot>,
    /// The function's invocation slots (its concurrency, by default its
    /// share of the host's) and its queue. One per function name, kept
    /// across versions and config changes (see `Registry::with` in
    /// `function/registry.rs`), so a deploy does not hand a busy function
    /// fresh slots while its old invocations still hold the old ones.
    pub admission: Arc<super::admission::Admission>,
    /// A WASI 0.3 component's instance reuse (`--reuse`) and its pool; none
    /// for a fresh instance per request.
    pub reuse: Option<super::reuse::ReusePool>,
    /// CORS answered by the host (`--cors-origin`); none: requests reach
    /// the function as sent.
    pub cors: Option<Arc<crate::gateway::cors::Cors>>,
    /// Hosts whose requests the routes serve (`--host`), lower case;
    /// empty: any host.
    pub hosts: Vec<Arc<str>>,
}

/// A component's pre-instantiation with the handlers it exports (at least
/// one of them).
#[derive(Clone)]
pub(crate) struct ComponentPre {
    /// `wasi:http/incoming-handler`: HTTP requests.
    pub http: Option<ProxyPre<InvocationState>>,
    /// `wisp:function/event-handler`: events, as typed calls.
    pub events: Option<EventsPre<InvocationState>>,
}

/// A function ready to serve: its pre-instantiation, built once per
/// deployed version. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Prepared {
    /// A WASI 0.2 component, called through `wasi:http/incoming-handler`
    /// and/or `wisp:function/event-handler`.
    Component(ComponentPre),
    /// A WASI 0.3 component, called through `wasi:http/handler@0.3` (on the
    /// WASI 0.3 engine).
    Service(ServicePre<InvocationState>),
    /// A preview-1 module, run CGI-style (`cgi`).
    Module(InstancePre<CgiState>),
}
