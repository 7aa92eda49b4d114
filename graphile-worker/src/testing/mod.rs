//! Helpers for testing code that enqueues and runs jobs, against a real
//! PostgreSQL with no set-up. Behind the `testing` cargo feature; add the
//! crate again as a dev-dependency with it:
//!
//! ```toml
//! [dev-dependencies]
//! graphile-worker = { version = "0.1", features = ["testing"] }
//! ```
//!
//! - **A database per test**: [`TestDb`], or the `#[graphile_worker::test]`
//!   attribute on an `async fn` taking one. Each is a fresh database with
//!   the schema installed, on `DATABASE_URL`'s server when set, else on a
//!   throwaway server started from the installed PostgreSQL binaries.
//!   Tests run in parallel; a passing test's database is dropped; with
//!   `GRAPHILE_WORKER_KEEP_TEST_DB=1` a failing test's is kept and named.
//! - **What was enqueued**: [`TestDb::assert_enqueued`] with an
//!   [`Enqueued`] description, [`TestDb::assert_not_enqueued`],
//!   [`TestDb::enqueued`] (typed payloads), and a [`Scope`] that sees only
//!   the jobs enqueued since it began.
//! - **Running jobs**: [`TestDb::run_jobs`] runs the due jobs to completion
//!   and reports each run ([`RunReport`]); [`TestDb::run_job`] runs one
//!   payload through its task; [`JobContext::builder`](crate::JobContext::builder)
//!   calls a task with no database at all.
//! - **Time**: [`TestDb::advance_time`] and [`TestDb::make_due`] make
//!   scheduled and retrying jobs due at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use graphile_worker::task;
//! use graphile_worker::testing::{Enqueued, TestDb};
//!
//! #[task]
//! async fn send_reminder(user_id: i64) {}
//!
//! /// The code under test: schedules a reminder in an hour.
//! async fn sign_up(db: &TestDb, user_id: i64) {
//!     let spec = graphile_worker::JobSpec {
//!         run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
//!         ..Default::default()
//!     };
//!     SendReminder::enqueue_with(db.utils(), SendReminder { user_id }, spec).await.unwrap();
//! }
//!
//! #[graphile_worker::test]
//! async fn signing_up_schedules_a_reminder(db: TestDb) {
//!     sign_up(&db, 7).await;
//!     db.assert_enqueued(
//!         Enqueued::<SendReminder>::new()
//!             .payload(SendReminder { user_id: 7 })
//!             .due_in(Duration::from_secs(3600), Duration::from_secs(10)),
//!     )
//!     .await;
//!
//!     // An hour later, it runs.
//!     db.advance_time(Duration::from_secs(3600)).await;
//!     db.run_jobs().await.assert_all_completed();
//! }
//! ```
//!
//! The helpers panic with a message instead of returning errors: in a test,
//! a panic is a failure with its reason.

// Assertions fail by panicking; so do the helpers when the test cannot go
// on (no server, no schema). Nothing here runs in a worker.
#![allow(clippy::panic)]

mod database;
mod expect;
mod run;
mod server;

pub use database::{KEEP_ENV, TestDb};
pub use expect::{Enqueued, Scope};
pub use run::{RanJob, RunJobs, RunOutcome, RunReport};
pub use server::server_url;

#[doc(hidden)]
pub use server::{is_root, restart_server, with_database};

// Hooks for the project's own tests that drive the engine by hand: an older
// schema revision, a stale-lock sweep on demand, a cron clock that moves
// when told.
#[doc(hidden)]
pub use crate::cron::testing::{Clock, CronEvent, ManualClock, run_scheduler_for_tests};
#[doc(hidden)]
pub use crate::migrate::migrate_until;
#[doc(hidden)]
pub use crate::sql::engine_sql;
#[doc(hidden)]
pub use crate::sweep::reset_stale_locks;

use std::future::Future;

/// Runs a `#[graphile_worker::test]` body with a fresh database, on a
/// runtime of its own.
#[doc(hidden)]
pub fn __run_test<F, Fut, R>(label: &str, body: F) -> R
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = R>,
{
    runtime().block_on(async {
        let db = TestDb::for_test(label).await;
        body(db).await
    })
}

/// Runs a `#[graphile_worker::test]` body that takes no database.
#[doc(hidden)]
pub fn __run_test_without_db<F, Fut, R>(_label: &str, body: F) -> R
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    runtime().block_on(body())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("graphile_worker::testing: could not start a runtime: {e}"))
}
