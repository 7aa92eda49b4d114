//! The worker engine against a real PostgreSQL: claiming, completing,
//! failing, queues, flags, priorities, shutdown, and the listener.

mod common;

use std::time::Duration;

use common::{
    Witness, add_job, attempts_and_lock, count, db_now, eventually, migrated, migrated_with_runs,
    note, refuse_registry, run_in_background, run_sql, shut_down, start, stop_refusing,
    stop_worker, tags, wait_for_count, wait_for_listener, wait_for_refusals,
};
use graphile_worker::{JobContext, JobSpec, NewJob, Task, TaskError, Worker, WorkerUtils};
use graphile_worker_dev::TestDatabase;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

#[derive(Serialize, Deserialize)]
struct Fail {}

impl Task for Fail {
    const IDENTIFIER: &'static str = "fail";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("boom: the \"mail\" server said no"))
    }
}

#[derive(Serialize, Deserialize)]
struct Explode {}

impl Task for Explode {
    const IDENTIFIER: &'static str = "explode";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        panic!("kaboom")
    }
}

/// Holds its job until the worker interrupts it.
#[derive(Serialize, Deserialize)]
struct Hang {}

impl Task for Hang {
    const IDENTIFIER: &'static str = "hang";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "hang-started").await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// Serial-queue probe: fails the job if another job of its queue runs now.
#[derive(Serialize, Deserialize)]
struct Serial {
    n: i32,
}

impl Task for Serial {
    const IDENTIFIER: &'static str = "serial";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        let pool = ctx.utils().pool();
        let err = |e: sqlx::Error| TaskError::new(e.to_string());
        let overlapping: i64 = sqlx::query_scalar(
            "update serial_state set running = running + 1 returning running - 1",
        )
        .fetch_one(pool)
        .await
        .map_err(err)?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        sqlx::query("insert into runs (tag, job_id, attempts) values ($1, $2, $3)")
            .bind(format!("serial-{}", self.n))
            .bind(ctx.job_id())
            .bind(overlapping as i16)
            .execute(pool)
            .await
            .map_err(err)?;
        sqlx::query("update serial_state set running = running - 1")
            .execute(pool)
            .await
            .map_err(err)?;
        Ok(())
    }
}

/// A fresh database with the `runs` ledger and the state [`Serial`] keeps.
async fn setup() -> (TestDatabase, PgPool, WorkerUtils) {
    let (db, pool, utils) = migrated_with_runs().await;
    run_sql(
        &pool,
        "create table serial_state (running bigint not null); insert into serial_state values (0);",
    )
    .await;
    (db, pool, utils)
}

/// The shared worker ([`common::worker`]) with this file's tasks too.
fn worker(pool: &PgPool) -> graphile_worker::WorkerOptions {
    common::worker(pool)
        .register::<Fail>()
        .register::<Explode>()
        .register::<Hang>()
        .register::<Serial>()
}

/// Adds a `record` job that records `tag`, returning its id.
async fn add_record(utils: &WorkerUtils, tag: &str, spec: JobSpec) -> i64 {
    add_job(utils, "record", json!({ "tag": tag }), spec).await
}

/// Begins a transaction and adds, in it, a `record` job for `tag`.
async fn record_in_a_transaction(
    pool: &PgPool,
    utils: &WorkerUtils,
    tag: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    utils
        .add_raw_job_in(
            &mut *tx,
            "record",
            json!({ "tag": tag }),
            JobSpec::default(),
        )
        .await
        .unwrap();
    tx
}

