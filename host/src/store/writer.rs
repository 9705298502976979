//! The writer: one thread that runs every write of the store, one after
//! the other, and flushes between rounds of them (group commit).
//!
//! Why one thread: sled 0.34's `flush` holds sled's global lock shared
//! while it waits for its log to reach the disk, and a transaction or batch
//! asks for that lock exclusively; meanwhile every later reader queues
//! behind the transaction, and one of those readers is what the flush waits
//! for: a deadlock (seen with concurrent publishes, deliveries and kv
//! writes; cf. sled issues #1308 and #1412). Here a flush and a write never
//! overlap because one thread does both, so nothing needs a lock held
//! across the flush, and no caller blocks on one: an async caller awaits
//! its answer, and a serving thread serves its other connections meanwhile.
//!
//! A round: every write queued (up to [`ROUND`]) runs; if any of them asked
//! to be acknowledged once durable and wrote something, one flush covers
//! them all, then they are answered. Under load one flush (~1-2 ms here)
//! acknowledges a whole round, and the writes queued during it make the
//! next one.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sled::Db;

/// Writes waiting for the writer; a caller waits (async callers without
/// blocking their thread) while it is full.
const QUEUE: usize = 1024;
/// Most writes run between two flushes, so that acknowledgements keep
/// coming under a steady stream of writes.
const ROUND: usize = 1024;

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Once it is in the store: readers see it, a crash may lose it. For
    /// writes nobody is told about (a claim, a sweep, a reclaimed entry) or
    /// that a later flush covers before anyone is.
    Committed,
    /// Once it is on disk (flushed): for a write a client or a guest is
    /// told succeeded. A write that wrote nothing is answered at once.
    Flushed,
}

/// What writes take: only the writer thread has one, so every write runs
/// there. Records whether the current write wrote anything.
pub(crate) struct Writer {
    pub(super) wrote: Cell<bool>,
}

impl Writer {
    /// Notes that the current write wrote something (it needs a flush
    /// before it is acknowledged as durable).
    pub(super) fn wrote(&self) {
        self.wrote.set(true);
    }
}

/// Called after the flush that covers a write: whether it succeeded.
type AfterFlush = Box<dyn FnOnce(bool) + Send>;
/// A queued write: runs on the writer thread; returns what to call after
/// the next flush, if it waits for one.
type Job = Box<dyn FnOnce(&Writer) -> Option<AfterFlush> + Send>;

thread_local! {
    /// Set on the writer thread (a write waiting for the writer from the
    /// writer itself would wait forever).
    static ON_WRITER: Cell<bool> = const { Cell::new(false) };
}

/// The writer thread and its queue. Dropped with the last clone of the
/// store: the queue closes, the writer finishes what is queued, and the
/// drop waits for it (it holds the database open).
pub(super) struct WriterThread {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && !ON_WRITER.get()
        {
            let _ = thread.join();
        }
    }
}

impl WriterThread {
    pub(super) fn start(db: Db) -> std::io::Result<WriterThread> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("wisp-store-writer".into())
            .spawn(move || run(&db, rx))?;
        Ok(WriterThread {
            queue: Some(tx),
            thread: Some(thread),
        })
    }

    fn queue(&self) -> Result<&mpsc::Sender<Job>, StoreError> {
        self.queue.as_ref().ok_or(StoreError::Stopped)
    }

    /// Queues `f` and answers what it returns, as `when` says.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&Writer) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (job, answer) = job(when, f);
        self.queue()?
            .send(job)
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.unwrap_or(Err(StoreError::Stopped))
    }

    /// [`WriterThread::write`], blocking the calling thread: never a
    /// serving thread, nor the writer's own.
    pub(super) fn write_blocking<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&Writer) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        assert!(
            !ON_WRITER.get(),
            "a store write waited for the writer from the writer thread"
        );
        let (job, answer) = job(when, f);
        let queue = self.queue()?;
        futures::executor::block_on(async {
            queue.send(job).await.map_err(|_| StoreError::Stopped)?;
            answer.await.unwrap_or(Err(StoreError::Stopped))
        })
    }
}

/// A job running `f`, and where its answer comes.
fn job<T: Send + 'static>(
    when: Durability,
    f: impl FnOnce(&Writer) -> T + Send + 'static,
) -> (Job, oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |w: &Writer| {
        let out = f(w);
        if when == Durability::Flushed && w.wrote.get() {
            Some(Box::new(move |flushed: bool| {
                let _ = tx.send(if flushed {
                    Ok(out)
                } else {
                    Err(StoreError::Flush)
                });
            }))
        } else {
            let _ = tx.send(Ok(out));
            None
        }
    });
    (job, rx)
}

/// The writer loop (see the module docs).
fn run(db: &Db, mut queue: mpsc::Receiver<Job>) {
    ON_WRITER.set(true);
    while let Some(first) = queue.blocking_recv() {
        let mut waiting = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(job) = next.take() {
            let w = Writer {
                wrote: Cell::new(false),
            };
            // A write that panics answers its caller with an error (its
            // answer is dropped) and the writer goes on with the next.
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(&w))) {
                Ok(Some(after)) => waiting.push(after),
                Ok(None) => {}
                Err(_) => tracing::error!("a store write panicked; it wrote nothing or all"),
            }
            n += 1;
            if n < ROUND {
                next = queue.try_recv().ok();
            }
        }
        if !waiting.is_empty() {
            let flushed = match db.flush() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "flushing the store failed");
                    false
                }
            };
            for after in waiting {
                after(flushed);
            }
        }
    }
}
