//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): the application installs the exporter (Prometheus, StatsD,
//! …); the worker records into it. Enable with
//! [`WorkerOptions::metrics`](crate::WorkerOptions::metrics).
//!
//! | name (Prometheus spelling) | kind | labels |
//! |---|---|---|
//! | `graphile_worker_jobs_started_total` | counter | task, queue |
//! | `graphile_worker_jobs_completed_total` | counter | task, queue |
//! | `graphile_worker_jobs_failed_total` | counter | task, queue, permanent (`true`: it will not run again) |
//! | `graphile_worker_job_duration_seconds` | histogram | task, queue, outcome (`completed`, `failed`, `interrupted`) |
//! | `graphile_worker_job_wait_seconds` | histogram | task, queue: start minus `run_at` |
//! | `graphile_worker_jobs_running` | gauge | |
//! | `graphile_worker_claim_batch_size` | histogram | |
//! | `graphile_worker_claim_duration_seconds` | histogram | |
//! | `graphile_worker_workers_recovered_total` | counter | |
//! | `graphile_worker_jobs_recovered_total` | counter | |
//! | `graphile_worker_jobs` | gauge | state (`ready`, `scheduled`, `retrying`, `locked`, `failed`) |
//! | `graphile_worker_oldest_ready_job_age_seconds` | gauge | |
//!
//! The last two come from a periodic query of the whole schema that one
//! worker per schema runs: the registered worker with the lowest id among
//! those alive (every [`MetricsOptions::queue_gauges_every`], with a
//! statement timeout of 5 s). A worker with recovery off does not register
//! and never runs it; a worker that stops being the elected one keeps
//! exporting its last values, so aggregate these gauges with `max`, not
//! `sum`. Calling `metrics` twice records everything twice.

use std::time::Duration;

use ::metrics::{counter, gauge, histogram};
use tokio::sync::watch;

use crate::events::{JobEvent, WorkerEvent};
use crate::inspect::JobState;
use crate::sql::Db;

/// What the worker records.
///
/// ```
/// let options = graphile_worker::MetricsOptions::default().queue_label(false);
/// assert!(!options.has_queue_label());
/// ```
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    queue_label: bool,
    queue_gauges_every: Option<Duration>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            queue_label: true,
            queue_gauges_every: Some(Duration::from_secs(15)),
        }
    }
}

impl MetricsOptions {
    /// Whether job metrics carry a `queue` label (on by default). Named
    /// queues can be many (one per customer, say): turn it off then.
    pub fn queue_label(mut self, on: bool) -> Self {
        self.queue_label = on;
        self
    }

    /// Whether job metrics carry a `queue` label.
    pub fn has_queue_label(&self) -> bool {
        self.queue_label
    }

    /// How often the elected worker refreshes `graphile_worker_jobs` and
    /// `graphile_worker_oldest_ready_job_age_seconds` (15 s by default);
    /// `None` never.
    pub fn queue_gauges_every(mut self, every: Option<Duration>) -> Self {
        self.queue_gauges_every = every;
        self
    }

    pub(crate) fn gauges_every(&self) -> Option<Duration> {
        self.queue_gauges_every
    }
}

/// An observer that records the job, claim and recovery metrics.
pub(crate) fn observer(options: &MetricsOptions) -> impl Fn(&WorkerEvent) + Send + Sync + 'static {
    let queue_label = options.queue_label;
    move |event| record(event, queue_label)
}

fn labels(job: &JobEvent, queue_label: bool) -> Vec<(&'static str, String)> {
    let mut labels = vec![("task", job.task.clone())];
    if queue_label {
        labels.push(("queue", job.queue.clone().unwrap_or_default()));
    }
    labels
}

fn record(event: &WorkerEvent, queue_label: bool) {
    match event {
        WorkerEvent::JobStarted { job } => {
            let labels = labels(job, queue_label);
            counter!("graphile_worker_jobs_started_total", &labels).increment(1);
            histogram!("graphile_worker_job_wait_seconds", &labels)
                .record(job.waited.as_secs_f64());
            gauge!("graphile_worker_jobs_running").increment(1.0);
        }
        WorkerEvent::JobCompleted { job, duration } => {
            let labels = labels(job, queue_label);
            counter!("graphile_worker_jobs_completed_total", &labels).increment(1);
            finished(labels, "completed", *duration);
        }
        WorkerEvent::JobFailed {
            job,
            duration,
            will_retry,
            ..
        } => {
            let mut labels = labels(job, queue_label);
            let with_outcome = labels.clone();
            labels.push(("permanent", (!will_retry).to_string()));
            counter!("graphile_worker_jobs_failed_total", &labels).increment(1);
            finished(with_outcome, "failed", *duration);
        }
        WorkerEvent::JobInterrupted { job, duration } => {
            finished(labels(job, queue_label), "interrupted", *duration);
        }
        WorkerEvent::JobSnoozed { job, duration, .. } => {
            finished(labels(job, queue_label), "snoozed", *duration);
        }
        WorkerEvent::JobsClaimed { count, duration } => {
            histogram!("graphile_worker_claim_batch_size").record(*count as f64);
            histogram!("graphile_worker_claim_duration_seconds").record(duration.as_secs_f64());
        }
        WorkerEvent::WorkersRecovered { workers, jobs } => {
            counter!("graphile_worker_workers_recovered_total").increment(workers.len() as u64);
            counter!("graphile_worker_jobs_recovered_total")
                .increment(u64::try_from(*jobs).unwrap_or(0));
        }
        _ => {}
    }
}

fn finished(mut labels: Vec<(&'static str, String)>, outcome: &'static str, took: Duration) {
    labels.push(("outcome", outcome.to_owned()));
    histogram!("graphile_worker_job_duration_seconds", &labels).record(took.as_secs_f64());
    gauge!("graphile_worker_jobs_running").decrement(1.0);
}

/// Refreshes the schema-wide gauges every `every` while this worker is the
/// elected one, until `stop` turns true.
pub(crate) async fn queue_gauges(
    db: Db,
    own_id: String,
    every: Duration,
    alive_within: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match refresh(&db, &own_id, alive_within).await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "could not refresh the queue gauges"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn refresh(db: &Db, own_id: &str, alive_within: Duration) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let elected: bool = sqlx::query_scalar(db.sql.inspect.metrics_elected.clone())
        .bind(own_id)
        .bind(alive_within.as_secs_f64())
        .fetch_one(db.within(&mut *tx))
        .await?;
    if !elected {
        return tx.rollback().await;
    }
    sqlx::query("set local statement_timeout = '5s'")
        .execute(db.within(&mut *tx))
        .await?;
    let counts: Vec<(String, i64)> = sqlx::query_as(db.sql.inspect.state_counts.clone())
        .fetch_all(db.within(&mut *tx))
        .await?;
    let (oldest, now): (
        Option<chrono::DateTime<chrono::Utc>>,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as(db.sql.inspect.oldest_ready.clone())
        .fetch_one(db.within(&mut *tx))
        .await?;
    tx.commit().await?;
    for state in JobState::ALL {
        let n = counts
            .iter()
            .find(|(name, _)| name == state.as_str())
            .map_or(0, |(_, n)| *n);
        gauge!("graphile_worker_jobs", "state" => state.as_str()).set(n as f64);
    }
    let age = oldest.map_or(0.0, |at| (now - at).num_milliseconds().max(0) as f64 / 1e3);
    gauge!("graphile_worker_oldest_ready_job_age_seconds").set(age);
    Ok(())
}
