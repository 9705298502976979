//! Admission: how many invocations run at once, and how many may wait for
//! a slot and for how long.
//!
//! Two gates stand before every invocation: its function's (`concurrency`,
//! by default the host's per-function share) and the host's
//! (`max_in_flight`). Each is a semaphore with a bounded queue in front:
//!
//! - a slot is free: it is taken at once (`try_acquire`), so an uncontended
//!   invocation pays what it paid before queues existed;
//! - none is free and the queue has room: the invocation waits, at most the
//!   queue timeout, in arrival order (tokio's semaphore hands a returned
//!   permit to the longest waiter, so a newcomer cannot overtake it);
//! - none is free and the queue is full (a queue of 0 is always full), or
//!   the wait is over: refused, 429 `function_busy` at the function's gate,
//!   503 `overloaded` at the host's. An event delivery refused so is
//!   postponed without using up an attempt.
//!
//! Whether an invocation may queue is decided when it is admitted
//! ([`Invoker::admit`](super::Invoker::admit), synchronous: a full queue
//! is refused before anything is built for it); the wait itself happens
//! when the driver starts the invocation ([`Slot::ready`]), the same for
//! every kind of function, and a waiter dropped there (its client went
//! away) gives its place back. Time spent waiting does not count against
//! the function's timeout: its deadline starts when it has its slot.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::sync::Semaphore;

use crate::metrics::{QueueMetrics, Rejections};

/// A semaphore of `size` permits with a queue in front of it. Resizable:
/// a function's gate outlives its versions, and a new version may ask for
/// another concurrency.
pub(crate) struct Gate {
    permits: Semaphore,
    /// The permits the gate is meant to have. Only [`Gate::resize`] takes
    /// this lock (deploys); the request path never does.
    size: Mutex<u32>,
    /// Permits to take back as they are returned: after a resize below
    /// the permits in use, those still out are forgotten on their return
    /// instead of going back to the semaphore.
    owed: AtomicU32,
    /// Requests waiting now (bounded by the queue length of each caller,
    /// checked before it waits).
    waiting: AtomicU32,
    metrics: QueueMetrics,
}

impl Gate {
    pub(crate) fn new(size: u32, metrics: QueueMetrics) -> Arc<Gate> {
        Arc::new(Gate {
            permits: Semaphore::new(size as usize),
            size: Mutex::new(size),
            owed: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            metrics,
        })
    }

    /// The permits the gate is meant to have.
    pub(crate) fn size(&self) -> u32 {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A permit if one is free now: the fast path, one atomic operation
    /// and a reference count.
    #[inline]
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<Permit> {
        self.permits.try_acquire().ok()?.forget();
        Some(Permit { gate: self.clone() })
    }

    /// A place in the queue, if fewer than `max` requests wait now. The
    /// count is checked and taken in one step, so the queue never holds
    /// more than `max`.
    pub(crate) fn join_queue(self: &Arc<Self>, max: u32) -> Option<Place> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.depth.increment(1.0);
        self.metrics.waits.increment(1);
        Some(Place {
            gate: self.clone(),
            since: Instant::now(),
        })
    }

    /// Makes the gate `size` permits: more at once, fewer as soon as the
    /// permits in use above the new size are returned. Waiters keep their
    /// places.
    pub(crate) fn resize(&self, size: u32) {
        let mut current = self.size.lock().unwrap_or_else(|e| e.into_inner());
        if size > *current {
            // What is still owed from an earlier shrink is cancelled first.
            let wanted = size - *current;
            let mut cancelled = 0;
            let _ = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    cancelled = owed.min(wanted);
                    Some(owed - cancelled)
                });
            self.permits.add_permits((wanted - cancelled) as usize);
        } else if size < *current {
            self.owed.fetch_add(*current - size, Ordering::AcqRel);
            self.repay();
        }
        *current = size;
    }

    /// Forgets free permits for what is owed. Returned permits repay the
    /// rest (see [`Permit`]'s drop).
    fn repay(&self) {
        let owed = self.owed.load(Ordering::Acquire);
        if owed == 0 {
            return;
        }
        let forgotten = self.permits.forget_permits(owed as usize) as u32;
        // Returned permits may have repaid part of it meanwhile: what was
        // forgotten beyond the debt goes back.
        let mut excess = 0;
        let _ = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                let paid = owed.min(forgotten);
                excess = forgotten - paid;
                Some(owed - paid)
            });
        if excess > 0 {
            self.permits.add_permits(excess as usize);
        }
    }
}

