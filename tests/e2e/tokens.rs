//! Scoped admin tokens and the audit log, through the real binary: each
//! scope allowed and refused (403 naming the scope), expired and revoked
//! tokens refused (401), `wisp token` and `wisp audit`, bad inputs refused
//! with nothing stored, and no token or secret in the audit log or the
//! host's log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// Creates a token with the bootstrap token; returns it.
fn create(a: &Admin, name: &str, scopes: &[&str], expires: Option<&str>) -> String {
    let resp = post_json(
        a,
        &a.token,
        "/v1/tokens",
        &json!({"name": name, "scopes": scopes, "expires": expires}),
    );
    assert_eq!(resp.status(), 201, "creating {name}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let v: Value = resp.json().unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert!(
        token.starts_with("wisp_") && token.len() >= 5 + 64,
        "{token}"
    );
    assert_eq!(v["info"]["name"], name);
    token
}

fn post_json(a: &Admin, token: &str, path: &str, body: &Value) -> reqwest::blocking::Response {
    a.http
        .post(format!("{}{path}", a.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .unwrap()
}

/// A request with `token`.
fn call(
    a: &Admin,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> reqwest::blocking::Response {
    a.http
        .request(method.parse().unwrap(), format!("{}{path}", a.url))
        .bearer_auth(token)
        .body(body.to_vec())
        .send()
        .unwrap()
}

/// Deploys the hello guest as `name` with `token`.
fn deploy(a: &Admin, token: &str, name: &str) -> reqwest::blocking::Response {
    let wasm = std::fs::read(guest("hello")).unwrap();
    a.http
        .post(format!("{}/v1/functions/{name}", a.url))
        .bearer_auth(token)
        .query(&[("route", format!("/{name}"))])
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .unwrap()
}

/// Asserts a 403 whose message names `scope`.
fn forbidden(resp: reqwest::blocking::Response, scope: &str) {
    let msg = assert_error(resp, 403, "forbidden");
    assert_eq!(msg, format!("this token lacks the scope {scope}"));
}

/// The names of the tokens the host lists.
fn names(a: &Admin) -> Vec<String> {
    let list: Vec<Value> = a.get("/v1/tokens").json().unwrap();
    list.iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn audit(a: &Admin) -> Vec<Value> {
    let page: Value = a.get("/v1/audit").json().unwrap();
    page["entries"].as_array().unwrap().clone()
}

#[test]
fn deploy_scope_writes_and_reads_its_function_only() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("other", "hello", &["/other"]);
    let t = create(&a, "ci", &["deploy:hello"], None);

    // Its function: deploy, read, config, key-value, rollback, delete.
    assert!(deploy(&a, &t, "hello").status().is_success());
    assert!(deploy(&a, &t, "hello").status().is_success());
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hello", b"").status(),
        200
    );
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hello/versions", b"").status(),
        200
    );
    let r = a
        .http
        .put(format!("{}/v1/functions/hello/config", a.url))
        .bearer_auth(&t)
        .json(&json!({"values": {"A": "1"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        call(&a, &t, "PUT", "/v1/functions/hello/kv/k", b"v").status(),
        200
    );
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hello/kv/k", b"").status(),
        200
    );
    let r = post_json(&a, &t, "/v1/functions/hello/rollback", &json!({}));
    assert_eq!(r.status(), 200);

    // Another function: neither written nor read; nothing else either.
    forbidden(deploy(&a, &t, "other"), "`deploy:other`");
    forbidden(
        call(&a, &t, "DELETE", "/v1/functions/other", b""),
        "`deploy:other`",
    );
    forbidden(
        call(&a, &t, "PUT", "/v1/functions/other/kv/k", b"v"),
        "`deploy:other`",
    );
    forbidden(
        call(&a, &t, "GET", "/v1/functions/other", b""),
        "`read:*` or `deploy:other`",
    );
    forbidden(call(&a, &t, "GET", "/v1/functions", b""), "`read:*`");
    // The name checked is the one the handler sees: percent-decoded.
    forbidden(
        call(&a, &t, "DELETE", "/v1/functions/%6Fther", b""),
        "`deploy:other`",
    );
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hell%6F", b"").status(),
        200
    );
    forbidden(
        call(&a, &t, "POST", "/v1/functions/hello/invoke", b""),
        "`invoke:hello`",
    );
    forbidden(
        post_json(
            &a,
            &t,
            "/v1/schedules",
            &json!({"function": "hello", "cron": "* * * * *"}),
        ),
        "`admin`",
    );
    forbidden(call(&a, &t, "GET", "/v1/tokens", b""), "`admin`");
    forbidden(
        post_json(&a, &t, "/v1/tokens", &json!({"scopes": ["admin"]})),
        "`admin`",
    );
    // Nothing refused happened: `other` is there, and no token was made.
    assert_eq!(a.functions().len(), 2);
    assert_eq!(names(&a), ["ci"]);

    // The CLI, with the token: its function's info, not the list.
    ok(w.cli(&["info", "hello", "--token", &t]));
    let err = fails(w.cli(&["list", "--token", &t]));
    assert!(err.contains("this token lacks the scope `read:*`"), "{err}");

    assert_eq!(
        call(&a, &t, "DELETE", "/v1/functions/hello", b"").status(),
        200
    );

    // `deploy:*`: every function.
    let all = create(&a, "all", &["deploy:*"], None);
    assert!(deploy(&a, &all, "third").status().is_success());
    assert_eq!(
        call(&a, &all, "GET", "/v1/functions/other", b"").status(),
        200
    );
    forbidden(call(&a, &all, "GET", "/v1/functions", b""), "`read:*`");
}

#[test]
fn read_scope_reads_everything_but_tokens_and_writes_nothing() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    let t = create(&a, "viewer", &["read:*"], None);

    for path in [
        "/v1/functions",
        "/v1/functions/hello",
        "/v1/functions/hello/logs",
        "/v1/functions/hello/config",
        "/v1/schedules",
        "/v1/openapi.json",
        "/metrics",
    ] {
        assert_eq!(call(&a, &t, "GET", path, b"").status(), 200, "{path}");
    }
    forbidden(deploy(&a, &t, "hello"), "`deploy:hello`");
    forbidden(
        call(&a, &t, "PUT", "/v1/functions/hello/kv/k", b"v"),
        "`deploy:hello`",
    );
    forbidden(
        call(&a, &t, "GET", "/v1/functions/hello/invoke", b""),
        "`invoke:hello`",
    );
    forbidden(call(&a, &t, "GET", "/v1/tokens", b""), "`admin`");
    forbidden(call(&a, &t, "GET", "/v1/audit", b""), "`admin`");
    forbidden(
        call(&a, &t, "POST", "/v1/topics/orders/events", b"{}"),
        "`admin`",
    );
    assert_eq!(a.functions()[0].active_version, 1);

    let listed = ok(w.cli(&["list", "--token", &t]));
    assert!(listed.contains("hello"), "{listed}");
    let err = fails(w.cli(&["delete", "hello", "--token", &t]));
    assert!(
        err.contains("this token lacks the scope `deploy:hello`"),
        "{err}"
    );
    assert_eq!(a.functions().len(), 1);
}

#[test]
fn invoke_scope_invokes_its_function_only() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("other", "hello", &["/other"]);
    let t = create(&a, "caller", &["invoke:hello"], None);

    assert_eq!(
        call(&a, &t, "POST", "/v1/functions/hello/invoke", b"").status(),
        200
    );
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hello/invoke", b"").status(),
        200
    );
    ok(w.cli(&["invoke", "hello", "--token", &t]));
    forbidden(
        call(&a, &t, "POST", "/v1/functions/other/invoke", b""),
        "`invoke:other`",
    );
    forbidden(
        call(&a, &t, "GET", "/v1/functions/hello", b""),
        "`read:*` or `deploy:hello`",
    );
    forbidden(deploy(&a, &t, "hello"), "`deploy:hello`");
}

