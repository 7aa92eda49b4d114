//! Reading the queue: jobs and their states, counts, named queues, lock
//! holders and known cron schedules, and retrying chosen jobs. What the
//! `graphile-worker` command, an admin page or a metrics exporter shows.
//!
//! Reads see every job in the schema, whoever added it (Node workers and
//! SQL included). Listing and counting by state look at each row of the
//! jobs table the filters leave in; on a large table, filter by task,
//! queue or key and keep a `limit`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::Error;
use crate::job::Job;
use crate::worker_utils::WorkerUtils;

/// Where a job stands. Each job is in exactly one state, tested in this
/// order: `locked`, `failed`, `scheduled`, `retrying`, `ready`.
///
/// ```
/// use graphile_worker::JobState;
/// let state: JobState = "failed".parse().unwrap();
/// assert_eq!(state, JobState::Failed);
/// assert_eq!(state.to_string(), "failed");
/// assert!("done".parse::<JobState>().unwrap_err().to_string().contains("ready, scheduled"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due now, attempts left, not locked (it may be waiting for its named
    /// queue).
    Ready,
    /// `run_at` in the future, never attempted.
    Scheduled,
    /// Failed at least once, attempts left, waiting for its `run_at`.
    Retrying,
    /// Claimed by a worker: running, or waiting in its local queue.
    Locked,
    /// Permanently failed: no attempts left.
    Failed,
}

impl JobState {
    /// Every state, in the order above.
    pub const ALL: [JobState; 5] = [
        JobState::Ready,
        JobState::Scheduled,
        JobState::Retrying,
        JobState::Locked,
        JobState::Failed,
    ];

    /// The state's name: `ready`, `scheduled`, `retrying`, `locked` or
    /// `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Scheduled => "scheduled",
            JobState::Retrying => "retrying",
            JobState::Locked => "locked",
            JobState::Failed => "failed",
        }
    }
}

impl JobState {
    /// The state of `job` at `now`, by the same rules as the database (for
    /// a job read without its state).
    ///
    /// ```
    /// use graphile_worker::{Job, JobState};
    /// let mut job = Job::new("resize", serde_json::json!({}));
    /// let now = job.run_at;
    /// assert_eq!(JobState::of(&job, now), JobState::Locked);
    /// job.locked_at = None;
    /// assert_eq!(JobState::of(&job, now), JobState::Ready);
    /// job.attempts = job.max_attempts;
    /// assert_eq!(JobState::of(&job, now), JobState::Failed);
    /// ```
    pub fn of(job: &Job, now: DateTime<Utc>) -> JobState {
        if job.locked_at.is_some() {
            JobState::Locked
        } else if job.attempts >= job.max_attempts {
            JobState::Failed
        } else if job.run_at > now && job.attempts == 0 {
            JobState::Scheduled
        } else if job.run_at > now {
            JobState::Retrying
        } else {
            JobState::Ready
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`JobState`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}; the states are ready, scheduled, retrying, locked and failed")]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// The order of a job listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobOrder {
    /// Highest id first: the jobs added last.
    #[default]
    NewestFirst,
    /// Lowest id first.
    OldestFirst,
    /// Earliest `run_at` first.
    RunAt,
}

/// Which jobs to list or act on. Empty fields do not filter.
///
/// ```
/// use graphile_worker::{JobFilter, JobState};
/// let failed_emails = JobFilter::default()
///     .state(JobState::Failed)
///     .task("send_email")
///     .limit(20);
/// assert_eq!(failed_emails.limit, 20);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFilter {
    /// Any of these states (all when empty).
    pub states: Vec<JobState>,
    /// This task identifier.
    pub task: Option<String>,
    /// This named queue.
    pub queue: Option<String>,
    /// This job key.
    pub key: Option<String>,
    /// Text contained in `last_error` (case-sensitive).
    pub error: Option<String>,
    /// At most this many jobs (listings only; 50 by default).
    pub limit: i64,
    /// Skipping this many first (listings only).
    pub offset: i64,
    /// In this order (listings only).
    pub order: JobOrder,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            states: Vec::new(),
            task: None,
            queue: None,
            key: None,
            error: None,
            limit: 50,
            offset: 0,
            order: JobOrder::default(),
        }
    }
}

impl JobFilter {
    /// Adds a state to match.
    pub fn state(mut self, state: JobState) -> Self {
        self.states.push(state);
        self
    }

    /// Only jobs of this task.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only jobs in this named queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only the job with this key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only jobs whose `last_error` contains `text`.
    pub fn error_contains(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }

    /// At most `limit` jobs.
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Skips the first `offset` jobs.
    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// Lists in this order.
    pub fn order(mut self, order: JobOrder) -> Self {
        self.order = order;
        self
    }

    fn state_names(&self) -> Option<Vec<&'static str>> {
        (!self.states.is_empty()).then(|| self.states.iter().map(|s| s.as_str()).collect())
    }
}

