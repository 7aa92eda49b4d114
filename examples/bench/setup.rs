//! The machine, throwaway databases, jobs, and Node scripts.

use std::process::Stdio;
use std::time::Duration;

use graphile_worker::WorkerUtils;
use graphile_worker_dev::{TestDatabase, fresh_database, node, server_url};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::{Result, SCHEMA};

/// Put in front of each Node script.
pub(crate) const PRELUDE: &str = include_str!("../../bench/prelude.js");

/// The machine and server the figures come from.
pub(crate) struct Machine {
    cpus: usize,
    cpu_model: String,
    load_before: String,
    server: String,
    settings: String,
}

impl Machine {
    pub(crate) async fn describe() -> Result<Self> {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let mut conn = server_url()
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .connect()
            .await?;
        let server: String = sqlx::query_scalar("show server_version")
            .fetch_one(&mut conn)
            .await?;
        let settings: String = sqlx::query_scalar(
            "select string_agg(name || '=' || setting || coalesce(unit, ''), ', ' order by name) \
             from pg_settings where name in ('fsync', 'synchronous_commit', 'shared_buffers', \
             'max_connections')",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            load_before: load_average(),
            server,
            settings,
        })
    }

    pub(crate) fn print(&self, load_after: String, took: Duration) {
        println!(
            "Machine: {} cores ({}); PostgreSQL {} on {} ({}).",
            self.cpus,
            self.cpu_model,
            self.server,
            if std::env::var_os("DATABASE_URL").is_some() {
                "DATABASE_URL's server"
            } else {
                "the same host (throwaway server)"
            },
            self.settings
        );
        println!(
            "Load average (1, 5, 15 min) before: {}; after: {}. The benchmark took {:.0} s.",
            self.load_before,
            load_after,
            took.as_secs_f64()
        );
        println!();
    }
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------- databases

/// A new database with the worker schema installed.
pub(crate) async fn migrated_database() -> Result<TestDatabase> {
    let db = fresh_database().await;
    let pool = db.pool(1).await;
    WorkerUtils::new(pool.clone(), SCHEMA).migrate().await?;
    pool.close().await;
    Ok(db)
}

/// Writes out the pages earlier runs left dirty, so that no measurement pays
/// for its predecessor's writes. Needs superuser (or pg_checkpoint) rights;
/// without them it does nothing.
pub(crate) async fn settle(pool: &PgPool) {
    let _ = sqlx::query("checkpoint").execute(pool).await;
}

pub(crate) async fn drop_database(db: TestDatabase) -> Result<()> {
    let mut conn = server_url()
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .connect()
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {} with (force)",
        graphile_worker::quote_identifier(&db.name)
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// `count` jobs of `bench_noop` as the JSON array `add_jobs` takes.
pub(crate) fn specs_json(count: usize) -> String {
    let mut json = String::with_capacity(count * 48 + 2);
    json.push('[');
    for id in 0..count {
        if id > 0 {
            json.push(',');
        }
        json.push_str(r#"{"identifier":"bench_noop","payload":{"id":"#);
        json.push_str(&id.to_string());
        json.push_str("}}");
    }
    json.push(']');
    json
}

/// The `add_jobs` SQL function, called directly in one statement.
pub(crate) async fn add_jobs_sql(pool: &PgPool, specs: String) -> Result<i64> {
    let sql = format!(
        "select count(*) from {s}.add_jobs((select array_agg(r) \
         from json_populate_recordset(null::{s}.job_spec, $1::json) r), false)",
        s = graphile_worker::quote_identifier(SCHEMA)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(specs)
        .fetch_one(pool)
        .await?)
}

pub(crate) async fn jobs_left(pool: &PgPool) -> Result<i64> {
    let sql = format!(
        "select count(*) from {}._private_jobs",
        graphile_worker::quote_identifier(SCHEMA)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?)
}

/// Runs a script from `bench/` with Node graphile-worker 0.18 and returns the
/// JSON it reports on its last line.
pub(crate) async fn run_node(
    db: &TestDatabase,
    script: &str,
    env: &[(&str, String)],
) -> Result<serde_json::Value> {
    let mut cmd = node::js_command(&db.url, SCHEMA, &format!("{PRELUDE}\n{script}"));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::process::Command::from(cmd).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "node script failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let last = stdout.lines().last().ok_or("node script printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

pub(crate) fn reported_ms(value: &serde_json::Value) -> Result<f64> {
    Ok(value["ms"].as_f64().ok_or("node script reported no ms")?)
}

// ------------------------------------------------------------- measurements
