//! The admin API's error contract, tested on the router without a socket
//! (`tower::ServiceExt::oneshot` on a temporary host, as axum's
//! examples/testing does): every status and code the API answers, in the
//! JSON error shape, and that nothing refused was stored.

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::openapi::NAME_PATTERN;
use super::*;
use crate::config::StoreLocation;
use crate::events::{format_id, parse_id};
use crate::{ConfigError, DeployError, EventError, HostConfig, KvError, LogError, StoreError};

const TOKEN: &str = "a-test-token-a-test-token";

/// A preview-1 module (deployed as a CGI function) with `_start` doing
/// `body`.
fn module(start: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (func (export "_start") {start}))"#
    ))
    .unwrap()
}

/// A function that deploys and answers.
fn ok_wasm() -> Vec<u8> {
    module("")
}

/// A function whose every invocation traps: its event deliveries fail and
/// wait for their retry.
fn trapping_wasm() -> Vec<u8> {
    module("unreachable")
}

fn temporary_config() -> HostConfig {
    HostConfig {
        store: StoreLocation::Temporary,
        admin_token: Some(TOKEN.into()),
        pooling: false,
        ..HostConfig::default()
    }
}

/// A host on a temporary store and its admin router.
struct Api {
    host: Host,
    router: Router,
}

/// An answer: status, headers and the JSON body (`Null` if none).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts that this is the API's JSON error with `status` and `code`;
    /// returns its message.
    #[track_caller]
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{}",
            self.body
        );
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        let fields = self.body["error"].as_object().unwrap();
        assert!(fields.keys().all(|k| k == "code" || k == "message"));
        self.body["error"]["message"].as_str().unwrap().to_string()
    }

    #[track_caller]
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        &self.body
    }
}

impl Api {
    fn new(config: HostConfig) -> Api {
        let host = Host::builder().config(config).build().unwrap();
        let router = router(host.clone());
        Api { host, router }
    }

    fn temporary() -> Api {
        Api::new(temporary_config())
    }

