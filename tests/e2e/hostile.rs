//! Hostile clients: half-sent heads, stalled uploads, floods of
//! connections, clients that go away mid-request, oversized heads. Each
//! attack is followed by normal requests that must succeed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

/// `host:port` of a `http://host:port` URL.
fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

fn connect(url: &str) -> TcpStream {
    let s = TcpStream::connect(addr(url)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Whether the server has closed `s` (EOF or reset), looking for up to
/// `wait`.
fn closed_within(mut s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A response (408 or the like) before the close: keep reading.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// TCP sockets the host process has open (listeners included).
fn open_sockets(w: &Wisp) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", w.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A raw HTTP/1.1 request on `s`; the status of the answer.
fn status_of(s: &mut TcpStream, request: &str) -> u16 {
    s.write_all(request.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no complete response head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn half_sent_heads_are_closed_at_the_header_timeout_while_others_are_served() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--header-timeout")
            .arg("2s")
            .arg("--admin-header-timeout")
            .arg("2s"),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    let baseline = open_sockets(&w);

    // 300 data-plane and 60 admin connections that send half a head and
    // then nothing.
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..360 {
        let url = if i < 300 { &w.data_url } else { &w.admin_url };
        let mut s = connect(url);
        s.write_all(b"GET /hello/x HTTP/1.1\r\nHost: wisp\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    // Everyone else is served meanwhile, on both listeners.
    for _ in 0..5 {
        assert_eq!(w.get("/hello/world").status(), 200);
        assert_eq!(
            client()
                .get(format!("{}/v1/health", w.admin_url))
                .send()
                .unwrap()
                .status(),
            200
        );
    }
    assert!(open_sockets(&w) >= baseline + 300, "the slow ones are open");

    // Past the header timeout (2 s, checked every 0.5 s) every one of them
    // is closed by the host.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(started.elapsed()));
    let still_open = slow
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(500)))
        .count();
    assert_eq!(still_open, 0, "half-sent connections still open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_sockets(&w) > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_sockets(&w) <= baseline,
        "the host still holds sockets: {} > {baseline}",
        open_sockets(&w)
    );
    assert_eq!(w.get("/hello/again").status(), 200);
    assert!(w.metric("wisp_connections_closed_total") >= 360.0);
}

#[test]
fn idle_keep_alive_connections_close_and_busy_ones_do_not() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--idle-timeout")
            .arg("1s")
            .arg("--header-timeout")
            .arg("1s"),
    );
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    assert_eq!(
        w.admin().deploy("m", &wasm, &[("route", "/m/*")]).status(),
        201
    );

    // A request longer than both timeouts is not cut.
    let mut s = connect(&w.data_url);
    let req = "GET /m/sleep?ms=2500 HTTP/1.1\r\nHost: wisp\r\n\r\n";
    assert_eq!(status_of(&mut s, req), 200);
    // Kept alive, then idle: closed after about a second.
    let t = Instant::now();
    assert!(closed_within(&s, Duration::from_secs(5)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    assert_eq!(w.get("/m/ok").status(), 200);
}

#[test]
fn a_full_listener_makes_room_by_closing_the_longest_idle_connection() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-connections")
            .arg("20")
            .arg("--idle-timeout")
            .arg("60s"),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    // 20 connections, each served once and then idle.
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&w.data_url);
            let req = "GET /hello/x HTTP/1.1\r\nHost: wisp\r\n\r\n";
            assert_eq!(status_of(&mut s, req), 200);
            std::thread::sleep(Duration::from_millis(30));
            s
        })
        .collect();
    // Let the watchdogs see them idle (they look once a second).
    std::thread::sleep(Duration::from_millis(1500));
    // A new client is served; the longest-idle connection made room.
    for i in 0..3 {
        let mut s = connect(&w.data_url);
        let req = "GET /hello/new HTTP/1.1\r\nHost: wisp\r\n\r\n";
        assert_eq!(status_of(&mut s, req), 200, "new connection {i}");
        idle.push(s);
    }
    let closed: Vec<usize> = idle[..20]
        .iter()
        .enumerate()
        .filter(|(_, s)| closed_within(s, Duration::from_millis(300)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(closed, vec![0, 1, 2], "the three oldest made room");
    assert_eq!(w.admin().get("/v1/health").status(), 200);
}

#[test]
fn stalled_uploads_hold_no_more_than_their_functions_share_and_end_at_the_body_bound() {
    // 20 slots, 10 per function: 40 uploads that announce 1 MB and send
    // 10 bytes take the echo function's 10 and are refused the rest,
    // while hello keeps its own.
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-in-flight")
            .arg("20")
            .arg("--body-timeout")
            .arg("2s"),
    );
    w.admin().deploy_guest("echo", "echo", &["/echo/*"]);
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect(&w.data_url);
            s.write_all(
                b"POST /echo/x HTTP/1.1\r\nHost: wisp\r\nContent-Length: 1000000\r\n\r\n0123456789",
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let r = w.get("/hello/world");
        assert_eq!(r.status(), 200, "another function is served");
    }
    // The uploads past the function's share were answered 429 at once.
    let refused = assert_error(
        client()
            .post(format!("{}/echo/more", w.data_url))
            .body("x")
            .send()
            .unwrap(),
        429,
        "function_busy",
    );
    assert!(refused.contains("share"), "{refused}");

    // After the body bound (2 s, then 1 KiB/s) the stalled ones fail with
    // 408 and their slots are free again.
    let mut statuses = Vec::new();
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        statuses.push(text.split(' ').nth(1).unwrap_or("closed").to_string());
    }
    let timed_out = statuses.iter().filter(|s| *s == "408").count();
    let busy = statuses.iter().filter(|s| *s == "429").count();
    assert_eq!(timed_out, 10, "{statuses:?}");
    assert_eq!(busy, 30, "{statuses:?}");
    let r = client()
        .post(format!("{}/echo/x", w.data_url))
        .body("hello again")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("hello again"));
}

