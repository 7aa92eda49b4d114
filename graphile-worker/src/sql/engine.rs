//! The engine's claims and the outcomes it writes.

use sqlx::SqlStr;

use super::stmt;
use crate::job::job_select_list;

/// Registering task identifiers, claiming jobs, and handing back jobs
/// whose claim's answer was lost.
#[derive(Debug)]
pub(crate) struct ClaimStatements {
    pub(crate) insert_missing_tasks: SqlStr,
    pub(crate) task_ids: SqlStr,
    pub(crate) queue_names: SqlStr,
    pub(crate) claim_jobs: SqlStr,
    pub(crate) claim_jobs_with_flags: SqlStr,
    /// The claim with per-task limits: `$4` forbidden flags (or null),
    /// `$5` limited task ids, `$6` their free slots.
    pub(crate) claim_jobs_limited: SqlStr,
    /// The limited claim narrowed for the test helpers: `$7` queue names
    /// (or null), `$8` job ids (or null).
    pub(crate) claim_jobs_scoped: SqlStr,
    pub(crate) return_strays: SqlStr,
    pub(crate) unlock_own_queues: SqlStr,
    /// Whether the jobs table's statistics are missing or stale and ours to
    /// refresh (`$1` the schema name); see `statistics.rs`.
    pub(crate) jobs_statistics_stale: SqlStr,
    pub(crate) analyze_jobs: SqlStr,
}

impl ClaimStatements {
    pub(super) fn new(s: &str) -> Self {
        Self {
            jobs_statistics_stale: stmt(
                "select (c.reltuples < 0 \
                   or coalesce(s.n_mod_since_analyze, 0) > greatest(c.reltuples, 1000)) \
                   and pg_has_role(c.relowner, 'USAGE') \
                 from pg_class c left join pg_stat_user_tables s on s.relid = c.oid \
                 where c.relname = '_private_jobs' \
                   and c.relnamespace = (select oid from pg_namespace where nspname = $1)"
                    .into(),
            ),
            analyze_jobs: stmt(format!("analyze {s}._private_jobs")),
            insert_missing_tasks: stmt(format!(
                "with wanted as (select distinct i from unnest($1::text[]) as i), \
                 inserted as ( \
                   insert into {s}._private_tasks (identifier) \
                   select i from wanted \
                   where not exists (select 1 from {s}._private_tasks t where t.identifier = i) \
                   on conflict do nothing \
                   returning id, identifier) \
                 select id, identifier from {s}._private_tasks where identifier = any($1::text[]) \
                 union all select id, identifier from inserted"
            )),
            task_ids: stmt(format!(
                "select id, identifier from {s}._private_tasks where identifier = any($1::text[])"
            )),
            queue_names: stmt(format!(
                "select id, queue_name from {s}._private_job_queues where id = any($1::int[])"
            )),
            claim_jobs: stmt(claim(s, "", false)),
            claim_jobs_with_flags: stmt(claim(
                s,
                "and (jobs.flags ?| $4::text[]) is not true",
                false,
            )),
            claim_jobs_limited: stmt(claim(
                s,
                "and ($4::text[] is null or (jobs.flags ?| $4::text[]) is not true)",
                true,
            )),
            claim_jobs_scoped: stmt(claim(
                s,
                &format!(
                    "and ($4::text[] is null or (jobs.flags ?| $4::text[]) is not true) \
                     and ($7::text[] is null or jobs.job_queue_id in ( \
                       select id from {s}._private_job_queues where queue_name = any($7::text[]))) \
                     and ($8::bigint[] is null or jobs.id = any($8::bigint[]))"
                ),
                true,
            )),
            // Jobs locked by pool $1 that it does not know it holds ($2, the
            // held ids): a claim whose answer was lost after it committed.
            // They go back with their attempt refunded if nobody touched
            // them since the claim (which stamped updated_at = locked_at),
            // and the queues of pool $1 holding no held job are unlocked.
            return_strays: stmt(format!(
                "with strays as (select jobs.id from {s}._private_jobs as jobs \
                   where jobs.locked_by = $1 and not (jobs.id = any($2::bigint[])) \
                   for update skip locked), \
                 j as (update {s}._private_jobs as jobs set \
                     attempts = case when jobs.updated_at = jobs.locked_at \
                       then greatest(0, jobs.attempts - 1) else jobs.attempts end, \
                     updated_at = now(), locked_by = null, locked_at = null \
                   from strays where jobs.id = strays.id returning jobs.id), \
                 q as (update {s}._private_job_queues as queues set locked_by = null, locked_at = null \
                   where queues.locked_by = $1 and not exists (select 1 from {s}._private_jobs as held \
                     where held.job_queue_id = queues.id and held.locked_by = $1 \
                       and held.id = any($2::bigint[])) returning 1) \
                 select (select count(*) from j), (select count(*) from q)"
            )),
            unlock_own_queues: stmt(format!(
                "update {s}._private_job_queues set locked_by = null, locked_at = null \
                 where locked_by = $1 and not exists (select 1 from {s}._private_jobs j \
                   where j.job_queue_id = {s}._private_job_queues.id and j.locked_by = $1)"
            )),
        }
    }
}