    async fn request(&self, req: http::Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        // JSON, or the text of what is not (metrics), or `Null` if empty.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `method` `uri` with the token, `content_type` (if any) and `body`.
    async fn send(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut req = http::Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.request(req.body(body.into()).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send("GET", uri, None, Body::empty()).await
    }

    async fn json(&self, method: &str, uri: &str, value: Value) -> Answer {
        let body = serde_json::to_vec(&value).unwrap();
        self.send(method, uri, Some("application/json"), body).await
    }

    /// Deploys `wasm` as `name` with the query `query` (`route=/f&...`).
    async fn deploy(&self, name: &str, query: &str, wasm: Vec<u8>) -> Answer {
        let uri = format!("/v1/functions/{name}?{query}");
        self.send("POST", &uri, Some("application/wasm"), wasm)
            .await
    }

    /// The functions and their versions, the stored artifacts: what a
    /// refused deploy, rollback or delete must leave as it was.
    fn functions_state(&self) -> (Vec<(String, u64, usize)>, usize) {
        let functions = self
            .host
            .functions()
            .list()
            .unwrap()
            .into_iter()
            .map(|f| (f.name, f.active_version, f.versions as usize))
            .collect();
        (functions, self.host.functions().stored_artifacts())
    }

    /// Subscriptions, schedules and jobs: none of them created.
    async fn assert_no_event_objects(&self) {
        assert!(self.host.events().subscriptions(None).unwrap().is_empty());
        assert!(self.host.events().schedules(None).unwrap().is_empty());
        assert!(self.host.jobs().list(None).await.unwrap().is_empty());
    }
}

/// A JSON body with no declared length, in chunks, one past the limit.
fn streamed_body_over_the_limit() -> Body {
    let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
    let chunks = MAX_JSON_BODY_BYTES / chunk.len() + 1;
    let stream =
        futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    Body::from_stream(stream)
}

// ------------------------------------------------------------- the table

/// Every domain error's status and code, including those no request can
/// provoke on a healthy host (store failures, variants only a guest sees);
/// internal details never reach the client.
#[tokio::test]
async fn the_table_answers_each_domain_error_with_its_status_and_code() {
    let store = || StoreError::from(std::io::Error::other("disk /secret/path failed"));
    let s = || String::from("x");
    let mut cases: Vec<(ApiError, u16, &str)> = Vec::new();
    for (e, status, code) in [
        (DeployError::InvalidName(s()), 400, "invalid_name"),
        (DeployError::InvalidWasm(s()), 400, "invalid_wasm"),
        (DeployError::NotAComponent(s()), 400, "not_a_component"),
        (DeployError::MissingExport(s()), 400, "missing_export"),
        (
            DeployError::UnsatisfiedImports(s()),
            400,
            "unsatisfied_imports",
        ),
        (DeployError::InvalidRoute(s()), 400, "invalid_route"),
        (DeployError::InvalidArgument(s()), 400, "invalid_argument"),
        (DeployError::RouteConflict(s()), 409, "route_conflict"),
        (DeployError::TooLarge(s()), 413, "payload_too_large"),
        (
            DeployError::FunctionNotFound(s()),
            404,
            "function_not_found",
        ),
        (DeployError::VersionNotFound(s()), 404, "version_not_found"),
        (DeployError::Store(store()), 500, "internal"),
        (
            DeployError::Internal("/secret/path".into()),
            500,
            "internal",
        ),
    ] {
        cases.push((e.into(), status, code));
    }
    for (e, status, code) in [
        (KvError::InvalidKey(s()), 400, "invalid_key"),
        (KvError::ValueTooLarge { limit: 1 }, 413, "value_too_large"),
        (KvError::QuotaExceeded { limit: 1 }, 507, "quota_exceeded"),
        (KvError::NotANumber, 409, "not_a_number"),
        (KvError::InvalidCursor, 400, "invalid_cursor"),
        (KvError::InvalidArgument(s()), 400, "invalid_argument"),
        (KvError::FunctionNotFound(s()), 404, "function_not_found"),
        (KvError::KeyNotFound(s()), 404, "key_not_found"),
        (KvError::Store(store()), 500, "internal"),
    ] {
        cases.push((e.into(), status, code));
    }
    for (e, status, code) in [
        (LogError::InvalidArgument(s()), 400, "invalid_argument"),
        (LogError::FunctionNotFound(s()), 404, "function_not_found"),
        (LogError::Store(store()), 500, "internal"),
        (LogError::Internal("/secret/path".into()), 500, "internal"),
    ] {
        cases.push((e.into(), status, code));
    }
    for (e, status, code) in [
        (ConfigError::InvalidKey(s()), 400, "invalid_config_key"),
        (
            ConfigError::ValueTooLarge(s()),
            400,
            "config_value_too_large",
        ),
        (ConfigError::InvalidValue(s()), 400, "invalid_config_value"),
        (ConfigError::TooManyKeys(s()), 400, "too_many_config_keys"),
        (ConfigError::InvalidArgument(s()), 400, "invalid_argument"),
        (
            ConfigError::FunctionNotFound(s()),
            404,
            "function_not_found",
        ),
        (ConfigError::KeyNotFound(s()), 404, "config_key_not_found"),
        (ConfigError::Store(store()), 500, "internal"),
    ] {
        cases.push((e.into(), status, code));
    }
    let (topic, held, size, limit) = (s(), 1, 1, 1);
    for (e, status, code) in [
        (EventError::InvalidName(s()), 400, "invalid_name"),
        (EventError::InvalidArgument(s()), 400, "invalid_argument"),
        (
            EventError::PayloadTooLarge { limit },
            413,
            "payload_too_large",
        ),
        (
            EventError::QueueFull {
                topic: topic.clone(),
                depth: 1,
                limit,
            },
            429,
            "queue_full",
        ),
        (
            EventError::TopicQuotaExceeded {
                topic: topic.clone(),
                held,
                size,
                limit,
            },
            429,
            "topic_quota_exceeded",
        ),
        (
            EventError::HostQuotaExceeded { held, size, limit },
            429,
            "host_quota_exceeded",
        ),
        (EventError::FunctionNotFound(s()), 404, "function_not_found"),
        (
            EventError::SubscriptionNotFound {
                function: s(),
                topic,
            },
            404,
            "subscription_not_found",
        ),
        (EventError::EventNotFound(s()), 404, "event_not_found"),
        (EventError::ScheduleNotFound(s()), 404, "schedule_not_found"),
        (EventError::JobNotFound(s()), 404, "job_not_found"),
        (EventError::Store(store()), 500, "internal"),
    ] {
        cases.push((e.into(), status, code));
    }
    for (error, status, code) in cases {
        let resp = error.into_response();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        // Only the event plane's 429s ask for a retry.
        let retry = resp.headers().get(header::RETRY_AFTER);
        assert_eq!(retry.is_some(), status == 429, "{code}");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], code);
        let message = body["error"]["message"].as_str().unwrap();
        if status == 500 {
            assert_eq!(message, "internal error; see the host log");
        } else {
            assert!(!message.is_empty(), "{code}");
        }
    }
}

