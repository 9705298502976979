//! Preview-1 core modules (`wasm32-wasip1`), run CGI-style as WAGI made
//! familiar: the request goes in through environment variables, argv and
//! stdin; the response comes out on stdout as CGI headers, a blank line and
//! the body.
//!
//! The same three lifetimes as components, on the same engine: the core
//! linker once per host ([`linker`]), the checked, pre-instantiated module
//! once per deployed version ([`prepare`]), a `Store` with a [`CgiState`]
//! per request ([`run`]), under the same deadline, memory cap, body cap,
//! error responses and invocation logs. The body streams back as the guest
//! writes it, through a bounded channel, and is cut at the host's output cap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx};

use crate::capabilities::logs::{LogCapture, LogStream};
use crate::error::{ApiError, DeployError};
use crate::invoke::{
    AbortOnDrop, CancelOnDrop, Failure, INVOCATION_ID_HEADER, Invoker, MemoryLimiter, Teardown,
    classify,
};
use crate::registry::Deployed;

/// The only import module a preview-1 function may use.
const WASI_P1: &str = "wasi_snapshot_preview1";

/// Where the function's static directory appears in the guest.
pub(crate) const STATIC_GUEST_PATH: &str = "/static";

/// Longest CGI header section; past it the output is not CGI.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Chunks of body in flight between the guest and the client. With the
/// guest's 4 KiB writes that is 64 KiB: enough to keep the socket busy,
/// small enough that a slow client stalls the guest instead of the host
/// buffering its output.
const BODY_CHANNEL_CHUNKS: usize = 16;

/// How much the guest may write in one call before waiting for room.
const WRITE_BUDGET: usize = 64 * 1024;

/// The request's matched route, as CGI's `SCRIPT_NAME` (`/api` for
/// `/api/*`; the path for an exact route). Put in the request's extensions
/// by the router for preview-1 functions only; absent (a direct invoke),
/// `SCRIPT_NAME` is empty and `PATH_INFO` the whole path.
#[derive(Clone)]
pub(crate) struct ScriptName(pub Arc<str>);

/// What one invocation's `Store` holds for a preview-1 module.
pub(crate) struct CgiState {
    /// The WASI preview-1 context (it owns its WASI context and table).
    wasi: WasiP1Ctx,
    limits: MemoryLimiter,
    /// Wall-clock deadline, checked on every epoch tick.
    deadline: Instant,
}

/// The core-module linker: WASI preview 1 and nothing else. Built once per
/// host, beside the component linker.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<CgiState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut CgiState| &mut s.wasi)?;
    Ok(linker)
}

