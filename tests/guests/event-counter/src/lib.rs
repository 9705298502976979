//! A guest for the host's event tests: an event handler that counts what it
//! is delivered. Any path, any method:
//!
//! - increments the kv key `seen:<wisp-event-id>` (every attempt) and logs
//!   `attempt <wisp-event-attempt> of <id> on <wisp-event-topic> at <path>`;
//! - if the setting `fail` is `1` (`wisp config set NAME fail=1`), answers
//!   `500 failing on purpose`;
//! - otherwise increments `done:<id>` and the key `total`, and answers
//!   `200 ok`.
//!
//! - for a batch-job task (`wisp-job-index`): also increments
//!   `index-seen:<index>` (every attempt) and, on success,
//!   `index-done:<index>`, and logs `job <id> index <i> of <size>`;
//! - if the setting `sleep_ms` is set, sleeps that long first.
//!
//! A request without `wisp-event-id` (a plain invocation) uses the id `none`.
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p event-counter`.

use wisp_sdk::{Request, StatusCode, config, kv, log};

#[wisp_sdk::handler]
fn handle(req: Request) -> (StatusCode, String) {
    let id = req.header("wisp-event-id").unwrap_or("none").to_string();
    let attempt = req.header("wisp-event-attempt").unwrap_or("?");
    let topic = req.header("wisp-event-topic").unwrap_or("?");
    log::info(&format!(
        "attempt {attempt} of {id} on {topic} at {}",
        req.path()
    ));
    if let Some(ms) = config::get("sleep_ms").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let index = req.header("wisp-job-index").map(str::to_string);
    if let Some(i) = &index {
        log::info(&format!(
            "job {} index {i} of {}",
            req.header("wisp-job-id").unwrap_or("?"),
            req.header("wisp-job-array-size").unwrap_or("?")
        ));
        if let Err(e) = kv::increment(&format!("index-seen:{i}"), 1) {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("kv: {e}"));
        }
    }
    if let Err(e) = kv::increment(&format!("seen:{id}"), 1) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("kv: {e}"));
    }
    if config::get("fail").as_deref() == Some("1") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing on purpose".to_string(),
        );
    }
    let counted = kv::increment(&format!("done:{id}"), 1)
        .and_then(|_| kv::increment("total", 1))
        .and_then(|n| match &index {
            Some(i) => kv::increment(&format!("index-done:{i}"), 1),
            None => Ok(n),
        });
    match counted {
        Ok(_) => (StatusCode::OK, "ok".to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("kv: {e}")),
    }
}