// ----------------------------------------------------------------- edge

#[tokio::test]
async fn without_the_token_nothing_is_answered_but_401() {
    let api = Api::temporary();
    let deploy = |auth: Option<&str>| {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/v1/functions/f?route=/f");
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        req.body(Body::from(ok_wasm())).unwrap()
    };
    for auth in [
        None,
        Some("Bearer not-the-token"),
        Some(TOKEN),
        Some("Basic YTpi"),
    ] {
        let answer = api.request(deploy(auth)).await;
        let msg = answer.error(401, "unauthorized");
        assert!(!msg.contains(TOKEN), "{msg}");
    }
    // Refused with a declared body left unread: the connection is closed
    // after the answer (the client may still be sending it).
    let mut req = deploy(None);
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(1_000_000));
    let answer = api.request(req).await;
    answer.error(401, "unauthorized");
    assert_eq!(answer.headers[header::CONNECTION], "close");
    // Nor a protected route's methods, nor the document.
    let patch = http::Request::builder()
        .method("PATCH")
        .uri("/v1/functions")
        .body(Body::empty())
        .unwrap();
    api.request(patch).await.error(401, "unauthorized");
    let doc = http::Request::builder()
        .uri("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    api.request(doc).await.error(401, "unauthorized");
    assert_eq!(api.functions_state(), (vec![], 0));
    // Health needs none.
    let health = http::Request::builder()
        .uri("/v1/health")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.request(health).await.ok(200)["status"], "ok");
}

#[tokio::test]
async fn unknown_routes_are_404_and_unserved_methods_405_with_allow() {
    let api = Api::temporary();
    for (method, uri) in [
        ("GET", "/"),
        ("GET", "/v1/nothing"),
        ("POST", "/v2/functions/f"),
        ("GET", "/v1/functions/f/nothing"),
    ] {
        api.send(method, uri, None, Body::empty())
            .await
            .error(404, "not_found");
    }
    for (method, uri, allowed) in [
        ("PATCH", "/v1/functions", "GET"),
        ("PUT", "/v1/functions/f", "POST"),
        ("GET", "/v1/functions/f/rollback", "POST"),
        ("POST", "/v1/functions/f/kv/k", "PUT"),
        ("PUT", "/v1/schedules", "POST"),
        ("POST", "/v1/jobs/0000000000000001", "GET"),
        ("DELETE", "/v1/health", "GET"),
        ("POST", "/v1/openapi.json", "GET"),
    ] {
        let answer = api.send(method, uri, None, Body::empty()).await;
        let msg = answer.error(405, "method_not_allowed");
        assert!(msg.contains(method), "{msg}");
        let allow = answer.headers[header::ALLOW].to_str().unwrap();
        assert!(allow.contains(allowed), "{method} {uri}: {allow}");
    }
    // Invoke takes every method, also those the document does not list.
    for method in ["GET", "PROPFIND", "PURGE"] {
        api.send(method, "/v1/functions/nope/invoke", None, Body::empty())
            .await
            .error(404, "function_not_found");
    }
    assert_eq!(api.functions_state(), (vec![], 0));
}

