//! Many jobs in one `add_jobs` call: the rules a batch must follow, the
//! `job_spec` rows it is sent as, and the statements that send it.
//!
//! Raw and typed batches both come through here: they differ only in where
//! each row's identifier, payload and options come from.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use sqlx::PgExecutor;

use super::{NewJob, serialize_error};
use crate::error::Error;
use crate::job::Job;
use crate::spec::{JobKeyMode, JobSpec};
use crate::sql::{BulkAdd, SpecsJson, Statements};
use crate::task::Task;

/// A batch that follows the rules, ready to bind to one of
/// [`Statements::bulk`]'s statements: `$1` the specs, `$2` the
/// `job_key_preserve_run_at` flag.
pub(super) struct Batch {
    pub(super) specs: SpecsJson,
    pub(super) preserve_run_at: bool,
}

impl Batch {
    /// The batch of raw jobs, each with its own identifier and options.
    pub(super) fn of_jobs(jobs: &[NewJob]) -> Result<Self, Error> {
        let identifier = jobs.first().map_or("", |job| job.identifier.as_str());
        Self::new(
            jobs.iter()
                .map(|job| SpecRow::new(&job.identifier, &job.payload, &job.spec)),
            identifier,
        )
    }

    /// The batch of `payloads` (`T`s, or their JSON text) for task `T`, every
    /// job with the same `spec`.
    pub(super) fn of_payloads<T: Task, P: Serialize>(
        payloads: &[P],
        spec: &JobSpec,
    ) -> Result<Self, Error> {
        Self::new(
            payloads
                .iter()
                .map(|payload| SpecRow::new(T::IDENTIFIER, payload, spec)),
            T::IDENTIFIER,
        )
    }

    /// Checks `rows` against the rules, then writes them as the JSON array
    /// (NUL-safe, see [`SpecsJson`]); a serialisation error names
    /// `identifier`.
    fn new<'a, P: Serialize + 'a>(
        rows: impl Iterator<Item = SpecRow<'a, P>> + Clone,
        identifier: &str,
    ) -> Result<Self, Error> {
        let preserve_run_at = check_rules(rows.clone())?;
        let specs = serde_json::to_string(&SpecRows(rows))
            .and_then(SpecsJson::new)
            .map_err(serialize_error(identifier))?;
        Ok(Self {
            specs,
            preserve_run_at,
        })
    }

    /// The statements for these specs (the NUL-safe ones when needed).
    pub(super) fn statements<'s>(&self, sql: &'s Statements) -> &'s BulkAdd {
        sql.jobs.bulk(self.specs.text_payloads)
    }

    /// Adds the batch and returns the jobs in input order.
    pub(super) async fn add<'e, E: PgExecutor<'e>>(
        self,
        sql: &Statements,
        executor: E,
    ) -> Result<Vec<Job>, Error> {
        Ok(sqlx::query_as(self.statements(sql).all.clone())
            .bind(self.specs.json)
            .bind(self.preserve_run_at)
            .fetch_all(executor)
            .await?)
    }

    /// Adds the batch and returns how many rows `add_jobs` wrote, reading
    /// no jobs back.
    pub(super) async fn add_counted<'e, E: PgExecutor<'e>>(
        self,
        sql: &Statements,
        executor: E,
    ) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(self.statements(sql).count.clone())
            .bind(self.specs.json)
            .bind(self.preserve_run_at)
            .fetch_one(executor)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// The rules of one `add_jobs` call, which has one key mode for all its
/// jobs and no `unsafe_dedupe`: a job key appears at most once, no keyed job
/// uses [`JobKeyMode::UnsafeDedupe`], and the keyed jobs share one mode,
/// [`JobKeyMode::Replace`] (also when unset) or [`JobKeyMode::PreserveRunAt`].
/// A mode on a job without a key is ignored. Returns the call's
/// `job_key_preserve_run_at` argument.
fn check_rules<'a, P: 'a>(rows: impl Iterator<Item = SpecRow<'a, P>>) -> Result<bool, Error> {
    let mut seen = HashSet::new();
    let mut first: Option<(&str, JobKeyMode)> = None;
    for row in rows {
        let Some(key) = row.job_key else {
            continue;
        };
        if !seen.insert(key) {
            return Err(Error::InvalidBatch(format!(
                "one add_jobs call used job key `{key}` twice; give each job its own key or split the call"
            )));
        }
        let mode = row.job_key_mode.unwrap_or_default();
        if mode == JobKeyMode::UnsafeDedupe {
            return Err(Error::InvalidBatch(format!(
                "job key `{key}` uses unsafe_dedupe, which add_jobs does not support; add that job on its own with add_raw_job or add_job"
            )));
        }
        match first {
            Some((other, first_mode)) if first_mode != mode => {
                return Err(Error::InvalidBatch(format!(
                    "one add_jobs call mixed key modes: job key `{other}` uses {} and `{key}` uses {}; split the call by key mode",
                    first_mode.as_str(),
                    mode.as_str()
                )));
            }
            Some(_) => {}
            None => first = Some((key, mode)),
        }
    }
    Ok(matches!(first, Some((_, JobKeyMode::PreserveRunAt))))
}

