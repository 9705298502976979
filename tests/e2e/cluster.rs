//! Cluster mode (`wisp serve --cluster nats://…`): hosts that share their
//! functions through NATS JetStream. Each test starts its own `nats-server
//! -js` (harness `Nats`) and real `wisp serve` processes on their own data
//! directories, and looks at them only through their admin APIs, their data
//! planes and the CLI: a change made on one host is served by every other,
//! a host that joins or returns catches up, and while NATS is away the hosts
//! keep serving and refuse writes.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::*;

/// One admin token for every host, as behind a load balancer: a client
/// may send its next call to any of them.
const TOKEN: &str = "a-cluster-admin-token-0123456789";

/// How long a change may take to reach every host (the issue says "within
/// a few seconds"; this leaves room for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(15);

/// How long hosts may take to reconnect once NATS is back.
const RECONNECT: Duration = Duration::from_secs(20);

/// The options of a host joining `nats`'s cluster as `node`.
fn member(nats: &Nats, node: &str) -> Opts {
    Opts::default()
        .arg("--cluster")
        .arg(&nats.url())
        .arg("--node-name")
        .arg(node)
        .env("WISP_ADMIN_TOKEN", TOKEN)
}

/// Hosts joining `nats`'s cluster, one per node name, each on a fresh data
/// directory; started one after the other, as an operator would.
fn cluster(nats: &Nats, nodes: &[&str]) -> Vec<Wisp> {
    nodes
        .iter()
        .map(|node| Wisp::start_with(member(nats, node)))
        .collect()
}

/// Polls `check` every 100 ms until it answers `Ok`, for up to `within`;
/// fails with what it saw last.
fn eventually_within<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    eventually_within(PROPAGATION, what, check)
}

