//! Typed host configuration and per-function limits.

mod connection;
mod limits;
mod retry;

pub use connection::ConnectionLimits;
pub(crate) use limits::config_limits;
use limits::default_queue_timeout_ms;
pub use limits::{LimitOverrides, Limits, MAX_QUEUE, Reuse};
pub use retry::RetryPolicy;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
/// Where the host keeps its data.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A directory on disk, created if missing.
    Dir(PathBuf),
    /// A temporary store, deleted when the host is dropped (tests, embedding).
    Temporary,
}

/// Everything a `Host` is built from. Checked by
/// [`HostConfig::validate`] before anything starts.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the store lives.
    pub store: StoreLocation,
    /// Default limits for functions that do not override them.
    pub default_limits: Limits,
    /// The largest memory cap a function may ask for; sizes the pooling
    /// allocator's memory slots.
    pub max_memory_bytes: u64,
    /// The largest timeout a function may ask for.
    pub max_timeout_ms: u64,
    /// Largest accepted upload (artifact) in bytes; larger answers 413.
    pub max_upload_bytes: u64,
    /// Invocations running at once, host-wide. Past it the gateway answers
    /// 503 with `Retry-After` instead of queueing.
    pub max_in_flight: u32,
    /// Invocations one function may have running at once: its share of
    /// `max_in_flight`, so that one busy (or attacked) function cannot make
    /// every other one answer 503. `None` is half of `max_in_flight`
    /// (at least 1).
    pub max_in_flight_per_function: Option<u32>,
    /// The data plane's connection bounds.
    pub data_connections: ConnectionLimits,
    /// The admin API's connection bounds.
    pub admin_connections: ConnectionLimits,
    /// sled page-cache size in bytes. sled defaults to 1 GiB, which lets the
    /// host's memory grow with the store; edge devices cannot afford that.
    pub store_cache_bytes: u64,
    /// Use the pooling instance allocator (falls back to on-demand when the
    /// address space cannot be reserved).
    pub pooling: bool,
    /// Bytes at the start of each pool slot's linear memory and async stack
    /// kept resident between instances, so that the next instance does not
    /// fault them in again. Each slot ever used keeps up to twice this.
    pub pool_keep_resident_bytes: u64,
    /// The admin bearer token; `None` reads or generates `admin-token` in the
    /// data directory.
    pub admin_token: Option<SecretString>,
    /// Outbound HTTP requests one invocation may send (to allowed hosts);
    /// past it, requests fail in the guest as denied.
    pub max_outbound_requests: u32,
    /// Bytes of stdout, stderr and log lines kept per invocation; the rest
    /// is dropped and the truncation noted in the log.
    pub log_bytes_per_invocation: u64,
    /// Log lines kept per function (the oldest go first).
    pub log_retention_entries: u64,
    /// How long log lines are kept.
    pub log_retention: Duration,
    /// Bytes of response body a preview-1 (CGI) module may write; past it
    /// the response is cut and the truncation noted in the invocation log.
    pub cgi_max_output_bytes: u64,
    /// Largest event payload (publish, asynchronous invocation); larger
    /// answers 413.
    pub event_max_payload_bytes: u64,
    /// Pending and running deliveries one topic may have; past it publishes
    /// answer 429. Bounds the store's growth when subscribers fall behind.
    pub event_max_queue_depth: u64,
    /// Event deliveries running at once, host-wide (each also takes an
    /// invocation slot of `max_in_flight`).
    pub event_max_in_flight: u32,
    /// Deliveries of one subscription running at once, unless it sets its
    /// own.
    pub event_concurrency: u32,
    /// Retry defaults of subscriptions (and of asynchronous invocations).
    pub event_retry: RetryPolicy,
    /// How long a finished event (every delivery done) stays readable
    /// (`GET /v1/events/{id}`) before it is removed. Dead deliveries keep
    /// their event until redriven, purged or expired
    /// ([`HostConfig::event_dead_letter_retention`]).
    pub event_retention: Duration,
    /// Serving threads, each with a single-threaded runtime of its own:
    /// connections (data plane and admin API) and event deliveries are
    /// spread over them; 0 is one per CPU. The event dispatcher and the
    /// store's group commit run on the caller's runtime.
    pub serve_threads: usize,
    /// Gives freed heap memory back to the system; called once the host has
    /// loaded its functions (on the thread that loaded them) and after each
    /// deploy (on a blocking thread: the compiler's scratch memory). The
    /// default trims
    /// glibc's malloc; a program with another global allocator passes its
    /// own (the `wisp` binary purges jemalloc's arenas).
    pub release_memory: fn(),
    /// Entries (lines of stdout and stderr, log calls) kept per
    /// invocation, beside the byte bound of `log_bytes_per_invocation`
    /// (in which each entry counts 32 bytes more than its text); the rest
    /// are dropped and counted, and the truncation noted in the log.
    pub log_entries_per_invocation: u64,
    /// Bytes of undelivered events one topic may hold: events with a
    /// delivery pending, running, retrying or dead, counted by
    /// `EventRecord::charge`
    /// (payload plus metadata). Past it a publish on the topic answers 429
    /// `topic_quota_exceeded` (a guest's `publish` gets `queue-full`).
    /// Dead letters count: they stay on disk until redriven, purged or
    /// expired, and leaving them out would let a failing subscriber fill
    /// the disk for the whole dead-letter retention.
    pub event_topic_quota_bytes: u64,
    /// The same bound over all topics together (the event plane's share of
    /// the disk); past it every publish answers 429 `host_quota_exceeded`.
    pub event_host_quota_bytes: u64,
    /// How long a dead delivery stays in its function's dead-letter list
    /// (from when it died) before it is removed with its event, unless
    /// redriven or purged first.
    pub event_dead_letter_retention: Duration,
    /// Requests that may wait for a host-wide slot when `max_in_flight`
    /// invocations are running; past them the answer is 503. 0 (the
    /// default) answers 503 at once.
    pub host_queue: u32,
    /// How long one request may wait for a host-wide slot; past it the
    /// answer is 503. Not counted against the function's timeout.
    pub host_queue_timeout: Duration,
    /// How guests' code runs: compiled to machine code, or interpreted.
    pub code_engine: CodeEngine,
    /// Keys whose signed precompiled artifacts (`wisp compile --sign`) this
    /// host loads (`--trusted-key`); with none, it loads no precompiled
    /// code.
    pub trusted_keys: Vec<crate::function::signed::TrustedKey>,
}

