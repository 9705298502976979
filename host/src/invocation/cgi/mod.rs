//! Preview-1 core modules (`wasm32-wasip1`), run CGI-style as WAGI made
//! familiar: the request goes in through environment variables, argv and
//! stdin ([`env`]); the response comes out on stdout as CGI headers, a blank
//! line and the body ([`output`]).
//!
//! The same three lifetimes as components, on the same engine: the core
//! linker once per host ([`linker`]), the checked, pre-instantiated module
//! once per deployed version ([`prepare`]), a `Store` with a [`CgiState`]
//! per request, run by the same driver as every invocation (deadline,
//! memory cap, slot, error responses, invocation logs).

mod env;
pub(crate) mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use metrics::Histogram;
use tokio::sync::{mpsc, oneshot};
use wasmtime::{Engine, InstancePre, Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx};

use self::env::{RequestInfo, cgi_args, cgi_env};
use self::output::{BODY_CHANNEL_CHUNKS, CgiBody, CgiOutput, HeadState};
use super::Invoker;
use super::driver::{AbortOnDrop, Call, CancelOnDrop, Invocation};
use super::failure::Failure;
use super::limits::{MemoryLimiter, content_length, on_epoch_tick};
use super::task::{LongRunning, Slices};
use crate::capabilities::logs::{LogCapture, LogStream};
use crate::error::ApiError;
use crate::invocation::target::Deployed;

/// Where the function's static directory appears in the guest.
pub(crate) const STATIC_GUEST_PATH: &str = "/static";

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
    /// The epoch ticks the guest has run through.
    slices: Slices,
}

impl crate::invocation::driver::Bounded for CgiState {
    fn postpone(&mut self, by: std::time::Duration) {
        self.deadline += by;
    }

    fn long_running(&self) -> LongRunning {
        self.slices.long_running()
    }
}

/// The core-module linker: WASI preview 1 and nothing else. Built once per
/// host, beside the component linker.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<CgiState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut CgiState| &mut s.wasi)?;
    Ok(linker)
}

/// The `_start` call of one request; its output is the exit code (0 when
/// `_start` returned).
struct CgiCall {
    pre: InstancePre<CgiState>,
    out: CgiOutput,
    /// Set when the response must end with an error rather than look
    /// complete: the guest failed after its headers, or its output was cut.
    aborted: Arc<AtomicBool>,
}

impl Call for CgiCall {
    type State = CgiState;
    type Output = i32;

    async fn call(
        &mut self,
        store: &mut Store<CgiState>,
        instantiation: &Histogram,
    ) -> wasmtime::Result<i32> {
        let t = Instant::now();
        let instance = self.pre.instantiate_async(&mut *store).await?;
        instantiation.record(t.elapsed().as_secs_f64());
        let main = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
        match main.call_async(&mut *store, ()).await {
            Ok(()) => Ok(0),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(e),
            },
        }
    }

    fn finish(&mut self, result: &Result<i32, Failure>) -> Option<String> {
        if result.is_err() {
            // A response already streaming ends with an error, not as if
            // it were complete.
            self.aborted.store(true, Ordering::Release);
        }
        // The guest has stopped: nothing writes to its output any more.
        match (result, self.out.finish()) {
            (Err(f), _) => Some(format!("invocation failed: {}", f.describe())),
            (Ok(code), HeadState::Sent) if *code != 0 => Some(format!(
                "the function exited with code {code} after sending its response headers; the \
                 response stands"
            )),
            (Ok(code), _) if *code != 0 => Some(format!("the function exited with code {code}")),
            (Ok(_), HeadState::Missing(msg)) => Some(format!("invalid CGI output: {msg}")),
            _ => None,
        }
    }
}

impl Invoker {
    /// Runs one request through a fresh instance of a preview-1 module.
    pub(super) async fn run_cgi(
        &self,
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
            return Failure::BodyTooLarge.response(target, id);
        }
        // stdin is the whole body, read (capped) before the guest starts: a
        // CGI program may read it at any time, all at once.
        let limited = http_body_util::Limited::new(body, limits.max_body_bytes as usize);
        let body = match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
            Err(_) => return Failure::Timeout.response(target, id),
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Failure::BodyTooLarge.response(target, id);
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
        let slot = match self.admit(target) {
            Ok(slot) => slot,
            Err(f) => return f.response(target, id),
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
            secure: parts
                .extensions
                .get::<crate::gateway::connection::Secure>()
                .is_some(),
        };
        let env = cgi_env(&info, &target.env);
        let args = cgi_args(&script_name, &target.name, info.query);

        let log = LogCapture::new(self.log_limit);
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        let aborted = Arc::new(AtomicBool::new(false));
        let out = CgiOutput::new(
            head_tx,
            body_tx,
            self.cgi_max_output,
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
            &self.engine,
            builder.build_p1(),
            limits.memory_bytes,
            deadline,
        );
        let call = CgiCall {
            pre: pre.clone(),
            out,
            aborted: aborted.clone(),
        };
        let invocation = Invocation {
            store,
            slot,
            log,
            deadline,
        };
        let running = self.start(invocation, target, id, call);
        let end = running.end();
        let task = crate::invocation::task::spawn(running);
        // Dropped with this future (the client went away) or with the
        // response body before its end: the guest is stopped.
        let mut abort = AbortOnDrop::new(task.abort_handle());

        let bad_output = match head_rx.await {
            Ok(Ok(head)) => {
                let body = Body::new(CgiBody::new(body_rx, aborted));
                let declared = content_length(&head.headers);
                let mut resp =
                    Response::new(Body::new(CancelOnDrop::new(body, abort, end, declared)));
                *resp.status_mut() = head.status;
                *resp.headers_mut() = head.headers;
                super::tag_invocation(&mut resp, id);
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
            Ok(Err(f)) => f.response(target, id),
            Ok(Ok(code)) if code != 0 => error_response(
                id,
                StatusCode::BAD_GATEWAY,
                "bad_response",
                format!(
                    "the function exited with code {code} before completing its response headers"
                ),
            ),
            Ok(Ok(_)) => error_response(
                id,
                StatusCode::BAD_GATEWAY,
                "bad_response",
                format!(
                    "the function's output is not valid CGI: {}",
                    bad_output.as_deref().unwrap_or("no response headers")
                ),
            ),
            Err(join) => {
                Failure::Trap(format!("invocation task failed: {join}")).response(target, id)
            }
        }
    }

    /// Builds a store and instantiates the module in it, then drops both
    /// (the per-request instantiation cost, for benchmarks).
    pub(super) async fn instantiate_cgi(
        &self,
        target: &Deployed,
        pre: &InstancePre<CgiState>,
    ) -> wasmtime::Result<()> {
        let wasi = WasiCtx::builder().build_p1();
        let deadline = Instant::now() + target.limits.timeout();
        let mut store = new_store(&self.engine, wasi, target.limits.memory_bytes, deadline);
        pre.instantiate_async(&mut store).await?;
        Ok(())
    }
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
            slices: Slices::default(),
        },
    );
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        on_epoch_tick(state.deadline, &mut state.slices)
    });
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
