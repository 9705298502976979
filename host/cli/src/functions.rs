//! The commands on functions and their versions: `wisp deploy`, `wisp
//! list`, `wisp info`, `wisp versions`, `wisp rollback`, `wisp delete`.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use clap::Args;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use wisp_client::reqwest;
use wisp_client::{Client, DeployOptions, FunctionInfo, FunctionSummary, Upload, VersionInfo};

use crate::client::Connection;
use crate::output::{
    describe_handlers, describe_kind, join_or_none, lines_or_none, print_json, short_sha, table,
    write_stdout,
};
use crate::units::{format_bytes, format_ms, parse_duration, parse_size};

/// Size of the chunks an artifact is uploaded in (and the progress bar
/// advances by).
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Every WebAssembly binary, module or component, starts with these bytes.
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// `wisp deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// Function name.
    name: String,
    /// The WebAssembly file to deploy: a WASI 0.2 `wasi:http/proxy` or WASI
    /// 0.3 `wasi:http/service` component, or a `wasm32-wasip1` module (run
    /// CGI-style).
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
    /// Let a request pin one of the serving versions (the active one, or
    /// one an alias points to) with the `wisp-version: N` header, for
    /// trying a version before it gets traffic (`--version-pinning=false`
    /// turns it off) [default: as the active version, else off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    version_pinning: Option<bool>,
    /// Who may invoke the function on the data plane: `public` (anyone) or
    /// `key` (a request needs one of its invoke keys, `wisp key create`)
    /// [default: as the active version, else public].
    #[arg(long, value_name = "public|key")]
    auth: Option<String>,
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
    /// Invocations of the function running at once, at most the host's
    /// --max-in-flight [default: as the active version, else the host's
    /// per-function share].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Requests that may wait for a slot when --concurrency invocations
    /// run; past them the answer is 429 (0: 429 at once) [default: as the
    /// active version, else 0].
    #[arg(long, value_name = "N")]
    queue: Option<u32>,
    /// How long one request may wait in the queue before it gets 429; not
    /// counted against --timeout [default: as the active version, else
    /// 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    queue_timeout: Option<Duration>,
    /// For a WASI 0.3 component: one instance serves N requests before it
    /// is retired, or a count picked at random between A and B for each
    /// instance (`--reuse 1000`, `--reuse 100..1000`); `--reuse 1` turns it
    /// off. Requests on one instance share its globals and memory; each
    /// serving thread keeps its own instances (see the README) [default: as
    /// the active version, else a fresh instance per request].
    #[arg(long, value_name = "N|A..B")]
    reuse: Option<String>,
    /// With --reuse: requests one instance serves at once [default: as the
    /// active version, else 1].
    #[arg(long, value_name = "C")]
    reuse_concurrency: Option<u32>,
    /// With --reuse: how long an idle instance is kept for the next request
    /// (10s, 1m) [default: as the active version, else 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Requests the function takes on the data plane: N/s, N/m or N/h,
    /// optionally with a burst (`100/s,burst=200`; the default burst is the
    /// rate per second, at least 1); past it the answer is 429 with
    /// Retry-After. `none` removes it [default: as the active version, else
    /// none].
    #[arg(long, value_name = "N/s|N/m|N/h[,burst=B]")]
    rate_limit: Option<String>,
    /// Let browsers on ORIGIN call the function (`https://app.example.com`,
    /// or `*`): the host answers their CORS preflights without running it
    /// and adds Access-Control-Allow-Origin to its responses. Repeatable;
    /// `none` removes CORS [default: as the active version, else none].
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// With --cors-origin: allow credentials (cookies, authorization); not
    /// with `*` (`--cors-credentials=false` turns it off) [default: as the
    /// active version, else off].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    cors_credentials: Option<bool>,
    /// Serve the routes only to requests for HOST (`api.example.com`,
    /// `*.example.com`; port ignored): several sites on one listener.
    /// Repeatable; `none` removes the hosts [default: as the active
    /// version, else any host].
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// `wisp list`.
#[derive(Args)]
pub struct ListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
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
    pub(crate) connection: Connection,
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
    pub(crate) connection: Connection,
}

/// `wisp delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// Function name.
    name: String,
    /// Delete it even if it has aliases (their routes stop serving).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

