//! `wisp config`: a function's settings and secrets through the admin API
//! (`/v1/functions/{name}/config`). A change reaches the next invocation
//! without a redeploy. Secret values are never printed: the host never
//! sends them back.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::client::{Api, Connection, print_json, table, write_stdout};

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

#[derive(Deserialize)]
struct ConfigList {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    value: String,
    secret: bool,
}

/// Runs a `wisp config` command.
pub async fn run(api: &Api, command: ConfigCommand) -> Result<()> {
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

fn config_url(name: &str) -> [&str; 4] {
    ["v1", "functions", name, "config"]
}

async fn fetch(api: &Api, name: &str) -> Result<(serde_json::Value, ConfigList)> {
    let answer = api
        .call_json(api.request(Method::GET, &config_url(name)))
        .await?;
    let list = serde_json::from_value(answer.clone())
        .context("unexpected answer from the admin API (is the CLI older than the host?)")?;
    Ok((answer, list))
}

async fn set(api: &Api, args: SetArgs) -> Result<()> {
    let values = parse_pairs(&args.pairs)?;
    let keys: Vec<String> = values.keys().cloned().collect();
    let request = api
        .request(Method::PUT, &config_url(&args.name))
        .json(&json!({ "values": values, "secret": args.secret }));
    api.call_json(request).await?;
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

async fn list(api: &Api, args: ListArgs) -> Result<()> {
    let (answer, list) = fetch(api, &args.name).await?;
    if args.json {
        return print_json(&answer);
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

async fn unset(api: &Api, args: UnsetArgs) -> Result<()> {
    // All or none: check every key first (the API removes one per call).
    let (_, list) = fetch(api, &args.name).await?;
    for key in &args.keys {
        if !list.entries.iter().any(|e| &e.key == key) {
            bail!("config key {key:?} is not set on {}", args.name);
        }
    }
    for key in &args.keys {
        let mut segments = config_url(&args.name).to_vec();
        segments.push(key);
        api.call_json(api.request(Method::DELETE, &segments))
            .await?;
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
