//! The runtime-only build (`cargo build -p wisp-cli --no-default-features
//! --features runtime`: no Cranelift): it serves signed precompiled code
//! (machine code or Pulley bytecode) and refuses plain wasm with a message
//! naming `wisp compile`. It leaves out WASI 0.3 and the SDK `wisp new`
//! writes, and says so when asked for them. scripts/test.sh builds it to
//! target/runtime-only/wisp (or `WISP_RUNTIME_ONLY_BIN`) before the tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::*;

fn runtime_only() -> PathBuf {
    let path = std::env::var_os("WISP_RUNTIME_ONLY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/runtime-only/wisp"));
    assert!(
        path.exists(),
        "no runtime-only build at {} (scripts/test.sh builds it: cargo build -p wisp-cli \
         --no-default-features --features runtime, copied there)",
        path.display()
    );
    path
}

/// This build's `wisp` (with Cranelift) run with `args`; its stdout.
fn full(args: &[&std::ffi::OsStr]) -> String {
    ok(std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(args)
        .output()
        .unwrap())
}

fn cwasm(dir: &Path, key: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    cwasm_of("hello", dir, key, name, extra)
}

/// `wisp compile` (the full build) of the test guest `guest_name`, signed
/// with `key`.
fn cwasm_of(guest_name: &str, dir: &Path, key: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{name}.cwasm"));
    let wasm = guest(guest_name);
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "compile".as_ref(),
        wasm.as_os_str(),
        "--sign".as_ref(),
        key.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    full(&args);
    std::fs::read(out).unwrap()
}

/// A signing key made by the full build in `dir` (`build`, and
/// `build.pub`), and the options of a runtime-only host that trusts it.
fn trusting_a_key(dir: &Path) -> (PathBuf, Opts) {
    let key = dir.join("build");
    full(&["keygen".as_ref(), key.as_os_str()]);
    let public = dir.join("build.pub");
    let opts = Opts::default()
        .binary(runtime_only())
        .arg("--trusted-key")
        .arg(public.to_str().unwrap());
    (key, opts)
}

#[test]
fn the_runtime_only_build_serves_signed_code_and_refuses_plain_wasm() {
    let bin = runtime_only();
    let dir = tempfile::tempdir().unwrap();
    let (key, trusted) = trusting_a_key(dir.path());

    let mut w = Wisp::start_with(trusted.clone());
    let a = w.admin();
    // Plain wasm: nothing to compile it with.
    let m = assert_error(
        a.deploy(
            "plain",
            &std::fs::read(guest("hello")).unwrap(),
            &[("route", "/plain")],
        ),
        400,
        "no_compiler",
    );
    assert!(
        m.contains("wisp compile") && m.contains("runtime-only"),
        "{m}"
    );
    assert!(a.functions().is_empty());
    assert!(compiled_files(&w).is_empty());

    // Signed machine code from a full build of the same version.
    let code = cwasm(dir.path(), &key, "hello", &[]);
    let r = a.deploy("hello", &code, &[("route", "/hello")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(w.get("/hello").text().unwrap(), "hello from wisp at /hello");
    let info: Value = a.get("/v1/functions/hello").json().unwrap();
    assert!(
        info["versions"][0]["precompiled"]["source_sha256"].is_string(),
        "{info}"
    );
    // It compiles nothing, even on the way to restarting.
    w.terminate();
    let w = w.restart_on(trusted);
    assert_eq!(w.get("/hello").status(), 200);

    // `wisp compile` is refused by the runtime-only binary itself.
    let out = std::process::Command::new(&bin)
        .args(["compile", "x.wasm", "--sign", "k"])
        .output()
        .unwrap();
    assert!(fails(out).contains("runtime-only build"));
}

#[test]
fn the_runtime_only_build_runs_pulley_bytecode() {
    let dir = tempfile::tempdir().unwrap();
    let (key, trusted) = trusting_a_key(dir.path());
    let w = Wisp::start_with(trusted.arg("--engine").arg("pulley"));
    let code = cwasm(dir.path(), &key, "hello-pulley", &["--engine", "pulley"]);
    let r = w.admin().deploy("hello", &code, &[("route", "/hello")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(w.get("/hello").text().unwrap(), "hello from wisp at /hello");
    let info: Value = w.admin().get("/v1/functions/hello").json().unwrap();
    assert_eq!(info["engine"], "pulley", "{info}");
    // Machine code is another engine's: refused.
    let native = cwasm(dir.path(), &key, "hello-native", &[]);
    assert_error(
        w.admin().deploy("native", &native, &[("route", "/native")]),
        400,
        "engine_mismatch",
    );
}

#[test]
fn the_runtime_only_build_refuses_wasi_0_3_cluster_mode_and_has_no_sdk_to_write() {
    let bin = runtime_only();
    let dir = tempfile::tempdir().unwrap();
    let (key, trusted) = trusting_a_key(dir.path());
    let w = Wisp::start_with(trusted);
    let a = w.admin();
    // A WASI 0.3 component, compiled and signed by the full build: this
    // build has no WASI 0.3 engine to load it on.
    let code = cwasm_of("p3", dir.path(), &key, "p3", &[]);
    let m = assert_error(
        a.deploy("p3", &code, &[("route", "/p3")]),
        400,
        "unsatisfied_imports",
    );
    assert!(
        m.contains("WASI 0.3") && m.contains("runtime-only") && m.contains("runtime,p3"),
        "{m}"
    );
    assert!(a.functions().is_empty());
    assert!(compiled_files(&w).is_empty());
    // A WASI 0.2 component signed the same way still deploys beside it.
    let hello = cwasm(dir.path(), &key, "hello", &[]);
    let r = a.deploy("hello", &hello, &[("route", "/hello")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(w.get("/hello").text().unwrap(), "hello from wisp at /hello");

    // `wisp new` has no SDK to write: it says what to do instead and
    // writes nothing.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bin)
        .current_dir(home.path())
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .args(["new", "demo"])
        .output()
        .unwrap();
    let m = fails(out);
    assert!(
        m.contains("runtime-only build") && m.contains("--sdk-path"),
        "{m}"
    );
    assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());

    // Cluster mode: refused at start, before anything is opened or served.
    let data = home.path().join("data");
    let out = std::process::Command::new(&bin)
        .env("RUST_LOG", "error")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--cluster",
            "nats://127.0.0.1:4222",
            "--node-name",
            "edge-1",
        ])
        .output()
        .unwrap();
    let m = fails(out);
    assert!(
        m.contains("no cluster mode") && m.contains("runtime,cluster"),
        "{m}"
    );
    assert!(!data.exists());
}
