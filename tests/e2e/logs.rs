//! Per-invocation logs: a guest's stdout and stderr are kept, tagged with
//! the invocation id, bounded per invocation, and served by the admin API
//! and `wisp logs`.

use serde_json::Value;

use crate::harness::*;

fn deploy_misbehave(w: &Wisp) {
    let wasm = std::fs::read(guest("misbehave")).unwrap();
    let r = w.admin().deploy("m", &wasm, &[("route", "/m/*")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

fn invocation_id(r: &reqwest::blocking::Response) -> String {
    r.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn logs(w: &Wisp, query: &str) -> Value {
    let r = w.admin().get(&format!("/v1/functions/m/logs{query}"));
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn messages(page: &Value) -> Vec<(String, String)> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn stdout_and_stderr_are_kept_per_invocation() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let first = w.get("/m/print?lines=2");
    assert_eq!(first.status(), 200);
    let first_id = invocation_id(&first);
    let second = w.get("/m/print?lines=1");
    let second_id = invocation_id(&second);

    let page = logs(&w, &format!("?invocation={first_id}"));
    assert_eq!(
        messages(&page),
        vec![
            ("stdout".into(), "stdout line 0".into()),
            ("stdout".into(), "stdout line 1".into()),
            ("stderr".into(), "stderr line".into()),
        ]
    );
    for e in page["entries"].as_array().unwrap() {
        assert_eq!(e["invocation_id"], first_id.as_str());
        assert!(e["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }

    // Everything, oldest first; then reading on from the cursor.
    let all = logs(&w, "");
    assert_eq!(all["entries"].as_array().unwrap().len(), 5);
    assert_eq!(all["entries"][4]["invocation_id"], second_id.as_str());
    let cursor = all["cursor"].as_u64().unwrap();
    let after = logs(&w, &format!("?after={cursor}"));
    assert!(after["entries"].as_array().unwrap().is_empty());
    assert_eq!(after["cursor"].as_u64(), Some(cursor));
    w.get("/m/print?lines=1");
    let next = logs(&w, &format!("?after={cursor}"));
    assert_eq!(next["entries"].as_array().unwrap().len(), 2);
}

#[test]
fn a_panic_message_and_the_failure_are_in_the_log() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let r = w.get("/m/panic");
    assert_eq!(r.status(), 500);
    let id = invocation_id(&r);
    let page = logs(&w, &format!("?invocation={id}"));
    let msgs = messages(&page);
    assert!(
        msgs.iter()
            .any(|(s, m)| s == "stderr" && m.contains("misbehave: panicking as asked")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|(s, m)| s == "wisp" && m.starts_with("invocation failed")),
        "{msgs:?}"
    );
}

#[test]
fn output_past_the_per_invocation_bound_is_truncated_and_marked() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    // ~17 bytes a line: 10,000 lines is ~170 KB, past the 64 KiB default.
    let r = w.get("/m/print?lines=10000");
    assert_eq!(r.status(), 200, "the guest never sees an error for writing");
    let id = invocation_id(&r);
    let page = logs(&w, &format!("?invocation={id}&limit=10000"));
    let msgs = messages(&page);
    let kept: usize = msgs
        .iter()
        .filter(|(s, _)| s != "wisp")
        .map(|(_, m)| m.len())
        .sum();
    assert!(kept <= 64 * 1024, "kept {kept} bytes");
    assert!(kept > 32 * 1024, "kept only {kept} bytes");
    let last = msgs.last().unwrap();
    assert_eq!(last.0, "wisp");
    assert!(last.1.contains("log truncated"), "{last:?}");
    assert!(last.1.contains("65536 bytes per invocation"), "{last:?}");
    // The stderr line came after the limit: dropped, not reordered.
    assert!(!msgs.iter().any(|(s, _)| s == "stderr"));
}

#[test]
fn bad_log_queries_are_refused() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let admin = w.admin();
    assert_error(
        admin.get("/v1/functions/nope/logs"),
        404,
        "function_not_found",
    );
    let msg = assert_error(
        admin.get("/v1/functions/m/logs?since=whenever"),
        400,
        "invalid_argument",
    );
    assert!(msg.contains("RFC 3339"), "{msg}");
    assert_error(
        admin.get("/v1/functions/m/logs?limit=0"),
        400,
        "invalid_argument",
    );
    assert_error(
        admin.get("/v1/functions/m/logs?after=x"),
        400,
        "invalid_argument",
    );
}

#[test]
fn logs_go_with_the_function() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    w.get("/m/print?lines=3");
    assert_eq!(logs(&w, "")["entries"].as_array().unwrap().len(), 4);
    assert_eq!(w.admin().delete("/v1/functions/m").status(), 200);
    deploy_misbehave(&w);
    assert!(logs(&w, "")["entries"].as_array().unwrap().is_empty());
}

#[test]
fn cli_shows_logs_by_invocation_and_since() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let r = w.get("/m/print?lines=2");
    let id = invocation_id(&r);
    w.get("/m/print?lines=1");

    let out = w.cli(&["logs", "m", "--invocation", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains("stdout line 1") && text.contains(&id),
        "{text}"
    );

    let out = w.cli(&["logs", "m", "--since", "1h", "--json"]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);

    let out = w.cli(&["logs", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

/// wisp-sdk sends a response's headers in one host call; a header the host
/// refuses (hop-by-hop) is dropped on its own, noted in the function's log,
/// and the other headers, the status and the body still arrive.
#[test]
fn sdk_drops_only_the_hop_by_hop_response_headers() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let r = w.get("/m/hop");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-kept"], "yes");
    assert!(r.headers().get("keep-alive").is_none());
    let id = invocation_id(&r);
    assert_eq!(r.text().unwrap(), "created");
    let page = logs(&w, &format!("?invocation={id}"));
    let lines = messages(&page);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "stderr");
    assert!(
        lines[0]
            .1
            .starts_with("wisp-sdk: response header keep-alive dropped"),
        "{lines:?}"
    );
}
