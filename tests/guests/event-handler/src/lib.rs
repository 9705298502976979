//! A guest for the host's event tests: a typed event handler
//! (`#[wisp_sdk::event_handler]`) and no HTTP handler, so the component
//! exports only `wisp:function/event-handler`. For every event:
//!
//! - increments the kv key `seen:<id>` (every attempt) and logs
//!   `attempt <n> of <id> on <topic>`;
//! - if the setting `fail` is `1`, fails with `failing on purpose`;
//! - if the payload is `trap`, panics (a trap);
//! - if the payload is `fail-with:TEXT`, fails with TEXT (as lossy UTF-8);
//! - if the payload is `sleep:MS`, sleeps MS milliseconds first (a slow
//!   handler: admission tests), then goes on as below;
//! - if the payload is `forward:TOPIC:TEXT`, publishes TEXT on TOPIC
//!   (`wisp:function/topics`) and writes the new event's id to
//!   `forwarded:<id>`, or the error to `publish-error`;
//! - if the payload is `forward-ct:TOPIC:N:TEXT`, the same with a content
//!   type of N bytes (`a/` then `x`s), through the raw import; the error is
//!   written as `{:?}` (the WIT case and its message);
//! - otherwise writes what it was given, as JSON, to `last` and to
//!   `event:<id>` (topic, attempt, content type, payload as text, job
//!   index and array size), increments `done:<id>`, `total` and, for a job
//!   task, `index-done:<index>`.
//!
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p event-handler`.

use wisp_sdk::{Event, config, events, kv, log};

#[wisp_sdk::event_handler]
fn on_event(event: Event) -> Result<(), String> {
    log::info(&format!(
        "attempt {} of {} on {}",
        event.attempt, event.id, event.topic
    ));
    kv::increment(&format!("seen:{}", event.id), 1).map_err(|e| format!("kv: {e}"))?;
    if config::get("fail").as_deref() == Some("1") {
        return Err("failing on purpose".into());
    }
    if event.payload == b"trap" {
        panic!("trapping on purpose");
    }
    if let Some(ms) = event.payload.strip_prefix(b"sleep:") {
        let ms: u64 = std::str::from_utf8(ms)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .ok_or("usage: sleep:MS")?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Some(text) = event.payload.strip_prefix(b"fail-with:") {
        return Err(String::from_utf8_lossy(text).into_owned());
    }
    if let Some(rest) = event.payload.strip_prefix(b"forward-ct:")
        && let Some((topic, rest)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once(':'))
        && let Some((n, text)) = rest.split_once(':')
    {
        let n: usize = n.parse().map_err(|_| format!("bad length {n:?}"))?;
        let content_type = format!("a/{}", "x".repeat(n.saturating_sub(2)));
        use wisp_sdk::__private::topics;
        match topics::publish(topic, text.as_bytes(), Some(&content_type)) {
            Ok(id) => kv::set(&format!("forwarded:{}", event.id), id.as_bytes()),
            Err(e) => kv::set("publish-error", format!("{e:?}").as_bytes()),
        }
        .map_err(|e| format!("kv: {e}"))?;
    } else if let Some(rest) = event.payload.strip_prefix(b"forward:")
        && let Some((topic, text)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once(':'))
    {
        match events::publish(topic, text) {
            Ok(id) => kv::set(&format!("forwarded:{}", event.id), id.as_bytes()),
            Err(e) => kv::set("publish-error", e.to_string().as_bytes()),
        }
        .map_err(|e| format!("kv: {e}"))?;
    }
    let record = serde_json::json!({
        "id": event.id,
        "topic": event.topic,
        "time_ms": event.time_ms,
        "attempt": event.attempt,
        "content_type": event.content_type,
        "payload": String::from_utf8_lossy(&event.payload),
        "job_index": event.job.as_ref().map(|j| j.index),
        "job_array_size": event.job.as_ref().map(|j| j.array_size),
        "job_id": event.job.as_ref().map(|j| j.id.clone()),
    });
    let write = || -> Result<(), kv::Error> {
        kv::set_json("last", &record)?;
        kv::set_json(&format!("event:{}", event.id), &record)?;
        kv::increment(&format!("done:{}", event.id), 1)?;
        kv::increment("total", 1)?;
        if let Some(job) = &event.job {
            kv::increment(&format!("index-done:{}", job.index), 1)?;
        }
        Ok(())
    };
    write().map_err(|e| format!("kv: {e}"))
}
