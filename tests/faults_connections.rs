//! Connection faults between a worker and PostgreSQL, injected with the
//! in-test TCP proxy (`graphile_worker_dev::proxy`): a claim whose response
//! is lost after it committed, connections reset in the middle of
//! statements, and a database that stalls for longer than the stale-worker
//! threshold. What users must see: every job runs to completion once, and
//! nothing stays locked.
//!
//! Tasks record what they do in a ledger table through a pool that goes
//! straight to the database, so the ledger is exact whatever the proxy does
//! to the worker's own connections.

mod common;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::{
    count, eventually, in_queue, migrated, run_in_background, stop_worker, wait_for_count,
    wait_for_listener,
};
use graphile_worker::{JobContext, JobSpec, NewJob, Task, TaskError, Worker, WorkerOptions};
use graphile_worker_dev::proxy::Proxy;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

const HEARTBEAT: Duration = Duration::from_millis(200);
const THRESHOLD: Duration = Duration::from_secs(2);
const SWEEP: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(200);

/// Direct pools to each test's database, by database name: tasks find their
/// ledger through the name in their payload (the tests of this file run in
/// parallel, each on its own database).
static LEDGERS: LazyLock<Mutex<HashMap<String, PgPool>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn ledger(name: &str) -> Result<PgPool, TaskError> {
    LEDGERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
        .ok_or_else(|| TaskError::new(format!("no ledger for {name}")))
}

/// Creates the ledger table and makes it reachable from tasks.
async fn open_ledger(name: &str, pool: &PgPool) {
    sqlx::raw_sql(
        "create table runs (id bigserial primary key, job_id bigint not null, attempt int, \
           event text not null, worker text, at timestamptz default clock_timestamp())",
    )
    .execute(pool)
    .await
    .expect("create the ledger table");
    LEDGERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), pool.clone());
}

async fn note(pool: &PgPool, ctx: &JobContext, event: &str) -> Result<(), TaskError> {
    sqlx::query("insert into runs (job_id, attempt, event, worker) values ($1, $2, $3, $4)")
        .bind(ctx.job_id())
        .bind(i32::from(ctx.attempts()))
        .bind(event)
        .bind(ctx.job().locked_by.as_deref())
        .execute(pool)
        .await
        .map_err(|e| TaskError::new(format!("ledger: {e}")))?;
    Ok(())
}

/// Records a `run`, then takes `ms` milliseconds. Always succeeds.
#[derive(Serialize, Deserialize)]
struct Record {
    ledger: String,
    #[serde(default)]
    ms: u64,
}

impl Task for Record {
    const IDENTIFIER: &'static str = "record";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let pool = ledger(&self.ledger)?;
        note(&pool, &ctx, "run").await?;
        if self.ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
        }
        Ok(())
    }
}

/// Records `start`, sleeps `ms`, then records `done`, or `cancelled` (and
/// fails) if the worker has asked it to stop by then. Dropped before that,
/// it records `dropped`. So every `start` is followed by exactly one end.
#[derive(Serialize, Deserialize)]
struct Long {
    ledger: String,
    ms: u64,
}

/// Records `dropped` if the task is dropped before it recorded its end.
struct EndGuard {
    pool: PgPool,
    job_id: i64,
    attempt: i32,
    worker: Option<String>,
    armed: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let (job_id, attempt, worker) = (self.job_id, self.attempt, self.worker.take());
        runtime.spawn(async move {
            let _ = sqlx::query(
                "insert into runs (job_id, attempt, event, worker) values ($1, $2, 'dropped', $3)",
            )
            .bind(job_id)
            .bind(attempt)
            .bind(worker)
            .execute(&pool)
            .await;
        });
    }
}

impl Task for Long {
    const IDENTIFIER: &'static str = "long";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let pool = ledger(&self.ledger)?;
        note(&pool, &ctx, "start").await?;
        let mut guard = EndGuard {
            pool: pool.clone(),
            job_id: ctx.job_id(),
            attempt: i32::from(ctx.attempts()),
            worker: ctx.job().locked_by.clone(),
            armed: true,
        };
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let cancelled = ctx.is_cancelled();
        note(&pool, &ctx, if cancelled { "cancelled" } else { "done" }).await?;
        guard.armed = false;
        if cancelled {
            return Err(TaskError::new("cancelled before it could finish"));
        }
        Ok(())
    }
}

