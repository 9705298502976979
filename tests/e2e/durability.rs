//! Restarts, crashes and shutdown.

use std::time::Duration;

use crate::harness::*;

#[test]
fn restart_keeps_functions_and_versions_and_does_not_compile() {
    let mut w = Wisp::start();
    let a = w.admin();
    a.deploy_guest("hello", "hello", &["/hello"]);
    a.deploy_guest("hello", "hello", &["/hello", "/hi/*"]);
    a.deploy_guest("echo", "echo", &["/echo"]);
    let before: Vec<serde_json::Value> = a.get("/v1/functions/hello/versions").json().unwrap();
    assert_eq!(w.terminate().code(), Some(0));

    let w2 = w.restart_on(Opts::default());
    assert_eq!(
        w2.get("/hi/there").text().unwrap(),
        "hello from wisp at /hi/there"
    );
    assert_eq!(w2.get("/echo").status(), 200);
    let after: Vec<serde_json::Value> = w2
        .admin()
        .get("/v1/functions/hello/versions")
        .json()
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(w2.admin().functions().len(), 2);
    assert_eq!(
        w2.metric("wisp_compiles_total"),
        0.0,
        "a restart must not recompile"
    );
}

#[test]
fn kill_9_right_after_an_acknowledged_deploy_keeps_it() {
    for round in 0..3 {
        let mut w = Wisp::start();
        let info = w.admin().deploy_guest("hello", "hello", &["/hello"]);
        assert_eq!(info["active_version"], 1);
        // No pause: the deploy was acknowledged, so it must be on disk.
        w.kill9();
        let w2 = w.restart_on(Opts::default());
        assert_eq!(w2.get("/hello").status(), 200, "round {round}");
        assert_eq!(w2.admin().functions().len(), 1);
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let mut w = Wisp::start();
    w.admin().deploy_guest("m", "misbehave", &["/m/*"]);
    let url = format!("{}/m/sleep?ms=1000", w.data_url);
    let slow = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = w.terminate();
    assert_eq!(status.code(), Some(0));
    assert_eq!(slow.join().unwrap(), (200, "slept".to_string()));
    assert!(w.log_text().contains("store flushed"));
}
