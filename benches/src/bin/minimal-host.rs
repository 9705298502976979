//! The floor of the load benchmark: the smallest host that serves a
//! `wasi:http/proxy` component with a fresh instance per request, with the
//! engine settings `wisp serve` uses (host/src/engine.rs) and nothing else:
//! one engine, one linker (WASI 0.2 + wasi:http), a `ProxyPre` built once,
//! and per request a new `Store`, `instantiate_async` and `call_handle`
//! (the steps of wasmtime-wasi-http's own `p2` doc example). What `wisp serve`
//! costs beyond this is Wisp's own.
//!
//! With `--p3` it serves a `wasi:http/handler@0.3` component the same way,
//! on an engine with component-model concurrency (as Wisp's WASI 0.3
//! engine): per request a new `Store`, `instantiate_async`, and
//! wasmtime-wasi-http's `Prepared` run inside `run_concurrent` until the
//! guest has no task left; the response goes out with its body's first
//! frame when that is ready within 1 ms (as `wisp serve` does, one write per
//! response). With `--p3 --reuse N --reuse-concurrency C` instances are
//! reused through wasmtime-wasi-http's `ProxyHandler` (one per serving
//! thread, as Wisp's pools), N requests per instance, C at once, with no
//! deadline, log capture or admission.
//!
//! Build and run (the hello guest as `load.sh` builds it):
//!
//! ```text
//! cargo build --release -p wisp-benches --bin minimal-host
//! cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p hello
//! target/release/minimal-host --listen 127.0.0.1:8082 target/wasm/wasm32-wasip2/release/hello.wasm
//! curl http://127.0.0.1:8082/hello      # hello from wisp at /hello
//! cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p bench-p3
//! target/release/minimal-host --listen 127.0.0.1:8083 --p3 --reuse 1000 --reuse-concurrency 16 \
//!     target/wasm/wasm32-wasip2/release/bench_p3.wasm
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use wasmtime::component::{Component, GuestTaskId, Linker, ResourceTable};
use wasmtime::{
    AsContextMut as _, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig, Store, StoreContextMut,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Prepared, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration,
    WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// A minimal wasi:http host (the floor of benches/load.sh).
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// Serve on one multi-thread tokio runtime with this many workers
    /// instead of `wisp serve`'s layout (0: one current-thread runtime per
    /// thread, see `--threads`).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// With `--workers 0`: threads, each with a current-thread runtime and a
    /// SO_REUSEPORT listener of its own (default: one per CPU, as `wisp
    /// serve`).
    #[arg(long)]
    threads: Option<usize>,
    /// Link only the interfaces of the wasi:http/proxy world instead of the
    /// whole WASI 0.2 set (what `wisp serve` links).
    #[arg(long, conflicts_with = "p3")]
    http_only: bool,
    /// The component exports `wasi:http/handler@0.3` (WASI 0.3) instead.
    #[arg(long)]
    p3: bool,
    /// With `--p3`: requests one instance serves before it is retired
    /// (0: a fresh instance per request).
    #[arg(long, default_value_t = 0, requires = "p3")]
    reuse: usize,
    /// With `--reuse`: requests one instance serves at once (1 or more).
    #[arg(long, default_value_t = 1, requires = "reuse",
          value_parser = clap::value_parser!(u16).range(1..))]
    reuse_concurrency: u16,
    /// The component (`wasi:http/proxy`, or with `--p3` `wasi:http/handler@0.3`).
    wasm: PathBuf,
}

struct Ctx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        }
    }
}

