//! The event plane's key encodings and its stored event (see the tree
//! layout in the [module docs](super)).

use std::borrow::Cow;

use bytes::Bytes;

use crate::events::{DeliveryRecord, EventRecord, JobRecord, Schedule, Subscription};
use crate::store::{Json, Key, Prefix, Value};

impl Json for Subscription {}
impl Json for DeliveryRecord {}
impl Json for Schedule {}
impl Json for JobRecord {}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// An entry of the due index (and of the expiry index, which has the same
/// layout): the due time and a unique sequence number, both big-endian,
/// so the index iterates in due order and a scan for what is due stops at
/// the first key in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DueKey {
    pub due_ms: u64,
    pub seq: u64,
}

impl DueKey {
    /// The last possible entry due at `at_ms`: a scan up to it takes
    /// everything due by then.
    pub fn last_at(at_ms: u64) -> DueKey {
        DueKey {
            due_ms: at_ms,
            seq: u64::MAX,
        }
    }
}

impl Key for DueKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(16);
        k.extend_from_slice(&self.due_ms.to_be_bytes());
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 16).then_some(())?;
        Some(DueKey {
            due_ms: u64_at(bytes, 0)?,
            seq: u64_at(bytes, 8)?,
        })
    }
}

impl DeliveryRecord {
    /// Its entry in the due index.
    pub(crate) fn due_key(&self) -> DueKey {
        DueKey {
            due_ms: self.due_ms,
            seq: self.due_seq,
        }
    }
}

/// A delivery: `event id (BE) | topic \0 function`, so an event's
/// deliveries are one prefix scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DeliveryKey {
    pub event_id: u64,
    pub topic: String,
    pub function: String,
}

impl DeliveryKey {
    pub fn new(event_id: u64, topic: &str, function: &str) -> DeliveryKey {
        DeliveryKey {
            event_id,
            topic: topic.to_string(),
            function: function.to_string(),
        }
    }

    /// The subscription it is delivered under.
    pub fn subscription(&self) -> SubKey {
        SubKey {
            topic: self.topic.clone(),
            function: self.function.clone(),
        }
    }
}

impl Key for DeliveryKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + self.topic.len() + 1 + self.function.len());
        k.extend_from_slice(&self.event_id.to_be_bytes());
        k.extend_from_slice(self.topic.as_bytes());
        k.push(0);
        k.extend_from_slice(self.function.as_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let event_id = u64_at(bytes, 0)?;
        let rest = std::str::from_utf8(bytes.get(8..)?).ok()?;
        let (topic, function) = rest.split_once('\0')?;
        Some(DeliveryKey::new(event_id, topic, function))
    }
}

/// A delivery key is also the value of the indexes that point at one.
impl Value for DeliveryKey {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Owned(Key::encode(self))
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        <Self as Key>::decode(bytes).ok_or_else(|| "not a delivery key".into())
    }
}

/// The deliveries of one event.
pub(crate) struct OfEvent(pub u64);

impl Prefix<DeliveryKey> for OfEvent {
    fn encode_prefix(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
}

/// A subscription: `topic \0 function`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SubKey {
    pub topic: String,
    pub function: String,
}

impl Key for SubKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = OfTopic(&self.topic).encode_prefix();
        k.extend_from_slice(self.function.as_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (topic, function) = std::str::from_utf8(bytes).ok()?.split_once('\0')?;
        Some(SubKey {
            topic: topic.into(),
            function: function.into(),
        })
    }
}

/// The subscriptions of one topic.
pub(crate) struct OfTopic<'a>(pub &'a str);

impl Prefix<SubKey> for OfTopic<'_> {
    fn encode_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + 1);
        k.extend_from_slice(self.0.as_bytes());
        k.push(0);
        k
    }
}

/// A dead letter: `function \0 topic \0 event id`, so a subscription's
/// dead-letter list is one prefix scan, oldest event first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadKey {
    pub function: String,
    pub topic: String,
    pub event_id: u64,
}

impl DeadKey {
    /// The dead letter of a delivery.
    pub fn of(d: &DeliveryKey) -> DeadKey {
        DeadKey {
            function: d.function.clone(),
            topic: d.topic.clone(),
            event_id: d.event_id,
        }
    }

    /// The delivery it is.
    pub fn delivery(&self) -> DeliveryKey {
        DeliveryKey::new(self.event_id, &self.topic, &self.function)
    }
}

impl Key for DeadKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = DeadOf {
            function: &self.function,
            topic: Some(&self.topic),
        }
        .encode_prefix();
        k.extend_from_slice(&self.event_id.to_be_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let split = bytes.len().checked_sub(8)?;
        let event_id = u64_at(bytes, split)?;
        let names = std::str::from_utf8(&bytes[..split])
            .ok()?
            .strip_suffix('\0')?;
        let (function, topic) = names.split_once('\0')?;
        Some(DeadKey {
            function: function.into(),
            topic: topic.into(),
            event_id,
        })
    }
}

