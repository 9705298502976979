//! `wisp`: run a Wisp host (`wisp serve`) or manage the functions of a
//! running one over its admin API (every other command).
//!
//! A thin binary: `serve` hands its typed arguments to the library
//! (wisp-host), the client commands are calls of the admin API's typed
//! client (wisp-client), printed for people or as JSON (`client` and the
//! modules it dispatches to).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

mod alias;
mod client;
mod compile;
mod config;
mod config_file;
mod events;
mod functions;
mod invoke;
#[cfg(feature = "jemalloc")]
mod jemalloc;
mod jobs;
mod keys;
mod kv;
mod logs;
mod memory;
mod new;
mod output;
mod schedules;
mod serve;
mod source;
mod stats;
mod tokens;
mod units;

use units::{parse_duration, parse_size};

/// Wisp: a WebAssembly function-as-a-service host.
#[derive(Parser)]
#[command(name = "wisp", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the host: the data plane (functions) and the admin API.
    Serve(ServeArgs),
    /// Create a function crate from a template, ready to build and deploy.
    New(new::NewArgs),
    /// Cluster tools: `wisp cluster keygen FILE` writes a cluster key.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Write a new ed25519 key pair for signing precompiled code: NAME (the
    /// signing key, mode 0600, for `wisp compile --sign`) and NAME.pub (for
    /// hosts' `wisp serve --trusted-key`). Never overwrites.
    Keygen {
        /// Where to write the signing key (the public key goes to NAME.pub).
        name: PathBuf,
    },
    /// Compile a function ahead of time and sign it (a `.cwasm`), for hosts
    /// that should not compile (a small device) or must not generate code
    /// (`--engine pulley`). A host loads it only if it trusts the key
    /// (`--trusted-key`) and runs the same Wisp build and engine.
    Compile(compile::CompileArgs),
    #[command(flatten)]
    Client(client::Command),
}

/// `wisp cluster`.
#[derive(Subcommand)]
enum ClusterCommand {
    /// Write a new cluster key to FILE (mode 0600; never overwritten). Give
    /// the same file to every host (`wisp serve --cluster-key-file`):
    /// secrets are sealed with it before they reach NATS.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
}

