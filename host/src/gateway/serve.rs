//! Serving both planes on already-bound listeners until a shutdown signal,
//! then draining in-flight requests and event deliveries and flushing the
//! store.
//!
//! Connections are served on threads of their own, each with a
//! single-threaded tokio runtime; the caller's runtime accepts them (data
//! plane and admin API) and hands each to the thread serving the fewest. A
//! connection, its requests and the invocations they start then stay on one
//! thread: no work stealing, no cross-thread wake-ups per request. Event
//! deliveries are spread over the same threads. On this project's 2-CPU
//! machine that cut the server CPU per request by about a third against one
//! multi-thread runtime for everything (benches/RESULTS.md). The event
//! dispatcher, the store's group commit and the sweeps stay on the caller's
//! runtime and its blocking pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

use super::Gateway;
use super::connection::{
    ConnService, CountingIo, Listener, Plane, PlaneKind, Registered, watchdog,
};
use super::tls::Tls;
use crate::config::{ConnectionLimits, HostConfig};

/// The sockets a host serves on. Bind them first (port 0 in tests) so the
/// caller knows the addresses before serving starts.
pub struct Listeners {
    /// Data plane.
    pub data: TcpListener,
    /// Admin plane; `None` serves no admin API (an embedding application
    /// may nest [`Host::admin_router`](crate::Host::admin_router) itself).
    pub admin: Option<TcpListener>,
    /// TLS on the data plane (HTTPS, HTTP/2 by ALPN); `None`: plain HTTP.
    pub data_tls: Option<Arc<Tls>>,
    /// TLS on the admin plane.
    pub admin_tls: Option<Arc<Tls>>,
}

/// What the serving threads need of a host: the data plane, the
/// configuration, where to register their runtimes (event deliveries run
/// on them), and how to build the admin router (on first use).
pub(crate) struct ServeParts<'a> {
    pub(crate) gateway: Gateway,
    pub(crate) config: Arc<HostConfig>,
    pub(crate) runtimes: &'a ServingRuntimes,
    pub(crate) admin: Arc<dyn Fn() -> axum::Router + Send + Sync>,
}

/// Accepted connections waiting for their thread, per thread. Accepting
/// waits while they are all taken: back-pressure to the listen backlog, not
/// a queue in memory.
const HANDOFF_QUEUE: usize = 64;

/// The runtimes of the serving threads, for work that should run beside
/// the requests (event deliveries), taken in turn.
#[derive(Default)]
pub(crate) struct ServingRuntimes {
    threads: RwLock<Vec<ServingRuntime>>,
    next: AtomicUsize,
}

/// One serving thread's runtime, and the tracker of the tasks it must let
/// finish before it stops.
#[derive(Clone)]
pub(crate) struct ServingRuntime {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) tracker: TaskTracker,
}

impl ServingRuntimes {
    /// The next serving thread's runtime; `None` while the host is not
    /// serving (a library user driving the host itself). Spawn on it with
    /// its tracker (`tracker.track_future`), so the thread waits for the
    /// task when the host stops.
    pub(crate) fn next(&self) -> Option<ServingRuntime> {
        let threads = self.threads.read().unwrap_or_else(|e| e.into_inner());
        if threads.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % threads.len();
        Some(threads[i].clone())
    }

    fn set(&self, threads: Vec<ServingRuntime>) {
        *self.threads.write().unwrap_or_else(|e| e.into_inner()) = threads;
    }
}

/// An accepted connection on its way to a serving thread, counted by its
/// listener.
struct Handoff {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    registered: Registered,
    listener: Arc<Listener>,
}

/// The serving threads and the tasks accepting for them.
pub(crate) struct Serving {
    acceptors: Vec<tokio::task::JoinHandle<()>>,
    /// One per thread: resolves once the thread's connections are closed
    /// and the invocations they started have finished.
    done: Vec<oneshot::Receiver<()>>,
}

/// What the acceptor knows of one serving thread.
struct Worker {
    connections: Arc<AtomicUsize>,
    handoff: mpsc::Sender<Handoff>,
}