/// How guests' code runs (`wisp serve --engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeEngine {
    /// Compiled to the host's machine code by Cranelift: the fastest.
    #[default]
    Cranelift,
    /// Compiled to the bytecode of wasmtime's Pulley interpreter, and
    /// interpreted: no machine code is generated or mapped executable at run
    /// time (for W^X policies, and targets Cranelift has no backend for),
    /// at several times the CPU per instruction.
    Pulley,
}

impl CodeEngine {
    /// Its name, as `--engine` takes it and `wisp info` shows it.
    pub fn name(self) -> &'static str {
        match self {
            CodeEngine::Cranelift => "cranelift",
            CodeEngine::Pulley => "pulley",
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            store: StoreLocation::Dir(PathBuf::from("wisp-data")),
            default_limits: Limits::default(),
            max_memory_bytes: 4 << 30,
            max_timeout_ms: 15 * 60 * 1000,
            max_upload_bytes: 64 << 20,
            max_in_flight: 1000,
            max_in_flight_per_function: None,
            data_connections: ConnectionLimits::DATA_DEFAULT,
            admin_connections: ConnectionLimits::ADMIN_DEFAULT,
            store_cache_bytes: 16 << 20,
            pooling: true,
            pool_keep_resident_bytes: 1 << 20,
            admin_token: None,
            max_outbound_requests: 16,
            log_bytes_per_invocation: 64 * 1024,
            log_retention_entries: 10_000,
            log_retention: Duration::from_secs(7 * 24 * 3600),
            cgi_max_output_bytes: 16 << 20,
            event_max_payload_bytes: 256 << 10,
            event_max_queue_depth: 100_000,
            event_max_in_flight: 64,
            event_concurrency: 4,
            event_retry: RetryPolicy::default(),
            event_retention: Duration::from_secs(3600),
            serve_threads: 0,
            release_memory: release_free_memory,
            log_entries_per_invocation: 1000,
            // An edge device's disk is small and shared with everything
            // else: 64 MiB per topic is 256 events at the largest payload
            // (or ~400,000 small ones), and 256 MiB in all bounds what
            // subscribers that fall behind (or die) can take, far below
            // what even a small SD card holds.
            event_topic_quota_bytes: 64 << 20,
            event_host_quota_bytes: 256 << 20,
            event_dead_letter_retention: Duration::from_secs(7 * 24 * 3600),
            host_queue: 0,
            host_queue_timeout: Duration::from_millis(default_queue_timeout_ms()),
            code_engine: CodeEngine::Cranelift,
            trusted_keys: Vec::new(),
        }
    }
}

