//! `graphile-worker run` with executable tasks, and connection errors.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use graphile_worker::{JobSpec, JobState};
use serde_json::json;
use support::{database, gw, gw_at, job_count};

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executable_tasks_get_the_payload_and_the_job_in_their_environment() {
    let (db, utils) = database(true).await;
    let dir = temp_dir("exec");
    let seen = dir.join("seen.txt");
    script(
        &dir,
        "record",
        &format!(
            "{{ cat; env | grep '^GRAPHILE_WORKER_' | sort; }} > '{}'",
            seen.display()
        ),
    );
    script(
        &dir,
        "explode",
        "echo 'first line' >&2\necho 'the disk is full' >&2\nexit 3",
    );
    std::fs::write(dir.join("notes.txt"), "not executable").unwrap();

    let ok = utils
        .add_raw_job(
            "record",
            json!({"n": 1}),
            JobSpec {
                job_key: Some("k-1".into()),
                priority: Some(2),
                ..JobSpec::default()
            },
        )
        .await
        .unwrap();
    let bad = utils
        .add_raw_job("explode", json!({}), JobSpec::default())
        .await
        .unwrap();

    let tasks = dir.to_string_lossy().into_owned();
    gw(&db, &["run", "--once", "--tasks", &tasks]).await.ok();

    let seen = std::fs::read_to_string(&seen).unwrap();
    let mut lines = seen.lines();
    let input: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(input, json!({"payload": {"n": 1}}));
    for expected in [
        "GRAPHILE_WORKER_JOB_ATTEMPTS=1".to_owned(),
        format!("GRAPHILE_WORKER_JOB_ID={}", ok.id),
        "GRAPHILE_WORKER_JOB_KEY=k-1".to_owned(),
        "GRAPHILE_WORKER_JOB_MAX_ATTEMPTS=25".to_owned(),
        "GRAPHILE_WORKER_JOB_PRIORITY=2".to_owned(),
        "GRAPHILE_WORKER_PAYLOAD_FORMAT=json".to_owned(),
        "GRAPHILE_WORKER_TASK_IDENTIFIER=record".to_owned(),
    ] {
        assert!(
            seen.lines().any(|l| l == expected),
            "{expected} missing from:\n{seen}"
        );
    }
    assert!(seen.contains("GRAPHILE_WORKER_JOB_RUN_AT="), "{seen}");
    assert!(
        utils.get_job(ok.id).await.unwrap().is_none(),
        "the job that succeeded is gone"
    );

    let failed = utils.get_job(bad.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Retrying);
    assert_eq!(failed.job.attempts, 1);
    let error = failed.job.last_error.unwrap();
    assert!(error.contains("explode exited with status 3"), "{error}");
    assert!(error.ends_with("first line\nthe disk is full"), "{error}");
    assert_eq!(job_count(&utils).await, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_task_executables_says_what_it_needs() {
    let (db, _utils) = database(true).await;
    let dir = temp_dir("empty");
    let run = gw(&db, &["run", "--once", "--tasks", &dir.to_string_lossy()])
        .await
        .expect_code(1);
    assert!(
        run.stderr.contains("no task executables in"),
        "{}",
        run.stderr
    );
    let run = gw(&db, &["run", "--once", "--tasks", "/no/such/dir"])
        .await
        .expect_code(1);
    assert!(
        run.stderr
            .contains("could not read the task directory /no/such/dir"),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_say_where() {
    let run = gw_at(None, &["jobs", "list"]).await.expect_code(2);
    assert!(
        run.stderr
            .contains("no database given: pass --database-url (-c) or set DATABASE_URL"),
        "{}",
        run.stderr
    );
    let run = gw_at(Some("postgres://nobody@127.0.0.1:1/app"), &["stats"])
        .await
        .expect_code(1);
    assert!(
        run.stderr
            .contains("could not connect to the database at 127.0.0.1:1/app"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("nobody@"),
        "no credentials in errors: {}",
        run.stderr
    );
    let run = gw_at(Some("postgres://app@db.example:notaport/app"), &["stats"])
        .await
        .expect_code(2);
    assert!(
        run.stderr.contains("the database URL is not valid"),
        "{}",
        run.stderr
    );

    let (db, _utils) = database(false).await;
    let run = gw(&db, &["jobs", "list"]).await.expect_code(1);
    assert!(
        run.stderr.contains("the graphile_worker schema is not installed in this database; run `graphile-worker migrate` first"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_unset_settings_from_the_environment() {
    let (db, _utils) = database(true).await;
    let dir = temp_dir("env-tasks");
    script(&dir, "noop", "exit 0");
    let tasks = dir.to_string_lossy().into_owned();
    let url = db.url.clone();
    let run = move |extra: &[&str]| {
        let mut cmd = assert_cmd::Command::new(support::BIN);
        cmd.env("DATABASE_URL", &url)
            .env_remove("GRAPHILE_WORKER_SCHEMA")
            .env("GRAPHILE_WORKER_CONCURRENCY", "lots")
            .args(["run", "--once", "--tasks", &tasks])
            .args(extra)
            .timeout(std::time::Duration::from_secs(60));
        let output = cmd.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = tokio::task::block_in_place(|| run(&[]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "GRAPHILE_WORKER_CONCURRENCY is \"lots\": give a whole number of jobs, at least 1"
        ),
        "{stderr}"
    );
    // A flag wins over the variable.
    let (code, stderr) = tokio::task::block_in_place(|| run(&["-j", "2"]));
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_with_no_prepared_statements() {
    let (db, utils) = database(false).await;
    let bouncer = graphile_worker_dev::pgbouncer::PgBouncer::start(&db.url);
    let url = Some(bouncer.url());
    let np = "--no-prepared-statements";
    gw_at(url, &[np, "migrate"]).await.ok();
    let added = gw_at(url, &[np, "--json", "jobs", "add", "record", r#"{"n":1}"#])
        .await
        .ok()
        .json();
    let listed = gw_at(url, &[np, "--json", "jobs", "list"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], added["id"]);

    let dir = temp_dir("bouncer");
    let seen = dir.join("seen.txt");
    script(&dir, "record", &format!("cat >> '{}'", seen.display()));
    let tasks = dir.to_string_lossy().into_owned();
    gw_at(
        url,
        &[
            np,
            "run",
            "--once",
            "--tasks",
            &tasks,
            "--listen-url",
            &db.url,
        ],
    )
    .await
    .ok();
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "{\"payload\":{\"n\":1}}\n"
    );
    assert_eq!(job_count(&utils).await, 0);

    // Without the flag, PgBouncer refuses sqlx's startup parameter, and
    // the message says so.
    let refused = gw_at(url, &["jobs", "list"]).await.expect_code(1);
    assert!(
        refused.stderr.contains("extra_float_digits"),
        "{}",
        refused.stderr
    );
    let alone = gw_at(url, &["run", "--once", "--listen-url", &db.url])
        .await
        .expect_code(2);
    assert!(
        alone
            .stderr
            .contains("--listen-url is for --no-prepared-statements"),
        "{}",
        alone.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
