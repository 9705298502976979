//! The floor of the load benchmark: the smallest host that serves a
//! `wasi:http/proxy` component with a fresh instance per request, with the
//! engine settings `wisp serve` uses (host/src/engine.rs) and nothing else:
//! one engine, one linker (WASI 0.2 + wasi:http), a `ProxyPre` built once,
//! and per request a new `Store`, `instantiate_async` and `call_handle`
//! (the steps of wasmtime-wasi-http's own `p2` doc example). What `wisp serve`
//! costs beyond this is Wisp's own.
//!
//! Build and run (the hello guest as `load.sh` builds it):
//!
//! ```text
//! cargo build --release -p wisp-benches --bin minimal-host
//! cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p hello
//! target/release/minimal-host --listen 127.0.0.1:8082 target/wasm/wasm32-wasip2/release/hello.wasm
//! curl http://127.0.0.1:8082/hello      # hello from wisp at /hello
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

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
    #[arg(long)]
    http_only: bool,
    /// The component (`wasi:http/proxy`).
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

/// The engine of `wisp serve` with its defaults (max_in_flight 1000, 4 GiB
/// memory cap): the same pooling settings, copy-on-write images, epoch
/// interruption, no component-model concurrency.
fn engine() -> wasmtime::Result<Engine> {
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
    c.concurrency_support(false);
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
    let mut store = Store::new(
        pre.engine(),
        Ctx {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = engine().map_err(|e| anyhow::anyhow!("engine: {e:?}"))?;
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
    let pre = (|| -> wasmtime::Result<ProxyPre<Ctx>> {
        let mut linker = Linker::<Ctx>::new(&engine);
        if args.http_only {
            wasmtime_wasi_http::p2::add_to_linker_async(&mut linker)?;
        } else {
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        }
        ProxyPre::new(linker.instantiate_pre(&component)?)
    })()
    .map_err(|e| anyhow::anyhow!("linking: {e:?}"))?;

    let pre = Arc::new(pre);
    if args.workers == 0 {
        // One current-thread runtime per thread, each accepting on its own
        // SO_REUSEPORT listener (wisp serve accepts on one and hands
        // connections over; the serving is the same).
        let n = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let pre = pre.clone();
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
                        serve(listener, pre).await
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
        serve(listener, pre).await
    })
}

async fn serve(listener: tokio::net::TcpListener, pre: Arc<ProxyPre<Ctx>>) -> anyhow::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        // As wisp serve: the body is streamed after the head.
        socket.set_nodelay(true)?;
        let pre = pre.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle((*pre).clone(), req));
            // The same connection builder axum::serve uses (HTTP/1 and 2).
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
