//! The event plane's storage, against a real (temporary) store.

use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;
use tokio::task::JoinSet;

use super::cleanup::{FunctionPurge, first_due_of};
use super::*;
use crate::events::job::{JOB_TOPIC_PREFIX, JobState};
use crate::events::{Outcome, format_id};

fn open(dir: &std::path::Path) -> (Store, EventStore) {
    let store = Store::open(dir, 1 << 20).unwrap();
    let events = EventStore::open(&store).unwrap();
    (store, events)
}

/// Runs a future that needs a tokio runtime (it reads on the blocking
/// pool).
fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn redrive(
    store: &EventStore,
    function: &str,
    topic: Option<&str>,
    ids: Option<Vec<u64>>,
    now_ms: u64,
) -> Vec<DeliveryRecord> {
    run(store.redrive(function, topic, ids, now_ms)).unwrap()
}

fn ev_record(id: u64) -> EventRecord {
    EventRecord {
        id,
        topic: "t".into(),
        time_ms: 1,
        content_type: None,
        path: None,
        headers: Vec::new(),
        size_bytes: 1,
    }
}

fn event(id: u64, topic: &str, time_ms: u64) -> EventRecord {
    EventRecord {
        id,
        topic: topic.into(),
        time_ms,
        ..ev_record(id)
    }
}

fn to(functions: &[&str]) -> Vec<String> {
    functions.iter().map(|f| f.to_string()).collect()
}

/// An outcome of a delivery cancelled while it ran is dropped, and its
/// claim ends either way.
#[test]
fn an_outcome_after_a_cancel_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    store
        .publish_event(&ev_record(1), b"x", &["a".into()], 3, 1000)
        .unwrap();
    let due = store.due_deliveries(1, 10).unwrap();
    let (key, _) = store.claim_delivery(&due[0].0, 5).unwrap().unwrap();
    // A claimed entry cannot be claimed twice.
    assert!(store.claim_delivery(&due[0].0, 6).unwrap().is_none());
    store
        .finish_delivery(&key, Outcome::Retry(100), Some("boom"), 7, 1000)
        .unwrap();
    let due = store.due_deliveries(100, 10).unwrap();
    let (key, rec) = store.claim_delivery(&due[0].0, 100).unwrap().unwrap();
    assert_eq!((rec.attempts, rec.attempt_times_ms), (1, vec![5, 100]));
    // Another writer moves it on meanwhile (here: a redrive-like
    // rewrite of its due entry).
    let entry = due[0].0;
    store
        .write_blocking(Durability::Committed, move |this, w| {
            this.due.remove(w, &entry).map(drop)
        })
        .unwrap();
    store
        .finish_delivery(&key, Outcome::Done, None, 110, 1000)
        .unwrap();
    let rec = &store.deliveries_of(1).unwrap()[0];
    assert_eq!(rec.status, DeliveryStatus::Pending);
    assert_eq!(rec.attempts, 1);
    assert!(store.mem().running.is_empty());
}

// ------------------------------------------------- event storage quotas

fn topic_event(id: u64, topic: &str) -> EventRecord {
    EventRecord {
        topic: topic.into(),
        ..ev_record(id)
    }
}

/// Publishes one event with a 100-byte payload, delivered to `to`.
fn publish_q(
    store: &EventStore,
    id: u64,
    topic: &str,
    to: &[&str],
    topic_quota: u64,
    host_quota: u64,
) -> Result<(), PublishRefused> {
    let to: Vec<String> = to.iter().map(|f| f.to_string()).collect();
    let writes = EventWrites {
        publishes: vec![NewEvent {
            event: topic_event(id, topic),
            payload: Bytes::from_static(&[b'x'; 100]),
            to,
            dedupe: false,
        }],
        max_topic_bytes: topic_quota,
        max_host_bytes: host_quota,
        retention_ms: 1000,
        ..EventWrites::default()
    };
    store.write_events_blocking(writes).unwrap().published[0]
}

/// Claims the first due delivery of `function` and records `outcome`.
fn finish_first(store: &EventStore, function: &str, outcome: Outcome, now_ms: u64) {
    finish_of(store, None, function, outcome, now_ms);
}

