//! The client commands: each one a call to the admin API of a running host
//! (`/v1/...`, bearer token) through the typed client (`wisp-client`), with
//! the answer printed for people or, with `--json`, as JSON (pretty-printed).
//!
//! Any error the server answers (`{"error": {"code", "message"}}`) becomes an
//! error holding the server's message, which `main` prints as
//! `error: <message>` before exiting with status 1.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use wisp_client::Client;

use crate::functions::{DeployArgs, ListArgs, RollbackArgs, ShowArgs};
use crate::invoke::InvokeArgs;

const NO_TOKEN: &str =
    "no admin token: set WISP_ADMIN_TOKEN or run from the directory that holds wisp-data/";

/// The commands that talk to a running host.
#[derive(Subcommand)]
pub enum Command {
    /// Deploy a new version of a function: a component, a wasm32-wasip1
    /// module, a signed precompiled `.cwasm` (`wisp compile`), or a crate
    /// built from source (--from).
    Deploy(DeployArgs),
    /// List the deployed functions.
    List(ListArgs),
    /// Show a function: routes, environment, limits and versions.
    Info(ShowArgs),
    /// List the versions of a function.
    Versions(ShowArgs),
    /// Make an earlier version of a function active again.
    Rollback(RollbackArgs),
    /// Delete a function and all its versions (one with aliases only with
    /// --force).
    Delete(crate::functions::DeleteArgs),
    /// Aliases: named pointers to versions, with weighted splits and
    /// routes of their own.
    #[command(subcommand)]
    Alias(crate::alias::AliasCommand),
    /// Invoke keys of a private function (deployed with `--auth key`):
    /// create, list, revoke.
    #[command(subcommand)]
    Key(crate::keys::KeyCommand),
    /// Call a function through the admin API, whatever its routes.
    Invoke(InvokeArgs),
    /// Show a function's logs: its stdout, stderr and log lines.
    Logs(crate::logs::LogsArgs),
    /// Show a function's last hour: invocations, errors (5xx) and latency
    /// percentiles per step, as the host keeps them in memory.
    Stats(crate::stats::StatsArgs),
    /// Read and write a function's key-value data.
    #[command(subcommand)]
    Kv(crate::kv::KvCommand),
    /// Set, list and unset a function's settings and secrets.
    #[command(subcommand)]
    Config(crate::config::ConfigCommand),
    /// Publish an event on a topic (acknowledged once durable).
    Publish(crate::events::PublishArgs),
    /// Subscribe a function to a topic: it gets each event through its event
    /// handler, or as a POST if it has none.
    Subscribe(crate::events::SubscribeArgs),
    /// Remove a function's subscription to a topic.
    Unsubscribe(crate::events::UnsubscribeArgs),
    /// List subscriptions (of one function).
    Subscriptions(crate::events::SubscriptionsArgs),
    /// Inspect events; list, redrive and purge dead deliveries.
    #[command(subcommand)]
    Events(crate::events::EventsCommand),
    /// Run functions on cron schedules.
    #[command(subcommand)]
    Schedule(crate::schedules::ScheduleCommand),
    /// Batch jobs: one event per array index, with retries.
    #[command(subcommand)]
    Job(crate::jobs::JobCommand),
    /// List the hosts of the cluster (`wisp serve --cluster`): node name,
    /// version, addresses, latest heartbeat.
    Hosts(crate::functions::ListArgs),
    /// Create, list and revoke admin tokens, each with its scopes.
    #[command(subcommand)]
    Token(crate::tokens::TokenCommand),
    /// Show the audit log: the admin API's writes, who made them and what
    /// was answered.
    Audit(crate::tokens::AuditArgs),
}

impl Command {
    fn connection(&self) -> &Connection {
        match self {
            Command::Deploy(a) => &a.connection,
            Command::List(a) => &a.connection,
            Command::Info(a) | Command::Versions(a) => &a.connection,
            Command::Rollback(a) => &a.connection,
            Command::Delete(a) => &a.connection,
            Command::Alias(c) => c.connection(),
            Command::Key(c) => c.connection(),
            Command::Invoke(a) => &a.connection,
            Command::Logs(a) => &a.connection,
            Command::Stats(a) => &a.connection,
            Command::Kv(c) => c.connection(),
            Command::Config(c) => c.connection(),
            Command::Publish(a) => &a.connection,
            Command::Subscribe(a) => &a.connection,
            Command::Unsubscribe(a) => &a.connection,
            Command::Subscriptions(a) => &a.connection,
            Command::Events(c) => c.connection(),
            Command::Schedule(c) => c.connection(),
            Command::Job(c) => c.connection(),
            Command::Hosts(a) => &a.connection,
            Command::Token(c) => c.connection(),
            Command::Audit(a) => &a.connection,
        }
    }
}