#[tokio::test]
async fn undecodable_paths_are_400_in_every_kind_of_path_parameter() {
    let api = Api::temporary();
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let before = api.functions_state();
    for (method, uri) in [
        ("GET", "/v1/functions/%FF"),
        ("POST", "/v1/functions/%C3%28"),
        ("DELETE", "/v1/functions/%FF"),
        ("GET", "/v1/functions/%FF/versions"),
        ("GET", "/v1/functions/%FF/logs"),
        ("POST", "/v1/functions/%FF/rollback"),
        ("POST", "/v1/functions/%FF/invoke"),
        ("POST", "/v1/functions/%FF/invoke-async"),
        ("PUT", "/v1/functions/f/kv/%FF"),
        ("GET", "/v1/functions/f/kv/%FF"),
        ("PUT", "/v1/functions/%FF/config"),
        ("DELETE", "/v1/functions/f/config/%FF"),
        ("POST", "/v1/topics/%FF/events"),
        ("DELETE", "/v1/subscriptions/f/%FF"),
        ("GET", "/v1/events/%FF"),
        ("GET", "/v1/functions/%FF/dlq"),
        ("DELETE", "/v1/schedules/%FF"),
        ("POST", "/v1/functions/%FF/jobs"),
        ("GET", "/v1/jobs/%FF"),
        ("POST", "/v1/jobs/%FF/cancel"),
    ] {
        let answer = api.send(method, uri, None, ok_wasm()).await;
        let msg = answer.error(400, "invalid_argument");
        assert!(msg.contains("bad path"), "{method} {uri}: {msg}");
    }
    assert_eq!(api.functions_state(), before);
    assert!(
        api.host
            .kv("f")
            .list("", None, 10)
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    api.assert_no_event_objects().await;
}

#[tokio::test]
async fn bad_query_parameters_are_400_naming_the_parameter() {
    let api = Api::temporary();
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let before = api.functions_state();
    for (method, uri) in [
        ("POST", "/v1/functions/f?timeout_ms=soon"),
        ("POST", "/v1/functions/f?config_env=perhaps"),
        ("GET", "/v1/functions/f/logs?limit=lots"),
        ("GET", "/v1/functions/f/logs?after=x"),
        ("GET", "/v1/functions/f/kv?limit=many"),
        ("PUT", "/v1/functions/f/kv/k?ttl_ms=-1"),
        ("GET", "/v1/functions/f/dlq?limit=-1"),
    ] {
        let answer = api.send(method, uri, None, ok_wasm()).await;
        let msg = answer.error(400, "invalid_argument");
        let parameter = uri.split(['?', '=']).nth(1).unwrap();
        assert!(msg.contains("bad query parameters"), "{uri}: {msg}");
        assert!(msg.contains(parameter), "{uri}: {msg}");
    }
    // Values of the right type, out of range.
    for (method, uri) in [
        ("GET", "/v1/functions/f/kv?limit=0"),
        ("GET", "/v1/functions/f/kv?limit=1001"),
        ("GET", "/v1/functions/f/dlq?limit=0"),
        ("GET", "/v1/functions/f/invoke?path=no-slash"),
        ("POST", "/v1/functions/f/invoke-async?path=no-slash"),
    ] {
        api.send(method, uri, None, Body::empty())
            .await
            .error(400, "invalid_argument");
    }
    assert_eq!(api.functions_state(), before);
    assert!(
        api.host
            .kv("f")
            .list("", None, 10)
            .await
            .unwrap()
            .keys
            .is_empty()
    );

    // Repeated parameters are lists.
    let info = api
        .deploy("g", "route=/a&route=/b/*&env=A=1&env=B=2", ok_wasm())
        .await;
    let info = info.ok(201);
    assert_eq!(info["routes"], json!(["/a", "/b/*"]));
    assert_eq!(info["env"], json!({"A": "1", "B": "2"}));
}

#[tokio::test]
async fn refused_json_bodies_are_400_413_or_415_and_store_nothing() {
    let api = Api::temporary();
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let before = api.functions_state();
    let bodies = [
        (
            "POST",
            "/v1/subscriptions",
            json!({"function": "f", "topic": "t"}),
        ),
        (
            "POST",
            "/v1/schedules",
            json!({"function": "f", "cron": "* * * * *"}),
        ),
        ("POST", "/v1/functions/f/jobs", json!({"array": "0-3"})),
        (
            "PUT",
            "/v1/functions/f/config",
            json!({"values": {"A": "1"}}),
        ),
        ("POST", "/v1/functions/f/rollback", json!({"version": 1})),
        ("POST", "/v1/functions/f/dlq/redrive", json!({"topic": "t"})),
    ];
    for (method, uri, good) in &bodies {
        // An unknown field, named.
        let mut unknown = good.clone();
        unknown["stranger"] = json!(1);
        let msg = api
            .json(method, uri, unknown)
            .await
            .error(400, "invalid_argument");
        assert!(msg.contains("unknown field `stranger`"), "{uri}: {msg}");
        // Malformed.
        let answer = api
            .send(method, uri, Some("application/json"), r#"{"a": "#)
            .await;
        answer.error(400, "invalid_argument");
        // Not sent as JSON.
        let body = serde_json::to_vec(good).unwrap();
        for ct in [Some("text/plain"), None] {
            let msg = api
                .send(method, uri, ct, body.clone())
                .await
                .error(415, "unsupported_media_type");
            assert!(msg.contains("application/json"), "{msg}");
        }
        // Over the limit: declared, and streamed with no length.
        let req = http::Request::builder()
            .method(*method)
            .uri(*uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, MAX_JSON_BODY_BYTES + 1)
            .body(Body::empty())
            .unwrap();
        let msg = api.request(req).await.error(413, "payload_too_large");
        assert!(msg.contains(&MAX_JSON_BODY_BYTES.to_string()), "{msg}");
        let req = http::Request::builder()
            .method(*method)
            .uri(*uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(streamed_body_over_the_limit())
            .unwrap();
        let msg = api.request(req).await.error(413, "payload_too_large");
        assert!(msg.contains(&MAX_JSON_BODY_BYTES.to_string()), "{msg}");
    }
    // The wrong type and a missing field, named.
    let msg = api
        .json(
            "POST",
            "/v1/subscriptions",
            json!({"function": "f", "topic": "t", "max_attempts": "three"}),
        )
        .await
        .error(400, "invalid_argument");
    assert!(msg.contains("max_attempts"), "{msg}");
    let msg = api
        .json("POST", "/v1/schedules", json!({"function": "f"}))
        .await
        .error(400, "invalid_argument");
    assert!(msg.contains("missing field `cron`"), "{msg}");

    assert_eq!(api.functions_state(), before);
    assert!(api.host.settings("f").list().unwrap().entries.is_empty());
    api.assert_no_event_objects().await;
}

// ------------------------------------------------------------- functions

#[tokio::test]
async fn refused_deploys_rollbacks_and_deletes_store_nothing() {
    let config = HostConfig {
        max_upload_bytes: 4096,
        ..temporary_config()
    };
    let api = Api::new(config);
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let before = api.functions_state();
    let bad_module = |body: &str| {
        wat::parse_str(format!("(module (memory (export \"memory\") 1) {body})")).unwrap()
    };
    let cases = [
        ("Bad", "route=/g", ok_wasm(), 400, "invalid_name"),
        (
            "g",
            "route=/g",
            b"not wasm at all".to_vec(),
            400,
            "invalid_wasm",
        ),
        ("g", "route=/g", bad_module(""), 400, "missing_export"),
        (
            "g",
            "route=/g",
            wat::parse_str(
                r#"(module (import "env" "f" (func)) (memory (export "memory") 1)
                    (func (export "_start")))"#,
            )
            .unwrap(),
            400,
            "unsatisfied_imports",
        ),
        ("g", "route=no-slash", ok_wasm(), 400, "invalid_route"),
        (
            "g",
            "route=/g&env=NOEQUALS",
            ok_wasm(),
            400,
            "invalid_argument",
        ),
        (
            "g",
            "route=/g&timeout_ms=0",
            ok_wasm(),
            400,
            "invalid_argument",
        ),
        ("g", "route=/f", ok_wasm(), 409, "route_conflict"),
        ("f", "route=/f", vec![0; 4097], 413, "payload_too_large"),
    ];
    for (name, query, wasm, status, code) in cases {
        api.deploy(name, query, wasm).await.error(status, code);
        assert_eq!(api.functions_state(), before, "{name}?{query}: {code}");
    }
    // Over the limit, declared: refused before anything is read.
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/functions/f?route=/f")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_LENGTH, 4097)
        .body(Body::empty())
        .unwrap();
    let msg = api.request(req).await.error(413, "payload_too_large");
    assert!(msg.contains("4096"), "{msg}");
    // Over the limit with no declared length.
    let stream = futures::stream::iter(
        (0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 1024]))),
    );
    api.send(
        "POST",
        "/v1/functions/f?route=/f",
        None,
        Body::from_stream(stream),
    )
    .await
    .error(413, "payload_too_large");

    api.json("POST", "/v1/functions/f/rollback", json!({"version": 9}))
        .await
        .error(404, "version_not_found");
    for (method, uri) in [
        ("GET", "/v1/functions/nope"),
        ("DELETE", "/v1/functions/nope"),
        ("GET", "/v1/functions/nope/versions"),
        ("GET", "/v1/functions/nope/logs"),
        ("POST", "/v1/functions/nope/rollback"),
        ("GET", "/v1/functions/nope/invoke"),
    ] {
        api.send(method, uri, None, Body::empty())
            .await
            .error(404, "function_not_found");
    }
    assert_eq!(api.functions_state(), before);
}