/// Writing the outcomes of this pool's claims.
#[derive(Debug)]
pub(crate) struct OutcomeStatements {
    pub(crate) complete_own_jobs: SqlStr,
    pub(crate) fail_own_jobs: SqlStr,
    pub(crate) still_held: SqlStr,
}

impl OutcomeStatements {
    pub(super) fn new(s: &str) -> Self {
        Self {
            // Outcome writes. $1 ids, $2 pool id, and for failures and
            // hand-backs the updated_at each claim stamped: such a write
            // touches a job only while this claim holds it (see
            // `OWN_CLAIM`). Each unlocks the job's named queue and returns
            // how many jobs it wrote.
            //
            // A completion needs no fence: the row is deleted, so a retried
            // write can only find it gone or still held by the same claim
            // (a job re-claimed by this pool after recovery has run already;
            // deleting it ends nothing that has not ended). Unlike failures,
            // it waits for a row another transaction has locked rather than
            // skip it: locking each row first costs about 15% of the drain
            // rate on large backlogs, and the usual holder is a claim in
            // flight that lets go within milliseconds.
            complete_own_jobs: stmt(format!(
                "with j as (delete from {s}._private_jobs as jobs \
                   where jobs.id = any($1::bigint[]) and jobs.locked_by = $2 \
                   returning jobs.job_queue_id), \
                 {UNLOCK_QUEUES} \
                 select count(*) from j",
                UNLOCK_QUEUES = unlock_queues_of_j(s, "$2"),
            )),
            // Failures, hand-backs and snoozes. $1 ids, $2 messages, $3
            // pool id, $4 per-job "interrupted" flags, $5 claim stamps, $6
            // per-job "permanent" flags, $7 per-job delays in seconds, $8
            // per-job replacement payloads (a batch job's failed elements,
            // JSON text, as Node's fail_jobs takes them), applied only to a
            // job nobody changed since the claim (a late retry of this write
            // must not overwrite items appended since). An
            // interrupted job gets its attempt back and no backoff; a job
            // handed back before it started (no message) keeps its
            // last_error and run_at too; a snoozed one (interrupted, no
            // message, a delay) keeps its last_error and runs after the
            // delay. The attempt is refunded only if nobody else changed the
            // job since the claim (a job disarmed by remove_job or
            // cancel_job must stay dead). A permanent failure uses up the
            // attempts left; a job failed for good (permanently, or on its
            // last attempt) keeps its run_at. A retry waits the given delay,
            // or else Node's exp(min(attempts, 10)) seconds.
            fail_own_jobs: stmt(format!(
                "with f as (select * from unnest($1::bigint[], $2::text[], $4::boolean[], \
                   $5::timestamptz[], $6::boolean[], $7::float8[], $8::text[]) \
                   as f(id, message, interrupted, claimed_at, permanent, delay, payload)), \
                 target as (select jobs.id, f.message, f.interrupted, f.permanent, f.delay, \
                     f.payload, \
                     (f.claimed_at is null or jobs.updated_at = f.claimed_at) as untouched \
                   from {s}._private_jobs as jobs join f on f.id = jobs.id \
                   where jobs.id = any($1::bigint[]) and jobs.locked_by = $3 and {OWN_CLAIM} \
                   for update of jobs skip locked), \
                 j as (update {s}._private_jobs as jobs set \
                     last_error = coalesce(t.message, jobs.last_error), \
                     payload = case when t.untouched then coalesce(t.payload::json, jobs.payload) \
                       else jobs.payload end, \
                     run_at = case when t.permanent then jobs.run_at \
                       when t.interrupted and t.delay is not null \
                         then now() + t.delay * interval '1 second' \
                       when t.message is null then jobs.run_at \
                       when t.interrupted then greatest(now(), jobs.run_at) \
                       when jobs.attempts >= jobs.max_attempts then jobs.run_at \
                       when t.delay is not null then now() + t.delay * interval '1 second' \
                       else greatest(now(), jobs.run_at) \
                         + exp(least(jobs.attempts, 10)) * interval '1 second' end, \
                     attempts = case when t.permanent then greatest(jobs.attempts, jobs.max_attempts) \
                       when t.interrupted and t.untouched then greatest(0, jobs.attempts - 1) \
                       else jobs.attempts end, \
                     updated_at = now(), locked_by = null, locked_at = null \
                   from target as t where jobs.id = t.id \
                   returning jobs.job_queue_id), \
                 {UNLOCK_QUEUES} \
                 select count(*) from j",
                UNLOCK_QUEUES = unlock_queues_of_j(s, "$3"),
            )),
            // Of the claims ($1 ids, $3 stamps) an outcome write skipped,
            // those still held by pool $2: their rows were locked by another
            // transaction. The others were taken from us (recovered, swept).
            still_held: stmt(format!(
                "select jobs.id from unnest($1::bigint[], $3::timestamptz[]) as f(id, claimed_at) \
                 join {s}._private_jobs as jobs on jobs.id = f.id \
                 where jobs.id = any($1::bigint[]) and jobs.locked_by = $2 and {OWN_CLAIM}"
            )),
        }
    }
}

