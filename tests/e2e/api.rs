//! The admin API: uploads (good and bad), auth, versions, rollback, delete,
//! invoke, OpenAPI and metrics.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// Nothing about `name` was stored: no function, no version, and the
/// artifact count reported by a later good deploy is unaffected.
fn assert_nothing_stored(w: &Wisp, name: &str) {
    assert!(w.admin().functions().is_empty(), "a function was stored");
    assert_eq!(
        compiled_files(w),
        Vec::<String>::new(),
        "compiled code was stored"
    );
    assert_error(
        w.admin().get(&format!("/v1/functions/{name}")),
        404,
        "function_not_found",
    );
}

#[test]
fn bad_uploads_are_refused_and_nothing_is_stored() {
    let w = Wisp::start_with(Opts::default().arg("--max-upload").arg("4MiB"));
    let a = w.admin();

    let msg = assert_error(a.deploy("f", b"hello, not wasm", &[]), 400, "invalid_wasm");
    assert!(msg.contains("not a WebAssembly"), "{msg}");
    assert_nothing_stored(&w, "f");

    // The smallest valid core module: a preview-1 function needs `_start`.
    let msg = assert_error(
        a.deploy("f", b"\0asm\x01\0\0\0", &[]),
        400,
        "missing_export",
    );
    assert!(msg.contains("_start"), "{msg}");
    assert_nothing_stored(&w, "f");

    // A refused upload closes its connection (its body may be unread), so
    // the client's next request goes on a fresh one.
    let resp = a.deploy("Bad", b"\0asm\x01\0\0\0", &[]);
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["connection"], "close");
    assert_eq!(a.get("/v1/functions").status(), 200);

    // A component that does not export wasi:http/incoming-handler.
    let wasm = std::fs::read(guest("command")).unwrap();
    let msg = assert_error(a.deploy("f", &wasm, &[]), 400, "missing_export");
    assert!(msg.contains("wasi:http/incoming-handler"), "{msg}");
    assert_nothing_stored(&w, "f");

    // A component importing what the host does not provide: named.
    let wasm = std::fs::read(guest("bad-import")).unwrap();
    let msg = assert_error(a.deploy("f", &wasm, &[]), 400, "unsatisfied_imports");
    assert!(msg.contains("acme:unknown/frobnicate"), "{msg}");
    assert_nothing_stored(&w, "f");

    // A truncated component does not compile.
    let hello = std::fs::read(guest("hello")).unwrap();
    assert_error(
        a.deploy("f", &hello[..hello.len() / 2], &[]),
        400,
        "invalid_wasm",
    );
    assert_nothing_stored(&w, "f");

    // Bad names.
    for bad in ["Hello", "a_b", "-x", &"a".repeat(64)] {
        assert_error(a.deploy(bad, &hello, &[]), 400, "invalid_name");
    }
    assert_nothing_stored(&w, "hello");

    // Bad routes, env and limits.
    assert_error(
        a.deploy("f", &hello, &[("route", "no-slash")]),
        400,
        "invalid_route",
    );
    assert_error(
        a.deploy("f", &hello, &[("route", "/a/*/b")]),
        400,
        "invalid_route",
    );
    assert_error(
        a.deploy("f", &hello, &[("env", "NOEQUALS")]),
        400,
        "invalid_argument",
    );
    assert_error(
        a.deploy("f", &hello, &[("timeout_ms", "0")]),
        400,
        "invalid_argument",
    );
    assert_error(
        a.deploy("f", &hello, &[("memory_bytes", "99999999999")]),
        400,
        "invalid_argument",
    );
    assert_error(
        a.deploy("f", &hello, &[("timeout_ms", "soon")]),
        400,
        "invalid_argument",
    );
    assert_nothing_stored(&w, "f");

    // Over the upload cap: refused from the declared length, before the body
    // is sent (a client still sending it could see the connection close
    // before it reads the answer, so only the head is sent here).
    let (status, body) = post_head_only(&w, "/v1/functions/f", (4 << 20) + 8);
    assert_eq!(status, 413, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4194304"),
        "{body}"
    );
    assert_nothing_stored(&w, "f");

    // Route conflict with another function: 409, and the loser is not stored.
    a.deploy_guest("first", "hello", &["/taken", "/shared/*"]);
    let msg = assert_error(
        a.deploy("second", &hello, &[("route", "/shared/*")]),
        409,
        "route_conflict",
    );
    assert!(msg.contains("first"), "{msg}");
    assert_error(a.get("/v1/functions/second"), 404, "function_not_found");
    assert_eq!(a.functions().len(), 1);
    // The same route on the same function is fine (redeploy).
    a.deploy_guest("first", "hello", &["/taken"]);
    // The store still holds exactly one artifact for both versions.
    let versions: Vec<serde_json::Value> = a.get("/v1/functions/first/versions").json().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["sha256"], versions[1]["sha256"]);
}

#[test]
fn auth_is_required_except_for_health() {
    let w = Wisp::start();
    let c = client();
    let r = c.get(format!("{}/v1/health", w.admin_url)).send().unwrap();
    assert_eq!(r.status(), 200);
    for path in [
        "/v1/functions",
        "/metrics",
        "/v1/openapi.json",
        "/v1/functions/x",
    ] {
        let r = c.get(format!("{}{path}", w.admin_url)).send().unwrap();
        let msg = assert_error(r, 401, "unauthorized");
        assert!(msg.contains("missing bearer token"), "{msg}");
        let r = c
            .get(format!("{}{path}", w.admin_url))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .unwrap();
        assert_error(r, 401, "unauthorized");
    }
    let r = c
        .post(format!("{}/v1/functions/f", w.admin_url))
        .body(b"\0asm\x0d\0\x01\0".to_vec())
        .send()
        .unwrap();
    assert_error(r, 401, "unauthorized");
    assert!(w.admin().functions().is_empty());

    // The generated token file is readable by its owner only, and the token
    // never appears in the log.
    let mode = std::fs::metadata(w.data_dir.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!w.log_text().contains(&w.token));
}

