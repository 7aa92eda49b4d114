//! The `Task` trait: what a job runs.

use std::any::Any;
use std::fmt;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::JobContext;
use crate::data::DataRequirement;
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

    /// The values this task takes from the worker (see
    /// [`Data`](crate::Data)); [`WorkerOptions::init`](crate::WorkerOptions::init)
    /// refuses to start a worker that lacks one. `#[task]` lists its
    /// `Data<T>` parameters here; a hand-written task that calls
    /// [`JobContext::data`] lists the types it asks for.
    fn required_data() -> Vec<DataRequirement> {
        Vec::new()
    }
}

/// Why a job failed: the message stored in `last_error`, and whether the
/// job may be retried.
///
/// ```
/// let err = graphile_worker::TaskError::new("mail server said no");
/// assert_eq!(err.to_string(), "mail server said no");
/// assert!(!err.is_permanent());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
    permanent: bool,
}

impl TaskError {
    /// A failure with this message; the job is retried with backoff while
    /// it has attempts left.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
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
            permanent: true,
        }
    }

    /// Whether this failure ends the job without retries.
    pub fn is_permanent(&self) -> bool {
        self.permanent
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
