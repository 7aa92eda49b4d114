//! The actions (POST): each checks the CSRF token and read-only mode, acts
//! through `WorkerUtils`, and redirects back with a notice that says what
//! changed and what was left alone (locked by a worker, already gone).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDateTime, Utc};
use graphile_worker::{Job, Reschedule, WorkerUtils};

use crate::auth::constant_time_eq;
use crate::pages::{JobsQuery, encode, failure};
use crate::state::{AppState, Base, Shared};

/// Jobs per statement when acting on "all matching".
const CHUNK: usize = 5_000;

/// A form's fields, repeated ones included (`ids`).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &Bytes) -> Form {
        Form(serde_urlencoded::from_bytes(body).unwrap_or_default())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn ids(&self) -> Vec<i64> {
        self.0
            .iter()
            .filter(|(k, _)| k == "ids")
            .filter_map(|(_, v)| v.parse().ok())
            .collect()
    }
}

/// Refuses what must not act: read-only mode (403), a missing or wrong
/// token, or a browser saying the request comes from another site (403).
fn refuse(shared: &Shared, headers: &HeaderMap, form: &Form) -> Option<Response> {
    if shared.ui.read_only {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "This admin UI is read-only: actions are turned off.",
            )
                .into_response(),
        );
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let token = form
        .get("csrf")
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    let token_ok = token.is_some_and(|t| constant_time_eq(t.as_bytes(), shared.csrf.as_bytes()));
    if cross_site || !token_ok {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "Refused: this request did not come from a page of this admin UI (missing or wrong CSRF token). Reload the page and try again.",
            )
                .into_response(),
        );
    }
    None
}

fn back(base: &Base, path: &str, query: &str, notice: &str) -> Response {
    let sep = if query.is_empty() { "" } else { "&" };
    Redirect::to(&base.at(&format!("{path}?{query}{sep}notice={}", encode(notice)))).into_response()
}

