//! The event plane in cluster mode (`wisp serve --cluster nats://…`):
//! events, retries, dead letters, asynchronous invocations, schedules and
//! batch jobs live in NATS JetStream, so every host takes publishes and
//! every event is handled once by the cluster, not once per host. Each test starts its own
//! `nats-server -js` and real hosts (tests/e2e/cluster.rs), and looks at
//! them only through their admin APIs, data planes, metrics and the CLI.
//!
//! The handler is tests/guests/event-counter (see tests/e2e/events.rs): it
//! counts each attempt in its kv (`seen:<id>`; on success `done:<id>` and
//! `total`). Kv is shared by the cluster's hosts, so a counter read from
//! any host is the cluster's count.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{
    at_version, cluster, eventually, eventually_within, health, post, status_json,
};
use crate::events::{cli_ok, counter, publish, published_id, set_fail};
use crate::harness::*;

const NODES: [&str; 3] = ["h1", "h2", "h3"];

/// How long a redelivery after a `kill -9` may take: the ack wait (about
/// 10 s) plus the rest of the backlog on a loaded 2-core machine.
const REDELIVERY: Duration = Duration::from_secs(60);

/// How long hosts may take to reconnect once NATS is back.
const RECONNECT: Duration = Duration::from_secs(20);

/// How long a burst of deliveries may take to be handled by the cluster.
const DRAIN: Duration = Duration::from_secs(60);

/// Deploys event-counter as `name` (route `/{name}/*`) on the first host
/// and waits until every host has it: a subscription or an asynchronous
/// invocation made on another host needs the function there.
fn deploy_counter(hosts: &[Wisp], name: &str) {
    hosts[0]
        .admin()
        .deploy_guest(name, "event-counter", &[&format!("/{name}/*")]);
    for w in hosts {
        eventually(&format!("{} has {name}", w.admin_url), || {
            at_version(w, name, 1)
        });
    }
}

/// `POST /v1/subscriptions` on `w`, asserting 201.
fn subscribe(w: &Wisp, new: Value) -> Value {
    let (status, body) = status_json(post(w, "/v1/subscriptions", Some(new.clone())));
    assert_eq!(status, 201, "subscribe {new}: {body}");
    body
}

/// Waits until every host lists `function`'s subscription to `topic`;
/// returns what the last host lists.
fn subscribed_everywhere(hosts: &[Wisp], function: &str, topic: &str) -> Value {
    let mut listed = Value::Null;
    for w in hosts {
        listed = eventually(
            &format!("{} lists {function} on {topic}", w.admin_url),
            || {
                let path = format!("/v1/subscriptions?function={function}");
                let (status, body) = status_json(w.admin().get(&path));
                body.as_array()
                    .and_then(|subs| subs.iter().find(|s| s["topic"] == topic))
                    .filter(|_| status == 200)
                    .cloned()
                    .ok_or_else(|| format!("GET {path}: {status} {body}"))
            },
        );
    }
    listed
}