/// Where the admin API is and how to authenticate to it.
#[derive(Args, Debug)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// URL of the admin API.
    #[arg(
        long,
        env = "WISP_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    admin_url: String,

    /// Admin bearer token [default: the contents of <DATA_DIR>/admin-token].
    #[arg(
        long,
        env = "WISP_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = secret
    )]
    token: Option<SecretString>,

    /// A CA certificate (PEM) to trust, besides the public roots, when the
    /// admin API is served over TLS (`https://` in --admin-url) with a
    /// certificate of a private CA.
    #[arg(long, env = "WISP_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<PathBuf>,

    /// Data directory of a local host, where its admin token is read from
    /// when no token is given.
    #[arg(
        long,
        env = "WISP_DATA_DIR",
        default_value = "./wisp-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
}

/// Runs a client command.
pub async fn run(command: Command) -> Result<()> {
    let api = connect(command.connection())?;
    match command {
        Command::Deploy(args) => crate::functions::deploy(&api, args).await,
        Command::List(args) => crate::functions::list(&api, args).await,
        Command::Info(args) => crate::functions::info(&api, args).await,
        Command::Versions(args) => crate::functions::versions(&api, args).await,
        Command::Rollback(args) => crate::functions::rollback(&api, args).await,
        Command::Delete(args) => crate::functions::delete(&api, args).await,
        Command::Alias(c) => crate::alias::run(&api, c).await,
        Command::Key(c) => crate::keys::run(&api, c).await,
        Command::Invoke(args) => crate::invoke::invoke(&api, args).await,
        Command::Logs(args) => crate::logs::run(&api, args).await,
        Command::Stats(args) => crate::stats::run(&api, args).await,
        Command::Kv(c) => crate::kv::run(&api, c).await,
        Command::Config(c) => crate::config::run(&api, c).await,
        Command::Publish(args) => crate::events::publish(&api, args).await,
        Command::Subscribe(args) => crate::events::subscribe(&api, args).await,
        Command::Unsubscribe(args) => crate::events::unsubscribe(&api, args).await,
        Command::Subscriptions(args) => crate::events::subscriptions(&api, args).await,
        Command::Events(c) => crate::events::run(&api, c).await,
        Command::Schedule(c) => crate::schedules::run(&api, c).await,
        Command::Job(c) => crate::jobs::run(&api, c).await,
        Command::Hosts(args) => crate::functions::hosts(&api, args).await,
        Command::Token(c) => crate::tokens::run(&api, c).await,
        Command::Audit(args) => crate::tokens::audit(&api, args).await,
    }
}

/// `--token`, kept out of `Debug` output.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(s.into())
}

/// A client of the admin API the connection arguments name. The token is
/// `--token` / `WISP_ADMIN_TOKEN`, else the `admin-token` file a host
/// writes into its data directory.
fn connect(connection: &Connection) -> Result<Client> {
    let mut builder = Client::builder(&connection.admin_url, admin_token(connection)?)
        .user_agent(concat!("wisp-cli/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &connection.admin_ca {
        let pem = std::fs::read(ca).with_context(|| {
            format!(
                "cannot read the CA certificate {} (WISP_ADMIN_CA)",
                ca.display()
            )
        })?;
        builder = builder.trust_pem(&pem).with_context(|| {
            format!("{} (WISP_ADMIN_CA) holds no PEM certificate", ca.display())
        })?;
    }
    Ok(builder.build()?)
}

fn admin_token(connection: &Connection) -> Result<SecretString> {
    match &connection.token {
        Some(token) if !token.expose_secret().trim().is_empty() => {
            Ok(SecretString::from(token.expose_secret().trim()))
        }
        _ => read_token_file(&connection.data_dir),
    }
}

fn read_token_file(data_dir: &Path) -> Result<SecretString> {
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().into()),
        Ok(_) => bail!("{NO_TOKEN} ({} is empty)", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{NO_TOKEN} (there is no {})", path.display())
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the admin token from {}", path.display()))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn connection(token: Option<&str>, data_dir: &Path) -> Connection {
        Connection {
            admin_url: "http://127.0.0.1:9090".into(),
            admin_ca: None,
            token: token.map(SecretString::from),
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn token_of(connection: &Connection) -> Result<String> {
        Ok(admin_token(connection)?.expose_secret().to_string())
    }

    #[test]
    fn token_from_option_then_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            token_of(&connection(Some(" abc \n"), dir.path())).unwrap(),
            "abc"
        );
        assert!(connect(&connection(Some(" abc \n"), dir.path())).is_ok());

        let missing = connect(&connection(None, dir.path()));
        let message = format!("{:#}", missing.err().unwrap());
        assert!(message.starts_with(NO_TOKEN), "{message}");

        std::fs::write(dir.path().join("admin-token"), "from-file\n").unwrap();
        assert_eq!(
            token_of(&connection(Some(""), dir.path())).unwrap(),
            "from-file"
        );
    }

    #[test]
    fn the_token_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let shown = format!("{:?}", connection(Some("s3cret-t0ken"), dir.path()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn bad_admin_urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = connection(Some("t"), dir.path());
        c.admin_url = "127.0.0.1:9090".into();
        let message = format!("{:#}", connect(&c).unwrap_err());
        assert!(
            message.starts_with("invalid admin URL `127.0.0.1:9090`"),
            "{message}"
        );
    }
}
