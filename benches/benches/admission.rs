//! What admission costs an uncontended invocation, in process (no sockets):
//!
//! - `admission/admit/*`: one admission check and the release of its slot
//!   (the function's, then the host's), through the host's hidden
//!   `Functions::admission_probe`: `default` for a function that sets
//!   nothing (the host's per-function share, no queue), `concurrency` for
//!   one deployed with `--concurrency 64 --queue 32 --queue-timeout 2s`;
//!   `main-two-semaphores` is what the check was before queues existed
//!   (`try_acquire_owned` on the function's semaphore, then the host's, as
//!   `Invoker::admit` did), measured here as the "before".
//! - `admission/invoke/*`: a whole request to `hello` (as `invoke/pooling`
//!   in the `instantiate` bench), deployed without and with those flags.
//!
//! ```text
//! cargo bench -p wisp-benches --bench admission
//! cargo bench -p wisp-benches --bench admission -- admit/ --measurement-time 5
//! ```
//!
//! The hello guest is built with the wasm32-wasip2 target when its `.wasm`
//! is missing.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use wisp_host::{DeployOptions, Host};

/// The host's default bound on invocations in flight.
const MAX_IN_FLIGHT: u32 = 1000;

/// The hello guest, built for wasm32-wasip2 if it is not there yet.
fn hello_wasm() -> Bytes {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf();
    let wasm = root.join("target/wasm/wasm32-wasip2/release/hello.wasm");
    if !wasm.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args(["--target-dir", "target/wasm", "-p", "hello"])
            .status()
            .expect("running cargo to build the hello guest");
        assert!(
            status.success(),
            "building the hello guest failed (is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`)"
        );
    }
    std::fs::read(&wasm)
        .unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display()))
        .into()
}

/// Two workers, like `wisp serve` on this two-core machine.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// A host with hello deployed as `plain` (no admission settings) and as
/// `limited` (`--concurrency 64 --queue 32 --queue-timeout 2s`).
async fn deployed_host(wasm: Bytes) -> Host {
    let host = Host::builder()
        .temporary()
        .max_in_flight(MAX_IN_FLIGHT)
        .build()
        .expect("building the host");
    let functions = host.functions();
    functions
        .deploy(
            "plain",
            wasm.clone(),
            DeployOptions::default().route("/plain"),
        )
        .await
        .expect("deploying plain");
    let limited = DeployOptions {
        concurrency: Some(64),
        queue: Some(32),
        queue_timeout_ms: Some(2000),
        ..DeployOptions::default().route("/limited")
    };
    let info = functions
        .deploy("limited", wasm, limited)
        .await
        .expect("deploying limited");
    assert_eq!(info.effective_concurrency, 64);
    for name in ["plain", "limited"] {
        invoke_once(&host, name).await;
    }
    host
}

async fn invoke_once(host: &Host, name: &str) -> Bytes {
    let req = Request::builder()
        .uri("/hello")
        .header("host", "localhost")
        .body(Body::empty())
        .expect("a valid request");
    let resp = host
        .functions()
        .invoke(name, req)
        .await
        .expect("the function is deployed");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("reading the response body")
        .to_bytes();
    assert!(status.is_success(), "{name} answered {status}: {body:?}");
    body
}

fn bench_admit(c: &mut Criterion) {
    let rt = runtime();
    let host = rt.block_on(deployed_host(hello_wasm()));
    let mut group = c.benchmark_group("admission/admit");
    // Before queues: the function's share, then the host's, each a
    // semaphore behind an `Arc`, released on drop.
    let function = Arc::new(Semaphore::new((MAX_IN_FLIGHT / 2) as usize));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    group.bench_function("main-two-semaphores", |b| {
        b.iter(|| {
            let f = function.clone().try_acquire_owned().ok();
            let h = in_flight.clone().try_acquire_owned().ok();
            black_box((f, h)).0.is_some()
        })
    });
    for (label, name) in [("default", "plain"), ("concurrency", "limited")] {
        let admit = host
            .functions()
            .admission_probe(name)
            .expect("the function is deployed");
        assert!(admit(), "{name} is not admitted");
        group.bench_function(label, |b| b.iter(|| black_box(admit())));
    }
    group.finish();
}

fn bench_invoke(c: &mut Criterion) {
    let rt = runtime();
    let host = rt.block_on(deployed_host(hello_wasm()));
    let mut group = c.benchmark_group("admission/invoke");
    for (label, name) in [("default", "plain"), ("concurrency", "limited")] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let host = host.clone();
                rt.block_on(rt.spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(invoke_once(&host, name).await);
                    }
                    start.elapsed()
                }))
                .expect("the benchmark task panicked")
            })
        });
    }
    group.finish();
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
    targets = bench_admit, bench_invoke
}
criterion_main!(benches);
