//! Batch jobs: one task per array index, each delivered to the function as
//! an event on the job's implicit topic `job:ID` (concurrency = the job's
//! parallelism, attempts = retries + 1). A task's state is its delivery's;
//! the job's state is computed from them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::dispatcher::Delivering;
use super::plane::EventsCtx;
use super::plane::{EventError, now_ms};
use super::{DeliveryStatus, EventRecord, RetryPolicy, Subscription, format_id, parse_id};
use crate::store::{Durability, StoreError};

/// Prefix of a job's implicit topic (`job:ID`).
pub const JOB_TOPIC_PREFIX: &str = "job:";
/// Highest array index.
pub const MAX_INDEX: u32 = 1_000_000;
/// Most indices in one job.
pub const MAX_TASKS: usize = 100_000;
/// Events written per store transaction when a job starts.
const BATCH: usize = 1000;
/// Maximum age of a job's events (retries are bounded by attempts).
pub(super) const JOB_MAX_AGE_MS: u64 = 30 * 24 * 3600 * 1000;

/// The job id of a job topic.
pub fn job_of_topic(topic: &str) -> Option<u64> {
    parse_id(topic.strip_prefix(JOB_TOPIC_PREFIX)?)
}

/// Parses an array spec (`0-99,200`): sorted, without duplicates.
pub fn parse_array(spec: &str) -> Result<Vec<u32>, String> {
    let bad = |why: String| format!("bad array {spec:?}: {why}");
    let num = |s: &str| -> Result<u32, String> {
        let s = s.trim();
        let n: u64 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not an index")))?;
        if n > MAX_INDEX as u64 {
            return Err(bad(format!("index {n} is over {MAX_INDEX}")));
        }
        Ok(n as u32)
    };
    if spec.trim().is_empty() {
        return Err(bad("no indices".into()));
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} is backwards")));
        }
        if out.len() + (hi - lo) as usize + 1 > MAX_TASKS {
            return Err(bad(format!("more than {MAX_TASKS} indices")));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Its tasks are being written (not visible).
    Creating,
    /// Tasks pending or running.
    Running,
    /// Every index done.
    Succeeded,
    /// Finished with at least one index dead.
    Failed,
    /// Cancelled: pending indices are not run.
    Cancelled,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Unique.
    pub id: u64,
    /// The function.
    pub function: String,
    /// The array spec as given.
    pub array: String,
    /// Number of indices.
    pub size: u32,
    /// Tasks running at once.
    pub parallelism: u32,
    /// Retries per index.
    pub retries: u32,
    /// Path of each `POST`.
    pub path: String,
    /// Payload of every task.
    pub payload: String,
    /// Its content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `Creating` until every task is stored, `Cancelled` once cancelled,
    /// else `Running` (the end state is computed).
    pub state: JobState,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// When it was first seen finished (retention starts then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// Body of `POST /v1/functions/{name}/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Array indices: `0-99,200` (0 to 1000000, at most 100000).
    pub array: String,
    /// Tasks running at once (1 to 1000); default 1.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Retries per failed index (0 to 100); default 0.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Body of every task; default empty.
    #[serde(default)]
    pub payload: Option<String>,
    /// Path of each `POST`; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Content type of the payload.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// Tasks by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobCounts {
    /// Waiting (first attempt or a retry).
    pub pending: u32,
    /// Running now.
    pub running: u32,
    /// Succeeded.
    pub done: u32,
    /// Out of attempts.
    pub dead: u32,
    /// Not run (cancelled).
    pub cancelled: u32,
}

/// One index of a job.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobTask {
    /// The array index.
    pub index: u32,
    /// Its delivery's state.
    pub status: DeliveryStatus,
    /// Attempts finished.
    pub attempts: u32,
    /// The event carrying it.
    pub event_id: String,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobInfo {
    /// The id.
    pub id: String,
    /// The function.
    pub function: String,
    /// The array spec.
    pub array: String,
    /// Number of indices.
    pub size: u32,
    /// Tasks running at once.
    pub parallelism: u32,
    /// Retries per index.
    pub retries: u32,
    /// Path of each `POST`.
    pub path: String,
    /// running, succeeded, failed or cancelled.
    pub state: JobState,
    /// Tasks by state.
    pub counts: JobCounts,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// Per index (`GET /v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<JobTask>,
}

