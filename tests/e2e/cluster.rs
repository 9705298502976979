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
pub(crate) const TOKEN: &str = "a-cluster-admin-token-0123456789";

/// How long a change may take to reach every host (the issue says "within
/// a few seconds"; this leaves room for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(15);

/// How long hosts may take to reconnect once NATS is back.
const RECONNECT: Duration = Duration::from_secs(20);

/// The options of a host joining `nats`'s cluster as `node`.
pub(crate) fn member(nats: &Nats, node: &str) -> Opts {
    Opts::default()
        .arg("--cluster")
        .arg(&nats.url())
        .arg("--node-name")
        .arg(node)
        .env("WISP_ADMIN_TOKEN", TOKEN)
}

/// Hosts joining `nats`'s cluster, one per node name, each on a fresh data
/// directory; started one after the other, as an operator would.
pub(crate) fn cluster(nats: &Nats, nodes: &[&str]) -> Vec<Wisp> {
    nodes
        .iter()
        .map(|node| Wisp::start_with(member(nats, node)))
        .collect()
}

/// Polls `check` every 100 ms until it answers `Ok`, for up to `within`;
/// fails with what it saw last.
pub(crate) fn eventually_within<T>(
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

pub(crate) fn eventually<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    eventually_within(PROPAGATION, what, check)
}