/// What the database and the ledger say at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// Jobs still in the table.
    jobs_left: i64,
    /// Of which locked.
    jobs_locked: i64,
    /// Named queues locked.
    queues_locked: i64,
    /// Who holds the locks.
    lockers: Option<String>,
    /// `run` rows (Record).
    runs: i64,
    /// Distinct jobs with a `run` row.
    jobs_run: i64,
    /// Jobs with more than one `run` row.
    jobs_run_twice: i64,
    /// `start` rows (Long).
    starts: i64,
    /// `done` rows (Long).
    dones: i64,
    /// `cancelled` and `dropped` rows (Long).
    stopped: i64,
}

async fn snapshot(pool: &PgPool) -> Snapshot {
    type Row = (i64, i64, i64, Option<String>, i64, i64, i64, i64, i64, i64);
    let row: Row = sqlx::query_as(
        "select \
           (select count(*) from graphile_worker._private_jobs), \
           (select count(*) from graphile_worker._private_jobs where locked_by is not null), \
           (select count(*) from graphile_worker._private_job_queues where locked_by is not null), \
           (select string_agg(distinct locked_by, ', ') from ( \
              select locked_by from graphile_worker._private_jobs where locked_by is not null \
              union all \
              select locked_by from graphile_worker._private_job_queues where locked_by is not null) l), \
           (select count(*) from runs where event = 'run'), \
           (select count(distinct job_id) from runs where event = 'run'), \
           (select count(*) from (select job_id from runs where event = 'run' \
              group by job_id having count(*) > 1) d), \
           (select count(*) from runs where event = 'start'), \
           (select count(*) from runs where event = 'done'), \
           (select count(*) from runs where event in ('cancelled', 'dropped'))",
    )
    .fetch_one(pool)
    .await
    .expect("snapshot query");
    Snapshot {
        jobs_left: row.0,
        jobs_locked: row.1,
        queues_locked: row.2,
        lockers: row.3,
        runs: row.4,
        jobs_run: row.5,
        jobs_run_twice: row.6,
        starts: row.7,
        dones: row.8,
        stopped: row.9,
    }
}

