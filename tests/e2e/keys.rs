//! Private functions (`--auth key`) and their invoke keys, through the
//! real binary: 401 without a key (the guest not run), 200 with one in
//! `Authorization: Bearer` or `wisp-key`, wrong, revoked and expired keys
//! refused, the key never seen by the guest nor logged, public by default
//! and again with `--auth public`, keys kept across a restart and gone
//! with their function, the `wisp key` commands, bad inputs refused with
//! nothing stored.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Deploys the CGI guest that answers the request's headers as JSON, at
/// `/p/*`, with `query`.
fn deploy(w: &Wisp, name: &str, query: &[(&str, &str)]) -> reqwest::blocking::Response {
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let mut q = vec![("route", "/p/*")];
    q.extend_from_slice(query);
    w.admin().deploy(name, &wasm, &q)
}

/// GET `/p/x` on the data plane with `headers`.
fn call(w: &Wisp, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut req = client().get(format!("{}/p/x", w.data_url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

/// Asserts a 401 from the data plane; returns its message.
fn refused(resp: reqwest::blocking::Response) -> String {
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_error(resp, 401, "unauthorized")
}

fn info(w: &Wisp, name: &str) -> Value {
    w.admin()
        .get(&format!("/v1/functions/{name}"))
        .json()
        .unwrap()
}

/// The names of a function's keys, as `GET .../keys` lists them.
fn key_names(w: &Wisp, name: &str) -> Vec<String> {
    let list: Value = w
        .admin()
        .get(&format!("/v1/functions/{name}/keys"))
        .json()
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

fn create_key(w: &Wisp, name: &str, body: &Value) -> reqwest::blocking::Response {
    let a = w.admin();
    a.http
        .post(format!("{}/v1/functions/{name}/keys", a.url))
        .bearer_auth(&a.token)
        .json(body)
        .send()
        .unwrap()
}

#[test]
fn a_private_function_answers_only_requests_with_one_of_its_keys() {
    let w = Wisp::start();
    // Public by default.
    assert_eq!(deploy(&w, "priv", &[]).status(), 201);
    assert_eq!(call(&w, &[]).status(), 200);
    assert_eq!(info(&w, "priv")["auth"], "public");

    ok(w.cli(&[
        "deploy",
        "priv",
        wasip1_guest("cgi-rust").to_str().unwrap(),
        "--auth",
        "key",
    ]));
    assert_eq!(info(&w, "priv")["auth"], "key");
    assert!(ok(w.cli(&["info", "priv"])).contains("key"));

    // Without a key: 401, and the guest did not run.
    let before = w.metric("wisp_invocations_total");
    let m = refused(call(&w, &[]));
    assert!(m.contains("missing invoke key"), "{m}");
    let m = refused(call(&w, &[("authorization", "Basic dTpw")]));
    assert!(m.contains("missing"), "{m}");
    assert_eq!(w.metric("wisp_invocations_total"), before);

    // `wisp key create` prints the key alone on stdout.
    let key = ok(w.cli(&["key", "create", "priv", "--name", "partner"]))
        .trim()
        .to_string();
    assert!(key.starts_with("wispk_") && key.len() >= 6 + 64, "{key}");

    // With it, in either header; the guest sees neither.
    let r = call(&w, &[("authorization", &format!("Bearer {key}"))]);
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(seen["headers"].get("wisp-key").is_none(), "{seen}");
    assert!(!seen.to_string().contains(&key), "{seen}");
    // In `wisp-key`, the guest's own `Authorization` passes through.
    let r = call(&w, &[("wisp-key", &key), ("authorization", "Basic dTpw")]);
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().unwrap();
    assert_eq!(seen["headers"]["authorization"], "Basic dTpw", "{seen}");
    assert!(seen["headers"].get("wisp-key").is_none(), "{seen}");
    assert!(!seen.to_string().contains(&key), "{seen}");
    assert_eq!(w.metric("wisp_invocations_total"), before + 2.0);

    // A wrong key: 401 saying so, without echoing it.
    let wrong = format!("wispk_{}", "0".repeat(64));
    let m = refused(call(&w, &[("wisp-key", &wrong)]));
    assert!(
        m.contains("invalid invoke key") && !m.contains(&wrong),
        "{m}"
    );
    let m = refused(call(&w, &[("authorization", &format!("Bearer {wrong}"))]));
    assert!(m.contains("invalid"), "{m}");

    // A later deploy keeps it private.
    ok(w.cli(&["deploy", "priv", wasip1_guest("cgi-rust").to_str().unwrap()]));
    assert_eq!(info(&w, "priv")["auth"], "key");
    refused(call(&w, &[]));
    assert_eq!(call(&w, &[("wisp-key", &key)]).status(), 200);
    // So does a version pinned with `wisp-version`, or an alias route.
    ok(w.cli(&[
        "deploy",
        "priv",
        wasip1_guest("cgi-rust").to_str().unwrap(),
        "--version-pinning",
    ]));
    refused(call(&w, &[("wisp-version", "1")]));
    ok(w.cli(&["alias", "set", "priv", "old", "1", "--route", "/old/*"]));
    let r = client()
        .get(format!("{}/old/x", w.data_url))
        .send()
        .unwrap();
    refused(r);
    let r = client()
        .get(format!("{}/old/x", w.data_url))
        .header("wisp-key", &key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    ok(w.cli(&["alias", "delete", "priv", "old"]));

    // A rollback to a version deployed public keeps it private.
    ok(w.cli(&["rollback", "priv", "1"]));
    assert_eq!(info(&w, "priv")["active_version"], 1);
    assert_eq!(info(&w, "priv")["auth"], "key");
    refused(call(&w, &[]));
    assert_eq!(call(&w, &[("wisp-key", &key)]).status(), 200);

    // `wisp key list`: names, never keys.
    let listed = ok(w.cli(&["key", "list", "priv"]));
    assert!(
        listed.contains("partner") && !listed.contains(&key),
        "{listed}"
    );
    let json = ok(w.cli(&["key", "list", "priv", "--json"]));
    assert!(!json.contains(&key) && !json.contains("sha256"), "{json}");

    // Revoked: refused from the answer on.
    let out = ok(w.cli(&["key", "revoke", "priv", "partner"]));
    assert!(out.contains("revoked invoke key partner"), "{out}");
    let m = refused(call(&w, &[("wisp-key", &key)]));
    assert!(m.contains("invalid"), "{m}");
    assert!(key_names(&w, "priv").is_empty());

    // Expired: refused, saying so.
    let short = ok(w.cli(&[
        "key",
        "create",
        "priv",
        "--name",
        "short",
        "--expires",
        "1s",
    ]))
    .trim()
    .to_string();
    assert_eq!(call(&w, &[("wisp-key", &short)]).status(), 200);
    std::thread::sleep(Duration::from_millis(1200));
    let m = refused(call(&w, &[("wisp-key", &short)]));
    assert!(m.contains("`short`") && m.contains("expired"), "{m}");
    assert!(ok(w.cli(&["key", "list", "priv"])).contains("(expired)"));

    // Public again: anyone, and the guest's headers as sent.
    ok(w.cli(&[
        "deploy",
        "priv",
        wasip1_guest("cgi-rust").to_str().unwrap(),
        "--auth",
        "public",
    ]));
    assert_eq!(info(&w, "priv")["auth"], "public");
    assert_eq!(call(&w, &[]).status(), 200);

    // No key in the host's log.
    let log = w.log_text();
    assert!(!log.contains(&key) && !log.contains(&short));
}

#[test]
fn keys_survive_a_restart_and_go_with_their_function() {
    let mut w = Wisp::start();
    assert_eq!(deploy(&w, "priv", &[("auth", "key")]).status(), 201);
    let created: Value = create_key(&w, "priv", &json!({"name": "a", "expires": "30d"}))
        .json()
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["info"]["name"], "a");
    assert!(created["info"]["expires_ms"].is_u64());
    w.terminate();
    let w = w.restart_on(Opts::default());
    assert_eq!(info(&w, "priv")["auth"], "key");
    assert_eq!(key_names(&w, "priv"), ["a"]);
    assert_eq!(call(&w, &[("wisp-key", &key)]).status(), 200);
    refused(call(&w, &[]));

    // Deleted with its function: a new function of the name has none.
    ok(w.cli(&["delete", "priv"]));
    assert_error(
        w.admin().get("/v1/functions/priv/keys"),
        404,
        "function_not_found",
    );
    assert_eq!(deploy(&w, "priv", &[("auth", "key")]).status(), 201);
    assert!(key_names(&w, "priv").is_empty());
    let m = refused(call(&w, &[("wisp-key", &key)]));
    assert!(m.contains("invalid"), "{m}");
}

#[test]
fn bad_inputs_are_refused_with_nothing_stored() {
    let w = Wisp::start();
    // An unknown auth: 400 naming the values; no function.
    let m = assert_error(deploy(&w, "f", &[("auth", "foo")]), 400, "invalid_argument");
    assert!(m.contains("`public`") && m.contains("`key`"), "{m}");
    assert!(w.admin().functions().is_empty());
    let err = fails(w.cli(&[
        "deploy",
        "f",
        wasip1_guest("cgi-rust").to_str().unwrap(),
        "--auth",
        "private",
    ]));
    assert!(err.contains("`public`"), "{err}");
    assert!(w.admin().functions().is_empty());

    // A key of a function that does not exist: 404, nothing stored.
    let m = assert_error(create_key(&w, "f", &json!({})), 404, "function_not_found");
    assert!(m.contains("\"f\""), "{m}");
    let err = fails(w.cli(&["key", "create", "nope"]));
    assert!(err.contains("not found"), "{err}");

    assert_eq!(deploy(&w, "f", &[("auth", "key")]).status(), 201);
    // An unknown auth leaves the function as it was.
    assert_error(deploy(&w, "f", &[("auth", "Key")]), 400, "invalid_argument");
    assert_eq!(info(&w, "f")["auth"], "key");
    assert_eq!(info(&w, "f")["active_version"], 1);

    // Expiries in the past or unparseable, bad names: 400, nothing stored.
    for expires in ["2020-01-01T00:00:00Z", "soon", "0s", "-1d"] {
        let m = assert_error(
            create_key(&w, "f", &json!({"expires": expires})),
            400,
            "invalid_argument",
        );
        assert!(m.contains("expiry"), "{m}");
    }
    let err = fails(w.cli(&["key", "create", "f", "--expires", "yesterday"]));
    assert!(err.contains("invalid expiry"), "{err}");
    for name in ["a b", "", "x/y"] {
        assert_error(
            create_key(&w, "f", &json!({"name": name})),
            400,
            "invalid_name",
        );
    }
    assert_error(
        create_key(&w, "f", &json!({"name": "a", "scopes": []})),
        400,
        "invalid_argument",
    );
    assert!(key_names(&w, "f").is_empty());

    // A taken name: 409, the first one kept.
    assert_eq!(create_key(&w, "f", &json!({"name": "a"})).status(), 201);
    assert_error(
        create_key(&w, "f", &json!({"name": "a"})),
        409,
        "key_exists",
    );
    assert_eq!(key_names(&w, "f"), ["a"]);

    // Revoking what is not there: 404, the others kept.
    let m = assert_error(
        w.admin().delete("/v1/functions/f/keys/b"),
        404,
        "key_not_found",
    );
    assert!(m.contains("\"b\""), "{m}");
    assert_error(
        w.admin().delete("/v1/functions/nope/keys/a"),
        404,
        "function_not_found",
    );
    let err = fails(w.cli(&["key", "revoke", "f", "b"]));
    assert!(err.contains("no key named"), "{err}");
    assert_eq!(key_names(&w, "f"), ["a"]);

    // Scopes: `deploy:f` writes, `read:*` lists, neither for another.
    let a = w.admin();
    let token = |scopes: &[&str]| -> String {
        let r: Value = a
            .http
            .post(format!("{}/v1/tokens", a.url))
            .bearer_auth(&a.token)
            .json(&json!({"scopes": scopes}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["token"].as_str().unwrap().to_string()
    };
    let keys_url = format!("{}/v1/functions/f/keys", a.url);
    let other = token(&["deploy:g", "read:*"]);
    let r = a
        .http
        .post(&keys_url)
        .bearer_auth(&other)
        .json(&json!({}))
        .send()
        .unwrap();
    let m = assert_error(r, 403, "forbidden");
    assert!(m.contains("deploy:f"), "{m}");
    let r = a.http.get(&keys_url).bearer_auth(&other).send().unwrap();
    assert_eq!(r.status(), 200);
    let mine = token(&["deploy:f"]);
    let r = a
        .http
        .post(&keys_url)
        .bearer_auth(&mine)
        .json(&json!({"name": "b"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(key_names(&w, "f"), ["a", "b"]);
    // Key writes are in the audit log (path, never the key).
    let audit: Value = a.get("/v1/audit").json().unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/v1/functions/f/keys" && e["status"] == 201),
        "{audit}"
    );
}

#[test]
fn a_private_function_with_cors_answers_preflights_without_a_key() {
    let w = Wisp::start();
    let r = deploy(
        &w,
        "p",
        &[("auth", "key"), ("cors_origin", "https://app.example.com")],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    // Browsers send preflights without credentials: the host answers them
    // (the function does not run), so they need no key.
    let r = client()
        .request(reqwest::Method::OPTIONS, format!("{}/p/x", w.data_url))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    // The request itself still needs the key.
    refused(call(&w, &[("origin", "https://app.example.com")]));
    // Any other OPTIONS (not a preflight) needs it too.
    let r = client()
        .request(reqwest::Method::OPTIONS, format!("{}/p/x", w.data_url))
        .send()
        .unwrap();
    refused(r);
    assert_eq!(w.metric("wisp_invocations_total"), 0.0);
}
