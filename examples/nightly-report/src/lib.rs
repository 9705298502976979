//! A scheduled function: on each cron tick its event handler writes a
//! report into key-value storage; two HTTP routes read the reports back.
//!
//! Build, deploy and schedule it (from the workspace root, with
//! `wisp serve` running):
//!
//! ```text
//! wisp deploy nightly-report --from examples/nightly-report --route '/reports/*'
//! # or: cargo build --release --target wasm32-wasip2 -p nightly-report
//! #     wisp deploy nightly-report target/wasm32-wasip2/release/nightly_report.wasm --route '/reports/*'
//! wisp schedule add nightly-report '0 2 * * *' --payload '{"title":"nightly"}'   # 02:00 UTC
//! wisp invoke nightly-report --async -d '{"title":"now"}'   # a report right away
//! curl http://127.0.0.1:8080/reports/latest
//! curl http://127.0.0.1:8080/reports
//! ```
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /reports/latest` | `200`, the latest report; `404` before the first |
//! | `GET /reports` | `200`, every report, newest first (at most 100) |
//!
//! Each event (a tick, or an asynchronous invocation) makes one report:
//! its run number, when the tick fired, the payload's `title` (default
//! `report`), what triggered it (the schedule's id), the delivery attempt,
//! and how long it has been since the previous report. It is stored under
//! `report:<tick time, RFC 3339 UTC with milliseconds>` (so the keys sort
//! by time) and as `latest`. A redelivered tick finds its report already
//! written and does not count a second run.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wisp_sdk::{Error, Event, Json, Router, kv, log};

/// Reports are stored under `report:<tick>`.
const PREFIX: &str = "report:";
/// The latest report, a copy of the newest `report:` value.
const LATEST: &str = "latest";
/// How many reports have been written.
const RUNS: &str = "runs";
/// `GET /reports` returns at most this many.
const LIST_MAX: usize = 100;

#[wisp_sdk::handler]
fn app() -> Router {
    Router::new()
        .get("/reports", list)
        .get("/reports/latest", latest)
}

/// What the schedule's payload may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    title: Option<String>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The title the schedule's payload gave (or the default).
    pub title: String,
    /// 1 for the first report, then 2, 3...
    pub run: i64,
    /// When the tick fired (RFC 3339, UTC).
    pub tick: String,
    /// The same, ms since the epoch.
    pub tick_ms: u64,
    /// The topic of the event: `schedule:ID` for a tick, `invoke:NAME` for
    /// `wisp invoke --async`.
    pub trigger: String,
    /// The id of the event that carried the tick.
    pub event_id: String,
    /// The delivery attempt that wrote it.
    pub attempt: u32,
    /// Since the previous report's tick, if there was one.
    pub since_previous_ms: Option<u64>,
}

/// `2024-05-01T02:00:00.000Z` for a time in ms since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The payload's title: `report` when the payload is empty or has none.
fn title(payload: &[u8]) -> Result<String, Error> {
    let spec: Spec = if payload.iter().all(u8::is_ascii_whitespace) {
        Spec::default()
    } else {
        serde_json::from_slice(payload).map_err(|e| {
            Error::bad_request(format!(
                r#"the payload is not {{"title": "..."}} (or empty): {e}"#
            ))
        })?
    };
    Ok(spec.title.unwrap_or_else(|| "report".into()))
}

/// Runs on each tick of the schedule (and each asynchronous invocation).
#[wisp_sdk::event_handler]
fn on_tick(event: Event) -> Result<(), Error> {
    let report = write_report(&event)?;
    log::info!(
        "report {} ({}) for the tick at {}, attempt {}",
        report.run,
        report.title,
        report.tick,
        report.attempt
    );
    Ok(())
}

/// Writes the report of `event` (or, for a redelivery, the one already
/// written) and makes it the latest.
pub fn write_report(event: &Event) -> Result<Report, Error> {
    let tick = rfc3339(event.time_ms);
    let key = format!("{PREFIX}{tick}");
    // A retry of a tick whose report was written: keep it, count no new run.
    if let Some(done) = kv::get_json::<Report>(&key)?
        && done.event_id == event.id
    {
        kv::set_json(LATEST, &done)?;
        return Ok(done);
    }
    let title = title(&event.payload)?;
    let previous = kv::get_json::<Report>(LATEST)?;
    let report = Report {
        title,
        run: kv::increment(RUNS, 1)?,
        tick,
        tick_ms: event.time_ms,
        trigger: event.topic.clone(),
        event_id: event.id.clone(),
        attempt: event.attempt,
        since_previous_ms: previous.map(|p| event.time_ms.saturating_sub(p.tick_ms)),
    };
    kv::set_json(&key, &report)?;
    kv::set_json(LATEST, &report)?;
    Ok(report)
}

/// `GET /reports/latest`.
fn latest() -> Result<Json<Report>, Error> {
    kv::get_json(LATEST)?
        .map(Json)
        .ok_or_else(|| Error::not_found("no report yet: the schedule has not fired"))
}

/// `GET /reports`: newest first.
fn list() -> Result<Json<Vec<Report>>, Error> {
    let keys = kv::list_keys(PREFIX).collect::<Result<Vec<_>, _>>()?;
    let mut reports = Vec::new();
    for key in keys.iter().rev().take(LIST_MAX) {
        if let Some(report) = kv::get_json(key)? {
            reports.push(report);
        }
    }
    Ok(Json(reports))
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{Method, Request, testing};

    use super::*;

    fn tick(id: &str, time_ms: u64, payload: &str) -> Event {
        let mut e = Event::new("schedule:00000000000000a1", payload.as_bytes().to_vec());
        e.id = id.into();
        e.time_ms = time_ms;
        e
    }

    fn get(uri: &str) -> (u16, serde_json::Value) {
        let resp = app().handle(Request::new(Method::GET, uri));
        (resp.status(), serde_json::from_slice(resp.body()).unwrap())
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_714_528_800_123), "2024-05-01T02:00:00.123Z");
    }

    #[test]
    fn each_tick_writes_one_report() {
        testing::reset();
        assert_eq!(get("/reports/latest").0, 404);
        let first = tick("e1", 1_714_528_800_000, r#"{"title":"nightly"}"#);
        on_tick(first.clone()).unwrap();
        // A redelivery of the same tick: no second run.
        let mut again = first;
        again.attempt = 2;
        assert_eq!(write_report(&again).unwrap().run, 1);
        on_tick(tick("e2", 1_714_615_200_000, "")).unwrap();

        let (status, latest) = get("/reports/latest");
        assert_eq!(status, 200);
        assert_eq!(latest["run"], 2);
        assert_eq!(latest["title"], "report");
        assert_eq!(latest["tick"], "2024-05-02T02:00:00.000Z");
        assert_eq!(latest["since_previous_ms"], 86_400_000);
        assert_eq!(latest["trigger"], "schedule:00000000000000a1");
        let (_, all) = get("/reports");
        let runs: Vec<_> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run"].clone())
            .collect();
        assert_eq!(runs, [2, 1]);
        assert_eq!(all[1]["title"], "nightly");
        assert_eq!(all[1]["attempt"], 1);
        assert_eq!(all[1]["since_previous_ms"], serde_json::Value::Null);
        assert!(
            kv::get("report:2024-05-01T02:00:00.000Z")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_bad_payload_fails_the_tick() {
        testing::reset();
        let e = on_tick(tick("e1", 1, "not json")).unwrap_err();
        assert!(e.message().contains("title"), "{e}");
        assert!(on_tick(tick("e2", 2, r#"{"titel":"x"}"#)).is_err());
        assert_eq!(get("/reports").1, serde_json::json!([]));
    }
}
