//! Retry settings of an event subscription.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Retry settings of a subscription (defaults from the host config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; it doubles for each
    /// further retry.
    pub base_delay_ms: u64,
    /// Upper bound of a retry delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Events older than this (milliseconds since they were published) are
    /// not retried.
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 5 * 60 * 1_000,
            max_age_ms: 60 * 60 * 1_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry), given
    /// `unit`, a uniform random number in `[0, 1)`.
    ///
    /// Exponential backoff with full jitter above a floor: the delay is
    /// uniform in `[base, min(cap, base * 2^(retry-1))]`. The floor keeps a
    /// failing handler from being retried faster than the base delay (pure
    /// full jitter can pick ~0); above it, jitter spreads retries of many
    /// deliveries that failed together.
    pub fn retry_delay(&self, retry: u32, unit: f64) -> Duration {
        let base = self.base_delay_ms.min(self.max_delay_ms);
        let exp = retry.saturating_sub(1).min(62);
        let ceiling = base
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms)
            .max(base);
        let span = (ceiling - base) as f64 * unit.clamp(0.0, 1.0);
        Duration::from_millis(base + span as u64)
    }

    /// What follows a failed attempt: `attempts` made so far (this one
    /// included), for an event published at `event_ms`, now `now_ms`.
    /// `Some(due_ms)` retries then; `None` makes the delivery dead.
    pub fn after_failure(
        &self,
        attempts: u32,
        event_ms: u64,
        now_ms: u64,
        unit: f64,
    ) -> Option<u64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let due = now_ms.saturating_add(self.retry_delay(attempts, unit).as_millis() as u64);
        // Not retried past the maximum age: the retry would be older.
        if due.saturating_sub(event_ms) > self.max_age_ms {
            return None;
        }
        Some(due)
    }

    /// Checks the values (API input).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(format!(
                "max_attempts must be between 1 and 100 (got {})",
                self.max_attempts
            ));
        }
        if self.base_delay_ms == 0 || self.max_delay_ms < self.base_delay_ms {
            return Err("the retry delays must be more than 0, the cap at least the base".into());
        }
        if self.max_age_ms == 0 {
            return Err("max_age must be more than 0".into());
        }
        Ok(())
    }
}