pub(crate) async fn deploy(api: &Client, args: DeployArgs) -> Result<()> {
    let path = match (&args.file, &args.from) {
        (Some(file), _) => file.clone(),
        (None, Some(crate_path)) => crate::source::build(crate_path)?,
        (None, None) => bail!("deploy needs FILE or --from PATH"),
    };
    let (file, len) = open_wasm(&path).await?;
    let options = deploy_options(&args)?;
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| upload_progress(len));
    let body = upload_body(file, progress.clone());
    let answer = api
        .deploy(&args.name, Upload::stream(body, len), &options)
        .await;
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    write_stdout(&deploy_summary(&answer?))
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
    let mut magic = [0u8; wisp_host::signed::MAGIC.len()];
    match file.read_exact(&mut magic).await {
        // Shorter than the magic: not wasm either, said below.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
    }
    // A signed precompiled artifact (`wisp compile`) goes up as it is: the
    // host checks its signature.
    if !magic.starts_with(WASM_MAGIC) && !wisp_host::signed::is_signed_artifact(&magic) {
        bail!(
            "{shown} is not a WebAssembly binary (it does not start with `\\0asm`) nor a \
             signed precompiled artifact (`wisp compile`); build a component, e.g. with `cargo \
             build --target wasm32-wasip2`"
        );
    }
    file.rewind()
        .await
        .with_context(|| format!("cannot read {shown}"))?;
    Ok((file, metadata.len()))
}

/// What the deploy sets besides the artifact.
fn deploy_options(args: &DeployArgs) -> Result<DeployOptions> {
    for env in &args.env {
        check_env(env).map_err(|e| anyhow!("--env {e}"))?;
    }
    let timeout_ms = match args.timeout {
        Some(timeout) => {
            Some(u64::try_from(timeout.as_millis()).context("--timeout is too large")?)
        }
        None => None,
    };
    let queue_timeout_ms = match args.queue_timeout {
        Some(wait) => {
            Some(u64::try_from(wait.as_millis()).context("--queue-timeout is too large")?)
        }
        None => None,
    };
    Ok(DeployOptions {
        routes: args.routes.clone(),
        env: args.env.clone(),
        timeout_ms,
        memory_bytes: args.memory,
        max_body_bytes: args.max_body,
        allow_outbound: args.allow_outbound.clone(),
        config_env: args.config_env,
        version_pinning: args.version_pinning,
        auth: args.auth.clone(),
        static_dir: args.static_dir.clone().into(),
        concurrency: args.concurrency,
        queue: args.queue,
        queue_timeout_ms,
        reuse: args.reuse.clone(),
        reuse_concurrency: args.reuse_concurrency,
        idle_timeout_ms: match args.idle_timeout {
            Some(d) => Some(u64::try_from(d.as_millis()).context("--idle-timeout is too large")?),
            None => None,
        },
        rate_limit: args.rate_limit.clone(),
        cors_origin: args.cors_origins.clone(),
        cors_credentials: args.cors_credentials,
        hosts: args.hosts.clone(),
        ..DeployOptions::default()
    })
}

/// `--env KEY=VALUE`.
fn check_env(s: &str) -> Result<(), String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(()),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
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
    for route in routes_on(&info.hosts, &info.routes) {
        let _ = writeln!(out, "  route {route}");
    }
    out
}

pub(crate) async fn list(api: &Client, args: ListArgs) -> Result<()> {
    let functions = api.list().await?;
    if args.json {
        return print_json(&functions);
    }
    if functions.is_empty() {
        eprintln!("no functions deployed");
    } else {
        write_stdout(&list_table(&functions))?;
    }
    Ok(())
}

/// `wisp hosts`.
pub(crate) async fn hosts(api: &Client, args: ListArgs) -> Result<()> {
    let hosts = api.hosts().await?;
    if args.json {
        return print_json(&hosts);
    }
    if hosts.is_empty() {
        eprintln!("this host is not in a cluster (wisp serve --cluster)");
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.node.clone(),
                h.version.clone(),
                h.data_url.clone(),
                h.admin_url.clone(),
                format!(
                    "{:.1}s ago",
                    now.saturating_sub(h.seen_at_ms) as f64 / 1000.0
                ),
            ]
        })
        .collect();
    write_stdout(&table(&["NODE", "VERSION", "DATA", "ADMIN", "SEEN"], &rows))
}

fn list_table(functions: &[FunctionSummary]) -> String {
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.active_version.to_string(),
                join_or_none(&routes_on(&f.hosts, &f.routes)),
                f.versions.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "ROUTES", "VERSIONS"], &rows)
}

pub(crate) async fn info(api: &Client, args: ShowArgs) -> Result<()> {
    let info = api.info(&args.name).await?;
    if args.json {
        return print_json(&info);
    }
    write_stdout(&info_text(&info))
}

