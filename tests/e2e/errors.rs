//! The admin API's error contract: every refusal is
//! `{"error": {"code": "...", "message": "..."}}` with its status, whatever
//! was wrong — a JSON body with an unknown field, malformed, of the wrong
//! type, not sent as JSON or over the limit; a path that does not decode; a
//! bad query; a method or route that does not exist; a schedule that never
//! fires — and nothing refused is stored.

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::harness::*;

/// The admin API's JSON body limit (2 MiB).
const MAX_JSON_BODY: usize = 2 << 20;

/// Sends `body` with `method` to `path`, with the token and, when given, a
/// content type.
fn send(
    a: &Admin,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> reqwest::blocking::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = a
        .http
        .request(method, format!("{}{path}", a.url))
        .bearer_auth(&a.token)
        .body(body.to_vec());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().unwrap()
}

fn send_json(a: &Admin, method: &str, path: &str, body: &Value) -> reqwest::blocking::Response {
    let body = serde_json::to_vec(body).unwrap();
    send(a, method, path, Some("application/json"), &body)
}

/// The JSON listing at `path`.
fn list(a: &Admin, path: &str) -> Value {
    let resp = a.get(path);
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().unwrap()
}

/// Asserts the error and that it came as JSON; returns the message.
fn assert_json_error(resp: reqwest::blocking::Response, status: u16, code: &str) -> String {
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/json", "status {}", resp.status());
    assert_error(resp, status, code)
}

/// Nothing of what the tests try to create was: no subscription, schedule,
/// job or setting, and `f` still at `version`.
fn assert_nothing_created(a: &Admin, version: u64) {
    assert_eq!(list(a, "/v1/subscriptions"), json!([]));
    assert_eq!(list(a, "/v1/schedules"), json!([]));
    assert_eq!(list(a, "/v1/jobs"), json!([]));
    assert_eq!(list(a, "/v1/functions/f/config")["entries"], json!([]));
    assert_eq!(list(a, "/v1/functions/f")["active_version"], version);
    assert_eq!(a.functions().len(), 1);
}

#[test]
fn json_bodies_with_an_unknown_field_are_refused_naming_it() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    a.deploy_guest("f", "hello", &["/f"]);
    let cases = [
        (
            "POST",
            "/v1/subscriptions",
            json!({"function": "f", "topic": "orders", "retries": 3}),
            "retries",
        ),
        (
            "POST",
            "/v1/schedules",
            json!({"function": "f", "cron": "* * * * *", "timezone": "UTC"}),
            "timezone",
        ),
        (
            "POST",
            "/v1/functions/f/jobs",
            json!({"array": "0-3", "parallel": 2}),
            "parallel",
        ),
        (
            "POST",
            "/v1/functions/f/dlq/redrive",
            json!({"topic": "orders", "id": ["0000000000000001"]}),
            "id",
        ),
        ("POST", "/v1/functions/f/rollback", json!({"to": 1}), "to"),
        (
            "PUT",
            "/v1/functions/f/config",
            json!({"values": {"A": "1"}, "secrets": true}),
            "secrets",
        ),
    ];
    for (method, path, body, field) in cases {
        let msg = assert_json_error(send_json(&a, method, path, &body), 400, "invalid_argument");
        assert!(
            msg.contains(&format!("unknown field `{field}`")),
            "{method} {path}: {msg}"
        );
    }
    assert_nothing_created(&a, 2);

    // The same bodies without the stranger are taken.
    let resp = send_json(
        &a,
        "POST",
        "/v1/subscriptions",
        &json!({"function": "f", "topic": "orders"}),
    );
    assert_eq!(resp.status(), 201);
    let resp = send_json(&a, "POST", "/v1/functions/f/rollback", &json!({}));
    assert_eq!(resp.status(), 200);
    assert_eq!(list(&a, "/v1/functions/f")["active_version"], 1);
}

#[test]
fn malformed_mistyped_undeclared_and_oversized_json_bodies_are_refused() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    a.deploy_guest("f", "hello", &["/f"]);
    let sub = br#"{"function": "f", "topic": "orders"}"#;

    // Malformed.
    let msg = assert_json_error(
        send(
            &a,
            "POST",
            "/v1/subscriptions",
            Some("application/json"),
            br#"{"function": "f","#,
        ),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("JSON"), "{msg}");
    // The wrong type, a missing field: named.
    let msg = assert_json_error(
        send_json(
            &a,
            "POST",
            "/v1/subscriptions",
            &json!({"function": "f", "topic": "orders", "max_attempts": "three"}),
        ),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("max_attempts"), "{msg}");
    let msg = assert_json_error(
        send_json(&a, "POST", "/v1/schedules", &json!({"function": "f"})),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("missing field `cron`"), "{msg}");

    // Not sent as JSON: 415, with or without another content type.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let msg = assert_json_error(
            send(&a, "POST", "/v1/subscriptions", ct, sub),
            415,
            "unsupported_media_type",
        );
        assert!(msg.contains("application/json"), "{msg}");
    }
    let msg = assert_json_error(
        send(
            &a,
            "PUT",
            "/v1/functions/f/config",
            Some("text/plain"),
            br#"{"values": {"A": "1"}}"#,
        ),
        415,
        "unsupported_media_type",
    );
    assert!(msg.contains("application/json"), "{msg}");
    // A body that is optional may be left out, whatever the content type;
    // one that is there must be JSON.
    let msg = assert_json_error(
        send(
            &a,
            "POST",
            "/v1/functions/f/rollback",
            Some("text/plain"),
            br#"{"version": 1}"#,
        ),
        415,
        "unsupported_media_type",
    );
    assert!(msg.contains("application/json"), "{msg}");

    // Over the limit, from the declared length: refused before it is sent.
    for path in [
        "/v1/subscriptions",
        "/v1/functions/f/jobs",
        "/v1/functions/f/rollback",
    ] {
        let (status, head, body) = raw(
            &w,
            &format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                w.token,
                MAX_JSON_BODY + 1
            ),
        );
        assert_eq!(status, 413, "{path}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&MAX_JSON_BODY.to_string()), "{msg}");
    }
    assert_nothing_created(&a, 2);

    // Empty optional bodies, with no content type: the defaults.
    let resp = send(&a, "POST", "/v1/functions/f/dlq/redrive", None, b"");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap()["redriven"], json!([]));
    let resp = send(
        &a,
        "POST",
        "/v1/functions/f/rollback",
        Some("text/plain"),
        b" \n",
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(list(&a, "/v1/functions/f")["active_version"], 1);
}

