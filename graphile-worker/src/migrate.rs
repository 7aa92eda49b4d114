//! Installing and upgrading the worker schema.
//!
//! The rules match graphile-worker (Node):
//! - a ledger table `<schema>.migrations(id, ts, breaking)`;
//! - each migration runs in its own transaction whose **first** statement
//!   inserts the ledger row: that primary key is the only concurrency guard,
//!   so any number of migrators may run at once and each succeeds;
//! - the migration announces itself on the `worker:migrate` channel inside the
//!   same transaction;
//! - a database whose newest breaking migration is newer than this build is
//!   refused before anything is changed; a newer non-breaking one only logs a
//!   warning;
//! - a ledger without the `breaking` column (Node before 0.15.2) is adopted:
//!   the column is added, our breaking rows marked, and every migration
//!   attempted, those already applied being skipped on their ledger insert.
//!
//! Beyond Node: a migration 20 installed by Node 0.18 lacks this project's
//! worker registry, so after migrating the registry objects are checked for
//! and migration 20 (written to be re-runnable) is applied again when any is
//! missing, one migrator at a time.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;

use crate::sql::StatementMode;
use crate::sql::exec::{Autocommit, Unprepared};
use sqlx::{AssertSqlSafe, Connection, PgPool};

use crate::error::{Error, MigrateError};
use crate::schema::Schema;

/// One embedded migration.
struct Migration {
    number: i32,
    sql: &'static str,
}

macro_rules! migrations {
    ($($n:literal => $file:literal),* $(,)?) => {
        [$(Migration { number: $n, sql: include_str!(concat!("../migrations/", $file)) }),*]
    };
}

const MIGRATIONS: [Migration; 20] = migrations![
    1 => "000001.sql", 2 => "000002.sql", 3 => "000003.sql", 4 => "000004.sql",
    5 => "000005.sql", 6 => "000006.sql", 7 => "000007.sql", 8 => "000008.sql",
    9 => "000009.sql", 10 => "000010.sql", 11 => "000011.sql", 12 => "000012.sql",
    13 => "000013.sql", 14 => "000014.sql", 15 => "000015.sql", 16 => "000016.sql",
    17 => "000017.sql", 18 => "000018.sql", 19 => "000019.sql", 20 => "000020.sql",
];

/// The migrations this project records as breaking. Node also marks 19; a
/// ledger that says so is accepted.
const BREAKING: [i32; 6] = [1, 3, 11, 13, 14, 16];

/// The highest migration this build knows.
pub(crate) const HIGHEST_MIGRATION: i32 = 20;

/// Migration 20 is written to be re-runnable; it is applied again when the
/// ledger says 20 but the worker registry is missing (Node 0.18's own 20).
const REGISTRY_MIGRATION: usize = 19;

const PLACEHOLDER: &str = ":GRAPHILE_WORKER_SCHEMA";

/// SQLSTATEs meaning "another migrator created this first".
const CLASH_CODES: [&str; 4] = ["23505", "42P06", "42P07", "42710"];

/// Replaces every `:GRAPHILE_WORKER_SCHEMA` in `sql` with the quoted schema.
///
/// The placeholder is replaced wherever it stands, also right after a `::`
/// cast (`):::GRAPHILE_WORKER_SCHEMA.job_spec` becomes
/// `)::"graphile_worker".job_spec`).
pub(crate) fn substitute(sql: &str, schema: &Schema) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(pos) = rest.find(PLACEHOLDER) {
        let after = &rest[pos + PLACEHOLDER.len()..];
        let continues_word = after
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..pos]);
        if continues_word {
            out.push_str(PLACEHOLDER);
        } else {
            out.push_str(schema.quoted());
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn is_breaking(number: i32) -> bool {
    BREAKING.contains(&number)
}

fn sql_state(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

fn is_clash(error: &sqlx::Error) -> bool {
    sql_state(error).is_some_and(|c| CLASH_CODES.contains(&c.as_str()))
}

struct Status {
    latest: Option<i32>,
    latest_breaking: Option<i32>,
    /// The ledger was just created or adopted: attempt every migration and
    /// let the ledger's primary key skip those already applied.
    attempt_all: bool,
}

/// Migrations send unnamed statements, and each one outside a transaction
/// in a transaction of its own: they run rarely, and so they work through
/// PgBouncer in transaction mode whatever the caller's statement mode.
fn once<'c, X>(executor: X) -> Autocommit<X>
where
    X: sqlx::Executor<'c, Database = sqlx::Postgres> + sqlx::Acquire<'c, Database = sqlx::Postgres>,
{
    Autocommit {
        inner: executor,
        mode: StatementMode::Unnamed,
    }
}

/// A statement inside a migration's transaction, unnamed (see [`once`]).
fn in_tx(conn: &mut PgConnection) -> Unprepared<&mut PgConnection> {
    Unprepared {
        inner: conn,
        mode: StatementMode::Unnamed,
    }
}

/// Brings the schema up to date. Safe to call from many processes at once.
pub(crate) async fn migrate(pool: &PgPool, schema: &Schema) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    migrate_on(&mut conn, schema).await
}

pub(crate) async fn migrate_on(conn: &mut PgConnection, schema: &Schema) -> Result<(), Error> {
    migrate_to(conn, schema, HIGHEST_MIGRATION).await
}

/// Applies the migrations numbered up to `last` only, leaving the schema at
/// an older revision, as an older graphile-worker would have left it. For
/// tests of upgrades from old databases; not public API.
///
/// ```no_run
/// # #[cfg(feature = "testing")]
/// # async fn example(pool: sqlx::PgPool) -> Result<(), graphile_worker::Error> {
/// graphile_worker::testing::migrate_until(&pool, "graphile_worker", 10).await?;
/// # Ok(()) }
/// ```
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub async fn migrate_until(pool: &PgPool, schema: &str, last: i32) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    migrate_to(&mut conn, &Schema::new(schema), last).await
}

