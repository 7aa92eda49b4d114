//! The worker registry, heartbeats, dead-worker recovery and the 4-hour
//! stale-lock rule.

use sqlx::SqlStr;

use super::stmt;

/// Liveness and recovery.
#[derive(Debug)]
pub(crate) struct WorkerStatements {
    pub(crate) reset_stale_locks: SqlStr,
    pub(crate) register_worker: SqlStr,
    pub(crate) worker_alive: SqlStr,
    pub(crate) refresh_locks: SqlStr,
    pub(crate) deregister: SqlStr,
    pub(crate) list_workers: SqlStr,
    pub(crate) recovery_lock: SqlStr,
    pub(crate) lock_stale_workers: SqlStr,
    pub(crate) recover_dead_worker_jobs: SqlStr,
    pub(crate) delete_stale_workers: SqlStr,
    pub(crate) notify_jobs: SqlStr,
    pub(crate) stranded_tasks: SqlStr,
}

impl WorkerStatements {
    pub(super) fn new(s: &str) -> Self {
        Self {
        reset_stale_locks: stmt(format!(
            "with j as (update {s}._private_jobs set locked_by = null, locked_at = null, \
                     run_at = greatest(run_at, now()) \
                   where locked_at < now() - interval '4 hours' returning id), \
                 q as (update {s}._private_job_queues set locked_by = null, locked_at = null \
                   where locked_at < now() - interval '4 hours' returning id) \
                 select (select count(*) from j), (select count(*) from q)"
        )),
        // The worker registry, written directly rather than through
        // worker_heartbeat(), which would silently re-create the row of
        // a worker that peers declared dead.
        register_worker: stmt(format!(
            "insert into {s}._private_workers as w (id, last_heartbeat_at, metadata) \
                 values ($1, now(), $2::jsonb) \
                 on conflict (id) do update set last_heartbeat_at = now(), metadata = excluded.metadata"
        )),
        worker_alive: stmt(format!(
            "update {s}._private_workers set last_heartbeat_at = now() where id = $1"
        )),
        // $1 pool id, $2 ids of the jobs we hold: their locks, and their
        // queues', are kept fresh so no 4-hour sweep takes them. Only
        // those: a lock held by mistake must age. Rows locked by other
        // transactions are skipped, not waited for.
        refresh_locks: stmt(format!(
            "with j as (update {s}._private_jobs as jobs set locked_at = now() \
                   where jobs.id in (select id from {s}._private_jobs \
                     where id = any($2::bigint[]) and locked_by = $1 for update skip locked) \
                   returning jobs.job_queue_id) \
                 update {s}._private_job_queues as queues set locked_at = now() \
                 where queues.id in (select id from {s}._private_job_queues \
                   where locked_by = $1 and id in (select job_queue_id from j) \
                   for update skip locked)"
        )),
        deregister: stmt(format!("select {s}.worker_deregister($1::text)::text")),
        list_workers: stmt(format!(
            "select w.id, w.started_at, w.last_heartbeat_at, w.metadata, \
                   (select count(*) from {s}._private_jobs j where j.locked_by = w.id) as jobs_held \
                 from {s}._private_workers w order by w.started_at, w.id"
        )),
        recovery_lock: stmt("select pg_try_advisory_xact_lock(hashtext($1::text))".into()),
        // Stale workers ($1 threshold in seconds), except $2, locked
        // until the recovery commits: a heartbeat committed meanwhile
        // takes its row out of the set (the lock re-checks it), and one
        // arriving later finds the row gone.
        lock_stale_workers: stmt(format!(
            "select id from {s}._private_workers \
                 where last_heartbeat_at < now() - $1::float8 * interval '1 second' \
                   and id is distinct from $2::text \
                 order by id for update skip locked"
        )),
        recover_dead_worker_jobs: stmt(format!(
            "select {s}.recover_dead_worker_jobs($1::text[], $2::float8 * interval '1 second')"
        )),
        delete_stale_workers: stmt(format!(
            "select {s}.delete_stale_workers($1::text[])::text"
        )),
        stranded_tasks: stranded_tasks(s),
        notify_jobs: stmt(
            "select pg_notify('jobs:insert', json_build_object('r', random(), 'count', $1::int)::text)"
                .into(),
        ),
        }
    }
}

/// Jobs due for over `$2` seconds whose task no registered worker runs
/// (`$1`: this worker's identifiers; other workers list theirs in their
/// registry metadata): identifier and count, most first. Only the first
/// 10,000 runnable jobs in claim order are looked at, so the cost is
/// bounded on any table; jobs nobody runs rise to the front as the others
/// drain.
fn stranded_tasks(s: &str) -> SqlStr {
    stmt(format!(
        "with head as (select task_id, run_at from {s}._private_jobs \
           where is_available = true order by priority, run_at limit 10000), \
         known as (select jsonb_array_elements_text(metadata -> 'tasks') as identifier \
           from {s}._private_workers where jsonb_typeof(metadata -> 'tasks') = 'array' \
           union select unnest($1::text[])) \
         select t.identifier, count(*) from head \
         join {s}._private_tasks t on t.id = head.task_id \
         where head.run_at < now() - $2::float8 * interval '1 second' \
           and t.identifier not in (select identifier from known) \
         group by t.identifier order by 2 desc, 1 limit 20"
    ))
}
