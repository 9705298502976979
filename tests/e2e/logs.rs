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

/// The invocation id of an answer whose body has been read whole: the host
/// has written the invocation's log by then (not before its body's end).
fn answered_id(r: reqwest::blocking::Response) -> String {
    let id = invocation_id(&r);
    let _ = r.bytes();
    id
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
    let first_id = answered_id(first);
    let second = w.get("/m/print?lines=1");
    let second_id = answered_id(second);

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
    let _ = w.get("/m/print?lines=1").bytes();
    let next = logs(&w, &format!("?after={cursor}"));
    assert_eq!(next["entries"].as_array().unwrap().len(), 2);
}

#[test]
fn a_panic_message_and_the_failure_are_in_the_log() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let r = w.get("/m/panic");
    assert_eq!(r.status(), 500);
    let id = answered_id(r);
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
    // Lines enough that the 64 KiB bound binds before the line bound.
    let w = Wisp::start_with(Opts::default().arg("--log-lines-per-invocation=100000"));
    deploy_misbehave(&w);
    // ~16 bytes a line and 32 more for each: 10,000 lines cost ~480 KB.
    let r = w.get("/m/print?lines=10000");
    assert_eq!(r.status(), 200, "the guest never sees an error for writing");
    let id = answered_id(r);
    let page = logs(&w, &format!("?invocation={id}&limit=10000"));
    let msgs = messages(&page);
    let kept: Vec<&String> = msgs
        .iter()
        .filter(|(s, _)| s != "wisp")
        .map(|(_, m)| m)
        .collect();
    let cost: usize = kept.iter().map(|m| m.len() + 32).sum();
    assert!(cost <= 64 * 1024, "kept {cost} bytes");
    assert!(
        cost > 64 * 1024 - 64,
        "kept only {cost} bytes: {:?}",
        &msgs[..msgs.len().min(3)]
    );
    let last = msgs.last().unwrap();
    assert_eq!(last.0, "wisp");
    let dropped = 10_000 - kept.len() + 1;
    assert!(
        last.1
            .starts_with(&format!("log truncated: {dropped} lines and ")),
        "{last:?}"
    );
    assert!(last.1.contains("65536 bytes per invocation"), "{last:?}");
    // The stderr line came after the limit: dropped, not reordered.
    assert!(!msgs.iter().any(|(s, _)| s == "stderr"));
}

/// The lines of one invocation of function `f`, up to 10,000.
fn invocation_log(w: &Wisp, f: &str, id: &str) -> Vec<(String, String)> {
    let r = w.admin().get(&format!(
        "/v1/functions/{f}/logs?invocation={id}&limit=10000"
    ));
    assert_eq!(r.status(), 200);
    messages(&r.json().unwrap())
}

/// The attack of issue 14 at a tenth of its size: a guest writing empty
/// lines (which the byte bound alone never counted). The stored log holds
/// the line bound and one note; the answer is still the guest's; the host
/// goes on serving.
#[test]
fn a_flood_of_empty_lines_is_capped_by_lines() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    let r = w.get("/m/flood?lines=300000");
    assert_eq!(r.status(), 200);
    let id = invocation_id(&r);
    assert_eq!(r.text().unwrap(), "flooded 300000 empty lines");
    let msgs = invocation_log(&w, "m", &id);
    assert_eq!(msgs.len(), 1001, "{:?}", &msgs[msgs.len() - 2..]);
    assert!(
        msgs[..1000]
            .iter()
            .all(|(s, m)| s == "stdout" && m.is_empty())
    );
    assert_eq!(msgs[1000].0, "wisp");
    assert!(
        msgs[1000].1.starts_with(
            "log truncated: 299000 lines and 0 bytes dropped (the limits are 1000 lines and \
             65536 bytes per invocation"
        ),
        "{:?}",
        msgs[1000]
    );
    let r = w.get("/m/print?lines=1");
    assert_eq!(r.status(), 200);
    let next = invocation_log(&w, "m", &answered_id(r));
    assert_eq!(next.len(), 2, "{next:?}");
}