/// Status and JSON body of an answer (`Null` if the body is not JSON).
fn status_json(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `Ok` if `w` has `name` at active version `version`.
fn at_version(w: &Wisp, name: &str, version: u64) -> Result<(), String> {
    let (status, body) = status_json(w.admin().get(&format!("/v1/functions/{name}")));
    if status == 200 && body["active_version"] == version {
        Ok(())
    } else {
        Err(format!("GET /v1/functions/{name}: {status} {body}"))
    }
}

/// `Ok` if `w`'s data plane answers `path` as the `hello` example does.
fn hello_at(w: &Wisp, path: &str) -> Result<(), String> {
    let r = w.get(path);
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    if status == 200 && text == format!("hello from wisp at {path}") {
        Ok(())
    } else {
        Err(format!("GET {path}: {status} {text:?}"))
    }
}

/// `Ok` if `w`'s data plane answers `path` as the `echo` guest does.
fn echo_at(w: &Wisp, path: &str) -> Result<(), String> {
    let (status, body) = status_json(w.get(path));
    if status == 200 && body["path"] == path {
        Ok(())
    } else {
        Err(format!("GET {path}: {status} {body}"))
    }
}

/// `Ok` if `w`'s data plane answers `path` as the preview-1 `cgi-rust`
/// example does under the route `/cgi/*`.
fn cgi_at(w: &Wisp, path: &str) -> Result<(), String> {
    let (status, body) = status_json(w.get(path));
    let info = path.strip_prefix("/cgi").unwrap_or(path);
    if status == 200 && body["script_name"] == "/cgi" && body["path_info"] == info {
        Ok(())
    } else {
        Err(format!("GET {path}: {status} {body}"))
    }
}

/// `Ok` if `w` has no function `name` (admin API) and its data plane does
/// not answer `path`.
fn gone_from(w: &Wisp, name: &str, path: &str) -> Result<(), String> {
    let (status, body) = status_json(w.admin().get(&format!("/v1/functions/{name}")));
    if status != 404 || body["error"]["code"] != "function_not_found" {
        return Err(format!("GET /v1/functions/{name}: {status} {body}"));
    }
    let (status, body) = status_json(w.get(path));
    if status != 404 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    Ok(())
}

/// A function's versions on a host, as (version, sha256, active).
fn versions(w: &Wisp, name: &str) -> Vec<(u64, String, bool)> {
    let (status, body) = status_json(w.admin().get(&format!("/v1/functions/{name}/versions")));
    assert_eq!(status, 200, "versions of {name}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("versions of {name} are a list: {body}"))
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["sha256"].as_str().unwrap().to_string(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// POST on the admin API, with the token.
fn post(w: &Wisp, path: &str, body: Option<Value>) -> reqwest::blocking::Response {
    let a = w.admin();
    let mut req = a
        .http
        .post(format!("{}{path}", a.url))
        .bearer_auth(&a.token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().unwrap()
}

/// Deploys a guest's wasm under `name` through `w`, asserting 201; returns
/// the function's info.
fn deploy(w: &Wisp, name: &str, wasm: &std::path::Path, route: &str) -> Value {
    let r = w
        .admin()
        .deploy(name, &std::fs::read(wasm).unwrap(), &[("route", route)]);
    let (status, body) = status_json(r);
    assert_eq!(status, 201, "deploy {name}: {body}");
    body
}

/// `GET /v1/health` without a token.
fn health(w: &Wisp) -> Value {
    let (status, body) = status_json(
        client()
            .get(format!("{}/v1/health", w.admin_url))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "health: {body}");
    body
}

/// `Ok` with `/v1/hosts`'s list once it names exactly `nodes`.
fn hosts_are(w: &Wisp, nodes: &[&str]) -> Result<Vec<Value>, String> {
    let (status, body) = status_json(w.admin().get("/v1/hosts"));
    let listed: Vec<&str> = body["hosts"]
        .as_array()
        .map(|hosts| hosts.iter().filter_map(|h| h["node"].as_str()).collect())
        .unwrap_or_default();
    if status == 200 && listed == nodes {
        Ok(body["hosts"].as_array().unwrap().clone())
    } else {
        Err(format!("GET /v1/hosts: {status} {body}"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn three_hosts_see_each_other() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    let version = env!("CARGO_PKG_VERSION");

    for (node, w) in nodes.iter().zip(&hosts) {
        // Every host lists all three, sorted by node name, each with where
        // it serves and the version it runs.
        let listed = eventually(&format!("{node} lists h1, h2, h3"), || hosts_are(w, &nodes));
        for (entry, other) in listed.iter().zip(&hosts) {
            assert_eq!(entry["version"], version, "{entry}");
            assert_eq!(
                entry["data_url"].as_str().unwrap().trim_end_matches('/'),
                other.data_url.trim_end_matches('/'),
                "{entry}"
            );
            assert_eq!(
                entry["admin_url"].as_str().unwrap().trim_end_matches('/'),
                other.admin_url.trim_end_matches('/'),
                "{entry}"
            );
            let started = entry["started_at_ms"].as_u64().expect("started_at_ms");
            let seen = entry["seen_at_ms"].as_u64().expect("seen_at_ms");
            assert!(started <= seen, "{entry}");
            assert!(
                now_ms().abs_diff(seen) < 60_000,
                "a heartbeat of this minute: {entry}"
            );
        }

        // `wisp hosts`: a line per host with its node name and version.
        let out = ok(w.cli(&["hosts"]));
        let lines: Vec<&str> = out.lines().filter(|l| l.contains(version)).collect();
        assert_eq!(lines.len(), 3, "{out}");
        for (line, other) in lines.iter().zip(&nodes) {
            assert!(
                line.split_whitespace().any(|word| word == *other),
                "{other} expected in {line:?}:\n{out}"
            );
        }

        // Health, without a token: the node and the members it sees.
        let h = eventually(&format!("{node}'s health counts 3 members"), || {
            let h = health(w);
            if h["cluster"]["members"] == 3 {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        });
        assert_eq!(h["status"], "ok", "{h}");
        assert_eq!(h["node"], *node, "{h}");
        assert_eq!(h["cluster"]["connected"], true, "{h}");

        // The list of hosts is the admin API's: the token is required.
        let r = client()
            .get(format!("{}/v1/hosts", w.admin_url))
            .send()
            .unwrap();
        assert_error(r, 401, "unauthorized");
        let r = client()
            .get(format!("{}/v1/hosts", w.admin_url))
            .bearer_auth("not-the-token")
            .send()
            .unwrap();
        assert_error(r, 401, "unauthorized");
    }
}

#[test]
fn a_single_node_host_has_no_cluster_to_list() {
    let w = Wisp::start();
    let (status, body) = status_json(w.admin().get("/v1/hosts"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"hosts": []}));
    // `wisp hosts` says so, and succeeds: nothing is wrong.
    let out = w.cli(&["hosts"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok(out).is_empty());
    assert!(stderr.contains("not in a cluster"), "{stderr}");
    // Health as before cluster mode: no cluster to report on.
    let h = health(&w);
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["cluster"].is_null(), "no cluster on a single node: {h}");
}

#[test]
fn a_change_on_any_host_is_served_by_every_host() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

    // Refused on one host: refused for all. A later good deploy reaching
    // the others shows that nothing of the refused one did (a host applies
    // the cluster's changes in order).
    let hello = std::fs::read(guest("hello")).unwrap();
    assert_error(
        h1.admin().deploy("bad", b"not wasm", &[("route", "/bad")]),
        400,
        "invalid_wasm",
    );
    assert_error(
        h1.admin().deploy("app", &hello, &[("route", "no-slash")]),
        400,
        "invalid_route",
    );

    // Version 1, deployed on host 1, acknowledged once stored: served by
    // hosts 2 and 3, at the same version, from the same artifact.
    let deployed = Instant::now();
    let info = deploy(h1, "app", &guest("hello"), "/app/*");
    assert_eq!(info["active_version"], 1, "{info}");
    hello_at(h1, "/app/x").unwrap();
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves app v1"), || {
            at_version(w, "app", 1)?;
            hello_at(w, "/app/x")
        });
        assert_eq!(versions(w, "app"), versions(h1, "app"), "{node}");
        gone_from(w, "bad", "/bad").unwrap();
    }
    eprintln!("version 1 reached every host in {:?}", deployed.elapsed());
    assert_eq!(
        h2.admin().functions().len(),
        1,
        "only app is in the cluster"
    );

    // Version 2 (another artifact, the same routes), deployed on host 2.
    let info = deploy(h2, "app", &guest("echo"), "/app/*");
    assert_eq!(info["active_version"], 2, "{info}");
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves app v2"), || {
            at_version(w, "app", 2)?;
            echo_at(w, "/app/x")
        });
        let v = versions(w, "app");
        assert_eq!(v, versions(h2, "app"), "{node}");
        assert_eq!(v.len(), 2, "{v:?}");
        assert_ne!(v[0].1, v[1].1, "two artifacts: {v:?}");
        assert!(v[1].2 && !v[0].2, "version 2 active: {v:?}");
    }

    // A bad rollback on host 2 changes nothing anywhere.
    assert_error(
        post(
            h2,
            "/v1/functions/app/rollback",
            Some(serde_json::json!({"version": 9})),
        ),
        404,
        "version_not_found",
    );
    assert_error(
        post(h2, "/v1/functions/nope/rollback", None),
        404,
        "function_not_found",
    );

    // Rollback on host 3: every host back at version 1.
    let (status, body) = status_json(post(h3, "/v1/functions/app/rollback", None));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active_version"], 1, "{body}");
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves app v1 again"), || {
            at_version(w, "app", 1)?;
            hello_at(w, "/app/x")
        });
        let v = versions(w, "app");
        assert!(v[0].2 && !v[1].2, "{node}: version 1 active: {v:?}");
    }

    // Deleting what is not there is refused, and deletes nothing.
    assert_error(
        h3.admin().delete("/v1/functions/nope"),
        404,
        "function_not_found",
    );

    // Delete on host 1: gone everywhere, from the API and the data plane.
    let r = h1.admin().delete("/v1/functions/app");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} no longer has app"), || {
            gone_from(w, "app", "/app/x")
        });
        assert!(w.admin().functions().is_empty(), "{node}");
    }

    // The name is free again, everywhere: deployed anew on host 3, it starts
    // over at version 1 on every host.
    let info = deploy(h3, "app", &guest("hello"), "/app/*");
    assert_eq!(info["active_version"], 1, "{info}");
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves the new app"), || {
            at_version(w, "app", 1)?;
            hello_at(w, "/app/x")
        });
        assert_eq!(versions(w, "app").len(), 1, "{node}");
    }
}

