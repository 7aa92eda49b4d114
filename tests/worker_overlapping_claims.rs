//! Draining a large backlog, where the worker claims on two connections at
//! once: named queues still run one job at a time and in order, and every
//! job runs exactly once. That two claims did overlap is observed from
//! outside, in `pg_stat_activity`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{count, locks_held, migrated, run_sql};
use graphile_worker::{JobContext, JobSpec, NewJob, Task, TaskError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Connection, PgConnection};

/// Runs of `Tick` (this file holds one test, so one worker counts here).
static TICKS: AtomicI64 = AtomicI64::new(0);

/// Counts its runs, nothing else: short jobs, so that claims overlap.
#[derive(Serialize, Deserialize)]
struct Tick {}

impl Task for Tick {
    const IDENTIFIER: &'static str = "tick";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        TICKS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Records its run and how many jobs of its queue were running with it.
#[derive(Serialize, Deserialize)]
struct InQueue {
    queue: String,
    n: i32,
}

impl Task for InQueue {
    const IDENTIFIER: &'static str = "in_queue";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let pool = ctx.utils().pool();
        let err = |e: sqlx::Error| TaskError::new(e.to_string());
        let others: i32 = sqlx::query_scalar(
            "update queue_state set running = running + 1 where queue = $1 returning running - 1",
        )
        .bind(&self.queue)
        .fetch_one(pool)
        .await
        .map_err(err)?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        sqlx::query("insert into queue_runs (queue, n, others) values ($1, $2, $3)")
            .bind(&self.queue)
            .bind(self.n)
            .bind(others)
            .execute(pool)
            .await
            .map_err(err)?;
        sqlx::query("update queue_state set running = running - 1 where queue = $1")
            .bind(&self.queue)
            .execute(pool)
            .await
            .map_err(err)?;
        Ok(())
    }
}

/// What the watcher saw: the pids of the first two backends seen running
/// the claim statement at one moment, and how many times it looked.
#[derive(Debug)]
struct Watched {
    overlap: Option<Vec<i32>>,
    samples: u64,
    max_claims_at_once: i64,
}