// ------------------------------------------------- key-value and config

#[tokio::test]
async fn refused_key_value_requests_store_nothing() {
    let api = Api::temporary();
    let limits = "route=/f&kv_max_key_bytes=8&kv_max_value_bytes=16&kv_max_total_bytes=40";
    api.deploy("f", limits, ok_wasm()).await.ok(201);
    async fn put(api: &Api, key: &str, value: Vec<u8>) -> Answer {
        let uri = format!("/v1/functions/f/kv/{key}");
        api.send("PUT", &uri, None, value).await
    }
    async fn state(api: &Api) -> (Vec<String>, Vec<u8>, Vec<u8>) {
        let keys = api.host.kv("f").list("", None, 100).await.unwrap().keys;
        let a = api.host.kv("f").get("a").await.unwrap();
        let b = api.host.kv("f").get("b").await.unwrap();
        (keys, a, b)
    }
    let put = |key, value| put(&api, key, value);
    put("a", vec![b'a'; 15]).await.ok(200);
    put("b", vec![b'b'; 15]).await.ok(200);
    let before = state(&api).await;

    put("123456789", b"x".to_vec())
        .await
        .error(400, "invalid_key");
    let msg = put("c", vec![0; 17]).await.error(413, "value_too_large");
    assert!(msg.contains("16 bytes"), "{msg}");
    // 32 + 1 + 8 = 41 > 40.
    let msg = put("c", vec![0; 8]).await.error(507, "quota_exceeded");
    assert!(msg.contains("40 bytes"), "{msg}");
    api.send("PUT", "/v1/functions/nope/kv/a", None, "x")
        .await
        .error(404, "function_not_found");
    api.get("/v1/functions/f/kv?cursor=nonsense")
        .await
        .error(400, "invalid_cursor");
    api.get("/v1/functions/f/kv/123456789")
        .await
        .error(400, "invalid_key");
    for (method, uri) in [
        ("GET", "/v1/functions/f/kv/zz"),
        ("DELETE", "/v1/functions/f/kv/zz"),
    ] {
        api.send(method, uri, None, Body::empty())
            .await
            .error(404, "key_not_found");
    }
    for uri in ["/v1/functions/nope/kv", "/v1/functions/nope/kv/a"] {
        api.get(uri).await.error(404, "function_not_found");
    }
    assert_eq!(state(&api).await, before);
    // A key with a slash, percent-encoded or not, is one key.
    put("x%2Fy", b"1".to_vec()).await.ok(200);
    assert_eq!(api.host.kv("f").get("x/y").await.unwrap(), b"1");
}

