//! A database per test: created on the test server, migrated, dropped when
//! the test passes, kept for inspection when it fails and
//! `GRAPHILE_WORKER_KEEP_TEST_DB` is set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::server::{server_url, with_database};
use crate::worker::WorkerOptions;
use crate::worker_utils::WorkerUtils;

/// The environment switch that keeps the database of a failing test.
pub const KEEP_ENV: &str = "GRAPHILE_WORKER_KEEP_TEST_DB";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh PostgreSQL database for one test, with the worker schema
/// installed.
///
/// It is created on `DATABASE_URL`'s server when that is set (the user must
/// be allowed to create databases), else on a throwaway server this process
/// starts from the installed PostgreSQL binaries and stops when it exits.
/// Each `TestDb` is its own database, so tests run in parallel without
/// seeing each other's jobs or notifications.
///
/// Dropping it drops the database. When the test is failing (the thread is
/// panicking; a test that fails by returning `Err` is not seen as failing
/// here) and the environment variable `GRAPHILE_WORKER_KEEP_TEST_DB`
/// is set (to anything but `0`), the database is kept and its name and URL
/// are printed on stderr, for `psql`.
///
/// The helpers panic with a message instead of returning errors: they are
/// for tests, where a panic is a failure with its reason.
///
/// ```no_run
/// use graphile_worker::testing::TestDb;
///
/// #[tokio::test]
/// async fn signup_sends_a_welcome_email() {
///     let db = TestDb::new().await;
///     // ... code under test, enqueueing through db.utils() or db.pool() ...
///     # let _ = &db;
/// }
/// ```
#[derive(Debug)]
pub struct TestDb {
    /// The server's URL the database was made from, to drop it there.
    admin_url: String,
    url: String,
    name: String,
    schema: String,
    label: String,
    pool: PgPool,
    utils: WorkerUtils,
}

impl TestDb {
    /// A new database with the worker schema `graphile_worker` installed,
    /// named after the running test.
    ///
    /// # Panics
    ///
    /// When no server can be reached or started, or the schema cannot be
    /// installed; the message says why.
    pub async fn new() -> TestDb {
        Self::create(current_test_name(), Some("graphile_worker")).await
    }

    /// Like [`new`](Self::new), with the worker schema under another name
    /// (as `WorkerOptions::schema` and Node's `GRAPHILE_WORKER_SCHEMA`).
    pub async fn with_schema(schema: &str) -> TestDb {
        Self::create(current_test_name(), Some(schema)).await
    }

    /// A new, empty database: no worker schema (to test migrations, or an
    /// install by Node graphile-worker).
    pub async fn unmigrated() -> TestDb {
        Self::create(current_test_name(), None).await
    }

    #[doc(hidden)]
    /// For `#[graphile_worker::test]`: a database labelled with the test's
    /// path.
    pub async fn for_test(label: &str) -> TestDb {
        Self::create(label.to_owned(), Some("graphile_worker")).await
    }