#[test]
fn env_token_is_used_when_set() {
    let token = "a-token-from-the-environment-0123";
    let w = Wisp::start_with(Opts::default().env("WISP_ADMIN_TOKEN", token));
    assert_eq!(w.token, token);
    assert_eq!(w.admin().get("/v1/functions").status(), 200);
    assert!(!w.data_dir.join("admin-token").exists());
}

#[test]
fn versions_rollback_delete_and_invoke() {
    let w = Wisp::start();
    let a = w.admin();
    let v1 = a.deploy_guest("app", "hello", &["/app/*"]);
    assert_eq!(v1.active_version, 1);
    assert_eq!(w.get("/app/x").text().unwrap(), "hello from wisp at /app/x");
    // Version 2: a different artifact on the same routes (inherited).
    let wasm = std::fs::read(guest("echo")).unwrap();
    let r = a.deploy("app", &wasm, &[("env", "GREETING=hi")]);
    assert_eq!(r.status(), 201);
    let v2: serde_json::Value = r.json().unwrap();
    assert_eq!(v2["active_version"], 2);
    assert_eq!(v2["routes"], serde_json::json!(["/app/*"]));
    assert_eq!(v2["env"]["GREETING"], "hi");
    let echoed: serde_json::Value = w.get("/app/x").json().unwrap();
    assert_eq!(echoed["path"], "/app/x");

    let versions: Vec<serde_json::Value> = a.get("/v1/functions/app/versions").json().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["active"], false);
    assert_eq!(versions[1]["active"], true);
    assert_eq!(
        versions[0]["size_bytes"],
        std::fs::read(guest("hello")).unwrap().len()
    );

    // Rollback to the previous version (default), served at once.
    let r = a
        .http
        .post(format!("{}/v1/functions/app/rollback", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: serde_json::Value = r.json().unwrap();
    assert_eq!(info["active_version"], 1);
    assert_eq!(w.get("/app/x").text().unwrap(), "hello from wisp at /app/x");
    // Nothing older than version 1.
    let r = a
        .http
        .post(format!("{}/v1/functions/app/rollback", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(r, 400, "invalid_argument");
    // Explicit version, and a missing one.
    let r = a
        .http
        .post(format!("{}/v1/functions/app/rollback", a.url))
        .bearer_auth(&a.token)
        .json(&serde_json::json!({"version": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .http
        .post(format!("{}/v1/functions/app/rollback", a.url))
        .bearer_auth(&a.token)
        .json(&serde_json::json!({"version": 9}))
        .send()
        .unwrap();
    assert_error(r, 404, "version_not_found");
    assert_eq!(
        w.metric("wisp_compiles_total"),
        2.0,
        "rollback must not compile"
    );

    // Invoke through the admin API: method, path, query, body; the admin
    // token is not passed on.
    let r = a
        .http
        .put(format!("{}/v1/functions/app/invoke", a.url))
        .bearer_auth(&a.token)
        .query(&[("path", "/inv/p?k=v")])
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("wisp-invocation-id"));
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/inv/p");
    assert_eq!(v["query"], "k=v");
    assert_eq!(v["body"], "payload");
    assert!(v["headers"].get("authorization").is_none());
    let r = a
        .http
        .post(format!("{}/v1/functions/nope/invoke", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(r, 404, "function_not_found");

    // Delete: gone from the API and the data plane.
    let r = a
        .http
        .delete(format!("{}/v1/functions/app", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_error(w.get("/app/x"), 404, "route_not_found");
    assert_error(a.get("/v1/functions/app"), 404, "function_not_found");
    let r = a
        .http
        .delete(format!("{}/v1/functions/app", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(r, 404, "function_not_found");
    // Its routes are free again.
    a.deploy_guest("other", "hello", &["/app/*"]);
}

#[test]
fn openapi_metrics_and_invocation_log() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.get("/hello").status(), 200);
    let doc: serde_json::Value = a.get("/v1/openapi.json").json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/functions",
        "/v1/functions/{name}",
        "/v1/functions/{name}/rollback",
        "/v1/functions/{name}/invoke",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let text = a.get("/metrics").text().unwrap();
    for m in [
        "wisp_invocations_total{function=\"hello\",version=\"1\",status=\"200\"} 1",
        "wisp_invocation_duration_seconds_bucket",
        "wisp_instantiation_duration_seconds_bucket",
        "wisp_invocations_in_flight",
        "wisp_compiles_total 1",
        "wisp_compile_duration_seconds_count",
    ] {
        assert!(text.contains(m), "metrics lack {m}:\n{text}");
    }
    // One log line per invocation with function, version, status, id.
    let log = w.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("wisp::invocation"))
        .expect("invocation log line");
    for part in [
        "function=hello",
        "version=1",
        "status=200",
        "invocation_id=",
    ] {
        assert!(line.contains(part), "{line}");
    }
}

#[test]
fn json_logs() {
    let w = Wisp::start_with(Opts::default().arg("--log-format").arg("json"));
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(w.get("/hello").status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = w.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("wisp::invocation"))
        .expect("invocation log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["function"], "hello");
    assert_eq!(v["status"], 200);
}

/// Sends only the head of an upload of `len` bytes to the admin API and
/// reads the answer: (status, body).
fn post_head_only(w: &Wisp, path: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = w.admin_url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/wasm\r\ncontent-length: {len}\r\n\r\n",
        w.token
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the whole JSON body is in (the server may keep the connection).
    loop {
        let n = conn.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}
