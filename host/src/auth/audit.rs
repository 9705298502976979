//! The audit log of admin writes: who (a token's name), what (method and
//! path, never a query, a body or a header), when, and the answer's status.
//!
//! Tree `admin_audit`: a store id (increasing) → [`AuditEntry`] (JSON).
//! Bounded: each append drops the oldest entries past [`MAX_ENTRIES`] and
//! those older than [`MAX_AGE`], on the writer, in the same round.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{AuditEntry, AuditPage, AuditQuery, TokenError, now_ms};
use crate::capabilities::logs::parse_since;
use crate::store::{Durability, Json, Store, StoreError, Tree};

/// Most entries kept.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Oldest entry kept.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// Longest path kept (longer ones are cut, marked with `…`).
const MAX_PATH: usize = 512;
/// Entries a read answers by default, and at most.
const DEFAULT_LIMIT: usize = 1000;

impl Json for AuditEntry {}

/// The audit log; cheap to clone.
#[derive(Clone)]
pub(crate) struct Audit {
    store: Store,
    tree: Tree<u64, AuditEntry>,
    /// Entries in the tree: counted once at open, then kept by the writer
    /// (the only thread that changes the tree), so trimming needs no count
    /// of the tree.
    len: Arc<AtomicUsize>,
    max_entries: usize,
    max_age: Duration,
}

impl Audit {
    /// Opens the tree, bounded to [`MAX_ENTRIES`] and [`MAX_AGE`].
    pub fn open(store: &Store) -> Result<Audit, StoreError> {
        Audit::bounded(store, MAX_ENTRIES, MAX_AGE)
    }

    fn bounded(store: &Store, max_entries: usize, max_age: Duration) -> Result<Audit, StoreError> {
        let tree: Tree<u64, AuditEntry> = store.tree("admin_audit")?;
        Ok(Audit {
            len: Arc::new(AtomicUsize::new(tree.len())),
            store: store.clone(),
            tree,
            max_entries,
            max_age,
        })
    }

    /// Appends an entry (committed, not flushed: an audit entry waits for
    /// the next flush of the writer, which the write it records usually
    /// forces anyway), dropping what is past the bounds.
    pub async fn record(
        &self,
        who: &str,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<(), StoreError> {
        let entry = AuditEntry {
            at_ms: now_ms(),
            who: who.to_string(),
            method: method.to_string(),
            path: cut(path),
            status,
        };
        let id = self.store.next_id()?;
        let this = self.clone();
        self.store
            .write(Durability::Committed, move |w| {
                this.tree.insert(w, &id, &entry)?;
                let mut len = this.len.load(Ordering::Relaxed) + 1;
                let oldest_kept = entry.at_ms.saturating_sub(this.max_age.as_millis() as u64);
                let mut drop = Vec::new();
                for item in this.tree.scan() {
                    let (key, e) = item?;
                    if len - drop.len() <= this.max_entries && e.at_ms >= oldest_kept {
                        break;
                    }
                    drop.push(key);
                }
                for key in &drop {
                    this.tree.remove(w, key)?;
                }
                len -= drop.len();
                this.len.store(len, Ordering::Relaxed);
                Ok(())
            })
            .await?
    }

    /// Entries since `query.since` (all kept, without it), the latest
    /// `query.limit` of them, oldest first. Reads the tree: call it on the
    /// blocking pool.
    pub fn read(&self, query: &AuditQuery) -> Result<AuditPage, TokenError> {
        let since = match &query.since {
            Some(s) => parse_since(s, now_ms()).map_err(TokenError::InvalidArgument)?,
            None => 0,
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_ENTRIES).contains(&limit) {
            return Err(TokenError::InvalidArgument(format!(
                "limit must be from 1 to {MAX_ENTRIES}"
            )));
        }
        let mut entries = VecDeque::with_capacity(limit.min(DEFAULT_LIMIT));
        for item in self.tree.scan() {
            let (_, entry) = item?;
            if entry.at_ms < since {
                continue;
            }
            if entries.len() == limit {
                entries.pop_front();
            }
            entries.push_back(entry);
        }
        Ok(AuditPage {
            entries: entries.into(),
        })
    }
}

/// `path`, cut to [`MAX_PATH`] bytes (on a character boundary).
fn cut(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_string();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(since: Option<&str>, limit: Option<usize>) -> AuditQuery {
        AuditQuery {
            since: since.map(Into::into),
            limit,
        }
    }

    #[tokio::test]
    async fn the_log_keeps_the_latest_entries_and_reads_the_latest_first_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let audit = Audit::bounded(&store, 5, MAX_AGE).unwrap();
        for i in 0..8u16 {
            audit
                .record("ci", "POST", &format!("/v1/functions/f{i}"), 200 + i)
                .await
                .unwrap();
        }
        assert_eq!(audit.tree.len(), 5);
        let page = audit.read(&query(None, None)).unwrap();
        let statuses: Vec<u16> = page.entries.iter().map(|e| e.status).collect();
        assert_eq!(statuses, [203, 204, 205, 206, 207]);
        let page = audit.read(&query(Some("1h"), Some(2))).unwrap();
        let statuses: Vec<u16> = page.entries.iter().map(|e| e.status).collect();
        assert_eq!(statuses, [206, 207]);
        assert!(
            audit
                .read(&query(Some("2999-01-01T00:00:00Z"), None))
                .unwrap()
                .entries
                .is_empty()
        );
        assert!(audit.read(&query(Some("yesterday"), None)).is_err());
        assert!(audit.read(&query(None, Some(0))).is_err());

        // Reopened, the count is the tree's.
        let audit = Audit::bounded(&store, 5, Duration::ZERO).unwrap();
        assert_eq!(audit.len.load(Ordering::Relaxed), 5);
        // Entries past the age bound go with the next append.
        std::thread::sleep(Duration::from_millis(2));
        audit
            .record("ci", "DELETE", "/v1/functions/f0", 200)
            .await
            .unwrap();
        assert_eq!(audit.tree.len(), 1);
    }

    #[test]
    fn long_paths_are_cut() {
        let long = format!("/v1/functions/f/kv/{}", "é".repeat(400));
        let kept = cut(&long);
        assert!(kept.len() <= MAX_PATH + '…'.len_utf8());
        assert!(kept.ends_with('…'));
    }
}
