//! Admission control: a function's `--concurrency`, its bounded `--queue`
//! and `--queue-timeout` (429 `function_busy` past them, with
//! `Retry-After`), the host's queue (`--host-queue`, 503 `overloaded`),
//! the metrics that count waits and refusals, settings kept by later
//! deploys and shown by `wisp info`, bad settings refused with nothing
//! stored, and event deliveries that wait for a slot instead of being
//! postponed.
//!
//! The slow requests are tests/guests/misbehave's `/sleep?ms=N`; the slow
//! event handlers tests/guests/event-counter (setting `sleep_ms`) and
//! tests/guests/event-handler (payload `sleep:MS`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::{cli_ok, counter, event, publish, published_id, statuses, wait_until};
use crate::harness::*;

/// The sum of the samples of `name` whose labels include every pair of
/// `labels` (`wisp_function_rejections_total`, `[("function", "m"),
/// ("reason", "queue_full")]`).
fn metric(w: &Wisp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = block_on(w.admin().api.metrics()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn function_metric(w: &Wisp, name: &str, function: &str) -> f64 {
    metric(w, name, &[("function", function)])
}

fn rejections(w: &Wisp, function: &str, reason: &str) -> f64 {
    metric(
        w,
        "wisp_function_rejections_total",
        &[("function", function), ("reason", reason)],
    )
}

/// Sends a GET to the data plane on a thread of its own; the thread
/// answers the status and body.
pub(crate) fn spawn_get(w: &Wisp, path: &str) -> std::thread::JoinHandle<(u16, String)> {
    let url = format!("{}{path}", w.data_url);
    std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    })
}

fn misbehave_path() -> String {
    guest("misbehave").to_str().unwrap().to_string()
}

fn info_json(w: &Wisp, name: &str) -> Value {
    serde_json::from_str(&ok(w.cli(&["info", name, "--json"]))).unwrap()
}