/// A job as the cluster has it: `tasks` holds the indices that have
/// started; the others are pending (cancelled if the job is).
pub(super) fn job_info_of(job: JobRecord, tasks: &[JobTask], with_tasks: bool) -> JobInfo {
    let unstarted = if job.state == JobState::Cancelled {
        DeliveryStatus::Cancelled
    } else {
        DeliveryStatus::Pending
    };
    let mut all: Vec<JobTask> = tasks.to_vec();
    if all.len() < job.size as usize {
        let started: std::collections::HashSet<u32> = tasks.iter().map(|t| t.index).collect();
        for index in parse_array(&job.array).unwrap_or_default() {
            if !started.contains(&index) {
                all.push(JobTask {
                    index,
                    status: unstarted,
                    attempts: 0,
                    event_id: String::new(),
                    last_error: None,
                });
            }
        }
        all.sort_by_key(|t| t.index);
    }
    let mut counts = JobCounts::default();
    for t in &all {
        counts.count(t.status);
    }
    info_of(job, counts, if with_tasks { all } else { Vec::new() })
}

impl JobCounts {
    /// Counts one task of `status`.
    fn count(&mut self, status: DeliveryStatus) {
        match status {
            DeliveryStatus::Pending => self.pending += 1,
            DeliveryStatus::Running => self.running += 1,
            DeliveryStatus::Done => self.done += 1,
            DeliveryStatus::Dead => self.dead += 1,
            DeliveryStatus::Cancelled => self.cancelled += 1,
        }
    }
}

/// A job's answer, from its record, its tasks' counts and (for `GET
/// /v1/jobs/{id}`) its tasks.
fn info_of(job: JobRecord, counts: JobCounts, tasks: Vec<JobTask>) -> JobInfo {
    JobInfo {
        id: format_id(job.id),
        state: state_of(&job, &counts),
        function: job.function,
        array: job.array,
        size: job.size,
        parallelism: job.parallelism,
        retries: job.retries,
        path: job.path,
        counts,
        created_ms: job.created_ms,
        tasks,
    }
}

fn state_of(job: &JobRecord, c: &JobCounts) -> JobState {
    match job.state {
        JobState::Creating | JobState::Cancelled => job.state,
        _ if c.pending + c.running > 0 => JobState::Running,
        _ if c.dead > 0 || c.cancelled > 0 => JobState::Failed,
        _ => JobState::Succeeded,
    }
}

impl EventsCtx {
    fn job_info(&self, job: JobRecord, with_tasks: bool) -> Result<JobInfo, EventError> {
        let mut counts = JobCounts::default();
        let mut tasks = Vec::new();
        for (index, d) in self.event_store().job_tasks(job.id)? {
            counts.count(d.status);
            if with_tasks {
                tasks.push(JobTask {
                    index,
                    status: d.status,
                    attempts: d.attempts,
                    event_id: format_id(d.event_id),
                    last_error: d.last_error,
                });
            }
        }
        Ok(info_of(job, counts, tasks))
    }

