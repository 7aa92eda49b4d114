//! Helpers that `#[task]` expansions call through `__private`. They carry
//! the bounds, so the compiler's errors name the user's types and point at
//! the user's tokens.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::JobContext;
use crate::task::{IntoTaskResult, TaskError};

/// Runs a task function's future and converts what it returns into the
/// job's outcome. The bounds are the checks: the future must be `Send` and
/// `'static` (a worker runs it on any thread), and its output must be `()`
/// or `Result<(), E: Display>`.
#[allow(clippy::manual_async_fn)] // the bounds in the signature are the point
pub fn task_future<F>(future: F) -> impl Future<Output = Result<(), TaskError>> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: IntoTaskResult,
{
    async move { future.await.into_task_result() }
}

/// [`task_future`] for a task function that takes `Data<T>` parameters:
/// `data` holds them (or the error of the first one missing, which fails the
/// job), and `call` calls the function with them.
#[allow(clippy::manual_async_fn)] // the bounds in the signature are the point
pub fn task_future_with_data<D, C, F>(
    data: Result<D, TaskError>,
    call: C,
) -> impl Future<Output = Result<(), TaskError>> + Send + 'static
where
    D: Send + 'static,
    C: FnOnce(D) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoTaskResult,
{
    async move {
        match data {
            Ok(data) => call(data).await.into_task_result(),
            Err(error) => Err(error),
        }
    }
}

/// What a `#[task(batch)]` function may return: one result per item
/// (`Vec<Result<(), E>>`), or that inside a `Result` whose error fails the
/// whole batch. Errors keep their permanence as in [`IntoTaskResult`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a batch task's result",
    label = "a #[task(batch)] function returns one result per item",
    note = "return `Vec<Result<(), E>>` (one per item, in order) or `Result<Vec<Result<(), E>>, E2>` (an error fails the whole batch), where the errors implement Display"
)]
pub trait IntoBatchResults {
    /// The items' results, or the whole batch's failure.
    fn into_batch_results(self) -> Result<Vec<Result<(), TaskError>>, TaskError>;
}

impl<E: std::fmt::Display + 'static> IntoBatchResults for Vec<Result<(), E>> {
    fn into_batch_results(self) -> Result<Vec<Result<(), TaskError>>, TaskError> {
        Ok(self
            .into_iter()
            .map(IntoTaskResult::into_task_result)
            .collect())
    }
}

impl<E, E2> IntoBatchResults for Result<Vec<Result<(), E>>, E2>
where
    E: std::fmt::Display + 'static,
    E2: std::fmt::Display + 'static,
{
    fn into_batch_results(self) -> Result<Vec<Result<(), TaskError>>, TaskError> {
        match self {
            Ok(results) => results.into_batch_results(),
            Err(e) => Err(Err::<(), E2>(e)
                .into_task_result()
                .err()
                .unwrap_or_else(|| TaskError::new("batch failed"))),
        }
    }
}

/// Runs a `#[task(batch)]` function's future and settles the job from its
/// results: `job` is the job's context (for the payload the items came
/// from), `items` how many there were.
#[allow(clippy::manual_async_fn)] // the bounds in the signature are the point
pub fn batch_future<F>(
    task: &'static str,
    job: JobContext,
    items: usize,
    future: F,
) -> impl Future<Output = Result<(), TaskError>> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: IntoBatchResults,
{
    async move {
        let results = future.await.into_batch_results()?;
        crate::batch::settle(task, &job.job().payload, items, results)
    }
}

/// [`batch_future`] for a batch function that takes `Data<T>` parameters
/// (see [`task_future_with_data`]).
#[allow(clippy::manual_async_fn)] // the bounds in the signature are the point
pub fn batch_future_with_data<D, C, F>(
    task: &'static str,
    job: JobContext,
    items: usize,
    data: Result<D, TaskError>,
    call: C,
) -> impl Future<Output = Result<(), TaskError>> + Send + 'static
where
    D: Send + 'static,
    C: FnOnce(D) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoBatchResults,
{
    async move {
        let data = data?;
        let results = call(data).await.into_batch_results()?;
        crate::batch::settle(task, &job.job().payload, items, results)
    }
}

/// A type a task parameter may have: it travels as JSON in the job payload.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task parameter: it must implement serde's `Serialize` and `Deserialize`",
    label = "this type is not Serialize + Deserialize",
    note = "task parameters are stored as the job's JSON payload; derive `serde::Serialize` and `serde::Deserialize` for `{Self}`, or use a type that has them"
)]
pub trait PayloadField {}

impl<T: Serialize + DeserializeOwned> PayloadField for T {}

/// Compile-time check that `T` can be a task parameter.
pub fn assert_payload_field<T: PayloadField>() {}
