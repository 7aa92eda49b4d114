//! Fault injection, outcomes: what a job's outcome looks like to users when
//! writing it is hard. A failure message the database cannot store, a
//! payload only one enqueue path accepted, a job removed while a shutdown
//! interrupts it, and outcome writes refused by the server for longer than
//! a minute. Asserted: how many times each job ran (a ledger written
//! through a pool of its own), the jobs' final rows, and that nothing is
//! left locked.
#![allow(clippy::type_complexity)]

mod common;
mod faults_support;

use std::time::{Duration, Instant};

use common::{
    add_job, count, eventually, locks_held, migrated, run_in_background, run_sql, start,
    stop_worker,
};
use faults_support::{
    events, jobs_dump, ledger, record, registered, story_of, wait_until_registered,
};
use graphile_worker::{JobContext, JobSpec, NewJob, Task, TaskError, Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

/// Succeeds.
#[derive(Serialize, Deserialize)]
struct Succeed {}

impl Task for Succeed {
    const IDENTIFIER: &'static str = "succeed";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Fails with a message containing a NUL, which PostgreSQL text cannot hold.
#[derive(Serialize, Deserialize)]
struct FailWithNul {}

impl Task for FailWithNul {
    const IDENTIFIER: &'static str = "fail_with_nul";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Err(TaskError::new("bad\0byte"))
    }
}

/// Panics with a message containing a NUL.
#[derive(Serialize, Deserialize)]
struct PanicWithNul {}

impl Task for PanicWithNul {
    const IDENTIFIER: &'static str = "panic_with_nul";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        panic!("bad\0byte")
    }
}

fn worker(pool: PgPool) -> WorkerOptions {
    Worker::options()
        .pg_pool(pool)
        .handle_signals(false)
        .register::<Succeed>()
        .register::<FailWithNul>()
        .register::<PanicWithNul>()
        .register::<Stubborn>()
        .register::<Mark>()
        .register::<Note>()
}

