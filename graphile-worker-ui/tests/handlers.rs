//! The admin UI through its router, against a real database: every page
//! (what an operator sees), every action (what changes, and what the notice
//! says), the CSRF and read-only guards, hidden payloads, nesting under a
//! prefix, and basic authentication.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use graphile_worker::testing::TestDb;
use graphile_worker::{Job, JobEntry, JobFilter, JobSpec, JobState, QueueInfo};
use graphile_worker_ui::{AdminUi, basic_auth};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Form fields or headers, in order.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

const XSS: &str = "<script>alert(1)</script>";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
const XSS_RAW: &str = "<script>alert(1)";

// ---------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// The `Location` of a 303 redirect.
    fn location(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::SEE_OTHER,
            "expected a redirect, got: {}",
            self.body
        );
        self.headers
            .get(header::LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The redirect's path, without its query.
    fn location_path(&self) -> String {
        let location = self.location();
        location.split('?').next().unwrap().to_owned()
    }

    /// The redirect's query fields, in order.
    fn location_query(&self) -> Vec<(String, String)> {
        let location = self.location();
        let query = location.split_once('?').map_or("", |(_, q)| q);
        serde_urlencoded::from_str(query).unwrap()
    }

    /// The `notice` of a redirect, decoded.
    fn notice(&self) -> String {
        self.location_query()
            .into_iter()
            .find(|(k, _)| k == "notice")
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no notice in {}", self.location()))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn call(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, path: &str) -> Reply {
    call(app, Request::get(path).body(Body::empty()).unwrap()).await
}

/// A page that must answer 200; its HTML.
async fn page(app: &Router, path: &str) -> String {
    let reply = get(app, path).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.body);
    assert!(
        reply.content_type().starts_with("text/html"),
        "GET {path}: content type {}",
        reply.content_type()
    );
    reply.body
}

/// A form POST with exactly these fields and extra headers.
async fn post_raw(
    app: &Router,
    path: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Reply {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = serde_urlencoded::to_string(fields).unwrap();
    call(app, request.body(Body::from(body)).unwrap()).await
}

/// The CSRF token of a page: its `<meta name="csrf-token">`.
fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("a csrf-token meta tag") + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// The token the app's pages carry (read from `page_path`).
async fn token_at(app: &Router, page_path: &str) -> String {
    let token = csrf_of(&page(app, page_path).await);
    assert!(token.len() >= 32, "a long token: {token}");
    token
}

/// A POST as a page of the UI sends it: with the page's token.
async fn post(app: &Router, path: &str, fields: &[(&str, &str)]) -> Reply {
    post_under(app, "", path, fields).await
}

/// [`post`] for an app nested under `prefix`.
async fn post_under(app: &Router, prefix: &str, path: &str, fields: &[(&str, &str)]) -> Reply {
    let token = token_at(app, &format!("{prefix}/jobs")).await;
    let mut all: Vec<(&str, &str)> = vec![("csrf", token.as_str())];
    all.extend_from_slice(fields);
    post_raw(app, &format!("{prefix}{path}"), &all, &[]).await
}

#[track_caller]
fn assert_contains(html: &str, needle: &str) {
    assert!(
        html.contains(needle),
        "expected {needle:?} in the page:\n{html}"
    );
}

#[track_caller]
fn assert_lacks(html: &str, needle: &str) {
    assert!(
        !html.contains(needle),
        "did not expect {needle:?} in the page:\n{html}"
    );
}

/// The table row (`<tr>…</tr>`) of `html` that contains `needle`.
#[track_caller]
fn row<'a>(html: &'a str, needle: &str) -> &'a str {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the page:\n{html}"));
    let start = html[..at].rfind("<tr>").expect("inside a table row");
    let end = at + html[at..].find("</tr>").expect("the row ends");
    &html[start..end]
}

/// Whether the jobs list shows job `id` (its link).
fn lists(html: &str, id: i64) -> bool {
    html.contains(&format!("href=\"/jobs/{id}\""))
}

/// HTML text escaping as maud does it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every `href="…"` of a page.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

// ---------------------------------------------------------------------------
// Database fixtures
// ---------------------------------------------------------------------------

fn ui(db: &TestDb) -> Router {
    AdminUi::new(db.utils().clone()).router()
}

async fn add(db: &TestDb, task: &str, spec: JobSpec) -> Job {
    add_with(db, task, serde_json::json!({}), spec).await
}

async fn add_with(db: &TestDb, task: &str, payload: serde_json::Value, spec: JobSpec) -> Job {
    db.utils().add_raw_job(task, payload, spec).await.unwrap()
}

fn in_queue(queue: &str) -> JobSpec {
    JobSpec {
        queue_name: Some(queue.into()),
        ..JobSpec::default()
    }
}

fn in_an_hour() -> JobSpec {
    JobSpec {
        run_at: Some(Utc::now() + chrono::Duration::hours(1)),
        ..JobSpec::default()
    }
}

async fn fail(db: &TestDb, id: i64, reason: &str) {
    let failed = db
        .utils()
        .permanently_fail_jobs(&[id], Some(reason))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
}

/// As a worker that claimed the job.
async fn lock(db: &TestDb, id: i64, by: &str) {
    graphile_worker::sqlx::query(
        "update graphile_worker._private_jobs set locked_at = now(), locked_by = $2 where id = $1",
    )
    .bind(id)
    .bind(by)
    .execute(db.pool())
    .await
    .unwrap();
}

/// As a worker running the queue's current job.
async fn lock_queue(db: &TestDb, queue: &str, by: &str) {
    graphile_worker::sqlx::query(
        "update graphile_worker._private_job_queues set locked_at = now(), locked_by = $2 where queue_name = $1",
    )
    .bind(queue)
    .bind(by)
    .execute(db.pool())
    .await
    .unwrap();
}

/// Failed once, waiting for its retry in an hour.
async fn make_retrying(db: &TestDb, id: i64) {
    graphile_worker::sqlx::query(
        "update graphile_worker._private_jobs set attempts = 1, last_error = 'first try failed', \
         run_at = now() + interval '1 hour' where id = $1",
    )
    .bind(id)
    .execute(db.pool())
    .await
    .unwrap();
}

/// A registered (Rust) worker, as `worker_heartbeat` records it
/// (migrations/000020.sql).
async fn register_worker(db: &TestDb, id: &str, metadata: serde_json::Value) {
    graphile_worker::sqlx::query(
        "insert into graphile_worker._private_workers (id, last_heartbeat_at, started_at, metadata) \
         values ($1, now(), now() - interval '2 hours', $2)",
    )
    .bind(id)
    .bind(metadata)
    .execute(db.pool())
    .await
    .unwrap();
}

async fn job(db: &TestDb, id: i64) -> Option<JobEntry> {
    db.utils().get_job(id).await.unwrap()
}

async fn must_job(db: &TestDb, id: i64) -> JobEntry {
    job(db, id)
        .await
        .unwrap_or_else(|| panic!("job {id} is gone"))
}

async fn all_jobs(db: &TestDb) -> Vec<JobEntry> {
    db.utils()
        .list_jobs(&JobFilter::default().limit(10_000))
        .await
        .unwrap()
}

async fn queue(db: &TestDb, name: &str) -> QueueInfo {
    db.utils()
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.queue_name == name)
        .unwrap_or_else(|| panic!("no queue {name}"))
}

/// Everything an action could change.
async fn snapshot(db: &TestDb) -> (Vec<JobEntry>, Vec<QueueInfo>, usize) {
    let utils = db.utils();
    (
        all_jobs(db).await,
        utils.list_queues().await.unwrap(),
        utils.unregistered_lock_holders().await.unwrap().len(),
    )
}

fn close_to_now(at: DateTime<Utc>) -> bool {
    (at - Utc::now()).num_seconds().abs() < 60
}

// ---------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------

/// One job in every state, over two tasks and one named queue.
struct Mixed {
    ready_email: Job,
    ready_resize: Job,
    scheduled: Job,
    retrying: Job,
    locked: Job,
    failed: Job,
}

async fn mixed(db: &TestDb) -> Mixed {
    let ready_email = add(db, "send_email", in_queue("emails")).await;
    let ready_resize = add(db, "resize", JobSpec::default()).await;
    let scheduled = add(db, "resize", in_an_hour()).await;
    let retrying = add(db, "send_email", in_queue("emails")).await;
    make_retrying(db, retrying.id).await;
    let locked = add(db, "resize", JobSpec::default()).await;
    lock(db, locked.id, "worker-x").await;
    let failed = add(db, "send_email", in_queue("emails")).await;
    fail(db, failed.id, "smtp refused").await;
    Mixed {
        ready_email,
        ready_resize,
        scheduled,
        retrying,
        locked,
        failed,
    }
}

/// The counts row of a task or queue: a link, then one count per state
/// (ready, scheduled, retrying, locked, failed).
fn count_row(filter: &str, name: &str, counts: [i64; 5]) -> String {
    let cells: String = counts
        .iter()
        .map(|n| format!("<td class=\"num\">{n}</td>"))
        .collect();
    format!("<tr><td><a href=\"/jobs?{filter}={name}\">{name}</a></td>{cells}</tr>")
}