/// A job and its state.
///
/// ```
/// fn line(entry: &graphile_worker::JobEntry) -> String {
///     format!("#{} {} {}", entry.job.id, entry.job.task_identifier, entry.state)
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct JobEntry {
    /// The job, payload included.
    pub job: Job,
    /// Where it stands.
    pub state: JobState,
}

impl<'r> sqlx::FromRow<'r, PgRow> for JobEntry {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(JobEntry {
            job: Job::from_row(row)?,
            state: state_column(row)?,
        })
    }
}

/// The `state` column of a row.
fn state_column(row: &PgRow) -> Result<JobState, sqlx::Error> {
    let state: String = row.try_get("state")?;
    state
        .parse()
        .map_err(|e: UnknownJobState| sqlx::Error::ColumnDecode {
            index: "state".into(),
            source: e.into(),
        })
}

/// How many jobs of one task (and named queue) are in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobCount {
    /// The state.
    pub state: JobState,
    /// The task identifier.
    pub task_identifier: String,
    /// The named queue, if any.
    pub queue_name: Option<String>,
    /// How many jobs.
    pub jobs: i64,
}

/// Counts of the whole schema, from [`WorkerUtils::job_stats`].
///
/// ```
/// fn backlog(stats: &graphile_worker::JobStats) -> i64 {
///     stats.by_state(graphile_worker::JobState::Ready)
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct JobStats {
    /// One entry per state, task and queue with at least one job.
    pub counts: Vec<JobCount>,
    /// The `run_at` of the oldest job due and not locked, if any.
    pub oldest_ready_run_at: Option<DateTime<Utc>>,
    /// How long that job has been due, in seconds, by the database's clock.
    pub oldest_ready_age_seconds: Option<f64>,
}

impl JobStats {
    /// Jobs in `state`, over every task and queue.
    pub fn by_state(&self, state: JobState) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.jobs)
            .sum()
    }

    /// Jobs in `state` by task identifier, in identifier order.
    pub fn by_task(&self) -> Vec<(String, JobState, i64)> {
        let mut totals = std::collections::BTreeMap::new();
        for c in &self.counts {
            *totals
                .entry((c.task_identifier.clone(), c.state))
                .or_insert(0) += c.jobs;
        }
        totals.into_iter().map(|((t, s), n)| (t, s, n)).collect()
    }

    /// Jobs in `state` by named queue (jobs with no queue left out).
    pub fn by_queue(&self) -> Vec<(String, JobState, i64)> {
        let mut totals = std::collections::BTreeMap::new();
        for c in &self.counts {
            if let Some(queue) = &c.queue_name {
                *totals.entry((queue.clone(), c.state)).or_insert(0) += c.jobs;
            }
        }
        totals.into_iter().map(|((q, s), n)| (q, s, n)).collect()
    }
}

/// A named queue, from [`WorkerUtils::list_queues`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue's name.
    pub queue_name: String,
    /// The worker (pool id) running the queue's current job, if any
    /// (`None` while paused).
    pub locked_by: Option<String>,
    /// Since when.
    pub locked_at: Option<DateTime<Utc>>,
    /// Jobs in the queue not locked and with attempts left.
    pub waiting: i64,
    /// All jobs in the queue.
    pub jobs: i64,
    /// Paused with [`WorkerUtils::pause_queue`]: no worker starts its jobs.
    pub paused: bool,
}

/// A lock holder seen on jobs but not in the worker registry: a Node
/// worker, or a Rust worker that was forgotten. From
/// [`WorkerUtils::unregistered_lock_holders`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockHolder {
    /// The `locked_by` value (a worker's pool id).
    pub locked_by: String,
    /// How many jobs it holds.
    pub jobs: i64,
    /// Its oldest lock.
    pub since: Option<DateTime<Utc>>,
}

/// A cron schedule the database has seen, from
/// [`WorkerUtils::list_known_crontabs`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KnownCrontab {
    /// The schedule's identifier (its task, unless the crontab named it).
    pub identifier: String,
    /// When a worker first ran this schedule.
    pub known_since: DateTime<Utc>,
    /// The last fire time it enqueued, if any.
    pub last_execution: Option<DateTime<Utc>>,
}

/// A row of the queues statement: name, lock holder, locked since,
/// waiting jobs, all jobs.
type QueueRow = (
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    i64,
    i64,
    bool,
);

