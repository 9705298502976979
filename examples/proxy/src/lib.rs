//! Forwards each request as a `GET` to an upstream URL set in the function's
//! configuration (`upstream`), and answers with the upstream's status,
//! `content-type` and body.
//!
//! Build, deploy and configure it (from the workspace root, with
//! `wisp serve` running; outbound requests are denied unless the deploy
//! allows the upstream's host):
//!
//! ```text
//! wisp deploy proxy --from examples/proxy --route /proxy --allow-outbound 127.0.0.1:8000
//! # or: cargo build --release --target wasm32-wasip2 -p proxy
//! #     wisp deploy proxy target/wasm32-wasip2/release/proxy.wasm --route /proxy --allow-outbound 127.0.0.1:8000
//! python3 -m http.server 8000 &
//! wisp config set proxy upstream=http://127.0.0.1:8000/
//! curl -i http://127.0.0.1:8080/proxy
//! ```
//!
//! When the upstream cannot be reached (refused, or a host the function may
//! not call), the answer is `502` with the error, e.g.
//! `{"error":{"code":"upstream_error","message":"outbound HTTP request failed: HTTP-request-denied"}}`;
//! without `upstream` configured, `500` with code `missing_config`.

use wisp_sdk::http::header::CONTENT_TYPE;
use wisp_sdk::{Error, Response, config, http, log};

#[wisp_sdk::handler]
fn forward() -> Result<Response, Error> {
    let upstream = config::require("upstream")?;
    let answer = http::get(&upstream).inspect_err(|e| log::warn!("{upstream}: {e}"))?;
    let mut response = Response::new(answer.status());
    if let Some(content_type) = answer.headers().get(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, content_type.clone());
    }
    Ok(response.with_body(answer.into_body()))
}

#[cfg(test)]
mod tests {
    use wisp_sdk::IntoResponse;

    use super::*;

    #[test]
    fn needs_an_upstream() {
        wisp_sdk::testing::reset();
        let resp = forward().into_response();
        assert_eq!(resp.status(), 500);
        assert!(String::from_utf8_lossy(resp.body()).contains("missing_config"));
        // Outbound HTTP is not simulated natively: a 502 with the reason.
        wisp_sdk::testing::set_config("upstream", "http://127.0.0.1:1/");
        assert_eq!(forward().into_response().status(), 502);
    }
}
