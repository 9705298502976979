//! The last hour of each function, in memory, for the dashboard and
//! `GET /v1/functions/{name}/stats`: a fixed ring of [`SLOTS`] slots of
//! [`SLOT_SECONDS`] each, per function name (all its versions together),
//! holding the invocations finished, those answered 5xx, and a latency
//! histogram. Prometheus keeps the same counts for the long run; this is
//! what a host can show without one.
//!
//! The request path pays one clock-free period computation (from the
//! `Instant` the invocation already took), a load and two or three relaxed
//! atomic adds: no lock, no allocation. A slot is tagged with its period;
//! the first write in a new period resets it. Two writers racing on that
//! reset may lose a sample or two of the new period (the reset is not
//! atomic with the counts): a chart can afford that, a lock on every
//! request cannot. Readers take the slots whose tag is the period they
//! want, so a slot not written for an hour reads as empty.
//!
//! Memory: about 400 bytes a slot, so ~140 KiB per function, allocated
//! when the function is loaded or first deployed and freed when it is
//! deleted ([`SeriesMap::remove`]). Nothing survives a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Seconds covered by one slot: the finest step served.
pub(crate) const SLOT_SECONDS: u64 = 10;
/// Slots per function: one hour of them.
pub(crate) const SLOTS: usize = 360;
/// What a ring covers, in seconds.
pub(crate) const SPAN_SECONDS: u64 = SLOT_SECONDS * SLOTS as u64;

/// Latency buckets. Bucket 0 is under [`FIRST_BOUND_US`]; bucket `k >= 1`
/// is `[FIRST_BOUND_US * RATIO^(k-1), FIRST_BOUND_US * RATIO^k)`, the last
/// one open-ended (from about 5 minutes: past any sensible timeout).
const BUCKETS: usize = 96;
/// Upper bound of bucket 0, in microseconds.
const FIRST_BOUND_US: f64 = 10.0;
/// Ratio of one bucket's bounds: a percentile answered as its bucket's
/// geometric middle is within `sqrt(1.2) - 1` (under 10%) of the truth.
const RATIO: f64 = 1.2;

/// One function's ring. Shared (`Arc`) by every loaded version of the
/// function, through their [`FunctionMetrics`](super::FunctionMetrics).
pub(crate) struct FunctionSeries {
    slots: Box<[Slot]>,
}

/// One period's counts.
struct Slot {
    /// The period (Unix seconds / [`SLOT_SECONDS`]) the counts are of; 0:
    /// never written.
    period: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            period: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Zeroes the counts (the period is already moved on).
    fn reset(&self) {
        self.requests.store(0, Relaxed);
        self.errors.store(0, Relaxed);
        for b in &self.latency {
            b.store(0, Relaxed);
        }
    }
}

impl Default for FunctionSeries {
    fn default() -> FunctionSeries {
        FunctionSeries {
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
        }
    }
}

impl FunctionSeries {
    /// Counts one invocation that ended at `ended` with `status`, having
    /// taken `took`. The request path: a few relaxed atomics.
    pub fn record(&self, ended: Instant, status: u16, took: Duration) {
        self.record_in(period_of(ended), status, took);
    }