    /// Starts a job: one event per index, written in batches, the job
    /// record made visible last, then one flush.
    pub(crate) async fn start_job(
        &self,
        function: &str,
        new: NewJob,
    ) -> Result<JobInfo, EventError> {
        let indices = parse_array(&new.array).map_err(EventError::InvalidArgument)?;
        let parallelism = new.parallelism.unwrap_or(1);
        if parallelism == 0 || parallelism > 1000 {
            return Err(EventError::InvalidArgument(format!(
                "parallelism must be between 1 and 1000 (got {parallelism})"
            )));
        }
        let retries = new.retries.unwrap_or(0);
        if retries > 100 {
            return Err(EventError::InvalidArgument(format!(
                "retries must be between 0 and 100 (got {retries})"
            )));
        }
        let path = new.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let payload = new.payload.unwrap_or_default();
        let limit = self.inner.config.event_max_payload_bytes;
        if payload.len() as u64 > limit {
            return Err(EventError::PayloadTooLarge { limit });
        }
        if let Some(ct) = &new.content_type {
            super::validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        let store = self.event_store();
        if self.inner.records.get(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        if let Some(shared) = self.shared() {
            let job = JobRecord {
                // Unique among every host's (see `add_schedule`).
                id: rand::random::<u64>() >> 1 | 1,
                function: function.to_string(),
                array: new.array,
                size: indices.len() as u32,
                parallelism,
                retries,
                path,
                payload,
                content_type: new.content_type,
                state: JobState::Running,
                created_ms: now_ms(),
                finished_ms: None,
            };
            shared.start_job(&job, &indices).await?;
            tracing::info!(id = %format_id(job.id), function, size = job.size, "job started");
            return Ok(job_info_of(job, &[], false));
        }
        let mut job = JobRecord {
            id: store.next_id()?,
            function: function.to_string(),
            array: new.array,
            size: indices.len() as u32,
            parallelism,
            retries,
            path: path.clone(),
            payload,
            content_type: new.content_type,
            state: JobState::Creating,
            created_ms: now_ms(),
            finished_ms: None,
        };
        self.check_job_quota(&job, &indices)?;
        // Creating: the dispatcher leaves its tasks alone until it is
        // running; a crash meanwhile leaves it creating, cancelled on start.
        store.put_job(job.clone(), Durability::Committed).await?;
        // Written on the blocking pool: a large array is many batches.
        let writer = store.clone();
        let (id, created_ms, content_type, size_bytes, function_name) = (
            job.id,
            job.created_ms,
            job.content_type.clone(),
            job.payload.len() as u64,
            function.to_string(),
        );
        let written = tokio::task::spawn_blocking(move || {
            let topic = format!("{JOB_TOPIC_PREFIX}{}", format_id(id));
            let size = indices.len().to_string();
            for chunk in indices.chunks(BATCH) {
                let mut events = Vec::with_capacity(chunk.len());
                for &index in chunk {
                    events.push((
                        index,
                        EventRecord {
                            id: writer.next_id()?,
                            topic: topic.clone(),
                            time_ms: created_ms,
                            content_type: content_type.clone(),
                            path: Some(path.clone()),
                            headers: vec![
                                ("wisp-job-id".into(), format_id(id)),
                                ("wisp-job-index".into(), index.to_string()),
                                ("wisp-job-array-size".into(), size.clone()),
                            ],
                            size_bytes,
                        },
                    ));
                }
                writer.add_job_tasks_blocking(id, &function_name, events)?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Io(std::io::Error::other(format!(
                "writing a job's events: {e}"
            ))))
        });
        if let Err(e) = written {
            // Never acknowledged: cancelled, its events are never run.
            job.state = JobState::Cancelled;
            job.finished_ms = Some(now_ms());
            let _ = store.put_job(job, Durability::Committed).await;
            return Err(e.into());
        }
        job.state = JobState::Running;
        store.put_job(job.clone(), Durability::Flushed).await?;
        self.wake_events();
        tracing::info!(id = %format_id(job.id), function, size = job.size, "job started");
        self.job_info(job, false)
    }

    /// Refuses a job whose tasks would not fit in the event storage
    /// quotas as they stand: each task is an event (without the payload,
    /// which the job holds once) that counts like any other until it is
    /// done. Checked before anything is written, so a refused job stores
    /// nothing; a publish racing the start may take the room meanwhile, and
    /// then the job passes the quota by at most its own size.
    fn check_job_quota(&self, job: &JobRecord, indices: &[u32]) -> Result<(), EventError> {
        let size = indices.len().to_string();
        // The largest task (the headers carry the index as text).
        let widest = indices.last().copied().unwrap_or(0).to_string();
        let topic = format!("{JOB_TOPIC_PREFIX}{}", format_id(job.id));
        let task = EventRecord {
            id: 0,
            topic: topic.clone(),
            time_ms: 0,
            content_type: job.content_type.clone(),
            path: Some(job.path.clone()),
            headers: vec![
                ("wisp-job-id".into(), format_id(job.id)),
                ("wisp-job-index".into(), widest),
                ("wisp-job-array-size".into(), size),
            ],
            size_bytes: 0,
        };
        let need = task.charge(0).saturating_mul(indices.len() as u64);
        let c = &self.inner.config;
        if need > c.event_topic_quota_bytes {
            return Err(EventError::TopicQuotaExceeded {
                topic,
                held: 0,
                size: need,
                limit: c.event_topic_quota_bytes,
            });
        }
        let held = self.event_store().event_bytes(None);
        if held.saturating_add(need) > c.event_host_quota_bytes {
            return Err(EventError::HostQuotaExceeded {
                held,
                size: need,
                limit: c.event_host_quota_bytes,
            });
        }
        Ok(())
    }

    /// A job and the state of each index.
    pub(crate) async fn job(&self, id: &str) -> Result<JobInfo, EventError> {
        if let Some(shared) = self.shared() {
            let not_found = || EventError::JobNotFound(id.to_string());
            let job = shared
                .job(parse_id(id).ok_or_else(not_found)?)
                .ok_or_else(not_found)?;
            let tasks = shared.job_tasks(&job).await?;
            return Ok(job_info_of(job, &tasks, true));
        }
        let job = self.visible_job(id)?;
        self.job_info(job, true)
    }

    fn visible_job(&self, id: &str) -> Result<JobRecord, EventError> {
        let not_found = || EventError::JobNotFound(id.to_string());
        let n = parse_id(id).ok_or_else(not_found)?;
        match self.event_store().job(n)? {
            Some(j) if j.state != JobState::Creating => Ok(j),
            _ => Err(not_found()),
        }
    }

    /// Jobs (of one function if given), oldest first, without per-index
    /// states.
    pub(crate) async fn list_jobs(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<JobInfo>, EventError> {
        if let Some(shared) = self.shared() {
            let mut out = Vec::new();
            for job in shared.jobs() {
                if function.is_none_or(|f| job.function == f) {
                    let tasks = shared.job_tasks(&job).await?;
                    out.push(job_info_of(job, &tasks, false));
                }
            }
            return Ok(out);
        }
        let mut out = Vec::new();
        for job in self.event_store().jobs()? {
            if job.state == JobState::Creating || function.is_some_and(|f| job.function != f) {
                continue;
            }
            out.push(self.job_info(job, false)?);
        }
        Ok(out)
    }

    /// Cancels a job: its pending indices are not run; running ones
    /// finish.
    pub(crate) async fn cancel_job(&self, id: &str) -> Result<JobInfo, EventError> {
        let _guard = self.inner.admin_lock.lock().await;
        if let Some(shared) = self.shared() {
            let not_found = || EventError::JobNotFound(id.to_string());
            let job = shared
                .job(parse_id(id).ok_or_else(not_found)?)
                .ok_or_else(not_found)?;
            let tasks = shared.job_tasks(&job).await?;
            if job_info_of(job.clone(), &tasks, false).state != JobState::Running {
                return Ok(job_info_of(job, &tasks, false));
            }
            let job = shared.cancel_job(job).await?;
            tracing::info!(id, "job cancelled");
            return Ok(job_info_of(job, &tasks, false));
        }
        let job = self.visible_job(id)?;
        self.cancel_locked(job).await
    }

    /// Cancels the running jobs of `function` (it is being deleted): they
    /// end `cancelled` (and stay listed for the retention) instead of
    /// failing index by index against a missing function. The caller holds
    /// the admin lock.
    pub(crate) async fn cancel_jobs_of_locked(&self, function: &str) -> Result<(), EventError> {
        for job in self.event_store().jobs()? {
            if job.function == function && job.state != JobState::Creating {
                self.cancel_locked(job).await?;
            }
        }
        Ok(())
    }

    /// Cancels `job` if it is running; the caller holds the admin lock.
    async fn cancel_locked(&self, mut job: JobRecord) -> Result<JobInfo, EventError> {
        let id = format_id(job.id);
        let info = self.job_info(job.clone(), false)?;
        if matches!(info.state, JobState::Running) {
            job.state = JobState::Cancelled;
            let store = self.event_store().clone();
            store.put_job(job.clone(), Durability::Committed).await?;
            // Pending indices dropped now, on the blocking pool (any the
            // dispatcher reaches first are cancelled by it).
            let retention = self.inner.config.event_retention.as_millis() as u64;
            let job_id = job.id;
            let writer = store.clone();
            let dropped = tokio::task::spawn_blocking(move || {
                writer.cancel_job_tasks_blocking(job_id, now_ms(), retention)
            })
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io(std::io::Error::other(format!(
                    "cancelling a job: {e}"
                ))))
            })?;
            self.inner.store.flush().await?;
            self.wake_events();
            tracing::info!(id, dropped, "job cancelled");
        }
        self.job_info(job, false)
    }

