//! Development support shared by the integration tests, the examples and the
//! benchmark: a PostgreSQL to run against, with no set-up, from the
//! runtime crate's test helpers (`graphile_worker::testing`: `DATABASE_URL`
//! when set, else a throwaway server), plus Node graphile-worker
//! ([`node`]) and a fault-injecting TCP proxy ([`proxy`]).
//!
//! Each call to [`fresh_database`] creates a new, empty database on that
//! server, so tests are isolated (LISTEN/NOTIFY channels are per database)
//! and can run in parallel; it is dropped when the last clone of its
//! [`TestDatabase`] is (kept for a failing test with
//! `GRAPHILE_WORKER_KEEP_TEST_DB=1`).

use std::sync::Arc;
use std::time::Duration;

use graphile_worker::testing::TestDb;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use graphile_worker::testing::{restart_server, server_url, with_database};

pub mod node;
pub mod pgbouncer;
pub mod proxy;

/// A database made for one test or program run.
#[derive(Clone, Debug)]
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    /// Its name.
    pub name: String,
    /// Drops the database with the last clone.
    _owner: Arc<TestDb>,
}

/// Creates a new empty database on [`server_url`]'s server.
pub async fn fresh_database() -> TestDatabase {
    let db = TestDb::unmigrated().await;
    TestDatabase {
        url: db.url().to_owned(),
        name: db.name().to_owned(),
        _owner: Arc::new(db),
    }
}

impl TestDatabase {
    /// A pool of up to `max` connections to this database.
    pub async fn pool(&self, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

/// The user guide's chapters (`docs/src`), compiled as doctests of this
/// package: every ```rust block in them builds (`no_run` ones are not run).
/// `tests/guide_book.rs` checks that each chapter is listed here.
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../docs/src/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../docs/src/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../docs/src/concepts.md")]
    pub struct Concepts;
    #[doc = include_str!("../docs/src/defining-tasks.md")]
    pub struct DefiningTasks;
    #[doc = include_str!("../docs/src/enqueueing.md")]
    pub struct Enqueueing;
    #[doc = include_str!("../docs/src/running-workers.md")]
    pub struct RunningWorkers;
    #[doc = include_str!("../docs/src/retries.md")]
    pub struct Retries;
    #[doc = include_str!("../docs/src/queues.md")]
    pub struct Queues;
    #[doc = include_str!("../docs/src/shutdown.md")]
    pub struct Shutdown;
    #[doc = include_str!("../docs/src/recovery.md")]
    pub struct Recovery;
    #[doc = include_str!("../docs/src/cron.md")]
    pub struct Cron;
    #[doc = include_str!("../docs/src/operating.md")]
    pub struct Operating;
    #[doc = include_str!("../docs/src/observability.md")]
    pub struct Observability;
    #[doc = include_str!("../docs/src/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../docs/src/node.md")]
    pub struct Node;
    #[doc = include_str!("../docs/src/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/src/migrations.md")]
    pub struct Migrations;
    #[doc = include_str!("../docs/src/errors.md")]
    pub struct Errors;
    #[doc = include_str!("../docs/src/faq.md")]
    pub struct Faq;
}
