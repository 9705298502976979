//! Per-function rate limits (`wisp deploy --rate-limit 100/s`): the spec a
//! deploy gives, and the token bucket the data plane checks before a
//! request is admitted.
//!
//! The bucket is the generic cell rate algorithm (GCRA), which behaves
//! exactly like a token bucket of `burst` tokens refilled at the rate, but
//! keeps one number: the theoretical arrival time (TAT) of the next
//! request. Checking it is one atomic load and one compare-and-swap, no
//! lock and no allocation. One bucket per function, kept in its
//! [`Admission`](super::admission::Admission) so that it lives exactly as
//! long as the function does (a new version keeps the tokens spent) and
//! no map of buckets grows on the side. Per host: in a cluster each host
//! counts its own requests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use metrics::Counter;
use serde::{Deserialize, Serialize};

use super::target::Deployed;
use crate::error::ApiError;

/// Requests rate-limited (429 `rate_limited`), by function.
pub const RATE_LIMITED: &str = "wisp_rate_limited_total";

/// Most requests a rate may allow per period, and largest burst: beyond
/// them a limit would be no limit.
pub const MAX_RATE_REQUESTS: u32 = 1_000_000;

/// A function's rate limit: `requests` per `period_s` seconds, with up to
/// `burst` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub requests: u32,
    /// The period in seconds: 1 (`/s`), 60 (`/m`) or 3600 (`/h`).
    pub period_s: u32,
    /// Requests allowed at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

impl RateLimit {
    /// Parses `N/s`, `N/m`, `N/h`, optionally followed by `,burst=B`.
    /// `none` and `off` answer `None` (no limit). The default burst is the
    /// rate per second, at least 1.
    pub fn parse(text: &str) -> Result<Option<RateLimit>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = |why: String| {
            format!(
                "rate limit {text:?}: {why} (give N/s, N/m or N/h, optionally ,burst=B, with N \
                 and B from 1 to {MAX_RATE_REQUESTS}; none or off removes the limit)"
            )
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, rest)) => {
                let value = rest
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or_else(|| bad(format!("{:?} is not burst=B", rest.trim())))?;
                (
                    rate,
                    Some(count(value.trim()).map_err(|w| bad(format!("burst {w}")))?),
                )
            }
            None => (text, None),
        };
        let (n, unit) = rate
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("no period (/s, /m or /h)".into()))?;
        let requests = count(n.trim()).map_err(|w| bad(format!("the rate {w}")))?;
        let period_s = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            other => return Err(bad(format!("unknown period {other:?}"))),
        };
        let burst = burst.unwrap_or((requests / period_s).max(1));
        Ok(Some(RateLimit {
            requests,
            period_s,
            burst,
        }))
    }

    /// Time between two requests at the steady rate, in nanoseconds (at
    /// least 1).
    fn interval_ns(&self) -> u64 {
        (u64::from(self.period_s) * 1_000_000_000 / u64::from(self.requests.max(1))).max(1)
    }
}

/// A whole number from 1 to [`MAX_RATE_REQUESTS`], or why not.
fn count(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n == 0 {
        return Err("is 0".into());
    }
    if n > MAX_RATE_REQUESTS {
        return Err(format!("is over {MAX_RATE_REQUESTS}"));
    }
    Ok(n)
}

impl fmt::Display for RateLimit {
    /// The spec again, as `--rate-limit` takes it: `100/s,burst=200`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period_s {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => {
                return write!(
                    f,
                    "{}/{}s,burst={}",
                    self.requests, self.period_s, self.burst
                );
            }
        };
        write!(f, "{}/{unit},burst={}", self.requests, self.burst)
    }
}

/// One function's token bucket (see the module docs), and the count of
/// the requests it refused.
pub(crate) struct RateBucket {
    /// When this bucket's clock started: TATs are nanoseconds after it.
    origin: Instant,
    /// The theoretical arrival time of the next request, ns after
    /// `origin`: a request earlier than `tat - burst_tolerance` is refused.
    tat: AtomicU64,
    /// `wisp_rate_limited_total{function}`.
    pub(crate) refused: Counter,
}

impl RateBucket {
    /// A full bucket for function `name`.
    pub(crate) fn new(name: &str) -> RateBucket {
        let refused = metrics::counter!(RATE_LIMITED, "function" => name.to_string());
        // Shown at 0 from the start, like the other counters.
        refused.increment(0);
        RateBucket {
            origin: Instant::now(),
            tat: AtomicU64::new(0),
            refused,
        }
    }

    /// Takes a token under `limit` now, or answers how long until one is
    /// there (counted as a refusal).
    #[inline]
    pub(crate) fn take(&self, limit: &RateLimit) -> Result<(), Duration> {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.take_at(limit, now).inspect_err(|_| {
            self.refused.increment(1);
        })
    }