/// The dead letters of a function (of one topic if given).
pub(crate) struct DeadOf<'a> {
    pub function: &'a str,
    pub topic: Option<&'a str>,
}

impl Prefix<DeadKey> for DeadOf<'_> {
    fn encode_prefix(&self) -> Vec<u8> {
        let mut k = Vec::new();
        k.extend_from_slice(self.function.as_bytes());
        k.push(0);
        if let Some(t) = self.topic {
            k.extend_from_slice(t.as_bytes());
            k.push(0);
        }
        k
    }
}

/// The dead letters in the order they died: `died_ms (BE) | dead key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadAtKey {
    pub died_ms: u64,
    pub dead: DeadKey,
}

impl Key for DeadAtKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = self.died_ms.to_be_bytes().to_vec();
        k.extend_from_slice(&self.dead.encode());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(DeadAtKey {
            died_ms: u64_at(bytes, 0)?,
            dead: DeadKey::decode(bytes.get(8..)?)?,
        })
    }
}

/// The dead letters that died at a time (a position: those before it died
/// earlier).
pub(crate) struct DiedAt(pub u64);

impl Prefix<DeadAtKey> for DiedAt {
    fn encode_prefix(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
}

/// A task of a job: `job id | index` (u64 BE, u32 BE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobTaskKey {
    pub job: u64,
    pub index: u32,
}

impl Key for JobTaskKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = self.job.to_be_bytes().to_vec();
        k.extend_from_slice(&self.index.to_be_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 12).then_some(())?;
        Some(JobTaskKey {
            job: u64_at(bytes, 0)?,
            index: u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?),
        })
    }
}

/// The tasks of one job.
pub(crate) struct OfJob(pub u64);

impl Prefix<JobTaskKey> for OfJob {
    fn encode_prefix(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
}

/// An event as stored: the record, the functions of the deliveries
/// published without a record of their own (see
/// [`EventStore::write_events`](super::EventStore::write_events)), the
/// payload.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub record: EventRecord,
    pub targets: Vec<String>,
    pub payload: Bytes,
}

/// Set in an event's header when a list of functions follows the JSON.
const WITH_TARGETS: u32 = 1 << 31;

/// `u32 BE` JSON length (| [`WITH_TARGETS`]), the JSON `EventRecord`, then
/// if flagged `u16 BE` count and per function `u16 BE` length and name,
/// then the payload.
impl Value for StoredEvent {
    fn encode(&self) -> Cow<'_, [u8]> {
        let json = serde_json::to_vec(&self.record).expect("records always serialize");
        let targets = &self.targets;
        let mut v = Vec::with_capacity(4 + json.len() + 16 * targets.len() + self.payload.len());
        let flag = if targets.is_empty() { 0 } else { WITH_TARGETS };
        v.extend_from_slice(&(json.len() as u32 | flag).to_be_bytes());
        v.extend_from_slice(&json);
        if !targets.is_empty() {
            v.extend_from_slice(&(targets.len() as u16).to_be_bytes());
            for f in targets {
                v.extend_from_slice(&(f.len() as u16).to_be_bytes());
                v.extend_from_slice(f.as_bytes());
            }
        }
        v.extend_from_slice(&self.payload);
        Cow::Owned(v)
    }

    fn decode(stored: &[u8]) -> Result<Self, String> {
        let short = || "event shorter than its header".to_string();
        let u16_at = |at: usize| {
            stored
                .get(at..at + 2)
                .and_then(|b| b.try_into().ok())
                .map(u16::from_be_bytes)
                .ok_or_else(short)
        };
        let head = stored
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(short)?;
        let len = (head & !WITH_TARGETS) as usize;
        let json = stored.get(4..4 + len).ok_or_else(short)?;
        let record: EventRecord = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut at = 4 + len;
        let mut targets = Vec::new();
        if head & WITH_TARGETS != 0 {
            let n = u16_at(at)?;
            at += 2;
            for _ in 0..n {
                let l = u16_at(at)? as usize;
                let name = stored.get(at + 2..at + 2 + l).ok_or_else(short)?;
                targets.push(String::from_utf8_lossy(name).into_owned());
                at += 2 + l;
            }
        }
        Ok(StoredEvent {
            record,
            targets,
            payload: Bytes::copy_from_slice(&stored[at..]),
        })
    }
}

/// One finished event for the expiry sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expired {
    /// An event with its deliveries (none, or several): the sweep removes
    /// every delivery under it.
    Event(u64),
    /// An event with one delivery, this one: the sweep removes it and the
    /// event without looking them up.
    Delivery(DeliveryKey),
}

