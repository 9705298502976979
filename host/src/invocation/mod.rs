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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

pub(crate) mod cgi;

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

/// Caps what an instance's linear memories and tables take together (a
/// component is several core instances, each with its own memories and
/// tables: a cap per memory would let it take a multiple of its limit); a
/// breach traps with [`MemoryLimitExceeded`] so the gateway can answer with a
/// clear error. wasmtime asks before creating a memory or table too, so the
/// initial sizes count.
pub(crate) struct MemoryLimiter {
    max_memory: usize,
    /// Bytes of every memory and table of this store so far.
    used: usize,
}

impl MemoryLimiter {
    /// A limiter capping memories and tables at `max_memory` bytes in all.
    pub(crate) fn new(max_memory: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_memory,
            used: 0,
        }
    }

    /// Admits growing one memory or table from `current` to `desired`
    /// bytes, counting it against the whole store.
    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = (self.used - current.min(self.used)).saturating_add(desired);
        if total > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                desired: total,
            }
            .into());
        }
        self.used = total;
        Ok(true)
    }
}

/// Bytes one table element takes (a function reference is a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Elements one table may have: what the pooling allocator's slots hold
/// (engine.rs), so the on-demand allocator has the same bound.
const MAX_TABLE_ELEMENTS: usize = 100_000;

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
#[error(
    "memory limit of {limit} bytes exceeded (the guest's memories and tables would take {desired} \
     bytes)"
)]
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
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
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
    /// How many of them one function may hold (its share; each function's
    /// own semaphore, [`Deployed::slots`], has this many permits).
    pub function_share: u32,
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
    /// No invocation slot free host-wide (503).
    Overloaded,
    /// The function holds its whole share of the host's invocation slots
    /// (429): other functions still have theirs.
    FunctionBusy,
    /// The function exports only the event handler.
    NoHttpHandler,
}

/// Marks a response the host gave because no invocation slot was free (its
/// own 503 `overloaded` or 429 `function_busy`), not the function's answer:
/// an event delivery that gets it is postponed, not failed. A response
/// extension, so no guest can forge it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoSlot;

/// Why an event handler's invocation did not succeed.
pub(crate) enum HandlerFailure {
    /// No invocation slot was free: the handler never ran.
    NoSlot,
    /// It ran and failed: the handler's error, a trap, the deadline...
    Failed(String),
}

/// An invocation slot: one of the function's share and one of the host's,
/// held until the guest has finished (its response body included).
pub(crate) struct Slot {
    _function: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
}

/// Aborts an invocation's task when dropped while armed: the client went
/// away (hyper dropped the request's future or the response body), so the
/// guest's work is for no one and its slot is for others.
pub(crate) struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    pub(crate) fn new(handle: tokio::task::AbortHandle) -> AbortOnDrop {
        AbortOnDrop(Some(handle))
    }

    /// The task ended (or must run on): dropping no longer aborts it.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// A response body that cancels its invocation when the client goes away
/// before the body has ended. Once it has ended, the guest may finish what
/// it does after responding.
pub(crate) struct CancelOnDrop {
    inner: Body,
    abort: AbortOnDrop,
}

impl CancelOnDrop {
    pub(crate) fn new(inner: Body, abort: AbortOnDrop) -> CancelOnDrop {
        CancelOnDrop { inner, abort }
    }
}

impl http_body::Body for CancelOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.abort.disarm();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // hyper may drop a body that says it has ended without polling it
        // to its end.
        if http_body::Body::is_end_stream(&self.inner) {
            self.abort.disarm();
        }
    }
}

/// The end of one invocation's instance, whether the guest finishes or the
/// invocation is cancelled (its client went away, and the task was dropped
/// mid-call): the instance goes first, then its log is written, then the
/// slot is freed. In that order, so that a client that has its answer finds
/// the slot free and the log written.
pub(crate) struct Teardown<T: 'static> {
    store: Option<Store<T>>,
    slot: Option<Slot>,
    log: LogCapture,
    sink: LogSink,
    function: Arc<str>,
    id: String,
    in_flight: metrics::Gauge,
    ended: bool,
}