async fn migrate_to(conn: &mut PgConnection, schema: &Schema, last: i32) -> Result<(), Error> {
    schema.validate()?;
    check_server_version(conn).await?;
    let status = read_status(conn, schema).await?;

    // Refused before anything is applied, so a too-new database is left as
    // it was.
    if let Some(latest_breaking) = status.latest_breaking
        && latest_breaking > HIGHEST_MIGRATION
    {
        return Err(MigrateError::DatabaseTooNew {
            latest: status.latest.unwrap_or(latest_breaking),
            latest_breaking,
            highest: HIGHEST_MIGRATION,
        }
        .into());
    }

    let started = Instant::now();
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().take_while(|m| m.number <= last) {
        let recorded = !status.attempt_all
            && status
                .latest
                .is_some_and(|latest| migration.number <= latest);
        if !recorded && run_one(conn, schema, migration).await? {
            applied.push(migration.number);
        }
    }
    log_summary(schema, status.latest, &applied, started.elapsed());
    if last < HIGHEST_MIGRATION {
        return Ok(());
    }
    if let Some(latest) = status.latest
        && latest > HIGHEST_MIGRATION
    {
        tracing::warn!(
            latest,
            highest = HIGHEST_MIGRATION,
            "database is at graphile-worker schema revision {latest}, but this build only knows up to {HIGHEST_MIGRATION}; they may or may not be compatible, continuing"
        );
    }

    let beyond_ours = status
        .latest
        .is_some_and(|latest| latest > HIGHEST_MIGRATION);
    ensure_registry(conn, schema, beyond_ours).await
}

/// One `info` line for the migrations this call applied (one `debug` line
/// when there were none): what `from` (the newest recorded before, if any)
/// became, and how long it took.
fn log_summary(schema: &Schema, from: Option<i32>, applied: &[i32], took: Duration) {
    let name = schema.name();
    let ms = took.as_millis();
    let (Some(first), Some(last)) = (applied.first(), applied.last()) else {
        tracing::debug!(
            schema = name,
            "the {name} schema is up to date; no migration applied"
        );
        return;
    };
    let numbers = if first == last {
        format!("migration {first}")
    } else if applied.len() as i32 == last - first + 1 {
        format!("migrations {first}..={last}")
    } else {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        format!("migrations {}", list.join(", "))
    };
    match from {
        Some(from) if from < *first => tracing::info!(
            schema = name,
            from,
            to = last,
            "upgraded the {name} schema from {from} to {last} ({numbers}) in {ms} ms"
        ),
        _ => tracing::info!(
            schema = name,
            to = last,
            "installed the {name} schema: {numbers} in {ms} ms"
        ),
    }
}

async fn check_server_version(conn: &mut PgConnection) -> Result<(), Error> {
    let version: String = sqlx::query_scalar("select current_setting('server_version_num')")
        .fetch_one(once(&mut *conn))
        .await?;
    let version: i32 = version.trim().parse().unwrap_or(0);
    if version < 120_000 {
        return Err(MigrateError::PostgresTooOld(version).into());
    }
    Ok(())
}

