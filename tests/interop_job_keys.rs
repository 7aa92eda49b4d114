//! Job keys behave the same whether Node's `addJob` or our `add_raw_job`
//! adds the job: every mode against every state of an existing keyed row
//! (compatibility reference §3.4).
//!
//! Each scenario runs twice, on two fresh databases: once entirely through
//! Node graphile-worker 0.18 (which also installs its own schema there), once
//! entirely through us. The existing row's state is made with the same SQL
//! on both sides. The rows left behind must be the same, and must be what
//! §3.4 says.

use chrono::{DateTime, TimeZone, Utc};
use graphile_worker::{JobKeyMode, JobSpec, WorkerUtils};
use graphile_worker_dev::{fresh_database, node};
use serde_json::{Value, json};
use sqlx::{PgPool, Row as _};

const SCHEMA: &str = "graphile_worker";
const KEY: &str = "the-key";
const TASK: &str = "keyed_task";

fn t1() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn t2() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 6, 1, 12, 0, 0).unwrap()
}

/// The state of the existing row with the key before the second add.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    None,
    Pending,
    Retrying,
    PermanentlyFailed,
    Locked,
}

impl State {
    /// SQL that puts the row added first into this state.
    fn sql(self) -> Option<&'static str> {
        match self {
            State::None | State::Pending => None,
            State::Retrying => {
                Some("update graphile_worker._private_jobs set attempts = 2, last_error = 'boom'")
            }
            State::PermanentlyFailed => Some(
                "update graphile_worker._private_jobs set attempts = max_attempts, last_error = 'boom'",
            ),
            State::Locked => Some(
                "update graphile_worker._private_jobs set attempts = 1, locked_at = now(), locked_by = 'x'",
            ),
        }
    }
}

/// One row of the `jobs` view, minus ids and timestamps set by the clock.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    task_identifier: String,
    key: Option<String>,
    revision: i32,
    attempts: i16,
    max_attempts: i16,
    payload: Value,
    run_at: DateTime<Utc>,
    queue_name: Option<String>,
    priority: i16,
    flags: Option<Value>,
    last_error: Option<String>,
    locked: bool,
    locked_by: Option<String>,
}

/// What the second add returned, in the terms both sides can report.
#[derive(Clone, Debug, PartialEq)]
struct Returned {
    key: Option<String>,
    revision: i32,
    attempts: i64,
    payload: Value,
    run_at: DateTime<Utc>,
}

async fn rows(pool: &PgPool) -> Vec<Row> {
    // The `jobs` view leaves the payload out, so read the private tables.
    let rows = sqlx::query(
        "select t.identifier as task_identifier, j.key, j.revision, j.attempts, j.max_attempts, \
                j.payload::jsonb as payload, j.run_at, q.queue_name, j.priority, j.flags, \
                j.last_error, j.locked_at is not null as locked, j.locked_by \
         from graphile_worker._private_jobs j \
         join graphile_worker._private_tasks t on t.id = j.task_id \
         left join graphile_worker._private_job_queues q on q.id = j.job_queue_id \
         order by j.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| Row {
            task_identifier: r.get("task_identifier"),
            key: r.get("key"),
            revision: r.get("revision"),
            attempts: r.get("attempts"),
            max_attempts: r.get("max_attempts"),
            payload: r.get("payload"),
            run_at: r.get("run_at"),
            queue_name: r.get("queue_name"),
            priority: r.get("priority"),
            flags: r.get("flags"),
            last_error: r.get("last_error"),
            locked: r.get("locked"),
            locked_by: r.get("locked_by"),
        })
        .collect()
}

/// The first add (when the state has a row): every field set, so a reset to
/// the defaults is visible.
fn first_spec() -> JobSpec {
    JobSpec {
        queue_name: Some("q1".into()),
        run_at: Some(t1()),
        max_attempts: Some(5),
        job_key: Some(KEY.into()),
        job_key_mode: None,
        priority: Some(3),
        flags: Some(vec!["a".into()]),
    }
}