#[tokio::test]
async fn refused_config_changes_store_nothing() {
    let api = Api::temporary();
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let set = |body: Value| api.json("PUT", "/v1/functions/f/config", body);
    set(json!({"values": {"KEPT": "1"}})).await.ok(200);
    let state = || api.host.settings("f").list().unwrap().entries;
    let before = state();

    let too_many: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("K{i}"), json!("v"))).collect();
    for (body, code) in [
        (json!({"values": {"bad key!": "1"}}), "invalid_config_key"),
        (
            json!({"values": {"BIG": "x".repeat(64 << 10 | 1)}}),
            "config_value_too_large",
        ),
        (
            json!({"values": {"NUL": "a\u{0}b"}}),
            "invalid_config_value",
        ),
        (json!({"values": too_many}), "too_many_config_keys"),
        (json!({"values": {}}), "invalid_argument"),
        (json!({"values": {"N": 1}}), "invalid_argument"),
    ] {
        let msg = set(body).await.error(400, code);
        // Messages name keys, never values.
        assert!(!msg.contains("a\u{0}b") && !msg.contains("xxxx"), "{msg}");
    }
    api.json(
        "PUT",
        "/v1/functions/nope/config",
        json!({"values": {"A": "1"}}),
    )
    .await
    .error(404, "function_not_found");
    api.get("/v1/functions/nope/config")
        .await
        .error(404, "function_not_found");
    api.send("DELETE", "/v1/functions/f/config/NOPE", None, Body::empty())
        .await
        .error(404, "config_key_not_found");
    api.send(
        "DELETE",
        "/v1/functions/f/config/bad%20key",
        None,
        Body::empty(),
    )
    .await
    .error(400, "invalid_config_key");
    assert_eq!(state(), before);
}

