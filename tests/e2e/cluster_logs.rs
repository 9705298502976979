//! Cluster mode: the log lines of every host are read on any host, with
//! the node that wrote them; `/metrics` says which node it is.

use serde_json::Value;

use crate::cluster::{eventually, member};
use crate::harness::*;

/// The `message` and `node` of each line of `name`'s log, read on `w`.
fn log_lines(w: &Wisp, name: &str) -> Vec<(String, String)> {
    let r = w.admin().get(&format!("/v1/functions/{name}/logs"));
    assert_eq!(r.status(), 200);
    let page: Value = r.json().unwrap();
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap_or_default().to_string(),
                e["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_log_lines_of_every_host_are_read_on_any_host() {
    let nats = Nats::start();
    let hosts: Vec<Wisp> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| Wisp::start_with(member(&nats, n)))
        .collect();
    let caps = std::fs::read(guest("caps")).unwrap();
    let r = hosts[0]
        .admin()
        .deploy("caps", &caps, &[("route", "/caps/*")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    for w in &hosts {
        eventually("caps served", || {
            let s = w.get("/caps/config/keys").status().as_u16();
            if s == 200 {
                Ok(())
            } else {
                Err(format!("{s}"))
            }
        });
    }
    for (i, w) in hosts.iter().enumerate() {
        let r = w.get(&format!("/caps/log?msg=line-from-h{}", i + 1));
        assert_eq!(r.status(), 200);
        // Read whole: the host has written the line by the body's end.
        let _ = r.bytes();
    }
    let expected: Vec<(String, String)> = (1..=3)
        .map(|i| (format!("line-from-h{i}"), format!("h{i}")))
        .collect();
    // Read on every host, right after: each host's own line is there at
    // once (its writer waits for the cluster's ack); the others' once their
    // hosts' writers have published them.
    for (i, w) in hosts.iter().enumerate() {
        let own = log_lines(w, "caps");
        assert!(own.contains(&expected[i]), "{own:?}");
        eventually("every host's line", || {
            let mut lines = log_lines(w, "caps");
            lines.sort();
            if lines == expected {
                Ok(())
            } else {
                Err(format!("{lines:?}"))
            }
        });
    }
    // The CLI shows the node of each line.
    let out = hosts[1].cli(&["logs", "caps"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for i in 1..=3 {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!(" h{i} ")) && l.ends_with(&format!("line-from-h{i}"))),
            "{text}"
        );
    }
    // Every series of a host's metrics says which node it is.
    let metrics = hosts[2].admin().get("/metrics").text().unwrap();
    assert!(metrics.contains("node=\"h3\""), "{metrics}");
    assert!(!metrics.contains("node=\"h1\""));

    // Deleted, then deployed again: the new function starts with an empty
    // log on every host.
    let r = hosts[0].admin().delete("/v1/functions/caps");
    assert_eq!(r.status(), 200);
    let r = hosts[1]
        .admin()
        .deploy("caps", &caps, &[("route", "/caps/*")]);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    for w in &hosts {
        eventually("caps deployed again", || {
            let r = w.admin().get("/v1/functions/caps/logs");
            if r.status() != 200 {
                return Err(format!("{}", r.status()));
            }
            let page: Value = r.json().unwrap();
            match page["entries"].as_array().map(Vec::len) {
                Some(0) => Ok(()),
                n => Err(format!("{n:?} lines")),
            }
        });
    }
}
