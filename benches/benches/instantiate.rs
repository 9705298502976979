//! Per-invocation cost of the hello guest, in process (no sockets):
//!
//! - `invoke/pooling`, `invoke/on-demand`: one request through
//!   [`wisp_host::Host::invoke`] — a fresh `Store` and instance, the
//!   `wasi:http/incoming-handler` call, the response body read — with the
//!   pooling allocator (what `wisp serve` runs) and with on-demand allocation;
//!   `invoke/pooling-current-thread`: the first on a single-threaded runtime,
//!   which shows what cross-thread hand-offs add.
//! - `instantiate/pooling`, `instantiate/on-demand`: instantiation alone,
//!   through the host's hidden `Host::instantiate_only`: the store the host
//!   builds per request, `ProxyPre::instantiate_async`, and dropping the
//!   store (teardown, which returns the slot to the pool, is part of what
//!   every request pays).
//!
//! - `capability/*`: the per-invocation cost a host capability adds, with
//!   the `caps` test guest (tests/guests/caps): `baseline` is a call that
//!   touches no store (`/config/keys`), `kv-get` reads one 100-byte value,
//!   `kv-set` writes one (and waits for the store's flush, as every
//!   acknowledged key-value write does).
//!
//! Unless named otherwise, every iteration runs on a worker of a two-worker
//! multi-threaded tokio runtime, the runtime `wisp serve` runs on.
//!
//! ```text
//! cargo bench -p wisp-benches                            # everything
//! cargo bench -p wisp-benches -- instantiate/ --measurement-time 5
//! ```
//!
//! The hello guest is built with the wasm32-wasip2 target when its `.wasm`
//! is missing (`rustup target add wasm32-wasip2` if that target is not
//! installed).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use wisp_host::{DeployOptions, Host};

/// The host's default bound on invocations in flight, which sizes its pool.
const MAX_IN_FLIGHT: u32 = 1000;

// ---------------------------------------------------------------- the guest

/// The workspace root (benches/..).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// The hello guest, built for wasm32-wasip2 if it is not there yet.
fn hello_wasm() -> Vec<u8> {
    guest_wasm("hello")
}

/// A guest of the workspace, built for wasm32-wasip2 if it is not there yet.
fn guest_wasm(name: &str) -> Vec<u8> {
    let root = workspace_root();
    let wasm = root.join(format!(
        "target/wasm/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    if !wasm.exists() {
        build_guest(&root, name);
    }
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display()))
}

fn build_guest(root: &Path, name: &str) {
    if !wasip2_target_installed() {
        panic!(
            "the hello guest must be built for wasm32-wasip2, and that target is not installed; \
             run `rustup target add wasm32-wasip2` and try again"
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the {name} guest (wasm32-wasip2, release)...");
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            "target/wasm",
            "-p",
            name,
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running cargo to build the hello guest");
    if !out.status.success() {
        panic!(
            "building the {name} guest failed (cargo build --release --target wasm32-wasip2 \
             --target-dir target/wasm -p {name}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Whether the active toolchain has the standard library for wasm32-wasip2.
fn wasip2_target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return true; // cannot tell: let cargo report it
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .exists()
}

// ------------------------------------------------------------ the runtime

/// Two workers, like `wisp serve` on this two-core machine.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// One thread: the cost of an invocation without cross-thread wake-ups and
/// work stealing, for comparison with [`runtime`].
fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

// ------------------------------------------------ (a), (b): Host::invoke

fn hello_request() -> Request<Body> {
    Request::builder()
        .uri("/hello")
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a valid request")
}

/// One request through the host: a fresh instance, the handler, the body.
async fn invoke_once(host: &Host) -> Bytes {
    let resp = host
        .functions()
        .invoke("hello", hello_request())
        .await
        .expect("hello is deployed");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("reading the response body")
        .to_bytes();
    assert!(status.is_success(), "hello answered {status}: {body:?}");
    body
}

fn bench_invoke(c: &mut Criterion) {
    let wasm = Bytes::from(hello_wasm());
    let mut group = c.benchmark_group("invoke");
    let variants = [
        ("pooling", true, runtime()),
        ("on-demand", false, runtime()),
        ("pooling-current-thread", true, current_thread_runtime()),
    ];
    for (label, pooling, rt) in variants {
        let host = rt.block_on(deployed_host(&wasm, pooling));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let host = host.clone();
                on_worker(&rt, async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(invoke_once(&host).await);
                    }
                    start.elapsed()
                })
            })
        });
        // Drop the host (and its reserved pool) before the next one.
        drop(host);
        drop(rt);
    }
    group.finish();
}