/// Sets `key=value` in `function`'s config on `w` (shared by the cluster).
fn set_config(w: &Wisp, function: &str, key: &str, value: &str) {
    let a = w.admin();
    let r = a
        .http
        .put(format!("{}/v1/functions/{function}/config", a.url))
        .bearer_auth(&a.token)
        .json(&json!({"values": {key: value}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

/// Waits until every host's admin API lists `key=value` in `function`'s
/// config.
fn config_everywhere(hosts: &[Wisp], function: &str, key: &str, value: &str) {
    for w in hosts {
        eventually(&format!("{} reads {key}={value}", w.admin_url), || {
            let path = format!("/v1/functions/{function}/config");
            let (status, body) = status_json(w.admin().get(&path));
            let found = body["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["key"] == key && e["value"] == value));
            if status == 200 && found {
                Ok(())
            } else {
                Err(format!("GET {path}: {status} {body}"))
            }
        });
    }
}

/// Waits until the guest, on every host's data plane, fails (`fail=1`) or
/// not: what its deliveries will see. A plain request counts only under
/// the id `none` (and, when it succeeds, in `total`).
fn failing_everywhere(hosts: &[Wisp], function: &str, failing: bool) {
    let expected = if failing { 500 } else { 200 };
    for w in hosts {
        eventually(
            &format!("{}'s {function} answers {expected}", w.data_url),
            || {
                let r = w.get(&format!("/{function}/probe"));
                let status = r.status().as_u16();
                if status == expected {
                    Ok(())
                } else {
                    Err(format!("{status} {}", r.text().unwrap_or_default()))
                }
            },
        );
    }
}

/// Publishes `count` events on `topic` from `threads` threads, event `i`
/// through host `i % hosts.len()`; asserts each answer is 202 with a
/// 16-hex-digit id, the topic, and `deliveries` (the subscriptions it
/// goes to); returns the ids in publishing order.
fn publish_spread(
    hosts: &[Wisp],
    topic: &str,
    count: usize,
    threads: usize,
    deliveries: u64,
) -> Vec<String> {
    let mut answers: Vec<(usize, u16, Value)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let admins: Vec<Admin> = hosts.iter().map(Wisp::admin).collect();
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let a = &admins[i % hosts.len()];
                            let body = format!("event {i}");
                            let (status, json) = status_json(publish(a, topic, body.as_bytes()));
                            (i, status, json)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    answers.sort_by_key(|(i, _, _)| *i);
    let ids: Vec<String> = answers
        .iter()
        .map(|(i, status, body)| {
            assert_eq!(*status, 202, "event {i}: {body}");
            assert_eq!(body["topic"], topic, "event {i}: {body}");
            assert_eq!(body["deliveries"], deliveries, "event {i}: {body}");
            let id = body["id"].as_str().unwrap_or_default().to_string();
            assert!(is_event_id(&id), "event {i}: {body}");
            id
        })
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "ids given twice");
    ids
}

fn is_event_id(id: &str) -> bool {
    id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The deliveries `w` ran that succeeded, by its own metrics
/// (`wisp_event_deliveries_total{result="success",node=...}`); asserts the
/// samples carry the host's node name.
fn successes(w: &Wisp, node: &str) -> f64 {
    let text = block_on(w.admin().api.metrics()).unwrap();
    text.lines()
        .filter(|l| l.starts_with("wisp_event_deliveries_total{"))
        .filter(|l| l.contains(r#"result="success""#))
        .map(|l| {
            assert!(
                l.contains(&format!(r#"node="{node}""#)),
                "{node}'s sample: {l}"
            );
            l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
        })
        .sum()
}

/// Every key of `function` starting with `prefix`, through `w`'s admin API
/// (page by page).
fn keys(w: &Wisp, function: &str, prefix: &str) -> Vec<String> {
    let a = w.admin();
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = a
            .http
            .get(format!("{}/v1/functions/{function}/kv", a.url))
            .bearer_auth(&a.token)
            .query(&[("prefix", prefix), ("limit", "1000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let (status, body) = status_json(req.send().unwrap());
        assert_eq!(status, 200, "keys of {function}: {body}");
        all.extend(
            body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match body["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// `done:<id>` for each id, read through the hosts in turn, a thread each.
fn done_counts(hosts: &[Wisp], function: &str, ids: &[String]) -> Vec<i64> {
    let per_host: Vec<Vec<(usize, i64)>> = std::thread::scope(|s| {
        let readers: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, w)| {
                s.spawn(move || {
                    let a = w.admin();
                    (h..ids.len())
                        .step_by(hosts.len())
                        .map(|i| (i, counter(&a, function, &format!("done:{}", ids[i]))))
                        .collect()
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut counts = vec![0; ids.len()];
    for (i, n) in per_host.into_iter().flatten() {
        counts[i] = n;
    }
    counts
}

/// `function`'s dead deliveries as `w` lists them (`GET .../dlq`).
fn dead_letters(w: &Wisp, function: &str) -> Vec<Value> {
    let path = format!("/v1/functions/{function}/dlq");
    let (status, body) = status_json(w.admin().get(&path));
    assert_eq!(status, 200, "GET {path} on {}: {body}", w.admin_url);
    body.as_array()
        .unwrap_or_else(|| panic!("GET {path}: a list: {body}"))
        .clone()
}

/// Waits until every host lists no dead delivery of `function`.
fn no_dead_letters_anywhere(hosts: &[Wisp], function: &str) {
    for w in hosts {
        eventually(
            &format!("{}'s dlq of {function} is empty", w.admin_url),
            || {
                let dead = dead_letters(w, function);
                if dead.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{dead:?}"))
                }
            },
        );
    }
}

/// Waits until `w` lists the dead delivery of event `id`; returns it.
fn dead_on(w: &Wisp, function: &str, id: &str) -> Value {
    eventually_within(
        Duration::from_secs(30),
        &format!("{} lists {id} as dead", w.admin_url),
        || {
            let dead = dead_letters(w, function);
            dead.iter()
                .find(|d| d["event_id"] == id && d["status"] == "dead")
                .cloned()
                .ok_or_else(|| format!("{dead:?}"))
        },
    )
}

/// `Ok` once event `id` is acknowledged by its subscribers, as `w` sees it:
/// every delivery `done`, or the event no longer held (`event_not_found`).
fn acknowledged(w: &Wisp, id: &str) -> Result<(), String> {
    let (status, body) = status_json(w.admin().get(&format!("/v1/events/{id}")));
    let all_done = body["deliveries"]
        .as_array()
        .is_some_and(|d| d.iter().all(|d| d["status"] == "done"));
    match status {
        200 if all_done => Ok(()),
        404 if body["error"]["code"] == "event_not_found" => Ok(()),
        _ => Err(format!("GET /v1/events/{id}: {status} {body}")),
    }
}

/// Waits until `counter` reaches `expected` (and not past it).
fn count_reaches(a: &Admin, function: &str, key: &str, expected: i64, within: Duration) {
    eventually_within(within, &format!("{function}'s {key} is {expected}"), || {
        let n = counter(a, function, key);
        match n.cmp(&expected) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => panic!("{function}'s {key} is {n}, past {expected}"),
            std::cmp::Ordering::Less => Err(format!("{key} = {n}")),
        }
    });
}

#[test]
fn events_published_on_every_host_are_each_handled_once() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    deploy_counter(&hosts, "c");

    // Subscribed on host 2: one subscription, listed by every host, its
    // concurrency per host.
    let sub = subscribe(
        h2,
        json!({"function": "c", "topic": "orders", "concurrency": 4}),
    );
    assert_eq!(sub["concurrency"], 4, "{sub}");
    let listed = subscribed_everywhere(&hosts, "c", "orders");
    assert_eq!(listed["concurrency"], 4, "{listed}");
    for w in &hosts {
        let (_, all) = status_json(w.admin().get("/v1/subscriptions"));
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    }

    // 1,000 events, round-robin over the three admin APIs, six at a time.
    let started = Instant::now();
    let ids = publish_spread(&hosts, "orders", 1000, 6, 1);
    eprintln!("1000 publishes acknowledged in {:?}", started.elapsed());

    // All handled, each once: `total` stops at 1000, every acknowledged id
    // has `done` 1, and no other event was handled.
    let a = h1.admin();
    count_reaches(&a, "c", "total", 1000, DRAIN);
    eprintln!("1000 events handled in {:?}", started.elapsed());
    let counts = done_counts(&hosts, "c", &ids);
    let wrong: Vec<(&String, &i64)> = ids.iter().zip(&counts).filter(|(_, n)| **n != 1).collect();
    assert!(wrong.is_empty(), "done:<id> is not 1 for {wrong:?}");
    let done_keys: BTreeSet<String> = keys(h2, "c", "done:")
        .into_iter()
        .map(|k| k.trim_start_matches("done:").to_string())
        .collect();
    let acked: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(done_keys, acked, "handled events are the acknowledged ones");

    // Each host ran some of them, and together exactly 1000: one host per
    // event, and the work spread.
    let per_host = eventually("the hosts' success metrics add up to 1000", || {
        let per_host: Vec<f64> = NODES
            .iter()
            .zip(&hosts)
            .map(|(node, w)| successes(w, node))
            .collect();
        if per_host.iter().sum::<f64>() == 1000.0 {
            Ok(per_host)
        } else {
            Err(format!("{per_host:?}"))
        }
    });
    eprintln!("deliveries per host: {per_host:?}");
    for (node, n) in NODES.iter().zip(&per_host) {
        assert!(*n > 0.0, "{node} ran no delivery: {per_host:?}");
    }
    // Nothing more arrives later (a second delivery of any of them).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "c", "total"), 1000);
}

#[test]
fn a_host_killed_mid_delivery_loses_nothing_acknowledged() {
    let nats = Nats::start();
    let mut hosts = cluster(&nats, &NODES);
    deploy_counter(&hosts, "k");
    // Each delivery takes 50 ms, one at a time per host: the 200 take
    // seconds, and host 2 is always in the middle of one.
    set_config(&hosts[0], "k", "sleep_ms", "50");
    config_everywhere(&hosts, "k", "sleep_ms", "50");
    subscribe(
        &hosts[0],
        json!({"function": "k", "topic": "stream", "concurrency": 1}),
    );
    subscribed_everywhere(&hosts, "k", "stream");

    let ids = publish_spread(&hosts, "stream", 200, 6, 1);
    eventually("host 2 is handling the stream", || {
        let n = successes(&hosts[1], "h2");
        if n >= 2.0 {
            Ok(())
        } else {
            Err(format!("h2 ran {n}"))
        }
    });
    hosts[1].kill9();
    let a = hosts[0].admin();
    let at_kill = counter(&a, "k", "total");
    assert!(
        at_kill < 200,
        "the stream was over before the kill ({at_kill} handled)"
    );
    let killed = Instant::now();

    // Every acknowledged event is handled, host 2's unacknowledged
    // deliveries by the others after the ack wait. `done:<id>` alone is
    // not enough: host 2 may have counted it and died before `total` (and
    // before it answered), so that delivery runs again; `total` counts the
    // handler's runs to their end.
    let mut missing = ids.clone();
    let total = eventually_within(REDELIVERY, "every acknowledged event handled", || {
        missing.retain(|id| counter(&a, "k", &format!("done:{id}")) == 0);
        let total = counter(&a, "k", "total");
        if missing.is_empty() && total >= 200 {
            Ok(total)
        } else {
            Err(format!(
                "total {total}; {} without done: {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ))
        }
    });
    eprintln!(
        "{at_kill} of 200 handled at the kill, all 200 {:?} after it (total {total})",
        killed.elapsed()
    );
    let counted: i64 = done_counts(&hosts[..1], "k", &ids).iter().sum();
    eprintln!(
        "kill -9 mid-delivery: done counted {counted} times for 200 events ({} by a delivery \
         run again)",
        counted - 200
    );
}

#[test]
fn a_failing_handler_is_dead_lettered_after_exactly_its_attempts_and_redriven() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES);
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    deploy_counter(&hosts, "d");
    set_fail(&h1.admin(), "d", true);
    failing_everywhere(&hosts, "d", true);
    subscribe(
        h1,
        json!({"function": "d", "topic": "payments", "max_attempts": 3, "retry_base_ms": 100}),
    );
    let listed = subscribed_everywhere(&hosts, "d", "payments");
    assert_eq!(listed["retry"]["max_attempts"], 3, "{listed}");

    // Published on host 1, dead after 3 attempts, listed on host 3.
    let id = published_id(publish(&h1.admin(), "payments", b"p1"));
    let dead = dead_on(h3, "d", &id);
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["topic"], "payments", "{dead}");
    assert_eq!(dead["function"], "d", "{dead}");
    let error = dead["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("500"), "{dead}");
    // Exactly 3 attempts reached the handler, on whichever hosts, and no
    // more come.
    let a = h2.admin();
    let seen = format!("seen:{id}");
    assert_eq!(counter(&a, "d", &seen), 3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counter(&a, "d", &seen), 3);
    assert_eq!(counter(&a, "d", &format!("done:{id}")), 0);
    // Every host lists it, the CLI too.
    for w in &hosts {
        let dead = dead_on(w, "d", &id);
        assert_eq!(dead["attempts"], 3, "{}: {dead}", w.admin_url);
        assert_eq!(dead_letters(w, "d").len(), 1, "{}", w.admin_url);
    }
    let out = cli_ok(h1, &["events", "dlq", "d"]);
    assert!(out.contains(&id) && out.contains("dead"), "{out}");

    // Fixed, then redriven from host 2: handled once more (the attempts
    // start over, the first succeeds), gone from every host's list.
    set_fail(&h3.admin(), "d", false);
    failing_everywhere(&hosts, "d", false);
    let out = cli_ok(h2, &["events", "redrive", "d"]);
    assert!(out.contains("redrove 1"), "{out}");
    count_reaches(&a, "d", &format!("done:{id}"), 1, Duration::from_secs(30));
    assert_eq!(counter(&a, "d", &seen), 4);
    no_dead_letters_anywhere(&hosts, "d");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "d", &format!("done:{id}")), 1);
    assert_eq!(counter(&a, "d", &seen), 4);
    let out = cli_ok(h3, &["events", "redrive", "d"]);
    assert!(out.contains("redrove 0"), "{out}");

    // A second dead event, purged from host 2: gone from every list, and
    // nothing is left to redrive.
    set_fail(&h1.admin(), "d", true);
    failing_everywhere(&hosts, "d", true);
    let second = published_id(publish(&h3.admin(), "payments", b"p2"));
    let dead = dead_on(h1, "d", &second);
    assert_eq!(dead["attempts"], 3, "{dead}");
    let out = cli_ok(h2, &["events", "dlq", "purge", "d"]);
    assert!(out.contains("purged 1"), "{out}");
    no_dead_letters_anywhere(&hosts, "d");
    let out = cli_ok(h1, &["events", "redrive", "d"]);
    assert!(out.contains("redrove 0"), "{out}");
    let out = cli_ok(h3, &["events", "dlq", "d"]);
    assert!(out.contains("no dead deliveries"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "d", &format!("seen:{second}")), 3);
    assert_eq!(counter(&a, "d", &format!("done:{second}")), 0);
}

#[test]
fn a_per_second_schedule_fires_once_per_tick_across_the_cluster() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES);
    let (h1, h2) = (&hosts[0], &hosts[1]);
    deploy_counter(&hosts, "s");

    // 6 fields: every second (5-field cron's shortest period is a minute).
    let out = cli_ok(
        h1,
        &["schedule", "add", "s", "* * * * * *", "--path", "/tick"],
    );
    assert!(out.starts_with("schedule "), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    for w in &hosts {
        eventually(&format!("{} lists schedule {id}", w.admin_url), || {
            let (status, body) = status_json(w.admin().get("/v1/schedules"));
            let listed = body.as_array().is_some_and(|all| {
                all.len() == 1 && all[0]["id"] == id.as_str() && all[0]["cron"] == "* * * * * *"
            });
            if status == 200 && listed {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        });
    }

    // Ticks handled over a measured window: one per second across the
    // cluster, not one per host (which would be 3 a second).
    let a = h2.admin();
    eventually("the first tick", || match counter(&a, "s", "total") {
        0 => Err("no tick yet".to_string()),
        _ => Ok(()),
    });
    let (first, from) = (counter(&a, "s", "total"), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (last, window) = (counter(&a, "s", "total"), from.elapsed());
    let ticks = last - first;
    let seconds = window.as_secs_f64();
    eprintln!("{ticks} ticks handled in {seconds:.2} s");
    assert!(
        (8..=12).contains(&ticks) && (ticks as f64 - seconds).abs() <= 2.0,
        "{ticks} ticks in {seconds:.2} s (3 hosts firing each: ~{:.0})",
        seconds * 3.0
    );

    // Deleted on host 2: no host lists it, and the count stops.
    let out = cli_ok(h2, &["schedule", "delete", &id]);
    assert!(out.contains("deleted"), "{out}");
    for w in &hosts {
        eventually(&format!("{} no longer lists {id}", w.admin_url), || {
            let (status, body) = status_json(w.admin().get("/v1/schedules"));
            if status == 200 && body == json!([]) {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        });
    }
    std::thread::sleep(Duration::from_millis(1500));
    let settled = counter(&a, "s", "total");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(counter(&a, "s", "total"), settled, "ticks after the delete");

    // Each tick was one event, handled once.
    let done = keys(h1, "s", "done:");
    assert_eq!(done.len() as i64, settled, "{done:?}");
    for key in &done {
        assert_eq!(counter(&a, "s", key), 1, "{key}");
    }
}

#[test]
fn async_invocations_are_handled_once_by_the_cluster() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES);
    deploy_counter(&hosts, "f");

    let ids: Vec<String> = (0..20)
        .map(|i| {
            let w = &hosts[i % hosts.len()];
            let path = "/v1/functions/f/invoke-async?path=/jobs/1";
            let (status, body) = status_json(post(w, path, Some(json!({"job": i}))));
            assert_eq!(status, 202, "invocation {i} on {}: {body}", w.admin_url);
            assert_eq!(body["topic"], "invoke:f", "{body}");
            let id = body["id"].as_str().unwrap_or_default().to_string();
            assert!(is_event_id(&id), "{body}");
            id
        })
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 20, "{ids:?}");

    let a = hosts[2].admin();
    count_reaches(&a, "f", "total", 20, DRAIN);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "f", "total"), 20);
    let counts = done_counts(&hosts, "f", &ids);
    assert_eq!(counts, vec![1; 20], "done:<id> of {ids:?}");
    // An unknown function is refused on any host, before anything is
    // queued.
    for w in &hosts {
        let (status, body) = status_json(post(w, "/v1/functions/ghost/invoke-async", None));
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "function_not_found", "{body}");
    }
}

#[test]
fn publishing_while_nats_is_down_answers_503() {
    let mut nats = Nats::start();
    let hosts = cluster(&nats, &NODES[..2]);
    deploy_counter(&hosts, "n");
    subscribe(&hosts[0], json!({"function": "n", "topic": "orders"}));
    subscribed_everywhere(&hosts, "n", "orders");
    let a = hosts[1].admin();
    let before = published_id(publish(&hosts[0].admin(), "orders", b"before"));
    count_reaches(&a, "n", &format!("done:{before}"), 1, DRAIN);
    // Handled is not yet acknowledged: a delivery whose ack NATS never got
    // runs again once NATS is back (at least once), which would count here.
    eventually(&format!("{before} acknowledged"), || {
        acknowledged(&hosts[1], &before)
    });

    nats.stop();
    for w in &hosts {
        eventually(&format!("{} says it lost the cluster", w.admin_url), || {
            let h = health(w);
            if h["cluster"]["connected"] == false {
                Ok(())
            } else {
                Err(h.to_string())
            }
        });
        let msg = assert_error(
            publish(&w.admin(), "orders", b"while down"),
            503,
            "cluster_unavailable",
        );
        assert!(!msg.contains(crate::cluster::TOKEN), "{msg}");
    }

    // NATS returns (same port, same store): once a host has reconnected,
    // a publish is taken and handled; nothing refused surfaces.
    nats.restart();
    let after = eventually_within(RECONNECT, "h2 takes a publish again", || {
        let (status, body) = status_json(publish(&hosts[1].admin(), "orders", b"after"));
        match status {
            202 => Ok(body["id"].as_str().unwrap().to_string()),
            503 if body["error"]["code"] == "cluster_unavailable" => {
                Err(format!("{status} {body}"))
            }
            _ => panic!("publish after NATS returned: {status} {body}"),
        }
    });
    let taken = Instant::now();
    count_reaches(&a, "n", &format!("done:{after}"), 1, DRAIN);
    eprintln!(
        "after NATS returned, a publish was handled {:?} after its 202",
        taken.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "n", "total"), 2, "only the two acknowledged");
}

#[test]
fn an_invalid_topic_is_refused_by_a_cluster_host_and_nothing_is_stored() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES[..2]);
    deploy_counter(&hosts, "b");
    subscribe(&hosts[0], json!({"function": "b", "topic": "orders"}));
    subscribed_everywhere(&hosts, "b", "orders");

    // As on a single node: upper case, a space, 64 characters, and the
    // reserved topic of asynchronous invocations.
    let long = "x".repeat(64);
    for w in &hosts {
        for bad in ["Orders", "a%20b", &long, "invoke:b"] {
            assert_error(publish(&w.admin(), bad, b"x"), 400, "invalid_name");
        }
    }
    let a = hosts[0].admin();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counter(&a, "b", "total"), 0);
    // The good topic is delivered (so the count above could have moved).
    let id = published_id(publish(&hosts[1].admin(), "orders", b"fine"));
    count_reaches(&a, "b", &format!("done:{id}"), 1, DRAIN);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(&a, "b", "total"), 1);
}

/// `GET /v1/jobs/{id}` on `w`.
fn job_on(w: &Wisp, id: &str) -> Value {
    let (status, body) = status_json(w.admin().get(&format!("/v1/jobs/{id}")));
    assert_eq!(status, 200, "job {id} on {}: {body}", w.admin_url);
    body
}

#[test]
fn a_job_of_100_indices_runs_across_the_hosts_and_any_host_sees_it() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES);
    deploy_counter(&hosts, "j");
    let before: Vec<f64> = hosts
        .iter()
        .zip(NODES)
        .map(|(w, n)| successes(w, n))
        .collect();

    // Started on the second host, with every host pulling its indices.
    let (status, body) = status_json(post(
        &hosts[1],
        "/v1/functions/j/jobs",
        Some(json!({"array": "0-99", "parallelism": 6, "path": "/batch"})),
    ));
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["size"], 100, "{body}");

    let a = hosts[0].admin();
    eventually_within(DRAIN, "the job to succeed", || {
        let j = job_on(&hosts[2], &id);
        match j["state"].as_str() {
            Some("succeeded") => Ok(()),
            _ => Err(format!("{}", j["counts"])),
        }
    });
    // Every index once, whichever host ran it.
    for i in 0..100 {
        assert_eq!(counter(&a, "j", &format!("index-done:{i}")), 1, "index {i}");
    }
    assert_eq!(counter(&a, "j", "total"), 100);
    // Every host shows the same job, with each index done once.
    for w in &hosts {
        let j = job_on(w, &id);
        assert_eq!(j["counts"]["done"], 100, "{j}");
        let tasks = j["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 100, "{j}");
        for (i, t) in tasks.iter().enumerate() {
            assert_eq!(t["index"], i, "{t}");
            assert_eq!(
                (&t["status"], &t["attempts"]),
                (&json!("done"), &json!(1)),
                "{t}"
            );
        }
    }
    let status = cli_ok(&hosts[0], &["job", "status", &id]);
    assert!(
        status.contains("succeeded") && status.contains("100 done"),
        "{status}"
    );
    // The work spread: more than one host ran some of the indices.
    let ran: Vec<f64> = hosts
        .iter()
        .zip(NODES)
        .zip(&before)
        .map(|((w, n), b)| successes(w, n) - b)
        .collect();
    assert_eq!(ran.iter().sum::<f64>(), 100.0, "{ran:?}");
    assert!(ran.iter().filter(|&&n| n > 0.0).count() >= 2, "{ran:?}");
}

#[test]
fn a_job_cancelled_on_another_host_stops_and_failing_indices_end_dead() {
    let nats = Nats::start();
    let hosts = cluster(&nats, &NODES[..2]);
    deploy_counter(&hosts, "k");
    set_config(&hosts[0], "k", "sleep_ms", "200");
    config_everywhere(&hosts, "k", "sleep_ms", "200");

    // Slow indices, two at a time across the cluster: cancelled part-way.
    let (status, body) = status_json(post(
        &hosts[0],
        "/v1/functions/k/jobs",
        Some(json!({"array": "0-39", "parallelism": 2})),
    ));
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let a = hosts[0].admin();
    count_reaches(&a, "k", "total", 2, DRAIN);
    let (status, body) = status_json(post(&hosts[1], &format!("/v1/jobs/{id}/cancel"), None));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled", "{body}");
    std::thread::sleep(Duration::from_millis(1500));
    let settled = counter(&a, "k", "total");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        counter(&a, "k", "total"),
        settled,
        "indices ran after the cancel"
    );
    let j = job_on(&hosts[0], &id);
    assert_eq!(j["state"], "cancelled", "{j}");
    let c = &j["counts"];
    assert_eq!(c["done"], settled, "{j}");
    assert!(settled < 40 && c["cancelled"].as_i64().unwrap() > 0, "{j}");

    // Every attempt fails: each index dead after its retries + 1 attempts.
    set_config(&hosts[0], "k", "sleep_ms", "0");
    config_everywhere(&hosts, "k", "sleep_ms", "0");
    set_fail(&a, "k", true);
    failing_everywhere(&hosts, "k", true);
    let (status, body) = status_json(post(
        &hosts[1],
        "/v1/functions/k/jobs",
        Some(json!({"array": "0-3", "parallelism": 4, "retries": 1})),
    ));
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    eventually_within(DRAIN, "the job to fail", || {
        let j = job_on(&hosts[0], &id);
        match j["state"].as_str() {
            Some("failed") => Ok(()),
            _ => Err(format!("{}", j["counts"])),
        }
    });
    let j = job_on(&hosts[1], &id);
    assert_eq!(j["counts"]["dead"], 4, "{j}");
    for t in j["tasks"].as_array().unwrap() {
        assert_eq!(
            (&t["status"], &t["attempts"]),
            (&json!("dead"), &json!(2)),
            "{t}"
        );
        assert!(
            t["last_error"]
                .as_str()
                .unwrap()
                .contains("failing on purpose"),
            "{t}"
        );
    }
}

#[test]
fn a_flood_of_publishes_fills_the_cluster_quota_then_is_refused_with_nothing_lost() {
    let nats = Nats::start();
    let w = Wisp::start_with(
        crate::cluster::member(&nats, "h1")
            .arg("--event-host-quota")
            .arg("64KiB")
            .arg("--event-topic-quota")
            .arg("64KiB")
            .arg("--event-max-payload")
            .arg("8KiB"),
    );
    let hosts = vec![w];
    deploy_counter(&hosts, "q");
    // Slow deliveries, so that published events stay held.
    set_config(&hosts[0], "q", "sleep_ms", "2000");
    config_everywhere(&hosts, "q", "sleep_ms", "2000");
    subscribe(
        &hosts[0],
        json!({"function": "q", "topic": "flood", "concurrency": 1}),
    );
    let a = hosts[0].admin();
    let body = vec![b'x'; 4096];
    let mut accepted = Vec::new();
    let refused = loop {
        let r = publish(&a, "flood", &body);
        if r.status() != 202 {
            break r;
        }
        accepted.push(published_id(r));
        assert!(accepted.len() < 100, "the quota never applied");
    };
    let m = assert_error(refused, 429, "host_quota_exceeded");
    assert!(m.contains("65536"), "{m}");
    assert!(accepted.len() >= 8, "{accepted:?}");
    // The host still serves, and every accepted event is handled.
    set_config(&hosts[0], "q", "sleep_ms", "0");
    assert_eq!(hosts[0].get("/q/probe").status(), 200);
    count_reaches(&a, "q", "total", accepted.len() as i64 + 1, DRAIN);
}
