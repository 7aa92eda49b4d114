//! Assertions on what was enqueued: typed, with readable failures, over the
//! whole test database or only what a [`Scope`] has seen added since it
//! began.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::database::TestDb;
use crate::inspect::{JobFilter, JobOrder};
use crate::job::Job;
use crate::task::Task;

/// Jobs read at most per assertion (the newest ones).
const MAX_JOBS: i64 = 10_000;

type Predicate<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// The job an assertion looks for: one of task `T`, and whatever else is
/// asked with the builder methods (payload, queue, priority, key, flags,
/// `max_attempts`, when it runs). Unset fields match anything.
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::task;
/// use graphile_worker::testing::Enqueued;
///
/// #[task(queue = "emails")]
/// async fn send_email(to: String) {}
///
/// let expected = Enqueued::<SendEmail>::new()
///     .payload(SendEmail { to: "ada@example.com".into() })
///     .queue("emails")
///     .due_in(Duration::from_secs(600), Duration::from_secs(5));
/// assert_eq!(
///     expected.to_string(),
///     "a `send_email` job with payload {\"to\":\"ada@example.com\"}, queue \"emails\", due in 600s (± 5s)"
/// );
/// ```
pub struct Enqueued<T: Task> {
    payload: Option<Value>,
    predicate: Option<Predicate<T>>,
    queue: Option<Option<String>>,
    priority: Option<i16>,
    key: Option<String>,
    flags: Option<Vec<String>>,
    max_attempts: Option<i16>,
    run_at: Option<(DateTime<Utc>, Duration)>,
    due_in: Option<(Duration, Duration)>,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task> Default for Enqueued<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Task> Enqueued<T> {
    /// Any job of task `T`.
    pub fn new() -> Self {
        Enqueued {
            payload: None,
            predicate: None,
            queue: None,
            priority: None,
            key: None,
            flags: None,
            max_attempts: None,
            run_at: None,
            due_in: None,
            _task: PhantomData,
        }
    }

    /// With exactly this payload (compared as JSON, as it is stored).
    ///
    /// # Panics
    ///
    /// If `payload` cannot be serialized.
    pub fn payload(mut self, payload: T) -> Self {
        let json = serde_json::to_value(&payload).unwrap_or_else(|e| {
            panic!(
                "graphile_worker::testing: the expected `{}` payload does not serialize: {e}",
                T::IDENTIFIER
            )
        });
        self.payload = Some(json);
        self
    }

    /// With a payload for which `check` returns true.
    pub fn matching(mut self, check: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Box::new(check));
        self
    }

    /// In the named queue `name`.
    pub fn queue(mut self, name: &str) -> Self {
        self.queue = Some(Some(name.to_owned()));
        self
    }

    /// In no named queue.
    pub fn no_queue(mut self) -> Self {
        self.queue = Some(None);
        self
    }

    /// With this priority.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// With this job key.
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// With exactly these flags (in any order).
    pub fn flags<'a>(mut self, flags: impl IntoIterator<Item = &'a str>) -> Self {
        let mut flags: Vec<String> = flags.into_iter().map(str::to_owned).collect();
        flags.sort();
        self.flags = Some(flags);
        self
    }

    /// With this `max_attempts`.
    pub fn max_attempts(mut self, max_attempts: i16) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Running at `at`, give or take `tolerance`.
    pub fn run_at(mut self, at: DateTime<Utc>, tolerance: Duration) -> Self {
        self.run_at = Some((at, tolerance));
        self
    }

    /// Running `delay` from when the assertion is made, give or take
    /// `tolerance` (which must cover the time between enqueueing and the
    /// assertion).
    pub fn due_in(mut self, delay: Duration, tolerance: Duration) -> Self {
        self.due_in = Some((delay, tolerance));
        self
    }

    /// What of `job` differs from what is expected (empty: it matches).
    fn differences(&self, job: &Job, now: DateTime<Utc>) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.payload.as_ref().is_some_and(|p| *p != job.payload) {
            out.push("payload");
        }
        if let Some(check) = &self.predicate {
            let matches = serde_json::from_value::<T>(job.payload.clone())
                .map(|payload| check(&payload))
                .unwrap_or(false);
            if !matches {
                out.push("payload (the check)");
            }
        }
        if self.queue.as_ref().is_some_and(|q| *q != job.queue_name) {
            out.push("queue");
        }
        if self.priority.is_some_and(|p| p != job.priority) {
            out.push("priority");
        }
        if self
            .key
            .as_ref()
            .is_some_and(|k| Some(k) != job.key.as_ref())
        {
            out.push("key");
        }
        if self.flags.as_ref().is_some_and(|f| *f != flags_of(job)) {
            out.push("flags");
        }
        if self.max_attempts.is_some_and(|m| m != job.max_attempts) {
            out.push("max_attempts");
        }
        if let Some((at, tolerance)) = self.run_at
            && !within(job.run_at, at, tolerance)
        {
            out.push("run_at");
        }
        if let Some((delay, tolerance)) = self.due_in {
            let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            if !within(job.run_at, at, tolerance) && !out.contains(&"run_at") {
                out.push("run_at");
            }
        }
        out
    }
}

