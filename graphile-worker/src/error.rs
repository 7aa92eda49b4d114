//! Errors returned by graphile-worker.

/// Every error the library returns.
///
/// Messages name the object at fault and what to do about it. Database errors
/// keep the underlying [`sqlx::Error`] as their source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement failed in the database or the connection broke.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// Installing or upgrading the worker schema failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),

    /// The schema name cannot be used.
    #[error(
        "invalid schema name {name:?}: {reason}; choose a non-empty name of at most 63 bytes without NUL or `$body$`"
    )]
    InvalidSchema {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A crontab (text, file or `#[task(cron = ...)]`) has an invalid line.
    #[error("invalid crontab: {0}")]
    Crontab(#[from] crate::cron::CrontabError),

    /// A builder option is missing or out of range.
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// A payload could not be turned into JSON.
    #[error("could not serialise the payload for task `{identifier}`: {source}")]
    Serialize {
        /// The task the payload was for.
        identifier: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// Two registered tasks share one identifier.
    #[error(
        "two tasks are registered as `{identifier}`: one at {first}, one at {second}; give one of them another identifier"
    )]
    DuplicateTask {
        /// The identifier both claim.
        identifier: String,
        /// Where the first one is defined.
        first: String,
        /// Where the second one is defined.
        second: String,
    },

    /// The worker has no tasks to run.
    #[error(
        "no tasks are registered; define tasks with #[task] and make sure the crate that holds them is linked, for example with `use my_tasks as _;` in main"
    )]
    NoTasks,

    /// `only`/`except` named an identifier that no registered task has.
    #[error("no registered task is called `{0}`; check the name given to only()/except()")]
    UnknownTask(String),

    /// A batch for one `add_jobs` call (`add_raw_jobs`, `add_jobs` and
    /// their `_count`/`_in` forms) breaks its rules: a job key used twice,
    /// a keyed job with `unsafe_dedupe`, or keyed jobs that mix `replace`
    /// and `preserve_run_at`. Nothing was added; the message names the key
    /// and the way out.
    ///
    /// ```
    /// # let err = graphile_worker::Error::InvalidBatch(
    /// #     "one add_jobs call used job key `k` twice; give each job its own key or split the call".into(),
    /// # );
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid job batch: one add_jobs call used job key `k` twice; give each job its own key or split the call"
    /// );
    /// ```
    #[error("invalid job batch: {0}")]
    InvalidBatch(String),

    /// Another process applied a breaking migration; this worker stopped
    /// because it would be unsafe to go on (Node exits with code 57 here).
    #[error(
        "another process applied breaking migration {0} to the worker schema; this worker stopped because it would be unsafe to continue; upgrade graphile-worker"
    )]
    BreakingMigration(i32),

    /// The database returned no row where one job was expected.
    #[error(
        "the database returned no row for job key `{0}`; the job was not scheduled, retry the call"
    )]
    JobNotScheduled(String),

    /// A part of the worker stopped in a way it is built never to (a bug):
    /// please report it with the message.
    #[error("internal error: {0}; this is a bug in graphile-worker-rs, please report it")]
    Internal(String),
}

/// Why installing or upgrading the worker schema failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The server is older than PostgreSQL 12.
    #[error(
        "graphile-worker needs PostgreSQL 12 or newer, but the server reports server_version_num {0}; upgrade PostgreSQL"
    )]
    PostgresTooOld(i32),

    /// The database has a breaking migration newer than this build knows.
    #[error(
        "the database is at graphile-worker schema revision {latest} with breaking migration {latest_breaking}, but this build knows migrations up to {highest}; it would be unsafe to continue, upgrade graphile-worker so every worker supports revision {latest_breaking}"
    )]
    DatabaseTooNew {
        /// Highest migration recorded in the database.
        latest: i32,
        /// Highest breaking migration recorded in the database.
        latest_breaking: i32,
        /// Highest migration this build knows.
        highest: i32,
    },

    /// Migration 11 refuses to run while jobs are locked.
    #[error(
        "there are locked jobs present; migration 11 cannot complete. Shut every worker down cleanly and make sure no job or job queue is locked (for a worker that is gone, set locked_at and locked_by to null on its rows in the jobs and job_queues tables), then migrate again"
    )]
    LockedJobs {
        /// The database error (division by zero) raised by the migration.
        #[source]
        source: sqlx::Error,
    },

    /// A migration statement failed.
    #[error("migration {migration} failed: {source}")]
    Failed {
        /// The migration number.
        migration: i32,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },

    /// The migrations ledger could not be read or created.
    #[error("could not read or create the migrations ledger: {0}")]
    Ledger(#[source] sqlx::Error),
}
