//! The event plane: topics and subscriptions (fan-out), asynchronous
//! invocation, retries with backoff into the dead-letter list and redrive,
//! limits (payload, topic name, queue depth), and `kill -9` while events
//! are published and delivered: nothing acknowledged is lost.
//!
//! The handler is tests/guests/event-counter: it counts each delivery in
//! its kv (`seen:<id>` every attempt, `done:<id>` and `total` on success)
//! and fails while its setting `fail` is `1`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

pub(crate) fn publish(a: &Admin, topic: &str, body: &[u8]) -> reqwest::blocking::Response {
    a.http
        .post(format!("{}/v1/topics/{topic}/events", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "text/plain")
        .body(body.to_vec())
        .send()
        .unwrap()
}

pub(crate) fn published_id(resp: reqwest::blocking::Response) -> String {
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 202, "publish failed: {body}");
    body["id"].as_str().unwrap().to_string()
}

/// A kv counter of the function (0 when unset).
pub(crate) fn counter(a: &Admin, function: &str, key: &str) -> i64 {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    match resp.status().as_u16() {
        200 => resp.text().unwrap().parse().unwrap(),
        404 => 0,
        s => panic!("reading {key} of {function}: status {s}"),
    }
}

pub(crate) fn set_fail(a: &Admin, function: &str, on: bool) {
    let resp = a
        .http
        .put(format!("{}/v1/functions/{function}/config", a.url))
        .bearer_auth(&a.token)
        .json(&json!({"values": {"fail": if on { "1" } else { "0" }}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

pub(crate) fn event(a: &Admin, id: &str) -> Value {
    let resp = a.get(&format!("/v1/events/{id}"));
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the CLI, asserting success (with the host's log when it fails).
pub(crate) fn cli_ok(w: &Wisp, args: &[&str]) -> String {
    let out = w.cli(args);
    assert!(
        out.status.success(),
        "wisp {args:?} failed: {}\nhost log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.log_text()
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn statuses(ev: &Value) -> Vec<String> {
    ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_subscriber_gets_every_event_published_after_it_subscribed() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("a", "event-counter", &["/a/*"]);
    a.deploy_guest("b", "event-counter", &["/b/*"]);

    // Before anyone subscribed: stored, delivered to nobody.
    let early = published_id(publish(&a, "orders", b"early"));
    assert!(
        event(&a, &early)["deliveries"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    cli_ok(&w, &["subscribe", "a", "orders"]);
    let out = cli_ok(&w, &["subscribe", "b", "orders", "--path", "/hook?x=1"]);
    assert!(out.contains("subscribed b to orders"), "{out}");
    let list = cli_ok(&w, &["subscriptions"]);
    assert!(
        list.contains("/hook?x=1") && list.lines().count() == 3,
        "{list}"
    );
    let only_b = cli_ok(&w, &["subscriptions", "b"]);
    assert_eq!(only_b.lines().count(), 2, "{only_b}");

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(published_id(publish(
            &a,
            "orders",
            format!("o{i}").as_bytes(),
        )));
    }
    let out = cli_ok(&w, &["publish", "orders", "--data", "from-cli"]);
    assert!(out.contains("2 subscribers"), "{out}");
    ids.push(out.split_whitespace().nth(1).unwrap().to_string());

    wait_until(
        "both subscribers to count 6",
        Duration::from_secs(30),
        || counter(&a, "a", "total") == 6 && counter(&a, "b", "total") == 6,
    );
    for id in &ids {
        assert_eq!(counter(&a, "a", &format!("done:{id}")), 1);
        assert_eq!(counter(&a, "b", &format!("done:{id}")), 1);
        wait_until("done statuses", Duration::from_secs(10), || {
            statuses(&event(&a, id)) == ["done", "done"]
        });
    }
    let ev = event(&a, &ids[0]);
    assert_eq!(ev["topic"], "orders");
    assert_eq!(ev["content_type"], "text/plain");
    assert_eq!(ev["deliveries"][0]["attempts"], 1);
    // The subscription's path, and the event headers, reached the guest.
    let logs = a.get("/v1/functions/b/logs").text().unwrap();
    assert!(
        logs.contains(&format!("attempt 1 of {} on orders at /hook", ids[0])),
        "{logs}"
    );
    let shown = cli_ok(&w, &["events", "show", &ids[0]]);
    assert!(
        shown.contains("done") && shown.contains("orders"),
        "{shown}"
    );
    assert!(w.metric("wisp_events_published_total") >= 7.0);

    // Unsubscribed: a gets nothing more; b still does.
    cli_ok(&w, &["unsubscribe", "a", "orders"]);
    let last = published_id(publish(&a, "orders", b"last"));
    wait_until("b to count 7", Duration::from_secs(30), || {
        counter(&a, "b", "total") == 7
    });
    assert_eq!(event(&a, &last)["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(counter(&a, "a", "total"), 6);

    // Errors: unknown function, bad topic, unknown subscription, unknown event.
    let out = w.cli(&["subscribe", "nope", "orders"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = w.cli(&["unsubscribe", "a", "orders"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not subscribed"));
    assert_error(a.get("/v1/events/ffffffffffffffff"), 404, "event_not_found");
    assert_error(a.get("/v1/events/nonsense"), 404, "event_not_found");
}

#[test]
fn invoke_async_queues_a_post_with_the_body_and_headers() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "event-counter", &["/f/*"]);
    let out = cli_ok(
        &w,
        &[
            "invoke",
            "f",
            "--async",
            "--path",
            "/jobs/1",
            "-d",
            "work",
            "-H",
            "x-trace: t1",
        ],
    );
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.starts_with("queued "), "{out}");
    wait_until("the async invocation", Duration::from_secs(30), || {
        counter(&a, "f", &format!("done:{id}")) == 1
    });
    let ev = event(&a, &id);
    assert_eq!(ev["topic"], "invoke:f");
    wait_until("done status", Duration::from_secs(10), || {
        statuses(&event(&a, &id)) == ["done"]
    });
    let logs = a.get("/v1/functions/f/logs").text().unwrap();
    assert!(
        logs.contains(&format!("attempt 1 of {id} on invoke:f at /jobs/1")),
        "{logs}"
    );

    // The API directly; an unknown function is refused before anything is queued.
    let resp = a
        .http
        .post(format!("{}/v1/functions/f/invoke-async?path=/x", a.url))
        .bearer_auth(&a.token)
        .body("b")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = a
        .http
        .post(format!("{}/v1/functions/ghost/invoke-async", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(resp, 404, "function_not_found");
    let out = w.cli(&["invoke", "ghost", "--async"]);
    assert!(!out.status.success());
}

#[test]
fn a_failing_handler_is_retried_with_backoff_then_dead_then_redriven() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("c", "event-counter", &["/c/*"]);
    set_fail(&a, "c", true);
    cli_ok(&w, &["subscribe", "c", "payments", "--max-attempts", "3"]);
    let id = published_id(publish(&a, "payments", b"p1"));

    wait_until("the delivery to be dead", Duration::from_secs(30), || {
        statuses(&event(&a, &id)) == ["dead"]
    });
    let ev = event(&a, &id);
    let d = &ev["deliveries"][0];
    assert_eq!(d["attempts"], 3, "{ev}");
    assert!(d["last_error"].as_str().unwrap().contains("500"), "{ev}");
    // Exactly 3 attempts reached the handler…
    assert_eq!(counter(&a, "c", &format!("seen:{id}")), 3);
    // …at least the base delay (1s) apart.
    let times: Vec<u64> = serde_json::from_value(d["attempt_times_ms"].clone()).unwrap();
    assert_eq!(times.len(), 3, "{ev}");
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "retried too early: {times:?}");
    }
    println!(
        "attempt intervals (ms): {:?}",
        times.windows(2).map(|p| p[1] - p[0]).collect::<Vec<_>>()
    );
    // Nothing more happens to it.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(counter(&a, "c", &format!("seen:{id}")), 3);

    let dlq = cli_ok(&w, &["events", "dlq", "c"]);
    assert!(dlq.contains(&id) && dlq.contains("dead"), "{dlq}");
    let dlq: Value = a.get("/v1/functions/c/dlq?topic=payments").json().unwrap();
    assert_eq!(dlq.as_array().unwrap().len(), 1);
    assert!(w.metric("wisp_event_deliveries_total") >= 3.0);

    // Fixed, then redriven: delivered once more, and the list is empty.
    set_fail(&a, "c", false);
    let out = cli_ok(&w, &["events", "redrive", "c", "--topic", "payments", &id]);
    assert!(out.contains("redrove 1"), "{out}");
    wait_until("the redriven delivery", Duration::from_secs(30), || {
        statuses(&event(&a, &id)) == ["done"]
    });
    assert_eq!(counter(&a, "c", &format!("done:{id}")), 1);
    let out = cli_ok(&w, &["events", "dlq", "c"]);
    assert!(out.contains("no dead deliveries"), "{out}");
    let out = cli_ok(&w, &["events", "redrive", "c"]);
    assert!(out.contains("redrove 0"), "{out}");
}

#[test]
fn limits_answer_clear_errors_and_store_nothing() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--event-max-payload")
            .arg("1KiB")
            .arg("--max-queue-depth")
            .arg("3"),
    );
    let a = w.admin();
    a.deploy_guest("q", "event-counter", &["/q/*"]);

    // Bad topic names.
    for bad in ["Upper", "a b", &"x".repeat(64)] {
        assert_error(
            publish(&a, &bad.replace(' ', "%20"), b"x"),
            400,
            "invalid_name",
        );
    }
    let out = w.cli(&["publish", "Bad!", "-d", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic name"));

    // Too large: 413, nothing stored or delivered.
    cli_ok(&w, &["subscribe", "q", "big"]);
    let msg = assert_error(
        publish(&a, "big", &vec![b'x'; 1025]),
        413,
        "payload_too_large",
    );
    assert!(msg.contains("1024"), "{msg}");
    published_id(publish(&a, "big", &vec![b'x'; 1024]));
    wait_until("the one event", Duration::from_secs(30), || {
        counter(&a, "q", "total") == 1
    });
    assert_eq!(w.metric("wisp_events_published_total"), 1.0);

    // Queue full: deliveries that keep failing stay queued (retried in an
    // hour); the fourth publish is refused.
    set_fail(&a, "q", true);
    cli_ok(
        &w,
        &[
            "subscribe",
            "q",
            "slow",
            "--retry-base",
            "1h",
            "--max-age",
            "2h",
        ],
    );
    for i in 0..3 {
        published_id(publish(&a, "slow", format!("{i}").as_bytes()));
    }
    let resp = publish(&a, "slow", b"one too many");
    assert_eq!(resp.headers()["retry-after"], "1");
    let msg = assert_error(resp, 429, "queue_full");
    assert!(msg.contains("slow") && msg.contains("3"), "{msg}");
    // Other topics are not affected.
    published_id(publish(&a, "big", b"fine"));
    assert!(w.metric("wisp_event_queue_depth") >= 3.0);
}

/// A subscription at its concurrency limit with a long backlog does not
/// hold up another subscription's events queued behind it in the due index
/// (the dispatcher reads past the backlog, not only its head).
#[test]
fn a_backlog_at_its_concurrency_limit_does_not_hold_up_other_subscriptions() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("slow", "misbehave", &["/slow/*"]);
    a.deploy_guest("quick", "event-counter", &["/quick/*"]);
    cli_ok(
        &w,
        &[
            "subscribe",
            "slow",
            "bulk",
            "--path",
            "/sleep?ms=200",
            "--concurrency",
            "1",
        ],
    );
    cli_ok(&w, &["subscribe", "quick", "urgent"]);
    // More than a pass reads from the head of the due index (64 + 256).
    let mut backlog = Vec::new();
    for i in 0..400 {
        backlog.push(published_id(publish(&a, "bulk", format!("{i}").as_bytes())));
    }
    let urgent = published_id(publish(&a, "urgent", b"now"));
    // At 200 ms each, one at a time, the backlog takes 80 s.
    wait_until("the urgent event", Duration::from_secs(15), || {
        counter(&a, "quick", &format!("done:{urgent}")) == 1
    });
    let last = event(&a, backlog.last().unwrap());
    assert_eq!(statuses(&last), ["pending"], "{last}");
}

#[test]
fn kill_9_while_publishing_loses_no_acknowledged_event() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("k", "event-counter", &["/k/*"]);
    cli_ok(&w, &["subscribe", "k", "stream", "--concurrency", "8"]);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop) = (acked.clone(), stop.clone());
            let url = format!("{}/v1/topics/stream/events", a.url);
            let token = a.token.clone();
            std::thread::spawn(move || {
                let http = client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .body(format!("{t}-{i}"))
                        .send();
                    match resp {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_string());
                        }
                        Ok(r) => panic!("publish answered {}", r.status()),
                        Err(_) => break, // the host is gone
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Mid-stream: events published, some delivered, some running.
    wait_until("some deliveries", Duration::from_secs(60), || {
        counter(&a, "k", "total") >= 50
    });
    w.kill9();
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 50);

    let w2 = w.restart_on(Opts::default());
    let a = w2.admin();
    let mut missing = acked.clone();
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(120),
        || {
            missing.retain(|id| counter(&a, "k", &format!("done:{id}")) == 0);
            missing.is_empty()
        },
    );
    let deliveries: i64 = acked
        .iter()
        .map(|id| counter(&a, "k", &format!("done:{id}")))
        .sum();
    let duplicates = deliveries - acked.len() as i64;
    println!(
        "kill -9: {} events acknowledged, {} deliveries, {} duplicates",
        acked.len(),
        deliveries,
        duplicates
    );
    assert!(duplicates >= 0);
}

#[test]
fn schedules_fire_each_tick_survive_a_restart_and_stop_when_deleted() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("s", "event-counter", &["/s/*"]);
    // 6 fields: every second (the seconds extension; 5-field cron's
    // shortest period is a minute).
    let out = cli_ok(
        &w,
        &[
            "schedule",
            "add",
            "s",
            "* * * * * *",
            "--payload",
            "tick",
            "--path",
            "/tick",
        ],
    );
    assert!(out.starts_with("schedule "), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    // A standard 5-field one, in a time zone.
    let out = cli_ok(
        &w,
        &[
            "schedule",
            "add",
            "s",
            "0 9 * * MON-FRI",
            "--tz",
            "Europe/Paris",
        ],
    );
    let daily = out.split_whitespace().nth(1).unwrap().to_string();
    let list = cli_ok(&w, &["schedule", "list", "s"]);
    assert!(
        list.contains(&id) && list.contains("0 9 * * MON-FRI"),
        "{list}"
    );

    wait_until("two ticks", Duration::from_secs(30), || {
        counter(&a, "s", "total") >= 2
    });
    let logs = a.get("/v1/functions/s/logs").text().unwrap();
    assert!(
        logs.contains(&format!("on schedule:{id} at /tick")),
        "{logs}"
    );

    // Survives a restart (and keeps ticking).
    assert_eq!(w.terminate().code(), Some(0));
    let w2 = w.restart_on(Opts::default());
    let a = w2.admin();
    let before = counter(&a, "s", "total");
    wait_until("ticks after the restart", Duration::from_secs(30), || {
        counter(&a, "s", "total") >= before + 2
    });
    let list = cli_ok(&w2, &["schedule", "list"]);
    assert!(list.contains(&id) && list.contains(&daily), "{list}");

    // Deleted: no more ticks.
    let out = cli_ok(&w2, &["schedule", "delete", &id]);
    assert!(out.contains("deleted"), "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    let settled = counter(&a, "s", "total");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(counter(&a, "s", "total"), settled);

    // Errors.
    let out = w2.cli(&["schedule", "add", "s", "61 * * * *"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cron expression"));
    let out = w2.cli(&["schedule", "add", "s", "* * * * *", "--tz", "Mars/Olympus"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("time zone"));
    let out = w2.cli(&["schedule", "add", "ghost", "* * * * *"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = w2.cli(&["schedule", "delete", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn preview_1_modules_get_events_as_posts() {
    let w = Wisp::start();
    let a = w.admin();
    let wasm = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
    let r = a.deploy("cgi", &wasm, &[("route", "/cgi/*")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    cli_ok(&w, &["subscribe", "cgi", "pings", "--path", "/cgi/hook"]);
    let id = published_id(publish(&a, "pings", b"ping"));
    wait_until(
        "the CGI module to take the event",
        Duration::from_secs(30),
        || statuses(&event(&a, &id)) == ["done"],
    );
    let ev = event(&a, &id);
    assert_eq!(ev["deliveries"][0]["attempts"], 1, "{ev}");
}
