//! Config and secrets through the admin API and `wisp config`: round trips,
//! masking (a secret never comes back, in any answer, CLI output or the
//! host's log), every bad input refused with nothing stored, changes seen
//! by the next invocation without a redeploy, deletion with the function.

use serde_json::{Value, json};

use crate::harness::*;

const SECRET: &str = "hunter2-very-secret-value";

fn put_config(a: &Admin, name: &str, body: &Value) -> reqwest::blocking::Response {
    put_raw(a, name, serde_json::to_vec(body).unwrap())
}

fn put_raw(a: &Admin, name: &str, body: Vec<u8>) -> reqwest::blocking::Response {
    a.http
        .put(format!("{}/v1/functions/{name}/config", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap()
}

fn unset(a: &Admin, name: &str, key: &str) -> reqwest::blocking::Response {
    a.http
        .delete(format!("{}/v1/functions/{name}/config/{key}", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap()
}

fn entries(a: &Admin, name: &str) -> Value {
    let resp = a.get(&format!("/v1/functions/{name}/config"));
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(!text.contains(SECRET), "a secret came back: {text}");
    serde_json::from_str::<Value>(&text).unwrap()["entries"].clone()
}

fn ok_text(resp: reqwest::blocking::Response) -> Value {
    let status = resp.status();
    let text = resp.text().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(SECRET), "a secret came back: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn settings_and_secrets_round_trip_masked() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    assert_eq!(entries(&a, "f"), json!([]));

    let list = ok_text(put_config(
        &a,
        "f",
        &json!({"values": {"DB_URL": "postgres://x", "mode": "fast"}}),
    ));
    assert_eq!(list["name"], "f");
    assert_eq!(
        list["entries"][0],
        json!({"key": "DB_URL", "value": "postgres://x", "secret": false})
    );
    ok_text(put_config(
        &a,
        "f",
        &json!({"values": {"API_KEY": SECRET}, "secret": true}),
    ));
    let e = entries(&a, "f");
    assert_eq!(
        e,
        json!([
            {"key": "API_KEY", "value": "********", "secret": true},
            {"key": "DB_URL", "value": "postgres://x", "secret": false},
            {"key": "mode", "value": "fast", "secret": false},
        ])
    );
    // A key is a setting or a secret: setting it plainly replaces the secret.
    ok_text(put_config(
        &a,
        "f",
        &json!({"values": {"mode": "slow"}, "secret": true}),
    ));
    assert_eq!(
        entries(&a, "f")[2],
        json!({"key": "mode", "value": "********", "secret": true})
    );
    ok_text(put_config(&a, "f", &json!({"values": {"mode": "slow"}})));
    assert_eq!(
        entries(&a, "f")[2],
        json!({"key": "mode", "value": "slow", "secret": false})
    );

    let list = ok_text(unset(&a, "f", "mode"));
    assert_eq!(list["entries"].as_array().unwrap().len(), 2);
    let msg = assert_error(unset(&a, "f", "mode"), 404, "config_key_not_found");
    assert!(msg.contains("mode"), "{msg}");

    // Function info and other answers never carry config values.
    let info = a.get("/v1/functions/f").text().unwrap();
    assert!(!info.contains(SECRET));
    assert!(
        !w.log_text().contains(SECRET),
        "a secret reached the host log"
    );

    let doc: Value = a.get("/v1/openapi.json").json().unwrap();
    assert!(doc["paths"]["/v1/functions/{name}/config"]["put"].is_object());
    assert!(doc["paths"]["/v1/functions/{name}/config/{key}"]["delete"].is_object());
}

#[test]
fn bad_inputs_answer_400_and_store_nothing() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "hello", &["/f"]);
    ok_text(put_config(&a, "f", &json!({"values": {"KEEP": "1"}})));
    let stored = entries(&a, "f");

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"values": {"a b": "1"}}), "invalid_config_key", "a b"),
        (json!({"values": {"": "1"}}), "invalid_config_key", "A-Z"),
        (json!({"values": {"é": "1"}}), "invalid_config_key", "A-Z"),
        (
            json!({"values": {"k".repeat(129): "1"}}),
            "invalid_config_key",
            "128",
        ),
        // One bad pair refuses the good ones beside it.
        (
            json!({"values": {"GOOD": "1", "bad/key": "2"}}),
            "invalid_config_key",
            "bad/key",
        ),
        (
            json!({"values": {"BIG": "v".repeat(64 * 1024 + 1)}}),
            "config_value_too_large",
            "65536",
        ),
        (
            json!({"values": {"NUL": format!("{SECRET}\u{0}")}, "secret": true}),
            "invalid_config_value",
            "NUL",
        ),
        (json!({"values": {}}), "invalid_argument", "no values"),
        (
            json!({"values": {"N": 12345}}),
            "invalid_argument",
            "string values",
        ),
        (
            json!({"values": {"N": "1"}, "extra": true}),
            "invalid_argument",
            "JSON",
        ),
        (json!({"secret": true}), "invalid_argument", "JSON"),
    ];
    for (body, code, needle) in cases {
        let msg = assert_error(put_config(&a, "f", &body), 400, code);
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(
            !msg.contains(SECRET) && !msg.contains("12345"),
            "a value leaked: {msg}"
        );
        assert_eq!(entries(&a, "f"), stored, "{body} changed the config");
    }
    let msg = assert_error(
        put_raw(
            &a,
            "f",
            format!("{{\"values\": {{\"S\": \"{SECRET}").into_bytes(),
        ),
        400,
        "invalid_argument",
    );
    assert!(!msg.contains(SECRET), "{msg}");
    assert_error(
        put_raw(&a, "f", b"not json".to_vec()),
        400,
        "invalid_argument",
    );

    // At most 256 keys: 255 more fit beside KEEP, the 257th does not.
    let many: serde_json::Map<String, Value> =
        (0..256).map(|i| (format!("K{i:03}"), json!("v"))).collect();
    let msg = assert_error(
        put_config(&a, "f", &json!({"values": many})),
        400,
        "too_many_config_keys",
    );
    assert!(msg.contains("256") && msg.contains("257"), "{msg}");
    assert_eq!(entries(&a, "f"), stored);
    let fit: serde_json::Map<String, Value> =
        (0..255).map(|i| (format!("K{i:03}"), json!("v"))).collect();
    ok_text(put_config(&a, "f", &json!({"values": fit})));
    assert_error(
        put_config(&a, "f", &json!({"values": {"ONE_MORE": "v"}})),
        400,
        "too_many_config_keys",
    );
    // Replacing an existing key still works at the limit.
    ok_text(put_config(&a, "f", &json!({"values": {"KEEP": "2"}})));
    assert_eq!(entries(&a, "f").as_array().unwrap().len(), 256);

    assert_error(unset(&a, "f", "a%20b"), 400, "invalid_config_key");
    assert_error(unset(&a, "f", "MISSING"), 404, "config_key_not_found");
    // Unknown function: 404 for every call.
    assert_error(
        a.get("/v1/functions/nope/config"),
        404,
        "function_not_found",
    );
    assert_error(
        put_config(&a, "nope", &json!({"values": {"A": "1"}})),
        404,
        "function_not_found",
    );
    assert_error(unset(&a, "nope", "A"), 404, "function_not_found");
    let resp = client()
        .get(format!("{}/v1/functions/f/config", a.url))
        .send()
        .unwrap();
    assert_error(resp, 401, "unauthorized");
    assert!(
        !w.log_text().contains(SECRET),
        "a secret reached the host log"
    );
}

