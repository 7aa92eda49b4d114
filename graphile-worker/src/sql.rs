//! Every SQL statement the library sends, built once per schema.
//!
//! The schema name reaches SQL only here and only in its quoted form
//! ([`Schema::quoted`]); every value is a bind parameter. That is the audit
//! behind the [`AssertSqlSafe`] below.

use sqlx::{AssertSqlSafe, SqlStr};

use crate::job::job_select_list;
use crate::schema::Schema;

/// Statements for one schema. Cloning a statement is cheap (shared string).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) add_job: SqlStr,
    /// Bulk adds, for specs whose payloads are JSON, and for specs whose
    /// payloads are JSON strings holding the payload's text (see
    /// [`nul_safe_specs`]).
    bulk: BulkAdd,
    bulk_text: BulkAdd,
    pub(crate) remove_job: SqlStr,
    pub(crate) complete_jobs: SqlStr,
    pub(crate) permanently_fail_jobs: SqlStr,
    pub(crate) reschedule_jobs: SqlStr,
    pub(crate) force_unlock_workers: SqlStr,
    pub(crate) cleanup_permafailed_jobs: SqlStr,
    pub(crate) cleanup_task_identifiers: SqlStr,
    pub(crate) cleanup_job_queues: SqlStr,
    // The worker engine.
    pub(crate) insert_missing_tasks: SqlStr,
    pub(crate) task_ids: SqlStr,
    pub(crate) queue_names: SqlStr,
    pub(crate) claim_jobs: SqlStr,
    pub(crate) claim_jobs_with_flags: SqlStr,
    pub(crate) complete_own_jobs: SqlStr,
    pub(crate) fail_own_jobs: SqlStr,
    pub(crate) still_held: SqlStr,
    pub(crate) return_strays: SqlStr,
    pub(crate) unlock_own_queues: SqlStr,
    pub(crate) reset_stale_locks: SqlStr,
    // Heartbeats and recovery.
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
}

fn stmt(sql: String) -> SqlStr {
    AssertSqlSafe(std::sync::Arc::<str>::from(sql)).into_sql_str()
}

use sqlx::SqlSafeStr as _;

/// The select list of a [`Job`](crate::Job) over private job row `j`: its
/// columns, then the queue and task names (with fallbacks for names the
/// join cannot see yet).
fn job_columns(identifier_fallback: &str, queue_fallback: &str) -> String {
    format!(
        "{}, case when j.job_queue_id is null then null \
           else coalesce(q.queue_name, {queue_fallback}) end as queue_name, \
         coalesce(t.identifier, {identifier_fallback}) as task_identifier",
        job_select_list("j")
    )
}

/// Wraps a call to a function returning `_private_jobs` rows so the result
/// carries task identifiers and queue names.
fn jobs_from(s: &str, call: &str) -> String {
    format!(
        "with j as (select * from {s}.{call}) select {cols} from j \
         join {s}._private_tasks t on t.id = j.task_id \
         left join {s}._private_job_queues q on q.id = j.job_queue_id",
        cols = job_columns("t.identifier", "q.queue_name"),
    )
}

/// The statements that add jobs from a JSON array of specs (`$1`) with the
/// call's preserve-run_at flag (`$2`).
#[derive(Debug)]
pub(crate) struct BulkAdd {
    /// Every row, in input order, with task and queue names.
    pub(crate) all: SqlStr,
    /// Only how many were written.
    pub(crate) count: SqlStr,
    /// The bare rows, for callers that know every spec's task and queue
    /// name (typed batches share them): no joins, no sort.
    pub(crate) rows: SqlStr,
}

impl BulkAdd {
    fn new(s: &str, text_payloads: bool) -> Self {
        let rows = spec_rows(s, text_payloads);
        let job_cols = job_select_list("");
        let specs = if text_payloads {
            format!(
                "(select array_agg(row(r.identifier, r.payload, r.queue_name, r.run_at, \
                   r.max_attempts, r.job_key, r.priority, r.flags)::{s}.job_spec order by r.n) \
                 from {rows} as r)"
            )
        } else {
            format!(
                "(select array_agg(r) from json_populate_recordset(null::{s}.job_spec, $1::json) r)"
            )
        };
        Self {
            all: stmt(add_jobs_in_input_order(s, &rows, &specs)),
            count: stmt(format!(
                "select count(*) from {s}.add_jobs({specs}, $2::boolean)"
            )),
            rows: stmt(format!(
                "select {job_cols} from {s}.add_jobs({specs}, $2::boolean)"
            )),
        }
    }
}

