//! Per-function rate limits (`--rate-limit`, 429 `rate_limited` with
//! `Retry-After`): set at deploy, kept by later deploys, shown by `wisp
//! info`, bad settings refused with nothing stored.

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
