//! The event-plane commands: `wisp publish`, `wisp subscribe`,
//! `wisp unsubscribe`, `wisp subscriptions`, `wisp events ...`,
//! `wisp schedule ...` and `wisp invoke --async`, each a call to the admin
//! API.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use wisp_host::{DeliveryRecord, EventInfo, FunctionInfo, Published, Schedule, Subscription};

use crate::client::{Api, Connection, print_json, table, write_stdout};
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

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("the admin API answered an unexpected shape: {e}"))
}

/// `wisp publish`.
pub async fn publish(api: &Api, args: PublishArgs) -> Result<()> {
    let payload = crate::client::read_data_arg(&args.data).await?;
    let mut request = api
        .request(Method::POST, &["v1", "topics", &args.topic, "events"])
        .body(payload);
    if let Some(ct) = &args.content_type {
        request = request.header(CONTENT_TYPE, ct);
    }
    let value = api.call_json(request).await?;
    if args.json {
        return print_json(&value);
    }
    let p: Published = typed(value)?;
    write_stdout(&format!(
        "published {} on {} ({} subscriber{})\n",
        p.id,
        p.topic,
        p.deliveries,
        if p.deliveries == 1 { "" } else { "s" }
    ))
}

/// `wisp invoke NAME --async`.
pub async fn invoke_async(
    api: &Api,
    name: &str,
    invocation: crate::client::Invocation,
) -> Result<()> {
    let mut request = api
        .request(Method::POST, &["v1", "functions", name, "invoke-async"])
        .query(&[("path", invocation.path)]);
    for (k, v) in invocation.headers {
        request = request.header(k, v);
    }
    if let Some(body) = invocation.body {
        request = request.body(body);
    }
    let p: Published = typed(api.call_json(request).await?)?;
    write_stdout(&format!("queued {} for {name}\n", p.id))
}

/// `wisp subscribe`.
pub async fn subscribe(api: &Api, args: SubscribeArgs) -> Result<()> {
    let body = json!({
        "function": args.name,
        "topic": args.topic,
        "path": args.path,
        "max_attempts": args.max_attempts,
        "concurrency": args.concurrency,
        "max_age_ms": args.max_age.map(|d| d.as_millis() as u64),
        "retry_base_ms": args.retry_base.map(|d| d.as_millis() as u64),
    });
    let value = api
        .call_json(
            api.request(Method::POST, &["v1", "subscriptions"])
                .json(&body),
        )
        .await?;
    if args.json {
        return print_json(&value);
    }
    let s: Subscription = typed(value)?;
    // How events will arrive: through the event handler if the function
    // has one, else as POSTs to the path.
    let info: FunctionInfo = typed(
        api.call_json(api.request(Method::GET, &["v1", "functions", &s.function]))
            .await?,
    )?;
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
pub async fn unsubscribe(api: &Api, args: UnsubscribeArgs) -> Result<()> {
    let request = api.request(
        Method::DELETE,
        &["v1", "subscriptions", &args.name, &args.topic],
    );
    let response = api.send(request).await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        match crate::client::wisp_error_message(&body) {
            Some(m) => bail!(m),
            None => bail!(
                "the admin API answered {status}{}",
                crate::client::excerpt(&body)
            ),
        }
    }
    write_stdout(&format!("unsubscribed {} from {}\n", args.name, args.topic))
}

