//! The errors a user meets first (no server, a malformed URL, a database
//! nobody migrated, filters that leave no task, a bad `#[task(cron)]`)
//! name what is wrong and what to do; printing an error's whole
//! `source()` chain shows each text once; migrating logs one `info` line.

mod common;

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use common::Captured;
use graphile_worker::{
    Error, JobContext, JobSpec, MigrateError, Task, TaskError, Worker, WorkerUtils, task,
};
use graphile_worker_dev::{fresh_database, with_database};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;

#[derive(Serialize, Deserialize)]
struct Alpha {}

impl Task for Alpha {
    const IDENTIFIER: &'static str = "alpha";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Beta {}

impl Task for Beta {
    const IDENTIFIER: &'static str = "beta";
    async fn run(self, _ctx: JobContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// The only `#[task]` of this test binary: its schedule has no hour 60.
#[task(cron = "0 60 * * *")]
async fn nightly_report() {}

const URL_SHAPE: &str = "expected postgres://user:password@host:port/database";

/// A worker of `alpha` and `beta` that would connect to `url`.
fn worker_at(url: &str) -> graphile_worker::WorkerOptions {
    Worker::options()
        .register::<Alpha>()
        .register::<Beta>()
        .handle_signals(false)
        .database_url(url)
}

/// A local port where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every message of `err`'s chain, outermost first.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    std::iter::successors(Some(err), |&e| e.source())
        .map(|e| e.to_string())
        .collect()
}

/// Asserts that no error of this crate in `err`'s chain repeats the
/// message of its source. (sqlx's own errors print their cause and return
/// it too; that layer is not ours.)
fn assert_each_text_once(err: &(dyn StdError + 'static)) {
    let mut current = Some(err);
    while let Some(e) = current {
        let ours =
            e.downcast_ref::<Error>().is_some() || e.downcast_ref::<MigrateError>().is_some();
        if let (true, Some(source)) = (ours, e.source()) {
            let (message, cause) = (e.to_string(), source.to_string());
            assert!(
                !message.contains(&cause),
                "{message:?} repeats its source {cause:?}; the chain reads {:#?}",
                chain(err)
            );
        }
        current = e.source();
    }
}

#[tokio::test]
async fn a_server_that_refuses_connections_is_reported_at_once_with_its_address() {
    let port = closed_port();
    let started = Instant::now();
    let err = worker_at(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .init()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        matches!(&err, Error::Connect { target, .. } if *target == format!("127.0.0.1:{port}")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "could not connect to PostgreSQL at 127.0.0.1:{port}: Connection refused (os error 111); is the server running and accepting TCP connections there?"
        )
    );
    assert!(err.source().is_none(), "the cause is printed, not chained");
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_named_with_the_way_out() {
    let url = with_database(&graphile_worker_dev::server_url(), "gw_no_such_database");
    let options: PgConnectOptions = url.parse().unwrap();
    let err = worker_at(&url).init().await.unwrap_err();
    let Error::Connect { target, .. } = &err else {
        panic!("expected Error::Connect, got {err:?}");
    };
    if options.get_socket().is_none() && !options.get_host().starts_with('/') {
        assert_eq!(
            *target,
            format!("{}:{}", options.get_host(), options.get_port())
        );
    }
    assert_eq!(
        err.to_string(),
        format!(
            "could not connect to PostgreSQL at {target}: database \"gw_no_such_database\" does not exist; create that database, or fix its name in the database URL"
        )
    );
}

#[tokio::test]
async fn a_malformed_url_says_what_a_url_looks_like_and_keeps_the_password_out() {
    for (url, reason) in [
        ("localhost/app", "relative URL without a base"),
        (
            "postgres://app:s3cret@db.example.com:port/app",
            "invalid port number",
        ),
        (
            "localhost:5432/app",
            "it starts with `localhost:`, not `postgres:` or `postgresql:`",
        ),
        (
            "app:s3cret@db.example.com/app",
            "it starts with `app:`, not `postgres:` or `postgresql:`",
        ),
        ("", "it is empty"),
        ("  ", "it is empty"),
    ] {
        let started = Instant::now();
        let err = worker_at(url).init().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{url:?}");
        assert!(
            matches!(&err, Error::InvalidDatabaseUrl { .. }),
            "{url:?}: {err:?}"
        );
        let message = err.to_string();
        assert_eq!(
            message,
            format!("invalid database URL: {reason}; {URL_SHAPE}"),
            "{url:?}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
}

#[tokio::test]
async fn using_a_database_nobody_migrated_says_to_call_migrate() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let expected = |schema: &str| {
        format!(
            "the {schema} schema is not installed in this database; call WorkerUtils::migrate() (or start a worker, which installs it) first"
        )
    };
    for schema in ["graphile_worker", "app_jobs"] {
        let utils = WorkerUtils::new(pool.clone(), schema);
        let errors = [
            (
                "add_raw_job",
                utils
                    .add_raw_job("alpha", serde_json::json!({}), JobSpec::default())
                    .await
                    .unwrap_err(),
            ),
            (
                "add_job",
                utils
                    .add_job(Alpha {}, JobSpec::default())
                    .await
                    .unwrap_err(),
            ),
            (
                "complete_jobs",
                utils.complete_jobs(&[1]).await.unwrap_err(),
            ),
            (
                "remove_job",
                utils.remove_job("some-key").await.unwrap_err(),
            ),
            ("list_workers", utils.list_workers().await.unwrap_err()),
        ];
        for (call, err) in errors {
            assert!(
                matches!(&err, Error::SchemaNotInstalled { schema: s } if s == schema),
                "{call} on {schema}: {err:?}"
            );
            assert_eq!(err.to_string(), expected(schema), "{call} on {schema}");
        }
    }

    // Other database errors stay database errors, with PostgreSQL's message
    // and SQLSTATE but not the line of PostgreSQL's own source.
    let err = Error::from(
        sqlx::query("select 1 / 0")
            .execute(&pool)
            .await
            .unwrap_err(),
    );
    assert!(matches!(&err, Error::Database(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "database error: division by zero (SQLSTATE 22012)"
    );
    let err = Error::from(
        sqlx::query("select * from elsewhere.things")
            .execute(&pool)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.to_string(),
        "database error: relation \"elsewhere.things\" does not exist (SQLSTATE 42P01)"
    );
}

#[tokio::test]
async fn filters_that_leave_no_task_list_the_registered_ones() {
    let unreachable = "postgres://postgres@127.0.0.1:1/postgres";
    for options in [
        worker_at(unreachable).except(&["alpha", "beta"]),
        worker_at(unreachable).only(&[]),
    ] {
        let err = options.init().await.unwrap_err();
        assert!(matches!(&err, Error::NoTasksLeft { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "only()/except() left this worker no tasks to run; the registered tasks are `alpha`, `beta`: let at least one of them through"
        );
    }
    // With nothing registered at all, the hint is still about linking.
    let err = Worker::options()
        .database_url(unreachable)
        .init()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoTasks), "{err:?}");
}

#[tokio::test]
async fn an_invalid_task_cron_pattern_names_the_task_and_where_it_is_defined() {
    let location = graphile_worker::registered_tasks()
        .find(|t| t.identifier() == "nightly_report")
        .map(|t| t.location())
        .unwrap();
    assert!(location.contains("errors_user_facing.rs"), "{location}");
    let err = Worker::from_registry()
        .handle_signals(false)
        .database_url("postgres://postgres@127.0.0.1:1/postgres")
        .init()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TaskCron { task, .. } if task == "nightly_report"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "task `nightly_report` (defined at {location}) has an invalid cron pattern \"0 60 * * *\": column 3: too large value '60' in hours range: expected values in the range 0-23; fix its #[task(cron = ...)]"
        )
    );
}

#[test]
fn a_task_without_its_data_says_how_to_register_it() {
    let err = Error::MissingData {
        task: "send_email".into(),
        type_name: "app::Mailer".into(),
    };
    assert_eq!(
        err.to_string(),
        "task `send_email` takes `Data<app::Mailer>`, but the worker has no value of that type; register one with WorkerOptions::data(value)"
    );
}

#[tokio::test]
async fn no_error_repeats_its_cause_in_a_printed_chain() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let division = || async {
        sqlx::query("select 1 / 0")
            .execute(&pool)
            .await
            .unwrap_err()
    };
    let port = closed_port();
    let mut errors: Vec<Error> = vec![
        worker_at(&format!("postgres://127.0.0.1:{port}/x"))
            .init()
            .await
            .unwrap_err(),
        worker_at("localhost/app").init().await.unwrap_err(),
        worker_at("postgres://127.0.0.1:1/x")
            .crontab("61 * * * * alpha")
            .init()
            .await
            .unwrap_err(),
        Worker::from_registry()
            .database_url("postgres://127.0.0.1:1/x")
            .init()
            .await
            .unwrap_err(),
        worker_at("postgres://127.0.0.1:1/x")
            .except(&["alpha", "beta"])
            .init()
            .await
            .unwrap_err(),
        WorkerUtils::new(pool.clone(), "graphile_worker")
            .add_raw_job("alpha", serde_json::json!({}), JobSpec::default())
            .await
            .unwrap_err(),
        Error::from(division().await),
        MigrateError::Failed {
            migration: 7,
            error: division().await,
        }
        .into(),
        MigrateError::LockedJobs {
            source: division().await,
        }
        .into(),
        MigrateError::Ledger(division().await).into(),
        Error::Serialize {
            identifier: "alpha".into(),
            source: serde_json::from_str::<serde_json::Value>("{").unwrap_err(),
        },
    ];
    errors.push(Error::Crontab(
        graphile_worker::parse_crontab("* * * *").unwrap_err(),
    ));
    for err in &errors {
        assert_each_text_once(err);
    }

    // The printed causes are exact.
    assert_eq!(
        errors[2].to_string(),
        "invalid crontab: line 1, column 1 of crontab: too large value '61' in minutes range: expected values in the range 0-59"
    );
    assert_eq!(
        errors[7].to_string(),
        "migration 7 failed and was rolled back: division by zero (SQLSTATE 22012); fix the cause and migrate again"
    );
    assert_eq!(
        errors[9].to_string(),
        "could not read or create the migrations ledger: division by zero (SQLSTATE 22012); check that the database user may create the schema and its tables"
    );
    // A cause that is not printed is the source, so it is not lost.
    let serialize = &errors[10];
    assert_eq!(
        serialize.to_string(),
        "could not serialise the payload for task `alpha` to JSON; change the payload's type or value so serde_json accepts it (map keys must be strings, for example)"
    );
    assert_eq!(
        chain(serialize)[1],
        "EOF while parsing an object at line 1 column 1"
    );
    assert!(errors[8].source().is_some(), "LockedJobs keeps its cause");
}

#[tokio::test]
async fn migrating_logs_one_info_line_and_nothing_at_info_when_up_to_date() {
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");

    let info_lines = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(" INFO ") && l.contains("graphile_worker::migrate"))
            .map(str::to_owned)
            .collect()
    };
    let captured = || {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (captured, subscriber)
    };

    // A fresh install: one line for all twenty; each migration at debug.
    let (log, subscriber) = captured();
    let guard = tracing::subscriber::set_default(subscriber);
    utils.migrate().await.unwrap();
    drop(guard);
    let log = log.text();
    let info = info_lines(&log);
    assert_eq!(info.len(), 1, "{log}");
    assert!(
        info[0].contains("installed the graphile_worker schema: migrations 1..=20 in ")
            && info[0].contains(" ms "),
        "{}",
        info[0]
    );
    assert!(
        log.lines().any(|l| l.contains(" DEBUG ")
            && l.contains("applied migration")
            && l.contains("migration=20")),
        "{log}"
    );

    // Up to date: nothing at info.
    let (log, subscriber) = captured();
    let guard = tracing::subscriber::set_default(subscriber);
    utils.migrate().await.unwrap();
    drop(guard);
    let log = log.text();
    assert!(info_lines(&log).is_empty(), "{log}");
    assert!(
        log.contains("the graphile_worker schema is up to date; no migration applied"),
        "{log}"
    );

    // An upgrade names where it started.
    let db = fresh_database().await;
    let pool = db.pool(2).await;
    graphile_worker::testing::migrate_until(&pool, "graphile_worker", 18)
        .await
        .unwrap();
    let (log, subscriber) = captured();
    let guard = tracing::subscriber::set_default(subscriber);
    WorkerUtils::new(pool.clone(), "graphile_worker")
        .migrate()
        .await
        .unwrap();
    drop(guard);
    let log = log.text();
    let info = info_lines(&log);
    assert_eq!(info.len(), 1, "{log}");
    assert!(
        info[0]
            .contains("upgraded the graphile_worker schema from 18 to 20 (migrations 19..=20) in "),
        "{}",
        info[0]
    );
}
