//! The pages (GET): dashboard, jobs, one job, queues, workers, cron.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use graphile_worker::{JobFilter, JobOrder, JobState};
use maud::{Markup, html};
use serde::Deserialize;

use crate::chart;
use crate::layout::{
    Nav, button, confirm_button, csrf_field, page, state_badge, state_label, when,
};
use crate::state::{AppState, Base, Shared};

/// Jobs per page of the jobs list.
pub(crate) const PAGE_SIZE: i64 = 50;

/// A page that could not be made: the database failed.
pub(crate) fn failure(e: graphile_worker::Error) -> Response {
    tracing::warn!(error = %e, "admin UI: a page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(
            html! {
                h1 { "The database could not answer" }
                p { (e.to_string()) }
                p { "Reload to try again." }
            }
            .into_string(),
        ),
    )
        .into_response()
}

/// A whole page as a response.
fn render(
    shared: &Shared,
    base: &Base,
    nav: Nav,
    title: &str,
    notice: Option<&str>,
    body: Markup,
) -> Response {
    Html(page(shared, base, nav, title, notice, body).into_string()).into_response()
}

/// `?notice=…` after an action.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
}

pub(crate) async fn dashboard(
    State(shared): AppState,
    base: Base,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let stats = match shared.ui.utils.job_stats().await {
        Ok(stats) => stats,
        Err(e) => return failure(e),
    };
    let now = Utc::now();
    let by_task = group(stats.by_task());
    let by_queue = group(stats.by_queue());
    let body = html! {
        div.cards {
            @for state in JobState::ALL {
                a class={ "card card-" (state.as_str()) } href=(base.at(&format!("/jobs?state={}", state.as_str()))) {
                    div.n { (stats.by_state(state)) }
                    div.label { (state_label(state)) }
                }
            }
            div.card {
                div.n {
                    @match stats.oldest_ready_age_seconds {
                        Some(age) => (human_age(age)),
                        None => "–",
                    }
                }
                div.label { "oldest ready job waiting" }
            }
        }
        h2 { "The last hour" }
        (chart::svg(&shared.samples()))
        div.grid2 {
            div {
                h2 { "By task" }
                (count_table("task", &by_task, |task| base.at(&format!("/jobs?task={}", encode(task)))))
            }
            div {
                h2 { "By queue" }
                (count_table("queue", &by_queue, |queue| base.at(&format!("/jobs?queue={}", encode(queue)))))
            }
        }
        p.muted { "Counted " (when(now, now)) "." }
    };
    render(
        &shared,
        &base,
        Nav::Dashboard,
        "Dashboard",
        q.notice.as_deref(),
        body,
    )
}

/// Counts per name and state, names in order.
fn group(rows: Vec<(String, JobState, i64)>) -> BTreeMap<String, [i64; 5]> {
    let mut out: BTreeMap<String, [i64; 5]> = BTreeMap::new();
    for (name, state, n) in rows {
        if let Some(i) = JobState::ALL.iter().position(|s| *s == state) {
            out.entry(name).or_default()[i] += n;
        }
    }
    out
}

fn count_table(
    what: &str,
    rows: &BTreeMap<String, [i64; 5]>,
    link: impl Fn(&str) -> String,
) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No jobs." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { (what) }
                    @for state in JobState::ALL { th.num { (state.as_str()) } }
                } }
                tbody {
                    @for (name, counts) in rows {
                        tr {
                            td { a href=(link(name)) { (name) } }
                            @for n in counts { td.num { (n) } }
                        }
                    }
                }
            } }
        }
    }
}

fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

/// The jobs list's filters, as in the query string.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct JobsQuery {
    pub(crate) state: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) page: Option<i64>,
    pub(crate) notice: Option<String>,
}

impl JobsQuery {
    pub(crate) fn state(&self) -> Option<JobState> {
        self.state.as_deref().and_then(|s| s.parse().ok())
    }

    /// The filter, without limit and offset.
    pub(crate) fn filter(&self) -> JobFilter {
        let some = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        JobFilter {
            states: self.state().into_iter().collect(),
            task: some(&self.task),
            queue: some(&self.queue),
            key: some(&self.key),
            error: some(&self.error),
            order: JobOrder::NewestFirst,
            ..JobFilter::default()
        }
    }

