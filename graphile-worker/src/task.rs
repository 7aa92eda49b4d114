//! The `Task` trait: what a job runs.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::JobContext;
use crate::data::DataRequirement;
use crate::policy::TaskPolicy;
use crate::spec::JobSpec;

/// A kind of job: its payload type, its identifier and what it does.
///
/// `#[task]` implements this for the payload struct it generates; you can
/// also implement it by hand and register it with
/// [`WorkerOptions::register`](crate::WorkerOptions::register).
///
/// ```
/// use graphile_worker::{JobContext, Task, TaskError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image_id: i64 }
///
/// impl Task for Resize {
///     const IDENTIFIER: &'static str = "resize";
///     async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
///         if self.image_id < 0 {
///             return Err(TaskError::new("negative image id"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The task identifier stored with each job (at most 128 characters).
    const IDENTIFIER: &'static str;

    /// Runs one job. An `Err` (or a panic) fails the job: its Display text
    /// becomes `last_error` and the job is retried with backoff.
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<(), TaskError>> + Send;

    /// Options the enqueue helpers use unless the caller's spec sets them.
    fn default_spec() -> JobSpec {
        JobSpec::default()
    }

    /// How this task's jobs run: time limit, retry policy, concurrency
    /// (see [`TaskPolicy`]). `#[task(timeout = ..., backoff(...),
    /// concurrency = ...)]` fills it in; the default sets nothing.
    fn policy() -> TaskPolicy {
        TaskPolicy::default()
    }

    /// The values this task takes from the worker (see
    /// [`Data`](crate::Data)); [`WorkerOptions::init`](crate::WorkerOptions::init)
    /// refuses to start a worker that lacks one. `#[task]` lists its
    /// `Data<T>` parameters here; a hand-written task that calls
    /// [`JobContext::data`] lists the types it asks for.
    fn required_data() -> Vec<DataRequirement> {
        Vec::new()
    }
}

/// Why a job failed: the message stored in `last_error`, and what happens
/// next: a retry (after the task's retry policy's delay, or one the task
/// chose with [`retry_after`](Self::retry_after)), a permanent failure, or,
/// with [`snooze`](Self::snooze), no failure at all but a later run.
///
/// ```
/// let err = graphile_worker::TaskError::new("mail server said no");
/// assert_eq!(err.to_string(), "mail server said no");
/// assert!(!err.is_permanent());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    kind: ErrorKind,
    /// A batch job's failed elements (JSON array text), which replace its
    /// payload.
    replacement_payload: Option<String>,
}

/// What a [`TaskError`] does to its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    /// Retried while attempts are left, after this delay if given.
    Retry(Option<Duration>),
    Permanent,
    /// Not a failure: run again after this long.
    Snooze(Duration),
}

