//! The event-plane commands: `wisp publish`, `wisp subscribe`,
//! `wisp unsubscribe`, `wisp subscriptions` and `wisp events ...`, each a
//! call to the admin API.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wisp_client::{Client, DeliveryRecord, NewSubscription, RedriveRequest};

use crate::client::Connection;
use crate::invoke::read_data_arg;
use crate::output::{print_json, table, write_stdout};
use crate::units::{format_ms, parse_duration};

/// `wisp publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// Topic name ([a-z0-9._-], 1 to 63 characters).
    topic: String,
    /// The payload: text, `@FILE` for a file's contents, `@-` for stdin.
    #[arg(short, long, value_name = "DATA", default_value = "")]
    data: String,
    /// Content type of the payload, passed to the subscribers.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `wisp subscribe`.
#[derive(Args)]
pub struct SubscribeArgs {
    /// Function name.
    name: String,
    /// Topic name.
    topic: String,
    /// Path of the POST each event is delivered as, for a function without
    /// an event handler [default: /].
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Attempts in total, the first one included [default: the host's, 3].
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Deliveries running at once [default: the host's, 4].
    #[arg(long, value_name = "C")]
    concurrency: Option<u32>,
    /// Events older than this are not retried (30m, 2h) [default: the
    /// host's, 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Delay before the first retry, doubling after [default: the host's, 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry_base: Option<Duration>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `wisp unsubscribe`.
#[derive(Args)]
pub struct UnsubscribeArgs {
    /// Function name.
    name: String,
    /// Topic name.
    topic: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `wisp subscriptions`.
#[derive(Args)]
pub struct SubscriptionsArgs {
    /// Only this function's.
    name: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `wisp events ...`.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Show an event and, per subscription, its delivery.
    Show(ShowArgs),
    /// List a function's dead deliveries (out of attempts or too old);
    /// `dlq purge NAME` removes them.
    Dlq(DlqArgs),
    /// Retry a function's dead deliveries now (all, or those of a topic or
    /// of the given events).
    Redrive(RedriveArgs),
}

impl EventsCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            EventsCommand::Show(a) => &a.connection,
            EventsCommand::Dlq(a) => a.connection(),
            EventsCommand::Redrive(a) => &a.connection,
        }
    }
}

/// `wisp events show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Event id.
    id: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp events dlq`: `dlq NAME` (or `dlq list NAME`) lists, `dlq purge
/// NAME` removes.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DlqArgs {
    #[command(subcommand)]
    action: Option<DlqCommand>,
    #[command(flatten)]
    list: DlqListArgs,
}

impl DlqArgs {
    fn connection(&self) -> &Connection {
        match &self.action {
            Some(DlqCommand::List(a)) => &a.connection,
            Some(DlqCommand::Purge(a)) => &a.connection,
            None => &self.list.connection,
        }
    }
}

/// `wisp events dlq purge|list`.
#[derive(Subcommand)]
enum DlqCommand {
    /// List a function's dead deliveries (the same as `dlq NAME`; for a
    /// function named `purge` or `list`).
    List(DlqListArgs),
    /// Remove a function's dead deliveries (all, or a topic's): they can
    /// no longer be redriven, and their events are removed.
    Purge(DlqPurgeArgs),
}