impl Statements {
    /// The bulk-add statements for specs as [`nul_safe_specs`] left them.
    pub(crate) fn bulk(&self, text_payloads: bool) -> &BulkAdd {
        if text_payloads {
            &self.bulk_text
        } else {
            &self.bulk
        }
    }
}

/// The specs of `$1` as rows of `job_spec`'s columns and their position
/// `n`. PostgreSQL's JSON-to-record functions refuse any JSON holding the
/// escape `\u0000` (it cannot become `text`), even inside a `json` field, so
/// such payloads travel as JSON strings holding their text, cast back to
/// `json` here (which keeps the escape, as `add_job` does).
fn spec_rows(s: &str, text_payloads: bool) -> String {
    if text_payloads {
        "(select sp.identifier, sp.payload::json as payload, sp.queue_name, sp.run_at, \
           sp.max_attempts, sp.job_key, sp.priority, sp.flags, sp.n \
         from rows from (json_to_recordset($1::json) as (identifier text, payload text, \
           queue_name text, run_at timestamptz, max_attempts smallint, job_key text, \
           priority smallint, flags text[])) with ordinality \
           as sp(identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags, n))"
            .to_owned()
    } else {
        format!(
            "(select sp.identifier, sp.payload, sp.queue_name, sp.run_at, sp.max_attempts, \
               sp.job_key, sp.priority, sp.flags, sp.ordinality as n \
             from json_populate_recordset(null::{s}.job_spec, $1::json) with ordinality as sp)"
        )
    }
}

/// A JSON array of job specs, ready to bind as `$1` of [`Statements::bulk`].
#[derive(Debug)]
pub(crate) struct SpecsJson {
    pub(crate) json: String,
    /// Payloads travel as strings (see [`nul_safe_specs`]).
    pub(crate) text_payloads: bool,
}

impl SpecsJson {
    pub(crate) fn new(json: String) -> Result<Self, serde_json::Error> {
        Ok(match nul_safe_specs(&json)? {
            Some(json) => Self {
                json,
                text_payloads: true,
            },
            None => Self {
                json,
                text_payloads: false,
            },
        })
    }
}

/// Specs JSON (an array of objects) with every payload turned into a JSON
/// string holding the payload's text, for the statements of
/// [`Statements::bulk`]`(true)`; `None` when no payload holds `\u0000`
/// (the usual case, which keeps the faster form).
fn nul_safe_specs(specs: &str) -> Result<Option<String>, serde_json::Error> {
    if !specs.contains("\\u0000") {
        return Ok(None);
    }
    let mut rows: Vec<std::collections::HashMap<String, Box<serde_json::value::RawValue>>> =
        serde_json::from_str(specs)?;
    for row in &mut rows {
        if let Some(payload) = row.get_mut("payload") {
            let text = serde_json::to_string(payload.get())?;
            *payload = serde_json::value::RawValue::from_string(text)?;
        }
    }
    serde_json::to_string(&rows).map(Some)
}

