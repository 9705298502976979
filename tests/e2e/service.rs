//! Running as a service: `Type=notify` readiness (the host tells the
//! service manager READY=1 once it serves, STOPPING=1 when it stops), the
//! log filter re-read on SIGHUP without a restart, and the systemd unit
//! shipped in dist/systemd.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The next datagram on `socket`, within `within`.
fn next_state(socket: &UnixDatagram, within: Duration) -> String {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn sighup(w: &Wisp) {
    // SAFETY: sending a signal to our own child process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(w.child.id() as i32, libc::SIGHUP);
    }
}

#[test]
fn the_host_tells_the_service_manager_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut w = Wisp::start_with(Opts::default().env("NOTIFY_SOCKET", path.to_str().unwrap()));
    // Ready only once it serves: the admin API answers by then.
    assert_eq!(next_state(&socket, Duration::from_secs(30)), "READY=1");
    assert_eq!(w.get("/nothing-here").status(), 404);
    assert!(w.admin().functions().is_empty());
    assert_eq!(w.terminate().code(), Some(0));
    assert_eq!(next_state(&socket, Duration::from_secs(5)), "STOPPING=1");
}

#[test]
fn sighup_reloads_the_log_filter_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("log-filter");
    std::fs::write(&filter, "# quiet\nwarn\n").unwrap();
    let w = Wisp::start_with(
        Opts::default()
            .arg("--log-filter-file")
            .arg(filter.to_str().unwrap()),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let invocation_lines = |w: &Wisp| {
        w.log_text()
            .lines()
            .filter(|l| l.contains("wisp::invocation"))
            .count()
    };
    assert_eq!(w.get("/hello").status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(invocation_lines(&w), 0, "{}", w.log_text());

    // The per-invocation info lines, from the next SIGHUP on.
    std::fs::write(&filter, "warn,wisp=info\n").unwrap();
    sighup(&w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log_text().contains("log filter reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(w.get("/hello").status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while invocation_lines(&w) == 0 {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A filter that does not parse leaves the one in force.
    std::fs::write(&filter, "wisp=loud\n").unwrap();
    sighup(&w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.log_text().contains("the log filter was not changed") {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = invocation_lines(&w);
    assert_eq!(w.get("/hello").status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while invocation_lines(&w) == before {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the host still serves after the signals.
    assert_eq!(w.get("/hello").status(), 200);
}

#[test]
fn a_filter_file_that_does_not_parse_stops_the_host_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let filter = dir.path().join("log-filter");
    std::fs::write(&filter, "wisp=loud\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--log-filter-file")
        .arg(&filter)
        .output()
        .unwrap();
    let m = fails(out);
    assert!(
        m.contains("log filter file") && m.contains("does not parse"),
        "{m}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing made before the refusal"
    );
}

#[test]
fn the_systemd_unit_is_hardened_and_waits_for_readiness() {
    let unit = std::fs::read_to_string(root().join("dist/systemd/wisp.service")).unwrap();
    let set: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "ExecStart=/usr/local/bin/wisp serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=wisp",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "Environment=WISP_DATA_DIR=/var/lib/wisp",
        "Environment=WISP_LOG_FILTER_FILE=/etc/wisp/log-filter",
    ] {
        assert!(set.contains(&wanted), "{wanted} missing from the unit");
    }
    assert!(set.iter().any(|l| l.starts_with("MemoryMax=")));
    // Every WISP_* variable the unit sets is one `wisp serve` knows.
    let help = ok(std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["serve", "--help"])
        .output()
        .unwrap());
    for l in set.iter().filter_map(|l| l.strip_prefix("Environment=")) {
        let name = l.split('=').next().unwrap();
        assert!(help.contains(name), "{name} is not a wisp serve variable");
    }
}
