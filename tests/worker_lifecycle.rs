//! A worker's life against a real PostgreSQL: stopping on a breaking
//! migration, SIGTERM once and twice on a worker process, the 4-hour
//! stale-lock sweep, wake-ups while busy and while idle, heartbeats keeping
//! a long job's lock fresh, and the types being shareable across tasks.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{
    Witness, count, eventually, migrated, run_in_background, server_now, wait_for_server_time,
};
use graphile_worker::{Error, JobContext, JobSpec, Task, TaskError, Worker, WorkerUtils};
use graphile_worker_dev::TestDatabase;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const _: () = {
    fn shareable<T: Send + Sync + 'static>() {}
    let _ = shareable::<Worker>;
    let _ = shareable::<WorkerUtils>;
    let _ = shareable::<graphile_worker::ShutdownHandle>;
    let _ = shareable::<Error>;
};

#[test]
fn worker_and_utils_are_send_sync_and_static() {
    // The assertion is the `const` above: this file would not compile
    // otherwise. Here it is also used the way users do, across a spawn.
    fn moves_to_a_task<T: Send + Sync + 'static>(value: T) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || drop(value))
    }
    let _ = moves_to_a_task::<Option<Worker>>(None);
    let _ = moves_to_a_task::<Option<WorkerUtils>>(None);
}

