//! The examples, deployed and called as their READMEs say: todo-api (router,
//! JSON, key-value CRUD), counter (atomic increment), config (a setting and
//! a secret), proxy (an allow-listed outbound call), and `wisp new` +
//! `wisp deploy --from` producing a working function.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

fn post_json(w: &Wisp, path: &str, body: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{}{path}", w.data_url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

#[test]
fn todo_api_crud() {
    let w = Wisp::start();
    w.admin()
        .deploy_guest("todo-api", "todo-api", &["/todos", "/todos/*"]);

    let r = post_json(&w, "/todos", r#"{"title":"write docs"}"#);
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/todos/1");
    let created: Value = r.json().unwrap();
    assert_eq!(created["title"], "write docs");
    assert_eq!(created["done"], false);
    let r = post_json(&w, "/todos", r#"{"title":"ship","done":true}"#);
    assert_eq!(r.status(), 201);

    let list: Value = w.get("/todos").json().unwrap();
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["write docs", "ship"]);

    let one: Value = w.get("/todos/1").json().unwrap();
    assert_eq!(one["title"], "write docs");

    let r = client()
        .put(format!("{}/todos/1", w.data_url))
        .body(r#"{"title":"write docs","done":true}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let one: Value = w.get("/todos/1").json().unwrap();
    assert_eq!(one["done"], true);

    let r = client()
        .delete(format!("{}/todos/1", w.data_url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(w.get("/todos/1").status(), 404);
    let body: Value = w.get("/todos/99").json().unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");

    // Bad input: 400 with a message, nothing stored.
    let r = post_json(&w, "/todos", "{not json");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    // A method the router does not serve there: 405 with Allow.
    let r = client()
        .patch(format!("{}/todos/2", w.data_url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let list: Value = w.get("/todos").json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The data is the function's key-value namespace, visible to `wisp kv`.
    let keys = ok(w.cli(&["kv", "list", "todo-api"]));
    assert!(keys.contains("todo:"), "{keys}");
}

#[test]
fn counter_counts_atomically() {
    let w = Wisp::start();
    w.admin().deploy_guest("counter", "counter", &["/count/*"]);
    let first: Value = w.get("/count/a").json().unwrap();
    assert_eq!(first["count"], 1);
    // Concurrent requests never lose a count.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    assert_eq!(w.get("/count/a").status(), 200);
                }
            });
        }
    });
    let last: Value = w.get("/count/a").json().unwrap();
    assert_eq!(last["count"], 42);
    let other: Value = w.get("/count/b").json().unwrap();
    assert_eq!(other["count"], 1);
    assert_eq!(
        ok(w.cli(&["kv", "get", "counter", "count:/count/a"])).trim(),
        "42"
    );
}

#[test]
fn config_example_reads_settings_and_never_shows_the_secret() {
    let w = Wisp::start();
    w.admin().deploy_guest("config", "config", &["/config"]);
    let secret = "s3cr3t-value-never-shown";
    ok(w.cli(&["config", "set", "config", "greeting=hello from config"]));
    ok(w.cli(&[
        "config",
        "set",
        "config",
        &format!("api-key={secret}"),
        "--secret",
    ]));

    let r = w.get("/config");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(!text.contains(secret), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["greeting"], "hello from config");
    assert_eq!(body["api_key"]["present"], true);
    assert_eq!(body["api_key"]["length"], secret.len());

    // A change is seen at the next request, without a redeploy.
    ok(w.cli(&["config", "set", "config", "greeting=changed"]));
    let body: Value = w.get("/config").json().unwrap();
    assert_eq!(body["greeting"], "changed");
    let info: Value = w.admin().get("/v1/functions/config").json().unwrap();
    assert_eq!(info["active_version"], 1);

    // Never visible through the CLI, the API or the host's log.
    let listed = ok(w.cli(&["config", "list", "config"]));
    assert!(
        !listed.contains(secret) && listed.contains("api-key"),
        "{listed}"
    );
    let api = w.admin().get("/v1/functions/config/config").text().unwrap();
    assert!(!api.contains(secret), "{api}");
    assert!(!w.log_text().contains(secret));
}

/// A loopback upstream answering `upstream says hi` to every request.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n\r\nupstream says hi",
            );
        }
    });
    port
}

#[test]
fn proxy_reaches_an_allowed_upstream_only() {
    let port = upstream();
    let w = Wisp::start();
    let wasm = guest("proxy");
    let allow = format!("http://127.0.0.1:{port}");
    ok(w.cli(&[
        "deploy",
        "proxy",
        wasm.to_str().unwrap(),
        "--route",
        "/proxy",
        "--allow-outbound",
        &allow,
    ]));
    ok(w.cli(&["config", "set", "proxy", &format!("upstream={allow}/")]));
    let r = w.get("/proxy");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "upstream says hi");

    // Pointed at a host that is not allowed: 502 with the error.
    let other = upstream();
    ok(w.cli(&[
        "config",
        "set",
        "proxy",
        &format!("upstream=http://127.0.0.1:{other}/"),
    ]));
    let r = w.get("/proxy");
    assert_eq!(r.status(), 502);
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP-request-denied"),
        "{body}"
    );
}

#[test]
fn wisp_new_and_deploy_from_source() {
    let w = Wisp::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greeter");
    ok(w.cli(&[
        "new",
        "greeter",
        "--template",
        "router",
        "--path",
        path.to_str().unwrap(),
    ]));
    assert!(path.join("Cargo.toml").exists() && path.join("src/lib.rs").exists());
    // Creating it again over a non-empty directory is refused.
    let again = w.cli(&["new", "greeter", "--path", path.to_str().unwrap()]);
    assert!(!again.status.success());
    // A bad name is refused before anything is written.
    let bad = w.cli(&[
        "new",
        "Bad_Name",
        "--path",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(!dir.path().join("bad").exists());

    // Share the guests' target directory: the SDK's dependencies are built
    // once.
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args([
            "deploy",
            "greeter",
            "--from",
            path.to_str().unwrap(),
            "--route",
            "/greeter/*",
        ])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    ok(out);
    let r = w.get("/greeter/");
    assert!(r.status().is_success(), "{}", r.status());
    assert!(!r.text().unwrap().is_empty());

    // A crate that does not build: the build's errors, a non-zero exit,
    // nothing uploaded.
    std::fs::write(path.join("src/lib.rs"), "fn broken( {").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["deploy", "greeter", "--from", path.to_str().unwrap()])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .env("CARGO_TARGET_DIR", root().join("target/wasm"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error"), "{err}");
    let versions: Value = w
        .admin()
        .get("/v1/functions/greeter/versions")
        .json()
        .unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
}