impl Statements {
    pub(crate) fn new(schema: &Schema) -> Self {
        let s = schema.quoted();
        Self {
            bulk: BulkAdd::new(s, false),
            bulk_text: BulkAdd::new(s, true),
            // Task and queue rows that add_job creates are not visible to
            // the rest of its own statement, so their names come from the
            // arguments when the join finds nothing.
            add_job: stmt(format!(
                "with j as (select * from {s}.add_job(identifier => $1::text, payload => $2::json, \
                 queue_name => $3::text, run_at => $4::timestamptz, max_attempts => $5::int, \
                 job_key => $6::text, priority => $7::int, flags => $8::text[], \
                 job_key_mode => $9::text)) \
                 select {cols} from j \
                 left join {s}._private_tasks t on t.id = j.task_id \
                 left join {s}._private_job_queues q on q.id = j.job_queue_id",
                cols = job_columns("$1::text", "$3::text"),
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
            claim_jobs: stmt(claim(s, "")),
            claim_jobs_with_flags: stmt(claim(s, "and (jobs.flags ?| $4::text[]) is not true")),
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
            // Failures and hand-backs. $1 ids, $2 messages, $3 pool id, $4
            // per-job "interrupted" flags, $5 claim stamps. An interrupted
            // job gets its attempt back and no backoff; a job handed back
            // before it started (no message) keeps its last_error and run_at
            // too. The attempt is refunded only if nobody else changed the
            // job since the claim (a job disarmed by remove_job must stay
            // dead).
            fail_own_jobs: stmt(format!(
                "with f as (select * from unnest($1::bigint[], $2::text[], $4::boolean[], $5::timestamptz[]) \
                   as f(id, message, interrupted, claimed_at)), \
                 target as (select jobs.id, f.message, f.interrupted, \
                     (f.claimed_at is null or jobs.updated_at = f.claimed_at) as untouched \
                   from {s}._private_jobs as jobs join f on f.id = jobs.id \
                   where jobs.id = any($1::bigint[]) and jobs.locked_by = $3 and {OWN_CLAIM} \
                   for update of jobs skip locked), \
                 j as (update {s}._private_jobs as jobs set \
                     last_error = coalesce(t.message, jobs.last_error), \
                     run_at = case when t.message is null then jobs.run_at \
                       when t.interrupted then greatest(now(), jobs.run_at) \
                       else greatest(now(), jobs.run_at) \
                         + exp(least(jobs.attempts, 10)) * interval '1 second' end, \
                     attempts = case when t.interrupted and t.untouched \
                       then greatest(0, jobs.attempts - 1) else jobs.attempts end, \
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
            notify_jobs: stmt(
                "select pg_notify('jobs:insert', json_build_object('r', random(), 'count', $1::int)::text)"
                    .into(),
            ),
        }
    }
}

/// `add_jobs` over the JSON specs `$1` (preserve flag `$2`), its rows put
/// back in input order with their task and queue names.
///
/// The function returns rows in whatever order its insert produced them (a
/// join inside it may reorder; specs retried after the upstream #580 race
/// come last), so rows are paired with specs by content: a keyed row by its
/// key (unique within a call), any other row by everything it stores,
/// identical specs by position. Task and queue rows the call creates are
/// invisible to this statement's snapshot, so they are created first by
/// the statement itself (`add_jobs` then finds them) and named from the
/// `returning` of those inserts; a name created concurrently by another
/// transaction is taken from the spec it was paired with.
fn add_jobs_in_input_order(s: &str, spec_rows: &str, specs_array: &str) -> String {
    let cols = job_select_list("j");
    format!(
        "with specs as (select * from {spec_rows} as sp), \
         new_tasks as ( \
           insert into {s}._private_tasks (identifier) \
           select distinct sp.identifier from specs sp where not exists \
             (select 1 from {s}._private_tasks t where t.identifier = sp.identifier) \
           on conflict do nothing returning id, identifier), \
         new_queues as ( \
           insert into {s}._private_job_queues (queue_name) \
           select distinct sp.queue_name from specs sp where sp.queue_name is not null \
             and not exists (select 1 from {s}._private_job_queues q \
               where q.queue_name = sp.queue_name) \
           on conflict do nothing returning id, queue_name), \
         created as (select (select count(*) from new_tasks) + (select count(*) from new_queues) as c), \
         j as ( \
           select a.* from created, \
             {s}.add_jobs(case when created.c >= 0 then {specs_array} end, $2::boolean) \
               with ordinality as a), \
         named as ( \
           select j.*, coalesce(t.identifier, nt.identifier) as task_name, \
             coalesce(q.queue_name, nq.queue_name) as queue_label \
           from j \
           left join {s}._private_tasks t on t.id = j.task_id \
           left join new_tasks nt on nt.id = j.task_id \
           left join {s}._private_job_queues q on q.id = j.job_queue_id \
           left join new_queues nq on nq.id = j.job_queue_id), \
         row_sigs as ( \
           select r.*, row_number() over (partition by r.sig order by r.ordinality) as k \
           from (select named.*, case when named.key is not null then jsonb_build_array(named.key) \
             else jsonb_build_array(named.task_name, named.job_queue_id is not null, \
               named.queue_label, named.payload::text, named.run_at, named.priority, \
               named.max_attempts, named.flags) end as sig from named) r), \
         spec_sigs as ( \
           select p.n, p.identifier, p.queue_name, \
             row_number() over (partition by p.sig order by p.n) as k, p.sig \
           from (select sp.n, sp.identifier, sp.queue_name, \
             case when sp.job_key is not null then jsonb_build_array(sp.job_key) \
             else jsonb_build_array(coalesce(t.identifier, nt.identifier), \
               sp.queue_name is not null, coalesce(q.queue_name, nq.queue_name), \
               coalesce(sp.payload, '{{}}'::json)::text, coalesce(sp.run_at, now()), \
               coalesce(sp.priority, 0), coalesce(sp.max_attempts, 25), \
               (select jsonb_object_agg(f.flag, true) from unnest(sp.flags) as f(flag))) \
             end as sig \
             from specs sp \
             left join {s}._private_tasks t on t.identifier = sp.identifier \
             left join new_tasks nt on nt.identifier = sp.identifier \
             left join {s}._private_job_queues q on q.queue_name = sp.queue_name \
             left join new_queues nq on nq.queue_name = sp.queue_name) p) \
         select {cols}, case when j.job_queue_id is null then null \
             else coalesce(j.queue_label, sp.queue_name) end as queue_name, \
           coalesce(j.task_name, sp.identifier, '') as task_identifier \
         from row_sigs j left join spec_sigs sp on sp.sig = j.sig and sp.k = j.k \
         order by sp.n nulls last, j.ordinality"
    )
}

/// The claim: lock up to `$3` runnable jobs of our tasks (`$2`) for pool
/// `$1`, at most one per named queue, and count the attempt.
fn claim(s: &str, flags_filter: &str) -> String {
    // Rows are updated by ctid, found while locking them: no second index
    // lookup. A candidate that another transaction updated after this
    // statement's snapshot was taken is locked at its new version, which
    // the snapshot cannot see, so it is simply not claimed this time; that
    // is why queues are locked from the jobs actually claimed, never from
    // the candidates. Two counts end every row: the candidates scanned
    // (a full scan means more jobs may be waiting, as a backlog in one
    // named queue yields one job however many were scanned) and the jobs
    // meant to be claimed (more than were means some were skipped). With
    // nothing claimed, one row of nulls still carries them.
    let job_cols = job_select_list("");
    format!(
        "with candidates as ( \
           select jobs.ctid as tid, jobs.job_queue_id, jobs.priority, jobs.run_at \
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
           select distinct on (job_queue_id) tid from candidates \
           where job_queue_id is not null \
           order by job_queue_id, priority, run_at), \
         claimed as ( \
           update {s}._private_jobs as jobs \
           set attempts = jobs.attempts + 1, locked_by = $1, locked_at = now(), updated_at = now() \
           where jobs.ctid = any(array( \
             select tid from candidates where job_queue_id is null \
             union all select tid from queue_heads)) \
           returning {job_cols}, task_id), \
         locked_queues as ( \
           update {s}._private_job_queues as queues set locked_by = $1, locked_at = now() \
           where queues.id in (select job_queue_id from claimed where job_queue_id is not null)), \
         counts as ( \
           select count(*) as candidates, \
             count(*) filter (where job_queue_id is null) \
               + (select count(*) from queue_heads) as expected \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_holding_nul_travel_as_their_text() {
        let plain = r#"[{"identifier":"a","payload":{"s":"x"}}]"#;
        assert!(!SpecsJson::new(plain.into()).unwrap().text_payloads);
        let nul = r#"[{"identifier":"a","payload":{"s":"x\u0000y"},"flags":["f"]}]"#;
        let specs = SpecsJson::new(nul.into()).unwrap();
        assert!(specs.text_payloads);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&specs.json).unwrap();
        assert_eq!(rows[0]["payload"], r#"{"s":"x\u0000y"}"#);
        assert_eq!(rows[0]["flags"], serde_json::json!(["f"]));
    }
}
