//! `job_stats` counts (one grouped pass, per-state filters) agree with the
//! state each job is listed with, edge cases included: a negative attempts
//! count, attempts over the limit, a lock on a failed job, run_at exactly
//! now, and a job whose queue row is gone.

mod common;

use std::collections::BTreeMap;

use common::migrated;
use graphile_worker::{JobFilter, JobSpec, JobState};
use serde_json::json;

#[tokio::test]
async fn counts_agree_with_each_jobs_listed_state() {
    let (_db, pool, utils) = migrated().await;
    let mut ids = Vec::new();
    for (task, queue) in [
        ("a", None),
        ("a", Some("q1")),
        ("b", Some("q2")),
        ("b", None),
    ] {
        for _ in 0..8 {
            let spec = JobSpec {
                queue_name: queue.map(str::to_owned),
                ..JobSpec::default()
            };
            ids.push(utils.add_raw_job(task, json!({}), spec).await.unwrap().id);
        }
    }
    // Give the jobs every shape: (attempts, max_attempts, run_at offset in
    // seconds, locked).
    let shapes: [(i16, i16, i64, bool); 8] = [
        (0, 25, 0, false),     // ready, run_at = now
        (0, 25, 3600, false),  // scheduled
        (3, 25, 3600, false),  // retrying
        (-1, 25, 3600, false), // retrying (negative attempts)
        (1, 25, 0, true),      // locked
        (25, 25, 0, true),     // locked, not failed
        (30, 25, 3600, false), // failed, over the limit
        (25, 25, -60, false),  // failed
    ];
    for (n, id) in ids.iter().enumerate() {
        let (attempts, max, offset, locked) = shapes[n % shapes.len()];
        sqlx::query(
            "update graphile_worker._private_jobs set attempts = $2, max_attempts = $3, \
             run_at = now() + make_interval(secs => $4), \
             locked_at = case when $5 then now() end, locked_by = case when $5 then 'w' end \
             where id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(max)
        .bind(offset as f64)
        .bind(locked)
        .execute(&pool)
        .await
        .unwrap();
    }
    // A job whose queue row was deleted under it.
    sqlx::query("update graphile_worker._private_jobs set job_queue_id = 999999 where id = $1")
        .bind(ids[9])
        .execute(&pool)
        .await
        .unwrap();

    let listed = utils
        .list_jobs(&JobFilter {
            limit: 1000,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let mut expected: BTreeMap<(String, Option<String>, JobState), i64> = BTreeMap::new();
    for entry in &listed {
        *expected
            .entry((
                entry.job.task_identifier.clone(),
                entry.job.queue_name.clone(),
                entry.state,
            ))
            .or_default() += 1;
    }
    let stats = utils.job_stats().await.unwrap();
    let mut counted: BTreeMap<(String, Option<String>, JobState), i64> = BTreeMap::new();
    for c in &stats.counts {
        let previous = counted.insert(
            (c.task_identifier.clone(), c.queue_name.clone(), c.state),
            c.jobs,
        );
        assert_eq!(
            previous, None,
            "one row per task, queue and state: {:?}",
            stats.counts
        );
    }
    assert_eq!(counted, expected);
    assert_eq!(
        stats.by_state(JobState::Retrying),
        8,
        "negative attempts retry too"
    );
}
