//! The SDK's WASI 0.3 build (wisp-sdk-p3) on the real host: the
//! `examples/hello-p3` example; `tests/guests/caps-p3`, which is the caps
//! guest's own source built for 0.3, for the capabilities (key-value,
//! config, log), a 5 MiB echo both ways, the body cap and outbound HTTP;
//! and crates made by `wisp new` (0.2 and 0.3) built outside the checkout
//! from the SDK copy the binary writes, the 0.3 one deployed from source.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// `caps-p3` deployed as `caps` at `/caps/*`, with `query` (limits, ...).
fn deploy_caps_p3(w: &Wisp, query: &[(&str, &str)]) {
    let wasm = std::fs::read(guest("caps-p3")).unwrap();
    let mut q = vec![("route", "/caps/*")];
    q.extend_from_slice(query);
    let r = w.admin().deploy("caps", &wasm, &q);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

fn call(w: &Wisp, method: reqwest::Method, path: &str, body: &str) -> Value {
    let r = client()
        .request(method, format!("{}{path}", w.data_url))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().unwrap()
}

#[test]
fn hello_p3_example_answers() {
    let w = Wisp::start();
    w.admin()
        .deploy_guest("hello-p3", "hello-p3", &["/hello-p3/*"]);
    let r = w.get("/hello-p3/world");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; charset=utf-8",
        "the handler's headers"
    );
    assert_eq!(
        r.text().unwrap(),
        "hello from wisp (WASI 0.3) at /hello-p3/world"
    );
    // Every request gets an answer, one after the other and at once.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..5 {
                    let r = w.get(&format!("/hello-p3/{i}"));
                    assert_eq!(r.status(), 200);
                    assert!(r.text().unwrap().ends_with(&format!("/hello-p3/{i}")));
                }
            });
        }
    });
}

/// Key-value, config and log from a 0.3 component built with the SDK: the
/// same handler code as the 0.2 caps guest, the same answers.
#[test]
fn capabilities_from_the_sdks_wasi_03_build() {
    let w = Wisp::start();
    deploy_caps_p3(&w, &[]);
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    assert_eq!(
        call(&w, post.clone(), "/caps/kv/set?key=a", "one")["ok"],
        true
    );
    let read = call(&w, get.clone(), "/caps/kv/get?key=a", "");
    assert_eq!(
        (&read["found"], &read["value"]),
        (&Value::Bool(true), &"one".into())
    );
    assert_eq!(
        call(&w, post.clone(), "/caps/kv/incr?key=n&delta=5", "")["value"],
        5
    );
    assert_eq!(
        call(&w, post.clone(), "/caps/kv/incr?key=n", "")["value"],
        6
    );
    let swapped = call(&w, post.clone(), "/caps/kv/cas?key=a&expected=one", "two");
    assert_eq!(swapped["swapped"], true);
    let keys = call(&w, get.clone(), "/caps/kv/list?prefix=", "");
    assert_eq!(keys["keys"], serde_json::json!(["a", "n"]));
    // A guest-visible error, not a trap.
    let bad = call(&w, post.clone(), "/caps/kv/set?key=", "x");
    assert_eq!(bad["error"], "invalid-key", "{bad}");
    // Written in the function's own namespace, as from a 0.2 component.
    assert_eq!(ok(w.cli(&["kv", "get", "caps", "a"])).trim(), "two");

    ok(w.cli(&["config", "set", "caps", "greeting=hello from config"]));
    let value = call(&w, get.clone(), "/caps/config/get?key=greeting", "");
    assert_eq!(value["value"], "hello from config");
    assert_eq!(
        call(&w, get.clone(), "/caps/config/keys", "")["keys"],
        serde_json::json!(["greeting"])
    );
    assert_eq!(
        call(&w, get.clone(), "/caps/config/get?key=unset", "")["value"],
        Value::Null
    );

    let r = client()
        .get(format!(
            "{}/caps/log?level=warn&msg=logged-from-p3",
            w.data_url
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let logs: Value = w
        .admin()
        .get(&format!("/v1/functions/caps/logs?invocation={id}"))
        .json()
        .unwrap();
    let messages: Vec<&str> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(messages.contains(&"logged-from-p3"), "{logs}");
    assert_eq!(call(&w, get, "/caps/stdout?bytes=100", "")["written"], 100);
}

/// 5 MiB through the SDK's 0.3 build and back, with a length and chunked:
/// the request body read from its stream, the response body written to
/// one, byte for byte.
#[test]
fn five_mib_echo_through_the_sdks_wasi_03_build() {
    let w = Wisp::start();
    deploy_caps_p3(&w, &[]);
    let body: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let r = client()
        .post(format!("{}/caps/echo", w.data_url))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        (5 << 20).to_string().as_str()
    );
    let echoed = r.bytes().unwrap();
    assert!(
        echoed[..] == body[..],
        "the echo differs ({} bytes)",
        echoed.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let (status, echoed) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/caps/echo", w.data_url))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    });
    assert_eq!(status, 200);
    assert!(echoed[..] == body[..], "the chunked echo differs");
}

/// A body cut off at the function's cap: the SDK passes the host's error
/// code back instead of calling the handler, and the host answers 413.
#[test]
fn a_body_past_the_cap_is_refused_through_the_sdks_wasi_03_build() {
    let w = Wisp::start();
    deploy_caps_p3(&w, &[("max_body_bytes", "1048576")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send_chunked = |len: usize| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![b'y'; len]
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/caps/echo", w.data_url))
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().len())
        })
    };
    assert_eq!(send_chunked(1 << 20), (200, 1 << 20));
    assert_eq!(send_chunked((1 << 20) + 1).0, 413);
    // Nothing was stored by the refused request, and the next one is
    // served.
    assert_eq!(send_chunked(10), (200, 10));
}

