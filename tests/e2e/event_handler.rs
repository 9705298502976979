//! Typed event handlers: a component that exports
//! `wisp:function/event-handler` (tests/guests/event-handler, built with
//! `#[wisp_sdk::event_handler]`, no HTTP handler) gets topic events,
//! asynchronous invocations and job tasks as typed calls with their
//! metadata; its failures and traps are retried and dead-lettered; it can
//! publish from inside (`wisp:function/topics`); and, having no HTTP
//! handler, it takes no routes and answers synchronous invocations 501.

use std::time::Duration;

use serde_json::Value;

use crate::events::{
    cli_ok, counter, event, publish, published_id, set_fail, statuses, wait_until,
};
use crate::harness::*;

/// The JSON record the guest wrote under `key` (None when unset).
fn record(a: &Admin, function: &str, key: &str) -> Option<Value> {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    match resp.status().as_u16() {
        200 => Some(serde_json::from_slice(&resp.bytes().unwrap()).unwrap()),
        404 => None,
        s => panic!("reading {key} of {function}: status {s}"),
    }
}

fn text(a: &Admin, function: &str, key: &str) -> Option<String> {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    (resp.status() == 200).then(|| resp.text().unwrap())
}

#[test]
fn topic_events_async_invocations_and_job_tasks_arrive_as_typed_calls() {
    let w = Wisp::start();
    let a = w.admin();
    // No routes given: an event-only component gets none (not the default
    // `/ev/*`).
    let info = a.deploy_guest("ev", "event-handler", &[]);
    assert!(info.routes.is_empty(), "{info:?}");
    assert_eq!(info.handlers, ["events"], "{info:?}");
    let shown = cli_ok(&w, &["info", "ev"]);
    assert!(shown.contains("events (event handler)"), "{shown}");
    let hello = a.deploy_guest("hello", "hello", &["/hello"]);
    assert_eq!(hello.handlers, ["http"], "{hello:?}");
    assert_eq!(w.get("/ev/x").status(), 404);

    // A topic event: topic, payload, content type, attempt.
    let out = cli_ok(&w, &["subscribe", "ev", "orders"]);
    assert!(out.contains("(event handler, 3 attempts"), "{out}");
    let id = published_id(publish(&a, "orders", b"order one"));
    wait_until("the event handler to run", Duration::from_secs(30), || {
        counter(&a, "ev", &format!("done:{id}")) == 1
    });
    let r = record(&a, "ev", &format!("event:{id}")).unwrap();
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["topic"], "orders");
    assert_eq!(r["payload"], "order one");
    assert_eq!(r["content_type"], "text/plain");
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["job_index"], Value::Null);
    let published_ms = event(&a, &id)["time_ms"].as_u64();
    assert_eq!(r["time_ms"].as_u64(), published_ms, "{r}");
    wait_until("done status", Duration::from_secs(10), || {
        statuses(&event(&a, &id)) == ["done"]
    });
    // Invocation logs are kept as for HTTP invocations.
    let logs = a.get("/v1/functions/ev/logs").text().unwrap();
    assert!(
        logs.contains(&format!("attempt 1 of {id} on orders")),
        "{logs}"
    );

    // An asynchronous invocation goes to the event handler too.
    let out = cli_ok(&w, &["invoke", "ev", "--async", "-d", "later"]);
    let async_id = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the async invocation", Duration::from_secs(30), || {
        counter(&a, "ev", &format!("done:{async_id}")) == 1
    });
    let r = record(&a, "ev", &format!("event:{async_id}")).unwrap();
    assert_eq!(r["topic"], "invoke:ev");
    assert_eq!(r["payload"], "later");

    // A batch job: each task carries its index, the array size and the job id.
    let out = cli_ok(&w, &["job", "run", "ev", "--array", "0-2,7"]);
    let job_id = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the job to succeed", Duration::from_secs(60), || {
        cli_ok(&w, &["job", "status", &job_id]).contains("succeeded")
    });
    for i in [0, 1, 2, 7] {
        assert_eq!(counter(&a, "ev", &format!("index-done:{i}")), 1);
    }
    let last = record(&a, "ev", "last").unwrap();
    assert_eq!(last["job_array_size"], 4, "{last}");
    assert_eq!(last["job_id"], job_id.as_str(), "{last}");
    assert!(
        last["topic"].as_str().unwrap().starts_with("job:"),
        "{last}"
    );

    // No HTTP handler: a synchronous invocation is refused with a clear
    // error, and so is a deploy with routes (nothing stored).
    let out = w.cli(&["invoke", "ev"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exports only wisp:function/event-handler"),
        "{err}"
    );
    let resp = a
        .http
        .post(format!("{}/v1/functions/ev/invoke", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(resp, 501, "no_http_handler");
    let wasm = std::fs::read(guest("event-handler")).unwrap();
    let msg = assert_error(
        a.deploy("ev", &wasm, &[("route", "/ev")]),
        400,
        "invalid_route",
    );
    assert!(msg.contains("cannot have HTTP routes"), "{msg}");
    let versions: Value = a.get("/v1/functions/ev").json().unwrap();
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    let msg = assert_error(
        a.deploy("other", &wasm, &[("route", "/other")]),
        400,
        "invalid_route",
    );
    assert!(msg.contains("cannot have HTTP routes"), "{msg}");
    assert_eq!(a.get("/v1/functions/other").status(), 404);
}

#[test]
fn handler_errors_and_traps_are_retried_then_dead_lettered() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("ev", "event-handler", &[]);
    cli_ok(&w, &["subscribe", "ev", "pay", "--max-attempts", "2"]);

    // An `Err` from the handler: retried, then dead, with the handler's
    // message as the delivery's error and in the function's log.
    set_fail(&a, "ev", true);
    let id = published_id(publish(&a, "pay", b"p1"));
    wait_until(
        "the failing delivery to be dead",
        Duration::from_secs(30),
        || statuses(&event(&a, &id)) == ["dead"],
    );
    let ev = event(&a, &id);
    let d = &ev["deliveries"][0];
    assert_eq!(d["attempts"], 2, "{ev}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{ev}"
    );
    assert_eq!(counter(&a, "ev", &format!("seen:{id}")), 2);
    let logs = a.get("/v1/functions/ev/logs").text().unwrap();
    assert!(logs.contains("failing on purpose"), "{logs}");
    let dlq = cli_ok(&w, &["events", "dlq", "ev"]);
    assert!(dlq.contains(&id), "{dlq}");

    // A trap (the handler panics): the same, and the host stays healthy.
    set_fail(&a, "ev", false);
    let trap = published_id(publish(&a, "pay", b"trap"));
    wait_until(
        "the trapping delivery to be dead",
        Duration::from_secs(30),
        || statuses(&event(&a, &trap)) == ["dead"],
    );
    let ev = event(&a, &trap);
    assert_eq!(ev["deliveries"][0]["attempts"], 2, "{ev}");
    assert_eq!(counter(&a, "ev", &format!("seen:{trap}")), 2);

    // Redriven after the fix: the first one now succeeds once.
    let out = cli_ok(&w, &["events", "redrive", "ev", "--topic", "pay", &id]);
    assert!(out.contains("redrove 1"), "{out}");
    wait_until("the redriven delivery", Duration::from_secs(30), || {
        statuses(&event(&a, &id)) == ["done"]
    });
    assert_eq!(counter(&a, "ev", &format!("done:{id}")), 1);
    let ok = published_id(publish(&a, "pay", b"fine"));
    wait_until(
        "a normal event after the trap",
        Duration::from_secs(30),
        || counter(&a, "ev", &format!("done:{ok}")) == 1,
    );
}

#[test]
fn a_handler_publishes_events_that_reach_other_subscribers() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("first", "event-handler", &[]);
    a.deploy_guest("second", "event-handler", &[]);
    cli_ok(&w, &["subscribe", "first", "inbox"]);
    cli_ok(&w, &["subscribe", "second", "relayed"]);

    let id = published_id(publish(&a, "inbox", b"forward:relayed:hello again"));
    wait_until("the relayed event", Duration::from_secs(30), || {
        counter(&a, "second", "total") == 1
    });
    let forwarded = text(&a, "first", &format!("forwarded:{id}")).unwrap();
    let r = record(&a, "second", &format!("event:{forwarded}")).unwrap();
    assert_eq!(r["topic"], "relayed");
    assert_eq!(r["payload"], "hello again");
    // Published from a guest like from the API: it has an event record.
    assert_eq!(event(&a, &forwarded)["topic"], "relayed");

    // A bad topic is an error value for the guest; nothing is published.
    let before = w.metric("wisp_events_published_total");
    let id = published_id(publish(&a, "inbox", b"forward:Not A Topic:x"));
    wait_until("the handler to finish", Duration::from_secs(30), || {
        counter(&a, "first", &format!("done:{id}")) == 1
    });
    let err = text(&a, "first", "publish-error").unwrap();
    assert!(err.contains("may only contain"), "{err}");
    assert_eq!(text(&a, "first", &format!("forwarded:{id}")), None);
    // Only the test's own publish was counted.
    assert_eq!(w.metric("wisp_events_published_total"), before + 1.0);
}