#[test]
fn undecodable_paths_bad_queries_and_unknown_methods_and_routes_answer_json() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    let hello = std::fs::read(guest("hello")).unwrap();

    // Percent-encodings that do not decode to UTF-8, in every kind of path
    // parameter.
    for (method, path) in [
        ("GET", "/v1/functions/%FF"),
        ("DELETE", "/v1/functions/%C3%28"),
        ("GET", "/v1/functions/%FF/versions"),
        ("GET", "/v1/functions/f/kv/%FF"),
        ("DELETE", "/v1/functions/f/config/%FF"),
        ("POST", "/v1/topics/%FF/events"),
        ("DELETE", "/v1/subscriptions/f/%FF"),
        ("GET", "/v1/events/%FF"),
        ("DELETE", "/v1/schedules/%FF"),
        ("GET", "/v1/jobs/%FF"),
        ("POST", "/v1/functions/%FF/invoke"),
    ] {
        let msg = assert_json_error(send(&a, method, path, None, b""), 400, "invalid_argument");
        assert!(msg.contains("bad path"), "{method} {path}: {msg}");
    }
    let msg = assert_json_error(
        send(
            &a,
            "POST",
            "/v1/functions/%FF",
            Some("application/wasm"),
            &hello,
        ),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("bad path"), "{msg}");
    assert_eq!(a.functions().len(), 1, "a function was stored");

    // Bad query parameters.
    for path in [
        "/v1/functions/f/logs?limit=lots",
        "/v1/functions/f/kv?limit=0",
        "/v1/functions/f/dlq?limit=-1",
        "/v1/functions/f/invoke?path=no-slash",
    ] {
        assert_json_error(a.get(path), 400, "invalid_argument");
    }
    assert_json_error(
        a.deploy("f", &hello, &[("timeout_ms", "soon")]),
        400,
        "invalid_argument",
    );
    assert_eq!(list(&a, "/v1/functions/f")["active_version"], 1);

    // A known path, a method it does not serve: 405 with `Allow`.
    for (method, path, allowed) in [
        ("PATCH", "/v1/functions", "GET"),
        ("PUT", "/v1/functions/f", "POST"),
        ("GET", "/v1/functions/f/rollback", "POST"),
        ("PUT", "/v1/schedules", "POST"),
        ("POST", "/v1/jobs/0000000000000001", "GET"),
        ("DELETE", "/v1/health", "GET"),
        ("POST", "/v1/openapi.json", "GET"),
    ] {
        let resp = send(&a, method, path, None, b"");
        let allow = resp.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains(allowed), "{method} {path}: {allow}");
        let msg = assert_json_error(resp, 405, "method_not_allowed");
        assert!(msg.contains(method), "{msg}");
    }
    // Without the token, a protected path says nothing of its methods.
    let resp = client()
        .patch(format!("{}/v1/functions", a.url))
        .send()
        .unwrap();
    assert_json_error(resp, 401, "unauthorized");
    assert_eq!(a.functions().len(), 1);

    // Unknown routes.
    for (method, path) in [
        ("GET", "/v1/nothing"),
        ("POST", "/v2/functions/f"),
        ("GET", "/v1/functions/f/nothing"),
        ("GET", "/"),
    ] {
        assert_json_error(send(&a, method, path, None, b""), 404, "not_found");
    }
}

#[test]
fn a_schedule_that_never_fires_is_refused() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    for (cron, tz) in [
        ("0 0 30 2 *", "UTC"),
        ("0 12 31 4,6,9,11 *", "Europe/Paris"),
        ("*/10 0 0 30 FEB *", "UTC"),
    ] {
        let msg = assert_json_error(
            send_json(
                &a,
                "POST",
                "/v1/schedules",
                &json!({"function": "f", "cron": cron, "tz": tz}),
            ),
            400,
            "invalid_argument",
        );
        assert!(msg.contains("never fires"), "{cron}: {msg}");
        assert!(msg.contains(cron), "{cron}: {msg}");
    }
    let err = fails(w.cli(&["schedule", "add", "f", "0 0 30 2 *"]));
    assert!(err.contains("never fires"), "{err}");
    assert_eq!(list(&a, "/v1/schedules"), json!([]));

    // Rare is not never: February 29th comes every four years or so.
    let resp = send_json(
        &a,
        "POST",
        "/v1/schedules",
        &json!({"function": "f", "cron": "0 0 29 2 *"}),
    );
    assert_eq!(resp.status(), 201);
    let listed = list(&a, "/v1/schedules");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0]["next_ms"].as_u64().unwrap() > 0, "{listed}");
}

/// Sends `request` (a head, with no body) to the admin listener and reads
/// the answer: status, head and body.
fn raw(w: &Wisp, request: &str) -> (u16, String, String) {
    let addr = w.admin_url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the whole body is in (by its content-length).
    loop {
        let n = conn.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
            if length.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}
