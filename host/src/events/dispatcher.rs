//! The dispatcher: finds due deliveries in the store, claims the ones that
//! have a free slot (host-wide and within their subscription's
//! concurrency) and starts them on the serving threads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::plane::EventsCtx;
use super::plane::EventsInner;
use super::plane::{QUEUE_DEPTH, STORED_BYTES, now_ms};
use super::store::{DeliveryKey, DueKey, SubKey};
use super::{INVOKE_TOPIC_PREFIX, SCHEDULE_TOPIC_PREFIX, Subscription};
use crate::store::StoreError;

/// Due-index entries a dispatcher pass looks at from the front (the
/// earliest due), and then further on, from where the last pass stopped
/// (see [`pass`]).
const HEAD: usize = 64;
const SWEEP: usize = 256;
/// How soon a pass that stopped part-way through the due index is
/// followed by the next, when nothing wakes the dispatcher sooner.
const SWEEP_AGAIN: Duration = Duration::from_millis(10);
/// While the head of the due index leaves deliveries waiting for a slot,
/// the shortest time between two reads past it (see [`pass`]).
const FURTHER_EVERY: Duration = Duration::from_millis(10);
/// Longest the dispatcher sleeps without looking at the store again.
const IDLE: Duration = Duration::from_secs(1);
/// How often schedules are checked (the resolution of ticks).
const SCHEDULE_EVERY: Duration = Duration::from_millis(250);
/// How often finished jobs past their retention are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How often finished events past their retention are removed: often, in
/// small steps, so that under load the sweep is a steady trickle beside
/// publishes rather than a burst that holds them up.
const EVENT_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a due delivery runs under.
#[derive(Debug, Clone)]
pub(super) enum Delivering {
    /// Its subscription: stored, or the implicit one of asynchronous
    /// invocations and schedule ticks (host defaults) or of a job.
    Under(Subscription),
    /// Its subscription or job is gone, or the job was cancelled: the
    /// delivery is cancelled when it comes due.
    Cancelled,
    /// Not yet: its job is still being created; left alone until it runs.
    NotYet,
}

/// What the delivery `key` runs under.
fn delivering(host: &EventsCtx, key: &DeliveryKey) -> Result<Delivering, StoreError> {
    let topic = key.topic.as_str();
    if let Some(job) = super::job::job_of_topic(topic) {
        return host.job_subscription(job, topic);
    }
    if topic.starts_with(INVOKE_TOPIC_PREFIX) || topic.starts_with(SCHEDULE_TOPIC_PREFIX) {
        let c = &host.inner.config;
        return Ok(Delivering::Under(Subscription {
            topic: topic.to_string(),
            function: key.function.clone(),
            path: "/".into(),
            concurrency: c.event_concurrency,
            retry: c.event_retry,
            created_at_ms: 0,
        }));
    }
    Ok(
        match host.event_store().subscription(topic, &key.function)? {
            Some(sub) => Delivering::Under(sub),
            None => Delivering::Cancelled,
        },
    )
}

/// Deliveries running per subscription.
type Busy = Arc<StdMutex<HashMap<SubKey, u32>>>;

