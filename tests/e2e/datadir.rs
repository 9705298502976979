//! The data directory is private: modes whatever the umask, the admin token
//! file's checks, compiled code run only if it matches its checksum in the
//! store, and `deploy --from` builds without Wisp's secrets in cargo's
//! environment.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Every entry under `dir` (itself included), with its mode; links are
/// listed, not followed.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push((p, meta.mode() & 0o777, meta.is_dir()));
    }
    out
}

/// Asserts that `dir` and everything in it is private: directories 0700,
/// files 0600.
fn assert_private(dir: &Path) {
    let all = modes(dir);
    assert!(all.len() > 5, "{all:?}");
    let loose: Vec<_> = all
        .iter()
        .filter(|(_, mode, is_dir)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(p, mode, _)| format!("{} {mode:04o}", p.display()))
        .collect();
    assert!(loose.is_empty(), "not private: {loose:#?}");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `wisp serve` on `dir` expecting it to refuse to start: returns its
/// stderr once it has exited (non-zero) without serving.
fn serve_refused(dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("WISP_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wisp serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("wisp: data plane"),
        "it served: {stdout}\n{stderr}"
    );
    stderr
}

/// A host that started (generating its token) and stopped.
fn stopped_host() -> Wisp {
    let mut w = Wisp::start();
    // Serving (so SIGTERM is handled, not fatal) once the API answers.
    assert!(w.admin().functions().is_empty());
    assert_eq!(w.terminate().code(), Some(0));
    w
}

/// The sha256 of a function's active artifact.
fn artifact_of(w: &Wisp, name: &str) -> String {
    let v: serde_json::Value = w
        .admin()
        .get(&format!("/v1/functions/{name}"))
        .json()
        .unwrap();
    let active = v["active_version"].clone();
    let versions: Vec<serde_json::Value> = w
        .admin()
        .get(&format!("/v1/functions/{name}/versions"))
        .json()
        .unwrap();
    versions.iter().find(|x| x["version"] == active).unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    let mut w = Wisp::start_with(Opts::default().umask(0o000));
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("echo", "echo", &["/echo"]);
    let put = a
        .http
        .put(format!("{}/v1/functions/hello/kv/k", a.url))
        .bearer_auth(&a.token)
        .body(vec![b'x'; 100_000])
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert_eq!(w.get("/hello").status(), 200);
    assert_private(&w.data_dir);
    assert!(w.data_dir.join("admin-token").exists());
    assert!(!compiled_files(&w).is_empty());
    // Including what the store writes at shutdown, and on the next start.
    assert_eq!(w.terminate().code(), Some(0));
    assert_private(&w.data_dir);
    let w2 = w.restart_on(Opts::default().umask(0o000));
    assert_eq!(w2.get("/echo").status(), 200);
    assert_private(&w2.data_dir);
    assert!(
        !w2.log_text().contains("tightened") && !w2.log_text().contains("made the store"),
        "nothing was loose: {}",
        w2.log_text()
    );
}

#[test]
fn a_data_directory_with_looser_modes_is_tightened_on_start() {
    let mut w = Wisp::start();
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.terminate().code(), Some(0));
    // Loosened (say, copied with a permissive umask); the token file aside:
    // that one is refused, not fixed (next tests).
    for (path, _, is_dir) in modes(&w.data_dir) {
        if path.ends_with("admin-token") {
            continue;
        }
        chmod(&path, if is_dir { 0o755 } else { 0o644 });
    }
    let w2 = w.restart_on(Opts::default());
    assert_private(&w2.data_dir);
    let log = w2.log_text();
    assert!(
        log.contains("accessible to other users; tightened to 0700"),
        "{log}"
    );
    assert!(log.contains("made the store's files private"), "{log}");
    assert_eq!(w2.get("/hello").status(), 200);
    assert_eq!(w2.metric("wisp_compiles_total"), 0.0);
}