    /// [`take`](Self::take) at `now` ns after the origin.
    fn take_at(&self, limit: &RateLimit, now: u64) -> Result<(), Duration> {
        let interval = limit.interval_ns();
        let tolerance = interval.saturating_mul(u64::from(limit.burst.max(1) - 1));
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            // Never further ahead than this limit itself can get (one
            // full bucket spent): after a deploy that changed the rate,
            // a TAT left by the old rate must not stall the new one.
            let base = tat
                .max(now)
                .min(now.saturating_add(tolerance).saturating_add(interval));
            let ahead = base - now;
            if ahead > tolerance {
                if base < tat {
                    // Keep the clamp, or the old TAT would stall this
                    // rate for good (cold: only after a change of rate).
                    let _ =
                        self.tat
                            .compare_exchange(tat, base, Ordering::Relaxed, Ordering::Relaxed);
                }
                return Err(Duration::from_nanos(ahead - tolerance));
            }
            match self.tat.compare_exchange_weak(
                tat,
                base.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// The rate-limit check of a data-plane request to `target`, before it is
/// admitted: none when the function has no limit or a token is free,
/// else the 429 `rate_limited` answer (with `Retry-After`).
#[inline]
pub(crate) fn refusal(target: &Deployed) -> Option<Response<Body>> {
    let limit = target.limits.rate_limit.as_ref()?;
    let wait = target.admission.rate.take(limit).err()?;
    Some(refused(target, limit, wait))
}

#[cold]
fn refused(target: &Deployed, limit: &RateLimit, wait: Duration) -> Response<Body> {
    let secs = retry_after_secs(wait);
    let error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "function {:?} is over its rate limit of {} requests per {} (burst {}); retry in {secs} s",
            target.name,
            limit.requests,
            match limit.period_s {
                1 => "second".to_string(),
                60 => "minute".to_string(),
                3600 => "hour".to_string(),
                s => format!("{s} seconds"),
            },
            limit.burst
        ),
    )
    .retry_after(secs);
    axum::response::IntoResponse::into_response(error)
}

/// The limits of a new version with the deploy's `rate_limit` applied:
/// set, removed (`none`, `off`) or, unset, as `limits` has it.
pub(crate) fn resolve(
    asked: Option<&str>,
    mut limits: crate::config::Limits,
) -> Result<crate::config::Limits, crate::error::DeployError> {
    if let Some(text) = asked {
        limits.rate_limit =
            RateLimit::parse(text).map_err(crate::error::DeployError::InvalidArgument)?;
    }
    Ok(limits)
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> RateLimit {
        RateLimit::parse(text).unwrap().unwrap()
    }

    #[test]
    fn parses_rates_periods_and_bursts() {
        let l = limit("100/s");
        assert_eq!((l.requests, l.period_s, l.burst), (100, 1, 100));
        let l = limit("100/m");
        assert_eq!(
            (l.requests, l.period_s, l.burst),
            (100, 60, 1),
            "at least 1"
        );
        let l = limit("7200/h");
        assert_eq!((l.requests, l.period_s, l.burst), (7200, 3600, 2));
        let l = limit(" 5/s, burst=20 ");
        assert_eq!((l.requests, l.period_s, l.burst), (5, 1, 20));
        assert_eq!(l.to_string(), "5/s,burst=20");
        assert_eq!(limit(&l.to_string()), l, "its display parses back");
        for off in ["none", "off", "NONE"] {
            assert_eq!(RateLimit::parse(off).unwrap(), None);
        }
    }

    #[test]
    fn refuses_bad_specs_naming_the_problem() {
        for (bad, why) in [
            ("0/s", "is 0"),
            ("abc", "no period"),
            ("10/fortnight", "unknown period"),
            ("ten/s", "not a whole number"),
            ("-1/s", "not a whole number"),
            ("5/s,burst=0", "burst is 0"),
            ("5/s,size=3", "not burst=B"),
            ("2000000/s", "over"),
            ("", "no period"),
        ] {
            let e = RateLimit::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("N/s"), "{bad:?} says what is expected: {e}");
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let bucket = RateBucket::new("rate-test");
        let l = limit("5/s");
        // A full bucket: 5 at once, the 6th waits 200 ms.
        for _ in 0..5 {
            bucket.take_at(&l, 0).unwrap();
        }
        let wait = bucket.take_at(&l, 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200));
        // One token comes back every 200 ms.
        bucket.take_at(&l, 200_000_000).unwrap();
        assert!(bucket.take_at(&l, 200_000_000).is_err());
        // After a quiet second, the whole burst again (not more).
        let later = 5_000_000_000;
        for _ in 0..5 {
            bucket.take_at(&l, later).unwrap();
        }
        assert!(bucket.take_at(&l, later).is_err());
    }

    #[test]
    fn a_slower_rate_then_a_faster_one_does_not_stall() {
        let bucket = RateBucket::new("rate-test-change");
        let slow = limit("1/h");
        bucket.take_at(&slow, 0).unwrap();
        let wait = bucket.take_at(&slow, 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(3600));
        // A deploy made it 10/s: within a tenth of a second it serves.
        let fast = limit("10/s");
        let wait = bucket.take_at(&fast, 0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        bucket.take_at(&fast, 100_000_000).unwrap();
    }

    #[test]
    fn a_deploy_sets_keeps_or_removes_the_limit() {
        use crate::config::Limits;
        let set = resolve(Some("5/s"), Limits::default()).unwrap();
        assert_eq!(set.rate_limit, Some(limit("5/s")));
        // Unset: as the active version has it (other limits untouched).
        assert_eq!(resolve(None, set).unwrap(), set);
        assert_eq!(resolve(Some("off"), set).unwrap().rate_limit, None);
        let e = resolve(Some("10/fortnight"), set).unwrap_err();
        assert!(e.to_string().contains("fortnight"), "{e}");
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