/// The same, of event `id` if given.
fn finish_of(store: &EventStore, id: Option<u64>, function: &str, outcome: Outcome, now_ms: u64) {
    let (entry, _) = first_due_of(store, function, id);
    let (key, _) = store.claim_delivery(&entry, now_ms).unwrap().unwrap();
    store
        .finish_delivery(&key, outcome, Some("boom"), now_ms, 1000)
        .unwrap();
}

#[test]
fn quotas_refuse_past_the_limit_store_nothing_and_free_with_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let charge = topic_event(1, "t").charge(100);
    // Two events fit in the topic's quota, a third does not.
    let (topic_q, host_q) = (2 * charge + charge / 2, 3 * charge + charge / 2);
    publish_q(&store, 1, "t", &["a"], topic_q, host_q).unwrap();
    publish_q(&store, 2, "t", &["a", "b"], topic_q, host_q).unwrap();
    assert_eq!(store.event_bytes(Some("t")), 2 * charge);
    assert_eq!(
        publish_q(&store, 3, "t", &["a"], topic_q, host_q),
        Err(PublishRefused::TopicQuota(2 * charge))
    );
    assert!(
        store.event(3).unwrap().is_none(),
        "a refused event is not stored"
    );
    assert_eq!(store.queue_depth_total(), 3);
    // Another topic has room of its own, until the host's is used up.
    publish_q(&store, 4, "u", &["a"], topic_q, host_q).unwrap();
    assert_eq!(
        publish_q(&store, 5, "v", &["a"], topic_q, host_q),
        Err(PublishRefused::HostQuota(3 * charge))
    );
    assert!(store.event(5).unwrap().is_none());
    // An event nobody receives is not held, and stores no payload.
    publish_q(&store, 6, "v", &[], topic_q, host_q).unwrap();
    assert_eq!(store.event(6).unwrap().unwrap().1.len(), 0);
    assert_eq!(store.event_bytes(None), 3 * charge);

    // Event 1 done: freed. Event 2 stays held until both deliveries
    // are finished; a retry keeps it held.
    finish_first(&store, "a", Outcome::Done, 10);
    assert_eq!(store.event_bytes(Some("t")), charge);
    publish_q(&store, 7, "t", &["a"], topic_q, host_q).unwrap();
    assert_eq!(store.event_bytes(Some("t")), 2 * charge);
    finish_first(&store, "b", Outcome::Retry(20), 10);
    assert_eq!(store.event_bytes(Some("t")), 2 * charge);
    // Dead letters are held too.
    finish_first(&store, "b", Outcome::Dead, 30);
    finish_first(&store, "a", Outcome::Done, 30);
    assert_eq!(
        store.event_bytes(Some("t")),
        2 * charge,
        "event 2 is dead for b"
    );
    assert_eq!(store.dead_deliveries("b", None, 10).unwrap().len(), 1);
    assert_eq!(store.purge_dead_blocking("b", Some("t"), 40).unwrap(), 1);
    assert!(store.dead_deliveries("b", None, 10).unwrap().is_empty());
    assert_eq!(store.event_bytes(Some("t")), charge);
    // Purged: not redrivable, and the event goes at the next sweep.
    assert!(redrive(&store, "b", None, None, 50).is_empty());
    assert!(store.sweep_events_blocking(40, 100).unwrap() > 0);
    assert!(store.event(2).unwrap().is_none());
}

#[test]
fn held_bytes_are_rebuilt_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, depth) = {
        let (_raw, store) = open(dir.path());
        for id in 1..=4 {
            publish_q(&store, id, "t", &["a"], u64::MAX, u64::MAX).unwrap();
        }
        publish_q(&store, 5, "u", &["a", "b"], u64::MAX, u64::MAX).unwrap();
        // One done (freed), one dead (held), one running (held).
        finish_first(&store, "a", Outcome::Done, 10);
        finish_first(&store, "a", Outcome::Dead, 10);
        let due = store.due_deliveries(u64::MAX - 1, 1).unwrap();
        store.claim_delivery(&due[0].0, 11).unwrap().unwrap();
        store.store.flush_blocking().unwrap();
        let charge = topic_event(1, "t").charge(100);
        assert_eq!(store.event_bytes(Some("t")), 3 * charge);
        (store.event_bytes(None), store.queue_depth_total())
    };
    let (_raw, store) = open(dir.path());
    assert_eq!(store.event_bytes(None), bytes);
    assert_eq!(store.queue_depth_total(), depth);
    // And a refusal after the restart counts them.
    let charge = topic_event(1, "t").charge(100);
    assert_eq!(
        publish_q(&store, 9, "t", &["a"], 3 * charge, u64::MAX),
        Err(PublishRefused::TopicQuota(3 * charge))
    );
}

