//! Cron parsing and when a schedule fires.
//!
//! Input (text): the cron expression on the first line, the time zone on
//! the second, then up to three instants (ms since the epoch; missing or
//! unparsable ones are derived from the input). An expression that parses
//! must give ticks on the right side of the instant asked about, and
//! `due_tick` only a tick after creation and after the last one fired.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_host::fuzzing::{due_tick, parse_cron};

/// Instants are kept below year ~2248, where real schedules live (larger
/// ones simply have no tick).
const SPAN_MS: u64 = 1 << 43;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let expr = lines.next().unwrap_or("");
    let tz = lines.next().unwrap_or("UTC");
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut times = [0u64; 3];
    for (i, t) in times.iter_mut().enumerate() {
        *t = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(seed.rotate_left(17 * i as u32))
            % SPAN_MS;
    }
    let Ok(spec) = parse_cron(expr, tz) else {
        return;
    };
    let fields = expr.split_whitespace().count();
    assert!((5..=6).contains(&fields));

    let [a, b, c] = times;
    if let Some(next) = spec.next_after(a) {
        assert!(
            next > a,
            "next tick {next} not after {a} ({expr:?} in {tz})"
        );
    }
    if let Some(prev) = spec.last_at_or_before(a) {
        assert!(prev <= a, "last tick {prev} after {a} ({expr:?} in {tz})");
    }
    let (created, last_fired, now) = (a.min(b), b, a.max(c));
    if let Some(tick) = due_tick(&spec, created, last_fired, now) {
        assert!(tick <= now && tick > created && tick > last_fired);
        // Recorded as fired, it does not fire again at the same instant.
        assert_eq!(due_tick(&spec, created, tick, now), None);
    }
});
