//! Cron scheduling against a real database: several schedulers, Rust and
//! Node, share `_private_known_crontabs` and schedule each minute once;
//! backfill after downtime; clock jumps; restarts after errors; bad lines.
//!
//! Rust schedulers run on a manual clock, so minutes pass when the test
//! says so. Node graphile-worker 0.18 only knows the real clock, so the test
//! that includes it lets Node and Rust backfill the same window and then
//! race on the next real minute.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, TimeZone, Timelike, Utc};
use common::migrated;
use graphile_worker::testing::{Clock, CronEvent, ManualClock, run_scheduler_for_tests};
use graphile_worker::{CrontabErrorKind, parse_crontab};
use graphile_worker_dev::node;
use serde_json::{Value, json};
use sqlx::{PgPool, Row as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const SCHEMA: &str = "graphile_worker";
const WAIT: Duration = Duration::from_secs(20);

/// 2024-01-01 at `h:m:s` UTC.
fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, h, m, s).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

/// A running Rust scheduler and what it reports.
struct Scheduler {
    name: &'static str,
    events: mpsc::UnboundedReceiver<CronEvent>,
    /// Every event received so far.
    log: Vec<CronEvent>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start(name: &'static str, pool: &PgPool, crontab: &str, clock: Clock) -> Scheduler {
    let items = parse_crontab(crontab).unwrap();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        run_scheduler_for_tests(pool, SCHEMA, items, clock, shutdown_rx, events_tx)
            .await
            .unwrap();
    });
    Scheduler {
        name,
        events,
        log: Vec::new(),
        shutdown,
        task,
    }
}

impl Scheduler {
    /// Waits for the first event (after those already seen) that `pick`
    /// accepts.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&CronEvent) -> Option<T>,
    ) -> T {
        let name = self.name;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("scheduler stopped");
                let picked = pick(&event);
                self.log.push(event);
                if let Some(value) = picked {
                    return value;
                }
            }
        })
        .await;
        found
            .unwrap_or_else(|_| panic!("{name}: timed out waiting for {what}; saw {:#?}", self.log))
    }

    async fn started(&mut self) -> DateTime<Utc> {
        self.wait_for("start", |e| match e {
            CronEvent::Started { start } => Some(*start),
            _ => None,
        })
        .await
    }

    /// Waits until `minute` was processed; returns the identifiers this
    /// scheduler added jobs for.
    async fn scheduled(&mut self, minute: DateTime<Utc>) -> Vec<String> {
        self.wait_for(&format!("minute {minute}"), |e| match e {
            CronEvent::Scheduled {
                minute: m, added, ..
            } if *m == minute => Some(added.clone()),
            _ => None,
        })
        .await
    }

    /// Everything added while backfilling, by minute.
    fn backfilled(&self) -> BTreeMap<DateTime<Utc>, Vec<String>> {
        self.log
            .iter()
            .filter_map(|e| match e {
                CronEvent::Scheduled {
                    minute,
                    backfilled: true,
                    added,
                    ..
                } => Some((*minute, added.clone())),
                _ => None,
            })
            .collect()
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("scheduler stops")
            .expect("scheduler task");
    }
}

/// A job as users see it.
#[derive(Debug, Clone, PartialEq)]
struct CronJob {
    task: String,
    run_at: DateTime<Utc>,
    payload: Value,
    queue_name: Option<String>,
    max_attempts: i16,
    priority: i16,
}

impl CronJob {
    fn ts(&self) -> &str {
        self.payload["_cron"]["ts"].as_str().unwrap()
    }

    fn backfilled(&self) -> bool {
        self.payload["_cron"]["backfilled"].as_bool().unwrap()
    }
}

async fn jobs(pool: &PgPool, task: &str) -> Vec<CronJob> {
    sqlx::query(
        "select t.identifier, j.run_at, j.payload, q.queue_name, j.max_attempts, j.priority \
         from graphile_worker._private_jobs j \
         join graphile_worker._private_tasks t on t.id = j.task_id \
         left join graphile_worker._private_job_queues q on q.id = j.job_queue_id \
         where t.identifier = $1 order by j.run_at, j.id",
    )
    .bind(task)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|row| CronJob {
        task: row.get(0),
        run_at: row.get(1),
        payload: row.get(2),
        queue_name: row.get(3),
        max_attempts: row.get(4),
        priority: row.get(5),
    })
    .collect()
}