    async fn create(label: String, schema: Option<&str>) -> TestDb {
        let admin_url = server_url();
        let name = database_name(&label);
        let options: PgConnectOptions = admin_url.parse().unwrap_or_else(|e| {
            panic!("graphile_worker::testing: the server URL does not parse: {e}")
        });
        let mut admin = options.connect().await.unwrap_or_else(|e| {
            panic!("graphile_worker::testing: could not connect to the test server: {e}")
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "graphile_worker::testing: could not create the test database {name}: {e} (the user of DATABASE_URL needs CREATEDB)"
                )
            });
        drop(admin);
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: connect to {name}: {e}"));
        let schema_name = schema.unwrap_or("graphile_worker");
        let utils = WorkerUtils::new(pool.clone(), schema_name);
        if schema.is_some() {
            utils.migrate().await.unwrap_or_else(|e| {
                panic!("graphile_worker::testing: installing the schema in {name} failed: {e}")
            });
        }
        TestDb {
            admin_url,
            url,
            name,
            schema: schema_name.to_owned(),
            label,
            pool,
            utils,
        }
    }

    /// The database's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`gw_test_<test>_<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A pool of up to 20 connections to the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// [`WorkerUtils`] on the database and schema: enqueue, inspect,
    /// administer.
    pub fn utils(&self) -> &WorkerUtils {
        &self.utils
    }

    /// Worker options on this database and schema, with every registered
    /// task ([`Worker::from_registry`](crate::Worker::from_registry)) and no
    /// signal handling; add `.data(..)` and the rest, then `.init()`.
    pub fn worker(&self) -> WorkerOptions {
        self.configure(crate::Worker::from_registry())
    }

    /// Points `options` at this database and schema, without signal
    /// handling.
    pub fn configure(&self, options: WorkerOptions) -> WorkerOptions {
        options
            .pg_pool(self.pool.clone())
            .schema(&self.schema)
            .handle_signals(false)
    }

    /// Makes the jobs of this database due sooner, as if `by` had passed:
    /// every unlocked job's `run_at` moves back by `by`, so a job scheduled
    /// in 10 minutes, or retrying after a failure, runs at once after
    /// `advance_time(Duration::from_secs(600))`. Returns how many jobs
    /// moved. The database's clock is not changed.
    pub async fn advance_time(&self, by: Duration) -> u64 {
        let seconds = by.as_secs_f64();
        let sql = format!(
            "update {}._private_jobs set run_at = run_at - make_interval(secs => $1) \
             where locked_at is null",
            crate::schema::Schema::new(&self.schema).quoted()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seconds)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: advance_time: {e}"))
            .rows_affected()
    }

    /// Makes every unlocked job that is scheduled in the future due now
    /// (retrying ones included). Returns how many.
    pub async fn make_due(&self) -> u64 {
        let sql = format!(
            "update {}._private_jobs set run_at = now() \
             where locked_at is null and run_at > now() and attempts < max_attempts",
            crate::schema::Schema::new(&self.schema).quoted()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: make_due: {e}"))
            .rows_affected()
    }

    /// Drops the database now (dropping the `TestDb` does the same).
    pub fn close(self) {}
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() && keep_requested() {
            eprintln!(
                "graphile_worker::testing: kept the database of failed test `{}`: {} (psql '{}'); drop it with: dropdb {}",
                self.label, self.name, self.url, self.name
            );
            return;
        }
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // The test's own runtime may be shutting down or busy: drop the
        // database from a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), drop_database(&admin_url, &name))
                    .await
                    .unwrap_or_else(|_| Err("the server did not answer within 30 s".to_owned()))
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!(
                "graphile_worker::testing: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

fn keep_requested() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let options: PgConnectOptions = admin_url.parse().map_err(|e| format!("{e}"))?;
    let mut admin = options.connect().await.map_err(|e| e.to_string())?;
    let version: i32 = sqlx::query_scalar("select current_setting('server_version_num')::int")
        .fetch_one(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    let statement = if version >= 130_000 {
        format!("drop database if exists \"{name}\" with (force)")
    } else {
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        format!("drop database if exists \"{name}\"")
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The running test's name: libtest names each test's thread after it.
fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name.to_owned(),
        _ => "test".to_owned(),
    }
}

/// `gw_test_<last path segment of the label, lowercase>_<pid>_<n>`, at most
/// 63 bytes (PostgreSQL's limit).
fn database_name(label: &str) -> String {
    let short = label.rsplit("::").next().unwrap_or(label);
    let mut cleaned: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let suffix = format!(
        "_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    cleaned.truncate(63 - "gw_test_".len() - suffix.len());
    format!("gw_test_{cleaned}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_fit_and_differ() {
        let a =
            database_name("shop::tests::a_very_long_test_name_that_goes_on_and_on_and_on_and_on");
        let b =
            database_name("shop::tests::a_very_long_test_name_that_goes_on_and_on_and_on_and_on");
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, b);
        assert!(a.starts_with("gw_test_a_very_long"), "{a}");
        assert!(database_name("Weird Name-Ü").starts_with("gw_test_weird_name__"));
    }
}
