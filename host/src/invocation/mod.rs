//! The per-invocation lifetime: a slot, a fresh `Store` with its limits,
//! deadline and WASI context, the guest's call, its log, and the mapping of
//! every failure to a response.
//!
//! One driver ([`driver`]) runs every invocation; what differs between an
//! HTTP component ([`http`]), an event handler ([`event`]) and a preview-1
//! module run CGI-style ([`cgi`]) is only how the guest is instantiated and
//! called. One table ([`failure`]) says what each failure answers.
//!
//! This is the hot path: nothing here takes a lock or formats labels.

pub(crate) mod admission;
pub(crate) mod cgi;
mod driver;
mod event;
mod failure;
mod http;
mod limits;
#[cfg(not(feature = "p3"))]
pub(crate) mod no_p3;
pub(crate) mod rate;
#[cfg(not(feature = "p3"))]
pub(crate) use no_p3 as reuse;
#[cfg(feature = "p3")]
mod prime;
#[cfg(feature = "p3")]
pub(crate) mod reuse;
#[cfg(feature = "p3")]
mod service;
mod state;
pub(crate) mod target;
pub(crate) mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, Response};

pub(crate) use self::driver::Record;
pub(crate) use self::failure::{Failure, HandlerFailure, NoSlot};
pub use self::state::InvocationState;
pub(crate) use self::state::add_capabilities_to_linker;
use self::target::{Deployed, Prepared};
use crate::capabilities::logs::{LogLimits, LogSink};
use crate::capabilities::topics::Publisher;
use crate::metrics::HostMetrics;

pub use crate::error::INVOCATION_ID_HEADER;

/// Marks a response with the invocation's id (`wisp-invocation-id`).
pub(crate) fn tag_invocation(resp: &mut Response<Body>, id: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(id) {
        resp.headers_mut().insert(INVOCATION_ID_HEADER, v);
    }
}

/// Cheap, unique, sortable-enough invocation ids: a per-process random
/// prefix and a counter.
pub(crate) fn next_invocation_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:08x}{n:012x}")
}

/// Shared by all invocations of a host.
pub(crate) struct Invoker {
    pub engine: wasmtime::Engine,
    /// Host-wide bound on invocations in flight, and the host's queue. A
    /// permit is held until the guest has finished, including streaming
    /// its response body.
    pub in_flight: Arc<self::admission::HostGate>,
    pub metrics: HostMetrics,
    /// Where invocations' log lines go when they end.
    pub logs: LogSink,
    /// Output and log lines kept per invocation (bytes and entries).
    pub log_limit: LogLimits,
    /// Outbound requests per invocation.
    pub max_outbound: u32,
    /// Bytes of response body a preview-1 (CGI) module may write.
    pub cgi_max_output: u64,
    /// Publishes guests' events (`wisp:function/topics`). Held here, with
    /// the host; each invocation gets a weak reference, so that a publish
    /// after the host is gone is refused.
    pub publisher: Arc<dyn Publisher>,
}

impl Invoker {
    /// Runs one request through a fresh instance of `target`.
    pub async fn invoke(&self, target: Arc<Deployed>, req: Request<Body>) -> Response<Body> {
        let id = next_invocation_id();
        let mut record = Record {
            target: &target,
            id: &id,
            event_id: None,
            start: Instant::now(),
            status: None,
        };
        let start = record.start;
        let response = match &target.pre {
            Prepared::Component(pre) => match &pre.http {
                Some(http) => self.run_http(&target, http, &id, start, req).await,
                None => Failure::NoHttpHandler.response(&target, &id),
            },
            Prepared::Service(pre) => match &target.reuse {
                Some(reuse) => self.run_reused(&target, pre, reuse, &id, start, req).await,
                None => self.run_service(&target, pre, &id, start, req).await,
            },
            Prepared::Module(pre) => self.run_cgi(&target, pre, &id, start, req).await,
        };
        record.status = Some(response.status().as_u16());
        response
    }

    /// Builds a store and instantiates `target` in it, then drops both: what
    /// every invocation pays before the handler runs (benchmarks).
    pub async fn instantiate_only(&self, target: &Deployed) -> wasmtime::Result<()> {
        let pre = match &target.pre {
            Prepared::Component(pre) => pre,
            Prepared::Service(pre) => return self.instantiate_service(target, pre).await,
            Prepared::Module(pre) => return self.instantiate_cgi(target, pre).await,
        };
        let mut store = self.new_store(target, Instant::now() + target.limits.timeout());
        match (&pre.http, &pre.events) {
            (Some(http), _) => {
                http.instantiate_async(&mut store).await?;
            }
            (None, Some(events)) => {
                events.instantiate_async(&mut store).await?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}
