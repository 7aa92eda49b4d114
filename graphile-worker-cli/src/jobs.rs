//! `jobs …`: add, list, show, retry, reschedule, complete, fail, remove,
//! cancel.

use chrono::Utc;
use graphile_worker::{
    CancelOutcome, Job, JobEntry, JobFilter, JobKeyMode, JobOrder, JobSpec, JobState, Reschedule,
    WorkerUtils,
};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::{self, Out};
use crate::{AddArgs, CancelArgs, FilterArgs, JobsCommand, KeyMode, ListArgs, Order, Selection};

/// Jobs per statement when acting on many: a filter may match millions.
const CHUNK: usize = 5_000;

pub(crate) async fn execute(
    out: &Out,
    utils: &WorkerUtils,
    command: JobsCommand,
) -> Result<(), CliError> {
    match command {
        JobsCommand::Add(args) => add(out, utils, args).await,
        JobsCommand::List(args) => list(out, utils, args).await,
        JobsCommand::Show { id } => show(out, utils, id).await,
        JobsCommand::Retry(selection) => {
            let Some(ids) = select(out, utils, &selection, "retry").await? else {
                return Ok(());
            };
            let mut done: Vec<(Job, JobState)> = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                let entries = utils.retry_jobs(chunk).await?;
                done.extend(entries.into_iter().map(|e| (e.job, e.state)));
            }
            report(
                out,
                utils,
                "retried",
                &ids,
                &done,
                !selection.ids.is_empty(),
            )
            .await
        }
        JobsCommand::Reschedule(args) => {
            let changes = Reschedule {
                run_at: args.when.run_at(),
                priority: args.priority,
                attempts: args.attempts,
                max_attempts: args.max_attempts,
            };
            if changes == Reschedule::default() {
                return Err(CliError::Usage(
                    "nothing to change: give --run-at, --delay, --priority, --attempts or --max-attempts"
                        .to_owned(),
                ));
            }
            let jobs = utils.reschedule_jobs(&args.ids, changes).await?;
            let done = with_states(jobs);
            report(out, utils, "rescheduled", &args.ids, &done, true).await
        }
        JobsCommand::Complete(selection) => {
            let Some(ids) = select(out, utils, &selection, "complete").await? else {
                return Ok(());
            };
            let mut jobs = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                jobs.extend(utils.complete_jobs(chunk).await?);
            }
            let done = with_states(jobs);
            report(
                out,
                utils,
                "completed",
                &ids,
                &done,
                !selection.ids.is_empty(),
            )
            .await
        }
        JobsCommand::Fail(args) => {
            let Some(ids) = select(out, utils, &args.selection, "fail").await? else {
                return Ok(());
            };
            let mut jobs = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                jobs.extend(
                    utils
                        .permanently_fail_jobs(chunk, Some(&args.reason))
                        .await?,
                );
            }
            let done = with_states(jobs);
            let by_id = !args.selection.ids.is_empty();
            report(out, utils, "failed", &ids, &done, by_id).await
        }
        JobsCommand::Remove { key } => match utils.remove_job(&key).await? {
            Some(job) => {
                let state = JobState::of(&job, Utc::now());
                if out.json {
                    out.json(&output::job_json(&job, state));
                } else {
                    out.line(format!("removed job {} (key {key})", job.id));
                }
                Ok(())
            }
            None => Err(CliError::Failed(format!("no job has the key {key:?}"))),
        },
        JobsCommand::Cancel(args) => cancel(out, utils, args).await,
    }
}

