//! Fault injection, liveness: a worker that is alive and running its jobs
//! must not be declared dead by a peer sweeping for dead workers, even when
//! one of its tasks holds every connection of its pool, or when an
//! application transaction holds the row lock of one of its running jobs.
//! What is asserted is what users see: how many times each job ran (a
//! ledger written through a pool of its own), that the jobs end completed,
//! and that nothing is left locked.
#![allow(clippy::type_complexity)]

mod common;
mod faults_support;

use std::time::{Duration, Instant};

use common::{Running, add_job, count, eventually, locks_held, migrated, start, stop_worker};
use faults_support::{
    events, ledger, open_gate, record, registered, story_of, wait_for_gate, wait_until_registered,
};
use graphile_worker::{
    JobContext, JobSpec, ShutdownHandle, Task, TaskError, Worker, WorkerOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

const HEARTBEAT: Duration = Duration::from_millis(200);
const THRESHOLD: Duration = Duration::from_secs(2);
const SWEEP: Duration = Duration::from_millis(250);

/// Size of worker A's pool in the pool-exhaustion test.
const A_POOL_SIZE: u32 = 4;

/// How long the fault lasts: well past the stale threshold.
const FAULT: Duration = Duration::from_secs(6);

/// Records `start`; once the gate opens, holds every connection of its
/// worker's pool for `hold_ms` (taking each one as soon as it is free),
/// records how many it got, releases them and records `done`.
#[derive(Serialize, Deserialize)]
struct Hog {
    gate: String,
    hold_ms: u64,
}

impl Task for Hog {
    const IDENTIFIER: &'static str = "hog";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        wait_for_gate(&ctx, &self.gate, Duration::from_secs(30)).await?;
        let pool = ctx.utils().pool().clone();
        let max = pool.options().get_max_connections() as usize;
        let until = tokio::time::Instant::now() + Duration::from_millis(self.hold_ms);
        let mut held = Vec::new();
        let mut full_at = None;
        while tokio::time::Instant::now() < until {
            if held.len() >= max {
                full_at.get_or_insert_with(Instant::now);
                tokio::time::sleep_until(until).await;
                break;
            }
            // Never block past the end of the hold.
            let wait = until
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_millis(100));
            match tokio::time::timeout(wait, pool.acquire()).await {
                Ok(Ok(conn)) => held.push(conn),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => {}
            }
        }
        record(&ctx, &format!("held {} of {max}", held.len())).await?;
        drop(held);
        record(&ctx, "done").await
    }
}

/// Records `start`, waits for the gate, runs `ms`, records `done`; uses no
/// connection of its worker's pool.
#[derive(Serialize, Deserialize)]
struct Steady {
    gate: Option<String>,
    ms: u64,
}

impl Task for Steady {
    const IDENTIFIER: &'static str = "steady";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        if let Some(gate) = &self.gate {
            wait_for_gate(&ctx, gate, Duration::from_secs(60)).await?;
        }
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        record(&ctx, "done").await
    }
}

fn options(pool: PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool)
        .handle_signals(false)
        .poll_interval(Duration::from_millis(200))
        .heartbeat_interval(HEARTBEAT)
        .stale_worker_threshold(THRESHOLD)
        .recovery_sweep_interval(SWEEP)
        .shutdown_grace_period(Duration::from_secs(1))
        .register::<Hog>()
        .register::<Steady>()
}

async fn jobs_left(pool: &PgPool) -> i64 {
    count(pool, "select count(*) from graphile_worker.jobs").await
}

/// A pool for the peer whose sessions wait 10 s (instead of 1 s) before
/// checking for deadlocks. A recovery sweep that runs while A's heartbeats
/// are blocked can deadlock with them once the blocking lock goes away;
/// PostgreSQL then aborts whichever transaction checks first, so which one
/// survives is a race. This makes A's heartbeat the one aborted every time:
/// the interleaving most hostile to A, so that a worker wrongly found dead
/// shows in the outcome in every run, not only in some.
async fn peer_pool(db: &graphile_worker_dev::TestDatabase) -> PgPool {
    let options: PgConnectOptions = db.url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.options([("deadlock_timeout", "10s")]))
        .await
        .unwrap()
}

/// Starts the peer (same tasks, a pool of its own) and waits until it is
/// registered, so that it sweeps for dead workers from then on.
async fn start_peer(
    db: &graphile_worker_dev::TestDatabase,
    pool: &PgPool,
) -> (Worker, ShutdownHandle, Running) {
    let (peer, stop, run) = start(options(peer_pool(db).await).concurrency(2)).await;
    wait_until_registered(pool, peer.pool_id(), "the peer").await;
    (peer, stop, run)
}