/// The same with empty `wisp:function/log` calls.
#[test]
fn a_flood_of_empty_log_calls_is_capped_by_lines() {
    let w = Wisp::start();
    w.admin().deploy_guest("caps", "caps", &["/caps/*"]);
    let r = w.get("/caps/log?msg=&n=300000");
    assert_eq!(r.status(), 200);
    let id = invocation_id(&r);
    assert_eq!(r.json::<Value>().unwrap()["logged"], 300000);
    let msgs = invocation_log(&w, "caps", &id);
    assert_eq!(msgs.len(), 1001);
    assert!(msgs[..1000].iter().all(|(s, m)| s == "log" && m.is_empty()));
    assert!(
        msgs[1000]
            .1
            .starts_with("log truncated: 299000 lines and 0 bytes dropped"),
        "{:?}",
        msgs[1000]
    );
    let r = w.get("/caps/log?msg=after&n=1");
    assert_eq!(r.status(), 200);
    assert_eq!(
        invocation_log(&w, "caps", &answered_id(r)),
        vec![("log".to_string(), "after".to_string())]
    );
}

#[test]
fn the_line_bound_is_configurable_and_checked() {
    let w = Wisp::start_with(Opts::default().env("WISP_LOG_LINES_PER_INVOCATION", "5"));
    deploy_misbehave(&w);
    let r = w.get("/m/print?lines=10");
    assert_eq!(r.status(), 200);
    let msgs = invocation_log(&w, "m", &answered_id(r));
    assert_eq!(msgs.len(), 6, "{msgs:?}");
    assert_eq!(msgs[4], ("stdout".into(), "stdout line 4".into()));
    // Five more stdout lines and the stderr line.
    assert!(
        msgs[5]
            .1
            .starts_with("log truncated: 6 lines and 76 bytes dropped (the limits are 5 lines and"),
        "{msgs:?}"
    );

    for bad in ["0", "1000001"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .args(["serve", "--log-lines-per-invocation", bad])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the log lines per invocation must be between 1 and 1000000"),
            "{err}"
        );
    }
}

