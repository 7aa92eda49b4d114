//! Shared by the fault-injection tests (`faults_*.rs`): a ledger of what
//! tasks did, written through a pool of its own so that a task can record
//! even while the worker's pool is exhausted or its writes fail; gates that
//! tasks wait on; and the checks every fault test ends with.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use graphile_worker::{JobContext, TaskError};
use graphile_worker_dev::TestDatabase;
use sqlx::PgPool;

/// Ledger pools by database name: a task finds its ledger from the database
/// its worker's pool connects to, so tests running in parallel (each on a
/// database of its own) do not mix.
static LEDGERS: LazyLock<Mutex<HashMap<String, PgPool>>> = LazyLock::new(Default::default);

/// Creates the ledger (`runs`) and gate (`gates`) tables in `db` and returns
/// the ledger's own pool.
pub async fn ledger(db: &TestDatabase) -> PgPool {
    let ledger = db.pool(8).await;
    sqlx::raw_sql(
        "create table runs (job_id bigint, attempt int, event text, task text, worker text, \
           last_error text, at timestamptz default clock_timestamp());
         create table gates (name text primary key);",
    )
    .execute(&ledger)
    .await
    .expect("create the ledger");
    LEDGERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(db.name.clone(), ledger.clone());
    ledger
}

/// The ledger of the database the task's worker runs on.
pub fn ledger_of(ctx: &JobContext) -> Result<PgPool, TaskError> {
    let options = ctx.utils().pool().connect_options();
    let name = options.get_database().unwrap_or_default().to_owned();
    LEDGERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .cloned()
        .ok_or_else(|| TaskError::new(format!("no ledger for database {name}")))
}

/// Records `event` for the running job: its id, attempt, task, the worker
/// holding it (`locked_by`) and the `last_error` it started with.
pub async fn record(ctx: &JobContext, event: &str) -> Result<(), TaskError> {
    let ledger = ledger_of(ctx)?;
    let job = ctx.job();
    sqlx::query(
        "insert into runs (job_id, attempt, event, task, worker, last_error) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job.id)
    .bind(i32::from(job.attempts))
    .bind(event)
    .bind(&job.task_identifier)
    .bind(job.locked_by.as_deref())
    .bind(job.last_error.as_deref())
    .execute(&ledger)
    .await
    .map_err(|e| TaskError::new(format!("ledger: {e}")))?;
    Ok(())
}

/// Waits until the gate `name` is open, at most `within`; false if it never
/// opened.
pub async fn wait_for_gate(
    ctx: &JobContext,
    name: &str,
    within: Duration,
) -> Result<bool, TaskError> {
    let ledger = ledger_of(ctx)?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let open: bool = sqlx::query_scalar("select exists (select 1 from gates where name = $1)")
            .bind(name)
            .fetch_one(&ledger)
            .await
            .map_err(|e| TaskError::new(format!("ledger: {e}")))?;
        if open {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn open_gate(ledger: &PgPool, name: &str) {
    sqlx::query("insert into gates (name) values ($1) on conflict do nothing")
        .bind(name)
        .execute(ledger)
        .await
        .expect("open a gate");
}

/// How many times `event` was recorded for job `job_id`.
pub async fn events(ledger: &PgPool, job_id: i64, event: &str) -> i64 {
    sqlx::query_scalar("select count(*) from runs where job_id = $1 and event = $2")
        .bind(job_id)
        .bind(event)
        .fetch_one(ledger)
        .await
        .expect("read the ledger")
}

/// How many times `event` was recorded, for any job.
pub async fn all_events(ledger: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar("select count(*) from runs where event = $1")
        .bind(event)
        .fetch_one(ledger)
        .await
        .expect("read the ledger")
}

/// The ledger, one line per entry, for failure messages.
pub async fn ledger_dump(ledger: &PgPool) -> String {
    let rows: Vec<(
        i64,
        i32,
        String,
        String,
        Option<String>,
        Option<String>,
        f64,
    )> = sqlx::query_as(
        "select job_id, attempt, event, task, worker, last_error, \
               extract(epoch from at - (select min(at) from runs))::float8 \
             from runs order by at",
    )
    .fetch_all(ledger)
    .await
    .expect("read the ledger");
    let mut out = String::new();
    for (job, attempt, event, task, worker, last_error, at) in rows {
        out.push_str(&format!(
            "\n  +{at:6.2}s job {job} ({task}) attempt {attempt} {event} on {} (last_error: {:?})",
            worker.unwrap_or_default(),
            last_error
        ));
    }
    out
}

/// A failure message's context: `what`, then the ledger and the jobs.
pub async fn story_of(what: String, ledger: &PgPool, pool: &PgPool) -> String {
    format!(
        "{what}\nledger:{}\njobs:{}",
        ledger_dump(ledger).await,
        jobs_dump(pool).await
    )
}

/// Every row of `graphile_worker.jobs`, for failure messages.
pub async fn jobs_dump(pool: &PgPool) -> String {
    let rows: Vec<(
        i64,
        String,
        i16,
        i16,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "select id, task_identifier, attempts, max_attempts, key, locked_by, last_error \
             from graphile_worker.jobs order by id",
    )
    .fetch_all(pool)
    .await
    .expect("read the jobs");
    if rows.is_empty() {
        return " (none)".into();
    }
    let mut out = String::new();
    for (id, task, attempts, max, key, locked_by, last_error) in rows {
        out.push_str(&format!(
            "\n  job {id} ({task}) attempts {attempts}/{max} key {key:?} locked_by {locked_by:?} last_error {last_error:?}"
        ));
    }
    out
}

/// Waits (at most 10 s) until the worker `pool_id` (`who`) has a row in the
/// registry.
pub async fn wait_until_registered(pool: &PgPool, pool_id: &str, who: &str) {
    crate::common::eventually(
        Duration::from_secs(10),
        &format!("{who} to register"),
        || async { registered(pool, pool_id).await.then_some(()) },
    )
    .await;
}

/// Whether the worker `pool_id` has a row in the registry.
pub async fn registered(pool: &PgPool, pool_id: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from graphile_worker._private_workers where id = $1)",
    )
    .bind(pool_id)
    .fetch_one(pool)
    .await
    .expect("read the registry")
}