impl HostConfig {
    /// The defaults sized for a small device (512 MiB of memory, an SD
    /// card; `wisp serve --small`): fewer invocations and connections at
    /// once, a smaller store cache and pool slots that keep less resident,
    /// smaller uploads and CGI output. Everything else is as
    /// [`HostConfig::default`].
    pub fn small() -> HostConfig {
        HostConfig {
            max_in_flight: 64,
            max_upload_bytes: 32 << 20,
            data_connections: ConnectionLimits {
                max_connections: 1024,
                ..ConnectionLimits::DATA_DEFAULT
            },
            admin_connections: ConnectionLimits {
                max_connections: 32,
                ..ConnectionLimits::ADMIN_DEFAULT
            },
            store_cache_bytes: 4 << 20,
            pool_keep_resident_bytes: 128 << 10,
            cgi_max_output_bytes: 4 << 20,
            event_max_in_flight: 16,
            ..HostConfig::default()
        }
    }

    /// Invocations one function may have running at once (see
    /// [`Self::max_in_flight_per_function`]).
    pub fn function_share(&self) -> u32 {
        self.max_in_flight_per_function
            .unwrap_or(self.max_in_flight / 2)
            .max(1)
    }

    /// Invocations a function with `limits` may have running at once: its
    /// own concurrency, else the host's share; never above
    /// `max_in_flight` (a stored concurrency may be, after a restart with
    /// a lower bound).
    pub fn concurrency_of(&self, limits: &Limits) -> u32 {
        limits
            .concurrency
            .map_or_else(|| self.function_share(), |n| n.clamp(1, self.max_in_flight))
    }

