//! Adding jobs: every way onto the queue, typed and raw, one job or many.
//!
//! - [`typed`]: jobs whose payload is a [`Task`], so the identifier and the
//!   payload's JSON shape come from the type (`add_job`, `add_jobs`,
//!   `add_jobs_count`); `#[task]`'s generated `enqueue*` helpers call these.
//! - [`raw`]: any identifier and a JSON payload (`add_raw_job`,
//!   `add_raw_jobs`, `add_raw_jobs_count_in`), for tasks written elsewhere or
//!   batches that mix tasks.
//! - [`batch`]: what both share for many jobs in one `add_jobs` call: the
//!   rules a batch must follow ([`Error::InvalidBatch`] when it does not),
//!   the one spec row type and the statements that send it.
//! - Here: [`NewJob`], one job of a raw batch, built raw or from a task.
//!
//! Names follow one rule: a method ending in `_in` runs on the caller's
//! executor, such as an open transaction (the job exists only if it
//! commits); without it, on the pool of the
//! [`WorkerUtils`](crate::WorkerUtils). `_with` adds a [`JobSpec`] to a call
//! that otherwise takes the task's defaults (the generated `enqueue_with`);
//! `add_job` and `add_raw_job` always take one.

mod batch;
mod raw;
mod typed;

use crate::error::Error;
use crate::spec::JobSpec;
use crate::task::Task;

/// One job for [`WorkerUtils::add_raw_jobs`](crate::WorkerUtils::add_raw_jobs):
/// a task identifier, a JSON payload and its options.
///
/// ```
/// use graphile_worker::{JobSpec, NewJob};
/// let job = NewJob::new("send_email", serde_json::json!({"to": "a@example.com"}));
/// let later = NewJob { spec: JobSpec { priority: Some(5), ..Default::default() }, ..job.clone() };
/// assert_eq!(later.identifier, "send_email");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The task identifier.
    pub identifier: String,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// Queue, run_at, key, priority and so on.
    pub spec: JobSpec,
}

impl NewJob {
    /// A job with the default spec.
    ///
    /// ```
    /// let job = graphile_worker::NewJob::new("send_email", serde_json::json!({"to": "a@example.com"}));
    /// assert_eq!(job.spec, graphile_worker::JobSpec::default());
    /// ```
    pub fn new(identifier: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            identifier: identifier.into(),
            payload,
            spec: JobSpec::default(),
        }
    }

    /// A job for task `T`: its identifier, `payload` as JSON, and `spec` over
    /// the task's [`Task::default_spec`]. Use it to build batches for
    /// [`WorkerUtils::add_raw_jobs`](crate::WorkerUtils::add_raw_jobs) that
    /// mix tasks or give each job its own options.
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
        let payload = serde_json::to_value(payload).map_err(serialize_error(T::IDENTIFIER))?;
        Ok(NewJob {
            identifier: T::IDENTIFIER.to_owned(),
            payload,
            spec: spec.or(&T::default_spec()),
        })
    }
}

/// The error for a payload of task `identifier` that serde could not turn
/// into JSON.
fn serialize_error(identifier: &str) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |source| Error::Serialize {
        identifier: identifier.to_owned(),
        source,
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
            "could not serialise the payload for task `unserialisable` to JSON; change the payload's type or value so serde_json accepts it (map keys must be strings, for example)"
        );
    }
}