#[test]
fn a_postponed_delivery_uses_no_attempt_and_keeps_its_wait_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
    let bytes = store.event_bytes(None);
    // Due at 1 (the event's time); postponed at 100 until 1100.
    finish_first(&store, "a", Outcome::Postponed(1100), 100);
    let rec = &store.deliveries_of(1).unwrap()[0];
    assert_eq!(rec.status, DeliveryStatus::Pending);
    assert_eq!(rec.attempts, 0);
    assert!(rec.attempt_times_ms.is_empty(), "{rec:?}");
    assert_eq!((rec.due_ms, rec.postponed_ms), (1100, 1099));
    assert_eq!(store.queue_depth_total(), 1);
    assert_eq!(store.event_bytes(None), bytes);
    assert!(store.due_deliveries(1099, 10).unwrap().is_empty());
    // Again: the waits add up; then a real attempt counts.
    finish_first(&store, "a", Outcome::Postponed(2000), 1200);
    finish_first(&store, "a", Outcome::Done, 2100);
    let rec = &store.deliveries_of(1).unwrap()[0];
    assert_eq!((rec.attempts, rec.postponed_ms), (1, 1999));
    assert_eq!(rec.attempt_times_ms, [2100]);
    assert_eq!(store.event_bytes(None), 0);
}

#[test]
fn a_tick_fired_again_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let id = crate::events::schedule::tick_event_id(7, 60_000);
    let event = topic_event(id, "schedule:0000000000000007");
    let to = vec!["f".to_string()];
    let tick = |store: &EventStore| {
        let writes = EventWrites {
            publishes: vec![NewEvent {
                event: event.clone(),
                payload: Bytes::from_static(b"tick"),
                to: to.clone(),
                dedupe: true,
            }],
            ..EventWrites::default()
        };
        store.write_events_blocking(writes).unwrap().published[0]
    };
    assert_eq!(tick(&store), Ok(()));
    assert_eq!(tick(&store), Ok(()), "answered as written");
    assert_eq!(store.queue_depth_total(), 1);
    assert_eq!(store.due_deliveries(u64::MAX - 1, 10).unwrap().len(), 1);
    assert_eq!(store.event_bytes(None), event.charge(4));
    assert_eq!(store.deliveries_of(id).unwrap().len(), 1);
}

#[test]
fn dead_letters_expire_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
    publish_q(&store, 2, "t", &["a"], u64::MAX, u64::MAX).unwrap();
    finish_first(&store, "a", Outcome::Dead, 100);
    finish_first(&store, "a", Outcome::Dead, 500);
    // Event 1 redriven (its index entry goes) and dead again at 900.
    redrive(&store, "a", None, Some(vec![1]), 600);
    finish_first(&store, "a", Outcome::Dead, 900);
    let dead = |s: &EventStore| {
        s.dead_deliveries("a", None, 10)
            .unwrap()
            .iter()
            .map(|d| d.event_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(dead(&store), [1, 2]);
    // Retention 1000: at 1499 nothing has expired.
    assert_eq!(
        store.expire_dead_letters_blocking(1499, 1000, 10).unwrap(),
        0
    );
    assert_eq!(
        store.expire_dead_letters_blocking(1500, 1000, 10).unwrap(),
        1
    );
    assert_eq!(dead(&store), [1]);
    assert_eq!(
        store.expire_dead_letters_blocking(1500, 1000, 10).unwrap(),
        0
    );
    assert_eq!(store.event_bytes(None), topic_event(1, "t").charge(100));
    assert_eq!(
        store.expire_dead_letters_blocking(1900, 1000, 10).unwrap(),
        1
    );
    assert!(dead(&store).is_empty());
    assert_eq!(store.event_bytes(None), 0);
    assert!(store.sweep_events_blocking(1900, 100).unwrap() > 0);
    assert!(store.event(1).unwrap().is_none() && store.event(2).unwrap().is_none());
}

/// A store written before dead letters expired has no index: it is
/// built when the store opens.
#[test]
fn dead_letters_of_an_older_store_are_indexed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_raw, store) = open(dir.path());
        publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
        finish_first(&store, "a", Outcome::Dead, 100);
        store.store.drop_tree("ev_dead_at").unwrap();
        store.store.flush_blocking().unwrap();
    }
    let (_raw, store) = open(dir.path());
    assert_eq!(
        store.expire_dead_letters_blocking(1099, 1000, 10).unwrap(),
        0
    );
    assert_eq!(
        store.expire_dead_letters_blocking(1100, 1000, 10).unwrap(),
        1
    );
    assert!(store.dead_deliveries("a", None, 10).unwrap().is_empty());
}

