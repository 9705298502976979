//! Per-function rate limits (`--rate-limit`, 429 `rate_limited` with
//! `Retry-After`), CORS answered by the host (`--cors-origin`), and
//! host-based routing (`--host`): set at deploy, kept by later deploys,
//! shown by `wisp info`, bad settings refused with nothing stored.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// The sum of the samples of `name` labelled `function="{function}"`.
fn function_metric(w: &Wisp, name: &str, function: &str) -> f64 {
    let text = block_on(w.admin().api.metrics()).unwrap();
    let label = format!("function=\"{function}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter(|l| l.contains(&label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn hello() -> String {
    guest("hello").to_str().unwrap().to_string()
}

fn echo() -> String {
    guest("echo").to_str().unwrap().to_string()
}

fn info_json(w: &Wisp, name: &str) -> Value {
    w.admin()
        .get(&format!("/v1/functions/{name}"))
        .json()
        .unwrap()
}

/// `status` for each of `n` quick GETs of `path`, sent in order on one
/// client.
fn burst(w: &Wisp, path: &str, n: usize) -> Vec<reqwest::blocking::Response> {
    let http = client();
    (0..n)
        .map(|_| http.get(format!("{}{path}", w.data_url)).send().unwrap())
        .collect()
}

#[test]
fn rate_limit_refuses_past_the_burst_then_serves_again() {
    let w = Wisp::start();
    let out = ok(w.cli(&[
        "deploy",
        "r",
        &hello(),
        "--route",
        "/r",
        "--rate-limit",
        "5/s",
    ]));
    assert!(out.contains("deployed r"), "{out}");
    let info = ok(w.cli(&["info", "r"]));
    assert!(info.contains("rate limit      5/s, burst 5\n"), "{info}");
    let json = info_json(&w, "r");
    assert_eq!(
        json["limits"]["rate_limit"],
        serde_json::json!({"requests": 5, "period_s": 1, "burst": 5})
    );
    let before = function_metric(&w, "wisp_invocations_total", "r");

    let answers = burst(&w, "/r", 20);
    let ok_count = answers.iter().filter(|r| r.status() == 200).count();
    let refused: Vec<_> = answers.into_iter().filter(|r| r.status() == 429).collect();
    assert!(ok_count >= 5, "the burst is served: {ok_count}");
    assert!(!refused.is_empty(), "some refused");
    assert_eq!(ok_count + refused.len(), 20);
    let n_refused = refused.len();
    for r in refused.into_iter().take(1) {
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "{retry}");
        let msg = assert_error(r, 429, "rate_limited");
        assert!(msg.contains("rate limit of 5 requests per second"), "{msg}");
    }
    // Counted; the refused requests never reached the function.
    assert_eq!(
        function_metric(&w, "wisp_rate_limited_total", "r"),
        n_refused as f64
    );
    assert_eq!(
        function_metric(&w, "wisp_invocations_total", "r") - before,
        ok_count as f64
    );

    // After a quiet second, served again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(w.get("/r").status(), 200);

    // A later deploy without the flag keeps it (and the tokens spent).
    ok(w.cli(&["deploy", "r", &hello()]));
    let json = info_json(&w, "r");
    assert_eq!(json["active_version"], 2);
    assert_eq!(json["limits"]["rate_limit"]["requests"], 5);
    let answers = burst(&w, "/r", 20);
    assert!(answers.iter().any(|r| r.status() == 429));

    // A burst of its own; then `none` removes it.
    ok(w.cli(&["deploy", "r", &hello(), "--rate-limit", "1/m,burst=3"]));
    let info = ok(w.cli(&["info", "r"]));
    assert!(info.contains("rate limit      1/m, burst 3\n"), "{info}");
    ok(w.cli(&["deploy", "r", &hello(), "--rate-limit", "none"]));
    let info = ok(w.cli(&["info", "r"]));
    assert!(info.contains("rate limit      none\n"), "{info}");
    assert!(info_json(&w, "r")["limits"].get("rate_limit").is_none());
    let answers = burst(&w, "/r", 20);
    assert!(answers.iter().all(|r| r.status() == 200));
}

