//! WASI 0.3 components (`wasi:http/handler@0.3`, built with the `wasip3`
//! crate: tests/guests/p3): deployed and served like 0.2 ones, with the same
//! limits, capabilities, logs, versions and restarts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::events::{cli_ok, publish, published_id};
use crate::harness::*;

fn deploy_p3(w: &Wisp, query: &[(&str, &str)]) -> reqwest::blocking::Response {
    let wasm = std::fs::read(guest("p3")).unwrap();
    let mut q = vec![("route", "/p3/*")];
    q.extend_from_slice(query);
    w.admin().deploy("p3", &wasm, &q)
}

fn deployed(w: &Wisp, query: &[(&str, &str)]) {
    let r = deploy_p3(w, query);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

#[test]
fn a_wasi_0_3_component_deploys_serves_and_says_what_it_is() {
    let w = Wisp::start();
    deployed(&w, &[]);
    let r = w.get("/p3/hello");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("wisp-invocation-id"));
    assert_eq!(r.text().unwrap(), "hello from WASI 0.3\n");
    assert_eq!(w.get("/p3/nope").status(), 404);
    let r = w.get("/p3/hello");
    assert_eq!(r.headers()["content-length"], "20");

    let info: Value = w.admin().get("/v1/functions/p3").json().unwrap();
    assert_eq!(info["kind"], "wasi-0.3-component");
    assert_eq!(info["handlers"], json!(["http"]));
    let text = cli_ok(&w, &["info", "p3"]);
    assert!(
        text.contains("kind            component, WASI 0.3\n"),
        "{text}"
    );
    // A 0.2 component beside it says so too.
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let text = cli_ok(&w, &["info", "hello"]);
    assert!(
        text.contains("kind            component, WASI 0.2\n"),
        "{text}"
    );

    // Counted like any invocation.
    assert!(w.metric("wisp_invocations_total") >= 2.0);
}

#[test]
fn bodies_stream_both_ways_and_trailers_reach_the_client() {
    let w = Wisp::start();
    deployed(&w, &[]);
    let body: Vec<u8> = (0..5u32 << 20).map(|i| (i % 251) as u8).collect();
    let r = client()
        .post(format!("{}/p3/echo", w.data_url))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.bytes().unwrap();
    assert_eq!(echoed.len(), body.len());
    assert!(echoed[..] == body[..], "the echo differs from the request");

    // HTTP/1.1 with `TE: trailers`: the trailer the guest declared follows
    // the last chunk.
    let port = w.data_url.trim_end_matches('/').rsplit(':').next().unwrap();
    let mut conn = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        conn,
        "GET /p3/trailers HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    assert!(raw.contains("body before trailers"), "{raw}");
    assert!(raw.contains("\r\n0\r\nx-checksum: 42\r\n"), "{raw}");
}

#[test]
fn request_bodies_over_the_cap_are_refused() {
    let w = Wisp::start();
    deployed(&w, &[("max_body_bytes", "1024")]);
    let r = client()
        .post(format!("{}/p3/echo", w.data_url))
        .body(vec![7u8; 4096])
        .send()
        .unwrap();
    assert_error(r, 413, "body_too_large");
    assert_eq!(w.get("/p3/hello").status(), 200);
}

#[test]
fn tight_loops_end_at_the_deadline_also_after_an_await() {
    let w = Wisp::start();
    deployed(&w, &[("timeout_ms", "1000")]);
    for path in ["/p3/loop", "/p3/async-loop"] {
        let start = Instant::now();
        let msg = assert_error(w.get(path), 504, "timeout");
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(1000)..Duration::from_millis(2000)).contains(&took),
            "{path} answered after {took:?}: {msg}"
        );
    }
    assert_eq!(w.get("/p3/hello").status(), 200);
}

