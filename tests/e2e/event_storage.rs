//! Bounded event storage and a clean slate: byte quotas per topic and
//! host-wide (429 with `Retry-After`, `queue-full` for a function, kept
//! right across `kill -9`), dead letters that expire and can be purged, a
//! capped content type, deliveries postponed (not failed) while the host
//! is saturated, schedule ticks whose id survives a crash, and a delete
//! after which a function of the same name starts clean.
//!
//! Handlers: tests/guests/event-counter (counts deliveries in its kv, fails
//! while its setting `fail` is `1`, sleeps `sleep_ms` if set),
//! tests/guests/event-handler (publishes what an event asks it to) and
//! tests/guests/misbehave (sleeps; answers a forged `overloaded` 503).

use std::time::Duration;

use serde_json::Value;

use crate::events::{
    cli_ok, counter, event, publish, published_id, set_fail, statuses, wait_until,
};
use crate::harness::*;

/// A labelled sample of the host's metrics (`name{label="value"}`).
fn labelled_metric(w: &Wisp, name: &str, label: &str) -> f64 {
    let text = w.admin().get("/metrics").text().unwrap();
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A kv value of a function as text (`None` if unset).
fn kv_text(a: &Admin, function: &str, key: &str) -> Option<String> {
    let resp = a.get(&format!("/v1/functions/{function}/kv/{key}"));
    match resp.status().as_u16() {
        200 => Some(resp.text().unwrap()),
        404 => None,
        s => panic!("reading {key} of {function}: status {s}"),
    }
}

fn kv_keys(a: &Admin, function: &str, prefix: &str) -> Vec<String> {
    let resp = a.get(&format!("/v1/functions/{function}/kv?prefix={prefix}"));
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    serde_json::from_value(v["keys"].clone()).unwrap()
}

fn invoke_async(a: &Admin, function: &str, body: &[u8]) -> reqwest::blocking::Response {
    a.http
        .post(format!("{}/v1/functions/{function}/invoke-async", a.url))
        .bearer_auth(&a.token)
        .header("content-type", "text/plain")
        .body(body.to_vec())
        .send()
        .unwrap()
}

fn quota_opts() -> Opts {
    Opts::default()
        .arg("--event-max-payload")
        .arg("1KiB")
        .arg("--event-topic-quota")
        .arg("5KiB")
        .arg("--event-host-quota")
        .arg("8KiB")
        .arg("--event-retry-max")
        .arg("1s")
}

/// With 1000-byte payloads (each event counts ~1,080 bytes), topic `slow`
/// holds 4 events within its 5 KiB, and two topics together hit the
/// host's 8 KiB: refused with 429 and the quota named, nothing stored;
/// other topics still accept; a function's publish gets `queue-full`; the
/// accounting is the same after `kill -9`; once the subscriber catches up
/// everything accepted is delivered and publishing works again.
#[test]
fn quotas_refuse_publishes_until_the_backlog_drains_also_after_kill_9() {
    let mut w = Wisp::start_with(quota_opts());
    let a = w.admin();
    a.deploy_guest("q", "event-counter", &["/q/*"]);
    a.deploy_guest("fwd", "event-handler", &[]);
    set_fail(&a, "q", true);
    for topic in ["slow", "other"] {
        cli_ok(
            &w,
            &[
                "subscribe",
                "q",
                topic,
                "--max-attempts",
                "100",
                "--retry-base",
                "1s",
            ],
        );
    }
    cli_ok(&w, &["subscribe", "fwd", "in"]);
    let payload = vec![b'p'; 1000];

    let mut accepted = Vec::new();
    for _ in 0..4 {
        accepted.push(published_id(publish(&a, "slow", &payload)));
    }
    let published = w.metric("wisp_events_published_total");
    // The gauges follow the dispatcher's passes (every 250 ms at most).
    wait_until("the held bytes gauge", Duration::from_secs(5), || {
        w.metric("wisp_event_stored_bytes") > 4000.0
    });
    let held = w.metric("wisp_event_stored_bytes");
    assert!(held < 5120.0, "{held}");
    let resp = publish(&a, "slow", &payload);
    assert_eq!(resp.headers()["retry-after"], "1");
    let msg = assert_error(resp, 429, "topic_quota_exceeded");
    assert!(
        msg.contains("\"slow\"") && msg.contains("5120") && msg.contains("--event-topic-quota"),
        "{msg}"
    );
    // Refused: nothing stored, nothing counted.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.metric("wisp_events_published_total"), published);
    assert_eq!(w.metric("wisp_event_stored_bytes"), held);
    assert_eq!(w.metric("wisp_event_queue_depth"), 4.0);

    // A function publishing on the full topic gets queue-full, with the
    // host's message.
    // (The function's event, ~900 bytes, does not fit in what is left.)
    let ask = format!("forward-ct:slow:10:{}", "f".repeat(900));
    let forwarding = published_id(publish(&a, "in", ask.as_bytes()));
    wait_until("the function's publish", Duration::from_secs(30), || {
        kv_text(&a, "fwd", "publish-error").is_some()
    });
    wait_until("its event done", Duration::from_secs(10), || {
        statuses(&event(&a, &forwarding)) == ["done"]
    });
    let err = kv_text(&a, "fwd", "publish-error").unwrap();
    assert!(
        err.contains("QueueFull(") && err.contains("over its storage quota"),
        "{err}"
    );

    // Another topic has room, until all topics together reach 8 KiB.
    for _ in 0..3 {
        accepted.push(published_id(publish(&a, "other", &payload)));
    }
    let resp = publish(&a, "other", &payload);
    assert_eq!(resp.headers()["retry-after"], "1");
    let msg = assert_error(resp, 429, "host_quota_exceeded");
    assert!(
        msg.contains("8192") && msg.contains("--event-host-quota"),
        "{msg}"
    );
    let resp = invoke_async(&a, "q", &payload);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_error(resp, 429, "host_quota_exceeded");
    let out = w.cli(&["publish", "other", "-d", &"p".repeat(1000)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event storage quota"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let held = w.metric("wisp_event_stored_bytes");
    assert!(held > 7500.0 && held <= 8192.0, "{held}");

    // kill -9: the counts are rebuilt from the store, not lost.
    w.kill9();
    let w = w.restart_on(quota_opts());
    let a = w.admin();
    wait_until(
        "the held bytes after the restart",
        Duration::from_secs(5),
        || w.metric("wisp_event_stored_bytes") == held,
    );
    assert_error(publish(&a, "slow", &payload), 429, "topic_quota_exceeded");
    assert_error(publish(&a, "other", &payload), 429, "host_quota_exceeded");

    // The subscriber recovers: every accepted event is delivered once,
    // the quota is free again, and publishing works.
    set_fail(&a, "q", false);
    wait_until("the backlog to drain", Duration::from_secs(60), || {
        counter(&a, "q", "total") == accepted.len() as i64
    });
    for id in &accepted {
        assert_eq!(counter(&a, "q", &format!("done:{id}")), 1, "{id}");
    }
    wait_until(
        "the held bytes to be freed",
        Duration::from_secs(10),
        || w.metric("wisp_event_stored_bytes") == 0.0,
    );
    let again = published_id(publish(&a, "slow", &payload));
    wait_until("a publish after the drain", Duration::from_secs(30), || {
        counter(&a, "q", &format!("done:{again}")) == 1
    });
}

/// Dead letters count toward the quota until purged; a purge answers how
/// many, takes only the topic asked for, and frees the room; what is left
/// expires after the dead-letter retention, with its event.
#[test]
fn dead_letters_are_purged_on_request_and_expire_after_their_retention() {
    let w = Wisp::start_with(
        Opts::default()
            .arg("--event-max-payload")
            .arg("1KiB")
            .arg("--event-topic-quota")
            .arg("5KiB")
            .arg("--event-dlq-retention")
            .arg("12s"),
    );
    let a = w.admin();
    a.deploy_guest("d", "event-counter", &["/d/*"]);
    set_fail(&a, "d", true);
    for topic in ["a", "b"] {
        cli_ok(&w, &["subscribe", "d", topic, "--max-attempts", "1"]);
    }
    let payload = vec![b'p'; 1000];
    let mut dead_a = Vec::new();
    for _ in 0..4 {
        dead_a.push(published_id(publish(&a, "a", &payload)));
    }
    let dead_b = published_id(publish(&a, "b", b"b"));
    wait_until("the deliveries to be dead", Duration::from_secs(30), || {
        dead_a
            .iter()
            .chain([&dead_b])
            .all(|id| statuses(&event(&a, id)) == ["dead"])
    });
    // Dead, and still counted: topic a is full.
    assert_error(publish(&a, "a", &payload), 429, "topic_quota_exceeded");
    let dlq: Vec<Value> = a.get("/v1/functions/d/dlq").json().unwrap();
    assert_eq!(dlq.len(), 5);

    // Errors first: an unknown function, through the API and the CLI.
    let resp = a.delete("/v1/functions/ghost/dlq");
    let msg = assert_error(resp, 404, "function_not_found");
    assert!(msg.contains("ghost"), "{msg}");
    let err = fails(w.cli(&["events", "dlq", "purge", "ghost"]));
    assert!(err.contains("not found"), "{err}");

    let out = cli_ok(&w, &["events", "dlq", "purge", "d", "--topic", "a"]);
    assert_eq!(out.trim(), "purged 4 dead deliveries of d on a");
    let dlq: Vec<Value> = a.get("/v1/functions/d/dlq").json().unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["topic"], "b");
    let out = cli_ok(&w, &["events", "redrive", "d", "--topic", "a"]);
    assert!(out.contains("redrove 0"), "{out}");
    // The room is free; the purged events go with the next sweep.
    set_fail(&a, "d", false);
    let fresh = published_id(publish(&a, "a", &payload));
    wait_until(
        "the purged events to be removed",
        Duration::from_secs(10),
        || {
            dead_a
                .iter()
                .all(|id| a.get(&format!("/v1/events/{id}")).status() == 404)
        },
    );
    wait_until("the new event", Duration::from_secs(30), || {
        counter(&a, "d", &format!("done:{fresh}")) == 1
    });
    let again: Value = a
        .http
        .delete(format!("{}/v1/functions/d/dlq?topic=a", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["purged"], 0);

    // b's dead letter expires 12 s after it died: gone from the list, and
    // its event removed; nothing else was touched.
    wait_until("the dead letter to expire", Duration::from_secs(40), || {
        a.get("/v1/functions/d/dlq")
            .json::<Vec<Value>>()
            .unwrap()
            .is_empty()
    });
    wait_until("its event to be removed", Duration::from_secs(10), || {
        a.get(&format!("/v1/events/{dead_b}")).status() == 404
    });
    assert_eq!(statuses(&event(&a, &fresh)), ["done"]);
    wait_until("nothing held", Duration::from_secs(10), || {
        w.metric("wisp_event_stored_bytes") == 0.0
    });
}

/// A content type over 255 bytes is refused on every path, with 400 (the
/// admin API) or `invalid-topic` (a function), and nothing is stored.
#[test]
fn content_types_over_255_bytes_are_refused_everywhere() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("c", "event-counter", &["/c/*"]);
    a.deploy_guest("fwd", "event-handler", &[]);
    cli_ok(&w, &["subscribe", "c", "t"]);
    cli_ok(&w, &["subscribe", "fwd", "in"]);
    let long = format!("a/{}", "x".repeat(254));
    assert_eq!(long.len(), 256);

    let post = |path: &str, ct: &str| {
        a.http
            .post(format!("{}{path}", a.url))
            .bearer_auth(&a.token)
            .header("content-type", ct)
            .body("x")
            .send()
            .unwrap()
    };
    let msg = assert_error(post("/v1/topics/t/events", &long), 400, "invalid_argument");
    assert!(msg.contains("256 bytes") && msg.contains("255"), "{msg}");
    let msg = assert_error(
        post("/v1/functions/c/invoke-async", &long),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("content type"), "{msg}");
    let err = fails(w.cli(&["publish", "t", "-d", "x", "--content-type", &long]));
    assert!(err.contains("255"), "{err}");
    let err = fails(w.cli(&["schedule", "add", "c", "* * * * *", "--content-type", &long]));
    assert!(err.contains("255"), "{err}");
    let resp = a
        .http
        .post(format!("{}/v1/functions/c/jobs", a.url))
        .bearer_auth(&a.token)
        .json(&serde_json::json!({"array": "0-1", "content_type": long}))
        .send()
        .unwrap();
    let msg = assert_error(resp, 400, "invalid_argument");
    assert!(msg.contains("255"), "{msg}");
    // Nothing stored.
    assert_eq!(w.metric("wisp_events_published_total"), 0.0);
    assert!(cli_ok(&w, &["schedule", "list"]).contains("no schedules"));
    assert!(cli_ok(&w, &["job", "list"]).contains("no jobs"));

    // 255 bytes is fine, and reaches the subscriber as given.
    let ok = format!("a/{}", "x".repeat(253));
    let resp = post("/v1/topics/t/events", &ok);
    let id = published_id(resp);
    assert_eq!(event(&a, &id)["content_type"], ok);
    wait_until("the delivery", Duration::from_secs(30), || {
        counter(&a, "c", &format!("done:{id}")) == 1
    });

    // A function's publish: invalid-topic, naming the content type.
    published_id(publish(&a, "in", b"forward-ct:t:256:hello"));
    wait_until("the function's publish", Duration::from_secs(30), || {
        kv_text(&a, "fwd", "publish-error").is_some()
    });
    let err = kv_text(&a, "fwd", "publish-error").unwrap();
    assert!(
        err.contains("InvalidTopic(") && err.contains("content type") && err.contains("255"),
        "{err}"
    );
    assert_eq!(w.metric("wisp_events_published_total"), 2.0);
    // Within the cap it publishes.
    let via = published_id(publish(&a, "in", b"forward-ct:t:255:hello"));
    wait_until("the forwarded event", Duration::from_secs(30), || {
        kv_text(&a, "fwd", &format!("forwarded:{via}")).is_some()
    });
    let forwarded = kv_text(&a, "fwd", &format!("forwarded:{via}")).unwrap();
    assert_eq!(
        event(&a, &forwarded)["content_type"]
            .as_str()
            .unwrap()
            .len(),
        255
    );
}

/// While the host has no invocation slot free (`--max-in-flight 1`, held
/// by a slow request), deliveries are postponed with no attempt used up:
/// with one attempt allowed they still succeed once the slot is free. A
/// function's own 503 `overloaded` is a failure like any other.
#[test]
fn a_saturated_host_postpones_deliveries_without_using_attempts() {
    let w = Wisp::start_with(Opts::default().arg("--max-in-flight").arg("1"));
    let a = w.admin();
    a.deploy_guest("slow", "misbehave", &["/slow/*"]);
    a.deploy_guest("c", "event-counter", &["/c/*"]);
    a.deploy_guest("h", "event-handler", &[]);
    a.deploy_guest("fake", "misbehave", &["/fake/*"]);
    cli_ok(&w, &["subscribe", "c", "t", "--max-attempts", "1"]);
    cli_ok(&w, &["subscribe", "h", "t", "--max-attempts", "1"]);

    let url = format!("{}/slow/sleep?ms=6000", w.data_url);
    let holder = std::thread::spawn(move || client().get(url).send().unwrap().status());
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let id = published_id(publish(&a, "t", b"while saturated"));
    wait_until("both deliveries postponed", Duration::from_secs(10), || {
        let ev = event(&a, &id);
        ev["deliveries"].as_array().unwrap().iter().all(|d| {
            d["postponed_ms"].as_u64().unwrap_or(0) > 0
                && d["attempts"] == 0
                && d["status"] == "pending"
                && d["last_error"].as_str().unwrap_or("").contains("saturated")
        })
    });
    assert!(labelled_metric(&w, "wisp_event_deliveries_total", "postponed") >= 2.0);
    assert_eq!(holder.join().unwrap(), 200);

    wait_until("both deliveries done", Duration::from_secs(30), || {
        statuses(&event(&a, &id)) == ["done", "done"]
    });
    let ev = event(&a, &id);
    for d in ev["deliveries"].as_array().unwrap() {
        assert_eq!(d["attempts"], 1, "{ev}");
        assert_eq!(d["attempt_times_ms"].as_array().unwrap().len(), 1, "{ev}");
    }
    assert_eq!(counter(&a, "c", &format!("done:{id}")), 1);
    assert_eq!(counter(&a, "h", &format!("done:{id}")), 1);
    assert_eq!(
        labelled_metric(&w, "wisp_event_deliveries_total", "dead"),
        0.0
    );

    // A function answering the host's 503 itself is not believed.
    cli_ok(
        &w,
        &[
            "subscribe",
            "fake",
            "f",
            "--path",
            "/fake/fake-overloaded",
            "--max-attempts",
            "2",
        ],
    );
    let forged = published_id(publish(&a, "f", b"x"));
    wait_until("the forged 503 to be dead", Duration::from_secs(30), || {
        statuses(&event(&a, &forged)) == ["dead"]
    });
    let ev = event(&a, &forged);
    let d = &ev["deliveries"][0];
    assert_eq!(d["attempts"], 2, "{ev}");
    assert!(d.get("postponed_ms").is_none(), "{ev}");
    assert!(d["last_error"].as_str().unwrap().contains("503"), "{ev}");
}

/// A schedule's tick has an id derived from the schedule and the tick
/// (top bit set, never an ordinary id's), readable with `GET
/// /v1/events/{id}`. Killed while the tick is being handled, the host
/// delivers it again after the restart with the same id, and never gives
/// one tick two ids (a tick whose `last_fired_ms` the crash lost fires
/// again with the id it had).
#[test]
fn a_tick_keeps_its_id_across_kill_9() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("s", "event-counter", &["/s/*"]);
    let resp = a
        .http
        .put(format!("{}/v1/functions/s/config", a.url))
        .bearer_auth(&a.token)
        .json(&serde_json::json!({"values": {"sleep_ms": "3000"}}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = cli_ok(
        &w,
        &["schedule", "add", "s", "*/10 * * * * *", "--path", "/tick"],
    );
    let schedule = out.split_whitespace().nth(1).unwrap().to_string();
    let ordinary = published_id(publish(&a, "unrelated", b"x"));

    // The first tick's delivery is running (it sleeps 3 s): kill -9.
    wait_until("a tick being handled", Duration::from_secs(30), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(kv_keys(&a, "s", "seen:").is_empty(), "still sleeping");
    w.kill9();

    // After the restart it is delivered again: the tick of the 10 s
    // before the kill, with the same id (stored once, whether or not its
    // `last_fired_ms` reached the disk).
    let w = w.restart_on(Opts::default());
    let a = w.admin();
    let tick_of = |a: &Admin, id: &str| event(a, id)["time_ms"].as_u64().unwrap() / 10_000;
    let mut id = String::new();
    wait_until("the tick delivered again", Duration::from_secs(30), || {
        let done: Vec<String> = kv_keys(&a, "s", "done:")
            .iter()
            .map(|k| k.strip_prefix("done:").unwrap().to_string())
            .filter(|id| {
                tick_of(&a, id) == killed_ms / 10_000 || tick_of(&a, id) + 1 == killed_ms / 10_000
            })
            .collect();
        match done.first() {
            Some(first) => {
                id = first.clone();
                true
            }
            None => false,
        }
    });
    assert_eq!(counter(&a, "s", &format!("done:{id}")), 1);
    let ev = event(&a, &id);
    assert_eq!(ev["topic"], format!("schedule:{schedule}"));
    assert_eq!(ev["id"], id);
    // Tick ids have the top bit set; ordinary ids count up from 0.
    assert!(u64::from_str_radix(&id, 16).unwrap() >= 1 << 63, "{id}");
    assert!(u64::from_str_radix(&ordinary, 16).unwrap() < 1 << 63);
    // One id per tick: ticks are 10 s apart, so events less than 10 s
    // apart are the same tick.
    let mut ticks: Vec<(u64, String)> = kv_keys(&a, "s", "seen:")
        .iter()
        .map(|k| {
            let id = k.strip_prefix("seen:").unwrap().to_string();
            (event(&a, &id)["time_ms"].as_u64().unwrap() / 10_000, id)
        })
        .collect();
    ticks.sort();
    for pair in ticks.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "one tick, two ids: {ticks:?}");
    }
}

/// Deleting a function removes its subscriptions, schedules, pending and
/// dead deliveries (async invocations included), logs and data: a new
/// function of the same name sees none of them, and none of the old
/// events reach it.
#[test]
fn a_function_deployed_again_after_a_delete_starts_clean() {
    // Failed async invocations stay pending (retried), not dead, until
    // the delete.
    let w = Wisp::start_with(Opts::default().arg("--event-max-attempts").arg("100"));
    let a = w.admin();
    a.deploy_guest("f", "event-counter", &["/f/*"]);
    a.deploy_guest("g", "event-counter", &["/g/*"]);
    set_fail(&a, "f", true);
    cli_ok(&w, &["subscribe", "f", "orders", "--max-attempts", "1"]);
    cli_ok(&w, &["subscribe", "g", "orders"]);
    cli_ok(
        &w,
        &[
            "subscribe",
            "f",
            "slow",
            "--retry-base",
            "1h",
            "--max-age",
            "2h",
        ],
    );
    cli_ok(&w, &["schedule", "add", "f", "0 0 1 1 *"]);
    let dead = published_id(publish(&a, "orders", b"o"));
    let pending = published_id(publish(&a, "slow", b"s"));
    let out = cli_ok(&w, &["invoke", "f", "--async", "-d", "later"]);
    let queued = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until(
        "the old deliveries to fail",
        Duration::from_secs(30),
        || {
            event(&a, &dead)["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["function"] == "f" && d["status"] == "dead")
                && event(&a, &pending)["deliveries"][0]["attempts"] == 1
                && event(&a, &queued)["deliveries"][0]["attempts"].as_u64() >= Some(1)
        },
    );
    let logs: Value = a.get("/v1/functions/f/logs").json().unwrap();
    assert!(!logs["entries"].as_array().unwrap().is_empty());
    assert!(w.metric("wisp_event_stored_bytes") > 0.0);

    cli_ok(&w, &["delete", "f"]);
    // Gone with it: the lists no longer name it.
    let subs: Vec<Value> = a.get("/v1/subscriptions").json().unwrap();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0]["function"], "g");
    let schedules: Vec<Value> = a.get("/v1/schedules").json().unwrap();
    assert!(schedules.is_empty(), "{schedules:?}");
    assert_error(a.get("/v1/functions/f/dlq"), 404, "function_not_found");
    for id in [&pending, &queued] {
        let ev = event(&a, id);
        assert_eq!(statuses(&ev), ["cancelled"], "{ev}");
        assert!(
            ev["deliveries"][0]["last_error"]
                .as_str()
                .unwrap()
                .contains("deleted"),
            "{ev}"
        );
    }
    // g's delivery of the same event is untouched.
    wait_until("g's delivery", Duration::from_secs(30), || {
        counter(&a, "g", &format!("done:{dead}")) == 1
    });

    // The same name again: nothing of the old function.
    a.deploy_guest("f", "event-counter", &["/f/*"]);
    let dlq: Vec<Value> = a.get("/v1/functions/f/dlq").json().unwrap();
    assert!(dlq.is_empty(), "{dlq:?}");
    assert!(cli_ok(&w, &["subscriptions", "f"]).contains("no subscriptions"));
    assert!(cli_ok(&w, &["schedule", "list", "f"]).contains("no schedules"));
    let logs: Value = a.get("/v1/functions/f/logs").json().unwrap();
    assert!(logs["entries"].as_array().unwrap().is_empty(), "{logs}");
    assert!(kv_keys(&a, "f", "").is_empty());
    // The old events never reach it (the async invocation would have been
    // retried within seconds, and would now succeed).
    std::thread::sleep(Duration::from_secs(4));
    assert!(kv_keys(&a, "f", "").is_empty());
    wait_until("nothing held", Duration::from_secs(10), || {
        w.metric("wisp_event_stored_bytes") == 0.0
    });
    // It works as a new function.
    cli_ok(&w, &["subscribe", "f", "orders"]);
    let fresh = published_id(publish(&a, "orders", b"new"));
    wait_until(
        "the new function's delivery",
        Duration::from_secs(30),
        || counter(&a, "f", &format!("done:{fresh}")) == 1,
    );
    assert_eq!(counter(&a, "f", "total"), 1);
}

#[test]
fn a_function_at_its_share_postpones_its_deliveries_without_using_attempts() {
    // The host has room; the function does not (one slot of its own).
    let w = Wisp::start_with(
        Opts::default()
            .arg("--max-in-flight")
            .arg("10")
            .arg("--max-in-flight-per-function")
            .arg("1"),
    );
    let a = w.admin();
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    cli_ok(
        &w,
        &[
            "subscribe",
            "m",
            "t",
            "--path",
            "/m/ok",
            "--max-attempts",
            "1",
        ],
    );
    let url = format!("{}/m/sleep?ms=3000", w.data_url);
    let holder = std::thread::spawn(move || client().get(url).send().unwrap().status());
    wait_until("the slot to be taken", Duration::from_secs(10), || {
        w.metric("wisp_invocations_in_flight") >= 1.0
    });
    let id = published_id(publish(&a, "t", b"while busy"));
    wait_until("the delivery postponed", Duration::from_secs(10), || {
        let d = &event(&a, &id)["deliveries"][0];
        d["postponed_ms"].as_u64().unwrap_or(0) > 0 && d["attempts"] == 0
    });
    assert_eq!(holder.join().unwrap(), 200);
    wait_until("the delivery done", Duration::from_secs(30), || {
        statuses(&event(&a, &id)) == ["done"]
    });
    assert_eq!(event(&a, &id)["deliveries"][0]["attempts"], 1);
}