/// Checks a compiled module (a `_start` command, WASI preview-1 imports
/// only) and pre-instantiates it.
pub(crate) fn prepare(
    linker: &Linker<CgiState>,
    module: &Module,
) -> Result<InstancePre<CgiState>, DeployError> {
    let foreign: Vec<String> = module
        .imports()
        .filter(|i| i.module() != WASI_P1)
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect();
    if !foreign.is_empty() {
        return Err(DeployError::UnsatisfiedImports(format!(
            "the module imports what this host does not provide (only {WASI_P1} is): {}",
            foreign.join(", ")
        )));
    }
    match module.get_export("_start") {
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
        Some(_) => {
            return Err(DeployError::MissingExport(
                "the module's `_start` export is not a function without parameters or results"
                    .into(),
            ));
        }
        None => {
            let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
            return Err(DeployError::MissingExport(format!(
                "the core module does not export `_start` (a wasm32-wasip1 command, run CGI-style); \
                 it exports: {}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
    }
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(DeployError::MissingExport(
            "the core module does not export its `memory`, which WASI needs".into(),
        ));
    }
    linker.instantiate_pre(module).map_err(|e| {
        DeployError::UnsatisfiedImports(format!(
            "the module's {WASI_P1} imports do not match this host's: {e:#}"
        ))
    })
}

/// How the guest's `_start` ended.
enum Outcome {
    /// Returned, or called `proc_exit` (0 is success).
    Exited(i32),
    /// Trapped, timed out, hit a limit.
    Failed(Failure),
}

/// Runs one request through a fresh instance of a preview-1 module.
pub(crate) async fn run(
    inv: &Invoker,
    target: &Arc<Deployed>,
    pre: &InstancePre<CgiState>,
    id: &str,
    start: Instant,
    req: Request<Body>,
) -> Response<Body> {
    let limits = target.limits;
    let deadline = start + limits.timeout();
    let (parts, body) = req.into_parts();
    if let Some(len) = content_length(&parts.headers)
        && len > limits.max_body_bytes
    {
        return inv.failure(target, id, Failure::BodyTooLarge);
    }
    // stdin is the whole body, read (capped) before the guest starts: a
    // CGI program may read it at any time, all at once.
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes as usize);
    let body = match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
        Err(_) => return inv.failure(target, id, Failure::Timeout),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return inv.failure(target, id, Failure::BodyTooLarge);
        }
        Ok(Err(e)) => {
            return error_response(
                id,
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the request body failed: {e}"),
            );
        }
    };

    // The slot is taken once the body is in: a client sending it slowly
    // holds no slot meanwhile (the connection bounds how slowly it may).
    let permit = match inv.admit(target) {
        Ok(slot) => slot,
        Err(f) => return inv.failure(target, id, f),
    };

    let script_name = parts
        .extensions
        .get::<ScriptName>()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| Arc::from(""));
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let info = RequestInfo {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        script_name: &script_name,
        body_len: body.len(),
        remote,
        version: parts.version,
    };
    let env = cgi_env(&info, &target.env);
    let args = cgi_args(&script_name, &target.name, info.query);

    let log = LogCapture::new(inv.log_limit);
    let (head_tx, head_rx) = oneshot::channel();
    let (body_tx, body_rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
    // Set when the response must end with an error rather than look
    // complete: the guest failed after its headers, or its output was cut.
    let aborted = Arc::new(AtomicBool::new(false));
    let out = CgiOutput::new(
        head_tx,
        body_tx,
        inv.cgi_max_output,
        aborted.clone(),
        log.clone(),
    );
    let mut builder = WasiCtx::builder();
    builder
        .envs(&env)
        .args(&args)
        .stdin(MemoryInputPipe::new(body))
        .stdout(out.clone())
        .stderr(log.stream(LogStream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = &target.static_dir
        && let Err(e) = builder.preopened_dir(dir, STATIC_GUEST_PATH, FsPerms::ReadOnly)
    {
        tracing::error!(invocation_id = id, function = %target.name, dir = %dir.display(), error = %e,
            "cannot open the function's static directory");
        return error_response(
            id,
            StatusCode::INTERNAL_SERVER_ERROR,
            "static_dir",
            "the function's static directory cannot be opened; see the host log".into(),
        );
    }
    let store = new_store(
        &inv.engine,
        builder.build_p1(),
        limits.memory_bytes,
        deadline,
    );

    let pre = pre.clone();
    let aborted2 = aborted.clone();
    let instantiation = inv.metrics.instantiation.clone();
    let mut teardown = Teardown::new(inv, store, permit, log, target.name_arc.clone(), id);
    let task = tokio::spawn(async move {
        let store = teardown.store();
        let result = tokio::time::timeout_at(deadline.into(), async {
            let t = Instant::now();
            let instance = pre.instantiate_async(&mut *store).await?;
            instantiation.record(t.elapsed().as_secs_f64());
            let main = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            main.call_async(&mut *store, ()).await
        })
        .await;
        let outcome = match result {
            Err(_elapsed) => Outcome::Failed(Failure::Timeout),
            Ok(Ok(())) => Outcome::Exited(0),
            Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Outcome::Exited(exit.0),
                None => Outcome::Failed(classify(e)),
            },
        };
        if let Outcome::Failed(_) = outcome {
            // A response already streaming ends with an error, not as if
            // it were complete.
            aborted2.store(true, Ordering::Release);
        }
        // The guest has stopped: nothing writes to its output any more.
        let head = out.finish();
        let note = match (&outcome, head) {
            (Outcome::Failed(f), _) => Some(format!("invocation failed: {}", f.describe())),
            (Outcome::Exited(code), HeadState::Sent) if *code != 0 => Some(format!(
                "the function exited with code {code} after sending its response headers; \
                 the response stands"
            )),
            (Outcome::Exited(code), _) if *code != 0 => {
                Some(format!("the function exited with code {code}"))
            }
            (Outcome::Exited(_), HeadState::Missing(msg)) => {
                Some(format!("invalid CGI output: {msg}"))
            }
            _ => None,
        };
        teardown.finish(note);
        outcome
    });
    // Dropped with this future (the client went away) or with the response
    // body before its end: the guest is stopped.
    let mut abort = AbortOnDrop::new(task.abort_handle());

    let bad_output = match head_rx.await {
        Ok(Ok(head)) => {
            let body = Body::new(CgiBody {
                rx: body_rx,
                aborted,
            });
            let mut resp = Response::new(Body::new(CancelOnDrop::new(body, abort)));
            *resp.status_mut() = head.status;
            *resp.headers_mut() = head.headers;
            if let Ok(v) = HeaderValue::from_str(id) {
                resp.headers_mut().insert(INVOCATION_ID_HEADER, v);
            }
            return resp;
        }
        Ok(Err(msg)) => Some(msg),
        Err(_) => None,
    };
    // No response head: the guest's own failure, if it had one, explains
    // it better than its output does.
    let ended = task.await;
    abort.disarm();
    match ended {
        Ok(Outcome::Failed(f)) => inv.failure(target, id, f),
        Ok(Outcome::Exited(code)) if code != 0 => error_response(
            id,
            StatusCode::BAD_GATEWAY,
            "bad_response",
            format!("the function exited with code {code} before completing its response headers"),
        ),
        Ok(Outcome::Exited(_)) => error_response(
            id,
            StatusCode::BAD_GATEWAY,
            "bad_response",
            format!(
                "the function's output is not valid CGI: {}",
                bad_output.as_deref().unwrap_or("no response headers")
            ),
        ),
        Err(join) => inv.failure(
            target,
            id,
            Failure::Trap(format!("invocation task failed: {join}")),
        ),
    }
}

/// Builds a store and instantiates the module in it, then drops both (the
/// per-request instantiation cost, for benchmarks).
pub(crate) async fn instantiate_only(
    inv: &Invoker,
    target: &Deployed,
    pre: &InstancePre<CgiState>,
) -> wasmtime::Result<()> {
    let wasi = WasiCtx::builder().build_p1();
    let deadline = Instant::now() + target.limits.timeout();
    let mut store = new_store(&inv.engine, wasi, target.limits.memory_bytes, deadline);
    pre.instantiate_async(&mut store).await?;
    Ok(())
}

/// A store with the memory cap and the deadline enforced on every epoch
/// tick, as for components.
fn new_store(
    engine: &Engine,
    wasi: WasiP1Ctx,
    memory_bytes: u64,
    deadline: Instant,
) -> Store<CgiState> {
    let mut store = Store::new(
        engine,
        CgiState {
            wasi,
            limits: MemoryLimiter::new(memory_bytes as usize),
            deadline,
        },
    );
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| crate::invoke::on_epoch_tick(ctx.data().deadline));
    store
}