/// The run_at of each job, checking that no minute appears twice and that
/// `_cron.ts` is the run_at.
async fn minutes(pool: &PgPool, task: &str) -> Vec<DateTime<Utc>> {
    let jobs = jobs(pool, task).await;
    let mut out: Vec<DateTime<Utc>> = Vec::new();
    for job in &jobs {
        assert_eq!(job.ts(), iso(job.run_at), "{job:?}");
        assert!(
            out.last() != Some(&job.run_at),
            "{task}: minute {} scheduled twice: {jobs:#?}",
            job.run_at
        );
        out.push(job.run_at);
    }
    out
}

fn minute_range(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut m = first;
    while m <= last {
        out.push(m);
        m += TimeDelta::minutes(1);
    }
    out
}

async fn known_crontabs(pool: &PgPool) -> BTreeMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)> {
    let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select identifier, known_since, last_execution from graphile_worker._private_known_crontabs",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(id, k, l)| (id, (k, l))).collect()
}

#[tokio::test]
async fn two_rust_schedulers_schedule_each_minute_once_through_clock_jumps() {
    let (_db, pool, _utils) = migrated().await;
    let crontab = "* * * * * tick {\"hello\":\"world\",\"_cron\":\"overridden\"}\n\
                   */2 * * * * even ?id=even_ticks&queue=evens&max=3&priority=-2\n";
    let clock = ManualClock::new(at(4, 0, 30));
    let mut a = start("a", &pool, crontab, Clock::Manual(clock.clone()));
    let mut b = start("b", &pool, crontab, Clock::Manual(clock.clone()));
    a.started().await;
    b.started().await;

    // Each minute is processed by both; each due identifier is added by
    // exactly one of them.
    let check_minute = |minute: DateTime<Utc>, added_a: Vec<String>, added_b: Vec<String>| {
        let mut all: Vec<String> = added_a.into_iter().chain(added_b).collect();
        all.sort();
        let mut expected = vec!["tick".to_owned()];
        if minute.minute().is_multiple_of(2) {
            expected.insert(0, "even_ticks".to_owned());
        }
        assert_eq!(all, expected, "jobs added for {minute}");
    };
    for m in 1..=5 {
        clock.set(at(4, m, 5));
        let minute = at(4, m, 0);
        let (added_a, added_b) = (a.scheduled(minute).await, b.scheduled(minute).await);
        check_minute(minute, added_a, added_b);
    }

    // The clock jumps forward four minutes: every missed minute is caught
    // up, live (not backfilled).
    clock.set(at(4, 9, 10));
    for m in 6..=9 {
        let minute = at(4, m, 0);
        let (added_a, added_b) = (a.scheduled(minute).await, b.scheduled(minute).await);
        check_minute(minute, added_a, added_b);
    }
    assert!(
        a.log.iter().any(
            |e| matches!(e, CronEvent::OverdueTimer { expected, .. } if *expected == at(4, 6, 0))
        ),
        "a noticed the jump: {:#?}",
        a.log
    );

    // The clock goes back six minutes: nothing is scheduled again, and the
    // next new minute is scheduled once.
    clock.set(at(4, 3, 0));
    clock.set(at(4, 10, 1));
    let minute = at(4, 10, 0);
    let (added_a, added_b) = (a.scheduled(minute).await, b.scheduled(minute).await);
    check_minute(minute, added_a, added_b);

    // A third scheduler whose clock is behind walks through minutes already
    // scheduled and adds nothing.
    let late_clock = ManualClock::new(at(4, 2, 30));
    let mut c = start("c", &pool, crontab, Clock::Manual(late_clock.clone()));
    c.started().await;
    for m in 3..=5 {
        late_clock.set(at(4, m, 1));
        assert_eq!(c.scheduled(at(4, m, 0)).await, Vec::<String>::new());
    }

    for s in [a, b, c] {
        s.stop().await;
    }

    assert_eq!(
        minutes(&pool, "tick").await,
        minute_range(at(4, 1, 0), at(4, 10, 0))
    );
    let ticks = jobs(&pool, "tick").await;
    for job in &ticks {
        assert!(!job.backfilled());
        assert_eq!(job.payload["hello"], "world");
        assert_eq!(job.queue_name, None);
        assert_eq!((job.max_attempts, job.priority), (25, 0));
    }
    assert_eq!(
        ticks[0].payload,
        json!({"hello": "world", "_cron": {"ts": "2024-01-01T04:01:00.000Z", "backfilled": false}})
    );
    let evens = jobs(&pool, "even").await;
    assert_eq!(
        evens.iter().map(|j| j.run_at).collect::<Vec<_>>(),
        [2, 4, 6, 8, 10].map(|m| at(4, m, 0))
    );
    for job in &evens {
        assert_eq!(job.queue_name.as_deref(), Some("evens"));
        assert_eq!((job.max_attempts, job.priority), (3, -2));
        assert_eq!(job.payload.as_object().unwrap().len(), 1, "only _cron");
    }

    let known = known_crontabs(&pool).await;
    assert_eq!(known.keys().collect::<Vec<_>>(), ["even_ticks", "tick"]);
    assert_eq!(known["tick"], (at(4, 0, 30), Some(at(4, 10, 0))));
    assert_eq!(known["even_ticks"], (at(4, 0, 30), Some(at(4, 10, 0))));
}