/// The engine of `wisp serve` with its defaults (max_in_flight 1000, 4 GiB
/// memory cap): the same pooling settings, copy-on-write images, epoch
/// interruption; component-model concurrency only for WASI 0.3 (`p3`), as
/// Wisp's two engines.
fn engine(p3: bool) -> wasmtime::Result<Engine> {
    let instances = 1000u32;
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(instances);
    p.total_core_instances(instances * 8);
    p.total_memories(instances * 2);
    p.total_tables(instances * 4);
    p.total_stacks(instances);
    p.max_memory_size(4 << 30);
    p.table_elements(100_000);
    p.max_core_instance_size(4 << 20);
    p.max_component_instance_size(4 << 20);
    p.max_tables_per_module(4);
    p.max_memories_per_module(2);
    p.linear_memory_keep_resident(1 << 20);
    p.table_keep_resident(64 << 10);
    p.async_stack_keep_resident(1 << 20);
    p.pagemap_scan(Enabled::Auto);
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.memory_init_cow(true);
    c.concurrency_support(p3);
    c.wasm_component_model_async(p3);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    let engine = Engine::new(&c)?;
    // Like wisp: the epoch advances every 10 ms; stores yield on each tick.
    let weak = engine.weak();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(10));
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => break,
            }
        }
    });
    Ok(engine)
}

async fn handle(
    pre: ProxyPre<Ctx>,
    req: hyper::Request<Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let mut store = Store::new(pre.engine(), Ctx::new());
    store.epoch_deadline_async_yield_and_update(1);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task = tokio::task::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    match receiver.await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let e = match task.await {
                Ok(Ok(())) => wasmtime::format_err!("guest never answered"),
                Ok(Err(e)) => e,
                Err(e) => wasmtime::Error::new(e),
            };
            Err(e.context("guest failed"))
        }
    }
}

/// A WASI 0.3 request on a fresh instance: the steps of Wisp's
/// `run_service` without its limits, logs, metrics or admission.
async fn handle_p3(
    pre: ServicePre<Ctx>,
    req: hyper::Request<Incoming>,
) -> wasmtime::Result<hyper::Response<Primed>> {
    let mut store = Store::new(pre.instance_pre().engine(), Ctx::new());
    store.epoch_deadline_async_yield_and_update(1);
    let req = req.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
    let (sender, receiver) = futures::channel::oneshot::channel();
    let task = tokio::task::spawn(async move {
        let service = pre.instantiate_async(&mut store).await?;
        let proxy = Proxy::P3(service);
        let (tx, rx) = futures::channel::oneshot::channel();
        let prepared = Prepared::new(store.as_context_mut(), &proxy, req, Ctx::http, tx)?;
        store
            .run_concurrent(async |accessor| {
                prepared.run(accessor, std::future::pending()).await?;
                let _ = sender.send(rx.await);
                // The guest writes its body after `handle` has returned.
                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                wasmtime::Result::<()>::Ok(())
            })
            .await?
    });
    match receiver.await {
        Ok(Ok(resp)) => Ok(prime(resp?).await),
        // Its answer (or its trap before one) went with the task.
        _ => {
            let e = match task.await {
                Ok(Ok(())) => wasmtime::format_err!("guest never answered"),
                Ok(Err(e)) => e,
                Err(e) => wasmtime::Error::new(e),
            };
            Err(e.context("guest failed"))
        }
    }
}

/// A response whose body's first frame is taken before hyper sees it (when
/// ready within 1 ms), so that head and body go out in one write.
struct Primed {
    first: Option<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>,
    rest: WasiBody,
}

async fn prime(resp: hyper::Response<WasiBody>) -> hyper::Response<Primed> {
    let (parts, mut rest) = resp.into_parts();
    let first = tokio::time::timeout(Duration::from_millis(1), rest.frame())
        .await
        .ok()
        .flatten();
    hyper::Response::from_parts(parts, Primed { first, rest })
}

impl Body for Primed {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self
            .first
            .as_ref()
            .and_then(|f| f.as_ref().ok()?.data_ref())
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(rest.lower().saturating_add(held));
        hint
    }
}

/// The reuse pool's settings: N requests per instance, C at once, no
/// deadline, no idle timeout.
struct Reuse {
    pre: ServicePre<Ctx>,
    counts: Counts,
}

struct Never;

impl WorkerExpiration for Never {
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>, _: WorkerStatus, _: Instant) -> Poll<()> {
        Poll::Pending
    }
}

/// Requests one instance serves in all, and at once.
#[derive(Clone, Copy)]
struct Counts {
    uses: usize,
    concurrency: usize,
}

