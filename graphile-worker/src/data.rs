//! Shared state for tasks: values registered on the worker with
//! [`WorkerOptions::data`](crate::WorkerOptions::data) and taken by tasks as
//! [`Data<T>`] parameters (or through [`JobContext::data`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::context::JobContext;
use crate::task::TaskError;

/// A value shared by every job a worker runs: an SMTP client, an HTTP
/// client, the application's configuration.
///
/// Register the value on the worker with
/// [`WorkerOptions::data`](crate::WorkerOptions::data), then take it in a
/// `#[task]` function as a `Data<T>` parameter. Such a parameter is not
/// part of the payload: `SendEmail` below has only the field `to`. A worker
/// whose tasks ask for a type nobody registered refuses to start, naming
/// the task and the type.
///
/// `Data<T>` is an [`Arc`]: cloning it is cheap, and it derefs to `T`.
///
/// ```no_run
/// use graphile_worker::{task, Data, Worker};
///
/// struct Mailer { from: String }
///
/// #[task]
/// async fn send_email(mailer: Data<Mailer>, to: String) {
///     println!("mail from {} to {to}", mailer.from);
/// }
///
/// # async fn run() -> Result<(), graphile_worker::Error> {
/// let worker = Worker::from_registry()
///     .database_url("postgres://localhost/app")
///     .data(Mailer { from: "noreply@example.com".into() })
///     .init()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Data<T: ?Sized>(Arc<T>);

impl<T: ?Sized> Data<T> {
    /// The shared value as an [`Arc`].
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> Data<T> {
    /// Wraps `value`, for calling a task function directly (in a test).
    ///
    /// ```
    /// let limit = graphile_worker::Data::new(3_u32);
    /// assert_eq!(*limit, 3);
    /// ```
    pub fn new(value: T) -> Self {
        Self(Arc::new(value))
    }
}

impl<T: ?Sized> From<Arc<T>> for Data<T> {
    fn from(value: Arc<T>) -> Self {
        Self(value)
    }
}

impl<T: ?Sized> Clone for Data<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: ?Sized> Deref for Data<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Data<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Data").field(&&*self.0).finish()
    }
}

/// A type of value a task takes from the worker, as
/// [`Task::required_data`](crate::Task::required_data) lists them: the
/// worker checks at [`init`](crate::WorkerOptions::init) that each one was
/// registered.
///
/// ```
/// let needed = graphile_worker::DataRequirement::of::<String>();
/// assert_eq!(needed.type_name(), "alloc::string::String");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRequirement {
    type_id: TypeId,
    type_name: &'static str,
}

impl DataRequirement {
    /// The requirement of a `Data<T>` parameter.
    pub fn of<T: Send + Sync + 'static>() -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The type's name, as the compiler spells it.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// The values registered on one worker, by type.
#[derive(Clone, Default)]
pub(crate) struct DataMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for DataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataMap({} values)", self.values.len())
    }
}

impl DataMap {
    /// Registers `value`, replacing an earlier value of the same type.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.values.insert(TypeId::of::<T>(), value);
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Data<T>> {
        let value = self.values.get(&TypeId::of::<T>())?.clone();
        value.downcast::<T>().ok().map(Data)
    }

    pub(crate) fn has(&self, requirement: &DataRequirement) -> bool {
        self.values.contains_key(&requirement.type_id)
    }
}

/// A task parameter the worker fills from its registered values rather than
/// from the payload. `#[task]` uses this for `Data<T>` parameters.
pub trait TaskData: Sized {
    /// What the worker must have for this parameter.
    fn requirement() -> DataRequirement;

    /// The value for one job.
    fn from_context(ctx: &JobContext) -> Result<Self, TaskError>;
}

impl<T: Send + Sync + 'static> TaskData for Data<T> {
    fn requirement() -> DataRequirement {
        DataRequirement::of::<T>()
    }

    fn from_context(ctx: &JobContext) -> Result<Self, TaskError> {
        ctx.data::<T>()
    }
}

/// The message for a task that asks for a value nobody registered.
pub(crate) fn missing(type_name: &str) -> String {
    format!(
        "no value of type `{type_name}` was registered with the worker; add `.data(value)` with a `{type_name}` to WorkerOptions"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_type() {
        let mut map = DataMap::default();
        map.insert(Arc::new(7_u32));
        map.insert(Arc::new(String::from("x")));
        assert_eq!(*map.get::<u32>().unwrap(), 7);
        assert_eq!(&*map.get::<String>().unwrap(), "x");
        assert!(map.get::<u64>().is_none());
        assert!(map.has(&DataRequirement::of::<u32>()));
        assert!(!map.has(&DataRequirement::of::<i32>()));
    }
}