/// Starts worker A on `a_pool` (two slots), and waits until it started
/// both `jobs`: its pool id and the running worker.
async fn start_a(
    a_pool: PgPool,
    ledger: &PgPool,
    jobs: [i64; 2],
) -> (String, ShutdownHandle, Running) {
    let (a, stop_a, run_a) = start(options(a_pool).concurrency(2)).await;
    eventually(Duration::from_secs(15), "A to start both jobs", || async {
        (events(ledger, jobs[0], "start").await == 1 && events(ledger, jobs[1], "start").await == 1)
            .then_some(())
    })
    .await;
    (a.pool_id().to_owned(), stop_a, run_a)
}

/// Waits (at most 40 s) until every one of `finishing` is done and every
/// job left the table, or one of `running` started again.
async fn wait_until_finished_or_restarted(
    ledger: &PgPool,
    pool: &PgPool,
    running: &[i64],
    finishing: &[i64],
    what: &str,
) {
    eventually(Duration::from_secs(40), what, || async {
        let mut restarted = false;
        for &id in running {
            restarted = restarted || events(ledger, id, "start").await > 1;
        }
        let mut finished = true;
        for &id in finishing {
            finished = finished && events(ledger, id, "done").await >= 1;
        }
        let finished = finished && jobs_left(pool).await == 0;
        (restarted || finished).then_some(())
    })
    .await;
}

/// What both tests end with: A was never declared dead, `all_jobs`
/// completed, nothing is locked; then the peer and A stop, and still
/// nothing is locked.
async fn assert_a_lived_then_stop(
    ledger: &PgPool,
    pool: &PgPool,
    a_id: &str,
    all_jobs: &str,
    story: &str,
    (stop_peer, run_peer): (ShutdownHandle, Running),
    (stop_a, run_a): (ShutdownHandle, Running),
) {
    assert_eq!(
        count(
            ledger,
            "select count(*) from runs where last_error like '%stopped heartbeating%'"
        )
        .await,
        0,
        "a job ran after being recovered from A {story}"
    );
    assert!(
        registered(pool, a_id).await,
        "A's registry row was swept although A is alive {story}"
    );
    assert_eq!(jobs_left(pool).await, 0, "{all_jobs} completed {story}");
    assert_eq!(
        locks_held(pool).await,
        (0, 0),
        "nothing left locked {story}"
    );

    stop_worker("peer", stop_peer, run_peer, Duration::from_secs(30)).await;
    stop_worker("A", stop_a, run_a, Duration::from_secs(30)).await;
    assert_eq!(locks_held(pool).await, (0, 0), "nothing left locked");
}

#[tokio::test]
async fn a_task_holding_every_pool_connection_does_not_get_its_worker_declared_dead() {
    let (db, pool, utils) = migrated().await;
    let ledger = ledger(&db).await;
    let hold_ms = FAULT.as_millis() as u64;
    let hog = add_job(
        &utils,
        "hog",
        json!({"gate": "fault", "hold_ms": hold_ms}),
        JobSpec::default(),
    )
    .await;
    let steady = add_job(
        &utils,
        "steady",
        json!({"gate": "fault", "ms": hold_ms}),
        JobSpec::default(),
    )
    .await;

    // Worker A: a small pool of its own, both jobs at once.
    let (a_id, stop_a, run_a) = start_a(db.pool(A_POOL_SIZE).await, &ledger, [hog, steady]).await;
    let (_peer, stop_peer, run_peer) = start_peer(&db, &pool).await;

    // The hog takes A's pool; steady runs as long, using none of it.
    let fault_started = Instant::now();
    open_gate(&ledger, "fault").await;
    // Until both jobs finished and are gone (nothing can run them again),
    // or one of them starts a second time.
    wait_until_finished_or_restarted(
        &ledger,
        &pool,
        &[hog, steady],
        &[hog, steady],
        "both jobs to finish and be deleted, or one to start again",
    )
    .await;
    let took = fault_started.elapsed();

    let story = story_of(
        format!("(A is {a_id}; {took:?} after the fault began)"),
        &ledger,
        &pool,
    )
    .await;
    for (name, id) in [("hog", hog), ("steady", steady)] {
        assert_eq!(
            events(&ledger, id, "start").await,
            1,
            "{name} started more than once: its live worker was declared dead {story}"
        );
        assert_eq!(
            events(&ledger, id, "done").await,
            1,
            "{name} did not finish exactly once {story}"
        );
    }
    // The fault took effect: the hog's first run held the whole pool (but
    // perhaps one connection a listener keeps).
    let held: Option<String> = sqlx::query_scalar(
        "select event from runs where job_id = $1 and attempt = 1 and event like 'held %'",
    )
    .bind(hog)
    .fetch_optional(&ledger)
    .await
    .unwrap();
    let held: u32 = held
        .as_deref()
        .and_then(|e| e.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        held + 1 >= A_POOL_SIZE,
        "the hog held only {held} of A's {A_POOL_SIZE} connections {story}"
    );
    assert_a_lived_then_stop(
        &ledger,
        &pool,
        &a_id,
        "both jobs",
        &story,
        (stop_peer, run_peer),
        (stop_a, run_a),
    )
    .await;
}