#[test]
fn a_function_purge_leaves_other_functions_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let sub = |topic: &str, function: &str| Subscription {
        topic: topic.into(),
        function: function.into(),
        path: "/".into(),
        concurrency: 1,
        retry: crate::events::RetryPolicy::default(),
        created_at_ms: 1,
    };
    for s in [sub("t", "gone"), sub("t", "kept")] {
        block_on(store.put_subscription(s, Durability::Committed)).unwrap();
    }
    let schedule = |id: u64, function: &str| Schedule {
        id,
        function: function.into(),
        cron: "* * * * *".into(),
        tz: "UTC".into(),
        path: "/".into(),
        payload: String::new(),
        content_type: None,
        created_at_ms: 1,
        last_fired_ms: 0,
        next_ms: None,
    };
    for s in [schedule(100, "gone"), schedule(101, "kept")] {
        block_on(store.put_schedule(s, Durability::Committed)).unwrap();
    }
    publish_q(&store, 1, "t", &["gone", "kept"], u64::MAX, u64::MAX).unwrap();
    publish_q(&store, 2, "invoke:gone", &["gone"], u64::MAX, u64::MAX).unwrap();
    publish_q(&store, 3, "t", &["gone"], u64::MAX, u64::MAX).unwrap();
    publish_q(&store, 4, "t", &["gone"], u64::MAX, u64::MAX).unwrap();
    // Event 3: dead; event 4: running when the function goes.
    finish_of(&store, Some(3), "gone", Outcome::Dead, 10);
    let running = store
        .due_deliveries(u64::MAX - 1, 10)
        .unwrap()
        .into_iter()
        .find(|(_, k)| k.event_id == 4)
        .unwrap();
    let (rkey, _) = store.claim_delivery(&running.0, 11).unwrap().unwrap();

    let purged = run(store.purge_function_events("gone", 20, 1000)).unwrap();
    assert_eq!(
        purged,
        FunctionPurge {
            subscriptions: 1,
            schedules: 1,
            cancelled: 3,
            dead_letters: 1,
        }
    );
    let subs = store.subscriptions(None).unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].function, "kept");
    let schedules = store.schedules().unwrap();
    assert_eq!(schedules.iter().map(|s| s.id).collect::<Vec<_>>(), [101]);
    assert!(store.dead_deliveries("gone", None, 10).unwrap().is_empty());
    // Only kept's delivery of event 1 is left, and only event 1 held.
    let due = store.due_deliveries(u64::MAX - 1, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1, DeliveryKey::new(1, "t", "kept"));
    assert_eq!(store.queue_depth_total(), 1);
    assert_eq!(store.event_bytes(None), topic_event(1, "t").charge(100));
    let statuses: Vec<_> = store
        .deliveries_of(1)
        .unwrap()
        .iter()
        .map(|d| (d.function.clone(), d.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("gone".to_string(), DeliveryStatus::Cancelled),
            ("kept".to_string(), DeliveryStatus::Pending)
        ]
    );
    // The running one's outcome, when it comes, is dropped.
    store
        .finish_delivery(&rkey, Outcome::Done, None, 30, 1000)
        .unwrap();
    let rec = &store.deliveries_of(4).unwrap()[0];
    assert_eq!(rec.status, DeliveryStatus::Cancelled);
    assert_eq!(store.queue_depth_total(), 1);
    // A second purge finds nothing.
    assert_eq!(
        run(store.purge_function_events("gone", 40, 1000)).unwrap(),
        FunctionPurge::default()
    );
}

