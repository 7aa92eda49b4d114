//! The `graphile-worker` command: run a worker and administer jobs from a
//! terminal.
//!
//! The binary (`cargo install --path graphile-worker-cli`) runs tasks that
//! are executables in a directory, as Node graphile-worker does. An
//! application embeds the same commands in its own binary to run its own
//! `#[task]`s:
//!
//! ```no_run
//! use clap::Parser;
//! use graphile_worker_cli::{Cli, Tasks};
//!
//! #[derive(Parser)]
//! enum MyApp {
//!     /// Run and administer the background jobs.
//!     #[command(subcommand)]
//!     Worker(graphile_worker_cli::Command),
//!     // … the application's own commands
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     match MyApp::parse() {
//!         // `myapp worker run`, `myapp worker jobs list --state failed`, …
//!         MyApp::Worker(command) => graphile_worker_cli::run_command(
//!             Cli::from_env(command),
//!             Tasks::Registry,
//!         ),
//!     }
//! }
//! ```
//!
//! Exit codes: 0 success, 1 an error (one line on stderr), 2 a usage
//! error, 3 `migrate --check` found migrations pending.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use graphile_worker::{JobState, WorkerOptions};

mod admin;
mod connect;
mod error;
mod jobs;
mod output;
mod run;
mod serve;
mod time;
mod ui;

pub use error::CliError;

/// The default schema, as Node graphile-worker's.
pub const DEFAULT_SCHEMA: &str = "graphile_worker";

/// Run graphile-worker jobs and administer the queue in PostgreSQL.
///
/// Works on the same schema as Node graphile-worker 0.18: jobs added by
/// either are listed, retried and run by both.
#[derive(Debug, Parser)]
#[command(name = "graphile-worker", version, propagate_version = true)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(
        short = 'c',
        long,
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// The worker schema.
    #[arg(
        short = 's',
        long,
        env = "GRAPHILE_WORKER_SCHEMA",
        default_value = DEFAULT_SCHEMA,
        global = true
    )]
    pub schema: String,

    /// Print data as JSON on stdout (one value: an object, or an array for
    /// lists).
    #[arg(long, global = true)]
    pub json: bool,

    /// Send no named prepared statements: for a database URL that goes
    /// through PgBouncer in transaction pooling mode (`run` then polls for
    /// jobs unless given --listen-url).
    #[arg(long, global = true)]
    pub no_prepared_statements: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// A `Cli` for `command` with the connection settings taken from the
    /// environment (`DATABASE_URL`, `GRAPHILE_WORKER_SCHEMA`) and text
    /// output: for embedding [`Command`] as a subcommand of your own.
    pub fn from_env(command: Command) -> Self {
        Cli {
            database_url: std::env::var("DATABASE_URL").ok(),
            schema: std::env::var("GRAPHILE_WORKER_SCHEMA")
                .unwrap_or_else(|_| DEFAULT_SCHEMA.to_owned()),
            json: false,
            no_prepared_statements: false,
            command,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade the worker schema (Node's --schema-only).
    Migrate(MigrateArgs),
    /// Run a worker until SIGINT or SIGTERM (or, with --once, until nothing
    /// is due).
    Run(RunArgs),
    /// Add, list, show, retry, reschedule, complete, fail and remove jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The named queues.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Registered workers and lock holders; unlock and recover.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Check a crontab; list the schedules the database knows.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Node graphile-worker's cleanup tasks.
    Cleanup(CleanupArgs),
    /// Jobs by state, task and queue, and how long the oldest ready job has
    /// waited.
    Stats,
    /// Serve the admin web UI until Ctrl-C: dashboard, jobs, queues,
    /// workers, cron. Loopback only unless --basic-auth or --read-only.
    Ui(UiArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell (bash, elvish, fish, powershell or zsh).
        shell: clap_complete::Shell,
    },
}

/// `ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Where to listen. Another address than loopback needs --basic-auth or
    /// --read-only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub bind: std::net::SocketAddr,
    /// Show everything, change nothing: no buttons, and every POST is
    /// refused.
    #[arg(long)]
    pub read_only: bool,
    /// Ask for this user and password (HTTP basic authentication).
    #[arg(long, value_name = "USER:PASS")]
    pub basic_auth: Option<String>,
    /// A crontab, to show when each schedule fires next.
    #[arg(long, value_name = "FILE")]
    pub crontab: Option<PathBuf>,
    /// Never show job payloads.
    #[arg(long)]
    pub hide_payloads: bool,
}

/// `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Change nothing: exit 0 when the schema is current, 3 when
    /// migrations are pending; a database newer than this build is an
    /// error.
    #[arg(long, conflicts_with = "status")]
    pub check: bool,
    /// Change nothing: list the applied migrations, their breaking flag,
    /// and what this build knows.
    #[arg(long)]
    pub status: bool,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How many jobs run at once [default: GRAPHILE_WORKER_CONCURRENCY, else
    /// 1].
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Run the jobs that are due, then exit.
    #[arg(long)]
    pub once: bool,
    /// A crontab file of recurring jobs [default:
    /// GRAPHILE_WORKER_CRONTAB_FILE, else none].
    #[arg(long, value_name = "FILE")]
    pub crontab: Option<PathBuf>,
    /// How often to look for jobs when no notification arrives, in
    /// milliseconds [default: GRAPHILE_WORKER_POLL_INTERVAL, else 2000].
    #[arg(long, value_name = "MS")]
    pub poll_interval: Option<u64>,
    /// The most database connections the worker opens.
    #[arg(long, value_name = "N")]
    pub max_pool_size: Option<u32>,
    /// The directory of task executables, each named after its task
    /// identifier (standalone command only).
    #[arg(long, value_name = "DIR")]
    pub tasks: Option<PathBuf>,
    /// Serve Prometheus metrics at /metrics, and /healthz (the process is
    /// up) and /readyz (connected, registered, heartbeats landing; 503 and
    /// the reason otherwise) on this address, such as 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// With --no-prepared-statements: a direct connection to PostgreSQL
    /// (not through PgBouncer) to LISTEN on, so that new jobs start at
    /// once instead of at the next poll; heartbeats use it too, so a busy
    /// PgBouncer cannot delay them.
    #[arg(long, value_name = "URL")]
    pub listen_url: Option<String>,
}

/// Job filters shared by `jobs list` and the bulk forms.
#[derive(Debug, Default, Args)]
pub struct FilterArgs {
    /// Only jobs in this state (ready, scheduled, retrying, locked,
    /// failed); repeat for several.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<JobState>,
    /// Only jobs of this task.
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// Only jobs in this named queue.
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Only the job with this key.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Only jobs whose last error contains this text.
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.states.is_empty()
            && self.task.is_none()
            && self.queue.is_none()
            && self.key.is_none()
            && self.error.is_none()
    }
}

