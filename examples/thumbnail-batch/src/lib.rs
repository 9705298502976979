//! A batch job: each array index "renders a thumbnail" — a small grayscale
//! image (PGM) that depends only on the index — and stores it; an HTTP
//! route serves the results.
//!
//! Build, deploy and run it (from the workspace root, with `wisp serve`
//! running):
//!
//! ```text
//! wisp deploy thumbnail-batch --from examples/thumbnail-batch --route '/thumbnails/*'
//! # or: cargo build --release --target wasm32-wasip2 -p thumbnail-batch
//! #     wisp deploy thumbnail-batch target/wasm32-wasip2/release/thumbnail_batch.wasm --route '/thumbnails/*'
//! wisp job run thumbnail-batch --array 0-9 --parallelism 4 --payload '{"width":64}'
//! wisp job status JOB_ID                          # succeeded: 10 done
//! curl -o 3.pgm http://127.0.0.1:8080/thumbnails/3
//! curl http://127.0.0.1:8080/thumbnails           # {"indices":[0,1,...,9]}
//! # the failure path: index 3 fails on purpose, is retried twice, ends dead
//! wisp config set thumbnail-batch fail-index=3
//! wisp job run thumbnail-batch --array 0-9 --retries 2
//! wisp job status JOB_ID                          # failed: 9 done, 1 dead (index 3, 3 attempts)
//! wisp config unset thumbnail-batch fail-index
//! ```
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /thumbnails/:i` | `200`, index `i`'s thumbnail (`image/x-portable-graymap`); `404` if it was not rendered |
//! | `GET /thumbnails` | `200 {"indices"}`, the rendered indices in order |
//!
//! The job's payload is `{"width": N}` (1 to 256, default 32; the image is
//! square). Each task stores its image under `thumb:<index>`: writing the
//! same bytes again is harmless, so a redelivered task needs no special
//! care. The setting `fail-index` (an index, or several separated by
//! commas) makes those indices fail on purpose, to show retries and a
//! failed job.

use serde::{Deserialize, Serialize};
use wisp_sdk::{Error, Event, Json, Path, Response, Router, config, kv, log};

/// Thumbnails are stored under `thumb:<index>`.
const PREFIX: &str = "thumb:";
/// The default and largest width.
const DEFAULT_WIDTH: u32 = 32;
const MAX_WIDTH: u32 = 256;
/// The content type of a PGM image.
pub const PGM: &str = "image/x-portable-graymap";

#[wisp_sdk::handler]
fn app() -> Router {
    Router::new()
        .get("/thumbnails", list)
        .get("/thumbnails/:index", show)
}

/// The job's payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    width: Option<u32>,
}

/// The width the job's payload asks for: `{"width": N}`, or empty for the
/// default.
pub fn width(payload: &[u8]) -> Result<u32, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_WIDTH);
    }
    let spec: Spec = serde_json::from_slice(payload)
        .map_err(|e| format!(r#"the job payload is not {{"width": N}}: {e}"#))?;
    match spec.width.unwrap_or(DEFAULT_WIDTH) {
        w @ 1..=MAX_WIDTH => Ok(w),
        w => Err(format!("width must be between 1 and {MAX_WIDTH} (got {w})")),
    }
}

/// The indices the `fail-index` setting lists (`"3"`, `"3, 7"`).
pub fn fail_indices(setting: Option<&str>) -> Result<Vec<u32>, String> {
    let Some(setting) = setting else {
        return Ok(Vec::new());
    };
    setting
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("the setting fail-index={setting:?} is not a list of indices"))
        })
        .collect()
}

/// Index `index`'s thumbnail: a binary PGM (`P5`) of `width` × `width`
/// pixels. A checkerboard whose squares are `1 + index % 8` pixels wide,
/// shaded by a diagonal gradient (inverted on the dark squares) that starts
/// darker the higher the index: the same index always gives the same bytes.
pub fn render(index: u32, width: u32) -> Vec<u8> {
    let w = width as usize;
    let square = 1 + (index % 8) as usize;
    let offset = (index as usize * 29) % 256;
    let mut image = format!("P5\n{w} {w}\n255\n").into_bytes();
    image.reserve(w * w);
    for y in 0..w {
        for x in 0..w {
            let gradient = (x + y) * 255 / (2 * w - 1).max(1);
            let shade = ((gradient + offset) % 256) as u8;
            let light = (x / square + y / square).is_multiple_of(2);
            image.push(if light { shade } else { 255 - shade });
        }
    }
    image
}

/// Runs one task of a job (`wisp job run thumbnail-batch --array ...`).
#[wisp_sdk::event_handler]
fn on_task(event: Event) -> Result<(), String> {
    let Some(task) = &event.job else {
        return Err(format!(
            "thumbnail-batch runs batch-job tasks (wisp job run thumbnail-batch --array 0-9), \
             not events on {}",
            event.topic
        ));
    };
    let width = width(&event.payload)?;
    if fail_indices(config::get("fail-index").as_deref())?.contains(&task.index) {
        return Err(format!(
            "index {} is listed in fail-index: failing on purpose (attempt {})",
            task.index, event.attempt
        ));
    }
    let image = render(task.index, width);
    kv::set(&format!("{PREFIX}{}", task.index), &image).map_err(|e| e.to_string())?;
    log::info!(
        "job {} index {} of {}: {width}x{width} thumbnail, {} bytes",
        task.id,
        task.index,
        task.array_size,
        image.len()
    );
    Ok(())
}

/// `GET /thumbnails/:index`.
fn show(Path(index): Path<u32>) -> Result<Response, Error> {
    let image = kv::get(&format!("{PREFIX}{index}"))?
        .ok_or_else(|| Error::not_found(format!("no thumbnail for index {index}")))?;
    Ok(Response::ok(image).with_header("content-type", PGM))
}

#[derive(Serialize)]
struct Listing {
    indices: Vec<u32>,
}

/// `GET /thumbnails`: the rendered indices, in numeric order.
fn list() -> Result<Json<Listing>, Error> {
    let mut indices = Vec::new();
    for key in kv::list_keys(PREFIX) {
        if let Ok(i) = key?[PREFIX.len()..].parse() {
            indices.push(i);
        }
    }
    indices.sort_unstable();
    Ok(Json(Listing { indices }))
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{Method, Request, testing};

    use super::*;

    fn task(index: u32, payload: &str) -> Event {
        Event::new("job:00000000000000b2", payload.as_bytes().to_vec()).with_job(index, 10)
    }

    #[test]
    fn payloads_and_settings() {
        assert_eq!(width(b""), Ok(32));
        assert_eq!(width(b"{}"), Ok(32));
        assert_eq!(width(br#"{"width":256}"#), Ok(256));
        assert!(width(br#"{"width":0}"#).unwrap_err().contains("got 0"));
        assert!(width(br#"{"width":257}"#).is_err());
        assert!(width(b"32").is_err());
        assert_eq!(fail_indices(None), Ok(vec![]));
        assert_eq!(fail_indices(Some("3")), Ok(vec![3]));
        assert_eq!(fail_indices(Some(" 3, 7 ,")), Ok(vec![3, 7]));
        assert!(fail_indices(Some("three")).is_err());
    }

    #[test]
    fn thumbnails_are_pgm_and_depend_on_the_index_only() {
        let image = render(4, 16);
        assert!(image.starts_with(b"P5\n16 16\n255\n"));
        assert_eq!(image.len(), "P5\n16 16\n255\n".len() + 256);
        assert_eq!(render(4, 16), image);
        assert_ne!(render(5, 16), image);
        assert_eq!(render(0, 1), b"P5\n1 1\n255\n\0");
        assert_eq!(render(9, 256).len(), "P5\n256 256\n255\n".len() + 65536);
    }

    #[test]
    fn tasks_store_their_thumbnail() {
        testing::reset();
        assert_eq!(
            app()
                .handle(Request::new(Method::GET, "/thumbnails/2"))
                .status(),
            404
        );
        on_task(task(2, r#"{"width":8}"#)).unwrap();
        on_task(task(10, "")).unwrap();
        let resp = app().handle(Request::new(Method::GET, "/thumbnails/2"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], PGM);
        assert_eq!(resp.body(), render(2, 8));
        let resp = app().handle(Request::new(Method::GET, "/thumbnails"));
        assert_eq!(resp.body(), br#"{"indices":[2,10]}"#);
    }

    #[test]
    fn listed_indices_fail_and_plain_events_are_refused() {
        testing::reset();
        testing::set_config("fail-index", "3,5");
        let e = on_task(task(3, "")).unwrap_err();
        assert!(e.contains("failing on purpose"), "{e}");
        on_task(task(4, "")).unwrap();
        assert!(kv::get("thumb:3").unwrap().is_none());
        assert!(on_task(Event::new("orders", b"{}".to_vec())).is_err());
        assert!(on_task(task(1, r#"{"width":1000}"#)).is_err());
    }
}
