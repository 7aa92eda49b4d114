//! A job row as users see it.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// One job, as stored in the worker schema (the columns of the `jobs` view
/// plus the payload).
///
/// ```
/// fn describe(job: &graphile_worker::Job) -> String {
///     format!("{} #{} attempt {}/{}", job.task_identifier, job.id, job.attempts, job.max_attempts)
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Job id (64-bit; ids pass 2^31 on busy systems).
    pub id: i64,
    /// Named queue, if any.
    pub queue_name: Option<String>,
    /// The task that runs this job.
    pub task_identifier: String,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// Smaller runs first.
    pub priority: i16,
    /// Earliest time the job may run (pushed forward by each failure).
    pub run_at: DateTime<Utc>,
    /// Attempts made so far, counted when a worker claims the job.
    pub attempts: i16,
    /// Attempts allowed before the job is permanently failed.
    pub max_attempts: i16,
    /// Message of the last failure.
    pub last_error: Option<String>,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When the job was last changed: by the SQL functions, or by a Rust
    /// worker claiming it or recording its outcome (the claim's stamp fences
    /// that worker's later writes to the claim it belongs to).
    pub updated_at: DateTime<Utc>,
    /// The job key, if any.
    pub key: Option<String>,
    /// When a worker locked the job, if locked.
    pub locked_at: Option<DateTime<Utc>>,
    /// The pool id of the worker holding the job, if locked.
    pub locked_by: Option<String>,
    /// Bumped each time the job is updated through its key.
    pub revision: i32,
    /// Flags as a JSON object `{"flag": true}`.
    pub flags: Option<serde_json::Value>,
}

impl Job {
    /// A job as a worker hands it to a task on its first attempt, for
    /// calling a task function directly in a test (with
    /// [`JobContext::builder`](crate::JobContext::builder)): id 1, no queue,
    /// priority 0, due now, attempt 1 of 25, no key, no flags.
    ///
    /// ```
    /// let job = graphile_worker::Job::new("resize", serde_json::json!({"image_id": 7}));
    /// assert_eq!((job.attempts, job.max_attempts), (1, 25));
    /// ```
    pub fn new(task_identifier: impl Into<String>, payload: serde_json::Value) -> Self {
        let now = Utc::now();
        Self {
            id: 1,
            queue_name: None,
            task_identifier: task_identifier.into(),
            payload,
            priority: 0,
            run_at: now,
            attempts: 1,
            max_attempts: 25,
            last_error: None,
            created_at: now,
            updated_at: now,
            key: None,
            locked_at: Some(now),
            locked_by: None,
            revision: 0,
            flags: None,
        }
    }

    /// Whether the job has used all of its attempts and will not run again.
    ///
    /// ```
    /// # fn check(job: &graphile_worker::Job) {
    /// if job.is_permanently_failed() { /* alert someone */ }
    /// # }
    /// ```
    pub fn is_permanently_failed(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// The columns of a job row that [`Job::from_positional_row`] reads, in
/// order: every statement that returns jobs selects these first (the task
/// and queue names follow, or are the caller's). The only job column list.
pub(crate) const JOB_COLUMNS: [&str; 15] = [
    "id",
    "job_queue_id",
    "payload",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "last_error",
    "created_at",
    "updated_at",
    "key",
    "locked_at",
    "locked_by",
    "revision",
    "flags",
];

/// Where `updated_at` (which a claim stamps) sits in [`JOB_COLUMNS`].
pub(crate) const UPDATED_AT_COLUMN: usize = 9;

/// [`JOB_COLUMNS`] as a select list, each column qualified by `table`
/// (`""` for none).
pub(crate) fn job_select_list(table: &str) -> String {
    let prefix = if table.is_empty() {
        String::new()
    } else {
        format!("{table}.")
    };
    JOB_COLUMNS
        .iter()
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Job {
    /// Reads a row whose columns start with [`JOB_COLUMNS`]: by position,
    /// and timestamps
    /// converted directly from PostgreSQL's binary form. Such statements
    /// return thousands of rows at a time, and looking columns up by name
    /// and going through chrono's calendar arithmetic was most of the cost.
    pub(crate) fn from_positional_row(
        row: &PgRow,
        task_identifier: String,
        queue_name: Option<String>,
    ) -> Result<Self, sqlx::Error> {
        Ok(Job {
            id: row.try_get(0)?,
            queue_name,
            task_identifier,
            payload: row.try_get(2)?,
            priority: row.try_get(3)?,
            run_at: timestamp(row, 4)?,
            attempts: row.try_get(5)?,
            max_attempts: row.try_get(6)?,
            last_error: row.try_get(7)?,
            created_at: timestamp(row, 8)?,
            updated_at: timestamp(row, 9)?,
            key: row.try_get(10)?,
            locked_at: optional_timestamp(row, 11)?,
            locked_by: row.try_get(12)?,
            revision: row.try_get(13)?,
            flags: row.try_get(14)?,
        })
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn optional_timestamp(row: &PgRow, index: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    use sqlx::{Decode, ValueRef};
    let value = row.try_get_raw(index)?;
    if value.is_null() {
        return Ok(None);
    }
    if value.format() == sqlx::postgres::PgValueFormat::Text {
        return row.try_get(index);
    }
    let decode_error = |source| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source,
    };
    let micros = <i64 as Decode<sqlx::Postgres>>::decode(value).map_err(decode_error)?;
    // ±infinity (i64::MAX/MIN) and anything beyond chrono's range clamp to
    // its ends.
    Ok(Some(
        micros
            .checked_add(POSTGRES_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .unwrap_or(if micros > 0 {
                DateTime::<Utc>::MAX_UTC
            } else {
                DateTime::<Utc>::MIN_UTC
            }),
    ))
}

fn timestamp(row: &PgRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
    optional_timestamp(row, index)?.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: "unexpected null timestamp".into(),
    })
}

impl<'r> sqlx::FromRow<'r, PgRow> for Job {
    /// A row of the private job columns, in the order the library selects
    /// them, followed by `queue_name` and
    /// `task_identifier`.
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Job::from_positional_row(
            row,
            row.try_get("task_identifier")?,
            row.try_get("queue_name")?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_list_and_its_positions_agree() {
        assert_eq!(JOB_COLUMNS[UPDATED_AT_COLUMN], "updated_at");
        assert_eq!(
            job_select_list("j"),
            "j.id, j.job_queue_id, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts, \
             j.last_error, j.created_at, j.updated_at, j.key, j.locked_at, j.locked_by, \
             j.revision, j.flags"
        );
    }
}
