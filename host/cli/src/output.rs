//! What the commands print: JSON as the server answered it, tables and
//! lists for people, and stdout that may close early (`wisp list | head`).

use std::io::Write as _;

use anyhow::Result;
use serde::Serialize;

/// Characters of a sha256 shown in tables.
const SHORT_SHA: usize = 12;

/// Pretty-prints a JSON answer. (Object keys come out sorted: serde_json's
/// `Value` keeps insertion order only with its `preserve_order` feature.)
pub(crate) fn print_json(answer: &impl Serialize) -> Result<()> {
    // Through a `Value`, so that the keys are sorted as they always were.
    let value = serde_json::to_value(answer)?;
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Like `print!`, but a closed stdout (`wisp list | head -1`) is an error,
/// not a panic.
pub(crate) fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub(crate) fn short_sha(sha256: &str) -> &str {
    sha256.get(..SHORT_SHA).unwrap_or(sha256)
}

/// `http requests, events (event handler)` and the like, for `wisp info`.
pub(crate) fn describe_handlers(handlers: &[String]) -> String {
    let described: Vec<&str> = handlers
        .iter()
        .map(|h| match h.as_str() {
            "http" => "http requests",
            "events" => "events (event handler)",
            "cgi" => "http requests (preview-1 module, CGI)",
            other => other,
        })
        .collect();
    if described.is_empty() {
        "(unknown)".into()
    } else {
        described.join(", ")
    }
}

/// What kind of wasm a function is, for `wisp info`.
pub(crate) fn describe_kind(kind: Option<&str>) -> String {
    match kind {
        Some("wasi-0.2-component") => "component, WASI 0.2".into(),
        Some("wasi-0.3-component") => "component, WASI 0.3".into(),
        Some("wasi-preview1-module") => "module, WASI preview 1 (run CGI-style)".into(),
        Some(other) => other.into(),
        None => "(unknown)".into(),
    }
}

pub(crate) fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

pub(crate) fn lines_or_none(items: &[String], indent: usize) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(&format!("\n{:indent$}", ""))
    }
}

/// Left-aligned columns two spaces apart, a header line first, no borders
/// (comfy-table, its `NOTHING` preset).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows.iter().cloned());
    // One space on each side of every cell makes two between columns;
    // none before the first.
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    let mut out = String::new();
    // The preset draws its lines with spaces: skip those that are blank.
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time in ms since the Unix epoch as RFC 3339 (seconds), or `-` for
/// none.
pub(crate) fn format_time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) if ms > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        _ => "-".into(),
    }
}

/// When a token or a key expires: `never`, or the time, marked if it has
/// passed.
pub(crate) fn expiry(expires_ms: Option<u64>) -> String {
    let Some(at) = expires_ms else {
        return "never".into();
    };
    let passed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|now| now.as_millis() >= u128::from(at));
    let when = format_time(Some(at));
    if passed {
        format!("{when} (expired)")
    } else {
        when
    }
}
