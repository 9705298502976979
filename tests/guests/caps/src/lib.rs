//! A guest for the host's tests: one switch per host capability. The last
//! one or two segments of the path pick the switch, so it can be deployed
//! under any prefix route (`/caps/*`).
//!
//! Every switch answers `200` with a JSON object: the result, or the
//! guest-visible error as `{"error": CODE, "detail": TEXT}` (CODE as named
//! in the WIT: `quota-exceeded`, `HTTP-request-denied`, ...). So a test
//! tells an error the guest saw from a trap (which the host answers `500`).
//! A missing or malformed parameter answers `400` `{"error": "usage", ...}`;
//! an unknown path `404`.
//!
//! | path | does | answers |
//! |------|------|---------|
//! | `/kv/get?key=K` | `kv::get` | `{"found": bool, "value": TEXT or null, "len": N}` (value as lossy UTF-8) |
//! | `/kv/set?key=K[&ttl_ms=N]`, body = value | `kv::set` (with TTL if given) | `{"ok": true}` |
//! | `/kv/delete?key=K` | `kv::delete` | `{"deleted": bool}` |
//! | `/kv/list?prefix=P[&cursor=C][&limit=N]` | one `list-keys` page (limit default 100) | `{"keys": [...], "cursor": C or null}` |
//! | `/kv/incr?key=K[&delta=D]` | `kv::increment` (delta default 1) | `{"value": N}` |
//! | `/kv/cas?key=K[&expected=E]`, body = new | `compare-and-swap`; no `expected` = only if unset | `{"swapped": bool}` |
//! | `/config/get?key=K` | `config::get` | `{"value": TEXT or null}` |
//! | `/config/keys` | `config::keys` | `{"keys": [...]}` (sorted) |
//! | `/log?level=L&msg=M[&n=N]` | logs M, N times (default 1), at L (`trace`..`error`, default `info`) | `{"logged": N}` |
//! | `/stdout?bytes=N` | writes N bytes (`o`, a newline every 64) to stdout | `{"written": N}` |
//! | `/stderr?bytes=N` | same to stderr (`e`) | `{"written": N}` |
//! | `/fetch?url=U` | one outbound `GET` | `{"status": S, "body": TEXT, "len": N}` |
//! | `/fetch?url=U&n=K` | K outbound `GET`s, one after the other | `{"results": [each as above], "ok": count, "failed": count}` |
//! | `/echo`, any body | nothing | the request's body, as it came |
//!
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p caps`.
//! tests/guests/caps-p3 is this same source built with the SDK's WASI 0.3
//! build (`-p caps-p3`).

use std::collections::HashMap;
use std::io::Write;

use serde_json::{Value, json};
use wisp_sdk::log::Level;
use wisp_sdk::{IntoResponse, Json, Query, Request, Response, StatusCode, config, http, kv, log};

type Params = HashMap<String, String>;
type Answer = (StatusCode, Json<Value>);

#[wisp_sdk::handler]
fn caps(Query(params): Query<Params>, req: Request) -> Response {
    let segments: Vec<&str> = req.path().split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        [.., "echo"] => return Response::ok(req.into_body()),
        [.., "kv", op] => kv_switch(op, &params, req.body()),
        [.., "config", "get"] => {
            required(&params, "key").map(|key| json!({ "value": config::get(key) }))
        }
        [.., "config", "keys"] => Ok(json!({ "keys": config::keys() })),
        [.., "log"] => log_lines(&params),
        [.., "stdout"] => write_bytes(&params, std::io::stdout(), b'o'),
        [.., "stderr"] => write_bytes(&params, std::io::stderr(), b'e'),
        [.., "fetch"] => fetch(&params),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "not-found", "detail": req.path() })),
            )
                .into_response();
        }
    };
    let answer: Answer = match result {
        Ok(value) => (StatusCode::OK, Json(value)),
        Err(Usage(detail)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "usage", "detail": detail })),
        ),
    };
    answer.into_response()
}

/// A request this guest does not understand (answered `400`); guest-visible
/// errors of the host are `Ok` answers.
struct Usage(String);

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, Usage> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| Usage(format!("missing query parameter `{name}`")))
}

fn number<T: std::str::FromStr>(params: &Params, name: &str, default: T) -> Result<T, Usage> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| Usage(format!("`{name}` must be a number, got `{text}`"))),
    }
}

fn kv_error(e: &kv::Error) -> Value {
    json!({ "error": e.code(), "detail": e.to_string() })
}

fn kv_switch(op: &str, params: &Params, body: &[u8]) -> Result<Value, Usage> {
    let key = || required(params, "key");
    Ok(match op {
        "get" => match kv::get(key()?) {
            Ok(value) => json!({
                "found": value.is_some(),
                "len": value.as_ref().map_or(0, Vec::len),
                "value": value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            }),
            Err(e) => kv_error(&e),
        },
        "set" => {
            let result = match params.get("ttl_ms") {
                Some(_) => {
                    let ms = number(params, "ttl_ms", 0u64)?;
                    kv::set_with_ttl(key()?, body, std::time::Duration::from_millis(ms))
                }
                None => kv::set(key()?, body),
            };
            match result {
                Ok(()) => json!({ "ok": true }),
                Err(e) => kv_error(&e),
            }
        }
        "delete" => match kv::delete(key()?) {
            Ok(deleted) => json!({ "deleted": deleted }),
            Err(e) => kv_error(&e),
        },
        "list" => {
            let prefix = params.get("prefix").map_or("", String::as_str);
            let limit = number(params, "limit", 100u32)?;
            match kv::list_page(prefix, params.get("cursor").map(String::as_str), limit) {
                Ok(page) => json!({ "keys": page.keys, "cursor": page.cursor }),
                Err(e) => kv_error(&e),
            }
        }
        "incr" => match kv::increment(key()?, number(params, "delta", 1i64)?) {
            Ok(value) => json!({ "value": value }),
            Err(e) => kv_error(&e),
        },
        "cas" => {
            let expected = params.get("expected").map(String::as_bytes);
            match kv::compare_and_swap(key()?, expected, body) {
                Ok(swapped) => json!({ "swapped": swapped }),
                Err(e) => kv_error(&e),
            }
        }
        other => return Err(Usage(format!("unknown kv operation `{other}`"))),
    })
}

fn log_lines(params: &Params) -> Result<Value, Usage> {
    let level = match params.get("level").map_or("info", String::as_str) {
        "trace" => Level::Trace,
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" => Level::Warn,
        "error" => Level::Error,
        other => return Err(Usage(format!("unknown level `{other}`"))),
    };
    let msg = params.get("msg").map_or("", String::as_str);
    let n = number(params, "n", 1u64)?;
    for _ in 0..n {
        log::log(level, msg);
    }
    Ok(json!({ "logged": n }))
}

fn write_bytes(params: &Params, mut out: impl Write, byte: u8) -> Result<Value, Usage> {
    let total = number(params, "bytes", 0usize)?;
    let mut line = [byte; 64];
    line[63] = b'\n';
    let mut left = total;
    let mut result = Ok(());
    while left > 0 && result.is_ok() {
        let n = left.min(line.len());
        result = out.write_all(&line[..n]);
        left -= n;
    }
    let result = result.and_then(|()| out.flush());
    Ok(match result {
        Ok(()) => json!({ "written": total }),
        Err(e) => json!({ "error": "io", "detail": e.to_string(), "written": total - left }),
    })
}

fn fetch_one(url: &str) -> Value {
    match http::get(url) {
        Ok(resp) => json!({
            "status": resp.status(),
            "len": resp.body().len(),
            "body": String::from_utf8_lossy(resp.body()),
        }),
        Err(e) => json!({ "error": e.code(), "detail": e.to_string() }),
    }
}

fn fetch(params: &Params) -> Result<Value, Usage> {
    let url = required(params, "url")?;
    if !params.contains_key("n") {
        return Ok(fetch_one(url));
    }
    let n = number(params, "n", 1usize)?;
    let results: Vec<Value> = (0..n).map(|_| fetch_one(url)).collect();
    let failed = results.iter().filter(|r| r.get("error").is_some()).count();
    Ok(json!({ "ok": n - failed, "failed": failed, "results": results }))
}
