//! Where an invocation's task runs. It may outlive its response (a guest
//! still running after the body ended, its teardown and log line), so a
//! serving thread tracks the tasks started on it and lets them finish
//! before it stops. Kept here, not in the gateway, so that the invocation
//! layer needs nothing of the gateway; the gateway registers each serving
//! thread's tracker.

use std::cell::RefCell;
use std::future::Future;

use tokio_util::task::TaskTracker;

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