#[test]
fn deliveries_move_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let subs = to(&["a", "b"]);
    store
        .publish_event(&event(1, "t", 100), b"x", &subs, 10, 1000)
        .unwrap();
    assert_eq!(store.queue_depth_total(), 2);
    // Published without records; read as pending since the event.
    let pending: Vec<_> = store
        .deliveries_of(1)
        .unwrap()
        .into_iter()
        .map(|d| (d.function, d.status, d.attempts, d.due_ms))
        .collect();
    assert_eq!(
        pending,
        [
            ("a".into(), DeliveryStatus::Pending, 0, 100),
            ("b".into(), DeliveryStatus::Pending, 0, 100)
        ]
    );
    // Nothing is due before its time; both are at 100.
    assert!(store.due_deliveries(99, 10).unwrap().is_empty());
    let due = store.due_deliveries(100, 10).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(store.next_due_ms().unwrap(), Some(100));

    // a: claimed, done. b: claimed, fails, retried, then dead.
    let (ka, ra) = store.claim_delivery(&due[0].0, 150).unwrap().unwrap();
    assert_eq!(ra.status, DeliveryStatus::Running);
    assert!(store.claim_delivery(&due[0].0, 150).unwrap().is_none());
    store
        .finish_delivery(&ka, Outcome::Done, None, 160, 1000)
        .unwrap();
    let (kb, _) = store.claim_delivery(&due[1].0, 150).unwrap().unwrap();
    store
        .finish_delivery(&kb, Outcome::Retry(500), Some("500"), 170, 1000)
        .unwrap();
    assert!(store.due_deliveries(499, 10).unwrap().is_empty());
    let due = store.due_deliveries(500, 10).unwrap();
    let (kb, rb) = store.claim_delivery(&due[0].0, 500).unwrap().unwrap();
    assert_eq!(rb.attempts, 1);
    assert_eq!(rb.attempt_times_ms, [150, 500]);
    store
        .finish_delivery(&kb, Outcome::Dead, Some("500"), 510, 1000)
        .unwrap();
    assert_eq!(store.queue_depth_total(), 0);
    let dead = store.dead_deliveries("b", None, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert!(store.dead_deliveries("a", None, 10).unwrap().is_empty());
    assert!(
        store
            .dead_deliveries("b", Some("other"), 10)
            .unwrap()
            .is_empty()
    );

    // Redriven: pending now, attempts reset; then done, and the event
    // goes after its retention.
    let redriven = redrive(&store, "b", Some("t"), None, 600);
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].attempts, 0);
    assert!(store.dead_deliveries("b", None, 10).unwrap().is_empty());
    assert_eq!(store.queue_depth_total(), 1);
    let due = store.due_deliveries(600, 10).unwrap();
    let (kb, _) = store.claim_delivery(&due[0].0, 600).unwrap().unwrap();
    store
        .finish_delivery(&kb, Outcome::Done, None, 700, 1000)
        .unwrap();
    let statuses: Vec<_> = store
        .deliveries_of(1)
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(statuses, [DeliveryStatus::Done, DeliveryStatus::Done]);
    assert_eq!(store.sweep_events_blocking(1699, 10).unwrap(), 0);
    assert_eq!(store.sweep_events_blocking(1700, 10).unwrap(), 1);
    assert!(store.event(1).unwrap().is_none());
    assert!(store.deliveries_of(1).unwrap().is_empty());
}

#[test]
fn a_full_topic_refuses_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let subs = to(&["a", "b"]);
    store
        .publish_event(&event(1, "t", 1), b"x", &subs, 3, 1000)
        .unwrap();
    let refused = store.publish_event(&event(2, "t", 1), b"x", &subs, 3, 1000);
    assert!(matches!(refused, Err(PublishRefused::QueueFull(2))));
    assert!(store.event(2).unwrap().is_none());
    assert_eq!(store.due_deliveries(10, 10).unwrap().len(), 2);
    // Another topic has its own queue.
    store
        .publish_event(&event(3, "u", 1), b"x", &to(&["a"]), 3, 1000)
        .unwrap();
}

