//! `graphile-worker migrate` and `jobs …` against a real PostgreSQL.

mod support;

use graphile_worker::{JobSpec, JobState};
use graphile_worker_dev::node;
use serde_json::json;
use support::{database, gw, job_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_reports_pending_and_changes_nothing() {
    let (db, utils) = database(false).await;
    let run = gw(&db, &["migrate", "--check"]).await.expect_code(3);
    assert!(
        run.stdout.contains("20 migrations pending"),
        "{}",
        run.stdout
    );
    assert!(!utils.migration_status().await.unwrap().installed);

    let run = gw(&db, &["migrate"]).await.ok();
    assert!(
        run.stdout.contains("installed the graphile_worker schema"),
        "{}",
        run.stdout
    );
    gw(&db, &["migrate", "--check"]).await.ok();
    let status = gw(&db, &["--json", "migrate", "--status"])
        .await
        .ok()
        .json();
    assert_eq!(status["applied"].as_array().map(Vec::len), Some(20));
    assert_eq!(status["pending"], json!([]));
    assert_eq!(status["highest_known"], json!(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_the_build_is_an_error() {
    let (db, utils) = database(true).await;
    sqlx::query("insert into graphile_worker.migrations (id, breaking) values (21, true)")
        .execute(utils.pool())
        .await
        .unwrap();
    let run = gw(&db, &["migrate", "--check"]).await.expect_code(1);
    assert!(
        run.stderr.contains("newer than this build"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_list_and_show_a_job() {
    let (db, _utils) = database(true).await;
    let added = gw(
        &db,
        &[
            "--json",
            "jobs",
            "add",
            "send_email",
            r#"{"to":"a@example.com"}"#,
            "--queue",
            "mail",
            "--priority",
            "-3",
            "--max-attempts",
            "5",
            "--key",
            "welcome-1",
            "--flag",
            "slow",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(added["task_identifier"], "send_email");
    assert_eq!(added["payload"], json!({"to": "a@example.com"}));
    assert_eq!(added["queue_name"], "mail");
    assert_eq!(added["priority"], -3);
    assert_eq!(added["max_attempts"], 5);
    assert_eq!(added["key"], "welcome-1");
    assert_eq!(added["state"], "ready");
    let id = added["id"].as_i64().unwrap();

    let listed = gw(&db, &["--json", "jobs", "list", "--state", "ready"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["id"], id);
    let none = gw(&db, &["--json", "jobs", "list", "--state", "failed"])
        .await
        .ok()
        .json();
    assert_eq!(none, json!([]));

    let text = gw(&db, &["jobs", "list"]).await.ok().stdout;
    assert!(
        text.contains("send_email") && text.contains("welcome-1"),
        "{text}"
    );

    let shown = gw(&db, &["jobs", "show", &id.to_string()])
        .await
        .ok()
        .stdout;
    assert!(shown.contains(r#""to": "a@example.com""#), "{shown}");
    assert!(shown.contains("slow"), "{shown}");

    let delayed = gw(&db, &["--json", "jobs", "add", "report", "--delay", "1h"])
        .await
        .ok()
        .json();
    assert_eq!(delayed["state"], "scheduled");
    assert_eq!(delayed["payload"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (db, utils) = database(true).await;
    let run = gw(&db, &["jobs", "add", "t", "{not json"])
        .await
        .expect_code(2);
    assert!(
        run.stderr.contains("the payload is not valid JSON"),
        "{}",
        run.stderr
    );
    let run = gw(&db, &["jobs", "list", "--state", "done"])
        .await
        .expect_code(2);
    assert!(
        run.stderr.contains("unknown job state \"done\""),
        "{}",
        run.stderr
    );
    let run = gw(&db, &["jobs", "add", "t", "--delay", "soon"])
        .await
        .expect_code(2);
    assert!(run.stderr.contains("is not a duration"), "{}", run.stderr);
    let run = gw(&db, &["jobs", "show", "424242"]).await.expect_code(1);
    assert_eq!(
        run.stderr.trim(),
        "graphile-worker: no job has the id 424242"
    );
    let run = gw(&db, &["jobs", "retry"]).await.expect_code(2);
    assert!(
        run.stderr.contains("give the ids of the jobs to retry"),
        "{}",
        run.stderr
    );
    let run = gw(&db, &["jobs", "remove", "no-such-key"])
        .await
        .expect_code(1);
    assert!(
        run.stderr.contains("no job has the key \"no-such-key\""),
        "{}",
        run.stderr
    );
    assert_eq!(job_count(&utils).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_then_retry_gives_a_job_all_its_attempts_again() {
    let (db, utils) = database(true).await;
    let job = utils
        .add_raw_job("resize", json!({"id": 1}), JobSpec::default())
        .await
        .unwrap();
    let id = job.id.to_string();
    let failed = gw(
        &db,
        &["--json", "jobs", "fail", &id, "--reason", "bad image"],
    )
    .await
    .ok()
    .json();
    assert_eq!(failed[0]["state"], "failed");
    assert_eq!(failed[0]["last_error"], "bad image");

    let retried = gw(&db, &["--json", "jobs", "retry", &id]).await.ok().json();
    assert_eq!(retried[0]["state"], "ready");
    assert_eq!(retried[0]["attempts"], 0);
    let entry = utils.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(entry.state, JobState::Ready);
    assert_eq!(entry.job.attempts, 0);

    let run = gw(&db, &["jobs", "retry", &id, "424242"])
        .await
        .expect_code(1);
    assert!(
        run.stdout.contains(&format!("retried 1 job: {id}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("job 424242 does not exist"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_forms_say_how_many_match_and_act_only_with_yes() {
    let (db, utils) = database(true).await;
    let mut ids = Vec::new();
    for task in ["a", "a", "a", "b"] {
        ids.push(
            utils
                .add_raw_job(task, json!({}), JobSpec::default())
                .await
                .unwrap()
                .id,
        );
    }
    utils
        .permanently_fail_jobs(&ids, Some("broken"))
        .await
        .unwrap();

    let run = gw(&db, &["jobs", "retry", "--state", "failed", "--task", "a"])
        .await
        .ok();
    assert!(
        run.stdout
            .contains("3 jobs match; run again with --yes to retry them"),
        "{}",
        run.stdout
    );
    let failed = |utils: graphile_worker::WorkerUtils| async move {
        utils
            .count_jobs(&graphile_worker::JobFilter::default().state(JobState::Failed))
            .await
            .unwrap()
    };
    assert_eq!(failed(utils.clone()).await, 4);

    let run = gw(
        &db,
        &[
            "--json", "jobs", "retry", "--state", "failed", "--task", "a", "--yes",
        ],
    )
    .await
    .ok();
    assert_eq!(run.json().as_array().map(Vec::len), Some(3));
    assert_eq!(failed(utils.clone()).await, 1);

    let run = gw(&db, &["jobs", "complete", "--task", "b", "--yes"])
        .await
        .ok();
    assert!(run.stdout.contains("completed 1 job"), "{}", run.stdout);
    assert_eq!(job_count(&utils).await, 3);

    let run = gw(
        &db,
        &["jobs", "complete", &ids[0].to_string(), "--task", "a"],
    )
    .await
    .expect_code(2);
    assert!(run.stderr.contains("not both"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_complete_and_remove() {
    let (db, utils) = database(true).await;
    let job = utils
        .add_raw_job(
            "digest",
            json!({}),
            JobSpec {
                job_key: Some("daily".into()),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    let id = job.id.to_string();
    let moved = gw(
        &db,
        &[
            "--json",
            "jobs",
            "reschedule",
            &id,
            "--delay",
            "2h",
            "--priority",
            "4",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(moved[0]["state"], "scheduled");
    assert_eq!(moved[0]["priority"], 4);
    let run = gw(&db, &["jobs", "reschedule", &id]).await.expect_code(2);
    assert!(run.stderr.contains("nothing to change"), "{}", run.stderr);

    let run = gw(&db, &["jobs", "remove", "daily"]).await.ok();
    assert!(
        run.stdout.contains(&format!("removed job {id}")),
        "{}",
        run.stdout
    );
    assert_eq!(job_count(&utils).await, 0);

    let other = utils
        .add_raw_job("digest", json!({}), JobSpec::default())
        .await
        .unwrap();
    gw(&db, &["jobs", "complete", &other.id.to_string()])
        .await
        .ok();
    assert_eq!(job_count(&utils).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_by_node_is_listed_and_retried() {
    let (db, utils) = database(true).await;
    node::run_js_ok(
        &db.url,
        "graphile_worker",
        r#"
        const { makeWorkerUtils } = require("graphile-worker");
        (async () => {
          const utils = await makeWorkerUtils({ connectionString: process.env.DATABASE_URL });
          await utils.addJob("from_node", { hello: "rust" }, { maxAttempts: 2 });
          await utils.release();
        })().catch((e) => { console.error(e); process.exit(1); });
        "#,
    )
    .await;
    let listed = gw(&db, &["--json", "jobs", "list", "--task", "from_node"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["payload"], json!({"hello": "rust"}));
    assert_eq!(listed[0]["max_attempts"], 2);
    let id = listed[0]["id"].as_i64().unwrap();
    utils
        .permanently_fail_jobs(&[id], Some("node said no"))
        .await
        .unwrap();
    let retried = gw(&db, &["--json", "jobs", "retry", &id.to_string()])
        .await
        .ok()
        .json();
    assert_eq!(retried[0]["state"], "ready");
    assert_eq!(retried[0]["task_identifier"], "from_node");
}
