//! Reading the queue for operators: jobs with their state, counts, named
//! queues, lock holders and the cron schedules the database knows.

use sqlx::SqlStr;

use super::control::PAUSED_BY;
use super::stmt;
use crate::job::job_select_list;

/// A job's state, computed from its row (see [`crate::JobState`]). The
/// order of the tests matters: a locked job on its last attempt is
/// `locked`, not `failed`.
pub(crate) const STATE: &str = "case when j.locked_at is not null then 'locked' \
     when j.attempts >= j.max_attempts then 'failed' \
     when j.run_at > now() and j.attempts = 0 then 'scheduled' \
     when j.run_at > now() then 'retrying' \
     else 'ready' end";

#[derive(Debug)]
pub(crate) struct InspectStatements {
    /// `$1` states (text[] or null), `$2` task, `$3` queue, `$4` key,
    /// `$5` text in last_error, `$6` limit, `$7` offset; newest first,
    /// oldest first, or by run_at.
    pub(crate) list_newest: SqlStr,
    pub(crate) list_oldest: SqlStr,
    pub(crate) list_run_at: SqlStr,
    /// The same filters (`$1`..`$5`): how many match, and their ids.
    pub(crate) count: SqlStr,
    pub(crate) ids: SqlStr,
    /// `$1` id.
    pub(crate) get: SqlStr,
    /// Counts by state, task and queue (one row per combination).
    pub(crate) counts: SqlStr,
    /// The oldest ready job's run_at, and the database's now.
    pub(crate) oldest_ready: SqlStr,
    pub(crate) queues: SqlStr,
    /// Lock holders seen on jobs that are not in the worker registry.
    pub(crate) unregistered_holders: SqlStr,
    pub(crate) crontabs: SqlStr,
    /// Jobs by state only.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) state_counts: SqlStr,
    /// Whether worker `$1` is the live registered worker with the lowest
    /// id: the one that refreshes schema-wide metrics.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics_elected: SqlStr,
    /// `$1` ids: run now with attempts reset, unless locked.
    pub(crate) retry: SqlStr,
    /// Tells workers `$1` jobs became runnable, as `add_jobs` does.
    pub(crate) notify_jobs: SqlStr,
}