async fn query_status(conn: &mut PgConnection, schema: &Schema) -> Result<Status, sqlx::Error> {
    let sql = format!(
        "select (select id from {s}.migrations order by id desc limit 1), \
                (select id from {s}.migrations where breaking is true order by id desc limit 1)",
        s = schema.quoted()
    );
    let (latest, latest_breaking): (Option<i32>, Option<i32>) = sqlx::query_as(AssertSqlSafe(sql))
        .fetch_one(once(&mut *conn))
        .await?;
    Ok(Status {
        latest,
        latest_breaking,
        attempt_all: false,
    })
}

/// Reads the ledger, creating or adopting it first when it is missing or
/// lacks the `breaking` column (SQLSTATE 42P01 / 42703).
async fn read_status(conn: &mut PgConnection, schema: &Schema) -> Result<Status, Error> {
    let error = match query_status(conn, schema).await {
        Ok(status) => return Ok(status),
        Err(e) if matches!(sql_state(&e).as_deref(), Some("42P01" | "42703" | "3F000")) => e,
        Err(e) => return Err(MigrateError::Ledger(e).into()),
    };
    tracing::debug!(%error, "no usable migrations ledger; installing one");
    match bootstrap(conn, schema).await {
        Ok(()) => {
            // Every migration is attempted; those already applied are
            // skipped on their ledger insert. The numbers read here are only
            // for the too-new checks (an adopted ledger may be ahead of us).
            let status = query_status(conn, schema)
                .await
                .map_err(MigrateError::Ledger)?;
            Ok(Status {
                attempt_all: true,
                ..status
            })
        }
        Err(e) if is_clash(&e) => {
            // Another process is installing at the same time; give it a
            // moment to commit, then read what it made.
            tracing::debug!(error = %e, "another migrator is installing the ledger; waiting");
            tokio::time::sleep(Duration::from_millis(
                400 + crate::backoff::random_u64() % 200,
            ))
            .await;
            query_status(conn, schema)
                .await
                .map_err(|e| MigrateError::Ledger(e).into())
        }
        Err(e) => Err(MigrateError::Ledger(e).into()),
    }
}