impl TaskError {
    /// A failure with this message; the job is retried with backoff while
    /// it has attempts left.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Retry(None),
            replacement_payload: None,
        }
    }

    /// A failure whose next attempt comes after `delay` (instead of the
    /// task's retry policy's delay): for a service that said when to come
    /// back, such as an HTTP 429 with `Retry-After: 60`. With no attempts
    /// left, the job fails permanently as usual.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = graphile_worker::TaskError::retry_after("rate limited", Duration::from_secs(60));
    /// assert_eq!(err.retry_delay(), Some(Duration::from_secs(60)));
    /// ```
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Retry(Some(delay)),
            replacement_payload: None,
        }
    }

    /// Not a failure: "run me again in `delay`" (an export that is not
    /// ready yet). The job is rescheduled at now + `delay`, this attempt is
    /// given back, and `last_error` stays as it was. A task may snooze any
    /// number of times; snoozes never make a job fail.
    ///
    /// ```
    /// use std::time::Duration;
    /// use graphile_worker::{task, TaskError};
    ///
    /// #[task]
    /// async fn poll_export(export_id: i64) -> Result<(), TaskError> {
    ///     let ready = export_id % 2 == 0; // ask the service
    ///     if !ready {
    ///         return Err(TaskError::snooze(Duration::from_secs(30)));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn snooze(delay: Duration) -> Self {
        Self {
            message: format!("snoozed for {}", crate::policy::human_duration(delay)),
            kind: ErrorKind::Snooze(delay),
            replacement_payload: None,
        }
    }

    /// A failure that no retry can fix (an invalid address, a deleted
    /// record): the job is failed permanently now, with this message,
    /// whatever attempts it had left. It stays in the table as a
    /// permanently failed job, as one that used all its attempts does.
    ///
    /// From `?` on your own errors, use [`TaskResultExt::permanent`].
    ///
    /// ```
    /// let err = graphile_worker::TaskError::permanent("user 42 was deleted");
    /// assert!(err.is_permanent());
    /// ```
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Permanent,
            replacement_payload: None,
        }
    }

    /// Whether this failure ends the job without retries.
    pub fn is_permanent(&self) -> bool {
        self.kind == ErrorKind::Permanent
    }

    /// The delay chosen with [`retry_after`](Self::retry_after), if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Retry(delay) => delay,
            _ => None,
        }
    }

    /// How long a [`snooze`](Self::snooze) puts the job off; `None` for a
    /// failure.
    pub fn snoozed_for(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Snooze(delay) => Some(delay),
            _ => None,
        }
    }

    /// A failure described by the Display text of `error`.
    ///
    /// ```
    /// let io = std::io::Error::other("disk full");
    /// assert_eq!(graphile_worker::TaskError::from_display(&io).message(), "disk full");
    /// ```
    pub fn from_display(error: &dyn fmt::Display) -> Self {
        Self::new(error.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// This error, replacing the job's payload with `payload` (JSON text)
    /// when it is stored: how a batch job keeps only its failed elements.
    pub(crate) fn with_replacement_payload(mut self, payload: String) -> Self {
        self.replacement_payload = Some(payload);
        self
    }

    /// The payload this failure stores in place of the job's, if any.
    pub(crate) fn replacement_payload(&self) -> Option<&str> {
        self.replacement_payload.as_deref()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// What a task function may return: `()` or `Result<(), E>` where `E` is
/// displayable (including `anyhow::Error` and `Box<dyn Error>`).
///
/// ```
/// use graphile_worker::IntoTaskResult;
/// assert!(().into_task_result().is_ok());
/// let failed: Result<(), String> = Err("boom".into());
/// assert_eq!(failed.into_task_result().unwrap_err().message(), "boom");
/// ```
pub trait IntoTaskResult {
    /// Converts the return value into the job's outcome.
    fn into_task_result(self) -> Result<(), TaskError>;
}

impl IntoTaskResult for () {
    fn into_task_result(self) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A [`TaskError`] returned as the error keeps its permanence, also inside
/// a `Box<dyn Error + Send + Sync>`; any other error is retried.
impl<E: fmt::Display + 'static> IntoTaskResult for Result<(), E> {
    fn into_task_result(self) -> Result<(), TaskError> {
        self.map_err(|e| {
            let any: &dyn Any = &e;
            if let Some(error) = any.downcast_ref::<TaskError>() {
                return error.clone();
            }
            if let Some(boxed) = any.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>()
                && let Some(error) = boxed.downcast_ref::<TaskError>()
            {
                return error.clone();
            }
            TaskError::from_display(&e)
        })
    }
}

/// `.permanent()` on any `Result` whose error is displayable: with `?`, it
/// fails the job permanently with the error's text.
///
/// ```
/// use graphile_worker::{task, TaskError, TaskResultExt};
///
/// #[task]
/// async fn charge(card: String) -> Result<(), TaskError> {
///     let number: u64 = card.parse().permanent()?; // retrying cannot fix this
///     let _ = number;
///     Ok(())
/// }
/// ```
pub trait TaskResultExt<T> {
    /// Turns the error into a permanent [`TaskError`].
    fn permanent(self) -> Result<T, TaskError>;
}

impl<T, E: fmt::Display> TaskResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, TaskError> {
        self.map_err(|e| TaskError::permanent(e.to_string()))
    }
}