impl<T: 'static> Teardown<T> {
    pub(crate) fn new(
        inv: &Invoker,
        store: Store<T>,
        slot: Slot,
        log: LogCapture,
        function: Arc<str>,
        id: &str,
    ) -> Teardown<T> {
        inv.metrics.in_flight.increment(1.0);
        Teardown {
            store: Some(store),
            slot: Some(slot),
            log,
            sink: inv.logs.clone(),
            function,
            id: id.to_string(),
            in_flight: inv.metrics.in_flight.clone(),
            ended: false,
        }
    }

    /// The invocation's store, until the end.
    pub(crate) fn store(&mut self) -> &mut Store<T> {
        self.store.as_mut().expect("the store lives until the end")
    }

    /// The guest has finished: `note` says how, if it failed.
    pub(crate) fn finish(mut self, note: Option<String>) {
        self.end(note);
    }

    fn end(&mut self, note: Option<String>) {
        self.ended = true;
        self.in_flight.decrement(1.0);
        self.store = None;
        if let Some(note) = note {
            self.log.note(note);
        }
        self.sink.send(&self.function, &self.id, self.log.finish());
        self.slot = None;
    }
}

impl<T: 'static> Drop for Teardown<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.end(Some(
                "invocation cancelled: the client went away before the response was complete"
                    .into(),
            ));
        }
    }
}

/// Records an invocation's status, duration and log line when it ends, also
/// when it never answers because the client went away (status 499, as
/// nginx counts it).
struct Record<'a> {
    target: &'a Deployed,
    id: &'a str,
    event_id: Option<&'a str>,
    start: Instant,
    status: Option<u16>,
}

/// The status counted for an invocation whose client went away first.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let took = self.start.elapsed();
        self.target.metrics.record(status, took);
        tracing::info!(
            target: "wisp::invocation",
            function = %self.target.name,
            version = self.target.version,
            status,
            duration_us = took.as_micros() as u64,
            invocation_id = %self.id,
            event_id = self.event_id.map(tracing::field::display),
        );
    }
}

/// How an event delivery failed.
enum EventFailure {
    /// The handler ran and returned an error.
    Handler(String),
    /// The invocation failed (deadline, trap, memory, overload).
    Invocation(Failure),
}