#[test]
fn a_slow_rate_says_when_to_retry() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = a.deploy("h", &wasm, &[("route", "/h"), ("rate_limit", "2/h")]);
    assert_eq!(r.status(), 201);
    let answers = burst(&w, "/h", 3);
    assert_eq!(answers[0].status(), 200);
    let last = answers.into_iter().nth(2).unwrap();
    let retry: u64 = last.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One token per 30 minutes.
    assert!((1700..=1800).contains(&retry), "{retry}");
    assert_error(last, 429, "rate_limited");
}

#[test]
fn bad_rate_limits_are_refused_and_nothing_is_stored() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = a.deploy("b", &wasm, &[("route", "/b"), ("rate_limit", "10/s")]);
    assert_eq!(r.status(), 201);
    for (bad, why) in [
        ("0/s", "is 0"),
        ("abc", "no period"),
        ("10/fortnight", "unknown period \"fortnight\""),
        ("10/s,burst=0", "burst is 0"),
    ] {
        let msg = assert_error(
            a.deploy("b", &wasm, &[("rate_limit", bad)]),
            400,
            "invalid_argument",
        );
        assert!(msg.contains(why), "{bad}: {msg}");
        // A new function is not created either.
        assert_error(
            a.deploy("new", &wasm, &[("rate_limit", bad)]),
            400,
            "invalid_argument",
        );
    }
    let err = fails(w.cli(&["deploy", "b", &hello(), "--rate-limit", "10/fortnight"]));
    assert!(err.contains("unknown period"), "{err}");
    let json = info_json(&w, "b");
    assert_eq!(json["active_version"], 1, "nothing stored");
    assert_eq!(json["limits"]["rate_limit"]["requests"], 10);
    assert_error(a.get("/v1/functions/new"), 404, "function_not_found");
}