/// Polls every 50 ms until `done` holds, or panics after `within` with what
/// `what` waited for and the last snapshot.
async fn settle(
    pool: &PgPool,
    within: Duration,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + within;
    loop {
        let now = snapshot(pool).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}; last state: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Options for a worker of `T` with short recovery settings.
fn options<T: Task>(poll: Duration, threshold: Duration) -> WorkerOptions {
    Worker::options()
        .register::<T>()
        .handle_signals(false)
        .poll_interval(poll)
        .heartbeat_interval(HEARTBEAT)
        .stale_worker_threshold(threshold)
        .recovery_sweep_interval(SWEEP)
}

/// A worker for `T` connected through `proxy`, with short recovery settings.
async fn worker_via<T: Task>(
    proxy: &Proxy,
    concurrency: usize,
    poll: Duration,
    threshold: Duration,
) -> Worker {
    options::<T>(poll, threshold)
        .database_url(proxy.url())
        .concurrency(concurrency)
        .init()
        .await
        .expect("init the worker through the proxy")
}

/// Waits (at most `within`) until all `total` jobs ran and left the table
/// and no queue is locked, then asserts that each ran exactly once and
/// nothing is left locked.
async fn assert_all_ran_once(pool: &PgPool, total: i64, within: Duration, what: &str) {
    let end = settle(pool, within, what, |s| {
        s.jobs_left == 0 && s.jobs_run == total && s.queues_locked == 0
    })
    .await;
    assert_eq!(end.jobs_run_twice, 0, "a job ran twice: {end:#?}");
    assert_eq!(end.runs, total, "every job ran exactly once: {end:#?}");
    assert_eq!(end.jobs_locked, 0, "{end:#?}");
    assert_eq!(end.queues_locked, 0, "{end:#?}");
}

/// Stops a worker: its `run()` must return well within 20 s.
async fn stop(handle: graphile_worker::ShutdownHandle, running: common::Running, name: &str) {
    stop_worker(name, handle, running, Duration::from_secs(20)).await;
}

/// A claim commits on the server but its response never reaches the
/// worker; then the connection is reset. The worker holds locks it does not
/// know about: it must find them (what the database says it holds versus
/// what it knows) and hand them back, so every job still runs once, soon,
/// instead of waiting four hours for the stale-lock sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_response_is_lost_after_commit_leaves_nothing_locked() {
    let (db, pool, utils) = migrated().await;
    open_ledger(&db.name, &pool).await;
    let proxy = Proxy::start(&db.url).await;
    // The stale threshold is long: once its heartbeats go unanswered for
    // half of it, a worker stops claiming, and the claim must get out
    // before that, however busy the machine.
    let worker = worker_via::<Record>(&proxy, 4, POLL, THRESHOLD * 5).await;
    let pool_id = worker.pool_id().to_owned();
    let (handle, running) = run_in_background(&worker);
    wait_for_listener(&pool).await;
    // A first job, run and written back: the worker works through the
    // proxy.
    let payload = json!({"ledger": db.name});
    utils
        .add_raw_job("record", payload.clone(), JobSpec::default())
        .await
        .expect("add the first job");
    settle(&pool, Duration::from_secs(10), "the first job", |s| {
        s.runs == 1 && s.jobs_left == 0
    })
    .await;

    // The jobs arrive while the worker's connections are stalled, and the
    // blackhole starts before they flow again: whichever claim reaches the
    // server next finds the jobs and commits, and its answer is lost. (The
    // worker still hears the notification of the new jobs.) A claim sent
    // before is answered in full.
    proxy.pause();
    // Two jobs in named queues, first in line, so that the lost claim holds
    // queue locks too; then plain jobs.
    let mut jobs: Vec<NewJob> = ["qa", "qb"]
        .map(|queue| NewJob {
            spec: JobSpec {
                priority: Some(-1),
                ..in_queue(queue)
            },
            ..NewJob::new("record", payload.clone())
        })
        .into();
    jobs.extend((0..6).map(|_| NewJob::new("record", payload.clone())));
    let total = jobs.len() as i64 + 1;
    utils.add_raw_jobs(&jobs).await.expect("add jobs");
    proxy.blackhole_responses(true);
    proxy.resume();

    let stray = eventually(
        Duration::from_secs(10),
        "the worker's claim to commit (jobs locked by it)",
        || {
            let pool = pool.clone();
            let pool_id = pool_id.clone();
            async move {
                let locked: i64 = sqlx::query_scalar(
                    "select count(*) from graphile_worker._private_jobs where locked_by = $1",
                )
                .bind(&pool_id)
                .fetch_one(&pool)
                .await
                .expect("count locked jobs");
                (locked > 0).then_some(locked)
            }
        },
    )
    .await;
    let stray_queues: i64 = sqlx::query_scalar(
        "select count(*) from graphile_worker._private_job_queues where locked_by = $1",
    )
    .bind(&pool_id)
    .fetch_one(&pool)
    .await
    .expect("count locked queues");
    assert_eq!(
        count(&pool, "select count(*) from runs").await,
        1,
        "no claim's answer got through, so only the first job can have run"
    );
    // The response is gone for good; the connection carrying it is reset.
    proxy.blackhole_responses(false);
    proxy.cut();

    assert_all_ran_once(
        &pool,
        total,
        Duration::from_secs(30),
        &format!(
            "all {total} jobs to run and leave the table (the lost claim locked {stray} jobs and {stray_queues} queues)"
        ),
    )
    .await;
    stop(handle, running, "the worker").await;
}