/// Batches behave as the same writes one by one: the depth limit
/// counts the events before in the batch, claims and outcomes of one
/// event's deliveries in one transaction add up.
#[test]
fn batched_publishes_claims_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let subs = to(&["a", "b"]);
    let none = to(&[]);
    let events: Vec<_> = (1..=4).map(|i| event(i, "t", 10)).collect();
    let item = |i: usize, to: &Vec<String>| NewEvent {
        event: events[i].clone(),
        payload: Bytes::from_static(b"x"),
        to: to.clone(),
        dedupe: false,
    };
    // Limit 5: events 1 and 2 fit (4 deliveries), 3 does not (it would
    // make 6), 4 has no subscriber (not counted).
    let batch = vec![
        item(0, &subs),
        item(1, &subs),
        item(2, &subs),
        item(3, &none),
    ];
    let writes = EventWrites {
        publishes: batch,
        max_depth: 5,
        retention_ms: 1000,
        ..EventWrites::default()
    };
    let answers = store.write_events_blocking(writes).unwrap().published;
    assert_eq!(
        answers,
        [Ok(()), Ok(()), Err(PublishRefused::QueueFull(4)), Ok(())]
    );
    assert!(store.event(3).unwrap().is_none());
    assert!(store.event(4).unwrap().is_some());
    assert_eq!(store.queue_depth_total(), 4);

    let due: Vec<_> = store.due_iter(10, None).map(|kv| kv.unwrap().0).collect();
    assert_eq!(due.len(), 4);
    // The same entry twice: claimed once.
    let mut entries = due.clone();
    entries.push(due[0]);
    let claimed = store.claim(&entries, 20).unwrap();
    assert_eq!(claimed.iter().filter(|c| c.is_some()).count(), 4);
    assert!(claimed[4].is_none());
    assert_eq!(store.due_iter(u64::MAX - 1, None).count(), 0);

    // Event 1: both done (its open count reaches 0: it expires); event
    // 2: one retried, one dead.
    let keys: Vec<_> = claimed.into_iter().flatten().collect();
    let finish = |i: usize, outcome| Finish {
        key: keys[i].0.clone(),
        due: keys[i].1.due_key(),
        outcome,
        error: None,
        now_ms: 30,
        charge: None,
    };
    assert_eq!(keys[0].1.event_id, 1);
    assert_eq!(keys[1].1.event_id, 1);
    let finishes = vec![
        finish(0, Outcome::Done),
        finish(1, Outcome::Done),
        finish(2, Outcome::Retry(100)),
        finish(3, Outcome::Dead),
    ];
    let writes = EventWrites {
        finishes,
        retention_ms: 1000,
        ..EventWrites::default()
    };
    store.write_events_blocking(writes).unwrap();
    let statuses = |id| {
        store
            .deliveries_of(id)
            .unwrap()
            .iter()
            .map(|d| d.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses(1), [DeliveryStatus::Done, DeliveryStatus::Done]);
    assert_eq!(statuses(2), [DeliveryStatus::Pending, DeliveryStatus::Dead]);
    // Pending: the retry only.
    assert_eq!(store.queue_depth_total(), 1);
    assert_eq!(store.next_due_ms().unwrap(), Some(100));
    assert_eq!(store.sweep_events_blocking(1030, 10).unwrap(), 2); // events 1 and 4
    assert!(store.event(1).unwrap().is_none());
    assert!(store.event(2).unwrap().is_some());
}

#[test]
fn running_deliveries_are_pending_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_raw, store) = open(dir.path());
        store
            .publish_event(&event(1, "t", 1), b"x", &to(&["a"]), 3, 1000)
            .unwrap();
        let due = store.due_deliveries(1, 10).unwrap();
        store.claim_delivery(&due[0].0, 5).unwrap().unwrap();
        assert!(store.due_deliveries(u64::MAX - 1, 10).unwrap().is_empty());
        assert_eq!(
            store.deliveries_of(1).unwrap()[0].status,
            DeliveryStatus::Running
        );
        // Claimed, not finished: still counted in the queue.
        assert_eq!(store.queue_depth_total(), 1);
        store.store.flush_blocking().unwrap();
    }
    let (_raw, store) = open(dir.path());
    let due = store.due_deliveries(50, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0.due_ms, 1);
    assert_eq!(
        store.deliveries_of(1).unwrap()[0].status,
        DeliveryStatus::Pending
    );
    assert_eq!(store.queue_depth_total(), 1);
}

