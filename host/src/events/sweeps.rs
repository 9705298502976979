//! The sweeps of the event plane: finished events past their retention,
//! and dead letters past theirs. Each removes a bounded step at a time with
//! a pause between, on the blocking pool (they read and write the store),
//! so that under load they are a steady trickle beside publishes.

use std::time::Duration;

use super::plane::now_ms;
use super::store::EventStore;

/// Finished events removed per step of a sweep (about).
const SWEEP_BATCH: usize = 64;
/// Pause between steps of a sweep (other writes go between).
const SWEEP_PAUSE: Duration = Duration::from_millis(1);
/// Dead letters looked at per step of the expiry sweep.
const DEAD_SWEEP_BATCH: usize = 256;

/// Removes every finished event whose retention has ended, a bounded step
/// at a time with a pause between (off the runtime: it reads and writes the
/// store).
pub(super) fn sweep_events(store: &EventStore) {
    let now = now_ms();
    loop {
        match store.sweep_events_blocking(now, SWEEP_BATCH) {
            Ok(0) => break,
            Ok(_) => std::thread::sleep(SWEEP_PAUSE),
            Err(e) => {
                tracing::warn!(error = %e, "removing finished events failed");
                break;
            }
        }
    }
}

/// Removes the dead letters past their retention, a bounded step at a time
/// (off the runtime, like [`sweep_events`]).
pub(super) fn expire_dead_letters(store: &EventStore, retention: Duration) {
    let now = now_ms();
    let retention_ms = retention.as_millis() as u64;
    loop {
        match store.expire_dead_letters_blocking(now, retention_ms, DEAD_SWEEP_BATCH) {
            Ok(0) => break,
            Ok(n) => {
                tracing::debug!(n, "expired dead letters removed");
                std::thread::sleep(SWEEP_PAUSE);
            }
            Err(e) => {
                tracing::warn!(error = %e, "removing expired dead letters failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventRecord;
    use crate::events::store::{EventWrites, NewEvent};
    use crate::store::Store;

    fn event(id: u64, topic: &str, time_ms: u64) -> EventRecord {
        EventRecord {
            id,
            topic: topic.into(),
            time_ms,
            content_type: None,
            path: None,
            headers: Vec::new(),
            size_bytes: 1,
        }
    }

    /// A sweep removes everything expired, in as many transactions as it
    /// takes (not a fixed number of events per sweep).
    #[test]
    fn a_sweep_removes_every_expired_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(&Store::open(dir.path(), 1 << 20).unwrap()).unwrap();
        let events: Vec<_> = (1..=600).map(|i| event(i, "t", 1)).collect();
        let items: Vec<_> = events
            .into_iter()
            .map(|event| NewEvent {
                event,
                payload: bytes::Bytes::from_static(b"x"),
                to: Vec::new(),
                dedupe: false,
            })
            .collect();
        let writes = EventWrites {
            publishes: items,
            max_depth: 10,
            retention_ms: 1000,
            ..EventWrites::default()
        };
        store.write_events_blocking(writes).unwrap();
        assert!(store.event(600).unwrap().is_some());
        sweep_events(&store);
        assert!(store.event(1).unwrap().is_none());
        assert!(store.event(600).unwrap().is_none());
        assert_eq!(store.sweep_events_blocking(u64::MAX - 1, 10).unwrap(), 0);
    }
}
