//! Errors returned by graphile-worker.
//!
//! Every message names what is wrong and what to do about it. One rule
//! holds for every error here: a variant either prints its cause in its own
//! message and returns nothing from [`source()`](std::error::Error::source),
//! or leaves the cause out of its message and returns it from `source()`;
//! never both. A report that prints the whole chain (as anyhow's `{:#}`
//! does) then shows each text once.
//!
//! Database and crontab errors are printed in the message, because the
//! library and most programs log an error with its `Display` alone; the
//! [`sqlx::Error`] stays reachable by matching the variant. A cause that
//! adds nothing for the reader (the division by zero with which migration
//! 11 refuses locked jobs) or that is rarely the point (serde's reason a
//! payload did not serialise) is the source instead.

use std::fmt;

use crate::cron::{CronTimeZoneError, CrontabError};

/// Every error the library returns.
///
/// Messages name the object at fault and what to do about it.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) {
/// use graphile_worker::{Error, JobSpec, WorkerUtils};
/// let utils = WorkerUtils::new(pool, "graphile_worker");
/// match utils.add_raw_job("send_email", serde_json::json!({}), JobSpec::default()).await {
///     Ok(job) => println!("added job {}", job.id),
///     Err(Error::SchemaNotInstalled { .. }) => eprintln!("run the migrations first"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement failed in the database or the connection broke. The
    /// message ends with what the database (its message and SQLSTATE) or the
    /// driver said; [`source()`](std::error::Error::source) is `None`, match
    /// the variant for the [`sqlx::Error`].
    #[error("database error: {}", SqlxText(.0))]
    Database(sqlx::Error),

    /// The database has no worker schema: something used it (adding a job,
    /// say) before anything installed it. Raised for PostgreSQL's
    /// `invalid_schema_name` (SQLSTATE 3F000), and for a missing worker
    /// table (42P01), which is how PostgreSQL reports a table of a schema
    /// that does not exist.
    ///
    /// ```
    /// let err = graphile_worker::Error::SchemaNotInstalled { schema: "graphile_worker".into() };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "the graphile_worker schema is not installed in this database; call WorkerUtils::migrate() (or start a worker, which installs it) first"
    /// );
    /// ```
    #[error(
        "the {schema} schema is not installed in this database; call WorkerUtils::migrate() (or start a worker, which installs it) first"
    )]
    SchemaNotInstalled {
        /// The schema PostgreSQL reported missing.
        schema: String,
    },

    /// The database URL given to
    /// [`WorkerOptions::database_url`](crate::WorkerOptions::database_url)
    /// cannot be read. The URL itself is not repeated, so a password in it
    /// stays out of logs.
    ///
    /// ```
    /// let err = graphile_worker::Error::InvalidDatabaseUrl {
    ///     reason: "relative URL without a base".into(),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid database URL: relative URL without a base; expected postgres://user:password@host:port/database"
    /// );
    /// ```
    #[error("invalid database URL: {reason}; expected postgres://user:password@host:port/database")]
    InvalidDatabaseUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// The worker could not open a connection to the server at start-up:
    /// it is down, unreachable, or refused the login. The message gives the
    /// reason the driver or the server gave, then the likely way out.
    ///
    /// ```
    /// let err = graphile_worker::Error::Connect {
    ///     target: "127.0.0.1:1".into(),
    ///     error: sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "could not connect to PostgreSQL at 127.0.0.1:1: connection refused; is the server running and accepting TCP connections there?"
    /// );
    /// ```
    #[error(
        "could not connect to PostgreSQL at {target}: {}",
        ConnectFailure { target, error }
    )]
    Connect {
        /// `host:port`, or the path of the Unix socket.
        target: String,
        /// What the driver or the server said.
        error: sqlx::Error,
    },

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

    /// A crontab (text or file) has an invalid line.
    #[error("invalid crontab: {0}")]
    Crontab(CrontabError),

    /// A `#[task(cron = "...")]` schedule is not a valid cron pattern.
    ///
    /// ```
    /// let reason = graphile_worker::CronPattern::parse("0 60 * * *").unwrap_err();
    /// let err = graphile_worker::Error::TaskCron {
    ///     task: "report".into(),
    ///     location: "src/tasks.rs:12".into(),
    ///     pattern: "0 60 * * *".into(),
    ///     reason: Box::new(reason),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "task `report` (defined at src/tasks.rs:12) has an invalid cron pattern \"0 60 * * *\": column 3: too large value '60' in hours range: expected values in the range 0-23; fix its #[task(cron = ...)]"
    /// );
    /// ```
    #[error(
        "task `{task}` (defined at {location}) has an invalid cron pattern {pattern:?}: column {}: {}; fix its #[task(cron = ...)]",
        reason.column(),
        reason.kind()
    )]
    TaskCron {
        /// The task's identifier.
        task: String,
        /// Where the task is defined, as `file:line`.
        location: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it, and the column (boxed to keep [`Error`]
        /// small).
        reason: Box<CrontabError>,
    },

    /// A `#[task(tz = ...)]` names a time zone that cannot be used: unknown
    /// to the tz database, or the crate's `tz` feature is off.
    ///
    /// ```
    /// let reason = graphile_worker::CronTimeZoneError::Unknown { name: "Mars/Olympus".into() };
    /// let err = graphile_worker::Error::TaskCronTimeZone {
    ///     task: "report".into(),
    ///     location: "src/tasks.rs:12".into(),
    ///     reason,
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "task `report` (defined at src/tasks.rs:12) has an unusable cron time zone: unknown time zone \"Mars/Olympus\": use an IANA name such as \"Europe/Paris\" or \"UTC\" (names are case-sensitive); fix its #[task(tz = ...)]"
    /// );
    /// ```
    #[error(
        "task `{task}` (defined at {location}) has an unusable cron time zone: {reason}; fix its #[task(tz = ...)]"
    )]
    TaskCronTimeZone {
        /// The task's identifier.
        task: String,
        /// Where the task is defined, as `file:line`.
        location: String,
        /// Why the zone was refused.
        reason: CronTimeZoneError,
    },

    /// A builder option is missing or out of range.
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// A payload could not be turned into JSON. What serde said is the
    /// [`source()`](std::error::Error::source).
    #[error(
        "could not serialise the payload for task `{identifier}` to JSON; change the payload's type or value so serde_json accepts it (map keys must be strings, for example)"
    )]
    Serialize {
        /// The task the payload was for.
        identifier: String,
        /// What serde said.
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

    /// Tasks are registered, but [`only`](crate::WorkerOptions::only) and
    /// [`except`](crate::WorkerOptions::except) left the worker none of them.
    ///
    /// ```
    /// let err = graphile_worker::Error::NoTasksLeft { registered: vec!["a".into(), "b".into()] };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "only()/except() left this worker no tasks to run; the registered tasks are `a`, `b`: let at least one of them through"
    /// );
    /// ```
    #[error(
        "only()/except() left this worker no tasks to run; the registered tasks are {}: let at least one of them through",
        Backticked(registered)
    )]
    NoTasksLeft {
        /// Every registered task identifier, before filtering.
        registered: Vec<String>,
    },

    /// A task takes a `Data<T>` (or lists `T` in
    /// [`Task::required_data`](crate::Task::required_data)) that nobody
    /// registered with [`WorkerOptions::data`](crate::WorkerOptions::data).
    ///
    /// ```
    /// let err = graphile_worker::Error::MissingData {
    ///     task: "send_email".into(),
    ///     type_name: "app::Mailer".into(),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "task `send_email` takes `Data<app::Mailer>`, but the worker has no value of that type; register one with WorkerOptions::data(value)"
    /// );
    /// ```
    #[error(
        "task `{task}` takes `Data<{type_name}>`, but the worker has no value of that type; register one with WorkerOptions::data(value)"
    )]
    MissingData {
        /// The task's identifier.
        task: String,
        /// The type it asks for, as the compiler spells it.
        type_name: String,
    },

    /// `only`/`except`/`task_policy` named an identifier that no registered
    /// task has.
    #[error(
        "no registered task is called `{0}`; check the name given to only(), except() or task_policy()"
    )]
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

    /// A queue name the database cannot hold (empty, or over 128
    /// characters).
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

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

    /// A migration statement failed; nothing of that migration was kept.
    #[error(
        "migration {migration} failed and was rolled back: {}; fix the cause and migrate again",
        SqlxText(error)
    )]
    Failed {
        /// The migration number.
        migration: i32,
        /// The database error.
        error: sqlx::Error,
    },

    /// The migrations ledger could not be read or created.
    #[error(
        "could not read or create the migrations ledger: {}; check that the database user may create the schema and its tables",
        SqlxText(.0)
    )]
    Ledger(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    /// A database error, or [`Error::SchemaNotInstalled`] when the error says
    /// the worker schema is missing.
    fn from(error: sqlx::Error) -> Self {
        match missing_schema(&error) {
            Some(schema) => Error::SchemaNotInstalled { schema },
            None => Error::Database(error),
        }
    }
}