#[test]
fn memory_bombs_and_traps_fail_alone_and_every_request_gets_a_fresh_instance() {
    let w = Wisp::start();
    deployed(&w, &[("memory_bytes", &(32u64 << 20).to_string())]);
    let msg = assert_error(w.get("/p3/bomb"), 500, "memory_limit");
    assert!(msg.contains("33554432"), "{msg}");
    assert_error(w.get("/p3/trap"), 500, "trap");
    // A global never survives a request: each one has its own instance.
    for _ in 0..3 {
        assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    }
}

#[test]
fn the_capabilities_and_logs_work_from_a_0_3_component() {
    let w = Wisp::start();
    deployed(&w, &[]);
    let a = w.admin();
    let r = client()
        .put(format!("{}/p3/kv?key=colour", w.data_url))
        .body("teal")
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "stored");
    assert_eq!(w.get("/p3/kv?key=colour").text().unwrap(), "teal");
    assert_eq!(a.get("/v1/functions/p3/kv/colour").text().unwrap(), "teal");
    assert_eq!(w.get("/p3/kv?key=other").status(), 404);

    assert_eq!(w.get("/p3/config?key=greeting").status(), 404);
    cli_ok(&w, &["config", "set", "p3", "greeting=hi there"]);
    assert_eq!(w.get("/p3/config?key=greeting").text().unwrap(), "hi there");

    let r = w.get("/p3/log");
    let id = r.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    // Read whole: the host has written the log by the body's end.
    let _ = r.bytes();
    let logs = cli_ok(&w, &["logs", "p3", "--invocation", &id]);
    for line in ["to stdout", "to stderr", "to the log"] {
        assert!(logs.contains(line), "{line:?} missing from:\n{logs}");
    }
    // A response of a declared length, sent whole, ends the invocation
    // normally (it is not taken for a client that went away).
    assert!(!logs.contains("cancelled"), "{logs}");
}

/// A loopback HTTP/1.1 server answering `upstream says hi`; its port.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\nupstream says hi",
            );
        }
    });
    port
}

#[test]
fn outbound_requests_follow_the_allow_list() {
    let w = Wisp::start();
    let port = upstream();
    let url = format!("/p3/fetch?url=http://127.0.0.1:{port}/x");
    deployed(&w, &[]);
    let r = w.get(&url);
    assert_eq!(r.status(), 502);
    let text = r.text().unwrap();
    assert!(text.contains("HttpRequestDenied"), "{text}");

    let allow = format!("http://127.0.0.1:{port}");
    deployed(&w, &[("allow_outbound", &allow)]);
    let r = w.get(&url);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "status 200");
}

