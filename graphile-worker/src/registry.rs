//! The task registry: tasks registered by `#[task]` through `inventory`, and
//! the set of tasks one worker runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::JobContext;
use crate::data::{DataMap, DataRequirement};
use crate::error::Error;
use crate::policy::TaskPolicy;
use crate::task::{Task, TaskError};

/// The future a type-erased task handler returns.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;

/// Decodes the job's payload (from its context) and starts the task; the
/// decode error is the job's failure message.
pub(crate) type StartFn = fn(JobContext) -> Result<TaskFuture, TaskError>;

/// A task registered at run time, by [`WorkerOptions::register_fn`]
/// (crate::WorkerOptions::register_fn): it reads the payload itself.
pub(crate) type DynamicFn = dyn Fn(JobContext) -> TaskFuture + Send + Sync;

/// Middleware around every job: gets the context and the rest of the chain.
pub(crate) type MiddlewareFn = dyn Fn(JobContext, Next) -> TaskFuture + Send + Sync;

/// A worker's middleware, outermost first; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Chain(pub(crate) Arc<[Arc<MiddlewareFn>]>);

impl Chain {
    /// This chain with `around` added innermost.
    pub(crate) fn with(&self, around: Arc<MiddlewareFn>) -> Self {
        let mut all = self.0.to_vec();
        all.push(around);
        Chain(all.into())
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain({} middleware)", self.0.len())
    }
}

/// The rest of a job's middleware chain, ending with the task itself;
/// given to [`WorkerOptions::middleware`](crate::WorkerOptions::middleware).
pub struct Next {
    rest: Box<dyn FnOnce(JobContext) -> TaskFuture + Send>,
}

impl Next {
    pub(crate) fn new(rest: Box<dyn FnOnce(JobContext) -> TaskFuture + Send>) -> Self {
        Self { rest }
    }

    /// Runs the rest of the chain (and the task) with `ctx`, and returns
    /// the job's outcome: `Ok` completes it, an error fails it (a
    /// permanent one for good).
    pub async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        (self.rest)(ctx).await
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

/// How a registered task starts a job.
#[derive(Clone)]
pub(crate) enum Handler {
    /// A [`Task`] type, known at compile time.
    Typed(StartFn),
    /// A function given at run time.
    Dynamic(Arc<DynamicFn>),
}

impl Handler {
    pub(crate) fn start(&self, ctx: JobContext) -> Result<TaskFuture, TaskError> {
        match self {
            Handler::Typed(start) => start(ctx),
            Handler::Dynamic(run) => Ok(run(ctx)),
        }
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Typed(_) => "Handler::Typed",
            Handler::Dynamic(_) => "Handler::Dynamic",
        })
    }
}

/// One registered task. `#[task]` submits one of these for each annotated
/// function; you rarely build one yourself.
///
/// ```
/// use graphile_worker::{JobContext, Task, TaskError, TaskRegistration};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping {}
/// impl Task for Ping {
///     const IDENTIFIER: &'static str = "ping";
///     async fn run(self, _ctx: JobContext) -> Result<(), TaskError> { Ok(()) }
/// }
///
/// static PING: TaskRegistration = TaskRegistration::of::<Ping>(file!(), line!(), &[]);
/// assert_eq!(PING.identifier(), "ping");
/// ```
#[derive(Debug)]
pub struct TaskRegistration {
    identifier: &'static str,
    file: &'static str,
    line: u32,
    cron: &'static [&'static str],
    cron_time_zone: Option<&'static str>,
    handler: StartFn,
    required_data: fn() -> Vec<DataRequirement>,
    policy: fn() -> TaskPolicy,
}

impl TaskRegistration {
    /// The registration of task `T`, defined at `file:line`, with the given
    /// crontab schedules (five-field patterns).
    pub const fn of<T: Task>(file: &'static str, line: u32, cron: &'static [&'static str]) -> Self {
        Self {
            identifier: T::IDENTIFIER,
            file,
            line,
            cron,
            cron_time_zone: None,
            handler: start_task::<T>,
            required_data: T::required_data,
            policy: T::policy,
        }
    }

    /// The task identifier.
    pub fn identifier(&self) -> &'static str {
        self.identifier
    }

    /// Where the task is defined, as `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// Cron schedules declared with `#[task(cron = "...")]`.
    pub fn cron(&self) -> &'static [&'static str] {
        self.cron
    }

    /// This registration with its cron schedules in an IANA time zone
    /// (`#[task(cron = "0 9 * * *", tz = "Europe/Paris")]`); the name is
    /// checked when the worker starts.
    ///
    /// ```
    /// # use graphile_worker::{JobContext, Task, TaskError, TaskRegistration};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping {}
    /// # impl Task for Ping {
    /// #     const IDENTIFIER: &'static str = "ping";
    /// #     async fn run(self, _ctx: JobContext) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// static PING: TaskRegistration = TaskRegistration::of::<Ping>(file!(), line!(), &["0 9 * * *"])
    ///     .with_cron_time_zone("Europe/Paris");
    /// assert_eq!(PING.cron_time_zone(), Some("Europe/Paris"));
    /// ```
    pub const fn with_cron_time_zone(mut self, zone: &'static str) -> Self {
        self.cron_time_zone = Some(zone);
        self
    }

    /// The time zone of the cron schedules, if one was given.
    pub fn cron_time_zone(&self) -> Option<&'static str> {
        self.cron_time_zone
    }
}

