//! Where an invocation's task runs. It may outlive its response (a guest
//! still running after the body ended, its teardown and log line), so a
//! serving thread tracks the tasks started on it and lets them finish
//! before it stops. A guest that runs long moves to threads of its own
//! ([`Lane`]), so it does not hold up the requests of the serving thread it
//! started on. Kept here, not in the gateway, so that the invocation
//! layer needs nothing of the gateway; the gateway registers each serving
//! thread's tracker.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

thread_local! {
    /// The tracker of this serving thread's tasks; none on other threads.
    static TRACKER: RefCell<Option<TaskTracker>> = const { RefCell::new(None) };
}

/// Makes `tracker` track the tasks [`spawn`] starts on this thread (called
/// once by each serving thread as it starts).
pub(crate) fn track_on_this_thread(tracker: TaskTracker) {
    TRACKER.with(|t| *t.borrow_mut() = Some(tracker));
}

/// Spawns a task that the host must let finish before it stops (an
/// invocation still running after its response, its teardown and log
/// line): on a serving thread, tracked by it; elsewhere a plain task.
pub(crate) fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TRACKER.with(|t| match &*t.borrow() {
        Some(tracker) => tracker.spawn(task),
        None => tokio::spawn(task),
    })
}

/// Epoch ticks an invocation's guest runs through on a serving thread
/// before it moves to the long-running lane: two or three ticks, 10–30 ms of
/// running (a guest that waits on I/O sees a tick each time it resumes
/// after one passed, so one wait is not enough).
pub(crate) const LONG_AFTER_TICKS: u32 = 3;

/// An invocation's count of the epoch ticks its guest has run through, and
/// the mark [`Lane`] reads once there were [`LONG_AFTER_TICKS`].
#[derive(Default)]
pub(crate) struct Slices {
    seen: u32,
    long: LongRunning,
}

impl Slices {
    /// One more tick seen by the guest.
    #[inline]
    pub(crate) fn tick(&mut self) {
        self.seen = self.seen.saturating_add(1);
        if self.seen == LONG_AFTER_TICKS {
            self.long.0.store(true, Ordering::Relaxed);
        }
    }

    /// The mark, for the invocation's [`Lane`].
    pub(crate) fn long_running(&self) -> LongRunning {
        self.long.clone()
    }
}

/// Set once an invocation's guest has run through [`LONG_AFTER_TICKS`]
/// epoch ticks.
#[derive(Clone, Default)]
pub(crate) struct LongRunning(Arc<AtomicBool>);

impl LongRunning {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An invocation's future, run where it was first polled (a serving
/// thread, the event dispatcher) until its guest has run long; then moved
/// to the long-running lane, a pool of threads of its own, for the rest. A guest in a loop yields only on epoch ticks: on a serving thread
/// every other request there would wait for its slices (a dozen stuck
/// guests held `hello` up for a second), and the connections' I/O with
/// them. Moved, it competes with the other long ones, and the kernel
/// prefers the serving threads. Dropping the lane cancels the invocation
/// wherever it runs.
pub(crate) struct Lane<T> {
    /// The invocation, while it runs here.
    here: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    /// The invocation's task on the lane, once it moved.
    moved: Option<AbortOnDropHandle<T>>,
    long: LongRunning,
    /// Set once the invocation has ended (torn down), wherever it ran.
    ended: Ended,
}

impl<T: Send + 'static> Lane<T> {
    /// `invocation`, watched through `long`.
    pub(crate) fn new(
        invocation: impl Future<Output = T> + Send + 'static,
        long: LongRunning,
    ) -> Lane<T> {
        let ended = Ended::default();
        let on_end = ended.clone();
        Lane {
            here: Some(Box::pin(async move {
                let output = invocation.await;
                on_end.set();
                output
            })),
            moved: None,
            long,
            ended,
        }
    }

    /// What a response waits for before it ends ([`InvocationEnd`]).
    pub(crate) fn end(&self) -> InvocationEnd {
        InvocationEnd {
            ended: self.ended.clone(),
        }
    }
}

/// Whether an invocation has ended, and a waker to call when it does.
#[derive(Clone, Default)]
struct Ended(Arc<EndedInner>);

