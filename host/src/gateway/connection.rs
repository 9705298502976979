//! What one client connection may cost: how long it may take to send a
//! request head or body, how long it may sit idle, and how many may be open
//! at once on a listener ([`ConnectionLimits`], one set per listener).
//!
//! hyper bounds the size of a request head; everything bounded in *time* is
//! here, because a connection that is slow or silent costs a descriptor, a
//! buffer and possibly an invocation slot for as long as it stays open:
//!
//! - [`Listener`] counts a listener's open connections and, at its cap,
//!   makes room by closing the one that has waited longest for a request
//!   (or refuses the new one when every connection is busy).
//! - [`watchdog`] runs beside each connection and closes it when a request
//!   head takes longer than the header timeout or when it has been idle
//!   longer than the idle timeout. It reads counters that the connection's
//!   socket ([`CountingIo`]) and service ([`ConnService`]) keep, so the
//!   request path pays a few relaxed atomic operations and no timer.
//! - [`TimedBody`] fails a request body that arrives too slowly, so a slow
//!   client cannot hold an invocation slot for longer than that bound.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::Gateway;
use crate::config::ConnectionLimits;
use crate::error::ApiError;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlaneKind {
    /// The public listener: requests to functions.
    Data,
    /// The admin API.
    Admin,
}

impl PlaneKind {
    fn label(self) -> &'static str {
        match self {
            PlaneKind::Data => "data",
            PlaneKind::Admin => "admin",
        }
    }
}

/// `waiting_since` of a connection with a request in flight: never the
/// oldest waiting one.
const BUSY: u64 = u64::MAX;

/// What the request path and the watchdog share about one connection.
pub(crate) struct ConnState {
    /// Bytes read from the socket so far.
    bytes_read: AtomicU64,
    /// `bytes_read` when the last response ended: bytes past it are the
    /// start of the next request head.
    read_at_finish: AtomicU64,
    /// Requests whose response has not ended yet (HTTP/2: several).
    in_flight: AtomicU32,
    /// Responses ended so far.
    finished: AtomicU64,
    /// Since when (ms after the listener's start) the connection has been
    /// waiting for a request, or [`BUSY`]; read by the listener to pick the
    /// connection to close when it is full.
    waiting_since: AtomicU64,
    /// Set (and notified) when the listener closes this connection to make
    /// room.
    evicted: AtomicBool,
    evict: Notify,
}

impl ConnState {
    fn new(waiting_since: u64) -> ConnState {
        ConnState {
            bytes_read: AtomicU64::new(0),
            read_at_finish: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            finished: AtomicU64::new(0),
            waiting_since: AtomicU64::new(waiting_since),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }
}

// ------------------------------------------------------------- listener

/// The open connections of one listener, and its limits.
pub(crate) struct Listener {
    pub(crate) kind: PlaneKind,
    pub(crate) limits: ConnectionLimits,
    /// TLS on this listener's connections; `None`: plain HTTP (HTTP/1.1 and
    /// h2c).
    pub(crate) tls: Option<Arc<super::tls::Tls>>,
    /// `waiting_since` times are milliseconds after this.
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    conns: HashMap<u64, Arc<ConnState>>,
    /// Connections told to close that have not closed yet: they no longer
    /// count against the cap.
    evicting: usize,
    next_id: u64,
}

/// A connection counted by its [`Listener`] until this is dropped.
pub(crate) struct Registered {
    listener: Arc<Listener>,
    id: u64,
    pub(crate) state: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.listener.lock();
        open.conns.remove(&self.id);
        if self.state.evicted.load(Ordering::Relaxed) {
            open.evicting -= 1;
        }
        metrics::gauge!("wisp_connections_open", "plane" => self.listener.kind.label())
            .set(open.conns.len() as f64);
    }
}

impl Listener {
    pub(crate) fn new(
        kind: PlaneKind,
        limits: ConnectionLimits,
        tls: Option<Arc<super::tls::Tls>>,
    ) -> Arc<Listener> {
        Arc::new(Listener {
            kind,
            limits,
            tls,
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Every update leaves the map consistent; ignore poisoning.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a new connection in, or `None` when the listener is full and
    /// no connection is waiting for a request (every one is busy): then the
    /// caller closes the new one. When full, the connection that has waited
    /// longest for a request is told to close, making room.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Registered> {
        let mut open = self.lock();
        let counted = open.conns.len() - open.evicting;
        if counted >= self.limits.max_connections as usize {
            let oldest = open
                .conns
                .values()
                .filter(|c| !c.evicted.load(Ordering::Relaxed))
                .map(|c| (c.waiting_since.load(Ordering::Relaxed), c))
                .filter(|(since, _)| *since != BUSY)
                .min_by_key(|(since, _)| *since)
                .map(|(_, c)| c.clone());
            let Some(oldest) = oldest else {
                metrics::counter!("wisp_connections_refused_total", "plane" => self.kind.label())
                    .increment(1);
                return None;
            };
            oldest.evicted.store(true, Ordering::Relaxed);
            oldest.evict.notify_one();
            open.evicting += 1;
        }
        let id = open.next_id;
        open.next_id += 1;
        let state = Arc::new(ConnState::new(self.now_ms()));
        open.conns.insert(id, state.clone());
        metrics::gauge!("wisp_connections_open", "plane" => self.kind.label())
            .set(open.conns.len() as f64);
        Some(Registered {
            listener: self.clone(),
            id,
            state,
        })
    }

    /// Open connections, the ones being closed included.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().conns.len()
    }
}

// ------------------------------------------------------------- watchdog

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// A request head took longer than the header timeout.
    HeaderTimeout,
    /// No request for longer than the idle timeout.
    Idle,
    /// Closed to make room for a new connection.
    Evicted,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
        }
    }
}

