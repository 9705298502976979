//! Echoes the request back, to see exactly what a function receives.
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p echo
//! wisp deploy echo target/wasm32-wasip2/release/echo.wasm --route '/echo/*'
//! curl -d 'some body' 'http://127.0.0.1:8080/echo/path?x=1'
//! ```
//!
//! By default it answers `200` with a JSON description of the request:
//! `{"method", "path", "query" ("" if none), "headers": {name: [values]}
//! (lowercase names), "body" (UTF-8, lossy), "body_len"}`.
//!
//! Two request headers change that:
//! - `x-echo-mode: raw` answers the request body byte for byte, with the
//!   request's `content-type` (default `application/octet-stream`);
//! - `x-echo-status: NNN` answers with status NNN.

use serde_json::{Map, Value, json};
use wisp_sdk::http::header::CONTENT_TYPE;
use wisp_sdk::{HeaderValue, IntoResponse, Request, Response};

#[wisp_sdk::handler]
fn echo(req: Request) -> impl IntoResponse {
    let status = match req.header("x-echo-status").map(str::parse::<u16>) {
        None => 200,
        Some(Ok(status)) if (100..=999).contains(&status) => status,
        Some(_) => return (400, "x-echo-status must be a status code (100-999)").into_response(),
    };
    if req.header("x-echo-mode") == Some("raw") {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let mut resp = Response::new(status).with_body(req.into_body());
        resp.headers_mut().insert(CONTENT_TYPE, content_type);
        return resp;
    }
    let body = serde_json::to_vec_pretty(&describe(&req)).expect("a JSON value always serialises");
    Response::new(status)
        .with_header(CONTENT_TYPE, "application/json")
        .with_body(body)
}

fn describe(req: &Request) -> Value {
    let mut headers = Map::new();
    for name in req.headers().keys() {
        let values = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes())))
            .collect();
        headers.insert(name.as_str().to_owned(), Value::Array(values));
    }
    json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query(),
        "headers": headers,
        "body": req.text(),
        "body_len": req.body().len(),
    })
}
