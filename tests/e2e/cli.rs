//! Every CLI command against a real host.

use crate::harness::*;

#[test]
fn deploy_list_info_versions_invoke_rollback_delete() {
    let w = Wisp::start();
    let hello = guest("hello");
    let echo = guest("echo");
    let hello = hello.to_str().unwrap();
    let echo = echo.to_str().unwrap();

    let out = ok(w.cli(&[
        "deploy",
        "app",
        hello,
        "--route",
        "/app",
        "--route",
        "/app2/*",
        "--env",
        "A=1",
        "--timeout",
        "5s",
        "--memory",
        "64MiB",
    ]));
    assert!(out.contains("version 1"), "{out}");
    assert_eq!(
        w.get("/app2/z").text().unwrap(),
        "hello from wisp at /app2/z"
    );

    let out = ok(w.cli(&["list"]));
    assert!(out.contains("app") && out.contains("/app2/*"), "{out}");
    let list: serde_json::Value = serde_json::from_str(&ok(w.cli(&["list", "--json"]))).unwrap();
    assert_eq!(list[0]["name"], "app");
    assert_eq!(list[0]["active_version"], 1);
    // What it is, so a list needs no request per function to say it.
    assert_eq!(list[0]["kind"], "wasi-0.2-component", "{list}");

    let info: serde_json::Value =
        serde_json::from_str(&ok(w.cli(&["info", "app", "--json"]))).unwrap();
    assert_eq!(info["limits"]["timeout_ms"], 5000);
    assert_eq!(info["limits"]["memory_bytes"], 64 << 20);
    assert_eq!(info["env"]["A"], "1");
    let out = ok(w.cli(&["info", "app"]));
    assert!(out.contains("/app2/*") && out.contains("A=1"), "{out}");

    ok(w.cli(&["deploy", "app", echo]));
    let out = ok(w.cli(&["versions", "app"]));
    assert!(
        out.contains('1') && out.contains('2') && out.contains('*'),
        "{out}"
    );
    let versions: serde_json::Value =
        serde_json::from_str(&ok(w.cli(&["versions", "app", "--json"]))).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[1]["active"], true);

    // invoke: method, path, data, @file, -H.
    let out = ok(w.cli(&[
        "invoke",
        "app",
        "--method",
        "PUT",
        "--path",
        "/x?q=1",
        "--data",
        "hi",
        "-H",
        "X-Test: yes",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["body"], "hi");
    assert_eq!(v["headers"]["x-test"][0], "yes");
    let file = w.data_dir.parent().unwrap().join("payload.txt");
    std::fs::write(&file, "from a file").unwrap();
    let out = ok(w.cli(&["invoke", "app", "--data", &format!("@{}", file.display())]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "from a file");

    let out = ok(w.cli(&["rollback", "app"]));
    assert!(out.contains("version 1"), "{out}");
    assert_eq!(w.get("/app").text().unwrap(), "hello from wisp at /app");
    ok(w.cli(&["rollback", "app", "2"]));
    assert_eq!(w.get("/app").status(), 200);
    let v: serde_json::Value = w.get("/app").json().unwrap();
    assert_eq!(v["path"], "/app");

    let out = ok(w.cli(&["delete", "app"]));
    assert!(out.contains("deleted app"), "{out}");
    assert_eq!(ok(w.cli(&["list", "--json"])).trim(), "[]");
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let w = Wisp::start();
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();
    let err = fails(w.cli(&["info", "nope"]));
    assert!(err.contains("not found"), "{err}");
    let err = fails(w.cli(&["deploy", "Bad_Name", hello]));
    assert!(err.contains("invalid function name"), "{err}");
    let err = fails(w.cli(&["deploy", "f", "/does/not/exist.wasm"]));
    assert!(err.contains("/does/not/exist.wasm"), "{err}");
    let not_wasm = w.data_dir.parent().unwrap().join("x.wasm");
    std::fs::write(&not_wasm, "text").unwrap();
    fails(w.cli(&["deploy", "f", not_wasm.to_str().unwrap()]));
    fails(w.cli(&["rollback", "nope"]));
    fails(w.cli(&["delete", "nope"]));
    fails(w.cli(&["deploy", "f", hello, "--env", "NOEQ"]));
    assert_eq!(ok(w.cli(&["list", "--json"])).trim(), "[]");

    // Wrong token, and no host at all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["list"])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", "definitely-not-the-token")
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.contains("token"), "{err}");
    assert!(!err.contains(&w.token));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["list"])
        .env("WISP_ADMIN_URL", "http://127.0.0.1:9")
        .env("WISP_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn token_file_of_a_local_data_directory_is_used() {
    let w = Wisp::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["list", "--json", "--data-dir"])
        .arg(&w.data_dir)
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env_remove("WISP_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(ok(out).trim(), "[]");
}

#[test]
fn serve_refuses_bad_configuration_before_listening() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args([
            "serve",
            "--default-timeout",
            "0s",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeout"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args([
            "serve",
            "--serve-threads",
            "5000",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serving threads must be at most 1024"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["serve", "--default-memory", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