impl From<CrontabError> for Error {
    fn from(error: CrontabError) -> Self {
        Error::Crontab(error)
    }
}

/// The worker schema a database error reports missing: `schema "s" does not
/// exist` (3F000, raised for a function of a missing schema), or `relation
/// "s._private_jobs" does not exist` (42P01, raised for a table of one) on
/// a worker table. `None` for any other error, and for a message in another
/// language that does not quote the name with `"`.
fn missing_schema(error: &sqlx::Error) -> Option<String> {
    let db = error.as_database_error()?;
    let code = db.code()?;
    let message = db.message();
    let quoted = message.get(message.find('"')? + 1..message.rfind('"')?)?;
    match &*code {
        "3F000" => Some(quoted.to_owned()),
        "42P01" => {
            let (schema, relation) = quoted.rsplit_once('.')?;
            (relation.starts_with("_private_") || relation == "migrations")
                .then(|| schema.to_owned())
        }
        _ => None,
    }
}

/// What a [`sqlx::Error`] says, for a message. A server error is its message
/// and SQLSTATE, without the server source line sqlx appends (`at line
/// 3099`, a line of PostgreSQL's C code).
struct SqlxText<'a>(&'a sqlx::Error);

impl fmt::Display for SqlxText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_database_error() {
            Some(db) => {
                f.write_str(db.message())?;
                if let Some(code) = db.code() {
                    write!(f, " (SQLSTATE {code})")?;
                }
                Ok(())
            }
            None => fmt::Display::fmt(self.0, f),
        }
    }
}