/// A permit of a [`Gate`], returned when dropped.
pub(crate) struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        let gate = &self.gate;
        // One relaxed load on the common path; a shrink's debt is repaid
        // by not returning the permit.
        if gate.owed.load(Ordering::Relaxed) > 0
            && gate
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        {
            return;
        }
        gate.permits.add_permits(1);
    }
}

/// A place in a [`Gate`]'s queue, given back when dropped (the wait ended,
/// or the waiter was dropped: its client went away).
pub(crate) struct Place {
    gate: Arc<Gate>,
    since: Instant,
}

impl Place {
    /// Waits at most `timeout` for a permit. The place is given back
    /// either way; `Err` is how long it waited.
    pub(crate) async fn wait(self, timeout: Duration) -> Result<Permit, Duration> {
        let acquired = tokio::time::timeout(timeout, self.gate.permits.acquire()).await;
        let waited = self.since.elapsed();
        self.gate.metrics.waited.record(waited.as_secs_f64());
        match acquired {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(Permit {
                    gate: self.gate.clone(),
                })
            }
            // Closed: never (no gate closes its semaphore); as a timeout.
            Ok(Err(_)) | Err(_) => Err(waited),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.gate.waiting.fetch_sub(1, Ordering::AcqRel);
        self.gate.metrics.depth.decrement(1.0);
    }
}

/// One function's admission: its gate and the count of its refusals. One
/// per function name, kept across versions and config changes (see
/// `Registry::with` in `function/registry.rs`), so that a deploy does not
/// hand a busy function fresh slots while its old invocations still hold
/// the old ones.
pub(crate) struct Admission {
    pub(crate) gate: Arc<Gate>,
    pub(crate) rejected: Rejections,
    /// The function's rate-limit bucket (used when its limits set one),
    /// kept across versions with the rest.
    pub(crate) rate: super::rate::RateBucket,
}

impl Admission {
    /// The admission of function `name`, `concurrency` at once.
    pub(crate) fn new(name: &str, concurrency: u32) -> Admission {
        Admission {
            gate: Gate::new(concurrency, QueueMetrics::function(name)),
            rejected: Rejections::new(name),
            rate: super::rate::RateBucket::new(name),
        }
    }

    /// Invocations the function may run at once.
    pub(crate) fn concurrency(&self) -> u32 {
        self.gate.size()
    }

    /// Takes on the concurrency of `newer`, the admission built for a new
    /// version of the same function, which is dropped for this one.
    pub(crate) fn adopt(&self, newer: &Admission) {
        let size = newer.concurrency();
        if size != self.concurrency() {
            self.gate.resize(size);
        }
    }
}

/// The host's gate, and the bounds of its queue.
pub(crate) struct HostGate {
    pub(crate) gate: Arc<Gate>,
    /// Requests that may wait for a host-wide slot.
    pub(crate) queue: u32,
    /// How long one may wait.
    pub(crate) timeout: Duration,
    /// `wisp_invocations_rejected_total`: host-wide refusals.
    pub(crate) refused: Counter,
}

impl HostGate {
    pub(crate) fn new(slots: u32, queue: u32, timeout: Duration, refused: Counter) -> HostGate {
        HostGate {
            gate: Gate::new(slots, QueueMetrics::host()),
            queue,
            timeout,
            refused,
        }
    }
}

