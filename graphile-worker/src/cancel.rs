//! Cancelling jobs: the notification `cancel_job` sends, and the table of
//! running jobs a worker can tell to stop.
//!
//! `cancel_job` writes the cancellation on the row first (the job can no
//! longer be retried: `max_attempts = attempts`, and `last_error` says
//! `cancelled: <reason>`), then announces it on the existing `jobs:insert`
//! channel with a count of 0, which Node workers and ours read as "no new
//! jobs" (so no schema or channel is added), and with the job id and the
//! schema. The worker running the job tells its task; a job that waits in
//! its local queue is stopped before it starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// The longest cancellation reason kept, in characters (it travels in a
/// notification payload, whose limit is 8000 bytes).
pub(crate) const MAX_REASON_CHARS: usize = 1000;

/// Cancellations heard for jobs that had not started (held in the local
/// queue, or not claimed by this worker at all) are remembered up to this
/// many; older ones are forgotten first.
const MAX_EARLY: usize = 1024;

/// The running jobs of one worker that can be told to stop, by id.
#[derive(Debug, Default)]
pub(crate) struct Cancellations {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: HashMap<i64, watch::Sender<Option<String>>>,
    /// Heard before the job started, oldest first.
    early: Vec<(i64, String)>,
}

impl Cancellations {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers job `id` as running: the receiver fires with the reason
    /// when the job is cancelled (at once, if that was heard already).
    /// The registration ends when the returned guard is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: i64,
    ) -> (watch::Receiver<Option<String>>, Running) {
        let mut state = self.lock();
        let heard = state
            .early
            .iter()
            .position(|(job, _)| *job == id)
            .map(|at| state.early.remove(at).1);
        let (tx, rx) = watch::channel(heard);
        state.running.insert(id, tx);
        (
            rx,
            Running {
                table: self.clone(),
                id,
            },
        )
    }

    /// Tells job `id` to stop, if it runs here; otherwise remembers it for
    /// a little while, in case it is about to start.
    pub(crate) fn cancel(&self, id: i64, reason: String) {
        let mut state = self.lock();
        if let Some(tx) = state.running.get(&id) {
            tx.send_replace(Some(reason));
            return;
        }
        if state.early.len() >= MAX_EARLY {
            state.early.remove(0);
        }
        state.early.push((id, reason));
    }
}

/// Keeps a job registered as running; see [`Cancellations::register`].
#[derive(Debug)]
pub(crate) struct Running {
    table: Arc<Cancellations>,
    id: i64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.table.lock().running.remove(&self.id);
    }
}

/// A cancellation announced on `jobs:insert`: `{"count":0,"cancel":id,
/// "schema":…,"reason":…}`, for the worker of `schema`.
pub(crate) fn read_notice(payload: &str, schema: &str) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let id = v.get("cancel")?.as_i64()?;
    if v.get("schema")?.as_str()? != schema {
        return None;
    }
    let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or_default();
    Some((id, reason.to_owned()))
}

/// A reason as stored and announced: at most [`MAX_REASON_CHARS`].
pub(crate) fn bounded_reason(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason.to_owned(),
    }
}

/// What `last_error` says of a cancelled job.
pub(crate) fn cancelled_message(reason: &str) -> String {
    format!("cancelled: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_their_schema() {
        let payload = r#"{"count":0,"cancel":42,"schema":"graphile_worker","reason":"no"}"#;
        assert_eq!(
            read_notice(payload, "graphile_worker"),
            Some((42, "no".to_owned()))
        );
        assert_eq!(read_notice(payload, "other"), None);
        assert_eq!(read_notice(r#"{"count":3}"#, "graphile_worker"), None);
    }

    #[test]
    fn early_cancellations_reach_jobs_that_start_later() {
        let table = Arc::new(Cancellations::default());
        table.cancel(7, "stop".into());
        let (rx, guard) = table.register(7);
        assert_eq!(rx.borrow().as_deref(), Some("stop"));
        drop(guard);
        let (rx, _guard) = table.register(8);
        assert!(rx.borrow().is_none());
        table.cancel(8, "later".into());
        assert_eq!(rx.borrow().as_deref(), Some("later"));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(bounded_reason("short"), "short");
        let long = "x".repeat(MAX_REASON_CHARS + 5);
        assert_eq!(bounded_reason(&long).chars().count(), MAX_REASON_CHARS + 1);
    }
}