/// The second add: a new payload and run_at, everything else left out.
fn second_spec(mode: JobKeyMode) -> JobSpec {
    JobSpec {
        run_at: Some(t2()),
        job_key: Some(KEY.into()),
        job_key_mode: Some(mode),
        ..Default::default()
    }
}

async fn through_rust(state: State, mode: JobKeyMode) -> (Vec<Row>, Returned) {
    let db = fresh_database().await;
    let utils = WorkerUtils::new(db.pool(2).await, SCHEMA);
    utils.migrate().await.unwrap();
    if state != State::None {
        utils
            .add_raw_job(TASK, json!({"v": 1}), first_spec())
            .await
            .unwrap();
        if let Some(sql) = state.sql() {
            sqlx::query(sql).execute(utils.pool()).await.unwrap();
        }
    }
    let job = utils
        .add_raw_job(TASK, json!({"v": 2}), second_spec(mode))
        .await
        .unwrap();
    let returned = Returned {
        key: job.key,
        revision: job.revision,
        attempts: job.attempts.into(),
        payload: job.payload,
        run_at: job.run_at,
    };
    (rows(utils.pool()).await, returned)
}

async fn through_node(state: State, mode: JobKeyMode) -> (Vec<Row>, Returned) {
    let db = fresh_database().await;
    let params = json!({
        "task": TASK,
        "key": KEY,
        "first": state != State::None,
        "stateSql": state.sql(),
        "t1": t1().to_rfc3339(),
        "t2": t2().to_rfc3339(),
        "mode": mode.as_str(),
    });
    let script = format!(
        "const {{makeWorkerUtils}} = require('graphile-worker');
const P = {params};
(async () => {{
  const utils = await makeWorkerUtils({{connectionString: process.env.DATABASE_URL}});
  try {{
    if (P.first) {{
      await utils.addJob(P.task, {{v: 1}}, {{queueName: 'q1', runAt: new Date(P.t1),
        maxAttempts: 5, jobKey: P.key, priority: 3, flags: ['a']}});
      if (P.stateSql) await utils.withPgClient((c) => c.query(P.stateSql));
    }}
    const job = await utils.addJob(P.task, {{v: 2}},
      {{runAt: new Date(P.t2), jobKey: P.key, jobKeyMode: P.mode}});
    console.log('RESULT ' + JSON.stringify({{key: job.key, revision: job.revision,
      attempts: job.attempts, payload: job.payload, run_at: new Date(job.run_at).toISOString()}}));
  }} finally {{
    await utils.release();
  }}
}})().then(() => process.exit(0), (e) => {{ console.error(e); process.exit(1); }});"
    );
    let stdout = node::run_js_ok(&db.url, SCHEMA, &script).await;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in node output:\n{stdout}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let returned = Returned {
        key: v["key"].as_str().map(str::to_owned),
        revision: v["revision"].as_i64().unwrap() as i32,
        attempts: v["attempts"].as_i64().unwrap(),
        payload: v["payload"].clone(),
        run_at: v["run_at"].as_str().unwrap().parse().unwrap(),
    };
    let pool = db.pool(1).await;
    (rows(&pool).await, returned)
}

/// The job the second add creates when it inserts a fresh row.
fn fresh_second() -> Row {
    Row {
        task_identifier: TASK.into(),
        key: Some(KEY.into()),
        revision: 0,
        attempts: 0,
        max_attempts: 25,
        payload: json!({"v": 2}),
        run_at: t2(),
        queue_name: None,
        priority: 0,
        flags: None,
        last_error: None,
        locked: false,
        locked_by: None,
    }
}

/// The first job in `state`, as the state SQL leaves it.
fn first_in(state: State) -> Row {
    // The same key and task as the fresh second job, with the first spec.
    let mut row = Row {
        max_attempts: 5,
        payload: json!({"v": 1}),
        run_at: t1(),
        queue_name: Some("q1".into()),
        priority: 3,
        flags: Some(json!({"a": true})),
        ..fresh_second()
    };
    match state {
        State::None | State::Pending => {}
        State::Retrying => {
            row.attempts = 2;
            row.last_error = Some("boom".into());
        }
        State::PermanentlyFailed => {
            row.attempts = 5;
            row.last_error = Some("boom".into());
        }
        State::Locked => {
            row.attempts = 1;
            row.locked = true;
            row.locked_by = Some("x".into());
        }
    }
    row
}

