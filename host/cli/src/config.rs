//! `wisp config`: a function's settings and secrets through the admin API
//! (`/v1/functions/{name}/config`). A change reaches the next invocation
//! without a redeploy. Secret values are never printed: the host never
//! sends them back.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use wisp_client::{Client, SetConfig};

use crate::client::Connection;
use crate::output::{print_json, table, write_stdout};

/// `wisp config ...`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set settings (or, with --secret, secrets), all or none.
    Set(SetArgs),
    /// List settings and secrets (secret values masked).
    List(ListArgs),
    /// Remove settings or secrets, all or none.
    Unset(UnsetArgs),
}

impl ConfigCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            ConfigCommand::Set(a) => &a.connection,
            ConfigCommand::List(a) => &a.connection,
            ConfigCommand::Unset(a) => &a.connection,
        }
    }
}

/// `wisp config set`.
#[derive(Args)]
pub struct SetArgs {
    /// Function name.
    name: String,
    /// Settings to set.
    #[arg(value_name = "KEY=VALUE", required = true)]
    pairs: Vec<String>,
    /// Store them as secrets: readable by the function, never shown again.
    #[arg(long)]
    secret: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp config list`.
#[derive(Args)]
pub struct ListArgs {
    /// Function name.
    name: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp config unset`.
#[derive(Args)]
pub struct UnsetArgs {
    /// Function name.
    name: String,
    /// Keys to remove.
    #[arg(value_name = "KEY", required = true)]
    keys: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

/// Runs a `wisp config` command.
pub async fn run(api: &Client, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Set(a) => set(api, a).await,
        ConfigCommand::List(a) => list(api, a).await,
        ConfigCommand::Unset(a) => unset(api, a).await,
    }
}

/// `KEY=VALUE` pairs; the value may contain `=`. Errors never show values.
fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for (i, pair) in pairs.iter().enumerate() {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                values.insert(key.to_string(), value.to_string());
            }
            _ => bail!("setting {} of {} is not KEY=VALUE", i + 1, pairs.len()),
        }
    }
    Ok(values)
}

async fn set(api: &Client, args: SetArgs) -> Result<()> {
    let values = parse_pairs(&args.pairs)?;
    let keys: Vec<String> = values.keys().cloned().collect();
    let set = SetConfig {
        values,
        secret: args.secret,
    };
    api.config_set(&args.name, &set).await?;
    let what = match (args.secret, keys.len()) {
        (true, 1) => "secret",
        (true, _) => "secrets",
        (false, 1) => "setting",
        (false, _) => "settings",
    };
    write_stdout(&format!(
        "set {what} {} on {}\n",
        keys.join(", "),
        args.name
    ))
}

async fn list(api: &Client, args: ListArgs) -> Result<()> {
    let list = api.config_list(&args.name).await?;
    if args.json {
        return print_json(&list);
    }
    if list.entries.is_empty() {
        eprintln!("{} has no settings or secrets", args.name);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .entries
        .into_iter()
        .map(|e| {
            vec![
                e.key,
                e.value,
                if e.secret { "secret" } else { "" }.to_string(),
            ]
        })
        .collect();
    write_stdout(&table(&["KEY", "VALUE", "KIND"], &rows))
}

async fn unset(api: &Client, args: UnsetArgs) -> Result<()> {
    // All or none: check every key first (the API removes one per call).
    let list = api.config_list(&args.name).await?;
    for key in &args.keys {
        if !list.entries.iter().any(|e| &e.key == key) {
            bail!("config key {key:?} is not set on {}", args.name);
        }
    }
    for key in &args.keys {
        api.config_unset(&args.name, key).await?;
    }
    write_stdout(&format!(
        "unset {} on {}\n",
        args.keys.join(", "),
        args.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let v = parse_pairs(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(v["B"], "x=y");
        assert_eq!(v["C"], "");
        let e = parse_pairs(&["A=1".into(), "s3cret".into()]).unwrap_err();
        assert_eq!(e.to_string(), "setting 2 of 2 is not KEY=VALUE");
        assert!(parse_pairs(&["=v".into()]).is_err());
    }
}
