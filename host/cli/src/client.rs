//! The client commands: each one a call to the admin API of a running host
//! (`/v1/...`, bearer token), with the answer printed for people or, with
//! `--json`, as the server's JSON (pretty-printed).
//!
//! Any error the server answers (`{"error": {"code", "message"}}`) becomes an
//! `anyhow` error holding the server's message, which `main` prints as
//! `error: <message>` before exiting with status 1.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use wisp_host::{FunctionInfo, FunctionSummary, VersionInfo};

use crate::units::{format_bytes, format_ms, parse_duration, parse_size};

/// How long to wait for the admin API to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of an admin call other than deploy and invoke.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of a deploy: the host compiles the component before it answers,
/// which takes seconds for a large one on a slow machine.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Size of the chunks an artifact is uploaded in (and the progress bar
/// advances by).
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Every WebAssembly binary, module or component, starts with these bytes.
const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// Characters of a sha256 shown in tables.
const SHORT_SHA: usize = 12;

const NO_TOKEN: &str =
    "no admin token: set WISP_ADMIN_TOKEN or run from the directory that holds wisp-data/";

/// The commands that talk to a running host.
#[derive(Subcommand)]
pub enum Command {
    /// Deploy a new version of a function: a component, a wasm32-wasip1
    /// module, or a crate built from source (--from).
    Deploy(DeployArgs),
    /// List the deployed functions.
    List(ListArgs),
    /// Show a function: routes, environment, limits and versions.
    Info(ShowArgs),
    /// List the versions of a function.
    Versions(ShowArgs),
    /// Make an earlier version of a function active again.
    Rollback(RollbackArgs),
    /// Delete a function and all its versions.
    Delete(NameArgs),
    /// Call a function through the admin API, whatever its routes.
    Invoke(InvokeArgs),
    /// Show a function's logs: its stdout, stderr and log lines.
    Logs(crate::logs::LogsArgs),
    /// Read and write a function's key-value data.
    #[command(subcommand)]
    Kv(crate::kv::KvCommand),
    /// Set, list and unset a function's settings and secrets.
    #[command(subcommand)]
    Config(crate::config::ConfigCommand),
    /// Publish an event on a topic (acknowledged once durable).
    Publish(crate::events::PublishArgs),
    /// Subscribe a function to a topic: it gets each event through its event
    /// handler, or as a POST if it has none.
    Subscribe(crate::events::SubscribeArgs),
    /// Remove a function's subscription to a topic.
    Unsubscribe(crate::events::UnsubscribeArgs),
    /// List subscriptions (of one function).
    Subscriptions(crate::events::SubscriptionsArgs),
    /// Inspect events; list, redrive and purge dead deliveries.
    #[command(subcommand)]
    Events(crate::events::EventsCommand),
    /// Run functions on cron schedules.
    #[command(subcommand)]
    Schedule(crate::events::ScheduleCommand),
    /// Batch jobs: one event per array index, with retries.
    #[command(subcommand)]
    Job(crate::jobs::JobCommand),
}

impl Command {
    fn connection(&self) -> &Connection {
        match self {
            Command::Deploy(a) => &a.connection,
            Command::List(a) => &a.connection,
            Command::Info(a) | Command::Versions(a) => &a.connection,
            Command::Rollback(a) => &a.connection,
            Command::Delete(a) => &a.connection,
            Command::Invoke(a) => &a.connection,
            Command::Logs(a) => &a.connection,
            Command::Kv(c) => c.connection(),
            Command::Config(c) => c.connection(),
            Command::Publish(a) => &a.connection,
            Command::Subscribe(a) => &a.connection,
            Command::Unsubscribe(a) => &a.connection,
            Command::Subscriptions(a) => &a.connection,
            Command::Events(c) => c.connection(),
            Command::Schedule(c) => c.connection(),
            Command::Job(c) => c.connection(),
        }
    }
}

/// Where the admin API is and how to authenticate to it.
#[derive(Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// URL of the admin API.
    #[arg(
        long,
        env = "WISP_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    admin_url: String,

    /// Admin bearer token [default: the contents of <DATA_DIR>/admin-token].
    #[arg(
        long,
        env = "WISP_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

    /// Data directory of a local host, where its admin token is read from
    /// when no token is given.
    #[arg(
        long,
        env = "WISP_DATA_DIR",
        default_value = "./wisp-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
}

