//! The dispatch loop of one run: claims jobs in the background, keeps a
//! small local queue, starts jobs in free slots, hands outcomes to the
//! writer, and winds down in order.
//!
//! What it guarantees, with the heartbeat ([`crate::heartbeat`]) and the
//! outcome writer ([`crate::completion`]):
//!
//! - Jobs are claimed and started only while the worker's heartbeat is
//!   fresh; a worker that may have been declared dead stops its running jobs
//!   and starts nothing it claimed before (a new *generation*).
//! - Claiming pauses while too many outcomes wait to be written
//!   (backpressure), so a stalled database does not make the worker run,
//!   and hold in memory, ever more unwritten work.
//! - A claim whose answer was lost may have locked jobs this worker does not
//!   know about: the worker then reconciles what the database says it holds
//!   with what it knows, and hands the strays back.
//! - Winding down, even when the caller drops `run()`'s future: claims in
//!   flight are awaited and their jobs handed back, waiting jobs handed back,
//!   the last outcomes written, stray locks released, and only then is the
//!   worker deregistered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Inner;
use super::local_queue::{LOCAL_TTL, Pace, Waiting, buffer_in_order};
use super::wind_down::{WindDown, give_back_claimed, reconcile};
use crate::backoff::Backoff;
use crate::claim::ClaimBatch;
use crate::completion::{ClaimRef, Completer, HeldJobs, Outcome, is_retryable, lock_held};
use crate::error::Error;
use crate::execute::{SHUTDOWN_MESSAGE, run_job};
use crate::heartbeat::{self, Heartbeat, refresh_locks};
use crate::job::Job;

/// Runs one dispatch loop to its end and winds it down.
pub(super) async fn dispatch(inner: Arc<Inner>, once: bool) -> Result<(), Error> {
    let mut dispatcher = match Dispatcher::start(inner.clone(), once) {
        Ok(dispatcher) => dispatcher,
        Err(e) => {
            inner.end_run();
            return Err(e);
        }
    };
    dispatcher.register_early().await;
    dispatcher.run().await;
    dispatcher.finish().await;
    Ok(())
}

struct Dispatcher {
    inner: Arc<Inner>,
    once: bool,
    held: HeldJobs,
    completer: Completer,
    claims: JoinSet<Claimed>,
    buffer: VecDeque<Waiting>,
    running: JoinSet<()>,
    /// Cancellation and the hard stop for the jobs of this generation.
    cancel: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    generation: u64,
    /// Jobs of an older generation are still stopping: start nothing.
    draining: bool,
    /// A claim may have locked jobs we do not know about: reconcile when
    /// this is due (claims pause meanwhile). The statement of a claim whose
    /// connection broke may still be finishing on the server, so more rounds
    /// follow, spaced out (`reconcile_rounds` left).
    reconcile_at: Option<Instant>,
    reconcile_rounds: u32,
    reconciling: bool,
    /// What winding down needs; taken by [`finish`](Self::finish), or by
    /// `Drop` when the loop is dropped mid-way.
    rest: Option<WindDown>,
}

