//! The smallest executor that can run an `async` handler.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future to completion on the current thread and returns its output.
///
/// In a WASI 0.2 component (and natively, in tests) the future is polled in
/// a loop with a waker that does nothing. That is all such a guest needs:
/// every WASI call it can make (through std or this crate) blocks until
/// done, so a future is only ever pending because it yields on purpose, and
/// polling again makes progress. A future that waits for a wake-up that
/// never comes (an `async` channel with no sender, say) spins until the
/// host's deadline stops the invocation.
///
/// In a WASI 0.3 component (wisp-sdk-p3) it is the component model's own
/// `block_on` (wit-bindgen's): the future may await WASI 0.3 calls (the
/// `wasip3` crate's clocks, streams, outbound HTTP), and the instance waits
/// for them in the host.
///
/// ```
/// let n = wisp_sdk::block_on(async { 40 + 2 });
/// assert_eq!(n, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    #[cfg(all(wisp_p3, target_arch = "wasm32"))]
    return wasip3::wit_bindgen::block_on(future);
    #[cfg(not(all(wisp_p3, target_arch = "wasm32")))]
    spin(future)
}

/// Polls `future` until it is ready.
#[cfg_attr(all(wisp_p3, target_arch = "wasm32"), allow(dead_code))]
fn spin<F: Future>(future: F) -> F::Output {
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