fn error_response(
    id: &str,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Response<Body> {
    axum::response::IntoResponse::into_response(ApiError::new(status, code, message).invocation(id))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

// ------------------------------------------------------------ request

/// What the CGI variables are made of.
struct RequestInfo<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    script_name: &'a str,
    body_len: usize,
    remote: Option<SocketAddr>,
    version: http::Version,
}

/// The CGI/1.1 meta-variables (RFC 3875, section 4.1) and the two common
/// extensions Wisp sets (`REQUEST_URI`, `REMOTE_PORT`). Together with every
/// `HTTP_*` name they describe the request, so the function's configured
/// variables never take one of these names (see [`is_meta_variable`]).
const META_VARIABLES: &[&str] = &[
    "AUTH_TYPE",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "GATEWAY_INTERFACE",
    "PATH_INFO",
    "PATH_TRANSLATED",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_IDENT",
    "REMOTE_PORT",
    "REMOTE_USER",
    "REQUEST_METHOD",
    "REQUEST_URI",
    "SCRIPT_NAME",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
];

/// Whether a variable name belongs to the request (a CGI meta-variable or a
/// header's `HTTP_*`), whether or not this request sets it: a configured
/// `CONTENT_TYPE` must not pass for the request's when it has none.
fn is_meta_variable(name: &str) -> bool {
    name.starts_with("HTTP_") || META_VARIABLES.contains(&name)
}

/// The guest's environment: the CGI/1.1 variables, then the function's
/// configured variables except those named like a meta-variable, which are
/// dropped. Each name appears once: wasi-libc's `getenv` (and so Rust's
/// `std::env::var`) returns the *first* of duplicates, so a configured
/// variable listed before the request's would silently win. Dropped rather
/// than refused at deploy because the same variables also come from the
/// configuration (`config_env`), which changes without a deploy, and serve
/// components too, where these names mean nothing special.
fn cgi_env(req: &RequestInfo<'_>, function_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        Vec::with_capacity(function_env.len() + 16 + req.headers.len());
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        format!("wisp/{}", env!("CARGO_PKG_VERSION")),
    );
    set("SERVER_PROTOCOL", format!("{:?}", req.version));
    set("REQUEST_METHOD", req.method.into());
    set("SCRIPT_NAME", req.script_name.into());
    let path_info = req.path.strip_prefix(req.script_name).unwrap_or(req.path);
    set("PATH_INFO", path_info.into());
    set("QUERY_STRING", req.query.into());
    let uri = if req.query.is_empty() {
        req.path.to_string()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    set("REQUEST_URI", uri);
    if let Some(ct) = req.headers.get(header::CONTENT_TYPE) {
        set(
            "CONTENT_TYPE",
            String::from_utf8_lossy(ct.as_bytes()).into_owned(),
        );
    }
    if req.body_len > 0 || req.headers.contains_key(header::CONTENT_LENGTH) {
        set("CONTENT_LENGTH", req.body_len.to_string());
    }
    let (name, port) = server_name_port(req.headers);
    set("SERVER_NAME", name);
    set("SERVER_PORT", port.to_string());
    match req.remote {
        Some(addr) => {
            set("REMOTE_ADDR", addr.ip().to_string());
            set("REMOTE_PORT", addr.port().to_string());
        }
        None => set("REMOTE_ADDR", "127.0.0.1".into()),
    }
    for name in req.headers.keys() {
        // Content-Type and Content-Length have variables of their own.
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        // `X_User` and `X-User` would both be `HTTP_X_USER`: a client could
        // shadow a header a proxy in front of Wisp set (or vouched for) with
        // one of its own. Names with `_` are dropped, as nginx and Apache
        // httpd drop them; the remaining mapping is one-to-one (header names
        // are lower case, `-` becomes `_`).
        if name.as_str().contains('_') {
            continue;
        }
        let mut value = String::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.push_str(", ");
            }
            value.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        let var: String = "HTTP_"
            .chars()
            .chain(name.as_str().chars().map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            }))
            .collect();
        set(&var, value);
    }
    env.extend(
        function_env
            .iter()
            .filter(|(k, _)| !is_meta_variable(k))
            .cloned(),
    );
    env
}