inventory::collect!(TaskRegistration);

/// Every task registered by `#[task]` in the crates linked into this binary.
///
/// ```
/// for task in graphile_worker::registered_tasks() {
///     println!("{} at {}", task.identifier(), task.location());
/// }
/// ```
pub fn registered_tasks() -> impl Iterator<Item = &'static TaskRegistration> {
    inventory::iter::<TaskRegistration>.into_iter()
}

fn start_task<T: Task>(ctx: JobContext) -> Result<TaskFuture, TaskError> {
    let payload = T::deserialize(&ctx.job().payload)
        .map_err(|e| TaskError::new(crate::outcome::undecodable_payload(T::IDENTIFIER, &e)))?;
    Ok(Box::pin(payload.run(ctx)))
}

/// The tasks one worker runs, by identifier.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskSet {
    tasks: BTreeMap<String, Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    location: String,
    handler: Handler,
    required_data: fn() -> Vec<DataRequirement>,
    policy: TaskPolicy,
}

impl TaskSet {
    /// Registers a task given at run time.
    pub(crate) fn insert_dynamic(
        &mut self,
        identifier: &str,
        run: Arc<DynamicFn>,
        location: String,
    ) -> Result<(), Error> {
        let entry = Entry {
            location,
            handler: Handler::Dynamic(run),
            required_data: Vec::new,
            policy: TaskPolicy::default(),
        };
        self.insert_entry(identifier, entry)
    }

    /// Adds a task, refusing a second task with the same identifier.
    pub(crate) fn insert(&mut self, registration: &TaskRegistration) -> Result<(), Error> {
        let entry = Entry {
            location: registration.location(),
            handler: Handler::Typed(registration.handler),
            required_data: registration.required_data,
            policy: (registration.policy)(),
        };
        self.insert_entry(registration.identifier, entry)
    }

    /// Registers task `T` (hand-written or generated).
    pub(crate) fn insert_task<T: Task>(&mut self, location: String) -> Result<(), Error> {
        let entry = Entry {
            location,
            handler: Handler::Typed(start_task::<T>),
            required_data: T::required_data,
            policy: T::policy(),
        };
        self.insert_entry(T::IDENTIFIER, entry)
    }

    fn insert_entry(&mut self, identifier: &str, entry: Entry) -> Result<(), Error> {
        if let Some(existing) = self.tasks.get(identifier) {
            return Err(Error::DuplicateTask {
                identifier: identifier.to_owned(),
                first: existing.location.clone(),
                second: entry.location,
            });
        }
        self.tasks.insert(identifier.to_owned(), entry);
        Ok(())
    }

    /// Keeps only the named tasks; each name must exist.
    pub(crate) fn retain_only(&mut self, names: &[String]) -> Result<(), Error> {
        for name in names {
            if !self.tasks.contains_key(name) {
                return Err(Error::UnknownTask(name.clone()));
            }
        }
        self.tasks.retain(|k, _| names.contains(k));
        Ok(())
    }

    /// Drops the named tasks; each name must exist.
    pub(crate) fn remove_all(&mut self, names: &[String]) -> Result<(), Error> {
        for name in names {
            if self.tasks.remove(name).is_none() {
                return Err(Error::UnknownTask(name.clone()));
            }
        }
        Ok(())
    }

    pub(crate) fn handler(&self, identifier: &str) -> Option<Handler> {
        self.tasks.get(identifier).map(|e| e.handler.clone())
    }

    /// The task's handler and policy.
    pub(crate) fn get(&self, identifier: &str) -> Option<(&Handler, &TaskPolicy)> {
        self.tasks.get(identifier).map(|e| (&e.handler, &e.policy))
    }

    /// Replaces what `over` sets in the named task's policy; the task must
    /// exist.
    pub(crate) fn override_policy(
        &mut self,
        identifier: &str,
        over: &TaskPolicy,
    ) -> Result<(), Error> {
        let entry = self
            .tasks
            .get_mut(identifier)
            .ok_or_else(|| Error::UnknownTask(identifier.to_owned()))?;
        entry.policy = entry.policy.overridden_by(over);
        Ok(())
    }

    /// The concurrency limits set, by identifier.
    pub(crate) fn concurrency_limits(&self) -> Vec<(String, usize)> {
        self.tasks
            .iter()
            .filter_map(|(identifier, e)| {
                e.policy
                    .concurrency_limit()
                    .map(|limit| (identifier.clone(), limit))
            })
            .collect()
    }

    /// The first task asking for a value `data` lacks, and the value's type.
    pub(crate) fn missing_data(&self, data: &DataMap) -> Option<(String, &'static str)> {
        self.tasks.iter().find_map(|(identifier, entry)| {
            (entry.required_data)()
                .into_iter()
                .find(|needed| !data.has(needed))
                .map(|needed| (identifier.clone(), needed.type_name()))
        })
    }

    pub(crate) fn identifiers(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
