//! Edge builds: what an edge device needs of a `wisp` binary, run against
//! the binary named by `WISP_EDGE_BIN` (scripts/test-edge.sh: the aarch64
//! build under `qemu-aarch64`, the static musl build natively), or this
//! build's own `wisp` when it is not set.
//!
//! The host serves the SDK's `hello`, a WASI 0.2 component and a preview-1
//! module; a tight loop is cut at its deadline and a memory bomb at its cap;
//! restarted, it serves again without compiling anything.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admission::spawn_get;
use crate::harness::*;

/// The binary under test and what it is called in failures.
fn edge_binary() -> (PathBuf, String) {
    match std::env::var_os("WISP_EDGE_BIN") {
        Some(p) => {
            let path = PathBuf::from(p);
            assert!(
                path.exists(),
                "WISP_EDGE_BIN={} does not exist (scripts/test-edge.sh builds it)",
                path.display()
            );
            let name =
                std::env::var("WISP_EDGE_NAME").unwrap_or_else(|_| path.display().to_string());
            (path, name)
        }
        None => (
            PathBuf::from(env!("CARGO_BIN_EXE_wisp")),
            "this build".to_string(),
        ),
    }
}

#[test]
fn an_edge_build_serves_components_and_modules_within_their_limits() {
    let (bin, name) = edge_binary();
    let opts = Opts::default().binary(bin);
    let mut w = Wisp::start_with(opts.clone());
    let a = w.admin();
    // Under qemu-user (scripts/test-edge.sh says so) the pool's address
    // space would cost real memory: the host says once that it allocates
    // on demand instead.
    let fallback = "falling back to on-demand instance allocation";
    let emulated = std::env::var_os("WISP_EDGE_EMULATED").is_some();
    let log = w.log_text();
    assert_eq!(
        log.matches(fallback).count(),
        usize::from(emulated),
        "{name}: {log}"
    );

    a.deploy_guest("hello", "hello", &["/hello"]);
    let r = w.get("/hello");
    assert_eq!(r.status(), 200, "{name}");
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello", "{name}");

    a.deploy_guest("todo-api", "todo-api", &["/todos", "/todos/*"]);
    let r = client()
        .post(format!("{}/todos", w.data_url))
        .json(&serde_json::json!({"title": "flash the board"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{name}");
    let todos: Value = w.get("/todos").json().unwrap();
    assert_eq!(todos[0]["title"], "flash the board", "{name}: {todos}");

    let cgi = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let r = a.deploy("cgi", &cgi, &[("route", "/cgi/*")]);
    assert_eq!(r.status(), 201, "{name}: {}", r.text().unwrap());
    let r = w.get("/cgi/items/7?color=red");
    assert_eq!(r.status(), 200, "{name}");
    assert_eq!(r.headers()["x-powered-by"], "wasm32-wasip1", "{name}");
    let j: Value = r.json().unwrap();
    assert_eq!(j["path_info"], "/items/7", "{name}: {j}");

    let misbehave = std::fs::read(guest("misbehave")).unwrap();
    let r = a.deploy(
        "m",
        &misbehave,
        &[
            ("route", "/m/*"),
            ("timeout_ms", "1000"),
            ("memory_bytes", &(32u64 << 20).to_string()),
        ],
    );
    assert_eq!(r.status(), 201, "{name}: {}", r.text().unwrap());
    let start = Instant::now();
    assert_error(w.get("/m/loop"), 504, "timeout");
    let took = start.elapsed();
    assert!(
        // Emulated, a request takes longer: room for that, far below the
        // loop's own length.
        took >= Duration::from_millis(1000) && took < Duration::from_millis(5000),
        "{name}: the loop was cut after {took:?}"
    );
    assert_error(w.get("/m/bomb"), 500, "memory_limit");
    assert_eq!(w.get("/m/ok").text().unwrap(), "ok", "{name}");
    let compiled = w.metric("wisp_compiles_total");
    assert!(compiled >= 4.0, "{name}: {compiled} compiles");

    // Restarted on the same data directory: everything answers, and
    // nothing was compiled again.
    assert_eq!(w.terminate().code(), Some(0), "{name}");
    let w2 = w.restart_on(opts);
    assert_eq!(w2.get("/hello").status(), 200, "{name}");
    let todos: Value = w2.get("/todos").json().unwrap();
    assert_eq!(todos[0]["title"], "flash the board", "{name}: {todos}");
    assert_eq!(w2.get("/cgi/x").status(), 200, "{name}");
    assert_eq!(w2.get("/m/ok").text().unwrap(), "ok", "{name}");
    assert_eq!(w2.metric("wisp_compiles_total"), 0.0, "{name}");
}

/// Where the pooling allocator cannot reserve its address space (here an
/// address-space limit, as under some emulators and 39-bit kernels), the
/// edge build says so once and serves with on-demand allocation.
#[cfg(target_os = "linux")]
#[test]
fn an_edge_build_without_room_for_the_pool_allocates_on_demand() {
    let (bin, name) = edge_binary();
    // 32 GiB: room for a few on-demand instances, far from the pool's.
    let w = Wisp::start_with(Opts::default().binary(bin).address_space_kib(32 << 20));
    let log = w.log_text();
    assert_eq!(
        log.matches("falling back to on-demand instance allocation")
            .count(),
        1,
        "{name}: {log}"
    );
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.get("/hello").status(), 200, "{name}");
    let cgi = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let r = w.admin().deploy("cgi", &cgi, &[("route", "/cgi/*")]);
    assert_eq!(r.status(), 201, "{name}: {}", r.text().unwrap());
    assert_eq!(w.get("/cgi/x").status(), 200, "{name}");
}

/// `--small` sizes the host for a 512 MiB device: among others, 64
/// invocations at once, so a function's share is 32; options given
/// explicitly still apply.
#[test]
fn small_sizes_the_host_for_a_small_device_and_explicit_options_still_apply() {
    let (bin, name) = edge_binary();
    let w = Wisp::start_with(Opts::default().binary(bin.clone()).arg("--small"));
    let capacity = capacity_line(&w, &name);
    for part in [
        "small=true",
        "max_in_flight=64",
        "max_connections=1024",
        "store_cache=4.0 MiB",
        "pool_keep_resident=128.0 KiB",
    ] {
        assert!(capacity.contains(part), "{name}: {part} not in {capacity}");
    }
    let misbehave = std::fs::read(guest("misbehave")).unwrap();
    let r = w.admin().deploy("m", &misbehave, &[("route", "/m/*")]);
    assert_eq!(r.status(), 201, "{name}: {}", r.text().unwrap());
    assert_eq!(w.get("/m/ok").status(), 200, "{name}");
    // 40 slow requests at once: the function's share (half of 64) runs,
    // the rest are refused at once.
    let threads: Vec<_> = (0..40).map(|_| spawn_get(&w, "/m/sleep?ms=3000")).collect();
    let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap().0).collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        32,
        "{name}: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{name}: {statuses:?}"
    );

    // The same through the environment, as a service unit sets it.
    let w2 = Wisp::start_with(
        Opts::default()
            .binary(bin)
            .env("WISP_SMALL", "1")
            .arg("--max-in-flight")
            .arg("100"),
    );
    let capacity = capacity_line(&w2, &name);
    assert!(
        capacity.contains("small=true")
            && capacity.contains("max_in_flight=100")
            && capacity.contains("store_cache=4.0 MiB"),
        "{name}: {capacity}"
    );
}

/// The host's "capacity" line at start (the sizes it runs with).
fn capacity_line(w: &Wisp, name: &str) -> String {
    let log = w.log_text();
    log.lines()
        .find(|l| l.contains("capacity"))
        .unwrap_or_else(|| panic!("{name}: no capacity line in\n{log}"))
        .to_string()
}