impl Dispatcher {
    fn start(inner: Arc<Inner>, once: bool) -> Result<Self, Error> {
        let held = HeldJobs::default();
        let (completer, writer) = Completer::start(
            inner.pool.clone(),
            inner.utils.statements().clone(),
            inner.pool_id.clone(),
            held.clone(),
            inner.wakeups.clone(),
        );
        inner.health.reset();
        let (stop_background, background_stopped) = watch::channel(false);
        let mut heartbeat_done = None;
        let mut refresher = None;
        if inner.recovery {
            let beat = Heartbeat {
                options: (*inner.pool.connect_options()).clone(),
                sql: inner.utils.statements().clone(),
                pool_id: inner.pool_id.clone(),
                metadata: inner.metadata.clone(),
                interval: inner.heartbeat_interval,
                stale_threshold: inner.stale_worker_threshold,
                health: inner.health.clone(),
                wakeups: inner.wakeups.clone(),
            };
            heartbeat_done = Some(heartbeat::spawn(beat, background_stopped.clone()).map_err(
                |e| Error::Internal(format!("could not start the heartbeat thread: {e}")),
            )?);
            refresher = Some(tokio::spawn(refresh_locks(
                inner.pool.clone(),
                inner.utils.statements().clone(),
                inner.pool_id.clone(),
                held.clone(),
                inner.heartbeat_interval,
                background_stopped,
            )));
        }
        let generation = inner.health.standing(Instant::now()).generation;
        Ok(Self {
            rest: Some(WindDown {
                inner: inner.clone(),
                held: held.clone(),
                completer: Some(completer.clone()),
                writer: Some(writer),
                claims: JoinSet::new(),
                buffer: VecDeque::new(),
                stop_background,
                heartbeat_done,
                refresher,
                strays_possible: false,
            }),
            inner,
            once,
            held,
            completer,
            claims: JoinSet::new(),
            buffer: VecDeque::new(),
            running: JoinSet::new(),
            cancel: watch::channel(false).0,
            abort: watch::channel(false).0,
            generation,
            draining: false,
            reconcile_at: None,
            reconcile_rounds: 0,
            reconciling: false,
        })
    }

    /// Registers the worker on the pool, whose connections are open already,
    /// so that the first claim need not wait for the heartbeat thread's own
    /// connection; that thread registers too (an upsert) and takes over.
    async fn register_early(&self) {
        if !self.inner.recovery {
            return;
        }
        let sent = Instant::now();
        let register = sqlx::query(self.inner.utils.statements().register_worker.clone())
            .bind(&self.inner.pool_id)
            .bind(self.inner.metadata.to_string())
            .execute(&self.inner.pool);
        match tokio::time::timeout(self.inner.stale_worker_threshold / 4, register).await {
            Ok(Ok(_)) => {
                self.inner.health.beat_landed(sent);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not register the worker yet; the heartbeat will retry")
            }
            Err(_) => tracing::warn!("registering the worker is slow; the heartbeat will retry"),
        }
    }

    /// Hands back every job waiting in the local queue.
    fn hand_back_waiting(&mut self) {
        for (job, _) in self.buffer.drain(..) {
            self.completer
                .send(ClaimRef::of(&job), Outcome::Returned, true);
        }
    }