#[test]
fn a_stalled_upload_to_the_admin_api_ends_at_its_body_bound() {
    let w = Wisp::start_with(Opts::default().arg("--admin-body-timeout").arg("1s"));
    let mut s = connect(&w.admin_url);
    let head = format!(
        "POST /v1/functions/stalled HTTP/1.1\r\nHost: wisp\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/wasm\r\nContent-Length: 1000000\r\n\r\n\0asm",
        w.token
    );
    let t = Instant::now();
    assert_eq!(status_of(&mut s, &head), 408);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Nothing was stored, and the API answers.
    assert!(w.admin().functions().is_empty());
    assert_error(
        w.admin().get("/v1/functions/stalled"),
        404,
        "function_not_found",
    );
}

#[test]
fn a_client_that_goes_away_cancels_its_invocation_and_frees_the_slot() {
    // One slot for the function: the next request only gets one if the
    // first invocation was cancelled when its client left.
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-in-flight")
            .arg("2")
            .arg("--max-in-flight-per-function")
            .arg("1"),
    );
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let r = w.admin().deploy("m", &wasm, &[("route", "/m/*")]);
    assert_eq!(r.status(), 201);
    for path in ["/m/loop", "/m/sleep?ms=60000"] {
        let mut s = connect(&w.data_url);
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: wisp\r\n\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Busy: its one slot is taken.
        assert_error(w.get("/m/ok"), 429, "function_busy");
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = w.get("/m/ok");
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{path}: the slot was not freed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The function's log says why.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = w.cli(&["logs", "m"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.matches("client went away").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no cancellation note:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(w.metric("wisp_invocations_total") >= 2.0);
}