#[derive(Default)]
struct EndedInner {
    done: AtomicBool,
    waker: AtomicWaker,
}

impl Ended {
    fn set(&self) {
        self.0.done.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        if self.0.done.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The end of an invocation (instance dropped, log written, slot freed),
/// as its response sees it: the response's last bytes wait for it, so a
/// client that has its whole answer finds the slot free and the log
/// written. Usually it has ended by then: an invocation that does not
/// yield after its response is torn down before its serving thread sends
/// anything. One that yields (an epoch tick), or runs on the long-running
/// lane, may not have.
#[derive(Clone)]
pub(crate) struct InvocationEnd {
    ended: Ended,
}

impl InvocationEnd {
    /// Whether the invocation has not ended yet.
    pub(crate) fn must_wait(&self) -> bool {
        !self.ended.0.done.load(Ordering::Acquire)
    }

    /// Ready once the invocation has ended.
    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.ended.poll(cx)
    }
}

impl<T: Send + 'static> Future for Lane<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        if let Some(invocation) = &mut this.here {
            let polled = invocation.as_mut().poll(cx);
            if polled.is_ready() || !this.long.is_set() {
                return polled;
            }
            let Some(lane) = long_lane() else {
                return Poll::Pending;
            };
            // Boxed, the future moves without moving what it pins; its
            // next poll, on the lane, registers the lane's wakers.
            let invocation = this.here.take().expect("polled above");
            this.moved = Some(AbortOnDropHandle::new(lane.spawn(invocation)));
        }
        let handle = this.moved.as_mut().expect("here or moved");
        match Pin::new(handle).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(output)) => Poll::Ready(output),
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only dropping the lane aborts the task, and the lane's
            // runtime lives as long as the process.
            Poll::Ready(Err(e)) => unreachable!("the long-running lane's task ended: {e}"),
        }
    }
}

/// The long-running lane's runtime, started on first use: as many threads
/// as CPUs. At the same priority as the serving threads: the kernel wakes a
/// serving thread with a request to answer promptly all the same (a dozen
/// stuck guests left `hello` answered within ~10 ms either way), and a
/// lower one starved long invocations under load past their deadlines.
/// `None` (and a warning, once) if it cannot be started: long invocations
/// then stay where they are.
fn long_lane() -> Option<&'static tokio::runtime::Handle> {
    static LANE: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    LANE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wisp-long")
            .enable_all()
            .build();
        match built {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::warn!(
                    "cannot start the threads for long-running invocations ({e}): they stay on \
                     the serving threads"
                );
                None
            }
        }
    })
    .as_ref()
    .map(|runtime| runtime.handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(String::from)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_invocation_stays_where_it_started_until_it_runs_long() {
        let long = LongRunning::default();
        let mark = long.clone();
        let (before, after) = Lane::new(
            async move {
                tokio::task::yield_now().await;
                let before = thread_name();
                mark.0.store(true, Ordering::Relaxed);
                tokio::task::yield_now().await;
                (before, thread_name())
            },
            long,
        )
        .await;
        assert_eq!(before, thread_name());
        assert_eq!(after.as_deref(), Some("wisp-long"));
    }

    #[test]
    fn the_guest_is_long_running_after_its_third_tick() {
        let mut slices = Slices::default();
        let long = slices.long_running();
        for _ in 1..LONG_AFTER_TICKS {
            slices.tick();
            assert!(!long.is_set());
        }
        slices.tick();
        assert!(long.is_set());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_lane_cancels_the_moved_invocation() {
        /// Says when the invocation's future is dropped.
        struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.take().unwrap().send(());
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (moved_tx, moved_rx) = tokio::sync::oneshot::channel();
        let long = LongRunning::default();
        let mark = long.clone();
        let lane = Lane::new(
            async move {
                let _dropped = Dropped(Some(tx));
                mark.0.store(true, Ordering::Relaxed);
                tokio::task::yield_now().await;
                let _ = moved_tx.send(thread_name());
                std::future::pending::<()>().await
            },
            long,
        );
        let running = tokio::spawn(lane);
        assert_eq!(moved_rx.await.unwrap().as_deref(), Some("wisp-long"));
        running.abort();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the moved invocation is dropped")
            .unwrap();
    }
}