    /// Checks that the values fit together; a bad value stops start-up with a
    /// clear message.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.default_limits;
        if l.timeout_ms == 0 {
            return Err("the default timeout must be more than 0".into());
        }
        if l.memory_bytes < 64 * 1024 {
            return Err("the default memory limit must be at least 64KiB (one wasm page)".into());
        }
        if l.memory_bytes > self.max_memory_bytes {
            return Err(format!(
                "the default memory limit ({} bytes) is above the host maximum ({} bytes)",
                l.memory_bytes, self.max_memory_bytes
            ));
        }
        if self.max_memory_bytes > 4 << 30 {
            return Err("the host memory maximum is at most 4GiB (32-bit wasm memories)".into());
        }
        if l.timeout_ms > self.max_timeout_ms {
            return Err("the default timeout is above the host maximum".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return Err("max in-flight invocations must be between 1 and 100000".into());
        }
        if let Some(n) = self.max_in_flight_per_function
            && (n == 0 || n > self.max_in_flight)
        {
            return Err(format!(
                "max in-flight invocations per function must be between 1 and the host's {}",
                self.max_in_flight
            ));
        }
        self.data_connections.validate("data plane")?;
        self.admin_connections.validate("admin API")?;
        if self.serve_threads > 1024 {
            return Err("serving threads must be at most 1024 (0: one per CPU)".into());
        }
        if self.max_upload_bytes == 0 {
            return Err("the upload limit must be more than 0".into());
        }
        if self.log_bytes_per_invocation == 0 || self.log_bytes_per_invocation > 64 << 20 {
            return Err("the log bytes per invocation must be between 1 and 64MiB".into());
        }
        if self.log_retention_entries == 0 {
            return Err("the log retention (lines) must be more than 0".into());
        }
        if self.log_retention.is_zero() {
            return Err("the log retention (time) must be more than 0".into());
        }
        if self.cgi_max_output_bytes == 0 {
            return Err("the CGI output cap must be more than 0".into());
        }
        if self.event_max_payload_bytes == 0 || self.event_max_payload_bytes > 64 << 20 {
            return Err("the event payload limit must be between 1 and 64MiB".into());
        }
        if self.event_max_queue_depth == 0 {
            return Err("the event queue depth must be more than 0".into());
        }
        if self.event_max_in_flight == 0 || self.event_max_in_flight > 100_000 {
            return Err("event deliveries in flight must be between 1 and 100000".into());
        }
        if self.event_concurrency == 0 || self.event_concurrency > 1000 {
            return Err("the per-subscription concurrency must be between 1 and 1000".into());
        }
        self.event_retry
            .validate()
            .map_err(|e| format!("event retries: {e}"))?;
        if let Some(t) = &self.admin_token
            && t.expose_secret().trim().len() < 16
        {
            return Err("the admin token must be at least 16 characters".into());
        }
        if l.kv_max_key_bytes == 0 || l.kv_max_value_bytes == 0 || l.kv_max_total_bytes == 0 {
            return Err("the default key-value limits must be more than 0".into());
        }
        if self.log_entries_per_invocation == 0 || self.log_entries_per_invocation > 1_000_000 {
            return Err("the log lines per invocation must be between 1 and 1000000".into());
        }
        // An event at the payload limit must fit in an empty topic, or it
        // could never be published.
        let largest = self.event_max_payload_bytes + 4096;
        if self.event_topic_quota_bytes < largest {
            return Err(format!(
                "the per-topic event quota ({} bytes) must be at least the event payload limit \
                 plus 4KiB for its metadata ({largest} bytes)",
                self.event_topic_quota_bytes
            ));
        }
        if self.event_host_quota_bytes < self.event_topic_quota_bytes {
            return Err(format!(
                "the host-wide event quota ({} bytes) must be at least the per-topic quota ({} \
                 bytes)",
                self.event_host_quota_bytes, self.event_topic_quota_bytes
            ));
        }
        if self.event_dead_letter_retention.is_zero() {
            return Err("the dead-letter retention must be more than 0".into());
        }
        if self.host_queue > MAX_QUEUE {
            return Err(format!(
                "the host queue must be at most {MAX_QUEUE} (got {})",
                self.host_queue
            ));
        }
        if self.host_queue_timeout.is_zero()
            || self.host_queue_timeout > Duration::from_millis(self.max_timeout_ms)
        {
            return Err(format!(
                "the host queue timeout must be more than 0 and at most the host's maximum \
                 timeout ({} ms)",
                self.max_timeout_ms
            ));
        }
        Ok(())
    }