/// How often the watchdog looks at a connection: a fraction of the shorter
/// timeout, so a connection closes within about a quarter of its timeout
/// past it, and at most once a second, so ten thousand idle connections
/// cost ten thousand cheap wake-ups a second.
fn tick(limits: &ConnectionLimits) -> Duration {
    (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Resolves when `conn` should be closed: a request head is slower than the
/// header timeout (a new connection's first head counts from the accept),
/// the connection has had no request for the idle timeout, or the listener
/// needs its place. Never while a request is in flight: request bodies are
/// bounded by [`TimedBody`], responses by the function's deadline.
pub(crate) async fn watchdog(listener: &Listener, conn: &ConnState) -> Closed {
    enum Phase {
        /// No request yet.
        Fresh,
        Busy,
        Waiting {
            since: Instant,
            /// When the first byte of the next head was seen.
            head_at: Option<Instant>,
        },
    }
    let limits = &listener.limits;
    let period = tick(limits);
    let accepted = Instant::now();
    let mut phase = Phase::Fresh;
    let mut seen_finished = 0;
    let closed = loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = conn.evict.notified() => {
                // Picked while waiting; a request may have come in since.
                if conn.in_flight.load(Ordering::Relaxed) == 0 {
                    break Closed::Evicted;
                }
                continue;
            }
        }
        let now = Instant::now();
        if conn.in_flight.load(Ordering::Relaxed) > 0 {
            phase = Phase::Busy;
            conn.waiting_since.store(BUSY, Ordering::Relaxed);
            continue;
        }
        let finished = conn.finished.load(Ordering::Relaxed);
        if matches!(phase, Phase::Busy) || finished != seen_finished {
            seen_finished = finished;
            phase = Phase::Waiting {
                since: now,
                head_at: None,
            };
            conn.waiting_since
                .store(listener.now_ms(), Ordering::Relaxed);
        }
        let deadline = match &mut phase {
            Phase::Fresh => accepted + limits.header_timeout,
            Phase::Waiting { since, head_at } => {
                if head_at.is_none()
                    && conn.bytes_read.load(Ordering::Relaxed)
                        > conn.read_at_finish.load(Ordering::Relaxed)
                {
                    *head_at = Some(now);
                }
                match head_at {
                    Some(at) => *at + limits.header_timeout,
                    None => *since + limits.idle_timeout,
                }
            }
            Phase::Busy => continue,
        };
        if now >= deadline {
            break match phase {
                Phase::Waiting { head_at: None, .. } => Closed::Idle,
                _ => Closed::HeaderTimeout,
            };
        }
    };
    metrics::counter!(
        "wisp_connections_closed_total",
        "plane" => listener.kind.label(),
        "reason" => closed.label()
    )
    .increment(1);
    closed
}

// ------------------------------------------------------------------- io