/// `wisp events dlq [list] NAME`.
#[derive(Args)]
struct DlqListArgs {
    /// Function name.
    #[arg(required = true)]
    name: Option<String>,
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    #[arg(long, value_name = "T")]
    topic: Option<String>,
    /// At most this many (up to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp events dlq purge NAME`.
#[derive(Args)]
struct DlqPurgeArgs {
    /// Function name.
    name: String,
    /// Only this topic's (`invoke:NAME` for asynchronous invocations).
    #[arg(long, value_name = "T")]
    topic: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp events redrive`.
#[derive(Args)]
pub struct RedriveArgs {
    /// Function name.
    name: String,
    /// Only this topic's.
    #[arg(long, value_name = "T")]
    topic: Option<String>,
    /// Only these events [default: all dead deliveries].
    ids: Vec<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp publish`.
pub async fn publish(api: &Client, args: PublishArgs) -> Result<()> {
    let payload = read_data_arg(&args.data).await?;
    let p = api
        .publish(&args.topic, payload, args.content_type.as_deref())
        .await?;
    if args.json {
        return print_json(&p);
    }
    write_stdout(&format!(
        "published {} on {} ({} subscriber{})\n",
        p.id,
        p.topic,
        p.deliveries,
        if p.deliveries == 1 { "" } else { "s" }
    ))
}

/// `wisp subscribe`.
pub async fn subscribe(api: &Client, args: SubscribeArgs) -> Result<()> {
    let millis = |d: Option<Duration>, flag: &str| -> Result<Option<u64>> {
        d.map(|d| u64::try_from(d.as_millis()).with_context(|| format!("{flag} is too large")))
            .transpose()
    };
    let s = api
        .subscribe(&NewSubscription {
            function: args.name,
            topic: args.topic,
            path: args.path,
            max_attempts: args.max_attempts,
            concurrency: args.concurrency,
            max_age_ms: millis(args.max_age, "--max-age")?,
            retry_base_ms: millis(args.retry_base, "--retry-base")?,
        })
        .await?;
    if args.json {
        return print_json(&s);
    }
    // How events will arrive: through the event handler if the function
    // has one, else as POSTs to the path.
    let info = api.info(&s.function).await?;
    let delivery = if info.handlers.iter().any(|h| h == "events") {
        "event handler".to_string()
    } else {
        format!("POST {}", s.path)
    };
    write_stdout(&format!(
        "subscribed {} to {} ({delivery}, {} attempts, concurrency {})\n",
        s.function, s.topic, s.retry.max_attempts, s.concurrency
    ))
}

/// `wisp unsubscribe`.
pub async fn unsubscribe(api: &Client, args: UnsubscribeArgs) -> Result<()> {
    api.unsubscribe(&args.name, &args.topic).await?;
    write_stdout(&format!("unsubscribed {} from {}\n", args.name, args.topic))
}

/// `wisp subscriptions`.
pub async fn subscriptions(api: &Client, args: SubscriptionsArgs) -> Result<()> {
    let subs = api.subscriptions(args.name.as_deref()).await?;
    if args.json {
        return print_json(&subs);
    }
    if subs.is_empty() {
        return write_stdout("no subscriptions\n");
    }
    let rows: Vec<Vec<String>> = subs
        .iter()
        .map(|s| {
            vec![
                s.function.clone(),
                s.topic.clone(),
                s.path.clone(),
                s.retry.max_attempts.to_string(),
                s.concurrency.to_string(),
                format_ms(s.retry.max_age_ms),
            ]
        })
        .collect();
    write_stdout(&table(
        &[
            "FUNCTION",
            "TOPIC",
            "PATH",
            "ATTEMPTS",
            "CONCURRENCY",
            "MAX AGE",
        ],
        &rows,
    ))
}

/// `wisp events ...`.
pub async fn run(api: &Client, command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Show(a) => show(api, a).await,
        EventsCommand::Dlq(a) => dlq(api, a).await,
        EventsCommand::Redrive(a) => redrive(api, a).await,
    }
}

fn delivery_rows(deliveries: &[DeliveryRecord], with_event: bool) -> Vec<Vec<String>> {
    deliveries
        .iter()
        .map(|d| {
            let status = serde_json::to_value(d.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let mut row = Vec::new();
            if with_event {
                row.push(wisp_id(d.event_id));
            }
            row.extend([
                d.topic.clone(),
                d.function.clone(),
                status,
                d.attempts.to_string(),
                d.last_error.clone().unwrap_or_default(),
            ]);
            row
        })
        .collect()
}

pub(crate) fn wisp_id(id: u64) -> String {
    format!("{id:016x}")
}

async fn show(api: &Client, args: ShowArgs) -> Result<()> {
    let e = api.event(&args.id).await?;
    if args.json {
        return print_json(&e);
    }
    let mut out = format!(
        "event {} on {} ({} bytes{})\n",
        e.id,
        e.topic,
        e.size_bytes,
        e.content_type
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default()
    );
    if e.deliveries.is_empty() {
        out.push_str("no subscribers\n");
    } else {
        out.push_str(&table(
            &["TOPIC", "FUNCTION", "STATUS", "ATTEMPTS", "LAST ERROR"],
            &delivery_rows(&e.deliveries, false),
        ));
    }
    write_stdout(&out)
}

async fn dlq(api: &Client, args: DlqArgs) -> Result<()> {
    let args = match args.action {
        Some(DlqCommand::Purge(a)) => return purge(api, a).await,
        Some(DlqCommand::List(a)) => a,
        None => args.list,
    };
    // Required by clap (unless a subcommand is given).
    let name = args.name.unwrap_or_default();
    let dead = api
        .dead_letters(&name, args.topic.as_deref(), args.limit)
        .await?;
    if args.json {
        return print_json(&dead);
    }
    if dead.is_empty() {
        return write_stdout("no dead deliveries\n");
    }
    write_stdout(&table(
        &[
            "EVENT",
            "TOPIC",
            "FUNCTION",
            "STATUS",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &delivery_rows(&dead, true),
    ))
}

async fn purge(api: &Client, args: DlqPurgeArgs) -> Result<()> {
    let purged = api
        .purge_dead_letters(&args.name, args.topic.as_deref())
        .await?;
    if args.json {
        return print_json(&purged);
    }
    let n = purged.purged;
    write_stdout(&format!(
        "purged {n} dead deliver{} of {}{}\n",
        if n == 1 { "y" } else { "ies" },
        args.name,
        args.topic
            .as_deref()
            .map(|t| format!(" on {t}"))
            .unwrap_or_default()
    ))
}

async fn redrive(api: &Client, args: RedriveArgs) -> Result<()> {
    let which = RedriveRequest {
        topic: args.topic,
        ids: args.ids,
    };
    let redriven = api.redrive(&args.name, &which).await?;
    if args.json {
        return print_json(&redriven);
    }
    let n = redriven.redriven.len();
    write_stdout(&format!(
        "redrove {n} dead deliver{} of {}\n",
        if n == 1 { "y" } else { "ies" },
        args.name
    ))
}