    /// Checks limits asked for by a function against the host's maxima.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), String> {
        if limits.timeout_ms == 0 || limits.timeout_ms > self.max_timeout_ms {
            return Err(format!(
                "timeout_ms must be between 1 and {} (got {})",
                self.max_timeout_ms, limits.timeout_ms
            ));
        }
        if limits.memory_bytes < 64 * 1024 || limits.memory_bytes > self.max_memory_bytes {
            return Err(format!(
                "memory_bytes must be between 65536 and {} (got {})",
                self.max_memory_bytes, limits.memory_bytes
            ));
        }
        if limits.max_body_bytes > 1 << 30 {
            return Err(format!(
                "max_body_bytes must be at most {} (got {})",
                1u64 << 30,
                limits.max_body_bytes
            ));
        }
        // Key-value: keys up to 64 KiB, values up to 64 MiB (one sled
        // record each), the total up to 1 TiB.
        for (name, value, max) in [
            ("kv_max_key_bytes", limits.kv_max_key_bytes, 64u64 << 10),
            ("kv_max_value_bytes", limits.kv_max_value_bytes, 64 << 20),
            ("kv_max_total_bytes", limits.kv_max_total_bytes, 1 << 40),
        ] {
            if value == 0 || value > max {
                return Err(format!("{name} must be between 1 and {max} (got {value})"));
            }
        }
        if let Some(n) = limits.concurrency
            && (n == 0 || n > self.max_in_flight)
        {
            return Err(format!(
                "concurrency must be between 1 and the host's max in-flight invocations \
                 (--max-in-flight {}) (got {n})",
                self.max_in_flight
            ));
        }
        if limits.queue > MAX_QUEUE {
            return Err(format!(
                "queue must be at most {MAX_QUEUE} (got {})",
                limits.queue
            ));
        }
        if limits.queue_timeout_ms == 0 || limits.queue_timeout_ms > self.max_timeout_ms {
            return Err(format!(
                "queue_timeout_ms must be between 1 and {} (got {})",
                self.max_timeout_ms, limits.queue_timeout_ms
            ));
        }
        Ok(())
    }
}

