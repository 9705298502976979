//! What bounds one invocation while it runs: its memory (every linear
//! memory and table together), its deadline (checked on every epoch tick,
//! so a tight loop is cut too) and its request body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::header;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use wasmtime::{ResourceLimiter, UpdateDeadline};

use super::task::Slices;

/// Caps what an instance's linear memories and tables take together (a
/// component is several core instances, each with its own memories and
/// tables: a cap per memory would let it take a multiple of its limit); a
/// breach traps with [`MemoryLimitExceeded`] so the gateway can answer with a
/// clear error. wasmtime asks before creating a memory or table too, so the
/// initial sizes count.
pub(crate) struct MemoryLimiter {
    max_memory: usize,
    /// Bytes of every memory and table of this store so far.
    used: usize,
}

impl MemoryLimiter {
    /// A limiter capping memories and tables at `max_memory` bytes in all.
    pub(crate) fn new(max_memory: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_memory,
            used: 0,
        }
    }

    /// Admits growing one memory or table from `current` to `desired`
    /// bytes, counting it against the whole store.
    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = (self.used - current.min(self.used)).saturating_add(desired);
        if total > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                desired: total,
            }
            .into());
        }
        self.used = total;
        Ok(true)
    }
}

/// Bytes one table element takes (a function reference is a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Elements one table may have: what the pooling allocator's slots hold
/// (engine.rs), so the on-demand allocator has the same bound.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }
}

/// The trap raised when a guest grows memory past its cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit of {limit} bytes exceeded (the guest's memories and tables would take {desired} \
     bytes)"
)]
pub struct MemoryLimitExceeded {
    limit: usize,
    desired: usize,
}

/// The trap raised when the wall-clock deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// What a store does on every epoch tick: past the deadline, trap;
/// otherwise count the tick (a guest that runs long moves off the serving
/// thread: [`Lane`](super::task::Lane)) and yield to the executor, so a
/// guest in a tight loop neither overruns its deadline nor starves other
/// requests on this worker.
#[inline]
pub(crate) fn on_epoch_tick(
    deadline: Instant,
    slices: &mut Slices,
) -> wasmtime::Result<UpdateDeadline> {
    slices.tick();
    if Instant::now() >= deadline {
        Err(DeadlineExceeded.into())
    } else {
        Ok(UpdateDeadline::Yield(1))
    }
}

/// The request's `Content-Length`, if it has a valid one.
pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request body as the guest reads it, cut off (with an error the guest
/// sees as a failed read) once it passes the function's body limit. The flag
/// lets the gateway answer 413 instead of whatever the guest made of it.
pub(crate) struct CappedBody {
    inner: Body,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl CappedBody {
    /// `inner`, cut at `limit` bytes; `exceeded` is set when it was.
    pub(crate) fn new(inner: Body, limit: u64, exceeded: Arc<AtomicBool>) -> CappedBody {
        CappedBody {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.limit)),
                        )));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(
                wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_counts_every_memory_and_table_of_the_store() {
        let mut l = MemoryLimiter::new(10 << 20);
        // Two memories of 4 MiB fit; a third grows past the cap together.
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        assert!(l.memory_growing(0, 4 << 20, None).unwrap());
        let e = l.memory_growing(0, 4 << 20, None).unwrap_err();
        let e = e.downcast::<MemoryLimitExceeded>().unwrap();
        assert_eq!((e.limit, e.desired), (10 << 20, 12 << 20));
        // Growing one of them counts only the difference.
        assert!(l.memory_growing(4 << 20, 5 << 20, None).unwrap());
        // Tables count their elements' bytes against the same cap.
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(l.memory_growing(5 << 20, 11 << 19, None).unwrap());
        assert!(l.table_growing(1000, MAX_TABLE_ELEMENTS, None).is_err());
        // And a table never grows past what a pooling slot holds.
        let mut roomy = MemoryLimiter::new(1 << 30);
        assert!(
            !roomy
                .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .unwrap()
        );
    }
}