/// The rows §3.4 of the compatibility reference predicts.
fn expected(state: State, mode: JobKeyMode) -> Vec<Row> {
    let updated_in_place = |keep_run_at: bool| {
        let mut row = fresh_second();
        row.revision = 1;
        if keep_run_at {
            row.run_at = t1();
        }
        vec![row]
    };
    let dedupe = || {
        let mut row = first_in(state);
        row.revision += 1;
        vec![row]
    };
    let key_given_up = || {
        // The old row loses its key and all its attempts; a new row runs.
        let mut old = first_in(state);
        old.key = None;
        old.attempts = old.max_attempts;
        vec![old, fresh_second()]
    };
    match (state, mode) {
        (State::None, _) => vec![fresh_second()],
        (_, JobKeyMode::UnsafeDedupe) => dedupe(),
        (State::Pending, JobKeyMode::Replace) => updated_in_place(false),
        (State::Pending, JobKeyMode::PreserveRunAt) => updated_in_place(true),
        // attempts > 0: run_at is replaced even in preserve_run_at mode.
        (State::Retrying, _) => updated_in_place(false),
        (State::PermanentlyFailed | State::Locked, _) => key_given_up(),
    }
}

async fn scenario(state: State, mode: JobKeyMode) {
    let ((node_rows, node_returned), (rust_rows, rust_returned)) =
        tokio::join!(through_node(state, mode), through_rust(state, mode));
    assert_eq!(
        rust_rows, node_rows,
        "{state:?} × {mode:?}: rows differ between us (left) and Node (right)"
    );
    assert_eq!(
        rust_returned, node_returned,
        "{state:?} × {mode:?}: the returned job differs between us (left) and Node (right)"
    );
    assert_eq!(
        rust_rows,
        expected(state, mode),
        "{state:?} × {mode:?}: rows differ from the compatibility reference"
    );
    // The job returned is always the one that now holds the key.
    let holder = rust_rows
        .iter()
        .find(|r| r.key.as_deref() == Some(KEY))
        .unwrap();
    assert_eq!(rust_returned.key.as_deref(), Some(KEY));
    assert_eq!(rust_returned.revision, holder.revision);
    assert_eq!(rust_returned.attempts, i64::from(holder.attempts));
    assert_eq!(rust_returned.payload, holder.payload);
    assert_eq!(rust_returned.run_at, holder.run_at);
}

macro_rules! matrix {
    ($($name:ident: $state:ident, $mode:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                scenario(State::$state, JobKeyMode::$mode).await;
            }
        )*
    };
}

matrix! {
    replace_with_no_existing_job: None, Replace;
    replace_pending_job: Pending, Replace;
    replace_job_waiting_to_retry: Retrying, Replace;
    replace_permanently_failed_job: PermanentlyFailed, Replace;
    replace_locked_job: Locked, Replace;
    preserve_run_at_with_no_existing_job: None, PreserveRunAt;
    preserve_run_at_pending_job: Pending, PreserveRunAt;
    preserve_run_at_job_waiting_to_retry: Retrying, PreserveRunAt;
    preserve_run_at_permanently_failed_job: PermanentlyFailed, PreserveRunAt;
    preserve_run_at_locked_job: Locked, PreserveRunAt;
    unsafe_dedupe_with_no_existing_job: None, UnsafeDedupe;
    unsafe_dedupe_pending_job: Pending, UnsafeDedupe;
    unsafe_dedupe_job_waiting_to_retry: Retrying, UnsafeDedupe;
    unsafe_dedupe_permanently_failed_job: PermanentlyFailed, UnsafeDedupe;
    unsafe_dedupe_locked_job: Locked, UnsafeDedupe;
}
