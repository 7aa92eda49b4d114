//! `WorkerUtils`: the handle on one worker schema, and administering its
//! jobs (migrate, remove, complete, fail, reschedule, unlock, list workers,
//! recover, clean up). Adding jobs is in `enqueue/`.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row, SqlStr};

use crate::enqueue::NewJob;
use crate::error::Error;
use crate::job::Job;
use crate::migrate;
use crate::recovery::{RecoveryReport, recover_stale};
use crate::schema::Schema;
use crate::spec::JobSpec;
use crate::sql::{Db, Statements};

type JobsQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, Job, sqlx::postgres::PgArguments>;

/// Adding and administering jobs in one worker schema.
///
/// Cheap to clone: it holds the pool and the schema name.
///
/// ```no_run
/// use graphile_worker::{JobSpec, WorkerUtils};
/// # async fn example(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
/// let utils = WorkerUtils::new(pool, "graphile_worker");
/// utils.migrate().await?;
/// let job = utils
///     .add_raw_job("send_email", serde_json::json!({"to": "a@example.com"}), JobSpec::default())
///     .await?;
/// println!("queued job {}", job.id);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WorkerUtils {
    pub(crate) db: Db,
    before_add: Option<BeforeAdd>,
}

/// A hook called before each job is added; see [`WorkerUtils::before_add`].
#[derive(Clone)]
pub(crate) struct BeforeAdd(pub(crate) Arc<BeforeAddFn>);

/// The hook's signature: the task identifier and the options to stamp.
pub(crate) type BeforeAddFn = dyn Fn(&str, &mut JobSpec) + Send + Sync;

impl std::fmt::Debug for BeforeAdd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeAdd")
    }
}

/// Changes for [`WorkerUtils::reschedule_jobs`]; `None` keeps the current
/// value.
///
/// ```
/// use graphile_worker::Reschedule;
/// let retry_now = Reschedule { run_at: Some(chrono::Utc::now()), attempts: Some(0), ..Default::default() };
/// assert!(retry_now.priority.is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reschedule {
    /// New run_at.
    pub run_at: Option<DateTime<Utc>>,
    /// New priority (0 is a real value, not "unchanged").
    pub priority: Option<i16>,
    /// New attempts count.
    pub attempts: Option<i16>,
    /// New max_attempts.
    pub max_attempts: Option<i16>,
}

/// A cleanup operation for [`WorkerUtils::cleanup`]; they run in the order
/// permanently failed jobs, task identifiers, job queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cleanup {
    /// Delete jobs that used all their attempts and are not locked.
    DeletePermafailedJobs,
    /// Delete task identifiers no job refers to. Unsafe while workers run:
    /// they cache task ids.
    GcTaskIdentifiers,
    /// Delete unlocked job queues no job refers to.
    GcJobQueues,
}

impl WorkerUtils {
    /// Utilities for `schema` on `pool`. Nothing is checked until first use.
    pub fn new(pool: PgPool, schema: &str) -> Self {
        Self {
            db: Db::new(pool, Schema::new(schema)),
            before_add: None,
        }
    }

    /// These utilities, calling `hook` with each job's task identifier and
    /// options before the job is added, so it can stamp them: flags, a
    /// queue, a priority (the payload is not shown: typed payloads go to the
    /// database without becoming JSON values first). A batch of one task
    /// sharing one spec (`enqueue_many`, `add_jobs`) calls it once for the
    /// batch. [`WorkerOptions::before_add`](crate::WorkerOptions::before_add)
    /// sets it on the utilities tasks receive.
    ///
    /// ```no_run
    /// use graphile_worker::{JobSpec, WorkerUtils};
    /// # fn example(pool: sqlx::PgPool) {
    /// let utils = WorkerUtils::new(pool, "graphile_worker").before_add(|task, spec| {
    ///     if task.starts_with("report_") {
    ///         spec.flags.get_or_insert_with(Vec::new).push("slow".into());
    ///     }
    /// });
    /// # let _ = utils; }
    /// ```
    pub fn before_add(mut self, hook: impl Fn(&str, &mut JobSpec) + Send + Sync + 'static) -> Self {
        self.before_add = Some(BeforeAdd(Arc::new(hook)));
        self
    }

