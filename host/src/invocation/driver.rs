//! The one driver of an invocation: whatever kind of function it runs (an
//! HTTP component, an event handler, a preview-1 module run CGI-style), an
//! invocation is admitted (a slot, or a place in a queue to wait for one:
//! [`admission`](super::admission)), gets a fresh `Store`, waits for its
//! slot if it must, runs under its deadline, has its failure classified,
//! its log written and its instance torn down here, in that order. Each
//! kind only says how to instantiate and call its export ([`Call`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::Histogram;
use wasmtime::Store;

use super::Invoker;
pub(crate) use super::admission::Slot;
use super::admission::{Held, Side};
use super::failure::{Failure, classify};
use super::target::Deployed;
pub(crate) use super::task::InvocationEnd;
use super::task::{Lane, LongRunning};
use crate::capabilities::logs::{LogCapture, LogSink};

/// One kind of function's part in an invocation: instantiate and call its
/// export on the invocation's store. The driver does the rest.
pub(crate) trait Call: Send + 'static {
    /// The store's data.
    type State: Bounded + Send + 'static;
    /// What the call gives when it runs to its end.
    type Output: Send + 'static;

    /// Instantiates and calls. `instantiation` records how long
    /// instantiating took.
    fn call<'a>(
        &'a mut self,
        store: &'a mut Store<Self::State>,
        instantiation: &'a Histogram,
    ) -> impl Future<Output = wasmtime::Result<Self::Output>> + Send + 'a;

    /// The note for the invocation's log once the call has ended (the
    /// instance is still there; the log is written next): by default, what
    /// went wrong.
    fn finish(&mut self, result: &Result<Self::Output, Failure>) -> Option<String> {
        result
            .as_ref()
            .err()
            .map(|f| format!("invocation failed: {}", f.describe()))
    }
}

/// A store's data, as the driver bounds it: its deadline moves (an
/// invocation that waited for its slot gets its whole timeout from when it
/// has the slot), and it tells when its guest has run long.
pub(crate) trait Bounded {
    /// Moves the deadline (and whatever is bounded by it) `by` later.
    fn postpone(&mut self, by: Duration);

    /// Set once the guest has run long ([`Lane`]).
    fn long_running(&self) -> LongRunning;
}

impl Invoker {
    /// Admits an invocation of `target`: one of its function's slots, then
    /// one of the host's, taken at once when free; else a place in the
    /// function's (or the host's) queue, waited on when the invocation
    /// starts ([`Invoker::start`]); else the failure that says which bound
    /// was hit (429 `function_busy`, 503 `overloaded`).
    pub(crate) fn admit(&self, target: &Deployed) -> Result<Slot, Failure> {
        let limits = &target.limits;
        super::admission::admit(
            &target.admission,
            &self.in_flight,
            limits.queue,
            limits.queue_timeout(),
        )
        .map_err(refused)
    }

    /// Runs `call` on the invocation's store until it ends or its deadline
    /// passes, then tears the invocation down. A queued invocation first
    /// waits for its slot (its deadline moves by the wait), or ends with
    /// the refusal without running. A guest that runs long finishes on the
    /// long-running lane ([`Lane`]). The future owns everything:
    /// HTTP and CGI spawn it (so the caller answers as soon as the guest
    /// responds, and dropping it cancels the guest), event deliveries await
    /// it.
    pub(crate) fn start<C: Call>(
        &self,
        invocation: Invocation<C::State>,
        target: &Deployed,
        id: &str,
        mut call: C,
    ) -> Lane<Result<C::Output, Failure>> {
        let Invocation {
            mut store,
            slot,
            log,
            deadline,
        } = invocation;
        let sink = self.logs.clone();
        let in_flight = self.metrics.in_flight.clone();
        let function = target.name_arc.clone();
        let id = id.to_string();
        let instantiation = self.metrics.instantiation.clone();
        let long = store.data().long_running();
        let invocation = async move {
            // A queued invocation waits here, holding no slot; dropped
            // (its client went away), it gives its place back.
            let (slot, waited) = slot.ready().await.map_err(refused)?;
            let deadline = if waited.is_zero() {
                deadline
            } else {
                store.data_mut().postpone(waited);
                deadline + waited
            };
            let mut teardown = Teardown::new(in_flight, sink, store, slot, log, function, id);
            let result = {
                let store = teardown.store();
                let ran =
                    tokio::time::timeout_at(deadline.into(), call.call(store, &instantiation));
                match ran.await {
                    Err(_elapsed) => Err(Failure::Timeout),
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(e)) => Err(classify(e)),
                }
            };
            // No yield before the teardown: the connection (same serving
            // thread) sends the response after it, so a client that has its
            // answer finds the slot free and the log line written. (Not so
            // once the invocation moved to the long-running lane: there
            // the connection may send it first.)
            let note = call.finish(&result);
            teardown.finish(note);
            result
        };
        Lane::new(invocation, long)
    }
}