#[test]
fn a_host_with_an_empty_data_directory_gets_everything_from_the_cluster() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    deploy(&hosts[0], "hello", &guest("hello"), "/hello");
    // A preview-1 module (run CGI-style), deployed on another host.
    deploy(&hosts[1], "cgi", &wasip1_guest("cgi-rust"), "/cgi/*");
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves hello and cgi"), || {
            hello_at(w, "/hello")?;
            cgi_at(w, "/cgi/items/7")
        });
    }

    // Host 4 starts on a data directory of its own, empty.
    let h4 = Wisp::start_with(member(&nats, "h4"));
    eventually("h4 serves hello and cgi", || {
        at_version(&h4, "hello", 1)?;
        at_version(&h4, "cgi", 1)?;
        hello_at(&h4, "/hello")?;
        cgi_at(&h4, "/cgi/items/7")
    });
    let mut names: Vec<String> = h4.admin().functions().into_iter().map(|f| f.name).collect();
    names.sort();
    assert_eq!(names, ["cgi", "hello"]);
    for name in ["hello", "cgi"] {
        assert_eq!(versions(&h4, name), versions(&hosts[0], name), "{name}");
    }
    // It compiled them itself: compiled code stays on each host's disk.
    assert_eq!(compiled_files(&h4).len(), 2, "{:?}", compiled_files(&h4));

    // And the others see it join.
    eventually("h1 lists h4", || {
        hosts_are(&hosts[0], &["h1", "h2", "h3", "h4"])
    });
    eventually("h4 counts 4 members", || {
        let h = health(&h4);
        if h["cluster"]["members"] == 4 && h["node"] == "h4" {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
}

/// Runs `wisp serve` with `args` on a fresh data directory, expecting it
/// to stop by itself within `within`; returns its stderr, and how long it
/// took. Fails if it served.
fn serve_refused(args: &[&str], within: Duration) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env("WISP_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pipes are drained after the exit: a refusal writes a few lines,
    // far below a pipe's buffer.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("wisp serve {args:?} still runs after {within:?}:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?}: exited 0:\n{stderr}");
    assert!(
        !stdout.contains("wisp: data plane") && !stdout.contains("wisp: admin API"),
        "{args:?}: it served:\n{stdout}\n{stderr}"
    );
    (stderr, took)
}

#[test]
fn an_unreachable_cluster_stops_wisp_serve_with_a_clear_message() {
    // A closed port: the connection is refused at once.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{closed}");
    let args = [
        "--cluster",
        &url,
        "--node-name",
        "h1",
        "--cluster-connect-timeout",
        "2s",
    ];
    let (err, took) = serve_refused(&args, Duration::from_secs(30));
    assert!(err.contains("cannot reach the cluster"), "{err}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {err}");
    assert!(!err.contains(TOKEN), "no token in the message: {err}");

    // A port that accepts but never speaks NATS: given up after the
    // connect timeout, not hanging on.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let args = [
        "--cluster",
        &url,
        "--node-name",
        "h1",
        "--cluster-connect-timeout",
        "2s",
    ];
    let (err, took) = serve_refused(&args, Duration::from_secs(30));
    assert!(err.contains("cannot reach the cluster"), "{err}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {err}");
    drop(silent);
}

#[test]
fn bad_node_names_are_refused_at_start() {
    let nats = Nats::start();
    let url = nats.url();
    for bad in ["", "a b", "a.b", "h1/x", &"x".repeat(65)] {
        let (err, _) = serve_refused(
            &["--cluster", &url, "--node-name", bad],
            Duration::from_secs(60),
        );
        assert!(
            err.contains("node-name") || err.contains("node name"),
            "{bad:?}: {err}"
        );
    }
    // A name a live host has: two hosts of one name would be one member.
    let h1 = Wisp::start_with(member(&nats, "h1"));
    eventually("h1 lists itself", || hosts_are(&h1, &["h1"]));
    let (err, _) = serve_refused(
        &["--cluster", &url, "--node-name", "h1"],
        Duration::from_secs(60),
    );
    assert!(err.contains("h1"), "{err}");
    assert!(
        err.contains("node-name") || err.contains("node name"),
        "{err}"
    );
    // The first one is unaffected.
    hosts_are(&h1, &["h1"]).unwrap();
    assert_eq!(health(&h1)["cluster"]["connected"], true);
}

/// Sets the flag when dropped, so a background loop ends even when the
/// test fails (a scoped thread that never ends would hang the test).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn while_nats_is_down_hosts_serve_and_refuse_writes_then_catch_up() {
    let mut nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    deploy(h1, "app", &guest("hello"), "/app/*");
    deploy(h1, "app", &guest("echo"), "/app/*");
    for (node, w) in nodes.iter().zip(&hosts) {
        eventually(&format!("{node} serves app v2"), || {
            at_version(w, "app", 2)?;
            echo_at(w, "/app/x")
        });
    }
    let before: Vec<Value> = hosts
        .iter()
        .map(|w| status_json(w.admin().get("/v1/functions")).1)
        .collect();

    // Requests on every host, all along, until NATS is back and a deploy
    // went through: none may fail.
    let done = AtomicBool::new(false);
    let urls: Vec<String> = hosts
        .iter()
        .map(|w| format!("{}/app/x", w.data_url))
        .collect();
    std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let c = client();
            let (mut served, mut failed) = (0u64, Vec::new());
            while !done.load(Ordering::Relaxed) {
                for url in &urls {
                    match c.get(url).send() {
                        Ok(r) if r.status() == 200 => served += 1,
                        Ok(r) => failed.push(format!("{url}: {}", r.status())),
                        Err(e) => failed.push(format!("{url}: {e}")),
                    }
                    failed.truncate(20);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (served, failed)
        });
        let stop_traffic = SetOnDrop(&done);

        nats.stop();
        for (node, w) in nodes.iter().zip(&hosts) {
            eventually(&format!("{node} says it lost the cluster"), || {
                let h = health(w);
                if h["cluster"]["connected"] == false {
                    Ok(())
                } else {
                    Err(h.to_string())
                }
            });
        }

        // Writes are refused on every host, with a message; the CLI says so.
        let hello = std::fs::read(guest("hello")).unwrap();
        let msg = assert_error(
            h1.admin().deploy("new", &hello, &[("route", "/new")]),
            503,
            "cluster_unavailable",
        );
        assert!(!msg.contains(TOKEN), "{msg}");
        assert_error(
            post(h2, "/v1/functions/app/rollback", None),
            503,
            "cluster_unavailable",
        );
        assert_error(
            h3.admin().delete("/v1/functions/app"),
            503,
            "cluster_unavailable",
        );
        let path = guest("hello");
        let err = fails(h2.cli(&["deploy", "new", path.to_str().unwrap(), "--route", "/new"]));
        assert!(err.contains("cluster"), "{err}");

        // Reads still work, and show nothing changed.
        for ((node, w), before) in nodes.iter().zip(&hosts).zip(&before) {
            let (status, now) = status_json(w.admin().get("/v1/functions"));
            assert_eq!(status, 200, "{node}: {now}");
            assert_eq!(&now, before, "{node}");
            at_version(w, "app", 2).unwrap();
            gone_from(w, "new", "/new").unwrap();
            echo_at(w, "/app/x").unwrap();
        }

        // NATS returns (same port, same store): a deploy on host 2, once
        // it has reconnected, reaches hosts 1 and 3.
        nats.restart();
        let back = Instant::now();
        eventually_within(RECONNECT, "h2 takes a deploy again", || {
            let r = h2.admin().deploy("after", &hello, &[("route", "/after")]);
            let (status, body) = status_json(r);
            match status {
                201 => Ok(()),
                503 if body["error"]["code"] == "cluster_unavailable" => {
                    Err(format!("{status} {body}"))
                }
                _ => panic!("deploy after NATS returned: {status} {body}"),
            }
        });
        for (node, w) in nodes.iter().zip(&hosts) {
            eventually_within(RECONNECT, &format!("{node} serves after"), || {
                at_version(w, "after", 1)?;
                hello_at(w, "/after")
            });
        }
        eprintln!(
            "after NATS returned, a deploy reached every host in {:?}",
            back.elapsed()
        );
        // Nothing of the refused writes surfaced once NATS was back.
        for (node, w) in nodes.iter().zip(&hosts) {
            gone_from(w, "new", "/new").unwrap();
            at_version(w, "app", 2).unwrap();
            assert_eq!(versions(w, "app").len(), 2, "{node}");
            echo_at(w, "/app/x").unwrap();
        }

        drop(stop_traffic);
        let (served, failed) = traffic.join().unwrap();
        assert!(failed.is_empty(), "requests failed: {failed:?}");
        assert!(served >= 3, "served {served}");
    });
}