impl WorkerState for Counts {
    type StoreData = Ctx;
    type RequestData = ();

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
        _: StoreContextMut<'_, Ctx>,
        _: (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, _: Store<Ctx>, _: wasmtime::Result<()>) {}
}

impl HandlerState for Reuse {
    type StoreData = Ctx;
    type WorkerExpiration = Never;
    type WorkerState = Counts;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Ctx, Never, Counts>> {
        let mut store = Store::new(self.pre.instance_pre().engine(), Ctx::new());
        store.epoch_deadline_async_yield_and_update(1);
        let service = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: Ctx::http,
            expiration: Never,
            state: self.counts,
        })
    }
}

/// What serves requests: a pre-instance per mode.
#[derive(Clone)]
enum Host {
    P2(Arc<ProxyPre<Ctx>>),
    P3(ServicePre<Ctx>),
    P3Reuse(ServicePre<Ctx>, Counts),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = engine(args.p3).map_err(|e| anyhow::anyhow!("engine: {e:?}"))?;
    let component = Component::from_file(&engine, &args.wasm)
        .map_err(|e| anyhow::anyhow!("compiling {}: {e:?}", args.wasm.display()))?;
    // What instantiation pays for: one entry per imported interface.
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    println!(
        "minimal-host: {} imports: {}",
        imports.len(),
        imports.join(" ")
    );
    let host = (|| -> wasmtime::Result<Host> {
        let mut linker = Linker::<Ctx>::new(&engine);
        if args.p3 {
            // As Wisp's WASI 0.3 engine: both WASI sets (Rust's std imports
            // wasi:cli 0.2).
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
            let pre = ServicePre::new(linker.instantiate_pre(&component)?)?;
            return Ok(if args.reuse > 0 {
                Host::P3Reuse(
                    pre,
                    Counts {
                        uses: args.reuse,
                        concurrency: args.reuse_concurrency.into(),
                    },
                )
            } else {
                Host::P3(pre)
            });
        }
        if args.http_only {
            wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
        } else {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        }
        Ok(Host::P2(Arc::new(ProxyPre::new(
            linker.instantiate_pre(&component)?,
        )?)))
    })()
    .map_err(|e| anyhow::anyhow!("linking: {e:?}"))?;

    if args.workers == 0 {
        // One current-thread runtime per thread, each accepting on its own
        // SO_REUSEPORT listener (wisp serve accepts on one and hands
        // connections over; the serving is the same).
        let n = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let host = host.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.set_reuseport(true)?;
                        socket.set_reuseaddr(true)?;
                        socket.bind(args.listen)?;
                        let listener = socket.listen(1024)?;
                        serve_host(listener, host).await
                    })
                })
            })
            .collect();
        println!("minimal-host: listening on http://{}", args.listen);
        for t in threads {
            t.join().expect("runtime thread")?;
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!(
            "minimal-host: listening on http://{}",
            listener.local_addr()?
        );
        serve_host(listener, host).await
    })
}

/// Serves `host` on `listener`; a reuse pool is this listener's own (one
/// per serving thread).
async fn serve_host(listener: tokio::net::TcpListener, host: Host) -> anyhow::Result<()> {
    match host {
        Host::P2(pre) => serve(listener, move |req| handle((*pre).clone(), req)).await,
        Host::P3(pre) => serve(listener, move |req| handle_p3(pre.clone(), req)).await,
        Host::P3Reuse(pre, counts) => {
            let pool = ProxyHandler::new(Reuse { pre, counts });
            serve(listener, move |req: hyper::Request<Incoming>| {
                let pool = pool.clone();
                async move {
                    let req =
                        req.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                    pool.handle((), req).await
                }
            })
            .await
        }
    }
}

async fn serve<F, Fut, B>(listener: tokio::net::TcpListener, handler: F) -> anyhow::Result<()>
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = wasmtime::Result<hyper::Response<B>>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (socket, _) = listener.accept().await?;
        // As wisp serve: the body is streamed after the head.
        socket.set_nodelay(true)?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handler);
            // The same connection builder axum::serve uses (HTTP/1 and 2).
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