    /// What the deliveries of a job's topic run under: the job's implicit
    /// subscription while it runs; cancelled once the job is gone or
    /// cancelled; not yet while it is being created.
    pub(super) fn job_subscription(&self, job: u64, topic: &str) -> Result<Delivering, StoreError> {
        let Some(j) = self.event_store().job(job)? else {
            return Ok(Delivering::Cancelled);
        };
        Ok(match j.state {
            JobState::Cancelled => Delivering::Cancelled,
            JobState::Creating => Delivering::NotYet,
            _ => {
                let c = &self.inner.config;
                Delivering::Under(Subscription {
                    topic: topic.to_string(),
                    function: j.function,
                    path: j.path,
                    concurrency: j.parallelism,
                    retry: RetryPolicy {
                        max_attempts: j.retries + 1,
                        max_age_ms: JOB_MAX_AGE_MS,
                        ..c.event_retry
                    },
                    created_at_ms: j.created_ms,
                })
            }
        })
    }

    /// A job's payload.
    pub(crate) fn job_payload(&self, job: u64) -> Result<Option<Bytes>, EventError> {
        Ok(self
            .event_store()
            .job(job)?
            .map(|j| Bytes::from(j.payload.into_bytes())))
    }

    /// Start-up: jobs left creating by a crash are cancelled (never
    /// acknowledged).
    pub(crate) fn jobs_recover(&self) -> Result<(), StoreError> {
        for mut job in self.event_store().jobs()? {
            if job.state == JobState::Creating {
                tracing::warn!(id = %format_id(job.id), "a job interrupted while starting is cancelled");
                job.state = JobState::Cancelled;
                job.finished_ms = Some(now_ms());
                self.event_store().put_job_blocking(job)?;
            }
        }
        Ok(())
    }

