//! Workers and utilities through a real PgBouncer (Debian's `pgbouncer`) in
//! transaction pooling mode, with fewer server connections than clients:
//! with `no_prepared_statements` jobs are added, run once each, retried,
//! scheduled by cron and recovered from a dead worker, and nothing stays
//! locked. The assertions read the database directly.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    count, db_now, eventually, last_heartbeat, locks_left, migrated, run_in_background,
    stop_worker, wait_for_listener,
};
use graphile_worker::{JobSpec, NewJob, TaskError, Worker, WorkerOptions, WorkerUtils};
use graphile_worker_dev::pgbouncer::PgBouncer;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// How many times each job ran, by job id, and the attempt numbers seen.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<HashMap<i64, Vec<i16>>>>);

impl Ledger {
    fn record(&self, id: i64, attempt: i16) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(attempt);
    }

    fn runs(&self) -> HashMap<i64, Vec<i16>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn total(&self) -> usize {
        self.runs().values().map(Vec::len).sum()
    }
}

/// A pool through PgBouncer, for the utilities (sqlx's default
/// `extra_float_digits` would be refused by this PgBouncer).
async fn bouncer_pool(bouncer: &PgBouncer) -> PgPool {
    let options: PgConnectOptions = bouncer.url().parse().expect("bouncer URL");
    PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options.extra_float_digits(None))
        .await
        .unwrap_or_else(|e| panic!("connect through pgbouncer: {e}\n{}", bouncer.log()))
}

/// A worker through `bouncer` without prepared statements, running
/// `count` (records and succeeds), `flaky` (fails its first attempt) and
/// `doomed` (always fails), polling every 100 ms.
fn bouncer_worker(bouncer: &PgBouncer, ledger: &Ledger) -> WorkerOptions {
    let (a, b, c) = (ledger.clone(), ledger.clone(), ledger.clone());
    Worker::options()
        .database_url(bouncer.url())
        .no_prepared_statements()
        .max_pool_size(12)
        .concurrency(8)
        .poll_interval(Duration::from_millis(100))
        .handle_signals(false)
        .register_fn("count", move |ctx| {
            let ledger = a.clone();
            async move {
                ledger.record(ctx.job_id(), ctx.attempts());
                Ok::<(), TaskError>(())
            }
        })
        .register_fn("flaky", move |ctx| {
            let ledger = b.clone();
            async move {
                ledger.record(ctx.job_id(), ctx.attempts());
                if ctx.attempts() == 1 {
                    return Err(TaskError::new("first attempt fails"));
                }
                Ok(())
            }
        })
        .register_fn("doomed", move |ctx| {
            let ledger = c.clone();
            async move {
                ledger.record(ctx.job_id(), ctx.attempts());
                Err(TaskError::new("doomed"))
            }
        })
}

/// Adds a `count` job and waits (10 s at most) until the worker has run it;
/// returns its id.
async fn add_and_wait_for_its_run(utils: &WorkerUtils, ledger: &Ledger) -> i64 {
    let job = utils
        .add_raw_job("count", json!({}), JobSpec::default())
        .await
        .expect("add");
    eventually(Duration::from_secs(10), "the job to run", || async {
        ledger.runs().contains_key(&job.id).then_some(())
    })
    .await;
    job.id
}