/// The dispatcher: passes over the due index (see [`pass`]) whenever woken
/// or a timer runs out; on the way, fires schedules, starts the sweeps and
/// updates the gauges. Runs on the caller's runtime of [`Host::serve`]
/// (not a serving thread); the deliveries it starts run on the serving
/// threads.
pub(super) async fn dispatch(
    host: Weak<EventsInner>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(max) = host.upgrade().map(|h| h.config.event_max_in_flight) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(max as usize));
    let busy: Busy = Arc::default();
    let mut tasks = JoinSet::new();
    let mut last_sweep = std::time::Instant::now();
    let mut last_event_sweep = std::time::Instant::now();
    let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_schedules = std::time::Instant::now() - SCHEDULE_EVERY;
    let depth_gauge = metrics::gauge!(QUEUE_DEPTH);
    let bytes_gauge = metrics::gauge!(STORED_BYTES);
    let mut further = Further::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(inner) = host.upgrade() else { break };
        let host = EventsCtx { inner };
        let pass = pass(&host, &slots, &busy, &mut tasks, &wake, &mut further).await;
        let wait = match pass {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "event dispatcher: store failure");
                IDLE
            }
        }
        .min(SCHEDULE_EVERY);
        if last_schedules.elapsed() >= SCHEDULE_EVERY {
            last_schedules = std::time::Instant::now();
            if let Err(e) = host.fire_schedules().await {
                tracing::error!(error = %e, "firing schedules failed");
            }
        }
        if last_event_sweep.elapsed() >= EVENT_SWEEP_EVERY
            && sweeping.as_ref().is_none_or(|t| t.is_finished())
        {
            last_event_sweep = std::time::Instant::now();
            let store = host.event_store().clone();
            let dlq_retention = host.inner.config.event_dead_letter_retention;
            sweeping = Some(tokio::task::spawn_blocking(move || {
                // Dead letters first: the events they release are then
                // removed by the same sweep.
                super::sweeps::expire_dead_letters(&store, dlq_retention);
                super::sweeps::sweep_events(&store);
            }));
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            if let Err(e) = host.sweep_jobs().await {
                tracing::warn!(error = %e, "removing finished jobs failed");
            }
        }
        depth_gauge.set(host.event_store().queue_depth_total() as f64);
        bytes_gauge.set(host.event_store().event_bytes(None) as f64);
        drop(host);
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    // Shutdown: let the running deliveries finish and be recorded (the
    // caller bounds the wait by the grace period and aborts the rest).
    while tasks.join_next().await.is_some() {}
}

/// Where passes read the due index past its head (see [`pass`]).
#[derive(Default)]
struct Further {
    /// The entry the next read starts after.
    from: Option<DueKey>,
    /// When it was last read while the head left deliveries waiting for a
    /// slot.
    read_at: Option<std::time::Instant>,
}

/// A due delivery picked in a pass, with its slot, before it is claimed.
struct Picked {
    due_entry: DueKey,
    sub_key: SubKey,
    /// `None`: cancelled when it runs (see [`Delivering::Cancelled`]).
    sub: Option<Subscription>,
    permit: OwnedSemaphorePermit,
}

/// The due entries a pass picks: a free slot each, within the
/// subscriptions' concurrency.
struct Picker<'a> {
    host: &'a EventsCtx,
    slots: &'a Arc<Semaphore>,
    busy: &'a Busy,
    subs: HashMap<SubKey, Delivering>,
    picked: Vec<Picked>,
    /// Something due was left for want of a slot (or a job not started).
    saturated: bool,
    /// No slot is left at all.
    full: bool,
}

impl Picker<'_> {
    /// Considers due entries until they run out or no slot is left; how
    /// many were read, and the last.
    fn consider_all(
        &mut self,
        entries: impl Iterator<Item = Result<(DueKey, DeliveryKey), StoreError>>,
    ) -> Result<(usize, Option<DueKey>), StoreError> {
        let (mut n, mut last) = (0, None);
        for entry in entries {
            let (due_entry, dkey) = entry?;
            n += 1;
            last = Some(due_entry);
            self.consider(due_entry, &dkey)?;
            if self.full {
                break;
            }
        }
        Ok((n, last))
    }

    /// Picks this due entry if it can run now.
    fn consider(&mut self, due_entry: DueKey, dkey: &DeliveryKey) -> Result<(), StoreError> {
        let sub_key = dkey.subscription();
        let delivering = match self.subs.get(&sub_key) {
            Some(d) => d.clone(),
            None => {
                let d = delivering(self.host, dkey)?;
                self.subs.insert(sub_key.clone(), d.clone());
                d
            }
        };
        let sub = match delivering {
            Delivering::Under(sub) => Some(sub),
            Delivering::Cancelled => None,
            Delivering::NotYet => {
                // A job being created: left alone until it is running.
                self.saturated = true;
                return Ok(());
            }
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.saturated = true;
            self.full = true;
            return Ok(());
        };
        let cap = sub.as_ref().map_or(u32::MAX, |s| s.concurrency);
        {
            let mut b = self.busy.lock().expect("not poisoned");
            let n = b.entry(sub_key.clone()).or_default();
            if *n >= cap {
                self.saturated = true;
                return Ok(());
            }
            *n += 1;
        }
        self.picked.push(Picked {
            due_entry,
            sub_key,
            sub,
            permit,
        });
        Ok(())
    }
}