/// Job `id`'s attempts, whether it is locked, and its last error.
async fn attempts_lock_and_error(pool: &PgPool, id: i64) -> (i16, bool, String) {
    sqlx::query_as(
        "select attempts, locked_at is not null, last_error from graphile_worker.jobs \
         where id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until a `hang` job started.
async fn wait_for_hang_to_start(pool: &PgPool) {
    wait_for_count(
        pool,
        Duration::from_secs(10),
        "the job to start",
        "select count(*) from runs where tag = 'hang-started'",
        |n| n == 1,
    )
    .await;
}

#[tokio::test]
async fn runs_jobs_once_and_deletes_them() {
    let (_db, pool, utils) = setup().await;
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("record", json!({"tag": format!("t{i}")})))
        .collect();
    utils.add_raw_jobs(&jobs).await.unwrap();
    let w = worker(&pool).concurrency(4).init().await.unwrap();
    w.run_once().await.unwrap();
    assert_eq!(count(&pool, "select count(*) from runs").await, 50);
    assert_eq!(
        count(&pool, "select count(distinct tag) from runs").await,
        50
    );
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}

#[tokio::test]
async fn failure_records_message_and_exact_backoff() {
    let (_db, pool, utils) = setup().await;
    let job = add_job(&utils, "fail", json!({}), JobSpec::default()).await;
    let w = worker(&pool).init().await.unwrap();
    let before = db_now(&pool).await;
    w.run_once().await.unwrap();
    let after = db_now(&pool).await;
    let (attempts, last_error, run_at, locked_by): (
        i16,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        Option<String>,
    ) = sqlx::query_as(
        "select attempts, last_error, run_at, locked_by from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(
        last_error.as_deref(),
        Some("boom: the \"mail\" server said no")
    );
    assert_eq!(locked_by, None);
    let delay = chrono::Duration::milliseconds(2718);
    assert!(
        run_at >= before + delay,
        "run_at {run_at} before {before} + 2.718s"
    );
    assert!(run_at <= after + delay + chrono::Duration::milliseconds(5));

    // Second failure: +7.389 s from then.
    common::set_job(&pool, job, "run_at = now()").await;
    let before = db_now(&pool).await;
    w.run_once().await.unwrap();
    let (attempts, run_at): (i16, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select attempts, run_at from graphile_worker.jobs where id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2);
    assert!(run_at >= before + chrono::Duration::milliseconds(7389));
    assert!(run_at <= before + chrono::Duration::milliseconds(7389 + 2000));
}

#[tokio::test]
async fn panics_and_bad_payloads_fail_the_job_not_the_worker() {
    let (_db, pool, utils) = setup().await;
    let boom = add_job(&utils, "explode", json!({}), JobSpec::default()).await;
    let bad = add_job(&utils, "record", json!({"tag": 42}), JobSpec::default()).await;
    add_record(&utils, "fine", JobSpec::default()).await;
    let w = worker(&pool).concurrency(2).init().await.unwrap();
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["fine"]);
    let error_of = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "select last_error from graphile_worker.jobs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .unwrap_or_default()
        }
    };
    let panicked = error_of(boom).await;
    assert!(
        panicked.starts_with("task panicked at tests/worker_engine.rs:")
            && panicked.ends_with(": kaboom"),
        "{panicked}"
    );
    let bad_error = error_of(bad).await;
    assert!(
        bad_error.starts_with(
            "could not decode the payload for task `record`: invalid type: integer `42`"
        ),
        "{bad_error}"
    );
}