impl<T: Task> std::fmt::Display for Enqueued<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {}", self.described())
    }
}

impl<T: Task> Enqueued<T> {
    /// "`send_email` job with payload …", without an article.
    fn described(&self) -> String {
        let mut f = format!("`{}` job", T::IDENTIFIER);
        let mut parts: Vec<String> = Vec::new();
        if let Some(payload) = &self.payload {
            parts.push(format!("payload {payload}"));
        }
        if self.predicate.is_some() {
            parts.push("a payload passing the check".into());
        }
        match &self.queue {
            Some(Some(q)) => parts.push(format!("queue {q:?}")),
            Some(None) => parts.push("no queue".into()),
            None => {}
        }
        if let Some(p) = self.priority {
            parts.push(format!("priority {p}"));
        }
        if let Some(k) = &self.key {
            parts.push(format!("key {k:?}"));
        }
        if let Some(flags) = &self.flags {
            parts.push(format!("flags {flags:?}"));
        }
        if let Some(m) = self.max_attempts {
            parts.push(format!("max_attempts {m}"));
        }
        if let Some((at, tolerance)) = self.run_at {
            parts.push(format!(
                "run_at {} (± {})",
                at.to_rfc3339(),
                seconds(tolerance)
            ));
        }
        if let Some((delay, tolerance)) = self.due_in {
            parts.push(format!(
                "due in {} (± {})",
                seconds(delay),
                seconds(tolerance)
            ));
        }
        if !parts.is_empty() {
            f.push_str(" with ");
            f.push_str(&parts.join(", "));
        }
        f
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.3}s")
    }
}

fn within(actual: DateTime<Utc>, expected: DateTime<Utc>, tolerance: Duration) -> bool {
    let gap = (actual - expected).abs().to_std().unwrap_or(Duration::MAX);
    gap <= tolerance
}