async fn jobs_of(pool: &PgPool, task: &str) -> i64 {
    sqlx::query_scalar("select count(*) from graphile_worker.jobs where task_identifier = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The failing jobs' rows, and how many successful ones are left (locked).
async fn nul_batch_state(pool: &PgPool) -> String {
    let failing: Vec<(i64, String, i16, Option<String>, Option<String>)> = sqlx::query_as(
        "select id, task_identifier, attempts, locked_by, last_error from graphile_worker.jobs \
         where task_identifier <> 'succeed' order by id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let left = jobs_of(pool, "succeed").await;
    let locked = count(
        pool,
        "select count(*) from graphile_worker.jobs \
         where task_identifier = 'succeed' and locked_by is not null",
    )
    .await;
    let mut out = format!("{left} successful jobs left ({locked} locked); failing jobs:");
    for (id, task, attempts, locked_by, last_error) in failing {
        out.push_str(&format!(
            "\n  job {id} ({task}) attempts {attempts} locked_by {locked_by:?} last_error {last_error:?}"
        ));
    }
    out
}

#[tokio::test]
async fn a_nul_in_a_failure_message_does_not_poison_the_batch() {
    let (db, pool, utils) = migrated().await;
    let mut batch: Vec<NewJob> = (0..50).map(|_| NewJob::new("succeed", json!({}))).collect();
    batch.push(NewJob::new("fail_with_nul", json!({})));
    batch.push(NewJob::new("fail_with_nul", json!({})));
    batch.push(NewJob::new("panic_with_nul", json!({})));
    let added = utils.add_raw_jobs(&batch).await.unwrap();
    let failing: Vec<(i64, String)> = added
        .iter()
        .filter(|j| j.task_identifier != "succeed")
        .map(|j| (j.id, j.task_identifier.clone()))
        .collect();
    assert_eq!(failing.len(), 3);

    let w = worker(db.pool(20).await)
        .concurrency(4)
        .init()
        .await
        .unwrap();
    let started = Instant::now();
    let limit = Duration::from_secs(10);
    let result = tokio::time::timeout(limit, w.run_once()).await;
    let took = started.elapsed();
    let Ok(result) = result else {
        panic!(
            "run_once did not return within {limit:?}; meanwhile {}",
            nul_batch_state(&pool).await
        );
    };
    result.unwrap();
    let story = format!("(run_once took {took:?}) {}", nul_batch_state(&pool).await);

    assert_eq!(
        jobs_of(&pool, "succeed").await,
        0,
        "the successful jobs are completed {story}"
    );
    for (id, task) in &failing {
        let (attempts, locked_by, last_error): (i16, Option<String>, Option<String>) =
            sqlx::query_as(
                "select attempts, locked_by, last_error from graphile_worker.jobs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("job {id} ({task}) is gone: {e} {story}"));
        assert_eq!(locked_by, None, "job {id} ({task}) is unlocked {story}");
        assert_eq!(attempts, 1, "job {id} ({task}) made one attempt {story}");
        let last_error =
            last_error.unwrap_or_else(|| panic!("job {id} ({task}) has no last_error {story}"));
        assert!(
            last_error.contains("bad") && last_error.contains("byte") && !last_error.contains('\0'),
            "job {id} ({task}): the message is kept, its NUL replaced: {last_error:?}"
        );
        if task == "panic_with_nul" {
            assert!(
                last_error.starts_with("task panicked at tests/faults_outcomes.rs:"),
                "job {id}: {last_error:?}"
            );
        }
    }
    assert_eq!(
        locks_held(&pool).await,
        (0, 0),
        "nothing left locked {story}"
    );
}

#[tokio::test]
async fn add_raw_jobs_accepts_what_add_raw_job_accepts() {
    let (_db, pool, utils) = migrated().await;
    // A JSON string escape for NUL. PostgreSQL's json type stores it (the
    // payload column is json, and Node's addJob, which sends JSON text, adds
    // such jobs); only jsonb refuses it.
    let payload = json!({"s": "a\u{0}b"});
    let text = serde_json::to_string(&payload).unwrap();
    assert!(text.contains("\\u0000"), "{text}");
    let stored = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, serde_json::Value>(
                // The jobs view leaves the payload out.
                "select payload from graphile_worker._private_jobs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // The schema's own add_job, given the JSON text, stores it.
    let via_sql: i64 =
        sqlx::query_scalar("select id from graphile_worker.add_job('succeed', $1::text::json)")
            .bind(&text)
            .fetch_one(&pool)
            .await
            .expect("the schema's add_job stores the payload");
    assert_eq!(stored(via_sql).await, payload);

    let mut refused = Vec::new();
    match utils
        .add_raw_job("succeed", payload.clone(), JobSpec::default())
        .await
    {
        Ok(job) => {
            assert_eq!(job.payload, payload, "add_raw_job returns the payload");
            assert_eq!(
                stored(job.id).await,
                payload,
                "add_raw_job stores the payload"
            );
        }
        Err(e) => refused.push(format!("add_raw_job: {e}")),
    }
    match utils
        .add_raw_jobs(&[NewJob::new("succeed", payload.clone())])
        .await
    {
        Ok(jobs) => {
            assert_eq!(jobs.len(), 1);
            assert_eq!(jobs[0].payload, payload, "add_raw_jobs returns the payload");
            assert_eq!(
                stored(jobs[0].id).await,
                payload,
                "add_raw_jobs stores the same payload as add_raw_job"
            );
        }
        Err(e) => refused.push(format!("add_raw_jobs: {e}")),
    }
    assert!(
        refused.is_empty(),
        "refused a payload the schema's add_job stores ({text}):\n{}",
        refused.join("\n")
    );
}

/// Records `start`, waits for the worker's cancellation, records
/// `saw-cancel`, then either ignores it (keeps running until interrupted)
/// or returns an error.
#[derive(Serialize, Deserialize)]
struct Stubborn {
    fail_on_cancel: bool,
}

impl Task for Stubborn {
    const IDENTIFIER: &'static str = "stubborn";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await?;
        ctx.cancelled().await;
        record(&ctx, "saw-cancel").await?;
        if self.fail_on_cancel {
            return Err(TaskError::new("stopping: the worker is shutting down"));
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        record(&ctx, "done").await
    }
}

/// Records `start`.
#[derive(Serialize, Deserialize)]
struct Mark {}

impl Task for Mark {
    const IDENTIFIER: &'static str = "mark";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "start").await
    }
}

async fn a_removed_job_stopped_by_shutdown(fail_on_cancel: bool) {
    let (db, pool, utils) = migrated().await;
    let ledger = ledger(&db).await;
    let key = "stubborn-1";
    let job = add_job(
        &utils,
        "stubborn",
        json!({"fail_on_cancel": fail_on_cancel}),
        JobSpec {
            job_key: Some(key.into()),
            ..JobSpec::default()
        },
    )
    .await;

    let (_, stop_a, run_a) =
        start(worker(db.pool(20).await).shutdown_grace_period(Duration::from_millis(300))).await;
    eventually(Duration::from_secs(15), "the job to start", || async {
        (events(&ledger, job, "start").await == 1).then_some(())
    })
    .await;

    // Removed while running: it loses its key and its retries.
    let removed = utils.remove_job(key).await.unwrap().expect("the job");
    assert_eq!(removed.id, job);
    assert_eq!(removed.key, None);
    assert_eq!(
        removed.attempts, removed.max_attempts,
        "remove_job disarms it"
    );

    // A's run() returns after the grace period.
    stop_worker("A", stop_a, run_a, Duration::from_secs(30)).await;
    assert_eq!(events(&ledger, job, "saw-cancel").await, 1);
    let after_shutdown = jobs_dump(&pool).await;

    // A later job, then a new worker runs everything that is due.
    let mark = add_job(&utils, "mark", json!({}), JobSpec::default()).await;
    let b = worker(db.pool(20).await)
        .concurrency(2)
        .init()
        .await
        .unwrap();
    let run_b = tokio::spawn(async move { b.run_once().await });
    eventually(
        Duration::from_secs(30),
        "run_once to return, or the removed job to start again",
        || async { (run_b.is_finished() || events(&ledger, job, "start").await > 1).then_some(()) },
    )
    .await;
    let story = story_of(
        format!("(fail_on_cancel: {fail_on_cancel})\njobs after A's shutdown:{after_shutdown}"),
        &ledger,
        &pool,
    )
    .await;
    assert_eq!(
        events(&ledger, job, "start").await,
        1,
        "the removed job ran again {story}"
    );
    let result = run_b.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        events(&ledger, mark, "start").await,
        1,
        "the later job ran {story}"
    );
    assert_eq!(
        count(
            &pool,
            &format!(
                "select count(*) from graphile_worker.jobs where id = {job} \
                 and (locked_by is not null or attempts < max_attempts)"
            )
        )
        .await,
        0,
        "the removed job is neither locked nor waiting for a retry {story}"
    );
    assert_eq!(
        locks_held(&pool).await,
        (0, 0),
        "nothing left locked {story}"
    );
}

#[tokio::test]
async fn a_removed_job_interrupted_by_shutdown_never_runs_again() {
    a_removed_job_stopped_by_shutdown(false).await;
}

#[tokio::test]
async fn a_removed_job_that_fails_after_cancellation_never_runs_again() {
    a_removed_job_stopped_by_shutdown(true).await;
}

/// Records `run`.
#[derive(Serialize, Deserialize)]
struct Note {}

impl Task for Note {
    const IDENTIFIER: &'static str = "note";
    async fn run(self, ctx: JobContext) -> Result<(), TaskError> {
        record(&ctx, "run").await
    }
}

async fn set_fault(pool: &PgPool, on: bool) {
    sqlx::query("update fault set deletes_fail = $1")
        .bind(on)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn outcome_writes_failing_for_longer_than_a_minute_are_retried_until_they_land() {
    const JOBS: i64 = 1000;
    const FAULT_FOR: Duration = Duration::from_secs(85);
    const SHUTDOWN_AT: Duration = Duration::from_secs(80);
    const MAX_RAN: i64 = 200;

    let (db, pool, utils) = migrated().await;
    let ledger = ledger(&db).await;
    // Completing a job deletes its row: make that fail with a retryable
    // error (read-only transaction, as during a failover) while claims,
    // which only update, still work.
    run_sql(
        &pool,
        "create table fault (deletes_fail boolean not null);
         insert into fault values (false);
         create function fail_job_deletes() returns trigger language plpgsql as $$
         begin
           if (select deletes_fail from fault) then
             raise exception 'read-only for the test' using errcode = '25006';
           end if;
           return old;
         end $$;
         create trigger fail_job_deletes before delete on graphile_worker._private_jobs
           for each row execute function fail_job_deletes();",
    )
    .await;
    let batch: Vec<NewJob> = (0..JOBS).map(|_| NewJob::new("note", json!({}))).collect();
    let ids: Vec<i64> = utils
        .add_raw_jobs(&batch)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    set_fault(&pool, true).await;

    let a = worker(db.pool(20).await)
        .concurrency(2)
        .local_queue_size(0)
        .init()
        .await
        .unwrap();
    let a_id = a.pool_id().to_owned();
    let (stop_a, run_a) = run_in_background(&a);
    let started = Instant::now();
    wait_until_registered(&pool, &a_id, "A").await;

    // While the fault lasts: sample how many distinct jobs ran (claiming
    // must pause while outcomes pile up unwritten) and whether A is still
    // registered (also after its shutdown was requested: it must not
    // deregister with outcomes unwritten).
    let mut violations: Vec<String> = Vec::new();
    let mut timeline = String::new();
    let mut over_at: Option<(Duration, i64)> = None;
    let mut unregistered_at: Option<Duration> = None;
    let mut returned_at: Option<Duration> = None;
    let mut max_ran = 0;
    let mut shutdown_requested = false;
    let mut next_report = Duration::ZERO;
    loop {
        let now = started.elapsed();
        if now >= FAULT_FOR {
            break;
        }
        if now >= SHUTDOWN_AT && !shutdown_requested {
            stop_a.shutdown();
            shutdown_requested = true;
            timeline.push_str(&format!("\n  {now:.1?}: shutdown requested"));
        }
        let ran = count(
            &ledger,
            "select count(distinct job_id) from runs where event = 'run'",
        )
        .await;
        max_ran = max_ran.max(ran);
        if ran > MAX_RAN && over_at.is_none() {
            over_at = Some((now, ran));
        }
        let is_registered = registered(&pool, &a_id).await;
        if !is_registered && unregistered_at.is_none() {
            unregistered_at = Some(now);
        }
        if run_a.is_finished() && returned_at.is_none() {
            returned_at = Some(now);
        }
        if now >= next_report {
            let (locked, _) = locks_held(&pool).await;
            timeline.push_str(&format!(
                "\n  {now:.1?}: {ran} jobs ran, {locked} locked, registered: {is_registered}"
            ));
            next_report += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some((at, ran)) = over_at {
        violations.push(format!(
            "no backpressure: {ran} distinct jobs had run after {at:.1?} with every outcome unwritten (at most {MAX_RAN} expected; {max_ran} by the end of the fault)"
        ));
    }
    if let Some(at) = unregistered_at {
        violations.push(format!(
            "A's registry row disappeared at {at:.1?} while its outcomes were unwritten"
        ));
    }
    if let Some(at) = returned_at {
        timeline.push_str(&format!("\n  run() returned at {at:.1?}, during the fault"));
    }

    // The fault ends: the outcomes land, run() returns, A deregisters.
    set_fault(&pool, false).await;
    timeline.push_str(&format!("\n  {:.1?}: fault off", started.elapsed()));
    let fault_off = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), run_a).await {
        Ok(Ok(Ok(()))) => timeline.push_str(&format!(
            "\n  run() returned {:.1?} after the fault ended",
            fault_off.elapsed()
        )),
        Ok(result) => violations.push(format!("A's run() ended with {result:?}")),
        Err(_) => {
            violations.push("A's run() did not return within 60 s of the fault ending".into())
        }
    }
    if registered(&pool, &a_id).await {
        violations.push("A is still registered after run() returned".into());
    }

    // Another worker runs what A did not claim.
    let b = worker(db.pool(20).await)
        .concurrency(4)
        .init()
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(60), b.run_once()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => violations.push(format!("B's run_once failed: {e}")),
        Err(_) => violations.push("B's run_once did not return within 60 s".into()),
    }

    let runs = count(&ledger, "select count(*) from runs where event = 'run'").await;
    let distinct: i64 = sqlx::query_scalar(
        "select count(distinct job_id) from runs where event = 'run' and job_id = any($1)",
    )
    .bind(&ids)
    .fetch_one(&ledger)
    .await
    .unwrap();
    if runs != JOBS || distinct != JOBS {
        violations.push(format!(
            "every job should run exactly once: {runs} runs of {distinct} distinct jobs out of {JOBS}"
        ));
    }
    let left = count(&pool, "select count(*) from graphile_worker.jobs").await;
    if left != 0 {
        let locked_by_a = count(
            &pool,
            &format!("select count(*) from graphile_worker.jobs where locked_by = '{a_id}'"),
        )
        .await;
        violations.push(format!(
            "{left} jobs are left in the table ({locked_by_a} of them locked by A, which is gone)"
        ));
    }
    let locks = locks_held(&pool).await;
    if locks != (0, 0) {
        violations.push(format!("locks left (jobs, queues): {locks:?}"));
    }
    timeline.push_str(&format!(
        "\n  at most {max_ran} distinct jobs had run while the fault lasted"
    ));
    eprintln!("timeline (A is {a_id}):{timeline}");
    assert!(
        violations.is_empty(),
        "{}\ntimeline (A is {a_id}):{timeline}",
        violations.join("\n")
    );
}
