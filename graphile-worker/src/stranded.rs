//! Warnings about jobs nobody will run: jobs waiting for a task identifier
//! that no registered worker has (a typo in `add_raw_job("send_emial", ..)`,
//! a crontab line naming a task no worker runs, the worker that runs it
//! being down). Checked when the worker starts and every few minutes after.

use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::random_fraction;
use crate::sql::Db;

/// How long a job must have been due before it counts: a worker that runs
/// its task (a Node worker, which has no registry row, included) would
/// normally have taken it by then.
pub(crate) const DUE_FOR: Duration = Duration::from_secs(60);

/// Time between checks (jittered ±20%).
const EVERY: Duration = Duration::from_secs(5 * 60);

/// Checks now, then every few minutes, until `stop` turns true.
pub(crate) async fn warn_stranded(db: Db, ours: Vec<String>, mut stop: watch::Receiver<bool>) {
    loop {
        match stranded(&db, &ours).await {
            Ok(found) => {
                for (identifier, jobs) in found {
                    tracing::warn!(
                        task = %identifier,
                        jobs,
                        "{jobs} job(s) have waited over {}s for task `{identifier}`, which no registered worker runs; check the identifier for a typo, or start a worker that has this task (Node workers are not in the registry: if one runs it, it is falling behind)",
                        DUE_FOR.as_secs()
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not check for jobs no worker runs"),
        }
        let wait = EVERY.mul_f64(0.8 + 0.4 * random_fraction());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Task identifiers with jobs due for over [`DUE_FOR`] that neither this
/// worker (`ours`) nor any registered worker runs, with their job counts.
pub(crate) async fn stranded(db: &Db, ours: &[String]) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(db.sql.workers.stranded_tasks.clone())
        .bind(ours)
        .bind(DUE_FOR.as_secs_f64())
        .fetch_all(db.exec())
        .await
}
