//! The dashboard's part of the admin API, through the real binary: each
//! function's last hour (`/v1/functions/{name}/stats`, `/v1/stats`, `wisp
//! stats`), `/v1/whoami`, the live log stream (server-sent events), and no
//! cross-origin answer from the admin API.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// A GET with `token`.
fn get_as(a: &Admin, token: &str, path: &str) -> reqwest::blocking::Response {
    a.http
        .get(format!("{}{path}", a.url))
        .bearer_auth(token)
        .send()
        .unwrap()
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn stats_count_each_functions_invocations_errors_and_latency() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    for _ in 0..5 {
        assert_eq!(w.get("/hello").status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(w.get("/m/trap").status(), 500);
    }
    for _ in 0..2 {
        assert_eq!(w.get("/m/ok").status(), 200);
    }

    let s: Value = a.get("/v1/functions/hello/stats").json().unwrap();
    assert_eq!(s["function"], "hello");
    assert_eq!(s["step_seconds"], 10);
    let end = s["end_unix"].as_u64().unwrap();
    assert_eq!(end % 10, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(end > now && end <= now + 11, "{end} {now}");
    for column in ["requests", "errors", "p50_ms", "p99_ms"] {
        assert_eq!(s[column].as_array().unwrap().len(), 360, "{column}");
    }
    assert_eq!(sum(&s["requests"]), 5);
    assert_eq!(sum(&s["errors"]), 0);
    // Where there were requests, percentiles; elsewhere null.
    for (i, n) in s["requests"].as_array().unwrap().iter().enumerate() {
        let p99 = &s["p99_ms"][i];
        match n.as_u64().unwrap() {
            0 => assert!(p99.is_null(), "{i}: {p99}"),
            _ => assert!(p99.as_f64().unwrap() > 0.0, "{i}: {p99}"),
        }
    }
    assert!(s["p99_ms"][359].is_number() || s["p99_ms"][358].is_number());

    let m: Value = a.get("/v1/functions/m/stats").json().unwrap();
    assert_eq!(sum(&m["requests"]), 5);
    assert_eq!(sum(&m["errors"]), 3);

    // Coarser steps sum the same invocations.
    let m60: Value = a.get("/v1/functions/m/stats?step=60").json().unwrap();
    assert_eq!(m60["step_seconds"], 60);
    assert_eq!(m60["requests"].as_array().unwrap().len(), 60);
    assert_eq!(sum(&m60["requests"]), 5);
    assert_eq!(sum(&m60["errors"]), 3);
    let hour: Value = a.get("/v1/functions/m/stats?step=3600").json().unwrap();
    assert_eq!(hour["requests"], json!([5]));
    assert_eq!(hour["errors"], json!([3]));
    assert!(hour["p50_ms"][0].as_f64().unwrap() > 0.0);

    // Bad steps and unknown functions.
    for bad in ["15", "0", "7200"] {
        let msg = assert_error(
            a.get(&format!("/v1/functions/m/stats?step={bad}")),
            400,
            "invalid_argument",
        );
        assert_eq!(
            msg,
            format!("step must be a multiple of 10 seconds between 10 and 3600, not {bad}")
        );
    }
    assert_error(
        a.get("/v1/functions/m/stats?step=abc"),
        400,
        "invalid_argument",
    );
    assert_error(a.get("/v1/stats?step=5"), 400, "invalid_argument");
    let msg = assert_error(a.get("/v1/functions/nope/stats"), 404, "function_not_found");
    assert_eq!(msg, "function \"nope\" not found");

    // Every function, by name, by minute by default.
    let all: Value = a.get("/v1/stats").json().unwrap();
    assert_eq!(all["step_seconds"], 60);
    let names: Vec<&str> = all["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello", "m"]);
    assert_eq!(sum(&all["functions"][1]["errors"]), 3);
    assert_eq!(
        all["functions"][0]["requests"].as_array().unwrap().len(),
        60
    );

    // The CLI: the steps with invocations, as a table.
    let out = ok(w.cli(&["stats", "m", "--step", "1h"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("TIME (UTC)"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&cells[1..3], ["5", "3"], "{out}");
    let json: Value = serde_json::from_str(&ok(w.cli(&["stats", "m", "--json"]))).unwrap();
    assert_eq!(json["step_seconds"], 60);
    assert_eq!(sum(&json["requests"]), 5);
    let err = fails(w.cli(&["stats", "m", "--step", "15s"]));
    assert!(err.contains("multiple of 10"), "{err}");

    // Deleted, the function's counts go; deployed again, it starts empty.
    assert_eq!(a.delete("/v1/functions/m").status(), 200);
    assert_error(a.get("/v1/functions/m/stats"), 404, "function_not_found");
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    let m: Value = a.get("/v1/functions/m/stats").json().unwrap();
    assert_eq!(sum(&m["requests"]), 0);
}

#[test]
fn stats_and_whoami_answer_each_token_with_what_it_may_see() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("a", "hello", &["/a"]);
    a.deploy_guest("b", "hello", &["/b"]);
    let deployer = a.create_token("deployer-a", &["deploy:a"]);
    let invoker = a.create_token("invoker-b", &["invoke:b"]);
    let reader = a.create_token("reader", &["read:*"]);

    let functions = |token: &str| -> Vec<String> {
        let v: Value = get_as(&a, token, "/v1/stats").json().unwrap();
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(functions(&a.token), ["a", "b"]);
    assert_eq!(functions(&reader), ["a", "b"]);
    assert_eq!(functions(&deployer), ["a"]);
    assert!(functions(&invoker).is_empty());
    // One function's: as reading it.
    assert_eq!(get_as(&a, &deployer, "/v1/functions/a/stats").status(), 200);
    let msg = assert_error(
        get_as(&a, &deployer, "/v1/functions/b/stats"),
        403,
        "forbidden",
    );
    assert_eq!(msg, "this token lacks the scope `read:*` or `deploy:b`");

    let me: Value = get_as(&a, &a.token, "/v1/whoami").json().unwrap();
    assert_eq!(me, json!({"name": "bootstrap", "scopes": ["admin"]}));
    let me: Value = get_as(&a, &deployer, "/v1/whoami").json().unwrap();
    assert_eq!(me, json!({"name": "deployer-a", "scopes": ["deploy:a"]}));
    let me: Value = get_as(&a, &invoker, "/v1/whoami").json().unwrap();
    assert_eq!(me, json!({"name": "invoker-b", "scopes": ["invoke:b"]}));
    let me = block_on(a.api.whoami()).unwrap();
    assert_eq!(me.name, "bootstrap");

    // Without a valid token: 401.
    for path in ["/v1/whoami", "/v1/stats", "/v1/functions/a/stats"] {
        let resp = a.http.get(format!("{}{path}", a.url)).send().unwrap();
        assert_error(resp, 401, "unauthorized");
        assert_error(get_as(&a, "wisp_nope", path), 401, "unauthorized");
    }
}

/// One server-sent event, or a comment (`event` is `:`).
#[derive(Debug)]
struct Sse {
    event: String,
    data: String,
}

/// An open log stream: its events as they come, read by a thread.
struct Stream {
    events: Receiver<Sse>,
}

impl Stream {
    fn open(a: &Admin, path: &str) -> Stream {
        let resp = stream_request(a, &a.token, path);
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut event, mut data) = (String::new(), String::new());
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if let Some(comment) = line.strip_prefix(':') {
                    let sent = tx.send(Sse {
                        event: ":".into(),
                        data: comment.trim().into(),
                    });
                    if sent.is_err() {
                        return;
                    }
                } else if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                } else if line.is_empty() && !event.is_empty() {
                    let sse = Sse {
                        event: std::mem::take(&mut event),
                        data: std::mem::take(&mut data),
                    };
                    if tx.send(sse).is_err() {
                        return;
                    }
                }
            }
        });
        Stream { events }
    }

    /// The next `line` event's entry within `within`, if any.
    fn next_line(&self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(sse) if sse.event == "line" => {
                    return Some(serde_json::from_str(&sse.data).unwrap());
                }
                Ok(sse) => assert_eq!(sse.event, ":", "{sse:?}"),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("the stream ended"),
            }
        }
    }
}

