//! `wisp kv`: read and write a function's key-value data through the admin
//! API (`/v1/functions/{name}/kv`), under the same limits as the function's
//! own writes.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use wisp_client::Client;

use crate::client::Connection;
use crate::output::{print_json, write_stdout};
use crate::units::parse_duration;

/// Page size used when following cursors (the API's maximum).
const PAGE: u32 = 1000;

/// `wisp kv ...`.
#[derive(Subcommand)]
pub enum KvCommand {
    /// Print the value of a key to stdout, byte for byte.
    Get(KeyArgs),
    /// Set a key: to VALUE, to a file's contents (@FILE) or to stdin (@-).
    Set(SetArgs),
    /// Delete a key.
    Delete(KeyArgs),
    /// List keys (every page), one a line.
    List(ListArgs),
}

impl KvCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            KvCommand::Get(a) | KvCommand::Delete(a) => &a.connection,
            KvCommand::Set(a) => &a.connection,
            KvCommand::List(a) => &a.connection,
        }
    }
}

/// `wisp kv get` and `wisp kv delete`.
#[derive(Args)]
pub struct KeyArgs {
    /// Function name.
    name: String,
    /// The key (not empty).
    #[arg(value_parser = non_empty_key)]
    key: String,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp kv set`.
#[derive(Args)]
pub struct SetArgs {
    /// Function name.
    name: String,
    /// The key (not empty).
    #[arg(value_parser = non_empty_key)]
    key: String,
    /// The value: text, `@FILE` for a file's contents, `@-` for stdin.
    value: String,
    /// The key expires after this long (10s, 500ms, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp kv list`.
#[derive(Args)]
pub struct ListArgs {
    /// Function name.
    name: String,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print the keys as a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Refuses an empty key here: it would name no endpoint of the admin API.
fn non_empty_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("a key cannot be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// Runs a `wisp kv` command.
pub async fn run(api: &Client, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get(a) => get(api, a).await,
        KvCommand::Set(a) => set(api, a).await,
        KvCommand::Delete(a) => delete(api, a).await,
        KvCommand::List(a) => list(api, a).await,
    }
}

async fn get(api: &Client, args: KeyArgs) -> Result<()> {
    let value = api.kv_get(&args.name, &args.key).await?;
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&value)?;
    stdout.flush()?;
    Ok(())
}

/// The value argument: text, `@FILE` or `@-` (stdin).
async fn read_value(arg: &str) -> Result<Vec<u8>> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut data = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut data)
                .await
                .context("cannot read the value from stdin")?;
            Ok(data)
        }
        Some(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read the value from {path}")),
        None => Ok(arg.as_bytes().to_vec()),
    }
}

async fn set(api: &Client, args: SetArgs) -> Result<()> {
    let value = read_value(&args.value).await?;
    if let Some(ttl) = args.ttl {
        u64::try_from(ttl.as_millis()).context("--ttl is too large")?;
        if ttl.as_millis() == 0 {
            bail!("--ttl must be at least 1ms");
        }
    }
    let bytes = api.kv_set(&args.name, &args.key, value, args.ttl).await?;
    write_stdout(&format!(
        "set {} on {} ({bytes} bytes)\n",
        args.key, args.name
    ))
}

async fn delete(api: &Client, args: KeyArgs) -> Result<()> {
    api.kv_delete(&args.name, &args.key).await?;
    write_stdout(&format!("deleted {} on {}\n", args.key, args.name))
}

async fn list(api: &Client, args: ListArgs) -> Result<()> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = api
            .kv_list(&args.name, &args.prefix, cursor.as_deref(), PAGE)
            .await?;
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if args.json {
        return print_json(&keys);
    }
    let mut out = String::new();
    for key in &keys {
        out.push_str(key);
        out.push('\n');
    }
    write_stdout(&out)
}
