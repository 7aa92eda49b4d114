//! The commands embedded in an application's own binary: `run` runs the
//! application's tasks, and `--tasks` is refused there.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use graphile_worker::{JobSpec, Worker, task};
use graphile_worker_cli::{Cli, CliError, Tasks};
use serde_json::json;
use support::{database, job_count};

static RAN: AtomicUsize = AtomicUsize::new(0);

/// The application's own task.
#[task]
async fn embedded_greet(name: String) {
    assert_eq!(name, "ada");
    RAN.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_runs_the_applications_tasks() {
    let (db, utils) = database(true).await;
    utils
        .add_raw_job("embedded_greet", json!({"name": "ada"}), JobSpec::default())
        .await
        .unwrap();
    let cli = Cli::try_parse_from(["myapp", "-c", &db.url, "run", "--once", "-j", "2"]).unwrap();
    let tasks = Tasks::Options(Box::new(|| Worker::options().register::<EmbeddedGreet>()));
    graphile_worker_cli::execute(cli, tasks).await.unwrap();
    assert_eq!(RAN.load(Ordering::SeqCst), 1);
    assert_eq!(job_count(&utils).await, 0);

    let cli =
        Cli::try_parse_from(["myapp", "-c", &db.url, "run", "--once", "--tasks", "x"]).unwrap();
    let err = graphile_worker_cli::execute(cli, Tasks::Registry)
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::Usage(_)));
    assert_eq!(
        err.to_string(),
        "this program runs its own tasks; --tasks is for the standalone graphile-worker command"
    );
}