/// "Retried 3 jobs." plus, for jobs asked for but not changed, why.
fn summary(verb: &str, asked: &[i64], changed: &[i64]) -> String {
    let changed_set: std::collections::HashSet<i64> = changed.iter().copied().collect();
    let skipped: Vec<String> = asked
        .iter()
        .filter(|id| !changed_set.contains(id))
        .map(i64::to_string)
        .collect();
    let mut text = format!(
        "{verb} {} job{}.",
        changed.len(),
        if changed.len() == 1 { "" } else { "s" }
    );
    if !skipped.is_empty() {
        let shown: Vec<&str> = skipped.iter().take(20).map(String::as_str).collect();
        text.push_str(&format!(
            " Left alone {} (locked by a worker, or gone): {}{}.",
            skipped.len(),
            shown.join(", "),
            if skipped.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    text
}

/// Runs `act` on the ids in chunks; returns the ids it changed.
async fn in_chunks<'a, F, Fut>(ids: &'a [i64], act: F) -> Result<Vec<i64>, graphile_worker::Error>
where
    F: Fn(&'a [i64]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<i64>, graphile_worker::Error>>,
{
    let mut changed = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        changed.extend(act(chunk).await?);
    }
    Ok(changed)
}

fn ids_of(jobs: Vec<Job>) -> Vec<i64> {
    jobs.into_iter().map(|j| j.id).collect()
}

/// Retry, complete, fail or delete `ids`; returns the verb and the ids
/// changed.
async fn act(
    utils: &WorkerUtils,
    action: &str,
    ids: &[i64],
    reason: Option<&str>,
) -> Result<Option<(&'static str, Vec<i64>)>, graphile_worker::Error> {
    Ok(Some(match action {
        "retry" => (
            "Retried",
            in_chunks(ids, |c| async move {
                Ok(utils
                    .retry_jobs(c)
                    .await?
                    .into_iter()
                    .map(|e| e.job.id)
                    .collect())
            })
            .await?,
        ),
        // Both remove the rows, as Node's complete_jobs does; the words say
        // why the operator did it.
        "complete" | "delete" => (
            if action == "complete" {
                "Completed"
            } else {
                "Deleted"
            },
            in_chunks(
                ids,
                |c| async move { Ok(ids_of(utils.complete_jobs(c).await?)) },
            )
            .await?,
        ),
        "fail" => {
            let reason = reason.unwrap_or("failed from the admin UI");
            (
                "Failed",
                in_chunks(ids, |c| async move {
                    Ok(ids_of(utils.permanently_fail_jobs(c, Some(reason)).await?))
                })
                .await?,
            )
        }
        _ => return Ok(None),
    }))
}

pub(crate) async fn jobs(
    State(shared): AppState,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = refuse(&shared, &headers, &form) {
        return refused;
    }
    let filters = JobsQuery {
        state: form.get("state").map(str::to_owned),
        task: form.get("task").map(str::to_owned),
        queue: form.get("queue").map(str::to_owned),
        key: form.get("key").map(str::to_owned),
        error: form.get("error").map(str::to_owned),
        ..JobsQuery::default()
    };
    let query = filters.query_string(&[]);
    let action = form.get("action").unwrap_or_default();
    // `retry-all`: every job matching the filter; `retry:12`: that row's
    // own button; `retry`: the ticked rows.
    let (action, ids) = if let Some(action) = action.strip_suffix("-all") {
        match shared.ui.utils.job_ids(&filters.filter()).await {
            Ok(ids) => (action, ids),
            Err(e) => return failure(e),
        }
    } else if let Some((action, id)) = action.split_once(':') {
        (action, id.parse().map(|id| vec![id]).unwrap_or_default())
    } else {
        (action, form.ids())
    };
    if ids.is_empty() {
        return back(
            &base,
            "/jobs",
            &query,
            "No jobs selected: tick some rows first.",
        );
    }
    match act(&shared.ui.utils, action, &ids, form.get("reason")).await {
        Ok(Some((verb, changed))) => back(&base, "/jobs", &query, &summary(verb, &ids, &changed)),
        Ok(None) => (
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}"),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

pub(crate) async fn job(
    State(shared): AppState,
    base: Base,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = refuse(&shared, &headers, &form) {
        return refused;
    }
    let utils = &shared.ui.utils;
    let action = form.get("action").unwrap_or_default();
    let path = format!("/jobs/{id}");
    if action == "reschedule" {
        let run_at = match form.get("run_at").map(parse_local_time) {
            None => None,
            Some(Some(at)) => Some(at),
            Some(None) => {
                return back(
                    &base,
                    &path,
                    "",
                    "Not rescheduled: the time is not a date and time.",
                );
            }
        };
        let priority = match form.get("priority").map(str::parse::<i16>) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                return back(
                    &base,
                    &path,
                    "",
                    "Not rescheduled: the priority is a whole number from -32768 to 32767.",
                );
            }
        };
        let changes = Reschedule {
            run_at,
            priority,
            ..Reschedule::default()
        };
        return match utils.reschedule_jobs(&[id], changes).await {
            Ok(jobs) if jobs.is_empty() => back(
                &base,
                &path,
                "",
                "Not rescheduled: the job is locked by a worker, or gone.",
            ),
            Ok(jobs) if jobs.iter().any(|j| j.attempts >= j.max_attempts) => back(
                &base,
                &path,
                "",
                "Rescheduled, but the job has used all its attempts: Retry it to run it again.",
            ),
            Ok(_) => back(&base, &path, "", "Rescheduled."),
            Err(e) => failure(e),
        };
    }
    match act(utils, action, &[id], form.get("reason")).await {
        Ok(Some((verb, changed))) => {
            let notice = if changed.is_empty() {
                format!("Job {id} was not changed: it is locked by a worker, or gone.")
            } else {
                format!("{verb} job {id}.")
            };
            // A completed or deleted job has no page any more.
            if matches!(action, "complete" | "delete") && !changed.is_empty() {
                back(&base, "/jobs", "", &notice)
            } else {
                back(&base, &path, "", &notice)
            }
        }
        Ok(None) => (
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}"),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// A `datetime-local` value, read as UTC.
fn parse_local_time(text: &str) -> Option<chrono::DateTime<Utc>> {
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| t.and_utc())
}

pub(crate) async fn queue(
    State(shared): AppState,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = refuse(&shared, &headers, &form) {
        return refused;
    }
    let Some(name) = form.get("queue") else {
        return back(&base, "/queues", "", "No queue given.");
    };
    let utils = &shared.ui.utils;
    let result = match form.get("action") {
        Some("pause") => utils.pause_queue(name).await.map(|changed| {
            if changed {
                format!("Paused queue {name}: no worker starts its jobs until it is resumed.")
            } else {
                format!("Queue {name} was already paused.")
            }
        }),
        Some("resume") => utils.resume_queue(name).await.map(|changed| {
            if changed {
                format!("Resumed queue {name}.")
            } else {
                format!("Queue {name} was not paused.")
            }
        }),
        other => {
            return (StatusCode::BAD_REQUEST, format!("unknown action {other:?}")).into_response();
        }
    };
    match result {
        Ok(notice) => back(&base, "/queues", "", &notice),
        Err(e) => back(&base, "/queues", "", &e.to_string()),
    }
}

pub(crate) async fn workers(
    State(shared): AppState,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = refuse(&shared, &headers, &form) {
        return refused;
    }
    let (Some("unlock"), Some(pool_id)) = (form.get("action"), form.get("pool_id")) else {
        return (StatusCode::BAD_REQUEST, "give action=unlock and a pool_id").into_response();
    };
    match shared
        .ui
        .utils
        .force_unlock_workers(&[pool_id.to_owned()])
        .await
    {
        Ok(()) => back(
            &base,
            "/workers",
            "",
            &format!("Unlocked the jobs and queues of {pool_id}."),
        ),
        Err(e) => failure(e),
    }
}