    /// The jobs held so far may have been recovered by a peer: stop the
    /// running ones (cancellation, then a hard stop), hand back the waiting
    /// ones, and start nothing until the running ones have ended.
    fn lose_generation(&mut self, generation: u64) {
        self.generation = generation;
        self.hand_back_waiting();
        self.cancel.send_replace(true);
        let abort = std::mem::replace(&mut self.abort, watch::channel(false).0);
        self.cancel = watch::channel(false).0;
        let grace = self
            .inner
            .shutdown_grace
            .min(self.inner.stale_worker_threshold / 4);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abort.send_replace(true);
        });
        self.draining = !self.running.is_empty();
    }

    fn start_job(&mut self, job: Job) {
        let handler = self.inner.tasks.handler(&job.task_identifier);
        let utils = self.inner.utils.clone();
        let cancel = self.cancel.subscribe();
        let aborts = [self.abort.subscribe(), self.inner.abort.subscribe()];
        // Made before the task: a task dropped before its first poll drops
        // the guard too, which still reports the job.
        let guard = OutcomeGuard {
            claim: ClaimRef::of(&job),
            queued: job.queue_name.is_some(),
            completer: Some(self.completer.clone()),
        };
        self.running.spawn(async move {
            let outcome = run_job(job, handler, utils, cancel, aborts).await;
            guard.send(outcome);
        });
    }

    /// The loop: claim, start, and wait, until shutdown (or, for `run_once`,
    /// until nothing is left to run).
    async fn run(&mut self) {
        let inner = self.inner.clone();
        let mut shutdown = inner.shutdown.subscribe();
        let mut exhausted = false;
        let mut written_at_claim = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut pace = Pace::new();
        // Jobs asked for by the claims in flight.
        let mut claiming_jobs = 0;
        let mut paused_until: Option<tokio::time::Instant> = None;
        // Counts events that make a claim's short result inconclusive:
        // wake-ups (notifications, poll ticks), whose jobs a claim that
        // started before them may not have seen, and overlapping claims.
        let mut wake_epoch: u64 = 0;
        // The last claim found as many jobs as it asked for: only then may a
        // second claim start beside one in flight. (After a short result
        // every claim would overlap the previous one and none would ever
        // prove the queue empty.)
        let mut backlog = false;
        let unwritten_limit =
            u64::try_from((inner.concurrency + inner.local_queue_size).max(64)).unwrap_or(u64::MAX);
        let mut next_poll = tokio::time::Instant::now() + inner.poll_interval;
        // run_once never polls: its timer only serves pauses and time limits.
        let idle_deadline = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(next_poll);
        tokio::pin!(timer);

        loop {
            // Reap finished jobs so their slots count as free.
            let mut finished = 0;
            while self.running.try_join_next().is_some() {
                finished += 1;
            }
            pace.record(finished);
            if *shutdown.borrow() {
                break;
            }
            let standing = inner.health.standing(Instant::now());
            if standing.generation != self.generation {
                self.lose_generation(standing.generation);
                pace.reset();
            }
            if self.draining && self.running.is_empty() {
                self.draining = false;
            }
            let may_start = standing.fresh && !self.draining;
            // Start buffered jobs in free slots.
            while may_start && self.running.len() < inner.concurrency {
                let Some((job, _)) = self.buffer.pop_front() else {
                    break;
                };
                self.start_job(job);
            }
            // Jobs that waited too long locally go back for others to take.
            if let Some((_, since)) = self.buffer.front()
                && since.elapsed() > LOCAL_TTL
            {
                self.hand_back_waiting();
                // The pace that filled the buffer is out of date: start
                // again from claiming for free slots only.
                pace.reset();
            }

            let reconcile_due = self.reconcile_at.is_some_and(|at| at <= Instant::now());
            if reconcile_due && self.claims.is_empty() && !self.reconciling {
                self.reconciling = true;
                let ids = lock_held(&self.held).ids();
                let inner = inner.clone();
                self.claims
                    .spawn(async move { Claimed::Reconciled(reconcile(&inner, &ids).await) });
            }

            let ahead = pace.ahead(inner.local_queue_size);
            let capacity = inner.concurrency + ahead;
            if self.claims.is_empty() {
                claiming_jobs = 0;
            }
            let have = self.running.len() + self.buffer.len() + claiming_jobs;
            let want = capacity.saturating_sub(have);
            // Refill when half the lookahead is used up. When jobs run
            // faster than one connection can claim them, the buffer empties
            // while a claim is in flight: then a second claim for the other
            // half starts beside it, so that two connections claim at once.
            let refill = if self.claims.is_empty() {
                want > 0 && self.buffer.len() <= ahead / 2
            } else {
                backlog && self.claims.len() < MAX_CLAIMS && want >= (ahead / 2).max(OVERLAP_MIN)
            };
            let backpressured = self.completer.unwritten() >= unwritten_limit;
            if refill
                && may_start
                && paused_until.is_none()
                && !exhausted
                && !backpressured
                && !reconcile_due
                && !self.reconciling
            {
                let announced = inner.wakeups.take();
                // Half the lookahead at a time keeps two claims in turn.
                let batch = want.min((ahead / 2).max(inner.concurrency));
                let limit = if announced > 0 && have == 0 {
                    batch.min(usize::try_from(announced).unwrap_or(usize::MAX).max(1))
                } else {
                    batch
                };
                written_at_claim = self.completer.written();
                tracing::trace!(
                    limit,
                    ahead,
                    buffered = self.buffer.len(),
                    running = self.running.len(),
                    in_flight = self.claims.len(),
                    "claiming"
                );
                claiming_jobs += limit;
                let engine = inner.clone();
                // Two claims skip each other's rows, so either may come back
                // short with jobs left: neither result then proves the
                // queue empty.
                let epoch = if self.claims.is_empty() {
                    Some(wake_epoch)
                } else {
                    wake_epoch += 1;
                    None
                };
                let finished_before = pace.finished_total;
                let generation = self.generation;
                // No client-side time limit, and never dropped mid-way: a
                // claim given up on may still commit on the server.
                self.claims.spawn(async move {
                    match engine.claimer.claim(limit).await {
                        Ok(batch) => Claimed::Jobs {
                            batch,
                            limit,
                            epoch,
                            finished_before,
                            generation,
                        },
                        Err(e) => Claimed::Failed {
                            may_have_locked: may_have_committed(&e),
                            error: e.to_string(),
                            limit,
                        },
                    }
                });
            }

            if self.once
                && exhausted
                && self.buffer.is_empty()
                && self.running.is_empty()
                && self.claims.is_empty()
                && self.reconcile_at.is_none()
            {
                // Outcomes still being written may unlock more work (the
                // next job of a named queue): look once more after they land.
                if self.completer.settled_since(written_at_claim).await {
                    exhausted = false;
                    continue;
                }
                break;
            }

            // One timer for everything timed: the end of a pause after a
            // failed claim, the oldest waiting job's time limit, the next
            // change of the heartbeat's standing, and the next poll. It is
            // only re-armed when its deadline moves.
            let mut deadline = if self.once { idle_deadline } else { next_poll };
            if let Some(until) = paused_until {
                deadline = deadline.min(until);
            }
            if let Some((_, since)) = self.buffer.front() {
                deadline = deadline.min((*since + LOCAL_TTL).into());
            }
            if let Some(change) = standing.next_change {
                deadline = deadline.min(change.into());
            }
            if let Some(at) = self.reconcile_at {
                deadline = deadline.min(at.into());
            }
            if backpressured || self.draining {
                // Outcomes landing, or old jobs ending, lift these.
                deadline = deadline.min(tokio::time::Instant::now() + BACKPRESSURE_CHECK);
            }
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }

            tokio::select! {
                Some(claimed) = self.claims.join_next(), if !self.claims.is_empty() => {
                    match claimed {
                        Ok(Claimed::Jobs { batch, limit, epoch, finished_before, generation }) => {
                            claiming_jobs = claiming_jobs.saturating_sub(limit);
                            settle_rejects(&self.held, &self.completer, &batch);
                            if generation != self.generation {
                                // Claimed before the worker may have been
                                // declared dead: never start these.
                                give_back_claimed(&self.held, &self.completer, batch.jobs);
                                continue;
                            }
                            if batch.give_back.is_empty() {
                                backoff.reset();
                            } else {
                                // The claim worked but its jobs could not be
                                // prepared: pause as after a failed claim.
                                paused_until = Some(tokio::time::Instant::now() + backoff.next_delay());
                            }
                            // A full scan says more jobs may be waiting, even
                            // when named queues let only a few through.
                            let full = batch.candidates >= limit;
                            backlog = full;
                            // A job skipped because it changed under the
                            // claim is still runnable: look again.
                            let complete = batch.claimed >= batch.expected;
                            exhausted = !full && complete && epoch == Some(wake_epoch);
                            let jobs = batch.jobs;
                            tracing::trace!(
                                claimed = jobs.len(),
                                limit,
                                buffered = self.buffer.len(),
                                running = self.running.len(),
                                "claim returned"
                            );
                            if !full {
                                pace.caught_up();
                            } else if self.buffer.is_empty()
                                && self.running.len() < inner.concurrency
                                && pace.finished_total > finished_before
                            {
                                // Jobs finished while this claim was in
                                // flight and left slots idle: they are short.
                                pace.starved(inner.concurrency);
                            }
                            let now = Instant::now();
                            lock_held(&self.held).extend(jobs.iter().map(|j| j.id));
                            buffer_in_order(&mut self.buffer, jobs, now);
                        }
                        Ok(Claimed::Failed { error, limit, may_have_locked }) => {
                            claiming_jobs = claiming_jobs.saturating_sub(limit);
                            let delay = backoff.next_delay();
                            if may_have_locked {
                                // The claim may have committed with its
                                // answer lost: look for strays.
                                self.reconcile_at = Some(Instant::now());
                                self.reconcile_rounds = RECONCILE_ROUNDS;
                                if let Some(rest) = self.rest.as_mut() {
                                    rest.strays_possible = true;
                                }
                            }
                            tracing::warn!(error = %error, "could not claim jobs; retrying in {delay:?}");
                            paused_until = Some(tokio::time::Instant::now() + delay);
                        }
                        Ok(Claimed::Reconciled(result)) => {
                            self.reconciling = false;
                            match result {
                                Ok(()) => {
                                    self.reconcile_rounds = self.reconcile_rounds.saturating_sub(1);
                                    self.reconcile_at = (self.reconcile_rounds > 0).then(|| {
                                        Instant::now() + RECONCILE_SPACING * (RECONCILE_ROUNDS - self.reconcile_rounds)
                                    });
                                    exhausted = false;
                                }
                                Err(e) => {
                                    let delay = backoff.next_delay();
                                    tracing::warn!(error = %e, "could not check which jobs this worker holds; retrying in {delay:?}");
                                    self.reconcile_at = Some(Instant::now() + delay);
                                }
                            }
                        }
                        Err(e) => {
                            // The claim task itself failed (it cannot panic
                            // by design) and took its count with it; the
                            // count restarts once no claim is in flight.
                            let delay = backoff.next_delay();
                            self.reconciling = false;
                            tracing::error!(error = %e, "the claim task failed; retrying in {delay:?}");
                            paused_until = Some(tokio::time::Instant::now() + delay);
                        }
                    }
                }
                Some(_) = self.running.join_next(), if !self.running.is_empty() => {
                    pace.record(1);
                }
                _ = inner.wakeups.notify.notified() => {
                    exhausted = false;
                    wake_epoch += 1;
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if paused_until.is_some_and(|until| until <= now) {
                        paused_until = None;
                    }
                    if !self.once && next_poll <= now {
                        exhausted = false;
                        wake_epoch += 1;
                        next_poll = now + inner.poll_interval;
                    }
                    // Jobs past their time limit are handed back at the
                    // top of the loop.
                }
                _ = shutdown.wait_for(|s| *s), if !self.once => {}
            }
        }
    }

    /// Shutdown: hand back what never started, ask running tasks to stop,
    /// give them the grace period, interrupt the rest, then wind down.
    async fn finish(mut self) {
        self.hand_back_waiting();
        self.cancel.send_replace(true);
        let grace = tokio::time::sleep(self.inner.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = self.running.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    self.abort.send_replace(true);
                    while self.running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let rest = self.take_rest();
        // Our own senders must go for the writer to finish.
        drop(self);
        if let Some(rest) = rest {
            // Spawned, so that dropping run()'s future now cannot cut the
            // wind-down short.
            let _ = tokio::spawn(rest.run()).await;
        }
    }

    /// The wind-down work, with the claims in flight and the jobs still
    /// waiting moved into it.
    fn take_rest(&mut self) -> Option<WindDown> {
        let mut rest = self.rest.take()?;
        rest.claims = std::mem::take(&mut self.claims);
        rest.buffer = std::mem::take(&mut self.buffer);
        Some(rest)
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // The caller dropped run()'s future: the running jobs are aborted
        // with the JoinSet (their guards report them interrupted); the rest
        // winds down in the background.
        if let Some(rest) = self.take_rest()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(rest.run());
        }
    }
}

