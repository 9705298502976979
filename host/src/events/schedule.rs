//! Schedules: cron expressions, time zones and when a schedule fires. Pure
//! logic, with the clock passed in (milliseconds since the epoch), so the
//! next-tick and missed-tick rules are tested without waiting.
//!
//! Expressions are standard 5-field cron (`minute hour day-of-month month
//! day-of-week`, with `*`, lists, ranges, steps and names), parsed by the
//! `croner` crate. As an extension a 6th, leading field gives seconds
//! (`*/5 * * * * *`: every five seconds).

use std::str::FromStr as _;

use chrono::{TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// A stored schedule: each tick enqueues one event for `function`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    /// Unique id.
    #[schema(value_type = String)]
    #[serde(with = "super::id_string")]
    pub id: u64,
    /// The function.
    pub function: String,
    /// The cron expression, as given.
    pub cron: String,
    /// IANA time zone the expression is evaluated in (`UTC`,
    /// `Europe/Paris`).
    pub tz: String,
    /// Path of the `POST` each tick is delivered as (a function without an
    /// event handler).
    pub path: String,
    /// Body of each tick's event.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
    /// Content type of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// When it was created, ms since the epoch.
    pub created_at_ms: u64,
    /// The tick it last fired for, ms since the epoch (0: never).
    #[serde(default)]
    pub last_fired_ms: u64,
    /// The next tick, ms since the epoch (in answers; not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<u64>,
}

impl Schedule {
    /// This schedule with its next tick after `now_ms` filled in.
    pub fn with_next(mut self, now_ms: u64) -> Schedule {
        self.next_ms = parse(&self.cron, &self.tz)
            .ok()
            .and_then(|spec| spec.next_after(now_ms.max(self.last_fired_ms)));
        self
    }
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: chrono_tz::Tz,
}

/// Parses `expr` (5 fields, or 6 with leading seconds) in time zone `tz`.
pub fn parse(expr: &str, tz: &str) -> Result<CronSpec, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "cron expression {expr:?} has {fields} fields; expected 5 (minute hour day month \
             weekday) or 6 (with leading seconds)"
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron expression {expr:?}: {e}"))?;
    let tz = chrono_tz::Tz::from_str(tz).map_err(|_| {
        format!("unknown time zone {tz:?}: use an IANA name such as UTC or Europe/Paris")
    })?;
    Ok(CronSpec { cron, tz })
}

/// 2000-01-01T00:00:00Z: where [`parse_new`] looks for a first tick.
const FIRST_TICK_FROM_MS: u64 = 946_684_800_000;

/// Parses the expression of a new schedule: as [`parse`], and refused if it
/// never fires (`0 0 30 2 *`: February 30th never comes).
///
/// Without a year field an expression repeats with the calendar, whose
/// weekdays and leap years repeat every 400 years, so one with no tick after
/// a fixed instant has none at all; `croner` bounds the search. Only new
/// schedules are checked: the scheduler's passes parse stored expressions
/// with [`parse`] and pay nothing for it.
pub fn parse_new(expr: &str, tz: &str) -> Result<CronSpec, String> {
    let spec = parse(expr, tz)?;
    if spec.next_after(FIRST_TICK_FROM_MS).is_none() {
        return Err(format!(
            "cron expression {expr:?} never fires: no date matches it (such as February 30th)"
        ));
    }
    Ok(spec)
}

impl CronSpec {
    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let t = self.at(after_ms)?;
        let next = self.cron.find_next_occurrence(&t, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last tick at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let t = self.at(at_ms)?;
        let prev = self.cron.find_previous_occurrence(&t, true).ok()?;
        u64::try_from(prev.timestamp_millis()).ok()
    }

    fn at(&self, ms: u64) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        let utc = Utc.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
        Some(utc.with_timezone(&self.tz))
    }
}

/// Whether a schedule fires now: the latest tick after both its creation
/// and the tick it last fired for, at or before `now_ms`. However many ticks
/// were missed (the host was down), it fires once, for the latest; the
/// caller records that tick as `last_fired_ms`.
pub fn due_tick(spec: &CronSpec, created_ms: u64, last_fired_ms: u64, now_ms: u64) -> Option<u64> {
    let tick = spec.last_at_or_before(now_ms)?;
    (tick > last_fired_ms && tick > created_ms).then_some(tick)
}

/// Marks an event id as a schedule tick's: ordinary ids count up from 0
/// (sled's id generator) and never reach it.
pub const TICK_ID_BIT: u64 = 1 << 63;

