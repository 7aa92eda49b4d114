//! The cron scheduler's statements.

use sqlx::SqlStr;

use super::stmt;

/// The cron statements for one schema.
#[derive(Debug)]
pub(crate) struct CronStatements {
    pub(crate) select_known: SqlStr,
    pub(crate) insert_known: SqlStr,
    pub(crate) schedule: SqlStr,
}

impl CronStatements {
    pub(super) fn new(s: &str) -> Self {
        Self {
            select_known: stmt(format!(
                "select identifier, known_since, last_execution \
                 from {s}._private_known_crontabs where identifier = any($1::text[])"
            )),
            insert_known: stmt(format!(
                "insert into {s}._private_known_crontabs (identifier, known_since) \
                 select id, $2::timestamptz from unnest($1::text[]) as u(id) \
                 on conflict do nothing"
            )),
            // One statement per minute: claim (identifier, minute) pairs by
            // moving last_execution forward, then add a job for each pair
            // claimed, in item order. A concurrent scheduler waits on the row
            // lock and then finds last_execution no longer older.
            schedule: stmt(format!(
                "with due as ( \
                   select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::int[], $6::int[], $7::text[], $8::text[]) with ordinality \
                   as d(identifier, task, payload, queue_name, max_attempts, priority, \
                     job_key, job_key_mode, ord) \
                 ), claimed as ( \
                   insert into {s}._private_known_crontabs as known \
                     (identifier, known_since, last_execution) \
                   select identifier, $9::timestamptz, $9::timestamptz from due \
                   order by identifier \
                   on conflict (identifier) do update \
                   set last_execution = excluded.last_execution \
                   where known.last_execution is null \
                     or known.last_execution < excluded.last_execution \
                   returning known.identifier \
                 ) \
                 select due.identifier, ({s}.add_job( \
                   identifier => due.task, payload => due.payload::json, \
                   queue_name => due.queue_name, run_at => $9::timestamptz, \
                   max_attempts => due.max_attempts, job_key => due.job_key, \
                   priority => due.priority, flags => null::text[], \
                   job_key_mode => due.job_key_mode)).id \
                 from due join claimed on claimed.identifier = due.identifier \
                 order by due.ord"
            )),
        }
    }
}
