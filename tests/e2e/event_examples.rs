//! The event examples, deployed and driven as their READMEs say:
//! order-events (HTTP publishes, the typed event handler records),
//! nightly-report (a schedule writes reports) and thumbnail-batch (a batch
//! job renders one image per index, and fails where told to).
//!
//! Each component also has an HTTP router with no `POST /` route, and its
//! subscriptions, schedules and jobs use the default path `/`: were an
//! event sent as an HTTP `POST`, it would answer 404 and never succeed. So
//! an event that ends `done` went through the `wisp:function/event-handler`
//! export.

use std::time::Duration;

use serde_json::{Value, json};

use crate::events::{cli_ok, counter, event, wait_until};
use crate::harness::*;
use crate::jobs::job;

/// A function's kv value, through the admin API.
fn kv(a: &Admin, function: &str, key: &str) -> Option<Vec<u8>> {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    match resp.status().as_u16() {
        200 => Some(resp.bytes().unwrap().to_vec()),
        404 => None,
        s => panic!("reading {key} of {function}: status {s}"),
    }
}

fn post(w: &Wisp, path: &str, body: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{}{path}", w.data_url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

fn get_json(w: &Wisp, path: &str) -> (u16, Value) {
    let resp = w.get(path);
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

#[test]
fn order_events_publishes_valid_orders_and_the_handler_records_them() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("order-events", "order-events", &["/orders/*"]);
    let out = cli_ok(&w, &["subscribe", "order-events", "orders"]);
    assert!(out.contains("subscribed order-events to orders"), "{out}");
    let published_before = w.metric("wisp_events_published_total");

    // A valid order: 202 with the event id, then recorded by the handler.
    let resp = post(&w, "/orders", r#"{"item":"tea","quantity":2}"#);
    assert_eq!(resp.status(), 202);
    let id = {
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let body: Value = resp.json().unwrap();
        let id = body["event_id"].as_str().unwrap().to_string();
        assert_eq!(location, format!("/orders/{id}"));
        id
    };
    wait_until("the order to be recorded", Duration::from_secs(30), || {
        w.get(&format!("/orders/{id}")).status() == 200
    });
    let (_, order) = get_json(&w, &format!("/orders/{id}"));
    assert_eq!(order["id"], id.as_str());
    assert_eq!(order["item"], "tea");
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["attempt"], 1);

    // Delivered through the typed export: one attempt, done (a POST to /
    // would have been answered 404 by the router), logged by the handler,
    // and the host's invocation line names the event. (The outcome is
    // written after the handler has returned, in the next group commit.)
    wait_until("the delivery's outcome", Duration::from_secs(10), || {
        event(&a, &id)["deliveries"][0]["status"] != "running"
    });
    let ev = event(&a, &id);
    let delivery = &ev["deliveries"][0];
    assert_eq!(
        (
            &delivery["function"],
            &delivery["status"],
            &delivery["attempts"]
        ),
        (&json!("order-events"), &json!("done"), &json!(1)),
        "{ev}"
    );
    let as_post = a
        .http
        .post(format!("{}/v1/functions/order-events/invoke?path=/", a.url))
        .bearer_auth(&a.token)
        .body(r#"{"item":"tea","quantity":2}"#)
        .send()
        .unwrap();
    assert_eq!(as_post.status(), 404);
    // (Log lines are written in the background after the invocation.)
    wait_until("the handler's log line", Duration::from_secs(10), || {
        cli_ok(&w, &["logs", "order-events"]).contains(&format!("recorded order {id} (attempt 1)"))
    });
    assert!(
        w.log_text().lines().any(|l| l.contains("wisp::invocation")
            && l.contains("order-events")
            && l.contains(&format!("event_id={id}"))),
        "no invocation line for event {id}:\n{}",
        w.log_text()
    );

    // Bad orders: 400 invalid_order, and nothing published or recorded.
    for bad in [
        "",
        "{not json",
        r#"{"quantity":2}"#,
        r#"{"item":"","quantity":2}"#,
        r#"{"item":"tea","quantity":0}"#,
        r#"{"item":"tea","quantity":1001}"#,
        r#"{"item":"tea","quantity":2,"coupon":"x"}"#,
    ] {
        let msg = assert_error(post(&w, "/orders", bad), 400, "invalid_order");
        assert!(!msg.contains("internal"), "{bad}: {msg}");
    }
    assert_eq!(
        w.metric("wisp_events_published_total"),
        published_before + 1.0
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&a, "order-events", "orders-recorded"), 1);
    let (_, listing) = get_json(&w, "/orders");
    assert_eq!(listing, json!({"count": 1, "ids": [id]}));

    // Anything published on the topic reaches the handler: a second order
    // from the admin API, and one that is not a valid order, which fails,
    // is retried and ends in the dead-letter list.
    let out = cli_ok(
        &w,
        &[
            "subscribe",
            "order-events",
            "orders",
            "--max-attempts",
            "2",
            "--retry-base",
            "200ms",
        ],
    );
    assert!(out.contains("2 attempts"), "{out}");
    let out = cli_ok(
        &w,
        &[
            "publish",
            "orders",
            "--data",
            r#"{"item":"cake","quantity":1}"#,
            "--content-type",
            "application/json",
        ],
    );
    let second = out.split_whitespace().nth(1).unwrap().to_string();
    let out = cli_ok(
        &w,
        &["publish", "orders", "--data", r#"{"item":"","quantity":0}"#],
    );
    let poison = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the second order", Duration::from_secs(30), || {
        w.get(&format!("/orders/{second}")).status() == 200
    });
    wait_until("the bad event to be dead", Duration::from_secs(30), || {
        event(&a, &poison)["deliveries"][0]["status"] == "dead"
    });
    let ev = event(&a, &poison);
    assert_eq!(ev["deliveries"][0]["attempts"], 2, "{ev}");
    assert!(
        ev["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("`item` must not be empty"),
        "{ev}"
    );
    let dlq = cli_ok(&w, &["events", "dlq", "order-events"]);
    assert!(dlq.contains(&poison), "{dlq}");
    assert_eq!(w.get(&format!("/orders/{poison}")).status(), 404);
    let (_, listing) = get_json(&w, "/orders");
    assert_eq!(listing, json!({"count": 2, "ids": [id, second]}));
    let keys = cli_ok(&w, &["kv", "list", "order-events", "--prefix", "order:"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
}

#[test]
fn nightly_report_writes_a_report_on_each_tick_until_the_schedule_is_deleted() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("nightly-report", "nightly-report", &["/reports/*"]);
    assert_error(w.get("/reports/latest"), 404, "not_found");

    // The README's nightly schedule is accepted and next fires at 02:00 UTC
    // (deleted at once, so that only the fast one below makes reports).
    let out = cli_ok(
        &w,
        &[
            "schedule",
            "add",
            "nightly-report",
            "0 2 * * *",
            "--payload",
            r#"{"title":"nightly"}"#,
        ],
    );
    assert!(out.contains("T02:00:00Z"), "{out}");
    let nightly = out.split_whitespace().nth(1).unwrap().to_string();
    cli_ok(&w, &["schedule", "delete", &nightly]);

    // Every 2 seconds (6 fields: the leading seconds extension).
    let out = cli_ok(
        &w,
        &[
            "schedule",
            "add",
            "nightly-report",
            "*/2 * * * * *",
            "--payload",
            r#"{"title":"e2e"}"#,
        ],
    );
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("a first report", Duration::from_secs(30), || {
        w.get("/reports/latest").status() == 200
    });
    let (_, first) = get_json(&w, "/reports/latest");
    assert_eq!(first["title"], "e2e", "{first}");
    assert_eq!(first["trigger"], format!("schedule:{id}"), "{first}");
    assert_eq!(first["attempt"], 1, "{first}");
    let tick = first["tick"].as_str().unwrap();
    assert!(
        tick.len() == 24 && tick.ends_with('Z') && tick.as_bytes()[10] == b'T',
        "{tick}"
    );
    assert!(
        kv(&a, "nightly-report", &format!("report:{tick}")).is_some(),
        "no report:{tick}"
    );

    wait_until("a second report", Duration::from_secs(30), || {
        counter(&a, "nightly-report", "runs") >= 2
    });
    let (status, reports) = get_json(&w, "/reports");
    assert_eq!(status, 200);
    let reports = reports.as_array().unwrap();
    assert!(reports.len() >= 2, "{reports:?}");
    // Newest first, one run each, about two seconds apart.
    let runs: Vec<i64> = reports.iter().map(|r| r["run"].as_i64().unwrap()).collect();
    assert!(runs.windows(2).all(|p| p[0] == p[1] + 1), "{runs:?}");
    let gap = reports[0]["since_previous_ms"].as_u64().unwrap();
    assert!((500..=10_000).contains(&gap), "{gap}");
    wait_until("the handler's log line", Duration::from_secs(10), || {
        cli_ok(&w, &["logs", "nightly-report"]).contains("(e2e) for the tick at")
    });

    // Deleted: the reports stop (a tick already queued may still land).
    cli_ok(&w, &["schedule", "delete", &id]);
    assert!(cli_ok(&w, &["schedule", "list", "nightly-report"]).contains("no schedules"));
    std::thread::sleep(Duration::from_millis(1500));
    let settled = counter(&a, "nightly-report", "runs");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(counter(&a, "nightly-report", "runs"), settled);
    let (_, reports) = get_json(&w, "/reports");
    assert_eq!(reports.as_array().unwrap().len() as i64, settled);
}

/// The width of a binary PGM's header and its pixels, checking its shape.
fn pgm(bytes: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]).to_string();
    let mut fields = text.split_ascii_whitespace();
    assert_eq!(fields.next(), Some("P5"), "not a binary PGM: {text:?}");
    let w: usize = fields.next().unwrap().parse().unwrap();
    let h: usize = fields.next().unwrap().parse().unwrap();
    assert_eq!(fields.next(), Some("255"));
    let header = format!("P5\n{w} {h}\n255\n").len();
    assert_eq!(bytes.len(), header + w * h, "header and pixels");
    (w, h)
}

