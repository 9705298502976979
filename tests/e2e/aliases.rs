//! Aliases and traffic splits: `wisp alias set NAME ALIAS VERSION
//! [--weight V=P] [--route R]`, the `wisp-alias` and `wisp-version`
//! request headers, the `wisp-version` response header, and what aliases
//! do to rollbacks, deletes and restarts.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::*;

/// Deploys `hello` as `f` twice (versions 1 and 2, 2 active), routed at
/// `/f`, with `extra` deploy flags on the second.
fn two_versions(w: &Wisp, extra: &[&str]) {
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();
    ok(w.cli(&["deploy", "f", hello, "--route", "/f"]));
    let mut args = vec!["deploy", "f", hello];
    args.extend_from_slice(extra);
    ok(w.cli(&args));
}

/// GETs `path` `n` times (one kept-alive connection) with `headers`;
/// counts the answers by their `wisp-version`.
fn versions_of(w: &Wisp, path: &str, headers: &[(&str, &str)], n: usize) -> BTreeMap<u64, usize> {
    let http = client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut req = http.get(format!("{}{path}", w.data_url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        let v: u64 = r.headers()["wisp-version"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        *counts.entry(v).or_default() += 1;
    }
    counts
}

fn aliases(w: &Wisp, name: &str) -> Value {
    w.admin()
        .get(&format!("/v1/functions/{name}/aliases"))
        .json()
        .unwrap()
}

fn put_alias(w: &Wisp, name: &str, alias: &str, body: Value) -> reqwest::blocking::Response {
    let a = w.admin();
    a.http
        .put(format!("{}/v1/functions/{name}/aliases/{alias}", a.url))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .unwrap()
}

#[test]
fn a_weighted_alias_splits_its_requests_and_survives_rollbacks_and_restarts() {
    let mut w = Wisp::start();
    two_versions(&w, &[]);
    // The function's own routes serve the active version, and say which.
    assert_eq!(versions_of(&w, "/f", &[], 20), BTreeMap::from([(2, 20)]));

    // `live` → 1, with 10% to 2, served at its own route.
    let out = ok(w.cli(&[
        "alias", "set", "f", "live", "1", "--weight", "2=10", "--route", "/live",
    ]));
    assert!(
        out.contains("f@live → 1 (90%), 2 (10%), routes /live"),
        "{out}"
    );
    let counts = versions_of(&w, "/live", &[], 2000);
    let to_2 = counts.get(&2).copied().unwrap_or(0);
    assert!(
        (140..=260).contains(&to_2),
        "10% ± 3% of 2000 expected, got {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 2000);
    // Selected by header on the function's own route too.
    let counts = versions_of(&w, "/f", &[("wisp-alias", "live")], 400);
    assert!(counts.get(&1).copied().unwrap_or(0) > 300, "{counts:?}");
    // The invocation counts carry the version.
    let metrics = block_on(w.admin().api.metrics()).unwrap();
    assert!(
        metrics.contains("function=\"f\",version=\"1\",status=\"200\"")
            && metrics.contains("function=\"f\",version=\"2\",status=\"200\""),
        "{metrics}"
    );

    // Listed by the CLI and shown by `wisp info`.
    let shown = ok(w.cli(&["info", "f"]));
    assert!(
        shown.contains("live → 1 (90%), 2 (10%) at /live"),
        "{shown}"
    );
    let list = ok(w.cli(&["alias", "list", "f"]));
    assert!(
        list.contains("live") && list.contains("1 (90%), 2 (10%)"),
        "{list}"
    );
    let info: Value = w.admin().get("/v1/functions/f").json().unwrap();
    assert_eq!(info["aliases"][0]["name"], "live", "{info}");
    assert_eq!(
        info["aliases"][0]["shares"],
        json!([{"version": 1, "percent": 90}, {"version": 2, "percent": 10}])
    );

    // Switched whole to version 2; its route kept.
    ok(w.cli(&["alias", "set", "f", "live", "2"]));
    assert_eq!(versions_of(&w, "/live", &[], 50), BTreeMap::from([(2, 50)]));
    // A rollback moves the function's routes, not the alias.
    ok(w.cli(&["rollback", "f"]));
    assert_eq!(versions_of(&w, "/f", &[], 20), BTreeMap::from([(1, 20)]));
    assert_eq!(versions_of(&w, "/live", &[], 20), BTreeMap::from([(2, 20)]));

    // Settings reach every version an alias serves.
    ok(w.cli(&["config", "set", "f", "GREETING=hi"]));
    assert_eq!(versions_of(&w, "/live", &[], 5), BTreeMap::from([(2, 5)]));

    // After a restart, the same.
    w.terminate();
    let mut w = w.restart_on(Opts::default());
    assert_eq!(versions_of(&w, "/live", &[], 20), BTreeMap::from([(2, 20)]));
    assert_eq!(versions_of(&w, "/f", &[], 20), BTreeMap::from([(1, 20)]));

    // A function with aliases is deleted only with --force.
    let e = fails(w.cli(&["delete", "f"]));
    assert!(
        e.contains("has aliases (live → 2)") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(w.get("/live").status(), 200);
    ok(w.cli(&["alias", "delete", "f", "live"]));
    assert_eq!(w.get("/live").status(), 404);
    assert_eq!(aliases(&w, "f"), json!([]));
    ok(w.cli(&["alias", "set", "f", "beta", "2", "--route", "/beta"]));
    ok(w.cli(&["delete", "f", "--force"]));
    assert_eq!(w.get("/beta").status(), 404);
    assert!(w.admin().functions().is_empty());
    w.terminate();
}

#[test]
fn a_version_is_pinned_only_when_the_function_allows_it() {
    let w = Wisp::start();
    two_versions(&w, &[]);
    let get = |headers: &[(&str, &str)]| {
        let mut req = client().get(format!("{}/f", w.data_url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap()
    };
    let m = assert_error(get(&[("wisp-version", "1")]), 400, "version_pinning_off");
    assert!(m.contains("--version-pinning"), "{m}");

    // Allowed (the flag is kept by later deploys, like other settings).
    let hello = guest("hello");
    ok(w.cli(&["deploy", "f", hello.to_str().unwrap(), "--version-pinning"]));
    ok(w.cli(&["deploy", "f", hello.to_str().unwrap()]));
    let info: Value = w.admin().get("/v1/functions/f").json().unwrap();
    assert_eq!(info["version_pinning"], true, "{info}");
    assert_eq!(info["active_version"], 4);
    ok(w.cli(&["alias", "set", "f", "stable", "1"]));
    for (pin, expected) in [("4", "4"), ("1", "1")] {
        let r = get(&[("wisp-version", pin)]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["wisp-version"], expected);
    }
    // Version 2 exists but serves nowhere; 9 does not exist.
    for pin in ["2", "9", "x"] {
        let m = assert_error(get(&[("wisp-version", pin)]), 404, "version_not_serving");
        assert!(m.contains("active one or one an alias points to"), "{m}");
    }
    let m = assert_error(get(&[("wisp-alias", "nope")]), 404, "alias_not_found");
    assert!(m.contains("\"nope\""), "{m}");
    let r = get(&[("wisp-alias", "stable")]);
    assert_eq!(r.headers()["wisp-version"], "1");
}

#[test]
fn bad_aliases_are_refused_and_nothing_changes() {
    let w = Wisp::start();
    two_versions(&w, &[]);
    w.admin().deploy_guest("g", "hello", &["/g"]);
    ok(w.cli(&["alias", "set", "f", "live", "1", "--route", "/live"]));
    let before = aliases(&w, "f");

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"version": 1, "weights": {"2": 100}}),
            400,
            "invalid_argument",
            "from 1 to 99",
        ),
        (
            json!({"version": 1, "weights": {"2": 0}}),
            400,
            "invalid_argument",
            "from 1 to 99",
        ),
        (
            json!({"version": 1, "weights": {"1": 10}}),
            400,
            "invalid_argument",
            "own version",
        ),
        (
            json!({"version": 9}),
            404,
            "version_not_found",
            "no version 9",
        ),
        (
            json!({"version": 1, "weights": {"7": 10}}),
            404,
            "version_not_found",
            "no version 7",
        ),
        (
            json!({"version": 1, "routes": ["/g"]}),
            409,
            "route_conflict",
            "function \"g\"",
        ),
        (
            json!({"version": 1, "routes": ["/f"]}),
            409,
            "route_conflict",
            "function \"f\"",
        ),
        (
            json!({"version": 1, "routes": ["nope"]}),
            400,
            "invalid_route",
            "nope",
        ),
        (
            json!({"version": 1, "extra": 1}),
            400,
            "invalid_argument",
            "extra",
        ),
    ];
    for (body, status, code, words) in cases {
        let m = assert_error(put_alias(&w, "f", "live", body.clone()), status, code);
        assert!(m.contains(words), "{body}: {m}");
        assert_eq!(aliases(&w, "f"), before, "after {body}");
    }
    let m = assert_error(
        put_alias(&w, "f", "Bad_Name", json!({"version": 1})),
        400,
        "invalid_name",
    );
    assert!(m.contains("alias name"), "{m}");
    assert_error(
        put_alias(&w, "nope", "live", json!({"version": 1})),
        404,
        "function_not_found",
    );
    // Another alias may not take a route an alias serves.
    let m = assert_error(
        put_alias(&w, "f", "beta", json!({"version": 2, "routes": ["/live"]})),
        409,
        "route_conflict",
    );
    assert!(m.contains("alias \"live\" of function \"f\""), "{m}");
    // Nor a deploy.
    let hello = std::fs::read(guest("hello")).unwrap();
    assert_error(
        w.admin().deploy("h", &hello, &[("route", "/live")]),
        409,
        "route_conflict",
    );
    assert_eq!(aliases(&w, "f"), before);

    // The CLI's own checks.
    let e = fails(w.cli(&[
        "alias", "set", "f", "live", "1", "--weight", "2=60", "--weight", "3=40",
    ]));
    assert!(e.contains("no version 3") || e.contains("100%"), "{e}");
    let out = w.cli(&["alias", "set", "f", "live", "1", "--weight", "2"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("expected VERSION=PERCENT"), "{e}");
    let e = fails(w.cli(&["alias", "delete", "f", "nope"]));
    assert!(e.contains("no alias \"nope\""), "{e}");
    assert_eq!(aliases(&w, "f"), before);
}
