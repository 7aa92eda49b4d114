//! The test helpers' own tests: databases made in parallel stay apart, a
//! passing test's database is dropped, a failing one's is kept only when
//! `GRAPHILE_WORKER_KEEP_TEST_DB` says so, and the assertions' failure
//! messages show what was expected and what was there.

use std::process::Command;
use std::time::Duration;

use graphile_worker::testing::{Enqueued, KEEP_ENV, RunOutcome, TestDb, server_url};
use graphile_worker::{JobSpec, TaskError, task};
use serde_json::json;

/// Sends one email.
#[task(queue = "emails")]
async fn send_email(to: String) -> Result<(), TaskError> {
    if to.is_empty() {
        return Err(TaskError::new("no recipient"));
    }
    Ok(())
}

/// Whether database `name` exists on the test server.
async fn exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&server_url()).await.unwrap();
    let found: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    found
}

/// The message of the panic `body` ends with.
async fn panic_message<F>(body: F) -> String
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let err = tokio::spawn(body)
        .await
        .expect_err("the assertion should fail");
    let payload = err.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_made_at_once_are_separate_and_dropped_after_use() {
    let dbs = tokio::join!(TestDb::new(), TestDb::new(), TestDb::new(), TestDb::new());
    let dbs = [dbs.0, dbs.1, dbs.2, dbs.3];
    let mut names: Vec<String> = dbs.iter().map(|db| db.name().to_owned()).collect();
    for (n, db) in dbs.iter().enumerate() {
        assert!(
            db.name()
                .starts_with("gw_test_databases_made_at_once_are_separate"),
            "named after the test: {}",
            db.name()
        );
        SendEmail::enqueue(
            db.utils(),
            SendEmail {
                to: format!("user{n}@example.com"),
            },
        )
        .await
        .unwrap();
    }
    for (n, db) in dbs.iter().enumerate() {
        let to: Vec<String> = db
            .enqueued::<SendEmail>()
            .await
            .into_iter()
            .map(|e| e.to)
            .collect();
        assert_eq!(to, [format!("user{n}@example.com")]);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
    drop(dbs);
    for name in &names {
        assert!(!exists(name).await, "{name} was dropped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_messages_show_what_was_expected_and_what_was_there() {
    let db = std::sync::Arc::new(TestDb::new().await);
    SendEmail::enqueue(
        db.utils(),
        SendEmail {
            to: "ada@example.com".into(),
        },
    )
    .await
    .unwrap();
    let id = db.enqueued_jobs::<SendEmail>().await[0].id;

    let d = db.clone();
    let message = panic_message(async move {
        d.assert_enqueued(
            Enqueued::<SendEmail>::new()
                .payload(SendEmail {
                    to: "bob@example.com".into(),
                })
                .queue("emails"),
        )
        .await;
    })
    .await;
    let expected_start = format!(
        "expected a `send_email` job with payload {{\"to\":\"bob@example.com\"}}, queue \"emails\" enqueued, but none of the 1 `send_email` job(s) there matches:\n  job {id}: payload {{\"to\":\"ada@example.com\"}}, queue \"emails\", priority 0, run_at "
    );
    assert!(message.starts_with(&expected_start), "{message}");
    assert!(
        message.ends_with("(due), attempts 0/25, key -, flags -\n    differs in: payload"),
        "{message}"
    );

    let d = db.clone();
    let message = panic_message(async move {
        d.assert_not_enqueued(Enqueued::<SendEmail>::new().queue("emails"))
            .await;
    })
    .await;
    assert!(
        message.starts_with(&format!(
            "expected no `send_email` job with queue \"emails\", but found 1:\n  job {id}: payload {{\"to\":\"ada@example.com\"}}"
        )),
        "{message}"
    );

    // A scope sees only what is enqueued inside it.
    let scope = db.scope().await;
    scope
        .assert_not_enqueued(Enqueued::<SendEmail>::new())
        .await;
    let message = {
        let d = db.clone();
        panic_message(async move {
            d.scope()
                .await
                .assert_enqueued(Enqueued::<SendEmail>::new())
                .await;
        })
        .await
    };
    assert_eq!(
        message,
        "expected a `send_email` job enqueued in this scope, but no `send_email` job was (no job was enqueued in this scope)\n1 matching job(s) were enqueued before this scope began"
    );
    // A job key replaced inside the scope counts as enqueued in it.
    let spec = JobSpec {
        job_key: Some("welcome".into()),
        ..JobSpec::default()
    };
    db.utils()
        .add_raw_job("send_email", json!({"to": "a@example.com"}), spec.clone())
        .await
        .unwrap();
    let scope = db.scope().await;
    scope
        .assert_not_enqueued(Enqueued::<SendEmail>::new().key("welcome"))
        .await;
    db.utils()
        .add_raw_job("send_email", json!({"to": "b@example.com"}), spec)
        .await
        .unwrap();
    scope
        .assert_enqueued(
            Enqueued::<SendEmail>::new()
                .key("welcome")
                .matching(|email| email.to.starts_with('b')),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_report_each_job_and_time_moves_for_scheduled_ones() {
    let db = TestDb::new().await;
    let later = JobSpec {
        run_at: Some(chrono::Utc::now() + chrono::Duration::minutes(10)),
        ..JobSpec::default()
    };
    SendEmail::enqueue(
        db.utils(),
        SendEmail {
            to: "now@example.com".into(),
        },
    )
    .await
    .unwrap();
    SendEmail::enqueue_with(
        db.utils(),
        SendEmail {
            to: "later@example.com".into(),
        },
        later,
    )
    .await
    .unwrap();
    db.assert_enqueued(
        Enqueued::<SendEmail>::new()
            .payload(SendEmail {
                to: "later@example.com".into(),
            })
            .due_in(Duration::from_secs(600), Duration::from_secs(10)),
    )
    .await;

    let report = db.run_jobs().await;
    assert_eq!(report.jobs.len(), 1, "{report}");
    report.assert_all_completed();
    assert_eq!(db.enqueued::<SendEmail>().await.len(), 1);

    assert_eq!(db.advance_time(Duration::from_secs(600)).await, 1);
    let report = db.run_jobs().await;
    assert_eq!(report.completed().len(), 1, "{report}");

    // A failing job: once without include_scheduled, until its attempts
    // are used up with it.
    let failing = JobSpec {
        max_attempts: Some(3),
        ..JobSpec::default()
    };
    SendEmail::enqueue_with(db.utils(), SendEmail { to: String::new() }, failing)
        .await
        .unwrap();
    let report = db.run_jobs().await;
    assert_eq!(report.failed().len(), 1, "{report}");
    let report = db.run_jobs().include_scheduled().await;
    assert_eq!(
        report
            .jobs
            .iter()
            .map(|ran| (ran.attempt, ran.outcome.clone()))
            .collect::<Vec<_>>(),
        [
            (
                2,
                RunOutcome::Failed {
                    error: "no recipient".into(),
                    will_retry: true
                }
            ),
            (
                3,
                RunOutcome::Failed {
                    error: "no recipient".into(),
                    will_retry: false
                }
            ),
        ]
    );

    // One payload through its task, leaving another job alone.
    SendEmail::enqueue(
        db.utils(),
        SendEmail {
            to: "waits@example.com".into(),
        },
    )
    .await
    .unwrap();
    let ran = db
        .run_job(SendEmail {
            to: "x@example.com".into(),
        })
        .await;
    assert!(ran.completed(), "{ran}");
    let left: Vec<String> = db
        .enqueued::<SendEmail>()
        .await
        .into_iter()
        .map(|e| e.to)
        .collect();
    assert_eq!(left, ["", "waits@example.com"]);
}

#[graphile_worker::test]
async fn the_attribute_gives_a_migrated_database(db: TestDb) {
    assert!(
        db.name().starts_with("gw_test_the_attribute_gives"),
        "{}",
        db.name()
    );
    assert!(db.utils().migration_status().await.unwrap().installed);
}

#[graphile_worker::test]
async fn the_attribute_passes_results_through(db: TestDb) -> Result<(), String> {
    db.utils().list_queues().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Run by `a_failing_tests_database_is_kept_only_when_asked`, in a child
/// process: writes its database's name on stdout, then fails.
#[graphile_worker::test]
#[ignore = "fails on purpose; run by a_failing_tests_database_is_kept_only_when_asked"]
async fn fails_on_purpose(db: TestDb) {
    println!("database: {}", db.name());
    panic!("failing on purpose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tests_database_is_kept_only_when_asked() {
    let run = |keep: bool| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "fails_on_purpose", "--ignored", "--nocapture"])
            .env("DATABASE_URL", server_url());
        if keep {
            command.env(KEEP_ENV, "1");
        } else {
            command.env_remove(KEEP_ENV);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "the child test fails");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let name = stdout
            .lines()
            .find_map(|l| l.strip_prefix("database: "))
            .unwrap_or_else(|| panic!("no database line: {stdout}"))
            .to_owned();
        (name, stderr)
    };

    let (name, stderr) = tokio::task::spawn_blocking(move || run(true))
        .await
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "graphile_worker::testing: kept the database of failed test `testing_helpers::fails_on_purpose`: {name} (psql '"
        )),
        "{stderr}"
    );
    assert!(exists(&name).await, "{name} is kept");
    let pool = sqlx::PgPool::connect(&server_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database \"{name}\" with (force)"
    )))
    .execute(&pool)
    .await
    .unwrap();

    let (name, stderr) = tokio::task::spawn_blocking(move || run(false))
        .await
        .unwrap();
    assert!(!stderr.contains("kept the database"), "{stderr}");
    assert!(!exists(&name).await, "{name} is dropped");
}

