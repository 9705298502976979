//! `wisp schedule ...`: functions run on cron schedules, each command a
//! call to the admin API.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use wisp_client::{Client, NewSchedule};

use crate::client::Connection;
use crate::events::wisp_id;
use crate::invoke::read_data_arg;
use crate::output::{format_time, print_json, table, write_stdout};

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

/// `wisp schedule ...`.
pub async fn run(api: &Client, command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::Add(a) => {
            let payload = match &a.payload {
                Some(p) => Some(
                    String::from_utf8(read_data_arg(p).await?.to_vec())
                        .map_err(|_| anyhow!("the schedule payload must be UTF-8 text"))?,
                ),
                None => None,
            };
            let s = api
                .schedule(&NewSchedule {
                    function: a.name,
                    cron: a.cron,
                    tz: Some(a.tz),
                    path: a.path,
                    payload,
                    content_type: a.content_type,
                })
                .await?;
            if a.json {
                return print_json(&s);
            }
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
            let all = api.schedules(a.name.as_deref()).await?;
            if a.json {
                return print_json(&all);
            }
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
            api.delete_schedule(&a.id).await?;
            write_stdout(&format!("deleted schedule {}\n", a.id))
        }
    }
}