/// Jobs chosen by id, or by a filter (acting only with `--yes`).
#[derive(Debug, Args)]
pub struct Selection {
    /// Job ids.
    #[arg(value_name = "ID")]
    pub ids: Vec<i64>,
    /// Or every job matching these filters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// With a filter: act (without it, only say how many jobs match).
    #[arg(long)]
    pub yes: bool,
}

/// `jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Add a job and print it.
    Add(AddArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// One job, with its payload and last error in full.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Run jobs now with their attempts reset (a failed job gets all its
    /// attempts again). Locked jobs are left alone.
    Retry(Selection),
    /// Change when and how jobs run (the reschedule_jobs function).
    Reschedule(RescheduleArgs),
    /// Mark jobs done: delete them (the complete_jobs function).
    Complete(Selection),
    /// Fail jobs permanently (the permanently_fail_jobs function).
    Fail(FailArgs),
    /// Remove the job with this key (the remove_job function).
    Remove {
        /// The job key.
        key: String,
    },
    /// Cancel jobs: one no worker holds fails permanently now; one a Rust
    /// worker runs is stopped (its task sees the cancellation and gets the
    /// worker's grace period); one a Node worker runs cannot be
    /// interrupted and runs to its end, but is not retried. Exits 1 if an
    /// id matches no job.
    Cancel(CancelArgs),
}