#[tokio::test]
async fn an_unreadable_claimed_row_fails_its_job_and_the_rest_run() {
    let (_db, pool, _utils) = setup().await;
    // JSON nested deeper than serde_json reads (128 levels): PostgreSQL
    // stores it, the worker cannot decode it.
    let deep: i64 = sqlx::query_scalar(
        "select id from graphile_worker.add_job('record', \
           (repeat('[', 200) || repeat(']', 200))::json)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // A run_at of -infinity is outside chrono's range: it is read as the
    // earliest time chrono has, and the job runs.
    sqlx::query(
        "select graphile_worker.add_job('record', '{\"tag\": \"ancient\"}', \
           run_at => '-infinity')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("select graphile_worker.add_job('record', '{\"tag\": \"fine\"}')")
        .execute(&pool)
        .await
        .unwrap();
    let w = worker(&pool).concurrency(4).init().await.unwrap();
    w.run_once().await.unwrap();
    let mut ran = tags(&pool).await;
    ran.sort();
    assert_eq!(ran, vec!["ancient", "fine"]);
    let (attempts, locked, error) = attempts_lock_and_error(&pool, deep).await;
    assert_eq!((attempts, locked), (1, false));
    assert!(
        error.starts_with("the job could not be read from the database:")
            && error.contains("recursion limit"),
        "{error}"
    );
}

/// A task whose payload decoder panics, before the task's future exists.
struct DecoderPanics;

impl Serialize for DecoderPanics {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for DecoderPanics {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("the decoder gave up")
    }
}

impl Task for DecoderPanics {
    const IDENTIFIER: &'static str = "decoder_panics";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_while_decoding_the_payload_fails_the_job_and_releases_it() {
    let (_db, pool, utils) = setup().await;
    let doomed = add_job(&utils, "decoder_panics", json!({}), JobSpec::default()).await;
    add_record(&utils, "after", JobSpec::default()).await;
    let w = worker(&pool)
        .register::<DecoderPanics>()
        .concurrency(1)
        .init()
        .await
        .unwrap();
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["after"]);
    let (attempts, locked, error) = attempts_lock_and_error(&pool, doomed).await;
    assert_eq!((attempts, locked), (1, false));
    assert!(
        error.starts_with("task panicked at tests/worker_engine.rs:")
            && error.ends_with(": the decoder gave up"),
        "{error}"
    );
}

/// Named queues let one job through per claim; a claim that scanned a full
/// batch of one queue's backlog must not read as "nothing else to do".
#[tokio::test]
async fn a_backlog_in_one_named_queue_does_not_hold_back_other_jobs() {
    let (_db, pool, utils) = setup().await;
    let queued: Vec<NewJob> = (0..40)
        .map(|n| NewJob {
            spec: JobSpec {
                queue_name: Some("backlog".into()),
                priority: Some(-1),
                ..Default::default()
            },
            ..NewJob::new("serial", json!({"n": n}))
        })
        .collect();
    utils.add_raw_jobs(&queued).await.unwrap();
    let free: Vec<NewJob> = (0..20)
        .map(|n| NewJob::new("record", json!({"tag": format!("free-{n}")})))
        .collect();
    utils.add_raw_jobs(&free).await.unwrap();
    // Without a local queue each claim asks for the free slots only, so it
    // scans just the queue's first jobs.
    let w = worker(&pool)
        .concurrency(4)
        .local_queue_size(0)
        .init()
        .await
        .unwrap();
    w.run_once().await.unwrap();
    assert_eq!(count(&pool, "select count(*) from runs").await, 60);
    // The free jobs run beside the queue (each queued job takes 5 ms or
    // more), not after it.
    let queued_after_last_free = count(
        &pool,
        "select count(*) from runs where tag like 'serial-%' \
         and id > (select max(id) from runs where tag like 'free-%')",
    )
    .await;
    assert!(
        queued_after_last_free >= 20,
        "only {queued_after_last_free} of 40 queued jobs ran after the last free one"
    );
}

/// Dropping the future of `run()` (a `select!`, a timeout) stops the worker
/// as cancellation should: its running job is interrupted and handed back
/// with the attempt refunded, and nothing more is claimed.
#[tokio::test]
async fn dropping_the_run_future_stops_the_worker_and_hands_its_job_back() {
    let (_db, pool, utils) = setup().await;
    let hung = add_job(&utils, "hang", json!({}), JobSpec::default()).await;
    let w = worker(&pool)
        .concurrency(2)
        .poll_interval(Duration::from_millis(50))
        .init()
        .await
        .unwrap();
    let started = wait_for_hang_to_start(&pool);
    tokio::select! {
        result = w.run() => panic!("run() ended on its own: {result:?}"),
        () = started => {}
    }
    // The run() future is gone.
    eventually(
        Duration::from_secs(10),
        "the interrupted job to be handed back",
        || async { (attempts_and_lock(&pool, hung).await == (0, false)).then_some(()) },
    )
    .await;
    let mut witness = Witness::start(&pool).await;
    let late = add_record(&utils, "late", JobSpec::default()).await;
    // Jobs announced after `late` reached the witness, in this process,
    // five times in a row: a live dispatch loop (listening, and polling
    // every 50 ms) would have been told about `late` first, and run it.
    witness.confirm(5).await;
    assert_eq!(tags(&pool).await, vec!["hang-started"]);
    assert_eq!(
        attempts_and_lock(&pool, late).await,
        (0, false),
        "`late` was never claimed"
    );
    witness.stop().await;
    // It was there to be taken: a live worker runs it (and only it: `hang`
    // is left alone).
    worker(&pool)
        .only(&["record"])
        .init()
        .await
        .unwrap()
        .run_once()
        .await
        .unwrap();
    assert_eq!(tags(&pool).await, vec!["hang-started", "late"]);
}

#[tokio::test]
async fn named_queue_runs_serially_in_order_under_eight_slots() {
    let (_db, pool, utils) = setup().await;
    for n in 0..30 {
        add_job(
            &utils,
            "serial",
            json!({"n": n}),
            JobSpec {
                queue_name: Some("serial-q".into()),
                run_at: Some(chrono::Utc::now() - chrono::Duration::seconds(100 - n)),
                ..Default::default()
            },
        )
        .await;
    }
    // Parallel jobs to fill the other slots.
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| NewJob::new("record", json!({"tag": format!("p{i}")})))
        .collect();
    utils.add_raw_jobs(&jobs).await.unwrap();
    let w = worker(&pool).concurrency(8).init().await.unwrap();
    w.run_once().await.unwrap();
    let serial: Vec<(String, i16)> =
        sqlx::query_as("select tag, attempts from runs where tag like 'serial-%' order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<String> = (0..30).map(|n| format!("serial-{n}")).collect();
    assert_eq!(
        serial.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        serial.iter().all(|(_, overlapping)| *overlapping == 0),
        "two jobs of one named queue ran at once: {serial:?}"
    );
    assert_eq!(count(&pool, "select count(*) from runs").await, 70);
}

#[tokio::test]
async fn forbidden_flags_are_skipped() {
    let (_db, pool, utils) = setup().await;
    let flagged = |flag: &str| JobSpec {
        flags: Some(vec![flag.into()]),
        ..Default::default()
    };
    add_record(&utils, "flagged", flagged("slow")).await;
    add_record(&utils, "other-flag", flagged("fast")).await;
    add_record(&utils, "plain", JobSpec::default()).await;
    let w = worker(&pool)
        .forbidden_flags(&["slow"])
        .init()
        .await
        .unwrap();
    w.run_once().await.unwrap();
    let mut seen = tags(&pool).await;
    seen.sort();
    assert_eq!(seen, vec!["other-flag", "plain"]);
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker.jobs where locked_at is null"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn priority_then_run_at_order() {
    let (_db, pool, utils) = setup().await;
    let base = chrono::Utc::now() - chrono::Duration::seconds(60);
    for (tag, priority, offset) in [("p5", 5, 0), ("p-1b", -1, 2), ("p0", 0, 0), ("p-1a", -1, 1)] {
        let spec = JobSpec {
            priority: Some(priority),
            run_at: Some(base + chrono::Duration::seconds(offset)),
            ..Default::default()
        };
        add_record(&utils, tag, spec).await;
    }
    let w = worker(&pool)
        .concurrency(1)
        .local_queue_size(0)
        .init()
        .await
        .unwrap();
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["p-1a", "p-1b", "p0", "p5"]);
}

