//! `wisp stats NAME [--step 1m] [--json]`: a function's last hour on the
//! host (all its versions), as the host keeps it in memory: per step, the
//! invocations finished, those answered 5xx, and the median and 99th
//! percentile latency. Steps without invocations are left out.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use wisp_client::{Client, FunctionStats};

use crate::client::Connection;
use crate::output::{print_json, table, write_stdout};
use crate::units::parse_duration;

/// `wisp stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Function name.
    name: String,
    /// Time per row: a multiple of 10 s up to 1h (`10s`, `1m`, `5m`).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    step: Duration,
    /// The answer as the API gives it: every step, in columns.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

pub async fn run(api: &Client, args: StatsArgs) -> Result<()> {
    // The host checks the step, and says what it takes.
    let stats = api.stats(&args.name, Some(args.step.as_secs())).await?;
    if args.json {
        return print_json(&stats);
    }
    let rows = rows(&stats);
    if rows.is_empty() {
        eprintln!("no invocations of {} in the last hour", args.name);
        return Ok(());
    }
    write_stdout(&table(
        &["TIME (UTC)", "REQUESTS", "ERRORS", "P50", "P99"],
        &rows,
    ))
}

/// One row per step with invocations: when it starts, the counts and the
/// percentiles.
fn rows(stats: &FunctionStats) -> Vec<Vec<String>> {
    let s = &stats.series;
    let n = s.requests.len() as u64;
    (0..s.requests.len())
        .filter(|&i| s.requests[i] > 0)
        .map(|i| {
            let start = stats
                .end_unix
                .saturating_sub((n - i as u64) * stats.step_seconds);
            vec![
                clock(start),
                s.requests[i].to_string(),
                s.errors[i].to_string(),
                latency(s.p50_ms[i]),
                latency(s.p99_ms[i]),
            ]
        })
        .collect()
}

/// `HH:MM:SS` of a Unix time, UTC.
fn clock(unix: u64) -> String {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string();
    // `2026-12-05T17:30:00Z`
    t.get(11..19).unwrap_or(&t).to_string()
}

/// A latency in milliseconds, in the unit that reads best.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1.0 => format!("{:.0}µs", ms * 1000.0),
        Some(ms) if ms < 1000.0 => format!("{ms:.1}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_client::StatsSeries;

    #[test]
    fn rows_are_the_steps_with_invocations_with_their_start_time() {
        let stats = FunctionStats {
            step_seconds: 60,
            end_unix: 1_764_950_400, // 2025-12-05T16:00:00Z
            series: StatsSeries {
                function: "hello".into(),
                requests: vec![0, 3, 0, 2],
                errors: vec![0, 1, 0, 0],
                p50_ms: vec![None, Some(0.5), None, Some(12.34)],
                p99_ms: vec![None, Some(2.0), None, Some(1500.0)],
            },
        };
        assert_eq!(
            rows(&stats),
            [
                ["15:57:00", "3", "1", "500µs", "2.0ms"],
                ["15:59:00", "2", "0", "12.3ms", "1.50s"],
            ]
        );
    }
}