/// The event id of `schedule`'s tick at `tick_ms`: the same every time
/// that tick fires (a tick enqueued just before a crash, whose
/// `last_fired_ms` was not yet on disk, fires again after the restart), so
/// a handler can deduplicate on it and the store writes the event once.
///
/// [`TICK_ID_BIT`] keeps it apart from ordinary ids; the other 63 bits are
/// the first bytes of a SHA-256 of both (a stable function, unlike std's
/// hasher, whose algorithm may change between Rust releases). Two ticks
/// collide with odds of about 2^-63 per pair of events stored at once.
pub fn tick_event_id(schedule: u64, tick_ms: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"wisp schedule tick\0");
    h.update(schedule.to_be_bytes());
    h.update(tick_ms.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    TICK_ID_BIT | (u64::from_be_bytes(first) & !TICK_ID_BIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_ids_are_stable_distinct_and_apart_from_ordinary_ids() {
        let a = tick_event_id(7, T0);
        assert_eq!(a, tick_event_id(7, T0), "the same tick, the same id");
        assert_ne!(a, tick_event_id(7, T0 + MIN), "another tick");
        assert_ne!(a, tick_event_id(8, T0), "another schedule");
        for (s, t) in [(0, 0), (1, T0), (u64::MAX, u64::MAX)] {
            assert!(tick_event_id(s, t) & TICK_ID_BIT != 0);
        }
        // Pinned: ids must not change between releases (a tick fired before
        // an upgrade and again after it keeps its id).
        assert_eq!(
            crate::events::format_id(tick_event_id(1, T0)),
            "b1448408ea7827e0"
        );
        let ids: std::collections::HashSet<u64> = (0..1000)
            .flat_map(|s| (0..10).map(move |m| tick_event_id(s, T0 + m * MIN)))
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600_000;
    const MIN: u64 = 60_000;

    #[test]
    fn parses_five_and_six_fields_and_zones() {
        assert!(parse("*/5 * * * *", "UTC").is_ok());
        assert!(parse("0 9 * * MON-FRI", "Europe/Paris").is_ok());
        assert!(parse("*/2 * * * * *", "UTC").is_ok());
        for bad in ["* * * *", "* * * * * * *", "61 * * * *", "nonsense", ""] {
            assert!(parse(bad, "UTC").is_err(), "{bad:?}");
        }
        let e = parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("time zone"), "{e}");
    }

    #[test]
    fn new_schedules_that_never_fire_are_refused() {
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 30 FEB * "] {
            let started = std::time::Instant::now();
            let e = parse_new(never, "Europe/Paris").unwrap_err();
            assert!(e.contains("never fires"), "{never}: {e}");
            // The search is bounded, and cheap enough for an admin call.
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{never}: {:?}",
                started.elapsed()
            );
            // Stored ones still parse (and simply never come due).
            assert!(parse(never, "UTC").is_ok());
        }
        // Rare is not never: February 29th, the 31st of the months that
        // have one, a weekday as well as an impossible day (either matches).
        for rare in ["0 0 29 2 *", "0 0 31 * *", "0 12 30 2 MON", "*/5 * * * *"] {
            assert!(parse_new(rare, "UTC").is_ok(), "{rare}");
        }
        // The other errors are parse's.
        assert!(parse_new("61 * * * *", "UTC").is_err());
        assert!(parse_new("* * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn next_ticks() {
        let every5 = parse("*/5 * * * *", "UTC").unwrap();
        assert_eq!(every5.next_after(T0), Some(T0 + 5 * MIN));
        assert_eq!(every5.next_after(T0 + 1), Some(T0 + 5 * MIN));
        assert_eq!(every5.next_after(T0 - 1), Some(T0));
        let secs = parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(secs.next_after(T0), Some(T0 + 2000));
        // 09:00 in Paris is 08:00 UTC in January.
        let paris = parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(paris.next_after(T0), Some(T0 + 8 * 60 * MIN));
    }

    #[test]
    fn missed_ticks_fire_once_for_the_latest() {
        let every_min = parse("* * * * *", "UTC").unwrap();
        let created = T0 + 10;
        // Before the first tick after creation: nothing.
        assert_eq!(due_tick(&every_min, created, 0, T0 + MIN - 1), None);
        // At the tick: fires.
        assert_eq!(due_tick(&every_min, created, 0, T0 + MIN), Some(T0 + MIN));
        // Recorded: not again until the next tick.
        assert_eq!(
            due_tick(&every_min, created, T0 + MIN, T0 + MIN + 30_000),
            None
        );
        // Down for an hour: one firing, for the latest tick.
        let later = T0 + 61 * MIN + 5;
        assert_eq!(
            due_tick(&every_min, created, T0 + MIN, later),
            Some(T0 + 61 * MIN)
        );
        assert_eq!(due_tick(&every_min, created, T0 + 61 * MIN, later), None);
    }
}