#[test]
fn admin_tokens_manage_tokens_and_the_bootstrap_token_keeps_every_right() {
    let w = Wisp::start();
    let a = w.admin();
    let root = create(&a, "root", &["admin"], None);
    let r = post_json(
        &a,
        &root,
        "/v1/tokens",
        &json!({"name": "made-by-root", "scopes": ["read:*"]}),
    );
    assert_eq!(r.status(), 201);
    assert_eq!(names(&a), ["made-by-root", "root"]);
    assert!(deploy(&a, &root, "hello").status().is_success());
    assert_eq!(
        call(&a, &root, "DELETE", "/v1/tokens/made-by-root", b"").status(),
        200
    );
    // The bootstrap token still does everything, tokens or not.
    assert!(deploy(&a, &a.token, "hello").status().is_success());
    assert_eq!(names(&a), ["root"]);

    // The document lists the routes.
    let doc: Value = a.get("/v1/openapi.json").json().unwrap();
    for path in ["/v1/tokens", "/v1/tokens/{token}", "/v1/audit"] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
}

#[test]
fn expired_and_revoked_tokens_are_refused() {
    let w = Wisp::start();
    let a = w.admin();
    // Through the CLI: the token alone on stdout.
    let out = ok(w.cli(&[
        "token",
        "create",
        "--scope",
        "read:*",
        "--expires",
        "1s",
        "--name",
        "brief",
    ]));
    let brief = out.trim().to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(brief.starts_with("wisp_"), "{brief}");
    assert_eq!(call(&a, &brief, "GET", "/v1/functions", b"").status(), 200);
    std::thread::sleep(Duration::from_millis(1200));
    let msg = assert_error(
        call(&a, &brief, "GET", "/v1/functions", b""),
        401,
        "unauthorized",
    );
    assert!(msg.contains("expired"), "{msg}");
    let listed = ok(w.cli(&["token", "list"]));
    assert!(
        listed.contains("brief") && listed.contains("(expired)"),
        "{listed}"
    );

    let t = create(&a, "gone", &["admin"], Some("30d"));
    assert_eq!(call(&a, &t, "GET", "/v1/tokens", b"").status(), 200);
    let out = ok(w.cli(&["token", "revoke", "gone"]));
    assert!(out.contains("revoked token gone"), "{out}");
    let msg = assert_error(call(&a, &t, "GET", "/v1/tokens", b""), 401, "unauthorized");
    assert_eq!(msg, "invalid bearer token");
    assert_error(
        call(&a, "wisp_0000", "GET", "/v1/tokens", b""),
        401,
        "unauthorized",
    );
    // Revoked by id as well.
    let t = create(&a, "by-id", &["read:*"], None);
    let list: Vec<Value> = a.get("/v1/tokens").json().unwrap();
    let id = list.iter().find(|x| x["name"] == "by-id").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call(&a, &a.token, "DELETE", &format!("/v1/tokens/{id}"), b"").status(),
        200
    );
    assert_error(
        call(&a, &t, "GET", "/v1/functions", b""),
        401,
        "unauthorized",
    );
    assert_eq!(names(&a), ["brief"]);
}

