//! Limits: each breach answers a clear error, and the next request works.

use std::time::{Duration, Instant};

use crate::harness::*;

fn misbehave(w: &Wisp, query: &[(&str, &str)]) {
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let mut q = vec![("route", "/m/*")];
    q.extend_from_slice(query);
    let r = w.admin().deploy("m", &wasm, &q);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

fn assert_ok_after(w: &Wisp) {
    let r = w.get("/m/ok");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "ok");
}

#[test]
fn tight_loop_is_interrupted_at_the_deadline() {
    let w = Wisp::start();
    misbehave(&w, &[("timeout_ms", "1000")]);
    let start = Instant::now();
    let r = w.get("/m/loop");
    let took = start.elapsed();
    let id = r.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(body["error"]["invocation_id"], id);
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "answered too early: {took:?}"
    );
    assert_ok_after(&w);
}

#[test]
fn time_blocked_in_the_host_counts_against_the_deadline() {
    let w = Wisp::start();
    misbehave(&w, &[("timeout_ms", "500")]);
    let start = Instant::now();
    assert_error(w.get("/m/sleep?ms=10000"), 504, "timeout");
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(w.get("/m/sleep?ms=10").status(), 200);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let w = Wisp::start();
    misbehave(&w, &[("memory_bytes", &(32u64 << 20).to_string())]);
    let msg = assert_error(w.get("/m/bomb"), 500, "memory_limit");
    assert!(msg.contains("33554432"), "{msg}");
    // Below the cap works.
    let r = w.get("/m/alloc?mb=8");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert_ok_after(&w);
}

#[test]
fn trap_and_panic_answer_500() {
    let w = Wisp::start();
    misbehave(&w, &[]);
    assert_error(w.get("/m/trap"), 500, "trap");
    assert_ok_after(&w);
    assert_error(w.get("/m/panic"), 500, "trap");
    assert_ok_after(&w);
    assert_error(w.get("/m/noresponse"), 502, "bad_response");
    assert_ok_after(&w);
    // The details went to the log with the invocation id.
    assert!(w.log_text().contains("guest trapped"));
}

#[test]
fn oversized_body_answers_413() {
    let w = Wisp::start();
    misbehave(&w, &[("max_body_bytes", "1048576")]);
    let wasm = std::fs::read(guest("echo")).unwrap();
    let r = w.admin().deploy(
        "echo",
        &wasm,
        &[("route", "/echo"), ("max_body_bytes", "1048576")],
    );
    assert_eq!(r.status(), 201);
    let big = vec![b'x'; (1 << 20) + 1];
    // Declared too large: refused before any instance starts.
    let r = client()
        .post(format!("{}/m/ok", w.data_url))
        .body(big.clone())
        .send()
        .unwrap();
    // The unread rest of the body: the connection is not reused.
    assert_eq!(r.headers()["connection"], "close");
    let msg = assert_error(r, 413, "body_too_large");
    assert!(msg.contains("1048576"), "{msg}");
    // Streamed (chunked, no Content-Length): cut off at the cap while the
    // guest reads it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send_chunked = |len: usize| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![b'y'; len]
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/echo", w.data_url))
                .header("x-echo-mode", "raw")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().len())
        })
    };
    assert_eq!(send_chunked(1 << 20), (200, 1 << 20));
    assert_eq!(send_chunked((1 << 20) + 1).0, 413);
    assert_ok_after(&w);
}

#[test]
fn past_the_in_flight_bound_answers_503_with_retry_after() {
    // One slot for the host: a second function finds none (503); the
    // busy function itself has used up its share (429).
    let w = Wisp::start_with(Opts::default().arg("--max-in-flight").arg("1"));
    misbehave(&w, &[]);
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    let url = format!("{}/m/sleep?ms=1500", w.data_url);
    let slow = std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16());
    std::thread::sleep(Duration::from_millis(400));
    let r = w.get("/hello/x");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, 503, "overloaded");
    let r = w.get("/m/ok");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error(r, 429, "function_busy");
    assert_eq!(slow.join().unwrap(), 200);
    assert_ok_after(&w);
    assert_eq!(w.get("/hello/x").status(), 200);
}

/// Where the pooling allocator cannot reserve its address space (qemu-user,
/// a 39-bit address space, `ulimit -v`), the host says so in one log line,
/// allocates each instance on demand, and keeps every limit.
#[cfg(target_os = "linux")]
#[test]
fn without_room_for_the_instance_pool_the_host_allocates_on_demand() {
    // 32 GiB: room for a few on-demand instances, far from the pool's
    // terabytes.
    let opts = Opts::default().address_space_kib(32 << 20);
    let mut w = Wisp::start_with(opts.clone());
    let fallback = "falling back to on-demand instance allocation";
    let lines = |w: &Wisp| w.log_text().matches(fallback).count();
    assert_eq!(lines(&w), 1, "{}", w.log_text());
    assert!(w.log_text().contains("engine ready (on-demand allocator)"));

    misbehave(
        &w,
        &[
            ("timeout_ms", "1000"),
            ("memory_bytes", &(32u64 << 20).to_string()),
        ],
    );
    assert_ok_after(&w);
    let start = Instant::now();
    assert_error(w.get("/m/loop"), 504, "timeout");
    assert!(start.elapsed() < Duration::from_millis(2000));
    assert_error(w.get("/m/bomb"), 500, "memory_limit");
    assert_ok_after(&w);

    // Restarted under the same limit, it serves without compiling: the
    // compiled code is kept for this engine's settings.
    assert_eq!(w.terminate().code(), Some(0));
    let w2 = w.restart_on(opts);
    assert_eq!(lines(&w2), 1, "{}", w2.log_text());
    assert_ok_after(&w2);
    assert_eq!(w2.metric("wisp_compiles_total"), 0.0);
}

/// Guests stuck in loops move off the serving threads once they have run
/// for a few epoch ticks: a dozen of them, of a WASI 0.2 function and a 0.3
/// one, on a host with two serving threads, are each cut at their deadline
/// while other requests keep being answered promptly. (On the serving
/// threads they held every other request there up for about a second.)
#[test]
fn stuck_guests_do_not_hold_up_other_requests() {
    let w = Wisp::start_with(Opts::default().arg("--serve-threads").arg("2"));
    misbehave(&w, &[("timeout_ms", "2000")]);
    let p3 = std::fs::read(guest("p3")).unwrap();
    let r = w
        .admin()
        .deploy("p3", &p3, &[("route", "/p3/*"), ("timeout_ms", "2000")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_ok_after(&w);

    let stuck: Vec<_> = (0..12)
        .map(|i| {
            let url = if i % 2 == 0 {
                format!("{}/m/loop", w.data_url)
            } else {
                format!("{}/p3/loop", w.data_url)
            };
            std::thread::spawn(move || {
                let start = Instant::now();
                let status = client().get(url).send().unwrap().status().as_u16();
                (status, start.elapsed())
            })
        })
        .collect();
    // Past the first few ticks, every stuck guest has moved.
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        let start = Instant::now();
        assert_ok_after(&w);
        slowest = slowest.max(start.elapsed());
        answered += 1;
    }
    for handle in stuck {
        let (status, took) = handle.join().unwrap();
        assert_eq!(status, 504);
        assert!(took < Duration::from_millis(3000), "cut after {took:?}");
    }
    eprintln!("{answered} requests beside the stuck guests, the slowest in {slowest:?}");
    assert!(
        slowest < Duration::from_millis(250),
        "a request beside the stuck guests took {slowest:?}"
    );
    assert_ok_after(&w);
}