/// Enqueues itself again, forever.
#[task]
async fn poll_forever(n: u32, ctx: graphile_worker::JobContext) -> Result<(), TaskError> {
    PollForever::enqueue(ctx.utils(), PollForever { n: n + 1 })
        .await
        .map_err(|e| TaskError::new(e.to_string()))?;
    Ok(())
}

#[graphile_worker::test]
async fn the_job_bound_fails_a_run_only_when_more_was_due(db: TestDb) {
    for to in ["a@x", "b@x", "c@x"] {
        SendEmail::enqueue(db.utils(), SendEmail { to: to.into() })
            .await
            .unwrap();
    }
    // Exactly the bound: fine.
    let report = db.run_jobs().task("send_email").max_jobs(3).await;
    assert_eq!(report.completed().len(), 3, "{report}");

    PollForever::enqueue(db.utils(), PollForever { n: 0 })
        .await
        .unwrap();
    let db = std::sync::Arc::new(db);
    let d = db.clone();
    let message = panic_message(async move {
        d.run_jobs().task("poll_forever").max_jobs(1).await;
    })
    .await;
    assert!(
        message.starts_with(
            "graphile_worker::testing: the run started 1 jobs, its bound, and stopped with more to do (a task may be enqueueing jobs forever; raise .max_jobs(n) if not):\n  job "
        ),
        "{message}"
    );

    let d = db.clone();
    let message = panic_message(async move {
        d.run_jobs().task("no_such_task").await;
    })
    .await;
    assert_eq!(
        message,
        "graphile_worker::testing: the worker has no task `no_such_task`: define it with #[task] in a crate linked into the test, or give a worker that registers it (run_job_with, or run_jobs().worker(..) with WorkerOptions::register::<T>())"
    );
}

/// Stays scheduled unless something moves it.
#[task]
async fn later_report(day: u32) {
    let _ = day;
}

#[graphile_worker::test]
async fn include_scheduled_moves_only_the_jobs_the_run_can_run(db: TestDb) {
    let in_an_hour = JobSpec {
        run_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..JobSpec::default()
    };
    LaterReport::enqueue_with(db.utils(), LaterReport { day: 1 }, in_an_hour.clone())
        .await
        .unwrap();
    SendEmail::enqueue_with(
        db.utils(),
        SendEmail {
            to: "soon@example.com".into(),
        },
        in_an_hour,
    )
    .await
    .unwrap();
    let only_email = graphile_worker::Worker::options().register::<SendEmail>();
    let report = db.run_jobs().worker(only_email).include_scheduled().await;
    assert_eq!(report.completed().len(), 1, "{report}");
    // The report job was not made due behind the run's back.
    db.assert_enqueued(
        Enqueued::<LaterReport>::new().due_in(Duration::from_secs(3600), Duration::from_secs(30)),
    )
    .await;
}
