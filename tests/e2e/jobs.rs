//! Batch jobs: one POST per array index through the event plane, with
//! retries, per-index state, cancel, resume after `kill -9`, and input
//! checks. The handler is tests/guests/event-counter (it counts each index
//! in its kv: `index-seen:<i>` every attempt, `index-done:<i>` on success).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::{cli_ok, counter, wait_until};
use crate::harness::*;

fn set_config(a: &Admin, function: &str, values: Value) {
    let resp = a
        .http
        .put(format!("{}/v1/functions/{function}/config", a.url))
        .bearer_auth(&a.token)
        .json(&json!({ "values": values }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn start_job(a: &Admin, function: &str, body: Value) -> reqwest::blocking::Response {
    a.http
        .post(format!("{}/v1/functions/{function}/jobs", a.url))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .unwrap()
}

pub(crate) fn job(a: &Admin, id: &str) -> Value {
    let resp = a.get(&format!("/v1/jobs/{id}"));
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

fn started(resp: reqwest::blocking::Response) -> String {
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[test]
fn a_job_runs_every_index_once_and_succeeds() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("f", "event-counter", &["/f/*"]);
    let out = cli_ok(
        &w,
        &[
            "job",
            "run",
            "f",
            "--array",
            "0-9,20",
            "--parallelism",
            "3",
            "--payload",
            "work",
            "--path",
            "/batch",
        ],
    );
    assert!(out.contains("11 indices"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("the job to succeed", Duration::from_secs(60), || {
        job(&a, &id)["state"] == "succeeded"
    });
    let j = job(&a, &id);
    assert_eq!(j["counts"]["done"], 11, "{j}");
    assert_eq!(j["size"], 11);
    let tasks = j["tasks"].as_array().unwrap();
    let indices: Vec<u64> = tasks.iter().map(|t| t["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20]);
    for t in tasks {
        assert_eq!(t["status"], "done", "{t}");
        assert_eq!(t["attempts"], 1, "{t}");
    }
    for i in indices {
        assert_eq!(counter(&a, "f", &format!("index-done:{i}")), 1, "index {i}");
    }
    assert_eq!(counter(&a, "f", "index-seen:15"), 0);
    assert_eq!(counter(&a, "f", "total"), 11);
    let logs = a.get("/v1/functions/f/logs").text().unwrap();
    assert!(
        logs.contains(&format!("job {id} index 20 of 11"))
            && logs.contains(&format!("on job:{id} at /batch")),
        "{logs}"
    );

    let status = cli_ok(&w, &["job", "status", &id]);
    assert!(
        status.contains("succeeded") && status.contains("11 done"),
        "{status}"
    );
    let json_status: Value =
        serde_json::from_str(&cli_ok(&w, &["job", "status", &id, "--json"])).unwrap();
    assert_eq!(json_status["tasks"].as_array().unwrap().len(), 11);
    let list = cli_ok(&w, &["job", "list", "f"]);
    assert!(list.contains(&id) && list.contains("succeeded"), "{list}");
    assert!(cli_ok(&w, &["job", "list", "other"]).contains("no jobs"));
    let listed: Value = a.get("/v1/jobs?function=f").json().unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let doc: Value = a.get("/v1/openapi.json").json().unwrap();
    for p in [
        "/v1/functions/{name}/jobs",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
}

#[test]
fn a_failing_job_ends_failed_after_its_retries() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("g", "event-counter", &["/g/*"]);
    set_config(&a, "g", json!({"fail": "1"}));
    let id = started(start_job(
        &a,
        "g",
        json!({"array": "0-4", "parallelism": 5, "retries": 1}),
    ));
    wait_until("the job to fail", Duration::from_secs(60), || {
        job(&a, &id)["state"] == "failed"
    });
    let j = job(&a, &id);
    assert_eq!(j["counts"]["dead"], 5, "{j}");
    for t in j["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "dead", "{t}");
        assert_eq!(t["attempts"], 2, "{t}");
        assert!(t["last_error"].as_str().unwrap().contains("500"), "{t}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..5 {
        assert_eq!(counter(&a, "g", &format!("index-seen:{i}")), 2, "index {i}");
    }
    let out = cli_ok(&w, &["job", "status", &id]);
    assert!(out.contains("failed") && out.contains("5 dead"), "{out}");
}

#[test]
fn cancel_stops_the_pending_indices() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("c", "event-counter", &["/c/*"]);
    set_config(&a, "c", json!({"sleep_ms": "200"}));
    let id = started(start_job(
        &a,
        "c",
        json!({"array": "0-29", "parallelism": 1}),
    ));
    wait_until("two indices done", Duration::from_secs(60), || {
        counter(&a, "c", "total") >= 2
    });
    let out = cli_ok(&w, &["job", "cancel", &id]);
    assert!(out.contains("cancelled"), "{out}");
    wait_until("nothing left to run", Duration::from_secs(30), || {
        let c = &job(&a, &id)["counts"];
        c["pending"] == 0 && c["running"] == 0
    });
    let j = job(&a, &id);
    assert_eq!(j["state"], "cancelled");
    let done = j["counts"]["done"].as_u64().unwrap();
    let cancelled = j["counts"]["cancelled"].as_u64().unwrap();
    assert!((2..30).contains(&done) && cancelled > 0, "{j}");
    assert_eq!(done + cancelled, 30, "{j}");
    let total = counter(&a, "c", "total");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(counter(&a, "c", "total"), total);
    assert_eq!(total as u64, done);
    // Cancelling again is harmless; an unknown job is 404.
    cli_ok(&w, &["job", "cancel", &id]);
    let resp = a
        .http
        .post(format!("{}/v1/jobs/ffffffffffffffff/cancel", a.url))
        .bearer_auth(&a.token)
        .send()
        .unwrap();
    assert_error(resp, 404, "job_not_found");
    assert_error(a.get("/v1/jobs/nonsense"), 404, "job_not_found");
}

#[test]
fn deleting_the_function_cancels_its_running_jobs() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("d", "event-counter", &["/d/*"]);
    set_config(&a, "d", json!({"sleep_ms": "200"}));
    let id = started(start_job(
        &a,
        "d",
        json!({"array": "0-19", "parallelism": 1}),
    ));
    wait_until("one index done", Duration::from_secs(60), || {
        counter(&a, "d", "total") >= 1
    });
    cli_ok(&w, &["delete", "d"]);
    wait_until("nothing left to run", Duration::from_secs(30), || {
        let c = &job(&a, &id)["counts"];
        c["pending"] == 0 && c["running"] == 0
    });
    let j = job(&a, &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    assert_eq!(j["counts"]["dead"], 0, "{j}");
    assert!(j["counts"]["cancelled"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn a_job_resumes_after_kill_9_without_rerunning_done_indices() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("r", "event-counter", &["/r/*"]);
    set_config(&a, "r", json!({"sleep_ms": "50"}));
    let id = started(start_job(
        &a,
        "r",
        json!({"array": "0-59", "parallelism": 2}),
    ));
    // Done as the host records it (the handler's own counter runs ahead
    // of the recorded outcomes).
    wait_until("some indices done", Duration::from_secs(60), || {
        job(&a, &id)["counts"]["done"].as_u64().unwrap_or(0) >= 10
    });
    // The indices the host has recorded as done, given time to reach the
    // disk (sled's background flush), then kill -9 mid-job.
    let done_before: BTreeSet<u64> = job(&a, &id)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "done")
        .map(|t| t["index"].as_u64().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    w.kill9();
    assert!(done_before.len() >= 10 && done_before.len() < 60);

    let w2 = w.restart_on(Opts::default());
    let a = w2.admin();
    wait_until("the job to succeed", Duration::from_secs(120), || {
        job(&a, &id)["state"] == "succeeded"
    });
    let mut duplicates = 0;
    for i in 0..60u64 {
        let n = counter(&a, "r", &format!("index-done:{i}"));
        assert!(n >= 1, "index {i} never ran");
        if done_before.contains(&i) {
            assert_eq!(n, 1, "index {i} was done before the kill and ran again");
        }
        duplicates += n - 1;
    }
    println!(
        "job resume: {} indices done before kill -9, {} duplicates after (indices running at the kill)",
        done_before.len(),
        duplicates
    );
}

#[test]
fn bad_jobs_are_refused_and_store_nothing() {
    let w = Wisp::start_with(Opts::default().arg("--event-max-payload").arg("1KiB"));
    let a = w.admin();
    a.deploy_guest("b", "event-counter", &["/b/*"]);
    for array in ["", "5-1", "a", "0-100000", "1000001", "1,,2"] {
        let msg = assert_error(
            start_job(&a, "b", json!({ "array": array })),
            400,
            "invalid_argument",
        );
        assert!(msg.contains("array"), "{msg}");
    }
    let msg = assert_error(
        start_job(&a, "b", json!({"array": "0-3", "parallelism": 0})),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("parallelism"), "{msg}");
    let msg = assert_error(
        start_job(&a, "b", json!({"array": "0-3", "retries": 101})),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("retries"), "{msg}");
    assert_error(
        start_job(&a, "nope", json!({"array": "0-3"})),
        404,
        "function_not_found",
    );
    assert_error(
        start_job(
            &a,
            "b",
            json!({"array": "0-3", "payload": "x".repeat(1025)}),
        ),
        413,
        "payload_too_large",
    );
    let out = w.cli(&["job", "run", "b", "--array", "3-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backwards"));
    let all: Value = a.get("/v1/jobs").json().unwrap();
    assert_eq!(all, json!([]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&a, "b", "total"), 0);
}
