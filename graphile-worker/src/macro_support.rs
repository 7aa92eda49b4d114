//! Helpers that `#[task]` expansions call through `__private`. They carry
//! the bounds, so the compiler's errors name the user's types and point at
//! the user's tokens.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

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
