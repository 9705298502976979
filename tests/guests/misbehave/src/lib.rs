//! A guest for the host's tests: the last segment of the request path picks
//! how it (mis)behaves, so it can be deployed under any route (`/m/*`):
//!
//! | path | behaviour |
//! |------|-----------|
//! | `/ok` | `200 ok` |
//! | `/loop` | spins forever without calling the host (deadline test) |
//! | `/work?n=N` | N rounds of integer hashing (a compute-bound guest; engine benchmarks), then `200` and the result |
//! | `/alloc?mb=N` | allocates and touches N MiB, then `200 allocated N MiB` |
//! | `/bomb` | allocates and touches 1 MiB after 1 MiB, forever (memory cap test) |
//! | `/trap` | executes `unreachable` |
//! | `/panic` | panics (also a trap) |
//! | `/sleep?ms=N` | `std::thread::sleep`s N ms (time blocked in the host), then `200 slept` |
//! | `/noresponse` | returns without ever setting the response |
//! | `/env` | `200`, a JSON object of its environment variables |
//! | `/big?mb=N` | `200`, streams N MiB of `x` without holding them in memory |
//! | `/print?lines=N` | prints `stdout line I` N times to stdout and `stderr line` once to stderr, then `200 printed` |
//! | `/flood?lines=N[&to=log]` | prints N empty lines to stdout (one write each), or with `to=log` makes N empty `log` calls, then `200 flooded N empty lines` (benches/hostile.sh) |
//! | `/errorcode?kb=N` | answers the `internal-error` error code with [`HOSTILE`] and N KiB of `x` as its message |
//! | `/fake-overloaded` | `503` with `Retry-After: 1` and the JSON error the host answers when it is saturated (`overloaded`), but without its invocation id |
//!
//! Anything else answers `404`.
//!
//! `/noresponse`, `/big` and `/errorcode` need `wasi:http` directly, so this guest
//! implements the export itself and hands every other path to the SDK.
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p misbehave`.

use std::hint::black_box;
use std::time::Duration;

use wisp_sdk::__private::wasi::http::types::{ErrorCode, Fields, OutgoingBody, OutgoingResponse};
use wisp_sdk::__private::{self as raw, Guest, IncomingRequest, ResponseOutparam};
use wisp_sdk::{IntoResponse, Request, Response};

const MIB: usize = 1 << 20;

/// An error message that tries to forge a line of the host's log and to
/// drive the terminal of whoever reads it: ESC and C1 sequences, a
/// newline, a carriage return.
pub const HOSTILE: &str =
    "misbehave: \x1b[31mred\x1b[0m\n2030-01-01T00:00:00Z  INFO wisp: forged line\r\u{9b}2J";
const PAGE: usize = 64 * 1024;

struct Misbehave;

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let uri = request.path_with_query().unwrap_or_default();
        let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
        match last_segment(path) {
            // Dropping the outparam unset is what a guest that forgets to
            // answer looks like to the host.
            "noresponse" => drop((request, out)),
            "big" => {
                drop(request);
                big(out, param(query, "mb").unwrap_or(1));
            }
            "errorcode" => {
                drop(request);
                let kb = param(query, "kb").unwrap_or(0);
                let message = format!("{HOSTILE}{}", "x".repeat(kb * 1024));
                ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(message))));
            }
            _ => raw::serve(request, out, handle),
        }
    }
}

raw::export!(Misbehave with_types_in wisp_sdk::__private);

fn handle(req: Request) -> Response {
    match last_segment(req.path()) {
        "ok" => Response::text("ok"),
        "loop" => spin(),
        "work" => {
            let n = param(req.query(), "n").unwrap_or(1_000_000);
            Response::text(format!("{}", work(n as u64)))
        }
        "alloc" => match param(req.query(), "mb") {
            Some(mb) => {
                black_box(allocate(mb * MIB));
                Response::text(format!("allocated {mb} MiB"))
            }
            None => (400, "usage: /alloc?mb=N").into_response(),
        },
        "bomb" => bomb(),
        "trap" => trap(),
        "panic" => panic!("misbehave: panicking as asked"),
        "sleep" => {
            let ms = param(req.query(), "ms").unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms as u64));
            Response::text("slept")
        }
        "print" => {
            let lines = param(req.query(), "lines").unwrap_or(1);
            for i in 0..lines {
                println!("stdout line {i}");
            }
            eprintln!("stderr line");
            Response::text("printed")
        }
        "flood" => {
            let lines = param(req.query(), "lines").unwrap_or(1);
            if req.query().split('&').any(|p| p == "to=log") {
                for _ in 0..lines {
                    wisp_sdk::log::info("");
                }
            } else {
                for _ in 0..lines {
                    println!();
                }
            }
            Response::text(format!("flooded {lines} empty lines"))
        }
        "env" => {
            let vars: serde_json::Map<String, serde_json::Value> =
                std::env::vars().map(|(k, v)| (k, v.into())).collect();
            Response::ok(serde_json::Value::Object(vars).to_string())
                .with_header("content-type", "application/json")
        }
        // What the host answers when no invocation slot is free, as far as
        // a function can know it (not the invocation id).
        "fake-overloaded" => (
            503,
            r#"{"error":{"code":"overloaded","message":"too many invocations in flight; retry shortly"}}"#,
        )
            .into_response()
            .with_header("content-type", "application/json")
            .with_header("retry-after", "1"),
        // A hop-by-hop header the host manages itself, beside ordinary ones.
        "hop" => (201, "created")
            .into_response()
            .with_header("x-kept", "yes")
            .with_header("keep-alive", "timeout=5"),
        _ => Response::not_found(),
    }
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

fn param(query: &str, name: &str) -> Option<usize> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// `n` rounds of xorshift and multiply: arithmetic the optimiser cannot fold
/// away (the result is answered).
fn work(n: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..black_box(n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(i);
    }
    x
}

/// A loop the optimiser cannot remove: `black_box` hides the counter.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// `bytes` of heap, every wasm page written so that it is really committed.
fn allocate(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for i in (0..bytes).step_by(PAGE) {
        v[i] = 1;
    }
    black_box(v)
}

/// Grows until the host's memory cap stops it (the allocation failure aborts).
fn bomb() -> ! {
    let mut hoard = Vec::new();
    loop {
        hoard.push(allocate(MIB));
        black_box(&hoard);
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Streams `mb` MiB of `x` in 64 KiB writes, never holding more than one.
fn big(out: ResponseOutparam, mb: usize) {
    let headers = Fields::new();
    headers
        .append("content-type", b"application/octet-stream")
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the stream is taken once");
    let chunk = [b'x'; 64 * 1024];
    for _ in 0..mb * (MIB / chunk.len()) {
        if raw::write_all(&stream, &chunk).is_err() {
            // The client went away; dropping the body unfinished tells the host.
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}
