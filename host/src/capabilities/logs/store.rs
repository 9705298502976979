//! The log domain's tree, key and record.
//!
//! Tree `logs`: `name \0 seq` (seq big-endian, from the store's increasing
//! ids, so a function's lines are in write order) → JSON [`LogEntry`].
//! Lines are not flushed one by one: the log writer stores them as they
//! come, the host's flushes (of its other writes, and at shutdown) and the
//! backend's background flush bound what a crash loses.

use super::LogEntry;
use crate::store::{Durability, Json, Key, Prefix, Store, StoreError, Tree};

impl Json for LogEntry {}

/// Key of a line: the function, then the line's sequence number.
struct LogKey {
    function: String,
    seq: u64,
}

impl Key for LogKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = Of(&self.function).encode_prefix();
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (name, seq) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
        Some(LogKey {
            function: String::from_utf8(name.strip_suffix(&[0])?.to_vec()).ok()?,
            seq: u64::from_be_bytes(seq.try_into().ok()?),
        })
    }
}

/// Every line of one function.
struct Of<'a>(&'a str);

impl Prefix<LogKey> for Of<'_> {
    fn encode_prefix(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + 9);
        k.extend_from_slice(self.0.as_bytes());
        k.push(0);
        k
    }
}

/// The log tree; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogStore {
    store: Store,
    logs: Tree<LogKey, LogEntry>,
}

impl LogStore {
    /// Opens the tree.
    pub fn open(store: &Store) -> Result<LogStore, StoreError> {
        Ok(LogStore {
            logs: store.tree("logs")?,
            store: store.clone(),
        })
    }

    /// Appends log lines to a function's log, in one batch, and gives each
    /// its `seq` (for the live stream, which hands them on as stored).
    /// Blocking (the log writer's thread).
    pub fn append_blocking(
        &self,
        function: &str,
        entries: &mut [LogEntry],
    ) -> Result<(), StoreError> {
        let mut batch = self.logs.batch();
        for e in entries {
            let key = LogKey {
                function: function.to_string(),
                seq: self.store.next_id()?,
            };
            e.seq = key.seq;
            batch.insert(&key, e);
        }
        let logs = self.logs.clone();
        self.store
            .write_blocking(Durability::Committed, move |w| logs.apply(w, batch))?
    }

    /// Number of lines in a function's log.
    pub fn count(&self, function: &str) -> u64 {
        self.logs.scan().within(&Of(function)).keys().count() as u64
    }

    /// Removes a function's oldest lines: at least `excess` of them, and
    /// all written before `oldest_kept_ms`. Returns how many were removed.
    /// Blocking (the log writer's thread).
    pub fn prune_blocking(
        &self,
        function: &str,
        excess: u64,
        oldest_kept_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut batch = self.logs.batch();
        for kv in self.logs.scan().within(&Of(function)) {
            let (key, entry) = kv?;
            if batch.len() as u64 >= excess && entry.time_ms >= oldest_kept_ms {
                break;
            }
            batch.remove(&key);
        }
        let removed = batch.len() as u64;
        let logs = self.logs.clone();
        self.store
            .write_blocking(Durability::Committed, move |w| logs.apply(w, batch))??;
        Ok(removed)
    }

    /// Up to `limit` lines of a function's log after `after` (a seq), at or
    /// after `since_ms`, of one invocation if given, oldest first.
    pub fn read(
        &self,
        function: &str,
        after: Option<u64>,
        since_ms: Option<u64>,
        invocation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut scan = self.logs.scan().within(&Of(function));
        if let Some(seq) = after {
            scan = scan.after(&LogKey {
                function: function.to_string(),
                seq,
            });
        }
        let mut out = Vec::new();
        for kv in scan {
            if out.len() >= limit {
                break;
            }
            let (key, mut entry) = kv?;
            if since_ms.is_some_and(|t| entry.time_ms < t)
                || invocation.is_some_and(|id| entry.invocation_id != id)
            {
                continue;
            }
            entry.seq = key.seq;
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes a function's whole log (the function was deleted, or its name
    /// is deployed anew): its keys read on the blocking pool, removed in one
    /// batch. Not flushed.
    pub async fn purge(&self, function: &str) -> Result<(), StoreError> {
        let this = self.clone();
        let function = function.to_string();
        tokio::task::spawn_blocking(move || {
            let mut batch = this.logs.batch();
            for key in this.logs.scan().within(&Of(&function)).keys() {
                batch.remove(&key?);
            }
            let logs = this.logs.clone();
            this.store
                .write_blocking(Durability::Committed, move |w| logs.apply(w, batch))?
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("purge task: {e}"))))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogStream;
    use super::*;

    fn entry(time_ms: u64, invocation: &str) -> LogEntry {
        LogEntry {
            seq: 0,
            time_ms,
            invocation_id: invocation.into(),
            stream: LogStream::Stdout,
            level: None,
            message: format!("at {time_ms}"),
            node: None,
        }
    }

    #[test]
    fn keys_round_trip() {
        let k = LogKey {
            function: "f".into(),
            seq: 258,
        };
        let back = LogKey::decode(&k.encode()).unwrap();
        assert_eq!((back.function.as_str(), back.seq), ("f", 258));
        assert!(LogKey::decode(b"short").is_none());
    }

    #[tokio::test]
    async fn lines_are_read_in_order_filtered_and_pruned_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::open(&Store::open(dir.path(), 1 << 20).unwrap()).unwrap();
        let lines: Vec<_> = (1..=5)
            .map(|t| entry(t * 10, if t % 2 == 0 { "even" } else { "odd" }))
            .collect();
        logs.append_blocking("f", &mut lines.clone()).unwrap();
        logs.append_blocking("ff", &mut lines[..1].to_vec())
            .unwrap();
        assert_eq!((logs.count("f"), logs.count("ff")), (5, 1));
        let all = logs.read("f", None, None, None, 100).unwrap();
        let times: Vec<_> = all.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [10, 20, 30, 40, 50]);
        // Paging by seq, and the filters.
        let next = logs.read("f", Some(all[1].seq), None, None, 2).unwrap();
        assert_eq!(next.iter().map(|e| e.time_ms).collect::<Vec<_>>(), [30, 40]);
        assert_eq!(logs.read("f", None, Some(35), None, 100).unwrap().len(), 2);
        assert_eq!(
            logs.read("f", None, None, Some("even"), 100).unwrap().len(),
            2
        );
        // At least one line goes, and all older than 30.
        assert_eq!(logs.prune_blocking("f", 1, 30).unwrap(), 2);
        assert_eq!(
            logs.read("f", None, None, None, 100).unwrap()[0].time_ms,
            30
        );
        logs.purge("f").await.unwrap();
        assert_eq!((logs.count("f"), logs.count("ff")), (0, 1));
    }
}