/// Waits (up to 10 s) for a line of the host's log that contains all of
/// `parts`, and returns it.
fn host_log_line(w: &Wisp, parts: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(l) = w
            .log_text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no host log line with {parts:?}:\n{}",
            w.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Thousands of denied requests in one invocation used to be as many
/// WARN lines in the host log and notes in the function's.
#[test]
fn denied_outbound_requests_are_summarised_once_per_invocation() {
    let w = Wisp::start();
    w.admin().deploy_guest("caps", "caps", &["/caps/*"]);
    let r = client()
        .get(format!("{}/caps/fetch", w.data_url))
        .query(&[("url", "http://127.0.0.1:9/x"), ("n", "300")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = invocation_id(&r);
    let answer: Value = r.json().unwrap();
    assert_eq!(answer["failed"], 300, "{}", answer["results"][0]);

    let line = host_log_line(&w, &[&id, "outbound requests denied"]);
    assert!(
        line.contains(
            "outbound requests denied: 300; first: outbound request to http://127.0.0.1:9 \
             denied: not on the function's allow-list"
        ),
        "{line}"
    );
    let text = w.log_text();
    let denials: Vec<&str> = text.lines().filter(|l| l.contains("denied")).collect();
    assert_eq!(denials, vec![line.as_str()], "one line, not one per denial");

    let msgs = invocation_log(&w, "caps", &id);
    assert_eq!(msgs.len(), 11, "{msgs:?}");
    assert!(msgs[..10].iter().all(|(s, m)| s == "wisp"
        && m == "outbound request to http://127.0.0.1:9 denied: not on the function's allow-list"));
    assert_eq!(
        msgs[10],
        (
            "wisp".into(),
            "outbound requests denied: 300 in this invocation, the first 10 above".into()
        )
    );
    // The next invocation has its own count.
    let r = client()
        .get(format!("{}/caps/fetch", w.data_url))
        .query(&[("url", "http://127.0.0.1:9/x"), ("n", "2")])
        .send()
        .unwrap();
    let id = answered_id(r);
    host_log_line(&w, &[&id, "outbound requests denied: 2;"]);
    assert_eq!(invocation_log(&w, "caps", &id).len(), 2);
}

/// What tests/guests/misbehave puts before its error messages.
const HOSTILE: &str =
    "misbehave: \x1b[31mred\x1b[0m\n2030-01-01T00:00:00Z  INFO wisp: forged line\r\u{9b}2J";
/// The same, as `untrusted::clip` escapes it.
const HOSTILE_ESCAPED: &str =
    r"misbehave: \u{1b}[31mred\u{1b}[0m\n2030-01-01T00:00:00Z  INFO wisp: forged line\r\u{9b}2J";

/// No control characters, at most 1 KiB and a marker (of 10 KiB and more).
fn assert_clipped(text: &str) {
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.len() < 1024 + 200, "{} bytes: {text}", text.len());
    assert!(text.ends_with(" bytes cut]"), "{text}");
}

#[test]
fn guest_error_text_is_clipped_and_escaped_in_responses_logs_and_deliveries() {
    let w = Wisp::start();
    deploy_misbehave(&w);
    // An error code whose message forges a log line, with 10 KiB after it.
    let r = w.get("/m/errorcode?kb=10");
    let id = invocation_id(&r);
    let msg = assert_error(r, 500, "function_error");
    assert_clipped(&msg);
    assert!(msg.starts_with("the function reported an error: "), "{msg}");
    assert!(msg.contains("forged line"), "{msg}");
    // The error is the line's last field.
    let line = host_log_line(&w, &[&id, "guest answered an error"]);
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(line.len() < 1024 + 400, "{line}");
    assert!(line.ends_with(" bytes cut]"), "{line}");
    assert!(
        !w.log_text().lines().any(|l| l.starts_with("2030-01-01")),
        "a forged line in the host log"
    );
    assert_eq!(w.get("/m/ok").status(), 200);

    // An event handler failing with it: the delivery's record, the host
    // log's line for the dead delivery and the function's log.
    let a = w.admin();
    a.deploy_guest("ev", "event-handler", &[]);
    let out = w.cli(&["subscribe", "ev", "hostile", "--max-attempts", "1"]);
    assert!(out.status.success(), "{out:?}");
    let payload = format!("fail-with:{HOSTILE}{}", "x".repeat(10 * 1024));
    let id = crate::events::published_id(crate::events::publish(&a, "hostile", payload.as_bytes()));
    crate::events::wait_until(
        "the delivery to be dead",
        std::time::Duration::from_secs(30),
        || crate::events::statuses(&crate::events::event(&a, &id)) == ["dead"],
    );
    let ev = crate::events::event(&a, &id);
    let last_error = ev["deliveries"][0]["last_error"].as_str().unwrap();
    assert_clipped(last_error);
    assert!(
        last_error.starts_with(&format!(
            "the handler returned an error: {HOSTILE_ESCAPED}xxx"
        )),
        "{last_error}"
    );
    // Every `x` either kept or counted as cut.
    let (kept, marker) = last_error.split_once("… [").unwrap();
    let cut: usize = marker.trim_end_matches(" bytes cut]").parse().unwrap();
    assert_eq!(kept.matches('x').count() + cut, 10 * 1024, "{last_error}");
    let line = host_log_line(&w, &[&id, "event delivery is dead"]);
    assert!(line.contains(HOSTILE_ESCAPED), "{line}");
    assert!(line.len() < 1024 + 400, "{line}");
    let notes: Vec<(String, String)> = a
        .get("/v1/functions/ev/logs")
        .json::<Value>()
        .map(|page| messages(&page))
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s == "wisp")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_clipped(&notes[0].1);
    assert!(notes[0].1.contains(HOSTILE_ESCAPED), "{notes:?}");
    assert!(
        !w.log_text().lines().any(|l| l.starts_with("2030-01-01")),
        "a forged line in the host log"
    );
}

/// `wisp logs` on a terminal escapes what the guest wrote; piped, and as
/// `--json`, the text is exact. The terminal is a pseudo-terminal that
/// util-linux `script` gives the command.
#[test]
fn wisp_logs_escapes_control_sequences_on_a_terminal() {
    let w = Wisp::start();
    w.admin().deploy_guest("caps", "caps", &["/caps/*"]);
    let logged = "\x1b[31mred\x1b[0m \x1b]0;owned\x07 \u{9b}2J done";
    let r = client()
        .get(format!("{}/caps/log", w.data_url))
        .query(&[("msg", logged)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // Piped: exact.
    let out = w.cli(&["logs", "caps"]);
    assert!(out.status.success());
    let piped = String::from_utf8(out.stdout).unwrap();
    assert!(piped.contains(logged), "{piped:?}");
    // JSON: exact.
    let out = w.cli(&["logs", "caps", "--json"]);
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["message"], logged);

    // On a terminal: escaped.
    let command = format!("'{}' logs caps", env!("CARGO_BIN_EXE_wisp"));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains(r"\u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7} \u{9b}2J done"),
        "{shown:?}"
    );
    assert!(
        !shown.contains('\x1b') && !shown.contains('\u{9b}'),
        "{shown:?}"
    );
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
    let _ = w.get("/m/print?lines=3").bytes();
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
    let id = answered_id(r);
    let _ = w.get("/m/print?lines=1").bytes();

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
