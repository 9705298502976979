//! Routing on the data plane, and requests reaching the guest as sent.

use crate::harness::*;

#[test]
fn exact_prefix_longest_match_and_404() {
    let w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello", "/api/*"]);
    a.deploy_guest("echo", "echo", &["/api/echo/*", "/api/exact"]);

    let r = w.get("/hello");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("wisp-invocation-id"));
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello");
    // Exact: a longer path does not match /hello.
    assert_error(w.get("/hello/more"), 404, "route_not_found");
    // Prefix: the prefix itself and below.
    assert_eq!(w.get("/api").text().unwrap(), "hello from wisp at /api");
    assert_eq!(
        w.get("/api/x/y").text().unwrap(),
        "hello from wisp at /api/x/y"
    );
    assert_error(w.get("/apix"), 404, "route_not_found");
    // Longest match wins.
    let echoed: serde_json::Value = w.get("/api/echo/deep?q=1").json().unwrap();
    assert_eq!(echoed["path"], "/api/echo/deep");
    let echoed: serde_json::Value = w.get("/api/exact").json().unwrap();
    assert_eq!(echoed["path"], "/api/exact");
    assert_eq!(
        w.get("/api/exactly").text().unwrap(),
        "hello from wisp at /api/exactly"
    );
    let msg = assert_error(w.get("/nowhere"), 404, "route_not_found");
    assert!(msg.contains("/nowhere"), "{msg}");
}

#[test]
fn method_query_headers_and_body_reach_the_guest_as_sent() {
    let w = Wisp::start();
    w.admin().deploy_guest("echo", "echo", &["/echo/*"]);
    let c = client();
    let r = c
        .request(
            reqwest::Method::PATCH,
            format!("{}/echo/a%20b?x=1&y=two&x=3", w.data_url),
        )
        .header("x-custom", "v1")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("content-type", "text/plain")
        .body("the body ✓")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["method"], "PATCH");
    assert_eq!(v["path"], "/echo/a%20b");
    assert_eq!(v["query"], "x=1&y=two&x=3");
    assert_eq!(v["headers"]["x-custom"][0], "v1");
    assert_eq!(v["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert_eq!(v["headers"]["content-type"][0], "text/plain");
    assert_eq!(v["body"], "the body ✓");

    // A guest-chosen status comes back as is.
    let r = c
        .get(format!("{}/echo/s", w.data_url))
        .header("x-echo-status", "418")
        .send()
        .unwrap();
    assert_eq!(r.status(), 418);
}

#[test]
fn five_mib_body_round_trips_byte_for_byte() {
    let w = Wisp::start();
    w.admin().deploy_guest("echo", "echo", &["/echo"]);
    let body: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let r = client()
        .post(format!("{}/echo", w.data_url))
        .header("x-echo-mode", "raw")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), body.len());
    assert!(got[..] == body[..], "the echoed body differs");
}

#[test]
fn two_hundred_concurrent_requests_all_succeed() {
    two_hundred_concurrent_requests(&Wisp::start());
}

/// The data plane spreads connections over its threads; with one thread
/// (and with more threads than CPUs) everything is served the same.
#[test]
fn any_number_of_serving_threads_serves_concurrent_connections() {
    for n in ["1", "3"] {
        let w = Wisp::start_with(Opts::default().arg("--serve-threads").arg(n));
        two_hundred_concurrent_requests(&w);
    }
}

fn two_hundred_concurrent_requests(w: &Wisp) {
    w.admin().deploy_guest("hello", "hello", &["/hello/*"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = w.data_url.clone();
    let statuses: Vec<(u16, String)> = rt.block_on(async move {
        let c = reqwest::Client::new();
        let futs = (0..200).map(|i| {
            let c = c.clone();
            let url = format!("{url}/hello/{i}");
            async move {
                let r = c.get(url).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        });
        futures::future::join_all(futs).await
    });
    for (i, (status, body)) in statuses.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {body}");
        assert_eq!(body, &format!("hello from wisp at /hello/{i}"));
    }
}

/// A component from another language's toolchain (Python, 17+ MiB,
/// importing more of WASI 0.2 than the proxy world) deploys within one
/// admin request and serves, with its configured environment and nothing
/// else.
#[test]
fn python_component_runs_unchanged() {
    let w = Wisp::start();
    let wasm = std::fs::read(python_guest()).unwrap();
    assert!(wasm.len() > 10 << 20, "expected a large component");
    let r = w
        .admin()
        .deploy("py", &wasm, &[("route", "/py/*"), ("env", "GREETING=hi")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let r = w.get("/py/x?y=1");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hi from python at /py/x?y=1");
}