impl InspectStatements {
    pub(super) fn new(s: &str) -> Self {
        let list = |order: &str| {
            stmt(format!(
                "select * from ({rows}) j {filter} order by {order} limit $6 offset $7",
                rows = rows(s),
                filter = FILTER
            ))
        };
        Self {
            notify_jobs: stmt(
                "select pg_notify('jobs:insert', \
                   json_build_object('r', random(), 'count', $1::int)::text)"
                    .into(),
            ),
            list_newest: list("j.id desc"),
            list_oldest: list("j.id asc"),
            list_run_at: list("j.run_at asc, j.id asc"),
            count: stmt(format!(
                "select count(*) from ({rows}) j {FILTER}",
                rows = rows(s)
            )),
            ids: stmt(format!(
                "select j.id from ({rows}) j {FILTER} order by j.id",
                rows = rows(s)
            )),
            get: stmt(format!(
                "select * from ({rows}) j where j.id = $1",
                rows = rows(s)
            )),
            // One pass over the jobs, grouped by plain columns (which the
            // planner hashes; grouping by the state expression made it sort
            // a million rows on disk), each state counted by a filter that
            // is STATE's rule; then named, and one row per non-zero state.
            // Rows are summed again after naming, so that jobs whose queue
            // row is gone (no foreign key holds it) join the no-queue row
            // as they did when named first.
            counts: stmt(format!(
                "select v.state, t.identifier as task_identifier, q.queue_name, \
                   sum(v.jobs)::bigint as jobs \
                 from (select j.task_id, j.job_queue_id, \
                     count(*) filter (where j.locked_at is null and j.attempts < j.max_attempts \
                       and j.run_at <= now()) as ready, \
                     count(*) filter (where j.locked_at is null and j.attempts = 0 \
                       and j.attempts < j.max_attempts and j.run_at > now()) as scheduled, \
                     count(*) filter (where j.locked_at is null and j.attempts <> 0 \
                       and j.attempts < j.max_attempts and j.run_at > now()) as retrying, \
                     count(*) filter (where j.locked_at is not null) as locked, \
                     count(*) filter (where j.locked_at is null \
                       and j.attempts >= j.max_attempts) as failed \
                   from {s}._private_jobs j group by j.task_id, j.job_queue_id) c \
                 cross join lateral (values ('ready', c.ready), ('scheduled', c.scheduled), \
                   ('retrying', c.retrying), ('locked', c.locked), ('failed', c.failed)) \
                   as v(state, jobs) \
                 join {s}._private_tasks t on t.id = c.task_id \
                 left join {s}._private_job_queues q on q.id = c.job_queue_id \
                 where v.jobs > 0 \
                 group by 1, 2, 3 \
                 order by 2, 3 nulls first, 1"
            )),
            // The claim's own index: due, available jobs in run_at order.
            oldest_ready: stmt(format!(
                "select (select min(j.run_at) from {s}._private_jobs j \
                   where j.is_available = true and j.run_at <= now()), now()"
            )),
            queues: stmt(format!(
                "select q.queue_name, \
                   case when q.locked_by = '{PAUSED_BY}' then null else q.locked_by end, \
                   case when q.locked_by = '{PAUSED_BY}' then null else q.locked_at end, \
                   coalesce(c.waiting, 0), coalesce(c.jobs, 0), \
                   q.locked_by is not distinct from '{PAUSED_BY}' as paused \
                 from {s}._private_job_queues q \
                 left join (select j.job_queue_id, \
                     count(*) filter (where j.locked_at is null and j.attempts < j.max_attempts) \
                       as waiting, \
                     count(*) as jobs \
                   from {s}._private_jobs j where j.job_queue_id is not null group by 1) c \
                   on c.job_queue_id = q.id \
                 order by q.queue_name"
            )),
            unregistered_holders: stmt(format!(
                "select j.locked_by, count(*) as jobs, min(j.locked_at) as since \
                 from {s}._private_jobs j \
                 where j.locked_by is not null \
                   and not exists (select 1 from {s}._private_workers w where w.id = j.locked_by) \
                 group by j.locked_by order by min(j.locked_at)"
            )),
            state_counts: stmt(format!(
                "select {STATE} as state, count(*) from {s}._private_jobs j group by 1"
            )),
            metrics_elected: stmt(format!(
                "select coalesce((select min(id) from {s}._private_workers \
                   where last_heartbeat_at > now() - $2::float8 * interval '1 second') = $1, false)"
            )),
            crontabs: stmt(format!(
                "select identifier, known_since, last_execution \
                 from {s}._private_known_crontabs order by identifier"
            )),
            retry: stmt(format!(
                "with j as (update {s}._private_jobs as j \
                   set run_at = now(), attempts = 0, updated_at = now() \
                   where j.id = any($1::bigint[]) and j.locked_at is null \
                   returning j.*) \
                 select {cols}, q.queue_name, t.identifier as task_identifier, {STATE} as state \
                 from j join {s}._private_tasks t on t.id = j.task_id \
                 left join {s}._private_job_queues q on q.id = j.job_queue_id order by j.id",
                cols = job_select_list("j"),
            )),
        }
    }
}

/// Every job with its task, queue and state, as a subquery aliased `j`.
fn rows(s: &str) -> String {
    format!(
        "select {cols}, q.queue_name, t.identifier as task_identifier, {STATE} as state \
         from {s}._private_jobs j \
         join {s}._private_tasks t on t.id = j.task_id \
         left join {s}._private_job_queues q on q.id = j.job_queue_id",
        cols = job_select_list("j"),
    )
}

/// The listing filters: `$1` states, `$2` task, `$3` queue, `$4` key, `$5`
/// text in last_error; a null parameter does not filter.
const FILTER: &str = "where ($1::text[] is null or j.state = any($1::text[])) \
     and ($2::text is null or j.task_identifier = $2::text) \
     and ($3::text is null or j.queue_name = $3::text) \
     and ($4::text is null or j.key = $4::text) \
     and ($5::text is null or strpos(j.last_error, $5::text) > 0)";