/// `wisp deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// Function name.
    name: String,
    /// The WebAssembly file to deploy: a `wasi:http/proxy` component or a
    /// `wasm32-wasip1` module (run CGI-style).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    file: Option<PathBuf>,
    /// Build the function crate at PATH (its directory or Cargo.toml) with
    /// `cargo build --release --target wasm32-wasip2` and deploy what it
    /// produced, instead of FILE.
    #[arg(long, value_name = "PATH")]
    from: Option<PathBuf>,
    /// Route of the function (`/hello`; `/api/*` for a prefix). Repeatable;
    /// without any, the routes of the active version are kept.
    #[arg(long = "route", value_name = "ROUTE")]
    routes: Vec<String>,
    /// Environment variable of the function. Repeatable; without any, the
    /// environment of the active version is kept.
    // Checked in `deploy_query`, not by clap, so a mistake is a one-line
    // `error:` like every other.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Deadline of one invocation (30s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Memory cap of one invocation (128MiB, 64M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Request-body cap (6MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_body: Option<u64>,
    /// Also pass the function's plain settings (`wisp config set`, not its
    /// secrets) as environment variables (`--config-env=false` turns it
    /// off again) [default: as the active version, else off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    config_env: Option<bool>,
    /// Allow outbound HTTP requests to a host: `https://api.example.com`,
    /// `*.example.com`, `host:port`, `host:*`. Repeatable; without any, the
    /// allow-list of the active version is kept (outbound HTTP is denied by
    /// default).
    #[arg(long = "allow-outbound", value_name = "HOST")]
    allow_outbound: Vec<String>,
    /// For a preview-1 (CGI) module: grant the directory PATH, relative to
    /// the host's `<data-dir>/static/`, read-only at `/static` in the guest
    /// (`--static-dir ""` removes the grant) [default: as the active
    /// version, else none].
    #[arg(long, value_name = "PATH")]
    static_dir: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp list`.
#[derive(Args)]
pub struct ListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp info` and `wisp versions`.
#[derive(Args)]
pub struct ShowArgs {
    /// Function name.
    name: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp rollback`.
#[derive(Args)]
pub struct RollbackArgs {
    /// Function name.
    name: String,
    /// The version to make active [default: the newest version older than the
    /// active one].
    version: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp delete`.
#[derive(Args)]
pub struct NameArgs {
    /// Function name.
    name: String,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp invoke`.
#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// HTTP method [default: GET, or POST with --data].
    #[arg(short = 'X', long, value_parser = parse_method)]
    method: Option<Method>,
    /// Path and query the function sees.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request body: text, `@FILE` for a file's contents, `@-` for stdin.
    #[arg(short, long, value_name = "DATA")]
    data: Option<String>,
    /// Request header. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Print the status line and headers before the body.
    #[arg(short, long)]
    include: bool,
    /// Queue the invocation instead (an event for the event handler, or a
    /// POST; retried on failure) and print its event id once it is durable.
    #[arg(long = "async", conflicts_with_all = ["include", "method"])]
    asynchronous: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Runs a client command.
pub async fn run(command: Command) -> Result<()> {
    let api = Api::new(ClientConfig::from_connection(command.connection())?)?;
    match command {
        Command::Deploy(args) => deploy(&api, args).await,
        Command::List(args) => list(&api, args).await,
        Command::Info(args) => info(&api, args).await,
        Command::Versions(args) => versions(&api, args).await,
        Command::Rollback(args) => rollback(&api, args).await,
        Command::Delete(args) => delete(&api, args).await,
        Command::Invoke(args) => invoke(&api, args).await,
        Command::Logs(args) => crate::logs::run(&api, args).await,
        Command::Kv(c) => crate::kv::run(&api, c).await,
        Command::Config(c) => crate::config::run(&api, c).await,
        Command::Publish(args) => crate::events::publish(&api, args).await,
        Command::Subscribe(args) => crate::events::subscribe(&api, args).await,
        Command::Unsubscribe(args) => crate::events::unsubscribe(&api, args).await,
        Command::Subscriptions(args) => crate::events::subscriptions(&api, args).await,
        Command::Events(c) => crate::events::run(&api, c).await,
        Command::Schedule(c) => crate::events::schedule(&api, c).await,
        Command::Job(c) => crate::jobs::run(&api, c).await,
    }
}

// ---------------------------------------------------------------------------
// The admin API

/// Where the admin API is and the token to call it with. Deliberately not
/// `Debug`: the token must never end up in output.
pub struct ClientConfig {
    /// Base URL of the admin API; `/v1/...` is appended to its path.
    pub base_url: Url,
    /// Bearer token.
    pub token: String,
}

impl ClientConfig {
    /// Takes the token from `--token` / `WISP_ADMIN_TOKEN`, else from the
    /// `admin-token` file a host writes into its data directory.
    fn from_connection(connection: &Connection) -> Result<ClientConfig> {
        let base_url = parse_admin_url(&connection.admin_url)?;
        let token = match connection.token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => token.to_string(),
            _ => read_token_file(&connection.data_dir)?,
        };
        Ok(ClientConfig { base_url, token })
    }
}

fn parse_admin_url(s: &str) -> Result<Url> {
    let mut url = Url::parse(s).with_context(|| format!("invalid admin URL `{s}`"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        bail!("invalid admin URL `{s}`: expected http://HOST:PORT or https://HOST:PORT");
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn read_token_file(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        Ok(_) => bail!("{NO_TOKEN} ({} is empty)", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{NO_TOKEN} (there is no {})", path.display())
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the admin token from {}", path.display()))
        }
    }
}

/// A small typed wrapper over the admin API: one method per endpoint.
/// Endpoints answering JSON return it as a [`Value`], so `--json` prints
/// every field the server sent, even ones this CLI does not know; [`typed`]
/// reads it into the API types.
pub struct Api {
    http: reqwest::Client,
    config: ClientConfig,
}

impl Api {
    /// A client for the admin API described by `config`.
    pub fn new(config: ClientConfig) -> Result<Api> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("wisp-cli/", env!("CARGO_PKG_VERSION")));
        // An `http_proxy` in the environment must not capture calls to a
        // host on this machine, which is where the admin API usually is.
        if is_loopback(&config.base_url) {
            builder = builder.no_proxy();
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api { http, config })
    }

    /// `POST /v1/functions/{name}`: uploads `body` (`len` bytes) as a new
    /// version; `query` holds the route, env and limit parameters.
    pub async fn deploy(
        &self,
        name: &str,
        query: &[(&str, String)],
        body: reqwest::Body,
        len: u64,
    ) -> Result<Value> {
        let request = self
            .request(Method::POST, &["v1", "functions", name])
            .timeout(DEPLOY_TIMEOUT)
            .query(query)
            .header(CONTENT_TYPE, "application/wasm")
            // Sent although the body is a stream, so the host can refuse an
            // oversized upload before reading it.
            .header(CONTENT_LENGTH, len)
            .body(body);
        self.call_json(request).await
    }

    /// `GET /v1/functions`.
    pub async fn list(&self) -> Result<Value> {
        self.call_json(self.request(Method::GET, &["v1", "functions"]))
            .await
    }

    /// `GET /v1/functions/{name}`.
    pub async fn info(&self, name: &str) -> Result<Value> {
        self.call_json(self.request(Method::GET, &["v1", "functions", name]))
            .await
    }

    /// `GET /v1/functions/{name}/versions`.
    pub async fn versions(&self, name: &str) -> Result<Value> {
        self.call_json(self.request(Method::GET, &["v1", "functions", name, "versions"]))
            .await
    }

    /// `POST /v1/functions/{name}/rollback`; without a version, the server
    /// picks the newest one older than the active one.
    pub async fn rollback(&self, name: &str, version: Option<u64>) -> Result<Value> {
        let body = match version {
            Some(version) => json!({ "version": version }),
            None => json!({}),
        };
        let request = self
            .request(Method::POST, &["v1", "functions", name, "rollback"])
            .json(&body);
        self.call_json(request).await
    }

    /// `GET /v1/functions/{name}/logs?...`.
    pub async fn logs(&self, name: &str, query: &[(&str, String)]) -> Result<Value> {
        let request = self
            .request(Method::GET, &["v1", "functions", name, "logs"])
            .query(query);
        self.call_json(request).await
    }

    /// `DELETE /v1/functions/{name}`.
    pub async fn delete(&self, name: &str) -> Result<Value> {
        self.call_json(self.request(Method::DELETE, &["v1", "functions", name]))
            .await
    }

    /// `{method} /v1/functions/{name}/invoke?path=...`. The response is the
    /// function's, returned whatever its status.
    pub async fn invoke(&self, name: &str, invocation: Invocation) -> Result<Response> {
        let mut request = self
            .http
            .request(
                invocation.method,
                self.url(&["v1", "functions", name, "invoke"]),
            )
            .bearer_auth(&self.config.token)
            .query(&[("path", invocation.path)]);
        // No request timeout: the host enforces the function's own deadline.
        for (name, value) in invocation.headers {
            request = request.header(name, value);
        }
        if let Some(body) = invocation.body {
            request = request.body(body);
        }
        self.send(request).await
    }

    /// The URL of an endpoint: the base URL's path plus `segments`, each
    /// percent-encoded (so a function name can never escape its segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .expect("parse_admin_url refuses URLs that cannot be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    pub(crate) fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, self.url(segments))
            .bearer_auth(&self.config.token)
            .timeout(ADMIN_TIMEOUT)
    }

    /// Sends `request`; a failure to get any answer becomes a clear message.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Sends `request` and reads a successful JSON answer; an error status
    /// becomes the server's message.
    pub(crate) async fn call_json(&self, request: RequestBuilder) -> Result<Value> {
        let response = self.send(request).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(match wisp_error_message(&body) {
                Some(message) => anyhow!(message),
                None => anyhow!("the admin API answered {status}{}", excerpt(&body)),
            });
        }
        serde_json::from_slice(&body).context("the admin API answered something other than JSON")
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        let url = self.config.base_url.as_str().trim_end_matches('/');
        if e.is_connect() {
            anyhow!("cannot reach the Wisp admin API at {url}: is `wisp serve` running?")
        } else if e.is_timeout() {
            anyhow!("the Wisp admin API at {url} did not answer in time")
        } else {
            anyhow::Error::new(e).context(format!("talking to the Wisp admin API at {url} failed"))
        }
    }
}

/// A request for [`Api::invoke`].
pub struct Invocation {
    /// The method the function sees.
    pub method: Method,
    /// Path and query the function sees.
    pub path: String,
    /// Headers the function sees (besides those the host adds).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Option<Bytes>,
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed: `[::1]`.
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The shape of every error the host answers.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(default)]
    invocation_id: Option<String>,
}

/// The message of a Wisp error body, with its invocation id if any; `None`
/// when `body` is not one.
pub(crate) fn wisp_error_message(body: &[u8]) -> Option<String> {
    let ErrorEnvelope { error } = serde_json::from_slice(body).ok()?;
    Some(match error.invocation_id {
        Some(id) => format!("{} (invocation {id})", error.message),
        None => error.message,
    })
}

/// `": <first line>"` of a non-Wisp error body, for context, or nothing.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let line = text.trim().lines().next().unwrap_or_default();
    if line.is_empty() {
        return String::new();
    }
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!(": {}…", &line[..cut]),
        None => format!(": {line}"),
    }
}

/// Reads a JSON answer into one of the API types.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .context("unexpected answer from the admin API (is the CLI older than the host?)")
}

// ---------------------------------------------------------------------------
// Commands

async fn deploy(api: &Api, args: DeployArgs) -> Result<()> {
    let path = match (&args.file, &args.from) {
        (Some(file), _) => file.clone(),
        (None, Some(crate_path)) => crate::source::build(crate_path)?,
        (None, None) => bail!("deploy needs FILE or --from PATH"),
    };
    let (file, len) = open_wasm(&path).await?;
    let query = deploy_query(&args)?;
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| upload_progress(len));
    let body = upload_body(file, progress.clone());
    let answer = api.deploy(&args.name, &query, body, len).await;
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    let info: FunctionInfo = typed(answer?)?;
    write_stdout(&deploy_summary(&info))
}

/// Opens `path` and checks that it is WebAssembly before anything is sent;
/// returns the file, rewound, and its length.
async fn open_wasm(path: &Path) -> Result<(tokio::fs::File, u64)> {
    let shown = path.display();
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{shown}: no such file"),
        Err(e) => return Err(e).with_context(|| format!("cannot open {shown}")),
    };
    let metadata = file
        .metadata()
        .await
        .with_context(|| format!("cannot read {shown}"))?;
    if !metadata.is_file() {
        bail!("{shown} is not a file");
    }
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic).await {
        // Shorter than the magic: not wasm either, said below.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
    }
    if &magic != WASM_MAGIC {
        bail!(
            "{shown} is not a WebAssembly binary (it does not start with `\\0asm`); \
             build a component, e.g. with `cargo build --target wasm32-wasip2`"
        );
    }
    file.rewind()
        .await
        .with_context(|| format!("cannot read {shown}"))?;
    Ok((file, metadata.len()))
}

/// The query parameters of a deploy, `route` and `env` repeated.
fn deploy_query(args: &DeployArgs) -> Result<Vec<(&'static str, String)>> {
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(args.routes.iter().map(|r| ("route", r.clone())));
    for env in &args.env {
        check_env(env).map_err(|e| anyhow!("--env {e}"))?;
        query.push(("env", env.clone()));
    }
    if let Some(timeout) = args.timeout {
        let ms = u64::try_from(timeout.as_millis()).context("--timeout is too large")?;
        query.push(("timeout_ms", ms.to_string()));
    }
    if let Some(memory) = args.memory {
        query.push(("memory_bytes", memory.to_string()));
    }
    if let Some(max_body) = args.max_body {
        query.push(("max_body_bytes", max_body.to_string()));
    }
    if let Some(on) = args.config_env {
        query.push(("config_env", on.to_string()));
    }
    query.extend(
        args.allow_outbound
            .iter()
            .map(|h| ("allow_outbound", h.clone())),
    );
    if let Some(dir) = &args.static_dir {
        query.push(("static_dir", dir.clone()));
    }
    Ok(query)
}

/// A progress bar over the upload that turns into a "compiling…" spinner
/// once the last byte is read: the host compiles before it answers.
fn upload_progress(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "uploading {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len).with_style(style)
}

fn switch_to_spinner(progress: &ProgressBar) {
    let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    progress.set_style(style);
    progress.set_message("compiling…");
    progress.enable_steady_tick(Duration::from_millis(100));
}

/// The artifact as a streamed request body, advancing `progress`.
fn upload_body(file: tokio::fs::File, progress: Option<ProgressBar>) -> reqwest::Body {
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        let mut chunk = BytesMut::with_capacity(UPLOAD_CHUNK);
        let read = file.read_buf(&mut chunk).await?;
        Ok::<_, std::io::Error>((read > 0).then(|| (chunk.freeze(), file)))
    })
    .inspect_ok(move |chunk| {
        if let Some(progress) = &progress {
            progress.inc(chunk.len() as u64);
            if progress
                .length()
                .is_some_and(|len| progress.position() >= len)
            {
                switch_to_spinner(progress);
            }
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// `deployed hello version 3 (sha256 abcd1234abcd…, 1.2 MiB)` and the routes.
fn deploy_summary(info: &FunctionInfo) -> String {
    let mut out = format!("deployed {} version {}", info.name, info.active_version);
    if let Some(active) = info
        .versions
        .iter()
        .find(|v| v.version == info.active_version)
    {
        let _ = write!(
            out,
            " (sha256 {}…, {})",
            short_sha(&active.sha256),
            format_bytes(active.size_bytes)
        );
    }
    out.push('\n');
    for route in &info.routes {
        let _ = writeln!(out, "  route {route}");
    }
    out
}

async fn list(api: &Api, args: ListArgs) -> Result<()> {
    let answer = api.list().await?;
    if args.json {
        return print_json(&answer);
    }
    let functions: Vec<FunctionSummary> = typed(answer)?;
    if functions.is_empty() {
        eprintln!("no functions deployed");
    } else {
        write_stdout(&list_table(&functions))?;
    }
    Ok(())
}

fn list_table(functions: &[FunctionSummary]) -> String {
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.active_version.to_string(),
                join_or_none(&f.routes),
                f.versions.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "ROUTES", "VERSIONS"], &rows)
}

async fn info(api: &Api, args: ShowArgs) -> Result<()> {
    let answer = api.info(&args.name).await?;
    if args.json {
        return print_json(&answer);
    }
    write_stdout(&info_text(&typed(answer)?))
}

fn info_text(info: &FunctionInfo) -> String {
    const LABEL_WIDTH: usize = 16;
    let env: Vec<String> = info.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let limits = format!(
        "timeout {}, memory {}, max body {}",
        format_ms(info.limits.timeout_ms),
        format_bytes(info.limits.memory_bytes),
        format_bytes(info.limits.max_body_bytes)
    );
    let fields = [
        ("name", info.name.clone()),
        ("active version", info.active_version.to_string()),
        ("handles", describe_handlers(&info.handlers)),
        ("routes", join_or_none(&info.routes)),
        // One variable a line, aligned under the first.
        ("env", lines_or_none(&env, LABEL_WIDTH)),
        ("limits", limits),
        ("outbound", join_or_none(&info.allow_outbound)),
        ("created", info.created_at.clone()),
        ("updated", info.updated_at.clone()),
    ];
    let mut out = String::new();
    for (label, value) in fields {
        let _ = writeln!(out, "{label:<LABEL_WIDTH$}{value}");
    }
    out.push_str("versions\n");
    for line in versions_table(&info.versions).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

async fn versions(api: &Api, args: ShowArgs) -> Result<()> {
    let answer = api.versions(&args.name).await?;
    if args.json {
        return print_json(&answer);
    }
    let versions: Vec<VersionInfo> = typed(answer)?;
    write_stdout(&versions_table(&versions))
}

fn versions_table(versions: &[VersionInfo]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                if v.active { "*" } else { "" }.to_string(),
                short_sha(&v.sha256).to_string(),
                format_bytes(v.size_bytes),
                v.created_at.clone(),
            ]
        })
        .collect();
    table(&["VERSION", "ACTIVE", "SHA256", "SIZE", "CREATED"], &rows)
}

async fn rollback(api: &Api, args: RollbackArgs) -> Result<()> {
    let info: FunctionInfo = typed(api.rollback(&args.name, args.version).await?)?;
    write_stdout(&format!(
        "{}: version {} is now active\n",
        info.name, info.active_version
    ))
}

async fn delete(api: &Api, args: NameArgs) -> Result<()> {
    api.delete(&args.name).await?;
    write_stdout(&format!("deleted {}\n", args.name))
}

async fn invoke(api: &Api, args: InvokeArgs) -> Result<()> {
    if !args.path.starts_with('/') {
        bail!("--path must start with `/` (got `{}`)", args.path);
    }
    let body = match &args.data {
        Some(data) => Some(read_data(DataSource::parse(data)).await?),
        None => None,
    };
    if args.asynchronous {
        let invocation = Invocation {
            method: Method::POST,
            path: args.path,
            headers: args.headers,
            body,
        };
        return crate::events::invoke_async(api, &args.name, invocation).await;
    }
    let method = match args.method {
        Some(method) => method,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let invocation = Invocation {
        method,
        path: args.path,
        headers: args.headers,
        body,
    };
    let mut response = api.invoke(&args.name, invocation).await?;
    let status = response.status();
    let mut stdout = std::io::stdout();
    if args.include {
        write_head(&mut stdout, &response)?;
    }
    if status.is_client_error() || status.is_server_error() {
        let body = response.bytes().await.unwrap_or_default();
        let wisp_error = wisp_error_message(&body);
        // The host's own errors (unknown function, timeout, trap…) go to
        // stderr as a message; a function's error response is its output.
        if args.include || wisp_error.is_none() {
            stdout.write_all(&body)?;
        }
        stdout.flush()?;
        return Err(match wisp_error {
            Some(message) => anyhow!(message),
            None => anyhow!("{} answered {status}", args.name),
        });
    }
    // Streamed, so a large or slow answer shows up as it comes.
    while let Some(chunk) = response.chunk().await.context("the response broke off")? {
        stdout.write_all(&chunk)?;
    }
    stdout.flush()?;
    Ok(())
}

/// The status line and headers, as `curl -i` shows them.
fn write_head(out: &mut impl std::io::Write, response: &Response) -> std::io::Result<()> {
    writeln!(out, "{:?} {}", response.version(), response.status())?;
    for (name, value) in response.headers() {
        write!(out, "{name}: ")?;
        out.write_all(value.as_bytes())?;
        writeln!(out)?;
    }
    writeln!(out)
}

/// Where `--data` comes from.
#[derive(Debug, PartialEq, Eq)]
enum DataSource<'a> {
    Literal(&'a str),
    File(&'a Path),
    Stdin,
}

impl<'a> DataSource<'a> {
    fn parse(data: &'a str) -> DataSource<'a> {
        match data.strip_prefix('@') {
            Some("-") => DataSource::Stdin,
            Some(path) => DataSource::File(Path::new(path)),
            None => DataSource::Literal(data),
        }
    }
}

/// Reads a `--data` argument: text, `@FILE` or `@-` (stdin).
pub(crate) async fn read_data_arg(data: &str) -> Result<Bytes> {
    read_data(DataSource::parse(data)).await
}

async fn read_data(source: DataSource<'_>) -> Result<Bytes> {
    Ok(match source {
        DataSource::Literal(text) => Bytes::copy_from_slice(text.as_bytes()),
        DataSource::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read --data file {}", path.display()))?
            .into(),
        DataSource::Stdin => {
            let mut data = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut data)
                .await
                .context("cannot read the request body from stdin")?;
            data.into()
        }
    })
}

// ---------------------------------------------------------------------------
// Argument parsers and output helpers

/// `--env KEY=VALUE`.
fn check_env(s: &str) -> Result<(), String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(()),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// `-H 'Name: value'`.
fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
    if name == AUTHORIZATION {
        return Err(
            "the Authorization header carries the admin token; the function never sees it"
                .to_string(),
        );
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header `{name}` is not valid"))?;
    Ok((name, value))
}

/// `--method`, any case.
fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{s}` is not an HTTP method"))
}

/// Pretty-prints a JSON answer. (Object keys come out sorted: serde_json's
/// `Value` keeps insertion order only with its `preserve_order` feature.)
pub(crate) fn print_json(value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Like `print!`, but a closed stdout (`wisp list | head -1`) is an error,
/// not a panic.
pub(crate) fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn short_sha(sha256: &str) -> &str {
    sha256.get(..SHORT_SHA).unwrap_or(sha256)
}

/// `http requests, events (event handler)` and the like, for `wisp info`.
fn describe_handlers(handlers: &[String]) -> String {
    let described: Vec<&str> = handlers
        .iter()
        .map(|h| match h.as_str() {
            "http" => "http requests",
            "events" => "events (event handler)",
            "cgi" => "http requests (preview-1 module, CGI)",
            other => other,
        })
        .collect();
    if described.is_empty() {
        "(unknown)".into()
    } else {
        described.join(", ")
    }
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

fn lines_or_none(items: &[String], indent: usize) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(&format!("\n{:indent$}", ""))
    }
}

/// Left-aligned columns two spaces apart, a header line first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(token: Option<&str>, data_dir: &Path) -> Connection {
        Connection {
            admin_url: "http://127.0.0.1:9090".into(),
            token: token.map(str::to_string),
            data_dir: data_dir.to_path_buf(),
        }
    }

    #[test]
    fn token_from_option_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig::from_connection(&connection(Some(" abc \n"), dir.path()));
        assert_eq!(config.unwrap().token, "abc");

        let missing = ClientConfig::from_connection(&connection(None, dir.path()));
        let message = format!("{:#}", missing.err().unwrap());
        assert!(message.starts_with(NO_TOKEN), "{message}");

        std::fs::write(dir.path().join("admin-token"), "from-file\n").unwrap();
        let config = ClientConfig::from_connection(&connection(Some(""), dir.path()));
        assert_eq!(config.unwrap().token, "from-file");
    }

    #[test]
    fn admin_urls() {
        assert!(parse_admin_url("http://127.0.0.1:9090").is_ok());
        assert!(parse_admin_url("https://wisp.example/admin/").is_ok());
        assert!(parse_admin_url("127.0.0.1:9090").is_err());
        assert!(parse_admin_url("ftp://host").is_err());
        assert!(parse_admin_url("mailto:me@example.com").is_err());
    }

    #[test]
    fn endpoint_urls_keep_the_base_path_and_encode_names() {
        let api = |base: &str| {
            Api::new(ClientConfig {
                base_url: parse_admin_url(base).unwrap(),
                token: "t".into(),
            })
            .unwrap()
        };
        assert_eq!(
            api("http://127.0.0.1:9090")
                .url(&["v1", "functions"])
                .as_str(),
            "http://127.0.0.1:9090/v1/functions"
        );
        assert_eq!(
            api("https://h/admin/")
                .url(&["v1", "functions", "a/b"])
                .as_str(),
            "https://h/admin/v1/functions/a%2Fb"
        );
    }

    #[test]
    fn loopback_detection() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(is_loopback(&url("http://127.0.0.1:9090")));
        assert!(is_loopback(&url("http://localhost:9090")));
        assert!(is_loopback(&url("http://[::1]:9090")));
        assert!(!is_loopback(&url("http://10.0.0.1:9090")));
        assert!(!is_loopback(&url("https://wisp.example")));
    }

    #[test]
    fn reads_wisp_errors() {
        let body = br#"{"error":{"code":"function_not_found","message":"no function named x"}}"#;
        assert_eq!(wisp_error_message(body).unwrap(), "no function named x");
        let body = br#"{"error":{"code":"timeout","message":"timed out","invocation_id":"abc"}}"#;
        assert_eq!(
            wisp_error_message(body).unwrap(),
            "timed out (invocation abc)"
        );
        assert!(wisp_error_message(b"<html>oops</html>").is_none());
        assert!(wisp_error_message(br#"{"error":"flat"}"#).is_none());
    }

    #[test]
    fn excerpts_of_other_bodies() {
        assert_eq!(excerpt(b""), "");
        assert_eq!(excerpt(b"\n  bad gateway\nmore"), ": bad gateway");
        assert_eq!(excerpt(&[0xff, 0xfe]), "");
        assert_eq!(
            excerpt("x".repeat(300).as_bytes()).chars().count(),
            2 + 200 + 1
        );
    }

    #[test]
    fn parses_invoke_arguments() {
        let (name, value) = parse_header("X-Trace:  abc ").unwrap();
        assert_eq!(name, "x-trace");
        assert_eq!(value, "abc");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header("Authorization: Bearer x").is_err());
        assert_eq!(parse_method("patch"), Ok(Method::PATCH));
        assert!(parse_method("GE T").is_err());
        assert_eq!(DataSource::parse("hi"), DataSource::Literal("hi"));
        assert_eq!(DataSource::parse("@-"), DataSource::Stdin);
        assert_eq!(
            DataSource::parse("@body.json"),
            DataSource::File(Path::new("body.json"))
        );
        assert_eq!(check_env("A=b=c"), Ok(()));
        assert_eq!(check_env("A="), Ok(()));
        assert!(check_env("A").is_err());
        assert!(check_env("=b").is_err());
    }

    #[tokio::test]
    async fn refuses_files_that_are_not_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = open_wasm(&dir.path().join("nope.wasm")).await;
        assert!(format!("{:#}", missing.err().unwrap()).contains("no such file"));

        let text = dir.path().join("hello.wat");
        std::fs::write(&text, "(component)").unwrap();
        let refused = open_wasm(&text).await;
        assert!(format!("{:#}", refused.err().unwrap()).contains("not a WebAssembly binary"));

        let short = dir.path().join("short.wasm");
        std::fs::write(&short, "\0a").unwrap();
        assert!(open_wasm(&short).await.is_err());

        let wasm = dir.path().join("ok.wasm");
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
        let (mut file, len) = open_wasm(&wasm).await.unwrap();
        assert_eq!(len, 8);
        let mut all = Vec::new();
        file.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 8, "the file is rewound after the check");
    }

    #[test]
    fn deploy_query_repeats_routes_and_env() {
        let args = DeployArgs {
            name: "hello".into(),
            file: Some("hello.wasm".into()),
            from: None,
            routes: vec!["/hello".into(), "/api/*".into()],
            env: vec!["A=1".into()],
            timeout: Some(Duration::from_millis(1500)),
            memory: Some(64 << 20),
            max_body: None,
            config_env: None,
            static_dir: None,
            allow_outbound: vec!["https://api.example.com".into()],
            connection: connection(None, Path::new(".")),
        };
        let query = deploy_query(&args).unwrap();
        assert_eq!(
            query,
            [
                ("route", "/hello".to_string()),
                ("route", "/api/*".to_string()),
                ("env", "A=1".to_string()),
                ("timeout_ms", "1500".to_string()),
                ("memory_bytes", (64u64 << 20).to_string()),
                ("allow_outbound", "https://api.example.com".to_string()),
            ]
        );
    }

    fn sample_info() -> FunctionInfo {
        serde_json::from_value(json!({
            "name": "hello",
            "active_version": 2,
            "routes": ["/hello", "/api/*"],
            "env": {"GREETING": "hi", "MODE": "prod"},
            "limits": {"timeout_ms": 30000, "memory_bytes": 134217728, "max_body_bytes": 6291456},
            "created_at": "2025-01-01T00:00:00.000Z",
            "updated_at": "2025-01-02T00:00:00.000Z",
            "versions": [
                {"version": 1, "sha256": "0123456789abcdef0123", "size_bytes": 1258291,
                 "created_at": "2025-01-01T00:00:00.000Z", "active": false,
                 "routes": ["/hello"], "env": {},
                 "limits": {"timeout_ms": 30000, "memory_bytes": 134217728, "max_body_bytes": 6291456}},
                {"version": 2, "sha256": "fedcba9876543210fedc", "size_bytes": 2048,
                 "created_at": "2025-01-02T00:00:00.000Z", "active": true,
                 "routes": ["/hello", "/api/*"], "env": {"GREETING": "hi", "MODE": "prod"},
                 "limits": {"timeout_ms": 30000, "memory_bytes": 134217728, "max_body_bytes": 6291456}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn renders_deploy_summary() {
        assert_eq!(
            deploy_summary(&sample_info()),
            "deployed hello version 2 (sha256 fedcba987654…, 2 KiB)\n  route /hello\n  route /api/*\n"
        );
    }

    #[test]
    fn renders_info() {
        let text = info_text(&sample_info());
        assert!(text.contains("active version  2\n"), "{text}");
        assert!(text.contains("routes          /hello, /api/*\n"), "{text}");
        assert!(
            text.contains("env             GREETING=hi\n                MODE=prod\n"),
            "{text}"
        );
        assert!(
            text.contains("limits          timeout 30s, memory 128 MiB, max body 6 MiB\n"),
            "{text}"
        );
        assert!(text.contains("  2        *       fedcba987654"), "{text}");
    }

    #[test]
    fn renders_tables() {
        let versions = versions_table(&sample_info().versions);
        assert_eq!(
            versions,
            "VERSION  ACTIVE  SHA256        SIZE     CREATED\n\
             1                0123456789ab  1.2 MiB  2025-01-01T00:00:00.000Z\n\
             2        *       fedcba987654  2 KiB    2025-01-02T00:00:00.000Z\n"
        );
        let list = list_table(&[FunctionSummary {
            name: "hello".into(),
            active_version: 2,
            routes: vec![],
            versions: 2,
            updated_at: String::new(),
        }]);
        assert_eq!(
            list,
            "NAME   VERSION  ROUTES  VERSIONS\nhello  2        (none)  2\n"
        );
    }
}
