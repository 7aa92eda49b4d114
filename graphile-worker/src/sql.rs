//! Every SQL statement the library sends, built once per schema.
//!
//! The schema name reaches SQL only here and only in its quoted form
//! ([`Schema::quoted`]); every value is a bind parameter. That is the audit
//! behind the [`AssertSqlSafe`] below.

use sqlx::{AssertSqlSafe, SqlStr};

use crate::job::JOB_COLUMNS;
use crate::schema::Schema;

/// Statements for one schema. Cloning a statement is cheap (shared string).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) add_job: SqlStr,
    pub(crate) add_jobs: SqlStr,
    pub(crate) add_jobs_count: SqlStr,
    pub(crate) remove_job: SqlStr,
    pub(crate) complete_jobs: SqlStr,
    pub(crate) permanently_fail_jobs: SqlStr,
    pub(crate) reschedule_jobs: SqlStr,
    pub(crate) force_unlock_workers: SqlStr,
    pub(crate) cleanup_permafailed_jobs: SqlStr,
    pub(crate) cleanup_task_identifiers: SqlStr,
    pub(crate) cleanup_job_queues: SqlStr,
}

fn stmt(sql: String) -> SqlStr {
    AssertSqlSafe(std::sync::Arc::<str>::from(sql)).into_sql_str()
}

use sqlx::SqlSafeStr as _;

/// Wraps a call to a function returning `_private_jobs` rows so the result
/// carries task identifiers and queue names.
fn jobs_from(s: &str, call: &str) -> String {
    format!(
        "with j as (select * from {s}.{call}) select {JOB_COLUMNS} from j \
         join {s}._private_tasks t on t.id = j.task_id \
         left join {s}._private_job_queues q on q.id = j.job_queue_id"
    )
}

const SPECS_ARRAY: &str =
    "(select array_agg(r) from json_populate_recordset(null::{s}.job_spec, $1::json) r)";

impl Statements {
    pub(crate) fn new(schema: &Schema) -> Self {
        let s = schema.quoted();
        let specs = SPECS_ARRAY.replace("{s}", s);
        Self {
            add_job: stmt(format!(
                "with j as (select * from {s}.add_job(identifier => $1::text, payload => $2::json, \
                 queue_name => $3::text, run_at => $4::timestamptz, max_attempts => $5::int, \
                 job_key => $6::text, priority => $7::int, flags => $8::text[], \
                 job_key_mode => $9::text)) \
                 select {JOB_COLUMNS} from j \
                 left join {s}._private_tasks t on t.id = j.task_id \
                 left join {s}._private_job_queues q on q.id = j.job_queue_id"
            )),
            add_jobs: stmt(jobs_from(s, &format!("add_jobs({specs}, $2::boolean)"))),
            add_jobs_count: stmt(format!(
                "select count(*) from {s}.add_jobs({specs}, $2::boolean)"
            )),
            remove_job: stmt(jobs_from(s, "remove_job($1::text)")),
            complete_jobs: stmt(jobs_from(s, "complete_jobs($1::bigint[])") + " order by j.id"),
            permanently_fail_jobs: stmt(
                jobs_from(s, "permanently_fail_jobs($1::bigint[], $2::text)") + " order by j.id",
            ),
            reschedule_jobs: stmt(
                jobs_from(
                    s,
                    "reschedule_jobs($1::bigint[], run_at => $2::timestamptz, priority => $3::int, \
                     attempts => $4::int, max_attempts => $5::int)",
                ) + " order by j.id",
            ),
            force_unlock_workers: stmt(format!("select {s}.force_unlock_workers($1::text[])")),
            cleanup_permafailed_jobs: stmt(format!(
                "delete from {s}._private_jobs where attempts = max_attempts and locked_at is null"
            )),
            cleanup_task_identifiers: stmt(format!(
                "delete from {s}._private_tasks t where not exists \
                 (select 1 from {s}._private_jobs j where j.task_id = t.id) \
                 and not (t.identifier = any($1::text[]))"
            )),
            cleanup_job_queues: stmt(format!(
                "delete from {s}._private_job_queues q where q.locked_at is null and not exists \
                 (select 1 from {s}._private_jobs j where j.job_queue_id = q.id)"
            )),
        }
    }
}