/// `jobs cancel`: each id's outcome; exit 1 if an id matched no job.
async fn cancel(out: &Out, utils: &WorkerUtils, args: CancelArgs) -> Result<(), CliError> {
    let mut outcomes = Vec::with_capacity(args.ids.len());
    for &id in &args.ids {
        outcomes.push((id, utils.cancel_job(id, &args.reason).await?));
    }
    if out.json {
        let list: Vec<Value> = outcomes
            .iter()
            .map(|(id, outcome)| {
                let mut entry = serde_json::to_value(outcome).unwrap_or(Value::Null);
                if let Value::Object(fields) = &mut entry {
                    fields.insert("id".into(), json!(id));
                }
                entry
            })
            .collect();
        out.json(&Value::Array(list));
    } else {
        for (id, outcome) in &outcomes {
            out.line(match outcome {
                CancelOutcome::Failed => format!("job {id}: cancelled (failed permanently)"),
                CancelOutcome::Signalled { locked_by } => format!(
                    "job {id}: cancelled; worker {locked_by} was told to stop it, and it ends failed permanently"
                ),
                CancelOutcome::NotInterruptible { locked_by } => format!(
                    "job {id}: {locked_by} is running it and cannot be interrupted (a Node worker, or one not registered); it runs to its end and is not retried"
                ),
                CancelOutcome::AlreadyFailed => {
                    format!("job {id}: had already failed permanently; nothing changed")
                }
                CancelOutcome::NotFound => format!("job {id}: no such job (it may have completed)"),
                _ => format!("job {id}: {outcome:?}"),
            });
        }
    }
    let missing: Vec<String> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == CancelOutcome::NotFound)
        .map(|(id, _)| id.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "no job with id {}",
            missing.join(", ")
        )))
    }
}

fn with_states(jobs: Vec<Job>) -> Vec<(Job, JobState)> {
    let now = Utc::now();
    jobs.into_iter()
        .map(|job| {
            let state = JobState::of(&job, now);
            (job, state)
        })
        .collect()
}

fn filter_of(args: &FilterArgs) -> JobFilter {
    JobFilter {
        states: args.states.clone(),
        task: args.task.clone(),
        queue: args.queue.clone(),
        key: args.key.clone(),
        error: args.error.clone(),
        ..JobFilter::default()
    }
}

async fn add(out: &Out, utils: &WorkerUtils, args: AddArgs) -> Result<(), CliError> {
    let payload: Value = serde_json::from_str(&args.payload).map_err(|e| {
        CliError::Usage(format!(
            "the payload is not valid JSON ({e}); quote it for the shell, for example '{{\"to\": \"a@example.com\"}}'"
        ))
    })?;
    let spec = JobSpec {
        queue_name: args.queue,
        run_at: args.when.run_at(),
        max_attempts: args.max_attempts,
        job_key: args.key,
        job_key_mode: args.key_mode.map(|mode| match mode {
            KeyMode::Replace => JobKeyMode::Replace,
            KeyMode::PreserveRunAt => JobKeyMode::PreserveRunAt,
            KeyMode::UnsafeDedupe => JobKeyMode::UnsafeDedupe,
        }),
        priority: args.priority,
        flags: (!args.flags.is_empty()).then_some(args.flags),
    };
    let job = utils.add_raw_job(&args.task, payload, spec).await?;
    let state = JobState::of(&job, Utc::now());
    if out.json {
        out.json(&output::job_json(&job, state));
    } else {
        output::table(&output::JOB_HEADERS, &[output::job_row(&job, state)]);
    }
    Ok(())
}

async fn list(out: &Out, utils: &WorkerUtils, args: ListArgs) -> Result<(), CliError> {
    if args.limit < 1 {
        return Err(CliError::Usage("--limit must be at least 1".to_owned()));
    }
    if args.offset < 0 {
        return Err(CliError::Usage("--offset cannot be negative".to_owned()));
    }
    let filter = JobFilter {
        limit: args.limit,
        offset: args.offset,
        order: match args.order {
            Order::Newest => JobOrder::NewestFirst,
            Order::Oldest => JobOrder::OldestFirst,
            Order::RunAt => JobOrder::RunAt,
        },
        ..filter_of(&args.filter)
    };
    let entries = utils.list_jobs(&filter).await?;
    output::jobs(out, &entries);
    Ok(())
}