/// Why an invocation got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot taken, and no queue.
    Full {
        /// Slots of the gate.
        slots: u32,
    },
    /// Every slot taken, and the queue full.
    QueueFull {
        /// Slots of the gate.
        slots: u32,
        /// Length of the queue.
        queue: u32,
    },
    /// No slot came free within the queue timeout.
    TimedOut {
        /// Slots of the gate.
        slots: u32,
        /// The queue timeout, in milliseconds.
        timeout_ms: u64,
    },
}

/// An invocation slot: one of its function's and one of the host's, held
/// until the guest has finished (its response body included); or, when
/// none was free, a place in a queue to wait for them ([`Slot::ready`]).
pub(crate) struct Slot(SlotState);

enum SlotState {
    Held(Held),
    Queued(Box<Ticket>),
}

/// Both permits of a running invocation.
pub(crate) struct Held {
    _function: Permit,
    _host: Permit,
}

/// A queued invocation: what it holds and what it waits for.
struct Ticket {
    function: Arc<Admission>,
    host: Arc<HostGate>,
    stage: Stage,
    /// The function's queue timeout.
    timeout: Duration,
}

enum Stage {
    /// In the function's queue.
    Function(Place),
    /// The function's permit held, in the host's queue.
    Host(Permit, Place),
}

/// Takes a slot for an invocation of the function `function` admits, or a
/// place to wait for one, or says why not. `queue` and `timeout` are the
/// function's queue bounds (its active version's limits).
#[inline]
pub(crate) fn admit(
    function: &Arc<Admission>,
    host: &Arc<HostGate>,
    queue: u32,
    timeout: Duration,
) -> Result<Slot, (Refusal, Side)> {
    let Some(permit) = function.gate.try_enter() else {
        return queue_for_function(function, host, queue, timeout);
    };
    match host.gate.try_enter() {
        Some(host) => Ok(Slot(SlotState::Held(Held {
            _function: permit,
            _host: host,
        }))),
        None => queue_for_host(function, host, permit, timeout),
    }
}

/// Which gate refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The function's: 429.
    Function,
    /// The host's: 503.
    Host,
}

#[cold]
fn queue_for_function(
    function: &Arc<Admission>,
    host: &Arc<HostGate>,
    queue: u32,
    timeout: Duration,
) -> Result<Slot, (Refusal, Side)> {
    let slots = function.concurrency();
    let Some(place) = function.gate.join_queue(queue) else {
        let refusal = if queue == 0 {
            function.rejected.full.increment(1);
            Refusal::Full { slots }
        } else {
            function.rejected.queue_full.increment(1);
            Refusal::QueueFull { slots, queue }
        };
        return Err((refusal, Side::Function));
    };
    Ok(Slot(SlotState::Queued(Box::new(Ticket {
        function: function.clone(),
        host: host.clone(),
        stage: Stage::Function(place),
        timeout,
    }))))
}

#[cold]
fn queue_for_host(
    function: &Arc<Admission>,
    host: &Arc<HostGate>,
    permit: Permit,
    timeout: Duration,
) -> Result<Slot, (Refusal, Side)> {
    match join_host_queue(function, host) {
        Ok(place) => Ok(Slot(SlotState::Queued(Box::new(Ticket {
            function: function.clone(),
            host: host.clone(),
            stage: Stage::Host(permit, place),
            timeout,
        })))),
        Err(refusal) => Err((refusal, Side::Host)),
    }
}

/// A place in the host's queue, or the refusal (counted).
fn join_host_queue(function: &Admission, host: &HostGate) -> Result<Place, Refusal> {
    if let Some(place) = host.gate.join_queue(host.queue) {
        return Ok(place);
    }
    let slots = host.gate.size();
    host.refused.increment(1);
    Err(if host.queue == 0 {
        function.rejected.host_full.increment(1);
        Refusal::Full { slots }
    } else {
        function.rejected.host_queue_full.increment(1);
        Refusal::QueueFull {
            slots,
            queue: host.queue,
        }
    })
}