/// The connection's socket, counting the bytes read for the watchdog.
pub(crate) struct CountingIo<T> {
    inner: T,
    conn: Arc<ConnState>,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, conn: Arc<ConnState>) -> CountingIo<T> {
        CountingIo { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        this.conn.bytes_read.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// -------------------------------------------------------------- service

/// What a connection serves.
#[derive(Clone)]
pub(crate) enum Plane {
    /// Requests to functions, straight to [`Host::handle`]: routing is the
    /// host's own route table; an axum `Router` around a single fallback
    /// only added work to every request (its own matching, a boxed service
    /// cloned per request), which was measurable next to the invocation.
    Data(Gateway),
    /// The admin API.
    Admin(axum::Router),
}

/// One connection's service: counts its requests in flight for the
/// watchdog, bounds each request body in time, answers 408 when a body was
/// too slow, and gives preview-1 functions the peer's address
/// ([`ConnectInfo`], their `REMOTE_ADDR`).
#[derive(Clone)]
pub(crate) struct ConnService {
    pub(crate) plane: Plane,
    pub(crate) remote: SocketAddr,
    pub(crate) conn: Arc<ConnState>,
    pub(crate) limits: ConnectionLimits,
    /// Whether the connection came over TLS: its requests carry
    /// [`Secure`], which guests see as the `https` scheme.
    pub(crate) tls: bool,
}

/// Marks a request that came over TLS (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secure;

/// A request of this connection until its response has ended (or was
/// dropped: the client went away).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(conn: &Arc<ConnState>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        c.read_at_finish
            .store(c.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
        c.finished.fetch_add(1, Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.conn);
        let timed_out = Arc::new(AtomicBool::new(false));
        let mut req = req.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                // Nothing to wait for (GET and the like): no wrapper.
                Body::new(body)
            } else {
                Body::new(TimedBody::new(body, &self.limits, timed_out.clone()))
            }
        });
        req.extensions_mut().insert(ConnectInfo(self.remote));
        if self.tls {
            req.extensions_mut().insert(Secure);
        }
        let plane = self.plane.clone();
        let limits = self.limits;
        Box::pin(async move {
            let resp = match plane {
                Plane::Data(gateway) => gateway.route(req).await,
                Plane::Admin(router) => match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            let resp = if timed_out.load(Ordering::Relaxed) {
                body_timeout_response(&limits)
            } else {
                resp
            };
            Ok(resp.map(|body| {
                Body::new(Finished {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// 408 for a request whose body came too slowly. The rest of it is not
/// read: the connection closes.
fn body_timeout_response(limits: &ConnectionLimits) -> Response<Body> {
    let mut resp = axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body arrived too slowly: after {} s it must keep arriving at {} bytes/s \
             or more",
            limits.body_timeout.as_secs_f64(),
            limits.body_min_rate
        ),
    ));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A response body that marks its request finished when it ends or is
/// dropped (the client went away).
struct Finished {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Finished {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ----------------------------------------------------------------- body

/// The error a too-slow request body fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub(crate) struct BodyTooSlow;

/// A request body that fails once it has taken longer than the body
/// timeout and arrives slower than the minimum rate: by `body_timeout + n /
/// body_min_rate` after the request started, at least `n` bytes must have
/// arrived. The timer exists only while the body waits for the client.
pub(crate) struct TimedBody {
    inner: Incoming,
    start: Instant,
    received: u64,
    grace: Duration,
    min_rate: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl TimedBody {
    fn new(inner: Incoming, limits: &ConnectionLimits, timed_out: Arc<AtomicBool>) -> TimedBody {
        TimedBody {
            inner,
            start: Instant::now(),
            received: 0,
            grace: limits.body_timeout,
            min_rate: limits.body_min_rate.max(1),
            sleep: None,
            timed_out,
        }
    }

    /// When the body fails unless more of it arrives.
    fn deadline(&self) -> Instant {
        let allowed = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        self.start + self.grace + allowed
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline();
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
            }
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

    fn limits(max_connections: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
            ..ConnectionLimits::DATA_DEFAULT
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_full_listener_closes_the_longest_waiting_connection() {
        runtime().block_on(async {
            let l = Listener::new(PlaneKind::Data, limits(2), None);
            let a = l.admit().expect("room");
            tokio::time::sleep(Duration::from_millis(5)).await;
            let b = l.admit().expect("room");
            // Full: `a` has waited longest, so it is told to go.
            let c = l.admit().expect("made room");
            assert!(a.state.evicted.load(Ordering::Relaxed));
            assert!(!b.state.evicted.load(Ordering::Relaxed));
            assert_eq!(l.open(), 3, "a is still closing");
            // `b` and `c` are busy: nothing can be closed, the next is refused.
            for r in [&b, &c] {
                r.state.waiting_since.store(BUSY, Ordering::Relaxed);
            }
            assert!(l.admit().is_none());
            drop(a);
            assert_eq!(l.open(), 2);
            assert!(l.admit().is_none(), "still full of busy connections");
            drop(b);
            assert!(l.admit().is_some());
        });
    }

    #[test]
    fn the_watchdog_bounds_heads_and_idleness_but_never_a_request() {
        runtime().block_on(async {
            let l = Listener::new(PlaneKind::Data, limits(10), None);
            let within = |took: Duration, from: u64, to: u64| {
                assert!(
                    took >= Duration::from_millis(from) && took < Duration::from_millis(to),
                    "{took:?} not in {from}..{to} ms"
                );
            };
            // A new connection that sends nothing (or half a head) closes
            // after the header timeout.
            let r = l.admit().unwrap();
            let t = Instant::now();
            assert_eq!(watchdog(&l, &r.state).await, Closed::HeaderTimeout);
            within(t.elapsed(), 200, 400);

            // A request in flight is never cut; after it, an idle
            // connection closes after the idle timeout...
            let r = l.admit().unwrap();
            let state = r.state.clone();
            let busy = tokio::spawn(async move {
                let f = InFlight::start(&state);
                tokio::time::sleep(Duration::from_millis(1000)).await;
                drop(f);
            });
            let t = Instant::now();
            assert_eq!(watchdog(&l, &r.state).await, Closed::Idle);
            within(t.elapsed(), 1400, 1700);
            busy.await.unwrap();

            // ...unless the next head has started: then the header timeout.
            let r = l.admit().unwrap();
            drop(InFlight::start(&r.state));
            r.state.bytes_read.fetch_add(10, Ordering::Relaxed);
            let t = Instant::now();
            assert_eq!(watchdog(&l, &r.state).await, Closed::HeaderTimeout);
            within(t.elapsed(), 200, 400);

            // Closed to make room.
            let r = l.admit().unwrap();
            r.state.evict.notify_one();
            assert_eq!(watchdog(&l, &r.state).await, Closed::Evicted);
        });
    }
}