#[test]
fn tokens_survive_a_restart() {
    let mut w = Wisp::start();
    let a = w.admin();
    let t = create(&a, "kept", &["read:*"], None);
    w.terminate();
    let w2 = w.restart_on(Opts::default());
    let a2 = w2.admin();
    assert_eq!(call(&a2, &t, "GET", "/v1/functions", b"").status(), 200);
    assert_eq!(names(&a2), ["kept"]);
}

#[test]
fn the_cli_creates_lists_and_revokes_tokens() {
    let w = Wisp::start();
    let out = w.cli(&[
        "token",
        "create",
        "--scope",
        "deploy:hello",
        "--scope",
        "read:*",
        "--name",
        "ci",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let token = ok(out).trim().to_string();
    assert!(stderr.contains("created token ci"), "{stderr}");
    assert!(stderr.contains("shown only now"), "{stderr}");
    assert!(!stderr.contains(&token));

    let list = ok(w.cli(&["token", "list"]));
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        list.contains("ci") && list.contains("deploy:hello read:*"),
        "{list}"
    );
    assert!(list.contains("never"), "{list}");
    assert!(
        !list.contains(&token) && !list.contains(&token[5..]),
        "{list}"
    );
    let json: Value = serde_json::from_str(&ok(w.cli(&["token", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["name"], "ci");
    assert!(json[0].get("sha256").is_none() && json[0].get("token").is_none());

    // Without --name: one is made from the id.
    let out = w.cli(&["token", "create", "--scope", "admin", "--json"]);
    let created: Value = serde_json::from_str(&ok(out)).unwrap();
    let id = created["info"]["id"].as_str().unwrap();
    assert_eq!(created["info"]["name"], format!("token-{id}"));

    ok(w.cli(&["token", "revoke", "ci"]));
    ok(w.cli(&["token", "revoke", id]));
    assert_eq!(ok(w.cli(&["token", "list"])), "no tokens\n");
    let err = fails(w.cli(&["token", "revoke", "ci"]));
    assert!(err.contains("no token named"), "{err}");
}

#[test]
fn bad_token_requests_are_refused_and_store_nothing() {
    let w = Wisp::start();
    let a = w.admin();
    create(&a, "taken", &["read:*"], None);

    for (body, status, code, says) in [
        (
            json!({"name": "x", "scopes": ["deploy"]}),
            400,
            "invalid_scope",
            "invalid scope `deploy`",
        ),
        (
            json!({"name": "x", "scopes": ["foo:bar"]}),
            400,
            "invalid_scope",
            "unknown scope",
        ),
        (
            json!({"name": "x", "scopes": ["read:hello"]}),
            400,
            "invalid_scope",
            "`read:*`",
        ),
        (
            json!({"name": "x", "scopes": ["invoke:*"]}),
            400,
            "invalid_scope",
            "names its function",
        ),
        (
            json!({"name": "x", "scopes": ["read:*", "deploy:Bad"]}),
            400,
            "invalid_scope",
            "not a function name",
        ),
        (
            json!({"name": "x", "scopes": []}),
            400,
            "invalid_scope",
            "at least one scope",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "expires": "0s"}),
            400,
            "invalid_argument",
            "expires at once",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "expires": "2020-01-01T00:00:00Z"}),
            400,
            "invalid_argument",
            "has passed",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "expires": "soon"}),
            400,
            "invalid_argument",
            "invalid expiry `soon`",
        ),
        (
            json!({"name": "taken", "scopes": ["admin"]}),
            409,
            "token_exists",
            "a token named \"taken\" exists",
        ),
        (
            json!({"name": "bootstrap", "scopes": ["admin"]}),
            400,
            "invalid_name",
            "bootstrap",
        ),
        (
            json!({"name": "a b", "scopes": ["admin"]}),
            400,
            "invalid_name",
            "invalid token name",
        ),
        (
            json!({"name": "x", "scopes": ["admin"], "extra": 1}),
            400,
            "invalid_argument",
            "extra",
        ),
    ] {
        let msg = assert_error(post_json(&a, &a.token, "/v1/tokens", &body), status, code);
        assert!(msg.contains(says), "{body}: {msg}");
        assert_eq!(names(&a), ["taken"], "{body}");
    }
    let msg = assert_error(a.delete("/v1/tokens/nope"), 404, "token_not_found");
    assert!(msg.contains("\"nope\""), "{msg}");

    // The same through the CLI: one-line errors, nothing stored.
    for args in [
        &["--scope", "deploy"][..],
        &["--scope", "foo:bar"],
        &["--scope", "read:hello"],
        &["--scope", "admin", "--expires", "0s"],
        &["--scope", "admin", "--expires", "2020-01-01T00:00:00Z"],
        &["--scope", "admin", "--expires", "whenever"],
        &["--scope", "admin", "--name", "taken"],
    ] {
        let mut cmd = vec!["token", "create"];
        cmd.extend_from_slice(args);
        if !args.contains(&"--name") {
            cmd.extend_from_slice(&["--name", "cli"]);
        }
        fails(w.cli(&cmd));
        assert_eq!(names(&a), ["taken"], "{args:?}");
    }
    let err = fails(w.cli(&["token", "revoke", "nope"]));
    assert!(err.contains("no token named"), "{err}");
    // The audit log has the refusals, with their statuses.
    let refused = audit(&a)
        .iter()
        .filter(|e| e["path"] == "/v1/tokens" && e["status"] != 201)
        .count();
    assert_eq!(refused, 13 + 7);
}

