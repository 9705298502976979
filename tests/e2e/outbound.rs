//! Outbound HTTP: denied by default, allowed per function by an allow-list,
//! capped per invocation, bounded by the invocation's deadline. The
//! upstream is a small HTTP server the test runs on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// A loopback HTTP/1.1 server: `/slow` answers after 5 s, anything else at
/// once with `upstream says hi`. Returns its port. (Also sdk_p3.rs.)
pub(crate) fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                if head.starts_with("GET /slow") {
                    std::thread::sleep(Duration::from_secs(5));
                }
                let body = "upstream says hi";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

fn deploy_caps(w: &Wisp, query: &[(&str, &str)]) -> reqwest::blocking::Response {
    let wasm = std::fs::read(guest("caps")).unwrap();
    let mut q = vec![("route", "/caps/*")];
    q.extend_from_slice(query);
    w.admin().deploy("caps", &wasm, &q)
}

fn fetch(w: &Wisp, url: &str, n: u32) -> Value {
    let r = client()
        .get(format!("{}/caps/fetch", w.data_url))
        .query(&[("url", url), ("n", &n.to_string())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "guest-visible errors answer 200");
    r.json().unwrap()
}

#[test]
fn outbound_is_denied_by_default_and_logged() {
    let port = upstream();
    let w = Wisp::start();
    assert_eq!(deploy_caps(&w, &[]).status(), 201);
    let url = format!("http://127.0.0.1:{port}/");
    let answer = fetch(&w, &url, 1);
    let err = answer["results"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(err.contains("denied"), "{answer}");

    let logs: Value = w.admin().get("/v1/functions/caps/logs").json().unwrap();
    let notes: Vec<&str> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream"] == "wisp")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|m| m.contains(&format!("127.0.0.1:{port}"))
                && m.contains("not on the function's allow-list")),
        "{notes:?}"
    );
    assert!(w.log_text().contains("not on the function's allow-list"));
}

#[test]
fn allowed_host_is_reached_and_others_are_not() {
    let port = upstream();
    let other = upstream();
    let w = Wisp::start();
    let allow = format!("http://127.0.0.1:{port}");
    let r = deploy_caps(&w, &[("allow_outbound", &allow)]);
    assert_eq!(r.status(), 201);
    let info: Value = r.json().unwrap();
    assert_eq!(info["allow_outbound"][0], allow.as_str());

    let answer = fetch(&w, &format!("http://127.0.0.1:{port}/x"), 1);
    assert_eq!(answer["results"][0]["status"], 200, "{answer}");
    assert_eq!(answer["results"][0]["body"], "upstream says hi");

    // Same host, another port: not on the list.
    let answer = fetch(&w, &format!("http://127.0.0.1:{other}/"), 1);
    assert!(answer["results"][0]["error"].is_string(), "{answer}");
    // Another scheme on that port: not on the list either.
    let answer = fetch(&w, &format!("https://127.0.0.1:{port}/"), 1);
    assert!(answer["results"][0]["error"].is_string(), "{answer}");
}