#[test]
fn six_requests_wait_their_turn_and_the_seventh_gets_429_with_retry_after() {
    let w = Wisp::start();
    let wasm = misbehave_path();
    ok(w.cli(&[
        "deploy",
        "m",
        &wasm,
        "--route",
        "/m/*",
        "--concurrency",
        "2",
        "--queue",
        "4",
    ]));
    // A later deploy that names none of them keeps them.
    ok(w.cli(&["deploy", "m", &wasm, "--timeout", "20s"]));

    let slow: Vec<_> = (0..6).map(|_| spawn_get(&w, "/m/sleep?ms=1500")).collect();
    wait_until(
        "two running and four waiting",
        Duration::from_secs(10),
        || function_metric(&w, "wisp_function_queue_depth", "m") == 4.0,
    );
    let r = w.get("/m/ok");
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers().contains_key("wisp-invocation-id"));
    let msg = assert_error(r, 429, "function_busy");
    assert!(
        msg.contains("2 invocations in flight") && msg.contains("queue of 4 is full"),
        "{msg}"
    );
    for s in slow {
        assert_eq!(s.join().unwrap(), (200, "slept".to_string()));
    }

    assert_eq!(
        function_metric(&w, "wisp_function_queue_waits_total", "m"),
        4.0
    );
    assert_eq!(
        function_metric(&w, "wisp_function_queue_wait_seconds_count", "m"),
        4.0
    );
    assert_eq!(function_metric(&w, "wisp_function_queue_depth", "m"), 0.0);
    assert_eq!(rejections(&w, "m", "queue_full"), 1.0);
    assert_eq!(rejections(&w, "m", "queue_timeout"), 0.0);
    // The refusal is counted with its status like any invocation.
    assert_eq!(
        metric(
            &w,
            "wisp_invocations_total",
            &[("function", "m"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(w.get("/m/ok").status(), 200);
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_429_and_waiting_does_not_eat_the_timeout() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let r = a.deploy(
        "m",
        &wasm,
        &[
            ("route", "/m/*"),
            ("concurrency", "1"),
            ("queue", "2"),
            ("queue_timeout_ms", "300"),
        ],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());

    let holder = spawn_get(&w, "/m/sleep?ms=2500");
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let start = Instant::now();
    let r = w.get("/m/ok");
    let took = start.elapsed();
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = assert_error(r, 429, "function_busy");
    assert!(msg.contains("queue timeout of 300 ms"), "{msg}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    assert_eq!(holder.join().unwrap().0, 200);
    assert_eq!(rejections(&w, "m", "queue_timeout"), 1.0);
    assert_eq!(
        function_metric(&w, "wisp_function_queue_waits_total", "m"),
        1.0
    );
    assert_eq!(function_metric(&w, "wisp_function_queue_depth", "m"), 0.0);

    // With a timeout of 1 s: the second request waits ~700 ms, then runs
    // 700 ms, 1.4 s after it arrived, and still succeeds (the deadline
    // starts when the slot is given).
    let r = a.deploy(
        "m",
        &wasm,
        &[("timeout_ms", "1000"), ("queue_timeout_ms", "5000")],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let first = spawn_get(&w, "/m/sleep?ms=700");
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let start = Instant::now();
    let r = w.get("/m/sleep?ms=700");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    assert!(start.elapsed() > Duration::from_millis(1000));
    assert_eq!(first.join().unwrap().0, 200);
}

#[test]
fn a_client_that_goes_away_while_waiting_gives_its_place_back() {
    let w = Wisp::start();
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let r = w.admin().deploy(
        "m",
        &wasm,
        &[("route", "/m/*"), ("concurrency", "1"), ("queue", "1")],
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let holder = spawn_get(&w, "/m/sleep?ms=4000");
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    // Waits in the queue, then gives up after 500 ms.
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(
        impatient
            .get(format!("{}/m/ok", w.data_url))
            .send()
            .is_err()
    );
    wait_until("its place to be given back", Duration::from_secs(5), || {
        function_metric(&w, "wisp_function_queue_depth", "m") == 0.0
    });
    // The place is free again: the next one waits (it is not refused as
    // past the queue) and is served once the slot is.
    let patient = spawn_get(&w, "/m/ok");
    wait_until("the next one to wait", Duration::from_secs(5), || {
        function_metric(&w, "wisp_function_queue_depth", "m") == 1.0
    });
    assert_eq!(holder.join().unwrap().0, 200);
    assert_eq!(patient.join().unwrap(), (200, "ok".to_string()));
    assert_eq!(rejections(&w, "m", "queue_full"), 0.0);
    assert_eq!(
        function_metric(&w, "wisp_function_queue_waits_total", "m"),
        2.0
    );
}

#[test]
fn the_host_queue_waits_then_answers_503_with_retry_after() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-in-flight")
            .arg("1")
            .arg("--host-queue")
            .arg("1")
            .env("WISP_HOST_QUEUE_TIMEOUT", "1500ms"),
    );
    let a = w.admin();
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    a.deploy_guest("hello", "hello", &["/hello/*"]);
    a.deploy_guest("hi", "hello", &["/hi/*"]);

    // The slot comes free within the wait: the queued request is served.
    let holder = spawn_get(&w, "/m/sleep?ms=800");
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let queued = spawn_get(&w, "/hello/x");
    wait_until(
        "a request in the host's queue",
        Duration::from_secs(10),
        || w.metric("wisp_host_queue_depth") == 1.0,
    );
    // The queue is full: 503 at once (for another function: `hello`'s one
    // slot, its share of the host's, is held by the request waiting).
    let r = w.get("/hi/y");
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = assert_error(r, 503, "overloaded");
    assert!(msg.contains("queue of 1 is full"), "{msg}");
    assert_eq!(queued.join().unwrap().0, 200);
    assert_eq!(holder.join().unwrap().0, 200);

    // It does not: 503 after the host's queue timeout.
    let holder = spawn_get(&w, "/m/sleep?ms=4000");
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let start = Instant::now();
    let r = w.get("/hello/z");
    let took = start.elapsed();
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = assert_error(r, 503, "overloaded");
    assert!(msg.contains("queue timeout of 1500 ms"), "{msg}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    assert_eq!(holder.join().unwrap().0, 200);

    assert_eq!(w.metric("wisp_host_queue_waits_total"), 2.0);
    assert_eq!(w.metric("wisp_host_queue_depth"), 0.0);
    assert_eq!(rejections(&w, "hi", "host_queue_full"), 1.0);
    assert_eq!(rejections(&w, "hello", "host_queue_timeout"), 1.0);
    assert_eq!(w.metric("wisp_invocations_rejected_total"), 2.0);
    assert_eq!(w.get("/hello/x").status(), 200);
}

#[test]
fn admission_settings_are_kept_by_later_deploys_and_shown_by_info() {
    let w = Wisp::start_with(Opts::default().arg("--max-in-flight").arg("10"));
    let wasm = misbehave_path();

    // Nothing set: the host's share (half of 10), no queue.
    ok(w.cli(&["deploy", "m", &wasm, "--route", "/m/*"]));
    let info = info_json(&w, "m");
    assert_eq!(info["limits"]["concurrency"], Value::Null, "{info}");
    assert_eq!(info["limits"]["queue"], 0);
    assert_eq!(info["limits"]["queue_timeout_ms"], 10_000);
    assert_eq!(info["effective_concurrency"], 5);
    let text = ok(w.cli(&["info", "m"]));
    assert!(
        text.contains("admission       concurrency 5 (the host's share), no queue\n"),
        "{text}"
    );

    ok(w.cli(&[
        "deploy",
        "m",
        &wasm,
        "--concurrency",
        "3",
        "--queue",
        "5",
        "--queue-timeout",
        "2s",
    ]));
    // Version 3 names none of them, version 4 only the queue.
    ok(w.cli(&["deploy", "m", &wasm, "--env", "A=1"]));
    let text = ok(w.cli(&["info", "m"]));
    assert!(
        text.contains("admission       concurrency 3, queue 5, queue timeout 2s\n"),
        "{text}"
    );
    ok(w.cli(&["deploy", "m", &wasm, "--queue", "0"]));
    let info = info_json(&w, "m");
    assert_eq!(info["active_version"], 4);
    assert_eq!(info["limits"]["concurrency"], 3, "{info}");
    assert_eq!(info["limits"]["queue"], 0);
    assert_eq!(info["limits"]["queue_timeout_ms"], 2000);
    assert_eq!(info["effective_concurrency"], 3);
    let text = ok(w.cli(&["info", "m"]));
    assert!(
        text.contains("admission       concurrency 3, no queue\n"),
        "{text}"
    );
    // The versions keep their own; a rollback restores them.
    let versions = &info["versions"];
    assert_eq!(versions[0]["limits"]["concurrency"], Value::Null);
    assert_eq!(versions[2]["limits"]["queue"], 5);
    ok(w.cli(&["rollback", "m", "1"]));
    let info = info_json(&w, "m");
    assert_eq!(info["effective_concurrency"], 5, "{info}");

    // The admin API's document describes them.
    let doc: Value = w.admin().get("/v1/openapi.json").json().unwrap();
    let params: Vec<&str> = doc["paths"]["/v1/functions/{name}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["concurrency", "queue", "queue_timeout_ms"] {
        assert!(params.contains(&p), "{p} in {params:?}");
    }
    let limits = &doc["components"]["schemas"]["Limits"]["properties"];
    for p in ["concurrency", "queue", "queue_timeout_ms"] {
        assert!(limits.get(p).is_some(), "{p} in {limits}");
    }
    assert!(
        doc["components"]["schemas"]["FunctionInfo"]["properties"]
            .get("effective_concurrency")
            .is_some()
    );
}

#[test]
fn bad_admission_settings_are_refused_and_nothing_is_stored() {
    let w = Wisp::start_with(Opts::default().arg("--max-in-flight").arg("10"));
    let a = w.admin();
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let r = a.deploy("m", &wasm, &[("route", "/m/*"), ("concurrency", "2")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let unchanged = |w: &Wisp| {
        let info = info_json(w, "m");
        assert_eq!(info["active_version"], 1, "{info}");
        assert_eq!(info["versions"].as_array().unwrap().len(), 1, "{info}");
        assert_eq!(info["limits"]["concurrency"], 2, "{info}");
        assert_eq!(info["limits"]["queue"], 0, "{info}");
    };

    for (param, value, needle) in [
        ("concurrency", "0", "concurrency must be between 1 and"),
        ("concurrency", "-1", "concurrency"),
        ("concurrency", "lots", "concurrency"),
        ("concurrency", "11", "--max-in-flight 10"),
        ("queue", "-1", "queue"),
        ("queue", "many", "queue"),
        ("queue", "100001", "queue must be at most 100000"),
        (
            "queue_timeout_ms",
            "0",
            "queue_timeout_ms must be between 1 and",
        ),
        ("queue_timeout_ms", "-5", "queue_timeout_ms"),
        ("queue_timeout_ms", "soon", "queue_timeout_ms"),
    ] {
        let msg = assert_error(
            a.deploy("m", &wasm, &[(param, value)]),
            400,
            "invalid_argument",
        );
        assert!(msg.contains(needle), "{param}={value}: {msg}");
        unchanged(&w);
    }
    // Nor is a new function created.
    let msg = assert_error(
        a.deploy("fresh", &wasm, &[("concurrency", "0")]),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("concurrency"), "{msg}");
    assert_error(a.get("/v1/functions/fresh"), 404, "function_not_found");

    // The CLI: refused by the host (one line, its message) or by the
    // flag's parser (naming the flag); nothing sent, nothing stored.
    let file = misbehave_path();
    let err = fails(w.cli(&["deploy", "m", &file, "--concurrency", "0"]));
    assert!(err.contains("concurrency must be between 1 and"), "{err}");
    let err = fails(w.cli(&["deploy", "m", &file, "--concurrency", "50"]));
    assert!(err.contains("--max-in-flight 10"), "{err}");
    let err = fails(w.cli(&["deploy", "m", &file, "--queue-timeout", "0s"]));
    assert!(err.contains("queue_timeout_ms"), "{err}");
    for args in [
        ["--concurrency=-1"],
        ["--queue=many"],
        ["--queue-timeout=soon"],
    ] {
        let out = w.cli(&[&["deploy", "m", &file][..], &args[..]].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = args[0].split('=').next().unwrap();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    unchanged(&w);
    assert_eq!(w.get("/m/ok").status(), 200);
}

#[test]
fn bad_host_queue_settings_stop_the_host_before_it_listens() {
    for (flag, value, needle) in [
        ("--host-queue", "100001", "host queue must be at most"),
        ("--host-queue-timeout", "0s", "host queue timeout"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{flag} {value}: {err}");
    }
}

#[test]
fn event_deliveries_wait_for_a_slot_and_are_delivered_without_using_attempts() {
    let w = Wisp::start();
    let a = w.admin();
    let counter_wasm = std::fs::read(guest("event-counter")).unwrap();
    let handler_wasm = std::fs::read(guest("event-handler")).unwrap();
    let admission = [("concurrency", "1"), ("queue", "4")];
    // `c` gets each event as a POST, `h` as a call of its event handler;
    // each takes ~1 s per event, one at a time.
    let r = a.deploy(
        "c",
        &counter_wasm,
        &[&[("route", "/c/*")][..], &admission].concat(),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = a.deploy("h", &handler_wasm, &admission);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    cli_ok(&w, &["config", "set", "c", "sleep_ms=1000"]);
    cli_ok(&w, &["subscribe", "c", "t", "--max-attempts", "1"]);
    cli_ok(&w, &["subscribe", "h", "t", "--max-attempts", "1"]);

    let ids: Vec<String> = (0..3)
        .map(|_| published_id(publish(&a, "t", b"sleep:1000")))
        .collect();
    wait_until("every delivery done", Duration::from_secs(30), || {
        ids.iter()
            .all(|id| statuses(&event(&a, id)) == ["done", "done"])
    });
    for id in &ids {
        let ev = event(&a, id);
        for d in ev["deliveries"].as_array().unwrap() {
            assert_eq!(d["attempts"], 1, "{ev}");
            assert!(
                d.get("postponed_ms").is_none(),
                "waited, not postponed: {ev}"
            );
        }
        assert_eq!(counter(&a, "c", &format!("done:{id}")), 1);
        assert_eq!(counter(&a, "h", &format!("done:{id}")), 1);
    }
    // Three deliveries at once (the subscription's concurrency is 4), one
    // slot: the others waited.
    for f in ["c", "h"] {
        assert!(
            function_metric(&w, "wisp_function_queue_waits_total", f) >= 2.0,
            "{f}"
        );
        assert_eq!(rejections(&w, f, "queue_full"), 0.0);
        assert_eq!(rejections(&w, f, "queue_timeout"), 0.0);
    }
    assert_eq!(
        metric(
            &w,
            "wisp_event_deliveries_total",
            &[("result", "postponed")]
        ),
        0.0
    );
    assert_eq!(
        metric(&w, "wisp_event_deliveries_total", &[("result", "dead")]),
        0.0
    );
}