/// Why a connection could not be opened, and what to check: the reason the
/// operating system, the TLS layer or the server gave, then a hint chosen by
/// the kind of failure.
struct ConnectFailure<'a> {
    target: &'a str,
    error: &'a sqlx::Error,
}

impl fmt::Display for ConnectFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::io::ErrorKind;
        let socket = self.target.starts_with('/');
        let hint = match self.error {
            sqlx::Error::Io(io) => {
                write!(f, "{io}")?;
                match io.kind() {
                    ErrorKind::ConnectionRefused | ErrorKind::NotFound if socket => {
                        "is the server running and accepting connections on that socket?"
                    }
                    ErrorKind::ConnectionRefused => {
                        "is the server running and accepting TCP connections there?"
                    }
                    ErrorKind::TimedOut => {
                        "check the host and port, and that no firewall drops the connection"
                    }
                    ErrorKind::PermissionDenied if socket => {
                        "check that this user may open the socket"
                    }
                    _ => "check the host and port in the database URL",
                }
            }
            sqlx::Error::Tls(tls) => {
                write!(f, "TLS failed: {tls}")?;
                "check sslmode (and sslrootcert) in the database URL against the server's TLS set-up"
            }
            sqlx::Error::Database(db) => {
                f.write_str(db.message())?;
                match db.code().as_deref() {
                    Some("28P01" | "28000") => {
                        "check the user name and password in the database URL, and the server's pg_hba.conf"
                    }
                    Some("3D000") => "create that database, or fix its name in the database URL",
                    Some("53300") => {
                        "the server has no free connection slots; close idle connections or raise max_connections"
                    }
                    Some("57P03") => {
                        "the server is starting up or shutting down; try again shortly"
                    }
                    _ => "check the database URL",
                }
            }
            other => {
                write!(f, "{other}")?;
                "check the database URL"
            }
        };
        write!(f, "; {hint}")
    }
}

/// Names as `` `a`, `b`, `c` ``.
struct Backticked<'a>(&'a [String]);

impl fmt::Display for Backticked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}