/// The events finished in one transaction, written as one entry of the
/// expiry index (one write per transaction instead of one per event).
/// Stored as items of a u16 BE length and either an event id (8 bytes) or
/// a delivery key (longer: 8 bytes and a topic, a NUL and a function).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expiring {
    /// When they are removed: the latest of their times.
    pub at_ms: u64,
    pub items: Vec<Expired>,
}

impl Expiring {
    pub fn add(&mut self, at_ms: u64, item: Expired) {
        self.at_ms = self.at_ms.max(at_ms);
        self.items.push(item);
    }
}

impl Value for Expiring {
    fn encode(&self) -> Cow<'_, [u8]> {
        let mut v = Vec::new();
        for item in &self.items {
            let bytes = match item {
                Expired::Event(id) => id.to_be_bytes().to_vec(),
                Expired::Delivery(k) => Key::encode(k),
            };
            v.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            v.extend_from_slice(&bytes);
        }
        Cow::Owned(v)
    }

    /// The items (the time is the entry's key, not part of the value).
    fn decode(mut value: &[u8]) -> Result<Self, String> {
        let mut items = Vec::new();
        while !value.is_empty() {
            let len = value
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                .ok_or("an expiry item without its length")?;
            let item = value.get(2..2 + len).ok_or("an expiry item cut short")?;
            items.push(if len == 8 {
                Expired::Event(u64_at(item, 0).ok_or("not an event id")?)
            } else {
                Expired::Delivery(<DeliveryKey as Key>::decode(item).ok_or("not a delivery key")?)
            });
            value = &value[2 + len..];
        }
        Ok(Expiring { at_ms: 0, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::invoke_topic;

    #[test]
    fn due_keys_sort_by_time_then_seq() {
        let k = |due_ms, seq| DueKey { due_ms, seq }.encode();
        let (a, b, c) = (k(5, u64::MAX), k(6, 0), k(6, 1));
        assert!(a < b && b < c);
        assert_eq!(DueKey::decode(&c), Some(DueKey { due_ms: 6, seq: 1 }));
        assert_eq!(DueKey::decode(&[1, 2]), None);
        // Time ordering holds across byte boundaries.
        assert!(k(255, 0) < k(256, 0));
    }

    #[test]
    fn delivery_keys_round_trip() {
        let k = DeliveryKey::new(7, "orders", "mailer");
        let bytes = Key::encode(&k);
        assert_eq!(<DeliveryKey as Key>::decode(&bytes), Some(k));
        assert!(bytes.starts_with(&OfEvent(7).encode_prefix()));
        let k = DeliveryKey::new(1, &invoke_topic("f"), "f");
        assert_eq!(<DeliveryKey as Key>::decode(&Key::encode(&k)), Some(k));
    }

    #[test]
    fn dead_keys_round_trip_and_list_by_function_then_topic() {
        let d = DeadKey::of(&DeliveryKey::new(9, "t", "f"));
        let bytes = d.encode();
        assert_eq!(DeadKey::decode(&bytes), Some(d.clone()));
        assert_eq!(d.delivery(), DeliveryKey::new(9, "t", "f"));
        let of = |topic| {
            DeadOf {
                function: "f",
                topic,
            }
            .encode_prefix()
        };
        assert!(bytes.starts_with(&of(None)) && bytes.starts_with(&of(Some("t"))));
        assert!(!bytes.starts_with(&of(Some("tt"))));
        let at = DeadAtKey {
            died_ms: 3,
            dead: d,
        };
        assert_eq!(DeadAtKey::decode(&at.encode()), Some(at.clone()));
        assert!(at.encode() < DiedAt(4).encode_prefix());
    }

    #[test]
    fn stored_events_and_expiry_entries_round_trip() {
        let event = StoredEvent {
            record: EventRecord {
                id: 1,
                topic: "t".into(),
                time_ms: 2,
                content_type: None,
                path: None,
                headers: Vec::new(),
                size_bytes: 3,
            },
            targets: vec!["a".into(), "bb".into()],
            payload: Bytes::from_static(b"xyz"),
        };
        let back = StoredEvent::decode(&event.encode()).unwrap();
        assert_eq!(
            (back.record, back.targets, back.payload),
            (event.record, event.targets, event.payload)
        );
        assert!(StoredEvent::decode(&[0, 0]).is_err());
        let expiring = Expiring {
            at_ms: 0,
            items: vec![
                Expired::Event(5),
                Expired::Delivery(DeliveryKey::new(6, "t", "f")),
            ],
        };
        assert_eq!(Expiring::decode(&expiring.encode()).unwrap(), expiring);
        assert!(Expiring::decode(&[0, 9, 1]).is_err());
    }

    #[test]
    fn job_task_keys_round_trip() {
        let k = JobTaskKey {
            job: 3,
            index: 70_000,
        };
        assert_eq!(JobTaskKey::decode(&k.encode()), Some(k));
        assert!(k.encode().starts_with(&OfJob(3).encode_prefix()));
    }
}
