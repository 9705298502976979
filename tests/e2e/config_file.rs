//! `wisp serve --config FILE`: the options from a TOML file, below flags and
//! `WISP_*` variables; every mistake in it refused at start with its file
//! and line before anything is created; `--print-config` masks the token
//! and reads back.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const TOKEN: &str = "c0nfig-file-t0ken-c0nfig-file-t0ken";

/// Writes `text` to `dir/wisp.toml` with `mode`.
fn write_config(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("wisp.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `wisp serve ARGS` run in `dir`, with none of the test's own `WISP_*`
/// settings, stopped after a minute at most.
fn wisp_serve(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.current_dir(dir)
        .arg("serve")
        .args(args)
        .env_remove("WISP_CONFIG")
        .env_remove("WISP_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `wisp serve --config wisp.toml` in `dir` (which holds only the
/// file), expecting it to refuse to start: asserts that it exits non-zero
/// with a one-line error and created nothing beside the file; returns the
/// error.
fn refused(dir: &Path) -> String {
    let mut child = wisp_serve(
        dir,
        &[
            "--config",
            "wisp.toml",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wisp serve started despite its config file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = fails(child.wait_with_output().unwrap());
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, ["wisp.toml"], "created beside the file: {err}");
    err
}

/// The host's "capacity" line at start (the sizes it runs with).
fn capacity_line(w: &Wisp) -> String {
    let log = w.log_text();
    log.lines()
        .find(|l| l.contains("capacity"))
        .unwrap_or_else(|| panic!("no capacity line in\n{log}"))
        .to_string()
}

fn assert_capacity(w: &Wisp, parts: &[&str]) {
    let capacity = capacity_line(w);
    for part in parts {
        assert!(capacity.contains(part), "{part} not in {capacity}");
    }
}

/// Sizes, a list (a function deployed at start) and a switch, all from the
/// file.
#[test]
fn a_host_serves_on_its_config_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let hello = guest("hello");
    let config = write_config(
        dir.path(),
        &format!(
            "# the limits\nmax-in-flight = 7\nmax-connections = 300\nstore-cache = \"8MiB\"\n\
             small = false\ndeploy = [{}]\n",
            toml_string(&format!("hello={}:/hello", hello.display()))
        ),
        0o600,
    );
    let w = Wisp::start_with(
        Opts::default()
            .arg("--config")
            .arg(config.to_str().unwrap()),
    );
    assert_capacity(
        &w,
        &[
            "small=false",
            "max_in_flight=7",
            "max_connections=300",
            "store_cache=8.0 MiB",
        ],
    );
    assert_eq!(w.get("/hello").status(), 200);
    assert_eq!(w.admin().functions().len(), 1);
}

/// A flag and a `WISP_*` variable both win over the file; what they leave
/// alone still comes from it. The file itself through `WISP_CONFIG`.
#[test]
fn flags_and_variables_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "max-in-flight = 7\nmax-connections = 300\nstore-cache = \"8MiB\"\n",
        0o600,
    );
    let w = Wisp::start_with(
        Opts::default()
            .env("WISP_CONFIG", config.to_str().unwrap())
            .arg("--max-in-flight")
            .arg("9")
            .env("WISP_MAX_CONNECTIONS", "400"),
    );
    assert_capacity(
        &w,
        &[
            "max_in_flight=9",
            "max_connections=400",
            "store_cache=8.0 MiB",
        ],
    );
}

#[test]
fn a_typo_is_refused_with_its_line_and_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "data-dir = \"data\"\n\nmax-in-flite = 3\n",
        0o600,
    );
    let err = refused(dir.path());
    assert!(
        err.contains("wisp.toml:3: unknown option `max-in-flite`; did you mean `max-in-flight`?"),
        "{err}"
    );
    // snake_case is not a key, but says which one it meant.
    write_config(dir.path(), "data_dir = \"data\"\n", 0o600);
    let err = refused(dir.path());
    assert!(
        err.contains("wisp.toml:1: unknown option `data_dir`; did you mean `data-dir`?"),
        "{err}"
    );
}