// ---------------------------------------------------------------- events

/// Publishes `payload` on `topic`.
async fn publish(api: &Api, topic: &str, payload: Vec<u8>) -> Answer {
    let uri = format!("/v1/topics/{topic}/events");
    api.send("POST", &uri, Some("text/plain"), payload).await
}

/// Subscribes `function` to `topic`, its failed deliveries retried in an
/// hour: they stay queued for the test's length.
async fn subscribe_slow(api: &Api, function: &str, topic: &str) {
    let body = json!({
        "function": function,
        "topic": topic,
        "retry_base_ms": 3_600_000,
        "max_age_ms": 7_200_000,
    });
    api.json("POST", "/v1/subscriptions", body).await.ok(201);
}

/// Asserts that no event was stored after the one with id `last`.
async fn assert_none_after(api: &Api, last: &Value) {
    let next = parse_id(last.as_str().unwrap()).unwrap() + 1;
    assert!(matches!(
        api.host.events().event(&format_id(next)).await,
        Err(EventError::EventNotFound(_))
    ));
}

#[tokio::test]
async fn refused_event_requests_store_nothing() {
    let config = HostConfig {
        event_max_payload_bytes: 1024,
        ..temporary_config()
    };
    let api = Api::new(config);
    api.deploy("f", "route=/f", ok_wasm()).await.ok(201);
    let first = publish(&api, "t", b"x".to_vec()).await;
    let last = first.ok(202)["id"].clone();

    publish(&api, "Bad!", b"x".to_vec())
        .await
        .error(400, "invalid_name");
    let msg = publish(&api, "t", vec![0; 1025])
        .await
        .error(413, "payload_too_large");
    assert!(msg.contains("1024"), "{msg}");
    api.send("POST", "/v1/functions/f/invoke-async", None, vec![0; 1025])
        .await
        .error(413, "payload_too_large");
    api.send("POST", "/v1/functions/nope/invoke-async", None, "x")
        .await
        .error(404, "function_not_found");
    assert_none_after(&api, &last).await;

    for (uri, body, status, code) in [
        (
            "/v1/subscriptions",
            json!({"function": "nope", "topic": "t"}),
            404,
            "function_not_found",
        ),
        (
            "/v1/subscriptions",
            json!({"function": "f", "topic": "Bad!"}),
            400,
            "invalid_name",
        ),
        (
            "/v1/schedules",
            json!({"function": "nope", "cron": "* * * * *"}),
            404,
            "function_not_found",
        ),
        (
            "/v1/schedules",
            json!({"function": "f", "cron": "nonsense"}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/schedules",
            json!({"function": "f", "cron": "0 0 30 2 *"}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/functions/nope/jobs",
            json!({"array": "0-3"}),
            404,
            "function_not_found",
        ),
        (
            "/v1/functions/f/jobs",
            json!({"array": "3-0"}),
            400,
            "invalid_argument",
        ),
    ] {
        api.json("POST", uri, body).await.error(status, code);
    }
    for (method, uri, code) in [
        ("DELETE", "/v1/subscriptions/f/t", "subscription_not_found"),
        ("GET", "/v1/events/0000000000000099", "event_not_found"),
        ("GET", "/v1/events/nonsense", "event_not_found"),
        (
            "DELETE",
            "/v1/schedules/0000000000000001",
            "schedule_not_found",
        ),
        ("GET", "/v1/jobs/0000000000000001", "job_not_found"),
        ("POST", "/v1/jobs/0000000000000001/cancel", "job_not_found"),
        ("GET", "/v1/functions/nope/dlq", "function_not_found"),
        ("DELETE", "/v1/functions/nope/dlq", "function_not_found"),
        (
            "POST",
            "/v1/functions/nope/dlq/redrive",
            "function_not_found",
        ),
    ] {
        api.send(method, uri, None, Body::empty())
            .await
            .error(404, code);
    }
    api.assert_no_event_objects().await;
    assert_none_after(&api, &last).await;
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after_and_stores_nothing() {
    let config = HostConfig {
        event_max_queue_depth: 3,
        ..temporary_config()
    };
    let api = Api::new(config);
    api.deploy("f", "route=/f", trapping_wasm()).await.ok(201);
    subscribe_slow(&api, "f", "q").await;
    let mut last = Value::Null;
    for _ in 0..3 {
        last = publish(&api, "q", b"x".to_vec()).await.ok(202)["id"].clone();
    }
    let answer = publish(&api, "q", b"one too many".to_vec()).await;
    let msg = answer.error(429, "queue_full");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert!(msg.contains("\"q\""), "{msg}");
    assert_none_after(&api, &last).await;
}

#[tokio::test]
async fn storage_quotas_are_429_with_retry_after_and_store_nothing() {
    let config = HostConfig {
        event_max_payload_bytes: 1024,
        event_topic_quota_bytes: 5120,
        event_host_quota_bytes: 5120,
        ..temporary_config()
    };
    let api = Api::new(config);
    api.deploy("f", "route=/f", trapping_wasm()).await.ok(201);
    subscribe_slow(&api, "f", "a").await;
    subscribe_slow(&api, "f", "b").await;
    let mut last = Value::Null;
    for _ in 0..4 {
        last = publish(&api, "a", vec![b'p'; 1000]).await.ok(202)["id"].clone();
    }
    // The topic is at its quota; the host at its own, for every topic.
    let answer = publish(&api, "a", vec![b'p'; 1000]).await;
    let msg = answer.error(429, "topic_quota_exceeded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert!(msg.contains("5120"), "{msg}");
    let answer = publish(&api, "b", vec![b'p'; 1000]).await;
    answer.error(429, "host_quota_exceeded");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    // A job's tasks are events too: all of them fit, or none is stored.
    let job = json!({"array": "0-9", "payload": "x".repeat(900)});
    let answer = api.json("POST", "/v1/functions/f/jobs", job).await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    let code = answer.body["error"]["code"].as_str().unwrap();
    assert!(code.ends_with("_quota_exceeded"), "{code}");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert!(api.host.jobs().list(None).await.unwrap().is_empty());
    assert_none_after(&api, &last).await;
}

// -------------------------------------------------------------- document

/// The document lists what the token check and the extractors answer
/// on every operation they apply to.
#[test]
fn the_document_lists_the_edge_errors_of_every_operation() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(!path.contains('*'), "{path}: axum's syntax, not OpenAPI's");
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
            if params
                .iter()
                .any(|p| p["in"] == "path" || p["in"] == "query")
            {
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

/// Every operation of the document is served: a request to it is not
/// answered 404 `not_found` or 405 (the router has no such route) — and
/// the router serves nothing the document leaves out (the routes are
/// registered from the documented handlers only; see `routes`).
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let api = Api::temporary();
    let doc = serde_json::to_value(openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path
            .replace("{name}", "f")
            .replace("{function}", "f")
            .replace("{topic}", "t")
            .replace("{key}", "k")
            .replace("{id}", "0000000000000001");
        for method in item.as_object().unwrap().keys() {
            let answer = api
                .send(&method.to_uppercase(), &uri, None, Body::empty())
                .await;
            let code = answer.body["error"]["code"].as_str().unwrap_or("");
            assert!(
                answer.status != StatusCode::METHOD_NOT_ALLOWED && code != "not_found",
                "{method} {path}: {} {}",
                answer.status,
                answer.body
            );
        }
    }
    // The document itself, as served.
    let served = api.get("/v1/openapi.json").await;
    assert_eq!(served.ok(200), &doc);
}