/// Status and JSON body of an answer (`Null` if the body is not JSON).
pub(crate) fn status_json(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `Ok` if `w` has `name` at active version `version`.
pub(crate) fn at_version(w: &Wisp, name: &str, version: u64) -> Result<(), String> {
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
pub(crate) fn post(w: &Wisp, path: &str, body: Option<Value>) -> reqwest::blocking::Response {
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
pub(crate) fn health(w: &Wisp) -> Value {
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

// Key-value data, settings and secrets across hosts: what a guest or the
// CLI writes on one host is what every other host reads; counters and
// compare-and-swap stay atomic across hosts; TTLs and quotas hold
// cluster-wide; secrets never reach NATS in clear, and a host without
// the cluster key (or with another one) cannot use them.

/// A secret value: looked for, and never expected, in answers, logs and
/// NATS's store directory.
const CLUSTER_SECRET: &str = "cluster-secret-do-not-leak-4b1d";

/// A setting's value: expected in clear in NATS's store directory, which
/// shows that the search there sees the data at all.
const PLAIN_SETTING: &str = "plain-setting-value-7e2a";

/// A call to the caps guest (tests/guests/caps) on `w`'s data plane:
/// `POST path` with `body`, answered 200 with JSON (guest-visible errors
/// are JSON too).
fn caps_call(w: &Wisp, path: &str, body: &[u8]) -> Value {
    let (status, json) = status_json(
        client()
            .post(format!("{}{path}", w.data_url))
            .body(body.to_vec())
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "POST {path} on {}: {json}", w.data_url);
    json
}

/// What the caps guest deployed at `/caps/*` reads for `key` on `w`.
fn caps_get(w: &Wisp, key: &str) -> Value {
    caps_call(w, &format!("/caps/kv/get?key={key}"), b"")
}

/// What the caps guest's `config::get` gives for `key` on `w`.
fn caps_config(w: &Wisp, key: &str) -> Value {
    caps_call(w, &format!("/caps/config/get?key={key}"), b"")["value"].clone()
}

/// `PUT` of a key's value through `w`'s admin API (`?ttl_ms` in `key` if
/// wanted).
fn kv_put(w: &Wisp, function: &str, key: &str, value: &[u8]) -> reqwest::blocking::Response {
    let a = w.admin();
    a.http
        .put(format!("{}/v1/functions/{function}/kv/{key}", a.url))
        .bearer_auth(&a.token)
        .body(value.to_vec())
        .send()
        .unwrap()
}

/// A function's keys as `wisp kv list` prints them on `w`.
fn cli_keys(w: &Wisp, function: &str) -> Vec<String> {
    ok(w.cli(&["kv", "list", function]))
        .lines()
        .map(str::to_string)
        .collect()
}

/// `PUT /v1/functions/{function}/config` through `w`.
fn put_config(w: &Wisp, function: &str, body: &Value) -> reqwest::blocking::Response {
    let a = w.admin();
    a.http
        .put(format!("{}/v1/functions/{function}/config", a.url))
        .bearer_auth(&a.token)
        .json(body)
        .send()
        .unwrap()
}

/// A function's settings and secrets as `w`'s admin API lists them;
/// asserts the secret is not in the answer.
fn config_entries(w: &Wisp, function: &str) -> Value {
    let r = w.admin().get(&format!("/v1/functions/{function}/config"));
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains(CLUSTER_SECRET), "a secret came back: {text}");
    serde_json::from_str::<Value>(&text).unwrap()["entries"].clone()
}

/// `Ok` once `w`'s caps guest reads `expected` for the setting `key`.
fn config_is(w: &Wisp, key: &str, expected: &Value) -> Result<(), String> {
    let seen = caps_config(w, key);
    if &seen == expected {
        Ok(())
    } else {
        Err(format!("{} reads {key} = {seen}", w.data_url))
    }
}

/// Deploys the caps guest as `caps` at `/caps/*` on `hosts[0]`, with
/// `extra` query parameters, and waits until every host serves it.
fn deploy_caps(hosts: &[Wisp], extra: &[(&str, &str)]) {
    let caps = std::fs::read(guest("caps")).unwrap();
    let mut query = vec![("route", "/caps/*")];
    query.extend_from_slice(extra);
    let (status, body) = status_json(hosts[0].admin().deploy("caps", &caps, &query));
    assert_eq!(status, 201, "deploy caps: {body}");
    let version = body["active_version"].as_u64().unwrap();
    for w in hosts {
        eventually(&format!("{} serves caps", w.data_url), || {
            at_version(w, "caps", version)?;
            let (status, body) = status_json(w.get("/caps/config/keys"));
            if status == 200 && body["keys"].is_array() {
                Ok(())
            } else {
                Err(format!("GET /caps/config/keys: {status} {body}"))
            }
        });
    }
}

/// Writes a new cluster key with `wisp cluster keygen`; returns its path.
fn keygen(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["cluster", "keygen"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wisp cluster keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The options of a member given the cluster key in `key`.
fn keyed_member(nats: &Nats, node: &str, key: &std::path::Path) -> Opts {
    member(nats, node)
        .arg("--cluster-key-file")
        .arg(key.to_str().unwrap())
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn kv_data_is_shared_and_atomic_across_hosts() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    deploy_caps(&hosts, &[]);

    // Written on host 1, by the guest and by the CLI: read on 2 and 3.
    assert_eq!(
        caps_call(h1, "/caps/kv/set?key=greeting", b"hello"),
        serde_json::json!({"ok": true})
    );
    ok(h1.cli(&["kv", "set", "caps", "from-cli", "seeded"]));
    for w in [h2, h3] {
        let got = caps_get(w, "greeting");
        assert_eq!(got["value"], "hello", "{got}");
        assert_eq!(caps_get(w, "from-cli")["value"], "seeded");
        assert_eq!(ok(w.cli(&["kv", "get", "caps", "greeting"])), "hello");
    }

    // 300 increments, 100 from each host at once: every answer a distinct
    // count, 1 to 300, and 300 in the end everywhere.
    let mut counts: Vec<i64> = std::thread::scope(|s| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|w| {
                let url = format!("{}/caps/kv/incr?key=n", w.data_url);
                s.spawn(move || {
                    let c = client();
                    (0..100)
                        .map(|_| {
                            let (status, body) = status_json(c.post(&url).send().unwrap());
                            assert_eq!(status, 200, "{url}: {body}");
                            body["value"]
                                .as_i64()
                                .unwrap_or_else(|| panic!("{url}: {body}"))
                        })
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    counts.sort_unstable();
    assert_eq!(counts, (1..=300).collect::<Vec<i64>>(), "lost or doubled");
    for w in &hosts {
        assert_eq!(caps_get(w, "n")["value"], "300");
        assert_eq!(ok(w.cli(&["kv", "get", "caps", "n"])), "300");
    }

    // Compare-and-swap, hosts 1 and 2 racing on one key: one winner per
    // round, and its value is what every host reads.
    let mut current: Option<String> = None;
    for round in 0..10 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<(String, bool)> = std::thread::scope(|s| {
            let threads: Vec<_> = [h1, h2]
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    let mine = format!("round{round}-host{}", i + 1);
                    let path = match &current {
                        None => "/caps/kv/cas?key=lock".to_string(),
                        Some(prev) => format!("/caps/kv/cas?key=lock&expected={prev}"),
                    };
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let got = caps_call(w, &path, mine.as_bytes());
                        let swapped = got["swapped"]
                            .as_bool()
                            .unwrap_or_else(|| panic!("{path}: {got}"));
                        (mine, swapped)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let winners: Vec<&String> = results.iter().filter(|r| r.1).map(|r| &r.0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for w in &hosts {
            assert_eq!(caps_get(w, "lock")["value"], *winners[0], "round {round}");
        }
        current = Some(winners[0].clone());
    }

    // A TTL'd key, set on host 2: there on every host, then gone from
    // every host (reads and listings); a key without one stays.
    assert_eq!(
        caps_call(h2, "/caps/kv/set?key=brief&ttl_ms=3000", b"soon gone"),
        serde_json::json!({"ok": true})
    );
    let set_at = Instant::now();
    for w in &hosts {
        let got = caps_get(w, "brief");
        if set_at.elapsed() < Duration::from_millis(2500) {
            assert_eq!(got["value"], "soon gone", "{got}");
        }
    }
    // `wisp kv list` on any host: the same keys.
    let all = ["brief", "from-cli", "greeting", "lock", "n"];
    if set_at.elapsed() < Duration::from_millis(2500) {
        for w in &hosts {
            assert_eq!(cli_keys(w, "caps"), all);
        }
    }
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(set_at.elapsed()));
    for w in &hosts {
        eventually(&format!("brief expired on {}", w.data_url), || {
            let got = caps_get(w, "brief");
            if got["found"] == false {
                Ok(())
            } else {
                Err(got.to_string())
            }
        });
        assert_eq!(cli_keys(w, "caps"), &all[1..]);
        let listed = caps_call(w, "/caps/kv/list", b"");
        assert_eq!(listed["keys"], serde_json::json!(&all[1..]), "{listed}");
        assert_eq!(caps_get(w, "greeting")["value"], "hello");
    }

    // Deleted on host 1, deployed anew on host 2: its keys are gone, on
    // every host.
    let r = h1.admin().delete("/v1/functions/caps");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    for w in &hosts {
        eventually(&format!("{} dropped caps", w.data_url), || {
            gone_from(w, "caps", "/caps/kv/list")
        });
    }
    let hosts_from_2 = [h2, h1, h3];
    let caps = std::fs::read(guest("caps")).unwrap();
    let (status, body) = status_json(h2.admin().deploy("caps", &caps, &[("route", "/caps/*")]));
    assert_eq!(status, 201, "{body}");
    for w in hosts_from_2 {
        eventually(&format!("{} serves the new caps", w.data_url), || {
            at_version(w, "caps", 1)
        });
        let listed = caps_call(w, "/caps/kv/list", b"");
        assert_eq!(listed["keys"], serde_json::json!([]), "{listed}");
        assert_eq!(caps_get(w, "n")["found"], false);
        assert!(cli_keys(w, "caps").is_empty());
        let err = fails(w.cli(&["kv", "get", "caps", "greeting"]));
        assert!(err.contains("not set"), "{err}");
    }
    // It starts counting anew.
    assert_eq!(caps_call(h3, "/caps/kv/incr?key=n", b"")["value"], 1);
}

#[test]
fn the_kv_quota_holds_across_hosts() {
    let nats = Nats::start();
    let nodes = ["h1", "h2", "h3"];
    let hosts = cluster(&nats, &nodes);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    // Keys and values together: at most 40 bytes for this function.
    deploy_caps(
        &hosts,
        &[("kv_max_value_bytes", "16"), ("kv_max_total_bytes", "40")],
    );
    for w in &hosts {
        let (_, info) = status_json(w.admin().get("/v1/functions/caps"));
        assert_eq!(info["limits"]["kv_max_total_bytes"], 40, "{info}");
    }

    // Host 1 stores 32 bytes (2 × (1 + 15)).
    assert_eq!(kv_put(h1, "caps", "a", &[b'a'; 15]).status(), 200);
    assert_eq!(
        caps_call(h1, "/caps/kv/set?key=b", &[b'b'; 15]),
        serde_json::json!({"ok": true})
    );
    let stored = |w: &Wisp| (cli_keys(w, "caps"), caps_get(w, "a"), caps_get(w, "b"));
    let before = stored(h3);
    assert_eq!(before.0, ["a", "b"]);

    // Host 2 may not pass it: 32 + 1 + 8 = 41, by the admin API and by
    // the guest and the CLI; nothing is written.
    let msg = assert_error(kv_put(h2, "caps", "c", &[0; 8]), 507, "quota_exceeded");
    assert!(msg.contains("40 bytes"), "{msg}");
    assert_eq!(
        caps_call(h2, "/caps/kv/set?key=c", &[b'c'; 8])["error"],
        "quota-exceeded"
    );
    let err = fails(h2.cli(&["kv", "set", "caps", "c", "12345678"]));
    assert!(err.contains("40 bytes"), "{err}");
    for w in &hosts {
        assert_eq!(stored(w), before, "a refused write on h2 changed the data");
    }

    // Exactly up to the quota is fine (32 + 1 + 7 = 40), then host 3 may
    // not add even an empty value.
    assert_eq!(
        caps_call(h2, "/caps/kv/set?key=c", &[b'c'; 7]),
        serde_json::json!({"ok": true})
    );
    assert_eq!(
        caps_call(h3, "/caps/kv/set?key=d", b"")["error"],
        "quota-exceeded"
    );
    assert_error(kv_put(h3, "caps", "d", b""), 507, "quota_exceeded");
    // Nor grow a value host 1 wrote (15 to 16 bytes); it keeps its value.
    assert_eq!(
        caps_call(h3, "/caps/kv/set?key=a", &[b'x'; 16])["error"],
        "quota-exceeded"
    );
    assert_eq!(caps_get(h1, "a")["value"], "a".repeat(15));
    // A delete on host 3 gives the bytes back to host 1.
    assert_eq!(caps_call(h3, "/caps/kv/delete?key=c", b"")["deleted"], true);
    assert_eq!(kv_put(h1, "caps", "d", &[0; 7]).status(), 200);
    for w in &hosts {
        assert_eq!(cli_keys(w, "caps"), ["a", "b", "d"]);
    }

    // Room for one more 8-byte entry (32 of 40), and hosts 1 and 2 each
    // write one at the same moment: one is stored, the other refused, in
    // every round; the refused ones leave no usage behind.
    assert_eq!(caps_call(h2, "/caps/kv/delete?key=d", b"")["deleted"], true);
    for round in 0..10 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<(String, Value)> = std::thread::scope(|s| {
            let threads: Vec<_> = [(h1, "x"), (h2, "y")]
                .into_iter()
                .map(|(w, key)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let path = format!("/caps/kv/set?key={key}");
                        (key.to_string(), caps_call(w, &path, &[b'r'; 7]))
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let stored: Vec<&String> = results
            .iter()
            .filter(|(_, r)| r["ok"] == true)
            .map(|(key, _)| key)
            .collect();
        let refused = results
            .iter()
            .filter(|(_, r)| r["error"] == "quota-exceeded")
            .count();
        assert_eq!(
            (stored.len(), refused),
            (1, 1),
            "round {round}: {results:?}"
        );
        let mut expected = vec!["a".to_string(), "b".to_string(), stored[0].clone()];
        expected.sort();
        assert_eq!(cli_keys(h3, "caps"), expected, "round {round}");
        let path = format!("/caps/kv/delete?key={}", stored[0]);
        assert_eq!(caps_call(h3, &path, b"")["deleted"], true);
    }
    assert_eq!(kv_put(h3, "caps", "d", &[0; 7]).status(), 200);
    assert_error(kv_put(h1, "caps", "e", b""), 507, "quota_exceeded");
}

#[test]
fn settings_and_secrets_reach_every_host_and_secrets_stay_sealed() {
    let nats = Nats::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "cluster.key");
    let nodes = ["h1", "h2", "h3"];
    let hosts: Vec<Wisp> = nodes
        .iter()
        .map(|node| Wisp::start_with(keyed_member(&nats, node, &key)))
        .collect();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    deploy_caps(&hosts, &[]);

    // A setting on host 1: read by the guest on hosts 2 and 3.
    let out = ok(h1.cli(&["config", "set", "caps", "A=1"]));
    assert!(out.contains('A'), "{out}");
    for w in &hosts {
        eventually(&format!("{} reads A", w.data_url), || {
            config_is(w, "A", &"1".into())
        });
    }

    // A secret on host 2: read by the guest on hosts 1 and 3, listed
    // masked everywhere.
    let out = ok(h2.cli(&[
        "config",
        "set",
        "caps",
        &format!("TOKEN={CLUSTER_SECRET}"),
        "--secret",
    ]));
    assert!(!out.contains(CLUSTER_SECRET), "{out}");
    for w in &hosts {
        eventually(&format!("{} reads TOKEN", w.data_url), || {
            config_is(w, "TOKEN", &CLUSTER_SECRET.into())
        });
    }
    // Then a setting on host 3, written after the secret (and, in the one
    // entry of the function's config, beside it).
    ok(h3.cli(&["config", "set", "caps", &format!("PLAIN={PLAIN_SETTING}")]));
    for w in &hosts {
        eventually(&format!("{} reads PLAIN", w.data_url), || {
            config_is(w, "PLAIN", &PLAIN_SETTING.into())?;
            config_is(w, "TOKEN", &CLUSTER_SECRET.into())
        });
        assert_eq!(
            config_entries(w, "caps"),
            serde_json::json!([
                {"key": "A", "value": "1", "secret": false},
                {"key": "PLAIN", "value": PLAIN_SETTING, "secret": false},
                {"key": "TOKEN", "value": "********", "secret": true},
            ])
        );
        let out = ok(w.cli(&["config", "list", "caps"]));
        assert!(!out.contains(CLUSTER_SECRET), "{out}");
        let line = out.lines().find(|l| l.starts_with("TOKEN")).unwrap();
        assert!(line.contains("********"), "{out}");
    }

    // NATS's store holds the later setting in clear (so the search sees
    // what was written with the secret, and after it) but the secret
    // nowhere.
    let store = nats.store_dir();
    eventually("the setting is in NATS's store files", || {
        if files_holding(store, PLAIN_SETTING).is_empty() {
            Err(format!(
                "{PLAIN_SETTING} in no file under {}",
                store.display()
            ))
        } else {
            Ok(())
        }
    });
    let leaked = files_holding(store, CLUSTER_SECRET);
    assert!(leaked.is_empty(), "the secret in clear in {leaked:?}");

    // A host without the key: serves, its guest reads the settings but not
    // the secret; it can neither set a secret nor change the settings of a
    // function that has one, and nothing changes elsewhere.
    let h4 = Wisp::start_with(member(&nats, "h4"));
    eventually("h4 serves caps with A", || {
        at_version(&h4, "caps", 1)?;
        config_is(&h4, "A", &"1".into())
    });
    assert_eq!(caps_config(&h4, "TOKEN"), Value::Null);
    let keys_seen = caps_call(&h4, "/caps/config/keys", b"");
    assert_eq!(
        keys_seen["keys"],
        serde_json::json!(["A", "PLAIN"]),
        "{keys_seen}"
    );
    let before = config_entries(h1, "caps");
    let msg = assert_error(
        put_config(
            &h4,
            "caps",
            &serde_json::json!({"values": {"OTHER": "x"}, "secret": true}),
        ),
        503,
        "cluster_key_missing",
    );
    assert!(msg.contains("cluster key"), "{msg}");
    assert_error(
        put_config(&h4, "caps", &serde_json::json!({"values": {"B": "2"}})),
        503,
        "cluster_key_missing",
    );
    let err = fails(h4.cli(&["config", "set", "caps", "OTHER=x", "--secret"]));
    assert!(err.contains("cluster key"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    for w in &hosts {
        assert_eq!(config_entries(w, "caps"), before, "{}", w.data_url);
        assert_eq!(caps_config(w, "OTHER"), Value::Null);
        assert_eq!(caps_config(w, "B"), Value::Null);
    }

    // A host given another key stops at start, saying why; the others
    // still read the secret.
    let other = keygen(keys.path(), "other.key");
    let (err, _) = serve_refused(
        &[
            "--cluster",
            &nats.url(),
            "--node-name",
            "h5",
            "--cluster-key-file",
            other.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        err.contains("is not the one this cluster's secrets are sealed with"),
        "{err}"
    );
    // A file that is not a key at all is refused too.
    let junk = keys.path().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    let (err, _) = serve_refused(
        &[
            "--cluster",
            &nats.url(),
            "--node-name",
            "h6",
            "--cluster-key-file",
            junk.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(err.contains("not a cluster key"), "{err}");
    for w in &hosts {
        config_is(w, "TOKEN", &CLUSTER_SECRET.into()).unwrap();
    }

    // Unset on host 3: gone on every host, the keyless one included.
    let out = ok(h3.cli(&["config", "unset", "caps", "TOKEN", "A"]));
    assert!(
        out.contains("A, TOKEN") || out.contains("TOKEN, A"),
        "{out}"
    );
    for w in hosts.iter().chain([&h4]) {
        eventually(&format!("{} no longer reads TOKEN, A", w.data_url), || {
            config_is(w, "TOKEN", &Value::Null)?;
            config_is(w, "A", &Value::Null)?;
            config_is(w, "PLAIN", &PLAIN_SETTING.into())
        });
    }
    // With no secret left, the keyless host may change the settings.
    ok(h4.cli(&["config", "set", "caps", "B=2"]));
    for w in &hosts {
        eventually(&format!("{} reads B", w.data_url), || {
            config_is(w, "B", &"2".into())
        });
    }

    // Deleted on host 1 and deployed anew on host 2: its settings went
    // with it, on every host.
    ok(h2.cli(&[
        "config",
        "set",
        "caps",
        &format!("TOKEN={CLUSTER_SECRET}"),
        "--secret",
    ]));
    eventually("h1 reads TOKEN again", || {
        config_is(h1, "TOKEN", &CLUSTER_SECRET.into())
    });
    let r = h1.admin().delete("/v1/functions/caps");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    for w in hosts.iter().chain([&h4]) {
        eventually(&format!("{} dropped caps", w.data_url), || {
            gone_from(w, "caps", "/caps/config/keys")
        });
    }
    let caps = std::fs::read(guest("caps")).unwrap();
    let (status, body) = status_json(h2.admin().deploy("caps", &caps, &[("route", "/caps/*")]));
    assert_eq!(status, 201, "{body}");
    for w in hosts.iter().chain([&h4]) {
        eventually(&format!("{} serves the new caps", w.data_url), || {
            at_version(w, "caps", 1)
        });
        assert_eq!(config_entries(w, "caps"), serde_json::json!([]));
        let keys_seen = caps_call(w, "/caps/config/keys", b"");
        assert_eq!(keys_seen["keys"], serde_json::json!([]), "{keys_seen}");
    }

    let leaked = files_holding(store, CLUSTER_SECRET);
    assert!(leaked.is_empty(), "the secret in clear in {leaked:?}");
    for w in hosts.iter().chain([&h4]) {
        assert!(
            !w.log_text().contains(CLUSTER_SECRET),
            "the secret in {}'s log",
            w.data_url
        );
    }
}

#[test]
fn cluster_keygen_writes_a_private_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = keygen(dir.path(), "cluster.key");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let written = std::fs::read_to_string(&path).unwrap();
    let hex = written.trim();
    assert_eq!(hex.len(), 64, "{written:?}");
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{written:?}");
    // Two keys are two keys.
    let second = keygen(dir.path(), "second.key");
    assert_ne!(std::fs::read_to_string(&second).unwrap(), written);

    // Run again on the file: refused, the key unchanged.
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["cluster", "keygen"])
        .arg(&path)
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_function_deployed_while_a_host_is_down_reaches_it_with_its_config() {
    let nats = Nats::start();
    let keys = tempfile::tempdir().unwrap();
    let key = keygen(keys.path(), "cluster.key");
    let mut hosts: Vec<Wisp> = ["h1", "h2"]
        .iter()
        .map(|node| Wisp::start_with(keyed_member(&nats, node, &key)))
        .collect();
    eventually("h1 lists h1, h2", || hosts_are(&hosts[0], &["h1", "h2"]));

    // Host 2 stops; caps is deployed on host 1 with a setting and a secret.
    assert_eq!(hosts[1].terminate().code(), Some(0));
    deploy_caps(&hosts[..1], &[]);
    ok(hosts[0].cli(&["config", "set", "caps", "A=1"]));
    ok(hosts[0].cli(&[
        "config",
        "set",
        "caps",
        &format!("TOKEN={CLUSTER_SECRET}"),
        "--secret",
    ]));
    ok(hosts[0].cli(&["kv", "set", "caps", "k", "v"]));

    // Back on its own data directory, host 2 serves caps with both.
    let h2 = hosts[1].restart_on(keyed_member(&nats, "h2", &key));
    eventually("h2 serves caps with its config", || {
        at_version(&h2, "caps", 1)?;
        config_is(&h2, "A", &"1".into())?;
        config_is(&h2, "TOKEN", &CLUSTER_SECRET.into())
    });
    assert_eq!(
        config_entries(&h2, "caps"),
        config_entries(&hosts[0], "caps")
    );
    assert_eq!(caps_get(&h2, "k")["value"], "v");
    assert!(!h2.log_text().contains(CLUSTER_SECRET));
    hosts[1] = h2;
}