/// Creates the schema and the ledger, or adopts an older ledger that lacks
/// the `breaking` column. Each step is idempotent.
async fn bootstrap(conn: &mut PgConnection, schema: &Schema) -> Result<(), sqlx::Error> {
    let s = schema.quoted();
    let breaking = BREAKING.map(|n| n.to_string()).join(",");
    let sql = format!(
        "create schema if not exists {s};
         create table if not exists {s}.migrations (
             id int primary key,
             ts timestamptz default now() not null
         );
         alter table {s}.migrations add column if not exists breaking boolean not null default false;
         update {s}.migrations set breaking = true where id = any('{{{breaking}}}'::int[]);"
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(once(&mut *conn))
        .await?;
    Ok(())
}

/// Applies one migration in its own transaction. `false` when another
/// migrator had recorded it first (nothing was done).
async fn run_one(
    conn: &mut PgConnection,
    schema: &Schema,
    migration: &Migration,
) -> Result<bool, Error> {
    let mut tx = conn.begin().await?;
    let insert = format!(
        "insert into {}.migrations (id, breaking) values ($1, $2)",
        schema.quoted()
    );
    let breaking = is_breaking(migration.number);
    if let Err(e) = sqlx::query(AssertSqlSafe(insert))
        .bind(migration.number)
        .bind(breaking)
        .execute(in_tx(&mut tx))
        .await
    {
        let _ = tx.rollback().await;
        if is_clash(&e) {
            tracing::debug!(
                migration = migration.number,
                "another worker performed this migration; continuing"
            );
            return Ok(false);
        }
        return Err(MigrateError::Failed {
            migration: migration.number,
            error: e,
        }
        .into());
    }

    let body = substitute(migration.sql, schema);
    let result = async {
        sqlx::raw_sql(AssertSqlSafe(body))
            .execute(in_tx(&mut tx))
            .await?;
        sqlx::query("select pg_notify('worker:migrate', $1)")
            .bind(notify_payload(migration.number, breaking, schema.name()))
            .execute(in_tx(&mut tx))
            .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;

    match result {
        Ok(()) => {
            tx.commit().await.map_err(|e| MigrateError::Failed {
                migration: migration.number,
                error: e,
            })?;
            tracing::debug!(migration = migration.number, "applied migration");
            Ok(true)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            if migration.number == 11 && sql_state(&e).as_deref() == Some("22012") {
                return Err(MigrateError::LockedJobs { source: e }.into());
            }
            Err(MigrateError::Failed {
                migration: migration.number,
                error: e,
            }
            .into())
        }
    }
}

/// The objects of this project's migration 20 (the worker registry).
const REGISTRY_TABLE: &str = "_private_workers";
const REGISTRY_FUNCTIONS: [&str; 6] = [
    "worker_heartbeat",
    "worker_deregister",
    "list_stale_workers",
    "list_orphan_locked_workers",
    "recover_dead_worker_jobs",
    "delete_stale_workers",
];

/// Whether every worker-registry object exists in the schema.
async fn registry_present(conn: &mut PgConnection, schema: &Schema) -> Result<bool, sqlx::Error> {
    // The schema name is bound as a value, so no quoting is involved.
    sqlx::query_scalar(
        "select exists (
                    select from pg_catalog.pg_class c
                    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                    where n.nspname = $1 and c.relname = $2 and c.relkind = 'r')
                and (select count(distinct p.proname)
                    from pg_catalog.pg_proc p
                    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                    where n.nspname = $1 and p.proname = any($3)) = $4",
    )
    .bind(schema.name())
    .bind(REGISTRY_TABLE)
    .bind(&REGISTRY_FUNCTIONS[..])
    .bind(REGISTRY_FUNCTIONS.len() as i64)
    .fetch_one(once(&mut *conn))
    .await
}

/// Where the worker-registry part of migration 20 starts.
const REGISTRY_MARKER: &str = "-- The worker registry.";

/// The worker-registry part of migration 20: its table and functions only.
fn registry_section(sql: &'static str) -> Result<&'static str, Error> {
    sql.find(REGISTRY_MARKER)
        .map(|at| &sql[at..])
        .ok_or_else(|| Error::Internal("migration 20 lost its worker-registry marker".into()))
}

/// Makes sure the worker registry of migration 20 exists. A database whose
/// migration 20 was installed by Node 0.18 lacks it; migration 20 is
/// re-runnable, so it is applied again (without a ledger row). On a database
/// already past our last migration (a newer Node installed 21 or later),
/// only the registry part is created: the rest of our migration 20 would
/// replace that version's `add_job`/`add_jobs` with older ones.
async fn ensure_registry(
    conn: &mut PgConnection,
    schema: &Schema,
    beyond_ours: bool,
) -> Result<(), Error> {
    if registry_present(conn, schema).await? {
        return Ok(());
    }
    let migration = &MIGRATIONS[REGISTRY_MIGRATION];
    let failed = |error| MigrateError::Failed {
        migration: migration.number,
        error,
    };
    let sql = if beyond_ours {
        registry_section(migration.sql)?
    } else {
        migration.sql
    };
    let mut tx = conn.begin().await?;
    // Concurrent `create or replace function` calls fail with "tuple
    // concurrently updated", so migrators queue on ledger row 20 and the
    // later ones find the registry made.
    let lock = format!(
        "select id from {}.migrations where id = $1 for update",
        schema.quoted()
    );
    let result = async {
        sqlx::query(AssertSqlSafe(lock))
            .bind(migration.number)
            .fetch_optional(in_tx(&mut tx))
            .await?;
        if registry_present(&mut tx, schema).await? {
            return Ok(false);
        }
        let body = substitute(sql, schema);
        sqlx::raw_sql(AssertSqlSafe(body))
            .execute(in_tx(&mut tx))
            .await?;
        Ok::<bool, sqlx::Error>(true)
    }
    .await;
    match result {
        Ok(created) => {
            tx.commit().await.map_err(failed)?;
            if created {
                tracing::info!("created the worker registry over an existing migration 20");
            }
            Ok(())
        }
        Err(e) if is_clash(&e) => {
            // Another process created it at the same time.
            let _ = tx.rollback().await;
            Ok(())
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(failed(e).into())
        }
    }
}

/// The `worker:migrate` payload, spelled as Node spells it, plus the
/// schema (which Node's listeners ignore and ours compare).
fn notify_payload(number: i32, breaking: bool, schema: &str) -> String {
    let schema = serde_json::Value::from(schema);
    format!(r#"{{"migrationNumber":{number},"breaking":{breaking},"schema":{schema}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_placeholder_survives_substitution() {
        for name in ["graphile_worker", "we\"ird name", "x"] {
            let schema = Schema::new(name);
            for m in &MIGRATIONS {
                let sql = substitute(m.sql, &schema);
                assert!(
                    !sql.contains("GRAPHILE_WORKER_SCHEMA"),
                    "migration {} keeps a placeholder",
                    m.number
                );
            }
        }
    }

    #[test]
    fn cast_before_placeholder_is_replaced() {
        let schema = Schema::new("gw");
        assert_eq!(
            substitute("select x:::GRAPHILE_WORKER_SCHEMA.job_spec", &schema),
            "select x::\"gw\".job_spec"
        );
        assert_eq!(
            substitute(":GRAPHILE_WORKER_SCHEMA_X :GRAPHILE_WORKER_SCHEMA", &schema),
            ":GRAPHILE_WORKER_SCHEMA_X \"gw\""
        );
    }

    #[test]
    fn notify_payload_matches_node() {
        assert_eq!(
            notify_payload(11, true, "graphile_worker"),
            r#"{"migrationNumber":11,"breaking":true,"schema":"graphile_worker"}"#
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&notify_payload(2, false, "odd \"name\"")).unwrap();
        assert_eq!(parsed["migrationNumber"], 2);
        assert_eq!(parsed["breaking"], false);
        assert_eq!(parsed["schema"], "odd \"name\"");
    }

    #[test]
    fn the_registry_section_holds_the_whole_registry_and_nothing_else() {
        let section = registry_section(MIGRATIONS[REGISTRY_MIGRATION].sql).unwrap();
        assert!(section.contains("_private_workers ("));
        for function in REGISTRY_FUNCTIONS {
            assert!(
                section.contains(&format!(".{function}(")),
                "{function} missing"
            );
        }
        assert!(!section.contains(".add_job("));
        assert!(!section.contains(".add_jobs("));
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.number as usize, i + 1);
        }
        assert_eq!(MIGRATIONS.len() as i32, HIGHEST_MIGRATION);
    }
}

