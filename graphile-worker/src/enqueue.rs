//! Typed enqueue: adding jobs whose payload is a [`Task`], so the identifier
//! and the payload's JSON shape come from the type.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use crate::error::Error;
use crate::job::Job;
use crate::spec::{JobKeyMode, JobSpec};
use crate::sql::SpecsJson;
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
    /// [`add_raw_jobs`](Self::add_raw_jobs). When you do not need the jobs
    /// back, [`add_jobs_count`](Self::add_jobs_count) is faster: reading
    /// large batches back costs about a microsecond per job.
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
        // Each payload's JSON text is kept, to match the rows back to it.
        let payloads = payloads
            .into_iter()
            .map(|payload| serde_json::value::to_raw_value(&payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serialize_error::<T>)?;
        let Some(batch) = TypedBatch::new::<T, _>(&payloads)? else {
            return Ok(Vec::new());
        };
        // Every job of the batch has task `T` and the queue of its spec, so
        // the statement returns bare rows and the names are filled in here.
        let queue_name = batch.spec.queue_name;
        let mut order = InputOrder::new(&payloads);
        let rows = sqlx::query(
            self.statements()
                .bulk(batch.specs.text_payloads)
                .rows
                .clone(),
        )
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
        .fetch_all(executor)
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
        self.add_jobs_count_with(self.pool(), payloads).await
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
    /// utils.add_jobs_count_with(&mut *tx, (0..10).map(|image_id| Resize { image_id })).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_jobs_count_with<'e, E, T>(
        &self,
        executor: E,
        payloads: impl IntoIterator<Item = T>,
    ) -> Result<u64, Error>
    where
        E: PgExecutor<'e>,
        T: Task,
    {
        let payloads: Vec<T> = payloads.into_iter().collect();
        let Some(batch) = TypedBatch::new::<T, _>(&payloads)? else {
            return Ok(0);
        };
        let count: i64 = sqlx::query_scalar(
            self.statements()
                .bulk(batch.specs.text_payloads)
                .count
                .clone(),
        )
        .bind(batch.specs.json)
        .bind(batch.preserve_run_at)
        .fetch_one(executor)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// A typed batch ready for `add_jobs`: the spec array as JSON text, the
/// spec every job shares, and the call's preserve-run_at flag.
struct TypedBatch {
    specs: SpecsJson,
    spec: JobSpec,
    preserve_run_at: bool,
}

impl TypedBatch {
    /// The batch of `payloads` (`T`s, or their JSON text) for task `T`;
    /// `None` when it is empty, which needs no statement.
    fn new<T: Task, P: Serialize>(payloads: &[P]) -> Result<Option<Self>, Error> {
        if payloads.is_empty() {
            return Ok(None);
        }
        let spec = T::default_spec();
        let preserve_run_at = batch_key_mode(&spec, payloads.len())?;
        let specs = serde_json::to_string(&TypedSpecs {
            identifier: T::IDENTIFIER,
            payloads,
            spec: &spec,
        })
        .and_then(SpecsJson::new)
        .map_err(serialize_error::<T>)?;
        Ok(Some(Self {
            specs,
            spec,
            preserve_run_at,
        }))
    }
}

fn serialize_error<T: Task>(source: serde_json::Error) -> Error {
    Error::Serialize {
        identifier: T::IDENTIFIER.to_owned(),
        source,
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

/// Checks a typed batch's shared spec against `add_jobs`' rules; returns its
/// `job_key_preserve_run_at` argument.
fn batch_key_mode(spec: &JobSpec, jobs: usize) -> Result<bool, Error> {
    let Some(key) = &spec.job_key else {
        return Ok(false);
    };
    if jobs > 1 {
        return Err(Error::DuplicateJobKey(key.clone()));
    }
    match spec.job_key_mode.unwrap_or_default() {
        JobKeyMode::UnsafeDedupe => Err(Error::Config(format!(
            "job key `{key}` uses unsafe_dedupe, which add_jobs does not support; add it with add_raw_job"
        ))),
        mode => Ok(mode == JobKeyMode::PreserveRunAt),
    }
}

/// The `job_spec` JSON array of a typed batch, each payload serialised
/// straight into it (no intermediate `serde_json::Value`). Unset options
/// are left out, which `json_populate_recordset` reads as NULL.
struct TypedSpecs<'a, P> {
    identifier: &'static str,
    payloads: &'a [P],
    spec: &'a JobSpec,
}

#[derive(Serialize)]
struct TypedSpec<'a, P> {
    identifier: &'static str,
    payload: &'a P,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<&'a [String]>,
}

impl<P: Serialize> Serialize for TypedSpecs<'_, P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let spec = self.spec;
        let mut seq = serializer.serialize_seq(Some(self.payloads.len()))?;
        for payload in self.payloads {
            seq.serialize_element(&TypedSpec {
                identifier: self.identifier,
                payload,
                queue_name: spec.queue_name.as_deref(),
                run_at: spec.run_at,
                max_attempts: spec.max_attempts,
                job_key: spec.job_key.as_deref(),
                priority: spec.priority,
                flags: spec.flags.as_deref(),
            })?;
        }
        seq.end()
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

    #[test]
    fn a_typed_batch_serialises_each_payload_with_the_shared_spec_and_no_nulls() {
        let spec = Mail::default_spec();
        let payloads = [Mail { to: "a".into() }, Mail { to: "b".into() }];
        let json = serde_json::to_string(&TypedSpecs {
            identifier: Mail::IDENTIFIER,
            payloads: &payloads,
            spec: &spec,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"[{"identifier":"mail","payload":{"to":"a"},"queue_name":"mail","max_attempts":3},{"identifier":"mail","payload":{"to":"b"},"queue_name":"mail","max_attempts":3}]"#
        );
    }

    #[test]
    fn a_typed_batch_follows_the_add_jobs_key_rules() {
        let keyed = |mode| JobSpec {
            job_key: Some("k".into()),
            job_key_mode: mode,
            ..JobSpec::default()
        };
        assert!(!batch_key_mode(&JobSpec::default(), 10).unwrap());
        assert!(!batch_key_mode(&keyed(None), 1).unwrap());
        assert!(batch_key_mode(&keyed(Some(JobKeyMode::PreserveRunAt)), 1).unwrap());
        assert!(matches!(
            batch_key_mode(&keyed(None), 2),
            Err(Error::DuplicateJobKey(key)) if key == "k"
        ));
        assert!(matches!(
            batch_key_mode(&keyed(Some(JobKeyMode::UnsafeDedupe)), 1),
            Err(Error::Config(_))
        ));
    }

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
