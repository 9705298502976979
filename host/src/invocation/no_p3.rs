//! A build without WASI 0.3 (wisp-host's `p3` feature off: the runtime-only
//! edge build): a WASI 0.3 component is refused at deploy
//! (`WispEngine::services`), so no version ever holds one. What the
//! invocation code names for them is here, with nothing in it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, Response};

use super::target::Deployed;
use super::{InvocationState, Invoker};
use crate::config::Reuse;

/// A WASI 0.3 component's pre-instantiation: none can exist here.
#[derive(Clone)]
pub(crate) enum NoService {}

/// `wasmtime_wasi_http::p3::bindings::ServicePre` in a build with WASI 0.3.
pub(crate) type ServicePre<T> = (NoService, std::marker::PhantomData<fn() -> T>);

/// A version's instance reuse (`--reuse`, WASI 0.3 only): its settings.
#[derive(Clone)]
pub(crate) struct ReusePool {
    pub settings: Reuse,
}

impl ReusePool {
    pub(crate) fn new(settings: Reuse) -> ReusePool {
        ReusePool { settings }
    }

    pub(crate) fn fresh(&self) -> ReusePool {
        ReusePool::new(self.settings)
    }
}

impl Invoker {
    pub(super) async fn run_service(
        &self,
        _target: &Arc<Deployed>,
        pre: &ServicePre<InvocationState>,
        _id: &str,
        _start: Instant,
        _req: Request<Body>,
    ) -> Response<Body> {
        match pre.0 {}
    }

    pub(super) async fn run_reused(
        &self,
        _target: &Arc<Deployed>,
        pre: &ServicePre<InvocationState>,
        _reuse: &ReusePool,
        _id: &str,
        _start: Instant,
        _req: Request<Body>,
    ) -> Response<Body> {
        match pre.0 {}
    }

    pub(super) async fn instantiate_service(
        &self,
        _target: &Deployed,
        pre: &ServicePre<InvocationState>,
    ) -> wasmtime::Result<()> {
        match pre.0 {}
    }
}