#[test]
fn the_audit_log_names_who_wrote_and_never_a_token_or_a_secret() {
    let w = Wisp::start();
    let a = w.admin();
    let secret = "s3cret-value-Zq9";
    let query_secret = "query-secret-Xw4";
    let t = create(&a, "ci", &["deploy:hello"], None);

    // Writes by the token: a deploy whose query carries a value, a secret,
    // one refused; and a read, which is not audited.
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = a
        .http
        .post(format!("{}/v1/functions/hello", a.url))
        .bearer_auth(&t)
        .query(&[
            ("route", "/hello"),
            ("env", &format!("PASSWORD={query_secret}")),
        ])
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = a
        .http
        .put(format!("{}/v1/functions/hello/config", a.url))
        .bearer_auth(&t)
        .json(&json!({"values": {"API_KEY": secret}, "secret": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    forbidden(
        call(&a, &t, "DELETE", "/v1/functions/other", b""),
        "`deploy:other`",
    );
    assert_eq!(
        call(&a, &t, "GET", "/v1/functions/hello", b"").status(),
        200
    );
    // A write with an unknown token is not the audit log's (401).
    assert_eq!(
        call(&a, "wisp_bad", "DELETE", "/v1/functions/hello", b"").status(),
        401
    );
    ok(w.cli(&["token", "revoke", "ci"]));

    let entries = audit(&a);
    let seen: Vec<(String, String, String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        seen,
        [
            (s("bootstrap"), s("POST"), s("/v1/tokens"), 201),
            (s("ci"), s("POST"), s("/v1/functions/hello"), 201),
            (s("ci"), s("PUT"), s("/v1/functions/hello/config"), 200),
            (s("ci"), s("DELETE"), s("/v1/functions/other"), 403),
            (s("bootstrap"), s("DELETE"), s("/v1/tokens/ci"), 200),
        ]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for e in &entries {
        let at = e["at_ms"].as_u64().unwrap();
        assert!(at <= now && at + 60_000 > now, "{e}");
    }

    // The CLI: a table, since an hour ago; JSON; a future `since` is empty.
    let table = ok(w.cli(&["audit", "--since", "1h"]));
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 1 + 5, "{table}");
    assert!(
        table.contains("ci") && table.contains("/v1/functions/hello/config"),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&ok(w.cli(&["audit", "--json", "--limit", "2"]))).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 2);
    assert_eq!(json["entries"][1]["path"], "/v1/tokens/ci");
    assert_eq!(
        ok(w.cli(&["audit", "--since", "2999-01-01T00:00:00Z"])),
        "no admin writes\n"
    );
    let err = fails(w.cli(&["audit", "--since", "someday"]));
    assert!(err.contains("since must be"), "{err}");

    // No token, hash or secret anywhere: the audit log (as the API and the
    // CLI show it) and the host's log.
    let everything = format!(
        "{}\n{table}\n{}",
        a.get("/v1/audit").text().unwrap(),
        w.log_text()
    );
    for leak in [secret, query_secret, &t, &t[5..], &a.token] {
        assert!(!everything.contains(leak), "{leak} leaked:\n{everything}");
    }
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(t.as_bytes()));
    assert!(!everything.contains(&hash));
}
