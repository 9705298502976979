//! Typed host configuration and per-function limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 30_000,
            memory_bytes: 128 << 20,
            max_body_bytes: 6 << 20,
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
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
}

impl LimitOverrides {
    /// Applies the overrides on top of `base`.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            max_body_bytes: self.max_body_bytes.unwrap_or(base.max_body_bytes),
        }
    }
}

/// Where the host keeps its data.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A directory on disk, created if missing.
    Dir(PathBuf),
    /// A temporary store, deleted when the host is dropped (tests, embedding).
    Temporary,
}

/// Everything a [`Host`](crate::Host) is built from. Checked by
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
    /// sled page-cache size in bytes. sled defaults to 1 GiB, which lets the
    /// host's memory grow with the store; edge devices cannot afford that.
    pub store_cache_bytes: u64,
    /// Use the pooling instance allocator (falls back to on-demand when the
    /// address space cannot be reserved).
    pub pooling: bool,
    /// The admin bearer token; `None` reads or generates `admin-token` in the
    /// data directory.
    pub admin_token: Option<String>,
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
            store_cache_bytes: 16 << 20,
            pooling: true,
            admin_token: None,
        }
    }
}

impl HostConfig {
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
        if self.max_upload_bytes == 0 {
            return Err("the upload limit must be more than 0".into());
        }
        if let Some(t) = &self.admin_token
            && t.trim().len() < 16
        {
            return Err("the admin token must be at least 16 characters".into());
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
        Ok(())
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
        let l = Limits {
            memory_bytes: 8 << 30,
            ..Default::default()
        };
        assert!(HostConfig::default().check_limits(&l).is_err());
    }
}