/// Whether a failed statement may still have committed: its answer, not
/// its request, was lost.
fn may_have_committed(error: &Error) -> bool {
    match error {
        Error::Database(e) => {
            !matches!(
                e,
                sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ) && is_retryable(e)
        }
        _ => false,
    }
}

/// What a background claim brought back.
pub(super) enum Claimed {
    /// `limit` is what was asked for; `epoch` the wake-up count when the
    /// claim started (`None` if it overlapped another), `finished_before`
    /// the count of finished jobs then, `generation` the heartbeat
    /// generation it was claimed in.
    Jobs {
        batch: ClaimBatch,
        limit: usize,
        epoch: Option<u64>,
        finished_before: u64,
        generation: u64,
    },
    Failed {
        error: String,
        limit: usize,
        may_have_locked: bool,
    },
    /// A reconciliation of held jobs ran.
    Reconciled(Result<(), String>),
}

/// Sends a running job's outcome, or, if the job's task ends without one (a
/// panic outside the task's own future, or the task being dropped), a
/// failure, so that no claimed job is left locked while the worker lives.
struct OutcomeGuard {
    claim: ClaimRef,
    queued: bool,
    completer: Option<Completer>,
}

impl OutcomeGuard {
    fn send(mut self, outcome: Outcome) {
        if let Some(completer) = self.completer.take() {
            // A finished queued job unlocks its queue; an interrupted one
            // can run again at once.
            let frees_work = self.queued
                || matches!(
                    outcome,
                    Outcome::Failed {
                        interrupted: true,
                        ..
                    }
                );
            completer.send(self.claim, outcome, frees_work);
        }
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let Some(completer) = self.completer.take() else {
            return;
        };
        let outcome = if std::thread::panicking() {
            Outcome::Failed {
                message: "the worker panicked while running this job".into(),
                interrupted: false,
            }
        } else {
            Outcome::Failed {
                message: SHUTDOWN_MESSAGE.into(),
                interrupted: true,
            }
        };
        completer.send(self.claim, outcome, true);
    }
}