    /// Notes when jobs finish and removes the records past the retention.
    pub(crate) async fn sweep_jobs(&self) -> Result<(), EventError> {
        let now = now_ms();
        let retention = self.inner.config.event_retention.as_millis() as u64;
        for job in self.event_store().jobs()? {
            if job.state == JobState::Creating {
                continue;
            }
            match job.finished_ms {
                Some(at) if at.saturating_add(retention) <= now => {
                    self.event_store().delete_job(job.id).await?;
                }
                Some(_) => {}
                None => {
                    let info = self.job_info(job.clone(), false)?;
                    if info.counts.pending + info.counts.running == 0 {
                        let mut job = job;
                        job.finished_ms = Some(now);
                        self.event_store()
                            .put_job(job, Durability::Committed)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_parse() {
        assert_eq!(parse_array("0-3,7").unwrap(), [0, 1, 2, 3, 7]);
        assert_eq!(parse_array("5").unwrap(), [5]);
        assert_eq!(parse_array(" 2 , 1-2 ").unwrap(), [1, 2]);
        assert_eq!(parse_array("0-99,200").unwrap().len(), 101);
        assert_eq!(parse_array("1000000").unwrap(), [1_000_000]);
        assert_eq!(parse_array("0-99999").unwrap().len(), 100_000);
        for bad in [
            "", " ", ",", "1,", "a", "1-", "-1", "3-1", "1000001", "0-100000", "1-2-3", "1.5",
        ] {
            assert!(parse_array(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_topics() {
        assert_eq!(job_of_topic("job:00000000000000ff"), Some(255));
        assert_eq!(job_of_topic("invoke:f"), None);
        assert_eq!(job_of_topic("job:zz"), None);
    }
}
