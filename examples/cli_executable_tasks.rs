//! Executable tasks under the `graphile-worker` command: each task is a
//! program named after its identifier in a tasks directory, in any
//! language, following Node graphile-worker's protocol.
//!
//! ```sh
//! cargo run --example cli_executable_tasks
//! ```
//!
//! The program writes two shell scripts into a temporary `tasks/`
//! directory, then runs the same commands you would type, through the CLI's
//! library (`graphile_worker_cli::execute`, which is what the binary runs):
//!
//! ```text
//! graphile-worker migrate
//! graphile-worker jobs add resize_image '{"path": "cat.png", "width": 200}'
//! graphile-worker jobs add resize_image '{"path": "missing.png", "width": 200}'
//! graphile-worker run --once --tasks tasks/
//! graphile-worker jobs list
//! ```
//!
//! A task gets `{"payload": …}` on standard input and the job's details in
//! `GRAPHILE_WORKER_*` variables; exit status 0 completes the job, anything
//! else fails it with the last lines of standard error as its error. No
//! database needs to be configured (a throwaway PostgreSQL, or
//! `DATABASE_URL`).

use std::os::unix::fs::PermissionsExt as _;
use std::process::ExitCode;

use clap::Parser as _;
use graphile_worker_cli::{Cli, Tasks, execute};

/// The `resize_image` task, as a shell script: reads the payload, fails
/// for a file that does not exist.
const RESIZE_IMAGE: &str = r#"#!/bin/sh
input=$(cat)
case "$input" in
  *missing.png*) echo "resize_image: missing.png does not exist" >&2; exit 1 ;;
esac
echo "  resize_image (job $GRAPHILE_WORKER_JOB_ID, attempt $GRAPHILE_WORKER_JOB_ATTEMPTS): $input"
"#;

/// Runs one `graphile-worker` command line (without the program name) on
/// the database at `url` (the CLI also reads `DATABASE_URL`).
async fn graphile_worker(url: &str, args: &[&str]) -> Result<ExitCode, Box<dyn std::error::Error>> {
    println!("$ graphile-worker {}", args.join(" "));
    let argv = ["graphile-worker", "--database-url", url]
        .into_iter()
        .chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv)?;
    Ok(execute(cli, Tasks::Executables).await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = graphile_worker_dev::fresh_database().await;

    let dir = std::env::temp_dir().join(format!("gw-example-tasks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("resize_image");
    std::fs::write(&script, RESIZE_IMAGE)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let tasks = dir.to_string_lossy().into_owned();

    graphile_worker(&db.url, &["migrate"]).await?;
    graphile_worker(
        &db.url,
        &[
            "jobs",
            "add",
            "resize_image",
            r#"{"path": "cat.png", "width": 200}"#,
        ],
    )
    .await?;
    graphile_worker(
        &db.url,
        &[
            "jobs",
            "add",
            "resize_image",
            r#"{"path": "missing.png", "width": 200}"#,
        ],
    )
    .await?;
    graphile_worker(&db.url, &["run", "--once", "--tasks", &tasks]).await?;
    graphile_worker(&db.url, &["jobs", "list"]).await?;

    // What the failed job recorded (the list above cuts long errors).
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let failed: Vec<(i64, String)> = sqlx::query_as(
        "select id, last_error from graphile_worker.jobs where last_error is not null",
    )
    .fetch_all(&pool)
    .await?;
    for (id, error) in failed {
        println!("job {id} will be retried; its error: {error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