/// The claim: lock up to `$3` runnable jobs of our tasks (`$2`) for pool
/// `$1`, at most one per named queue, and count the attempt. With
/// `limited`, also at most `$6[i]` jobs of task `$5[i]`.
fn claim(s: &str, flags_filter: &str, limited: bool) -> String {
    // Rows are updated by ctid, found while locking them: no second index
    // lookup. A candidate that another transaction updated after this
    // statement's snapshot was taken is locked at its new version, which
    // the snapshot cannot see, so it is simply not claimed this time; that
    // is why queues are locked from the jobs actually claimed, never from
    // the candidates. Two counts end every row: the candidates scanned
    // (a full scan means more jobs may be waiting, as a backlog in one
    // named queue yields one job however many were scanned) and the jobs
    // meant to be claimed (more than were means some were skipped). With
    // nothing claimed, one row of nulls still carries them. Candidates
    // left out (a named queue's later jobs, a limited task's jobs beyond
    // its slots) are unlocked when the statement ends.
    let job_cols = job_select_list("");
    let chosen = if limited {
        "chosen as ( \
           select h.tid from (select tid, task_id, \
               row_number() over (partition by task_id order by priority, run_at) as n \
             from (select tid, task_id, priority, run_at from candidates \
                   where job_queue_id is null \
                   union all select tid, task_id, priority, run_at from queue_heads) as heads) as h \
           left join unnest($5::int[], $6::int[]) as cap(task_id, slots) \
             on cap.task_id = h.task_id \
           where cap.slots is null or h.n <= cap.slots)"
    } else {
        "chosen as ( \
           select tid from candidates where job_queue_id is null \
           union all select tid from queue_heads)"
    };
    format!(
        "with candidates as ( \
           select jobs.ctid as tid, jobs.job_queue_id, jobs.priority, jobs.run_at, jobs.task_id \
           from {s}._private_jobs as jobs \
           where jobs.is_available = true \
             and jobs.run_at <= now() \
             and jobs.task_id = any($2::int[]) \
             and (jobs.job_queue_id is null or jobs.job_queue_id in ( \
               select id from {s}._private_job_queues \
               where is_available = true for update skip locked)) \
             {flags_filter} \
           order by jobs.priority asc, jobs.run_at asc \
           limit $3 \
           for update skip locked), \
         queue_heads as ( \
           select distinct on (job_queue_id) tid, task_id, priority, run_at from candidates \
           where job_queue_id is not null \
           order by job_queue_id, priority, run_at), \
         {chosen}, \
         claimed as ( \
           update {s}._private_jobs as jobs \
           set attempts = jobs.attempts + 1, locked_by = $1, locked_at = now(), updated_at = now() \
           where jobs.ctid = any(array(select tid from chosen)) \
           returning {job_cols}, task_id), \
         locked_queues as ( \
           update {s}._private_job_queues as queues set locked_by = $1, locked_at = now() \
           where queues.id in (select job_queue_id from claimed where job_queue_id is not null)), \
         counts as ( \
           select count(*) as candidates, (select count(*) from chosen) as expected \
           from candidates) \
         select claimed.*, counts.candidates, counts.expected \
         from counts left join claimed on true"
    )
}

/// Whether a job row (`jobs`) still belongs to the claim `f` an outcome is
/// for. The claim stamped `updated_at`; nothing of ours changes it while the
/// job is held, so a different value means someone else changed the job
/// since: a later claim after a write whose answer was lost (the write must
/// not touch it), or `remove_job` / key replacement disarming it, which also
/// makes it permanently failed (`attempts = max_attempts`, so it can never
/// be claimed again and is safe to settle).
const OWN_CLAIM: &str = "(f.claimed_at is null or jobs.updated_at = f.claimed_at \
    or jobs.attempts >= jobs.max_attempts)";

/// The CTE that unlocks the named queues of the job rows `j` returned,
/// where pool `owner` holds them.
fn unlock_queues_of_j(s: &str, owner: &str) -> String {
    format!(
        "q as (update {s}._private_job_queues as queues set locked_by = null, locked_at = null \
         where queues.id in (select job_queue_id from j where job_queue_id is not null) \
           and queues.locked_by = {owner} returning 1)"
    )
}