#[test]
fn thumbnail_batch_renders_every_index_and_fails_the_listed_one() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("thumbnail-batch", "thumbnail-batch", &["/thumbnails/*"]);

    // A job over 0-9: ten thumbnails.
    let out = cli_ok(
        &w,
        &[
            "job",
            "run",
            "thumbnail-batch",
            "--array",
            "0-9",
            "--parallelism",
            "4",
            "--payload",
            r#"{"width":48}"#,
        ],
    );
    assert!(out.contains("10 indices"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the job to succeed", Duration::from_secs(60), || {
        job(&a, &id)["state"] == "succeeded"
    });
    let j = job(&a, &id);
    assert_eq!(j["counts"]["done"], 10, "{j}");
    for t in j["tasks"].as_array().unwrap() {
        assert_eq!(
            (&t["status"], &t["attempts"]),
            (&json!("done"), &json!(1)),
            "{t}"
        );
    }
    let (_, listing) = get_json(&w, "/thumbnails");
    assert_eq!(listing, json!({"indices": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}));
    let keys = cli_ok(&w, &["kv", "list", "thumbnail-batch", "--prefix", "thumb:"]);
    assert_eq!(keys.lines().count(), 10, "{keys}");
    let resp = w.get("/thumbnails/7");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/x-portable-graymap");
    let seven = resp.bytes().unwrap().to_vec();
    assert_eq!(pgm(&seven), (48, 48));
    let three = w.get("/thumbnails/3").bytes().unwrap().to_vec();
    assert_eq!(pgm(&three), (48, 48));
    assert_ne!(seven, three, "each index renders its own image");
    assert_error(w.get("/thumbnails/10"), 404, "not_found");
    assert_error(w.get("/thumbnails/x"), 400, "bad_request");

    // fail-index=3: that index fails every attempt (1 + 2 retries) and the
    // job ends failed; the other nine succeed.
    cli_ok(&w, &["kv", "delete", "thumbnail-batch", "thumb:3"]);
    cli_ok(&w, &["config", "set", "thumbnail-batch", "fail-index=3"]);
    let out = cli_ok(
        &w,
        &[
            "job",
            "run",
            "thumbnail-batch",
            "--array",
            "0-9",
            "--parallelism",
            "4",
            "--retries",
            "2",
        ],
    );
    let failing = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the job to fail", Duration::from_secs(60), || {
        job(&a, &failing)["state"] == "failed"
    });
    let j = job(&a, &failing);
    assert_eq!(
        (&j["counts"]["done"], &j["counts"]["dead"]),
        (&json!(9), &json!(1)),
        "{j}"
    );
    for t in j["tasks"].as_array().unwrap() {
        if t["index"] == 3 {
            assert_eq!(
                (&t["status"], &t["attempts"]),
                (&json!("dead"), &json!(3)),
                "{t}"
            );
            assert!(
                t["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("index 3 is listed in fail-index"),
                "{t}"
            );
        } else {
            assert_eq!(
                (&t["status"], &t["attempts"]),
                (&json!("done"), &json!(1)),
                "{t}"
            );
        }
    }
    let status = cli_ok(&w, &["job", "status", &failing]);
    assert!(
        status.contains("failed") && status.contains("9 done") && status.contains("1 dead"),
        "{status}"
    );
    assert_error(w.get("/thumbnails/3"), 404, "not_found");
    // The default width, as the second job sent no payload.
    assert_eq!(pgm(&w.get("/thumbnails/4").bytes().unwrap()), (32, 32));
    // Each failed attempt is in the function's log.
    wait_until("three failures in the log", Duration::from_secs(10), || {
        cli_ok(&w, &["logs", "thumbnail-batch"])
            .matches("index 3 is listed in fail-index")
            .count()
            == 3
    });
}
