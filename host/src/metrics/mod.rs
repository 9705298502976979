//! Prometheus metrics, through the `metrics` facade.
//!
//! The recorder is process-global (the `metrics` facade has one), so several
//! hosts in one process (tests, embedding) share it; each host renders the
//! same registry. Beside it, `series`: each function's last hour in memory,
//! per host, for the admin API's stats.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) mod series;

use self::series::FunctionSeries;
pub use self::series::{FunctionStats, HostStats, StatsQuery, StatsSeries};

/// Invocations by function and status.
pub const INVOCATIONS: &str = "wisp_invocations_total";
/// Invocation duration (to the response head) by function.
pub const INVOCATION_SECONDS: &str = "wisp_invocation_duration_seconds";
/// Instantiation time of a component, per invocation.
pub const INSTANTIATION_SECONDS: &str = "wisp_instantiation_duration_seconds";
/// Invocations running now.
pub const IN_FLIGHT: &str = "wisp_invocations_in_flight";
/// Components compiled (0 after a restart that found compiled code).
pub const COMPILES: &str = "wisp_compiles_total";
/// Time spent compiling.
pub const COMPILE_SECONDS: &str = "wisp_compile_duration_seconds";
/// Requests refused because the in-flight bound was reached.
pub const OVERLOADED: &str = "wisp_invocations_rejected_total";
/// 1, labelled with how guests' code runs (`engine`: cranelift or pulley).
pub const ENGINE: &str = "wisp_engine";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process) and returns the render handle.
/// `None` when the embedding application installed its own recorder. In
/// cluster mode every series gets a `node` label (this host's node name).
pub fn install(node: Option<&str>) -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            // Cluster mode: every series says which host it is from.
            if let Some(node) = node {
                builder = builder.add_global_label("node", node);
            }
            let recorder = builder
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    start_upkeep(handle.clone());
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The exporter keeps every histogram sample (a value and a timestamp, two
/// per invocation) in a queue until it is drained; `build_recorder` leaves the
/// draining to us. Without it the queue is only drained by a scrape of
/// `/metrics`, so an unscraped host grew by ~50 bytes per request (hundreds of
/// MiB an hour under load) and took a page fault every ~80 requests. One
/// thread per process (the recorder is process-global), like the exporter's
/// own upkeep task.
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("wisp-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histogram samples are drained only when /metrics is scraped");
    }
}