impl Serving {
    /// Starts the serving threads and the acceptors; they stop when `stop`
    /// turns true.
    pub(crate) fn start(
        parts: ServeParts<'_>,
        listeners: Listeners,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let config = parts.config;
        let threads = match config.serve_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(threads);
        let mut done = Vec::with_capacity(threads);
        let mut runtimes = Vec::with_capacity(threads);
        let admin = Arc::new(OnceLock::new());
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (handoff, incoming) = mpsc::channel(HANDOFF_QUEUE);
            let (finished, finished_rx) = oneshot::channel();
            let connections = Arc::new(AtomicUsize::new(0));
            let tracker = TaskTracker::new();
            runtimes.push(ServingRuntime {
                handle: runtime.handle().clone(),
                tracker: tracker.clone(),
            });
            let (gateway, config, admin_build) =
                (parts.gateway.clone(), config.clone(), parts.admin.clone());
            let (stop, count) = (stop.clone(), connections.clone());
            let admin = admin.clone();
            std::thread::Builder::new()
                .name(format!("wisp-serve-{i}"))
                .spawn(move || {
                    crate::invocation::task::track_on_this_thread(tracker.clone());
                    let admin = AdminRouter {
                        build: admin_build,
                        built: admin,
                    };
                    let thread =
                        serve_thread(gateway, config, admin, incoming, count, stop, tracker);
                    runtime.block_on(thread);
                    let _ = finished.send(());
                })?;
            workers.push(Worker {
                connections,
                handoff,
            });
            done.push(finished_rx);
        }
        parts.runtimes.set(runtimes);
        let workers = Arc::new(workers);
        let data = Listener::new(
            PlaneKind::Data,
            config.data_connections,
            listeners.data_tls.clone(),
        );
        let mut acceptors = vec![tokio::spawn(accept(
            listeners.data,
            data,
            workers.clone(),
            stop.clone(),
        ))];
        if let Some(admin) = listeners.admin {
            let listener = Listener::new(
                PlaneKind::Admin,
                config.admin_connections,
                listeners.admin_tls.clone(),
            );
            acceptors.push(tokio::spawn(accept(admin, listener, workers, stop.clone())));
        }
        // Certificates renewed on disk are picked up while serving.
        for tls in [listeners.data_tls, listeners.admin_tls]
            .into_iter()
            .flatten()
        {
            acceptors.push(tokio::spawn(tls.watch(stop.clone())));
        }
        Ok(Serving { acceptors, done })
    }

    /// Waits until accepting has stopped and every thread has drained.
    pub(crate) async fn stopped(self, runtimes: &ServingRuntimes) {
        for a in self.acceptors {
            let _ = a.await;
        }
        for d in self.done {
            let _ = d.await;
        }
        runtimes.set(Vec::new());
    }
}