#[tokio::test]
async fn shutdown_interrupts_a_job_past_the_grace_period_without_losing_an_attempt() {
    let (_db, pool, utils) = setup().await;
    let job = add_job(&utils, "hang", json!({}), JobSpec::default()).await;
    let (_, handle, running) =
        start(worker(&pool).shutdown_grace_period(Duration::from_millis(300))).await;
    wait_for_hang_to_start(&pool).await;
    // run() returns after the grace period.
    stop_worker("the worker", handle, running, Duration::from_secs(10)).await;
    let (attempts, last_error, locked_by): (i16, Option<String>, Option<String>) = sqlx::query_as(
        "select attempts, last_error, locked_by from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    assert_eq!(locked_by, None);
    assert!(
        last_error
            .unwrap_or_default()
            .contains("worker shutting down"),
    );
}

/// Backends of this database whose last statement was a LISTEN.
async fn listener_pids(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "select coalesce(array_agg(pid order by pid), '{}') from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%' \
           and pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn listener_reconnects_after_its_connection_is_killed() {
    let (_db, pool, utils) = setup().await;
    // Polling is too slow to matter, and there are no heartbeats (each one
    // also wakes the dispatcher to claim): only a notification can start a
    // job.
    let (_, handle, running) = start(
        worker(&pool)
            .poll_interval(Duration::from_secs(3600))
            .recovery(false),
    )
    .await;
    let old = eventually(Duration::from_secs(10), "the listener", || async {
        let pids = listener_pids(&pool).await;
        (!pids.is_empty()).then_some(pids)
    })
    .await;
    // One job after another, each only once the previous one ran: the
    // worker is idle when each is added, and only its notification can
    // wake it.
    let run_one = |tag: String| {
        let utils = utils.clone();
        let pool = pool.clone();
        async move {
            add_record(&utils, &tag, JobSpec::default()).await;
            eventually(
                Duration::from_secs(10),
                &format!("the job {tag}"),
                || async { tags(&pool).await.contains(&tag).then_some(()) },
            )
            .await;
        }
    };
    run_one("before".into()).await;

    sqlx::query("select pg_terminate_backend(pid) from unnest($1::int[]) as pid")
        .bind(&old)
        .execute(&pool)
        .await
        .unwrap();
    // The killed backend is gone (not merely still listed while it exits),
    // and another one listens.
    let new = eventually(
        Duration::from_secs(20),
        "the old listener to go and a new one to listen",
        || async {
            let gone = count(
                &pool,
                &format!(
                    "select count(*) from pg_stat_activity where pid in ({})",
                    old.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
                ),
            )
            .await
                == 0;
            let pids = listener_pids(&pool).await;
            (gone && !pids.is_empty()).then_some(pids)
        },
    )
    .await;
    assert!(new.iter().all(|pid| !old.contains(pid)), "{old:?} {new:?}");
    // The new listener works: after a reconnect the worker looks once for
    // what it missed, which may find the first job, but not the ones after.
    for n in 0..3 {
        run_one(format!("after-{n}")).await;
    }
    assert_eq!(
        tags(&pool).await,
        vec!["before", "after-0", "after-1", "after-2"]
    );
    shut_down(handle, running).await;
}

#[tokio::test]
async fn enqueue_in_a_rolled_back_transaction_leaves_nothing() {
    let (_db, pool, utils) = setup().await;
    let tx = record_in_a_transaction(&pool, &utils, "rolled back").await;
    tx.rollback().await.unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );

    // A committed one wakes a running worker through its notification.
    let (_, handle, running) = start(worker(&pool).poll_interval(Duration::from_secs(3600))).await;
    wait_for_listener(&pool).await;
    let tx = record_in_a_transaction(&pool, &utils, "committed").await;
    tx.commit().await.unwrap();
    wait_for_count(
        &pool,
        Duration::from_secs(10),
        "the committed job",
        "select count(*) from runs",
        |n| n == 1,
    )
    .await;
    shut_down(handle, running).await;
    assert_eq!(tags(&pool).await, vec!["committed"]);
}