/// Publishes (transactions), claims and flushes from many tasks at once:
/// all finish (sled 0.34 deadlocked here before flushes and exclusive
/// operations were kept apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_and_flushes_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let mut set = JoinSet::new();
    for t in 0..8u64 {
        let store = store.clone();
        set.spawn(async move {
            for i in 0..100u64 {
                let id = store.next_id().unwrap();
                let subs = to(&["a"]);
                store
                    .publish_event(&event(id, "t", t * 1000 + i), b"x", &subs, 1 << 20, 1)
                    .unwrap();
                store.store.flush().await.unwrap();
                for (k, _) in store.due_deliveries(u64::MAX - 1, 2).unwrap() {
                    if let Some((key, _)) = store.claim_delivery(&k, 1).unwrap() {
                        store
                            .finish_delivery(&key, Outcome::Done, None, 1, 1)
                            .unwrap();
                    }
                }
            }
        });
    }
    let all = async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no deadlock");
}

#[test]
fn job_events_outlive_their_retention_while_the_job_exists() {
    use crate::events::Outcome;
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let job = JobRecord {
        id: 7,
        function: "f".into(),
        array: "3,5".into(),
        size: 2,
        parallelism: 1,
        retries: 0,
        path: "/".into(),
        payload: String::new(),
        content_type: None,
        state: JobState::Running,
        created_ms: 1,
        finished_ms: None,
    };
    store.put_job_blocking(job).unwrap();
    let topic = format!("{JOB_TOPIC_PREFIX}{}", format_id(7));
    let events: Vec<_> = [3u32, 5]
        .iter()
        .map(|&i| {
            let id = store.next_id().unwrap();
            (
                i,
                EventRecord {
                    id,
                    topic: topic.clone(),
                    time_ms: 1,
                    content_type: None,
                    path: Some("/".into()),
                    headers: Vec::new(),
                    size_bytes: 0,
                },
            )
        })
        .collect();
    store
        .add_job_tasks_blocking(7, "f", events.clone())
        .unwrap();
    let tasks = store.job_tasks(7).unwrap();
    assert_eq!(tasks.iter().map(|t| t.0).collect::<Vec<_>>(), [3, 5]);
    assert!(tasks.iter().all(|t| t.1.status == DeliveryStatus::Pending));
    assert_eq!(store.queue_depth_total(), 2);
    for (due, _) in store.due_deliveries(10, 10).unwrap() {
        let (key, _) = store.claim_delivery(&due, 10).unwrap().unwrap();
        store
            .finish_delivery(&key, Outcome::Done, None, 20, 100)
            .unwrap();
    }
    // Cancelling leaves finished deliveries alone.
    assert_eq!(store.cancel_job_tasks_blocking(7, 30, 100).unwrap(), 0);
    // Past the retention, but the job is still there: kept (put off).
    assert_eq!(store.sweep_events_blocking(200, 10).unwrap(), 2);
    assert_eq!(store.job_tasks(7).unwrap().len(), 2);
    // The job gone: swept (after the minute it was put off by).
    block_on(store.delete_job(7)).unwrap();
    assert!(store.job(7).unwrap().is_none());
    assert_eq!(store.sweep_events_blocking(200 + 60_000, 10).unwrap(), 2);
    assert!(store.event(events[0].1.id).unwrap().is_none());
}

#[test]
fn cancelling_drops_pending_tasks_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (_raw, store) = open(dir.path());
    let topic = format!("{JOB_TOPIC_PREFIX}{}", format_id(9));
    let events: Vec<_> = (0..1200u32)
        .map(|i| {
            let id = store.next_id().unwrap();
            let event = EventRecord {
                id,
                topic: topic.clone(),
                time_ms: 1,
                content_type: None,
                path: None,
                headers: Vec::new(),
                size_bytes: 0,
            };
            (i, event)
        })
        .collect();
    store.add_job_tasks_blocking(9, "f", events).unwrap();
    // One running: left to finish.
    let (due, _) = store.due_deliveries(1, 1).unwrap().remove(0);
    store.claim_delivery(&due, 2).unwrap().unwrap();
    assert_eq!(store.cancel_job_tasks_blocking(9, 3, 100).unwrap(), 1199);
    assert!(store.due_deliveries(u64::MAX - 1, 10).unwrap().is_empty());
    assert_eq!(store.queue_depth_total(), 1);
    let tasks = store.job_tasks(9).unwrap();
    let cancelled = tasks
        .iter()
        .filter(|t| t.1.status == DeliveryStatus::Cancelled)
        .count();
    assert_eq!(cancelled, 1199);
    assert_eq!(store.cancel_job_tasks_blocking(9, 4, 100).unwrap(), 0);
}
