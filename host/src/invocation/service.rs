//! A request to a WASI 0.3 component: `wasi:http/handler@0.3`'s `handle`,
//! called on a fresh instance inside the store's event loop
//! (`run_concurrent`). The loop runs on after `handle` has returned, until
//! the guest has no task left: a 0.3 guest writes its response body (and
//! may do other work) after returning the response.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt as _;
use metrics::Histogram;
use wasmtime::{AsContextMut as _, Store};
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::driver::{Call, Invocation};
use super::http::Answer;
use super::target::Deployed;
use super::{InvocationState, Invoker};

/// A request and where its answer goes.
type Exchange = (
    http::Request<WasiBody>,
    tokio::sync::oneshot::Sender<Answer<WasiBody, ErrorCode>>,
);

/// The `handle` call of one request.
struct ServiceCall {
    pre: ServicePre<InvocationState>,
    request: Option<Exchange>,
}

impl Call for ServiceCall {
    type State = InvocationState;
    type Output = ();

    async fn call(
        &mut self,
        store: &mut Store<InvocationState>,
        instantiation: &Histogram,
    ) -> wasmtime::Result<()> {
        let (request, answer) = self.request.take().expect("called once");
        let t = Instant::now();
        let service = self.pre.instantiate_async(&mut *store).await?;
        instantiation.record(t.elapsed().as_secs_f64());
        let proxy = Proxy::P3(service);
        let (tx, rx) = futures::channel::oneshot::channel();
        let prepared = Prepared::new(
            store.as_context_mut(),
            &proxy,
            request,
            <InvocationState as WasiHttpView>::http,
            tx,
        )?;
        store
            .run_concurrent(async |accessor| {
                // The deadline is the driver's (and the epoch's), not this.
                prepared.run(accessor, std::future::pending()).await?;
                match rx.await {
                    Ok(Ok(response)) => {
                        let _ = answer.send(Ok(response));
                    }
                    // The guest answered with an error code, or trapped (or
                    // hit a limit: the driver classifies it).
                    Ok(Err(e)) => match e.downcast::<ErrorCode>() {
                        Ok(code) => {
                            let _ = answer.send(Err(code));
                        }
                        Err(trap) => return Err(trap),
                    },
                    Err(_) => return Err(wasmtime::format_err!("the guest produced no response")),
                }
                // The guest's work after `handle` returned: its body, above
                // all. The instance lives until then.
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                Ok(())
            })
            .await?
    }
}

impl Invoker {
    /// Runs one request through a fresh instance of `target`'s WASI 0.3
    /// handler, like [`Invoker::run_http`] does for WASI 0.2.
    pub(super) async fn run_service(
        &self,
        target: &Arc<Deployed>,
        pre: &ServicePre<InvocationState>,
        id: &str,
        start: Instant,
        req: Request<Body>,
    ) -> Response<Body> {
        let incoming = match self.accept(target, req) {
            Ok(incoming) => incoming,
            Err(failure) => return failure.response(target, id),
        };
        let deadline = start + target.limits.timeout();
        let store = self.new_store_on(pre.instance_pre().engine(), target, deadline);
        let log = store.data().log.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let call = ServiceCall {
            pre: pre.clone(),
            request: Some((incoming.request.map(|b| b.boxed_unsync()), sender)),
        };
        let invocation = Invocation {
            store,
            slot: incoming.slot,
            log,
            deadline,
        };
        let running = self.start(invocation, target, id, call);
        let end = running.end();
        let task = crate::invocation::task::spawn(running);
        let response = self
            .respond(target, id, task, end, receiver, incoming.body_exceeded)
            .await;
        super::prime::prime(response).await
    }

    /// Builds a store and instantiates `target` in it, then drops both (the
    /// benchmarks' measure of what an invocation pays before its handler).
    pub(super) async fn instantiate_service(
        &self,
        target: &Deployed,
        pre: &ServicePre<InvocationState>,
    ) -> wasmtime::Result<()> {
        let deadline = Instant::now() + target.limits.timeout();
        let mut store = self.new_store_on(pre.instance_pre().engine(), target, deadline);
        pre.instantiate_async(&mut store).await?;
        Ok(())
    }
}