#[tokio::test]
async fn configuration_mistakes_are_errors() {
    let (_db, pool, _utils) = migrated().await;
    let err = worker(&pool).concurrency(0).init().await.unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
    let err = Worker::options()
        .pg_pool(pool.clone())
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, graphile_worker::Error::NoTasks), "{err}");
    let err = Worker::options()
        .pg_pool(pool.clone())
        .register::<common::Record>()
        .register::<common::Record>()
        .init()
        .await
        .unwrap_err();
    assert!(
        matches!(err, graphile_worker::Error::DuplicateTask { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("worker_engine.rs"), "{err}");
    // Durations that would overflow a clock are refused, not a panic later.
    let err = worker(&pool)
        .poll_interval(Duration::MAX)
        .init()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid worker configuration: poll_interval ({:?}) is too long; give at most 365 days",
            Duration::MAX
        )
    );
    let err = worker(&pool)
        .recovery_sweep_interval(Duration::from_secs(u64::MAX / 2))
        .init()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recovery_sweep_interval"), "{err}");
}

/// After a run ends, the same worker runs again; two runs at once are
/// refused with a clear error.
#[tokio::test]
async fn a_worker_runs_again_after_a_run_ends_and_never_twice_at_once() {
    let (_db, pool, utils) = setup().await;
    let (w, handle, running) = start(worker(&pool).poll_interval(Duration::from_millis(100))).await;
    add_record(&utils, "first", JobSpec::default()).await;
    eventually(Duration::from_secs(10), "the first job", || async {
        tags(&pool)
            .await
            .contains(&"first".to_owned())
            .then_some(())
    })
    .await;
    let err = w.run_once().await.unwrap_err();
    assert!(
        err.to_string().contains("this worker is already running"),
        "{err}"
    );
    shut_down(handle, running).await;

    add_record(&utils, "second", JobSpec::default()).await;
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["first", "second"]);
    // And run() too, after run_once.
    let (handle, running) = run_in_background(&w);
    add_record(&utils, "third", JobSpec::default()).await;
    eventually(Duration::from_secs(10), "the third job", || async {
        (tags(&pool).await.len() == 3).then_some(())
    })
    .await;
    shut_down(handle, running).await;
}

