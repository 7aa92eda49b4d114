//! Raw enqueue: any task identifier with a JSON payload, for tasks written
//! elsewhere (Node, another service) and batches that mix tasks or give each
//! job its own options.

use sqlx::PgExecutor;

use super::NewJob;
use super::batch::Batch;
use crate::error::Error;
use crate::job::Job;
use crate::spec::JobSpec;
use crate::worker_utils::WorkerUtils;

impl WorkerUtils {
    /// Adds one job. With a [`JobSpec::job_key`], an existing job with that
    /// key is updated according to the key mode.
    ///
    /// ```no_run
    /// use graphile_worker::{JobSpec, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let job = utils
    ///     .add_raw_job("sendWelcome", serde_json::json!({"userId": 7}), JobSpec::default())
    ///     .await?;
    /// assert_eq!(job.task_identifier, "sendWelcome");
    /// # Ok(()) }
    /// ```
    pub async fn add_raw_job(
        &self,
        identifier: &str,
        payload: serde_json::Value,
        spec: JobSpec,
    ) -> Result<Job, Error> {
        self.add_raw_job_in(self.db.exec(), identifier, payload, spec)
            .await
    }

    /// [`add_raw_job`](Self::add_raw_job) through `executor`, for example
    /// the caller's open transaction: the job exists, and wakes workers, only
    /// if it commits.
    ///
    /// ```no_run
    /// use graphile_worker::{JobSpec, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let mut tx = utils.pool().begin().await?;
    /// utils
    ///     .add_raw_job_in(&mut *tx, "sendWelcome", serde_json::json!({"userId": 7}), JobSpec::default())
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_raw_job_in<'e, E>(
        &self,
        executor: E,
        identifier: &str,
        payload: serde_json::Value,
        spec: JobSpec,
    ) -> Result<Job, Error>
    where
        E: PgExecutor<'e>,
    {
        let spec = self.stamp(identifier, spec);
        // As JSON text, not jsonb (sqlx's encoding of a `Value`): `json`
        // keeps what jsonb refuses, such as the escape `\u0000`.
        let job: Option<Job> = sqlx::query_as(self.statements().jobs.add_job.clone())
            .bind(identifier)
            .bind(payload.to_string())
            .bind(spec.queue_name.as_deref())
            .bind(spec.run_at)
            .bind(spec.max_attempts.map(i32::from))
            .bind(spec.job_key.as_deref())
            .bind(spec.priority.map(i32::from))
            .bind(spec.flags.as_deref())
            .bind(spec.job_key_mode.unwrap_or_default().as_str())
            .fetch_optional(self.db.within(executor))
            .await
            .or_else(|e| match e {
                // add_job can return an all-NULL row when a worker locks the
                // keyed job mid-call (a race in graphile-worker's SQL).
                sqlx::Error::ColumnDecode { index, source } => {
                    tracing::debug!(%index, %source, "add_job returned an empty row");
                    Ok(None)
                }
                other => Err(other),
            })?;
        job.ok_or_else(|| Error::JobNotScheduled(spec.job_key.unwrap_or_default()))
    }

    /// Adds many jobs in one statement and returns them in input order.
    ///
    /// Batch rules (from `add_jobs`): a job key may appear once; keyed jobs
    /// may use [`JobKeyMode::Replace`](crate::JobKeyMode::Replace) or
    /// [`JobKeyMode::PreserveRunAt`](crate::JobKeyMode::PreserveRunAt), but
    /// not both in one call, and not
    /// [`JobKeyMode::UnsafeDedupe`](crate::JobKeyMode::UnsafeDedupe). A batch
    /// that breaks them is refused with [`Error::InvalidBatch`] and nothing
    /// is added.
    ///
    /// ```no_run
    /// use graphile_worker::{NewJob, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let jobs = utils
    ///     .add_raw_jobs(&[
    ///         NewJob::new("sendWelcome", serde_json::json!({"userId": 7})),
    ///         NewJob::new("resize", serde_json::json!({"imageId": 3})),
    ///     ])
    ///     .await?;
    /// assert_eq!(jobs[1].task_identifier, "resize");
    /// # Ok(()) }
    /// ```
    pub async fn add_raw_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Job>, Error> {
        self.add_raw_jobs_in(self.db.exec(), jobs).await
    }

    /// [`add_raw_jobs`](Self::add_raw_jobs) through `executor`, such as the
    /// caller's open transaction.
    ///
    /// ```no_run
    /// use graphile_worker::{NewJob, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let mut tx = utils.pool().begin().await?;
    /// utils
    ///     .add_raw_jobs_in(&mut *tx, &[NewJob::new("sendWelcome", serde_json::json!({"userId": 7}))])
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_raw_jobs_in<'e, E>(
        &self,
        executor: E,
        jobs: &[NewJob],
    ) -> Result<Vec<Job>, Error>
    where
        E: PgExecutor<'e>,
    {
        Batch::of_jobs(&self.stamp_jobs(jobs))?
            .add(self.statements(), self.db.within(executor))
            .await
    }

    /// Adds many jobs in one statement through `executor` and returns only
    /// how many rows were written: the fastest way to enqueue raw jobs in
    /// bulk. The batch rules of [`add_raw_jobs`](Self::add_raw_jobs) apply.
    ///
    /// ```no_run
    /// use graphile_worker::{NewJob, WorkerUtils};
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let jobs: Vec<NewJob> = (0..10_000)
    ///     .map(|n| NewJob::new("ping", serde_json::json!({ "n": n })))
    ///     .collect();
    /// let added = utils.add_raw_jobs_count_in(utils.pool(), &jobs).await?;
    /// assert_eq!(added, 10_000);
    /// # Ok(()) }
    /// ```
    pub async fn add_raw_jobs_count_in<'e, E>(
        &self,
        executor: E,
        jobs: &[NewJob],
    ) -> Result<u64, Error>
    where
        E: PgExecutor<'e>,
    {
        Batch::of_jobs(&self.stamp_jobs(jobs))?
            .add_counted(self.statements(), self.db.within(executor))
            .await
    }
}
