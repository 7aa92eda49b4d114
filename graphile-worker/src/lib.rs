#![doc = include_str!("docs/crate.md")]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod backoff;
mod batch;
mod cancel;
mod claim;
mod context;
mod control;
mod cron;
mod data;
mod enqueue;
mod error;
mod events;
mod execute;
mod heartbeat;
mod inspect;
mod job;
mod listen;
mod macro_support;
#[cfg(feature = "metrics")]
mod metrics;
mod migrate;
#[cfg(feature = "opentelemetry")]
mod otel;
mod outcome;
mod panics;
mod policy;
mod recovery;
mod registry;
mod schema;
mod spec;
mod sql;
mod statistics;
mod stranded;
mod sweep;
mod task;
mod worker;
mod worker_utils;

pub use backoff::retry_delay;
pub use batch::{Batch, BatchTask};
pub use context::{CancelReason, JobContext, JobContextBuilder};
pub use control::CancelOutcome;
pub use cron::{
    CronField, CronItem, CronJobKeyMode, CronOptions, CronPattern, CronTimeZone, CronTimeZoneError,
    CrontabError, CrontabErrorKind, parse_crontab,
};
pub use data::{Data, DataRequirement, TaskData};
pub use enqueue::NewJob;
pub use error::{Error, MigrateError};
pub use events::{JobEvent, WorkerEvent};
#[doc(inline)]
#[doc = include_str!("docs/task.md")]
pub use graphile_worker_macros::task;
pub use inspect::{
    JobCount, JobEntry, JobFilter, JobOrder, JobState, JobStats, KnownCrontab, LockHolder,
    QueueInfo, UnknownJobState,
};
pub use job::Job;
#[cfg(feature = "metrics")]
pub use metrics::MetricsOptions;
pub use migrate::{AppliedMigration, MigrationStatus};
#[cfg(feature = "opentelemetry")]
pub use otel::stamp_trace_context;
pub use policy::{RetryPolicy, TaskPolicy};
pub use recovery::RecoveryReport;
pub use registry::{Next, TaskRegistration, registered_tasks};
pub use schema::quote_identifier;
pub use spec::{JobKeyMode, JobSpec};
pub use task::{IntoTaskResult, Task, TaskError, TaskResultExt};
pub use worker::{Readiness, ShutdownHandle, Worker, WorkerOptions};
pub use worker_utils::{Cleanup, Reschedule, WorkerInfo, WorkerUtils};

/// The `sqlx` this crate is built with, so that pools, transactions and
/// executors you pass in are of the same version: `graphile_worker::sqlx::PgPool`.
pub use sqlx;

/// Items the `#[task]` expansion refers to. Not public API: no stability.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;
    pub use serde_json;
    pub use sqlx::PgExecutor;

    pub use crate::macro_support::{
        IntoBatchResults, PayloadField, assert_payload_field, batch_future, batch_future_with_data,
        task_future, task_future_with_data,
    };
    pub use crate::{
        DataRequirement, Error, IntoTaskResult, Job, JobContext, JobSpec, RetryPolicy, Task,
        TaskData, TaskError, TaskPolicy, TaskRegistration, WorkerUtils,
    };
}

/// The repository README's code blocks, compiled as doctests (the README is
/// not part of the rendered docs).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "testing")]
pub mod testing;

/// Marks an `async fn` as a test with a fresh, migrated database: the
/// function may take one parameter, a [`testing::TestDb`], and returns `()`
/// or a `Result`, as a `#[test]` does. It runs on a multi-threaded Tokio
/// runtime of its own (two worker threads). Other attributes
/// (`#[should_panic]`, `#[ignore]`) go below it. Behind the `testing`
/// feature.
///
/// ```no_run
/// use graphile_worker::testing::TestDb;
///
/// #[graphile_worker::test]
/// async fn starts_empty(db: TestDb) {
///     assert!(db.utils().list_queues().await.unwrap().is_empty());
/// }
/// ```
#[cfg(all(feature = "testing", not(test)))]
pub use graphile_worker_macros::test;