/// One pass: picks what is due and has a free slot, claims it (in
/// memory) and starts it; returns how long to sleep before the next
/// pass (unless woken).
///
/// A pass reads a bounded part of the due index, so that a long backlog
/// of a subscription at its concurrency limit is not read again on every
/// pass (passes follow every finished delivery): the `HEAD` earliest
/// entries, then `SWEEP` entries from where the previous pass stopped
/// (`further`), wrapping around at the end of what is due. Once the head
/// alone leaves deliveries waiting for a slot, reading on (which then only
/// finds other subscriptions' deliveries behind the backlog) happens at
/// most every `FURTHER_EVERY`: such deliveries are reached within a few of
/// those.
async fn pass(
    host: &EventsCtx,
    slots: &Arc<Semaphore>,
    busy: &Busy,
    tasks: &mut JoinSet<()>,
    wake: &Arc<Notify>,
    further: &mut Further,
) -> Result<Duration, StoreError> {
    let store = host.event_store();
    let now = now_ms();
    let mut p = Picker {
        host,
        slots,
        busy,
        subs: HashMap::new(),
        picked: Vec::new(),
        saturated: false,
        full: false,
    };
    let (head_len, head_end) = p.consider_all(store.due_iter(now, None).take(HEAD))?;
    let mut part_way = false;
    let mut put_off = false;
    if let (false, true, Some(head_end)) = (p.full, head_len == HEAD, head_end) {
        let waiting = p.saturated;
        if waiting && further.read_at.is_some_and(|t| t.elapsed() < FURTHER_EVERY) {
            put_off = true;
        } else {
            further.read_at = waiting.then(std::time::Instant::now);
            let from = match further.from.take() {
                Some(at) if at > head_end => at,
                _ => head_end,
            };
            let (n, last) = p.consider_all(store.due_iter(now, Some(&from)).take(SWEEP))?;
            // Stopped for want of slots: the next read starts from here
            // again. Read SWEEP entries: it goes on from the last. Reached
            // the end: the next starts over.
            if p.full {
                further.from = Some(from);
            } else if n == SWEEP {
                further.from = last;
                part_way = true;
            }
        }
    }
    let Picker {
        picked,
        saturated,
        full,
        ..
    } = p;
    if !picked.is_empty() {
        let entries: Vec<_> = picked.iter().map(|p| p.due_entry).collect();
        let claimed = match store.claim(&entries, now) {
            Ok(c) => c,
            Err(e) => {
                for p in &picked {
                    release(busy, &p.sub_key);
                }
                return Err(e);
            }
        };
        for (p, claimed) in picked.into_iter().zip(claimed) {
            let Some((key, rec)) = claimed else {
                release(busy, &p.sub_key);
                continue;
            };
            let host = host.clone();
            let busy = busy.clone();
            let wake = wake.clone();
            // On a serving thread while the host serves (its runtime runs
            // the instance without cross-thread hand-offs), else here.
            let runtime = host.inner.serving.next();
            let delivery = async move {
                let (finish, result) = super::delivery::run_delivery(&host, key, rec, p.sub).await;
                // Queued before the slot is given back, so that the
                // dispatcher's next claim does not go ahead of it.
                let recorded = host.record_finish(finish, result);
                // The handler is done: its slot is free for the next
                // delivery while this outcome waits for its transaction.
                release(&busy, &p.sub_key);
                drop(p.permit);
                wake.notify_one();
                let _ = recorded.await;
            };
            match runtime {
                Some(r) => tasks.spawn_on(r.tracker.track_future(delivery), &r.handle),
                None => tasks.spawn(delivery),
            };
        }
    }
    if full {
        // Woken when a delivery finishes; the timer is a backstop.
        return Ok(IDLE);
    }
    if part_way {
        return Ok(SWEEP_AGAIN);
    }
    if put_off {
        return Ok(FURTHER_EVERY);
    }
    if saturated {
        return Ok(IDLE);
    }
    Ok(match store.next_due_ms()? {
        Some(due) => Duration::from_millis(due.saturating_sub(now_ms())).min(IDLE),
        None => IDLE,
    })
}

fn release(busy: &Busy, sub_key: &SubKey) {
    let mut b = busy.lock().expect("not poisoned");
    if let Some(n) = b.get_mut(sub_key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            b.remove(sub_key);
        }
    }
}