    /// These utilities, stamping the current span's W3C trace context on
    /// each job they add (feature `opentelemetry`), so the job's span
    /// continues the trace. It is the before-add hook
    /// [`stamp_trace_context`](crate::stamp_trace_context) (and replaces
    /// another hook).
    #[cfg(feature = "opentelemetry")]
    pub fn propagate_trace_context(self) -> Self {
        self.before_add(crate::otel::stamp_trace_context)
    }

    /// These utilities, sending no named prepared statements, for a pool
    /// that goes through PgBouncer in transaction pooling mode (see
    /// [`WorkerOptions::no_prepared_statements`](crate::WorkerOptions::no_prepared_statements),
    /// which sets it on the utilities tasks receive). Each statement runs
    /// unnamed, in a transaction of its own unless it is given one: an
    /// executor passed to the `*_in` methods must then be a transaction,
    /// not the pool.
    ///
    /// ```no_run
    /// # async fn example(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
    /// let utils = graphile_worker::WorkerUtils::new(pool, "graphile_worker").no_prepared_statements();
    /// utils.add_raw_job("hello", serde_json::json!({}), Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn no_prepared_statements(mut self) -> Self {
        self.db = self.db.with_mode(crate::sql::StatementMode::Unnamed);
        self
    }

    /// These utilities with `hook` (or none).
    pub(crate) fn with_before_add(mut self, hook: Option<BeforeAdd>) -> Self {
        self.before_add = hook;
        self
    }

    /// `spec` after the before-add hook, if any.
    pub(crate) fn stamp(&self, identifier: &str, spec: JobSpec) -> JobSpec {
        match &self.before_add {
            Some(hook) => {
                let mut spec = spec;
                (hook.0)(identifier, &mut spec);
                spec
            }
            None => spec,
        }
    }

    /// `jobs` after the before-add hook: borrowed as they are without one.
    pub(crate) fn stamp_jobs<'a>(&self, jobs: &'a [NewJob]) -> Cow<'a, [NewJob]> {
        if self.before_add.is_none() {
            return Cow::Borrowed(jobs);
        }
        Cow::Owned(
            jobs.iter()
                .map(|job| NewJob {
                    spec: self.stamp(&job.identifier, job.spec.clone()),
                    ..job.clone()
                })
                .collect(),
        )
    }

    /// The pool this uses.
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        self.db.schema.name()
    }

    /// The engine's handle on the same pool and schema.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn statements(&self) -> &Statements {
        &self.db.sql
    }

    /// Installs or upgrades the worker schema (safe to run concurrently; does
    /// nothing when up to date).
    pub async fn migrate(&self) -> Result<(), Error> {
        migrate::migrate(&self.db.pool, &self.db.schema).await
    }

    /// Where the schema stands against this build's migrations, changing
    /// nothing: what is applied, what is pending, and whether the database
    /// is newer than this build.
    ///
    /// ```no_run
    /// # async fn example(utils: graphile_worker::WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let status = utils.migration_status().await?;
    /// if !status.is_current() {
    ///     println!("pending migrations: {:?}", status.pending);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn migration_status(&self) -> Result<migrate::MigrationStatus, Error> {
        migrate::status(&self.db.pool, &self.db.schema).await
    }

    /// Removes the job with this key: deleted if not running; if running, it
    /// loses its key and will not be retried (it is not cancelled).
    /// Returns the job, or `None` when no job has the key.
    pub async fn remove_job(&self, job_key: &str) -> Result<Option<Job>, Error> {
        Ok(sqlx::query_as(self.db.sql.jobs.remove_job.clone())
            .bind(job_key)
            .fetch_optional(self.db.exec())
            .await?)
    }

    /// Marks jobs as done (deletes them) unless a worker is running them.
    pub async fn complete_jobs(&self, ids: &[i64]) -> Result<Vec<Job>, Error> {
        self.admin(&self.db.sql.jobs.complete_jobs, ids, |q| q)
            .await
    }

    /// Marks jobs as permanently failed unless a worker is running them.
    pub async fn permanently_fail_jobs(
        &self,
        ids: &[i64],
        reason: Option<&str>,
    ) -> Result<Vec<Job>, Error> {
        self.admin(&self.db.sql.jobs.permanently_fail_jobs, ids, |q| {
            q.bind(reason)
        })
        .await
    }

    /// Changes run_at, priority, attempts or max_attempts of jobs that are
    /// not running. Zero is a real value here.
    pub async fn reschedule_jobs(
        &self,
        ids: &[i64],
        changes: Reschedule,
    ) -> Result<Vec<Job>, Error> {
        self.admin(&self.db.sql.jobs.reschedule_jobs, ids, |q| {
            q.bind(changes.run_at)
                .bind(changes.priority.map(i32::from))
                .bind(changes.attempts.map(i32::from))
                .bind(changes.max_attempts.map(i32::from))
        })
        .await
    }

    async fn admin<'q>(
        &self,
        statement: &SqlStr,
        ids: &'q [i64],
        bind: impl FnOnce(JobsQuery<'q>) -> JobsQuery<'q>,
    ) -> Result<Vec<Job>, Error> {
        let query = sqlx::query_as::<_, Job>(statement.clone()).bind(ids);
        Ok(bind(query).fetch_all(self.db.exec()).await?)
    }

    /// Unlocks every job and queue locked by these pool ids (no age check).
    /// Use it for workers you know are gone.
    pub async fn force_unlock_workers(&self, pool_ids: &[String]) -> Result<(), Error> {
        sqlx::query(self.db.sql.jobs.force_unlock_workers.clone())
            .bind(pool_ids)
            .execute(self.db.exec())
            .await?;
        Ok(())
    }

    /// The workers registered in this schema, oldest first. Node workers do
    /// not register and are not listed.
    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let rows = sqlx::query(self.db.sql.workers.list_workers.clone())
            .fetch_all(self.db.exec())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkerInfo {
                    id: row.try_get("id")?,
                    started_at: row.try_get("started_at")?,
                    last_heartbeat_at: row.try_get("last_heartbeat_at")?,
                    metadata: row.try_get("metadata")?,
                    jobs_held: row.try_get("jobs_held")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// Recovers now the jobs of registered workers whose last heartbeat is
    /// older than `threshold` (what running workers do periodically): the
    /// jobs are unlocked for retry, their attempt counted, and the workers
    /// forgotten. Returns an empty report if another process is sweeping.
    pub async fn recover_stale_workers(
        &self,
        threshold: std::time::Duration,
    ) -> Result<RecoveryReport, Error> {
        Ok(recover_stale(&self.db, threshold, std::time::Duration::ZERO, None).await?)
    }

    /// Runs cleanup operations, in their fixed order. `keep` lists task
    /// identifiers [`Cleanup::GcTaskIdentifiers`] must not delete.
    pub async fn cleanup(&self, tasks: &[Cleanup], keep: &[String]) -> Result<(), Error> {
        let mut conn = self.db.pool.acquire().await?;
        if tasks.contains(&Cleanup::DeletePermafailedJobs) {
            sqlx::query(self.db.sql.jobs.cleanup_permafailed_jobs.clone())
                .execute(self.db.on(&mut conn))
                .await?;
        }
        if tasks.contains(&Cleanup::GcTaskIdentifiers) {
            sqlx::query(self.db.sql.jobs.cleanup_task_identifiers.clone())
                .bind(keep)
                .execute(self.db.on(&mut conn))
                .await?;
        }
        if tasks.contains(&Cleanup::GcJobQueues) {
            sqlx::query(self.db.sql.jobs.cleanup_job_queues.clone())
                .execute(self.db.on(&mut conn))
                .await?;
        }
        Ok(())
    }
}

/// A registered worker, as [`WorkerUtils::list_workers`] reports it.
///
/// ```
/// fn is_stale(w: &graphile_worker::WorkerInfo, now: chrono::DateTime<chrono::Utc>) -> bool {
///     now - w.last_heartbeat_at > chrono::Duration::seconds(60)
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The pool id (also the `locked_by` of its jobs).
    pub id: String,
    /// When it registered.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
    /// What it said about itself: host, pid, version, tasks.
    pub metadata: Option<serde_json::Value>,
    /// How many jobs it has locked now.
    pub jobs_held: i64,
}