/// A host on a temporary store with hello deployed at `/hello`, checked.
async fn deployed_host(wasm: &Bytes, pooling: bool) -> Host {
    let host = Host::builder()
        .temporary()
        .pooling(pooling)
        .max_in_flight(MAX_IN_FLIGHT)
        .build()
        .expect("building the host");
    host.functions()
        .deploy(
            "hello",
            wasm.clone(),
            DeployOptions::default().route("/hello"),
        )
        .await
        .expect("deploying hello");
    let body = invoke_once(&host).await;
    assert!(
        body.starts_with(b"hello from wisp at /hello"),
        "unexpected answer from hello: {body:?}"
    );
    host
}

/// Runs the timed loop as a task on a runtime worker, as a request would.
fn on_worker(rt: &Runtime, timed: impl Future<Output = Duration> + Send + 'static) -> Duration {
    rt.block_on(rt.spawn(timed))
        .expect("the benchmark task panicked")
}

// ------------------------------------------------- (c): instantiation

fn bench_instantiate(c: &mut Criterion) {
    let wasm = Bytes::from(hello_wasm());
    let rt = runtime();
    let mut group = c.benchmark_group("instantiate");
    for (label, pooling) in [("pooling", true), ("on-demand", false)] {
        let host = rt.block_on(deployed_host(&wasm, pooling));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let host = host.clone();
                on_worker(&rt, async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        host.functions()
                            .instantiate_only("hello")
                            .await
                            .expect("instantiating hello");
                    }
                    start.elapsed()
                })
            })
        });
        drop(host);
    }
    group.finish();
}

// ------------------------------------------------ (d): capabilities

/// One request to the caps guest; checks the answer is a 200 without a
/// guest-visible error.
async fn call_caps(host: &Host, method: &str, uri: &str, body: &'static [u8]) -> Bytes {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .body(Body::from(body))
        .expect("a valid request");
    let resp = host
        .functions()
        .invoke("caps", req)
        .await
        .expect("caps is deployed");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("reading the response body")
        .to_bytes();
    assert!(
        status.is_success() && !body.starts_with(b"{\"error\""),
        "caps answered {status}: {body:?}"
    );
    body
}

fn bench_capabilities(c: &mut Criterion) {
    let wasm = Bytes::from(guest_wasm("caps"));
    let rt = runtime();
    let dir = tempfile_dir();
    let host = rt.block_on(async {
        // A store on disk, like `wisp serve`: writes pay a real flush.
        let host = Host::builder()
            .data_dir(dir.join("data"))
            .max_in_flight(MAX_IN_FLIGHT)
            .build()
            .expect("building the host");
        host.functions()
            .deploy("caps", wasm, DeployOptions::default().route("/caps/*"))
            .await
            .expect("deploying caps");
        const VALUE: &[u8] = &[b'v'; 100];
        call_caps(&host, "POST", "/caps/kv/set?key=bench", VALUE).await;
        host
    });
    let mut group = c.benchmark_group("capability");
    let cases: [(&str, &str, &str, &'static [u8]); 3] = [
        ("baseline", "GET", "/caps/config/keys", b""),
        ("kv-get", "GET", "/caps/kv/get?key=bench", b""),
        ("kv-set", "POST", "/caps/kv/set?key=bench", &[b'w'; 100]),
    ];
    for (label, method, uri, body) in cases {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let host = host.clone();
                on_worker(&rt, async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(call_caps(&host, method, uri, body).await);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wisp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    dir
}

fn config() -> Criterion {
    // Modest defaults; the command line (--measurement-time, ...) overrides.
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_invoke, bench_instantiate, bench_capabilities
}
criterion_main!(benches);
