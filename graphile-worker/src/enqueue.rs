//! Typed enqueue: adding jobs whose payload is a [`Task`], so the identifier
//! and the payload's JSON shape come from the type.

use sqlx::PgExecutor;

use crate::error::Error;
use crate::job::Job;
use crate::spec::JobSpec;
use crate::task::Task;
use crate::worker_utils::{NewJob, WorkerUtils};

impl NewJob {
    /// A job for task `T`: its identifier, `payload` as JSON, and `spec` over
    /// the task's [`Task::default_spec`]. Use it to build batches for
    /// [`WorkerUtils::add_raw_jobs`] that mix tasks or give each job its own
    /// options.
    ///
    /// ```
    /// use graphile_worker::{JobContext, JobSpec, NewJob, Task, TaskError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Resize { image_id: i64 }
    /// impl Task for Resize {
    ///     const IDENTIFIER: &'static str = "resize";
    ///     fn default_spec() -> JobSpec {
    ///         JobSpec { queue_name: Some("images".into()), ..JobSpec::default() }
    ///     }
    ///     async fn run(self, _ctx: JobContext) -> Result<(), TaskError> { Ok(()) }
    /// }
    ///
    /// let job = NewJob::typed(&Resize { image_id: 7 }, JobSpec { priority: Some(3), ..JobSpec::default() })?;
    /// assert_eq!(job.identifier, "resize");
    /// assert_eq!(job.payload, serde_json::json!({"image_id": 7}));
    /// assert_eq!(job.spec.queue_name.as_deref(), Some("images"));
    /// assert_eq!(job.spec.priority, Some(3));
    /// # Ok::<(), graphile_worker::Error>(())
    /// ```
    pub fn typed<T: Task>(payload: &T, spec: JobSpec) -> Result<NewJob, Error> {
        let payload = serde_json::to_value(payload).map_err(|source| Error::Serialize {
            identifier: T::IDENTIFIER.to_owned(),
            source,
        })?;
        Ok(NewJob {
            identifier: T::IDENTIFIER.to_owned(),
            payload,
            spec: spec.or(&T::default_spec()),
        })
    }
}

impl WorkerUtils {
    /// Adds one job for task `T`. Options set in `spec` win over the task's
    /// [`Task::default_spec`] (for `#[task]`, its `queue`, `max_attempts` and
    /// `priority`). With a [`JobSpec::job_key`], an existing job with that
    /// key is updated according to the key mode.
    ///
    /// `#[task]` generates `enqueue` and `enqueue_with` on the payload
    /// struct, which call this.
    ///
    /// ```no_run
    /// use graphile_worker::{task, JobSpec, WorkerUtils};
    ///
    /// #[task(queue = "emails")]
    /// async fn send_email(to: String) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let spec = JobSpec { priority: Some(-5), ..JobSpec::default() };
    /// let job = utils.add_job(SendEmail { to: "a@example.com".into() }, spec).await?;
    /// assert_eq!(job.task_identifier, "send_email");
    /// assert_eq!(job.queue_name.as_deref(), Some("emails"));
    /// # Ok(()) }
    /// ```
    pub async fn add_job<T: Task>(&self, payload: T, spec: JobSpec) -> Result<Job, Error> {
        self.add_job_with(self.pool(), payload, spec).await
    }

    /// [`add_job`](Self::add_job) through `executor`, for example the
    /// caller's open transaction: the job exists, and wakes workers, only if
    /// the transaction commits.
    ///
    /// ```no_run
    /// use graphile_worker::{task, JobSpec, WorkerUtils};
    ///
    /// #[task]
    /// async fn welcome(user_id: i64) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let mut tx = utils.pool().begin().await?;
    /// let user_id: i64 = sqlx::query_scalar("insert into users default values returning id")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// utils.add_job_with(&mut *tx, Welcome { user_id }, JobSpec::default()).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_job_with<'e, E, T>(
        &self,
        executor: E,
        payload: T,
        spec: JobSpec,
    ) -> Result<Job, Error>
    where
        E: PgExecutor<'e>,
        T: Task,
    {
        let job = NewJob::typed(&payload, spec)?;
        self.add_raw_job_with(executor, &job.identifier, job.payload, job.spec)
            .await
    }

    /// Adds one job of task `T` per payload, in one statement, each with the
    /// task's [`Task::default_spec`]; returns the jobs in input order. For
    /// per-job options, build the batch with [`NewJob::typed`] and call
    /// [`add_raw_jobs`](Self::add_raw_jobs).
    ///
    /// ```no_run
    /// use graphile_worker::{task, WorkerUtils};
    ///
    /// #[task]
    /// async fn resize(image_id: i64) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let jobs = utils.add_jobs((1..=3).map(|image_id| Resize { image_id })).await?;
    /// assert_eq!(jobs.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs<T: Task>(
        &self,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Job>, Error> {
        self.add_jobs_with(self.pool(), payloads).await
    }

    /// [`add_jobs`](Self::add_jobs) through `executor`, such as the caller's
    /// open transaction.
    ///
    /// ```no_run
    /// use graphile_worker::{task, WorkerUtils};
    ///
    /// #[task]
    /// async fn resize(image_id: i64) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let mut tx = utils.pool().begin().await?;
    /// utils.add_jobs_with(&mut *tx, [Resize { image_id: 1 }, Resize { image_id: 2 }]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs_with<'e, E, T>(
        &self,
        executor: E,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Job>, Error>
    where
        E: PgExecutor<'e>,
        T: Task,
    {
        let jobs = payloads
            .into_iter()
            .map(|payload| NewJob::typed(&payload, JobSpec::default()))
            .collect::<Result<Vec<_>, _>>()?;
        self.add_raw_jobs_with(executor, &jobs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::JobContext;
    use crate::task::TaskError;
    use serde::{Deserialize, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Mail {
        to: String,
    }

    impl Task for Mail {
        const IDENTIFIER: &'static str = "mail";
        fn default_spec() -> JobSpec {
            JobSpec {
                queue_name: Some("mail".into()),
                max_attempts: Some(3),
                ..JobSpec::default()
            }
        }
        async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
            Ok(())
        }
    }

    #[test]
    fn the_callers_spec_wins_over_the_task_defaults() {
        let spec = JobSpec {
            max_attempts: Some(9),
            priority: Some(2),
            ..JobSpec::default()
        };
        let job = NewJob::typed(&Mail { to: "x".into() }, spec).unwrap();
        assert_eq!(job.identifier, "mail");
        assert_eq!(job.payload, serde_json::json!({"to": "x"}));
        assert_eq!(job.spec.queue_name.as_deref(), Some("mail"));
        assert_eq!(job.spec.max_attempts, Some(9));
        assert_eq!(job.spec.priority, Some(2));
    }

    struct Unserialisable;

    impl Serialize for Unserialisable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON for this"))
        }
    }

    impl<'de> Deserialize<'de> for Unserialisable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unserialisable)
        }
    }

    impl Task for Unserialisable {
        const IDENTIFIER: &'static str = "unserialisable";
        async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
            Ok(())
        }
    }

    #[test]
    fn a_payload_serde_refuses_is_a_serialize_error_naming_the_task() {
        let err = NewJob::typed(&Unserialisable, JobSpec::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Serialize { identifier, .. } if identifier == "unserialisable")
        );
        assert_eq!(
            err.to_string(),
            "could not serialise the payload for task `unserialisable`: no JSON for this"
        );
    }
}
