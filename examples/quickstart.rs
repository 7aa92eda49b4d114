//! Quick start: define two tasks, add a few jobs, run a worker over them.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! No database needs to be configured: the example creates a new database on
//! a throwaway PostgreSQL server started from the installed server binaries
//! (removed when the program exits), or on the server `DATABASE_URL` points
//! at when that is set. An application would pass its own database URL.
//!
//! Set `RUST_LOG` to change what the library logs (default: `info` for
//! `graphile_worker`, one line per job, without the line per migration).

use chrono::{Duration, Utc};
use graphile_worker::{JobContext, JobSpec, Worker, WorkerUtils, task};
use tracing_subscriber::EnvFilter;

/// Sends one email (here: prints it). An address without `@` is an error,
/// which fails the job; it is then retried later with backoff.
#[task]
async fn send_email(ctx: JobContext, to: String, subject: String) -> Result<(), String> {
    if !to.contains('@') {
        return Err(format!("`{to}` is not an email address"));
    }
    println!(
        "  send_email: \"{subject}\" to {to} (job {}, attempt {} of {})",
        ctx.job_id(),
        ctx.attempts(),
        ctx.max_attempts()
    );
    Ok(())
}

/// Welcomes a new user: does its own work, then enqueues the welcome email
/// as a follow-up job through the context's `WorkerUtils`.
#[task]
async fn welcome_user(
    ctx: JobContext,
    user_id: i64,
    email: String,
) -> Result<(), graphile_worker::Error> {
    println!("  welcome_user: user {user_id} signed up; queueing their welcome email");
    let follow_up = SendEmail {
        to: email,
        subject: "Welcome aboard".into(),
    };
    SendEmail::enqueue(ctx.utils(), follow_up).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("graphile_worker=info,graphile_worker::migrate=warn")
        }))
        .with_target(false)
        .init();

    // A database to play with. In an application: your own DATABASE_URL.
    let db = graphile_worker_dev::fresh_database().await;
    println!("Using the new, empty database `{}`.", db.name);
    let pool = sqlx::PgPool::connect(&db.url).await?;

    // Producers add jobs through WorkerUtils. migrate() installs the
    // graphile_worker schema (the worker's init() would do it too).
    let utils = WorkerUtils::new(pool.clone(), "graphile_worker");
    utils.migrate().await?;

    println!("\nAdding jobs:");
    let welcome = WelcomeUser::enqueue(
        &utils,
        WelcomeUser {
            user_id: 1,
            email: "ada@example.com".into(),
        },
    )
    .await?;
    println!("  job {}: welcome_user for user 1", welcome.id);

    // Options for one job: a named queue (its jobs run one at a time, in
    // order), a priority (smaller runs first) and a run_at in the past,
    // which means "due now".
    let invoice_spec = JobSpec {
        queue_name: Some("emails".into()),
        priority: Some(-1),
        run_at: Some(Utc::now() - Duration::minutes(5)),
        ..JobSpec::default()
    };
    let invoice = SendEmail::enqueue_with(
        &utils,
        SendEmail {
            to: "grace@example.com".into(),
            subject: "Your invoice".into(),
        },
        invoice_spec,
    )
    .await?;
    println!(
        "  job {}: send_email in queue `emails`, priority -1, due 5 minutes ago",
        invoice.id
    );

    let broken = SendEmail::enqueue(
        &utils,
        SendEmail {
            to: "not-an-address".into(),
            subject: "Hello".into(),
        },
    )
    .await?;
    println!("  job {}: send_email to an invalid address", broken.id);

    let later_spec = JobSpec {
        run_at: Some(Utc::now() + Duration::hours(1)),
        ..JobSpec::default()
    };
    let later = SendEmail::enqueue_with(
        &utils,
        SendEmail {
            to: "alan@example.com".into(),
            subject: "Reminder".into(),
        },
        later_spec,
    )
    .await?;
    println!("  job {}: send_email due in an hour", later.id);

    // A worker running every #[task] linked into this program. run_once()
    // runs every job that is due, including follow-ups added meanwhile, then
    // returns; run() would keep going until SIGINT/SIGTERM.
    let worker = Worker::from_registry().pg_pool(pool.clone()).init().await?;
    println!("\nRunning the due jobs (concurrency 1, highest priority first):");
    worker.run_once().await?;

    println!("\nWhat is left in the jobs table:");
    let left: Vec<JobRow> = sqlx::query_as(
        "select id, task_identifier, attempts, max_attempts, run_at, last_error
           from graphile_worker.jobs order by id",
    )
    .fetch_all(&pool)
    .await?;
    for (id, task, attempts, max_attempts, run_at, last_error) in &left {
        let wait = ((*run_at - Utc::now()).num_milliseconds().max(0) as f64 / 1000.0).round();
        match last_error {
            Some(error) => println!(
                "  job {id} ({task}) failed attempt {attempts} of {max_attempts} with \"{error}\"; \
                 it will be retried in about {wait} s"
            ),
            None => println!("  job {id} ({task}) is not due yet: it runs in about {wait} s"),
        }
    }
    println!("Every other job completed (completed jobs are deleted).");
    Ok(())
}

/// id, task, attempts, max_attempts, run_at, last_error.
type JobRow = (i64, String, i16, i16, chrono::DateTime<Utc>, Option<String>);
