//! Preview-1 core modules run CGI-style: upload detection and validation,
//! the request in CGI variables, argv and stdin, the response from stdout,
//! the same limits and logs as components, the static directory grant, and
//! the Rust and C examples.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn deploy(w: &Wisp, name: &str, wasm: &[u8], query: &[(&str, &str)]) {
    let r = w.admin().deploy(name, wasm, query);
    let status = r.status();
    assert_eq!(status, 201, "deploy {name}: {}", r.text().unwrap());
}

fn misbehave(w: &Wisp, query: &[(&str, &str)]) {
    let wasm = std::fs::read(wasip1_guest("cgi-misbehave")).unwrap();
    let mut q = vec![("route", "/m/*")];
    q.extend_from_slice(query);
    deploy(w, "m", &wasm, &q);
}

fn assert_ok_after(w: &Wisp) {
    let r = w.get("/m/ok");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "ok");
}

fn invocation_id(r: &reqwest::blocking::Response) -> String {
    r.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The log lines (stream, message) of one invocation, waiting for the
/// background writer to store them.
fn invocation_log(w: &Wisp, function: &str, id: &str, until: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = w
            .admin()
            .get(&format!("/v1/functions/{function}/logs?invocation={id}"))
            .json()
            .unwrap();
        let lines: Vec<(String, String)> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["stream"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if lines.iter().any(|(_, m)| m.contains(until)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no log line containing {until:?}; got {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn uploads_are_detected_and_checked() {
    let w = Wisp::start();
    let a = w.admin();
    // A core module without `_start`: refused, nothing stored.
    let msg = assert_error(
        a.deploy("f", b"\0asm\x01\0\0\0", &[]),
        400,
        "missing_export",
    );
    assert!(msg.contains("_start"), "{msg}");
    // A core module importing beyond wasi_snapshot_preview1: named.
    let foreign: &[u8] = &[
        0, b'a', b's', b'm', 1, 0, 0, 0, // header
        1, 4, 1, 0x60, 0, 0, // type section: () -> ()
        2, 11, 1, 3, b'e', b'n', b'v', 3, b'f', b'o', b'o', 0, 0, // import env::foo
    ];
    let msg = assert_error(a.deploy("f", foreign, &[]), 400, "unsatisfied_imports");
    assert!(msg.contains("env::foo"), "{msg}");
    assert!(a.functions().is_empty());
    // A preview-1 command deploys; a component still does too.
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    deploy(&w, "cgi", &wasm, &[("route", "/cgi/*")]);
    a.deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.get("/cgi/x").status(), 200);
    assert_eq!(w.get("/hello").status(), 200);
}

#[test]
fn rust_example_sees_the_request_as_cgi() {
    let w = Wisp::start();
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    deploy(
        &w,
        "cgi",
        &wasm,
        &[("route", "/cgi/*"), ("env", "GREETING=hi")],
    );

    let r = client()
        .get(format!("{}/cgi/items/7?color=red&x=a%20b", w.data_url))
        .header("x-thing", "one")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-powered-by"], "wasm32-wasip1");
    assert!(r.headers().contains_key("wisp-invocation-id"));
    let j: Value = r.json().unwrap();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["script_name"], "/cgi");
    assert_eq!(j["path_info"], "/items/7");
    assert_eq!(j["query"], "color=red&x=a%20b");
    assert_eq!(j["greeting"], "hi");
    assert_eq!(j["remote_addr"], "127.0.0.1");
    assert_eq!(j["headers"]["x-thing"], "one");
    assert_eq!(j["args"], serde_json::json!(["/cgi", "color=red", "x=a b"]));
    assert_eq!(j["body_bytes"], 0);

    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = client()
            .request(method.parse().unwrap(), format!("{}/cgi", w.data_url))
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().unwrap();
        assert_eq!(j["method"], method);
        assert_eq!(j["path_info"], "");
        assert_eq!(j["content_type"], "text/plain");
        assert_eq!(j["body"], "hello");
    }
}

#[test]
fn megabyte_bodies_both_ways_status_and_redirects() {
    let w = Wisp::start();
    misbehave(&w, &[]);
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let r = client()
        .post(format!("{}/m/echo", w.data_url))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-method"], "POST");
    assert_eq!(r.headers()["x-length"], "1048576");
    assert_eq!(r.bytes().unwrap().as_ref(), &big[..]);

    let r = w.get("/m/status");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-custom"], "yes");
    assert_eq!(r.text().unwrap(), "not here");

    let r = no_redirects()
        .get(format!("{}/m/redirect", w.data_url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://example.com/next");

    // A body over the function's cap: 413, as for components.
    misbehave(&w, &[("max_body_bytes", "1000")]);
    let r = client()
        .post(format!("{}/m/echo", w.data_url))
        .body(big)
        .send()
        .unwrap();
    assert_error(r, 413, "body_too_large");
    assert_ok_after(&w);
}

#[test]
fn loops_garbage_traps_and_exit_codes() {
    let w = Wisp::start();
    misbehave(&w, &[("timeout_ms", "1000")]);

    let start = Instant::now();
    assert_error(w.get("/m/loop"), 504, "timeout");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_ok_after(&w);

    let r = w.get("/m/garbage");
    let id = invocation_id(&r);
    let msg = assert_error(r, 502, "bad_response");
    assert!(msg.contains("not valid CGI"), "{msg}");
    let log = invocation_log(&w, "m", &id, "invalid CGI output");
    assert!(
        log.iter()
            .any(|(s, m)| s == "wisp" && m.contains("has no ':'")),
        "{log:?}"
    );
    assert_ok_after(&w);

    let msg = assert_error(w.get("/m/noheaders"), 502, "bad_response");
    assert!(msg.contains("not valid CGI"), "{msg}");

    assert_error(w.get("/m/trap"), 500, "trap");
    assert_ok_after(&w);

    // Non-zero exit before the headers: 502 naming the code; stderr in the log.
    let r = w.get("/m/exit?code=3");
    let id = invocation_id(&r);
    let msg = assert_error(r, 502, "bad_response");
    assert!(msg.contains("code 3"), "{msg}");
    let log = invocation_log(&w, "m", &id, "exited with code 3");
    assert!(
        log.contains(&("stderr".into(), "exiting with 3".into())),
        "{log:?}"
    );

    // After complete headers the response stands; the log says so.
    let r = w.get("/m/exit-after-headers?code=4");
    let id = invocation_id(&r);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "partial");
    invocation_log(
        &w,
        "m",
        &id,
        "exited with code 4 after sending its response headers",
    );

    // exit(0) is success, but with no output there is no response.
    let msg = assert_error(w.get("/m/exit?code=0"), 502, "bad_response");
    assert!(msg.contains("wrote nothing"), "{msg}");
    let r = w.get("/m/stderr");
    let id = invocation_id(&r);
    assert_eq!(r.text().unwrap(), "ok");
    let log = invocation_log(&w, "m", &id, "another line on stderr");
    assert!(
        log.contains(&("stderr".into(), "a line on stderr".into())),
        "{log:?}"
    );
}

#[test]
fn output_past_the_cap_ends_the_response_with_an_error() {
    use std::io::Read;
    let w = Wisp::start_with(Opts::default().arg("--cgi-max-output").arg("1MiB"));
    misbehave(&w, &[]);
    let mut r = w.get("/m/big?mb=3");
    let id = invocation_id(&r);
    // The head went out before the cap was reached ...
    assert_eq!(r.status(), 200);
    // ... and the body stops at the cap with an error (the chunked body
    // never gets its final chunk), not as a clean short response.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("the cut body ended cleanly after {got} bytes"),
            Ok(n) => got += n,
            Err(e) => break e,
        }
    };
    assert_eq!(got, 1 << 20, "bytes before the error ({err})");
    invocation_log(&w, "m", &id, "output truncated at 1048576 bytes");
    // The same through `bytes()`: an error, not 1 MiB that looks whole.
    assert!(w.get("/m/big?mb=2").bytes().is_err());
    // Under the cap: whole, and it ends cleanly.
    let r = w.get("/m/big?mb=1");
    assert_eq!(r.bytes().unwrap().len(), 1 << 20);
    assert_ok_after(&w);
}

/// A real client (curl, when the machine has it) sees the cut response fail.
#[test]
fn curl_reports_a_cut_response_as_an_error() {
    let Ok(version) = std::process::Command::new("curl").arg("--version").output() else {
        eprintln!("curl is not installed; skipped");
        return;
    };
    assert!(version.status.success());
    let w = Wisp::start_with(Opts::default().arg("--cgi-max-output").arg("1MiB"));
    misbehave(&w, &[]);
    let run = |path: &str| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .arg(format!("{}{path}", w.data_url))
            .output()
            .unwrap()
    };
    let out = run("/m/big?mb=3");
    // 18: "partial file" (transfer closed with outstanding read data); 56
    // if the close reached curl as a reset.
    assert!(matches!(out.status.code(), Some(18 | 56)), "{out:?}");
    // At most the 1 MiB allowed got through; not always all of it (the
    // end may still be in flight when the connection goes).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (status, got) = stdout.split_once(' ').unwrap();
    assert_eq!(status, "200", "{stdout}");
    let got: u64 = got.parse().unwrap();
    assert!(got > 0 && got <= 1 << 20, "{stdout}");
    let out = run("/m/big?mb=1");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn header_names_differing_by_dash_and_underscore_cannot_shadow() {
    let w = Wisp::start();
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    deploy(&w, "cgi", &wasm, &[("route", "/cgi/*")]);
    misbehave(&w, &[]);
    // Either order: the name with `_` is dropped, as nginx drops it.
    for pairs in [
        [("x-user", "alice"), ("x_user", "mallory")],
        [("x_user", "mallory"), ("x-user", "alice")],
    ] {
        let mut req = client().get(format!("{}/cgi/who", w.data_url));
        for (k, v) in pairs {
            req = req.header(k, v);
        }
        let r = req.header("x_only", "z").send().unwrap();
        assert_eq!(r.status(), 200);
        let j: Value = r.json().unwrap();
        assert_eq!(j["headers"]["x-user"], "alice", "{j}");
        assert!(j["headers"].get("x-only").is_none(), "{j}");
        assert!(!j.to_string().contains("mallory"), "{j}");
    }
    // The whole environment has the one HTTP_X_USER.
    let text = client()
        .get(format!("{}/m/env", w.data_url))
        .header("x_user", "mallory")
        .header("x-user", "alice")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("HTTP_X_USER="))
        .collect();
    assert_eq!(lines, ["HTTP_X_USER=alice"], "{text}");
}