/// Samples `pg_stat_activity` on its own connection, thread and runtime (so
/// the jobs running on the test's runtime do not hold it up) until `stop`
/// is set or two claims are seen running at once.
///
/// On a loaded machine a claim runs for a millisecond or two between
/// samples taken far apart, so the watcher also, every other round, holds a
/// SHARE lock on the jobs table for 150 ms from a second connection: claims
/// (and outcome writes) then wait on it, in plain sight, while the worker
/// keeps running what it holds. An engine that starts a second claim while
/// one is in flight shows two waiting claims; one that does not, never does.
///
/// A claim counts only if it started before the sampling statement did
/// (`query_start < statement_timestamp()`) and was still active when the
/// statement read the activity table: two such claims were both running at
/// the statement's start, so they really overlapped, even though the table
/// is read one backend after another.
fn watch_claims(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("watcher runtime");
        runtime.block_on(async move {
            let mut conn = PgConnection::connect(&url)
                .await
                .expect("watcher connection");
            let mut locker = PgConnection::connect(&url)
                .await
                .expect("watcher's locking connection");
            let mut round: u64 = 0;
            let mut watched = Watched {
                overlap: None,
                samples: 0,
                max_claims_at_once: 0,
            };
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let hold = round.is_multiple_of(2);
                let locked_until = std::time::Instant::now() + Duration::from_millis(150);
                if hold {
                    sqlx::raw_sql("begin; lock table graphile_worker._private_jobs in share mode")
                        .execute(&mut locker)
                        .await
                        .expect("lock the jobs table");
                }
                let (n, pids) = loop {
                    let sample = sample_claims(&mut conn).await;
                    watched.samples += 1;
                    if sample.0 >= 2 || !hold || std::time::Instant::now() >= locked_until {
                        break sample;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                if hold {
                    sqlx::raw_sql("commit")
                        .execute(&mut locker)
                        .await
                        .expect("release the jobs table");
                }
                watched.max_claims_at_once = watched.max_claims_at_once.max(n);
                if n >= 2 {
                    watched.overlap = Some(pids);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            watched
        })
    })
}

/// How many claims were running (or waiting on a lock) when the sampling
/// statement started, and their backends.
async fn sample_claims(conn: &mut PgConnection) -> (i64, Vec<i32>) {
    sqlx::query_as(
        "select count(*), coalesce(array_agg(pid order by pid), '{}') \
         from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid() \
           and state = 'active' and query like 'with candidates as%' \
           and query_start < statement_timestamp()",
    )
    .fetch_one(conn)
    .await
    .expect("sample pg_stat_activity")
}

#[tokio::test]
async fn a_large_backlog_with_named_queues_drains_exactly_once_and_in_queue_order() {
    let (db, pool, utils) = migrated().await;
    run_sql(
        &pool,
        "create table queue_state (queue text primary key, running int not null);
         insert into queue_state select 'q' || i, 0 from generate_series(0, 3) i;
         create table queue_runs (id serial primary key, queue text, n int, others int);",
    )
    .await;
    const FREE: i64 = 10_000;
    const PER_QUEUE: i32 = 60;
    let free: Vec<NewJob> = (0..FREE).map(|_| NewJob::new("tick", json!({}))).collect();
    utils.add_raw_jobs(&free).await.unwrap();
    // Queued jobs interleaved across the queues, each queue's in run_at order.
    let start = chrono::Utc::now() - chrono::Duration::seconds(60);
    let queued: Vec<NewJob> = (0..PER_QUEUE)
        .flat_map(|n| {
            (0..4).map(move |q| NewJob {
                spec: JobSpec {
                    queue_name: Some(format!("q{q}")),
                    run_at: Some(start + chrono::Duration::milliseconds(i64::from(n))),
                    ..Default::default()
                },
                ..NewJob::new("in_queue", json!({"queue": format!("q{q}"), "n": n}))
            })
        })
        .collect();
    utils.add_raw_jobs(&queued).await.unwrap();
    sqlx::query("analyze graphile_worker._private_jobs")
        .execute(&pool)
        .await
        .unwrap();

    let worker = Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .concurrency(24)
        .register::<Tick>()
        .register::<InQueue>()
        .init()
        .await
        .unwrap();
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_claims(db.url.clone(), stop_watching.clone());
    tokio::time::timeout(Duration::from_secs(300), worker.run_once())
        .await
        .expect("the backlog drains within 5 minutes")
        .unwrap();
    stop_watching.store(true, Ordering::Relaxed);
    let watched = watcher.join().expect("the watcher thread");
    // The worker claimed on two connections at once: at some moment two
    // backends were running the claim statement.
    let overlap = watched.overlap.unwrap_or_else(|| {
        panic!(
            "never saw two claims running at once in {} samples of pg_stat_activity \
             (at most {} at a time)",
            watched.samples, watched.max_claims_at_once
        )
    });
    assert!(
        overlap.len() >= 2 && overlap[0] != overlap[1],
        "two distinct backends: {overlap:?}"
    );

    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "jobs left behind"
    );
    assert_eq!(TICKS.load(Ordering::Relaxed), FREE);
    assert_eq!(
        count(&pool, "select count(*) from queue_runs").await,
        i64::from(4 * PER_QUEUE)
    );
    assert_eq!(
        count(&pool, "select count(*) from queue_runs where others <> 0").await,
        0,
        "two jobs of one named queue ran at once"
    );
    for q in 0..4 {
        let order: Vec<i32> =
            sqlx::query_scalar("select n from queue_runs where queue = $1 order by id")
                .bind(format!("q{q}"))
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(order, (0..PER_QUEUE).collect::<Vec<_>>(), "queue q{q}");
    }
    // Nothing stays locked: no job, no queue.
    assert_eq!(locks_held(&pool).await.1, 0);
}