#[test]
fn config_changes_reach_the_next_invocation_and_go_with_the_function() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    assert_eq!(
        a.deploy(
            "m",
            &wasm,
            &[
                ("route", "/m/*"),
                ("env", "FROM_ENV=1"),
                ("config_env", "true")
            ]
        )
        .status(),
        201
    );
    let info: Value = a.get("/v1/functions/m").json().unwrap();
    assert_eq!(info["config_env"], true);
    let env = || -> Value { w.get("/m/env").json().unwrap() };
    assert_eq!(env()["FROM_ENV"], "1");
    assert!(env().get("GREETING").is_none());

    // No redeploy: the next request sees the settings; secrets never
    // become environment variables.
    ok_text(put_config(
        &a,
        "m",
        &json!({"values": {"GREETING": "hi", "FROM_ENV": "2"}}),
    ));
    ok_text(put_config(
        &a,
        "m",
        &json!({"values": {"TOKEN": SECRET}, "secret": true}),
    ));
    let e = env();
    assert_eq!(e["GREETING"], "hi");
    assert_eq!(e["FROM_ENV"], "2", "a setting wins over --env");
    assert!(e.get("TOKEN").is_none());
    ok_text(unset(&a, "m", "GREETING"));
    assert!(env().get("GREETING").is_none());
    assert_eq!(
        a.get("/v1/functions/m/versions")
            .json::<Vec<Value>>()
            .unwrap()
            .len(),
        1
    );

    // A redeploy keeps the config and config_env; deleting the function
    // removes its config, and the same name deployed again starts empty.
    assert_eq!(a.deploy("m", &wasm, &[]).status(), 201);
    assert_eq!(env()["FROM_ENV"], "2");
    assert_eq!(entries(&a, "m").as_array().unwrap().len(), 2);
    // Without config_env, settings stay out of the environment.
    assert_eq!(
        a.deploy("m", &wasm, &[("config_env", "false")]).status(),
        201
    );
    assert_eq!(env()["FROM_ENV"], "1");
    a.http
        .delete(format!("{}/v1/functions/m", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(a.get("/v1/functions/m/config"), 404, "function_not_found");
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    assert_eq!(entries(&a, "m"), json!([]));
    assert!(
        !w.log_text().contains(SECRET),
        "a secret reached the host log"
    );
}

#[test]
fn cli_set_list_unset_and_deploy_config_env() {
    let w = Wisp::start();
    let a = w.admin();
    let m = guest("misbehave");
    ok(w.cli(&[
        "deploy",
        "m",
        m.to_str().unwrap(),
        "--route",
        "/m/*",
        "--config-env",
    ]));

    let out = ok(w.cli(&["config", "set", "m", "A=1", "URL=http://x/?a=b"]));
    assert!(out.contains("A, URL"), "{out}");
    let out = ok(w.cli(&["config", "set", "m", &format!("TOKEN={SECRET}"), "--secret"]));
    assert!(
        out.contains("secret TOKEN") && !out.contains(SECRET),
        "{out}"
    );
    let out = ok(w.cli(&["config", "list", "m"]));
    assert!(!out.contains(SECRET), "{out}");
    assert!(
        out.contains("URL") && out.contains("http://x/?a=b"),
        "{out}"
    );
    let token_line = out.lines().find(|l| l.starts_with("TOKEN")).unwrap();
    assert!(
        token_line.contains("********") && token_line.contains("secret"),
        "{out}"
    );
    let json: Value = serde_json::from_str(&ok(w.cli(&["config", "list", "m", "--json"]))).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        w.get("/m/env").json::<Value>().unwrap()["URL"],
        "http://x/?a=b"
    );

    // Errors: one line, non-zero, nothing changed, no value shown.
    let err = fails(w.cli(&["config", "set", "m", "OK=1", "bad key=2"]));
    assert!(err.contains("bad key"), "{err}");
    let err = fails(w.cli(&["config", "set", "m", "OK=1", SECRET]));
    assert!(!err.contains(SECRET), "{err}");
    let err = fails(w.cli(&["config", "set", "nope", "A=1"]));
    assert!(err.contains("not found"), "{err}");
    let err = fails(w.cli(&["config", "unset", "m", "A", "MISSING"]));
    assert!(err.contains("MISSING"), "{err}");
    assert_eq!(
        entries(&a, "m").as_array().unwrap().len(),
        3,
        "a failed unset removed something"
    );

    let out = ok(w.cli(&["config", "unset", "m", "A", "TOKEN"]));
    assert!(out.contains("A, TOKEN"), "{out}");
    assert_eq!(
        entries(&a, "m"),
        json!([{"key": "URL", "value": "http://x/?a=b", "secret": false}])
    );
    let err = fails(w.cli(&["config", "list", "nope"]));
    assert!(err.contains("not found"), "{err}");
    assert!(
        !w.log_text().contains(SECRET),
        "a secret reached the host log"
    );
}

