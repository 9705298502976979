//! Router tests, without a socket (`tower::ServiceExt::oneshot`).

use super::openapi::NAME_PATTERN;
use super::*;
use axum::body::Body;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const TOKEN: &str = "a-test-token-a-test-token";

async fn call(host: &Host, req: Request) -> (StatusCode, serde_json::Value) {
    let resp = router(host.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// A JSON body with no declared length, in chunks, one past the limit.
fn streamed_body_over_the_limit() -> Body {
    let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
    let chunks = MAX_JSON_BODY_BYTES / chunk.len() + 1;
    let stream =
        futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    Body::from_stream(stream)
}

/// The document lists what the token check and the extractors answer
/// on every operation they apply to.
#[test]
fn the_document_lists_the_edge_errors_of_every_operation() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let responses = &op["responses"];
            let error = |status: &str| {
                let schema = &responses[status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{what} lacks {status}"
                );
            };
            if path != "/v1/health" {
                error("401");
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.iter().any(|p| p["in"] == "path") {
                error("400");
            }
            if op["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                for status in ["400", "413", "415"] {
                    error(status);
                }
            }
            for p in &params {
                if p["in"] == "path" && matches!(p["name"].as_str(), Some("name" | "function")) {
                    assert_eq!(p["schema"]["pattern"], NAME_PATTERN, "{what}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} operations");
    // u64s are documented as such, in parameters and bodies.
    let ttl = &doc["paths"]["/v1/functions/{name}/kv/{key}"]["put"]["parameters"][2];
    assert_eq!(ttl["name"], "ttl_ms");
    assert_eq!(ttl["schema"]["format"], "uint64");
    let version = &doc["components"]["schemas"]["RollbackRequest"]["properties"]["version"];
    assert_eq!(version["format"], "uint64");
    // Request types refuse unknown fields, and say so.
    for request in [
        "RollbackRequest",
        "NewSubscription",
        "NewSchedule",
        "NewJob",
        "RedriveRequest",
        "SetConfig",
    ] {
        let schema = &doc["components"]["schemas"][request];
        assert_eq!(schema["additionalProperties"], false, "{request}");
    }
}

#[tokio::test]
async fn a_streamed_json_body_over_the_limit_is_refused_with_json() {
    let host = Host::builder()
        .temporary()
        .admin_token(TOKEN)
        .build()
        .unwrap();
    for (method, path) in [
        (Method::POST, "/v1/subscriptions"),
        (Method::POST, "/v1/schedules"),
        (Method::POST, "/v1/functions/f/jobs"),
        (Method::PUT, "/v1/functions/f/config"),
        // Optional bodies are read the same way.
        (Method::POST, "/v1/functions/f/rollback"),
        (Method::POST, "/v1/functions/f/dlq/redrive"),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(streamed_body_over_the_limit())
            .unwrap();
        let (status, body) = call(&host, req).await;
        assert_eq!(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}: {body}"
        );
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&MAX_JSON_BODY_BYTES.to_string()),
            "{message}"
        );
    }
    assert!(host.subscriptions(None).unwrap().is_empty());
    assert!(host.schedules(None).unwrap().is_empty());
}