/// A dashboard card: the count of a state, linking to its tab.
fn card(state: &str, label: &str, n: i64) -> String {
    format!(
        "href=\"/jobs?state={state}\"><div class=\"n\">{n}</div><div class=\"label\">{label}</div></a>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_counts_jobs_by_state_task_and_queue() {
    let db = TestDb::new().await;
    mixed(&db).await;
    let app = ui(&db);
    let html = page(&app, "/").await;
    assert_contains(&html, "<title>Dashboard · graphile-worker</title>");
    assert_contains(&html, "<h1>Dashboard</h1>");
    assert_contains(&html, &card("ready", "Ready", 2));
    assert_contains(&html, &card("scheduled", "Scheduled", 1));
    assert_contains(&html, &card("retrying", "Retrying", 1));
    assert_contains(&html, &card("locked", "Locked", 1));
    assert_contains(&html, &card("failed", "Failed", 1));
    assert_contains(&html, "oldest ready job waiting");
    assert_contains(&html, "<h2>By task</h2>");
    assert_contains(&html, &count_row("task", "resize", [1, 1, 0, 1, 0]));
    assert_contains(&html, &count_row("task", "send_email", [1, 0, 1, 0, 1]));
    assert_contains(&html, "<h2>By queue</h2>");
    assert_contains(&html, &count_row("queue", "emails", [1, 0, 1, 0, 1]));
    // Actions are on other pages; the dashboard has the token all the same.
    assert_eq!(csrf_of(&html).len(), 48);
    assert_contains(&html, "<a href=\"/\" class=\"current\">Dashboard</a>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_of_an_empty_schema() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let html = page(&app, "/").await;
    for (state, label) in [
        ("ready", "Ready"),
        ("scheduled", "Scheduled"),
        ("retrying", "Retrying"),
        ("locked", "Locked"),
        ("failed", "Failed"),
    ] {
        assert_contains(&html, &card(state, label, 0));
    }
    // No oldest ready job, and both tables say there is nothing.
    assert_contains(
        &html,
        "<div class=\"n\">–</div><div class=\"label\">oldest ready job waiting</div>",
    );
    assert_eq!(html.matches("<p class=\"muted\">No jobs.</p>").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_chart_fills_in_from_samples() {
    let db = TestDb::new().await;
    add(&db, "send_email", JobSpec::default()).await;
    let app = AdminUi::new(db.utils().clone())
        .sample_interval(Duration::from_millis(100))
        .router();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let html = loop {
        let html = page(&app, "/").await;
        if html.contains("<svg class=\"chart\"") {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chart after 10 s:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_contains(&html, "aria-label=\"Jobs by state over time\"");
    assert_eq!(html.matches("<polyline").count(), 5);
    assert_contains(&html, "<title>ready</title>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_lists_every_job_with_its_state() {
    let db = TestDb::new().await;
    let m = mixed(&db).await;
    let app = ui(&db);
    let html = page(&app, "/jobs").await;
    assert_contains(&html, "<a href=\"/jobs?\" class=\"current\">All (6)</a>");
    assert_contains(&html, "<a href=\"/jobs?state=ready\">Ready (2)</a>");
    assert_contains(&html, "<a href=\"/jobs?state=failed\">Failed (1)</a>");
    for (job, state) in [
        (&m.ready_email, "ready"),
        (&m.ready_resize, "ready"),
        (&m.scheduled, "scheduled"),
        (&m.retrying, "retrying"),
        (&m.locked, "locked"),
        (&m.failed, "failed"),
    ] {
        let link = format!("<a href=\"/jobs/{0}\">{0}</a>", job.id);
        let row = row(&html, &link);
        assert_contains(
            row,
            &format!("<span class=\"state state-{state}\">{state}</span>"),
        );
        assert_contains(row, &format!("<td>{}</td>", job.task_identifier));
        assert_contains(row, &format!("name=\"ids\" value=\"{}\"", job.id));
    }
    let failed = row(&html, &format!("href=\"/jobs/{}\"", m.failed.id));
    assert_contains(failed, "<td class=\"hide-narrow\">emails</td>");
    assert_contains(failed, "<td class=\"num\">25/25</td>");
    assert_contains(failed, "smtp refused");
    let ready = row(&html, &format!("href=\"/jobs/{}\"", m.ready_resize.id));
    assert_contains(ready, "<td class=\"num\">0/25</td>");
    // Newest first.
    let newest = html
        .find(&format!("href=\"/jobs/{}\"", m.failed.id))
        .unwrap();
    let oldest = html
        .find(&format!("href=\"/jobs/{}\"", m.ready_email.id))
        .unwrap();
    assert!(newest < oldest, "newest first");
    // The bulk actions, for the selection and for all 6 matching.
    assert_contains(&html, "action=\"/jobs/actions\"");
    for action in ["retry", "complete", "fail", "delete"] {
        assert_contains(&html, &format!("name=\"action\" value=\"{action}\""));
        assert_contains(&html, &format!("name=\"action\" value=\"{action}-all\""));
    }
    assert_contains(&html, "All 6 matching this filter:");
    assert_contains(&html, "name=\"reason\"");
    assert_contains(
        &html,
        &format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            csrf_of(&html)
        ),
    );
    assert_lacks(&html, "Page 1 of");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_of_an_empty_schema_says_so() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let html = page(&app, "/jobs").await;
    assert_contains(&html, "No jobs match.");
    assert_contains(&html, "All (0)");
    // Nothing to act on: no action buttons.
    assert_lacks(&html, "name=\"action\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_state_tab_narrows_the_list() {
    let db = TestDb::new().await;
    let m = mixed(&db).await;
    let app = ui(&db);
    let cases = [
        ("ready", vec![m.ready_email.id, m.ready_resize.id]),
        ("scheduled", vec![m.scheduled.id]),
        ("retrying", vec![m.retrying.id]),
        ("locked", vec![m.locked.id]),
        ("failed", vec![m.failed.id]),
    ];
    let everyone = [
        m.ready_email.id,
        m.ready_resize.id,
        m.scheduled.id,
        m.retrying.id,
        m.locked.id,
        m.failed.id,
    ];
    for (state, expected) in cases {
        let html = page(&app, &format!("/jobs?state={state}")).await;
        for id in everyone {
            assert_eq!(
                lists(&html, id),
                expected.contains(&id),
                "state={state}, job {id}"
            );
        }
        let label = format!("{}{}", state[..1].to_uppercase(), &state[1..]);
        assert_contains(
            &html,
            &format!(
                "<a href=\"/jobs?state={state}\" class=\"current\">{label} ({})</a>",
                expected.len()
            ),
        );
        // The filter form and the bulk form keep the state.
        assert_contains(
            &html,
            &format!("<input type=\"hidden\" name=\"state\" value=\"{state}\">"),
        );
        assert_contains(
            &html,
            &format!("All {} matching this filter:", expected.len()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_filters_by_task_queue_key_and_error_text() {
    let db = TestDb::new().await;
    let email = add(&db, "send_email", in_queue("emails")).await;
    let other_email = add(&db, "send_email", JobSpec::default()).await;
    let resize = add(&db, "resize", in_queue("images")).await;
    let keyed = add(
        &db,
        "resize",
        JobSpec {
            job_key: Some("resize-avatar-7".into()),
            ..JobSpec::default()
        },
    )
    .await;
    let timeout = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, timeout.id, "upstream timeout after 30s").await;
    let refused = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, refused.id, "connection refused").await;
    let everyone = [
        email.id,
        other_email.id,
        resize.id,
        keyed.id,
        timeout.id,
        refused.id,
    ];
    let app = ui(&db);
    let cases: [(&str, Vec<i64>); 7] = [
        ("task=send_email", vec![email.id, other_email.id]),
        ("queue=emails", vec![email.id]),
        ("queue=images", vec![resize.id]),
        ("key=resize-avatar-7", vec![keyed.id]),
        ("error=timeout", vec![timeout.id]),
        ("task=send_email&queue=emails", vec![email.id]),
        // Empty fields (a submitted blank form) do not filter.
        ("task=&queue=&key=&error=", everyone.to_vec()),
    ];
    for (query, expected) in cases {
        let html = page(&app, &format!("/jobs?{query}")).await;
        for id in everyone {
            assert_eq!(
                lists(&html, id),
                expected.contains(&id),
                "{query}: job {id}"
            );
        }
        assert_contains(
            &html,
            &format!("All {} matching this filter:", expected.len()),
        );
    }
    // The form shows the filter in force, and the bulk form carries it.
    let html = page(&app, "/jobs?task=send_email&error=refused%20x").await;
    assert_contains(&html, "<input name=\"task\" value=\"send_email\">");
    // The state tabs keep the other filters, and count under the task and
    // queue filters: the two failed jobs are `fetch` jobs.
    assert_contains(
        &html,
        "<a href=\"/jobs?state=failed&amp;task=send_email&amp;error=refused+x\">Failed (0)</a>",
    );
    assert_contains(
        &html,
        "<a href=\"/jobs?state=ready&amp;task=send_email&amp;error=refused+x\">Ready (2)</a>",
    );
    let html = page(&app, "/jobs?task=fetch").await;
    assert_contains(
        &html,
        "<a href=\"/jobs?task=fetch\" class=\"current\">All (2)</a>",
    );
    assert_contains(
        &html,
        "<a href=\"/jobs?state=failed&amp;task=fetch\">Failed (2)</a>",
    );
    let html = page(&app, "/jobs?task=send_email&error=refused%20x").await;
    assert_contains(&html, "<input name=\"error\" value=\"refused x\">");
    assert_contains(
        &html,
        "<input type=\"hidden\" name=\"task\" value=\"send_email\">",
    );
    assert_contains(
        &html,
        "<input type=\"hidden\" name=\"error\" value=\"refused x\">",
    );
    assert_contains(&html, "No jobs match.");
    // No match on a key.
    let html = page(&app, "/jobs?key=nope").await;
    assert_contains(&html, "No jobs match.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_paged_fifty_at_a_time() {
    let db = TestDb::new().await;
    let mut bulk = Vec::new();
    for n in 0..51 {
        bulk.push(
            add_with(
                &db,
                "bulk",
                serde_json::json!({ "n": n }),
                JobSpec::default(),
            )
            .await,
        );
    }
    let other = add(&db, "other", JobSpec::default()).await;
    let app = ui(&db);

    let first = page(&app, "/jobs?task=bulk").await;
    assert_contains(&first, "Page 1 of 2");
    assert_contains(&first, "<a href=\"/jobs?task=bulk&amp;page=2\">Older →</a>");
    assert_lacks(&first, "← Newer");
    assert_contains(&first, "All 51 matching this filter:");
    // The 50 newest; the oldest is on page 2; the other task is not listed.
    assert!(!lists(&first, bulk[0].id));
    for job in &bulk[1..] {
        assert!(lists(&first, job.id), "job {} on page 1", job.id);
    }
    assert!(!lists(&first, other.id));

    let second = page(&app, "/jobs?task=bulk&page=2").await;
    assert_contains(&second, "Page 2 of 2");
    assert_contains(
        &second,
        "<a href=\"/jobs?task=bulk&amp;page=1\">← Newer</a>",
    );
    assert_lacks(&second, "Older →");
    assert!(lists(&second, bulk[0].id));
    assert_eq!(second.matches("name=\"ids\"").count(), 1);

    // Unfiltered: 52 jobs, two pages as well.
    let all = page(&app, "/jobs").await;
    assert_contains(&all, "Page 1 of 2");
    assert_contains(&all, "<a href=\"/jobs?page=2\">Older →</a>");
    assert_eq!(all.matches("name=\"ids\"").count(), 50);

    // Out of range pages are harmless.
    let past = page(&app, "/jobs?task=bulk&page=7").await;
    assert_contains(&past, "No jobs match.");
    let zero = page(&app, "/jobs?task=bulk&page=0").await;
    assert_contains(&zero, "Page 1 of 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_page_number_is_an_empty_page_not_a_panic() {
    let db = TestDb::new().await;
    add(&db, "bulk", JobSpec::default()).await;
    let app = ui(&db);
    let html = page(&app, &format!("/jobs?page={}", i64::MAX)).await;
    assert_contains(&html, "No jobs match.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_shows_every_field_and_the_pretty_payload() {
    let db = TestDb::new().await;
    let payload = serde_json::json!({"to": "ada@example.com", "tags": ["welcome", "new"], "n": 7});
    let created = add_with(
        &db,
        "send_email",
        payload.clone(),
        JobSpec {
            queue_name: Some("emails".into()),
            max_attempts: Some(5),
            job_key: Some("welcome-7".into()),
            priority: Some(3),
            flags: Some(vec!["slow".into()]),
            ..JobSpec::default()
        },
    )
    .await;
    let app = ui(&db);
    let html = page(&app, &format!("/jobs/{}", created.id)).await;
    assert_contains(&html, &format!("<h1>Job {}</h1>", created.id));
    for (field, value) in [
        ("state", "<span class=\"state state-ready\">ready</span>"),
        ("task", "send_email"),
        ("queue", "emails"),
        ("key", "welcome-7"),
        ("priority", "3"),
        ("attempts", "0 of 5"),
        ("locked", "no"),
        ("flags", "slow"),
        ("revision", "0"),
    ] {
        assert_contains(&html, &format!("<dt>{field}</dt><dd>{value}</dd>"));
    }
    assert_contains(
        &html,
        &format!(
            "<dt>run at</dt><dd>{} UTC",
            created.run_at.format("%Y-%m-%d %H:%M:%S")
        ),
    );
    let pretty = serde_json::to_string_pretty(&payload).unwrap();
    assert!(pretty.contains('\n'), "pretty-printed");
    assert_contains(
        &html,
        &format!("<pre class=\"payload\">{}</pre>", escape(&pretty)),
    );
    assert_contains(&html, "<h2>Last error</h2><p class=\"muted\">None.</p>");
    // Its actions.
    assert_contains(&html, &format!("action=\"/jobs/{}/actions\"", created.id));
    for action in ["retry", "complete", "fail", "delete", "reschedule"] {
        assert_contains(&html, &format!("name=\"action\" value=\"{action}\""));
    }
    assert_contains(&html, "name=\"run_at\"");
    assert_contains(
        &html,
        "name=\"priority\" min=\"-32768\" max=\"32767\" value=\"3\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_shows_the_full_last_error_of_a_failed_job() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    let error = format!(
        "Error: connection refused\n    at connect (net.rs:1:1)\n{}\nend of \"trace\" & more",
        "x".repeat(5000)
    );
    fail(&db, created.id, &error).await;
    let app = ui(&db);
    let html = page(&app, &format!("/jobs/{}", created.id)).await;
    assert_contains(
        &html,
        &format!("<pre class=\"last-error\">{}</pre>", escape(&error)),
    );
    assert_contains(&html, "<span class=\"state state-failed\">failed</span>");
    assert_contains(&html, "<dt>attempts</dt><dd>25 of 25</dd>");
    assert_contains(&html, "failed permanently: it will not run again");
    // The list carries it whole too (in the cell's title).
    let list = page(&app, "/jobs").await;
    assert_contains(&list, &format!("title=\"{}\"", escape(&error)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_shows_who_holds_a_locked_job() {
    let db = TestDb::new().await;
    let created = add(&db, "resize", JobSpec::default()).await;
    lock(&db, created.id, "worker-x").await;
    let app = ui(&db);
    let html = page(&app, &format!("/jobs/{}", created.id)).await;
    assert_contains(&html, "<span class=\"state state-locked\">locked</span>");
    assert_contains(&html, "<dt>locked</dt><dd>by <code>worker-x</code> <time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_page_of_a_missing_job_is_404() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let reply = get(&app, "/jobs/999999").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_contains(
        &reply.body,
        "No job 999999: it completed, was deleted, or never existed.",
    );
    assert_contains(&reply.body, "<a href=\"/jobs\">All jobs</a>");
    // Still a page of the UI.
    assert_contains(&reply.body, "<h1>Job 999999</h1>");
    assert_lacks(&reply.body, "name=\"action\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_page_shows_waiting_jobs_holders_and_paused_queues() {
    let db = TestDb::new().await;
    let a = add(&db, "send_email", in_queue("emails")).await;
    add(&db, "send_email", in_queue("emails")).await;
    add(&db, "send_email", in_queue("emails")).await;
    lock(&db, a.id, "worker-x").await;
    lock_queue(&db, "emails", "worker-x").await;
    let report = add(&db, "report", in_queue("reports")).await;
    fail(&db, report.id, "no data").await;
    db.utils().pause_queue("reports").await.unwrap();
    add(&db, "no_queue", JobSpec::default()).await;
    let app = ui(&db);
    let html = page(&app, "/queues").await;
    assert_contains(&html, "<h1>Queues</h1>");

    let emails = row(&html, "<a href=\"/jobs?queue=emails\">emails</a>");
    // 3 jobs, 2 waiting (the third is running), held by worker-x.
    assert_contains(
        emails,
        "<a href=\"/jobs?queue=emails\">emails</a></td><td class=\"num\">2</td><td class=\"num\">3</td><td><code>worker-x</code></td>",
    );
    assert_contains(emails, "<td>running</td>");
    assert_contains(emails, "name=\"action\" value=\"pause\"");
    assert_contains(
        emails,
        "<input type=\"hidden\" name=\"queue\" value=\"emails\">",
    );

    let reports = row(&html, "<a href=\"/jobs?queue=reports\">reports</a>");
    // Its only job failed: nothing waiting; paused, with Resume.
    assert_contains(
        reports,
        "<a href=\"/jobs?queue=reports\">reports</a></td><td class=\"num\">0</td><td class=\"num\">1</td><td>–</td><td>–</td>",
    );
    assert_contains(
        reports,
        "<span class=\"state state-retrying\">paused</span>",
    );
    assert_contains(reports, "name=\"action\" value=\"resume\"");
    assert_lacks(reports, "value=\"pause\"");
    assert_contains(&html, "action=\"/queues/actions\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_page_without_named_queues() {
    let db = TestDb::new().await;
    add(&db, "no_queue", JobSpec::default()).await;
    let app = ui(&db);
    let html = page(&app, "/queues").await;
    assert_contains(&html, "No named queues.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_page_shows_registered_workers_and_other_lock_holders() {
    let db = TestDb::new().await;
    register_worker(&db, "rust-worker-1", serde_json::json!({"host": "box-1"})).await;
    let held = add(&db, "resize", JobSpec::default()).await;
    lock(&db, held.id, "rust-worker-1").await;
    for _ in 0..2 {
        let job = add(&db, "resize", JobSpec::default()).await;
        lock(&db, job.id, "node-worker-1").await;
    }
    let app = ui(&db);
    let html = page(&app, "/workers").await;
    assert_contains(&html, "<h1>Workers</h1>");
    assert_contains(&html, "Use it only for a worker you know is gone");
    let (registered, others) = html.split_once("<h2>Other lock holders</h2>").unwrap();

    let worker = row(registered, "<code>rust-worker-1</code>");
    assert_contains(worker, "<td class=\"num\">1</td>");
    assert_contains(worker, "<code>{&quot;host&quot;:&quot;box-1&quot;}</code>");
    assert_contains(worker, "2 h ago");
    assert_contains(
        worker,
        "<input type=\"hidden\" name=\"pool_id\" value=\"rust-worker-1\">",
    );
    assert_contains(worker, "name=\"action\" value=\"unlock\"");

    let holder = row(others, "<code>node-worker-1</code>");
    assert_contains(holder, "<td class=\"num\">2</td>");
    assert_contains(
        holder,
        "<input type=\"hidden\" name=\"pool_id\" value=\"node-worker-1\">",
    );
    assert_contains(holder, "name=\"action\" value=\"unlock\"");
    // A registered worker is not an "other" holder.
    assert_lacks(others, "rust-worker-1");
    assert_contains(&html, "action=\"/workers/actions\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_page_without_workers() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let html = page(&app, "/workers").await;
    assert_contains(&html, "No registered (Rust) workers.");
    let (_, others) = html.split_once("<h2>Other lock holders</h2>").unwrap();
    assert_contains(others, "<p class=\"muted\">None.</p>");
    assert_lacks(&html, "name=\"action\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_page_shows_known_schedules_and_their_next_fire_time() {
    let db = TestDb::new().await;
    graphile_worker::sqlx::query(
        "insert into graphile_worker._private_known_crontabs (identifier, known_since, last_execution) values \
         ('nightly', now() - interval '3 days', now() - interval '1 day'), \
         ('orphan', now() - interval '3 days', null)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let crontab = graphile_worker::parse_crontab("0 4 * * * nightly").unwrap();
    let item = crontab[0].clone();
    assert_eq!(item.identifier, "nightly");
    let app = AdminUi::new(db.utils().clone()).crontab(crontab).router();
    let before = item.next_fire_after(Utc::now()).unwrap();
    let html = page(&app, "/cron").await;
    let after = item.next_fire_after(Utc::now()).unwrap();
    assert_contains(&html, "<h1>Cron</h1>");
    assert_lacks(&html, "Start the UI with a crontab");

    let nightly = row(&html, "<code>nightly</code>");
    assert_contains(nightly, "3 d ago");
    assert_contains(nightly, "1 d ago");
    let shown = [before, after]
        .iter()
        .any(|at| nightly.contains(&format!("title=\"{}\"", at.format("%Y-%m-%d 04:00:00 UTC"))));
    assert!(shown, "next fire {before} in the row: {nightly}");
    assert!(nightly.contains(">in "), "a time to come: {nightly}");

    // Known to the database but not in this crontab: no next time.
    let orphan = row(&html, "<code>orphan</code>");
    assert_contains(orphan, "<td>never</td>");
    assert_contains(orphan, "<span class=\"muted\">–</span>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_page_without_a_crontab_or_known_schedules() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let html = page(&app, "/cron").await;
    assert_contains(&html, "Start the UI with a crontab");
    assert_contains(&html, "The database knows no cron schedules yet.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_served_with_their_content_types() {
    let db = TestDb::new().await;
    let app = ui(&db);
    let js = get(&app, "/assets/htmx.min.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
    assert!(js.body.contains("htmx"), "the htmx script");
    assert!(js.headers.contains_key(header::CACHE_CONTROL));
    let css = get(&app, "/assets/ui.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.content_type(), "text/css; charset=utf-8");
    assert!(css.body.contains('{'), "a stylesheet");
    // Pages link to both.
    let html = page(&app, "/").await;
    assert_contains(&html, "<link rel=\"stylesheet\" href=\"/assets/ui.css\">");
    assert_contains(&html, "<script src=\"/assets/htmx.min.js\"></script>");
    assert_eq!(
        get(&app, "/assets/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_links_the_navigation() {
    let db = TestDb::new().await;
    let app = ui(&db);
    for (path, current) in [
        ("/", "Dashboard"),
        ("/jobs", "Jobs"),
        ("/queues", "Queues"),
        ("/workers", "Workers"),
        ("/cron", "Cron"),
    ] {
        let html = page(&app, path).await;
        assert_contains(
            &html,
            &format!("<a href=\"{path}\" class=\"current\">{current}</a>"),
        );
        assert_contains(
            &html,
            "<span class=\"schema\" title=\"schema\">graphile_worker</span>",
        );
        assert_lacks(&html, "read-only");
        for link in ["/", "/jobs", "/queues", "/workers", "/cron"] {
            assert_contains(&html, &format!("href=\"{link}\""));
        }
    }
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_the_database_are_escaped_everywhere() {
    let db = TestDb::new().await;
    let created = add_with(
        &db,
        XSS,
        serde_json::json!({ "html": XSS }),
        JobSpec {
            queue_name: Some(XSS.into()),
            job_key: Some(XSS.into()),
            ..JobSpec::default()
        },
    )
    .await;
    fail(&db, created.id, XSS).await;
    lock_queue(&db, XSS, XSS).await;
    let other = add(&db, "plain", JobSpec::default()).await;
    lock(&db, other.id, XSS).await;
    graphile_worker::sqlx::query(
        "insert into graphile_worker._private_known_crontabs (identifier, known_since) values ($1, now())",
    )
    .bind(XSS)
    .execute(db.pool())
    .await
    .unwrap();
    let app = ui(&db);
    let id = created.id;
    for path in [
        "/".to_owned(),
        "/jobs".to_owned(),
        format!("/jobs/{id}"),
        "/queues".to_owned(),
        "/workers".to_owned(),
        "/cron".to_owned(),
    ] {
        let html = page(&app, &path).await;
        assert_lacks(&html, XSS_RAW);
        assert_contains(&html, XSS_ESCAPED);
    }
    let html = page(&app, &format!("/jobs/{id}")).await;
    // The payload, the last error, the task, queue and key.
    assert_contains(
        &html,
        &format!("&quot;html&quot;: &quot;{XSS_ESCAPED}&quot;"),
    );
    assert_contains(
        &html,
        &format!("<pre class=\"last-error\">{XSS_ESCAPED}</pre>"),
    );
    assert_contains(&html, &format!("<dt>task</dt><dd>{XSS_ESCAPED}</dd>"));
    assert_contains(&html, &format!("<dt>queue</dt><dd>{XSS_ESCAPED}</dd>"));
    assert_contains(&html, &format!("<dt>key</dt><dd>{XSS_ESCAPED}</dd>"));

    // What the request brings back is escaped too: filters and notices.
    let encoded = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    for path in [
        format!("/jobs?task={encoded}&queue={encoded}&key={encoded}&error={encoded}"),
        format!("/jobs?notice={encoded}"),
        format!("/?notice={encoded}"),
        format!("/jobs/{id}?notice={encoded}"),
        format!("/queues?notice={encoded}"),
        format!("/workers?notice={encoded}"),
        format!("/cron?notice={encoded}"),
    ] {
        let html = page(&app, &path).await;
        assert_lacks(&html, XSS_RAW);
        assert_contains(&html, XSS_ESCAPED);
    }
}

// ---------------------------------------------------------------------------
// Job actions
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_a_permanently_failed_job_from_the_list() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", in_an_hour()).await;
    fail(&db, created.id, "boom").await;
    assert_eq!(must_job(&db, created.id).await.state, JobState::Failed);
    let app = ui(&db);
    let id = created.id.to_string();
    let reply = post(
        &app,
        "/jobs/actions",
        &[("state", "failed"), ("action", "retry"), ("ids", &id)],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), "Retried 1 job.");
    assert_eq!(
        reply.location_query(),
        vec![
            ("state".to_owned(), "failed".to_owned()),
            ("notice".to_owned(), "Retried 1 job.".to_owned())
        ]
    );
    let entry = must_job(&db, created.id).await;
    assert_eq!(entry.state, JobState::Ready);
    assert_eq!(entry.job.attempts, 0);
    assert!(
        close_to_now(entry.job.run_at),
        "runs now: {}",
        entry.job.run_at
    );
    // The page the redirect leads to says so.
    let html = page(&app, &reply.location()).await;
    assert_contains(
        &html,
        "<p class=\"notice\" role=\"status\">Retried 1 job.</p>",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_from_the_job_page() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, created.id, "boom").await;
    let app = ui(&db);
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", created.id),
        &[("action", "retry")],
    )
    .await;
    assert_eq!(reply.location_path(), format!("/jobs/{}", created.id));
    assert_eq!(reply.notice(), format!("Retried job {}.", created.id));
    let entry = must_job(&db, created.id).await;
    assert_eq!(entry.state, JobState::Ready);
    assert_eq!(entry.job.attempts, 0);
    assert!(close_to_now(entry.job.run_at));
    let html = page(&app, &reply.location()).await;
    assert_contains(&html, &format!("Retried job {}.", created.id));
    assert_contains(&html, "<dt>attempts</dt><dd>0 of 25</dd>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_from_the_job_page_and_the_list() {
    let db = TestDb::new().await;
    let a = add(&db, "fetch", JobSpec::default()).await;
    let b = add(&db, "fetch", JobSpec::default()).await;
    let c = add(&db, "fetch", JobSpec::default()).await;
    let app = ui(&db);
    // One job: it has no page any more, so back to the list.
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", a.id),
        &[("action", "complete")],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), format!("Completed job {}.", a.id));
    assert!(job(&db, a.id).await.is_none());
    // Several, from the list.
    let (b_id, c_id) = (b.id.to_string(), c.id.to_string());
    let reply = post(
        &app,
        "/jobs/actions",
        &[("action", "complete"), ("ids", &b_id), ("ids", &c_id)],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), "Completed 2 jobs.");
    assert!(all_jobs(&db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_with_a_reason() {
    let db = TestDb::new().await;
    let created = add(
        &db,
        "fetch",
        JobSpec {
            max_attempts: Some(4),
            ..JobSpec::default()
        },
    )
    .await;
    let app = ui(&db);
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", created.id),
        &[("action", "fail"), ("reason", "the customer cancelled")],
    )
    .await;
    assert_eq!(reply.location_path(), format!("/jobs/{}", created.id));
    assert_eq!(reply.notice(), format!("Failed job {}.", created.id));
    let entry = must_job(&db, created.id).await;
    assert_eq!(entry.state, JobState::Failed);
    assert_eq!(entry.job.attempts, 4);
    assert_eq!(
        entry.job.last_error.as_deref(),
        Some("the customer cancelled")
    );
    let html = page(&app, &reply.location()).await;
    assert_contains(
        &html,
        "<pre class=\"last-error\">the customer cancelled</pre>",
    );

    // From the list, without a reason: a default one.
    let other = add(&db, "fetch", JobSpec::default()).await;
    let id = other.id.to_string();
    let reply = post(
        &app,
        "/jobs/actions",
        &[("action", "fail"), ("reason", ""), ("ids", &id)],
    )
    .await;
    assert_eq!(reply.notice(), "Failed 1 job.");
    let entry = must_job(&db, other.id).await;
    assert_eq!(entry.state, JobState::Failed);
    assert_eq!(entry.job.attempts, entry.job.max_attempts);
    assert_eq!(
        entry.job.last_error.as_deref(),
        Some("failed from the admin UI")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_from_the_job_page_and_the_list() {
    let db = TestDb::new().await;
    let a = add(&db, "fetch", JobSpec::default()).await;
    let b = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, b.id, "boom").await;
    let keep = add(&db, "fetch", JobSpec::default()).await;
    let app = ui(&db);
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", a.id),
        &[("action", "delete")],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), format!("Deleted job {}.", a.id));
    assert!(job(&db, a.id).await.is_none());
    assert_eq!(
        get(&app, &format!("/jobs/{}", a.id)).await.status,
        StatusCode::NOT_FOUND
    );

    let id = b.id.to_string();
    let reply = post(
        &app,
        "/jobs/actions",
        &[("state", "failed"), ("action", "delete"), ("ids", &id)],
    )
    .await;
    assert_eq!(reply.location(), "/jobs?state=failed&notice=Deleted+1+job.");
    assert!(job(&db, b.id).await.is_none());
    assert!(job(&db, keep.id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_deleted_job_is_reported_not_changed() {
    let db = TestDb::new().await;
    let gone = add(&db, "fetch", JobSpec::default()).await;
    db.utils().complete_jobs(&[gone.id]).await.unwrap();
    let app = ui(&db);
    let path = format!("/jobs/{}/actions", gone.id);
    for action in ["delete", "complete", "retry", "fail"] {
        let reply = post(&app, &path, &[("action", action)]).await;
        assert_eq!(
            reply.location_path(),
            format!("/jobs/{}", gone.id),
            "{action}"
        );
        assert_eq!(
            reply.notice(),
            format!(
                "Job {} was not changed: it is locked by a worker, or gone.",
                gone.id
            ),
            "{action}"
        );
    }
    let reply = post(&app, &path, &[("action", "reschedule"), ("priority", "2")]).await;
    assert_eq!(
        reply.notice(),
        "Not rescheduled: the job is locked by a worker, or gone."
    );
    // From the list: named in the notice.
    let id = gone.id.to_string();
    let reply = post(&app, "/jobs/actions", &[("action", "delete"), ("ids", &id)]).await;
    assert_eq!(
        reply.notice(),
        format!(
            "Deleted 0 jobs. Left alone 1 (locked by a worker, or gone): {}.",
            gone.id
        )
    );
    // The page the redirect leads to still shows the notice.
    let reply = get(&app, &format!("/jobs/{}?notice=gone%20already", gone.id)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_contains(&reply.body, "gone already");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_locked_by_a_worker_meanwhile_is_left_alone() {
    let db = TestDb::new().await;
    let running = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, running.id, "boom").await;
    let free = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, free.id, "boom").await;
    let app = ui(&db);
    // The operator looked at the list, then a worker took one job.
    let token = token_at(&app, "/jobs").await;
    lock(&db, running.id, "worker-x").await;
    let before = must_job(&db, running.id).await;

    let (running_id, free_id) = (running.id.to_string(), free.id.to_string());
    for (action, verb) in [("retry", "Retried"), ("fail", "Failed")] {
        let reply = post_raw(
            &app,
            "/jobs/actions",
            &[
                ("csrf", &token),
                ("action", action),
                ("ids", &running_id),
                ("ids", &free_id),
            ],
            &[],
        )
        .await;
        assert_eq!(
            reply.notice(),
            format!(
                "{verb} 1 job. Left alone 1 (locked by a worker, or gone): {}.",
                running.id
            )
        );
    }
    for action in ["retry", "complete", "fail", "delete"] {
        let reply = post(
            &app,
            &format!("/jobs/{}/actions", running.id),
            &[("action", action)],
        )
        .await;
        assert_eq!(reply.location_path(), format!("/jobs/{}", running.id));
        assert_eq!(
            reply.notice(),
            format!(
                "Job {} was not changed: it is locked by a worker, or gone.",
                running.id
            ),
            "{action}"
        );
    }
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", running.id),
        &[
            ("action", "reschedule"),
            ("run_at", "2031-01-01T00:00"),
            ("priority", "9"),
        ],
    )
    .await;
    assert_eq!(
        reply.notice(),
        "Not rescheduled: the job is locked by a worker, or gone."
    );
    // Untouched.
    assert_eq!(must_job(&db, running.id).await, before);
    // Bulk complete and delete leave it alone too.
    for (action, verb) in [("complete", "Completed"), ("delete", "Deleted")] {
        let reply = post(
            &app,
            "/jobs/actions",
            &[("action", action), ("ids", &running_id)],
        )
        .await;
        assert_eq!(
            reply.notice(),
            format!(
                "{verb} 0 jobs. Left alone 1 (locked by a worker, or gone): {}.",
                running.id
            )
        );
    }
    assert_eq!(must_job(&db, running.id).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_buttons_act_on_their_own_row_only() {
    let db = TestDb::new().await;
    let failed = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, failed.id, "boom").await;
    let ticked = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, ticked.id, "boom").await;
    let doomed = add(&db, "fetch", JobSpec::default()).await;
    let running = add(&db, "fetch", JobSpec::default()).await;
    lock(&db, running.id, "worker-x").await;
    let app = ui(&db);
    let html = page(&app, "/jobs").await;
    for id in [failed.id, ticked.id, doomed.id] {
        let row = row(&html, &format!("href=\"/jobs/{id}\""));
        assert_contains(row, &format!("name=\"action\" value=\"retry:{id}\""));
        assert_contains(row, &format!("name=\"action\" value=\"delete:{id}\""));
    }
    // A running job has no row buttons.
    assert_lacks(
        row(&html, &format!("href=\"/jobs/{}\"", running.id)),
        "name=\"action\"",
    );

    // The row's button wins over the ticked rows of the same form.
    let (retry, ticked_id) = (format!("retry:{}", failed.id), ticked.id.to_string());
    let reply = post(
        &app,
        "/jobs/actions",
        &[("state", "failed"), ("ids", &ticked_id), ("action", &retry)],
    )
    .await;
    assert_eq!(reply.location(), "/jobs?state=failed&notice=Retried+1+job.");
    let entry = must_job(&db, failed.id).await;
    assert_eq!(entry.state, JobState::Ready);
    assert_eq!(entry.job.attempts, 0);
    assert_eq!(must_job(&db, ticked.id).await.state, JobState::Failed);

    let delete = format!("delete:{}", doomed.id);
    let reply = post(&app, "/jobs/actions", &[("action", &delete)]).await;
    assert_eq!(reply.notice(), "Deleted 1 job.");
    assert!(job(&db, doomed.id).await.is_none());

    // Locked meanwhile: left alone, and said so.
    let retry_running = format!("retry:{}", running.id);
    let reply = post(&app, "/jobs/actions", &[("action", &retry_running)]).await;
    assert_eq!(
        reply.notice(),
        format!(
            "Retried 0 jobs. Left alone 1 (locked by a worker, or gone): {}.",
            running.id
        )
    );
    assert_eq!(must_job(&db, running.id).await.state, JobState::Locked);

    // A row that is not a number selects nothing.
    let reply = post(&app, "/jobs/actions", &[("action", "delete:x")]).await;
    assert_eq!(reply.notice(), "No jobs selected: tick some rows first.");
    assert_eq!(all_jobs(&db).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_action_without_a_selection() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/jobs/actions",
        &[("task", "fetch"), ("action", "delete")],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), "No jobs selected: tick some rows first.");
    assert!(job(&db, created.id).await.is_some());
    // An action the UI does not have.
    let id = created.id.to_string();
    let reply = post(
        &app,
        "/jobs/actions",
        &[("action", "explode"), ("ids", &id)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = post(
        &app,
        &format!("/jobs/{id}/actions"),
        &[("action", "explode")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(job(&db, created.id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_acts_on_exactly_the_matching_jobs() {
    let db = TestDb::new().await;
    let mut matching = Vec::new();
    for _ in 0..3 {
        let job = add(&db, "fetch", JobSpec::default()).await;
        fail(&db, job.id, "timeout").await;
        matching.push(job.id);
    }
    let other_task = add(&db, "resize", JobSpec::default()).await;
    fail(&db, other_task.id, "timeout").await;
    let other_error = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, other_error.id, "refused").await;
    let scheduled = add(&db, "fetch", in_an_hour()).await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/jobs/actions",
        &[
            ("state", "failed"),
            ("task", "fetch"),
            ("queue", ""),
            ("key", ""),
            ("error", "timeout"),
            ("action", "retry-all"),
        ],
    )
    .await;
    assert_eq!(reply.location_path(), "/jobs");
    assert_eq!(reply.notice(), "Retried 3 jobs.");
    assert_eq!(
        reply.location_query(),
        vec![
            ("state".to_owned(), "failed".to_owned()),
            ("task".to_owned(), "fetch".to_owned()),
            ("error".to_owned(), "timeout".to_owned()),
            ("notice".to_owned(), "Retried 3 jobs.".to_owned()),
        ]
    );
    for id in matching {
        let entry = must_job(&db, id).await;
        assert_eq!(entry.state, JobState::Ready, "job {id}");
        assert_eq!(entry.job.attempts, 0);
    }
    assert_eq!(must_job(&db, other_task.id).await.state, JobState::Failed);
    assert_eq!(must_job(&db, other_error.id).await.state, JobState::Failed);
    assert_eq!(must_job(&db, scheduled.id).await.state, JobState::Scheduled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_all_acts_on_exactly_the_matching_jobs() {
    let db = TestDb::new().await;
    let a = add(&db, "send_email", in_queue("emails")).await;
    let b = add(&db, "send_email", in_queue("emails")).await;
    let running = add(&db, "send_email", in_queue("emails")).await;
    lock(&db, running.id, "worker-x").await;
    let other_queue = add(&db, "send_email", in_queue("bulk")).await;
    let other_task = add(&db, "resize", in_queue("emails")).await;
    let no_queue = add(&db, "send_email", JobSpec::default()).await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/jobs/actions",
        &[
            ("task", "send_email"),
            ("queue", "emails"),
            ("action", "fail-all"),
            ("reason", "provider down"),
        ],
    )
    .await;
    assert_eq!(
        reply.location(),
        format!(
            "/jobs?task=send_email&queue=emails&notice={}",
            serde_urlencoded::to_string([(
                "n",
                format!(
                    "Failed 2 jobs. Left alone 1 (locked by a worker, or gone): {}.",
                    running.id
                )
            )])
            .unwrap()
            .trim_start_matches("n=")
        )
    );
    for id in [a.id, b.id] {
        let entry = must_job(&db, id).await;
        assert_eq!(entry.state, JobState::Failed);
        assert_eq!(entry.job.attempts, entry.job.max_attempts);
        assert_eq!(entry.job.last_error.as_deref(), Some("provider down"));
    }
    assert_eq!(must_job(&db, running.id).await.state, JobState::Locked);
    for id in [other_queue.id, other_task.id, no_queue.id] {
        let entry = must_job(&db, id).await;
        assert_eq!(entry.state, JobState::Ready, "job {id}");
        assert_eq!(entry.job.last_error, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_all_and_delete_all_act_on_the_filter() {
    let db = TestDb::new().await;
    let keyed = add(
        &db,
        "fetch",
        JobSpec {
            job_key: Some("fetch-1".into()),
            ..JobSpec::default()
        },
    )
    .await;
    let scheduled_a = add(&db, "fetch", in_an_hour()).await;
    let scheduled_b = add(&db, "resize", in_an_hour()).await;
    let ready = add(&db, "resize", JobSpec::default()).await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/jobs/actions",
        &[("key", "fetch-1"), ("action", "complete-all")],
    )
    .await;
    assert_eq!(
        reply.location(),
        "/jobs?key=fetch-1&notice=Completed+1+job."
    );
    assert!(job(&db, keyed.id).await.is_none());
    let reply = post(
        &app,
        "/jobs/actions",
        &[("state", "scheduled"), ("action", "delete-all")],
    )
    .await;
    assert_eq!(
        reply.location(),
        "/jobs?state=scheduled&notice=Deleted+2+jobs."
    );
    assert!(job(&db, scheduled_a.id).await.is_none());
    assert!(job(&db, scheduled_b.id).await.is_none());
    assert!(job(&db, ready.id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_sets_run_at_and_priority() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    let app = ui(&db);
    let path = format!("/jobs/{}/actions", created.id);
    let reply = post(
        &app,
        &path,
        &[
            ("action", "reschedule"),
            ("run_at", "2031-02-03T04:05"),
            ("priority", "7"),
        ],
    )
    .await;
    assert_eq!(reply.location_path(), format!("/jobs/{}", created.id));
    assert_eq!(reply.notice(), "Rescheduled.");
    let entry = must_job(&db, created.id).await;
    assert_eq!(
        entry.job.run_at,
        Utc.with_ymd_and_hms(2031, 2, 3, 4, 5, 0).unwrap()
    );
    assert_eq!(entry.job.priority, 7);
    assert_eq!(entry.state, JobState::Scheduled);
    let html = page(&app, &reply.location()).await;
    assert_contains(&html, "<dd>2031-02-03 04:05:00 UTC");
    assert_contains(&html, "<dt>priority</dt><dd>7</dd>");
    assert_contains(&html, "Rescheduled.");

    // With seconds; a blank time (as a browser sends it) keeps run_at.
    let reply = post(
        &app,
        &path,
        &[
            ("action", "reschedule"),
            ("run_at", "2032-12-31T23:59:58"),
            ("priority", "-5"),
        ],
    )
    .await;
    assert_eq!(reply.notice(), "Rescheduled.");
    let entry = must_job(&db, created.id).await;
    assert_eq!(
        entry.job.run_at,
        Utc.with_ymd_and_hms(2032, 12, 31, 23, 59, 58).unwrap()
    );
    assert_eq!(entry.job.priority, -5);
    let reply = post(
        &app,
        &path,
        &[("action", "reschedule"), ("run_at", ""), ("priority", "1")],
    )
    .await;
    assert_eq!(reply.notice(), "Rescheduled.");
    let entry = must_job(&db, created.id).await;
    assert_eq!(
        entry.job.run_at,
        Utc.with_ymd_and_hms(2032, 12, 31, 23, 59, 58).unwrap()
    );
    assert_eq!(entry.job.priority, 1);

    // Nonsense changes nothing.
    let before = must_job(&db, created.id).await;
    let reply = post(
        &app,
        &path,
        &[
            ("action", "reschedule"),
            ("run_at", "tomorrow"),
            ("priority", "1"),
        ],
    )
    .await;
    assert_eq!(
        reply.notice(),
        "Not rescheduled: the time is not a date and time."
    );
    let reply = post(
        &app,
        &path,
        &[
            ("action", "reschedule"),
            ("run_at", "2031-02-03T04:05"),
            ("priority", "99999"),
        ],
    )
    .await;
    assert_eq!(
        reply.notice(),
        "Not rescheduled: the priority is a whole number from -32768 to 32767."
    );
    assert_eq!(must_job(&db, created.id).await, before);
}

// ---------------------------------------------------------------------------
// Queue and worker actions
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_a_queue() {
    let db = TestDb::new().await;
    add(&db, "send_email", in_queue("emails")).await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/queues/actions",
        &[("action", "pause"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.location_path(), "/queues");
    assert_eq!(
        reply.notice(),
        "Paused queue emails: no worker starts its jobs until it is resumed."
    );
    assert!(queue(&db, "emails").await.paused);
    let html = page(&app, &reply.location()).await;
    assert_contains(&html, "Paused queue emails");
    let emails = row(&html, "<a href=\"/jobs?queue=emails\">emails</a>");
    assert_contains(emails, "paused");
    assert_contains(emails, "value=\"resume\"");

    let reply = post(
        &app,
        "/queues/actions",
        &[("action", "pause"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.notice(), "Queue emails was already paused.");
    assert!(queue(&db, "emails").await.paused);

    let reply = post(
        &app,
        "/queues/actions",
        &[("action", "resume"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.location_path(), "/queues");
    assert_eq!(reply.notice(), "Resumed queue emails.");
    assert!(!queue(&db, "emails").await.paused);
    let html = page(&app, &reply.location()).await;
    let emails = row(&html, "<a href=\"/jobs?queue=emails\">emails</a>");
    assert_contains(emails, "<td>running</td>");
    assert_contains(emails, "value=\"pause\"");

    let reply = post(
        &app,
        "/queues/actions",
        &[("action", "resume"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.notice(), "Queue emails was not paused.");

    // No queue, or an action the page does not have.
    let reply = post(&app, "/queues/actions", &[("action", "pause")]).await;
    assert_eq!(reply.notice(), "No queue given.");
    let reply = post(
        &app,
        "/queues/actions",
        &[("action", "drain"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(!queue(&db, "emails").await.paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_a_lock_holder() {
    let db = TestDb::new().await;
    let a = add(&db, "send_email", in_queue("emails")).await;
    let b = add(&db, "resize", JobSpec::default()).await;
    let others = add(&db, "resize", JobSpec::default()).await;
    lock(&db, a.id, "node-worker-1").await;
    lock(&db, b.id, "node-worker-1").await;
    lock_queue(&db, "emails", "node-worker-1").await;
    lock(&db, others.id, "node-worker-2").await;
    let app = ui(&db);
    let html = page(&app, "/workers").await;
    assert_contains(
        row(&html, "<code>node-worker-1</code>"),
        "<td class=\"num\">2</td>",
    );

    let reply = post(
        &app,
        "/workers/actions",
        &[("action", "unlock"), ("pool_id", "node-worker-1")],
    )
    .await;
    assert_eq!(reply.location_path(), "/workers");
    assert_eq!(
        reply.notice(),
        "Unlocked the jobs and queues of node-worker-1."
    );
    for id in [a.id, b.id] {
        let entry = must_job(&db, id).await;
        assert_eq!(entry.state, JobState::Ready, "job {id}");
        assert_eq!(entry.job.locked_by, None);
        assert_eq!(entry.job.locked_at, None);
    }
    assert_eq!(queue(&db, "emails").await.locked_by, None);
    // Another holder keeps its job.
    assert_eq!(must_job(&db, others.id).await.state, JobState::Locked);
    let html = page(&app, &reply.location()).await;
    assert_contains(&html, "Unlocked the jobs and queues of node-worker-1.");
    assert_lacks(&html, "<code>node-worker-1</code>");
    assert_contains(&html, "<code>node-worker-2</code>");

    // Without a pool id, or another action: refused, nothing changed.
    let reply = post(&app, "/workers/actions", &[("action", "unlock")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = post(
        &app,
        "/workers/actions",
        &[("action", "kill"), ("pool_id", "node-worker-2")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(must_job(&db, others.id).await.state, JobState::Locked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_a_registered_worker() {
    let db = TestDb::new().await;
    register_worker(&db, "rust-worker-1", serde_json::json!({})).await;
    let held = add(&db, "resize", JobSpec::default()).await;
    lock(&db, held.id, "rust-worker-1").await;
    let app = ui(&db);
    let reply = post(
        &app,
        "/workers/actions",
        &[("action", "unlock"), ("pool_id", "rust-worker-1")],
    )
    .await;
    assert_eq!(
        reply.notice(),
        "Unlocked the jobs and queues of rust-worker-1."
    );
    assert_eq!(must_job(&db, held.id).await.state, JobState::Ready);
    let html = page(&app, "/workers").await;
    let worker = row(&html, "<code>rust-worker-1</code>");
    assert_contains(worker, "<td class=\"num\">0</td>");
}

// ---------------------------------------------------------------------------
// CSRF
// ---------------------------------------------------------------------------

/// Every action endpoint with fields that would change something.
fn every_action(job_id: i64) -> Vec<(String, Vec<(&'static str, String)>)> {
    let id = job_id.to_string();
    vec![
        (
            "/jobs/actions".to_owned(),
            vec![("action", "delete".to_owned()), ("ids", id.clone())],
        ),
        (
            "/jobs/actions".to_owned(),
            vec![("action", "delete-all".to_owned())],
        ),
        (
            format!("/jobs/{id}/actions"),
            vec![("action", "fail".to_owned())],
        ),
        (
            format!("/jobs/{id}/actions"),
            vec![
                ("action", "reschedule".to_owned()),
                ("run_at", "2031-01-01T00:00".to_owned()),
            ],
        ),
        (
            "/queues/actions".to_owned(),
            vec![
                ("action", "pause".to_owned()),
                ("queue", "emails".to_owned()),
            ],
        ),
        (
            "/workers/actions".to_owned(),
            vec![
                ("action", "unlock".to_owned()),
                ("pool_id", "node-worker-1".to_owned()),
            ],
        ),
    ]
}

/// A job in queue `emails`, and one held by `node-worker-1`.
async fn something_to_change(db: &TestDb) -> i64 {
    let created = add(db, "send_email", in_queue("emails")).await;
    let held = add(db, "resize", JobSpec::default()).await;
    lock(db, held.id, "node-worker-1").await;
    created.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_without_the_token_are_refused() {
    let db = TestDb::new().await;
    let id = something_to_change(&db).await;
    let app = ui(&db);
    let token = token_at(&app, "/jobs").await;
    let foreign = token_at(&ui(&db), "/jobs").await;
    assert_ne!(token, foreign, "each router has its own token");
    let before = snapshot(&db).await;
    for (path, fields) in every_action(id) {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cases: [(&str, Pairs, Pairs); 6] = [
            ("no token", vec![], vec![]),
            ("an empty token", vec![("csrf", "")], vec![]),
            ("a wrong token", vec![("csrf", "0123456789abcdef")], vec![]),
            ("another router's token", vec![("csrf", &foreign)], vec![]),
            ("a wrong header", vec![], vec![("x-csrf-token", &foreign)]),
            (
                "a cross-site request",
                vec![("csrf", &token)],
                vec![("sec-fetch-site", "cross-site")],
            ),
        ];
        for (what, extra, headers) in cases {
            let mut all = extra.clone();
            all.extend_from_slice(&fields);
            let reply = post_raw(&app, &path, &all, &headers).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path} with {what}");
            assert_contains(&reply.body, "CSRF");
        }
    }
    assert_eq!(snapshot(&db).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_in_a_header_works() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    let app = ui(&db);
    let token = token_at(&app, "/").await;
    let id = created.id.to_string();
    let reply = post_raw(
        &app,
        "/jobs/actions",
        &[("action", "delete"), ("ids", &id)],
        &[("x-csrf-token", &token), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(reply.notice(), "Deleted 1 job.");
    assert!(job(&db, created.id).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_the_same_on_every_page_and_in_the_forms() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", in_queue("emails")).await;
    let app = ui(&db);
    let token = token_at(&app, "/").await;
    for path in [
        "/jobs".to_owned(),
        format!("/jobs/{}", created.id),
        "/queues".to_owned(),
        "/workers".to_owned(),
        "/cron".to_owned(),
    ] {
        let html = page(&app, &path).await;
        assert_eq!(csrf_of(&html), token, "{path}");
    }
    for path in [
        "/jobs".to_owned(),
        format!("/jobs/{}", created.id),
        "/queues".to_owned(),
    ] {
        let html = page(&app, &path).await;
        assert_contains(
            &html,
            &format!("<input type=\"hidden\" name=\"csrf\" value=\"{token}\">"),
        );
    }
}

// ---------------------------------------------------------------------------
// Read-only and hidden payloads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_shows_no_actions_and_refuses_every_post() {
    let db = TestDb::new().await;
    let id = something_to_change(&db).await;
    let failed = add(&db, "fetch", JobSpec::default()).await;
    fail(&db, failed.id, "boom").await;
    register_worker(&db, "rust-worker-1", serde_json::json!({})).await;
    let app = AdminUi::new(db.utils().clone()).read_only(true).router();
    for path in [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/jobs?state=failed".to_owned(),
        format!("/jobs/{id}"),
        format!("/jobs/{}", failed.id),
        "/queues".to_owned(),
        "/workers".to_owned(),
        "/cron".to_owned(),
    ] {
        let html = page(&app, &path).await;
        assert_lacks(&html, "name=\"action\"");
        assert_lacks(&html, "<button type=\"submit\"");
        assert_lacks(&html, "name=\"ids\"");
        assert_lacks(&html, "name=\"reason\"");
        assert_lacks(&html, "name=\"run_at\"");
        assert_lacks(&html, "Use it only for a worker you know is gone");
        assert_contains(&html, "<span class=\"badge readonly\">read-only</span>");
    }
    // The pages still show the data.
    let html = page(&app, "/jobs").await;
    assert!(lists(&html, id) && lists(&html, failed.id));
    let html = page(&app, "/workers").await;
    assert_contains(&html, "<code>node-worker-1</code>");
    assert_contains(&html, "<code>rust-worker-1</code>");

    let token = token_at(&app, "/jobs").await;
    let before = snapshot(&db).await;
    for (path, fields) in every_action(id) {
        let mut all: Vec<(&str, &str)> = vec![("csrf", &token)];
        all.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
        let reply = post_raw(&app, &path, &all, &[]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_contains(&reply.body, "read-only");
    }
    let retry = failed.id.to_string();
    let reply = post_raw(
        &app,
        "/jobs/actions",
        &[("csrf", &token), ("action", "retry"), ("ids", &retry)],
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(snapshot(&db).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_payloads_are_not_on_any_page() {
    let db = TestDb::new().await;
    let created = add_with(
        &db,
        "send_email",
        serde_json::json!({"ssn": "SECRET-123-45-6789"}),
        in_queue("emails"),
    )
    .await;
    let app = AdminUi::new(db.utils().clone())
        .hide_payloads(true)
        .router();
    let html = page(&app, &format!("/jobs/{}", created.id)).await;
    assert_lacks(&html, "SECRET-123-45-6789");
    assert_lacks(&html, "ssn");
    assert_lacks(&html, "class=\"payload\"");
    assert_contains(&html, "Payloads are hidden on this server.");
    // The rest of the job is still there.
    assert_contains(&html, "<dt>task</dt><dd>send_email</dd>");
    for path in ["/", "/jobs", "/queues", "/workers"] {
        assert_lacks(&page(&app, path).await, "SECRET-123-45-6789");
    }
    // Shown when not hidden.
    let shown = page(&ui(&db), &format!("/jobs/{}", created.id)).await;
    assert_contains(&shown, "SECRET-123-45-6789");
}

// ---------------------------------------------------------------------------
// Nested under a prefix
// ---------------------------------------------------------------------------

fn nested(db: &TestDb) -> Router {
    Router::new()
        .route("/", axum::routing::get(|| async { "my app" }))
        .nest("/admin", ui(db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_under_a_prefix_every_link_and_form_has_it() {
    let db = TestDb::new().await;
    let created = add(&db, "send_email", in_queue("emails")).await;
    let held = add(&db, "resize", JobSpec::default()).await;
    lock(&db, held.id, "node-worker-1").await;
    let app = nested(&db);
    assert_eq!(get(&app, "/").await.body, "my app");

    let dashboard = page(&app, "/admin").await;
    assert_contains(&dashboard, "<h1>Dashboard</h1>");
    assert_contains(
        &dashboard,
        "<link rel=\"stylesheet\" href=\"/admin/assets/ui.css\">",
    );
    assert_contains(
        &dashboard,
        "<script src=\"/admin/assets/htmx.min.js\"></script>",
    );
    assert_contains(&dashboard, "href=\"/admin/jobs\"");
    assert_contains(&dashboard, "href=\"/admin/queues\"");
    assert_contains(&dashboard, "href=\"/admin/workers\"");
    assert_contains(&dashboard, "href=\"/admin/cron\"");
    assert_contains(&dashboard, "href=\"/admin/jobs?state=ready\"");
    assert_contains(&dashboard, "href=\"/admin/jobs?task=send_email\"");
    assert_contains(&dashboard, "href=\"/admin/jobs?queue=emails\"");

    let jobs = page(&app, "/admin/jobs").await;
    assert_contains(&jobs, "action=\"/admin/jobs/actions\"");
    assert_contains(&jobs, "action=\"/admin/jobs\"");
    assert_contains(&jobs, &format!("href=\"/admin/jobs/{}\"", created.id));
    assert_contains(&jobs, "hx-get=\"/admin/jobs?page=1\"");
    let detail = page(&app, &format!("/admin/jobs/{}", created.id)).await;
    assert_contains(
        &detail,
        &format!("action=\"/admin/jobs/{}/actions\"", created.id),
    );
    assert_contains(
        &page(&app, "/admin/queues").await,
        "action=\"/admin/queues/actions\"",
    );
    assert_contains(
        &page(&app, "/admin/workers").await,
        "action=\"/admin/workers/actions\"",
    );
    let missing = get(&app, "/admin/jobs/999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_contains(&missing.body, "<a href=\"/admin/jobs\">All jobs</a>");

    // No link or form escapes the prefix.
    for path in [
        "/admin".to_owned(),
        "/admin/jobs".to_owned(),
        format!("/admin/jobs/{}", created.id),
        "/admin/queues".to_owned(),
        "/admin/workers".to_owned(),
        "/admin/cron".to_owned(),
    ] {
        let html = page(&app, &path).await;
        for link in hrefs(&html) {
            assert!(link.starts_with("/admin"), "{path}: link {link}");
        }
        for marker in ["action=\"/", "src=\"/", "hx-get=\"/"] {
            for (at, _) in html.match_indices(marker) {
                let rest = &html[at + marker.len() - 1..];
                assert!(
                    rest.starts_with("/admin"),
                    "{path}: {}",
                    &rest[..40.min(rest.len())]
                );
            }
        }
    }

    // Assets under the prefix.
    let css = get(&app, "/admin/assets/ui.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.content_type(), "text/css; charset=utf-8");
    let js = get(&app, "/admin/assets/htmx.min.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.content_type(), "text/javascript; charset=utf-8");

    // Actions redirect under the prefix.
    let reply = post_under(
        &app,
        "/admin",
        "/queues/actions",
        &[("action", "pause"), ("queue", "emails")],
    )
    .await;
    assert_eq!(reply.location_path(), "/admin/queues");
    assert!(queue(&db, "emails").await.paused);
    let reply = post_under(
        &app,
        "/admin",
        &format!("/jobs/{}/actions", created.id),
        &[("action", "fail"), ("reason", "nope")],
    )
    .await;
    assert_eq!(reply.location_path(), format!("/admin/jobs/{}", created.id));
    assert_contains(
        &page(&app, &reply.location()).await,
        &format!("Failed job {}.", created.id),
    );
    let id = created.id.to_string();
    let reply = post_under(
        &app,
        "/admin",
        "/jobs/actions",
        &[("state", "failed"), ("action", "delete"), ("ids", &id)],
    )
    .await;
    assert_eq!(
        reply.location(),
        "/admin/jobs?state=failed&notice=Deleted+1+job."
    );
    assert!(job(&db, created.id).await.is_none());
    let reply = post_under(
        &app,
        "/admin",
        "/workers/actions",
        &[("action", "unlock"), ("pool_id", "node-worker-1")],
    )
    .await;
    assert_eq!(reply.location_path(), "/admin/workers");
    assert_eq!(must_job(&db, held.id).await.state, JobState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_under_a_prefix_every_navigation_link_works() {
    let db = TestDb::new().await;
    let app = nested(&db);
    for path in ["/admin", "/admin/jobs", "/admin/queues"] {
        let html = page(&app, path).await;
        for link in hrefs(&html) {
            let reply = get(&app, &link).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: link {link}");
        }
    }
}

// ---------------------------------------------------------------------------
// Basic authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_asks_for_credentials() {
    let db = TestDb::new().await;
    let app = Router::new().nest("/admin", basic_auth(ui(&db), "ops", "s3cret"));
    // "ops:s3cret" and "ops:wrong" in base64.
    let right = "Basic b3BzOnMzY3JldA==";
    let wrong = "Basic b3BzOndyb25n";
    for path in ["/admin", "/admin/jobs", "/admin/assets/ui.css"] {
        for given in [
            None,
            Some(wrong),
            Some("Basic"),
            Some("Bearer b3BzOnMzY3JldA=="),
        ] {
            let mut request = Request::get(path);
            if let Some(value) = given {
                request = request.header(header::AUTHORIZATION, value);
            }
            let reply = call(&app, request.body(Body::empty()).unwrap()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{path} with {given:?}"
            );
            let challenge = reply
                .headers
                .get(header::WWW_AUTHENTICATE)
                .expect("a WWW-Authenticate header")
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Basic realm="), "{challenge}");
            assert_lacks(&reply.body, "csrf-token");
        }
        let reply = call(
            &app,
            Request::get(path)
                .header(header::AUTHORIZATION, right)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    // Actions too: without credentials, nothing happens.
    let created = add(&db, "fetch", JobSpec::default()).await;
    let id = created.id.to_string();
    let reply = post_raw(
        &app,
        "/admin/jobs/actions",
        &[("action", "delete"), ("ids", &id)],
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(job(&db, created.id).await.is_some());
    let html = call(
        &app,
        Request::get("/admin/jobs")
            .header(header::AUTHORIZATION, right)
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .body;
    let token = csrf_of(&html);
    let reply = post_raw(
        &app,
        "/admin/jobs/actions",
        &[("csrf", &token), ("action", "delete"), ("ids", &id)],
        &[("authorization", right)],
    )
    .await;
    assert_eq!(reply.location(), "/admin/jobs?notice=Deleted+1+job.");
    assert!(job(&db, created.id).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescheduling_a_failed_job_says_it_still_needs_a_retry() {
    let db = TestDb::new().await;
    let created = add(&db, "fetch", JobSpec::default()).await;
    db.utils()
        .permanently_fail_jobs(&[created.id], Some("gone"))
        .await
        .unwrap();
    let app = ui(&db);
    let reply = post(
        &app,
        &format!("/jobs/{}/actions", created.id),
        &[("action", "reschedule"), ("run_at", "2031-02-03T04:05")],
    )
    .await;
    assert_eq!(
        reply.notice(),
        "Rescheduled, but the job has used all its attempts: Retry it to run it again."
    );
    assert_eq!(must_job(&db, created.id).await.state, JobState::Failed);
}