/// A drain of 2000 short jobs (some in named queues) while every connection
/// of the worker is reset about every 150 ms (40 to 260). Resets land in the
/// middle of claims, completions and heartbeats; the tasks always succeed,
/// so each job must run exactly once, and all must be gone with nothing
/// locked. (A reset that loses a committed claim's answer leaves jobs locked
/// as in the test above; it happens in some runs, not all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_mid_statement_never_run_a_job_twice() {
    const JOBS: i64 = 2000;
    const QUEUED: i64 = 200;
    let (db, pool, utils) = migrated().await;
    open_ledger(&db.name, &pool).await;
    let payload = json!({"ledger": db.name, "ms": 8});
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| {
            let mut job = NewJob::new("record", payload.clone());
            if i < QUEUED {
                job.spec.queue_name = Some(format!("q{}", i % 4));
            }
            job
        })
        .collect();
    utils.add_raw_jobs(&jobs).await.expect("add jobs");

    let proxy = Proxy::start(&db.url).await;
    let worker = worker_via::<Record>(&proxy, 4, POLL, THRESHOLD).await;
    let (handle, running) = run_in_background(&worker);
    wait_for_count(
        &pool,
        Duration::from_secs(20),
        "the drain to start",
        "select count(*) from runs",
        |n| n > 0,
    )
    .await;

    // Reset everything every 150 ms or so while the drain goes on, for up
    // to 6 s. The intervals vary, so that the resets do not fall into step
    // with the worker's reconnections and land in every kind of statement.
    const INTERVALS_MS: [u64; 7] = [150, 40, 230, 90, 190, 60, 260];
    let started = Instant::now();
    let mut cuts = 0;
    let mut connections_cut = 0;
    while started.elapsed() < Duration::from_secs(6)
        && count(&pool, "select count(*) from graphile_worker._private_jobs").await > 0
    {
        tokio::time::sleep(Duration::from_millis(
            INTERVALS_MS[cuts % INTERVALS_MS.len()],
        ))
        .await;
        connections_cut += proxy.connections();
        proxy.cut();
        cuts += 1;
    }
    let during = snapshot(&pool).await;
    eprintln!(
        "{cuts} cuts ({connections_cut} connections reset) over {:?}; {} of {JOBS} jobs had run",
        started.elapsed(),
        during.jobs_run
    );
    // The loop stops once the table is empty: this many cuts landed during
    // the drain.
    assert!(
        cuts >= 10,
        "the resets should overlap the drain (make the jobs slower): {cuts} cuts, {during:#?}"
    );

    assert_all_ran_once(
        &pool,
        JOBS,
        Duration::from_secs(25),
        &format!("all {JOBS} jobs to run and leave the table"),
    )
    .await;
    stop(handle, running, "the worker").await;
}

/// A long job runs on a worker whose database stalls (the proxy holds every
/// byte) for three times the stale threshold, while a second worker,
/// connected directly, sweeps for dead workers. The first worker's
/// heartbeats cannot get through, so the peer may declare it dead and run
/// the job again; then the first worker must stop its own copy (its task
/// sees the cancellation, or is dropped) so the job never runs to
/// completion twice. Nothing stays locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_does_not_run_jobs_twice() {
    const JOB_MS: u64 = 4000;
    let (db, pool, utils) = migrated().await;
    open_ledger(&db.name, &pool).await;
    let proxy = Proxy::start(&db.url).await;
    let stalled = worker_via::<Long>(&proxy, 1, POLL, THRESHOLD).await;
    let stalled_id = stalled.pool_id().to_owned();
    let (stalled_stop, stalled_run) = run_in_background(&stalled);

    utils
        .add_raw_job(
            "long",
            json!({"ledger": db.name, "ms": JOB_MS}),
            in_queue("long"),
        )
        .await
        .expect("add the job");
    eventually(
        Duration::from_secs(10),
        "the job to start on the first worker",
        || {
            let pool = pool.clone();
            async move { (snapshot(&pool).await.starts == 1).then_some(()) }
        },
    )
    .await;
    let first: Option<String> = sqlx::query_scalar("select worker from runs where event = 'start'")
        .fetch_one(&pool)
        .await
        .expect("who started the job");
    assert_eq!(first.as_deref(), Some(stalled_id.as_str()));

    // The peer, straight to the database.
    let peer = options::<Long>(POLL, THRESHOLD)
        .pg_pool(db.pool(10).await)
        .init()
        .await
        .expect("init the peer");
    let (peer_stop, peer_run) = run_in_background(&peer);

    proxy.pause();
    tokio::time::sleep(THRESHOLD * 3).await;
    proxy.resume();

    // Every copy that started has ended one way or another, and the job is
    // gone.
    let end = settle(
        &pool,
        Duration::from_secs(25),
        "the job to finish and every started copy to end",
        |s| s.jobs_left == 0 && s.dones >= 1 && s.starts == s.dones + s.stopped,
    )
    .await;
    let ledger: Vec<(String, Option<String>, i32)> =
        sqlx::query_as("select event, worker, attempt from runs order by id")
            .fetch_all(&pool)
            .await
            .expect("read the ledger");
    assert_eq!(
        end.dones,
        1,
        "the job ran to completion {} times; first worker {stalled_id}, peer {}; ledger {ledger:?}",
        end.dones,
        peer.pool_id()
    );
    assert_eq!(end.jobs_locked, 0, "{end:#?}");
    assert_eq!(end.queues_locked, 0, "{end:#?}");
    stop(stalled_stop, stalled_run, "the stalled worker").await;
    stop(peer_stop, peer_run, "the peer").await;
}