#[test]
fn a_token_file_others_can_read_is_refused_until_fixed() {
    let mut w = Wisp::start();
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.terminate().code(), Some(0));
    let token = w.data_dir.join("admin-token");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        chmod(&token, mode);
        let err = serve_refused(&w.data_dir);
        assert!(
            err.contains(&format!("chmod 600 {}", token.display())),
            "{err}"
        );
        assert!(err.contains(&format!("mode {mode:04o}")), "{err}");
        assert!(!err.contains(&w.token), "the token is not shown: {err}");
        // Refused, not quietly fixed: someone may have read it.
        assert_eq!(std::fs::metadata(&token).unwrap().mode() & 0o777, mode);
    }
    // Following the advice works, with the same token.
    chmod(&token, 0o600);
    let w2 = w.restart_on(Opts::default());
    assert_eq!(w2.token, w.token);
    assert_eq!(w2.admin().functions().len(), 1);
}

#[test]
fn a_token_file_of_another_user_is_refused() {
    // SAFETY: geteuid cannot fail.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: only root can give a file to another user");
        return;
    }
    let mut w = stopped_host();
    let token = w.data_dir.join("admin-token");
    std::os::unix::fs::chown(&token, Some(65534), None).unwrap();
    let err = serve_refused(&w.data_dir);
    assert!(err.contains("belongs to another user"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    std::os::unix::fs::chown(&token, Some(0), None).unwrap();
    let w2 = w.restart_on(Opts::default());
    assert_eq!(w2.token, w.token);
}

#[test]
fn a_symlinked_token_file_is_not_followed() {
    let mut w = stopped_host();
    let token = w.data_dir.join("admin-token");
    let outside = w.data_dir.parent().unwrap().join("token-elsewhere");
    std::fs::rename(&token, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &token).unwrap();
    let err = serve_refused(&w.data_dir);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(err.contains(&token.display().to_string()), "{err}");
    // A dangling link: refused too, and no token is written where it points.
    let nowhere = w.data_dir.parent().unwrap().join("nowhere");
    std::fs::remove_file(&token).unwrap();
    std::os::unix::fs::symlink(&nowhere, &token).unwrap();
    let err = serve_refused(&w.data_dir);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!nowhere.exists());
    // The file itself in its place: served again.
    std::fs::remove_file(&token).unwrap();
    std::fs::rename(&outside, &token).unwrap();
    let w2 = w.restart_on(Opts::default());
    assert_eq!(w2.token, w.token);
}

#[test]
fn the_token_file_is_not_checked_when_the_token_is_given() {
    let mut w = stopped_host();
    chmod(&w.data_dir.join("admin-token"), 0o644);
    let given = "a-token-from-the-environment-0123";
    let w2 = w.restart_on(Opts::default().env("WISP_ADMIN_TOKEN", given));
    assert_eq!(w2.admin().functions().len(), 0);
}

/// Another function's genuine compiled code copied to the name this
/// function's code has, or garbage under that name: never run; the
/// function is compiled again from its artifact and answers as itself.
#[test]
fn planted_compiled_code_is_never_run() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("echo", "echo", &["/echo"]);
    let (hello, echo) = (artifact_of(&w, "hello"), artifact_of(&w, "echo"));
    let (hello_file, echo_file) = (compiled_file(&w, &hello), compiled_file(&w, &echo));
    assert_eq!(w.terminate().code(), Some(0));

    // Echo's code under hello's name.
    std::fs::copy(&echo_file, &hello_file).unwrap();
    let mut w2 = w.restart_on(Opts::default());
    assert_eq!(
        w2.get("/hello").text().unwrap(),
        "hello from wisp at /hello",
        "hello runs its own code"
    );
    assert_eq!(w2.metric("wisp_compiles_total"), 1.0, "hello recompiled");
    let log = w2.log_text();
    assert!(log.contains("does not match its checksum"), "{log}");
    assert!(log.contains(&hello_file.display().to_string()), "{log}");
    assert_eq!(w2.get("/echo").status(), 200);
    assert_ne!(
        std::fs::read(&hello_file).unwrap(),
        std::fs::read(&echo_file).unwrap()
    );
    assert_eq!(w2.terminate().code(), Some(0));

    // Garbage under echo's name.
    std::fs::write(&echo_file, b"\x7fELF not compiled code at all").unwrap();
    let mut w3 = w2.restart_on(Opts::default());
    assert_eq!(w3.get("/echo").status(), 200);
    assert_eq!(w3.metric("wisp_compiles_total"), 1.0, "echo recompiled");
    assert!(w3.log_text().contains("does not match its checksum"));
    assert_eq!(w3.terminate().code(), Some(0));

    // Rebuilt once: the next start runs the stored code.
    let w4 = w3.restart_on(Opts::default());
    assert_eq!(w4.metric("wisp_compiles_total"), 0.0);
    assert_eq!(
        w4.get("/hello").text().unwrap(),
        "hello from wisp at /hello"
    );
}