    /// The query string of these filters (and `extra` pairs).
    pub(crate) fn query_string(&self, extra: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("state", &self.state),
            ("task", &self.task),
            ("queue", &self.queue),
            ("key", &self.key),
            ("error", &self.error),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
                pairs.push((name, v.clone()));
            }
        }
        pairs.extend(extra.iter().cloned());
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

pub(crate) async fn jobs(
    State(shared): AppState,
    base: Base,
    Query(q): Query<JobsQuery>,
) -> Response {
    let utils = &shared.ui.utils;
    let page_number = q.page.unwrap_or(1).max(1);
    let filter = JobFilter {
        limit: PAGE_SIZE,
        offset: (page_number - 1).saturating_mul(PAGE_SIZE),
        ..q.filter()
    };
    let (entries, stats) = match tokio::try_join!(utils.list_jobs(&filter), utils.job_stats()) {
        Ok(found) => found,
        Err(e) => return failure(e),
    };
    // The counts by state, task and queue answer the tabs (under the task
    // and queue filters) and most totals; only a key or error text needs a
    // count of its own (each is a pass over the jobs, so one fewer matters
    // on a big table).
    let counted = |state: Option<JobState>| -> i64 {
        stats
            .counts
            .iter()
            .filter(|c| state.is_none_or(|s| s == c.state))
            .filter(|c| filter.task.as_ref().is_none_or(|t| *t == c.task_identifier))
            .filter(|c| {
                filter
                    .queue
                    .as_ref()
                    .is_none_or(|q| Some(q) == c.queue_name.as_ref())
            })
            .map(|c| c.jobs)
            .sum()
    };
    let total = if filter.key.is_none() && filter.error.is_none() {
        counted(q.state())
    } else {
        match utils.count_jobs(&filter).await {
            Ok(total) => total,
            Err(e) => return failure(e),
        }
    };
    let now = Utc::now();
    let current = q.state();
    let all_total = counted(None);
    let tab = |state: Option<JobState>| {
        let q = JobsQuery {
            state: state.map(|s| s.as_str().to_owned()),
            page: None,
            notice: None,
            ..q.clone()
        };
        base.at(&format!("/jobs?{}", q.query_string(&[])))
    };
    let read_only = shared.ui.read_only;
    let pages = (total + PAGE_SIZE - 1) / PAGE_SIZE;
    let body = html! {
        div.tabs {
            a href=(tab(None)) class=[current.is_none().then_some("current")] { "All (" (all_total) ")" }
            @for state in JobState::ALL {
                a href=(tab(Some(state))) class=[(current == Some(state)).then_some("current")] {
                    (state_label(state)) " (" (counted(Some(state))) ")"
                }
            }
        }
        form.filters method="get" action=(base.at("/jobs")) {
            @if let Some(state) = current { input type="hidden" name="state" value=(state.as_str()); }
            label { "Task" input name="task" value=[q.task.as_deref()]; }
            label { "Queue" input name="queue" value=[q.queue.as_deref()]; }
            label { "Key" input name="key" value=[q.key.as_deref()]; }
            label { "Text in last error" input name="error" value=[q.error.as_deref()]; }
            button.primary type="submit" { "Filter" }
            a href=(base.at(&format!("/jobs{}", current.map(|s| format!("?state={}", s.as_str())).unwrap_or_default()))) { "Clear" }
            label.autorefresh { span { input #auto-refresh type="checkbox" checked; " Auto-refresh" } }
        }
        script { (maud::PreEscaped(AUTO_REFRESH_SCRIPT)) }
        div #jobs-table
            hx-get=(base.at(&format!("/jobs?{}", q.query_string(&[("page", page_number.to_string())]))))
            hx-trigger="every 5s [autoRefreshWanted()]" hx-select="#jobs-table" hx-swap="outerHTML" {
            form method="post" action=(base.at("/jobs/actions")) {
                (csrf_field(&shared))
                @for (name, value) in [("state", &q.state), ("task", &q.task), ("queue", &q.queue), ("key", &q.key), ("error", &q.error)] {
                    @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
                }
                @if !read_only && total > 0 {
                    div.actions {
                        span.muted { "Selected:" }
                        (button("Retry", "retry", ""))
                        (confirm_button("Complete", "complete", "Complete the selected jobs? They are deleted, as if they had run.", ""))
                        input name="reason" placeholder="reason for Fail" aria-label="reason for Fail";
                        (confirm_button("Fail", "fail", "Fail the selected jobs permanently?", "danger"))
                        (confirm_button("Delete", "delete", "Delete the selected jobs?", "danger"))
                    }
                    div.actions {
                        span.muted { "All " (total) " matching this filter:" }
                        (confirm_button("Retry", "retry-all", &format!("Retry all {total} matching jobs?"), ""))
                        (confirm_button("Complete", "complete-all", &format!("Complete all {total} matching jobs?"), ""))
                        (confirm_button("Fail", "fail-all", &format!("Fail all {total} matching jobs permanently?"), "danger"))
                        (confirm_button("Delete", "delete-all", &format!("Delete all {total} matching jobs?"), "danger"))
                    }
                }
                @if entries.is_empty() {
                    p.muted { "No jobs match." }
                } @else {
                    div.table-wrap { table {
                        thead { tr {
                            @if !read_only { th { span.muted { "✓" } } }
                            th.num { "id" } th { "state" } th { "task" } th.hide-narrow { "queue" }
                            th { "run at" } th.num { "attempts" } th.hide-narrow { "key" } th { "last error" }
                            @if !read_only { th {} }
                        } }
                        tbody {
                            @for entry in &entries {
                                @let job = &entry.job;
                                tr {
                                    @if !read_only {
                                        td { input type="checkbox" name="ids" value=(job.id) aria-label={ "select job " (job.id) }; }
                                    }
                                    td.num { a href=(base.at(&format!("/jobs/{}", job.id))) { (job.id) } }
                                    td { (state_badge(entry.state)) }
                                    td { (job.task_identifier) }
                                    td.hide-narrow { (job.queue_name.as_deref().unwrap_or("–")) }
                                    td { (when(job.run_at, now)) }
                                    td.num { (job.attempts) "/" (job.max_attempts) }
                                    td.hide-narrow { (job.key.as_deref().unwrap_or("–")) }
                                    td.error title=[job.last_error.as_deref()] { (job.last_error.as_deref().unwrap_or("")) }
                                    @if !read_only {
                                        td.row-actions {
                                            @if entry.state != JobState::Locked {
                                                (button("Retry", &format!("retry:{}", job.id), ""))
                                                (confirm_button("Delete", &format!("delete:{}", job.id), &format!("Delete job {}?", job.id), "danger"))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
            @if pages > 1 {
                div.pages {
                    @if page_number > 1 {
                        a href=(base.at(&format!("/jobs?{}", q.query_string(&[("page", (page_number - 1).to_string())])))) { "← Newer" }
                    }
                    span.muted { "Page " (page_number) " of " (pages) }
                    @if page_number < pages {
                        a href=(base.at(&format!("/jobs?{}", q.query_string(&[("page", (page_number + 1).to_string())])))) { "Older →" }
                    }
                }
            }
        }
    };
    render(&shared, &base, Nav::Jobs, "Jobs", q.notice.as_deref(), body)
}

/// Auto-refresh runs while its box is ticked and no row is selected.
const AUTO_REFRESH_SCRIPT: &str = "function autoRefreshWanted() {\
  var box = document.getElementById('auto-refresh');\
  return box && box.checked && !document.querySelector('input[name=ids]:checked');\
}";

pub(crate) async fn job(
    State(shared): AppState,
    base: Base,
    Path(id): Path<i64>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let entry = match shared.ui.utils.get_job(id).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            let body = html! {
                p { "No job " (id) ": it completed, was deleted, or never existed." }
                p { a href=(base.at("/jobs")) { "All jobs" } }
            };
            let page = page(
                &shared,
                &base,
                Nav::Jobs,
                &format!("Job {id}"),
                q.notice.as_deref(),
                body,
            );
            return (StatusCode::NOT_FOUND, Html(page.into_string())).into_response();
        }
        Err(e) => return failure(e),
    };
    let job = &entry.job;
    let now = Utc::now();
    let payload = serde_json::to_string_pretty(&job.payload).unwrap_or_default();
    let flags: Vec<String> = match &job.flags {
        Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let body = html! {
        div.panel {
            dl.fields {
                dt { "state" } dd { (state_badge(entry.state)) }
                dt { "task" } dd { (job.task_identifier) }
                dt { "queue" } dd { (job.queue_name.as_deref().unwrap_or("–")) }
                dt { "key" } dd { (job.key.as_deref().unwrap_or("–")) }
                dt { "priority" } dd { (job.priority) }
                dt { "attempts" } dd { (job.attempts) " of " (job.max_attempts) }
                dt { "run at" } dd {
                    (job.run_at.format("%Y-%m-%d %H:%M:%S UTC")) " (" (when(job.run_at, now)) ")"
                    @if entry.state == JobState::Failed { " — failed permanently: it will not run again" }
                }
                dt { "locked" } dd {
                    @match (&job.locked_by, job.locked_at) {
                        (Some(by), Some(at)) => { "by " code { (by) } " " (when(at, now)) }
                        _ => "no",
                    }
                }
                dt { "flags" } dd { @if flags.is_empty() { "–" } @else { (flags.join(", ")) } }
                dt { "created" } dd { (when(job.created_at, now)) }
                dt { "updated" } dd { (when(job.updated_at, now)) }
                dt { "revision" } dd { (job.revision) }
            }
        }
        h2 { "Payload" }
        @if shared.ui.hide_payloads {
            p.muted { "Payloads are hidden on this server." }
        } @else {
            pre.payload { (payload) }
        }
        h2 { "Last error" }
        @match &job.last_error {
            Some(error) => pre.last-error { (error) },
            None => p.muted { "None." },
        }
        @if !shared.ui.read_only {
            h2 { "Actions" }
            form method="post" action=(base.at(&format!("/jobs/{id}/actions"))) {
                (csrf_field(&shared))
                div.actions {
                    (button("Retry", "retry", "primary"))
                    (confirm_button("Complete", "complete", &format!("Complete job {id}? It is deleted, as if it had run."), ""))
                    input name="reason" placeholder="reason for Fail" aria-label="reason for Fail";
                    (confirm_button("Fail", "fail", &format!("Fail job {id} permanently?"), "danger"))
                    (confirm_button("Delete", "delete", &format!("Delete job {id}?"), "danger"))
                }
                div.actions {
                    label { "Run at (UTC) " input type="datetime-local" name="run_at" step="1"; }
                    label { "Priority " input type="number" name="priority" min="-32768" max="32767" value=(job.priority) style="width:6rem"; }
                    (button("Reschedule", "reschedule", ""))
                }
            }
        }
    };
    render(
        &shared,
        &base,
        Nav::Jobs,
        &format!("Job {id}"),
        q.notice.as_deref(),
        body,
    )
}

pub(crate) async fn queues(
    State(shared): AppState,
    base: Base,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let queues = match shared.ui.utils.list_queues().await {
        Ok(queues) => queues,
        Err(e) => return failure(e),
    };
    let now = Utc::now();
    let read_only = shared.ui.read_only;
    let body = html! {
        @if queues.is_empty() {
            p.muted { "No named queues." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { "queue" } th.num { "waiting" } th.num { "jobs" } th { "lock holder" } th { "locked since" } th { "state" }
                    @if !read_only { th {} }
                } }
                tbody {
                    @for queue in &queues {
                        tr {
                            td { a href=(base.at(&format!("/jobs?queue={}", encode(&queue.queue_name)))) { (queue.queue_name) } }
                            td.num { (queue.waiting) }
                            td.num { (queue.jobs) }
                            td { @match &queue.locked_by { Some(by) => code { (by) }, None => "–" } }
                            td { @match queue.locked_at { Some(at) => (when(at, now)), None => "–" } }
                            td { @if queue.paused { span.state.state-retrying { "paused" } } @else { "running" } }
                            @if !read_only {
                                td {
                                    form method="post" action=(base.at("/queues/actions")) {
                                        (csrf_field(&shared))
                                        input type="hidden" name="queue" value=(queue.queue_name);
                                        @if queue.paused {
                                            (button("Resume", "resume", "primary"))
                                        } @else {
                                            (confirm_button("Pause", "pause", &format!("Pause queue {}? No worker will start its jobs until it is resumed.", queue.queue_name), ""))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    render(
        &shared,
        &base,
        Nav::Queues,
        "Queues",
        q.notice.as_deref(),
        body,
    )
}

pub(crate) async fn workers(
    State(shared): AppState,
    base: Base,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let utils = &shared.ui.utils;
    let (workers, holders) =
        match tokio::try_join!(utils.list_workers(), utils.unregistered_lock_holders()) {
            Ok(found) => found,
            Err(e) => return failure(e),
        };
    let now = Utc::now();
    let unlock = |shared: &Shared, pool_id: &str| {
        html! {
            form method="post" action=(base.at("/workers/actions")) {
                (csrf_field(shared))
                input type="hidden" name="pool_id" value=(pool_id);
                (confirm_button("Unlock", "unlock", &format!("Unlock every job and queue held by {pool_id}? Only do this for a worker that is gone: if it is still running, its jobs may run twice."), "danger"))
            }
        }
    };
    let read_only = shared.ui.read_only;
    let body = html! {
        @if !read_only {
            p.warning { "Unlock releases a worker's jobs and queues for others to run. Use it only for a worker you know is gone; a live worker's jobs would run twice." }
        }
        h2 { "Registered workers" }
        @if workers.is_empty() {
            p.muted { "No registered (Rust) workers." }
        } @else {
            div.table-wrap { table {
                thead { tr { th { "worker" } th { "started" } th { "last heartbeat" } th.num { "jobs held" } th.hide-narrow { "metadata" } @if !read_only { th {} } } }
                tbody {
                    @for worker in &workers {
                        tr {
                            td { code { (worker.id) } }
                            td { (when(worker.started_at, now)) }
                            td { (when(worker.last_heartbeat_at, now)) }
                            td.num { (worker.jobs_held) }
                            td.hide-narrow { @if let Some(m) = &worker.metadata { code { (m.to_string()) } } }
                            @if !read_only { td { (unlock(&shared, &worker.id)) } }
                        }
                    }
                }
            } }
        }
        h2 { "Other lock holders" }
        p.muted { "Holders of jobs that are not registered: Node workers, or Rust workers that were forgotten." }
        @if holders.is_empty() {
            p.muted { "None." }
        } @else {
            div.table-wrap { table {
                thead { tr { th { "holder" } th.num { "jobs" } th { "oldest lock" } @if !read_only { th {} } } }
                tbody {
                    @for holder in &holders {
                        tr {
                            td { code { (holder.locked_by) } }
                            td.num { (holder.jobs) }
                            td { @match holder.since { Some(at) => (when(at, now)), None => "–" } }
                            @if !read_only { td { (unlock(&shared, &holder.locked_by)) } }
                        }
                    }
                }
            } }
        }
    };
    render(
        &shared,
        &base,
        Nav::Workers,
        "Workers",
        q.notice.as_deref(),
        body,
    )
}

pub(crate) async fn cron(
    State(shared): AppState,
    base: Base,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let known = match shared.ui.utils.list_known_crontabs().await {
        Ok(known) => known,
        Err(e) => return failure(e),
    };
    let now = Utc::now();
    let items = &shared.ui.crontab;
    let body = html! {
        @if items.is_empty() {
            p.muted { "Start the UI with a crontab (graphile-worker ui --crontab FILE, or AdminUi::crontab) to see when each schedule fires next." }
        }
        @if known.is_empty() {
            p.muted { "The database knows no cron schedules yet." }
        } @else {
            div.table-wrap { table {
                thead { tr { th { "identifier" } th { "known since" } th { "last execution" } th { "next fire" } } }
                tbody {
                    @for schedule in &known {
                        @let item = items.iter().find(|i| i.identifier == schedule.identifier);
                        tr {
                            td { code { (schedule.identifier) } }
                            td { (when(schedule.known_since, now)) }
                            td { @match schedule.last_execution { Some(at) => (when(at, now)), None => "never" } }
                            td {
                                @match item.and_then(|i| i.next_fire_after(now)) {
                                    Some(next) => (when(next, now)),
                                    None => span.muted { @if item.is_some() { "never" } @else { "–" } },
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    render(&shared, &base, Nav::Cron, "Cron", q.notice.as_deref(), body)
}