impl Invoker {
    /// Takes an invocation slot for `target`: one of its function's share,
    /// then one of the host's; or the failure that says which is full.
    pub(crate) fn admit(&self, target: &Deployed) -> Result<Slot, Failure> {
        let Ok(function) = target.slots.clone().try_acquire_owned() else {
            return Err(Failure::FunctionBusy);
        };
        let Ok(host) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.overloaded.increment(1);
            return Err(Failure::Overloaded);
        };
        Ok(Slot {
            _function: function,
            _host: host,
        })
    }

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
                Some(http) => self.run(&target, http, &id, start, req).await,
                None => self.failure(&target, &id, Failure::NoHttpHandler),
            },
            Prepared::Module(pre) => crate::cgi::run(self, &target, pre, &id, start, req).await,
        };
        record.status = Some(response.status().as_u16());
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
        let limits = target.limits;
        let (mut parts, body) = req.into_parts();
        if let Some(len) = content_length(&parts.headers)
            && len > limits.max_body_bytes
        {
            return self.failure(target, id, Failure::BodyTooLarge);
        }
        let slot = match self.admit(target) {
            Ok(slot) => slot,
            Err(f) => return self.failure(target, id, f),
        };
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
        let instantiation = self.metrics.instantiation.clone();
        let timeout = limits.timeout();
        let mut teardown = Teardown::new(self, store, slot, log, target.name_arc.clone(), id);
        let task = tokio::spawn(async move {
            let store = teardown.store();
            let result = tokio::time::timeout(timeout, async {
                let t = Instant::now();
                let proxy = pre.instantiate_async(&mut *store).await?;
                instantiation.record(t.elapsed().as_secs_f64());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, wasi_req, out)
                    .await
            })
            .await;
            let result = match result {
                Err(_elapsed) => Err(Failure::Timeout),
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(classify(e)),
            };
            // No yield before the teardown: the connection (same serving
            // thread) sends the response after it, so a client that has
            // its answer finds the slot free and the log line written.
            teardown.finish(
                result
                    .as_ref()
                    .err()
                    .map(|f| format!("invocation failed: {}", f.describe())),
            );
            result
        });
        // Dropped with this future (the client went away) or with the
        // response body before its end: the guest is stopped.
        let mut abort = AbortOnDrop::new(task.abort_handle());

        match receiver.await {
            Ok(Ok(resp)) => {
                let mut resp =
                    resp.map(|body| Body::new(CancelOnDrop::new(Body::new(body), abort)));
                if let Ok(v) = HeaderValue::from_str(id) {
                    resp.headers_mut().insert(INVOCATION_ID_HEADER, v);
                }
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
                self.failure(target, id, failure)
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
                limits: MemoryLimiter::new(target.limits.memory_bytes as usize),
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
    ) -> Result<(), HandlerFailure> {
        let id = next_invocation_id();
        let mut record = Record {
            target,
            id: &id,
            event_id: Some(&event.id),
            start: Instant::now(),
            status: None,
        };
        let result = self.run_event(target, pre, &id, record.start, event).await;
        let status = match &result {
            Ok(()) => StatusCode::OK,
            Err(EventFailure::Handler(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Err(EventFailure::Invocation(f)) => f.status(),
        };
        record.status = Some(status.as_u16());
        result.map_err(|f| match f {
            EventFailure::Handler(message) => {
                HandlerFailure::Failed(format!("the handler returned an error: {message}"))
            }
            EventFailure::Invocation(Failure::Overloaded | Failure::FunctionBusy) => {
                HandlerFailure::NoSlot
            }
            EventFailure::Invocation(f) => {
                HandlerFailure::Failed(format!("{} (invocation {id})", f.describe()))
            }
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
        let slot = self.admit(target).map_err(EventFailure::Invocation)?;
        let timeout = target.limits.timeout();
        let store = self.new_store(target, start + timeout);
        let log = store.data().log.clone();
        let mut teardown = Teardown::new(self, store, slot, log, target.name_arc.clone(), id);
        let store = teardown.store();
        let result = tokio::time::timeout(timeout, async {
            let t = Instant::now();
            let instance = pre.instantiate_async(&mut *store).await?;
            self.metrics.instantiation.record(t.elapsed().as_secs_f64());
            instance
                .wisp_function_event_handler()
                .call_handle(&mut *store, event)
                .await
        })
        .await;
        let result = match result {
            Err(_elapsed) => Err(EventFailure::Invocation(Failure::Timeout)),
            Ok(Err(e)) => Err(EventFailure::Invocation(classify(e))),
            Ok(Ok(Err(message))) => Err(EventFailure::Handler(message)),
            Ok(Ok(Ok(()))) => Ok(()),
        };
        teardown.finish(match &result {
            Err(EventFailure::Handler(message)) => {
                Some(format!("event {} failed: {message}", event.id))
            }
            Err(EventFailure::Invocation(f)) => {
                Some(format!("invocation failed: {}", f.describe()))
            }
            Ok(()) => None,
        });
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
                let mut resp = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many invocations in flight; retry shortly",
                )
                .retry_after(1)
                .invocation(id)
                .into_response_body();
                resp.extensions_mut().insert(NoSlot);
                return resp;
            }
            Failure::FunctionBusy => {
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "function_busy",
                    format!(
                        "function {:?} has {} invocations in flight, its share of the host's; \
                         retry shortly",
                        target.name, self.function_share
                    ),
                )
                .retry_after(1)
                .invocation(id)
                .into_response_body();
                resp.extensions_mut().insert(NoSlot);
                return resp;
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
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::NoResponse => StatusCode::BAD_GATEWAY,
            Failure::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Failure::FunctionBusy => StatusCode::TOO_MANY_REQUESTS,
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
            Failure::FunctionBusy => {
                "the function has its share of the host's invocations in flight".into()
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_counts_every_memory_and_table_of_the_store() {
        let mut l = MemoryLimiter::new(10 << 20);
        // Two memories of 4 MiB fit; a third grows past the cap together.
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        let e = l.memory_growing(0, 4 << 20, None).unwrap_err();
        let e = e.downcast::<MemoryLimitExceeded>().unwrap();
        assert_eq!((e.limit, e.desired), (10 << 20, 12 << 20));
        // Growing one of them counts only the difference.
        assert!(l.memory_growing(4 << 20, 5 << 20, None).unwrap());
        // Tables count their elements' bytes against the same cap.
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(l.memory_growing(5 << 20, 11 << 19, None).unwrap());
        assert!(l.table_growing(1000, MAX_TABLE_ELEMENTS, None).is_err());
        // And a table never grows past what a pooling slot holds.
        let mut roomy = MemoryLimiter::new(1 << 30);
        assert!(
            !roomy
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
    }
}