#[test]
fn guests_read_settings_and_secrets_of_their_own_function() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("c", "caps", &["/c/*"]);
    a.deploy_guest("d", "caps", &["/d/*"]);
    let read = |path: &str| -> Value { w.get(path).json().unwrap() };
    assert_eq!(read("/c/config/keys"), json!({"keys": []}));
    assert_eq!(read("/c/config/get?key=MODE"), json!({"value": null}));

    ok_text(put_config(&a, "c", &json!({"values": {"MODE": "fast"}})));
    ok_text(put_config(
        &a,
        "c",
        &json!({"values": {"TOKEN": SECRET}, "secret": true}),
    ));
    // The next invocation sees the change; the guest reads secrets too.
    assert_eq!(read("/c/config/get?key=MODE")["value"], "fast");
    assert_eq!(read("/c/config/get?key=TOKEN")["value"], SECRET);
    assert_eq!(read("/c/config/keys"), json!({"keys": ["MODE", "TOKEN"]}));
    // Another function's config is its own.
    assert_eq!(read("/d/config/keys"), json!({"keys": []}));

    ok_text(put_config(&a, "c", &json!({"values": {"MODE": "slow"}})));
    assert_eq!(read("/c/config/get?key=MODE")["value"], "slow");
    ok_text(unset(&a, "c", "MODE"));
    assert_eq!(read("/c/config/get?key=MODE")["value"], Value::Null);
    assert_eq!(read("/c/config/keys"), json!({"keys": ["TOKEN"]}));
    assert!(
        !w.log_text().contains(SECRET),
        "a secret reached the host log"
    );
}
