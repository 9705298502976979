//! Test harness: builds the guests to wasm, starts the real `wisp` binary on
//! `127.0.0.1:0`, and talks to it over HTTP and through the CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (the tests are a test target of host/cli).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// A list of guests in `[workspace.metadata.wisp]` of the root Cargo.toml
/// (`guests`, `wasip1-guests`): the one list the scripts, this harness and
/// the release profile share. Read once per test process.
fn workspace_guests(list: &str) -> Vec<String> {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    let metadata = METADATA.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .output()
            .expect("running cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
    });
    metadata["metadata"]["wisp"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no `{list}` in [workspace.metadata.wisp] of Cargo.toml"))
        .iter()
        .map(|name| name.as_str().expect("a guest name").to_string())
        .collect()
}

/// Path of a guest's `.wasm`, building every guest once per test process.
/// Cargo's own lock on `target/wasm` serialises concurrent test processes.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(root().join("target/wasm"));
        for g in workspace_guests("guests") {
            cmd.args(["-p", &g]);
        }
        // Flags meant for the host build must not leak into the guest build.
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            cmd.env_remove(var);
        }
        let out = cmd.output().expect("running cargo to build the guests");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("target may not be installed")
                || err.contains("can't find crate for `core`")
            {
                panic!(
                    "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2` \
                     (scripts/test.sh does this for you)\n{err}"
                );
            }
            panic!("building the guests failed:\n{err}");
        }
    });
    let file = name.replace('-', "_");
    let path = root().join(format!("target/wasm/wasm32-wasip2/release/{file}.wasm"));
    assert!(
        path.exists(),
        "guest {name} was built but {} is missing",
        path.display()
    );
    path
}

/// A running `wisp serve`.
pub struct Wisp {
    pub child: Child,
    pub data_dir: PathBuf,
    pub data_url: String,
    pub admin_url: String,
    pub token: String,
    /// Everything the host wrote to stderr (its log), line by line.
    pub log: Arc<Mutex<Vec<String>>>,
    temp_keep: Option<Arc<tempfile::TempDir>>,
}

/// Options for starting a host.
#[derive(Default, Clone)]
pub struct Opts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Start through `sh` with this umask (tests/e2e/datadir.rs).
    pub umask: Option<u32>,
    /// Start through `sh` with this address-space limit (`ulimit -v`, in
    /// KiB; tests/e2e/limits.rs).
    pub address_space_kib: Option<u64>,
    /// Another `wisp` binary than this build's (the runtime-only build).
    pub binary: Option<PathBuf>,
}

impl Opts {
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }
    pub fn address_space_kib(mut self, kib: u64) -> Self {
        self.address_space_kib = Some(kib);
        self
    }
    pub fn binary(mut self, path: PathBuf) -> Self {
        self.binary = Some(path);
        self
    }
}