/// Returns the heap memory freed so far to the system (the default of
/// [`HostConfig::release_memory`]). glibc keeps what the
/// compiler freed in its arenas, so a deploy that compiled would otherwise
/// leave tens of MiB resident for the life of the process (an edge device's
/// budget). Cheap enough to call after each deploy and after start-up.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim has no preconditions; it only gives free pages of
    // the allocator's arenas back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_field_by_field() {
        let base = Limits::default();
        let o = LimitOverrides {
            timeout_ms: Some(5),
            ..Default::default()
        };
        let l = o.apply(base);
        assert_eq!(l.timeout_ms, 5);
        assert_eq!(l.memory_bytes, base.memory_bytes);
    }

    #[test]
    fn validates_config() {
        assert!(HostConfig::default().validate().is_ok());
        let mut c = HostConfig::default();
        c.default_limits.timeout_ms = 0;
        assert!(c.validate().is_err());
        let c = HostConfig {
            admin_token: Some("short".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = HostConfig {
            serve_threads: 2000,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("serving threads"), "{e}");
        let l = Limits {
            memory_bytes: 8 << 30,
            ..Default::default()
        };
        assert!(HostConfig::default().check_limits(&l).is_err());
    }

    #[test]
    fn admission_limits_are_checked_against_the_host() {
        let host = HostConfig {
            max_in_flight: 8,
            ..Default::default()
        };
        let ok = Limits {
            concurrency: Some(8),
            queue: 4,
            queue_timeout_ms: 1,
            ..Default::default()
        };
        assert!(host.check_limits(&ok).is_ok());
        for (bad, field) in [
            (
                Limits {
                    concurrency: Some(0),
                    ..ok
                },
                "concurrency",
            ),
            (
                Limits {
                    concurrency: Some(9),
                    ..ok
                },
                "--max-in-flight 8",
            ),
            (
                Limits {
                    queue_timeout_ms: 0,
                    ..ok
                },
                "queue_timeout_ms",
            ),
            (
                Limits {
                    queue: MAX_QUEUE + 1,
                    ..ok
                },
                "queue must be",
            ),
        ] {
            let e = host.check_limits(&bad).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn a_function_s_concurrency_defaults_to_the_host_s_share_and_is_capped() {
        let host = HostConfig {
            max_in_flight: 8,
            ..Default::default()
        };
        assert_eq!(host.concurrency_of(&Limits::default()), 4);
        let own = Limits {
            concurrency: Some(6),
            ..Default::default()
        };
        assert_eq!(host.concurrency_of(&own), 6);
        // Stored before a restart with a lower bound.
        let above = Limits {
            concurrency: Some(50),
            ..Default::default()
        };
        assert_eq!(host.concurrency_of(&above), 8);
    }

    #[test]
    fn the_host_queue_is_bounded() {
        let c = HostConfig {
            host_queue: MAX_QUEUE + 1,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("host queue"));
        let c = HostConfig {
            host_queue_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("host queue timeout"));
        let c = HostConfig {
            host_queue: 10,
            host_queue_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn limits_stored_before_admission_existed_still_load() {
        let old = r#"{"timeout_ms":1000,"memory_bytes":65536,"max_body_bytes":10}"#;
        let l: Limits = serde_json::from_str(old).unwrap();
        assert_eq!(l.concurrency, None);
        assert_eq!(l.queue, 0);
        assert_eq!(l.queue_timeout_ms, Limits::default().queue_timeout_ms);
    }

    #[test]
    fn log_lines_per_invocation_are_bounded() {
        for bad in [0, 1_000_001] {
            let c = HostConfig {
                log_entries_per_invocation: bad,
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains("log lines per invocation"), "{e}");
        }
        let c = HostConfig {
            log_entries_per_invocation: 1,
            ..Default::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn event_quotas_must_hold_the_largest_event() {
        let c = HostConfig {
            event_topic_quota_bytes: 256 << 10,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("per-topic event quota"), "{e}");
        let c = HostConfig {
            event_host_quota_bytes: 1 << 20,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.contains("host-wide event quota"), "{e}");
        let c = HostConfig {
            event_dead_letter_retention: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("dead-letter"));
    }

    #[test]
    fn retry_delays_double_with_jitter_above_the_base() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay_ms: 1000,
            max_delay_ms: 5000,
            max_age_ms: 3_600_000,
        };
        // First retry: exactly the base, jitter or not.
        assert_eq!(p.retry_delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.retry_delay(1, 0.99), Duration::from_secs(1));
        // Then uniform in [base, base * 2^(n-1)].
        assert_eq!(p.retry_delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.retry_delay(2, 0.5), Duration::from_millis(1500));
        assert_eq!(p.retry_delay(3, 1.0), Duration::from_secs(4));
        // Capped.
        assert_eq!(p.retry_delay(4, 1.0), Duration::from_secs(5));
        assert_eq!(p.retry_delay(60, 1.0), Duration::from_secs(5));
        assert_eq!(p.retry_delay(u32::MAX, 1.0), Duration::from_secs(5));
        for n in 1..30 {
            for u in [0.0, 0.3, 0.999] {
                let d = p.retry_delay(n, u);
                assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(5));
            }
        }
    }

    #[test]
    fn failures_retry_until_attempts_or_age_run_out() {
        let p = RetryPolicy::default();
        assert_eq!(p.after_failure(1, 0, 10, 0.0), Some(1010));
        assert!(p.after_failure(2, 0, 10, 0.5).is_some());
        assert_eq!(p.after_failure(3, 0, 10, 0.0), None);
        // Too old: the retry would be past the maximum age.
        assert_eq!(p.after_failure(1, 0, p.max_age_ms, 0.0), None);
        assert!(p.after_failure(1, 0, p.max_age_ms - 1001, 0.0).is_some());
    }

    #[test]
    fn policies_are_checked() {
        assert!(RetryPolicy::default().validate().is_ok());
        let bad = RetryPolicy {
            max_attempts: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = RetryPolicy {
            max_delay_ms: 1,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