async fn tables(pool: &PgPool) {
    sqlx::raw_sql(
        "create table runs (id serial primary key, tag text, event text, job_id bigint, \
           attempts smallint, pid int, at timestamptz default clock_timestamp());
         create table gates (name text primary key);",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn note(ctx: &JobContext, tag: &str) -> Result<(), TaskError> {
    sqlx::query("insert into runs (tag, job_id, attempts) values ($1, $2, $3)")
        .bind(tag)
        .bind(ctx.job_id())
        .bind(ctx.attempts())
        .execute(ctx.utils().pool())
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

/// Records its tag.
#[derive(Serialize, Deserialize)]
struct Record {
    tag: String,
}

impl Task for Record {
    const IDENTIFIER: &'static str = "record";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, &self.tag).await
    }
}

/// Records `<gate>:start`, waits until a row named `gate` appears in
/// `gates`, records `<gate>:done`.
#[derive(Serialize, Deserialize)]
struct Gated {
    gate: String,
}

impl Task for Gated {
    const IDENTIFIER: &'static str = "gated";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, &format!("{}:start", self.gate)).await?;
        loop {
            let open: bool =
                sqlx::query_scalar("select exists (select 1 from gates where name = $1)")
                    .bind(&self.gate)
                    .fetch_one(ctx.utils().pool())
                    .await
                    .map_err(|e| TaskError::new(e.to_string()))?;
            if open {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        note(&ctx, &format!("{}:done", self.gate)).await
    }
}

/// Runs until the worker asks it to stop, notes that, and finishes well.
#[derive(Serialize, Deserialize)]
struct UntilShutdown {}

impl Task for UntilShutdown {
    const IDENTIFIER: &'static str = "until_shutdown";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        note(&ctx, "running").await?;
        ctx.cancelled().await;
        note(&ctx, "saw-shutdown").await
    }
}

fn worker(pool: &PgPool) -> graphile_worker::WorkerOptions {
    Worker::options()
        .pg_pool(pool.clone())
        .handle_signals(false)
        .register::<Record>()
        .register::<Gated>()
        .register::<UntilShutdown>()
}

async fn tags(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select tag from runs where tag is not null order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn has_tag(pool: &PgPool, tag: &str) -> bool {
    tags(pool).await.iter().any(|t| t == tag)
}

async fn wait_for_tag(pool: &PgPool, tag: &str) {
    eventually(Duration::from_secs(15), tag, || async move {
        has_tag(pool, tag).await.then_some(())
    })
    .await;
}

async fn open_gate(pool: &PgPool, gate: &str) {
    sqlx::query("insert into gates (name) values ($1)")
        .bind(gate)
        .execute(pool)
        .await
        .unwrap();
}

async fn wait_for_listener(pool: &PgPool) {
    eventually(Duration::from_secs(10), "the listener", || async move {
        (count(
            pool,
            "select count(*) from pg_stat_activity where datname = current_database() \
             and query ilike 'listen%'",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
}

async fn locks_left(pool: &PgPool) -> (i64, i64) {
    (
        count(
            pool,
            "select count(*) from graphile_worker._private_jobs where locked_at is not null",
        )
        .await,
        count(
            pool,
            "select count(*) from graphile_worker._private_job_queues where locked_at is not null",
        )
        .await,
    )
}

async fn add(utils: &WorkerUtils, task: &str, payload: serde_json::Value, spec: JobSpec) -> i64 {
    utils.add_raw_job(task, payload, spec).await.unwrap().id
}

#[tokio::test]
async fn a_breaking_migration_stops_the_worker_gracefully_and_a_non_breaking_one_does_not() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    add(
        &utils,
        "until_shutdown",
        json!({}),
        JobSpec {
            queue_name: Some("q".into()),
            ..Default::default()
        },
    )
    .await;
    let w = worker(&pool)
        .concurrency(2)
        .poll_interval(Duration::from_secs(3600))
        .shutdown_grace_period(Duration::from_secs(60))
        .init()
        .await
        .unwrap();
    let running = tokio::spawn({
        let w = w.clone();
        async move { w.run().await }
    });
    wait_for_tag(&pool, "running").await;
    wait_for_listener(&pool).await;

    // Not breaking: ignored. A job added after it still runs, so the worker
    // read it and carried on.
    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":false}')"#)
        .execute(&pool)
        .await
        .unwrap();
    add(
        &utils,
        "record",
        json!({"tag": "after-non-breaking"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "after-non-breaking").await;
    assert!(!running.is_finished());
    assert!(!has_tag(&pool, "saw-shutdown").await);

    sqlx::query(r#"select pg_notify('worker:migrate', '{"migrationNumber":21,"breaking":true}')"#)
        .execute(&pool)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("run() returns after a breaking migration")
        .unwrap();
    assert!(
        matches!(result, Err(Error::BreakingMigration(21))),
        "{result:?}"
    );
    let message = result.unwrap_err().to_string();
    assert!(message.contains("breaking migration 21"), "{message}");
    // Graceful: the running job was asked to stop and finished well.
    assert!(has_tag(&pool, "saw-shutdown").await);
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "the job completed, it was not interrupted"
    );
    assert_eq!(locks_left(&pool).await, (0, 0));
    assert!(
        utils.list_workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

/// Starts `test_worker` and waits until it runs.
async fn spawn_worker(db: &TestDatabase, grace_ms: u64) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test_worker"))
        .env("DATABASE_URL", &db.url)
        .env("GW_GRACE_MS", grace_ms.to_string())
        .env("GW_CONCURRENCY", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn test_worker");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("worker start-up")
    .unwrap()
    .expect("worker printed nothing");
    assert!(line.starts_with("ready pool-"), "{line}");
    child
}

fn signal(child: &Child, which: &str) {
    let pid = child.id().expect("still running");
    // The shell's built-in kill: no procps needed.
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill {which} {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

async fn process_runs_table(pool: &PgPool) {
    sqlx::raw_sql(
        "create table runs (id serial primary key, event text, job_id bigint, attempts smallint, \
         pid int, at timestamptz default clock_timestamp())",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn events(pool: &PgPool, event: &str) -> i64 {
    count(
        pool,
        &format!("select count(*) from runs where event = '{event}'"),
    )
    .await
}

async fn wait_for_event(pool: &PgPool, event: &str) {
    eventually(Duration::from_secs(20), event, || async move {
        (events(pool, event).await > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish_then_the_process_exits_cleanly() {
    let (db, pool, utils) = migrated().await;
    process_runs_table(&pool).await;
    add(
        &utils,
        "sleepy",
        json!({"ms_first": 1500, "ms_retry": 1500}),
        JobSpec {
            queue_name: Some("serial".into()),
            ..Default::default()
        },
    )
    .await;
    let mut child = spawn_worker(&db, 30_000).await;
    wait_for_event(&pool, "start").await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker exits once its job is done")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(events(&pool, "done").await, 1, "the job ran to its end");
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0,
        "and was completed"
    );
    assert_eq!(locks_left(&pool).await, (0, 0));
    assert!(
        utils.list_workers().await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn a_second_signal_interrupts_a_long_job_at_once() {
    let (db, pool, utils) = migrated().await;
    process_runs_table(&pool).await;
    let job = add(
        &utils,
        "stubborn",
        json!({}),
        JobSpec {
            queue_name: Some("serial".into()),
            ..Default::default()
        },
    )
    .await;
    // A grace period far longer than the test: only the second signal can
    // end the job.
    let mut child = spawn_worker(&db, 600_000).await;
    wait_for_event(&pool, "start").await;
    signal(&child, "-INT");
    wait_for_event(&pool, "cancel-seen").await;
    let first_done = std::time::Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the worker exits after the second signal")
        .unwrap();
    assert!(first_done.elapsed() < Duration::from_secs(15));
    // How it exits (code 0 today) is not the point; that it exits is.
    let _ = status;
    assert_eq!(events(&pool, "done").await, 0, "the job was cut short");
    let (attempts, last_error, run_at_ok): (i16, Option<String>, bool) = sqlx::query_as(
        "select attempts, last_error, run_at <= now() from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "an interrupted attempt is given back");
    let last_error = last_error.unwrap_or_default();
    assert!(last_error.contains("shutting down"), "{last_error}");
    assert!(run_at_ok, "ready to run again at once");
    assert_eq!(locks_left(&pool).await, (0, 0));
}

async fn lock(pool: &PgPool, id: i64, ago: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update graphile_worker._private_jobs set attempts = 1, locked_by = 'pool-gone', \
         locked_at = now() - interval '{ago}' where id = $1"
    )))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_stale_lock_sweep_unlocks_only_locks_older_than_four_hours() {
    let (_db, pool, utils) = migrated().await;
    let in_queue = |q: &str, run_at: DateTime<Utc>| JobSpec {
        queue_name: Some(q.into()),
        run_at: Some(run_at),
        ..Default::default()
    };
    let past = Utc::now() - chrono::Duration::hours(6);
    let future = DateTime::from_timestamp_micros(
        (Utc::now() + chrono::Duration::hours(1)).timestamp_micros(),
    )
    .unwrap();
    let old_past = add(&utils, "t", json!({}), in_queue("q-old", past)).await;
    let old_future = add(&utils, "t", json!({}), in_queue("q-old2", future)).await;
    let recent = add(&utils, "t", json!({}), in_queue("q-recent", past)).await;
    lock(&pool, old_past, "5 hours").await;
    lock(&pool, old_future, "5 hours").await;
    lock(&pool, recent, "3 hours").await;
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_by = 'pool-gone', \
         locked_at = now() - case queue_name when 'q-recent' then interval '3 hours' \
         else interval '5 hours' end",
    )
    .execute(&pool)
    .await
    .unwrap();

    let before: DateTime<Utc> = sqlx::query_scalar("select now()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (jobs, queues) = graphile_worker::__private::reset_stale_locks(&utils)
        .await
        .unwrap();
    assert_eq!((jobs, queues), (2, 2));

    let row = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, i16, DateTime<Utc>)>(
                "select locked_by, attempts, run_at from graphile_worker.jobs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (by, attempts, run_at) = row(old_past).await;
    assert_eq!(
        (by, attempts),
        (None, 1),
        "unlocked, the attempt still counted"
    );
    assert!(
        run_at >= before,
        "run_at moved up to now: {run_at} < {before}"
    );
    assert!(run_at <= Utc::now() + chrono::Duration::seconds(5));
    assert_eq!(
        row(old_future).await,
        (None, 1, future),
        "a later run_at stays"
    );
    let (by, _, run_at) = row(recent).await;
    assert_eq!(
        by.as_deref(),
        Some("pool-gone"),
        "a 3-hour lock is left alone"
    );
    assert!(run_at < before);

    let queue_locks: Vec<(String, Option<String>)> = sqlx::query_as(
        "select queue_name, locked_by from graphile_worker._private_job_queues order by queue_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        queue_locks,
        vec![
            ("q-old".to_owned(), None),
            ("q-old2".to_owned(), None),
            ("q-recent".to_owned(), Some("pool-gone".to_owned())),
        ]
    );
    // The unlocked job runs again.
    assert_eq!(
        graphile_worker::__private::reset_stale_locks(&utils)
            .await
            .unwrap(),
        (0, 0)
    );
}

/// With one slot busy on a long job and polling out of the picture, jobs
/// announced meanwhile start as soon as the slot frees up.
#[tokio::test]
async fn jobs_added_while_the_only_slot_is_busy_start_when_it_frees_up() {
    for local_queue in [None, Some(0)] {
        let (_db, pool, utils) = migrated().await;
        tables(&pool).await;
        add(&utils, "gated", json!({"gate": "long"}), JobSpec::default()).await;
        let mut options = worker(&pool)
            .concurrency(1)
            .poll_interval(Duration::from_secs(3600));
        if let Some(size) = local_queue {
            options = options.local_queue_size(size);
        }
        let w = options.init().await.unwrap();
        let handle = w.shutdown_handle();
        let running = tokio::spawn({
            let w = w.clone();
            async move { w.run().await }
        });
        wait_for_tag(&pool, "long:start").await;
        for n in 0..3 {
            add(
                &utils,
                "record",
                json!({"tag": format!("queued-{n}")}),
                JobSpec::default(),
            )
            .await;
        }
        open_gate(&pool, "long").await;
        eventually(
            Duration::from_secs(10),
            "the jobs added while busy",
            || async {
                let t = tags(&pool).await;
                (t.len() == 5).then_some(())
            },
        )
        .await;
        let t = tags(&pool).await;
        assert_eq!(&t[..2], ["long:start", "long:done"], "{local_queue:?}");
        handle.shutdown();
        running.await.unwrap().unwrap();
    }
}

/// An idle worker with many free slots starts work as soon as a
/// notification arrives, even one announcing fewer jobs than there are.
#[tokio::test]
async fn a_notification_wakes_an_idle_worker_with_many_free_slots() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let w = worker(&pool)
        .concurrency(8)
        .poll_interval(Duration::from_secs(3600))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_listener(&pool).await;
    add(&utils, "record", json!({"tag": "one"}), JobSpec::default()).await;
    wait_for_tag(&pool, "one").await;

    // Four jobs written behind the worker's back, then one notification
    // that says "1": the worker finds all four.
    sqlx::query(
        "insert into graphile_worker._private_jobs (task_id, payload) \
         select t.id, json_build_object('tag', 'quiet-' || g) \
         from graphile_worker._private_tasks t, generate_series(1, 4) g \
         where t.identifier = 'record'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(r#"select pg_notify('jobs:insert', '{"r":0.5,"count":1}')"#)
        .execute(&pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the four quiet jobs", || async {
        (tags(&pool).await.len() == 5).then_some(())
    })
    .await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        0
    );
}

#[tokio::test]
async fn heartbeats_keep_a_long_jobs_locks_fresh() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let job = add(
        &utils,
        "gated",
        json!({"gate": "slow"}),
        JobSpec {
            queue_name: Some("slow-q".into()),
            ..Default::default()
        },
    )
    .await;
    let w = worker(&pool)
        .heartbeat_interval(Duration::from_millis(200))
        .stale_worker_threshold(Duration::from_secs(2))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_tag(&pool, "slow:start").await;
    let locks = || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)>(
                "select j.locked_at, q.locked_at, now() from graphile_worker._private_jobs j \
                 join graphile_worker._private_job_queues q on q.id = j.job_queue_id \
                 where j.id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (job_first, queue_first, _) = locks().await;
    // Three refreshes in a row, each newer than the last.
    let mut last = (job_first, queue_first);
    for round in 0..3 {
        last = eventually(Duration::from_secs(5), "the locks to move", || async {
            let (j, q, _) = locks().await;
            (j > last.0 && q > last.1).then_some((j, q))
        })
        .await;
        let (_, _, now) = locks().await;
        assert!(
            now - last.0 < chrono::Duration::seconds(2),
            "round {round}: job lock {} is stale at {now}",
            last.0
        );
    }
    let workers = utils.list_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, w.pool_id());
    assert_eq!(workers[0].jobs_held, 1);
    assert!(workers[0].last_heartbeat_at > job_first);
    let metadata = workers[0].metadata.clone().unwrap_or_default();
    assert_eq!(metadata["pid"], json!(std::process::id()), "{metadata}");
    assert!(metadata["host"].is_string(), "{metadata}");
    assert!(metadata["version"].is_string(), "{metadata}");
    let mut tasks: Vec<String> = serde_json::from_value(metadata["tasks"].clone()).unwrap();
    tasks.sort();
    assert_eq!(tasks, ["gated", "record", "until_shutdown"]);
    open_gate(&pool, "slow").await;
    wait_for_tag(&pool, "slow:done").await;
    handle.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(locks_left(&pool).await, (0, 0));
}

/// Does nothing, fast.
#[derive(Serialize, Deserialize)]
struct Quick {}

impl Task for Quick {
    const IDENTIFIER: &'static str = "quick";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Jobs a busy worker claimed ahead into its local queue but cannot start
/// must go back within the local queue's time limit (5 s), so that an idle
/// worker can run them. Today a worker that just ran many short jobs keeps
/// the next long ones locked while its slots are busy: until a running job
/// ends when nothing else wakes it (long poll interval), and for about 20 s
/// with the default 2 s poll (returned and claimed straight back, the lock
/// refreshed by heartbeats all along).
#[tokio::test]
async fn a_busy_worker_hands_back_jobs_it_cannot_start_to_an_idle_one() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let mut jobs: Vec<graphile_worker::NewJob> = (0..3000)
        .map(|_| graphile_worker::NewJob::new("quick", json!({})))
        .collect();
    jobs.extend((0..10).map(|n| graphile_worker::NewJob {
        spec: JobSpec {
            priority: Some(1),
            ..Default::default()
        },
        ..graphile_worker::NewJob::new("gated", json!({"gate": format!("slow-{n}")}))
    }));
    utils.add_raw_jobs(&jobs).await.unwrap();
    let busy = worker(&pool)
        .register::<Quick>()
        .concurrency(2)
        .poll_interval(Duration::from_secs(3600))
        .init()
        .await
        .unwrap();
    let stop_busy = busy.shutdown_handle();
    let busy_run = tokio::spawn(async move { busy.run().await });
    let started = || async {
        count(
            &pool,
            "select count(*) from runs where tag like 'slow-%:start'",
        )
        .await
    };
    eventually(
        Duration::from_secs(30),
        "the short jobs to be done",
        || async {
            (count(
                &pool,
                "select count(*) from graphile_worker.jobs where task_identifier = 'quick'",
            )
            .await
                == 0
                && started().await == 2)
                .then_some(())
        },
    )
    .await;

    let idle = worker(&pool)
        .register::<Quick>()
        .concurrency(10)
        .poll_interval(Duration::from_millis(100))
        .init()
        .await
        .unwrap();
    let stop_idle = idle.shutdown_handle();
    let idle_run = tokio::spawn(async move { idle.run().await });
    eventually(
        Duration::from_secs(10),
        "the idle worker to start the long jobs the busy one cannot",
        || async { (started().await == 10).then_some(()) },
    )
    .await;
    stop_busy.shutdown_now();
    stop_idle.shutdown_now();
    busy_run.await.unwrap().unwrap();
    idle_run.await.unwrap().unwrap();
}

/// Heartbeats refresh the locks of jobs the worker holds and of their
/// queues, nothing else: a queue lock left behind with the worker's id
/// (an outcome that could not be written) still ages into the 4-hour
/// sweep instead of blocking its queue for as long as the worker lives.
#[tokio::test]
async fn heartbeats_refresh_only_the_queues_of_jobs_the_worker_holds() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    add(
        &utils,
        "gated",
        json!({"gate": "held"}),
        JobSpec {
            queue_name: Some("held-q".into()),
            ..Default::default()
        },
    )
    .await;
    let w = worker(&pool)
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(Duration::from_secs(2))
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    wait_for_tag(&pool, "held:start").await;
    let left_behind: DateTime<Utc> = sqlx::query_scalar(
        "insert into graphile_worker._private_job_queues (queue_name, locked_at, locked_by) \
         values ('left-behind-q', now() - interval '5 hours', $1) returning now()",
    )
    .bind(w.pool_id())
    .fetch_one(&pool)
    .await
    .unwrap();
    // Two heartbeats after that.
    let mut seen = left_behind;
    let pool_ref = &pool;
    for _ in 0..2 {
        seen = eventually(Duration::from_secs(5), "a heartbeat", || async move {
            let at: DateTime<Utc> = sqlx::query_scalar(
                "select locked_at from graphile_worker._private_job_queues \
                 where queue_name = 'held-q'",
            )
            .fetch_one(pool_ref)
            .await
            .unwrap();
            (at > seen).then_some(at)
        })
        .await;
    }
    assert_eq!(
        graphile_worker::__private::reset_stale_locks(&utils)
            .await
            .unwrap(),
        (0, 1),
        "the held job and its queue stay locked; the left-behind queue is freed"
    );
    assert_eq!(
        count(
            &pool,
            "select count(*) from graphile_worker._private_job_queues \
             where locked_by is not null and queue_name = 'held-q'"
        )
        .await,
        1
    );
    open_gate(&pool, "held").await;
    wait_for_tag(&pool, "held:done").await;
    handle.shutdown();
    running.await.unwrap().unwrap();
}

async fn set_job(pool: &PgPool, id: i64, assignments: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "update graphile_worker._private_jobs set {assignments} where id = $1"
    )))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// What a worker leaves alone: jobs not due yet, of tasks it does not run,
/// permanently failed, locked by another worker, or in a queue another
/// worker holds.
#[tokio::test]
async fn a_worker_claims_only_due_available_jobs_of_its_own_tasks() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let tag = |t: &str| json!({ "tag": t });
    add(&utils, "record", tag("ready"), JobSpec::default()).await;
    let future = add(
        &utils,
        "record",
        tag("future"),
        JobSpec {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..Default::default()
        },
    )
    .await;
    let foreign = add(
        &utils,
        "someone_elses_task",
        tag("foreign"),
        JobSpec::default(),
    )
    .await;
    let dead = add(&utils, "record", tag("dead"), JobSpec::default()).await;
    set_job(&pool, dead, "attempts = max_attempts").await;
    let taken = add(&utils, "record", tag("taken"), JobSpec::default()).await;
    set_job(
        &pool,
        taken,
        "attempts = 1, locked_at = now(), locked_by = 'pool-other'",
    )
    .await;
    let queued = add(
        &utils,
        "record",
        tag("queued"),
        JobSpec {
            queue_name: Some("busy-q".into()),
            ..Default::default()
        },
    )
    .await;
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now(), locked_by = 'pool-other'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let w = worker(&pool).concurrency(4).init().await.unwrap();
    w.run_once().await.unwrap();
    assert_eq!(tags(&pool).await, vec!["ready"]);
    let left: Vec<(i64, i16)> =
        sqlx::query_as("select id, attempts from graphile_worker.jobs order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![
            (future, 0),
            (foreign, 0),
            (dead, 25),
            (taken, 1),
            (queued, 0)
        ],
        "untouched"
    );

    // Due now, the future job runs; freed, the queue's job runs.
    utils
        .reschedule_jobs(
            &[future],
            graphile_worker::Reschedule {
                run_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    utils
        .force_unlock_workers(&["pool-other".to_owned()])
        .await
        .unwrap();
    w.run_once().await.unwrap();
    let mut ran = tags(&pool).await;
    ran.sort();
    assert_eq!(ran, vec!["future", "queued", "ready", "taken"]);
}

/// A `Write` into a shared buffer, for capturing log output.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Refuse {}

impl Task for Refuse {
    const IDENTIFIER: &'static str = "refuse";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("not today"))
    }
}

/// Every job runs in one span carrying its id, task, queue and attempt,
/// with its outcome recorded on it.
#[tokio::test]
async fn each_job_is_logged_in_a_span_with_its_id_task_queue_attempt_and_outcome() {
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let ok = add(
        &utils,
        "record",
        json!({"tag": "traced"}),
        JobSpec {
            queue_name: Some("traced-q".into()),
            ..Default::default()
        },
    )
    .await;
    let failing = add(&utils, "refuse", json!({}), JobSpec::default()).await;
    let w = worker(&pool)
        .register::<Refuse>()
        .local_queue_size(0)
        .init()
        .await
        .unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded: every job runs on this thread.
    let guard = tracing::subscriber::set_default(subscriber);
    w.run_once().await.unwrap();
    drop(guard);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line_of = |id: i64| {
        log.lines()
            .find(|l| l.contains(&format!("job.id={id} ")) && l.contains("task"))
            .unwrap_or_else(|| panic!("no line for job {id} in:\n{log}"))
            .to_owned()
    };
    let ok_line = line_of(ok);
    for part in [
        "job.task=record",
        "job.queue=\"traced-q\"",
        "job.attempt=1",
        "job.outcome=\"success\"",
        "job.duration_ms=",
    ] {
        assert!(ok_line.contains(part), "{part} missing: {ok_line}");
    }
    let failed_line = line_of(failing);
    for part in ["job.task=refuse", "job.outcome=\"failed\"", "not today"] {
        assert!(failed_line.contains(part), "{part} missing: {failed_line}");
    }
    assert!(failed_line.contains("WARN"), "{failed_line}");
}

/// A worker whose heartbeats keep failing with an error for longer than the
/// stale threshold stops taking jobs (others may already count it as dead),
/// and takes them again once heartbeats succeed. (A heartbeat that hangs
/// rather than fails is covered by `recovery_heartbeat_failure.rs`.)
#[tokio::test]
async fn a_worker_whose_heartbeats_are_refused_stops_claiming_until_they_succeed() {
    const THRESHOLD: Duration = Duration::from_millis(800);
    let (_db, pool, utils) = migrated().await;
    tables(&pool).await;
    let mut witness = Witness::start(&pool).await;
    let w = worker(&pool)
        .concurrency(2)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_worker_threshold(THRESHOLD)
        .init()
        .await
        .unwrap();
    let (handle, running) = run_in_background(&w);
    add(
        &utils,
        "record",
        json!({"tag": "healthy"}),
        JobSpec::default(),
    )
    .await;
    wait_for_tag(&pool, "healthy").await;

    // Every heartbeat is an update of the worker's registry row: from now
    // on each is refused, and counted (a sequence survives the rollback).
    sqlx::raw_sql(
        "create sequence refused_heartbeats; \
         create function refuse_heartbeats() returns trigger language plpgsql as \
           $$ begin perform nextval('public.refused_heartbeats'); \
             raise exception 'heartbeats refused by the test'; end $$; \
         create trigger refuse_heartbeats before update on graphile_worker._private_workers \
           for each row execute function refuse_heartbeats()",
    )
    .execute(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "a refused heartbeat", || async {
        (count(
            &pool,
            "select case when is_called then last_value else 0 end from refused_heartbeats",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
    // Beats run one after another: once one was refused, the registry
    // holds the last one that got through.
    let last_beat: DateTime<Utc> = sqlx::query_scalar(
        "select last_heartbeat_at from graphile_worker._private_workers where id = $1",
    )
    .bind(w.pool_id())
    .fetch_one(&pool)
    .await
    .unwrap();

    // Others may count the worker as dead once that beat is older than the
    // stale threshold: by then it has stopped claiming. Add a job after.
    wait_for_server_time(&pool, last_beat + THRESHOLD).await;
    let job = add(
        &utils,
        "record",
        json!({"tag": "while-unhealthy"}),
        JobSpec::default(),
    )
    .await;
    // The worker was told: jobs announced after it reached the witness, in
    // this process, five times in a row.
    witness.confirm(5).await;
    assert!(
        !has_tag(&pool, "while-unhealthy").await,
        "claimed a job {} ms after its last heartbeat",
        (server_now(&pool).await - last_beat).num_milliseconds()
    );
    let (attempts, locked): (i16, bool) = sqlx::query_as(
        "select attempts, locked_at is not null from graphile_worker.jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempts, locked), (0, false), "the job was not claimed");

    // Heartbeats succeed again: the worker resumes, and runs the job only
    // now.
    let restored_at = server_now(&pool).await;
    sqlx::raw_sql("drop trigger refuse_heartbeats on graphile_worker._private_workers")
        .execute(&pool)
        .await
        .unwrap();
    wait_for_tag(&pool, "while-unhealthy").await;
    let ran_at: DateTime<Utc> =
        sqlx::query_scalar("select at from runs where tag = 'while-unhealthy'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        ran_at > restored_at,
        "the job ran at {ran_at}, before heartbeats were let through at {restored_at}"
    );
    witness.stop().await;
    handle.shutdown();
    running.await.unwrap().unwrap();
}
