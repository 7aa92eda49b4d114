//! Claiming jobs: the one statement that locks runnable jobs for this pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{PgPool, Row};

use crate::error::Error;
use crate::job::Job;
use crate::sql::Statements;

/// Claims jobs for one worker pool and turns the private rows into [`Job`]s.
#[derive(Debug)]
pub(crate) struct Claimer {
    pool: PgPool,
    sql: Arc<Statements>,
    pool_id: String,
    task_ids: Vec<i32>,
    task_names: HashMap<i32, String>,
    forbidden_flags: Option<Vec<String>>,
    /// Queue names never change for an id, so they are cached.
    queue_names: Mutex<HashMap<i32, String>>,
}

impl Claimer {
    /// Registers our task identifiers (inserting only the missing ones, so no
    /// identity values are used up) and caches their ids.
    pub(crate) async fn new(
        pool: PgPool,
        sql: Arc<Statements>,
        pool_id: String,
        identifiers: &[String],
        forbidden_flags: Option<Vec<String>>,
    ) -> Result<Self, Error> {
        sqlx::query(sql.insert_missing_tasks.clone())
            .bind(identifiers)
            .execute(&pool)
            .await?;
        let rows = sqlx::query(sql.task_ids.clone())
            .bind(identifiers)
            .fetch_all(&pool)
            .await?;
        let mut task_names = HashMap::new();
        for row in rows {
            let id: i32 = row.try_get("id")?;
            let identifier: String = row.try_get("identifier")?;
            task_names.insert(id, identifier);
        }
        Ok(Self {
            pool,
            sql,
            pool_id,
            task_ids: task_names.keys().copied().collect(),
            task_names,
            forbidden_flags: forbidden_flags.filter(|f| !f.is_empty()),
            queue_names: Mutex::new(HashMap::new()),
        })
    }

    /// Locks up to `limit` runnable jobs, ordered by priority then run_at.
    pub(crate) async fn claim(&self, limit: usize) -> Result<Vec<Job>, Error> {
        if limit == 0 || self.task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match &self.forbidden_flags {
            None => {
                sqlx::query(self.sql.claim_jobs.clone())
                    .bind(&self.pool_id)
                    .bind(&self.task_ids)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(flags) => {
                sqlx::query(self.sql.claim_jobs_with_flags.clone())
                    .bind(&self.pool_id)
                    .bind(&self.task_ids)
                    .bind(limit)
                    .bind(flags)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut jobs = Vec::with_capacity(rows.len());
        let mut missing_queues = Vec::new();
        let mut queue_ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let queue_id: Option<i32> = row.try_get("job_queue_id")?;
            if let Some(id) = queue_id
                && !self.lock_cache().contains_key(&id)
            {
                missing_queues.push(id);
            }
            queue_ids.push(queue_id);
        }
        if !missing_queues.is_empty() {
            self.load_queue_names(&missing_queues).await?;
        }
        let names = self.lock_cache().clone();
        for (row, queue_id) in rows.iter().zip(queue_ids) {
            let task_id: i32 = row.try_get("task_id")?;
            let task_identifier = self.task_names.get(&task_id).cloned().unwrap_or_default();
            jobs.push(Job::from_row_with_names(
                row,
                task_identifier,
                queue_id.and_then(|id| names.get(&id).cloned()),
            )?);
        }
        jobs.sort_by_key(|j| (j.priority, j.run_at));
        Ok(jobs)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<i32, String>> {
        // A poisoned cache is still a valid cache.
        self.queue_names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn load_queue_names(&self, ids: &[i32]) -> Result<(), Error> {
        let rows = sqlx::query(self.sql.queue_names.clone())
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        let mut cache = self.lock_cache();
        for row in rows {
            cache.insert(row.try_get("id")?, row.try_get("queue_name")?);
        }
        Ok(())
    }
}
