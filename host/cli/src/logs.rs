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
use serde_json::Value;

use crate::client::{Api, Connection};

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

pub async fn run(api: &Api, args: LogsArgs) -> Result<()> {
    let mut after: Option<u64> = None;
    loop {
        let mut query: Vec<(&str, String)> = vec![("limit", "1000".into())];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        } else if let Some(s) = &args.since {
            query.push(("since", s.clone()));
        }
        if let Some(id) = &args.invocation {
            query.push(("invocation", id.clone()));
        }
        let page = api.logs(&args.name, &query).await?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let terminal = out.is_terminal();
        for e in &entries {
            if args.json {
                writeln!(out, "{e}")?;
            } else if terminal {
                writeln!(out, "{}", wisp_host::untrusted::escape(&line(e)))?;
            } else {
                writeln!(out, "{}", line(e))?;
            }
        }
        out.flush()?;
        after = page["cursor"].as_u64().or(after);
        if entries.len() < 1000 {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}

/// `TIME INVOCATION STREAM[/LEVEL] MESSAGE`.
fn line(e: &Value) -> String {
    let time = e["time_ms"]
        .as_u64()
        .map(|ms| {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
        .unwrap_or_default();
    let stream = e["stream"].as_str().unwrap_or("?");
    let stream = match e["level"].as_str() {
        Some(level) => format!("{stream}/{level}"),
        None => stream.to_string(),
    };
    format!(
        "{time} {} {stream:<9} {}",
        e["invocation_id"].as_str().unwrap_or("-"),
        e["message"].as_str().unwrap_or("")
    )
}
