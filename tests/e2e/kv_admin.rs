//! Key-value data through the admin API and `wisp kv`: round trips, limits
//! (each bad input answers its error and stores nothing), TTL, isolation,
//! deletion with the function, durability.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn put(a: &Admin, path: &str, body: &[u8]) -> reqwest::blocking::Response {
    a.http
        .put(format!("{}{}", a.url, path))
        .bearer_auth(&a.token)
        .body(body.to_vec())
        .send()
        .unwrap()
}

fn delete(a: &Admin, path: &str) -> reqwest::blocking::Response {
    a.http
        .delete(format!("{}{}", a.url, path))
        .bearer_auth(&a.token)
        .send()
        .unwrap()
}

fn value(a: &Admin, function: &str, key: &str) -> Option<Vec<u8>> {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    match resp.status().as_u16() {
        200 => Some(resp.bytes().unwrap().to_vec()),
        404 => {
            assert_error(resp, 404, "key_not_found");
            None
        }
        s => panic!("unexpected status {s}"),
    }
}

fn keys(a: &Admin, function: &str) -> Vec<String> {
    let page: Value = a
        .get(&format!("/v1/functions/{function}/kv?limit=1000"))
        .json()
        .unwrap();
    assert_eq!(page["cursor"], Value::Null);
    serde_json::from_value(page["keys"].clone()).unwrap()
}