/// A GET of a stream: no deadline on its body.
fn stream_request(a: &Admin, token: &str, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{}{path}", a.url))
        .bearer_auth(token)
        .send()
        .unwrap()
}

fn invocation_id(resp: &reqwest::blocking::Response) -> String {
    resp.headers()["wisp-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The invocation id after `id`: ids are a per-process prefix and a
/// counter (`invocation::next_invocation_id`).
fn next_id(id: &str) -> String {
    let (prefix, n) = id.split_at(8);
    let n = u64::from_str_radix(n, 16).unwrap();
    format!("{prefix}{:012x}", n + 1)
}

#[test]
fn the_log_stream_sends_each_new_line_within_two_seconds() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("m", "misbehave", &["/m/*"]);
    a.deploy_guest("hello", "hello", &["/hello"]);
    // Lines stored before the stream opens are not sent.
    let before = w.get("/m/print?lines=1");
    assert_eq!(before.status(), 200);
    let before = invocation_id(&before);

    let all = Stream::open(&a, "/v1/functions/m/logs/stream");
    // Only the next invocation's lines, and only the one after's.
    let next = next_id(&before);
    let mine = Stream::open(
        &a,
        &format!("/v1/functions/m/logs/stream?invocation={next}"),
    );
    let other = Stream::open(&a, "/v1/functions/hello/logs/stream");

    let sent = Instant::now();
    let resp = w.get("/m/print?lines=1");
    assert_eq!(resp.status(), 200);
    assert_eq!(invocation_id(&resp), next, "no other invocation in between");
    let line = all
        .next_line(Duration::from_secs(2))
        .expect("a line within 2 s");
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_eq!(line["invocation_id"], next.as_str());
    assert_eq!(line["stream"], "stdout");
    assert_eq!(line["message"], "stdout line 0");
    assert!(line["seq"].as_u64().unwrap() > 0);
    let second = all.next_line(Duration::from_secs(2)).unwrap();
    assert_eq!(second["message"], "stderr line");
    let line = mine.next_line(Duration::from_secs(2)).unwrap();
    assert_eq!(line["invocation_id"], next.as_str());
    assert_eq!(
        mine.next_line(Duration::from_secs(2)).unwrap()["stream"],
        "stderr"
    );

    // The invocation after: on the unfiltered stream only.
    let after = w.get("/m/print?lines=1");
    let after = invocation_id(&after);
    let line = all.next_line(Duration::from_secs(2)).unwrap();
    assert_eq!(line["invocation_id"], after.as_str());
    assert_eq!(mine.next_line(Duration::from_millis(500)), None);
    // Another function's stream sees none of m's lines.
    assert_eq!(other.next_line(Duration::from_millis(200)), None);
    // The page read of the log has the same lines, with the same seq.
    let page: Value = a
        .get(&format!("/v1/functions/m/logs?invocation={after}"))
        .json()
        .unwrap();
    assert_eq!(page["entries"][0]["seq"], line["seq"]);
    assert!(before != after);
}

#[test]
fn log_streams_are_refused_for_unknown_functions_bad_tokens_and_past_64() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    let path = "/v1/functions/hello/logs/stream";
    assert_error(
        stream_request(&a, &a.token, "/v1/functions/nope/logs/stream"),
        404,
        "function_not_found",
    );
    let resp = a.http.get(format!("{}{path}", a.url)).send().unwrap();
    assert_error(resp, 401, "unauthorized");
    let invoker = a.create_token("invoker", &["invoke:hello"]);
    assert_error(stream_request(&a, &invoker, path), 403, "forbidden");
    let deployer = a.create_token("deployer", &["deploy:hello"]);

    // 64 open (one of them a scoped token's); the 65th is refused.
    let mut open: Vec<_> = (0..63)
        .map(|_| {
            let r = stream_request(&a, &a.token, path);
            assert_eq!(r.status(), 200);
            r
        })
        .collect();
    let r = stream_request(&a, &deployer, path);
    assert_eq!(r.status(), 200);
    open.push(r);
    let msg = assert_error(stream_request(&a, &a.token, path), 503, "unavailable");
    assert!(msg.contains("64 log streams"), "{msg}");
    // One closed, its place is free again (once the host sees it gone: at
    // the latest when the next keep-alive cannot be written).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = stream_request(&a, &a.token, path);
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_admin_api_answers_no_cross_origin_request() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    for path in [
        "/v1/functions/hello",
        "/v1/functions/hello/rollback",
        "/v1/stats",
    ] {
        for token in [None, Some(a.token.as_str())] {
            let mut req = a
                .http
                .request(reqwest::Method::OPTIONS, format!("{}{path}", a.url))
                .header("Origin", "https://evil.example")
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "authorization");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().unwrap();
            assert!(!resp.status().is_success(), "{path}: {}", resp.status());
            for h in resp.headers().keys() {
                assert!(
                    !h.as_str().starts_with("access-control-"),
                    "{path}: {h} in {:?}",
                    resp.headers()
                );
            }
        }
    }
    // A plain cross-origin GET is answered (with the token), but without
    // the header that would let a page read it.
    let resp = a
        .http
        .get(format!("{}/v1/stats", a.url))
        .bearer_auth(&a.token)
        .header("Origin", "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
