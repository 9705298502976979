//! Instance reuse for WASI 0.3 components (`--reuse`): a pool of workers,
//! each one instance that serves requests until it has served its count,
//! sits idle past its idle timeout, or fails. wasmtime-wasi-http's
//! `ProxyHandler` runs the workers (it queues requests to them, starts one
//! when none can take a request, and keeps an instance alive until its
//! work after a response is done); this module says how to build an
//! instance and when one must go.
//!
//! What differs from a fresh instance per request: the deadline is per
//! request but a guest stuck past it takes its instance (and the requests in
//! flight on it) down; a trap or a limit discards the instance; stdout and
//! stderr lines are those the instance wrote since the last request was
//! answered (with concurrent requests on one instance they may mix); the
//! outbound request cap counts per instance; a client that goes away does
//! not stop its request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use metrics::Histogram;
use wasmtime::StoreContextMut;
use wasmtime::component::GuestTaskId;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::admission::Held;
use super::driver::refused;
use super::failure::{Failure, classify};
use super::http::Incoming;
use super::state::StoreSettings;
use super::target::Deployed;
use super::{InvocationState, Invoker};
use crate::capabilities::logs::{LogCapture, LogSink};
use crate::config::Reuse;

/// Pools per version: one per serving thread, up to this many (threads
/// past it share one).
const THREAD_POOLS: usize = 16;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's pool among a version's [`THREAD_POOLS`].
    static THREAD_POOL: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % THREAD_POOLS;
}

/// A deployed version's reuse settings and, once it has served requests,
/// its pools: one per serving thread, so that a request runs on an
/// instance whose worker lives on the thread that took its connection (one
/// pool for all threads handed requests across threads, and left one
/// thread running every instance while the other waited on it: a 20 ms
/// p99). Cloned with the version's [`Deployed`]; a new version (or a config
/// change) starts pools of its own, the old ones' instances retire when
/// idle.
#[derive(Clone)]
pub(crate) struct ReusePool {
    pub settings: Reuse,
    pools: Arc<[OnceLock<ProxyHandler<Pool>>; THREAD_POOLS]>,
    instances: Arc<AtomicU64>,
}

impl ReusePool {
    pub(crate) fn new(settings: Reuse) -> ReusePool {
        ReusePool {
            settings,
            pools: Arc::default(),
            instances: Arc::default(),
        }
    }

    /// The same settings, without the pool (a version whose config
    /// changed: its instances must see the new config).
    pub(crate) fn fresh(&self) -> ReusePool {
        ReusePool::new(self.settings)
    }
}

/// What a request learns of the worker that takes it: the instance's log
/// capture, and how the instance ended should it fail under the request.
#[derive(Default)]
pub(crate) struct Ticket {
    log: OnceLock<LogCapture>,
    fate: OnceLock<watch::Receiver<Option<Failure>>>,
}

type LogSlot = Arc<Ticket>;

/// How the pool builds instances of one version.
pub(crate) struct Pool {
    /// The version (without its pool: no cycle).
    target: Deployed,
    pre: ServicePre<InvocationState>,
    settings: Reuse,
    stores: StoreSettings,
    logs: LogSink,
    instantiation: Histogram,
    /// Numbers instances across the version's pools (log ids).
    next_instance: Arc<AtomicU64>,
}

impl HandlerState for Pool {
    type StoreData = InvocationState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<InvocationState, Expiry, Worker>> {
        let t = Instant::now();
        // The store's own deadline is far away: each request has its own
        // ([`Worker::on_request_start`], [`Expiry`]). Epoch ticks still
        // yield, so a stuck guest gives the worker a chance to expire it.
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut store = self
            .stores
            .store(self.pre.instance_pre().engine(), &self.target, far);
        let log = store.data().log.clone();
        let service = self.pre.instantiate_async(&mut store).await?;
        self.instantiation.record(t.elapsed().as_secs_f64());
        let (min, max) = (self.settings.min, self.settings.max);
        let uses = if min == max {
            min
        } else {
            rand::random_range(min..=max)
        };
        let timeout = self.target.limits.timeout();
        let expired = Arc::new(AtomicBool::new(false));
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <InvocationState as WasiHttpView>::http,
            expiration: Expiry {
                idle: Duration::from_millis(self.settings.idle_timeout_ms),
                timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX / 4)),
                expired: expired.clone(),
            },
            state: Worker {
                uses: uses as usize,
                concurrency: self.settings.concurrency as usize,
                timeout,
                instance: self.next_instance.fetch_add(1, Ordering::Relaxed),
                log,
                logs: self.logs.clone(),
                function: self.target.name_arc.clone(),
                fate: watch::Sender::new(None),
                expired,
            },
        })
    }
}

/// One instance's worker: how many requests it takes, and its end.
pub(crate) struct Worker {
    /// Requests it serves in all before it retires.
    uses: usize,
    /// Requests it serves at once.
    concurrency: usize,
    /// Each request's deadline.
    timeout: Duration,
    /// A number for its leftover log lines.
    instance: u64,
    log: LogCapture,
    logs: LogSink,
    function: Arc<str>,
    /// How the instance ended, if it failed: told to the requests that
    /// were on it (they see only that their worker went away).
    fate: watch::Sender<Option<Failure>>,
    /// Set when [`Expiry`] ended the instance while it was busy: past a
    /// request's deadline.
    expired: Arc<AtomicBool>,
}