/// Arguments of `wisp serve`. Every option can also be set through its
/// `WISP_*` environment variable. (`Debug` shows no token: it is a
/// `SecretString`.)
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Read the options from a TOML file (config_file.rs): the keys are the
    /// long option names (`max-in-flight = 200`, `small = true`, `deploy =
    /// ["NAME=FILE:ROUTE"]`). Flags and WISP_* variables win over it.
    #[arg(long, env = "WISP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the configuration in force (file, variables and flags merged)
    /// as TOML that --config reads back, secrets masked, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Directory of the store (functions, artifacts, compiled code, the
    /// generated admin token). Created if missing.
    #[arg(
        long,
        env = "WISP_DATA_DIR",
        value_name = "DIR",
        default_value = "./wisp-data"
    )]
    pub data_dir: PathBuf,

    /// Address of the data plane (requests to functions).
    #[arg(
        long,
        env = "WISP_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Address of the admin API. Keep it on loopback unless it serves TLS
    /// (--admin-tls-cert) or a proxy in front of it does.
    #[arg(
        long,
        env = "WISP_ADMIN_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Serve the data plane over TLS (HTTPS; HTTP/2 and HTTP/1.1 by ALPN)
    /// with this certificate chain: PEM, the server's certificate first,
    /// then any intermediates. Needs --tls-key. Read again when the file
    /// changes and on SIGHUP, without dropping connections.
    #[arg(long, env = "WISP_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WISP_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve the admin API over TLS with this certificate chain (PEM), as
    /// --tls-cert does for the data plane. Needs --admin-tls-key. Clients
    /// trust a private CA through WISP_ADMIN_CA.
    #[arg(
        long,
        env = "WISP_ADMIN_TLS_CERT",
        value_name = "FILE",
        requires = "admin_tls_key"
    )]
    pub admin_tls_cert: Option<PathBuf>,

    /// The private key of --admin-tls-cert (PEM).
    #[arg(
        long,
        env = "WISP_ADMIN_TLS_KEY",
        value_name = "FILE",
        requires = "admin_tls_cert"
    )]
    pub admin_tls_key: Option<PathBuf>,

    /// Bearer token of the admin API. Without it, the host reads (or, on
    /// first start, generates) `admin-token` in the data directory.
    #[arg(
        long,
        env = "WISP_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = secret
    )]
    pub admin_token: Option<SecretString>,

    /// Format of the host's logs on stderr.
    #[arg(
        long,
        env = "WISP_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// A file holding the log filter (`RUST_LOG` syntax, e.g.
    /// `warn,wisp=info`), read at start and again on SIGHUP (`systemctl
    /// reload wisp`), so the level changes without a restart. Without it
    /// the filter is `RUST_LOG`'s, or the default.
    #[arg(long, env = "WISP_LOG_FILTER_FILE", value_name = "PATH")]
    pub log_filter_file: Option<PathBuf>,

    /// Deadline of one invocation for functions that set none (30s, 500ms, 2m).
    #[arg(
        long = "default-timeout",
        env = "WISP_DEFAULT_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,

    /// Memory cap of one invocation for functions that set none (128MiB, 64M).
    #[arg(
        long = "default-memory",
        env = "WISP_DEFAULT_MEMORY",
        value_name = "SIZE",
        default_value = "128MiB",
        value_parser = parse_size
    )]
    pub memory: u64,

    /// Request-body cap for functions that set none.
    #[arg(
        long,
        env = "WISP_MAX_BODY",
        value_name = "SIZE",
        default_value = "6MiB",
        value_parser = parse_size
    )]
    pub max_body: u64,

    /// Size pools and caches for a small device (512 MiB of memory): the
    /// defaults marked "--small" below change, and the pool's slots keep
    /// less memory resident between instances. Options given explicitly
    /// still apply. (`WISP_SMALL=1`, `true`, `yes` or `on`.)
    #[arg(long, env = "WISP_SMALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub small: bool,

    /// Largest artifact accepted by deploy [default: 64MiB; --small: 32MiB].
    #[arg(long, env = "WISP_MAX_UPLOAD", value_name = "SIZE", value_parser = parse_size)]
    pub max_upload: Option<u64>,

    /// Invocations running at once, host-wide; past it requests get 503 with
    /// Retry-After [default: 1000; --small: 64].
    #[arg(long, env = "WISP_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<u32>,

    /// Invocations one function may have running at once: its share of
    /// --max-in-flight, so one busy or attacked function cannot take every
    /// slot (past it, its requests get 429) [default: half of
    /// --max-in-flight].
    #[arg(long, env = "WISP_MAX_IN_FLIGHT_PER_FUNCTION", value_name = "N")]
    pub max_in_flight_per_function: Option<u32>,

    /// Data plane: how long a client may take to send a request head
    /// (counted from the connection's start or the next request's first
    /// byte); past it the connection is closed.
    #[arg(long, env = "WISP_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Data plane: how long a kept-alive connection may wait for its next
    /// request.
    #[arg(long, env = "WISP_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Data plane: connections open at once. Past it the connection that
    /// has waited longest for a request is closed (a new one is refused
    /// when all are busy) [default: 10000; --small: 1024].
    #[arg(long, env = "WISP_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u32>,

    /// Data plane: largest request head (request line and headers); larger
    /// answers 431.
    #[arg(long, env = "WISP_MAX_HEADER_SIZE", value_name = "SIZE", default_value = "32KiB", value_parser = parse_size)]
    pub max_header_size: u64,

    /// Data plane: most header fields in one request; more answers 431.
    #[arg(
        long,
        env = "WISP_MAX_HEADERS",
        value_name = "N",
        default_value_t = 100
    )]
    pub max_headers: u32,

    /// Data plane: how long a request body may take before
    /// --body-min-rate applies; a slower body answers 408.
    #[arg(long, env = "WISP_BODY_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Data plane: least average rate (bytes per second) of a request body
    /// that takes longer than --body-timeout.
    #[arg(long, env = "WISP_BODY_MIN_RATE", value_name = "SIZE", default_value = "1KiB", value_parser = parse_size)]
    pub body_min_rate: u64,

    /// Admin API: as --header-timeout.
    #[arg(long, env = "WISP_ADMIN_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub admin_header_timeout: Duration,

    /// Admin API: as --idle-timeout.
    #[arg(long, env = "WISP_ADMIN_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub admin_idle_timeout: Duration,

    /// Admin API: as --max-connections. Separate, so that a flood of the
    /// data plane cannot lock operators out [default: 256; --small: 32].
    #[arg(long, env = "WISP_ADMIN_MAX_CONNECTIONS", value_name = "N")]
    pub admin_max_connections: Option<u32>,

    /// Admin API: as --max-header-size.
    #[arg(long, env = "WISP_ADMIN_MAX_HEADER_SIZE", value_name = "SIZE", default_value = "32KiB", value_parser = parse_size)]
    pub admin_max_header_size: u64,

    /// Admin API: as --max-headers.
    #[arg(
        long,
        env = "WISP_ADMIN_MAX_HEADERS",
        value_name = "N",
        default_value_t = 100
    )]
    pub admin_max_headers: u32,

    /// Admin API: as --body-timeout (uploads of artifacts).
    #[arg(long, env = "WISP_ADMIN_BODY_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub admin_body_timeout: Duration,

    /// Admin API: as --body-min-rate.
    #[arg(long, env = "WISP_ADMIN_BODY_MIN_RATE", value_name = "SIZE", default_value = "1KiB", value_parser = parse_size)]
    pub admin_body_min_rate: u64,

    /// Page cache of the store. Bounds the host's memory on small machines
    /// [default: 16MiB; --small: 4MiB].
    #[arg(
        long = "store-cache",
        env = "WISP_STORE_CACHE",
        value_name = "SIZE",
        value_parser = parse_size
    )]
    pub cache_capacity: Option<u64>,

    /// Outbound HTTP requests one invocation may send to allowed hosts.
    #[arg(
        long,
        env = "WISP_MAX_OUTBOUND_REQUESTS",
        value_name = "N",
        default_value_t = 16
    )]
    pub max_outbound_requests: u32,

    /// Bytes of stdout, stderr and log lines kept per invocation (the rest is
    /// dropped, and the truncation noted in the function's log).
    #[arg(
        long,
        env = "WISP_LOG_BYTES_PER_INVOCATION",
        value_name = "SIZE",
        default_value = "64KiB",
        value_parser = parse_size
    )]
    pub log_bytes_per_invocation: u64,

    /// Bytes of response body a preview-1 (CGI) module may write; past it
    /// the response is cut and the truncation noted in the function's log
    /// [default: 16MiB; --small: 4MiB].
    #[arg(long, env = "WISP_CGI_MAX_OUTPUT", value_name = "SIZE", value_parser = parse_size)]
    pub cgi_max_output: Option<u64>,

    /// Log lines kept per function; the oldest go first.
    #[arg(
        long,
        env = "WISP_LOG_RETENTION_LINES",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub log_retention_lines: u64,

    /// How long a function's log lines are kept.
    #[arg(
        long,
        env = "WISP_LOG_RETENTION",
        value_name = "DURATION",
        default_value = "168h",
        value_parser = parse_duration
    )]
    pub log_retention: Duration,

    /// Largest event payload (publish, async invoke); larger answers 413.
    #[arg(
        long,
        env = "WISP_EVENT_MAX_PAYLOAD",
        value_name = "SIZE",
        default_value = "256KiB",
        value_parser = parse_size
    )]
    pub event_max_payload: u64,

    /// Pending deliveries per topic; past it publishing answers 429.
    #[arg(
        long,
        env = "WISP_MAX_QUEUE_DEPTH",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_queue_depth: u64,

    /// Event deliveries running at once, host-wide [default: 64; --small: 16].
    #[arg(long, env = "WISP_EVENT_MAX_IN_FLIGHT", value_name = "N")]
    pub event_max_in_flight: Option<u32>,

    /// Deliveries running at once per subscription, unless it sets its own.
    #[arg(
        long,
        env = "WISP_EVENT_CONCURRENCY",
        value_name = "N",
        default_value_t = 4
    )]
    pub event_concurrency: u32,

    /// Delivery attempts in total per event and subscription, unless the
    /// subscription sets its own.
    #[arg(
        long,
        env = "WISP_EVENT_MAX_ATTEMPTS",
        value_name = "N",
        default_value_t = 3
    )]
    pub event_max_attempts: u32,

    /// Delay before the first retry; it doubles (with jitter) after each.
    #[arg(
        long,
        env = "WISP_EVENT_RETRY_BASE",
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_duration
    )]
    pub event_retry_base: Duration,

    /// Longest delay between retries.
    #[arg(
        long,
        env = "WISP_EVENT_RETRY_MAX",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub event_retry_max: Duration,

    /// Events older than this are not retried (they go to the dead letters).
    #[arg(
        long,
        env = "WISP_EVENT_MAX_AGE",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub event_max_age: Duration,

    /// How long finished events are kept for `GET /v1/events/{id}`.
    #[arg(
        long,
        env = "WISP_EVENT_RETENTION",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub event_retention: Duration,

    /// How long a shutdown waits for in-flight requests before dropping them.
    #[arg(
        long = "shutdown-grace",
        env = "WISP_SHUTDOWN_GRACE",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub grace: Duration,

    /// Serving threads, each running the connections (data plane and admin
    /// API) and event deliveries it is given on a single-threaded runtime
    /// of its own; 0 is one per CPU.
    #[arg(
        long = "serve-threads",
        env = "WISP_SERVE_THREADS",
        value_name = "N",
        default_value_t = 0
    )]
    pub serve_threads: usize,

    /// Deploy a function at start-up: NAME=FILE.wasm[:ROUTE[,ROUTE]...].
    /// Repeatable; in WISP_DEPLOY, separate several with `;`.
    #[arg(
        long,
        env = "WISP_DEPLOY",
        value_name = "NAME=FILE:ROUTES",
        value_delimiter = ';',
        value_parser = parse_preload
    )]
    pub deploy: Vec<Preload>,

    /// Lines of stdout and stderr and log calls kept per invocation, beside
    /// --log-bytes-per-invocation (in which each line counts 32 bytes more
    /// than its text): the rest are dropped, counted, and the truncation
    /// noted in the function's log.
    #[arg(
        long,
        env = "WISP_LOG_LINES_PER_INVOCATION",
        value_name = "N",
        default_value_t = 1000
    )]
    pub log_lines_per_invocation: u64,

    /// Bytes of undelivered events (pending, retrying or dead) one topic
    /// may hold; past it a publish on it answers 429 topic_quota_exceeded.
    #[arg(
        long,
        env = "WISP_EVENT_TOPIC_QUOTA",
        value_name = "SIZE",
        default_value = "64MiB",
        value_parser = parse_size
    )]
    pub event_topic_quota: u64,

    /// Bytes of undelivered events all topics together may hold; past it
    /// every publish answers 429 host_quota_exceeded.
    #[arg(
        long,
        env = "WISP_EVENT_HOST_QUOTA",
        value_name = "SIZE",
        default_value = "256MiB",
        value_parser = parse_size
    )]
    pub event_host_quota: u64,

    /// How long a dead delivery stays in its dead-letter list (unless
    /// redriven or purged) before it is removed with its event.
    #[arg(
        long,
        env = "WISP_EVENT_DLQ_RETENTION",
        value_name = "DURATION",
        default_value = "168h",
        value_parser = parse_duration
    )]
    pub event_dlq_retention: Duration,

    /// Requests that may wait for a host-wide slot when --max-in-flight
    /// invocations run; past them the answer is 503 (0: 503 at once).
    #[arg(long, env = "WISP_HOST_QUEUE", value_name = "N", default_value_t = 0)]
    pub host_queue: u32,

    /// How long one request may wait for a host-wide slot before it gets
    /// 503; not counted against the function's timeout.
    #[arg(
        long,
        env = "WISP_HOST_QUEUE_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub host_queue_timeout: Duration,

    /// How guests' code runs: `cranelift` compiles it to machine code;
    /// `pulley` runs it on wasmtime's interpreter (no machine code generated
    /// at run time, for W^X policies and targets without Cranelift; several
    /// times slower). Code compiled for one is recompiled for the other once.
    #[arg(
        long = "engine",
        env = "WISP_ENGINE",
        value_enum,
        default_value = "cranelift"
    )]
    pub code_engine: EngineArg,

    /// Join a cluster: the URL of a NATS server with JetStream (`nats-server
    /// -js`); repeat it (or separate with commas) for several. Every host of
    /// the cluster serves every function; a deploy, rollback or delete on
    /// any of them reaches all.
    #[arg(
        long,
        env = "WISP_CLUSTER",
        value_name = "URL",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    pub cluster: Vec<String>,

    /// This host's name in the cluster (letters, digits, '-', '_') [default:
    /// the machine's host name].
    #[arg(
        long,
        env = "WISP_NODE_NAME",
        value_name = "NAME",
        help_heading = "Cluster"
    )]
    pub node_name: Option<String>,

    /// A file holding the token the NATS server requires.
    #[arg(
        long,
        env = "WISP_CLUSTER_TOKEN_FILE",
        value_name = "PATH",
        help_heading = "Cluster"
    )]
    pub cluster_token_file: Option<PathBuf>,

    /// A NATS credentials file (`.creds`) the server requires.
    #[arg(
        long,
        env = "WISP_CLUSTER_CREDS_FILE",
        value_name = "PATH",
        help_heading = "Cluster"
    )]
    pub cluster_creds_file: Option<PathBuf>,

    /// The cluster key (`wisp cluster keygen FILE` writes one; every host
    /// gets the same): secrets are sealed with it before they reach NATS.
    /// Without it this host cannot set or read secrets.
    #[arg(
        long,
        env = "WISP_CLUSTER_KEY_FILE",
        value_name = "PATH",
        help_heading = "Cluster"
    )]
    pub cluster_key_file: Option<PathBuf>,

    /// How long start-up waits for a NATS server before `wisp serve` stops
    /// with an error.
    #[arg(
        long,
        env = "WISP_CLUSTER_CONNECT_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration,
        help_heading = "Cluster"
    )]
    pub cluster_connect_timeout: Duration,

    /// A public key (the `.pub` file `wisp keygen` wrote) whose signed
    /// precompiled artifacts (`wisp compile --sign`) this host loads; repeat
    /// it (or separate with commas) for several. Without one, precompiled
    /// uploads are refused.
    #[arg(
        long = "trusted-key",
        env = "WISP_TRUSTED_KEYS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,
}

