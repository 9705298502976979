//! Restarts, crashes and shutdown.

use std::time::Duration;

use crate::harness::*;

#[test]
fn restart_keeps_functions_and_versions_and_does_not_compile() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("hello", "hello", &["/hello", "/hi/*"]);
    a.deploy_guest("echo", "echo", &["/echo"]);
    let before: Vec<serde_json::Value> = a.get("/v1/functions/hello/versions").json().unwrap();
    assert_eq!(w.terminate().code(), Some(0));

    let w2 = w.restart_on(Opts::default());
    assert_eq!(
        w2.get("/hi/there").text().unwrap(),
        "hello from wisp at /hi/there"
    );
    assert_eq!(w2.get("/echo").status(), 200);
    let after: Vec<serde_json::Value> = w2
        .admin()
        .get("/v1/functions/hello/versions")
        .json()
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(w2.admin().functions().len(), 2);
    assert_eq!(
        w2.metric("wisp_compiles_total"),
        0.0,
        "a restart must not recompile"
    );
}

#[test]
fn compiled_code_is_a_file_per_artifact_rebuilt_when_damaged_and_removed_with_its_function() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("echo", "echo", &["/echo"]);
    // A second version with the same artifact shares its compiled code.
    a.deploy_guest("hello", "hello", &["/hello", "/hi/*"]);
    let sha = |name: &str| -> String {
        let v: Vec<serde_json::Value> = a
            .get(&format!("/v1/functions/{name}/versions"))
            .json()
            .unwrap();
        v[0]["sha256"].as_str().unwrap().to_string()
    };
    let (hello, echo) = (sha("hello"), sha("echo"));
    let files = compiled_files(&w);
    assert_eq!(files.len(), 2, "{files:?}");
    let (hello_file, echo_file) = (compiled_file(&w, &hello), compiled_file(&w, &echo));
    assert_eq!(w.terminate().code(), Some(0));

    // Damaged and missing code, and a stray file no artifact owns.
    std::fs::write(&hello_file, b"not compiled code").unwrap();
    std::fs::remove_file(&echo_file).unwrap();
    let stray =
        w.data_dir
            .join("compiled")
            .join(format!("{}-{}.cwasm", "ab".repeat(32), "cd".repeat(8)));
    std::fs::write(&stray, b"stray").unwrap();
    // And the code an older engine build made of a stored artifact.
    let older = w.data_dir.join("compiled").join(format!(
        "{hello}-{}-{}.cwasm",
        "0".repeat(16),
        "1".repeat(16)
    ));
    std::fs::write(&older, b"older engine").unwrap();
    let mut w2 = w.restart_on(Opts::default());
    assert_eq!(w2.get("/hi/x").text().unwrap(), "hello from wisp at /hi/x");
    assert_eq!(w2.get("/echo").status(), 200);
    assert_eq!(
        w2.metric("wisp_compiles_total"),
        2.0,
        "both rebuilt from the artifacts"
    );
    assert!(
        w2.log_text().contains("does not match its checksum"),
        "{}",
        w2.log_text()
    );
    assert!(
        !stray.exists(),
        "a file without an artifact is removed on start"
    );
    assert!(!older.exists(), "another engine's code is removed on start");
    let files = compiled_files(&w2);
    assert_eq!(files.len(), 2, "{files:?}");
    let (hello_file, echo_file) = (compiled_file(&w2, &hello), compiled_file(&w2, &echo));
    assert!(std::fs::read(&hello_file).unwrap().len() > 1000);

    // Rebuilt once: the next restart loads them.
    assert_eq!(w2.terminate().code(), Some(0));
    let w3 = w2.restart_on(Opts::default());
    assert_eq!(w3.metric("wisp_compiles_total"), 0.0);
    assert_eq!(w3.get("/hello").status(), 200);

    // Deleting a function removes its code; the other function keeps its.
    assert_eq!(w3.admin().delete("/v1/functions/echo").status(), 200);
    assert_eq!(compiled_files(&w3).len(), 1);
    assert!(hello_file.exists() && !echo_file.exists());
    assert_eq!(w3.get("/hello").status(), 200);
    assert_eq!(w3.admin().delete("/v1/functions/hello").status(), 200);
    assert!(compiled_files(&w3).is_empty());
}

#[test]
fn kill_9_right_after_an_acknowledged_deploy_keeps_it() {
    for round in 0..3 {
        let mut w = Wisp::start();
        let info = w.admin().deploy_guest("hello", "hello", &["/hello"]);
        assert_eq!(info.active_version, 1);
        // No pause: the deploy was acknowledged, so it must be on disk.
        w.kill9();
        let w2 = w.restart_on(Opts::default());
        assert_eq!(w2.get("/hello").status(), 200, "round {round}");
        assert_eq!(w2.admin().functions().len(), 1);
        // Its compiled code was durable too.
        assert_eq!(w2.metric("wisp_compiles_total"), 0.0, "round {round}");
    }
}

#[test]
fn sigterm_right_after_start_stops_cleanly() {
    // The handlers are installed before the host loads; a signal at once
    // (before the first request) still stops it cleanly, store flushed.
    for _ in 0..3 {
        let mut w = Wisp::start();
        assert_eq!(w.terminate().code(), Some(0), "{}", w.log_text());
        assert!(w.log_text().contains("store flushed"), "{}", w.log_text());
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let mut w = Wisp::start();
    w.admin().deploy_guest("m", "misbehave", &["/m/*"]);
    let url = format!("{}/m/sleep?ms=1000", w.data_url);
    let slow = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = w.terminate();
    assert_eq!(status.code(), Some(0));
    assert_eq!(slow.join().unwrap(), (200, "slept".to_string()));
    assert!(w.log_text().contains("store flushed"));
}

/// Each deployed version keeps its compiled code's file open: `wisp serve`
/// raises a low soft limit on open files to the hard limit.
#[cfg(target_os = "linux")]
#[test]
fn serve_raises_the_soft_open_file_limit_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_wisp"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("WISP_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let comm = format!("/proc/{}/comm", child.id());
    let open_files = || -> Option<(String, String)> {
        // Read only once `sh` has become wisp (its limits before that are
        // the shell's).
        if std::fs::read_to_string(&comm).ok()?.trim() != "wisp" {
            return None;
        }
        let text = std::fs::read_to_string(&limits).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let mut parts = line["Max open files".len()..].split_whitespace();
        Some((parts.next()?.to_string(), parts.next()?.to_string()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (soft, hard) = loop {
        match open_files() {
            // Raised (or the hard limit is 256 itself).
            Some((soft, hard)) if soft == hard => break (soft, hard),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the soft limit stayed low: {:?}",
            open_files()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(soft, hard);
}
