//! A WASI 0.3 guest for the host's tests: a component exporting
//! `wasi:http/handler@0.3` (the `service` world), built with the `wasip3`
//! crate as a function author on a current toolchain would. The path's last
//! segment picks the behaviour (so it can be deployed under any prefix
//! route, `/p3/*`):
//!
//! | path | does |
//! |------|------|
//! | `/hello` | `200` `hello from WASI 0.3` |
//! | `/echo` | streams the request body back as it arrives, with the request's trailers |
//! | `/trailers` | a body, then the trailer `x-checksum: 42` |
//! | `/counter` | adds one to a global and answers its value: `1` on a fresh instance |
//! | `/sleep?ms=N` | waits N ms (an async wait, the instance idle), then `slept N` |
//! | `/loop` | spins forever in the handler |
//! | `/async-loop` | reads the request body to its end (awaiting the host), then spins forever |
//! | `/bomb` | grows its memory until the host's cap stops it |
//! | `/trap` | panics (a trap) |
//! | `/kv?key=K` | `GET` reads the key (`404` if unset), `PUT` or `POST` stores the body under it |
//! | `/config?key=K` | the setting's value (`404` if unset) |
//! | `/log` | writes `to stdout` to stdout, `to stderr` to stderr and a `wisp:function/log` line |
//! | `/fetch?url=U` | one outbound `GET`: `200` with `status S`, or `502` with the error |
//!
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p p3`.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_future, wit_stream};

/// Wisp's capability imports (`wisp:function` kv, config, log, topics).
#[allow(missing_docs)]
mod capabilities {
    wit_bindgen::generate!({
        path: "../../../sdk/wit",
        world: "wisp:function/capabilities",
    });
}

use capabilities::wisp::function::{config, kv, log};

wasip3::http::service::export!(Guest);

struct Guest;

/// Survives between requests only when the host reuses the instance.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for Guest {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let pq = request.get_path_with_query().unwrap_or_default();
        let (path, query) = pq.split_once('?').unwrap_or((pq.as_str(), ""));
        let path = &path[path.rfind('/').unwrap_or(0)..];
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        match path {
            "/hello" => text(200, "hello from WASI 0.3\n"),
            "/echo" => echo(request),
            "/trailers" => with_trailers(),
            "/counter" => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
                text(200, &n.to_string())
            }
            "/sleep" => {
                let ms: u64 = param("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                text(200, &format!("slept {ms}"))
            }
            "/loop" => spin(),
            "/async-loop" => {
                let (res_tx, res_rx) = wit_future::new(|| Ok(()));
                let (body, _trailers) = Request::consume_body(request, res_rx);
                let _ = body.collect().await;
                drop(res_tx);
                spin()
            }
            "/bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/trap" => panic!("the p3 guest traps on purpose"),
            "/kv" => {
                let key = param("key").unwrap_or_default();
                if matches!(request.get_method(), Method::Put | Method::Post) {
                    let (res_tx, res_rx) = wit_future::new(|| Ok(()));
                    let (body, _trailers) = Request::consume_body(request, res_rx);
                    let value = body.collect().await;
                    drop(res_tx);
                    match kv::set(&key, &value, None) {
                        Ok(()) => text(200, "stored"),
                        Err(e) => text(500, &format!("{e:?}")),
                    }
                } else {
                    match kv::get(&key) {
                        Ok(Some(v)) => text(200, &String::from_utf8_lossy(&v)),
                        Ok(None) => text(404, "unset"),
                        Err(e) => text(500, &format!("{e:?}")),
                    }
                }
            }
            "/config" => match config::get(&param("key").unwrap_or_default()) {
                Some(v) => text(200, &v),
                None => text(404, "unset"),
            },
            "/log" => {
                println!("to stdout");
                eprintln!("to stderr");
                log::log(log::Level::Warn, "to the log");
                text(200, "logged")
            }
            "/fetch" => fetch(&param("url").unwrap_or_default()).await,
            _ => text(404, "no such path"),
        }
    }
}

/// A tight loop the compiler cannot remove.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// A response whose body `bytes` is written by a task after `handle` has
/// returned, as bodies are in WASI 0.3.
fn respond(status: u16, headers: Fields, bytes: Vec<u8>) -> Result<Response, ErrorCode> {
    let (mut tx, rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    drop(trailers_tx);
    response
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some("bad status".into())))?;
    wasip3::spawn_local(async move {
        tx.write_all(bytes).await;
    });
    Ok(response)
}

fn text(status: u16, body: &str) -> Result<Response, ErrorCode> {
    let headers = Fields::from_list(&[
        ("content-type".into(), b"text/plain".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
    ])
    .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    respond(status, headers, body.as_bytes().to_vec())
}

/// Copies the request body to the response body chunk by chunk, both
/// streaming: the guest never holds the whole body.
fn echo(request: Request) -> Result<Response, ErrorCode> {
    let (res_tx, res_rx) = wit_future::new(|| Ok(()));
    let (mut body, trailers) = Request::consume_body(request, res_rx);
    let (mut tx, rx) = wit_stream::new();
    let (response, _sent) = Response::new(Fields::new(), Some(rx), trailers);
    wasip3::spawn_local(async move {
        loop {
            let (result, chunk) = body.read(Vec::with_capacity(64 << 10)).await;
            match result {
                StreamResult::Complete(_) => {
                    if !tx.write_all(chunk).await.is_empty() {
                        break;
                    }
                }
                StreamResult::Dropped | StreamResult::Cancelled => break,
            }
        }
        drop(res_tx);
    });
    Ok(response)
}

fn with_trailers() -> Result<Response, ErrorCode> {
    let (mut tx, rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    // HTTP/1.1 clients get the trailers it declares (and asks for with
    // `TE: trailers`); HTTP/2 clients get them all.
    let headers = Fields::from_list(&[("trailer".into(), b"x-checksum".to_vec())])
        .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    wasip3::spawn_local(async move {
        tx.write_all(b"body before trailers\n".to_vec()).await;
        drop(tx);
        let trailers = Fields::from_list(&[("x-checksum".into(), b"42".to_vec())]).ok();
        let _ = trailers_tx.write(Ok(trailers)).await;
    });
    Ok(response)
}

/// One outbound `GET` through `wasi:http/client@0.3`.
async fn fetch(url: &str) -> Result<Response, ErrorCode> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (_trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    match wasip3::http::client::send(request).await {
        Ok(response) => text(200, &format!("status {}", response.get_status_code())),
        Err(e) => text(502, &format!("{e:?}")),
    }
}
