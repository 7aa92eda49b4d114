//! Cancelling jobs and pausing named queues, with the existing tables and
//! the existing `jobs:insert` channel only.

use sqlx::SqlStr;

use super::stmt;

/// What a paused queue's row holds: `locked_by` says so, and a `locked_at`
/// far in the future keeps the 4-hour stale-lock sweep (ours and Node's,
/// `locked_at < now() - 4 hours`) from ever unlocking it. Node's claim
/// skips any locked queue, so Node workers honour the pause too.
pub(crate) const PAUSED_BY: &str = "paused";
const PAUSED_AT: &str = "'9999-12-31 00:00:00+00'::timestamptz";

#[derive(Debug)]
pub(crate) struct ControlStatements {
    /// `$1` id, `$2` last_error, `$3` schema name, `$4` reason. Fails an
    /// unlocked job permanently; marks a locked one as not to be retried
    /// (`max_attempts = attempts`) and announces the cancellation. Returns
    /// (locked_by, was it locked, was it dead already, whether the holder
    /// is a registered worker); no row for no such job.
    pub(crate) cancel_job: SqlStr,
    /// `$1` queue name: whether it was paused before.
    pub(crate) pause_queue: SqlStr,
    /// `$1` queue name: a row if it was paused. A job of the queue still
    /// running keeps the queue locked for its holder.
    pub(crate) resume_queue: SqlStr,
    /// Tells workers jobs may have become runnable.
    pub(crate) notify_jobs: SqlStr,
}

impl ControlStatements {
    pub(super) fn new(s: &str) -> Self {
        Self {
            cancel_job: stmt(format!(
                "with target as (select j.id, j.locked_at, j.locked_by, \
                     j.attempts >= j.max_attempts as dead \
                   from {s}._private_jobs j where j.id = $1 for update), \
                 changed as (update {s}._private_jobs as jobs set last_error = $2, \
                     attempts = case when t.locked_at is null \
                       then greatest(jobs.attempts, jobs.max_attempts) else jobs.attempts end, \
                     max_attempts = case when t.locked_at is null \
                       then jobs.max_attempts else greatest(jobs.attempts, 1) end, \
                     updated_at = now() \
                   from target t where jobs.id = t.id and (t.locked_at is not null or not t.dead) \
                   returning jobs.id), \
                 told as (select pg_notify('jobs:insert', json_build_object('count', 0, \
                     'cancel', t.id, 'schema', $3::text, 'reason', $4::text)::text) \
                   from target t where t.locked_at is not null \
                     and exists (select 1 from changed)) \
                 select t.locked_by, t.locked_at is not null as locked, t.dead, \
                   exists (select 1 from {s}._private_workers w where w.id = t.locked_by) \
                     as registered, \
                   (select count(*) from told) as told \
                 from target t"
            )),
            pause_queue: stmt(format!(
                "with before as (select locked_by from {s}._private_job_queues where queue_name = $1), \
                 paused as (insert into {s}._private_job_queues (queue_name, locked_by, locked_at) \
                   values ($1, '{PAUSED_BY}', {PAUSED_AT}) \
                   on conflict (queue_name) do update \
                   set locked_by = excluded.locked_by, locked_at = excluded.locked_at \
                   returning 1) \
                 select coalesce((select locked_by = '{PAUSED_BY}' from before), false) \
                   from paused"
            )),
            resume_queue: stmt(format!(
                "update {s}._private_job_queues as q set (locked_by, locked_at) = \
                   (select j.locked_by, j.locked_at from {s}._private_jobs j \
                    where j.job_queue_id = q.id and j.locked_at is not null \
                    order by j.locked_at desc limit 1) \
                 where q.queue_name = $1 and q.locked_by = '{PAUSED_BY}' returning q.id"
            )),
            notify_jobs: stmt(
                "select pg_notify('jobs:insert', \
                   json_build_object('r', random(), 'count', 1)::text)"
                    .into(),
            ),
        }
    }
}