#[tokio::test]
async fn backfill_after_ten_minutes_of_downtime_creates_exactly_the_missed_jobs_within_fill() {
    let (_db, pool, _utils) = migrated().await;
    let crontab = "* * * * * short ?fill=5m\n\
                   * * * * * long ?fill=1h\n\
                   * * * * * no_fill\n\
                   */3 * * * * third ?id=every_third&fill=1h&jobKey=third_key\n";

    // Up from 04:00:30 to 04:03, then down.
    let clock = ManualClock::new(at(4, 0, 30));
    let mut first = start("first", &pool, crontab, Clock::Manual(clock.clone()));
    first.started().await;
    assert!(first.backfilled().is_empty(), "nothing is known yet");
    for m in 1..=3 {
        clock.set(at(4, m, 2));
        first.scheduled(at(4, m, 0)).await;
    }
    first.stop().await;

    // Ten minutes later a worker starts, with one more item that has never
    // been seen and so is not backfilled.
    let clock = ManualClock::new(at(4, 13, 30));
    let crontab = format!("{crontab}* * * * * newcomer ?fill=1h\n");
    let mut second = start("second", &pool, &crontab, Clock::Manual(clock.clone()));
    second.started().await;

    let short = minutes(&pool, "short").await;
    let long = minutes(&pool, "long").await;
    let no_fill = minutes(&pool, "no_fill").await;
    // `fill=5m` from 04:13:30 reaches back to 04:08:30: 04:09 to 04:13.
    let mut expected = minute_range(at(4, 1, 0), at(4, 3, 0));
    expected.extend(minute_range(at(4, 9, 0), at(4, 13, 0)));
    assert_eq!(short, expected);
    // `fill=1h` covers all ten missed minutes, 04:04 to 04:13, and not 04:03
    // again.
    assert_eq!(long, minute_range(at(4, 1, 0), at(4, 13, 0)));
    assert_eq!(no_fill, minute_range(at(4, 1, 0), at(4, 3, 0)));
    assert!(minutes(&pool, "newcomer").await.is_empty());
    // The keyed item: one row, replaced by each run, last at 04:12.
    let third = jobs(&pool, "third").await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].run_at, at(4, 12, 0));
    assert!(third[0].backfilled());

    for job in jobs(&pool, "long").await {
        assert_eq!(job.backfilled(), job.run_at > at(4, 3, 0), "{job:?}");
    }
    // One statement per minute, oldest first, from the last run (04:03,
    // which adds nothing again) on.
    let backfilled: Vec<DateTime<Utc>> = second.backfilled().into_keys().collect();
    assert_eq!(backfilled, minute_range(at(4, 3, 0), at(4, 13, 0)));
    assert!(second.backfilled()[&at(4, 3, 0)].is_empty());

    // Live again at 04:14.
    clock.set(at(4, 14, 0) + TimeDelta::milliseconds(1));
    let mut added = second.scheduled(at(4, 14, 0)).await;
    added.sort();
    assert_eq!(added, ["long", "newcomer", "no_fill", "short"]);
    second.stop().await;
    let last = jobs(&pool, "long").await.pop().unwrap();
    assert_eq!((last.run_at, last.backfilled()), (at(4, 14, 0), false));

    let known = known_crontabs(&pool).await;
    assert_eq!(known["newcomer"], (at(4, 13, 30), Some(at(4, 14, 0))));
    assert_eq!(known["every_third"], (at(4, 0, 30), Some(at(4, 12, 0))));
    assert!(
        !known.contains_key("third"),
        "keyed by identifier, not task"
    );
}

