//! Typed enqueue: jobs whose payload is a [`Task`], so the identifier and
//! the payload's JSON shape come from the type. One job goes through
//! [`NewJob::typed`] and the raw path; many go in one `add_jobs` call, each
//! with the task's [`Task::default_spec`].

use std::collections::HashMap;

use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use super::batch::Batch;
use super::{NewJob, serialize_error};
use crate::error::Error;
use crate::job::Job;
use crate::spec::JobSpec;
use crate::task::Task;
use crate::worker_utils::WorkerUtils;

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
        self.add_job_in(self.db.exec(), payload, spec).await
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
    /// utils.add_job_in(&mut *tx, Welcome { user_id }, JobSpec::default()).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_job_in<'e, E, T>(
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
        self.add_raw_job_in(executor, &job.identifier, job.payload, job.spec)
            .await
    }

    /// Adds one job of task `T` per payload, in one statement, each with the
    /// task's [`Task::default_spec`]; returns the jobs in input order. For
    /// per-job options, build the batch with [`NewJob::typed`] and call
    /// [`add_raw_jobs`](Self::add_raw_jobs). When you do not need the jobs
    /// back, [`add_jobs_count`](Self::add_jobs_count) is faster: reading
    /// large batches back costs about a microsecond per job.
    ///
    /// The batch rules of [`add_raw_jobs`](Self::add_raw_jobs) apply: a task
    /// whose default options carry a job key can add one job per call, more
    /// is [`Error::InvalidBatch`].
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
        self.add_jobs_in(self.db.exec(), payloads).await
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
    /// utils.add_jobs_in(&mut *tx, [Resize { image_id: 1 }, Resize { image_id: 2 }]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs_in<'e, E, T>(
        &self,
        executor: E,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<Vec<Job>, Error>
    where
        E: PgExecutor<'e>,
        T: Task,
    {
        // Each payload's JSON text is kept, to match the rows back to it.
        let payloads = payloads
            .into_iter()
            .map(|payload| serde_json::value::to_raw_value(&payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serialize_error(T::IDENTIFIER))?;
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let spec = self.stamp(T::IDENTIFIER, T::default_spec());
        let batch = Batch::of_payloads::<T, _>(&payloads, &spec)?;
        // Every job of the batch has task `T` and the queue of its spec, so
        // the statement returns bare rows and the names are filled in here.
        let queue_name = spec.queue_name;
        let mut order = InputOrder::new(&payloads);
        let rows = sqlx::query(batch.statements(self.statements()).rows.clone())
            .bind(batch.specs.json)
            .bind(batch.preserve_run_at)
            .try_map(|row: PgRow| {
                let input = order.place(row.try_get_raw(2)?.as_str().map_err(sqlx::Error::Decode)?);
                let job_queue_id: Option<i32> = row.try_get(1)?;
                let queue_name = job_queue_id.and(queue_name.clone());
                Ok((
                    input,
                    Job::from_positional_row(&row, T::IDENTIFIER.to_owned(), queue_name)?,
                ))
            })
            .fetch_all(self.db.within(executor))
            .await?;
        Ok(InputOrder::arrange(rows, payloads.len()))
    }

    /// Adds one job of task `T` per payload, in one statement, each with the
    /// task's [`Task::default_spec`], and returns only how many jobs were
    /// written: no rows come back, so this is the fastest way to enqueue in
    /// bulk.
    ///
    /// ```no_run
    /// use graphile_worker::{task, WorkerUtils};
    ///
    /// #[task]
    /// async fn resize(image_id: i64) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let added = utils.add_jobs_count((0..100_000).map(|image_id| Resize { image_id })).await?;
    /// assert_eq!(added, 100_000);
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs_count<T: Task>(
        &self,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<u64, Error> {
        self.add_jobs_count_in(self.db.exec(), payloads).await
    }

    /// [`add_jobs_count`](Self::add_jobs_count) through `executor`, such as
    /// the caller's open transaction.
    ///
    /// ```no_run
    /// use graphile_worker::{task, WorkerUtils};
    ///
    /// #[task]
    /// async fn resize(image_id: i64) {}
    ///
    /// # async fn example(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
    /// let mut tx = utils.pool().begin().await?;
    /// utils.add_jobs_count_in(&mut *tx, (0..10).map(|image_id| Resize { image_id })).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs_count_in<'e, E, T>(
        &self,
        executor: E,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<u64, Error>
    where
        E: PgExecutor<'e>,
        T: Task,
    {
        let payloads: Vec<T> = payloads.into_iter().collect();
        if payloads.is_empty() {
            return Ok(0);
        }
        Batch::of_payloads::<T, _>(&payloads, &self.stamp(T::IDENTIFIER, T::default_spec()))?
            .add_counted(self.statements(), self.db.within(executor))
            .await
    }
}

/// Puts the rows of a typed batch back in input order. `add_jobs` writes
/// its specs in whatever order its plan yields, which is not always the
/// input's (a batch of one task comes back reversed under some plans). The
/// jobs of a typed batch differ only in their payloads, so each row is
/// matched to the input whose JSON text it stores (the `json` column keeps
/// the text as sent); inputs with equal payloads are interchangeable.
struct InputOrder<'a> {
    payloads: &'a [Box<RawValue>],
    /// While rows arrive in input order: the next input.
    next: usize,
    /// After the first row out of order: unmatched inputs by payload text,
    /// each list in descending order so that `pop` takes the first.
    rest: Option<HashMap<&'a str, Vec<usize>>>,
}