/// One element of the `job_spec` JSON array `add_jobs` reads, its payload
/// serialised straight into it: a `serde_json::Value` for a raw job, the
/// task's own type or its JSON text for a typed one. Unset options are left
/// out, which `json_populate_recordset` reads as NULL.
#[derive(Serialize)]
struct SpecRow<'a, P> {
    identifier: &'a str,
    payload: &'a P,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<&'a [String]>,
    /// For the rules only: `add_jobs` takes one mode for the whole call.
    #[serde(skip)]
    job_key_mode: Option<JobKeyMode>,
}

impl<'a, P> SpecRow<'a, P> {
    fn new(identifier: &'a str, payload: &'a P, spec: &'a JobSpec) -> Self {
        Self {
            identifier,
            payload,
            queue_name: spec.queue_name.as_deref(),
            run_at: spec.run_at,
            max_attempts: spec.max_attempts,
            job_key: spec.job_key.as_deref(),
            priority: spec.priority,
            flags: spec.flags.as_deref(),
            job_key_mode: spec.job_key_mode,
        }
    }
}

/// The rows as a JSON array, written as they are made (no intermediate
/// `Vec` or `serde_json::Value`).
struct SpecRows<I>(I);

impl<'a, P: Serialize + 'a, I> Serialize for SpecRows<I>
where
    I: Iterator<Item = SpecRow<'a, P>> + Clone,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keyed(key: &str, mode: Option<JobKeyMode>) -> JobSpec {
        JobSpec {
            job_key: Some(key.into()),
            job_key_mode: mode,
            ..JobSpec::default()
        }
    }

    /// The rules over jobs with these specs.
    fn rules(specs: &[JobSpec]) -> Result<bool, Error> {
        check_rules(specs.iter().map(|spec| SpecRow::new("t", &(), spec)))
    }

    fn refusal(specs: &[JobSpec]) -> String {
        match rules(specs) {
            Err(Error::InvalidBatch(message)) => message,
            other => panic!("expected InvalidBatch, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_follows_the_add_jobs_key_rules() {
        use JobKeyMode::{PreserveRunAt, Replace, UnsafeDedupe};
        let plain = JobSpec::default();
        assert!(!rules(&[plain.clone(), plain.clone()]).unwrap());
        assert!(!rules(&[keyed("a", None), keyed("b", Some(Replace))]).unwrap());
        assert!(rules(&[keyed("a", Some(PreserveRunAt)), plain.clone()]).unwrap());
        // A mode on a job without a key is ignored.
        let moded = JobSpec {
            job_key_mode: Some(UnsafeDedupe),
            ..JobSpec::default()
        };
        assert!(rules(&[keyed("a", Some(PreserveRunAt)), moded]).unwrap());

        assert_eq!(
            refusal(&[keyed("k", None), plain, keyed("k", Some(Replace))]),
            "one add_jobs call used job key `k` twice; give each job its own key or split the call"
        );
        assert!(refusal(&[keyed("k", Some(UnsafeDedupe))]).contains("unsafe_dedupe"));
        // No mode means replace, which does not mix with preserve_run_at.
        assert_eq!(
            refusal(&[keyed("a", Some(PreserveRunAt)), keyed("b", None)]),
            "one add_jobs call mixed key modes: job key `a` uses preserve_run_at and `b` uses replace; split the call by key mode"
        );
    }

    #[test]
    fn the_display_names_the_batch() {
        let err = rules(&[keyed("k", None), keyed("k", None)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid job batch: one add_jobs call used job key `k` twice"),
            "{err}"
        );
    }

    #[test]
    fn rows_leave_unset_options_out_and_keep_the_mode_out_of_the_json() {
        let shared = JobSpec {
            queue_name: Some("mail".into()),
            max_attempts: Some(3),
            job_key_mode: Some(JobKeyMode::Replace),
            ..JobSpec::default()
        };
        let payloads = [json!({"to": "a"}), json!({"to": "b"})];
        let rows = payloads
            .iter()
            .map(|payload| SpecRow::new("mail", payload, &shared));
        assert_eq!(
            serde_json::to_string(&SpecRows(rows)).unwrap(),
            r#"[{"identifier":"mail","payload":{"to":"a"},"queue_name":"mail","max_attempts":3},{"identifier":"mail","payload":{"to":"b"},"queue_name":"mail","max_attempts":3}]"#
        );
    }

    #[test]
    fn a_raw_batch_gives_each_job_its_own_options() {
        let jobs = [
            NewJob {
                spec: JobSpec {
                    priority: Some(-1),
                    flags: Some(vec!["slow".into()]),
                    ..JobSpec::default()
                },
                ..NewJob::new("a", json!(1))
            },
            NewJob::new("b", json!([2])),
        ];
        let batch = Batch::of_jobs(&jobs).unwrap();
        assert!(!batch.preserve_run_at);
        assert!(!batch.specs.text_payloads);
        assert_eq!(
            batch.specs.json,
            r#"[{"identifier":"a","payload":1,"priority":-1,"flags":["slow"]},{"identifier":"b","payload":[2]}]"#
        );
    }

    #[test]
    fn a_payload_holding_nul_travels_as_text() {
        let batch = Batch::of_jobs(&[NewJob::new("a", json!({"s": "x\u{0}y"}))]).unwrap();
        assert!(batch.specs.text_payloads);
    }
}