/// Fails the claimed jobs that could not be read and hands back those to be
/// given back; both stay in `held` until written.
pub(super) fn settle_rejects(held: &HeldJobs, completer: &Completer, batch: &ClaimBatch) {
    if batch.unreadable.is_empty() && batch.give_back.is_empty() {
        return;
    }
    {
        let mut held = lock_held(held);
        held.extend(batch.unreadable.iter().map(|(claim, _)| claim.id));
        held.extend(batch.give_back.iter().map(|claim| claim.id));
    }
    for (claim, message) in &batch.unreadable {
        tracing::error!(job_id = claim.id, "{message}");
        let outcome = Outcome::Failed {
            message: message.clone(),
            interrupted: false,
        };
        // It may have held its named queue, which unlocks now.
        completer.send(*claim, outcome, true);
    }
    for claim in &batch.give_back {
        completer.send(*claim, Outcome::Returned, true);
    }
}

/// At most this many claims are in flight at once.
const MAX_CLAIMS: usize = 2;

/// A claim starts beside one in flight only when it asks for this many jobs.
const OVERLAP_MIN: usize = 500;

/// How many times the worker reconciles after a claim that may have
/// committed unseen, and how far apart (growing: 1 s, 2 s, …).
const RECONCILE_ROUNDS: u32 = 4;
const RECONCILE_SPACING: Duration = Duration::from_secs(1);

/// How often a worker held back by unwritten outcomes, or by old jobs
/// still stopping, looks again.
const BACKPRESSURE_CHECK: Duration = Duration::from_millis(50);
