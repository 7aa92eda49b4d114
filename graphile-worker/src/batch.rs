//! Batch jobs: a job whose payload is a JSON array of items, settled item
//! by item, as Node graphile-worker's batch jobs are.
//!
//! Adding an item with a job key while the keyed job waits appends it to
//! that job's array (the `add_job`/`add_jobs` functions concatenate two
//! array payloads on a key conflict). When the job runs, the task returns a
//! result per item; the items that failed become the job's new payload and
//! are retried with its attempts and backoff, the others are done.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::JobContext;
use crate::data::DataRequirement;
use crate::policy::TaskPolicy;
use crate::spec::JobSpec;
use crate::task::{Task, TaskError};

/// A task that runs a batch of items at once: the job's payload is a JSON
/// array of `Self`, and the task settles each item.
///
/// Register it as [`Batch<Self>`](Batch) (`.register::<Batch<Email>>()`),
/// and add items as `Batch(vec![item])`: with a job key, items added while
/// the job waits join its batch.
///
/// ```
/// use graphile_worker::{Batch, BatchTask, JobContext, JobSpec, TaskError, Worker, WorkerUtils};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
///
/// impl BatchTask for Email {
///     const IDENTIFIER: &'static str = "send_emails";
///     async fn run_batch(
///         emails: Vec<Email>,
///         _ctx: JobContext,
///     ) -> Result<Vec<Result<(), TaskError>>, TaskError> {
///         // One result per email, in order; `Err(..)` for the whole batch
///         // retries every email.
///         Ok(emails
///             .iter()
///             .map(|e| if e.to.contains('@') { Ok(()) } else { Err(TaskError::new("no @")) })
///             .collect())
///     }
/// }
///
/// # async fn demo(utils: WorkerUtils) -> Result<(), graphile_worker::Error> {
/// // Both emails wait in one job until a worker takes it.
/// let spec = JobSpec { job_key: Some("digest:42".into()), ..Default::default() };
/// utils.add_job(Batch(vec![Email { to: "a@example.com".into() }]), spec.clone()).await?;
/// utils.add_job(Batch(vec![Email { to: "b@example.com".into() }]), spec).await?;
/// let worker = Worker::options().register::<Batch<Email>>();
/// # let _ = worker; Ok(()) }
/// ```
pub trait BatchTask: Serialize + DeserializeOwned + Send + 'static {
    /// The task identifier stored with each job.
    const IDENTIFIER: &'static str;

    /// Runs one batch. `Ok` holds one result per item, in order: the items
    /// that failed are kept as the job's payload and retried (the job's
    /// error is `Batch failures:` and their messages, one per line), the
    /// others are done. The job fails permanently only when every failed
    /// item's error is [permanent](TaskError::permanent). `Err` fails the
    /// whole batch; so does a result list of the wrong length, since the
    /// worker cannot tell which items it covers. Per item only the message
    /// and permanence count (an item's `retry_after` or `snooze` is a plain
    /// failure). A run ended by its time limit, a cancellation or a
    /// shutdown runs the whole batch again.
    fn run_batch(
        items: Vec<Self>,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Vec<Result<(), TaskError>>, TaskError>> + Send;

    /// Options the enqueue helpers use unless the caller's spec sets them.
    fn default_spec() -> JobSpec {
        JobSpec::default()
    }

    /// How this task's jobs run (see [`Task::policy`]).
    fn policy() -> TaskPolicy {
        TaskPolicy::default()
    }

    /// The values this task takes from the worker (see
    /// [`Task::required_data`]).
    fn required_data() -> Vec<DataRequirement> {
        Vec::new()
    }
}

/// The payload of batch task `T`: its items, stored as a JSON array. It is
/// the [`Task`] a worker registers for `T`, and what adding items takes.
///
/// ```
/// # use graphile_worker::{Batch, BatchTask, JobContext, TaskError};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Email { to: String }
/// # impl BatchTask for Email {
/// #     const IDENTIFIER: &'static str = "send_emails";
/// #     async fn run_batch(e: Vec<Email>, _: JobContext) -> Result<Vec<Result<(), TaskError>>, TaskError> {
/// #         Ok(e.iter().map(|_| Ok(())).collect())
/// #     }
/// # }
/// let batch = Batch(vec![Email { to: "a@example.com".into() }]);
/// assert_eq!(serde_json::to_string(&batch).unwrap(), r#"[{"to":"a@example.com"}]"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Batch<T>(pub Vec<T>);

