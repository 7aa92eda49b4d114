//! Claiming jobs: the one statement that locks runnable jobs for this pool.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::Error;
use crate::job::{JOB_COLUMNS, Job, UPDATED_AT_COLUMN};
use crate::outcome::{self, ClaimRef};
use crate::sql::Db;
use crate::statistics::StatisticsCheck;
use crate::worker::Slots;

/// Positions in the claim's result: the task id follows the columns of
/// `Job::from_positional_row`, then the candidate and expected counts.
const TASK_ID_COLUMN: usize = JOB_COLUMNS.len();
const CANDIDATES_COLUMN: usize = JOB_COLUMNS.len() + 1;

/// Queue names cached at most; past this the cache starts over.
const MAX_CACHED_QUEUES: usize = 10_000;

/// What one claim locked.
#[derive(Debug, Default)]
pub(crate) struct ClaimBatch {
    /// Jobs to run, in priority then run_at order.
    pub(crate) jobs: Vec<Job>,
    /// Jobs whose row could not be read, with the reason: they fail (and
    /// use their attempt) rather than stay locked.
    pub(crate) unreadable: Vec<(ClaimRef, String)>,
    /// Jobs to hand back untouched.
    pub(crate) give_back: Vec<ClaimRef>,
    /// How many runnable jobs the claim looked at (at most its limit). Fewer
    /// than the limit means nothing else was runnable; a full count with
    /// few jobs claimed means named queues held the rest back.
    pub(crate) candidates: usize,
    /// How many jobs the claim meant to lock: more than it did means a
    /// runnable job changed under it and was skipped this time.
    pub(crate) expected: usize,
    /// How many jobs it locked (to run, to fail, or to hand back).
    pub(crate) claimed: usize,
}

/// Claims jobs for one worker pool and turns the private rows into [`Job`]s.
#[derive(Debug)]
pub(crate) struct Claimer {
    db: Db,
    pool_id: String,
    task_ids: Vec<i32>,
    task_names: HashMap<i32, String>,
    forbidden_flags: Option<Vec<String>>,
    /// Queue names never change for an id, so they are cached.
    queue_names: Mutex<HashMap<i32, String>>,
    statistics: StatisticsCheck,
    /// Only these jobs (the test helpers' runs).
    scope: Option<ClaimScope>,
    /// More flags to skip, asked for before each claim.
    flags_fn: Option<FlagsFn>,
}

/// How long a forbidden-flags function may take before a claim goes on
/// without its flags.
const FLAGS_FN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The future a forbidden-flags function returns, its error as text.
pub(crate) type FlagsFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send>>;

/// A function giving flags to skip, called before each claim
/// (`WorkerOptions::forbidden_flags_fn`).
#[derive(Clone)]
pub(crate) struct FlagsFn(pub(crate) std::sync::Arc<dyn Fn() -> FlagsFuture + Send + Sync>);

impl std::fmt::Debug for FlagsFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlagsFn")
    }
}

/// Narrows a worker's claims to some jobs, for the test helpers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClaimScope {
    /// Only jobs of these named queues.
    pub(crate) queues: Option<Vec<String>>,
    /// Only these jobs.
    pub(crate) job_ids: Option<Vec<i64>>,
}

impl Claimer {
    /// Registers our task identifiers (inserting only the missing ones, so no
    /// identity values are used up) and caches their ids, in one round trip
    /// unless another process is registering the same ones.
    pub(crate) async fn new(
        db: Db,
        pool_id: String,
        identifiers: &[String],
        forbidden_flags: Option<Vec<String>>,
    ) -> Result<Self, Error> {
        let read = |rows: Vec<sqlx::postgres::PgRow>| -> Result<HashMap<i32, String>, Error> {
            let mut names = HashMap::new();
            for row in rows {
                names.insert(row.try_get("id")?, row.try_get("identifier")?);
            }
            Ok(names)
        };
        let mut task_names = read(
            sqlx::query(db.sql.claims.insert_missing_tasks.clone())
                .bind(identifiers)
                .fetch_all(db.exec())
                .await?,
        )?;
        if task_names.len() < identifiers.len() {
            // Another process inserted some of them after this statement's
            // snapshot was taken: read them now that they are committed.
            task_names = read(
                sqlx::query(db.sql.claims.task_ids.clone())
                    .bind(identifiers)
                    .fetch_all(db.exec())
                    .await?,
            )?;
        }
        Ok(Self {
            db,
            pool_id,
            task_ids: task_names.keys().copied().collect(),
            task_names,
            forbidden_flags: forbidden_flags.filter(|f| !f.is_empty()),
            queue_names: Mutex::new(HashMap::new()),
            statistics: StatisticsCheck::default(),
            scope: None,
            flags_fn: None,
        })
    }

