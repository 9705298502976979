//! The per-invocation lifetime: a fresh `Store` with its limits, deadline
//! and WASI context, the `wasi:http/incoming-handler` call, and the mapping
//! of every failure to a response.
//!
//! This is the hot path: nothing here takes a lock or formats labels.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::event_bindings::EventsPre;
use crate::capabilities::event_bindings::exports::wisp::function::event_handler::Event;
use crate::capabilities::logs::{LogCapture, LogSink, LogStream};
use crate::capabilities::outbound::Outbound;
use crate::engine::Prepared;
use crate::error::ApiError;
use crate::host::HostInner;
use crate::metrics::HostMetrics;
use crate::registry::Deployed;

/// Response header carrying the invocation id.
pub const INVOCATION_ID_HEADER: &str = "wisp-invocation-id";

/// Everything one invocation's `Store` holds. Built per request, dropped
/// with the instance: nothing survives from one invocation to the next.
pub struct InvocationState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MemoryLimiter,
    /// Outbound HTTP policy: allow-list, per-invocation cap, deadline.
    hooks: Outbound,
    /// This invocation's stdout, stderr and log lines.
    pub(crate) log: LogCapture,
    /// The function's key-value namespace (`wisp:function/kv`).
    pub(crate) kv: Arc<crate::capabilities::kv::KvNamespace>,
    /// The function's settings and secrets as of this invocation's start
    /// (`wisp:function/config`).
    pub(crate) config: Arc<crate::capabilities::settings::ConfigSnapshot>,
    /// The host, for publishing events (`wisp:function/topics`).
    pub(crate) host: Weak<HostInner>,
    /// Wall-clock deadline, checked on every epoch tick.
    deadline: Instant,
}

impl InvocationState {
    /// The name of the function this invocation runs.
    pub(crate) fn function(&self) -> &str {
        &self.hooks.function
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps linear memory growth; a breach traps with [`MemoryLimitExceeded`]
/// so the gateway can answer with a clear error.
pub(crate) struct MemoryLimiter {
    max_memory: usize,
}

impl MemoryLimiter {
    /// A limiter capping linear memory at `max_memory` bytes.
    pub(crate) fn new(max_memory: usize) -> MemoryLimiter {
        MemoryLimiter { max_memory }
    }
}

/// What a store does on every epoch tick: past the deadline, trap;
/// otherwise yield to the executor, so a guest in a tight loop neither
/// overruns its deadline nor starves other requests on this worker.
#[inline]
pub(crate) fn on_epoch_tick(deadline: Instant) -> wasmtime::Result<UpdateDeadline> {
    if Instant::now() >= deadline {
        Err(DeadlineExceeded.into())
    } else {
        Ok(UpdateDeadline::Yield(1))
    }
}

/// The trap raised when a guest grows memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (the guest asked for {desired} bytes)")]
pub struct MemoryLimitExceeded {
    limit: usize,
    desired: usize,
}

/// The trap raised when the wall-clock deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The pooling allocator bounds tables; on-demand gets the same bound.
        Ok(desired <= 100_000)
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
    /// Host-wide bound on invocations in flight. A permit is held until the
    /// guest has finished, including streaming its response body.
    pub in_flight: Arc<Semaphore>,
    pub metrics: HostMetrics,
    /// Where invocations' log lines go when they end.
    pub logs: LogSink,
    /// Output and log lines kept per invocation (bytes and entries).
    pub log_limit: crate::capabilities::logs::LogLimits,
    /// Outbound requests per invocation.
    pub max_outbound: u32,
    /// Bytes of response body a preview-1 (CGI) module may write.
    pub cgi_max_output: u64,
    /// The host this invoker belongs to (guests publish events through it).
    pub host: Weak<HostInner>,
}

/// How an invocation failed.
pub(crate) enum Failure {
    Timeout,
    Memory(String),
    BodyTooLarge,
    Trap(String),
    NoResponse,
    GuestError(String),
    Overloaded,
    /// The function exports only the event handler.
    NoHttpHandler,
}

/// How an event delivery failed.
enum EventFailure {
    /// The handler ran and returned an error.
    Handler(String),
    /// The invocation failed (deadline, trap, memory, overload).
    Invocation(Failure),
}

impl Invoker {
    /// Runs one request through a fresh instance of `target`.
    pub async fn invoke(&self, target: Arc<Deployed>, req: Request<Body>) -> Response<Body> {
        let id = next_invocation_id();
        let start = Instant::now();
        let response = match &target.pre {
            Prepared::Component(pre) => match &pre.http {
                Some(http) => self.run(&target, http, &id, start, req).await,
                None => self.failure(&target, &id, Failure::NoHttpHandler),
            },
            Prepared::Module(pre) => crate::cgi::run(self, &target, pre, &id, start, req).await,
        };
        let status = response.status().as_u16();
        let took = start.elapsed();
        target.metrics.record(status, took);
        tracing::info!(
            target: "wisp::invocation",
            function = %target.name,
            version = target.version,
            status,
            duration_us = took.as_micros() as u64,
            invocation_id = %id,
        );
        response
    }

