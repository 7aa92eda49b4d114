//! `run`: a worker, with the application's tasks or, for the standalone
//! command, the executables in a directory (Node graphile-worker's
//! executable-task protocol).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use graphile_worker::{JobContext, TaskError, Worker, WorkerOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::error::CliError;
use crate::{RunArgs, Tasks};

/// How many lines of a failed executable's stderr go into `last_error`.
const STDERR_LINES: usize = 20;

pub(crate) async fn run(
    url: &str,
    schema: &str,
    no_prepared_statements: bool,
    args: RunArgs,
    tasks: Tasks,
) -> Result<(), CliError> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    // Checked here, not by clap: a global flag is not seen by a
    // subcommand's `requires`.
    if args.listen_url.is_some() && !no_prepared_statements {
        return Err(CliError::Usage(
            "--listen-url is for --no-prepared-statements (PgBouncer); without it the worker listens on its own connection".to_owned(),
        ));
    }
    if args.concurrency == Some(0) {
        return Err(CliError::Usage("--jobs must be at least 1".to_owned()));
    }
    let mut options = match tasks {
        Tasks::Executables => {
            let dir = args.tasks.clone().unwrap_or_else(|| PathBuf::from("tasks"));
            executables(Worker::options(), &dir)?
        }
        Tasks::Registry | Tasks::Options(_) if args.tasks.is_some() => {
            return Err(CliError::Usage(
                "this program runs its own tasks; --tasks is for the standalone graphile-worker command"
                    .to_owned(),
            ));
        }
        Tasks::Registry => Worker::from_registry(),
        Tasks::Options(prepare) => prepare(),
    };
    // What the flags leave unset comes from the environment, as for any
    // worker built with from_env.
    options = options.from_env().database_url(url).schema(schema);
    if let Some(jobs) = args.concurrency {
        options = options.concurrency(jobs);
    }
    if let Some(ms) = args.poll_interval {
        options = options.poll_interval(Duration::from_millis(ms.max(1)));
    }
    if let Some(size) = args.max_pool_size {
        options = options.max_pool_size(size);
    }
    if no_prepared_statements {
        options = options.no_prepared_statements();
    }
    if let Some(url) = &args.listen_url {
        options = options.listen_url(url);
    }
    if let Some(crontab) = &args.crontab {
        options = options.crontab_file(crontab);
    }
    let metrics = match args.metrics_bind {
        Some(_) => {
            let handle = crate::serve::install_recorder()?;
            options = options.metrics(graphile_worker::MetricsOptions::default());
            Some(handle)
        }
        None => None,
    };
    let worker = options.init().await?;
    if let (Some(addr), Some(metrics)) = (args.metrics_bind, metrics) {
        crate::serve::start(addr, worker.clone(), metrics).await?;
    }
    if args.once {
        worker.run_once().await?;
    } else {
        worker.run().await?;
    }
    Ok(())
}

/// Registers every executable file in `dir` as the task named after it.
fn executables(mut options: WorkerOptions, dir: &Path) -> Result<WorkerOptions, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CliError::Failed(format!(
            "could not read the task directory {}: {e}; pass --tasks DIR, a directory of executables named after their tasks",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !is_executable(&path) {
            continue;
        }
        found.push((name, path));
    }
    if found.is_empty() {
        return Err(CliError::Failed(format!(
            "no task executables in {}: each task is an executable file named after its task identifier",
            dir.display()
        )));
    }
    found.sort();
    for (name, path) in found {
        let path = Arc::new(path);
        let identifier: Arc<str> = Arc::from(name.as_str());
        options = options.register_fn(&name, move |ctx| {
            run_executable(path.clone(), identifier.clone(), ctx)
        });
    }
    Ok(options)
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Runs one job as Node graphile-worker runs an executable task: the
/// payload on stdin as `{"payload": …}`, the job described in
/// `GRAPHILE_WORKER_*` variables, exit 0 for success. Stdout is logged;
/// a failure's `last_error` names the exit status and ends with stderr's
/// last lines.
async fn run_executable(
    path: Arc<PathBuf>,
    identifier: Arc<str>,
    ctx: JobContext,
) -> Result<(), TaskError> {
    let job = ctx.job();
    let mut command = tokio::process::Command::new(path.as_ref());
    command
        .env("GRAPHILE_WORKER_PAYLOAD_FORMAT", "json")
        .env("GRAPHILE_WORKER_TASK_IDENTIFIER", identifier.as_ref())
        .env("GRAPHILE_WORKER_JOB_ID", job.id.to_string())
        .env("GRAPHILE_WORKER_JOB_ATTEMPTS", job.attempts.to_string())
        .env(
            "GRAPHILE_WORKER_JOB_MAX_ATTEMPTS",
            job.max_attempts.to_string(),
        )
        .env("GRAPHILE_WORKER_JOB_PRIORITY", job.priority.to_string())
        .env("GRAPHILE_WORKER_JOB_RUN_AT", job.run_at.to_rfc3339())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match &job.key {
        Some(key) => command.env("GRAPHILE_WORKER_JOB_KEY", key),
        None => command.env_remove("GRAPHILE_WORKER_JOB_KEY"),
    };
    let mut child = command
        .spawn()
        .map_err(|e| TaskError::new(format!("could not start {}: {e}", path.display())))?;
    let input = serde_json::json!({ "payload": job.payload }).to_string();
    let stdin = child.stdin.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A task that does not read its input may exit first.
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
        }
    };
    let stdout = child.stdout.take();
    let job_id = job.id;
    let log_stdout = async move {
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(task = %identifier, job_id, "{line}");
            }
        }
    };
    let stderr = child.stderr.take();
    let tail_stderr = async move {
        let mut tail = VecDeque::with_capacity(STDERR_LINES);
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        tail
    };
    let ((), (), tail, status) = tokio::join!(write, log_stdout, tail_stderr, child.wait());
    let status = status
        .map_err(|e| TaskError::new(format!("waiting for {} failed: {e}", path.display())))?;
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    };
    let mut message = format!("task executable {} {how}", path.display());
    if !tail.is_empty() {
        message.push_str("; its stderr ended with:\n");
        message.push_str(&Vec::from(tail).join("\n"));
    }
    Err(TaskError::new(message))
}
