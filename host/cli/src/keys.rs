//! `wisp key create|list|revoke`: the invoke keys of a private function
//! (deployed with `--auth key`). Writes need `deploy:NAME`, the list
//! `read:*` or `deploy:NAME`.

use anyhow::Result;
use clap::{Args, Subcommand};
use wisp_client::{Client, NewKey};

use crate::client::Connection;
use crate::output::{expiry, format_time, print_json, table, write_stdout};

/// `wisp key ...`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an invoke key of a function and print it, once, on stdout
    /// (the host keeps only its hash).
    Create(KeyCreateArgs),
    /// List a function's invoke keys: name, id, created, expires (never a
    /// key).
    List(KeyListArgs),
    /// Revoke an invoke key, by name or id: from now on it is refused.
    Revoke(KeyRevokeArgs),
}

impl KeyCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            KeyCommand::Create(a) => &a.connection,
            KeyCommand::List(a) => &a.connection,
            KeyCommand::Revoke(a) => &a.connection,
        }
    }
}

/// `wisp key create`.
#[derive(Args)]
pub struct KeyCreateArgs {
    /// The function.
    function: String,
    /// The key's name, unique within the function [default: `key-` and
    /// its id].
    #[arg(long, value_name = "KEYNAME")]
    name: Option<String>,
    /// When it expires: a duration from now (`30d`, `12h`, `90s`) or an RFC
    /// 3339 time [default: never].
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// Print the server's JSON (the key and what was created).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp key list`.
#[derive(Args)]
pub struct KeyListArgs {
    /// The function.
    function: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp key revoke`.
#[derive(Args)]
pub struct KeyRevokeArgs {
    /// The function.
    function: String,
    /// The key's name or id.
    #[arg(value_name = "KEYNAME|ID")]
    name_or_id: String,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp key ...`.
pub async fn run(api: &Client, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Create(a) => {
            let created = api
                .key_create(
                    &a.function,
                    &NewKey {
                        name: a.name,
                        expires: a.expires,
                    },
                )
                .await?;
            if a.json {
                return print_json(&created);
            }
            // The key alone on stdout (`KEY=$(wisp key create ...)`); what
            // it is on stderr.
            let info = &created.info;
            eprintln!(
                "created invoke key {} of {} (id {}; expires {}): it is shown only now",
                info.name,
                a.function,
                info.id,
                expiry(info.expires_ms)
            );
            write_stdout(&format!("{}\n", created.key))
        }
        KeyCommand::List(a) => {
            let keys = api.key_list(&a.function).await?;
            if a.json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                return write_stdout("no keys\n");
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.id.clone(),
                        format_time(Some(k.created_ms)),
                        expiry(k.expires_ms),
                    ]
                })
                .collect();
            write_stdout(&table(&["NAME", "ID", "CREATED", "EXPIRES"], &rows))
        }
        KeyCommand::Revoke(a) => {
            let k = api.key_revoke(&a.function, &a.name_or_id).await?;
            write_stdout(&format!(
                "revoked invoke key {} (id {}) of {}\n",
                k.name, k.id, a.function
            ))
        }
    }
}
