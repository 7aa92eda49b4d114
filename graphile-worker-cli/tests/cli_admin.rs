//! `queues`, `workers`, `cron`, `cleanup`, `stats`, help and completions.

mod support;

use graphile_worker::{JobSpec, JobState};
use serde_json::{Value, json};
use support::{database, gw, gw_at, job_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_lock_holders() {
    let (db, utils) = database(true).await;
    for n in 0..3 {
        utils
            .add_raw_job(
                "mail",
                json!({ "n": n }),
                JobSpec {
                    queue_name: Some("outbox".into()),
                    ..JobSpec::default()
                },
            )
            .await
            .unwrap();
    }
    let queues = gw(&db, &["--json", "queues", "list"]).await.ok().json();
    assert_eq!(queues[0]["queue_name"], "outbox");
    assert_eq!(queues[0]["waiting"], 3);
    assert_eq!(queues[0]["locked_by"], json!(null));

    // A Node worker holds one job: it is not in the registry.
    sqlx::query(
        "update graphile_worker._private_jobs set locked_by = 'node-pool-1', locked_at = now() \
         where id = (select min(id) from graphile_worker._private_jobs)",
    )
    .execute(utils.pool())
    .await
    .unwrap();
    let workers = gw(&db, &["--json", "workers", "list"]).await.ok().json();
    assert_eq!(workers["workers"], json!([]));
    assert_eq!(
        workers["unregistered_lock_holders"][0]["locked_by"],
        "node-pool-1"
    );
    assert_eq!(workers["unregistered_lock_holders"][0]["jobs"], 1);
    let text = gw(&db, &["workers", "list"]).await.ok().stdout;
    assert!(
        text.contains("lock holders not in the registry") && text.contains("node-pool-1"),
        "{text}"
    );

    gw(&db, &["workers", "unlock", "node-pool-1"]).await.ok();
    let locked = utils
        .count_jobs(&graphile_worker::JobFilter::default().state(JobState::Locked))
        .await
        .unwrap();
    assert_eq!(locked, 0);
    let recovered = gw(&db, &["--json", "workers", "recover", "--stale", "1m"])
        .await
        .ok()
        .json();
    assert_eq!(recovered, json!({"workers": [], "jobs": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_check_and_list() {
    let dir = std::env::temp_dir().join(format!("gw-cli-cron-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.crontab");
    std::fs::write(
        &good,
        "# nightly\n0 4 * * * nightly_report\n*/15 * * * * poll ?id=poller\n\
         0 9 * * * standup ?tz=Asia/Tokyo\n",
    )
    .unwrap();
    let bad = dir.join("bad.crontab");
    std::fs::write(&bad, "0 4 * * * ok_task\n61 * * * * broken\n").unwrap();

    let items = gw_at(None, &["--json", "cron", "check", &good.to_string_lossy()])
        .await
        .ok()
        .json();
    assert_eq!(items[0]["identifier"], "nightly_report");
    assert_eq!(items[0]["next"].as_array().map(Vec::len), Some(3));
    assert_eq!(items[1]["identifier"], "poller");
    assert_eq!(items[1]["task"], "poll");
    assert_eq!(items[1]["time_zone"], Value::Null);
    // 09:00 in Tokyo is midnight UTC.
    assert_eq!(items[2]["time_zone"], "Asia/Tokyo");
    let next = items[2]["next"][0].as_str().unwrap_or_default();
    assert!(next.contains("T00:00:00"), "{items}");
    let run = gw_at(None, &["cron", "check", &good.to_string_lossy()])
        .await
        .ok();
    assert!(run.stdout.contains("Asia/Tokyo"), "{}", run.stdout);
    let run = gw_at(None, &["cron", "check", &bad.to_string_lossy()])
        .await
        .expect_code(1);
    assert!(run.stderr.contains("bad.crontab: line 2"), "{}", run.stderr);

    let (db, utils) = database(true).await;
    let run = gw(&db, &["cron", "list"]).await.ok();
    assert!(
        run.stdout.contains("knows no cron schedules"),
        "{}",
        run.stdout
    );
    sqlx::query(
        "insert into graphile_worker._private_known_crontabs (identifier, known_since) \
         values ('nightly_report', now())",
    )
    .execute(utils.pool())
    .await
    .unwrap();
    let known = gw(
        &db,
        &[
            "--json",
            "cron",
            "list",
            "--crontab",
            &good.to_string_lossy(),
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(known[0]["identifier"], "nightly_report");
    assert!(known[0]["next"].is_string(), "{known}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_and_stats() {
    let (db, utils) = database(true).await;
    let a = utils
        .add_raw_job("a", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .add_raw_job("a", json!({}), JobSpec::default())
        .await
        .unwrap();
    utils
        .add_raw_job(
            "b",
            json!({}),
            JobSpec {
                queue_name: Some("q".into()),
                run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    utils
        .permanently_fail_jobs(&[a.id], Some("no"))
        .await
        .unwrap();

    let stats = gw(&db, &["--json", "stats"]).await.ok().json();
    assert_eq!(
        stats["by_state"],
        json!({"ready": 1, "scheduled": 1, "retrying": 0, "locked": 0, "failed": 1})
    );
    assert_eq!(stats["by_task"]["a"]["failed"], 1);
    assert_eq!(stats["by_task"]["a"]["ready"], 1);
    assert_eq!(stats["by_queue"]["q"]["scheduled"], 1);
    assert!(stats["oldest_ready_age_seconds"].as_f64().unwrap() >= 0.0);
    let text = gw(&db, &["stats"]).await.ok().stdout;
    assert!(
        text.contains("all jobs") && text.contains("task a") && text.contains("queue q"),
        "{text}"
    );

    let run = gw(&db, &["cleanup"]).await.expect_code(2);
    assert!(
        run.stderr.contains("choose what to clean"),
        "{}",
        run.stderr
    );
    gw(&db, &["cleanup", "--delete-permafailed-jobs"])
        .await
        .ok();
    assert_eq!(job_count(&utils).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_and_completions_print() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["run", "--help"],
        vec!["jobs", "--help"],
        vec!["jobs", "add", "--help"],
        vec!["jobs", "list", "--help"],
        vec!["jobs", "show", "--help"],
        vec!["jobs", "retry", "--help"],
        vec!["jobs", "reschedule", "--help"],
        vec!["jobs", "complete", "--help"],
        vec!["jobs", "fail", "--help"],
        vec!["jobs", "remove", "--help"],
        vec!["jobs", "cancel", "--help"],
        vec!["queues", "list", "--help"],
        vec!["queues", "pause", "--help"],
        vec!["queues", "resume", "--help"],
        vec!["workers", "list", "--help"],
        vec!["workers", "unlock", "--help"],
        vec!["workers", "recover", "--help"],
        vec!["cron", "check", "--help"],
        vec!["cron", "list", "--help"],
        vec!["cleanup", "--help"],
        vec!["stats", "--help"],
        vec!["ui", "--help"],
        vec!["completions", "--help"],
    ] {
        let run = gw_at(None, &args).await.ok();
        assert!(
            run.stdout.contains("Usage: graphile-worker"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let run = gw_at(None, &["completions", "bash"]).await.ok();
    assert!(
        run.stdout.contains("_graphile__worker()"),
        "{}",
        &run.stdout[..200.min(run.stdout.len())]
    );
    let run = gw_at(None, &["jobs", "frobnicate"]).await.expect_code(2);
    assert!(
        run.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        run.stderr
    );
}
