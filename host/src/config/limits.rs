//! Per-invocation limits (host defaults, per-function overrides) and the
//! instance-reuse policy of a WASI 0.3 component.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::invocation::rate::RateLimit;

/// Limits applied to one invocation. Host-wide defaults, overridable per
/// function version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    /// Wall-clock deadline of one invocation, in milliseconds. A breach
    /// answers 504, even for a guest stuck in a tight loop.
    pub timeout_ms: u64,
    /// Cap on the guest's linear memory, in bytes. A breach answers 500.
    pub memory_bytes: u64,
    /// Cap on the request body, in bytes. A breach answers 413.
    pub max_body_bytes: u64,
    /// Largest key-value key, in bytes (UTF-8). Over it the guest gets
    /// `invalid-key`, the admin API 400. (Defaulted when absent, so records
    /// stored before key-value existed still load.)
    #[serde(default = "default_kv_max_key_bytes")]
    pub kv_max_key_bytes: u64,
    /// Largest key-value value, in bytes. Over it the guest gets
    /// `value-too-large`, the admin API 413.
    #[serde(default = "default_kv_max_value_bytes")]
    pub kv_max_value_bytes: u64,
    /// Bound on all of a function's keys and values together, in bytes
    /// (key bytes plus value bytes of every stored entry, expired ones until
    /// they are reclaimed). Over it the guest gets `quota-exceeded`, the
    /// admin API 507.
    #[serde(default = "default_kv_max_total_bytes")]
    pub kv_max_total_bytes: u64,
    /// Invocations of the function running at once. `None` (the default):
    /// the host's per-function share ([`HostConfig::function_share`](super::HostConfig::function_share)). At
    /// most the host's `max_in_flight`.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Requests that may wait for a slot when `concurrency` invocations
    /// are running; past them the answer is 429. 0 (the default) refuses
    /// at once, as when no queue existed.
    #[serde(default)]
    pub queue: u32,
    /// How long one request may wait in the queue, in milliseconds; past
    /// it the answer is 429. Time waited does not count against
    /// `timeout_ms`: the function's deadline starts when it gets its slot.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Requests per second, minute or hour the function takes on the data
    /// plane, with a burst (`--rate-limit 100/s,burst=200`); past it the
    /// answer is 429 `rate_limited`, before admission. `None` (the
    /// default): no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// The wait a queued request is allowed unless the function sets its own:
/// long enough to ride out a burst, short enough that a client is not kept
/// guessing.
pub(super) fn default_queue_timeout_ms() -> u64 {
    10_000
}

/// Most requests one queue may hold (a function's or the host's). A
/// waiting request holds its connection and a little memory, so the queue
/// is bounded like every other buffer; the connection limit bounds the
/// sum.
pub const MAX_QUEUE: u32 = 100_000;

fn default_kv_max_key_bytes() -> u64 {
    wisp_rules::DEFAULT_KV_MAX_KEY_BYTES
}

fn default_kv_max_value_bytes() -> u64 {
    1 << 20
}

fn default_kv_max_total_bytes() -> u64 {
    64 << 20
}

/// Bounds on a function's config (settings and secrets). Fixed, not
/// configurable: config is small text read on every invocation.
pub(crate) mod config_limits {
    /// Most settings and secrets one function may have, together.
    pub const MAX_KEYS: usize = 256;
    /// Longest key name, in characters (`[A-Za-z0-9_.-]`).
    pub const MAX_KEY_LEN: usize = 128;
    /// Largest value, in bytes (UTF-8).
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 30_000,
            memory_bytes: 128 << 20,
            max_body_bytes: 6 << 20,
            kv_max_key_bytes: default_kv_max_key_bytes(),
            kv_max_value_bytes: default_kv_max_value_bytes(),
            kv_max_total_bytes: default_kv_max_total_bytes(),
            concurrency: None,
            queue: 0,
            queue_timeout_ms: default_queue_timeout_ms(),
            rate_limit: None,
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The queue timeout as a [`Duration`].
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }
}

/// Optional per-function overrides of [`Limits`], as given at deploy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    /// See [`Limits::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// See [`Limits::memory_bytes`].
    pub memory_bytes: Option<u64>,
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: Option<u64>,
    /// See [`Limits::kv_max_key_bytes`].
    #[serde(default)]
    pub kv_max_key_bytes: Option<u64>,
    /// See [`Limits::kv_max_value_bytes`].
    #[serde(default)]
    pub kv_max_value_bytes: Option<u64>,
    /// See [`Limits::kv_max_total_bytes`].
    #[serde(default)]
    pub kv_max_total_bytes: Option<u64>,
    /// See [`Limits::concurrency`].
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// See [`Limits::queue`].
    #[serde(default)]
    pub queue: Option<u32>,
    /// See [`Limits::queue_timeout_ms`].
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
}

impl LimitOverrides {
    /// Applies the overrides on top of `base`.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            max_body_bytes: self.max_body_bytes.unwrap_or(base.max_body_bytes),
            kv_max_key_bytes: self.kv_max_key_bytes.unwrap_or(base.kv_max_key_bytes),
            kv_max_value_bytes: self.kv_max_value_bytes.unwrap_or(base.kv_max_value_bytes),
            kv_max_total_bytes: self.kv_max_total_bytes.unwrap_or(base.kv_max_total_bytes),
            concurrency: self.concurrency.or(base.concurrency),
            queue: self.queue.unwrap_or(base.queue),
            queue_timeout_ms: self.queue_timeout_ms.unwrap_or(base.queue_timeout_ms),
            // Set or removed by a deploy's `rate_limit` (see
            // `function/resolve.rs`), not an override.
            rate_limit: base.rate_limit,
        }
    }
}

/// Instance reuse of a WASI 0.3 component (`wisp deploy --reuse`): one
/// instance serves several requests, one after the other or
/// `concurrency` at once, sharing its globals and memory. Absent, every
/// request gets a fresh instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reuse {
    /// Fewest requests an instance serves before it is retired.
    pub min: u32,
    /// Most requests an instance serves before it is retired; each
    /// instance picks its count at random between `min` and `max`, so that
    /// state leaking from request to request shows up sooner.
    pub max: u32,
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// How long an idle instance is kept for the next request, in ms.
    pub idle_timeout_ms: u64,
}