/// `SERVER_NAME` and `SERVER_PORT` from the `Host` header.
fn server_name_port(headers: &HeaderMap) -> (String, u16) {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    match authority {
        Some(a) => (
            a.host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            a.port_u16().unwrap_or(80),
        ),
        None => ("localhost".into(), 80),
    }
}

/// argv: the script name (the function's name when there is none), then
/// each query parameter, decoded (`a=1&b` → `a=1`, `b`), as WAGI does.
fn cgi_args(script_name: &str, function: &str, query: &str) -> Vec<String> {
    let argv0 = if script_name.is_empty() {
        function
    } else {
        script_name
    };
    std::iter::once(argv0.to_string())
        .chain(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(percent_decode),
        )
        .collect()
}

/// Decodes `%XX` and `+` (form encoding); malformed escapes stay as they
/// are, bytes that are not UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ----------------------------------------------------------- response

/// The response head parsed from the guest's CGI headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

/// Where the end of the header section is, if it has arrived: the length
/// of the header lines and where the body starts. Scanning resumes at
/// `*from` (the start of the first line not yet seen whole).
pub(crate) fn find_head_end(buf: &[u8], from: &mut usize) -> Option<(usize, usize)> {
    while let Some(nl) = buf[*from..].iter().position(|&b| b == b'\n') {
        let end = *from + nl;
        let line = &buf[*from..end];
        if line.is_empty() || line == b"\r" {
            return Some((*from, end + 1));
        }
        *from = end + 1;
    }
    None
}