/// `wisp subscriptions`.
pub async fn subscriptions(api: &Api, args: SubscriptionsArgs) -> Result<()> {
    let mut request = api.request(Method::GET, &["v1", "subscriptions"]);
    if let Some(name) = &args.name {
        request = request.query(&[("function", name)]);
    }
    let value = api.call_json(request).await?;
    if args.json {
        return print_json(&value);
    }
    let subs: Vec<Subscription> = typed(value)?;
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
pub async fn run(api: &Api, command: EventsCommand) -> Result<()> {
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

fn wisp_id(id: u64) -> String {
    format!("{id:016x}")
}

async fn show(api: &Api, args: ShowArgs) -> Result<()> {
    let value = api
        .call_json(api.request(Method::GET, &["v1", "events", &args.id]))
        .await?;
    if args.json {
        return print_json(&value);
    }
    let e: EventInfo = typed(value)?;
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

async fn dlq(api: &Api, args: DlqArgs) -> Result<()> {
    let args = match args.action {
        Some(DlqCommand::Purge(a)) => return purge(api, a).await,
        Some(DlqCommand::List(a)) => a,
        None => args.list,
    };
    // Required by clap (unless a subcommand is given).
    let name = args.name.unwrap_or_default();
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(t) = &args.topic {
        query.push(("topic", t.clone()));
    }
    let value = api
        .call_json(
            api.request(Method::GET, &["v1", "functions", &name, "dlq"])
                .query(&query),
        )
        .await?;
    if args.json {
        return print_json(&value);
    }
    let dead: Vec<DeliveryRecord> = typed(value)?;
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

async fn purge(api: &Api, args: DlqPurgeArgs) -> Result<()> {
    let mut request = api.request(Method::DELETE, &["v1", "functions", &args.name, "dlq"]);
    if let Some(t) = &args.topic {
        request = request.query(&[("topic", t)]);
    }
    let value = api.call_json(request).await?;
    if args.json {
        return print_json(&value);
    }
    let n = value["purged"].as_u64().unwrap_or(0);
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

async fn redrive(api: &Api, args: RedriveArgs) -> Result<()> {
    let body = json!({ "topic": args.topic, "ids": args.ids });
    let value = api
        .call_json(
            api.request(
                Method::POST,
                &["v1", "functions", &args.name, "dlq", "redrive"],
            )
            .json(&body),
        )
        .await?;
    if args.json {
        return print_json(&value);
    }
    let n = value["redriven"].as_array().map_or(0, Vec::len);
    write_stdout(&format!(
        "redrove {n} dead deliver{} of {}\n",
        if n == 1 { "y" } else { "ies" },
        args.name
    ))
}

/// `wisp schedule ...`.
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Run a function on a cron schedule: each tick is one event.
    Add(ScheduleAddArgs),
    /// List schedules (of one function).
    List(ScheduleListArgs),
    /// Delete a schedule.
    Delete(ScheduleDeleteArgs),
}

impl ScheduleCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            ScheduleCommand::Add(a) => &a.connection,
            ScheduleCommand::List(a) => &a.connection,
            ScheduleCommand::Delete(a) => &a.connection,
        }
    }
}

/// `wisp schedule add`.
#[derive(Args)]
pub struct ScheduleAddArgs {
    /// Function name.
    name: String,
    /// Cron expression: 5 fields (`*/5 * * * *`), or 6 with leading seconds.
    cron: String,
    /// Body of each tick's event: text, `@FILE`, `@-` for stdin.
    #[arg(long, value_name = "DATA")]
    payload: Option<String>,
    /// Content type of the payload.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// IANA time zone the expression is evaluated in.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// Path of the POST, for a function without an event handler
    /// [default: /].
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp schedule list`.
#[derive(Args)]
pub struct ScheduleListArgs {
    /// Only this function's.
    name: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp schedule delete`.
#[derive(Args)]
pub struct ScheduleDeleteArgs {
    /// Schedule id.
    id: String,
    #[command(flatten)]
    connection: Connection,
}

fn format_time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// `wisp schedule ...`.
pub async fn schedule(api: &Api, command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::Add(a) => {
            let payload = match &a.payload {
                Some(p) => Some(
                    String::from_utf8(crate::client::read_data_arg(p).await?.to_vec())
                        .map_err(|_| anyhow::anyhow!("the schedule payload must be UTF-8 text"))?,
                ),
                None => None,
            };
            let body = json!({
                "function": a.name, "cron": a.cron, "tz": a.tz, "path": a.path,
                "payload": payload, "content_type": a.content_type,
            });
            let value = api
                .call_json(api.request(Method::POST, &["v1", "schedules"]).json(&body))
                .await?;
            if a.json {
                return print_json(&value);
            }
            let s: Schedule = typed(value)?;
            write_stdout(&format!(
                "schedule {} runs {} at `{}` ({}); next {}\n",
                wisp_id(s.id),
                s.function,
                s.cron,
                s.tz,
                format_time(s.next_ms)
            ))
        }
        ScheduleCommand::List(a) => {
            let mut request = api.request(Method::GET, &["v1", "schedules"]);
            if let Some(name) = &a.name {
                request = request.query(&[("function", name)]);
            }
            let value = api.call_json(request).await?;
            if a.json {
                return print_json(&value);
            }
            let all: Vec<Schedule> = typed(value)?;
            if all.is_empty() {
                return write_stdout("no schedules\n");
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    vec![
                        wisp_id(s.id),
                        s.function.clone(),
                        s.cron.clone(),
                        s.tz.clone(),
                        s.path.clone(),
                        format_time(Some(s.last_fired_ms)),
                        format_time(s.next_ms),
                    ]
                })
                .collect();
            write_stdout(&table(
                &["ID", "FUNCTION", "CRON", "TZ", "PATH", "LAST", "NEXT"],
                &rows,
            ))
        }
        ScheduleCommand::Delete(a) => {
            let response = api
                .send(api.request(Method::DELETE, &["v1", "schedules", &a.id]))
                .await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                match crate::client::wisp_error_message(&body) {
                    Some(m) => bail!(m),
                    None => bail!(
                        "the admin API answered {status}{}",
                        crate::client::excerpt(&body)
                    ),
                }
            }
            write_stdout(&format!("deleted schedule {}\n", a.id))
        }
    }
}
