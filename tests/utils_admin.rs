//! WorkerUtils administration against a real PostgreSQL: what an operator
//! calling each function gets back and what the jobs table looks like
//! afterwards (compatibility reference §3.6–3.8 and §8.2, issue 5's
//! `list_workers`/`recover_stale_workers`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{count, db_now, in_queue, migrated, run_sql, set_job};
use graphile_worker::{Cleanup, Error, Job, JobKeyMode, JobSpec, NewJob, Reschedule, WorkerUtils};
use serde_json::json;
use sqlx::{PgPool, Row as _};

/// A job as the `jobs` view shows it now.
#[derive(Debug, PartialEq)]
struct Seen {
    id: i64,
    key: Option<String>,
    priority: i16,
    run_at: DateTime<Utc>,
    attempts: i16,
    max_attempts: i16,
    last_error: Option<String>,
    locked_at: Option<DateTime<Utc>>,
    locked_by: Option<String>,
    updated_at: DateTime<Utc>,
}

async fn seen(pool: &PgPool, id: i64) -> Option<Seen> {
    let row = sqlx::query(
        "select id, key, priority, run_at, attempts, max_attempts, last_error, locked_at, \
         locked_by, updated_at from graphile_worker.jobs where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()?;
    Some(Seen {
        id: row.get("id"),
        key: row.get("key"),
        priority: row.get("priority"),
        run_at: row.get("run_at"),
        attempts: row.get("attempts"),
        max_attempts: row.get("max_attempts"),
        last_error: row.get("last_error"),
        locked_at: row.get("locked_at"),
        locked_by: row.get("locked_by"),
        updated_at: row.get("updated_at"),
    })
}

async fn ids_left(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("select id from graphile_worker.jobs order by id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort();
    ids
}

/// Microsecond precision, as PostgreSQL stores it.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

async fn add(utils: &WorkerUtils, task: &str, spec: JobSpec) -> Job {
    utils.add_raw_job(task, json!({}), spec).await.unwrap()
}

/// One job in each state an operator meets.
struct States {
    /// Never tried.
    waiting: i64,
    /// Failed once, waiting to retry.
    retrying: i64,
    /// Used all its attempts.
    failed: i64,
    /// Locked an hour ago by a worker: running.
    running: i64,
    /// Locked five hours ago: stale in the admin sense.
    stale: i64,
}

async fn states(pool: &PgPool, utils: &WorkerUtils) -> States {
    let queued = in_queue("q1");
    let waiting = add(utils, "task_a", queued.clone()).await.id;
    let retrying = add(utils, "task_a", JobSpec::default()).await.id;
    set_job(pool, retrying, "attempts = 2, last_error = 'boom'").await;
    let failed = add(
        utils,
        "task_b",
        JobSpec {
            max_attempts: Some(3),
            ..Default::default()
        },
    )
    .await
    .id;
    set_job(pool, failed, "attempts = 3, last_error = 'boom'").await;
    let running = add(utils, "task_a", queued).await.id;
    set_job(
        pool,
        running,
        "attempts = 1, locked_at = now() - interval '1 hour', locked_by = 'pool-live'",
    )
    .await;
    let stale = add(utils, "task_a", JobSpec::default()).await.id;
    set_job(
        pool,
        stale,
        "attempts = 1, locked_at = now() - interval '5 hours', locked_by = 'pool-gone'",
    )
    .await;
    States {
        waiting,
        retrying,
        failed,
        running,
        stale,
    }
}

#[tokio::test]
async fn complete_jobs_deletes_every_job_not_running_and_returns_it() {
    let (_db, pool, utils) = migrated().await;
    let s = states(&pool, &utils).await;
    let done = utils
        .complete_jobs(&[s.running, s.stale, s.failed, s.retrying, s.waiting, 999_999])
        .await
        .unwrap();
    assert_eq!(
        ids(&done),
        vec![s.waiting, s.retrying, s.failed, s.stale],
        "returned in id order, without the running job or the unknown id"
    );
    let waiting = &done[0];
    assert_eq!(waiting.task_identifier, "task_a");
    assert_eq!(waiting.queue_name.as_deref(), Some("q1"));
    assert_eq!(done[2].task_identifier, "task_b");
    assert!(done[2].is_permanently_failed());
    assert_eq!(ids_left(&pool).await, vec![s.running]);
    assert_eq!(
        seen(&pool, s.running).await.unwrap().locked_by.as_deref(),
        Some("pool-live")
    );
    assert!(utils.complete_jobs(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn permanently_fail_jobs_uses_all_attempts_with_the_default_or_given_reason() {
    let (_db, pool, utils) = migrated().await;
    let s = states(&pool, &utils).await;
    let before = db_now(&pool).await;
    let failed = utils
        .permanently_fail_jobs(&[s.retrying, s.waiting, s.running], None)
        .await
        .unwrap();
    assert_eq!(ids(&failed), vec![s.waiting, s.retrying]);
    for job in &failed {
        assert_eq!(job.last_error.as_deref(), Some("Manually marked as failed"));
        assert_eq!(job.attempts, job.max_attempts);
        assert_eq!(job.max_attempts, 25);
        assert!(job.is_permanently_failed());
        assert!(job.updated_at >= before);
        let stored = seen(&pool, job.id).await.unwrap();
        assert_eq!(
            (stored.attempts, stored.last_error.as_deref()),
            (25, Some("Manually marked as failed"))
        );
    }
    assert_eq!(failed[0].queue_name.as_deref(), Some("q1"));
    let running = seen(&pool, s.running).await.unwrap();
    assert_eq!(
        (
            running.attempts,
            running.last_error,
            running.locked_by.as_deref()
        ),
        (1, None, Some("pool-live")),
        "a running job is left alone"
    );

    let custom = utils
        .permanently_fail_jobs(&[s.stale], Some("customer cancelled the order"))
        .await
        .unwrap();
    assert_eq!(
        ids(&custom),
        vec![s.stale],
        "a lock over 4 hours old is stale"
    );
    assert_eq!(
        custom[0].last_error.as_deref(),
        Some("customer cancelled the order")
    );
    assert_eq!(custom[0].attempts, custom[0].max_attempts);
}

#[tokio::test]
async fn reschedule_jobs_changes_each_field_and_zero_is_a_value() {
    let (_db, pool, utils) = migrated().await;
    let later = micros(Utc::now() + chrono::Duration::hours(1));
    let job = add(
        &utils,
        "task_a",
        JobSpec {
            priority: Some(5),
            max_attempts: Some(10),
            run_at: Some(later),
            ..Default::default()
        },
    )
    .await;
    set_job(&pool, job.id, "attempts = 3, last_error = 'boom'").await;
    let s = states(&pool, &utils).await;

    let summary = |j: &Job| (j.priority, j.attempts, j.max_attempts, j.run_at);
    // Nothing given: nothing changes but updated_at.
    // Reschedules the job alone, and returns it.
    let id = job.id;
    let reschedule = |how: Reschedule| {
        let utils = utils.clone();
        async move { utils.reschedule_jobs(&[id], how).await.unwrap().remove(0) }
    };
    let before = db_now(&pool).await;
    let same = reschedule(Reschedule::default()).await;
    assert_eq!(summary(&same), (5, 3, 10, later));
    assert!(same.updated_at >= before);

    let r = reschedule(Reschedule {
        priority: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!(summary(&r), (0, 3, 10, later), "priority 0 is applied");

    let r = reschedule(Reschedule {
        attempts: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!(summary(&r), (0, 0, 10, later), "attempts 0 is applied");

    let r = reschedule(Reschedule {
        max_attempts: Some(4),
        ..Default::default()
    })
    .await;
    assert_eq!(summary(&r), (0, 0, 4, later));

    let sooner = micros(Utc::now() - chrono::Duration::minutes(1));
    let r = reschedule(Reschedule {
        run_at: Some(sooner),
        ..Default::default()
    })
    .await;
    assert_eq!(summary(&r), (0, 0, 4, sooner));
    assert_eq!(r.last_error.as_deref(), Some("boom"), "not cleared");
    let stored = seen(&pool, job.id).await.unwrap();
    assert_eq!(
        (
            stored.priority,
            stored.attempts,
            stored.max_attempts,
            stored.run_at
        ),
        (0, 0, 4, sooner)
    );

    // Everything at once, on several jobs; the running one is left alone
    // and a permanently failed one comes back to life.
    let all = utils
        .reschedule_jobs(
            &[s.failed, s.running, s.waiting],
            Reschedule {
                run_at: Some(later),
                priority: Some(-3),
                attempts: Some(0),
                max_attempts: Some(7),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![s.waiting, s.failed]);
    for j in &all {
        assert_eq!(summary(j), (-3, 0, 7, later));
        assert!(!j.is_permanently_failed());
    }
    assert_eq!(all[0].queue_name.as_deref(), Some("q1"));
    assert_eq!(all[1].task_identifier, "task_b");
    let running = seen(&pool, s.running).await.unwrap();
    assert_eq!((running.priority, running.attempts), (0, 1));
}

#[tokio::test]
async fn remove_job_deletes_a_waiting_job_and_disarms_a_running_one() {
    let (_db, pool, utils) = migrated().await;
    let keyed = |key: &str| JobSpec {
        job_key: Some(key.into()),
        queue_name: Some("mail".into()),
        ..Default::default()
    };
    let free = add(&utils, "task_a", keyed("k-free")).await;
    let running = add(&utils, "task_a", keyed("k-running")).await;
    set_job(
        &pool,
        running.id,
        "attempts = 1, locked_at = now(), locked_by = 'pool-live'",
    )
    .await;
    let stale = add(&utils, "task_a", keyed("k-stale")).await;
    set_job(
        &pool,
        stale.id,
        "attempts = 1, locked_at = now() - interval '5 hours', locked_by = 'pool-gone'",
    )
    .await;

    let removed = utils.remove_job("k-free").await.unwrap().expect("a job");
    assert_eq!(removed.id, free.id);
    assert_eq!(removed.key.as_deref(), Some("k-free"));
    assert_eq!(removed.task_identifier, "task_a");
    assert_eq!(removed.queue_name.as_deref(), Some("mail"));
    assert_eq!(seen(&pool, free.id).await, None, "deleted");

    let disarmed = utils.remove_job("k-running").await.unwrap().expect("a job");
    assert_eq!(disarmed.id, running.id);
    assert_eq!(disarmed.key, None, "the key is given up");
    assert_eq!(disarmed.attempts, disarmed.max_attempts, "never retried");
    assert_eq!(disarmed.task_identifier, "task_a");
    let stored = seen(&pool, running.id).await.expect("still there");
    assert_eq!(
        (stored.key, stored.attempts, stored.locked_by.as_deref()),
        (None, 25, Some("pool-live"))
    );

    let stale_removed = utils.remove_job("k-stale").await.unwrap().expect("a job");
    assert_eq!(stale_removed.id, stale.id);
    assert_eq!(seen(&pool, stale.id).await, None, "a stale lock is no lock");

    assert_eq!(utils.remove_job("k-unknown").await.unwrap(), None);
    assert_eq!(utils.remove_job("k-free").await.unwrap(), None);

    // The running job's key is free for a new job.
    let again = add(&utils, "task_a", keyed("k-running")).await;
    assert_ne!(again.id, running.id);
    assert_eq!(ids_left(&pool).await, vec![running.id, again.id]);
}

async fn queue_lock(pool: &PgPool, queue: &str) -> Option<String> {
    sqlx::query_scalar(
        "select locked_by from graphile_worker._private_job_queues where queue_name = $1",
    )
    .bind(queue)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn force_unlock_workers_frees_jobs_and_queues_of_those_pools_only() {
    let (_db, pool, utils) = migrated().await;
    let a1 = add(&utils, "task_a", in_queue("qa")).await.id;
    let a2 = add(&utils, "task_a", JobSpec::default()).await.id;
    let b1 = add(&utils, "task_a", in_queue("qb")).await.id;
    for (id, by) in [(a1, "pool-a"), (a2, "pool-a"), (b1, "pool-b")] {
        // Locked a second ago: far from stale.
        set_job(
            &pool,
            id,
            &format!("attempts = 1, locked_at = now(), locked_by = '{by}'"),
        )
        .await;
    }
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now(), \
         locked_by = case queue_name when 'qa' then 'pool-a' else 'pool-b' end",
    )
    .execute(&pool)
    .await
    .unwrap();

    utils
        .force_unlock_workers(&["pool-a".to_owned(), "pool-never-seen".to_owned()])
        .await
        .unwrap();
    for id in [a1, a2] {
        let job = seen(&pool, id).await.unwrap();
        assert_eq!((job.locked_at, job.locked_by), (None, None));
        assert_eq!(job.attempts, 1, "the attempt stays counted");
    }
    assert_eq!(queue_lock(&pool, "qa").await, None);
    assert_eq!(
        seen(&pool, b1).await.unwrap().locked_by.as_deref(),
        Some("pool-b")
    );
    assert_eq!(queue_lock(&pool, "qb").await.as_deref(), Some("pool-b"));
}

async fn names(pool: &PgPool, sql: &str) -> BTreeSet<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn task_names(pool: &PgPool) -> BTreeSet<String> {
    names(
        pool,
        "select identifier from graphile_worker._private_tasks",
    )
    .await
}

async fn queue_names(pool: &PgPool) -> BTreeSet<String> {
    names(
        pool,
        "select queue_name from graphile_worker._private_job_queues",
    )
    .await
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn cleanup_operations_each_remove_only_what_is_unused() {
    let (_db, pool, utils) = migrated().await;
    let s = states(&pool, &utils).await;
    // A permanently failed job that is still locked stays.
    let failed_running = add(
        &utils,
        "task_b",
        JobSpec {
            max_attempts: Some(1),
            ..Default::default()
        },
    )
    .await
    .id;
    set_job(
        &pool,
        failed_running,
        "attempts = 1, locked_at = now(), locked_by = 'pool-live'",
    )
    .await;
    // Tasks and queues whose jobs are gone.
    let gone = [
        add(&utils, "unused", in_queue("q-empty")).await.id,
        add(&utils, "unused_kept", in_queue("q-empty-locked"))
            .await
            .id,
    ];
    utils.complete_jobs(&gone).await.unwrap();
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now(), locked_by = 'pool-live' \
         where queue_name = 'q-empty-locked'",
    )
    .execute(&pool)
    .await
    .unwrap();

    utils
        .cleanup(&[Cleanup::DeletePermafailedJobs], &[])
        .await
        .unwrap();
    assert_eq!(
        ids_left(&pool).await,
        sorted(vec![
            s.waiting,
            s.retrying,
            s.running,
            s.stale,
            failed_running
        ]),
        "only the unlocked permanently failed job is deleted"
    );

    utils
        .cleanup(&[Cleanup::GcTaskIdentifiers], &["unused_kept".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        task_names(&pool).await,
        set_of(&["task_a", "task_b", "unused_kept"])
    );

    utils.cleanup(&[Cleanup::GcJobQueues], &[]).await.unwrap();
    assert_eq!(
        queue_names(&pool).await,
        set_of(&["q1", "q-empty-locked"]),
        "empty unlocked queues go; a locked one stays"
    );
}

#[tokio::test]
async fn cleanup_runs_in_a_fixed_order_whatever_order_it_is_given() {
    let (_db, pool, utils) = migrated().await;
    add(&utils, "alive", in_queue("q-alive")).await;
    let doomed = add(
        &utils,
        "doomed",
        JobSpec {
            max_attempts: Some(1),
            ..in_queue("q-doomed")
        },
    )
    .await;
    set_job(&pool, doomed.id, "attempts = 1").await;
    // Listed backwards: the job must still go first, so its task and queue
    // are unused when they are collected.
    utils
        .cleanup(
            &[
                Cleanup::GcJobQueues,
                Cleanup::GcTaskIdentifiers,
                Cleanup::DeletePermafailedJobs,
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker.jobs").await,
        1
    );
    assert_eq!(task_names(&pool).await, set_of(&["alive"]));
    assert_eq!(queue_names(&pool).await, set_of(&["q-alive"]));
}

fn keyed_job(task: &str, key: &str, mode: Option<JobKeyMode>) -> NewJob {
    NewJob {
        spec: JobSpec {
            job_key: Some(key.into()),
            job_key_mode: mode,
            ..Default::default()
        },
        ..NewJob::new(task, json!({}))
    }
}

#[tokio::test]
async fn add_raw_jobs_refuses_batches_add_jobs_cannot_do_and_writes_nothing() {
    let (_db, pool, utils) = migrated().await;
    let err = utils
        .add_raw_jobs(&[
            keyed_job("t", "dup", None),
            NewJob::new("t", json!({})),
            keyed_job("t", "dup", None),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch(m) if m.contains("job key `dup` twice")),
        "{err:?}"
    );

    let mixed = [
        keyed_job("t", "a", Some(JobKeyMode::Replace)),
        keyed_job("t", "b", Some(JobKeyMode::PreserveRunAt)),
    ];
    let err = utils.add_raw_jobs(&mixed).await.unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err:?}");
    assert!(err.to_string().contains("preserve_run_at"), "{err}");
    // No mode means replace, which also does not mix with preserve_run_at.
    let implicit = [
        keyed_job("t", "a", Some(JobKeyMode::PreserveRunAt)),
        keyed_job("t", "b", None),
    ];
    assert!(matches!(
        utils.add_raw_jobs(&implicit).await,
        Err(Error::InvalidBatch(_))
    ));

    let dedupe = [
        NewJob::new("t", json!({})),
        keyed_job("t", "c", Some(JobKeyMode::UnsafeDedupe)),
    ];
    let err = utils.add_raw_jobs(&dedupe).await.unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(_)), "{err:?}");
    assert!(err.to_string().contains("unsafe_dedupe"), "{err}");

    assert_eq!(
        count(&pool, "select count(*) from graphile_worker._private_jobs").await,
        0
    );

    // One preserve_run_at batch is fine; a mode on a keyless job is ignored.
    let preserved = [
        keyed_job("t", "a", Some(JobKeyMode::PreserveRunAt)),
        keyed_job("t", "b", Some(JobKeyMode::PreserveRunAt)),
        NewJob {
            spec: JobSpec {
                job_key_mode: Some(JobKeyMode::Replace),
                ..Default::default()
            },
            ..NewJob::new("t", json!({}))
        },
    ];
    assert_eq!(utils.add_raw_jobs(&preserved).await.unwrap().len(), 3);
}

#[tokio::test]
async fn add_raw_jobs_returns_jobs_in_input_order_with_names_it_just_created() {
    let (_db, _pool, utils) = migrated().await;
    let existing = add(
        &utils,
        "existing_task",
        JobSpec {
            job_key: Some("k-existing".into()),
            ..Default::default()
        },
    )
    .await;
    let job = |task: &str, n: i32, queue: Option<&str>, key: Option<&str>| NewJob {
        identifier: task.into(),
        payload: json!({ "n": n }),
        spec: JobSpec {
            queue_name: queue.map(Into::into),
            job_key: key.map(Into::into),
            priority: Some((10 - n) as i16),
            ..Default::default()
        },
    };
    let input = vec![
        job("brand_new_a", 0, Some("fresh_q1"), None),
        job("existing_task", 1, None, None),
        job("brand_new_b", 2, Some("fresh_q2"), Some("k-existing")),
        job("brand_new_a", 3, Some("fresh_q2"), None),
        job("brand_new_c", 4, Some("fresh_q1"), Some("k-new")),
        job("existing_task", 5, None, None),
    ];
    let out = utils.add_raw_jobs(&input).await.unwrap();
    assert_eq!(out.len(), input.len());
    for (i, (job, spec)) in out.iter().zip(&input).enumerate() {
        assert_eq!(job.payload, spec.payload, "row {i}");
        assert_eq!(job.task_identifier, spec.identifier, "row {i}");
        assert_eq!(job.queue_name, spec.spec.queue_name, "row {i}");
        assert_eq!(job.key, spec.spec.job_key, "row {i}");
        assert_eq!(Some(job.priority), spec.spec.priority, "row {i}");
    }
    assert_eq!(out[2].id, existing.id, "the keyed job is updated in place");
    assert_eq!(out[2].revision, 1);
    assert_eq!(
        out.iter().map(|j| j.id).collect::<BTreeSet<_>>().len(),
        6,
        "six distinct jobs"
    );
}

/// A worker locking a keyed job in the middle of `add_jobs` (upstream issue
/// #580) makes migration 20 write that spec in a second round; the results
/// must still line up with the input.
#[tokio::test]
async fn add_raw_jobs_keeps_input_order_when_a_keyed_job_is_locked_mid_call() {
    let (_db, pool, utils) = migrated().await;
    let old = add(
        &utils,
        "keyed_task",
        JobSpec {
            job_key: Some("k".into()),
            ..Default::default()
        },
    )
    .await;
    // Fires after add_jobs' "retire locked keyed jobs" step, before its
    // upsert: the moment a claiming worker would take the job.
    run_sql(
        &pool,
        "create function graphile_worker.test_lock_k() returns trigger language plpgsql as $$
         begin
           if pg_trigger_depth() = 1 then
             update graphile_worker._private_jobs set locked_at = now(), locked_by = 'pool-racer'
              where key = 'k' and locked_at is null and revision = 0;
           end if;
           return null;
         end $$;
         create trigger race after update on graphile_worker._private_jobs
           for each statement execute function graphile_worker.test_lock_k();",
    )
    .await;
    let input = vec![
        NewJob {
            spec: JobSpec {
                job_key: Some("k".into()),
                queue_name: Some("keyed_q".into()),
                ..Default::default()
            },
            ..NewJob::new("keyed_task", json!({"n": 0}))
        },
        NewJob {
            spec: in_queue("plain_q"),
            ..NewJob::new("plain_task", json!({"n": 1}))
        },
        NewJob::new("plain_task", json!({"n": 2})),
    ];
    let out = utils.add_raw_jobs(&input).await.unwrap();
    let seen: Vec<_> = out
        .iter()
        .map(|j| {
            (
                j.payload.clone(),
                j.task_identifier.clone(),
                j.queue_name.clone(),
                j.key.clone(),
            )
        })
        .collect();
    let expected: Vec<_> = input
        .iter()
        .map(|j| {
            (
                j.payload.clone(),
                j.identifier.clone(),
                j.spec.queue_name.clone(),
                j.spec.job_key.clone(),
            )
        })
        .collect();
    assert_eq!(seen, expected);
    assert_ne!(
        out[0].id, old.id,
        "the locked job was retired, a new one added"
    );
    assert_eq!(
        seen_row_key(&pool, old.id).await,
        (None, Some("pool-racer".to_owned()))
    );
}

async fn seen_row_key(pool: &PgPool, id: i64) -> (Option<String>, Option<String>) {
    let job = seen(pool, id).await.unwrap();
    (job.key, job.locked_by)
}

fn db_code(err: &Error) -> Option<(String, Option<String>)> {
    match err {
        Error::Database(sqlx::Error::Database(e)) => Some((
            e.code().map(|c| c.into_owned()).unwrap_or_default(),
            e.constraint().map(str::to_owned),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn max_attempts_below_one_is_refused_by_the_database_and_smallint_limits_hold() {
    let (_db, pool, utils) = migrated().await;
    for bad in [0, -1] {
        let spec = JobSpec {
            max_attempts: Some(bad),
            ..Default::default()
        };
        let err = utils
            .add_raw_job("t", json!({}), spec.clone())
            .await
            .unwrap_err();
        assert_eq!(
            db_code(&err),
            Some(("23514".into(), Some("jobs_max_attempts_check".into()))),
            "{err:?}"
        );
        let err = utils
            .add_raw_jobs(&[NewJob {
                spec,
                ..NewJob::new("t", json!({}))
            }])
            .await
            .unwrap_err();
        assert_eq!(db_code(&err).map(|c| c.0), Some("23514".into()), "{err:?}");
    }
    assert_eq!(
        count(&pool, "select count(*) from graphile_worker._private_jobs").await,
        0,
        "never silently stored as 25"
    );

    let extreme = |priority: i16| JobSpec {
        priority: Some(priority),
        max_attempts: Some(i16::MAX),
        ..Default::default()
    };
    let high = add(&utils, "t", extreme(i16::MAX)).await;
    let low = utils
        .add_raw_jobs(&[NewJob {
            spec: extreme(i16::MIN),
            ..NewJob::new("t", json!({}))
        }])
        .await
        .unwrap()
        .remove(0);
    assert_eq!((high.priority, high.max_attempts), (i16::MAX, i16::MAX));
    assert_eq!((low.priority, low.max_attempts), (i16::MIN, i16::MAX));
    let r = utils
        .reschedule_jobs(
            &[high.id],
            Reschedule {
                priority: Some(i16::MIN),
                attempts: Some(i16::MAX),
                max_attempts: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r[0].priority, r[0].attempts, r[0].max_attempts),
        (i16::MIN, i16::MAX, 1)
    );
    // A max_attempts of 0 through reschedule is refused the same way.
    let err = utils
        .reschedule_jobs(
            &[low.id],
            Reschedule {
                max_attempts: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        db_code(&err),
        Some(("23514".into(), Some("jobs_max_attempts_check".into()))),
    );
}

#[tokio::test]
async fn recover_stale_workers_frees_a_dead_workers_jobs_and_leaves_unregistered_locks() {
    let (_db, pool, utils) = migrated().await;
    // A registered worker that stopped heartbeating ten minutes ago, one that
    // is alive, and a Node worker (never registers) holding a job.
    run_sql(
        &pool,
        "insert into graphile_worker._private_workers (id, started_at, last_heartbeat_at, metadata) values
           ('pool-dead', now() - interval '1 hour', now() - interval '10 minutes', '{\"host\":\"box-1\",\"pid\":41}'),
           ('pool-alive', now() - interval '30 minutes', now(), '{\"host\":\"box-2\",\"pid\":42}')",
    )
    .await;
    let dead_job = add(&utils, "task_a", in_queue("dead_q")).await.id;
    let dead_last_try = add(
        &utils,
        "task_a",
        JobSpec {
            max_attempts: Some(2),
            ..Default::default()
        },
    )
    .await
    .id;
    let alive_job = add(&utils, "task_a", JobSpec::default()).await.id;
    let node_job = add(&utils, "task_a", JobSpec::default()).await.id;
    let lock = |by: &str, attempts: i16| {
        format!(
            "attempts = {attempts}, locked_at = now() - interval '10 minutes', locked_by = '{by}'"
        )
    };
    set_job(&pool, dead_job, &lock("pool-dead", 1)).await;
    set_job(&pool, dead_last_try, &lock("pool-dead", 2)).await;
    set_job(&pool, alive_job, &lock("pool-alive", 1)).await;
    set_job(&pool, node_job, &lock("pool-node0000000000", 1)).await;
    sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now() - interval '10 minutes', \
         locked_by = 'pool-dead' where queue_name = 'dead_q'",
    )
    .execute(&pool)
    .await
    .unwrap();

    let workers = utils.list_workers().await.unwrap();
    let listed: Vec<_> = workers
        .iter()
        .map(|w| (w.id.as_str(), w.jobs_held))
        .collect();
    assert_eq!(
        listed,
        vec![("pool-dead", 2), ("pool-alive", 1)],
        "oldest first"
    );
    assert_eq!(
        workers[0].metadata,
        Some(json!({"host": "box-1", "pid": 41}))
    );
    assert!(workers[0].last_heartbeat_at < workers[1].last_heartbeat_at);
    assert!(workers[0].started_at < workers[1].started_at);

    let report = utils
        .recover_stale_workers(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(report.workers, vec!["pool-dead".to_owned()]);
    assert_eq!(report.jobs, 2);

    let job = seen(&pool, dead_job).await.unwrap();
    assert_eq!((job.locked_at, job.locked_by), (None, None));
    assert_eq!(job.attempts, 1, "the attempt of the dead worker counts");
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("pool-dead"), "{error}");
    assert!(job.run_at <= db_now(&pool).await, "runs again at once");
    assert_eq!(queue_lock(&pool, "dead_q").await, None);
    let last = seen(&pool, dead_last_try).await.unwrap();
    assert_eq!(
        (last.attempts, last.max_attempts, last.locked_by),
        (2, 2, None)
    );
    let error = last.last_error.unwrap_or_default();
    assert!(error.contains("no attempts left"), "{error}");

    assert_eq!(
        seen(&pool, alive_job).await.unwrap().locked_by.as_deref(),
        Some("pool-alive")
    );
    let node = seen(&pool, node_job).await.unwrap();
    assert_eq!(
        (node.locked_by.as_deref(), node.attempts, node.last_error),
        (Some("pool-node0000000000"), 1, None),
        "a lock by an id that never registered waits for the 4-hour rule"
    );
    let ids: Vec<_> = utils
        .list_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(
        ids,
        vec!["pool-alive".to_owned()],
        "the dead worker is forgotten"
    );

    // Nothing more to do the second time.
    let again = utils
        .recover_stale_workers(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(again.workers.is_empty() && again.jobs == 0);
}

/// Another transaction creating the same new task at the same moment: its
/// task row is invisible to our statement, yet the names come out right.
#[tokio::test]
async fn add_raw_jobs_names_a_task_another_transaction_created_meanwhile() {
    let (_db, pool, utils) = migrated().await;
    let mut other = pool.begin().await.unwrap();
    utils
        .add_raw_job_in(
            &mut *other,
            "contended",
            json!({"n": -1}),
            JobSpec::default(),
        )
        .await
        .unwrap();
    let input = vec![
        NewJob::new("other_new", json!({})),
        NewJob {
            spec: in_queue("fresh_q"),
            ..NewJob::new("contended", json!({}))
        },
        NewJob::new("contended", json!({})),
    ];
    let adding = tokio::spawn({
        let (utils, input) = (utils.clone(), input.clone());
        async move { utils.add_raw_jobs(&input).await }
    });
    common::eventually(Duration::from_secs(10), "add_raw_jobs to wait", || {
        let pool = pool.clone();
        async move {
            (count(
                &pool,
                "select count(*) from pg_stat_activity where datname = current_database() \
                 and wait_event_type = 'Lock' and query like '%add_jobs%'",
            )
            .await
                == 1)
                .then_some(())
        }
    })
    .await;
    other.commit().await.unwrap();
    let out = adding.await.unwrap().unwrap();
    let names: Vec<_> = out
        .iter()
        .map(|j| (j.task_identifier.as_str(), j.queue_name.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("other_new", None),
            ("contended", Some("fresh_q")),
            ("contended", None)
        ]
    );
}

/// Recovery runs in one process at a time: while another holds the
/// recovery lock (as a worker's sweeper does during its pass), an operator's
/// call does nothing and says so with an empty report.
#[tokio::test]
async fn recover_stale_workers_does_nothing_while_another_process_recovers() {
    let (_db, pool, utils) = migrated().await;
    run_sql(
        &pool,
        "insert into graphile_worker._private_workers (id, last_heartbeat_at) \
         values ('pool-dead', now() - interval '10 minutes')",
    )
    .await;
    let job = add(&utils, "task_a", JobSpec::default()).await.id;
    set_job(
        &pool,
        job,
        "attempts = 1, locked_at = now() - interval '10 minutes', locked_by = 'pool-dead'",
    )
    .await;

    // The lock a sweeper takes for this schema, held by "another process".
    let mut other = pool.begin().await.unwrap();
    let taken: bool = sqlx::query_scalar(
        "select pg_try_advisory_xact_lock(hashtext('graphile_worker.recovery:graphile_worker'))",
    )
    .fetch_one(&mut *other)
    .await
    .unwrap();
    assert!(taken);
    let report = utils
        .recover_stale_workers(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(report.workers.is_empty() && report.jobs == 0, "{report:?}");
    assert_eq!(
        seen(&pool, job).await.unwrap().locked_by.as_deref(),
        Some("pool-dead")
    );

    other.rollback().await.unwrap();
    let report = utils
        .recover_stale_workers(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (report.workers, report.jobs),
        (vec!["pool-dead".to_owned()], 1)
    );
    assert_eq!(seen(&pool, job).await.unwrap().locked_by, None);
}
