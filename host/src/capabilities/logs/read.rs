//! Reading a function's log (the admin API's `GET .../logs`).

use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::LogEntry;
use crate::store::StoreError;

/// What to read from a function's log.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines of this invocation.
    pub invocation: Option<String>,
    /// Only lines written since then: an RFC 3339 time or a duration ago
    /// (`10m`, `2h`).
    pub since: Option<String>,
    /// Only lines after this position (the `cursor` of a previous page).
    pub after: Option<u64>,
    /// At most this many lines (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A page of a function's log, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    /// The lines.
    pub entries: Vec<LogEntry>,
    /// Pass as `after` to read what comes next (also when following).
    pub cursor: Option<u64>,
}

/// Parses `since`: an RFC 3339 time, or a duration ago.
pub(crate) fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now_ms.saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(format!(
            "since must be an RFC 3339 time (2026-01-02T03:04:05Z) or a duration ago (10m, 2h), not {s:?}"
        )),
    }
}

/// Why a log read failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No function of that name.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// A query parameter is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read's blocking task failed.
    #[error("log read task: {0}")]
    Internal(String),
    /// As many live streams are open as the host allows.
    #[error(
        "{} log streams are open on this host, the most it serves: close one, or try again later",
        super::MAX_STREAMS
    )]
    TooManyStreams,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(
            parse_since("2027-01-15T08:00:00Z", now),
            Ok(1_800_000_000_000)
        );
        assert!(
            parse_since("yesterday-ish", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