#[test]
fn a_cgi_client_that_goes_away_cancels_its_invocation() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-in-flight")
            .arg("2")
            .arg("--max-in-flight-per-function")
            .arg("1"),
    );
    let wasm = std::fs::read(wasip1_guest("cgi-misbehave")).unwrap();
    let r = w.admin().deploy("c", &wasm, &[("route", "/c/*")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    // Before any output (a tight loop), and in the middle of a body the
    // client stops reading (100 MiB, far more than the socket buffers).
    for path in ["/c/loop", "/c/big?mb=100"] {
        let mut s = connect(&w.data_url);
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: wisp\r\n\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_error(w.get("/c/ok"), 429, "function_busy");
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.get("/c/ok").status() != 200 {
            assert!(Instant::now() < deadline, "{path}: the slot was not freed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn oversized_heads_are_refused_with_431() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-header-size")
            .arg("8KiB")
            .arg("--max-headers")
            .arg("20"),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    let big = format!(
        "GET /hello/x HTTP/1.1\r\nHost: wisp\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(status_of(&mut connect(&w.data_url), &big), 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /hello/x HTTP/1.1\r\nHost: wisp\r\n{many}\r\n");
    assert_eq!(status_of(&mut connect(&w.data_url), &req), 431);
    // Within the limits: served.
    let few: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /hello/x HTTP/1.1\r\nHost: wisp\r\n{few}\r\n");
    assert_eq!(status_of(&mut connect(&w.data_url), &req), 200);
    // HTTP/2 (h2c, prior knowledge): the same head limit, through curl.
    let h2 = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(extra)
            .arg(format!("{}/hello/x", w.data_url))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(h2(&[]), "200");
    let big = format!("X-Big: {}", "a".repeat(10_000));
    assert_eq!(h2(&["-H", &big]), "431");
}

#[test]
fn the_admin_listener_has_its_own_connection_limit() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-connections")
            .arg("50")
            .arg("--admin-max-connections")
            .arg("10"),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    // A data-plane flood of busy connections up to the cap...
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    assert_eq!(
        w.admin().deploy("m", &wasm, &[("route", "/m/*")]).status(),
        201
    );
    let busy: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(&w.data_url);
            s.write_all(b"GET /m/sleep?ms=3000 HTTP/1.1\r\nHost: wisp\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // ...refuses new data-plane connections (every one is busy)...
    let mut refused = connect(&w.data_url);
    let _ = refused.write_all(b"GET /hello/x HTTP/1.1\r\nHost: wisp\r\n\r\n");
    assert!(closed_within(&refused, Duration::from_secs(2)));
    // ...while the admin API answers.
    assert_eq!(w.admin().get("/v1/functions").status(), 200);
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client()
        .get(format!("{}/hello/x", w.data_url))
        .send()
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "the data plane did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(w.metric("wisp_connections_refused_total") >= 1.0);
}

/// A preview-1 module with two memories that grows each by 80 MiB: under a
/// 128 MiB cap per memory it would fit twice; the cap is on the two
/// together.
const TWO_MEMORIES: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (memory $second 1)
  (data (i32.const 64) "Content-Type: text/plain\n\ngrown")
  (func (export "_start")
    (if (i32.lt_s (memory.grow $second (i32.const 1280)) (i32.const 0))
      (then unreachable))
    (if (i32.lt_s (memory.grow 0 (i32.const 1280)) (i32.const 0))
      (then unreachable))
    ;; an iovec at 0: 31 bytes at 64, to stdout
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 31))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
"#;

#[test]
fn the_memory_cap_covers_all_memories_together() {
    let w = Wisp::start();
    let wasm = wat::parse_str(TWO_MEMORIES).unwrap();
    let r = w.admin().deploy(
        "two",
        &wasm,
        &[
            ("route", "/two"),
            ("memory_bytes", &(128u64 << 20).to_string()),
        ],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let msg = assert_error(w.get("/two"), 500, "memory_limit");
    assert!(msg.contains("134217728"), "{msg}");
    // With room for both, it runs.
    let r = w.admin().deploy(
        "two",
        &wasm,
        &[("memory_bytes", &(200u64 << 20).to_string())],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = w.get("/two");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "grown");
}