/// `jobs cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Job ids.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<i64>,
    /// Why, stored as the last error `cancelled: <reason>`.
    #[arg(long, default_value = "by an operator")]
    pub reason: String,
}

/// `jobs add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The task identifier.
    pub task: String,
    /// The payload, as JSON.
    #[arg(default_value = "{}")]
    pub payload: String,
    /// A named queue: its jobs run one at a time, in order.
    #[arg(long)]
    pub queue: Option<String>,
    /// When to run.
    #[command(flatten)]
    pub when: When,
    /// Smaller runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i16>,
    /// Attempts before the job fails for good.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i16>,
    /// A unique key: adding a job with a key that exists updates that job.
    #[arg(long)]
    pub key: Option<String>,
    /// What an existing job with the key becomes.
    #[arg(long, value_name = "MODE", requires = "key")]
    pub key_mode: Option<KeyMode>,
    /// A flag a worker may refuse; repeat for several.
    #[arg(long = "flag", value_name = "FLAG")]
    pub flags: Vec<String>,
}

/// `--run-at TIME` or `--delay DURATION`, of `jobs add` and `jobs reschedule`.
#[derive(Debug, Args)]
pub struct When {
    /// When to run: an RFC 3339 time such as 2026-12-24T18:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time, conflicts_with = "delay")]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When to run, from now: 30s, 5m, 1h30m, 2d.
    #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
    pub delay: Option<chrono::Duration>,
}

impl When {
    /// The time asked for, if any.
    pub fn run_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.run_at
            .or_else(|| self.delay.map(|delay| chrono::Utc::now() + delay))
    }
}

/// `--key-mode`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum KeyMode {
    /// Replace the pending job, run_at included (the default).
    Replace,
    /// Replace the pending job but keep its run_at.
    PreserveRunAt,
    /// Keep the existing job whatever its state.
    UnsafeDedupe,
}

/// `jobs list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which jobs.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Skip this many first.
    #[arg(long, default_value_t = 0)]
    pub offset: i64,
    /// The order.
    #[arg(long, value_enum, default_value_t = Order::Newest)]
    pub order: Order,
}

/// `--order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Highest id first.
    Newest,
    /// Lowest id first.
    Oldest,
    /// Earliest run_at first.
    RunAt,
}

/// `jobs reschedule`.
#[derive(Debug, Args)]
pub struct RescheduleArgs {
    /// Job ids.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<i64>,
    /// When to run.
    #[command(flatten)]
    pub when: When,
    /// New priority.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i16>,
    /// New attempts count.
    #[arg(long, value_name = "N")]
    pub attempts: Option<i16>,
    /// New attempts limit.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i16>,
}

/// `jobs fail`.
#[derive(Debug, Args)]
pub struct FailArgs {
    /// Which jobs.
    #[command(flatten)]
    pub selection: Selection,
    /// The reason, stored as the jobs' last error.
    #[arg(long, default_value = "failed by an operator")]
    pub reason: String,
}

/// `queues …`.
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Named queues: waiting jobs, lock holder, locked since, paused.
    List,
    /// Stop starting jobs of a named queue, on every worker (Rust and
    /// Node); a job already running finishes. Jobs added meanwhile wait.
    Pause {
        /// The queue's name.
        name: String,
    },
    /// Let the jobs of a paused queue run again.
    Resume {
        /// The queue's name.
        name: String,
    },
}

/// `workers …`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Registered workers, and lock holders seen on jobs that are not
    /// registered (Node workers).
    List,
    /// Release every job and queue these workers hold
    /// (force_unlock_workers). Only for workers that are gone.
    Unlock {
        /// Worker (pool) ids.
        #[arg(required = true, value_name = "POOL_ID")]
        pool_ids: Vec<String>,
    },
    /// Recover now the jobs of registered workers whose heartbeat is older
    /// than --stale.
    Recover {
        /// How old a heartbeat must be: 60s, 5m.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = time::parse_duration)]
        stale: chrono::Duration,
    },
}