/// `wisp_sdk::http` from a 0.3 component: `wasi:http/client`, through the
/// same allow-list.
#[test]
fn outbound_http_from_the_sdks_wasi_03_build() {
    let port = crate::outbound::upstream();
    let other = crate::outbound::upstream();
    let w = Wisp::start();
    let allow = format!("http://127.0.0.1:{port}");
    deploy_caps_p3(&w, &[("allow_outbound", &allow)]);
    let fetch = |url: &str| -> Value {
        let r = client()
            .get(format!("{}/caps/fetch", w.data_url))
            .query(&[("url", url)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "guest-visible errors answer 200");
        r.json().unwrap()
    };
    let answer = fetch(&format!("{allow}/x"));
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"], "upstream says hi", "{answer}");
    let answer = fetch(&format!("http://127.0.0.1:{other}/"));
    assert_eq!(answer["error"], "HTTP-request-denied", "{answer}");
}

/// The target directory the crates made by `wisp new` build in: the
/// guests', so their dependencies are compiled once.
fn shared_target() -> std::path::PathBuf {
    root().join("target/wasm")
}

/// `wisp new NAME --template T --wasi V` in `dir`, with the SDK's cache
/// in `cache`; the crate's directory.
fn wisp_new(
    dir: &Path,
    cache: &Path,
    name: &str,
    template: &str,
    wasi: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args([
            "new",
            name,
            "--template",
            template,
            "--wasi",
            wasi,
            "--path",
        ])
        .arg(&path)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    let said = ok(out);
    assert!(said.contains(&format!("WASI {wasi}")), "{said}");
    path
}

/// Crates made by `wisp new`, WASI 0.2 and 0.3, build for wasm32-wasip2
/// in a directory outside the checkout, with a Cargo.toml that names only
/// the SDK copy `wisp new` wrote to the cache.
#[test]
fn wisp_new_crates_build_outside_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let checkout = std::fs::canonicalize(root()).unwrap();
    let outside = std::fs::canonicalize(tmp.path()).unwrap();
    assert!(!outside.starts_with(&checkout));
    let cache = outside.join("cache");
    for (name, template, wasi) in [("plain", "router", "0.2"), ("newer", "kv", "0.3")] {
        let path = wisp_new(&outside, &cache, name, template, wasi);
        let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap();
        assert!(!manifest.contains(checkout.to_str().unwrap()), "{manifest}");
        assert!(manifest.contains(cache.to_str().unwrap()), "{manifest}");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(&path)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", shared_target());
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
            cargo.env_remove(var);
        }
        let out = cargo.output().unwrap();
        assert!(
            out.status.success(),
            "{name} (WASI {wasi}) does not build:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm = shared_target().join(format!("wasm32-wasip2/release/{name}.wasm"));
        assert!(wasm.is_file(), "{} is missing", wasm.display());
    }
    // One copy of the SDK, shared by both.
    let copies = std::fs::read_dir(cache.join("wisp/sdk")).unwrap().count();
    assert_eq!(copies, 1);
}

/// `wisp new --wasi 0.3` (the kv template) deployed from source and
/// called: a 0.3 component keeping its data in the host's key-value store.
#[test]
fn wisp_new_wasi_03_deploys_from_source() {
    let w = Wisp::start();
    let tmp = tempfile::tempdir().unwrap();
    let path = wisp_new(tmp.path(), &tmp.path().join("cache"), "notes", "kv", "0.3");
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["deploy", "notes", "--from"])
        .arg(&path)
        .args(["--route", "/notes/*"])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .unwrap();
    ok(out);
    let r = client()
        .put(format!("{}/notes/notes/a", w.data_url))
        .body("kept in kv")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(w.get("/notes/notes/a").text().unwrap(), "kept in kv");
    assert_eq!(w.get("/notes/notes").text().unwrap(), r#"["a"]"#);
    let r = client()
        .post(format!("{}/notes/hits", w.data_url))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), r#"{"hits":1}"#);
    assert_eq!(w.get("/notes/notes/b").status(), 404);
    assert_eq!(
        ok(w.cli(&["kv", "get", "notes", "note:a"])).trim(),
        "kept in kv"
    );
}