    /// Asks `flags` for more flags to skip before each claim.
    pub(crate) fn with_flags_fn(mut self, flags: Option<FlagsFn>) -> Self {
        self.flags_fn = flags;
        self
    }

    /// The flags this claim skips: the fixed ones, plus what the function
    /// gives (called once; a failure, panic or timeout in it is logged and
    /// adds nothing).
    async fn flags(&self) -> Option<Vec<String>> {
        let Some(FlagsFn(function)) = &self.flags_fn else {
            return self.forbidden_flags.clone();
        };
        // The whole call runs in a task of its own, its synchronous part
        // included, so that a panic anywhere in it stays there; a call
        // that takes too long is abandoned and aborted.
        let function = function.clone();
        let mut call = tokio::spawn(async move { function().await });
        let asked = match tokio::time::timeout(FLAGS_FN_TIMEOUT, &mut call).await {
            Ok(joined) => Ok(joined),
            Err(elapsed) => {
                call.abort();
                Err(elapsed)
            }
        };
        let extra = match asked {
            Ok(Ok(Ok(extra))) => extra,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "the forbidden-flags function failed; claiming without its flags");
                Vec::new()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the forbidden-flags function panicked; claiming without its flags");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(
                    "the forbidden-flags function took over {FLAGS_FN_TIMEOUT:?}; claiming without its flags"
                );
                Vec::new()
            }
        };
        let mut flags = self.forbidden_flags.clone().unwrap_or_default();
        for flag in extra {
            if !flags.contains(&flag) {
                flags.push(flag);
            }
        }
        (!flags.is_empty()).then_some(flags)
    }

    /// Claims only the jobs `scope` allows.
    pub(crate) fn with_scope(mut self, scope: Option<ClaimScope>) -> Self {
        self.scope = scope;
        self
    }

    /// Locks up to `limit` runnable jobs, ordered by priority then run_at.
    ///
    /// Once the statement has run, its jobs are locked by this pool whatever
    /// happens next, so nothing after it fails the whole claim: a row that
    /// cannot be read becomes a failed job with the reason, and if the queue
    /// names cannot be looked up the jobs are handed back.
    /// `slots` gives the free slots of tasks with a concurrency limit: a
    /// task with none is left out, the others get at most their slots.
    pub(crate) async fn claim(&self, limit: usize, slots: &Slots) -> Result<ClaimBatch, Error> {
        let mut batch = ClaimBatch::default();
        if limit == 0 || self.task_ids.is_empty() {
            return Ok(batch);
        }
        let flags = self.flags().await;
        let rows = if slots.is_empty() && self.scope.is_none() {
            self.lock_jobs(limit, flags.as_ref()).await?
        } else {
            let mut task_ids = self.task_ids.clone();
            let mut limited = Vec::new();
            let mut free = Vec::new();
            for (task, n) in slots {
                let Some(id) = self.task_id(task) else {
                    continue;
                };
                if *n == 0 {
                    task_ids.retain(|t| *t != id);
                } else {
                    limited.push(id);
                    free.push(i32::try_from(*n).unwrap_or(i32::MAX));
                }
            }
            if task_ids.is_empty() {
                return Ok(batch);
            }
            self.lock_limited_jobs(limit, flags.as_ref(), &task_ids, &limited, &free)
                .await?
        };
        let counted = |column: usize| {
            rows.first()
                .and_then(|row| row.try_get::<i64, _>(column).ok())
                .and_then(|n| usize::try_from(n).ok())
        };
        batch.candidates = counted(CANDIDATES_COLUMN).unwrap_or(rows.len());
        batch.expected = counted(CANDIDATES_COLUMN + 1).unwrap_or(0);
        if batch.candidates >= limit {
            self.statistics.backlog_seen(&self.db);
        }
        let rows = split_unreadable(rows, &mut batch);
        batch.claimed = rows.len() + batch.unreadable.len();
        let missing_queues = self.missing_queue_names(&rows);
        if !missing_queues.is_empty()
            && let Err(e) = self.load_queue_names(&missing_queues).await
        {
            tracing::warn!(error = %e, "could not read queue names; handing the claimed jobs back");
            batch.give_back = rows
                .iter()
                .map(|(id, _, row)| claim_ref(*id, row))
                .collect();
            return Ok(batch);
        }
        batch.jobs.reserve(rows.len());
        for (id, queue_id, row) in rows {
            let task_identifier = row
                .try_get(TASK_ID_COLUMN)
                .ok()
                .and_then(|task_id: i32| self.task_names.get(&task_id).cloned())
                .unwrap_or_default();
            let queue_name = queue_id.and_then(|q| self.lock_cache().get(&q).cloned());
            match Job::from_positional_row(&row, task_identifier, queue_name) {
                Ok(job) => batch.jobs.push(job),
                Err(e) => batch
                    .unreadable
                    .push((claim_ref(id, &row), outcome::unreadable_row(&e))),
            }
        }
        batch.jobs.sort_by_key(|j| (j.priority, j.run_at));
        Ok(batch)
    }

    /// The claim statement itself: from here on its jobs are locked by
    /// this pool.
    async fn lock_jobs(
        &self,
        limit: usize,
        flags: Option<&Vec<String>>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (statement, flags) = match flags {
            None => (&self.db.sql.claims.claim_jobs, None),
            Some(flags) => (&self.db.sql.claims.claim_jobs_with_flags, Some(flags)),
        };
        let query = sqlx::query(statement.clone())
            .bind(&self.pool_id)
            .bind(&self.task_ids)
            .bind(limit);
        match flags {
            None => query.fetch_all(self.db.exec()).await,
            Some(flags) => query.bind(flags).fetch_all(self.db.exec()).await,
        }
    }

    /// The claim statement with per-task limits.
    async fn lock_limited_jobs(
        &self,
        limit: usize,
        flags: Option<&Vec<String>>,
        task_ids: &[i32],
        limited: &[i32],
        free: &[i32],
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let statement = match &self.scope {
            None => &self.db.sql.claims.claim_jobs_limited,
            Some(_) => &self.db.sql.claims.claim_jobs_scoped,
        };
        let mut query = sqlx::query(statement.clone())
            .bind(&self.pool_id)
            .bind(task_ids)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(flags)
            .bind(limited)
            .bind(free);
        if let Some(scope) = &self.scope {
            query = query.bind(&scope.queues).bind(&scope.job_ids);
        }
        query.fetch_all(self.db.exec()).await
    }

    fn task_id(&self, identifier: &str) -> Option<i32> {
        self.task_names
            .iter()
            .find(|(_, name)| name.as_str() == identifier)
            .map(|(id, _)| *id)
    }

    /// The queue ids among `rows` whose names are not cached yet.
    fn missing_queue_names(&self, rows: &[ClaimedRow]) -> Vec<i32> {
        let mut cache = self.lock_cache();
        // Queues come and go (cleanup deletes unused ones): a cache that grew
        // past its bound starts over rather than grow forever.
        if cache.len() > MAX_CACHED_QUEUES {
            cache.clear();
        }
        rows.iter()
            .filter_map(|(_, queue_id, _)| *queue_id)
            .filter(|id| !cache.contains_key(id))
            .collect()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<i32, String>> {
        // A poisoned cache is still a valid cache.
        self.queue_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn load_queue_names(&self, ids: &[i32]) -> Result<(), Error> {
        let rows = sqlx::query(self.db.sql.claims.queue_names.clone())
            .bind(ids)
            .fetch_all(self.db.exec())
            .await?;
        let mut cache = self.lock_cache();
        for row in rows {
            cache.insert(row.try_get("id")?, row.try_get("queue_name")?);
        }
        Ok(())
    }
}

/// The claim of job `id` in claimed row `row`, fenced on the `updated_at` the
/// claim stamped when it can be read.
fn claim_ref(id: i64, row: &PgRow) -> ClaimRef {
    ClaimRef {
        id,
        claimed_at: row.try_get(UPDATED_AT_COLUMN).ok(),
    }
}

/// A claimed row with its id and queue id read.
type ClaimedRow = (i64, Option<i32>, PgRow);

/// Reads each claimed row's id and queue id; a row whose queue id cannot be
/// read becomes an unreadable job of `batch` (it fails with the reason, not
/// stays locked). The row of nulls that only carries the counts is dropped.
fn split_unreadable(rows: Vec<PgRow>, batch: &mut ClaimBatch) -> Vec<ClaimedRow> {
    let mut readable = Vec::with_capacity(rows.len());
    for row in rows {
        match (
            row.try_get::<Option<i64>, _>(0),
            row.try_get::<Option<i32>, _>(1),
        ) {
            (Ok(None), _) => {}
            (Ok(Some(id)), Ok(queue_id)) => readable.push((id, queue_id, row)),
            (Ok(Some(id)), Err(e)) => batch
                .unreadable
                .push((claim_ref(id, &row), outcome::unreadable_row(&e))),
            // The id is a bigint the claim itself selected; without it the
            // row cannot even be named.
            (Err(e), _) => tracing::error!(error = %e, "claimed a row without a readable id"),
        }
    }
    readable
}