#[test]
fn meta_variables_win_over_configured_variables() {
    let w = Wisp::start();
    let forged = [
        ("env", "REQUEST_METHOD=HACKED"),
        ("env", "HTTP_X_THING=forged"),
        ("env", "HTTP_X_ABSENT=forged"),
        ("env", "CONTENT_TYPE=forged/type"),
        ("env", "REMOTE_ADDR=10.9.9.9"),
        ("env", "GREETING=hi"),
    ];
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let mut q = vec![("route", "/cgi/*")];
    q.extend_from_slice(&forged);
    deploy(&w, "cgi", &wasm, &q);
    // What the guest's getenv (std::env::var) sees: the request's values.
    let r = client()
        .get(format!("{}/cgi/x", w.data_url))
        .header("x-thing", "real")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().unwrap();
    assert_eq!(j["method"], "GET", "{j}");
    assert_eq!(j["remote_addr"], "127.0.0.1", "{j}");
    // A meta-variable this request does not set is not set at all.
    assert_eq!(j["content_type"], "", "{j}");
    assert_eq!(j["headers"]["x-thing"], "real", "{j}");
    assert!(j["headers"].get("x-absent").is_none(), "{j}");
    assert!(!j.to_string().contains("forged"), "{j}");
    // An ordinary configured variable is still there.
    assert_eq!(j["greeting"], "hi", "{j}");

    // The whole environment: each of those names once, with the request's value.
    let mut q = vec![("route", "/m/*"), ("config_env", "true")];
    q.extend_from_slice(&forged);
    let m = std::fs::read(wasip1_guest("cgi-misbehave")).unwrap();
    deploy(&w, "m", &m, &q);
    // Settings passed as variables (`config_env`) are held to the same rule.
    ok(w.cli(&["config", "set", "m", "PATH_INFO=/evil", "MINE=x"]));
    let text = client()
        .post(format!("{}/m/env", w.data_url))
        .header("x-thing", "real")
        .body("abc")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let values = |name: &str| -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(values("REQUEST_METHOD"), ["POST"], "{text}");
    assert_eq!(values("PATH_INFO"), ["/env"], "{text}");
    assert_eq!(values("HTTP_X_THING"), ["real"], "{text}");
    assert_eq!(values("REMOTE_ADDR"), ["127.0.0.1"], "{text}");
    assert!(values("HTTP_X_ABSENT").is_empty(), "{text}");
    assert!(values("CONTENT_TYPE").is_empty(), "{text}");
    assert_eq!(values("GREETING"), ["hi"], "{text}");
    assert_eq!(values("MINE"), ["x"], "{text}");
    assert!(
        !text.contains("forged") && !text.contains("HACKED"),
        "{text}"
    );
}