/// Planted while the host runs: a rollback loads the version's code from
/// its file, and the planted one is not run.
#[test]
fn compiled_code_planted_while_serving_is_not_run_by_a_rollback() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    let hello = artifact_of(&w, "f");
    a.deploy_guest("f", "echo", &["/f"]);
    let echo = artifact_of(&w, "f");
    std::fs::copy(compiled_file(&w, &echo), compiled_file(&w, &hello)).unwrap();
    let compiles = w.metric("wisp_compiles_total");
    let r = a
        .http
        .post(format!("{}/v1/functions/f/rollback", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_eq!(w.get("/f").text().unwrap(), "hello from wisp at /f");
    assert_eq!(w.metric("wisp_compiles_total"), compiles + 1.0);
    assert!(w.log_text().contains("does not match its checksum"));
}

/// Compiled code named as an earlier Wisp named it (with a checksum in
/// the name, none in the store) is not run: compiled again, once.
#[test]
fn compiled_code_of_an_earlier_wisp_is_compiled_again_once() {
    let mut w = Wisp::start();
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let sha = artifact_of(&w, "hello");
    let file = compiled_file(&w, &sha);
    assert_eq!(w.terminate().code(), Some(0));
    let stem = file.file_stem().unwrap().to_str().unwrap().to_string();
    let old = file.with_file_name(format!("{stem}-0123456789abcdef.cwasm"));
    std::fs::rename(&file, &old).unwrap();

    let mut w2 = w.restart_on(Opts::default());
    assert_eq!(w2.get("/hello").status(), 200);
    assert_eq!(w2.metric("wisp_compiles_total"), 1.0);
    assert!(!old.exists(), "the old file is removed");
    assert!(file.exists(), "and written again under its name");
    assert_eq!(w2.terminate().code(), Some(0));
    let w3 = w2.restart_on(Opts::default());
    assert_eq!(w3.metric("wisp_compiles_total"), 0.0);
    assert_eq!(w3.get("/hello").status(), 200);
}

/// `wisp deploy --from` runs cargo without WISP_ADMIN_TOKEN or any other
/// WISP_* variable: a build script that fails when it sees one lets the
/// build through, and the environment it saw has none.
#[test]
fn deploy_from_source_builds_without_wisp_variables() {
    let w = Wisp::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe");
    ok(w.cli(&["new", "probe", "--path", path.to_str().unwrap()]));
    let seen = dir.path().join("build-env.txt");
    std::fs::write(
        path.join("build.rs"),
        format!(
            r#"fn main() {{
    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    std::fs::write({seen:?}, names.join("\n")).unwrap();
    for name in &names {{
        if name.starts_with("WISP_") {{
            panic!("the build sees {{name}}");
        }}
    }}
}}
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["deploy", "probe", "--from", path.to_str().unwrap()])
        .args(["--route", "/probe"])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .env("WISP_SOME_FUTURE_SECRET", "s3cret")
        // The guests' target directory: the SDK's dependencies are built.
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    ok(out);
    let names = std::fs::read_to_string(&seen).expect("the build script ran");
    let names: Vec<&str> = names.lines().collect();
    assert!(names.contains(&"PATH"), "{names:?}");
    assert!(names.contains(&"CARGO_TARGET_DIR"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("WISP_")), "{names:?}");
    assert_eq!(w.get("/probe").status(), 200);
}
