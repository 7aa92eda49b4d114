//! Liveness: the worker registers in `_private_workers` and proves it is
//! alive every `heartbeat_interval`, on a connection and a thread of its own,
//! so that neither tasks holding the pool nor tasks hogging the runtime can
//! make a live worker look dead. The locks of the jobs it holds are kept
//! fresh separately ([`refresh_locks`]), never in the liveness statement, so
//! an application transaction holding a job's row lock cannot block it.
//!
//! [`Health`] turns the time of the last beat that reached the database into
//! what the dispatcher may do. Peers declare a worker dead once its last
//! heartbeat is older than the stale threshold `T`, so measured from the
//! moment the last successful beat was *sent* (the database stamped it no
//! earlier):
//!
//! | since the last beat | the worker |
//! |---|---|
//! | < T/2 | claims and starts jobs |
//! | T/2 .. 3T/4 | claims and starts nothing |
//! | > 3T/4 | also stops its running jobs: peers may soon run them again |
//!
//! A beat that finds the worker's row gone learns that a peer declared it
//! dead and recovered its jobs: the running ones are stopped the same way,
//! and the worker registers again. Either event starts a new *generation*;
//! jobs claimed in an older one are never started.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{oneshot, watch};

use crate::events::{Events, WorkerEvent};
use crate::listen::Wakeups;
use crate::outcome::{HeldJobs, lock_held};
use crate::sql::Db;

/// What the dispatcher may do, derived from the last beat that landed.
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<HealthState>,
    /// The stale threshold; `None` when recovery is off (always healthy).
    threshold: Option<Duration>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// When the last beat that reached the database was sent.
    last_ok: Option<Instant>,
    generation: u64,
    /// The `last_ok` whose loss already started a new generation.
    lost: Option<Instant>,
}

/// The dispatcher's view of [`Health`] at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Jobs may be claimed and started.
    pub(crate) fresh: bool,
    /// Changes whenever jobs held so far may have been taken over.
    pub(crate) generation: u64,
    /// When the standing changes next unless a beat lands first.
    pub(crate) next_change: Option<Instant>,
}

impl Health {
    pub(crate) fn new(threshold: Option<Duration>) -> Self {
        Self {
            state: Mutex::new(HealthState::default()),
            threshold,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the last beat (a new run registers again).
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        state.last_ok = None;
        state.lost = None;
    }

    /// A beat sent at `sent` reached the database. True if the worker was
    /// not fresh until now (claiming may resume).
    pub(crate) fn beat_landed(&self, sent: Instant) -> bool {
        let mut state = self.lock();
        let was_fresh = match (state.last_ok, self.threshold) {
            (Some(last), Some(threshold)) => Instant::now() < last + threshold / 2,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        if state.last_ok.is_none_or(|last| last < sent) {
            state.last_ok = Some(sent);
        }
        !was_fresh
    }

    /// How long ago the last beat that reached the database was sent, or
    /// `None` if none has since the run began (or heartbeats are off:
    /// `Some(ZERO)`).
    pub(crate) fn last_beat_age(&self) -> Option<Duration> {
        if self.threshold.is_none() {
            return Some(Duration::ZERO);
        }
        self.lock().last_ok.map(|at| at.elapsed())
    }

    /// Half the stale threshold: a worker whose last beat is older stops
    /// claiming. `None` when heartbeats are off.
    pub(crate) fn late_after(&self) -> Option<Duration> {
        self.threshold.map(|t| t / 2)
    }

    /// The worker's row was gone: its jobs were recovered by a peer.
    pub(crate) fn declared_dead(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.lost = state.last_ok;
        state.last_ok = None;
    }

    /// Whether the recovery sweep may run (a worker cut off from the
    /// database cannot tell who else is).
    pub(crate) fn may_sweep(&self) -> bool {
        self.standing(Instant::now()).fresh
    }

    /// Where the worker stands at `now`; starts a new generation the first
    /// time the last beat is found older than 3/4 of the threshold.
    pub(crate) fn standing(&self, now: Instant) -> Standing {
        let Some(threshold) = self.threshold else {
            return Standing {
                fresh: true,
                generation: 0,
                next_change: None,
            };
        };
        let mut state = self.lock();
        let Some(last_ok) = state.last_ok else {
            return Standing {
                fresh: false,
                generation: state.generation,
                next_change: None,
            };
        };
        let late_at = last_ok + threshold / 2;
        let lost_at = last_ok + threshold.mul_f64(0.75);
        if now < late_at {
            return Standing {
                fresh: true,
                generation: state.generation,
                next_change: Some(late_at),
            };
        }
        if now >= lost_at && state.lost != Some(last_ok) {
            state.lost = Some(last_ok);
            state.generation += 1;
            tracing::error!(
                "no heartbeat has reached the database for {:?}; stopping running jobs, which peers may soon recover (stale_worker_threshold is {threshold:?})",
                now - last_ok
            );
        }
        Standing {
            fresh: false,
            generation: state.generation,
            next_change: (now < lost_at).then_some(lost_at),
        }
    }
}

/// Starts the heartbeat thread for `pool_id`. It registers the worker,
/// beats until `stop` turns true (or its sender is dropped), then
/// deregisters and reports on the returned receiver.
pub(crate) fn spawn(
    beat: Heartbeat,
    stop: watch::Receiver<bool>,
) -> Result<oneshot::Receiver<()>, std::io::Error> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("graphile-worker-heartbeat".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the heartbeat thread's runtime");
                    return;
                }
            };
            runtime.block_on(beat.run(stop));
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// The liveness loop of one worker.
pub(crate) struct Heartbeat {
    /// For its statements and the pool's connect options: beats never use
    /// the pool itself, which tasks may hold.
    pub(crate) db: Db,
    /// A direct connection to PostgreSQL beside PgBouncer (`listen_url`),
    /// tried first so that a saturated PgBouncer cannot delay beats; when it
    /// cannot be reached, beats connect the pool's way, as without it.
    pub(crate) direct: Option<Arc<PgConnectOptions>>,
    pub(crate) pool_id: String,
    pub(crate) metadata: serde_json::Value,
    pub(crate) interval: Duration,
    pub(crate) stale_threshold: Duration,
    pub(crate) health: Arc<Health>,
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) events: Events,
}