#[test]
fn memory_cap_applies() {
    let w = Wisp::start();
    // Less memory than the module's own initial memory: it cannot start.
    misbehave(&w, &[("memory_bytes", "65536")]);
    assert_error(w.get("/m/ok"), 500, "memory_limit");
    misbehave(&w, &[("memory_bytes", &(64u64 << 20).to_string())]);
    assert_ok_after(&w);
}

#[test]
fn static_dir_is_read_only_and_confined() {
    let w = Wisp::start();
    let site = w.data_dir.join("static/site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "static hello").unwrap();
    std::fs::write(w.data_dir.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../../secret.txt", site.join("up-link")).unwrap();
    std::os::unix::fs::symlink(w.data_dir.join("secret.txt"), site.join("abs-link")).unwrap();

    // Refused at deploy: outside static/, absolute, missing, a component.
    let wasm = std::fs::read(wasip1_guest("cgi-misbehave")).unwrap();
    for bad in ["../site", "/etc", "site/../../x", "nope"] {
        let msg = assert_error(
            w.admin().deploy("m", &wasm, &[("static_dir", bad)]),
            400,
            "invalid_argument",
        );
        assert!(msg.contains("static_dir"), "{msg}");
    }
    let hello = std::fs::read(guest("hello")).unwrap();
    assert_error(
        w.admin().deploy("h", &hello, &[("static_dir", "site")]),
        400,
        "invalid_argument",
    );

    misbehave(&w, &[("static_dir", "site")]);
    let info: Value = w.admin().get("/v1/functions/m").json().unwrap();
    assert_eq!(info["static_dir"], "site");
    let r = w.get("/m/read?file=/static/hello.txt");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "static hello");
    for escape in [
        "/static/../secret.txt",
        "/static/../../secret.txt",
        "/static/up-link",
        "/static/abs-link",
        "/secret.txt",
        "/etc/passwd",
    ] {
        let r = w.get(&format!("/m/read?file={escape}"));
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, 404, "{escape} was readable: {text}");
        assert!(!text.contains("secret"), "{escape}: {text}");
    }
    // A redeploy without the option keeps the grant; an empty one removes it.
    misbehave(&w, &[]);
    assert_eq!(w.get("/m/read?file=/static/hello.txt").status(), 200);
    misbehave(&w, &[("static_dir", "")]);
    assert_eq!(w.get("/m/read?file=/static/hello.txt").status(), 404);
}

