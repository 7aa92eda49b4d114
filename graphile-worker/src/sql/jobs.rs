//! Adding and administering jobs: `add_job`, the bulk adds and the admin
//! functions, each returning rows as [`Job`](crate::Job)s.

use sqlx::SqlStr;

use super::stmt;
use crate::job::job_select_list;

/// The statements that add and administer jobs.
#[derive(Debug)]
pub(crate) struct JobStatements {
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
}

impl JobStatements {
    pub(super) fn new(s: &str) -> Self {
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
        }
    }

    /// The bulk-add statements for specs as [`nul_safe_specs`] left them.
    pub(crate) fn bulk(&self, text_payloads: bool) -> &BulkAdd {
        if text_payloads {
            &self.bulk_text
        } else {
            &self.bulk
        }
    }
}

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

/// A JSON array of job specs, ready to bind as `$1` of [`JobStatements::bulk`].
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
/// [`JobStatements::bulk`]`(true)`; `None` when no payload holds `\u0000`
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