impl<'a> InputOrder<'a> {
    fn new(payloads: &'a [Box<RawValue>]) -> Self {
        Self {
            payloads,
            next: 0,
            rest: None,
        }
    }

    /// The input a row with this payload text belongs to; `None` if no
    /// unmatched input has it (a keyed job whose array payload was appended
    /// to an existing one).
    fn place(&mut self, text: &str) -> Option<usize> {
        if self.rest.is_none() {
            if self
                .payloads
                .get(self.next)
                .is_some_and(|p| p.get() == text)
            {
                self.next += 1;
                return Some(self.next - 1);
            }
            let mut rest: HashMap<&str, Vec<usize>> = HashMap::new();
            for index in (self.next..self.payloads.len()).rev() {
                rest.entry(self.payloads[index].get())
                    .or_default()
                    .push(index);
            }
            self.rest = Some(rest);
        }
        self.rest.as_mut()?.get_mut(text)?.pop()
    }

    /// The jobs in input order; any row not matched goes last.
    fn arrange(rows: Vec<(Option<usize>, Job)>, inputs: usize) -> Vec<Job> {
        if rows
            .iter()
            .enumerate()
            .all(|(i, (input, _))| *input == Some(i))
        {
            return rows.into_iter().map(|(_, job)| job).collect();
        }
        let mut slots: Vec<Option<Job>> = std::iter::repeat_with(|| None).take(inputs).collect();
        let mut unmatched = Vec::new();
        for (input, job) in rows {
            match input.and_then(|i| slots.get_mut(i)) {
                Some(slot @ None) => *slot = Some(job),
                _ => unmatched.push(job),
            }
        }
        slots.into_iter().flatten().chain(unmatched).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64) -> Job {
        let now = chrono::Utc::now();
        Job {
            id,
            queue_name: None,
            task_identifier: "mail".into(),
            payload: serde_json::json!({}),
            priority: 0,
            run_at: now,
            attempts: 0,
            max_attempts: 25,
            last_error: None,
            created_at: now,
            updated_at: now,
            key: None,
            locked_at: None,
            locked_by: None,
            revision: 0,
            flags: None,
        }
    }

    /// Places rows with these payload texts; returns the arranged job ids
    /// (each row's id is its arrival position).
    fn arranged(inputs: &[&str], rows: &[&str]) -> Vec<i64> {
        let payloads: Vec<Box<RawValue>> = inputs
            .iter()
            .map(|t| RawValue::from_string((*t).to_owned()).unwrap())
            .collect();
        let mut order = InputOrder::new(&payloads);
        let placed = rows
            .iter()
            .enumerate()
            .map(|(n, text)| (order.place(text), job(n as i64)))
            .collect();
        InputOrder::arrange(placed, payloads.len())
            .iter()
            .map(|j| j.id)
            .collect()
    }

    #[test]
    fn rows_are_put_back_in_input_order() {
        let inputs = ["1", "2", "2", "3"];
        assert_eq!(arranged(&inputs, &["1", "2", "2", "3"]), [0, 1, 2, 3]);
        assert_eq!(arranged(&inputs, &["3", "2", "2", "1"]), [3, 1, 2, 0]);
        assert_eq!(arranged(&inputs, &["1", "3", "2", "2"]), [0, 2, 3, 1]);
        // A row matching no input (an appended batch payload) goes last.
        assert_eq!(arranged(&["[1]"], &["[0,1]"]), [0]);
        assert_eq!(arranged(&["1", "2"], &["2", "9"]), [0, 1]);
    }
}