#[test]
fn c_example_answers_html() {
    let w = Wisp::start();
    let wasm = std::fs::read(c_example()).unwrap();
    deploy(&w, "cgi-c", &wasm, &[("route", "/c/*")]);
    let r = w.get("/c/page?name=%3Cwasm%3E");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["x-powered-by"], "wasi-libc");
    let html = r.text().unwrap();
    assert!(html.contains("<h1>Hello from C on Wisp</h1>"), "{html}");
    assert!(html.contains("method: <code>GET</code>"), "{html}");
    assert!(html.contains("path: <code>/page</code>"), "{html}");
    assert!(
        html.contains("query: <code>name=%3Cwasm%3E</code>"),
        "{html}"
    );

    let big = vec![b'c'; 1 << 20];
    let r = client()
        .post(format!("{}/c/upload", w.data_url))
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().unwrap();
    assert!(html.contains("method: <code>POST</code>"), "{html}");
    assert!(html.contains("body: 1048576 bytes"), "{html}");

    assert_eq!(w.get("/c/missing").status(), 404);
}

#[test]
fn modules_load_from_compiled_code_after_a_restart() {
    let mut w = Wisp::start();
    misbehave(&w, &[]);
    assert_ok_after(&w);
    w.terminate();
    let w2 = w.restart_on(Opts::default());
    assert_ok_after(&w2);
    assert_eq!(
        w2.metric("wisp_compiles_total"),
        0.0,
        "a restart must not recompile"
    );
}
