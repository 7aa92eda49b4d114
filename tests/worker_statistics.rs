//! A burst into a jobs table without statistics: the worker sees the
//! backlog and analyses the table, so its claims walk the index instead of
//! scanning and sorting the whole table each time.

mod common;

use std::time::Duration;

use common::{count, eventually, migrated_with_runs, run_sql, worker};

async fn manual_analyses(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "select analyze_count from pg_stat_user_tables \
         where schemaname = 'graphile_worker' and relname = '_private_jobs'",
    )
    .await
}

#[tokio::test]
async fn a_worker_finding_a_backlog_analyses_a_table_without_statistics() {
    let (_db, pool, _utils) = migrated_with_runs().await;
    run_sql(
        &pool,
        "select graphile_worker.add_jobs(array(select row('record', json_build_object('tag', 't' || n), \
           null, null, null, null, null, null)::graphile_worker.job_spec \
           from generate_series(1, 3000) as n))",
    )
    .await;
    assert_eq!(
        count(
            &pool,
            "select count(*) from pg_class where relname = '_private_jobs' and reltuples < 0"
        )
        .await,
        1,
        "the table starts without statistics"
    );
    assert_eq!(manual_analyses(&pool).await, 0);
    let w = worker(&pool).concurrency(4).init().await.unwrap();
    w.run_once().await.unwrap();
    eventually(Duration::from_secs(10), "the jobs table analysed", || {
        let pool = pool.clone();
        async move { (manual_analyses(&pool).await >= 1).then_some(()) }
    })
    .await;
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}
