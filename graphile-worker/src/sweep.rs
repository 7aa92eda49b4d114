//! The stale-lock sweep (graphile-worker's 4-hour rule): jobs and queues
//! locked more than 4 hours ago are unlocked, every 8 to 10 minutes with
//! jitter, the first time within a minute of start.

use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::random_fraction;
use crate::error::Error;
use crate::sql::Db;
use crate::worker_utils::WorkerUtils;

pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(8 * 60);
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Runs the sweep until `shutdown` turns true.
pub(crate) async fn sweep_stale_locks(db: Db, mut shutdown: watch::Receiver<bool>) {
    let mut delay = Duration::from_secs_f64(60.0 * random_fraction());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match reset_once(&db).await {
            Ok((jobs, queues)) if jobs + queues > 0 => {
                tracing::warn!(
                    jobs,
                    queues,
                    "unlocked jobs and queues locked for over 4 hours"
                );
            }
            Ok(_) => tracing::debug!("stale-lock sweep found nothing"),
            Err(e) => tracing::warn!(error = %e, "stale-lock sweep failed; will try again"),
        }
        let spread = (MAX_INTERVAL - MIN_INTERVAL).as_secs_f64();
        delay = MIN_INTERVAL + Duration::from_secs_f64(spread * random_fraction());
    }
}

/// One pass of the sweep; returns how many jobs and queues it unlocked.
async fn reset_once(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as::<_, (i64, i64)>(db.sql.workers.reset_stale_locks.clone())
        .fetch_one(db.exec())
        .await
}

/// Runs one pass of the 4-hour stale-lock sweep now, on the schema of
/// `utils`, and returns how many jobs and queues it unlocked. Running
/// workers do this every 8 to 10 minutes; this is for tests.
///
/// ```no_run
/// # #[cfg(feature = "testing")]
/// # async fn example(utils: graphile_worker::WorkerUtils) -> Result<(), graphile_worker::Error> {
/// let (jobs, queues) = graphile_worker::testing::reset_stale_locks(&utils).await?;
/// # Ok(()) }
/// ```
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub async fn reset_stale_locks(utils: &WorkerUtils) -> Result<(i64, i64), Error> {
    Ok(reset_once(utils.db()).await?)
}