async fn jobs_left(pool: &PgPool) -> i64 {
    count(pool, "select count(*) from graphile_worker.jobs").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_added_through_pgbouncer_each_run_once_and_nothing_stays_locked() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    let utils =
        WorkerUtils::new(bouncer_pool(&bouncer).await, "graphile_worker").no_prepared_statements();

    let mut ids = Vec::new();
    for n in 0..60 {
        let job = utils
            .add_raw_job("count", json!({ "n": n }), JobSpec::default())
            .await
            .unwrap_or_else(|e| panic!("add a job through pgbouncer: {e}\n{}", bouncer.log()));
        ids.push(job.id);
    }
    let batch: Vec<NewJob> = (0..100)
        .map(|n| NewJob::new("count", json!({ "batch": n })))
        .collect();
    ids.extend(
        utils
            .add_raw_jobs(&batch)
            .await
            .expect("add a batch")
            .iter()
            .map(|j| j.id),
    );
    // In the caller's transaction, through PgBouncer: it must be given one.
    let mut tx = utils.pool().begin().await.expect("begin through pgbouncer");
    let in_tx = utils
        .add_raw_job_in(&mut *tx, "count", json!({ "in": "tx" }), JobSpec::default())
        .await
        .expect("add a job in a transaction");
    tx.commit().await.expect("commit");
    ids.push(in_tx.id);
    // A keyed job replaced twice stays one job.
    let keyed = JobSpec {
        job_key: Some("only-once".into()),
        ..Default::default()
    };
    for n in 0..3 {
        utils
            .add_raw_job("count", json!({ "keyed": n }), keyed.clone())
            .await
            .expect("add a keyed job");
    }
    assert_eq!(jobs_left(&pool).await, 162);

    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .init()
        .await
        .unwrap_or_else(|e| panic!("start a worker through pgbouncer: {e}\n{}", bouncer.log()));
    let (handle, running) = run_in_background(&worker);
    eventually(Duration::from_secs(60), "every job to finish", || async {
        (jobs_left(&pool).await == 0).then_some(())
    })
    .await;
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;

    let runs = ledger.runs();
    assert_eq!(runs.len(), 162, "jobs that ran");
    for id in &ids {
        assert_eq!(runs.get(id).map(Vec::len), Some(1), "runs of job {id}");
    }
    assert!(runs.values().all(|attempts| attempts == &[1]));
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_through_pgbouncer_are_retried_and_recorded() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    let utils =
        WorkerUtils::new(bouncer_pool(&bouncer).await, "graphile_worker").no_prepared_statements();
    let flaky = utils
        .add_raw_job("flaky", json!({}), JobSpec::default())
        .await
        .expect("add flaky");
    let doomed = utils
        .add_raw_job(
            "doomed",
            json!({}),
            JobSpec {
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("add doomed");

    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .init()
        .await
        .expect("start");
    let (handle, running) = run_in_background(&worker);
    // The first retry waits e^1 ≈ 2.7 s.
    eventually(
        Duration::from_secs(30),
        "the flaky job to succeed",
        || async {
            (count(
                &pool,
                &format!(
                    "select count(*) from graphile_worker.jobs where id = {}",
                    flaky.id
                ),
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the doomed job to fail",
        || async { ledger.runs().contains_key(&doomed.id).then_some(()) },
    )
    .await;
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;

    assert_eq!(ledger.runs()[&flaky.id], vec![1, 2]);
    assert_eq!(ledger.runs()[&doomed.id], vec![1]);
    let (attempts, last_error, locked): (i16, Option<String>, bool) = sqlx::query_as(
        "select attempts, last_error, locked_at is not null from graphile_worker.jobs where id = $1",
    )
    .bind(doomed.id)
    .fetch_one(&pool)
    .await
    .expect("read the doomed job");
    assert_eq!((attempts, locked), (1, false));
    assert!(last_error.is_some_and(|e| e.contains("doomed")));
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_through_pgbouncer_backfills_and_runs_its_jobs() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    // Known since 10 minutes ago and last run then: the worker backfills
    // the missed minutes its `fill` allows (3) and records the newest.
    sqlx::query(
        "insert into graphile_worker._private_known_crontabs (identifier, known_since, last_execution) \
         values ('tick', now() - interval '10 minutes', date_trunc('minute', now()) - interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .expect("plant the known crontab");

    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .crontab("* * * * * count ?id=tick&fill=3m")
        .init()
        .await
        .expect("start");
    let (handle, running) = run_in_background(&worker);
    eventually(
        Duration::from_secs(30),
        "the backfilled jobs to run",
        || async { (ledger.total() >= 3 && jobs_left(&pool).await == 0).then_some(()) },
    )
    .await;
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;

    assert!(ledger.runs().values().all(|runs| runs.len() == 1));
    let recent: bool = sqlx::query_scalar(
        "select last_execution > now() - interval '2 minutes' \
         from graphile_worker._private_known_crontabs where identifier = 'tick'",
    )
    .fetch_one(&pool)
    .await
    .expect("read the known crontab");
    assert!(recent, "last_execution was not advanced");
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_through_pgbouncer_beats_and_recovers_a_dead_workers_job() {
    let (db, pool, utils) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    // A worker that died an hour ago, holding a job.
    let job = utils
        .add_raw_job("count", json!({}), JobSpec::default())
        .await
        .expect("add");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "insert into graphile_worker._private_workers (id, last_heartbeat_at) \
         values ('dead-worker', now() - interval '1 hour')",
    )
    .execute(&mut *tx)
    .await
    .expect("plant the dead worker");
    sqlx::query(
        "update graphile_worker._private_jobs set attempts = 1, locked_by = 'dead-worker', \
         locked_at = now() where id = $1",
    )
    .bind(job.id)
    .execute(&mut *tx)
    .await
    .expect("lock its job");
    tx.commit().await.expect("commit");

    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .heartbeat_interval(Duration::from_millis(200))
        .stale_worker_threshold(Duration::from_millis(1500))
        .recovery_sweep_interval(Duration::from_millis(250))
        .init()
        .await
        .expect("start");
    let (handle, running) = run_in_background(&worker);
    eventually(
        Duration::from_secs(30),
        "the dead worker's job to run",
        || async { ledger.runs().contains_key(&job.id).then_some(()) },
    )
    .await;
    // Its own registration and heartbeats went through PgBouncer.
    let beats: i64 = sqlx::query_scalar(
        "select count(*) from graphile_worker._private_workers \
         where id = $1 and last_heartbeat_at > now() - interval '5 seconds'",
    )
    .bind(worker.pool_id())
    .fetch_one(&pool)
    .await
    .expect("read the registry");
    assert_eq!(beats, 1);
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;

    // The dead worker's attempt counts, as in Node.
    assert_eq!(
        ledger.runs()[&job.id],
        vec![2],
        "the recovered job ran once"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker._private_workers"
        )
        .await,
        0,
        "the dead worker is forgotten, the stopped one deregistered"
    );
    assert_eq!(jobs_left(&pool).await, 0);
    // The worker has stopped: its outcomes are written.
    assert_eq!(locks_left(&pool).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_listen_url_new_jobs_start_without_waiting_for_a_poll() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    let utils =
        WorkerUtils::new(bouncer_pool(&bouncer).await, "graphile_worker").no_prepared_statements();
    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .poll_interval(Duration::from_secs(3600))
        .listen_url(&db.url)
        .init()
        .await
        .expect("start");
    let (handle, running) = run_in_background(&worker);
    wait_for_listener(&pool).await;
    // With an hour between polls, only the notification can start it.
    let job = add_and_wait_for_its_run(&utils, &ledger).await;
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;
    assert_eq!(ledger.runs()[&job], vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_listen_url_heartbeats_go_on_while_pgbouncers_connections_are_all_held() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .listen_url(&db.url)
        .heartbeat_interval(Duration::from_millis(200))
        .init()
        .await
        .expect("start");
    let (handle, running) = run_in_background(&worker);
    let last_beat = || last_heartbeat(&pool, worker.pool_id());
    eventually(
        Duration::from_secs(10),
        "the worker to register",
        || async { last_beat().await.map(|_| ()) },
    )
    .await;

    // An application holds every server connection PgBouncer has (a
    // transaction each): nothing else gets through it until they end.
    let mut held = Vec::new();
    for _ in 0..graphile_worker_dev::pgbouncer::SERVER_CONNECTIONS {
        let options: PgConnectOptions = bouncer.url().parse().expect("bouncer URL");
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(
            &options.extra_float_digits(None),
        )
        .await
        .expect("connect through pgbouncer");
        sqlx::query("begin")
            .execute(&mut conn)
            .await
            .expect("begin");
        sqlx::query("select 1")
            .execute(&mut conn)
            .await
            .expect("hold");
        held.push(conn);
    }
    let since = db_now(&pool).await;
    // Beats go over the listen URL's direct connection, so they go on.
    eventually(
        Duration::from_secs(10),
        "a heartbeat while PgBouncer is saturated",
        || async {
            last_beat()
                .await
                .filter(|at| *at > since + chrono::Duration::milliseconds(400))
        },
    )
    .await;

    for mut conn in held {
        sqlx::query("rollback")
            .execute(&mut conn)
            .await
            .expect("release");
    }
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_unreachable_listen_url_heartbeats_go_through_pgbouncer_and_jobs_run() {
    let (db, pool, _) = migrated().await;
    let bouncer = PgBouncer::start(&db.url);
    let utils =
        WorkerUtils::new(bouncer_pool(&bouncer).await, "graphile_worker").no_prepared_statements();
    // Nothing listens on this port: the connection is refused at once.
    let refused = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = socket.local_addr().expect("its address").port();
        drop(socket);
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    };
    let ledger = Ledger::default();
    let worker = bouncer_worker(&bouncer, &ledger)
        .listen_url(&refused)
        .heartbeat_interval(Duration::from_millis(200))
        .stale_worker_threshold(Duration::from_millis(1500))
        .init()
        .await
        .expect("start");
    let started = db_now(&pool).await;
    let (handle, running) = run_in_background(&worker);
    // Beats keep landing past the stale threshold, so the worker is not
    // taken for dead and goes on claiming.
    eventually(
        Duration::from_secs(10),
        "heartbeats past the stale threshold",
        || async {
            last_heartbeat(&pool, worker.pool_id())
                .await
                .filter(|at| *at > started + chrono::Duration::milliseconds(2000))
        },
    )
    .await;
    let job = add_and_wait_for_its_run(&utils, &ledger).await;
    stop_worker("bouncer worker", handle, running, Duration::from_secs(10)).await;
    assert_eq!(ledger.runs()[&job], vec![1]);
}
