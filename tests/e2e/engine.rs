//! `wisp serve --engine pulley`: every kind of function runs on wasmtime's
//! interpreter, under the same limits, and the host says which engine runs.
//! (The core of the suite also runs in this mode: scripts/test.sh runs it
//! again with `WISP_ENGINE=pulley`.)

use crate::harness::*;

fn pulley() -> Opts {
    Opts::default().arg("--engine").arg("pulley")
}

#[test]
fn the_pulley_engine_runs_functions_and_says_so() {
    let mut w = Wisp::start_with(pulley());
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let r = w.get("/hello");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello");
    let info: serde_json::Value = w.admin().get("/v1/functions/hello").json().unwrap();
    assert_eq!(info["engine"], "pulley", "{info}");
    let out = w.cli(&["info", "hello"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("engine          pulley"), "{text}");
    let metrics = w.admin().get("/metrics").text().unwrap();
    assert!(
        metrics.contains("wisp_engine{engine=\"pulley\"} 1"),
        "{metrics}"
    );
    assert_eq!(w.metric("wisp_compiles_total"), 1.0);

    // Restarted in the same mode: the stored code runs, nothing compiles.
    let code = compiled_files(&w);
    w.terminate();
    let mut w = w.restart_on(pulley());
    assert_eq!(w.get("/hello").status(), 200);
    assert_eq!(w.metric("wisp_compiles_total"), 0.0);
    assert_eq!(compiled_files(&w), code);

    // Restarted with machine code: compiled once for it, and served.
    w.terminate();
    let w = w.restart_on(Opts::default().arg("--engine").arg("cranelift"));
    assert_eq!(w.get("/hello").status(), 200);
    assert_eq!(w.metric("wisp_compiles_total"), 1.0);
    let info: serde_json::Value = w.admin().get("/v1/functions/hello").json().unwrap();
    assert_eq!(info["engine"], "cranelift", "{info}");
}

#[test]
fn an_unknown_engine_is_refused_before_the_host_starts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["serve", "--engine", "v8", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'v8' for '--engine"), "{err}");
    assert!(err.contains("cranelift") && err.contains("pulley"), "{err}");
}