#[test]
fn versions_rollback_and_restart_without_compiling() {
    let mut w = Wisp::start();
    deployed(&w, &[]);
    // Version 2 is a 0.2 component at the same route; rolling back brings
    // the 0.3 one back.
    let hello = std::fs::read(guest("hello")).unwrap();
    let r = w.admin().deploy("p3", &hello, &[]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(
        w.get("/p3/hello").text().unwrap(),
        "hello from wisp at /p3/hello"
    );
    cli_ok(&w, &["rollback", "p3"]);
    assert_eq!(w.get("/p3/hello").text().unwrap(), "hello from WASI 0.3\n");

    assert_eq!(w.terminate().code(), Some(0));
    let w2 = w.restart_on(Opts::default());
    assert_eq!(w2.get("/p3/hello").text().unwrap(), "hello from WASI 0.3\n");
    assert_eq!(
        w2.metric("wisp_compiles_total"),
        0.0,
        "a restart must not recompile"
    );
}

#[test]
fn events_reach_a_0_3_component_as_posts() {
    let w = Wisp::start();
    deployed(&w, &[]);
    cli_ok(
        &w,
        &["subscribe", "p3", "orders", "--path", "/p3/kv?key=last"],
    );
    published_id(publish(&w.admin(), "orders", b"order 17"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = w.admin().get("/v1/functions/p3/kv/last");
        if r.status() == 200 {
            assert_eq!(r.text().unwrap(), "order 17");
            break;
        }
        assert!(Instant::now() < deadline, "the event was not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host with one serving thread: each serving thread keeps its own
/// reused instances, and these tests follow one instance from request to
/// request, whichever connection they come on.
fn one_thread() -> Wisp {
    Wisp::start_with(Opts::default().arg("--serve-threads").arg("1"))
}

#[test]
fn with_reuse_a_global_persists_on_one_instance_and_a_trap_discards_it() {
    let w = one_thread();
    deployed(&w, &[("reuse", "1000")]);
    let counts: Vec<String> = (0..4)
        .map(|_| w.get("/p3/counter").text().unwrap())
        .collect();
    assert_eq!(counts, ["1", "2", "3", "4"]);
    let info: Value = w.admin().get("/v1/functions/p3").json().unwrap();
    assert_eq!(
        info["reuse"],
        json!({"min": 1000, "max": 1000, "concurrency": 1, "idle_timeout_ms": 10000})
    );
    let text = cli_ok(&w, &["info", "p3"]);
    assert!(
        text.contains(
            "instances       reused: 1000 requests each, 1 at once, kept 10s when idle\n"
        ),
        "{text}"
    );

    // A trap ends the instance: the next request gets a new one.
    assert_error(w.get("/p3/trap"), 500, "trap");
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    // So does the memory cap.
    assert_error(w.get("/p3/bomb"), 500, "memory_limit");
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    assert_eq!(w.get("/p3/counter").text().unwrap(), "2");

    // An instance retires after its count; `--reuse 1` turns reuse off.
    deployed(&w, &[("reuse", "2")]);
    let counts: Vec<String> = (0..4)
        .map(|_| w.get("/p3/counter").text().unwrap())
        .collect();
    assert_eq!(counts, ["1", "2", "1", "2"]);
    deployed(&w, &[("reuse", "1")]);
    let info: Value = w.admin().get("/v1/functions/p3").json().unwrap();
    assert!(info.get("reuse").is_none(), "{info}");
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
}

#[test]
fn with_reuse_the_deadline_is_per_request_and_a_stuck_instance_is_replaced() {
    let w = one_thread();
    deployed(&w, &[("reuse", "1000"), ("timeout_ms", "1000")]);
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    for path in ["/p3/loop", "/p3/async-loop"] {
        let start = Instant::now();
        let msg = assert_error(w.get(path), 504, "timeout");
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(1000)..Duration::from_millis(2000)).contains(&took),
            "{path} answered after {took:?}: {msg}"
        );
        // The stuck instance is gone.
        assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
    }
    // Requests that each finish in time on one instance are not cut by the
    // time the instance has been alive.
    for _ in 0..3 {
        assert_eq!(w.get("/p3/sleep?ms=400").status(), 200);
    }
    assert_eq!(w.get("/p3/counter").text().unwrap(), "2");
}

#[test]
fn with_reuse_concurrency_one_instance_serves_requests_at_once() {
    let w = one_thread();
    deployed(
        &w,
        &[
            ("reuse", "1000"),
            ("reuse_concurrency", "4"),
            ("idle_timeout_ms", "60000"),
        ],
    );
    // Four requests that each wait 500 ms, sent at once, end together on
    // one instance: the counter then says 5.
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/p3/sleep?ms=500", w.data_url);
            std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(w.get("/p3/counter").text().unwrap(), "1");
}

#[test]
fn reuse_settings_are_refused_where_they_do_not_apply() {
    let w = Wisp::start();
    let a = w.admin();
    // A 0.2 component and a preview-1 module always get a fresh instance.
    let hello = std::fs::read(guest("hello")).unwrap();
    let msg = assert_error(
        a.deploy("hello", &hello, &[("reuse", "10")]),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("WASI 0.3"), "{msg}");
    let cgi = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let msg = assert_error(
        a.deploy("cgi", &cgi, &[("reuse", "10")]),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("WASI 0.3"), "{msg}");
    // Zero, backwards, unparsable; concurrency or idle time without reuse.
    for q in [
        [("reuse", "0"), ("route", "/p3/*")],
        [("reuse", "9..3"), ("route", "/p3/*")],
        [("reuse", "many"), ("route", "/p3/*")],
        [("reuse_concurrency", "0"), ("reuse", "5")],
        [("idle_timeout_ms", "0"), ("reuse", "5")],
        [("reuse_concurrency", "2"), ("route", "/p3/*")],
    ] {
        let msg = assert_error(deploy_p3(&w, &q), 400, "invalid_argument");
        assert!(
            msg.contains("reuse") || msg.contains("idle_timeout"),
            "{q:?}: {msg}"
        );
    }
    // A negative count is not a number of requests.
    let r = deploy_p3(&w, &[("reuse_concurrency", "-1")]);
    assert_eq!(r.status(), 400);
    // Nothing was stored.
    assert!(a.functions().is_empty());

    // The CLI says the same.
    let path = guest("hello");
    let out = w.cli(&["deploy", "hello", path.to_str().unwrap(), "--reuse", "10"]);
    let err = fails(out);
    assert!(err.contains("WASI 0.3"), "{err}");
    let path = guest("p3");
    let err = fails(w.cli(&["deploy", "p3", path.to_str().unwrap(), "--reuse", "0"]));
    assert!(err.contains("0 requests per instance"), "{err}");
    let out = w.cli(&[
        "deploy",
        "p3",
        path.to_str().unwrap(),
        "--reuse-concurrency",
        "-2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-2"), "{err}");
    assert!(a.functions().is_empty());
}

#[test]
fn uploads_using_wasi_0_3_are_checked_for_the_handler_and_their_imports() {
    let w = Wisp::start();
    let a = w.admin();
    // WASI 0.3 imports but no wasi:http/handler@0.3 export.
    let no_handler = wat::parse_str(
        r#"(component
            (import "wasi:random/random@0.3.0" (instance
                (export "get-random-u64" (func (result u64))))))"#,
    )
    .unwrap();
    let msg = assert_error(a.deploy("p3", &no_handler, &[]), 400, "missing_export");
    assert!(msg.contains("wasi:http/handler@0.3"), "{msg}");
    // An import this host does not provide is named.
    let unknown = wat::parse_str(
        r#"(component
            (import "wasi:random/random@0.3.0" (instance
                (export "get-random-u64" (func (result u64)))))
            (import "acme:missing/thing@1.0.0" (instance
                (export "go" (func)))))"#,
    )
    .unwrap();
    let msg = assert_error(a.deploy("p3", &unknown, &[]), 400, "unsatisfied_imports");
    assert!(msg.contains("acme:missing/thing@1.0.0"), "{msg}");
    assert!(!msg.contains("wasi:random"), "{msg}");
    // Nothing was stored, and the real thing deploys.
    assert!(a.functions().is_empty());
    deployed(&w, &[]);
}

#[test]
fn admission_applies_to_0_3_components_fresh_and_reused() {
    let w = Wisp::start();
    for reuse in ["1", "1000"] {
        deployed(
            &w,
            &[
                ("reuse", reuse),
                ("concurrency", "1"),
                ("queue", "1"),
                ("queue_timeout_ms", "5000"),
            ],
        );
        // One runs, one waits its turn, the third is refused at once.
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let url = format!("{}/p3/sleep?ms=600", w.data_url);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * i));
                    let r = client().get(url).send().unwrap();
                    (r.status().as_u16(), r.headers().contains_key("retry-after"))
                })
            })
            .collect();
        let mut answers: Vec<(u16, bool)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        answers.sort();
        assert_eq!(
            answers,
            [(200, false), (200, false), (429, true)],
            "reuse {reuse}"
        );
    }
}