    fn record_in(&self, period: u64, status: u16, took: Duration) {
        let slot = &self.slots[(period % SLOTS as u64) as usize];
        let seen = slot.period.load(Relaxed);
        if seen != period {
            // A sample older than the slot's period (a writer that slept
            // through a whole hour) is dropped rather than mixed in.
            if seen > period {
                return;
            }
            // The one that moves the period resets the counts; the others
            // count on (into the old counts, if they are quick: lossy).
            if slot
                .period
                .compare_exchange(seen, period, Relaxed, Relaxed)
                .is_ok()
            {
                slot.reset();
            }
        }
        slot.requests.fetch_add(1, Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Relaxed);
        }
        slot.latency[bucket_of(took)].fetch_add(1, Relaxed);
    }

    /// Function `name`'s last hour up to `now`, in steps of `step`
    /// seconds (a multiple of [`SLOT_SECONDS`], checked by
    /// [`check_step`]).
    pub fn columns(&self, name: &str, now: Instant, step: u64) -> StatsSeries {
        StatsSeries {
            function: name.to_string(),
            ..self.columns_at(period_of(now), step)
        }
    }

    fn columns_at(&self, current: u64, step: u64) -> StatsSeries {
        let per_step = (step / SLOT_SECONDS).max(1);
        let n = (SLOTS as u64 / per_step) as usize;
        // Periods `[end - n * per_step, end)`; `end` is past the current one.
        let end = current + 1;
        let mut out = StatsSeries::with_capacity(n);
        let mut merged = [0u64; BUCKETS];
        for i in 0..n as u64 {
            let first = end - (n as u64 - i) * per_step;
            let (mut requests, mut errors) = (0u64, 0u64);
            merged.fill(0);
            for period in first..first + per_step {
                let slot = &self.slots[(period % SLOTS as u64) as usize];
                if slot.period.load(Relaxed) != period {
                    continue;
                }
                let r = slot.requests.load(Relaxed);
                if r == 0 {
                    continue;
                }
                requests += u64::from(r);
                errors += u64::from(slot.errors.load(Relaxed));
                for (m, b) in merged.iter_mut().zip(&slot.latency) {
                    *m += u64::from(b.load(Relaxed));
                }
            }
            out.requests.push(requests);
            out.errors.push(errors);
            out.p50_ms.push(percentile_ms(&merged, 0.50));
            out.p99_ms.push(percentile_ms(&merged, 0.99));
        }
        out
    }
}

/// What to read of the last hour.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Seconds per entry: a multiple of 10 from 10 to 3600 (default 10 for
    /// one function, 60 for all of them).
    pub step: Option<u64>,
}

/// One function's last hour (`GET /v1/functions/{name}/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionStats {
    /// Seconds per entry.
    #[schema(example = 10)]
    pub step_seconds: u64,
    /// The end (Unix seconds) of the last entry: the end of the current,
    /// partly filled, 10 s slot. Entry `i` of `n` covers
    /// `[end_unix - (n-i)*step, end_unix - (n-i-1)*step)`.
    pub end_unix: u64,
    /// The function and its columns.
    #[serde(flatten)]
    pub series: StatsSeries,
}

/// The last hour of every function the caller may read (`GET /v1/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostStats {
    /// Seconds per entry.
    #[schema(example = 60)]
    pub step_seconds: u64,
    /// The end (Unix seconds) of the last entry, as in [`FunctionStats`].
    pub end_unix: u64,
    /// One per function, by name.
    pub functions: Vec<StatsSeries>,
}

/// A function's counts over the last hour, oldest first: `3600 / step`
/// entries in each column. Kept in memory only (per host, all versions of
/// the function together): empty after a restart, gone with the function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsSeries {
    /// The function.
    #[schema(example = "hello")]
    pub function: String,
    /// Invocations finished (any status; HTTP requests and events).
    pub requests: Vec<u64>,
    /// Of those, the ones answered 5xx (traps, timeouts and limits too).
    pub errors: Vec<u64>,
    /// Median latency in milliseconds (about 10% resolution); null where
    /// there were no invocations.
    pub p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency in milliseconds; null where there were no
    /// invocations.
    pub p99_ms: Vec<Option<f64>>,
}

impl StatsSeries {
    fn with_capacity(n: usize) -> StatsSeries {
        StatsSeries {
            function: String::new(),
            requests: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            p50_ms: Vec::with_capacity(n),
            p99_ms: Vec::with_capacity(n),
        }
    }
}

/// Checks a step (seconds): a multiple of [`SLOT_SECONDS`] from
/// [`SLOT_SECONDS`] to an hour. The error is the message for the client.
pub(crate) fn check_step(step: u64) -> Result<u64, String> {
    if !(SLOT_SECONDS..=SPAN_SECONDS).contains(&step) || !step.is_multiple_of(SLOT_SECONDS) {
        return Err(format!(
            "step must be a multiple of {SLOT_SECONDS} seconds between {SLOT_SECONDS} and {SPAN_SECONDS}, not {step}"
        ));
    }
    Ok(step)
}

/// The end of the current slot (Unix seconds) as of `now`: the
/// `end_unix` of an answer made of [`FunctionSeries::columns`] at `now`.
pub(crate) fn end_unix(now: Instant) -> u64 {
    (period_of(now) + 1) * SLOT_SECONDS
}

