//! A request to a component: `wasi:http/incoming-handler`, the response
//! streamed back as the guest writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use metrics::Histogram;
use wasmtime::Store;
use wasmtime::component::Resource;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{IncomingRequest, ResponseOutparam, Scheme};

use super::driver::{AbortOnDrop, Call, CancelOnDrop, Invocation, InvocationEnd, Slot};
use super::failure::Failure;
use super::limits::{CappedBody, content_length};
use super::target::Deployed;
use super::{InvocationState, Invoker};
use crate::error::ApiError;

/// The `handle` call of one request.
struct HttpCall {
    pre: ProxyPre<InvocationState>,
    request: Option<(Resource<IncomingRequest>, Resource<ResponseOutparam>)>,
}

impl Call for HttpCall {
    type State = InvocationState;
    type Output = ();

    async fn call(
        &mut self,
        store: &mut Store<InvocationState>,
        instantiation: &Histogram,
    ) -> wasmtime::Result<()> {
        let (request, out) = self.request.take().expect("called once");
        let t = Instant::now();
        let proxy = self.pre.instantiate_async(&mut *store).await?;
        instantiation.record(t.elapsed().as_secs_f64());
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, request, out)
            .await
    }
}

/// What a component answered: its response, or the error code it gave
/// instead (`E`: wasi:http 0.2's or 0.3's).
pub(super) type Answer<B, E> = Result<hyper::Response<B>, E>;

/// A request admitted to run: its slot, and the request as the guest reads
/// it (its body capped at the function's limit, `body_exceeded` set when a
/// read went past it).
pub(super) struct Incoming {
    pub slot: Slot,
    pub request: Request<CappedBody>,
    pub body_exceeded: Arc<AtomicBool>,
}

impl Invoker {
    /// The checks before a component runs, for WASI 0.2 and 0.3 alike: a
    /// declared body over the limit is refused (413) before a slot is
    /// taken; then a slot (or the failure that says there is none).
    pub(super) fn accept(
        &self,
        target: &Deployed,
        req: Request<Body>,
    ) -> Result<Incoming, Failure> {
        let limits = target.limits;
        let (mut parts, body) = req.into_parts();
        if let Some(len) = content_length(&parts.headers)
            && len > limits.max_body_bytes
        {
            return Err(Failure::BodyTooLarge);
        }
        let slot = self.admit(target)?;
        // The guest needs an authority; HTTP/1.0 clients may send no Host.
        if parts.uri.authority().is_none() && !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let body_exceeded = Arc::new(AtomicBool::new(false));
        let body = CappedBody::new(body, limits.max_body_bytes, body_exceeded.clone());
        Ok(Incoming {
            slot,
            request: Request::from_parts(parts, body),
            body_exceeded,
        })
    }

    /// Runs one request through a fresh instance of `target`'s HTTP
    /// handler. The guest runs in a task of its own so that its response
    /// streams while it keeps running; the client going away cancels it.
    pub(super) async fn run_http(
        &self,
        target: &Arc<Deployed>,
        pre: &ProxyPre<InvocationState>,
        id: &str,
        start: Instant,
        req: Request<Body>,
    ) -> Response<Body> {
        let Incoming {
            slot,
            request,
            body_exceeded,
        } = match self.accept(target, req) {
            Ok(incoming) => incoming,
            Err(failure) => return failure.response(target, id),
        };
        let deadline = start + target.limits.timeout();
        let mut store = self.new_store(target, deadline);
        let log = store.data().log.clone();

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let scheme = match request
            .extensions()
            .get::<crate::gateway::connection::Secure>()
        {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        };
        let prepared = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(scheme, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok::<_, wasmtime::Error>((req, out))
        })();
        let request = match prepared {
            Ok(v) => v,
            Err(e) => {
                return axum::response::IntoResponse::into_response(
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("the request cannot be passed to the function: {e}"),
                    )
                    .invocation(id),
                );
            }
        };
        let call = HttpCall {
            pre: pre.clone(),
            request: Some(request),
        };
        let invocation = Invocation {
            store,
            slot,
            log,
            deadline,
        };
        let running = self.start(invocation, target, id, call);
        let end = running.end();
        let task = crate::invocation::task::spawn(running);
        self.respond(target, id, task, end, receiver, body_exceeded)
            .await
    }

    /// Waits for the guest's answer and turns it into the response: its
    /// response (streamed; the client going away before its end cancels the
    /// guest), its error code, or the failure the invocation ended with.
    pub(super) async fn respond<B, E>(
        &self,
        target: &Deployed,
        id: &str,
        task: tokio::task::JoinHandle<Result<(), Failure>>,
        end: InvocationEnd,
        receiver: tokio::sync::oneshot::Receiver<Answer<B, E>>,
        body_exceeded: Arc<AtomicBool>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
        E: std::fmt::Debug,
    {
        // Dropped with this future (the client went away) or with the
        // response body before its end: the guest is stopped.
        let mut abort = AbortOnDrop::new(task.abort_handle());
        match receiver.await {
            Ok(Ok(resp)) => {
                let declared = content_length(resp.headers());
                let mut resp = resp.map(|body| {
                    Body::new(CancelOnDrop::new(Body::new(body), abort, end, declared))
                });
                super::tag_invocation(&mut resp, id);
                resp
            }
            Ok(Err(code)) => {
                // Answered: the guest may finish what it is doing.
                abort.disarm();
                let failure = if body_exceeded.load(Ordering::Relaxed) {
                    Failure::BodyTooLarge
                } else {
                    Failure::GuestError(format!("{code:?}"))
                };
                failure.response(target, id)
            }
            Err(_) => {
                let failure = match task.await {
                    Ok(Ok(())) => Failure::NoResponse,
                    Ok(Err(f)) => f,
                    Err(join) => Failure::Trap(format!("invocation task failed: {join}")),
                };
                abort.disarm();
                let failure = match failure {
                    Failure::Trap(_) | Failure::NoResponse | Failure::GuestError(_)
                        if body_exceeded.load(Ordering::Relaxed) =>
                    {
                        Failure::BodyTooLarge
                    }
                    f => f,
                };
                failure.response(target, id)
            }
        }
    }
}