impl<T: BatchTask> Task for Batch<T> {
    const IDENTIFIER: &'static str = T::IDENTIFIER;

    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let items = self.0.len();
        let job = ctx.clone();
        let results = T::run_batch(self.0, ctx).await?;
        settle(T::IDENTIFIER, &job.job().payload, items, results)
    }

    fn default_spec() -> JobSpec {
        T::default_spec()
    }

    fn policy() -> TaskPolicy {
        T::policy()
    }

    fn required_data() -> Vec<DataRequirement> {
        T::required_data()
    }
}

/// The job's outcome from its items' results: done when all succeeded;
/// otherwise a failure that keeps only the failed items of `payload` (the
/// array the items were decoded from).
pub(crate) fn settle(
    task: &str,
    payload: &serde_json::Value,
    items: usize,
    results: Vec<Result<(), TaskError>>,
) -> Result<(), TaskError> {
    if results.len() != items {
        return Err(TaskError::new(format!(
            "batch task {task} returned {} results for {items} items; the whole batch will be retried",
            results.len()
        )));
    }
    // The failed items are copied from the payload they were decoded from;
    // without it (a batch run under another task's job, or a hand-built
    // context) nothing can be kept, so the whole job fails as it is.
    let Some(elements) = payload.as_array().filter(|a| a.len() == items) else {
        let failures: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.message().to_owned()))
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        return Err(TaskError::new(format!(
            "Batch failures:\n{}",
            failures.join("\n")
        )));
    };
    let mut failed = Vec::new();
    let mut messages = Vec::new();
    let mut all_permanent = true;
    for (index, result) in results.into_iter().enumerate() {
        if let Err(e) = result {
            all_permanent &= e.is_permanent();
            messages.push(e.message().to_owned());
            if let Some(element) = elements.get(index) {
                failed.push(element.clone());
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let message = format!("Batch failures:\n{}", messages.join("\n"));
    let error = if all_permanent {
        TaskError::permanent(message)
    } else {
        TaskError::new(message)
    };
    Err(error.with_replacement_payload(serde_json::Value::Array(failed).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_failed_items_are_kept_with_their_messages() {
        let payload = json!([{"n": 1}, {"n": 2}, {"n": 3}]);
        let error = settle(
            "t",
            &payload,
            3,
            vec![Ok(()), Err(TaskError::new("two")), Ok(())],
        )
        .unwrap_err();
        assert_eq!(error.message(), "Batch failures:\ntwo");
        assert_eq!(error.replacement_payload(), Some(r#"[{"n":2}]"#));
        assert!(!error.is_permanent());
    }

    #[test]
    fn all_succeeded_is_done_and_a_wrong_count_retries_everything() {
        let payload = json!([1, 2]);
        assert!(settle("t", &payload, 2, vec![Ok(()), Ok(())]).is_ok());
        let error = settle("t", &payload, 2, vec![Ok(())]).unwrap_err();
        assert_eq!(
            error.message(),
            "batch task t returned 1 results for 2 items; the whole batch will be retried"
        );
        assert_eq!(error.replacement_payload(), None);
    }

    #[test]
    fn without_the_items_payload_the_job_fails_whole_and_keeps_its_payload() {
        let error = settle(
            "t",
            &json!({"not": "an array"}),
            2,
            vec![Ok(()), Err(TaskError::new("b"))],
        )
        .unwrap_err();
        assert_eq!(error.message(), "Batch failures:\nb");
        assert_eq!(error.replacement_payload(), None);
    }

    #[test]
    fn permanent_only_when_every_failure_is() {
        let payload = json!([1, 2]);
        let both = settle(
            "t",
            &payload,
            2,
            vec![
                Err(TaskError::permanent("a")),
                Err(TaskError::permanent("b")),
            ],
        )
        .unwrap_err();
        assert!(both.is_permanent());
        assert_eq!(both.replacement_payload(), Some("[1,2]"));
        let mixed = settle(
            "t",
            &payload,
            2,
            vec![Err(TaskError::permanent("a")), Err(TaskError::new("b"))],
        )
        .unwrap_err();
        assert!(!mixed.is_permanent());
    }
}