/// What one beat found.
enum Beat {
    Alive,
    /// The row was gone (a peer recovered the worker's jobs).
    Gone,
}

impl Heartbeat {
    /// Connects directly if it can (within `direct_limit`), else the pool's
    /// way.
    async fn connect(&self, direct_limit: Duration) -> Result<PgConnection, sqlx::Error> {
        if let Some(direct) = &self.direct {
            match tokio::time::timeout(direct_limit, PgConnection::connect_with(direct)).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "heartbeat: the listen_url cannot be reached; beating through the pool's URL"
                ),
                Err(_) => tracing::warn!(
                    "heartbeat: the listen_url did not answer within {direct_limit:?}; beating through the pool's URL"
                ),
            }
        }
        PgConnection::connect_with(&self.db.pool.connect_options()).await
    }

    async fn register(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(self.db.sql.workers.register_worker.clone())
            .bind(&self.pool_id)
            .bind(self.metadata.to_string())
            .execute(self.db.on(conn))
            .await?;
        Ok(())
    }

    async fn beat(&self, conn: &mut PgConnection) -> Result<Beat, sqlx::Error> {
        let updated = sqlx::query(self.db.sql.workers.worker_alive.clone())
            .bind(&self.pool_id)
            .execute(self.db.on(conn))
            .await?
            .rows_affected();
        Ok(if updated == 0 {
            Beat::Gone
        } else {
            Beat::Alive
        })
    }

    /// One round: connect if needed, then register or beat. A beat that
    /// finds the row gone registers again.
    async fn round(
        &self,
        conn: &mut Option<PgConnection>,
        registered: &mut bool,
        direct_limit: Duration,
    ) -> Result<(), sqlx::Error> {
        if conn.is_none() {
            *conn = Some(self.connect(direct_limit).await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        if *registered {
            if let Beat::Alive = self.beat(c).await? {
                return Ok(());
            }
            self.health.declared_dead();
            self.wakeups.notify.notify_one();
            tracing::error!(
                pool_id = %self.pool_id,
                "this worker was declared dead by a peer (its heartbeat was older than stale_worker_threshold, {:?}) and its jobs were recovered; stopping the jobs it was running, which may run again elsewhere, and registering again",
                self.stale_threshold
            );
        }
        self.register(c).await?;
        *registered = true;
        Ok(())
    }

    /// Beats until `stop` turns true, then deregisters.
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut conn: Option<PgConnection> = None;
        let mut registered = false;
        // A beat that hangs (a half-open connection, a stalled server) is
        // given up on well before it could matter; the connection is
        // replaced.
        let limit = (self.stale_threshold / 4).max(Duration::from_millis(50));
        let mut failing_since: Option<Instant> = None;
        while !*stop.borrow() {
            let sent = Instant::now();
            // A stop is not kept waiting by a beat that hangs.
            let round =
                tokio::time::timeout(limit, self.round(&mut conn, &mut registered, limit / 2));
            let outcome = tokio::select! {
                result = round => Some(match result {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {limit:?}")),
                }),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(outcome) = outcome else {
                // Cut off mid-statement: its connection cannot be trusted.
                conn = None;
                break;
            };
            match outcome {
                Ok(()) => {
                    if self.health.beat_landed(sent) {
                        // Claiming may resume (only then: a wake-up makes
                        // the dispatcher look for jobs, and beats must not
                        // act as a hidden poll).
                        self.wakeups.notify.notify_one();
                    }
                    if failing_since.take().is_some() {
                        tracing::info!("heartbeats resumed");
                    }
                }
                Err(e) => {
                    conn = None;
                    let since = *failing_since.get_or_insert(sent);
                    // The dispatcher's timer follows the standing.
                    tracing::warn!(error = %e, failing_for = ?since.elapsed(), "heartbeat failed; will retry");
                    self.events
                        .emit(|| WorkerEvent::HeartbeatFailed { error: e.clone() });
                }
            }
            // Retry sooner after a failure.
            let wait = if failing_since.is_none() {
                self.interval
            } else {
                self.interval.min(Duration::from_millis(500))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        // Deregister even if this thread never got through: the worker may
        // have registered on the pool before it started.
        self.deregister(conn, limit.max(Duration::from_secs(1)))
            .await;
    }

    /// Removes this worker's registry row, three tries at most, reusing the
    /// beats' connection when it is sound.
    async fn deregister(&self, mut conn: Option<PgConnection>, limit: Duration) {
        for attempt in 1..=3 {
            let result = async {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => self.connect(limit / 2).await?,
                };
                sqlx::query(self.db.sql.workers.deregister.clone())
                    .bind(&self.pool_id)
                    .execute(self.db.on(&mut c))
                    .await?;
                let _ = c.close().await;
                Ok::<(), sqlx::Error>(())
            };
            match tokio::time::timeout(limit, result).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) if attempt == 3 => {
                    tracing::warn!(error = %e, "could not deregister the worker; it will be swept as stale");
                }
                Err(_) if attempt == 3 => {
                    tracing::warn!(
                        "could not deregister the worker in time; it will be swept as stale"
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Keeps the locks of the jobs this worker holds (and their queues) fresh,
/// every `interval`, until `stop` turns true, so that no 4-hour sweep (ours
/// or Node's) takes a long-running job. Rows another transaction has locked
/// are skipped this time rather than waited for.
pub(crate) async fn refresh_locks(
    db: Db,
    pool_id: String,
    held: HeldJobs,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ids = lock_held(&held).ids();
        if ids.is_empty() {
            continue;
        }
        let refresh = sqlx::query(db.sql.workers.refresh_locks.clone())
            .bind(&pool_id)
            .bind(&ids)
            .execute(db.exec());
        match tokio::time::timeout(interval.max(Duration::from_secs(1)), refresh).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not refresh the locks of held jobs; will retry")
            }
            Err(_) => tracing::warn!("refreshing the locks of held jobs took too long; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_follows_the_last_beat() {
        let t = Duration::from_secs(60);
        let health = Health::new(Some(t));
        let start = Instant::now();
        // Not registered yet.
        assert!(!health.standing(start).fresh);
        health.beat_landed(start);
        let s = health.standing(start + Duration::from_secs(29));
        assert!(s.fresh);
        assert_eq!(s.next_change, Some(start + Duration::from_secs(30)));
        let late = health.standing(start + Duration::from_secs(31));
        assert!(!late.fresh);
        assert_eq!(late.generation, 0);
        let lost = health.standing(start + Duration::from_secs(46));
        assert_eq!(lost.generation, 1);
        // Only once per lost beat.
        assert_eq!(
            health.standing(start + Duration::from_secs(50)).generation,
            1
        );
        health.beat_landed(start + Duration::from_secs(50));
        let back = health.standing(start + Duration::from_secs(51));
        assert!(back.fresh);
        assert_eq!(back.generation, 1);
    }

    #[test]
    fn declared_dead_starts_a_generation_and_waits_for_registration() {
        let health = Health::new(Some(Duration::from_secs(60)));
        let now = Instant::now();
        health.beat_landed(now);
        health.declared_dead();
        let s = health.standing(now);
        assert!(!s.fresh);
        assert_eq!(s.generation, 1);
    }

    #[test]
    fn without_recovery_always_fresh() {
        let health = Health::new(None);
        assert!(health.standing(Instant::now()).fresh);
    }
}