/// `cron …`.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Parse a crontab and print each item with its next 3 fire times.
    Check {
        /// The crontab file.
        file: PathBuf,
    },
    /// The schedules the database knows, with their next fire time when the
    /// crontab is given.
    List {
        /// The crontab file.
        #[arg(long, value_name = "FILE")]
        crontab: Option<PathBuf>,
    },
}

/// `cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Delete jobs that used all their attempts and are not locked.
    #[arg(long)]
    pub delete_permafailed_jobs: bool,
    /// Delete task identifiers no job uses (stop workers first: they cache
    /// task ids).
    #[arg(long)]
    pub gc_task_identifiers: bool,
    /// With --gc-task-identifiers: keep this identifier; repeat for several.
    #[arg(long, value_name = "TASK", requires = "gc_task_identifiers")]
    pub keep: Vec<String>,
    /// Delete unlocked named queues no job uses.
    #[arg(long)]
    pub gc_job_queues: bool,
}

/// Where `run` gets its tasks.
pub enum Tasks {
    /// Executables in `--tasks DIR` (default `./tasks`), run with Node
    /// graphile-worker's executable-task protocol: the standalone command.
    Executables,
    /// Every `#[task]` linked into the binary ([`graphile_worker::Worker::from_registry`]).
    Registry,
    /// Worker options the application prepared (tasks registered, data
    /// added); the command sets the connection, schema and run options.
    Options(Box<dyn FnOnce() -> WorkerOptions + Send>),
}

/// Parses the process's arguments as [`Cli`] and runs the command; for a
/// binary whose only job is this command.
pub fn main_with(tasks: Tasks) -> ExitCode {
    run_command(Cli::parse(), tasks)
}

/// Runs a parsed command on a runtime of its own, prints its error (if
/// any) on stderr, and returns the exit code.
pub fn run_command(cli: Cli, tasks: Tasks) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("graphile-worker: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli, tasks)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("graphile-worker: {e}");
            e.exit_code()
        }
    }
}

/// Runs a parsed command; on the caller's runtime. Returns the exit code
/// of a successful run (0, or 3 for `migrate --check` with migrations
/// pending).
pub async fn execute(cli: Cli, tasks: Tasks) -> Result<ExitCode, CliError> {
    let out = output::Out::new(cli.json);
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                "graphile-worker",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cron(CronCommand::Check { file }) => admin::cron_check(&out, &file),
        Command::Migrate(args) => {
            let utils = connect::utils(
                cli.database_url.as_deref(),
                &cli.schema,
                cli.no_prepared_statements,
            )
            .await?;
            admin::migrate(&out, &utils, &args).await
        }
        Command::Run(args) => {
            let url = connect::require_url(cli.database_url.as_deref())?;
            run::run(&url, &cli.schema, cli.no_prepared_statements, args, tasks).await?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let utils = connect::installed(
                cli.database_url.as_deref(),
                &cli.schema,
                cli.no_prepared_statements,
            )
            .await?;
            match command {
                Command::Jobs(jobs) => jobs::execute(&out, &utils, jobs).await?,
                Command::Queues(queues) => admin::queues(&out, &utils, queues).await?,
                Command::Workers(workers) => admin::workers(&out, &utils, workers).await?,
                Command::Cron(CronCommand::List { crontab }) => {
                    admin::cron_list(&out, &utils, crontab.as_deref()).await?
                }
                Command::Cleanup(args) => admin::cleanup(&out, &utils, &args).await?,
                Command::Stats => admin::stats(&out, &utils).await?,
                Command::Ui(args) => ui::serve(&out, utils, args).await?,
                Command::Completions { .. }
                | Command::Cron(CronCommand::Check { .. })
                | Command::Migrate(_)
                | Command::Run(_) => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