/// A request on the data plane with `headers`.
fn send(
    w: &Wisp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut req = client().request(method, format!("{}{path}", w.data_url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn preflight(w: &Wisp, path: &str, origin: &str) -> reqwest::blocking::Response {
    send(
        w,
        reqwest::Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, x-token"),
        ],
    )
}

fn header(r: &reqwest::blocking::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn cors_preflights_are_answered_by_the_host() {
    let w = Wisp::start();
    ok(w.cli(&[
        "deploy",
        "c",
        &echo(),
        "--route",
        "/c/*",
        "--cors-origin",
        "https://app.example.com",
        "--cors-origin",
        "http://localhost:3000",
        "--cors-credentials",
    ]));
    let info = ok(w.cli(&["info", "c"]));
    assert!(
        info.contains(
            "cors            https://app.example.com, http://localhost:3000 (with credentials)\n"
        ),
        "{info}"
    );
    let before = function_metric(&w, "wisp_invocations_total", "c");

    // From a listed origin: 204 with the headers, the function not run.
    let r = preflight(&w, "/c/items", "https://app.example.com");
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let methods = header(&r, "access-control-allow-methods").unwrap();
    assert!(methods.contains("PUT"), "{methods}");
    assert_eq!(
        header(&r, "access-control-allow-headers").as_deref(),
        Some("content-type, x-token")
    );
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(
        header(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    // From another origin: 403, no allow headers.
    let r = preflight(&w, "/c/items", "https://evil.example.com");
    assert!(header(&r, "access-control-allow-origin").is_none());
    let msg = assert_error(r, 403, "cors_origin_not_allowed");
    assert!(msg.contains("https://evil.example.com"), "{msg}");
    // Not a route of the function: 404 as before.
    assert_error(
        preflight(&w, "/elsewhere", "https://app.example.com"),
        404,
        "route_not_found",
    );
    assert_eq!(
        function_metric(&w, "wisp_invocations_total", "c"),
        before,
        "no preflight reached the function"
    );

    // An actual request from a listed origin: marked; from another: not.
    let r = send(
        &w,
        reqwest::Method::GET,
        "/c/items",
        &[("origin", "http://localhost:3000")],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(
        header(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(header(&r, "vary").unwrap().contains("Origin"));
    let r = send(
        &w,
        reqwest::Method::GET,
        "/c/items",
        &[("origin", "https://evil.example.com")],
    );
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    // An OPTIONS that is not a preflight still reaches the function.
    let r = send(&w, reqwest::Method::OPTIONS, "/c/items", &[]);
    let echoed: Value = r.json().unwrap();
    assert_eq!(echoed["method"], "OPTIONS");
    assert_eq!(
        function_metric(&w, "wisp_invocations_total", "c"),
        before + 3.0
    );

    // Kept by a later deploy; `none` removes it: OPTIONS reach the function.
    ok(w.cli(&["deploy", "c", &echo()]));
    let json = info_json(&w, "c");
    assert_eq!(json["cors"]["origins"][0], "https://app.example.com");
    assert_eq!(json["cors"]["credentials"], true);
    assert_eq!(
        preflight(&w, "/c/items", "https://app.example.com").status(),
        204
    );
    ok(w.cli(&["deploy", "c", &echo(), "--cors-origin", "none"]));
    assert!(info_json(&w, "c").get("cors").is_none());
    let r = preflight(&w, "/c/items", "https://app.example.com");
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    let echoed: Value = r.json().unwrap();
    assert_eq!(echoed["method"], "OPTIONS");
}

#[test]
fn cors_star_answers_any_origin() {
    let w = Wisp::start();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = w
        .admin()
        .deploy("s", &wasm, &[("route", "/s"), ("cors_origin", "*")]);
    assert_eq!(r.status(), 201);
    let r = preflight(&w, "/s", "https://anyone.example.com");
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&r, "access-control-allow-credentials").is_none());
    let r = send(
        &w,
        reqwest::Method::GET,
        "/s",
        &[("origin", "https://anyone.example.com")],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    // Without CORS settings, no headers are added.
    w.admin().deploy_guest("plain", "hello", &["/plain"]);
    let r = send(
        &w,
        reqwest::Method::GET,
        "/plain",
        &[("origin", "https://anyone.example.com")],
    );
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "vary").is_none());
}

#[test]
fn bad_cors_settings_are_refused_and_nothing_is_stored() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = a.deploy(
        "b",
        &wasm,
        &[("route", "/b"), ("cors_origin", "https://ok.example.com")],
    );
    assert_eq!(r.status(), 201);
    for (query, why) in [
        (vec![("cors_origin", "example.com")], "no scheme://"),
        (vec![("cors_origin", "https://a.com/path")], "no path"),
        (vec![("cors_origin", "https://a.com:99999")], "port"),
        (vec![("cors_origin", "null")], "scheme://host[:port]"),
        (
            vec![("cors_origin", "*"), ("cors_credentials", "true")],
            "cannot be used with credentials",
        ),
        (
            vec![("cors_origin", "none"), ("cors_credentials", "true")],
            "needs CORS origins",
        ),
        (
            vec![("cors_origin", "none"), ("cors_origin", "https://a.com")],
            "none",
        ),
    ] {
        let msg = assert_error(a.deploy("b", &wasm, &query), 400, "invalid_argument");
        assert!(msg.contains(why), "{query:?}: {msg}");
    }
    let err = fails(w.cli(&["deploy", "b", &hello(), "--cors-origin", "ftp//x"]));
    assert!(err.contains("scheme://host[:port]"), "{err}");
    let json = info_json(&w, "b");
    assert_eq!(json["active_version"], 1, "nothing stored");
    assert_eq!(json["cors"]["origins"][0], "https://ok.example.com");
    assert_eq!(json["cors"]["credentials"], false);
}

#[test]
fn host_routing_serves_several_sites_on_one_listener() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("echo")).unwrap();
    let hello_wasm = std::fs::read(guest("hello")).unwrap();
    ok(w.cli(&[
        "deploy",
        "site-a",
        &echo(),
        "--route",
        "/*",
        "--host",
        "A.example.com",
    ]));
    let r = a.deploy(
        "site-b",
        &hello_wasm,
        &[
            ("route", "/*"),
            ("host", "b.example.com"),
            ("host", "*.b.test"),
        ],
    );
    assert_eq!(r.status(), 201);
    let r = a.deploy("fallback", &wasm, &[("route", "/*")]);
    assert_eq!(r.status(), 201, "a host-less route does not conflict");

    let get = |host: &str, path: &str| send(&w, reqwest::Method::GET, path, &[("host", host)]);
    // site-a (echo) answers JSON; site-b (hello) text.
    let r = get("a.example.com:8080", "/x");
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().unwrap();
    assert_eq!(echoed["path"], "/x");
    assert_eq!(
        get("B.example.com", "/y").text().unwrap(),
        "hello from wisp at /y"
    );
    assert_eq!(
        get("www.b.test", "/z").text().unwrap(),
        "hello from wisp at /z"
    );
    // Any other host: the fallback.
    assert_eq!(
        function_metric(&w, "wisp_invocations_total", "fallback"),
        0.0
    );
    let r = get("c.example.com", "/x");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["path"], "/x");
    assert_eq!(
        function_metric(&w, "wisp_invocations_total", "fallback"),
        1.0
    );
    assert_eq!(function_metric(&w, "wisp_invocations_total", "site-a"), 1.0);

    // Same route and same host: a conflict; nothing stored.
    let msg = assert_error(
        a.deploy(
            "site-c",
            &hello_wasm,
            &[("route", "/*"), ("host", "a.example.com")],
        ),
        409,
        "route_conflict",
    );
    assert!(msg.contains("site-a"), "{msg}");
    assert_error(a.get("/v1/functions/site-c"), 404, "function_not_found");
    // Shown with the host; kept by a later deploy.
    let list = ok(w.cli(&["list"]));
    assert!(list.contains("a.example.com/*"), "{list}");
    let info = ok(w.cli(&["info", "site-b"]));
    assert!(
        info.contains("routes          b.example.com/*, *.b.test/*\n"),
        "{info}"
    );
    ok(w.cli(&["deploy", "site-a", &echo()]));
    assert_eq!(info_json(&w, "site-a")["hosts"][0], "a.example.com");
    assert_eq!(get("a.example.com", "/k").status(), 200);
    assert_eq!(function_metric(&w, "wisp_invocations_total", "site-a"), 2.0);

    // Without a fallback, an unknown host gets 404.
    ok(w.cli(&["delete", "fallback"]));
    assert_error(get("c.example.com", "/x"), 404, "route_not_found");
    // `none` makes site-a serve any host again.
    let r = a.deploy("site-a", &wasm, &[("host", "none")]);
    assert_eq!(r.status(), 201);
    assert!(info_json(&w, "site-a").get("hosts").is_none());
    assert_eq!(get("c.example.com", "/x").status(), 200);
}

#[test]
fn bad_hosts_are_refused_and_nothing_is_stored() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("hello")).unwrap();
    let r = a.deploy("h", &wasm, &[("route", "/h"), ("host", "ok.example.com")]);
    assert_eq!(r.status(), 201);
    for (host, why) in [
        ("https://a.com", "not a URL"),
        ("a.com:8080", "no port"),
        ("a..com", "not a DNS name"),
        ("a.com/x", "not a DNS name"),
    ] {
        let msg = assert_error(
            a.deploy("h", &wasm, &[("host", host)]),
            400,
            "invalid_argument",
        );
        assert!(msg.contains(why), "{host}: {msg}");
    }
    let err = fails(w.cli(&["deploy", "h", &hello(), "--host", "bad host"]));
    assert!(err.contains("not a DNS name"), "{err}");
    let json = info_json(&w, "h");
    assert_eq!(json["active_version"], 1, "nothing stored");
    assert_eq!(json["hosts"][0], "ok.example.com");
}

#[test]
fn host_routing_reads_the_http2_authority() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("echo")).unwrap();
    let hello_wasm = std::fs::read(guest("hello")).unwrap();
    let r = a.deploy(
        "by-ip",
        &hello_wasm,
        &[("route", "/"), ("host", "127.0.0.1")],
    );
    assert_eq!(r.status(), 201);
    let r = a.deploy("by-name", &wasm, &[("route", "/"), ("host", "localhost")]);
    assert_eq!(r.status(), 201, "the same route on another host");
    // h2c: the host is the request's :authority, not a Host header.
    let h2c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c.get(format!("{}/", w.data_url)).send().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().unwrap(), "hello from wisp at /");
    let by_name = w.data_url.replace("127.0.0.1", "localhost");
    let r = h2c.get(format!("{by_name}/")).send().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.json::<Value>().unwrap()["path"], "/");
}
