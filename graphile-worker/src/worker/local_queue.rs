//! The local queue: claimed jobs waiting for a free slot, kept in the order
//! they start, and the pace that decides how many to hold.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::job::Job;

/// A claimed job waiting in the local queue, and since when.
pub(super) type Waiting = (Job, Instant);

/// How long a claimed job may wait in the local queue before it is handed
/// back.
pub(super) const LOCAL_TTL: Duration = Duration::from_secs(5);

/// How much work, in time at the current pace, the local queue holds.
pub(super) const LOOKAHEAD: Duration = Duration::from_millis(200);

/// How often the pace estimate is refreshed.
pub(super) const PACE_WINDOW: Duration = Duration::from_millis(50);

/// Default upper bound of the local queue.
pub(crate) const DEFAULT_LOCAL_QUEUE: usize = 5000;

/// Appends claimed jobs to the local queue, keeping it in the order jobs
/// start: priority, then run_at. Each claim returns its jobs in that order,
/// but two overlapping claims can come back in either order.
pub(super) fn buffer_in_order(buffer: &mut VecDeque<Waiting>, jobs: Vec<Job>, claimed_at: Instant) {
    let in_order = match (buffer.back(), jobs.first()) {
        (Some((last, _)), Some(first)) => {
            (last.priority, last.run_at) <= (first.priority, first.run_at)
        }
        _ => true,
    };
    buffer.extend(jobs.into_iter().map(|j| (j, claimed_at)));
    if !in_order {
        let buffer = buffer.make_contiguous();
        buffer.sort_by_key(|(j, _)| (j.priority, j.run_at));
        // The time-limit check looks at the front only, so claim times must
        // not decrease along the queue: after a merge every job counts from
        // the oldest claim among them.
        if let Some(oldest) = buffer.iter().map(|(_, since)| *since).min() {
            for (_, since) in buffer.iter_mut() {
                *since = oldest;
            }
        }
    }
}

/// Estimates how many jobs finish per second, to size the local queue: jobs
/// are claimed ahead of free slots only as far as they will start soon, so
/// short jobs share a round trip and long jobs are not hoarded.
///
/// Until the first estimate, and whenever claims cannot keep up, the
/// lookahead grows like TCP's slow start: each claim that comes back full to
/// a worker starved by short jobs (some finished meanwhile, and now slots are
/// free with nothing waiting) quadruples it, so a burst of short jobs
/// reaches full batches within a few round trips.
pub(super) struct Pace {
    window_start: Instant,
    finished: u32,
    per_second: f64,
    boost: usize,
    pub(super) finished_total: u64,
}

impl Pace {
    pub(super) fn new() -> Self {
        Self {
            window_start: Instant::now(),
            finished: 0,
            per_second: 0.0,
            boost: 0,
            finished_total: 0,
        }
    }

    /// Forgets the estimate (keeping the count of finished jobs).
    pub(super) fn reset(&mut self) {
        *self = Self {
            finished_total: self.finished_total,
            ..Self::new()
        };
    }

    pub(super) fn record(&mut self, finished: u32) {
        self.finished += finished;
        self.finished_total += u64::from(finished);
        let elapsed = self.window_start.elapsed();
        if elapsed >= PACE_WINDOW {
            let rate = f64::from(self.finished) / elapsed.as_secs_f64();
            self.per_second = (self.per_second + rate) / 2.0;
            self.finished = 0;
            self.window_start = Instant::now();
        }
    }

    /// A claim came back with every job it asked for while the worker had
    /// free slots and nothing waiting: hold more next time.
    pub(super) fn starved(&mut self, floor: usize) {
        self.boost = self.boost.max(floor).saturating_mul(4);
    }

    /// A claim came back short: there is no backlog to race through.
    pub(super) fn caught_up(&mut self) {
        self.boost = 0;
    }

    /// How many jobs to hold beyond the running ones, at most `max`.
    pub(super) fn ahead(&self, max: usize) -> usize {
        ((self.per_second * LOOKAHEAD.as_secs_f64()) as usize)
            .max(self.boost)
            .min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn job(id: i64, priority: i16, second: u32) -> Job {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single();
        let at = at.unwrap_or_default();
        Job {
            id,
            queue_name: None,
            task_identifier: "t".into(),
            payload: serde_json::Value::Null,
            priority,
            run_at: at,
            attempts: 1,
            max_attempts: 25,
            last_error: None,
            created_at: at,
            updated_at: at,
            key: None,
            locked_at: None,
            locked_by: None,
            revision: 0,
            flags: None,
        }
    }

    fn ids(buffer: &VecDeque<Waiting>) -> Vec<i64> {
        buffer.iter().map(|(j, _)| j.id).collect()
    }

    #[test]
    fn a_later_claim_that_returns_first_does_not_jump_the_queue() {
        let now = Instant::now();
        let mut buffer = VecDeque::new();
        // The second claim skipped the first's rows, so it holds the
        // lower-priority jobs, and it came back first.
        buffer_in_order(&mut buffer, vec![job(5, 1, 0), job(6, 1, 1)], now);
        buffer_in_order(&mut buffer, vec![job(1, 0, 0), job(2, 0, 5)], now);
        assert_eq!(ids(&buffer), vec![1, 2, 5, 6]);
        // Ties keep claim order; run_at breaks ties in priority.
        buffer_in_order(&mut buffer, vec![job(3, 0, 3), job(7, 1, 1)], now);
        assert_eq!(ids(&buffer), vec![1, 3, 2, 5, 6, 7]);
    }

    #[test]
    fn batches_in_order_are_appended() {
        let now = Instant::now();
        let mut buffer = VecDeque::new();
        buffer_in_order(&mut buffer, vec![job(1, 0, 0), job(2, 0, 1)], now);
        buffer_in_order(&mut buffer, vec![job(3, 0, 1), job(4, 2, 0)], now);
        assert_eq!(ids(&buffer), vec![1, 2, 3, 4]);
    }
}
