//! `wisp logs NAME [--follow] [--since T] [--invocation ID] [--json]`: a
//! function's log lines (stdout, stderr, log calls and the host's notes),
//! read page by page from the admin API; `--follow` keeps polling for new
//! lines until interrupted.
//!
//! The lines are the guest's own output: on a terminal, their control
//! characters are escaped (`\u{1b}` for ESC), so that a guest cannot move
//! the cursor, retitle the window or hide a line of the reader's screen.
//! Piped, the text is exact, and `--json` is always exact.

use std::io::{IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use wisp_client::{Client, LogEntry, LogQuery, LogStream};

use crate::client::Connection;

/// How often `--follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `wisp logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// Function name.
    name: String,
    /// Keep printing new lines as they come (until ctrl-c).
    #[arg(short, long)]
    follow: bool,
    /// Only lines since then: an RFC 3339 time or a duration ago (`10m`,
    /// `2h`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only the lines of one invocation (its `wisp-invocation-id`).
    #[arg(long, value_name = "ID")]
    invocation: Option<String>,
    /// One JSON object per line, as the API returns them.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// Lines asked for per call.
const PAGE: usize = 1000;

pub async fn run(api: &Client, args: LogsArgs) -> Result<()> {
    let mut after: Option<u64> = None;
    loop {
        let query = LogQuery {
            invocation: args.invocation.clone(),
            // Once a page has been read, its cursor says where to go on.
            since: if after.is_none() {
                args.since.clone()
            } else {
                None
            },
            after,
            limit: Some(PAGE),
        };
        let page = api.logs(&args.name, &query).await?;
        let entries = page.entries;
        let mut out = std::io::stdout().lock();
        let terminal = out.is_terminal();
        for e in &entries {
            if args.json {
                // Through a `Value`: the keys sorted, as they always were.
                writeln!(out, "{}", serde_json::to_value(e)?)?;
            } else if terminal {
                writeln!(out, "{}", wisp_host::untrusted::escape(&line(e)))?;
            } else {
                writeln!(out, "{}", line(e))?;
            }
        }
        out.flush()?;
        after = page.cursor.or(after);
        if entries.len() < PAGE {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

/// `TIME INVOCATION STREAM[/LEVEL] MESSAGE`; in cluster mode `TIME NODE
/// INVOCATION ...`.
fn line(e: &LogEntry) -> String {
    let time =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.time_ms)).to_string();
    let stream = match e.stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::Log => "log",
        LogStream::Wisp => "wisp",
    };
    let stream = match e.level {
        Some(level) => format!("{stream}/{}", level_name(level)),
        None => stream.to_string(),
    };
    match &e.node {
        Some(node) => format!(
            "{time} {node} {} {stream:<9} {}",
            e.invocation_id, e.message
        ),
        None => format!("{time} {} {stream:<9} {}", e.invocation_id, e.message),
    }
}

/// A level as the API spells it (`info`).
fn level_name(level: wisp_client::LogLevel) -> String {
    serde_json::to_value(level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