/// How a function's instances are used, for `wisp info`.
fn describe_reuse(reuse: Option<&wisp_host::Reuse>) -> String {
    match reuse {
        None => "a fresh instance per request".into(),
        Some(r) => {
            let count = if r.min == r.max {
                format!("{} requests", r.min)
            } else {
                format!("{} to {} requests", r.min, r.max)
            };
            format!(
                "reused: {count} each, {} at once, kept {} when idle",
                r.concurrency,
                format_ms(r.idle_timeout_ms)
            )
        }
    }
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
    // `live → 7 (90%), 8 (10%) at /hello`, one alias a line.
    let aliases: Vec<String> = info
        .aliases
        .iter()
        .map(|a| {
            let shares: Vec<String> = match a.shares.as_slice() {
                [only] => vec![only.version.to_string()],
                all => all
                    .iter()
                    .map(|s| format!("{} ({}%)", s.version, s.percent))
                    .collect(),
            };
            let at = match a.routes.as_slice() {
                [] => String::new(),
                r => format!(" at {}", r.join(" ")),
            };
            format!("{} → {}{at}", a.name, shares.join(", "))
        })
        .collect();
    let fields = [
        ("name", info.name.clone()),
        ("active version", info.active_version.to_string()),
        ("kind", describe_kind(info.kind.as_deref())),
        ("engine", info.engine.clone().unwrap_or_else(|| "-".into())),
        ("code", describe_code(info)),
        ("handles", describe_handlers(&info.handlers)),
        (
            "routes",
            join_or_none(&routes_on(&info.hosts, &info.routes)),
        ),
        // One variable a line, aligned under the first.
        ("env", lines_or_none(&env, LABEL_WIDTH)),
        ("limits", limits),
        ("admission", admission_text(info)),
        ("rate limit", rate_limit_text(info)),
        ("cors", cors_text(info)),
        ("instances", describe_reuse(info.reuse.as_ref())),
        ("outbound", join_or_none(&info.allow_outbound)),
        ("aliases", lines_or_none(&aliases, LABEL_WIDTH)),
        (
            "auth",
            match info.auth {
                wisp_client::FunctionAuth::Public => "public".into(),
                wisp_client::FunctionAuth::Key => "key (invoke keys: wisp key list)".into(),
            },
        ),
        (
            "pinning",
            match info.version_pinning {
                true => "allowed (wisp-version)".into(),
                false => "off".into(),
            },
        ),
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

/// Where the active version's code came from: compiled here from the
/// upload, or precompiled elsewhere and signed.
fn describe_code(info: &FunctionInfo) -> String {
    let active = info
        .versions
        .iter()
        .find(|v| v.version == info.active_version);
    match active.and_then(|v| v.precompiled.as_ref()) {
        Some(p) => format!(
            "precompiled for {} from sha256 {}…, signed by key {}",
            p.target,
            short_sha(&p.source_sha256),
            p.signed_by
        ),
        None => "compiled here from the uploaded wasm".into(),
    }
}

/// `concurrency 2, queue 4, queue timeout 1s`; `concurrency 500 (the
/// host's share), no queue` for a function that sets nothing.
fn admission_text(info: &FunctionInfo) -> String {
    let limits = &info.limits;
    let mut text = format!("concurrency {}", info.effective_concurrency);
    if limits.concurrency.is_none() {
        text.push_str(" (the host's share)");
    }
    if limits.queue == 0 {
        text.push_str(", no queue");
    } else {
        let _ = write!(
            text,
            ", queue {}, queue timeout {}",
            limits.queue,
            format_ms(limits.queue_timeout_ms)
        );
    }
    text
}

/// Routes as requests reach them: `api.example.com/hello` on each of the
/// function's hosts, or the routes alone (any host).
fn routes_on(hosts: &[String], routes: &[String]) -> Vec<String> {
    if hosts.is_empty() {
        return routes.to_vec();
    }
    hosts
        .iter()
        .flat_map(|h| routes.iter().map(move |r| format!("{h}{r}")))
        .collect()
}

/// `https://a.example.com, https://b.example.com (with credentials)`, or
/// `none`.
fn cors_text(info: &FunctionInfo) -> String {
    match &info.cors {
        None => "none".into(),
        Some(c) if c.credentials => format!("{} (with credentials)", c.origins.join(", ")),
        Some(c) => c.origins.join(", "),
    }
}

/// `100/s, burst 200`, or `none`.
fn rate_limit_text(info: &FunctionInfo) -> String {
    match &info.limits.rate_limit {
        None => "none".into(),
        Some(r) => {
            let unit = match r.period_s {
                1 => "s".to_string(),
                60 => "m".to_string(),
                3600 => "h".to_string(),
                s => format!("{s}s"),
            };
            format!("{}/{unit}, burst {}", r.requests, r.burst)
        }
    }
}

pub(crate) async fn versions(api: &Client, args: ShowArgs) -> Result<()> {
    let versions = api.versions(&args.name).await?;
    if args.json {
        return print_json(&versions);
    }
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

pub(crate) async fn rollback(api: &Client, args: RollbackArgs) -> Result<()> {
    let info = api.rollback(&args.name, args.version).await?;
    write_stdout(&format!(
        "{}: version {} is now active\n",
        info.name, info.active_version
    ))
}

pub(crate) async fn delete(api: &Client, args: DeleteArgs) -> Result<()> {
    match args.force {
        true => api.delete_forced(&args.name).await?,
        false => api.delete(&args.name).await?,
    }
    write_stdout(&format!("deleted {}\n", args.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn deploy_options_from_the_arguments() {
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
            version_pinning: None,
            auth: None,
            static_dir: None,
            allow_outbound: vec!["https://api.example.com".into()],
            concurrency: Some(2),
            queue: Some(4),
            queue_timeout: Some(Duration::from_millis(2500)),
            reuse: Some("100..200".into()),
            reuse_concurrency: Some(8),
            idle_timeout: Some(Duration::from_secs(30)),
            rate_limit: Some("5/m".into()),
            cors_origins: vec!["https://app.example.com".into()],
            cors_credentials: Some(true),
            hosts: vec!["api.example.com".into()],
            connection: crate::client::tests::connection(None, Path::new(".")),
        };
        let options = deploy_options(&args).unwrap();
        assert_eq!(
            options,
            DeployOptions {
                routes: vec!["/hello".into(), "/api/*".into()],
                env: vec!["A=1".into()],
                timeout_ms: Some(1500),
                memory_bytes: Some(64 << 20),
                allow_outbound: vec!["https://api.example.com".into()],
                concurrency: Some(2),
                queue: Some(4),
                queue_timeout_ms: Some(2500),
                reuse: Some("100..200".into()),
                reuse_concurrency: Some(8),
                idle_timeout_ms: Some(30_000),
                rate_limit: Some("5/m".into()),
                cors_origin: vec!["https://app.example.com".into()],
                cors_credentials: Some(true),
                hosts: vec!["api.example.com".into()],
                ..DeployOptions::default()
            }
        );
        let bad = DeployArgs {
            env: vec!["NOEQ".into()],
            ..args
        };
        assert_eq!(
            deploy_options(&bad).unwrap_err().to_string(),
            "--env `NOEQ` is not KEY=VALUE"
        );
    }

    #[test]
    fn env_arguments() {
        assert_eq!(check_env("A=b=c"), Ok(()));
        assert_eq!(check_env("A="), Ok(()));
        assert!(check_env("A").is_err());
        assert!(check_env("=b").is_err());
    }

    fn sample_info() -> FunctionInfo {
        serde_json::from_value(json!({
            "name": "hello",
            "kind": "wasi-0.3-component",
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
        assert!(
            text.contains("kind            component, WASI 0.3\n"),
            "{text}"
        );
        assert!(text.contains("routes          /hello, /api/*\n"), "{text}");
        assert!(text.contains("auth            public\n"), "{text}");
        assert!(
            text.contains("env             GREETING=hi\n                MODE=prod\n"),
            "{text}"
        );
        assert!(
            text.contains("limits          timeout 30s, memory 128 MiB, max body 6 MiB\n"),
            "{text}"
        );
        assert!(text.contains("  2        *       fedcba987654"), "{text}");
        assert!(
            text.contains("admission       concurrency 0 (the host's share), no queue\n"),
            "{text}"
        );
        let mut info = sample_info();
        info.limits.concurrency = Some(2);
        info.limits.queue = 4;
        info.limits.queue_timeout_ms = 1500;
        info.effective_concurrency = 2;
        let text = info_text(&info);
        assert!(
            text.contains("admission       concurrency 2, queue 4, queue timeout 1s 500ms\n"),
            "{text}"
        );
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
            hosts: vec![],
            kind: None,
        }]);
        assert_eq!(
            list,
            "NAME   VERSION  ROUTES  VERSIONS\nhello  2        (none)  2\n"
        );
    }
}