/// Parses CGI header lines into a response head: `Status: 404 Not Found`
/// sets the status, `Location` without a status redirects (302), every other
/// header is passed on (hop-by-hop ones and `Content-Length` dropped: the
/// body is streamed); a missing `Content-Type` is `text/plain`.
pub(crate) fn parse_head(block: &[u8]) -> Result<Head, String> {
    let mut status = None;
    let mut headers = HeaderMap::new();
    for raw in block.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("header line {:?} has no ':'", shown()))?;
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"status") {
            let code = value
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|_| value.len() == 3 || value[3] == b' ')
                .ok_or_else(|| format!("invalid Status header {:?}", shown()))?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| format!("invalid header name in {:?}", shown()))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid header value in {:?}", shown()))?;
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == HeaderName::from_static("keep-alive")
            || name == header::UPGRADE
        {
            continue;
        }
        headers.append(name, value);
    }
    let redirect = status.is_none() && headers.contains_key(header::LOCATION);
    let status = status.unwrap_or(if redirect {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    if !headers.contains_key(header::CONTENT_TYPE)
        && !redirect
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
    {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Ok(Head { status, headers })
}

/// What became of the response head when the guest finished.
enum HeadState {
    /// Sent: the response is (or was) streaming.
    Sent,
    /// Found invalid while the guest ran (already noted in the log).
    Invalid,
    /// Never complete: why.
    Missing(String),
}

enum Phase {
    /// Collecting the header section.
    Head,
    /// Streaming the body.
    Body,
    /// Past the cap, invalid output or a client gone: writes are dropped.
    Discard,
    /// The head was invalid: writes are dropped.
    Invalid,
}

/// The guest's stdout: CGI headers, then the body streamed to the client.
/// Shared by the WASI context and the invocation task (which finishes it).
#[derive(Clone)]
struct CgiOutput(Arc<Mutex<Output>>);

struct Output {
    phase: Phase,
    buf: Vec<u8>,
    /// Where the header scan resumes in `buf`.
    scanned: usize,
    head_tx: Option<oneshot::Sender<Result<Head, String>>>,
    /// `None` once the body has ended (cap reached, client gone).
    body_tx: Option<mpsc::Sender<Bytes>>,
    /// Room for one chunk, reserved while the guest waited (`ready`).
    permit: Option<mpsc::OwnedPermit<Bytes>>,
    /// Body bytes sent so far.
    sent: u64,
    cap: u64,
    /// Shared with the response body: set before the body ends early.
    aborted: Arc<AtomicBool>,
    log: LogCapture,
}

impl CgiOutput {
    fn new(
        head_tx: oneshot::Sender<Result<Head, String>>,
        body_tx: mpsc::Sender<Bytes>,
        cap: u64,
        aborted: Arc<AtomicBool>,
        log: LogCapture,
    ) -> CgiOutput {
        CgiOutput(Arc::new(Mutex::new(Output {
            phase: Phase::Head,
            buf: Vec::new(),
            scanned: 0,
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            permit: None,
            sent: 0,
            cap,
            aborted,
            log,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        // Every update leaves the state consistent; ignore poisoning.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the output when the guest has finished: the body stream closes;
    /// a head never completed is checked once more (headers without the
    /// blank line are accepted at the end) or reported missing.
    fn finish(&self) -> HeadState {
        let mut o = self.lock();
        o.permit = None;
        let state = match o.phase {
            Phase::Head => {
                let buf = std::mem::take(&mut o.buf);
                let result = if buf.is_empty() {
                    Err("the function wrote nothing to stdout".to_string())
                } else {
                    parse_head(&buf).map_err(|e| {
                        format!("the output ended before the blank line after the headers ({e})")
                    })
                };
                match result {
                    Ok(head) => {
                        if let Some(tx) = o.head_tx.take() {
                            let _ = tx.send(Ok(head));
                        }
                        HeadState::Sent
                    }
                    Err(msg) => {
                        if let Some(tx) = o.head_tx.take() {
                            let _ = tx.send(Err(msg.clone()));
                        }
                        HeadState::Missing(msg)
                    }
                }
            }
            Phase::Invalid => HeadState::Invalid,
            Phase::Body | Phase::Discard => HeadState::Sent,
        };
        o.body_tx = None;
        o.phase = Phase::Discard;
        state
    }
}

impl Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.phase {
            Phase::Head => self.write_head(&bytes),
            Phase::Body => self.write_body(bytes),
            Phase::Discard | Phase::Invalid => {}
        }
        Ok(())
    }

    fn write_head(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let Some((head_len, body_start)) = find_head_end(&self.buf, &mut self.scanned) else {
            if self.buf.len() > MAX_HEAD_BYTES {
                self.invalid(format!(
                    "no blank line within the first {MAX_HEAD_BYTES} bytes (CGI output is headers, \
                     a blank line, then the body)"
                ));
            }
            return;
        };
        if head_len > MAX_HEAD_BYTES {
            self.invalid(format!(
                "the headers are longer than {MAX_HEAD_BYTES} bytes"
            ));
            return;
        }
        match parse_head(&self.buf[..head_len]) {
            Ok(head) => {
                let rest = Bytes::copy_from_slice(&self.buf[body_start..]);
                self.buf = Vec::new();
                match self.head_tx.take().map(|tx| tx.send(Ok(head))) {
                    Some(Ok(())) => {
                        self.phase = Phase::Body;
                        if !rest.is_empty() {
                            self.write_body(rest);
                        }
                    }
                    _ => self.gone(),
                }
            }
            Err(msg) => self.invalid(msg),
        }
    }

    fn write_body(&mut self, mut bytes: Bytes) {
        let left = self.cap - self.sent;
        let over = bytes.len() as u64 > left;
        if over {
            bytes.truncate(left as usize);
        }
        if !bytes.is_empty() {
            self.sent += bytes.len() as u64;
            let sent = match (self.permit.take(), &self.body_tx) {
                (Some(permit), _) => {
                    permit.send(bytes);
                    true
                }
                // Right after the head the channel is empty: room for the
                // rest of the first write without waiting.
                (None, Some(tx)) => tx.try_send(bytes).is_ok(),
                (None, None) => false,
            };
            if !sent {
                self.gone();
                return;
            }
        }
        if over {
            self.log.note(format!(
                "output truncated at {} bytes (the host's CGI output cap); the rest was discarded \
                 and the response ended with an error",
                self.cap
            ));
            // A cut body must not pass for a complete one: the client sees
            // the chunked body aborted (no final chunk), not a clean 200.
            // Set before the sender goes, so the body sees it at the end.
            self.aborted.store(true, Ordering::Release);
            self.body_tx = None;
            self.permit = None;
            self.phase = Phase::Discard;
        }
    }

    fn invalid(&mut self, msg: String) {
        self.log.note(format!("invalid CGI output: {msg}"));
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(Err(msg));
        }
        self.buf = Vec::new();
        self.body_tx = None;
        self.phase = Phase::Invalid;
    }

    /// The client went away: the rest of the output has nowhere to go.
    fn gone(&mut self) {
        if !matches!(self.phase, Phase::Discard) {
            self.log
                .note("the client went away; the rest of the output was discarded".into());
        }
        self.body_tx = None;
        self.permit = None;
        self.phase = Phase::Discard;
    }
}

impl IsTerminal for CgiOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CgiOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the preview-2 stream is used by preview-1 modules.
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl Pollable for CgiOutput {
    async fn ready(&mut self) {
        // In the body, wait for room in the channel: a slow client slows
        // the guest down instead of growing a buffer.
        let tx = {
            let o = self.lock();
            match (&o.phase, &o.permit, &o.body_tx) {
                (Phase::Body, None, Some(tx)) => tx.clone(),
                _ => return,
            }
        };
        let reserved = tx.reserve_owned().await;
        let mut o = self.lock();
        match reserved {
            Ok(permit) if matches!(o.phase, Phase::Body) => o.permit = Some(permit),
            Ok(_) => {}
            Err(_) => o.gone(),
        }
    }
}

impl OutputStream for CgiOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let o = self.lock();
        Ok(match o.phase {
            Phase::Body if o.permit.is_none() => 0,
            _ => WRITE_BUDGET,
        })
    }
}

/// The response body: chunks from the guest's stdout as they come. Ends
/// with an error if the guest failed after its headers or its output was
/// cut at the cap, so the client sees a broken response rather than a
/// short one that looks complete.
struct CgiBody {
    rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
}

impl http_body::Body for CgiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.aborted.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                std::io::Error::other("the function's response was cut short"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The function's static directory on the host: `<data-dir>/static/REL`.
/// `REL` is relative, without `..` (checked here, at deploy).
pub(crate) fn static_dir_path(data_dir: &std::path::Path, rel: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let path = std::path::Path::new(rel);
    if rel.is_empty() || path.is_absolute() {
        return Err(format!(
            "static_dir {rel:?} must be a relative path under the data directory's static/ folder"
        ));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("static_dir {rel:?} must not contain '..'"));
    }
    Ok(data_dir.join("static").join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_cgi_headers() {
        let h = head("Content-Type: application/json\r\nX-A: 1\r\nX-A: 2");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);

        let h = head("Status: 404 Not Found\nContent-Type: text/html");
        assert_eq!(h.status, StatusCode::NOT_FOUND);

        let h = head("Location: /elsewhere");
        assert_eq!(h.status, StatusCode::FOUND);
        assert!(h.headers.get("content-type").is_none());

        let h = head("Status: 301\nLocation: https://example.com/");
        assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);

        // Defaults, and hop-by-hop headers dropped.
        let h = head("Content-Length: 5\nConnection: close");
        assert_eq!(h.headers["content-type"], "text/plain; charset=utf-8");
        assert!(h.headers.get("content-length").is_none());
        assert!(h.headers.get("connection").is_none());
        assert_eq!(head("").status, StatusCode::OK);
    }

    #[test]
    fn refuses_what_is_not_cgi() {
        assert!(parse_head(b"hello world").is_err());
        assert!(parse_head(b"Status: banana").is_err());
        assert!(parse_head(b"Status: 2000").is_err());
        assert!(parse_head(b"Bad Name: x").is_err());
        assert!(parse_head(b"X: a\x01b").is_err());
    }

    #[test]
    fn finds_the_end_of_the_headers() {
        let mut from = 0;
        assert_eq!(find_head_end(b"A: 1\r\nB: 2", &mut from), None);
        let buf = b"A: 1\r\nB: 2\r\n\r\nbody";
        assert_eq!(find_head_end(buf, &mut from), Some((12, 14)));
        let mut from = 0;
        assert_eq!(find_head_end(b"\nbody", &mut from), Some((0, 1)));
        let mut from = 0;
        assert_eq!(find_head_end(b"A: 1\n\nbody\n\n", &mut from), Some((5, 6)));
    }

    #[test]
    fn decodes_query_arguments() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(
            cgi_args("/api", "f", "x=1&&y=a%2Fb&flag"),
            ["/api", "x=1", "y=a/b", "flag"]
        );
        assert_eq!(cgi_args("", "f", ""), ["f"]);
    }

    /// A variable as wasi-libc's `getenv` sees it: the first of its name.
    fn getenv<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn request_info(headers: &HeaderMap) -> RequestInfo<'_> {
        RequestInfo {
            method: "POST",
            path: "/api/items/7",
            query: "q=1",
            headers,
            script_name: "/api",
            body_len: 3,
            remote: Some("10.0.0.1:5555".parse().unwrap()),
            version: http::Version::HTTP_11,
        }
    }

    fn assert_names_unique(env: &[(String, String)]) {
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate names in {env:?}");
    }

    #[test]
    fn builds_the_cgi_environment() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let env = cgi_env(&request_info(&headers), &[("MINE".into(), "x".into())]);
        let get = |k: &str| getenv(&env, k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(get("REQUEST_METHOD"), "POST");
        assert_eq!(get("SCRIPT_NAME"), "/api");
        assert_eq!(get("PATH_INFO"), "/items/7");
        assert_eq!(get("QUERY_STRING"), "q=1");
        assert_eq!(get("CONTENT_TYPE"), "text/plain");
        assert_eq!(get("CONTENT_LENGTH"), "3");
        assert_eq!(get("SERVER_NAME"), "example.com");
        assert_eq!(get("SERVER_PORT"), "8080");
        assert_eq!(get("REMOTE_ADDR"), "10.0.0.1");
        assert_eq!(get("HTTP_X_MULTI"), "a, b");
        assert_eq!(get("HTTP_HOST"), "example.com:8080");
        assert_eq!(get("MINE"), "x");
        assert!(getenv(&env, "HTTP_CONTENT_TYPE").is_none());
        assert_names_unique(&env);
    }

    #[test]
    fn configured_variables_never_take_a_meta_variable_name() {
        let mut headers = HeaderMap::new();
        headers.insert("x-thing", HeaderValue::from_static("real"));
        let configured: Vec<(String, String)> = [
            ("REQUEST_METHOD", "HACKED"),
            ("SCRIPT_NAME", "/evil"),
            ("HTTP_X_THING", "forged"),
            ("HTTP_X_ABSENT", "forged"),
            // Meta-variables this request does not set are dropped too.
            ("REMOTE_USER", "admin"),
            ("AUTH_TYPE", "Basic"),
            ("MINE", "x"),
            // Names are case-sensitive: this one is not a meta-variable.
            ("request_method", "lower"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = RequestInfo {
            body_len: 0,
            ..request_info(&headers)
        };
        let env = cgi_env(&info, &configured);
        assert_eq!(getenv(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(getenv(&env, "SCRIPT_NAME"), Some("/api"));
        assert_eq!(getenv(&env, "HTTP_X_THING"), Some("real"));
        for dropped in [
            "HTTP_X_ABSENT",
            "REMOTE_USER",
            "AUTH_TYPE",
            "CONTENT_LENGTH",
        ] {
            assert_eq!(getenv(&env, dropped), None, "{dropped}");
        }
        assert_eq!(getenv(&env, "MINE"), Some("x"));
        assert_eq!(getenv(&env, "request_method"), Some("lower"));
        assert_names_unique(&env);

        assert!(is_meta_variable("HTTP_"));
        assert!(is_meta_variable("PATH_TRANSLATED"));
        assert!(!is_meta_variable("HTTPS"));
        assert!(!is_meta_variable("PATH"));
    }

    #[test]
    fn header_names_with_underscores_cannot_shadow() {
        // Both orders: whichever arrives first, `X_User` is not `X-User`.
        for first_underscore in [false, true] {
            let mut headers = HeaderMap::new();
            let (a, b) = (("x-user", "alice"), ("x_user", "mallory"));
            let (first, second) = if first_underscore { (b, a) } else { (a, b) };
            headers.insert(first.0, HeaderValue::from_static(first.1));
            headers.insert(second.0, HeaderValue::from_static(second.1));
            headers.insert("x_only", HeaderValue::from_static("z"));
            let env = cgi_env(&request_info(&headers), &[]);
            assert_eq!(getenv(&env, "HTTP_X_USER"), Some("alice"));
            assert_eq!(getenv(&env, "HTTP_X_ONLY"), None);
            assert!(
                !env.iter().any(|(_, v)| v == "mallory" || v == "z"),
                "{env:?}"
            );
            assert_names_unique(&env);
        }
    }

    #[test]
    fn static_dir_stays_under_the_data_dir() {
        let base = std::path::Path::new("/data");
        assert_eq!(
            static_dir_path(base, "site/assets").unwrap(),
            base.join("static/site/assets")
        );
        assert!(static_dir_path(base, "/etc").is_err());
        assert!(static_dir_path(base, "../etc").is_err());
        assert!(static_dir_path(base, "a/../../b").is_err());
        assert!(static_dir_path(base, "").is_err());
    }
}