#[test]
fn a_bad_value_is_refused_with_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, wanted) in [
        (
            "data-dir = \"data\"\nmax-in-flight = \"lots\"\n",
            "wisp.toml:2: invalid value `lots` for `max-in-flight`: invalid digit found in string",
        ),
        (
            "data-dir = \"data\"\ndefault-timeout = \"soon\"\n",
            "wisp.toml:2: invalid value `soon` for `default-timeout`: invalid duration `soon`",
        ),
        (
            "max-body = \"6MiB\"\nsmall = \"yes\"\n",
            "wisp.toml:2: `small` is a switch: true or false, not a string",
        ),
        (
            "listen = [\"127.0.0.1:1\"]\n",
            "wisp.toml:1: `listen` takes one value, not a list",
        ),
        (
            "log-format = \"xml\"\n",
            "wisp.toml:1: invalid value `xml` for `log-format`: possible values: text, json",
        ),
        (
            "deploy = [\"hello.wasm\"]\n",
            "wisp.toml:1: invalid value for `deploy`: `hello.wasm`: no `=` after the name",
        ),
        (
            "config = \"other.toml\"\n",
            "wisp.toml:1: `config` cannot be set in a config file",
        ),
    ] {
        write_config(dir.path(), text, 0o600);
        let err = refused(dir.path());
        assert!(err.contains(wanted), "{text:?}: {err}");
    }
}

/// The line and column; not the line's text, which may hold the token.
#[test]
fn a_syntax_error_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("data-dir = \"data\"\nadmin-token = \"{TOKEN}\n"),
        0o600,
    );
    let err = refused(dir.path());
    assert!(err.starts_with("error: wisp.toml:2:"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = wisp_serve(dir.path(), &["--config", "nowhere/wisp.toml"])
        .output()
        .unwrap();
    let err = fails(out);
    assert!(
        err.contains("reading the config file nowhere/wisp.toml: No such file"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A mistake on the command line is reported as without a file, not
/// blamed on the file.
#[test]
fn a_command_line_mistake_beside_a_file_is_the_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "max-in-flight = 7\n", 0o600);
    let out = wisp_serve(
        dir.path(),
        &["--config", "wisp.toml", "--max-in-flite", "3"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: unexpected argument '--max-in-flite'"),
        "{err}"
    );
    assert!(!err.contains("wisp.toml"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// What is in force, from where; the token masked and commented out; fed
/// back with `--config`, the host starts on the same settings.
#[test]
fn print_config_masks_the_token_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("admin-token = \"{TOKEN}\"\nmax-in-flight = 7\nstore-cache = \"8MiB\"\n"),
        0o600,
    );
    let out = wisp_serve(
        dir.path(),
        &[
            "--config",
            "wisp.toml",
            "--print-config",
            "--max-connections",
            "300",
        ],
    )
    .env("WISP_EVENT_CONCURRENCY", "5")
    .output()
    .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = ok(out);
    assert!(!printed.contains(TOKEN), "{printed}");
    for line in [
        "# admin-token = \"***\"  # config file; masked",
        "max-in-flight = 7  # config file",
        "store-cache = \"8MiB\"  # config file",
        "max-connections = 300  # flag",
        "event-concurrency = 5  # WISP_EVENT_CONCURRENCY",
        "default-timeout = \"30s\"  # default",
        "# max-upload: not set",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} not in\n{printed}"
        );
    }
    // Printed, not served: no data directory.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "{entries:?}");

    let back = dir.path().join("printed.toml");
    std::fs::write(&back, &printed).unwrap();
    let w = Wisp::start_with(Opts::default().arg("--config").arg(back.to_str().unwrap()));
    assert_capacity(
        &w,
        &[
            "max_in_flight=7",
            "max_connections=300",
            "store_cache=8.0 MiB",
        ],
    );
    assert!(!w.log_text().contains(TOKEN));
}

/// The token in the file is the admin API's; a file others can read is
/// warned about once, and the token is nowhere in the host's output.
#[test]
fn a_token_in_a_file_others_can_read_works_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("data-dir = \"data\"\nadmin-token = \"{TOKEN}\"\n"),
        0o644,
    );
    let mut child = wisp_serve(
        dir.path(),
        &[
            "--config",
            "wisp.toml",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    )
    .env("RUST_LOG", "debug")
    .spawn()
    .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut admin = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("wisp: admin API") {
            admin = rest.split_whitespace().next().map(str::to_string);
        }
        printed.push(line);
        if admin.is_some() {
            break;
        }
    }
    let Some(admin) = admin else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "wisp serve did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let status = |token: &str| {
        client()
            .get(format!("{admin}/functions"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(TOKEN), 200);
    assert_eq!(status("not-the-token-not-the-token"), 401);
    // The token given, none generated.
    assert!(!dir.path().join("data/admin-token").exists());
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("wisp.toml sets `admin-token` and every user can read it"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("chmod 600 wisp.toml"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
    assert!(!printed.join("\n").contains(TOKEN));
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