    async fn run(
        &self,
        target: &Arc<Deployed>,
        pre: &ProxyPre<InvocationState>,
        id: &str,
        start: Instant,
        req: Request<Body>,
    ) -> Response<Body> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.overloaded.increment(1);
            return self.failure(target, id, Failure::Overloaded);
        };
        let limits = target.limits;
        let (mut parts, body) = req.into_parts();
        if let Some(len) = content_length(&parts.headers)
            && len > limits.max_body_bytes
        {
            return self.failure(target, id, Failure::BodyTooLarge);
        }
        // The guest needs an authority; HTTP/1.0 clients may send no Host.
        if parts.uri.authority().is_none() && !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let body_exceeded = Arc::new(AtomicBool::new(false));
        let body = CappedBody {
            inner: body,
            remaining: limits.max_body_bytes,
            limit: limits.max_body_bytes,
            exceeded: body_exceeded.clone(),
        };
        let hyper_req = Request::from_parts(parts, body);

        let mut store = self.new_store(target, start + limits.timeout());
        let log = store.data().log.clone();

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, hyper_req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok::<_, wasmtime::Error>((req, out))
        })();
        let (wasi_req, out) = match prepared {
            Ok(v) => v,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request cannot be passed to the function: {e}"),
                )
                .invocation(id)
                .into_response_body();
            }
        };

        let pre = pre.clone();
        let in_flight = self.metrics.in_flight.clone();
        let instantiation = self.metrics.instantiation.clone();
        let timeout = limits.timeout();
        let sink = self.logs.clone();
        let function = target.name_arc.clone();
        let invocation_id = id.to_string();
        in_flight.increment(1.0);
        let task = tokio::spawn(async move {
            let _permit = permit;
            let result = tokio::time::timeout(timeout, async {
                let t = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiation.record(t.elapsed().as_secs_f64());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, wasi_req, out)
                    .await
            })
            .await;
            in_flight.decrement(1.0);
            // No yield before the teardown: the connection (same serving
            // thread) sends the response after it, so a client that has
            // its answer finds the slot free and the log line written.
            let result = match result {
                Err(_elapsed) => Err(Failure::Timeout),
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(classify(e)),
            };
            drop(store);
            if let Err(f) = &result {
                log.note(format!("invocation failed: {}", f.describe()));
            }
            sink.send(&function, &invocation_id, log.finish());
            result
        });

        match receiver.await {
            Ok(Ok(resp)) => {
                let mut resp = resp.map(Body::new);
                if let Ok(v) = HeaderValue::from_str(id) {
                    resp.headers_mut().insert(INVOCATION_ID_HEADER, v);
                }
                resp
            }
            Ok(Err(code)) => {
                let failure = if body_exceeded.load(Ordering::Relaxed) {
                    Failure::BodyTooLarge
                } else {
                    Failure::GuestError(format!("{code:?}"))
                };
                self.failure(target, id, failure)
            }
            Err(_) => {
                let failure = match task.await {
                    Ok(Ok(())) => Failure::NoResponse,
                    Ok(Err(f)) => f,
                    Err(join) => Failure::Trap(format!("invocation task failed: {join}")),
                };
                let failure = match failure {
                    Failure::Trap(_) | Failure::NoResponse | Failure::GuestError(_)
                        if body_exceeded.load(Ordering::Relaxed) =>
                    {
                        Failure::BodyTooLarge
                    }
                    f => f,
                };
                self.failure(target, id, failure)
            }
        }
    }

    /// A fresh store for one invocation of `target`: its environment, no
    /// sockets, its memory cap, and a deadline enforced on every epoch tick.
    fn new_store(&self, target: &Deployed, deadline: Instant) -> Store<InvocationState> {
        let log = LogCapture::new(self.log_limit);
        let mut store = Store::new(
            &self.engine,
            InvocationState {
                wasi: WasiCtx::builder()
                    .envs(&target.env)
                    .stdout(log.stream(LogStream::Stdout))
                    .stderr(log.stream(LogStream::Stderr))
                    .allow_tcp(false)
                    .allow_udp(false)
                    .allow_ip_name_lookup(false)
                    .build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: MemoryLimiter {
                    max_memory: target.limits.memory_bytes as usize,
                },
                hooks: Outbound {
                    allow: target.allow_outbound.clone(),
                    remaining: self.max_outbound,
                    max: self.max_outbound,
                    deadline,
                    function: target.name_arc.clone(),
                    log: log.clone(),
                },
                log,
                kv: target.kv.clone(),
                config: target.config.clone(),
                host: self.host.clone(),
                deadline,
            },
        );
        store.limiter(|s| &mut s.limits);
        // Checked on every epoch tick (see `on_epoch_tick`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| on_epoch_tick(ctx.data().deadline));
        store
    }

    /// Builds a store and instantiates `target` in it, then drops both: what
    /// every invocation pays before the handler runs (benchmarks).
    pub async fn instantiate_only(&self, target: &Deployed) -> wasmtime::Result<()> {
        let pre = match &target.pre {
            Prepared::Component(pre) => pre,
            Prepared::Module(pre) => return crate::cgi::instantiate_only(self, target, pre).await,
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

    /// Runs one event through a fresh instance of `target`'s
    /// `wisp:function/event-handler` export, with the same limits, log
    /// capture and metrics as an HTTP invocation. `Err` carries why the
    /// attempt failed (the handler's error, a trap, the deadline...), for
    /// the delivery's record; the invocation's log has it too.
    pub(crate) async fn handle_event(
        &self,
        target: &Arc<Deployed>,
        pre: &EventsPre<InvocationState>,
        event: &Event,
    ) -> Result<(), String> {
        let id = next_invocation_id();
        let start = Instant::now();
        let result = self.run_event(target, pre, &id, start, event).await;
        let status = match &result {
            Ok(()) => StatusCode::OK,
            Err(EventFailure::Handler(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Err(EventFailure::Invocation(f)) => f.status(),
        };
        let took = start.elapsed();
        target.metrics.record(status.as_u16(), took);
        tracing::info!(
            target: "wisp::invocation",
            function = %target.name,
            version = target.version,
            status = status.as_u16(),
            duration_us = took.as_micros() as u64,
            invocation_id = %id,
            event_id = %event.id,
        );
        result.map_err(|f| match f {
            EventFailure::Handler(message) => format!("the handler returned an error: {message}"),
            EventFailure::Invocation(f) => format!("{} (invocation {id})", f.describe()),
        })
    }

    async fn run_event(
        &self,
        target: &Arc<Deployed>,
        pre: &EventsPre<InvocationState>,
        id: &str,
        start: Instant,
        event: &Event,
    ) -> Result<(), EventFailure> {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.overloaded.increment(1);
            return Err(EventFailure::Invocation(Failure::Overloaded));
        };
        let timeout = target.limits.timeout();
        let mut store = self.new_store(target, start + timeout);
        let log = store.data().log.clone();
        self.metrics.in_flight.increment(1.0);
        let result = tokio::time::timeout(timeout, async {
            let t = Instant::now();
            let instance = pre.instantiate_async(&mut store).await?;
            self.metrics.instantiation.record(t.elapsed().as_secs_f64());
            instance
                .wisp_function_event_handler()
                .call_handle(&mut store, event)
                .await
        })
        .await;
        self.metrics.in_flight.decrement(1.0);
        drop(store);
        let result = match result {
            Err(_elapsed) => Err(EventFailure::Invocation(Failure::Timeout)),
            Ok(Err(e)) => Err(EventFailure::Invocation(classify(e))),
            Ok(Ok(Err(message))) => Err(EventFailure::Handler(message)),
            Ok(Ok(Ok(()))) => Ok(()),
        };
        match &result {
            Err(EventFailure::Handler(message)) => {
                log.note(format!("event {} failed: {message}", event.id));
            }
            Err(EventFailure::Invocation(f)) => {
                log.note(format!("invocation failed: {}", f.describe()));
            }
            Ok(()) => {}
        }
        self.logs.send(&target.name_arc, id, log.finish());
        result
    }

    pub(crate) fn failure(&self, target: &Deployed, id: &str, failure: Failure) -> Response<Body> {
        let (status, code, message) = match failure {
            Failure::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the function did not finish within its timeout of {} ms",
                    target.limits.timeout_ms
                ),
            ),
            Failure::Memory(detail) => {
                tracing::warn!(invocation_id = id, function = %target.name, "{detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "memory_limit",
                    format!(
                        "the function exceeded its memory limit of {} bytes",
                        target.limits.memory_bytes
                    ),
                )
            }
            Failure::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is larger than the function's limit of {} bytes",
                    target.limits.max_body_bytes
                ),
            ),
            Failure::Trap(detail) => {
                // A backtrace names the guest's own functions: guest-chosen.
                let detail = crate::untrusted::clip(&detail);
                tracing::warn!(invocation_id = id, function = %target.name, error = %detail, "guest trapped");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "trap",
                    "the function failed (trap); see the host log for this invocation id".into(),
                )
            }
            Failure::NoResponse => (
                StatusCode::BAD_GATEWAY,
                "bad_response",
                "the function returned without sending a response".into(),
            ),
            Failure::GuestError(detail) => {
                // The guest's own error code, with its message.
                let detail = crate::untrusted::clip(&detail);
                tracing::warn!(invocation_id = id, function = %target.name, error = %detail, "guest answered an error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "function_error",
                    format!("the function reported an error: {detail}"),
                )
            }
            Failure::NoHttpHandler => (
                StatusCode::NOT_IMPLEMENTED,
                "no_http_handler",
                format!(
                    "function {:?} exports only wisp:function/event-handler: it handles events, not \
                     HTTP requests (publish to a topic it subscribes to, or invoke it with --async)",
                    target.name
                ),
            ),
            Failure::Overloaded => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many invocations in flight; retry shortly",
                )
                .retry_after(1)
                .invocation(id)
                .into_response_body();
            }
        };
        let mut resp = ApiError::new(status, code, message)
            .invocation(id)
            .into_response_body();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the client must not send its
            // next request on this connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl Failure {
    /// The HTTP status this failure is answered (and counted) with.
    fn status(&self) -> StatusCode {
        match self {
            Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::NoResponse => StatusCode::BAD_GATEWAY,
            Failure::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Failure::NoHttpHandler => StatusCode::NOT_IMPLEMENTED,
            Failure::Memory(_) | Failure::Trap(_) | Failure::GuestError(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What happened, for the function's log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Timeout => "the deadline passed".into(),
            Failure::Memory(d) | Failure::Trap(d) | Failure::GuestError(d) => d.clone(),
            Failure::BodyTooLarge => "the request body is over the limit".into(),
            Failure::NoResponse => "returned without sending a response".into(),
            Failure::Overloaded => "too many invocations in flight".into(),
            Failure::NoHttpHandler => "the function has no HTTP handler".into(),
        }
    }
}

impl ApiError {
    fn into_response_body(self) -> Response<Body> {
        axum::response::IntoResponse::into_response(self)
    }
}

pub(crate) fn classify(e: wasmtime::Error) -> Failure {
    if e.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
    {
        return Failure::Timeout;
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::Memory(m.to_string());
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Failure::Overloaded;
    }
    Failure::Trap(format!("{e:?}"))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request body as the guest reads it, cut off (with an error the guest
/// sees as a failed read) once it passes the function's body limit. The flag
/// lets the gateway answer 413 instead of whatever the guest made of it.
struct CappedBody {
    inner: Body,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.limit)),
                        )));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(
                wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
