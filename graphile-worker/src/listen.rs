//! LISTEN/NOTIFY: wake the dispatcher when jobs are added, tell running
//! jobs they are cancelled, and stop on a breaking migration. Reconnects after a dropped connection and then asks
//! for one poll, so no wake-up is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::cancel::{Cancellations, read_notice};
use crate::events::{Events, WorkerEvent};

/// How the listener talks to the dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    /// Jobs announced since the dispatcher last looked.
    pub(crate) pending: AtomicU64,
    pub(crate) notify: Notify,
    /// Set to the migration number when a breaking migration is announced.
    pub(crate) breaking_migration: AtomicI32,
}

impl Wakeups {
    pub(crate) fn nudge(&self, count: u64) {
        self.pending.fetch_add(count, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// The announced job count, left in place.
    pub(crate) fn peek(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Takes the announced job count (at least 1 if anything was announced).
    pub(crate) fn take(&self) -> u64 {
        self.pending.swap(0, Ordering::Relaxed)
    }
}

const JOBS_CHANNEL: &str = "jobs:insert";
const MIGRATE_CHANNEL: &str = "worker:migrate";

/// Runs until `shutdown` turns true. `on_breaking` is called once when a
/// breaking migration is announced; cancellations for jobs of `schema` go
/// to `cancellations`.
pub(crate) async fn listen(
    pool: PgPool,
    wakeups: Arc<Wakeups>,
    (cancellations, schema): (Arc<Cancellations>, String),
    mut shutdown: watch::Receiver<bool>,
    on_breaking: impl Fn(i32) + Send + Sync + 'static,
    events: Events,
) {
    let on_breaking = Arc::new(on_breaking);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
    'connect: loop {
        if *shutdown.borrow() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, "could not connect the listener; retrying in {delay:?}");
                if wait_or_shutdown(&mut shutdown, delay).await {
                    return;
                }
                continue 'connect;
            }
        };
        if let Err(e) = listener.listen_all([JOBS_CHANNEL, MIGRATE_CHANNEL]).await {
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, "could not LISTEN; retrying in {delay:?}");
            if wait_or_shutdown(&mut shutdown, delay).await {
                return;
            }
            continue 'connect;
        }
        backoff.reset();
        events.emit(|| WorkerEvent::ListenerConnected);
        // Anything announced while we were not listening is found by a poll.
        wakeups.nudge(1);
        // Set when sqlx reported the connection lost; the next message
        // proves it reconnected.
        let mut lost = false;
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match received {
                Ok(Some(notification)) => {
                    if std::mem::take(&mut lost) {
                        events.emit(|| WorkerEvent::ListenerConnected);
                    }
                    match notification.channel() {
                        JOBS_CHANNEL => {
                            let count = jobs_count(notification.payload());
                            if count > 0 {
                                wakeups.nudge(count);
                            } else if let Some((id, reason)) =
                                read_notice(notification.payload(), &schema)
                            {
                                tracing::debug!(job_id = id, "job cancellation announced");
                                cancellations.cancel(id, reason);
                            }
                        }
                        MIGRATE_CHANNEL => {
                            // Weighed in a task of its own: reading the
                            // ledger may wait for a connection, and job
                            // notices and cancellations must not wait
                            // behind it.
                            let (pool, schema, wakeups, on_breaking) = (
                                pool.clone(),
                                schema.clone(),
                                wakeups.clone(),
                                on_breaking.clone(),
                            );
                            let payload = notification.payload().to_owned();
                            tokio::spawn(async move {
                                if let Some(number) =
                                    breaking_for_us(&pool, &schema, &payload).await
                                {
                                    wakeups.breaking_migration.store(number, Ordering::Relaxed);
                                    on_breaking(number);
                                }
                            });
                        }
                        _ => {}
                    }
                }
                Ok(None) => {
                    // The connection dropped; sqlx reconnects and re-listens
                    // on the next call. Poll once to catch what we missed.
                    tracing::warn!("listener connection lost; reconnecting");
                    lost = true;
                    events.emit(|| WorkerEvent::ListenerDisconnected {
                        error: "the connection was lost".to_owned(),
                    });
                    wakeups.nudge(1);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, "listener error; reconnecting in {delay:?}");
                    events.emit(|| WorkerEvent::ListenerDisconnected {
                        error: e.to_string(),
                    });
                    wakeups.nudge(1);
                    if wait_or_shutdown(&mut shutdown, delay).await {
                        return;
                    }
                    continue 'connect;
                }
            }
        }
    }
}

/// Sleeps for `delay`; true if shutdown was requested meanwhile.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    };
    stopped || *shutdown.borrow()
}

/// The job count of a `jobs:insert` payload `{"r":…,"count":n}`; a missing or
/// unreadable payload counts as 1, a count ≤ 0 as none.
fn jobs_count(payload: &str) -> u64 {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(v) => match v.get("count").and_then(|c| c.as_i64()) {
            Some(n) if n > 0 => u64::try_from(n).unwrap_or(1),
            Some(_) => 0,
            None => 1,
        },
        Err(_) => 1,
    }
}

/// The number of the breaking migration a `worker:migrate` payload
/// announces, if it concerns this worker: one this build does not know,
/// applied to this worker's schema. The channel is database-wide, so a
/// schema installed or upgraded beside ours announces itself here too.
/// Our payloads name their schema; Node's do not, so for those the
/// schema's own ledger decides (the notice is sent in the migration's
/// transaction, so its row is visible by the time the notice arrives). The
/// ledger is read up to three times, 5 s each, a second apart; only if it
/// cannot be read at all does the notice count as ours: stopping is the
/// safe side.
async fn breaking_for_us(pool: &PgPool, schema: &str, payload: &str) -> Option<i32> {
    let number = breaking_number(payload)?;
    if number <= crate::migrate::HIGHEST_MIGRATION {
        return None;
    }
    if let Some(named) = payload_schema(payload) {
        return (named == schema).then_some(number);
    }
    let sql = format!(
        "select exists (select 1 from {}.migrations where id = $1 and breaking)",
        crate::schema::Schema::new(schema).quoted()
    );
    for attempt in 1..=3 {
        let read = sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql.clone()))
            .bind(number)
            .fetch_one(pool);
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(ours)) => return ours.then_some(number),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, migration = number, attempt, "could not read the migrations ledger after a breaking-migration notice")
            }
            Err(_) => tracing::warn!(
                migration = number,
                attempt,
                "reading the migrations ledger after a breaking-migration notice took over 5 s"
            ),
        }
        if attempt < 3 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    tracing::warn!(
        migration = number,
        "the migrations ledger could not be read; stopping to be safe"
    );
    Some(number)
}

/// The `schema` a `worker:migrate` payload names (ours do; Node's do not).
fn payload_schema(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("schema")?.as_str().map(str::to_owned)
}

/// The migration number of a breaking `worker:migrate` payload.
fn breaking_number(payload: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    if v.get("breaking")?.as_bool()? {
        v.get("migrationNumber")?
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_like_node() {
        assert_eq!(jobs_count(r#"{"r":0.5,"count":3}"#), 3);
        assert_eq!(jobs_count(r#"{"r":0.5,"count":-1}"#), 0);
        assert_eq!(jobs_count(""), 1);
        assert_eq!(jobs_count("{}"), 1);
    }

    #[test]
    fn reads_breaking_migrations() {
        assert_eq!(
            breaking_number(r#"{"migrationNumber":21,"breaking":true}"#),
            Some(21)
        );
        assert_eq!(
            breaking_number(r#"{"migrationNumber":20,"breaking":false}"#),
            None
        );
    }
}
