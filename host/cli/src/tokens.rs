//! `wisp token create|list|revoke` and `wisp audit`: the admin API's
//! tokens and its audit log, each command a call that needs the `admin`
//! scope.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use clap::{Args, Subcommand};
use wisp_client::{AuditQuery, Client, NewToken};

use crate::client::Connection;
use crate::output::{expiry, format_time, print_json, table, write_stdout};

/// `wisp token ...`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once, on stdout (the host keeps only
    /// its hash).
    Create(TokenCreateArgs),
    /// List the tokens: name, id, scopes, created, expires (never a token).
    List(TokenListArgs),
    /// Revoke a token, by name or id: from now on it is refused.
    Revoke(TokenRevokeArgs),
}

impl TokenCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            TokenCommand::Create(a) => &a.connection,
            TokenCommand::List(a) => &a.connection,
            TokenCommand::Revoke(a) => &a.connection,
        }
    }
}

/// `wisp token create`.
#[derive(Args)]
pub struct TokenCreateArgs {
    /// What the token may do (repeatable): `admin`, `read:*`, `deploy:*`,
    /// `deploy:NAME`, `invoke:NAME`.
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    scopes: Vec<String>,
    /// When it expires: a duration from now (`30d`, `12h`, `90s`) or an RFC
    /// 3339 time [default: never].
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// Its name, unique on the host; the audit log names it so
    /// [default: `token-` and its id].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Print the server's JSON (the token and what was created).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp token list`.
#[derive(Args)]
pub struct TokenListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp token revoke`.
#[derive(Args)]
pub struct TokenRevokeArgs {
    /// The token's name or id.
    #[arg(value_name = "NAME|ID")]
    name_or_id: String,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Only writes since then: a duration ago (`1h`, `2d`) or an RFC 3339
    /// time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// At most this many, the latest [default: 1000].
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `wisp token ...`.
pub async fn run(api: &Client, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(a) => {
            let created = api
                .token_create(&NewToken {
                    name: a.name,
                    scopes: a.scopes,
                    expires: a.expires,
                })
                .await?;
            if a.json {
                return print_json(&created);
            }
            // The token alone on stdout (`TOKEN=$(wisp token create ...)`);
            // what it is on stderr.
            let info = &created.info;
            eprintln!(
                "created token {} (id {}; scopes {}; expires {}): it is shown only now",
                info.name,
                info.id,
                info.scopes.join(" "),
                expiry(info.expires_ms)
            );
            write_stdout(&format!("{}\n", created.token))
        }
        TokenCommand::List(a) => {
            let tokens = api.token_list().await?;
            if a.json {
                return print_json(&tokens);
            }
            if tokens.is_empty() {
                return write_stdout("no tokens\n");
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.id.clone(),
                        t.scopes.join(" "),
                        format_time(Some(t.created_ms)),
                        expiry(t.expires_ms),
                    ]
                })
                .collect();
            write_stdout(&table(
                &["NAME", "ID", "SCOPES", "CREATED", "EXPIRES"],
                &rows,
            ))
        }
        TokenCommand::Revoke(a) => {
            let t = api.token_revoke(&a.name_or_id).await?;
            write_stdout(&format!("revoked token {} (id {})\n", t.name, t.id))
        }
    }
}

/// `wisp audit`.
pub async fn audit(api: &Client, a: AuditArgs) -> Result<()> {
    let page = api
        .audit(&AuditQuery {
            since: a.since,
            limit: a.limit,
        })
        .await?;
    if a.json {
        return print_json(&page);
    }
    if page.entries.is_empty() {
        return write_stdout("no admin writes\n");
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.at_ms))
                    .to_string(),
                e.who.clone(),
                e.method.clone(),
                e.path.clone(),
                e.status.to_string(),
            ]
        })
        .collect();
    write_stdout(&table(&["TIME", "WHO", "METHOD", "PATH", "STATUS"], &rows))
}
