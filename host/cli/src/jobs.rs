//! `wisp job ...`: batch jobs, each a call to the admin API.

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use wisp_client::{Client, JobInfo, JobState, NewJob};

use crate::client::Connection;
use crate::invoke::read_data_arg;
use crate::output::{print_json, table, write_stdout};

/// `wisp job ...`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Start a job: one event per array index, retried on failure (the event
    /// handler gets the index and array size; a function without one gets a
    /// POST with headers wisp-job-id, wisp-job-index, wisp-job-array-size).
    Run(RunArgs),
    /// A job's state and each index's.
    Status(StatusArgs),
    /// List jobs (of one function).
    List(ListArgs),
    /// Cancel a job: pending indices are not run; running ones finish.
    Cancel(CancelArgs),
}

impl JobCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            JobCommand::Run(a) => &a.connection,
            JobCommand::Status(a) => &a.connection,
            JobCommand::List(a) => &a.connection,
            JobCommand::Cancel(a) => &a.connection,
        }
    }
}

/// `wisp job run`.
#[derive(Args)]
pub struct RunArgs {
    /// Function name.
    name: String,
    /// Array indices: `0-99,200` (0 to 1000000, at most 100000).
    #[arg(long, value_name = "INDICES")]
    array: String,
    /// Indices running at once (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 1)]
    parallelism: u32,
    /// Retries per failed index (0 to 100).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Payload of every task: text, `@FILE`, `@-` for stdin.
    #[arg(long, value_name = "DATA")]
    payload: Option<String>,
    /// Content type of the payload.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Path of each POST, for a function without an event handler
    /// [default: /].
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp job status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Job id.
    id: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp job list`.
#[derive(Args)]
pub struct ListArgs {
    /// Only this function's.
    name: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// `wisp job cancel`.
#[derive(Args)]
pub struct CancelArgs {
    /// Job id.
    id: String,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

fn state(s: JobState) -> &'static str {
    match s {
        JobState::Creating => "creating",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn summary(j: &JobInfo) -> String {
    let c = &j.counts;
    format!(
        "job {} ({}): {} — {} indices: {} done, {} dead, {} pending, {} running, {} cancelled\n",
        j.id,
        j.function,
        state(j.state),
        j.size,
        c.done,
        c.dead,
        c.pending,
        c.running,
        c.cancelled
    )
}

/// `wisp job ...`.
pub async fn run(api: &Client, command: JobCommand) -> Result<()> {
    match command {
        JobCommand::Run(a) => {
            let payload = match &a.payload {
                Some(p) => Some(
                    String::from_utf8(read_data_arg(p).await?.to_vec())
                        .map_err(|_| anyhow!("the job payload must be UTF-8 text"))?,
                ),
                None => None,
            };
            let job = NewJob {
                array: a.array,
                parallelism: Some(a.parallelism),
                retries: Some(a.retries),
                payload,
                path: a.path,
                content_type: a.content_type,
            };
            let j = api.run_job(&a.name, &job).await?;
            if a.json {
                return print_json(&j);
            }
            write_stdout(&format!(
                "job {} started: {} indices of {}, {} at once\n",
                j.id, j.size, j.function, j.parallelism
            ))
        }
        JobCommand::Status(a) => {
            let j = api.job(&a.id).await?;
            if a.json {
                return print_json(&j);
            }
            let rows: Vec<Vec<String>> = j
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.index.to_string(),
                        serde_json::to_value(t.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        t.attempts.to_string(),
                        t.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            write_stdout(&format!(
                "{}{}",
                summary(&j),
                table(&["INDEX", "STATE", "ATTEMPTS", "LAST ERROR"], &rows)
            ))
        }
        JobCommand::List(a) => {
            let all = api.jobs(a.name.as_deref()).await?;
            if a.json {
                return print_json(&all);
            }
            if all.is_empty() {
                return write_stdout("no jobs\n");
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|j| {
                    vec![
                        j.id.clone(),
                        j.function.clone(),
                        state(j.state).into(),
                        j.size.to_string(),
                        j.counts.done.to_string(),
                        j.counts.dead.to_string(),
                        (j.counts.pending + j.counts.running).to_string(),
                    ]
                })
                .collect();
            write_stdout(&table(
                &["ID", "FUNCTION", "STATE", "SIZE", "DONE", "DEAD", "LEFT"],
                &rows,
            ))
        }
        JobCommand::Cancel(a) => {
            let j = api.cancel_job(&a.id).await?;
            if a.json {
                return print_json(&j);
            }
            write_stdout(&summary(&j))
        }
    }
}