impl WorkerUtils {
    /// Jobs matching `filter`, with their states, payloads included.
    ///
    /// ```no_run
    /// use graphile_worker::{JobFilter, JobState, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// for entry in utils.list_jobs(&JobFilter::default().state(JobState::Failed)).await? {
    ///     println!("{} {:?}", entry.job.id, entry.job.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobEntry>, Error> {
        let sql = &self.db.sql.inspect;
        let statement = match filter.order {
            JobOrder::NewestFirst => &sql.list_newest,
            JobOrder::OldestFirst => &sql.list_oldest,
            JobOrder::RunAt => &sql.list_run_at,
        };
        Ok(sqlx::query_as::<_, JobEntry>(statement.clone())
            .bind(filter.state_names())
            .bind(&filter.task)
            .bind(&filter.queue)
            .bind(&filter.key)
            .bind(&filter.error)
            .bind(filter.limit.max(0))
            .bind(filter.offset.max(0))
            .fetch_all(self.db.exec())
            .await?)
    }

    /// How many jobs match `filter` (its limit, offset and order aside).
    pub async fn count_jobs(&self, filter: &JobFilter) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(self.db.sql.inspect.count.clone())
            .bind(filter.state_names())
            .bind(&filter.task)
            .bind(&filter.queue)
            .bind(&filter.key)
            .bind(&filter.error)
            .fetch_one(self.db.exec())
            .await?)
    }

    /// The ids of every job matching `filter` (its limit, offset and order
    /// aside), lowest first: for acting on them in bulk.
    pub async fn job_ids(&self, filter: &JobFilter) -> Result<Vec<i64>, Error> {
        Ok(sqlx::query_scalar(self.db.sql.inspect.ids.clone())
            .bind(filter.state_names())
            .bind(&filter.task)
            .bind(&filter.queue)
            .bind(&filter.key)
            .bind(&filter.error)
            .fetch_all(self.db.exec())
            .await?)
    }

    /// One job by id, with its state; `None` if there is no such job.
    pub async fn get_job(&self, id: i64) -> Result<Option<JobEntry>, Error> {
        Ok(
            sqlx::query_as::<_, JobEntry>(self.db.sql.inspect.get.clone())
                .bind(id)
                .fetch_optional(self.db.exec())
                .await?,
        )
    }

    /// Counts by state, task and queue, and how long the oldest ready job
    /// has waited. Reads every row of the jobs table.
    pub async fn job_stats(&self) -> Result<JobStats, Error> {
        let sql = &self.db.sql.inspect;
        let rows = sqlx::query(sql.counts.clone())
            .fetch_all(self.db.exec())
            .await?;
        let counts = rows
            .iter()
            .map(|row| {
                Ok(JobCount {
                    state: state_column(row)?,
                    task_identifier: row.try_get("task_identifier")?,
                    queue_name: row.try_get("queue_name")?,
                    jobs: row.try_get("jobs")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let (oldest, now): (Option<DateTime<Utc>>, DateTime<Utc>) =
            sqlx::query_as(sql.oldest_ready.clone())
                .fetch_one(self.db.exec())
                .await?;
        Ok(JobStats {
            counts,
            oldest_ready_run_at: oldest,
            oldest_ready_age_seconds: oldest.map(|at| (now - at).num_milliseconds() as f64 / 1e3),
        })
    }

    /// The named queues, by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>, Error> {
        let rows: Vec<QueueRow> = sqlx::query_as(self.db.sql.inspect.queues.clone())
            .fetch_all(self.db.exec())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(queue_name, locked_by, locked_at, waiting, jobs, paused)| QueueInfo {
                    queue_name,
                    locked_by,
                    locked_at,
                    waiting,
                    jobs,
                    paused,
                },
            )
            .collect())
    }

    /// Pool ids holding job locks that are not in the worker registry:
    /// Node workers (which do not register), or forgotten Rust workers.
    pub async fn unregistered_lock_holders(&self) -> Result<Vec<LockHolder>, Error> {
        let rows: Vec<(String, i64, Option<DateTime<Utc>>)> =
            sqlx::query_as(self.db.sql.inspect.unregistered_holders.clone())
                .fetch_all(self.db.exec())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(locked_by, jobs, since)| LockHolder {
                locked_by,
                jobs,
                since,
            })
            .collect())
    }

    /// The cron schedules workers have run against this schema.
    pub async fn list_known_crontabs(&self) -> Result<Vec<KnownCrontab>, Error> {
        let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> =
            sqlx::query_as(self.db.sql.inspect.crontabs.clone())
                .fetch_all(self.db.exec())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(identifier, known_since, last_execution)| KnownCrontab {
                identifier,
                known_since,
                last_execution,
            })
            .collect())
    }

    /// Runs these jobs now with their attempts reset to 0, so a
    /// permanently failed job gets its full attempts again. Locked jobs
    /// (running somewhere) are left alone; the jobs changed are returned,
    /// lowest id first, and running workers are notified.
    pub async fn retry_jobs(&self, ids: &[i64]) -> Result<Vec<JobEntry>, Error> {
        let retried = sqlx::query_as::<_, JobEntry>(self.db.sql.inspect.retry.clone())
            .bind(ids)
            .fetch_all(self.db.exec())
            .await?;
        if !retried.is_empty() {
            // Running workers are told, as adding jobs tells them.
            sqlx::query(self.db.sql.inspect.notify_jobs.clone())
                .bind(i32::try_from(retried.len()).unwrap_or(i32::MAX))
                .execute(self.db.exec())
                .await?;
        }
        Ok(retried)
    }
}