async fn show(out: &Out, utils: &WorkerUtils, id: i64) -> Result<(), CliError> {
    let Some(JobEntry { job, state, .. }) = utils.get_job(id).await? else {
        return Err(CliError::Failed(format!("no job has the id {id}")));
    };
    if out.json {
        out.json(&output::job_json(&job, state));
        return Ok(());
    }
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    let field = |name: &str, value: String| out.line(format!("{name:<14}{value}"));
    field("id", job.id.to_string());
    field("state", state.to_string());
    field("task", job.task_identifier.clone());
    field(
        "queue",
        job.queue_name.clone().unwrap_or_else(|| "-".into()),
    );
    field("priority", job.priority.to_string());
    field("run at", output::time(job.run_at));
    field(
        "attempts",
        format!("{} of {}", job.attempts, job.max_attempts),
    );
    field("key", job.key.clone().unwrap_or_else(|| "-".into()));
    field("created at", output::time(job.created_at));
    field("updated at", output::time(job.updated_at));
    field(
        "locked",
        match (&job.locked_by, job.locked_at) {
            (Some(by), Some(at)) => format!("by {by} since {}", output::time(at)),
            _ => "no".into(),
        },
    );
    field(
        "flags",
        job.flags
            .as_ref()
            .and_then(Value::as_object)
            .map(|f| f.keys().cloned().collect::<Vec<_>>().join(", "))
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "-".into()),
    );
    field("revision", job.revision.to_string());
    out.line("payload");
    for line in payload.lines() {
        out.line(format!("  {line}"));
    }
    match &job.last_error {
        Some(error) => {
            out.line("last error");
            for line in error.lines() {
                out.line(format!("  {line}"));
            }
        }
        None => out.line(format!("{:<14}-", "last error")),
    }
    Ok(())
}

/// The ids a bulk command acts on: those given, or those matching the
/// filters when `--yes` is given. Without `--yes`, says how many match and
/// returns `None`.
async fn select(
    out: &Out,
    utils: &WorkerUtils,
    selection: &Selection,
    verb: &str,
) -> Result<Option<Vec<i64>>, CliError> {
    let filtered = !selection.filter.is_empty();
    if !selection.ids.is_empty() {
        if filtered {
            return Err(CliError::Usage(format!(
                "give job ids or filters to {verb}, not both"
            )));
        }
        return Ok(Some(selection.ids.clone()));
    }
    if !filtered {
        return Err(CliError::Usage(format!(
            "give the ids of the jobs to {verb}, or filters such as --state failed --task send_email"
        )));
    }
    let filter = filter_of(&selection.filter);
    if !selection.yes {
        let matched = utils.count_jobs(&filter).await?;
        if out.json {
            out.json(&json!({ "matched": matched, "done": false }));
        } else {
            out.line(format!(
                "{matched} job{} match{}; run again with --yes to {verb} {}",
                if matched == 1 { "" } else { "s" },
                if matched == 1 { "es" } else { "" },
                if matched == 1 { "it" } else { "them" }
            ));
        }
        return Ok(None);
    }
    Ok(Some(utils.job_ids(&filter).await?))
}

/// Prints what was done; with ids given, an id that was not acted on is
/// named (and why) and the command fails.
async fn report(
    out: &Out,
    utils: &WorkerUtils,
    verb: &str,
    asked: &[i64],
    done: &[(Job, JobState)],
    by_id: bool,
) -> Result<(), CliError> {
    if out.json {
        out.json(&Value::Array(
            done.iter()
                .map(|(job, state)| output::job_json(job, *state))
                .collect(),
        ));
    } else if done.is_empty() {
        out.line(format!("{verb} no jobs"));
    } else {
        let ids: Vec<String> = done.iter().map(|(job, _)| job.id.to_string()).collect();
        out.line(format!(
            "{verb} {} job{}: {}",
            done.len(),
            if done.len() == 1 { "" } else { "s" },
            ids.join(", ")
        ));
    }
    if !by_id {
        return Ok(());
    }
    let mut problems = Vec::new();
    for id in asked {
        if done.iter().any(|(job, _)| job.id == *id) {
            continue;
        }
        problems.push(match utils.get_job(*id).await? {
            None => format!("job {id} does not exist"),
            Some(entry) if entry.state == JobState::Locked => format!(
                "job {id} is locked by {} (running); left alone",
                entry.job.locked_by.as_deref().unwrap_or("a worker")
            ),
            Some(entry) => format!("job {id} ({}) was not changed", entry.state),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(problems.join("; ")))
    }
}