#[tokio::test]
async fn errors_restart_the_cycle_with_backoff_and_backfill_what_was_missed() {
    let (_db, pool, _utils) = migrated().await;
    let clock = ManualClock::new(at(4, 0, 30));
    let mut s = start(
        "s",
        &pool,
        "* * * * * tick ?fill=1h",
        Clock::Manual(clock.clone()),
    );
    s.started().await;
    clock.set(at(4, 1, 1));
    s.scheduled(at(4, 1, 0)).await;

    sqlx::query(
        "alter table graphile_worker._private_known_crontabs rename to known_crontabs_away",
    )
    .execute(&pool)
    .await
    .unwrap();
    clock.set(at(4, 2, 1));
    // The minute fails, the cycle restarts and fails again, with growing
    // delays.
    let mut delays = Vec::new();
    while delays.len() < 3 {
        let (attempt, delay) = s
            .wait_for("an error", |e| match e {
                CronEvent::Error { attempt, delay, .. } => Some((*attempt, *delay)),
                _ => None,
            })
            .await;
        assert_eq!(attempt as usize, delays.len() + 1);
        delays.push(delay);
    }
    assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(300));
    assert!(delays[2] >= Duration::from_millis(225) && delays[2] < Duration::from_millis(675));

    // Time passes while the database is broken; a cycle starting now fails.
    clock.set(at(4, 4, 5));
    s.wait_for("a cycle starting at 04:04:05", |e| match e {
        CronEvent::Starting { start } if *start == at(4, 4, 5) => Some(()),
        _ => None,
    })
    .await;
    s.wait_for("its error", |e| {
        matches!(e, CronEvent::Error { .. }).then_some(())
    })
    .await;

    sqlx::query(
        "alter table graphile_worker.known_crontabs_away rename to _private_known_crontabs",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(s.started().await, at(4, 4, 5));
    clock.set(at(4, 5, 1));
    s.scheduled(at(4, 5, 0)).await;
    s.stop().await;

    let ticks = jobs(&pool, "tick").await;
    let seen: Vec<(DateTime<Utc>, bool)> =
        ticks.iter().map(|j| (j.run_at, j.backfilled())).collect();
    assert_eq!(
        seen,
        [
            (at(4, 1, 0), false),
            (at(4, 2, 0), true),
            (at(4, 3, 0), true),
            (at(4, 4, 0), true),
            (at(4, 5, 0), false),
        ]
    );
}

#[tokio::test]
async fn a_bad_line_is_refused_with_its_line_number() {
    let crontab = "# nightly jobs\n\
                   0 4 * * * send_digest ?fill=1h\n\
                   \n\
                   */10 8-18 * * 1-5 poll ?queue=feeds\n\
                   0 4 1-31/2 * * odd_days\n\
                   0 5 * * * never_reached\n";
    let err = parse_crontab(crontab).unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(5), 5));
    assert!(matches!(
        err.kind(),
        CrontabErrorKind::UnsupportedSyntax { part, .. } if part == "1-31/2"
    ));
    assert_eq!(
        err.to_string(),
        "line 5, column 5 of crontab: unsupported syntax '1-31/2' in dates range: this doesn't \
         appear to be a number, range or wildcard (steps are only allowed on '*', as in \
         graphile-worker; list the values instead)"
    );

    // A rejected max_attempts is caught here, not at the first run.
    let err = parse_crontab("0 4 * * * a\n0 5 * * * b ?max=0\n").unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(err.to_string().contains("'max'"), "{err}");
}

/// Node's part: a runner with a crontab, whose task list does not include
/// the cron task (so its jobs stay in the table to be counted), printing its
/// cron events as `EVENT {json}` lines.
fn node_cron_script(crontab: &str) -> String {
    format!(
        r#"
const {{ run }} = require("graphile-worker");
const EventEmitter = require("events");
const events = new EventEmitter();
const say = (o) => console.log("EVENT " + JSON.stringify(o));
events.on("cron:started", ({{ start }}) => say({{ event: "started", start: start.toISOString() }}));
events.on("cron:scheduled", ({{ timestamp }}) =>
  say({{ event: "scheduled", ts: new Date(timestamp).toISOString() }}));
run({{
  connectionString: process.env.DATABASE_URL,
  concurrency: 1,
  noHandleSignals: true,
  crontab: {crontab},
  taskList: {{ not_the_cron_task: async () => {{}} }},
  events,
}}).then((runner) => runner.promise).catch((e) => {{ console.error(e); process.exit(1); }});
"#,
        crontab = serde_json::to_string(crontab).unwrap()
    )
}