/// The period an instant falls in. Instants are mapped to Unix time from
/// one reading of both clocks, made once per process: the request path
/// reads no wall clock, and a wall clock set back or forward moves no
/// sample into another slot.
fn period_of(at: Instant) -> u64 {
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (base, unix) = BASE.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), unix)
    });
    let unix = match at.checked_duration_since(*base) {
        Some(after) => *unix + after,
        None => unix.saturating_sub(base.duration_since(at)),
    };
    unix.as_secs() / SLOT_SECONDS
}

/// The bucket of a latency.
fn bucket_of(took: Duration) -> usize {
    let us = took.as_micros() as f64;
    if us < FIRST_BOUND_US {
        return 0;
    }
    let k = ((us / FIRST_BOUND_US).ln() / RATIO.ln()) as usize + 1;
    k.min(BUCKETS - 1)
}

/// The latency a bucket stands for, in microseconds: its geometric middle
/// (the lower bound of the open-ended last one; half the first's bound).
fn bucket_value_us(k: usize) -> f64 {
    match k {
        0 => FIRST_BOUND_US / 2.0,
        k if k == BUCKETS - 1 => FIRST_BOUND_US * RATIO.powi(k as i32 - 1),
        k => FIRST_BOUND_US * RATIO.powf(k as f64 - 0.5),
    }
}

/// The `q` quantile of a histogram, in milliseconds rounded to the
/// microsecond; `None` for an empty one.
fn percentile_ms(histogram: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the sample wanted, 1-based.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    let k = histogram
        .iter()
        .position(|&n| {
            seen += n;
            seen >= rank
        })
        .unwrap_or(BUCKETS - 1);
    Some((bucket_value_us(k)).round() / 1000.0)
}

/// Every function's ring, by name: looked up when a version is loaded or
/// deployed (never by a request), so a new version of a function counts
/// into the same ring as the old one.
#[derive(Default)]
pub(crate) struct SeriesMap {
    by_name: Mutex<HashMap<String, Arc<FunctionSeries>>>,
}

