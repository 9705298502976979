//! Serving both planes on already-bound listeners until a shutdown signal,
//! then draining in-flight requests and event deliveries and flushing the
//! store.
//!
//! The data plane runs on threads of its own, each with a single-threaded
//! tokio runtime; the caller's runtime accepts the connections and hands
//! each to the thread serving the fewest. A connection, its requests and the
//! invocations they start then stay on one thread: no work stealing, no
//! cross-thread wake-ups per request. On this project's 2-CPU machine that
//! cut the server CPU per request by about a third against one multi-thread
//! runtime for everything (benches/RESULTS.md). The admin API and the event
//! plane stay on the caller's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Host;
use crate::gateway::Gateway;

/// The sockets a host serves on. Bind them first (port 0 in tests) so the
/// caller knows the addresses before serving starts.
pub struct Listeners {
    /// Data plane.
    pub data: TcpListener,
    /// Admin plane; `None` serves no admin API (an embedding application
    /// may nest [`Host::admin_router`] itself).
    pub admin: Option<TcpListener>,
}

impl Host {
    /// Serves until `shutdown` resolves; then stops accepting, lets
    /// in-flight requests finish for up to `grace`, and flushes the store.
    ///
    /// The data plane gets [`HostConfig::data_threads`](crate::HostConfig)
    /// threads of its own; the admin API and the event plane run on the
    /// caller's runtime.
    pub async fn serve(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        self.start_events()?;
        let (tx, rx) = watch::channel(false);
        let data = DataPlane::start(self, listeners.data, rx.clone())?;
        let admin = listeners.admin.map(|l| {
            let mut rx = rx.clone();
            let s = axum::serve(l, self.admin_router()).with_graceful_shutdown(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            });
            tokio::spawn(async move { s.await })
        });

        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining in-flight requests"
        );
        let _ = tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            data.stopped().await;
            if let Some(a) = admin {
                let _ = a.await;
            }
        });
        // At the same time: no new event deliveries; running ones get the
        // same grace period (those left stay pending for the next start).
        let (drained, ()) = tokio::join!(drained, self.stop_events(grace));
        if drained.is_err() {
            tracing::warn!("grace period over; dropping the requests still in flight");
        }
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.flush()).await??;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// Accepted connections waiting for their thread, per thread. Accepting
/// waits while they are all taken: back-pressure to the listen backlog, not
/// a queue in memory.
const HANDOFF_QUEUE: usize = 64;

/// The data plane's threads and the task accepting for them.
struct DataPlane {
    acceptor: tokio::task::JoinHandle<()>,
    /// One per thread: resolves once the thread's connections are closed
    /// and the invocations they started have finished.
    done: Vec<oneshot::Receiver<()>>,
}

/// What the acceptor knows of one data-plane thread.
struct Worker {
    connections: Arc<AtomicUsize>,
    handoff: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
}

impl DataPlane {
    fn start(
        host: &Host,
        listener: TcpListener,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let threads = match host.config().data_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(threads);
        let mut done = Vec::with_capacity(threads);
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (handoff, incoming) = mpsc::channel(HANDOFF_QUEUE);
            let (finished, finished_rx) = oneshot::channel();
            let connections = Arc::new(AtomicUsize::new(0));
            let (host, stop, count) = (host.clone(), stop.clone(), connections.clone());
            std::thread::Builder::new()
                .name(format!("wisp-data-{i}"))
                .spawn(move || {
                    runtime.block_on(serve_thread(host, incoming, count, stop));
                    let _ = finished.send(());
                })?;
            workers.push(Worker {
                connections,
                handoff,
            });
            done.push(finished_rx);
        }
        let acceptor = tokio::spawn(accept(listener, workers, stop));
        Ok(DataPlane { acceptor, done })
    }

    /// Waits until accepting has stopped and every thread has drained.
    async fn stopped(self) {
        let _ = self.acceptor.await;
        for d in self.done {
            let _ = d.await;
        }
    }
}

/// Accepts until `stop`, handing each connection to the thread serving the
/// fewest.
async fn accept(listener: TcpListener, workers: Vec<Worker>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            // The peer gave up before we got to it: nothing to serve.
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors and the like: wait rather than spin.
            Err(e) => {
                tracing::error!(error = %e, "accepting a data-plane connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
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
        tokio::select! {
            sent = worker.handoff.send((stream, remote)) => {
                if sent.is_err() {
                    return; // the thread is gone: shutting down
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// One data-plane thread: serves the connections handed to it until
/// `stop`, then lets them finish their requests, and waits for the
/// invocations they started (their store teardown and log lines).
async fn serve_thread(
    host: Host,
    mut incoming: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    connections: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    // What axum::serve uses: HTTP/1.1 and HTTP/2 by the connection preface.
    let builder = auto::Builder::new(TokioExecutor::new());
    let serve = |(stream, remote): (std::net::TcpStream, SocketAddr)| {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                connections.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot serve a connection; dropped");
                return;
            }
        };
        let service = Gateway {
            host: host.clone(),
            remote,
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let connections = connections.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "data-plane connection ended with an error");
            }
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
    // teardown, their log lines).
    let tasks = tokio::runtime::Handle::current().metrics();
    while tasks.num_alive_tasks() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