/// The notes (`wisp` stream) in the function's log that contain `text`,
/// waiting until there are `count` of them.
fn notes_with(w: &Wisp, text: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs: Value = w.admin().get("/v1/functions/caps/logs").json().unwrap();
        let notes: Vec<String> = logs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["stream"] == "wisp")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .filter(|m| m.contains(text))
            .collect();
        if notes.len() >= count {
            return notes;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} notes with {text:?}: {notes:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn names_resolving_to_loopback_are_refused_unless_the_address_is_named() {
    let port = upstream();
    let w = Wisp::start();
    // `localhost` is allowed by name, on any port and on this one: its
    // address (loopback) is not named, so neither reaches the server.
    let entries = [
        "localhost:*".to_string(),
        format!("http://localhost:{port}"),
    ];
    for (i, allow) in entries.iter().enumerate() {
        assert_eq!(deploy_caps(&w, &[("allow_outbound", allow)]).status(), 201);
        let answer = fetch(&w, &format!("http://localhost:{port}/"), 1);
        let err = answer["results"][0]["error"].as_str().unwrap_or_default();
        assert!(err.to_lowercase().contains("denied"), "{allow}: {answer}");
        assert_eq!(answer["ok"], 0, "{answer}");
        // One more note, naming the name, the address and why.
        let notes = notes_with(&w, "localhost resolves to", i + 1);
        let note = &notes[i];
        assert!(
            note.contains(&format!("http://localhost:{port} denied"))
                && note.contains("a loopback address")
                && note.contains("naming that address"),
            "{note}"
        );
        // Not the allow-list note: the name itself was allowed.
        assert!(!note.contains("not on the function's allow-list"), "{note}");
    }

    // The address named literally reaches it, as before.
    let allow = format!("http://127.0.0.1:{port}");
    assert_eq!(deploy_caps(&w, &[("allow_outbound", &allow)]).status(), 201);
    let answer = fetch(&w, &format!("http://127.0.0.1:{port}/"), 1);
    assert_eq!(answer["results"][0]["body"], "upstream says hi", "{answer}");
    // ... but not through a name, which that entry does not allow.
    let answer = fetch(&w, &format!("http://localhost:{port}/"), 1);
    assert_eq!(answer["ok"], 0, "{answer}");
}

#[test]
fn outbound_requests_per_invocation_are_capped() {
    let port = upstream();
    let w = Wisp::start();
    let allow = format!("127.0.0.1:{port}");
    assert_eq!(deploy_caps(&w, &[("allow_outbound", &allow)]).status(), 201);
    let answer = fetch(&w, &format!("http://127.0.0.1:{port}/"), 20);
    assert_eq!(answer["ok"], 16, "{answer}");
    assert_eq!(answer["failed"], 4, "{answer}");
    // The cap is per invocation: the next one may send again.
    let answer = fetch(&w, &format!("http://127.0.0.1:{port}/"), 1);
    assert_eq!(answer["ok"], 1, "{answer}");
}

#[test]
fn outbound_calls_count_against_the_deadline() {
    let port = upstream();
    let w = Wisp::start();
    let allow = format!("http://127.0.0.1:{port}");
    let r = deploy_caps(&w, &[("allow_outbound", &allow), ("timeout_ms", "1000")]);
    assert_eq!(r.status(), 201);
    let start = Instant::now();
    let r = client()
        .get(format!("{}/caps/fetch", w.data_url))
        .query(&[("url", format!("http://127.0.0.1:{port}/slow"))])
        .send()
        .unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(3000),
        "answered after {took:?}"
    );
    // Either the guest saw a timeout error, or the invocation hit its
    // deadline (504); never the upstream's answer after 5 s.
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap();
    assert!(
        status == 504 || (status == 200 && body["error"].is_string()),
        "{status} {body}"
    );
}

#[test]
fn bad_allow_list_entries_are_refused_before_anything_is_stored() {
    let w = Wisp::start();
    for entry in [
        "ftp://example.com",
        "https://example.com/path",
        "example.com:99999",
        "",
    ] {
        let msg = assert_error(
            deploy_caps(&w, &[("allow_outbound", entry)]),
            400,
            "invalid_argument",
        );
        assert!(msg.contains("allow-list"), "{entry:?}: {msg}");
    }
    assert!(w.admin().functions().is_empty());
}

#[test]
fn cli_deploys_with_an_allow_list() {
    let port = upstream();
    let w = Wisp::start();
    let wasm = guest("caps");
    let allow = format!("http://127.0.0.1:{port}");
    let out = w.cli(&[
        "deploy",
        "caps",
        wasm.to_str().unwrap(),
        "--route",
        "/caps/*",
        "--allow-outbound",
        &allow,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w.cli(&["info", "caps"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&allow));
    let answer = fetch(&w, &format!("http://127.0.0.1:{port}/"), 1);
    assert_eq!(answer["ok"], 1, "{answer}");
}

#[test]
fn allow_list_set_through_config_takes_effect_without_a_redeploy() {
    let port = upstream();
    let w = Wisp::start();
    assert_eq!(deploy_caps(&w, &[]).status(), 201);
    let url = format!("http://127.0.0.1:{port}/");
    assert!(fetch(&w, &url, 1)["results"][0]["error"].is_string());

    let entry = format!("wisp.allow-outbound=http://127.0.0.1:{port}");
    let out = w.cli(&["config", "set", "caps", &entry]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetch(&w, &url, 1)["ok"], 1);

    // A bad entry is refused before anything is stored; the list stands.
    let out = w.cli(&["config", "set", "caps", "wisp.allow-outbound=ftp://nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow-list"));
    assert_eq!(fetch(&w, &url, 1)["ok"], 1);

    let out = w.cli(&["config", "unset", "caps", "wisp.allow-outbound"]);
    assert!(out.status.success());
    assert!(fetch(&w, &url, 1)["results"][0]["error"].is_string());
}