#[test]
fn values_round_trip_and_keys_list_in_pages() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);

    let resp = put(&a, "/v1/functions/f/kv/greeting", b"hi there");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().unwrap(),
        json!({"key": "greeting", "bytes": 8})
    );
    let resp = a.get("/v1/functions/f/kv/greeting");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().unwrap().as_ref(), b"hi there");

    // Binary values, and keys with `/` and non-ASCII (percent-encoded or not).
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(
        put(&a, "/v1/functions/f/kv/user%2F%C3%A9", &binary).status(),
        200
    );
    assert_eq!(value(&a, "f", "user/%C3%A9").unwrap(), binary);
    assert_eq!(put(&a, "/v1/functions/f/kv/user/2", b"two").status(), 200);
    assert_eq!(value(&a, "f", "user%2F2").unwrap(), b"two");
    assert_eq!(keys(&a, "f"), ["greeting", "user/2", "user/é"]);

    // Replacing.
    assert_eq!(put(&a, "/v1/functions/f/kv/greeting", b"").status(), 200);
    assert_eq!(value(&a, "f", "greeting").unwrap(), b"");

    // Pages and prefixes.
    for i in 0..7 {
        assert_eq!(
            put(&a, &format!("/v1/functions/f/kv/page%2F{i}"), b"x").status(),
            200
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = "/v1/functions/f/kv?prefix=page%2F&limit=3".to_string();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = a.get(&url).json().unwrap();
        pages += 1;
        seen.extend(
            page["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (0..7).map(|i| format!("page/{i}")).collect::<Vec<_>>()
    );

    // Delete: 200 once, then 404.
    let resp = delete(&a, "/v1/functions/f/kv/greeting");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap()["deleted"], "greeting");
    assert_eq!(value(&a, "f", "greeting"), None);
    let msg = assert_error(
        delete(&a, "/v1/functions/f/kv/greeting"),
        404,
        "key_not_found",
    );
    assert!(msg.contains("greeting"), "{msg}");

    // The OpenAPI document lists the routes.
    let doc: Value = a.get("/v1/openapi.json").json().unwrap();
    assert!(doc["paths"]["/v1/functions/{name}/kv"]["get"].is_object());
    assert!(doc["paths"]["/v1/functions/{name}/kv/{key}"]["put"]["responses"]["507"].is_object());
}

#[test]
fn bad_inputs_answer_errors_and_store_nothing() {
    let w = Wisp::start();
    let a = w.admin();
    let hello = std::fs::read(guest("hello")).unwrap();
    // Small limits for this function: keys 8 bytes, values 16, total 40.
    let limits = [
        ("route", "/f"),
        ("kv_max_key_bytes", "8"),
        ("kv_max_value_bytes", "16"),
        ("kv_max_total_bytes", "40"),
    ];
    assert_eq!(a.deploy("f", &hello, &limits).status(), 201);
    let info: Value = a.get("/v1/functions/f").json().unwrap();
    assert_eq!(info["limits"]["kv_max_total_bytes"], 40);
    // Out-of-range limits are refused at deploy.
    assert_error(
        a.deploy("g", &hello, &[("kv_max_total_bytes", "0")]),
        400,
        "invalid_argument",
    );
    assert_error(
        a.deploy("g", &hello, &[("kv_max_value_bytes", "lots")]),
        400,
        "invalid_argument",
    );

    // Two entries of 16 bytes each: 32 of 40.
    assert_eq!(put(&a, "/v1/functions/f/kv/a", &[b'a'; 15]).status(), 200);
    assert_eq!(put(&a, "/v1/functions/f/kv/b", &[b'b'; 15]).status(), 200);
    let before = || (keys(&a, "f"), value(&a, "f", "a"), value(&a, "f", "b"));
    let stored = before();
    assert_eq!(stored.0, ["a", "b"]);

    let msg = assert_error(
        put(&a, "/v1/functions/f/kv/123456789", b"x"),
        400,
        "invalid_key",
    );
    assert!(msg.contains("9 bytes") && msg.contains("8 bytes"), "{msg}");
    // Multi-byte characters count in bytes.
    assert_error(
        put(
            &a,
            "/v1/functions/f/kv/%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
            b"x",
        ),
        400,
        "invalid_key",
    );
    let msg = assert_error(
        put(&a, "/v1/functions/f/kv/c", &[0; 17]),
        413,
        "value_too_large",
    );
    assert!(msg.contains("16 bytes"), "{msg}");
    // 32 + 1 + 8 = 41 > 40.
    let msg = assert_error(
        put(&a, "/v1/functions/f/kv/c", &[0; 8]),
        507,
        "quota_exceeded",
    );
    assert!(msg.contains("40 bytes"), "{msg}");
    assert_error(
        put(&a, "/v1/functions/f/kv/c?ttl_ms=soon", b"x"),
        400,
        "invalid_argument",
    );
    assert_error(
        put(&a, "/v1/functions/f/kv/c?ttl_ms=-1", b"x"),
        400,
        "invalid_argument",
    );
    // Invalid UTF-8 in the path.
    assert_error(
        put(&a, "/v1/functions/f/kv/%FF", b"x"),
        400,
        "invalid_argument",
    );
    assert_error(a.get("/v1/functions/f/kv/123456789"), 400, "invalid_key");
    assert_error(
        delete(&a, "/v1/functions/f/kv/123456789"),
        400,
        "invalid_key",
    );
    assert_eq!(before(), stored, "a refused write changed the store");

    // Exactly up to the total is fine: 32 + 1 + 7 = 40; then nothing more.
    assert_eq!(put(&a, "/v1/functions/f/kv/c", &[0; 7]).status(), 200);
    assert_error(put(&a, "/v1/functions/f/kv/d", b""), 507, "quota_exceeded");
    // Growing an existing value past the total is refused too; the old
    // value stays.
    assert_error(
        put(&a, "/v1/functions/f/kv/a", &[0; 16]),
        507,
        "quota_exceeded",
    );
    assert_eq!(value(&a, "f", "a").unwrap(), [b'a'; 15]);
    // Deleting gives the bytes back.
    assert_eq!(delete(&a, "/v1/functions/f/kv/c").status(), 200);
    assert_eq!(put(&a, "/v1/functions/f/kv/d", &[0; 7]).status(), 200);

    // Listing parameters.
    assert_error(
        a.get("/v1/functions/f/kv?cursor=nonsense"),
        400,
        "invalid_cursor",
    );
    let page: Value = a.get("/v1/functions/f/kv?limit=1").json().unwrap();
    let cursor = page["cursor"].as_str().unwrap().to_string();
    assert_error(
        a.get(&format!("/v1/functions/f/kv?prefix=z&cursor={cursor}")),
        400,
        "invalid_cursor",
    );
    assert_error(a.get("/v1/functions/f/kv?limit=0"), 400, "invalid_argument");
    let msg = assert_error(
        a.get("/v1/functions/f/kv?limit=1001"),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("1000"), "{msg}");
    assert_error(
        a.get("/v1/functions/f/kv?limit=many"),
        400,
        "invalid_argument",
    );

    // Unknown function.
    for resp in [
        a.get("/v1/functions/nope/kv"),
        a.get("/v1/functions/nope/kv/a"),
        put(&a, "/v1/functions/nope/kv/a", b"x"),
        delete(&a, "/v1/functions/nope/kv/a"),
    ] {
        assert_error(resp, 404, "function_not_found");
    }
    assert_error(a.get("/v1/functions/nope/kv/a"), 404, "function_not_found");
    // No token, no data.
    let resp = client()
        .get(format!("{}/v1/functions/f/kv/a", a.url))
        .send()
        .unwrap();
    assert_error(resp, 401, "unauthorized");
}

#[test]
fn keys_expire() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    assert_eq!(
        put(&a, "/v1/functions/f/kv/short?ttl_ms=400", b"1").status(),
        200
    );
    assert_eq!(
        put(&a, "/v1/functions/f/kv/long?ttl_ms=600000", b"2").status(),
        200
    );
    assert_eq!(value(&a, "f", "short").unwrap(), b"1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(value(&a, "f", "short"), None);
    assert_eq!(keys(&a, "f"), ["long"]);
    assert_error(delete(&a, "/v1/functions/f/kv/short"), 404, "key_not_found");
    // A set without a TTL keeps the key.
    assert_eq!(put(&a, "/v1/functions/f/kv/long", b"3").status(), 200);
    assert_eq!(value(&a, "f", "long").unwrap(), b"3");
}

#[test]
fn functions_are_isolated_and_deleting_one_removes_its_data() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    a.deploy_guest("g", "hello", &["/g"]);
    a.deploy_guest("ff", "hello", &["/ff"]);
    assert_eq!(put(&a, "/v1/functions/f/kv/k", b"from f").status(), 200);
    assert_eq!(value(&a, "g", "k"), None);
    assert_eq!(value(&a, "ff", "k"), None);
    assert!(keys(&a, "g").is_empty());
    assert_eq!(put(&a, "/v1/functions/g/kv/k", b"from g").status(), 200);
    assert_eq!(value(&a, "f", "k").unwrap(), b"from f");

    // A redeploy keeps the data; a delete removes it, and the same name
    // deployed again starts empty.
    a.deploy_guest("f", "hello", &["/f"]);
    assert_eq!(value(&a, "f", "k").unwrap(), b"from f");
    assert_eq!(delete(&a, "/v1/functions/f").status(), 200);
    assert_error(a.get("/v1/functions/f/kv/k"), 404, "function_not_found");
    a.deploy_guest("f", "hello", &["/f"]);
    assert_eq!(value(&a, "f", "k"), None);
    assert!(keys(&a, "f").is_empty());
    assert_eq!(value(&a, "g", "k").unwrap(), b"from g");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    for i in 0..20 {
        assert_eq!(
            put(
                &a,
                &format!("/v1/functions/f/kv/k{i:02}"),
                format!("v{i}").as_bytes()
            )
            .status(),
            200
        );
    }
    assert_eq!(delete(&a, "/v1/functions/f/kv/k00").status(), 200);
    w.kill9();
    let w2 = w.restart_on(Opts::default());
    let a2 = w2.admin();
    let listed = keys(&a2, "f");
    assert_eq!(listed.len(), 19);
    assert_eq!(value(&a2, "f", "k19").unwrap(), b"v19");
    assert_eq!(value(&a2, "f", "k00"), None);
}