/// Accepts until `stop`, handing each connection to the thread serving the
/// fewest. Past the listener's connection cap a connection is closed at
/// once (after the listener has made room if it could): accepting and
/// closing keeps the descriptors bounded, where not accepting would leave
/// the kernel's backlog full and every client waiting.
async fn accept(
    socket: TcpListener,
    listener: Arc<Listener>,
    workers: Arc<Vec<Worker>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut refused_logged: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            // The peer gave up before we got to it: nothing to serve.
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors and the like: wait rather than spin.
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A response leaves in more than one write (the head, then the
        // streamed body); with Nagle's algorithm a write waits for the ACK
        // of the one before, which the client may delay by up to 40 ms: a
        // one-connection client saw a 40 ms p99 without this.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY failed");
        }
        let Some(registered) = listener.admit() else {
            // At most one line a minute: a flood must not flood the log.
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                refused_logged = Some(tokio::time::Instant::now());
                tracing::warn!(
                    listener = ?listener.kind,
                    max_connections = listener.limits.max_connections,
                    "connection limit reached with every connection busy: refusing new \
                     connections (counted in wisp_connections_refused_total)"
                );
            }
            drop(stream);
            continue;
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection over; dropped");
                continue;
            }
        };
        let Some(worker) = workers
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.connections.fetch_add(1, Ordering::Relaxed);
        let handoff = Handoff {
            stream,
            remote,
            registered,
            listener: listener.clone(),
        };
        tokio::select! {
            sent = worker.handoff.send(handoff) => {
                if sent.is_err() {
                    return; // the thread is gone: shutting down
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// hyper's settings for one listener: HTTP/1.1 and HTTP/2 by the connection
/// preface, as `axum::serve` does, with the listener's head limits.
fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // HTTP/1.1: the head must fit in the read buffer (431 otherwise), so the
    // buffer's size is the head limit; it also bounds what one connection
    // buffers of a body the function has not read yet.
    b.http1()
        .max_headers(limits.max_headers as usize)
        .max_buf_size((limits.max_header_bytes as usize).max(MIN_H1_BUFFER));
    // HTTP/2: the same head limit; streams per connection bounded (each
    // can take an invocation slot), as are reset floods.
    b.http2()
        .max_header_list_size(limits.max_header_bytes)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_STREAMS as usize);
    b
}

/// hyper's smallest HTTP/1.1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// Requests one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The admin router: how to build it, and the one built (shared by the
/// serving threads).
struct AdminRouter {
    build: Arc<dyn Fn() -> axum::Router + Send + Sync>,
    built: Arc<OnceLock<axum::Router>>,
}

/// One serving thread: serves the connections handed to it until `stop`,
/// then lets them finish their requests, and waits for the invocations
/// they started (their store teardown and log lines) and the event
/// deliveries it was given.
async fn serve_thread(
    gateway: Gateway,
    config: Arc<HostConfig>,
    admin: AdminRouter,
    mut incoming: mpsc::Receiver<Handoff>,
    connections: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let graceful = GracefulShutdown::new();
    let data_builder = builder(&config.data_connections);
    let admin_builder = builder(&config.admin_connections);
    // The admin router, built on the first admin connection (of any
    // thread) and shared: building it (its OpenAPI document above all)
    // runs and frees a megabyte or so that a host nobody administers
    // never needs resident; what it freed goes back at once.
    let admin_router = || {
        admin
            .built
            .get_or_init(|| {
                let router = (admin.build)();
                (config.release_memory)();
                router
            })
            .clone()
    };
    let serve = |handoff: Handoff| {
        let Handoff {
            stream,
            remote,
            registered,
            listener,
        } = handoff;
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                connections.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot serve a connection; dropped");
                return;
            }
        };
        let conn = registered.state.clone();
        let io = CountingIo::new(stream, conn.clone());
        let (plane, builder) = match listener.kind {
            PlaneKind::Data => (Plane::Data(gateway.clone()), data_builder.clone()),
            PlaneKind::Admin => (Plane::Admin(admin_router()), admin_builder.clone()),
        };
        let service = ConnService {
            plane,
            remote,
            conn,
            limits: listener.limits,
            tls: listener.tls.is_some(),
        };
        let acceptor = listener.tls.as_ref().map(|t| t.acceptor());
        let watcher = graceful.watcher();
        // The handshake (TLS) is part of the connection: the watchdog
        // bounds it like a request head, and a client that never finishes
        // it holds nothing longer than one that never sends a request.
        let served = async move {
            let io = match acceptor {
                Some(acceptor) => Either::Right(acceptor.accept(io).await.map_err(|e| {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    e
                })?),
                None => Either::Left(io),
            };
            watcher
                .watch(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned(),
                )
                .await
                .map_err(std::io::Error::other)
        };
        let connections = connections.clone();
        tracker.spawn(async move {
            tokio::select! {
                result = served => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                // Dropping the connection closes it (no request is in
                // flight when the watchdog fires).
                closed = watchdog(&listener, &registered.state) => {
                    tracing::debug!(?closed, "connection closed");
                }
            }
            drop(registered);
            connections.fetch_sub(1, Ordering::Relaxed);
        });
    };
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some(c) => serve(c),
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Connections accepted before the stop are served like the others.
    incoming.close();
    while let Ok(c) = incoming.try_recv() {
        serve(c);
    }
    graceful.shutdown().await;
    // The invocations behind the last responses finish too (store
    // teardown, their log lines), and the event deliveries given to this
    // thread.
    tracker.close();
    tracker.wait().await;
}
