//! `jobs cancel` and `queues pause|resume` against a real PostgreSQL: what
//! each prints, its exit code and what it leaves in the tables.

mod support;

use graphile_worker::JobSpec;
use serde_json::json;
use support::{database, gw};

/// `(attempts, max_attempts, last_error)` of job `id`.
async fn fate(utils: &graphile_worker::WorkerUtils, id: i64) -> (i16, i16, Option<String>) {
    sqlx::query_as(
        "select attempts, max_attempts, last_error from graphile_worker._private_jobs where id = $1",
    )
    .bind(id)
    .fetch_one(utils.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_says_what_happened_to_each_job() {
    let (db, utils) = database(true).await;
    let waiting = utils
        .add_raw_job("send", json!({}), JobSpec::default())
        .await
        .unwrap()
        .id;
    let held = utils
        .add_raw_job("send", json!({}), JobSpec::default())
        .await
        .unwrap()
        .id;
    // A holder that is not in the worker registry, as a Node worker is.
    sqlx::query(
        "update graphile_worker._private_jobs set locked_by = 'node-worker-1', \
         locked_at = now(), attempts = 1 where id = $1",
    )
    .bind(held)
    .execute(utils.pool())
    .await
    .unwrap();

    let run = gw(
        &db,
        &[
            "jobs",
            "cancel",
            &waiting.to_string(),
            "--reason",
            "duplicate order",
        ],
    )
    .await
    .ok();
    assert_eq!(
        run.stdout.trim(),
        format!("job {waiting}: cancelled (failed permanently)")
    );
    assert_eq!(
        fate(&utils, waiting).await,
        (25, 25, Some("cancelled: duplicate order".into()))
    );

    let run = gw(&db, &["jobs", "cancel", &held.to_string()]).await.ok();
    assert_eq!(
        run.stdout.trim(),
        format!(
            "job {held}: node-worker-1 is running it and cannot be interrupted (a Node worker, or one not registered); it runs to its end and is not retried"
        )
    );
    assert_eq!(
        fate(&utils, held).await,
        (1, 1, Some("cancelled: by an operator".into()))
    );

    // Several ids, one of them unknown: the others are reported, exit 1.
    let run = gw(
        &db,
        &["--json", "jobs", "cancel", &waiting.to_string(), "999999"],
    )
    .await
    .expect_code(1);
    assert_eq!(
        run.json(),
        json!([
            {"id": waiting, "outcome": "already_failed"},
            {"id": 999999, "outcome": "not_found"},
        ])
    );
    assert!(
        run.stderr.contains("no job with id 999999"),
        "{}",
        run.stderr
    );
    // Nothing else changed.
    assert_eq!(
        fate(&utils, waiting).await,
        (25, 25, Some("cancelled: duplicate order".into()))
    );

    let run = gw(&db, &["jobs", "cancel"]).await.expect_code(2);
    assert!(run.stderr.contains("<ID>"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_a_queue() {
    let (db, utils) = database(true).await;
    let run = gw(&db, &["queues", "pause", "emails"]).await.ok();
    assert_eq!(
        run.stdout.trim(),
        "paused queue emails: no worker starts its jobs until `queues resume emails`"
    );
    let run = gw(&db, &["--json", "queues", "pause", "emails"]).await.ok();
    assert_eq!(
        run.json(),
        json!({"queue": "emails", "paused": true, "changed": false})
    );
    // A job added meanwhile waits, and the listing says why.
    utils
        .add_raw_job(
            "send",
            json!({}),
            JobSpec {
                queue_name: Some("emails".into()),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    let queues = gw(&db, &["--json", "queues", "list"]).await.ok().json();
    assert_eq!(queues[0]["queue_name"], "emails");
    assert_eq!(queues[0]["paused"], true);
    assert_eq!(queues[0]["locked_by"], serde_json::Value::Null);
    assert_eq!(queues[0]["waiting"], 1);
    let run = gw(&db, &["queues", "list"]).await.ok();
    assert!(run.stdout.contains("paused"), "{}", run.stdout);

    // Garbage collection of queue rows keeps a paused queue, even an empty one.
    gw(&db, &["queues", "pause", "reports"]).await.ok();
    gw(&db, &["cleanup", "--gc-job-queues"]).await.ok();
    let queues = gw(&db, &["--json", "queues", "list"]).await.ok().json();
    assert_eq!(queues[1]["queue_name"], "reports");
    assert_eq!(queues[1]["paused"], true);

    let run = gw(&db, &["queues", "resume", "emails"]).await.ok();
    assert_eq!(
        run.stdout.trim(),
        "resumed queue emails: its jobs run again"
    );
    let run = gw(&db, &["queues", "resume", "emails"]).await.ok();
    assert_eq!(
        run.stdout.trim(),
        "queue emails was not paused; nothing changed"
    );
    let queues = gw(&db, &["--json", "queues", "list"]).await.ok().json();
    assert_eq!(queues[0]["paused"], false);

    // Node's force_unlock_workers(['paused']) resumes a queue too.
    assert_eq!(queues[1]["paused"], true);
    gw(&db, &["workers", "unlock", "paused"]).await.ok();
    let queues = gw(&db, &["--json", "queues", "list"]).await.ok().json();
    assert_eq!(queues[1]["paused"], false);

    let long = "q".repeat(200);
    let run = gw(&db, &["queues", "pause", &long]).await.expect_code(1);
    assert!(run.stderr.contains("queue name"), "{}", run.stderr);
}
