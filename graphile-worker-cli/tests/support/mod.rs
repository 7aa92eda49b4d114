//! Running the built `graphile-worker` binary against a throwaway
//! database, and reading what it printed.
#![allow(dead_code)]

use std::process::Output;

use graphile_worker::WorkerUtils;
use graphile_worker_dev::{TestDatabase, fresh_database};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_graphile-worker");

/// A fresh database, with the schema installed when `migrated`.
pub async fn database(migrated: bool) -> (TestDatabase, WorkerUtils) {
    let db = fresh_database().await;
    let utils = WorkerUtils::new(db.pool(4).await, "graphile_worker");
    if migrated {
        utils.migrate().await.expect("migrate");
    }
    (db, utils)
}

/// What one run of the binary did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics unless the run exited with `code`; returns it for chaining.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs the binary with `args` against `url` (as DATABASE_URL), in a wide
/// terminal, with the environment otherwise clean of our variables.
pub async fn gw_at(url: Option<&str>, args: &[&str]) -> Run {
    let url = url.map(str::to_owned);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = assert_cmd::Command::new(BIN);
        cmd.env_remove("DATABASE_URL")
            .env_remove("GRAPHILE_WORKER_SCHEMA")
            .env("COLUMNS", "200")
            .env("RUST_LOG", "warn")
            .args(&args)
            .timeout(std::time::Duration::from_secs(60));
        if let Some(url) = url {
            cmd.env("DATABASE_URL", url);
        }
        Run::from(cmd.output().expect("run graphile-worker"))
    })
    .await
    .expect("join")
}

/// Runs the binary with `args` against `db`.
pub async fn gw(db: &TestDatabase, args: &[&str]) -> Run {
    gw_at(Some(&db.url), args).await
}

/// How many jobs the schema holds.
pub async fn job_count(utils: &WorkerUtils) -> i64 {
    sqlx::query_scalar("select count(*) from graphile_worker._private_jobs")
        .fetch_one(utils.pool())
        .await
        .expect("count jobs")
}