/// The failure an admission's refusal is answered with.
pub(super) fn refused((refusal, side): (super::admission::Refusal, Side)) -> Failure {
    match side {
        Side::Function => Failure::FunctionBusy(refusal),
        Side::Host => Failure::HostBusy(refusal),
    }
}

/// What an invocation runs with: its slot (or its place in a queue), its
/// fresh store, the capture of its output and log lines, and its deadline
/// (moved later by the time it waits for its slot).
pub(crate) struct Invocation<T: 'static> {
    pub(crate) store: Store<T>,
    pub(crate) slot: Slot,
    pub(crate) log: LogCapture,
    pub(crate) deadline: Instant,
}

/// The end of one invocation's instance, whether the guest finishes or the
/// invocation is cancelled (its client went away, and the task was dropped
/// mid-call): the instance goes first, then its log is written, then the
/// slot is freed. In that order, so that a client that has its answer finds
/// the slot free and the log written.
struct Teardown<T: 'static> {
    store: Option<Store<T>>,
    slot: Option<Held>,
    log: LogCapture,
    sink: LogSink,
    function: Arc<str>,
    id: String,
    in_flight: metrics::Gauge,
    ended: bool,
}

impl<T: 'static> Teardown<T> {
    fn new(
        in_flight: metrics::Gauge,
        sink: LogSink,
        store: Store<T>,
        slot: Held,
        log: LogCapture,
        function: Arc<str>,
        id: String,
    ) -> Teardown<T> {
        in_flight.increment(1.0);
        Teardown {
            store: Some(store),
            slot: Some(slot),
            log,
            sink,
            function,
            id,
            in_flight,
            ended: false,
        }
    }

    /// The invocation's store, until the end.
    fn store(&mut self) -> &mut Store<T> {
        self.store.as_mut().expect("the store lives until the end")
    }

    /// The guest has finished: `note` says how, if it failed.
    fn finish(mut self, note: Option<String>) {
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
pub(crate) struct Record<'a> {
    pub(crate) target: &'a Deployed,
    pub(crate) id: &'a str,
    pub(crate) event_id: Option<&'a str>,
    pub(crate) start: Instant,
    pub(crate) status: Option<u16>,
}

/// The status counted for an invocation whose client went away first.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let ended = Instant::now();
        let took = ended.saturating_duration_since(self.start);
        self.target.metrics.record(status, ended, took);
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
/// before the body has ended. Its last frame (or its end) is held until the
/// invocation has ended ([`InvocationEnd`]), for at most
/// [`END_WAIT`]: a guest may keep working after its response, and then its
/// client gets the end of it regardless.
pub(crate) struct CancelOnDrop {
    inner: Body,
    abort: AbortOnDrop,
    end: InvocationEnd,
    /// Bytes the response declared (`Content-Length`) not yet passed: the
    /// frame that passes the last is the last (hyper may not ask again).
    remaining: Option<u64>,
    /// The last frame (`Some`) or the end (`None`), held for the end.
    held: Option<Option<Frame<Bytes>>>,
    /// When the holding gives up.
    give_up: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a response's end waits for its invocation's end.
const END_WAIT: Duration = Duration::from_secs(1);

impl CancelOnDrop {
    /// `inner`, of a response that declared `declared` bytes, if it did.
    pub(crate) fn new(
        inner: Body,
        abort: AbortOnDrop,
        end: InvocationEnd,
        declared: Option<u64>,
    ) -> CancelOnDrop {
        CancelOnDrop {
            inner,
            abort,
            end,
            remaining: declared,
            held: None,
            give_up: None,
        }
    }
}

impl http_body::Body for CancelOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if this.held.is_some() {
                let give_up = this
                    .give_up
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(END_WAIT)));
                if this.end.poll_wait(cx).is_pending() && give_up.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let held = this.held.take().expect("checked");
                if held.is_none() {
                    this.abort.disarm();
                }
                return Poll::Ready(held.map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let mut last = this.inner.is_end_stream();
                    if let (Some(data), Some(left)) = (frame.data_ref(), this.remaining.as_mut()) {
                        *left = left.saturating_sub(data.len() as u64);
                        last |= *left == 0;
                    }
                    if last && this.end.must_wait() {
                        this.held = Some(Some(frame));
                        continue;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    if this.end.must_wait() {
                        this.held = Some(None);
                        continue;
                    }
                    this.abort.disarm();
                    return Poll::Ready(None);
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not while the end is still to be waited for: hyper must ask.
        self.held.is_none() && self.inner.is_end_stream() && !self.end.must_wait()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // hyper may drop a body that says it has ended without polling it
        // to its end; and a body of a declared length once it has sent that
        // many bytes (a WASI 0.3 body says it may still have trailers).
        if http_body::Body::is_end_stream(&self.inner)
            || http_body::Body::size_hint(&self.inner).exact() == Some(0)
            || self.remaining == Some(0)
        {
            self.abort.disarm();
        }
    }
}