fn describe() {
    metrics::describe_counter!(INVOCATIONS, "Invocations by function and HTTP status.");
    metrics::describe_histogram!(INVOCATION_SECONDS, "Time from request to response head.");
    metrics::describe_histogram!(INSTANTIATION_SECONDS, "Time to instantiate a component.");
    metrics::describe_gauge!(IN_FLIGHT, "Invocations running now.");
    metrics::describe_counter!(COMPILES, "Components compiled.");
    metrics::describe_histogram!(COMPILE_SECONDS, "Time spent compiling components.");
    metrics::describe_counter!(
        OVERLOADED,
        "Requests refused with 503 at the in-flight bound."
    );
    describe_admission();
    metrics::describe_counter!(
        crate::invocation::rate::RATE_LIMITED,
        "Requests refused with 429 at the function's rate limit (--rate-limit)."
    );
    // Make the counters visible at 0 from the start.
    metrics::counter!(COMPILES).increment(0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
}

/// Says how guests' code runs (`wisp_engine{engine=".."} 1`).
pub fn engine(name: &'static str) {
    metrics::describe_gauge!(
        ENGINE,
        "How guests' code runs: 1, labelled with the engine."
    );
    metrics::gauge!(ENGINE, "engine" => name).set(1.0);
}

/// Records one compile.
#[cfg(feature = "cranelift")]
pub fn compiled(took: Duration) {
    metrics::counter!(COMPILES).increment(1);
    metrics::histogram!(COMPILE_SECONDS).record(took.as_secs_f64());
}

/// Pre-registered handles for one deployed function version, so the request
/// path does no label formatting or registry lookup for them. Clones share
/// the same handles.
#[derive(Clone)]
pub(crate) struct FunctionMetrics {
    name: String,
    /// The version, a label of the invocation counts: a split between
    /// versions (aliases) shows in them.
    version: String,
    duration: Histogram,
    /// Counters by status, created on first use (index: status - 100).
    by_status: Box<[OnceLock<Counter>]>,
    /// The function's last hour: one ring per function name, shared by
    /// all its versions (`SeriesMap`).
    series: Arc<FunctionSeries>,
}

impl FunctionMetrics {
    pub fn new(name: &str, version: u64, series: Arc<FunctionSeries>) -> FunctionMetrics {
        FunctionMetrics {
            name: name.to_string(),
            version: version.to_string(),
            duration: metrics::histogram!(INVOCATION_SECONDS, "function" => name.to_string()),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            series,
        }
    }

    /// Records one invocation that ended at `ended` (the `Instant` its
    /// duration was measured with: no other clock is read).
    pub fn record(&self, status: u16, ended: Instant, took: Duration) {
        self.series.record(ended, status, took);
        self.duration.record(took.as_secs_f64());
        let idx = usize::from(status.clamp(100, 599) - 100);
        self.by_status[idx]
            .get_or_init(|| {
                metrics::counter!(INVOCATIONS, "function" => self.name.clone(), "version" => self.version.clone(), "status" => status.to_string())
            })
            .increment(1);
    }
}

/// Host-wide handles.
pub(crate) struct HostMetrics {
    pub in_flight: Gauge,
    pub instantiation: Histogram,
    pub overloaded: Counter,
}

impl HostMetrics {
    pub fn new() -> HostMetrics {
        HostMetrics {
            in_flight: metrics::gauge!(IN_FLIGHT),
            instantiation: metrics::histogram!(INSTANTIATION_SECONDS),
            overloaded: metrics::counter!(OVERLOADED),
        }
    }
}

/// Requests waiting for a slot of their function, by function.
pub const QUEUE_DEPTH: &str = "wisp_function_queue_depth";
/// Requests that had to wait for a slot of their function, by function.
pub const QUEUE_WAITS: &str = "wisp_function_queue_waits_total";
/// Time waited in a function's queue (whether a slot came or not).
pub const QUEUE_WAIT_SECONDS: &str = "wisp_function_queue_wait_seconds";
/// Invocations refused for want of a slot, by function and reason.
pub const REJECTIONS: &str = "wisp_function_rejections_total";
/// Requests waiting for a host-wide slot.
pub const HOST_QUEUE_DEPTH: &str = "wisp_host_queue_depth";
/// Requests that had to wait for a host-wide slot.
pub const HOST_QUEUE_WAITS: &str = "wisp_host_queue_waits_total";
/// Time waited in the host's queue.
pub const HOST_QUEUE_WAIT_SECONDS: &str = "wisp_host_queue_wait_seconds";

fn describe_admission() {
    metrics::describe_gauge!(QUEUE_DEPTH, "Requests waiting for a slot of the function.");
    metrics::describe_counter!(
        QUEUE_WAITS,
        "Requests that waited for a slot of the function."
    );
    metrics::describe_histogram!(
        QUEUE_WAIT_SECONDS,
        "Time waited for a slot of the function."
    );
    metrics::describe_counter!(
        REJECTIONS,
        "Invocations refused for want of a slot, by reason: concurrency (no queue), queue_full, \
         queue_timeout (429); host_in_flight, host_queue_full, host_queue_timeout (503)."
    );
    metrics::describe_gauge!(HOST_QUEUE_DEPTH, "Requests waiting for a host-wide slot.");
    metrics::describe_counter!(
        HOST_QUEUE_WAITS,
        "Requests that waited for a host-wide slot."
    );
    metrics::describe_histogram!(HOST_QUEUE_WAIT_SECONDS, "Time waited for a host-wide slot.");
}

/// Pre-registered handles of one admission queue (a function's or the
/// host's): labels are formatted once, when the queue is made.
pub(crate) struct QueueMetrics {
    pub depth: Gauge,
    pub waits: Counter,
    pub waited: Histogram,
}

impl QueueMetrics {
    /// The queue of function `name`.
    pub fn function(name: &str) -> QueueMetrics {
        let depth = metrics::gauge!(QUEUE_DEPTH, "function" => name.to_string());
        // Shown at 0 from the start, like the counters.
        depth.set(0.0);
        QueueMetrics {
            depth,
            waits: metrics::counter!(QUEUE_WAITS, "function" => name.to_string()),
            waited: metrics::histogram!(QUEUE_WAIT_SECONDS, "function" => name.to_string()),
        }
    }

    /// The host's queue.
    pub fn host() -> QueueMetrics {
        let depth = metrics::gauge!(HOST_QUEUE_DEPTH);
        depth.set(0.0);
        QueueMetrics {
            depth,
            waits: metrics::counter!(HOST_QUEUE_WAITS),
            waited: metrics::histogram!(HOST_QUEUE_WAIT_SECONDS),
        }
    }
}

/// Pre-registered counters of one function's refusals, one per reason.
pub(crate) struct Rejections {
    /// Its slots taken and no queue (429).
    pub full: Counter,
    /// Its slots taken and its queue full (429).
    pub queue_full: Counter,
    /// No slot of its came free within its queue timeout (429).
    pub queue_timeout: Counter,
    /// The host's slots taken and no host queue (503).
    pub host_full: Counter,
    /// The host's slots taken and its queue full (503).
    pub host_queue_full: Counter,
    /// No host slot came free within the host's queue timeout (503).
    pub host_queue_timeout: Counter,
}

impl Rejections {
    pub fn new(name: &str) -> Rejections {
        let counter = |reason: &'static str| {
            let c =
                metrics::counter!(REJECTIONS, "function" => name.to_string(), "reason" => reason);
            c.increment(0);
            c
        };
        Rejections {
            full: counter("concurrency"),
            queue_full: counter("queue_full"),
            queue_timeout: counter("queue_timeout"),
            host_full: counter("host_in_flight"),
            host_queue_full: counter("host_queue_full"),
            host_queue_timeout: counter("host_queue_timeout"),
        }
    }
}