fn flags_of(job: &Job) -> Vec<String> {
    let mut flags: Vec<String> = match &job.flags {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    flags.sort();
    flags
}

/// One line describing `job`, as failure messages show it.
fn describe(job: &Job, now: DateTime<Utc>) -> String {
    let due = (job.run_at - now).num_milliseconds() as f64 / 1000.0;
    let when = if due > 0.5 {
        format!("in {due:.0}s")
    } else {
        "due".to_owned()
    };
    let flags = flags_of(job);
    format!(
        "job {}: payload {}, queue {}, priority {}, run_at {} ({when}), attempts {}/{}, key {}, flags {}",
        job.id,
        job.payload,
        job.queue_name
            .as_ref()
            .map_or_else(|| "-".to_owned(), |q| format!("{q:?}")),
        job.priority,
        job.run_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        job.attempts,
        job.max_attempts,
        job.key
            .as_ref()
            .map_or_else(|| "-".to_owned(), |k| format!("{k:?}")),
        if flags.is_empty() {
            "-".to_owned()
        } else {
            format!("{flags:?}")
        },
    )
}

/// The jobs a [`Scope`] sees: those added (or replaced through their job
/// key) since it began, in the order they were added.
///
/// Jobs that ran to completion are deleted, so assertions see jobs still in
/// the table: enqueued and not yet run, running, retrying or failed.
///
/// ```
/// use graphile_worker::task;
/// use graphile_worker::testing::{Enqueued, TestDb};
///
/// #[task]
/// async fn send_email(to: String) {}
///
/// # #[tokio::main] async fn main() {
/// let db = TestDb::new().await;
/// // Set-up that enqueues a job of its own ...
/// SendEmail::enqueue(db.utils(), SendEmail { to: "setup@example.com".into() }).await.unwrap();
/// let scope = db.scope().await;
/// scope.assert_not_enqueued(Enqueued::<SendEmail>::new()).await;
/// // ... the code under test ...
/// SendEmail::enqueue(db.utils(), SendEmail { to: "ada@example.com".into() }).await.unwrap();
/// let sent: Vec<String> = scope.enqueued::<SendEmail>().await.into_iter().map(|e| e.to).collect();
/// assert_eq!(sent, ["ada@example.com"]);
/// # }
/// ```
pub struct Scope<'a> {
    db: &'a TestDb,
    /// Revision of each job present when the scope began.
    before: Option<HashMap<i64, i32>>,
}

impl TestDb {
    /// A scope that sees only the jobs enqueued from now on (a job replaced
    /// through its key counts as enqueued again).
    pub async fn scope(&self) -> Scope<'_> {
        let sql = format!(
            "select id, revision from {}._private_jobs",
            crate::schema::Schema::new(self.schema()).quoted()
        );
        let rows: Vec<(i64, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: could not read the jobs: {e}"));
        let before = rows.into_iter().collect();
        Scope {
            db: self,
            before: Some(before),
        }
    }

    fn whole(&self) -> Scope<'_> {
        Scope {
            db: self,
            before: None,
        }
    }

    /// Panics unless a job like `expected` is in the database; returns the
    /// first such job. The message lists the jobs of the task that are
    /// there.
    pub async fn assert_enqueued<T: Task>(&self, expected: Enqueued<T>) -> Job {
        self.whole().assert_enqueued(expected).await
    }

    /// Panics if a job like `expected` is in the database, showing it.
    pub async fn assert_not_enqueued<T: Task>(&self, expected: Enqueued<T>) {
        self.whole().assert_not_enqueued(expected).await
    }

    /// The payloads of every job of task `T` in the database, oldest first.
    pub async fn enqueued<T: Task>(&self) -> Vec<T> {
        self.whole().enqueued::<T>().await
    }

    /// Every job of task `T` in the database, oldest first.
    pub async fn enqueued_jobs<T: Task>(&self) -> Vec<Job> {
        self.whole().enqueued_jobs::<T>().await
    }

    /// Jobs of `task` (every task when `None`), oldest first: the newest
    /// [`MAX_JOBS`] of them.
    pub(crate) async fn all_jobs(&self, task: Option<&str>) -> Vec<Job> {
        let filter = JobFilter {
            task: task.map(str::to_owned),
            limit: MAX_JOBS,
            order: JobOrder::NewestFirst,
            ..JobFilter::default()
        };
        let mut jobs: Vec<Job> = self
            .utils()
            .list_jobs(&filter)
            .await
            .unwrap_or_else(|e| panic!("graphile_worker::testing: could not read the jobs: {e}"))
            .into_iter()
            .map(|entry| entry.job)
            .collect();
        jobs.reverse();
        jobs
    }
}