impl Wisp {
    /// Starts a host on a fresh temporary data directory.
    pub fn start() -> Wisp {
        Self::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Wisp {
        let temp = Arc::new(tempfile::tempdir().unwrap());
        let dir = temp.path().join("data");
        let mut w = Self::spawn(&dir, &opts);
        w.temp_keep = Some(temp);
        w
    }

    /// Starts a host on an existing data directory (restart).
    pub fn restart_on(&mut self, opts: Opts) -> Wisp {
        let mut w = Self::spawn(&self.data_dir, &opts);
        w.temp_keep = self.temp_keep.clone();
        w
    }

    fn spawn(dir: &Path, opts: &Opts) -> Wisp {
        let mut prelude = Vec::new();
        if let Some(mask) = opts.umask {
            prelude.push(format!("umask {mask:03o}"));
        }
        if let Some(kib) = opts.address_space_kib {
            prelude.push(format!("ulimit -v {kib}"));
        }
        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_wisp")));
        let mut cmd = if prelude.is_empty() {
            Command::new(&binary)
        } else {
            // `exec`: the child is wisp itself (its pid, its signals).
            let mut sh = Command::new("sh");
            let script = format!("{} && exec \"$@\"", prelude.join(" && "));
            sh.args(["-c", &script, "sh"]).arg(&binary);
            sh
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(&opts.args)
            .env_remove("WISP_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting wisp serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                if l.len() < 100_000 {
                    l.push(line);
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut data_url, mut admin_url) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while data_url.is_none() || admin_url.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "wisp serve did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            };
            if let Some(rest) = line.strip_prefix("wisp: data plane") {
                data_url = Some(rest.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("wisp: admin API") {
                let url = rest.split_whitespace().next().unwrap();
                admin_url = Some(url.trim_end_matches("/v1").to_string());
            }
        }
        // Keep draining stdout so the host never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let token = opts
            .env
            .iter()
            .find(|(k, _)| k == "WISP_ADMIN_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                std::fs::read_to_string(dir.join("admin-token"))
                    .unwrap()
                    .trim()
                    .to_string()
            });
        Wisp {
            child,
            data_dir: dir.to_path_buf(),
            data_url: data_url.unwrap(),
            admin_url: admin_url.unwrap(),
            token,
            log,
            temp_keep: None,
        }
    }

    /// A client for the admin API with the token set.
    pub fn admin(&self) -> Admin {
        Admin {
            url: self.admin_url.clone(),
            token: self.token.clone(),
            http: client(),
            api: wisp_client::Client::new(&self.admin_url, self.token.clone())
                .expect("a client of the admin API"),
        }
    }

    /// GET on the data plane.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        client()
            .get(format!("{}{}", self.data_url, path))
            .send()
            .unwrap()
    }

    /// Runs the `wisp` CLI against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(args, None)
    }

    pub fn cli_in(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
        cmd.args(args)
            .env("WISP_ADMIN_URL", &self.admin_url)
            .env("WISP_ADMIN_TOKEN", &self.token)
            // `wisp new` writes the SDK's source to this cache: the tests'
            // own, not the user's.
            .env("XDG_CACHE_HOME", root().join("target/wasm/xdg-cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            Some(input) => {
                cmd.stdin(Stdio::piped());
                let mut child = cmd.spawn().unwrap();
                use std::io::Write;
                child.stdin.take().unwrap().write_all(input).unwrap();
                child.wait_with_output().unwrap()
            }
            None => cmd.stdin(Stdio::null()).output().unwrap(),
        }
    }

