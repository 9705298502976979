//! The smallest executor that can run an `async` handler.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future to completion on the current thread and returns its output.
///
/// The future is polled in a loop with a waker that does nothing. That is all
/// a guest needs today: every WASI call it can make (through std or this
/// crate) blocks until done, so a future is only ever pending because it
/// yields on purpose, and polling again makes progress. A future that waits
/// for a wake-up that never comes (an `async` channel with no sender, say)
/// spins until the host's deadline stops the invocation.
///
/// ```
/// let n = wisp_sdk::block_on(async { 40 + 2 });
/// assert_eq!(n, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending `n` times before it is ready, without ever waking anyone.
    struct YieldTimes(u32);

    impl Future for YieldTimes {
        type Output = &'static str;
        fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.0 == 0 {
                Poll::Ready("done")
            } else {
                self.0 -= 1;
                Poll::Pending
            }
        }
    }

    #[test]
    fn polls_again_until_ready() {
        assert_eq!(block_on(YieldTimes(3)), "done");
        assert_eq!(block_on(async { YieldTimes(2).await.len() }), 4);
    }
}