#[test]
fn cli_get_set_delete_list() {
    let w = Wisp::start();
    let a = w.admin();
    let hello = std::fs::read(guest("hello")).unwrap();
    let limits = [
        ("route", "/f"),
        ("kv_max_value_bytes", "2048"),
        ("kv_max_total_bytes", "1000000"),
    ];
    assert_eq!(a.deploy("f", &hello, &limits).status(), 201);

    let out = ok(w.cli(&["kv", "set", "f", "greeting", "hello world"]));
    assert!(
        out.contains("greeting") && out.contains("11 bytes"),
        "{out}"
    );
    assert_eq!(ok(w.cli(&["kv", "get", "f", "greeting"])), "hello world");
    // A key with a slash and a space goes through encoded.
    ok(w.cli(&["kv", "set", "f", "a/b c", "x"]));
    // An empty key is refused before any request.
    let out = w.cli(&["kv", "set", "f", "", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a key cannot be empty"));
    assert_eq!(value(&a, "f", "a%2Fb%20c").unwrap(), b"x");
    assert_eq!(ok(w.cli(&["kv", "get", "f", "a/b c"])), "x");

    // From a file and from stdin, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.bin");
    let binary: Vec<u8> = (0..=255).rev().collect();
    std::fs::write(&file, &binary).unwrap();
    ok(w.cli(&["kv", "set", "f", "bin", &format!("@{}", file.display())]));
    let out = w.cli(&["kv", "get", "f", "bin"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, binary);
    ok(w.cli_in(&["kv", "set", "f", "stdin", "@-"], Some(b"piped")));
    assert_eq!(ok(w.cli(&["kv", "get", "f", "stdin"])), "piped");

    // TTL.
    ok(w.cli(&["kv", "set", "f", "brief", "x", "--ttl", "300ms"]));
    std::thread::sleep(Duration::from_millis(500));
    let err = fails(w.cli(&["kv", "get", "f", "brief"]));
    assert!(err.contains("not set"), "{err}");
    // A bad duration is refused by the argument parser.
    assert!(
        !w.cli(&["kv", "set", "f", "k", "x", "--ttl", "soon"])
            .status
            .success()
    );
    assert_eq!(value(&a, "f", "k"), None);

    // Listing follows cursors past one page of 1000.
    for i in 0..1001 {
        assert_eq!(
            put(&a, &format!("/v1/functions/f/kv/n%2F{i:04}"), b"").status(),
            200
        );
    }
    let out = ok(w.cli(&["kv", "list", "f", "--prefix", "n/"]));
    assert_eq!(out.lines().count(), 1001);
    assert_eq!(out.lines().last(), Some("n/1000"));
    let json: Vec<String> =
        serde_json::from_str(&ok(w.cli(&["kv", "list", "f", "--json"]))).unwrap();
    assert_eq!(json.len(), 1001 + 4);
    assert_eq!(&json[..2], ["a/b c", "bin"]);

    // Delete, then the errors: one line each, non-zero exit.
    ok(w.cli(&["kv", "delete", "f", "greeting"]));
    let err = fails(w.cli(&["kv", "get", "f", "greeting"]));
    assert!(err.contains("greeting") && err.contains("not set"), "{err}");
    fails(w.cli(&["kv", "delete", "f", "greeting"]));
    let err = fails(w.cli(&["kv", "get", "nope", "k"]));
    assert!(err.contains("not found"), "{err}");
    let err = fails(w.cli(&["kv", "set", "f", "big", &"x".repeat(2049)]));
    assert!(err.contains("2048"), "{err}");
    assert_eq!(value(&a, "f", "big"), None);
    let err = fails(w.cli(&["kv", "set", "f", "k", "@/does/not/exist"]));
    assert!(err.contains("/does/not/exist"), "{err}");
    let err = fails(w.cli(&["kv", "list", "nope"]));
    assert!(err.contains("not found"), "{err}");
}

/// A guest (tests/guests/caps) using `wisp:function/kv` from a request.
fn guest_kv(w: &Wisp, path: &str, body: &[u8]) -> Value {
    let resp = client()
        .post(format!("{}{}", w.data_url, path))
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn guests_share_the_namespace_with_the_admin_api_and_get_error_values() {
    let w = Wisp::start();
    let a = w.admin();
    let caps = std::fs::read(guest("caps")).unwrap();
    let limits = [
        ("route", "/c/*"),
        ("kv_max_key_bytes", "8"),
        ("kv_max_value_bytes", "16"),
        ("kv_max_total_bytes", "40"),
    ];
    assert_eq!(a.deploy("c", &caps, &limits).status(), 201);
    a.deploy_guest("d", "caps", &["/d/*"]);

    // Guest writes, admin reads, and back.
    assert_eq!(
        guest_kv(&w, "/c/kv/set?key=k", b"from guest"),
        json!({"ok": true})
    );
    assert_eq!(value(&a, "c", "k").unwrap(), b"from guest");
    assert_eq!(put(&a, "/v1/functions/c/kv/k", b"from admin").status(), 200);
    assert_eq!(guest_kv(&w, "/c/kv/get?key=k", b"")["value"], "from admin");
    // Another function sees nothing of it.
    assert_eq!(guest_kv(&w, "/d/kv/get?key=k", b"")["found"], false);
    assert_eq!(guest_kv(&w, "/d/kv/list", b"")["keys"], json!([]));

    // Counters and compare-and-swap.
    assert_eq!(guest_kv(&w, "/c/kv/incr?key=n", b"")["value"], 1);
    assert_eq!(guest_kv(&w, "/c/kv/incr?key=n&delta=41", b"")["value"], 42);
    assert_eq!(value(&a, "c", "n").unwrap(), b"42");
    assert_eq!(
        guest_kv(&w, "/c/kv/incr?key=k", b"")["error"],
        "not-a-number"
    );
    assert_eq!(
        guest_kv(&w, "/c/kv/cas?key=n&expected=41", b"0")["swapped"],
        false
    );
    assert_eq!(
        guest_kv(&w, "/c/kv/cas?key=n&expected=42", b"0")["swapped"],
        true
    );
    assert_eq!(guest_kv(&w, "/c/kv/cas?key=new", b"1")["swapped"], true);
    assert_eq!(guest_kv(&w, "/c/kv/cas?key=new", b"2")["swapped"], false);
    assert_eq!(guest_kv(&w, "/c/kv/delete?key=new", b"")["deleted"], true);
    assert_eq!(guest_kv(&w, "/c/kv/delete?key=new", b"")["deleted"], false);

    // Limits are error values, not traps, and write nothing. Usage now:
    // k (1 + 10) + n (1 + 1) = 13 of 40.
    let stored = (keys(&a, "c"), value(&a, "c", "k"), value(&a, "c", "n"));
    assert_eq!(
        guest_kv(&w, "/c/kv/set?key=123456789", b"x")["error"],
        "invalid-key"
    );
    assert_eq!(guest_kv(&w, "/c/kv/set?key=", b"x")["error"], "invalid-key");
    assert_eq!(
        guest_kv(&w, "/c/kv/set?key=big", &[b'x'; 17])["error"],
        "value-too-large"
    );
    assert_eq!(guest_kv(&w, "/c/kv/set?key=a", &[b'x'; 15])["ok"], true);
    // 13 + 16 = 29; another 16 would be 45.
    assert_eq!(
        guest_kv(&w, "/c/kv/set?key=b", &[b'x'; 15])["error"],
        "quota-exceeded"
    );
    assert_eq!(
        guest_kv(&w, "/c/kv/cas?key=b", &[b'x'; 15])["error"],
        "quota-exceeded"
    );
    assert_eq!(
        guest_kv(&w, "/c/kv/list?cursor=bogus", b"")["error"],
        "invalid-cursor"
    );
    assert_eq!(guest_kv(&w, "/c/kv/delete?key=a", b"")["deleted"], true);
    assert_eq!(
        (keys(&a, "c"), value(&a, "c", "k"), value(&a, "c", "n")),
        stored
    );

    // TTL and listing in pages.
    assert_eq!(guest_kv(&w, "/c/kv/set?key=t&ttl_ms=300", b"x")["ok"], true);
    assert_eq!(guest_kv(&w, "/c/kv/get?key=t", b"")["found"], true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(guest_kv(&w, "/c/kv/get?key=t", b"")["found"], false);
    let page = guest_kv(&w, "/c/kv/list?limit=1", b"");
    assert_eq!(page["keys"], json!(["k"]));
    let cursor = page["cursor"].as_str().unwrap().to_string();
    let page = guest_kv(&w, &format!("/c/kv/list?limit=1&cursor={cursor}"), b"");
    assert_eq!(page["keys"], json!(["n"]));
    assert_eq!(page["cursor"], Value::Null);
}
