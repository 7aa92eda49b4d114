//! Every SQL statement the library sends, built once per schema, and
//! [`Db`], the one handle through which the engine reaches the database.
//!
//! The schema name reaches SQL only here and only in its quoted form
//! ([`Schema::quoted`]); every value is a bind parameter. That is the audit
//! behind the [`AssertSqlSafe`] below.
//!
//! The statements are grouped by their user: [`jobs`] (adding and
//! administering jobs), [`engine`] (claims and outcomes), [`workers`]
//! (registry, heartbeats, recovery), [`cron`] and [`inspect`] (what
//! operators read).

use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr as _, SqlStr};

use crate::schema::Schema;

pub(crate) mod control;
pub(crate) mod cron;
pub(crate) mod engine;
pub(crate) mod exec;
pub(crate) mod inspect;
pub(crate) mod jobs;
pub(crate) mod workers;

pub(crate) use exec::StatementMode;
pub(crate) use jobs::{BulkAdd, SpecsJson};

use exec::{Autocommit, Unprepared};
use sqlx::PgConnection;

/// The pool, the schema and its statements: what every part of the engine
/// (claiming, the outcome writer, heartbeats, recovery, cron) and
/// [`WorkerUtils`](crate::WorkerUtils) share. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: PgPool,
    pub(crate) schema: Arc<Schema>,
    pub(crate) sql: Arc<Statements>,
    /// Named and cached statements, or unnamed ones for PgBouncer.
    pub(crate) mode: StatementMode,
}

impl Db {
    /// The handle for `schema` on `pool`; nothing is checked until first use.
    pub(crate) fn new(pool: PgPool, schema: Schema) -> Self {
        let sql = Arc::new(Statements::new(&schema));
        Self {
            pool,
            schema: Arc::new(schema),
            sql,
            mode: StatementMode::Prepared,
        }
    }

    /// The same handle sending statements in `mode`.
    pub(crate) fn with_mode(mut self, mode: StatementMode) -> Self {
        self.mode = mode;
        self
    }

    /// The pool as an executor for one statement outside a transaction.
    pub(crate) fn exec(&self) -> Autocommit<&PgPool> {
        Autocommit {
            inner: &self.pool,
            mode: self.mode,
        }
    }

    /// A connection of our own (not in a transaction) as an executor.
    pub(crate) fn on<'c>(&self, conn: &'c mut PgConnection) -> Autocommit<&'c mut PgConnection> {
        Autocommit {
            inner: conn,
            mode: self.mode,
        }
    }

    /// A transaction we hold, or an executor a caller gave us, as an
    /// executor: its statements are unnamed when they must be.
    pub(crate) fn within<X>(&self, executor: X) -> Unprepared<X> {
        Unprepared {
            inner: executor,
            mode: self.mode,
        }
    }
}

/// Statements for one schema. Cloning a statement is cheap (shared string).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) jobs: jobs::JobStatements,
    pub(crate) claims: engine::ClaimStatements,
    pub(crate) outcomes: engine::OutcomeStatements,
    pub(crate) workers: workers::WorkerStatements,
    pub(crate) cron: cron::CronStatements,
    pub(crate) inspect: inspect::InspectStatements,
    pub(crate) control: control::ControlStatements,
}

impl Statements {
    pub(crate) fn new(schema: &Schema) -> Self {
        let s = schema.quoted();
        Self {
            jobs: jobs::JobStatements::new(s),
            claims: engine::ClaimStatements::new(s),
            outcomes: engine::OutcomeStatements::new(s),
            workers: workers::WorkerStatements::new(s),
            cron: cron::CronStatements::new(s),
            inspect: inspect::InspectStatements::new(s),
            control: control::ControlStatements::new(s),
        }
    }
}

/// The texts of the claim statement (`$1` pool id, `$2` task ids, `$3`
/// limit; rows of job columns, then `task_id` and two counts, or one row of
/// nulls) and of the completion statement (`$1` ids, `$2` pool id) for
/// `schema`, as a worker sends them: for measuring what PostgreSQL alone
/// costs (the benchmark's floor).
///
/// ```
/// # #[cfg(feature = "testing")] {
/// let (claim, complete) = graphile_worker::testing::engine_sql("graphile_worker");
/// assert!(claim.contains("for update skip locked"));
/// assert!(complete.starts_with("with j as (delete"));
/// # }
/// ```
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub fn engine_sql(schema: &str) -> (String, String) {
    let sql = Statements::new(&Schema::new(schema));
    (
        sql.claims.claim_jobs.as_str().to_owned(),
        sql.outcomes.complete_own_jobs.as_str().to_owned(),
    )
}

/// A statement whose text was built from [`Schema::quoted`] and constants.
fn stmt(sql: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(sql)).into_sql_str()
}