#[test]
fn a_host_restarted_on_its_data_directory_catches_up() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let mut hosts = cluster(&nats, &nodes);
    deploy(&hosts[0], "app", &guest("hello"), "/app/*");
    deploy(&hosts[0], "gone", &guest("hello"), "/gone");
    eventually("h3 serves app and gone", || {
        hello_at(&hosts[2], "/app/x")?;
        hello_at(&hosts[2], "/gone")
    });

    // Host 3 stops; meanwhile a new version, a delete and a new function.
    assert_eq!(hosts[2].terminate().code(), Some(0));
    deploy(&hosts[0], "app", &guest("echo"), "/app/*");
    let r = hosts[1].admin().delete("/v1/functions/gone");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    deploy(&hosts[1], "late", &guest("hello"), "/late");

    // Back on its own data directory, it serves what the cluster has now.
    let h3 = hosts[2].restart_on(member(&nats, "h3"));
    eventually("h3 catches up", || {
        at_version(&h3, "app", 2)?;
        echo_at(&h3, "/app/x")?;
        gone_from(&h3, "gone", "/gone")?;
        at_version(&h3, "late", 1)?;
        hello_at(&h3, "/late")
    });
    assert_eq!(versions(&h3, "app"), versions(&hosts[0], "app"));
    let mut names: Vec<String> = h3.admin().functions().into_iter().map(|f| f.name).collect();
    names.sort();
    assert_eq!(names, ["app", "late"]);
    hosts[2] = h3;
    eventually("h1 lists h3 again", || hosts_are(&hosts[0], &nodes));
}