/// `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// Machine code, compiled by Cranelift.
    Cranelift,
    /// wasmtime's Pulley interpreter.
    Pulley,
}

impl From<EngineArg> for wisp_host::CodeEngine {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Cranelift => wisp_host::CodeEngine::Cranelift,
            EngineArg::Pulley => wisp_host::CodeEngine::Pulley,
        }
    }
}

/// Format of the host's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A function to deploy when the host starts (`--deploy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    /// Function name.
    pub name: String,
    /// The artifact.
    pub file: PathBuf,
    /// Routes; empty keeps the function's current routes (or the default
    /// `/{name}/*` for a new function).
    pub routes: Vec<String>,
}

/// A secret argument (`--admin-token`), kept out of `Debug` output.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(s.into())
}

/// Parses `NAME=FILE.wasm[:ROUTE[,ROUTE]...]`. The routes start after the
/// last `:/`, so file paths may contain `:`.
fn parse_preload(s: &str) -> Result<Preload, String> {
    const SHAPE: &str = "expected NAME=FILE.wasm:ROUTE[,ROUTE], e.g. hello=hello.wasm:/hello";
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: no `=` after the name; {SHAPE}"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{s}`: the function name is empty; {SHAPE}"));
    }
    let (file, routes) = match rest.rfind(":/") {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    if file.is_empty() {
        return Err(format!("`{s}`: the file is empty; {SHAPE}"));
    }
    let routes = routes
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            if r.starts_with('/') {
                Ok(r.to_string())
            } else {
                Err(format!(
                    "`{s}`: route `{r}` does not start with `/`; {SHAPE}"
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Preload {
        name: name.to_string(),
        file: PathBuf::from(file),
        routes,
    })
}

fn main() -> ExitCode {
    // `Cli::parse`, with `wisp serve --config FILE` merged in.
    let parsed = match config_file::parse(Cli::command(), std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(config) = parsed.print_config {
        print!("{config}");
        return ExitCode::SUCCESS;
    }
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        // `serve` builds its own multi-threaded runtime.
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::New(args) => new::run(args).map(|()| ExitCode::SUCCESS),
        Command::Cluster(ClusterCommand::Keygen { file }) => {
            wisp_host::cluster::ClusterKey::generate(&file).map(|()| {
                eprintln!(
                    "wrote a cluster key to {}: give it to every host (wisp serve \
                     --cluster-key-file)",
                    file.display()
                );
                ExitCode::SUCCESS
            })
        }
        Command::Keygen { name } => wisp_host::signed::generate_keys(&name).map(|(public, id)| {
            eprintln!(
                "wrote the signing key {} (keep it private) and the public key {} (key id \
                 {id}): sign with `wisp compile --sign {}`, and start hosts with \
                 `wisp serve --trusted-key {}`",
                name.display(),
                public.display(),
                name.display(),
                public.display()
            );
            ExitCode::SUCCESS
        }),
        Command::Compile(args) => compile::run(args).map(|()| ExitCode::SUCCESS),
        // A client command is a handful of sequential HTTP calls; one thread
        // is plenty.
        Command::Client(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(client::run(command)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use secrecy::ExposeSecret;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["wisp", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.memory, 128 << 20);
        assert_eq!(args.max_body, 6 << 20);
        assert_eq!(args.max_upload, None);
        assert_eq!(args.cache_capacity, None);
        assert!(!args.small);
        assert_eq!(args.grace, Duration::from_secs(30));
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn serve_parses_units_and_preloads() {
        let cli = Cli::try_parse_from([
            "wisp",
            "serve",
            "--default-timeout",
            "500ms",
            "--default-memory",
            "64M",
            "--log-format",
            "json",
            "--deploy",
            "hello=hello.wasm:/hello",
            "--deploy",
            "api=api.wasm:/api/*,/v2/*",
            "--admin-token",
            "s3cret-s3cret-s3cret",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.timeout, Duration::from_millis(500));
        assert_eq!(args.memory, 64 << 20);
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.deploy.len(), 2);
        assert_eq!(args.deploy[1].routes, ["/api/*", "/v2/*"]);
        let token = args.admin_token.as_ref().map(|t| t.expose_secret());
        assert_eq!(token, Some("s3cret-s3cret-s3cret"));
        assert!(!format!("{args:?}").contains("s3cret"));
    }

    #[test]
    fn parses_preloads() {
        assert_eq!(
            parse_preload("hello=hello.wasm:/hello"),
            Ok(Preload {
                name: "hello".into(),
                file: "hello.wasm".into(),
                routes: vec!["/hello".into()],
            })
        );
        let p = parse_preload("api=C:/wasm/api.wasm:/api/*, /v2").unwrap();
        assert_eq!(p.file, PathBuf::from("C:/wasm/api.wasm"));
        assert_eq!(p.routes, ["/api/*", "/v2"]);
        let p = parse_preload("hello=target/hello.wasm").unwrap();
        assert!(p.routes.is_empty());
    }

    #[test]
    fn refuses_bad_preloads() {
        for bad in [
            "hello.wasm",
            "=hello.wasm:/x",
            "hello=",
            "hello=:/x",
            "h=h.wasm:/x,y",
        ] {
            assert!(parse_preload(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