impl SeriesMap {
    /// The ring of function `name`, made if it has none.
    pub fn of(&self, name: &str) -> Arc<FunctionSeries> {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// The ring of function `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<Arc<FunctionSeries>> {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// Forgets function `name`'s ring (it was deleted): freed once the
    /// last version holding it is gone; a function deployed again under
    /// the name starts empty.
    pub fn remove(&self, name: &str) {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 176_495_000; // a period (Unix seconds / 10)

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_slot_counts_requests_errors_and_latency() {
        let s = FunctionSeries::default();
        for _ in 0..3 {
            s.record_in(T0, 200, ms(2));
        }
        s.record_in(T0, 500, ms(2));
        s.record_in(T0, 429, ms(2));
        let c = s.columns_at(T0, 10);
        assert_eq!(c.requests.len(), 360);
        assert_eq!(c.requests[359], 5);
        assert_eq!(c.errors[359], 1);
        assert!(c.requests[..359].iter().all(|&n| n == 0));
        assert_eq!(c.p50_ms[358], None);
        let p50 = c.p50_ms[359].unwrap();
        assert!((p50 - 2.0).abs() <= 0.2, "{p50}");
    }

    #[test]
    fn the_ring_rotates_and_a_stale_slot_is_reset_on_its_first_write() {
        let s = FunctionSeries::default();
        s.record_in(T0, 500, ms(1));
        s.record_in(T0 + 1, 200, ms(1));
        // An hour later, the same slot as T0: its old counts are gone.
        let later = T0 + SLOTS as u64;
        s.record_in(later, 200, ms(1));
        let c = s.columns_at(later, 10);
        assert_eq!(c.requests[359], 1);
        assert_eq!(c.errors[359], 0);
        // T0 + 1 is the oldest period of the last hour: still there.
        assert_eq!(c.requests[0], 1);
        assert_eq!(c.requests.iter().sum::<u64>(), 2);
        // Ten seconds on, it is not (though its slot is not written yet).
        let c = s.columns_at(later + 1, 10);
        assert_eq!(c.requests[358], 1);
        assert_eq!(c.requests.iter().sum::<u64>(), 1);
        // Read an hour on, with no writes: nothing.
        let c = s.columns_at(later + SLOTS as u64, 10);
        assert_eq!(c.requests.iter().sum::<u64>(), 0);
        assert!(c.p99_ms.iter().all(Option::is_none));
        // A late sample for a period the slot has moved past is dropped.
        s.record_in(T0, 200, ms(1));
        assert_eq!(s.columns_at(later, 10).requests[359], 1);
    }

    #[test]
    fn a_coarser_step_sums_counts_and_merges_histograms() {
        let s = FunctionSeries::default();
        // Steps end with the current slot: the last minute is
        // `now - 5 ..= now`.
        let now = T0;
        // In the current minute: 99 fast in one slot, 1 slow in another.
        for _ in 0..99 {
            s.record_in(now - 1, 200, ms(1));
        }
        s.record_in(now, 503, ms(100));
        // And one in the minute before.
        s.record_in(now - 6, 200, ms(5));
        let c = s.columns_at(now, 60);
        assert_eq!(c.requests.len(), 60);
        assert_eq!(c.requests[59], 100);
        assert_eq!(c.errors[59], 1);
        assert_eq!(c.requests[58], 1);
        let (p50, p99) = (c.p50_ms[59].unwrap(), c.p99_ms[59].unwrap());
        assert!((p50 - 1.0).abs() <= 0.1, "{p50}");
        assert!((p99 - 1.0).abs() <= 0.1, "{p99}");
        // With the slow one as the 2nd of 100, p99 is the slow one.
        s.record_in(now, 503, ms(100));
        let p99 = s.columns_at(now, 60).p99_ms[59].unwrap();
        assert!((p99 - 100.0).abs() <= 10.0, "{p99}");
        // A one-hour step: one entry, everything.
        let c = s.columns_at(now, 3600);
        assert_eq!(c.requests, [102]);
        assert_eq!(c.errors, [2]);
    }

    #[test]
    fn percentiles_are_within_ten_percent() {
        for us in [
            1, 9, 10, 11, 57, 100, 999, 1_234, 20_000, 456_789, 3_000_000,
        ] {
            let mut h = [0u64; BUCKETS];
            h[bucket_of(Duration::from_micros(us))] = 1;
            let got = percentile_ms(&h, 0.5).unwrap() * 1000.0;
            let want = us as f64;
            // Under 10 µs, within 10 µs: the first bucket is one.
            if us < 10 {
                assert!((got - want).abs() <= 10.0, "{us}: {got}");
            } else {
                assert!((got - want).abs() / want <= 0.10, "{us}: {got}");
            }
        }
        // A spread: 1..=1000 ms, one each.
        let mut h = [0u64; BUCKETS];
        for n in 1..=1000 {
            h[bucket_of(ms(n))] += 1;
        }
        let p50 = percentile_ms(&h, 0.5).unwrap();
        let p99 = percentile_ms(&h, 0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 <= 0.10, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 <= 0.10, "{p99}");
        // Past the last bucket: counted there, not out of bounds.
        assert_eq!(bucket_of(Duration::from_secs(86_400)), BUCKETS - 1);
    }

    #[test]
    fn steps_must_be_multiples_of_ten_up_to_an_hour() {
        for ok in [10, 60, 70, 600, 3600] {
            assert_eq!(check_step(ok), Ok(ok));
        }
        for bad in [0, 5, 15, 3601, 3610, 7200] {
            let e = check_step(bad).unwrap_err();
            assert!(e.contains("multiple of 10"), "{e}");
        }
        // 3600/70 entries, whole steps.
        let c = FunctionSeries::default().columns_at(T0, 70);
        assert_eq!(c.requests.len(), 51);
    }

    #[test]
    fn instants_map_to_periods_of_unix_time() {
        let now = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let p = period_of(now);
        assert!(p.abs_diff(unix / SLOT_SECONDS) <= 1, "{p} {unix}");
        assert_eq!(period_of(now + Duration::from_secs(10)), p + 1);
        assert_eq!(end_unix(now), (p + 1) * SLOT_SECONDS);
    }

    #[test]
    fn deleting_a_function_drops_its_ring() {
        let map = SeriesMap::default();
        let a = map.of("a");
        assert!(Arc::ptr_eq(&a, &map.of("a")));
        map.remove("a");
        assert!(map.get("a").is_none());
        assert!(!Arc::ptr_eq(&a, &map.of("a")));
    }
}