impl Slot {
    /// The slot's permits, once it has them: at once for a slot taken on
    /// admission; for a queued one after waiting in the function's queue,
    /// then (if the host has none free) in the host's, each at most its
    /// timeout. Also how long it waited. Dropping the future gives the
    /// places back.
    pub(crate) async fn ready(self) -> Result<(Held, Duration), (Refusal, Side)> {
        match self.0 {
            SlotState::Held(held) => Ok((held, Duration::ZERO)),
            SlotState::Queued(ticket) => {
                let start = Instant::now();
                let held = ticket.wait().await?;
                Ok((held, start.elapsed()))
            }
        }
    }
}

impl Ticket {
    async fn wait(self: Box<Self>) -> Result<Held, (Refusal, Side)> {
        let Ticket {
            function,
            host,
            stage,
            timeout,
        } = *self;
        let (permit, place) = match stage {
            Stage::Host(permit, place) => (permit, place),
            Stage::Function(place) => {
                let permit = match place.wait(timeout).await {
                    Ok(permit) => permit,
                    Err(_) => {
                        function.rejected.queue_timeout.increment(1);
                        let refusal = Refusal::TimedOut {
                            slots: function.concurrency(),
                            timeout_ms: timeout.as_millis() as u64,
                        };
                        return Err((refusal, Side::Function));
                    }
                };
                if let Some(host_permit) = host.gate.try_enter() {
                    return Ok(Held {
                        _function: permit,
                        _host: host_permit,
                    });
                }
                let place =
                    join_host_queue(&function, &host).map_err(|refusal| (refusal, Side::Host))?;
                (permit, place)
            }
        };
        match place.wait(host.timeout).await {
            Ok(host_permit) => Ok(Held {
                _function: permit,
                _host: host_permit,
            }),
            Err(_) => {
                host.refused.increment(1);
                function.rejected.host_queue_timeout.increment(1);
                let refusal = Refusal::TimedOut {
                    slots: host.gate.size(),
                    timeout_ms: host.timeout.as_millis() as u64,
                };
                Err((refusal, Side::Host))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(size: u32) -> Arc<Gate> {
        Gate::new(size, QueueMetrics::function("test"))
    }

    fn available(g: &Gate) -> usize {
        g.permits.available_permits()
    }

    fn host(slots: u32, queue: u32, timeout_ms: u64) -> Arc<HostGate> {
        Arc::new(HostGate::new(
            slots,
            queue,
            Duration::from_millis(timeout_ms),
            metrics::counter!("test_refused"),
        ))
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn permits_are_taken_at_once_until_none_is_free() {
        let g = gate(2);
        let a = g.try_enter().expect("free");
        let b = g.try_enter().expect("free");
        assert!(g.try_enter().is_none());
        drop(a);
        let c = g.try_enter().expect("returned");
        drop((b, c));
        assert_eq!(available(&g), 2);
    }

    #[test]
    fn the_queue_holds_at_most_its_length_and_places_come_back() {
        let g = gate(1);
        assert!(g.join_queue(0).is_none(), "a queue of 0 is always full");
        let a = g.join_queue(2).expect("room");
        let b = g.join_queue(2).expect("room");
        assert!(g.join_queue(2).is_none());
        assert_eq!(g.waiting(), 2);
        drop(a);
        assert_eq!(g.waiting(), 1);
        let c = g.join_queue(2).expect("a place was given back");
        drop((b, c));
        assert_eq!(g.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_returned_permit_before_a_newcomer() {
        let g = gate(1);
        let held = g.try_enter().unwrap();
        let place = g.join_queue(1).unwrap();
        let waiter = tokio::spawn(async move { place.wait(LONG).await.is_ok() });
        // Let the waiter reach the semaphore's queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(
            g.try_enter().is_none(),
            "the permit went to the waiter, not to the newcomer"
        );
        assert!(waiter.await.unwrap());
        assert_eq!(g.waiting(), 0);
        assert_eq!(available(&g), 1);
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_timeout_and_gives_its_place_back() {
        let g = gate(1);
        let _held = g.try_enter().unwrap();
        let place = g.join_queue(1).unwrap();
        let start = Instant::now();
        let waited = place.wait(Duration::from_millis(50)).await.err().unwrap();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(g.waiting(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_gives_its_place_back() {
        let g = gate(1);
        let _held = g.try_enter().unwrap();
        let place = g.join_queue(1).unwrap();
        let waiter = tokio::spawn(place.wait(LONG));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.waiting(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(g.waiting(), 0);
        assert!(g.join_queue(1).is_some());
    }

    #[test]
    fn growing_adds_permits_at_once() {
        let g = gate(1);
        let _a = g.try_enter().unwrap();
        g.resize(3);
        assert_eq!(g.size(), 3);
        let _b = g.try_enter().unwrap();
        let _c = g.try_enter().unwrap();
        assert!(g.try_enter().is_none());
    }

    #[test]
    fn shrinking_below_the_permits_in_use_takes_them_back_as_they_return() {
        let g = gate(4);
        let held: Vec<_> = (0..3).map(|_| g.try_enter().unwrap()).collect();
        g.resize(1);
        assert_eq!(g.size(), 1);
        // The free permit went at once; two of the three in use are owed.
        assert_eq!(available(&g), 0);
        let mut held = held.into_iter();
        drop(held.next());
        assert!(g.try_enter().is_none(), "still above the new size");
        drop(held.next());
        assert!(g.try_enter().is_none(), "at the new size");
        drop(held.next());
        let one = g.try_enter().expect("below the new size");
        assert!(g.try_enter().is_none());
        drop(one);
        assert_eq!(available(&g), 1);
    }

    #[test]
    fn growing_again_cancels_what_a_shrink_still_owes() {
        let g = gate(3);
        let held: Vec<_> = (0..3).map(|_| g.try_enter().unwrap()).collect();
        g.resize(1);
        g.resize(2);
        drop(held);
        assert_eq!(available(&g), 2);
        g.resize(2);
        assert_eq!(available(&g), 2);
    }

    #[test]
    fn an_uncontended_admission_holds_both_permits_until_dropped() {
        let f = Arc::new(Admission::new("test", 2));
        let h = host(1, 0, 1000);
        let slot = admit(&f, &h, 0, LONG).ok().unwrap();
        assert!(matches!(slot.0, SlotState::Held(_)));
        assert_eq!(available(&f.gate), 1);
        assert_eq!(available(&h.gate), 0);
        drop(slot);
        assert_eq!(available(&f.gate), 2);
        assert_eq!(available(&h.gate), 1);
    }

    #[test]
    fn a_full_function_without_a_queue_is_refused_at_once() {
        let f = Arc::new(Admission::new("test", 1));
        let h = host(10, 0, 1000);
        let _running = admit(&f, &h, 0, LONG).ok().unwrap();
        let (refusal, side) = admit(&f, &h, 0, LONG).err().unwrap();
        assert_eq!(refusal, Refusal::Full { slots: 1 });
        assert_eq!(side, Side::Function);
    }

    #[tokio::test]
    async fn queued_admissions_wait_and_the_one_past_the_queue_is_refused() {
        let f = Arc::new(Admission::new("test", 1));
        let h = host(10, 0, 1000);
        let running = admit(&f, &h, 2, LONG).ok().unwrap();
        let first = admit(&f, &h, 2, LONG).ok().unwrap();
        let second = admit(&f, &h, 2, LONG).ok().unwrap();
        let (refusal, side) = admit(&f, &h, 2, LONG).err().unwrap();
        assert_eq!(refusal, Refusal::QueueFull { slots: 1, queue: 2 });
        assert_eq!(side, Side::Function);
        assert_eq!(f.gate.waiting(), 2);
        let first = tokio::spawn(first.ready());
        let second = tokio::spawn(second.ready());
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(running);
        let (held, waited) = first.await.unwrap().ok().unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        drop(held);
        let (held, _) = second.await.unwrap().ok().unwrap();
        drop(held);
        assert_eq!(f.gate.waiting(), 0);
        assert_eq!(available(&f.gate), 1);
        assert_eq!(available(&h.gate), 10);
    }

    #[tokio::test]
    async fn a_queued_admission_is_refused_after_its_timeout() {
        let f = Arc::new(Admission::new("test", 1));
        let h = host(10, 0, 1000);
        let _running = admit(&f, &h, 1, LONG).ok().unwrap();
        let queued = admit(&f, &h, 1, Duration::from_millis(40)).ok().unwrap();
        let (refusal, side) = queued.ready().await.err().unwrap();
        assert_eq!(
            refusal,
            Refusal::TimedOut {
                slots: 1,
                timeout_ms: 40
            }
        );
        assert_eq!(side, Side::Function);
        assert_eq!(f.gate.waiting(), 0);
    }

    #[tokio::test]
    async fn the_host_gate_queues_and_refuses_like_a_function_gate() {
        let f = Arc::new(Admission::new("test", 10));
        let g = Arc::new(Admission::new("other", 10));
        // No host queue: 503 at once, and the function's permit goes back.
        let h = host(1, 0, 1000);
        let running = admit(&g, &h, 0, LONG).ok().unwrap();
        let (refusal, side) = admit(&f, &h, 0, LONG).err().unwrap();
        assert_eq!((refusal, side), (Refusal::Full { slots: 1 }, Side::Host));
        assert_eq!(available(&f.gate), 10);
        drop(running);
        // A host queue of one, waited on for 40 ms.
        let h = host(1, 1, 40);
        let running = admit(&g, &h, 0, LONG).ok().unwrap();
        let queued = admit(&f, &h, 0, LONG).ok().unwrap();
        let (refusal, side) = admit(&f, &h, 0, LONG).err().unwrap();
        assert_eq!(
            (refusal, side),
            (Refusal::QueueFull { slots: 1, queue: 1 }, Side::Host)
        );
        let (refusal, side) = queued.ready().await.err().unwrap();
        assert_eq!(
            (refusal, side),
            (
                Refusal::TimedOut {
                    slots: 1,
                    timeout_ms: 40
                },
                Side::Host
            )
        );
        // Given a host slot in time, the queued one runs.
        let queued = admit(&f, &h, 0, LONG).ok().unwrap();
        let waiting = tokio::spawn(queued.ready());
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(running);
        let (held, _) = waiting.await.unwrap().ok().unwrap();
        assert_eq!(available(&f.gate), 9);
        drop(held);
        assert_eq!(available(&f.gate), 10);
        assert_eq!(available(&h.gate), 1);
    }

    #[tokio::test]
    async fn a_function_waiter_then_waits_for_the_host() {
        let f = Arc::new(Admission::new("test", 1));
        let g = Arc::new(Admission::new("other", 10));
        let h = host(1, 1, 1000);
        let running = admit(&f, &h, 1, LONG).ok().unwrap();
        let queued = admit(&f, &h, 1, LONG).ok().unwrap();
        let waiting = tokio::spawn(queued.ready());
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The function's slot comes free, but another function takes the
        // host's only slot first: the waiter moves to the host's queue.
        drop(running);
        let other = admit(&g, &h, 0, LONG).ok().unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(h.gate.waiting(), 1, "in the host's queue now");
        drop(other);
        let (held, _) = waiting.await.unwrap().ok().unwrap();
        drop(held);
        assert_eq!(h.gate.waiting(), 0);
        assert_eq!(available(&h.gate), 1);
        assert_eq!(available(&f.gate), 1);
    }

    #[test]
    fn a_new_version_s_concurrency_is_adopted_by_the_kept_admission() {
        let kept = Admission::new("test", 2);
        kept.adopt(&Admission::new("test", 5));
        assert_eq!(kept.concurrency(), 5);
        assert_eq!(available(&kept.gate), 5);
    }
}