/// Node's `EVENT` lines, parsed.
struct NodeCron {
    child: tokio::process::Child,
    events: mpsc::UnboundedReceiver<Value>,
}

impl NodeCron {
    fn start(url: &str, crontab: &str) -> NodeCron {
        let mut cmd = tokio::process::Command::from(node::js_command(
            url,
            SCHEMA,
            &node_cron_script(crontab),
        ));
        cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("start node");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("EVENT ") {
                    let _ = tx.send(serde_json::from_str::<Value>(json).unwrap());
                }
            }
        });
        NodeCron { child, events }
    }

    async fn wait_for(&mut self, event: &str, ts: Option<&str>) -> Value {
        let found = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                let e = self.events.recv().await.expect("node exited");
                if e["event"] == event && ts.is_none_or(|ts| e["ts"] == ts) {
                    return e;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("node: timed out waiting for {event} {ts:?}"))
    }
}

#[tokio::test]
async fn node_and_two_rust_schedulers_schedule_each_minute_once() {
    let (db, pool, _utils) = migrated().await;
    let crontab = "* * * * * tick ?fill=1h";

    // 1. Rust, on a test clock half an hour in the past, first sees `tick`
    //    and schedules ten minutes.
    let base = floor_minute(Utc::now()) - TimeDelta::minutes(30);
    let clock = ManualClock::new(base + TimeDelta::seconds(30));
    let mut a = start("a", &pool, crontab, Clock::Manual(clock.clone()));
    a.started().await;
    for m in 1..=10 {
        clock.set(base + TimeDelta::minutes(m) + TimeDelta::seconds(1));
        assert_eq!(
            a.scheduled(base + TimeDelta::minutes(m)).await,
            ["tick"],
            "minute {m}"
        );
    }
    a.stop().await;

    // 2. Node starts on the real clock and backfills the twenty-odd minutes
    //    since, without scheduling any of Rust's ten again.
    let mut node = NodeCron::start(&db.url, crontab);
    let node_start: DateTime<Utc> = node.wait_for("started", None).await["start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let node_backfilled_to = floor_minute(node_start - TimeDelta::milliseconds(1));
    // (Node's live loop may already be at the next minute.)
    let mut so_far = minutes(&pool, "tick").await;
    so_far.retain(|m| *m <= node_backfilled_to);
    assert_eq!(
        so_far,
        minute_range(base + TimeDelta::minutes(1), node_backfilled_to)
    );
    let node_backfill = jobs(&pool, "tick").await;
    assert!(
        node_backfill[10..so_far.len()]
            .iter()
            .all(CronJob::backfilled)
    );

    // 3. Two more Rust schedulers start on the real clock: their backfill
    //    finds every minute Node backfilled already taken.
    let mut b = start("b", &pool, crontab, Clock::System);
    let mut c = start("c", &pool, crontab, Clock::System);
    let start_b = b.started().await;
    let start_c = c.started().await;
    for s in [&b, &c] {
        for (minute, added) in s.backfilled() {
            assert!(
                added.is_empty() || minute > node_backfilled_to,
                "{} re-scheduled {minute}, which Node had backfilled",
                s.name
            );
        }
    }

    // 4. All three race for the next real minute; one of them wins.
    let latest_start = node_start.max(start_b).max(start_c);
    let next = floor_minute(latest_start) + TimeDelta::minutes(1);
    node.wait_for("scheduled", Some(&iso(next))).await;
    let added_b = b.scheduled(next).await;
    let added_c = c.scheduled(next).await;
    assert!(
        added_b.len() + added_c.len() <= 1,
        "both Rust schedulers added {next}"
    );
    node.child.kill().await.unwrap();
    b.stop().await;
    c.stop().await;

    assert_eq!(
        minutes(&pool, "tick").await,
        minute_range(base + TimeDelta::minutes(1), next),
        "every minute since `tick` was first seen, each once"
    );
    let known = known_crontabs(&pool).await;
    assert_eq!(known["tick"].1, Some(next));
}