impl WorkerState for Worker {
    type StoreData = InvocationState;
    type RequestData = LogSlot;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.uses {
            ShouldAccept::Never
        } else if concurrent >= self.concurrency {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, InvocationState>,
        ticket: LogSlot,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let _ = ticket.log.set(self.log.clone());
        let _ = ticket.fate.set(self.fate.subscribe());
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, store: wasmtime::Store<InvocationState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            let failure = if self.expired.load(Ordering::Relaxed) {
                Failure::Timeout
            } else {
                classify(e)
            };
            self.fate.send_replace(Some(failure));
        }
        // The instance goes first, then what it wrote after the last
        // request was answered.
        drop(store);
        let left = self.log.finish();
        if !left.lines.is_empty() || !left.warnings.is_empty() {
            let id = format!("instance-{}", self.instance);
            self.logs.send(&self.function, &id, left);
        }
    }
}

/// When an instance must go: idle past its idle timeout, or busy (with a
/// request, or with work after its last response) past the deadline, which
/// a guest stuck in a loop inside its event loop cannot otherwise be held to.
pub(crate) struct Expiry {
    idle: Duration,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let limit = match status {
            WorkerStatus::Idle => this.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.timeout,
        };
        let at = tokio::time::Instant::from_std(start + limit);
        if tokio::time::Instant::now() >= at {
            if status != WorkerStatus::Idle {
                this.expired.store(true, Ordering::Relaxed);
            }
            return Poll::Ready(());
        }
        if this.sleep.deadline() != at {
            this.sleep.as_mut().reset(at);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl Invoker {
    /// Runs one request on a reused instance of `target` (from its pool,
    /// started on first use).
    pub(super) async fn run_reused(
        &self,
        target: &Arc<Deployed>,
        pre: &ServicePre<InvocationState>,
        reuse: &ReusePool,
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
        // A queued request waits for its slot here; the wait is not counted
        // against its deadline.
        let (slot, waited) = match slot.ready().await {
            Ok(ready) => ready,
            Err(refusal) => return refused(refusal).response(target, id),
        };
        let start = start + waited;
        let pool = reuse.pools[THREAD_POOL.with(|i| *i)].get_or_init(|| {
            ProxyHandler::new(Pool {
                target: Deployed {
                    reuse: None,
                    ..Deployed::clone(target)
                },
                pre: pre.clone(),
                settings: reuse.settings,
                stores: self.store_settings(),
                logs: self.logs.clone(),
                instantiation: self.metrics.instantiation.clone(),
                next_instance: reuse.instances.clone(),
            })
        });
        let timeout = target.limits.timeout();
        let ticket: LogSlot = Arc::default();
        self.metrics.in_flight.increment(1.0);
        let in_flight = InFlight(self.metrics.in_flight.clone());
        // The worker enforces the deadline; this is the backstop should it
        // not answer at all.
        let handled = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            pool.handle(ticket.clone(), request.map(|b| b.boxed_unsync())),
        )
        .await;
        if let Some(capture) = ticket.log.get() {
            self.logs.send(&target.name_arc, id, capture.finish());
        }
        let late = start.elapsed() >= timeout;
        match handled {
            Ok(Ok(resp)) => {
                let mut resp = resp.map(|body| {
                    Body::new(HeldBody {
                        inner: body,
                        _slot: slot,
                        _in_flight: in_flight,
                    })
                });
                super::tag_invocation(&mut resp, id);
                // Not primed (`prime.rs`): the worker has usually written
                // the body by the time the response is here (one write per
                // response measured without it; priming cost ~1 µs more).
                resp
            }
            Ok(Err(e)) => {
                let failure = if body_exceeded.load(Ordering::Relaxed) {
                    Failure::BodyTooLarge
                } else if e.is::<TrapOrPanicError>() {
                    // The worker says how its instance ended as it drops
                    // it, just after this request saw it go.
                    match instance_fate(&ticket).await {
                        Some(failure) => failure,
                        None => failure_of(e, late),
                    }
                } else {
                    failure_of(e, late)
                };
                failure.response(target, id)
            }
            Err(_) => Failure::Timeout.response(target, id),
        }
    }
}

/// How the instance that had `ticket`'s request ended, if it failed and
/// says so soon.
async fn instance_fate(ticket: &Ticket) -> Option<Failure> {
    let mut fate = ticket.fate.get()?.clone();
    let _ = tokio::time::timeout(Duration::from_millis(100), fate.wait_for(Option::is_some)).await;
    fate.borrow().clone()
}

/// What a pooled request's error answers.
fn failure_of(e: wasmtime::Error, late: bool) -> Failure {
    if e.is::<ExpirationError>() {
        return Failure::Timeout;
    }
    if e.is::<TrapOrPanicError>() {
        // Its instance went down: stuck past the deadline (this request's,
        // if it is late), or another request on it trapped.
        return if late {
            Failure::Timeout
        } else {
            Failure::Trap(
                "the instance serving this request failed (a request on it trapped or hit a \
                 limit)"
                    .into(),
            )
        };
    }
    if let Some(i) = e.downcast_ref::<InstantiationError<LogSlot>>() {
        return Failure::Trap(format!("instantiation failed: {:#}", i.error));
    }
    match e.downcast::<ErrorCode>() {
        Ok(code) => Failure::GuestError(format!("{code:?}")),
        Err(e) => classify(e),
    }
}

/// Counts a pooled request in flight until its response body is done.
struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A pooled request's response body, holding its slot until it is done.
struct HeldBody {
    inner: WasiBody,
    _slot: Held,
    _in_flight: InFlight,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
