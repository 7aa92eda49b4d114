//! `WorkerOptions::from_env`: the database (DATABASE_URL, or libpq's PG*
//! variables), schema, concurrency, poll interval and crontab file from the
//! environment, builder calls winning, and clear errors. Each case runs this
//! file's `env_probe` in a child process with its own environment (the
//! environment is process-wide, and tests run in parallel).

mod common;

use std::process::Command;

use common::migrated;
use graphile_worker::{JobContext, Worker, task};
use graphile_worker_dev::with_database;

/// Does nothing; the probe needs one task.
#[task]
async fn env_noop(_ctx: JobContext) {}

/// Builds a worker from the environment (plus builder calls when
/// `PROBE_EXPLICIT` is set) and prints what it got.
#[tokio::test]
#[ignore = "run by the other tests of this file, in a child process"]
async fn env_probe() {
    let mut options = Worker::from_registry().handle_signals(false);
    if std::env::var_os("PROBE_EXPLICIT").is_some() {
        // Before from_env, to show that order does not matter.
        options = options.concurrency(5).schema("explicit_schema");
    }
    options = options.from_env();
    if std::env::var_os("PROBE_EXPLICIT").is_some() {
        options = options
            .poll_interval(std::time::Duration::from_millis(700))
            .crontab("0 3 * * * env_noop ?id=from_builder");
    }
    match options.init().await {
        Ok(worker) => {
            let database: String = sqlx::query_scalar("select current_database()")
                .fetch_one(worker.utils().pool())
                .await
                .unwrap();
            let cron: Vec<&str> = worker
                .cron_items()
                .iter()
                .map(|i| i.identifier.as_str())
                .collect();
            println!(
                "@@ probe: database={database} schema={} concurrency={} poll_ms={} cron={}",
                worker.utils().schema(),
                worker.concurrency(),
                worker.poll_interval().as_millis(),
                cron.join(",")
            );
        }
        Err(e) => println!("@@ probe error: {e}"),
    }
}

/// Runs the probe with exactly `vars` of ours set; returns its line.
fn probe(vars: &[(&str, &str)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        "env_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for name in [
        "DATABASE_URL",
        "PGDATABASE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "GRAPHILE_WORKER_SCHEMA",
        "GRAPHILE_WORKER_CONCURRENCY",
        "GRAPHILE_WORKER_POLL_INTERVAL",
        "GRAPHILE_WORKER_CRONTAB_FILE",
        "PROBE_EXPLICIT",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.find("@@ ").map(|at| &l[at + 3..]))
        .unwrap_or_else(|| {
            panic!(
                "no probe line:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_the_environment_and_builder_calls_win() {
    let (db, _pool, _utils) = migrated().await;
    let dir = std::env::temp_dir().join(format!("gw-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let crontab = dir.join("crontab");
    std::fs::write(&crontab, "0 4 * * * env_noop ?id=from_env_file\n").unwrap();
    let crontab = crontab.to_string_lossy().into_owned();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("GRAPHILE_WORKER_SCHEMA", "env_schema"),
        ("GRAPHILE_WORKER_CONCURRENCY", "3"),
        ("GRAPHILE_WORKER_POLL_INTERVAL", "250"),
        ("GRAPHILE_WORKER_CRONTAB_FILE", crontab.as_str()),
    ];
    let line = tokio::task::block_in_place(|| probe(&env));
    assert_eq!(
        line,
        format!(
            "probe: database={} schema=env_schema concurrency=3 poll_ms=250 cron=from_env_file",
            db.name
        )
    );

    let mut explicit = env.to_vec();
    explicit.push(("PROBE_EXPLICIT", "1"));
    let line = tokio::task::block_in_place(|| probe(&explicit));
    assert_eq!(
        line,
        format!(
            "probe: database={} schema=explicit_schema concurrency=5 poll_ms=700 cron=from_builder",
            db.name
        )
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_variables_when_database_url_is_unset() {
    let (db, _pool, _utils) = migrated().await;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let port = options.get_port().to_string();
    let host = options.get_host().to_owned();
    let user = options.get_username().to_owned();
    let name = db.name.clone();
    let line = tokio::task::spawn_blocking(move || {
        probe(&[
            ("PGHOST", host.as_str()),
            ("PGPORT", port.as_str()),
            ("PGUSER", user.as_str()),
            ("PGDATABASE", name.as_str()),
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        line,
        format!(
            "probe: database={} schema=graphile_worker concurrency=1 poll_ms=2000 cron=",
            db.name
        )
    );
    // The URL of the same server wins over PG* when both are set.
    let other = with_database(&db.url, "postgres");
    let name = db.name.clone();
    let line = tokio::task::spawn_blocking(move || {
        probe(&[
            ("DATABASE_URL", other.as_str()),
            ("PGDATABASE", name.as_str()),
        ])
    })
    .await
    .unwrap();
    assert!(line.starts_with("probe: database=postgres "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_values_are_named() {
    let (db, _pool, _utils) = migrated().await;
    let url = db.url.clone();
    let line = tokio::task::spawn_blocking(move || {
        probe(&[
            ("DATABASE_URL", url.as_str()),
            ("GRAPHILE_WORKER_CONCURRENCY", "lots"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        line,
        "probe error: invalid worker configuration: GRAPHILE_WORKER_CONCURRENCY is \"lots\": give a whole number of jobs, at least 1"
    );
    let url = db.url.clone();
    let line = tokio::task::spawn_blocking(move || {
        probe(&[
            ("DATABASE_URL", url.as_str()),
            ("GRAPHILE_WORKER_POLL_INTERVAL", "0"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        line,
        "probe error: invalid worker configuration: GRAPHILE_WORKER_POLL_INTERVAL is \"0\": give a whole number of milliseconds, at least 1"
    );
    let line = tokio::task::spawn_blocking(|| probe(&[])).await.unwrap();
    assert_eq!(
        line,
        "probe error: invalid worker configuration: no database: set DATABASE_URL (or PGDATABASE and the other PG* variables), or call database_url(..) or pg_pool(..)"
    );
}
