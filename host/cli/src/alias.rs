//! `wisp alias`: named pointers to versions of a function, with weighted
//! splits between versions and routes of their own
//! (`/v1/functions/{name}/aliases`).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use wisp_client::{AliasInfo, AliasSpec, Client};

use crate::client::Connection;
use crate::output::{print_json, table, write_stdout};

/// `wisp alias ...`.
#[derive(Subcommand)]
pub enum AliasCommand {
    /// Point an alias at a version, optionally sending some of its requests
    /// to other versions: `wisp alias set hello live 7 --weight 8=10`.
    Set(SetArgs),
    /// List a function's aliases.
    List(ListArgs),
    /// Delete an alias (its routes stop serving).
    Delete(DeleteArgs),
}

impl AliasCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            AliasCommand::Set(a) => &a.connection,
            AliasCommand::List(a) => &a.connection,
            AliasCommand::Delete(a) => &a.connection,
        }
    }
}

/// `wisp alias set`.
#[derive(Args)]
pub struct SetArgs {
    /// Function name.
    name: String,
    /// Alias name ([a-z0-9-]).
    alias: String,
    /// The version it points to; it gets the requests the weights leave.
    version: u64,
    /// Send PERCENT of the alias's requests to VERSION (VERSION=PERCENT,
    /// a whole percentage; repeatable; together under 100).
    #[arg(long = "weight", value_name = "VERSION=PERCENT", value_parser = parse_weight)]
    weights: Vec<(u64, u8)>,
    /// A route that serves the alias (`/exact`, `/prefix/*`); repeatable.
    /// Without any, the alias keeps its routes.
    #[arg(long = "route", value_name = "ROUTE")]
    routes: Vec<String>,
    /// Remove the alias's routes.
    #[arg(long, conflicts_with = "routes")]
    no_routes: bool,
    /// Print the alias as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// `wisp alias list`.
#[derive(Args)]
pub struct ListArgs {
    /// Function name.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// `wisp alias delete`.
#[derive(Args)]
pub struct DeleteArgs {
    /// Function name.
    name: String,
    /// Alias name.
    alias: String,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// `VERSION=PERCENT`.
fn parse_weight(s: &str) -> Result<(u64, u8), String> {
    let (v, p) = s
        .split_once('=')
        .ok_or_else(|| format!("expected VERSION=PERCENT, as in 8=10, not {s:?}"))?;
    let v = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a version number"))?;
    let p = p
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{p:?} is not a whole percentage"))?;
    Ok((v, p))
}

pub(crate) async fn run(api: &Client, command: AliasCommand) -> Result<()> {
    match command {
        AliasCommand::Set(args) => {
            let mut weights = BTreeMap::new();
            for (v, p) in &args.weights {
                if weights.insert(*v, *p).is_some() {
                    bail!("--weight gives version {v} twice");
                }
            }
            let spec = AliasSpec {
                version: args.version,
                weights,
                routes: match (args.no_routes, args.routes.is_empty()) {
                    (true, _) => Some(Vec::new()),
                    (false, true) => None,
                    (false, false) => Some(args.routes.clone()),
                },
            };
            let info = api
                .set_alias(&args.name, &args.alias, &spec)
                .await
                .with_context(|| format!("setting alias {} of {}", args.alias, args.name))?;
            if args.json {
                return print_json(&info);
            }
            write_stdout(&format!("{}\n", describe(&args.name, &info)))
        }
        AliasCommand::List(args) => {
            let aliases = api.aliases(&args.name).await?;
            if args.json {
                return print_json(&aliases);
            }
            let rows: Vec<Vec<String>> = aliases
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        shares(a),
                        a.routes.join(" "),
                        a.updated_at.clone(),
                    ]
                })
                .collect();
            write_stdout(&table(&["ALIAS", "VERSIONS", "ROUTES", "UPDATED"], &rows))
        }
        AliasCommand::Delete(args) => {
            api.delete_alias(&args.name, &args.alias).await?;
            write_stdout(&format!("deleted alias {} of {}\n", args.alias, args.name))
        }
    }
}

/// `7 (90%), 8 (10%)`.
fn shares(a: &AliasInfo) -> String {
    match a.shares.as_slice() {
        [only] => only.version.to_string(),
        all => all
            .iter()
            .map(|s| format!("{} ({}%)", s.version, s.percent))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn describe(function: &str, a: &AliasInfo) -> String {
    let routes = match a.routes.as_slice() {
        [] => String::new(),
        r => format!(", routes {}", r.join(" ")),
    };
    format!("{function}@{} → {}{routes}", a.name, shares(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("8=10"), Ok((8, 10)));
        assert_eq!(parse_weight("8 = 10%"), Ok((8, 10)));
        assert!(parse_weight("8").unwrap_err().contains("VERSION=PERCENT"));
        assert!(parse_weight("x=1").unwrap_err().contains("version"));
        assert!(parse_weight("8=1.5").unwrap_err().contains("percentage"));
        assert!(parse_weight("8=300").is_err());
    }
}