/// A worker whose registration is refused claims nothing until it gets
/// through (recovery only takes jobs from registered workers, so a job that
/// killed an unregistered worker would stay locked for 4 hours).
#[tokio::test]
async fn no_job_is_claimed_before_the_worker_is_registered() {
    let (_db, pool, utils) = setup().await;
    refuse_registry(&pool, "refused_registrations", "insert").await;
    add_record(&utils, "early", JobSpec::default()).await;
    let (_, handle, running) = start(
        worker(&pool)
            .poll_interval(Duration::from_millis(50))
            .heartbeat_interval(Duration::from_millis(50))
            .stale_worker_threshold(Duration::from_millis(1000)),
    )
    .await;
    // Several refused registrations span many poll intervals: a worker that
    // claimed regardless would have run the job by then.
    wait_for_refusals(&pool, "refused_registrations", |n| n >= 4).await;
    assert!(tags(&pool).await.is_empty(), "claimed before registering");
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker._private_jobs where locked_by is not null"
        )
        .await,
        0
    );
    stop_refusing(&pool, "refused_registrations").await;
    eventually(
        Duration::from_secs(10),
        "the job after registering",
        || async { (tags(&pool).await == vec!["early".to_owned()]).then_some(()) },
    )
    .await;
    shut_down(handle, running).await;
}

/// Tells the test the moment a job starts (used by one test only).
static PINGS: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<i64>>> =
    std::sync::Mutex::new(None);

#[derive(Serialize, Deserialize)]
struct Ping {}

impl Task for Ping {
    const IDENTIFIER: &'static str = "ping";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        if let Some(tx) = PINGS.lock().unwrap().as_ref() {
            let _ = tx.send(ctx.job_id());
        }
        Ok(())
    }
}

/// Each job is added the moment the previous one starts, so the worker is
/// often in the middle of its next claim when the notification arrives: every
/// job must still start from its notification, never from a poll.
#[tokio::test]
async fn jobs_added_during_a_claim_never_wait_for_the_poll() {
    let (_db, pool, utils) = migrated().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    *PINGS.lock().unwrap() = Some(tx);
    let (_, handle, running) = start(
        Worker::options()
            .pg_pool(pool.clone())
            .handle_signals(false)
            .register::<Ping>()
            .concurrency(4)
            .poll_interval(Duration::from_secs(3600)),
    )
    .await;
    wait_for_listener(&pool).await;
    for n in 0..300 {
        let job = add_job(&utils, "ping", json!({}), JobSpec::default()).await;
        let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("job {n} waited for a poll instead of its notification"));
        assert_eq!(started, Some(job));
    }
    shut_down(handle, running).await;
}
