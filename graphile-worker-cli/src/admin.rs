//! `migrate`, `queues`, `workers`, `cron`, `cleanup` and `stats`.

use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use graphile_worker::{Cleanup, CronItem, JobState, WorkerUtils, parse_crontab};
use serde_json::{Map, Value, json};

use crate::error::CliError;
use crate::output::{self, Out};
use crate::{CleanupArgs, MigrateArgs, QueuesCommand, WorkersCommand};

/// Exit code of `migrate --check` when migrations are pending.
const PENDING: u8 = 3;

pub(crate) async fn migrate(
    out: &Out,
    utils: &WorkerUtils,
    args: &MigrateArgs,
) -> Result<ExitCode, CliError> {
    let schema = utils.schema().to_owned();
    if !args.check && !args.status {
        let before = utils.migration_status().await?;
        utils.migrate().await?;
        if out.json {
            out.json(&json!({ "schema": schema, "applied": before.pending }));
        } else if before.pending.is_empty() {
            out.line(format!("the {schema} schema is up to date"));
        } else {
            let pending = &before.pending;
            let numbers = match (pending.first(), pending.last()) {
                (Some(first), _) if pending.len() == 1 => format!("migration {first}"),
                (Some(first), Some(last)) if (last - first + 1) as usize == pending.len() => {
                    format!("migrations {first} to {last}")
                }
                _ => format!(
                    "migrations {}",
                    pending
                        .iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let verb = if before.installed {
                "upgraded"
            } else {
                "installed"
            };
            out.line(format!("{verb} the {schema} schema: applied {numbers}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = utils.migration_status().await?;
    if status.is_newer_than_build() {
        let latest = status.applied.last().map_or(0, |m| m.id);
        return Err(CliError::Failed(format!(
            "the {schema} schema is at migration {latest}, newer than this build (which knows up to {}); upgrade graphile-worker",
            status.highest_known
        )));
    }
    if args.status {
        if out.json {
            out.json(&serde_json::to_value(&status).unwrap_or(Value::Null));
        } else {
            let rows: Vec<Vec<String>> = status
                .applied
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        output::time(m.applied_at),
                        if m.breaking { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                out.line(format!("the {schema} schema is not installed"));
            } else {
                output::table(&["migration", "applied at", "breaking"], &rows);
            }
            out.line(format!(
                "this build knows migrations 1 to {}; pending: {}",
                status.highest_known,
                if status.pending.is_empty() {
                    "none".to_owned()
                } else {
                    status
                        .pending
                        .iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // --check
    if out.json {
        out.json(&json!({ "current": status.is_current(), "pending": status.pending }));
    }
    if status.is_current() {
        out.line(format!("the {schema} schema is up to date"));
        Ok(ExitCode::SUCCESS)
    } else {
        out.line(format!(
            "the {schema} schema has {} migration{} pending; run `graphile-worker migrate`",
            status.pending.len(),
            if status.pending.len() == 1 { "" } else { "s" }
        ));
        Ok(ExitCode::from(PENDING))
    }
}

pub(crate) async fn queues(
    out: &Out,
    utils: &WorkerUtils,
    command: QueuesCommand,
) -> Result<(), CliError> {
    let (name, paused, changed) = match command {
        QueuesCommand::List => return list_queues(out, utils).await,
        QueuesCommand::Pause { name } => {
            let changed = utils.pause_queue(&name).await?;
            (name, true, changed)
        }
        QueuesCommand::Resume { name } => {
            let changed = utils.resume_queue(&name).await?;
            (name, false, changed)
        }
    };
    if out.json {
        out.json(&json!({"queue": name, "paused": paused, "changed": changed}));
    } else {
        out.line(match (paused, changed) {
            (true, true) => format!(
                "paused queue {name}: no worker starts its jobs until `queues resume {name}`"
            ),
            (true, false) => format!("queue {name} was already paused"),
            (false, true) => format!("resumed queue {name}: its jobs run again"),
            (false, false) => format!("queue {name} was not paused; nothing changed"),
        });
    }
    Ok(())
}

async fn list_queues(out: &Out, utils: &WorkerUtils) -> Result<(), CliError> {
    let queues = utils.list_queues().await?;
    if out.json {
        out.json(&serde_json::to_value(&queues).unwrap_or(Value::Null));
    } else if queues.is_empty() {
        out.line("no named queues");
    } else {
        let rows: Vec<Vec<String>> = queues
            .iter()
            .map(|q| {
                vec![
                    q.queue_name.clone(),
                    q.waiting.to_string(),
                    q.jobs.to_string(),
                    q.locked_by.clone().unwrap_or_else(|| "-".into()),
                    output::opt_time(q.locked_at),
                    if q.paused { "paused" } else { "-" }.into(),
                ]
            })
            .collect();
        output::table(
            &[
                "queue",
                "waiting",
                "jobs",
                "locked by",
                "locked since",
                "paused",
            ],
            &rows,
        );
    }
    Ok(())
}

pub(crate) async fn workers(
    out: &Out,
    utils: &WorkerUtils,
    command: WorkersCommand,
) -> Result<(), CliError> {
    match command {
        WorkersCommand::List => {
            let workers = utils.list_workers().await?;
            let holders = utils.unregistered_lock_holders().await?;
            if out.json {
                let workers: Vec<Value> = workers
                    .iter()
                    .map(|w| {
                        json!({
                            "id": w.id,
                            "started_at": w.started_at,
                            "last_heartbeat_at": w.last_heartbeat_at,
                            "jobs_held": w.jobs_held,
                            "metadata": w.metadata,
                        })
                    })
                    .collect();
                out.json(&json!({
                    "workers": workers,
                    "unregistered_lock_holders": holders,
                }));
                return Ok(());
            }
            if workers.is_empty() {
                out.line("no registered workers");
            } else {
                let now = Utc::now();
                let rows: Vec<Vec<String>> = workers
                    .iter()
                    .map(|w| {
                        let meta = |key: &str| {
                            w.metadata
                                .as_ref()
                                .and_then(|m| m.get(key))
                                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                                .unwrap_or_else(|| "-".into())
                        };
                        vec![
                            w.id.clone(),
                            output::time(w.started_at),
                            format!("{}s ago", (now - w.last_heartbeat_at).num_seconds().max(0)),
                            w.jobs_held.to_string(),
                            meta("hostname"),
                            meta("pid"),
                        ]
                    })
                    .collect();
                output::table(
                    &["worker", "started", "heartbeat", "jobs held", "host", "pid"],
                    &rows,
                );
            }
            if !holders.is_empty() {
                out.line("");
                out.line("lock holders not in the registry (Node workers, or forgotten ones):");
                let rows: Vec<Vec<String>> = holders
                    .iter()
                    .map(|h| {
                        vec![
                            h.locked_by.clone(),
                            h.jobs.to_string(),
                            output::opt_time(h.since),
                        ]
                    })
                    .collect();
                output::table(&["locked by", "jobs", "since"], &rows);
            }
            Ok(())
        }
        WorkersCommand::Unlock { pool_ids } => {
            utils.force_unlock_workers(&pool_ids).await?;
            if out.json {
                out.json(&json!({ "unlocked": pool_ids }));
            } else {
                out.line(format!(
                    "released the jobs and queues of {}",
                    pool_ids.join(", ")
                ));
            }
            Ok(())
        }
        WorkersCommand::Recover { stale } => {
            let threshold = stale
                .to_std()
                .map_err(|_| CliError::Usage("--stale must not be negative".to_owned()))?;
            let report = utils.recover_stale_workers(threshold).await?;
            if out.json {
                out.json(&json!({ "workers": report.workers, "jobs": report.jobs }));
            } else if report.workers.is_empty() {
                out.line("no stale workers (or another process is recovering now)");
            } else {
                out.line(format!(
                    "recovered {} job{} from {}",
                    report.jobs,
                    if report.jobs == 1 { "" } else { "s" },
                    report.workers.join(", ")
                ));
            }
            Ok(())
        }
    }
}

/// Reads and parses a crontab file; errors name the file, line and column.
pub(crate) fn read_crontab(path: &Path) -> Result<Vec<CronItem>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Failed(format!("could not read {}: {e}", path.display())))?;
    parse_crontab(&text).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}

/// The next `n` fire times of an item after now.
fn next_fires(item: &CronItem, n: usize) -> Vec<chrono::DateTime<Utc>> {
    let mut times = Vec::with_capacity(n);
    let mut after = Utc::now();
    while times.len() < n {
        let Some(next) = item.next_fire_after(after) else {
            break;
        };
        times.push(next);
        after = next;
    }
    times
}

pub(crate) fn cron_check(out: &Out, path: &Path) -> Result<ExitCode, CliError> {
    let items = read_crontab(path)?;
    if out.json {
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                json!({
                    "identifier": item.identifier,
                    "task": item.task,
                    "time_zone": item.options.time_zone.map(|zone| zone.name()),
                    "payload": item.payload,
                    "next": next_fires(item, 3),
                })
            })
            .collect();
        out.json(&Value::Array(items));
    } else if items.is_empty() {
        out.line(format!("{}: no schedules", path.display()));
    } else {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| {
                let next: Vec<String> = next_fires(item, 3).into_iter().map(output::time).collect();
                vec![
                    item.identifier.clone(),
                    item.task.clone(),
                    item.options
                        .time_zone
                        .map_or_else(|| "UTC".to_owned(), |zone| zone.name().to_owned()),
                    if next.is_empty() {
                        "never".into()
                    } else {
                        next.join(", ")
                    },
                ]
            })
            .collect();
        output::table(
            &["identifier", "task", "time zone", "next 3 fire times (UTC)"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cron_list(
    out: &Out,
    utils: &WorkerUtils,
    crontab: Option<&Path>,
) -> Result<(), CliError> {
    let known = utils.list_known_crontabs().await?;
    let items = crontab.map(read_crontab).transpose()?.unwrap_or_default();
    let next = |identifier: &str| {
        items
            .iter()
            .find(|item| item.identifier == identifier)
            .and_then(|item| next_fires(item, 1).first().copied())
    };
    if out.json {
        let list: Vec<Value> = known
            .iter()
            .map(|k| {
                json!({
                    "identifier": k.identifier,
                    "known_since": k.known_since,
                    "last_execution": k.last_execution,
                    "next": next(&k.identifier),
                })
            })
            .collect();
        out.json(&Value::Array(list));
    } else if known.is_empty() {
        out.line("the database knows no cron schedules (no worker has run a crontab here)");
    } else {
        let rows: Vec<Vec<String>> = known
            .iter()
            .map(|k| {
                vec![
                    k.identifier.clone(),
                    output::time(k.known_since),
                    output::opt_time(k.last_execution),
                    if crontab.is_some() {
                        output::opt_time(next(&k.identifier))
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        output::table(
            &["identifier", "known since", "last execution", "next"],
            &rows,
        );
    }
    Ok(())
}

pub(crate) async fn cleanup(
    out: &Out,
    utils: &WorkerUtils,
    args: &CleanupArgs,
) -> Result<(), CliError> {
    let mut tasks = Vec::new();
    if args.delete_permafailed_jobs {
        tasks.push(Cleanup::DeletePermafailedJobs);
    }
    if args.gc_task_identifiers {
        tasks.push(Cleanup::GcTaskIdentifiers);
    }
    if args.gc_job_queues {
        tasks.push(Cleanup::GcJobQueues);
    }
    if tasks.is_empty() {
        return Err(CliError::Usage(
            "choose what to clean: --delete-permafailed-jobs, --gc-task-identifiers, --gc-job-queues"
                .to_owned(),
        ));
    }
    utils.cleanup(&tasks, &args.keep).await?;
    let names: Vec<&str> = tasks
        .iter()
        .map(|t| match t {
            Cleanup::DeletePermafailedJobs => "delete_permafailed_jobs",
            Cleanup::GcTaskIdentifiers => "gc_task_identifiers",
            Cleanup::GcJobQueues => "gc_job_queues",
        })
        .collect();
    if out.json {
        out.json(&json!({ "done": names }));
    } else {
        out.line(format!("done: {}", names.join(", ")));
    }
    Ok(())
}

pub(crate) async fn stats(out: &Out, utils: &WorkerUtils) -> Result<(), CliError> {
    let stats = utils.job_stats().await?;
    let by_state: Map<String, Value> = JobState::ALL
        .into_iter()
        .map(|s| (s.to_string(), json!(stats.by_state(s))))
        .collect();
    let group = |rows: Vec<(String, JobState, i64)>| {
        let mut map = Map::new();
        for (name, state, n) in rows {
            let entry = map.entry(name).or_insert_with(|| {
                Value::Object(
                    JobState::ALL
                        .into_iter()
                        .map(|s| (s.to_string(), json!(0)))
                        .collect(),
                )
            });
            if let Some(counts) = entry.as_object_mut() {
                counts.insert(state.to_string(), json!(n));
            }
        }
        map
    };
    let by_task = group(stats.by_task());
    let by_queue = group(stats.by_queue());
    if out.json {
        out.json(&json!({
            "by_state": by_state,
            "by_task": by_task,
            "by_queue": by_queue,
            "oldest_ready_run_at": stats.oldest_ready_run_at,
            "oldest_ready_age_seconds": stats.oldest_ready_age_seconds,
        }));
        return Ok(());
    }
    let mut headers = vec![""];
    headers.extend(JobState::ALL.iter().map(|s| s.as_str()));
    let row = |name: &str, counts: &Map<String, Value>| {
        let mut row = vec![name.to_owned()];
        row.extend(
            JobState::ALL
                .iter()
                .map(|s| counts.get(s.as_str()).map_or("0".into(), Value::to_string)),
        );
        row
    };
    let mut rows = vec![row("all jobs", &by_state)];
    for (task, counts) in &by_task {
        if let Some(counts) = counts.as_object() {
            rows.push(row(&format!("task {task}"), counts));
        }
    }
    for (queue, counts) in &by_queue {
        if let Some(counts) = counts.as_object() {
            rows.push(row(&format!("queue {queue}"), counts));
        }
    }
    output::table(&headers, &rows);
    out.line(match stats.oldest_ready_age_seconds {
        Some(age) => format!("oldest ready job: due {age:.1} s ago"),
        None => "no job is ready".to_owned(),
    });
    Ok(())
}