    /// Sends SIGKILL and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "wisp did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The value of a Prometheus sample, e.g. `wisp_compiles_total`.
    pub fn metric(&self, name: &str) -> f64 {
        let text = block_on(self.admin().api.metrics()).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        // A failing test may be the host's doing (it exited, or logged
        // why): whether it still runs, and its last words.
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            let exited = self.child.try_wait().ok().flatten();
            let tail = &log[log.len().saturating_sub(30)..];
            eprintln!(
                "wisp serve (admin {}; exited: {exited:?}), its log's end:\n{}",
                self.admin_url,
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The files of compiled code in a host's data directory, sorted.
pub fn compiled_files(w: &Wisp) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(w.data_dir.join("compiled")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading the compiled-code directory: {e}"),
    };
    names.sort();
    names
}

/// The one file of compiled code of an artifact in a host's data directory.
pub fn compiled_file(w: &Wisp, sha256: &str) -> PathBuf {
    let files = compiled_files(w);
    let mine: Vec<_> = files
        .iter()
        .filter(|f| f.starts_with(&format!("{sha256}-")))
        .collect();
    assert_eq!(mine.len(), 1, "compiled code of {sha256}: {files:?}");
    w.data_dir.join("compiled").join(mine[0])
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Admin API client: the typed client (wisp-client) where a test wants
/// an answer, raw HTTP where it looks at statuses and bytes.
pub struct Admin {
    pub url: String,
    pub token: String,
    pub http: reqwest::blocking::Client,
    pub api: wisp_client::Client,
}

/// Runs a call of the (async) typed client from a test thread. One runtime
/// for the whole test process: its connection pool outlives each call.
pub fn block_on<F: std::future::Future>(call: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the admin client")
        })
        .block_on(call)
}

impl Admin {
    /// A scoped admin token named `name`, made with the bootstrap token
    /// (`POST /v1/tokens`).
    pub fn create_token(&self, name: &str, scopes: &[&str]) -> String {
        let r = self
            .http
            .post(format!("{}/v1/tokens", self.url))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"name": name, "scopes": scopes}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "creating the token {name}");
        r.json::<serde_json::Value>().unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    pub fn delete(&self, path: &str) -> reqwest::blocking::Response {
        self.http
            .delete(format!("{}{}", self.url, path))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    pub fn deploy(
        &self,
        name: &str,
        wasm: &[u8],
        query: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/v1/functions/{name}", self.url))
            .bearer_auth(&self.token)
            .query(query)
            .header("content-type", "application/wasm")
            .body(wasm.to_vec())
            .send()
            .unwrap()
    }

    /// Deploys a guest by name, asserting success.
    pub fn deploy_guest(
        &self,
        name: &str,
        guest_name: &str,
        routes: &[&str],
    ) -> wisp_client::FunctionInfo {
        let wasm = std::fs::read(guest(guest_name)).unwrap();
        let options = wisp_client::DeployOptions {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        };
        block_on(self.api.deploy(name, wasm.into(), &options))
            .unwrap_or_else(|e| panic!("deploy {name} failed: {e}"))
    }

    pub fn functions(&self) -> Vec<wisp_client::FunctionSummary> {
        block_on(self.api.list()).unwrap()
    }
}

/// Asserts a Wisp JSON error: status and code; returns the message.
pub fn assert_error(resp: reqwest::blocking::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let body: serde_json::Value = resp.json().expect("error body is JSON");
    assert_eq!(
        body["error"]["code"], code,
        "unexpected error code in {body}"
    );
    let msg = body["error"]["message"].as_str().unwrap().to_string();
    assert!(!msg.is_empty());
    msg
}

/// The Python component (tests/guests/python-hello), built with
/// componentize-py (installed by scripts/test.sh) when missing or stale.
pub fn python_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = root().join("tests/guests/python-hello");
            let out_dir = root().join("target/wasm/python");
            std::fs::create_dir_all(&out_dir).unwrap();
            let out = out_dir.join("python-hello.wasm");
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if modified(&out).is_some() && modified(&out) >= modified(&src.join("app.py")) {
                return out;
            }
            let work = tempfile::tempdir().unwrap();
            std::fs::copy(src.join("app.py"), work.path().join("app.py")).unwrap();
            let status = Command::new("componentize-py")
                .current_dir(work.path())
                .arg("-d")
                .arg(root().join("sdk/wit"))
                .args(["-w", "wasi:http/proxy@0.2.12", "componentize", "app", "-o"])
                .arg(&out)
                .status()
                .unwrap_or_else(|e| {
                    panic!(
                        "componentize-py is needed for the Python component test ({e}): \
                         `pip install componentize-py` (scripts/test.sh does it)"
                    )
                });
            assert!(status.success(), "componentize-py failed");
            out
        })
        .clone()
}

