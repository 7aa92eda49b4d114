//! The `Task` trait: what a job runs.

use std::fmt;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::JobContext;
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
}

/// Why a job failed: the message stored in `last_error`.
///
/// ```
/// let err = graphile_worker::TaskError::new("mail server said no");
/// assert_eq!(err.to_string(), "mail server said no");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    message: String,
}

impl TaskError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
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

impl<E: fmt::Display> IntoTaskResult for Result<(), E> {
    fn into_task_result(self) -> Result<(), TaskError> {
        self.map_err(|e| TaskError::from_display(&e))
    }
}