/// One migration recorded in the schema's `migrations` table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AppliedMigration {
    /// Its number (1 to 20 in this build; higher from a newer Node or Rust
    /// release).
    pub id: i32,
    /// When it was applied.
    pub applied_at: chrono::DateTime<chrono::Utc>,
    /// Whether workers older than it cannot run against the schema.
    pub breaking: bool,
}

/// Where a schema stands against the migrations this build embeds, from
/// [`WorkerUtils::migration_status`](crate::WorkerUtils::migration_status).
///
/// ```
/// fn describe(status: &graphile_worker::MigrationStatus) -> String {
///     if status.is_current() {
///         "up to date".into()
///     } else if status.is_newer_than_build() {
///         format!("newer than this build (which knows {})", status.highest_known)
///     } else {
///         format!("{} migrations pending", status.pending.len())
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MigrationStatus {
    /// Whether the schema's `migrations` table exists.
    pub installed: bool,
    /// The migrations recorded, in order.
    pub applied: Vec<AppliedMigration>,
    /// The highest migration this build knows.
    pub highest_known: i32,
    /// Migrations this build would apply (those above the newest
    /// recorded, as the runner reads the ledger).
    pub pending: Vec<i32>,
}

impl MigrationStatus {
    /// Nothing to apply, and no breaking migration newer than this build
    /// (a newer non-breaking one is compatible).
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && !self.is_newer_than_build()
    }

    /// The schema has a breaking migration this build does not know:
    /// workers of this build refuse to run against it.
    pub fn is_newer_than_build(&self) -> bool {
        self.applied
            .iter()
            .any(|m| m.breaking && m.id > HIGHEST_MIGRATION)
    }
}

/// Reads the schema's migrations table (changing nothing).
pub(crate) async fn status(pool: &PgPool, schema: &Schema) -> Result<MigrationStatus, Error> {
    schema.validate()?;
    let table = format!("{}.migrations", schema.quoted());
    let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
        .bind(&table)
        .fetch_one(once(pool))
        .await?;
    let applied: Vec<(i32, chrono::DateTime<chrono::Utc>, bool)> = if exists {
        sqlx::query_as(AssertSqlSafe(format!(
            "select id, ts, coalesce((to_jsonb(m) ->> 'breaking')::boolean, false) \
             from {table} m order by id"
        )))
        .fetch_all(once(pool))
        .await?
    } else {
        Vec::new()
    };
    let applied: Vec<AppliedMigration> = applied
        .into_iter()
        .map(|(id, applied_at, breaking)| AppliedMigration {
            id,
            applied_at,
            breaking,
        })
        .collect();
    // As `migrate` reads the ledger: everything up to the newest recorded
    // migration counts as applied.
    let latest = applied.iter().map(|a| a.id).max().unwrap_or(0);
    let pending = MIGRATIONS
        .iter()
        .map(|m| m.number)
        .filter(|n| *n > latest)
        .collect();
    Ok(MigrationStatus {
        installed: exists,
        applied,
        highest_known: HIGHEST_MIGRATION,
        pending,
    })
}
