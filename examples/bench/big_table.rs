//! Big tables: the due 5% of a table whose other 95% cannot run now, drained
//! beside the same jobs in a clean table. The 95% are a mix users
//! accumulate: jobs scheduled for tomorrow, jobs that failed for good, jobs
//! of a task this worker does not run (due over the last hour), and jobs
//! locked by a worker elsewhere. The due jobs are either spread over the
//! same hour, interleaved with the other task's (a fleet where another
//! worker runs that task, a little behind), or all newer than them (that
//! task's workers are down: every claim walks past its whole backlog).

use graphile_worker_dev::TestDatabase;
use sqlx::PgPool;

use crate::oneshot::{Statistics, backlog, drain, ours_run_once_ms, probe};
use crate::setup::{drop_database, jobs_left, migrated_database, reported_ms, run_node, settle};
use crate::{Metric, Result, Results, SCHEMA, Settings, Side, Table, progress};

const NODE_DRAIN: &str = include_str!("../../bench/drain.js");

/// Rows in the big table: 1M, or 200k with `--quick`.
pub(crate) fn total(settings: &Settings) -> usize {
    if settings.quick { 200_000 } else { 1_000_000 }
}

/// The due jobs: 5% of the table.
pub(crate) fn due(settings: &Settings) -> usize {
    total(settings) / 20
}

pub(crate) async fn measure(settings: &Settings, run: usize, results: &mut Results) -> Result<()> {
    let due = due(settings);
    let filler = total(settings) - due;
    let (db, pool) = filled(filler).await?;
    for side in settings.sides(Side::PAIR, run) {
        for table in [Table::Interleaved, Table::Behind] {
            add_due(&pool, due, table).await?;
            let ms = match side {
                Side::Ours => ours_run_once_ms(&db.url).await?,
                node_side => {
                    let env = [("BENCH_MODE", node_side.mode().to_owned())];
                    reported_ms(&run_node(&db, NODE_DRAIN, &env).await?)?
                }
            };
            let left = jobs_left(&pool).await? - i64::try_from(filler)?;
            if left != 0 {
                return Err(format!("{} left {left} of the {due} due jobs", side.mode()).into());
            }
            let rate = due as f64 / (ms / 1e3);
            progress(
                &format!("big table, due 5% {}, {}", table.label(), side.mode()),
                rate,
                "jobs/s",
            );
            results.push(Metric::BigDrainRate(side, table), rate);
        }
        let rate = drain(side, due, Statistics::Analyzed).await?;
        progress(
            &format!("clean table, same jobs, {}", side.mode()),
            rate,
            "jobs/s",
        );
        results.push(Metric::BigDrainRate(side, Table::Clean), rate);
    }
    let mut probes = Vec::new();
    for table in [Table::Interleaved, Table::Behind] {
        add_due(&pool, due, table).await?;
        probes.push((table, probe(&db).await?));
    }
    pool.close().await;
    drop_database(db).await?;
    let (clean_db, clean_pool) = backlog(due, Statistics::Analyzed).await?;
    probes.push((Table::Clean, probe(&clean_db).await?));
    clean_pool.close().await;
    drop_database(clean_db).await?;
    for (table, probe) in probes {
        if probe.jobs != due {
            return Err(format!("the claim probe ran {} of {due} jobs", probe.jobs).into());
        }
        results.push(Metric::ClaimUsPerJob(table), probe.claim_us_per_job());
    }
    Ok(())
}

/// Adds the due jobs: run at moments spread over the last hour, among the
/// other task's jobs ([`Table::Interleaved`]), or now, after all of them
/// ([`Table::Behind`]). Then analyses the table, as autovacuum would.
async fn add_due(pool: &PgPool, due: usize, table: Table) -> Result<()> {
    let run_at = match table {
        Table::Interleaved => "now() - interval '1 hour' + random() * interval '59 minutes'",
        _ => "now()",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "select count(*) from {s}.add_jobs(array(select row('bench_noop', \
           json_build_object('id', g), null, {run_at}, null, null, null, null)::{s}.job_spec \
         from generate_series(1, $1::int) g), false)",
        s = graphile_worker::quote_identifier(SCHEMA)
    )))
    .bind(i32::try_from(due)?)
    .execute(pool)
    .await?;
    analyze(pool).await
}

/// A migrated database holding `filler` jobs none of which can run now.
async fn filled(filler: usize) -> Result<(TestDatabase, PgPool)> {
    let db = migrated_database().await?;
    let pool = db.pool(2).await;
    let s = graphile_worker::quote_identifier(SCHEMA);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "insert into {s}._private_tasks (identifier) values ('bench_noop'), ('bench_elsewhere') \
           on conflict do nothing"
    )))
    .execute(&pool)
    .await?;
    // Of every 19 rows: 8 scheduled for tomorrow, 4 failed for good, 4 due
    // for a task nobody here runs, 3 locked by a worker elsewhere.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into {s}._private_jobs \
           (task_id, payload, run_at, attempts, max_attempts, last_error, locked_at, locked_by) \
         select case when g % 19 between 12 and 15 \
             then (select id from {s}._private_tasks where identifier = 'bench_elsewhere') \
             else (select id from {s}._private_tasks where identifier = 'bench_noop') end, \
           json_build_object('id', g), \
           case when g % 19 < 8 then now() + interval '1 day' + g * interval '1 ms' \
             else now() - interval '1 hour' + g * interval '59 minutes' / $1 end, \
           case when g % 19 between 8 and 11 then 25 when g % 19 >= 16 then 1 else 0 end, \
           25, \
           case when g % 19 between 8 and 11 then 'failed for good' end, \
           case when g % 19 >= 16 then now() end, \
           case when g % 19 >= 16 then 'worker-elsewhere' end \
         from generate_series(1, $1::int) g"
    )))
    .bind(i32::try_from(filler)?)
    .execute(&pool)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "vacuum analyze {s}._private_jobs"
    )))
    .execute(&pool)
    .await?;
    settle(&pool).await;
    Ok((db, pool))
}

async fn analyze(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "analyze {}._private_jobs",
        graphile_worker::quote_identifier(SCHEMA)
    )))
    .execute(pool)
    .await?;
    settle(pool).await;
    Ok(())
}