/// How the application holds a running job's row lock.
#[derive(Clone, Copy, Debug)]
enum RowLock {
    /// `add_job` with the key of the running job: its retire step updates
    /// (and so locks) the running job's row.
    AddJobWithTheSameKey,
    /// `select ... for update` of the running job's row.
    SelectForUpdate,
}

async fn a_running_jobs_row_locked_by_an_application_transaction(how: RowLock) {
    let (db, pool, utils) = migrated().await;
    let ledger = ledger(&db).await;
    // Both run until well after the application's transaction ends.
    let keyed = add_job(
        &utils,
        "steady",
        json!({"gate": "finish", "ms": 0}),
        JobSpec {
            job_key: Some("k1".into()),
            ..JobSpec::default()
        },
    )
    .await;
    let unrelated = add_job(
        &utils,
        "steady",
        json!({"gate": "finish", "ms": 0}),
        JobSpec::default(),
    )
    .await;

    let (a_id, stop_a, run_a) = start_a(db.pool(20).await, &ledger, [keyed, unrelated]).await;
    let (_peer, stop_peer, run_peer) = start_peer(&db, &pool).await;

    // The application's transaction, on its own connection.
    let mut app = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = app.begin().await.unwrap();
    let fault_started = Instant::now();
    let replacement: Option<i64> = match how {
        RowLock::AddJobWithTheSameKey => Some(
            sqlx::query_scalar(
                "select id from graphile_worker.add_job('steady', '{\"ms\": 50}'::json, \
                 job_key := 'k1')",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap(),
        ),
        RowLock::SelectForUpdate => {
            sqlx::query("select 1 from graphile_worker._private_jobs where id = $1 for update")
                .bind(keyed)
                .execute(&mut *tx)
                .await
                .unwrap();
            None
        }
    };
    if let Some(id) = replacement {
        assert_ne!(
            id, keyed,
            "add_job retired the running job and added a new one"
        );
    }
    // The fault: the row stays locked for several stale thresholds.
    tokio::time::sleep(FAULT).await;
    tx.commit().await.unwrap();
    let held_for = fault_started.elapsed();
    // Give a sweep that waited on the lock time to land before the jobs end.
    tokio::time::sleep(THRESHOLD).await;
    open_gate(&ledger, "finish").await;

    // Until every job finished and is gone, or the running ones started
    // again.
    let finishing: Vec<i64> = [keyed, unrelated].into_iter().chain(replacement).collect();
    wait_until_finished_or_restarted(
        &ledger,
        &pool,
        &[keyed, unrelated],
        &finishing,
        "the jobs to finish and be deleted, or to start again",
    )
    .await;

    let story = story_of(
        format!("({how:?}; A is {a_id}; row locked for {held_for:?})"),
        &ledger,
        &pool,
    )
    .await;
    assert_eq!(
        events(&ledger, unrelated, "start").await,
        1,
        "the unrelated job U started again: its live worker was declared dead {story}"
    );
    assert_eq!(
        events(&ledger, keyed, "start").await,
        1,
        "the keyed job K started again {story}"
    );
    for (name, id) in [("K", keyed), ("U", unrelated)] {
        assert_eq!(
            events(&ledger, id, "done").await,
            1,
            "{name} did not finish exactly once {story}"
        );
    }
    if let Some(id) = replacement {
        assert_eq!(
            events(&ledger, id, "start").await,
            1,
            "the job the application added for k1 ran once {story}"
        );
    }
    assert_a_lived_then_stop(
        &ledger,
        &pool,
        &a_id,
        "every job",
        &story,
        (stop_peer, run_peer),
        (stop_a, run_a),
    )
    .await;
}

#[tokio::test]
async fn an_application_transaction_holding_a_running_jobs_row_lock_does_not_get_its_worker_declared_dead()
 {
    a_running_jobs_row_locked_by_an_application_transaction(RowLock::AddJobWithTheSameKey).await;
}

#[tokio::test]
async fn a_select_for_update_on_a_running_jobs_row_does_not_get_its_worker_declared_dead() {
    a_running_jobs_row_locked_by_an_application_transaction(RowLock::SelectForUpdate).await;
}