/// Path of a preview-1 guest's `.wasm` (a binary: its name keeps its
/// dashes), building them all once per test process.
pub fn wasip1_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--target-dir",
            ])
            .arg(root().join("target/wasm"));
        // Preview-1 guests, run CGI-style: a cargo invocation of their own,
        // as they target another triple.
        for g in workspace_guests("wasip1-guests") {
            cmd.args(["-p", &g]);
        }
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            cmd.env_remove(var);
        }
        let out = cmd
            .output()
            .expect("running cargo to build the wasm32-wasip1 guests");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("target may not be installed")
                || err.contains("can't find crate for `core`")
            {
                panic!(
                    "the wasm32-wasip1 target is missing: run `rustup target add wasm32-wasip1` \
                     (scripts/test.sh does this for you)\n{err}"
                );
            }
            panic!("building the wasm32-wasip1 guests failed:\n{err}");
        }
    });
    let path = root().join(format!("target/wasm/wasm32-wasip1/release/{name}.wasm"));
    assert!(
        path.exists(),
        "guest {name} was built but {} is missing",
        path.display()
    );
    path
}

/// The C example (examples/cgi-c), built by its build.sh with clang, lld
/// and wasi-libc (installed by scripts/test.sh).
pub fn c_example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = root().join("target/wasm/cgi-c/cgi-c.wasm");
            let result = Command::new("bash")
                .arg(root().join("examples/cgi-c/build.sh"))
                .arg(&out)
                .output()
                .expect("running examples/cgi-c/build.sh");
            assert!(
                result.status.success(),
                "building the C example failed: it needs clang, lld, wasi-libc and \
                 libclang-rt-dev-wasm32 (`apt-get install -y clang lld wasi-libc \
                 libclang-rt-dev-wasm32`; scripts/test.sh does it)\n{}",
                String::from_utf8_lossy(&result.stderr)
            );
            out
        })
        .clone()
}

/// Asserts a CLI command succeeded; returns its stdout.
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a CLI command failed with a one-line `error: ...`; returns it.
pub fn fails(out: std::process::Output) -> String {
    assert!(!out.status.success(), "command should have failed");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    err
}

/// A `nats-server -js` of the test's own (tests/e2e/cluster.rs): a free
/// loopback port, JetStream's store in a temporary directory, killed on
/// drop. Debian's `nats-server` package (scripts/test.sh installs it).
pub struct Nats {
    child: Option<Child>,
    port: u16,
    /// JetStream's store: kept across `restart`, so the cluster's state
    /// survives it as it would a real server's restart.
    store: tempfile::TempDir,
    /// Everything the server wrote to stderr (its log), line by line.
    log: Arc<Mutex<Vec<String>>>,
    /// The thread reading that log: joined on `stop`, so the log is whole.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Nats {
    /// Starts a server on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Nats {
        // A port the kernel just handed out and nobody listens on: the way
        // the hosts get theirs (`127.0.0.1:0`), but nats-server needs the
        // number before it starts, and keeps it across a restart.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut nats = Nats {
            child: None,
            port,
            store: tempfile::tempdir().unwrap(),
            log: Arc::new(Mutex::new(Vec::new())),
            reader: None,
        };
        nats.spawn();
        nats
    }

    /// The URL hosts join with (`--cluster`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it: to the hosts, NATS is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Starts the server again on the same port and store directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// JetStream's store directory (`-sd`): what NATS keeps on disk, for
    /// tests that look for a secret in clear there.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    fn spawn(&mut self) {
        let mut child = Command::new(nats_server())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nats-server");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                if l.len() < 100_000 {
                    l.push(line);
                }
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                panic!(
                    "nats-server did not accept connections on port {} within 10 s ({}); \
                     log:\n{}",
                    self.port,
                    match exited {
                        Some(status) => format!("it exited: {status}"),
                        None => "still running".to_string(),
                    },
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        // A failing cluster test may be NATS's doing: its last words.
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!("nats-server's log (its end):\n{}", tail.join("\n"));
        }
    }
}

/// The `nats-server` binary: on the PATH, or where Debian's package puts
/// it (/usr/sbin, not on every user's PATH). Missing, the test fails
/// saying how to get it: a cluster test that skips would pass untested.
fn nats_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/local/sbin/nats-server"),
        ])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is needed for the cluster tests: scripts/test.sh installs it \
                 (Debian's package: `apt-get install nats-server`)"
            )
        })
}