impl Scope<'_> {
    /// Panics unless a job like `expected` was enqueued in this scope;
    /// returns the first such job.
    pub async fn assert_enqueued<T: Task>(&self, expected: Enqueued<T>) -> Job {
        let jobs = self.enqueued_jobs::<T>().await;
        let now = Utc::now();
        if let Some(job) = jobs
            .iter()
            .find(|j| expected.differences(j, now).is_empty())
        {
            return job.clone();
        }
        let mut message = format!("expected {expected} enqueued{}", self.where_());
        let before = self.matching_before(&expected, now).await;
        if jobs.is_empty() {
            let _ = write!(
                message,
                ", but no `{}` job was{}",
                T::IDENTIFIER,
                self.others(T::IDENTIFIER).await
            );
        } else {
            let _ = write!(
                message,
                ", but none of the {} `{}` job(s) there matches:",
                jobs.len(),
                T::IDENTIFIER
            );
            for job in &jobs {
                let _ = write!(
                    message,
                    "\n  {}\n    differs in: {}",
                    describe(job, now),
                    expected.differences(job, now).join(", ")
                );
            }
        }
        if before > 0 {
            let _ = write!(
                message,
                "\n{before} matching job(s) were enqueued before this scope began"
            );
        }
        panic!("{message}");
    }

    /// Panics if a job like `expected` was enqueued in this scope.
    pub async fn assert_not_enqueued<T: Task>(&self, expected: Enqueued<T>) {
        let jobs = self.enqueued_jobs::<T>().await;
        let now = Utc::now();
        let found: Vec<&Job> = jobs
            .iter()
            .filter(|j| expected.differences(j, now).is_empty())
            .collect();
        if !found.is_empty() {
            let mut message = format!(
                "expected no {}{}, but found {}:",
                expected.described(),
                self.where_(),
                found.len()
            );
            for job in found {
                let _ = write!(message, "\n  {}", describe(job, now));
            }
            panic!("{message}");
        }
    }

    /// The payloads of the jobs of task `T` enqueued in this scope, oldest
    /// first.
    ///
    /// # Panics
    ///
    /// If a payload does not decode as `T`, naming the job.
    pub async fn enqueued<T: Task>(&self) -> Vec<T> {
        self.enqueued_jobs::<T>()
            .await
            .into_iter()
            .map(|job| {
                serde_json::from_value(job.payload.clone()).unwrap_or_else(|e| {
                    panic!(
                        "graphile_worker::testing: job {} of `{}` has a payload that does not decode: {e}; payload {}",
                        job.id,
                        T::IDENTIFIER,
                        job.payload
                    )
                })
            })
            .collect()
    }

    /// The jobs of task `T` enqueued in this scope, oldest first.
    pub async fn enqueued_jobs<T: Task>(&self) -> Vec<Job> {
        self.jobs(Some(T::IDENTIFIER)).await
    }

    async fn jobs(&self, task: Option<&str>) -> Vec<Job> {
        let jobs = self.db.all_jobs(task).await;
        match &self.before {
            None => jobs,
            Some(before) => jobs
                .into_iter()
                .filter(|job| before.get(&job.id) != Some(&job.revision))
                .collect(),
        }
    }

    /// How many jobs like `expected` were there before this scope began.
    async fn matching_before<T: Task>(&self, expected: &Enqueued<T>, now: DateTime<Utc>) -> usize {
        let Some(before) = &self.before else {
            return 0;
        };
        self.db
            .all_jobs(Some(T::IDENTIFIER))
            .await
            .iter()
            .filter(|job| before.get(&job.id) == Some(&job.revision))
            .filter(|job| expected.differences(job, now).is_empty())
            .count()
    }

    fn where_(&self) -> &'static str {
        if self.before.is_some() {
            " in this scope"
        } else {
            ""
        }
    }

    /// "; jobs there: 2 `report`, 1 `cleanup`" or "; there are no jobs".
    async fn others(&self, task: &str) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for job in self.jobs(None).await {
            if job.task_identifier == task {
                continue;
            }
            match counts.iter_mut().find(|(t, _)| *t == job.task_identifier) {
                Some((_, n)) => *n += 1,
                None => counts.push((job.task_identifier.clone(), 1)),
            }
        }
        if counts.is_empty() && self.before.is_some() {
            " (no job was enqueued in this scope)".to_owned()
        } else if counts.is_empty() {
            " (there are no jobs)".to_owned()
        } else {
            let list: Vec<String> = counts.iter().map(|(t, n)| format!("{n} `{t}`")).collect();
            format!(" (jobs there: {})", list.join(", "))
        }
    }
}
