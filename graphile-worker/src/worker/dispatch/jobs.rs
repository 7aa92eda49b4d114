//! A job's way through the dispatcher: a claim started when the planner
//! says so, what it brought back taken in and queued locally, then started
//! in a free slot with the guard that reports its outcome (or handed back
//! if it waited too long). Also reconciling after a claim whose answer was
//! lost.

use std::time::{Duration, Instant};

use super::Dispatcher;
use crate::claim::ClaimBatch;
use crate::error::Error;
use crate::events::WorkerEvent;
use crate::execute::{JobLimits, RunWith, run_job};
use crate::job::Job;
use crate::outcome::{
    ClaimRef, Outcome, OutcomeGuard, give_back_claimed, is_retryable, lock_held, settle_rejects,
};
use crate::worker::local_queue::LOCAL_TTL;
use crate::worker::local_queue::buffer_in_order;
use crate::worker::planner::{ClaimView, claim_limit};
use crate::worker::task_limits::Slots;
use crate::worker::wind_down::reconcile;

impl Dispatcher {
    pub(super) fn reconcile_due(&self) -> bool {
        self.reconcile_at.is_some_and(|at| at <= Instant::now())
    }

    /// Starts a reconciliation when one is due and no claim is in flight.
    pub(super) fn maybe_reconcile(&mut self) {
        if self.reconcile_due() && self.claims.is_empty() && !self.reconciling {
            self.reconciling = true;
            let ids = lock_held(&self.held).ids();
            let inner = self.inner.clone();
            self.claims
                .spawn(async move { Claimed::Reconciled(reconcile(&inner, &ids).await) });
        }
    }

    /// Starts a claim in the background if the planner says so.
    pub(super) fn maybe_claim(&mut self, may_start: bool, backpressured: bool) {
        if self.claims.is_empty() {
            self.claiming_jobs = 0;
        }
        let ahead = self.pace.ahead(self.inner.local_queue_size);
        let view = ClaimView {
            concurrency: self.inner.concurrency,
            running: self.running.len(),
            waiting: self.buffer.len(),
            in_flight: self.claims.len(),
            asked: self.claiming_jobs,
            ahead,
            backlog: self.backlog,
            announced: self.inner.wakeups.peek(),
            blocked: !may_start
                || self.paused_until.is_some()
                || self.exhausted
                || backpressured
                || self.reconcile_due()
                || self.reconciling,
        };
        let Some(limit) = claim_limit(&view) else {
            return;
        };
        self.inner.wakeups.take();
        self.written_at_claim = self.completer.written();
        tracing::trace!(
            limit,
            ahead,
            buffered = view.waiting,
            running = view.running,
            in_flight = view.in_flight,
            "claiming"
        );
        self.claiming_jobs += limit;
        let slots = self.limits.reserve();
        // Two claims skip each other's rows, so either may come back short
        // with jobs left: neither result then proves the queue empty.
        let epoch = if self.claims.is_empty() {
            Some(self.wake_epoch)
        } else {
            self.wake_epoch += 1;
            None
        };
        let finished_before = self.pace.finished_total;
        let generation = self.generation;
        let engine = self.inner.clone();
        // No client-side time limit, and never dropped mid-way: a claim
        // given up on may still commit on the server.
        self.claims.spawn(async move {
            let started = Instant::now();
            match engine.claimer.claim(limit, &slots).await {
                Ok(batch) => {
                    engine.events.emit(|| WorkerEvent::JobsClaimed {
                        count: batch.jobs.len(),
                        duration: started.elapsed(),
                    });
                    Claimed::Jobs {
                        batch,
                        limit,
                        slots,
                        epoch,
                        finished_before,
                        generation,
                    }
                }
                Err(e) => Claimed::Failed {
                    may_have_locked: may_have_committed(&e),
                    error: e.to_string(),
                    limit,
                    slots,
                },
            }
        });
    }

    pub(super) fn pause(&mut self, why: &str, error: &dyn std::fmt::Display) -> Duration {
        let delay = self.backoff.next_delay();
        tracing::warn!(error = %error, "{why}; retrying in {delay:?}");
        self.paused_until = Some(tokio::time::Instant::now() + delay);
        delay
    }

    pub(super) fn on_claimed(&mut self, claimed: Claimed) {
        match claimed {
            Claimed::Jobs {
                batch,
                limit,
                slots,
                epoch,
                finished_before,
                generation,
            } => {
                self.limits.release(&slots);
                self.on_jobs(batch, limit, epoch, finished_before, generation);
            }
            Claimed::Failed {
                error,
                limit,
                slots,
                may_have_locked,
            } => {
                self.limits.release(&slots);
                self.claiming_jobs = self.claiming_jobs.saturating_sub(limit);
                if may_have_locked {
                    // The claim may have committed with its answer lost:
                    // look for strays, in spaced rounds.
                    self.reconcile_at = Some(Instant::now());
                    self.reconcile_rounds = RECONCILE_ROUNDS;
                    if let Some(rest) = self.rest.as_mut() {
                        rest.strays_possible = true;
                    }
                }
                self.pause("could not claim jobs", &error);
            }
            Claimed::Reconciled(result) => {
                self.reconciling = false;
                match result {
                    Ok(()) => {
                        self.reconcile_rounds = self.reconcile_rounds.saturating_sub(1);
                        let done = RECONCILE_ROUNDS - self.reconcile_rounds;
                        self.reconcile_at = (self.reconcile_rounds > 0)
                            .then(|| Instant::now() + RECONCILE_SPACING * done);
                        self.look_again();
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(error = %e, "could not check which jobs this worker holds; retrying in {delay:?}");
                        self.reconcile_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }

    /// The claim task itself failed (it cannot panic by design) and took its
    /// count with it; the count restarts once no claim is in flight.
    pub(super) fn on_claim_task_failed(&mut self, error: &tokio::task::JoinError) {
        self.reconciling = false;
        self.pause("the claim task failed", error);
    }

    pub(super) fn on_jobs(
        &mut self,
        batch: ClaimBatch,
        limit: usize,
        epoch: Option<u64>,
        finished_before: u64,
        generation: u64,
    ) {
        self.claiming_jobs = self.claiming_jobs.saturating_sub(limit);
        settle_rejects(&self.held, &self.completer, &batch);
        if generation != self.generation {
            // Claimed before the worker may have been declared dead: never
            // start these.
            let count = batch.jobs.len();
            give_back_claimed(&self.held, &self.completer, batch.jobs);
            if count > 0 {
                self.inner
                    .events
                    .emit(|| WorkerEvent::JobsHandedBack { count });
            }
            return;
        }
        if batch.give_back.is_empty() {
            self.backoff.reset();
        } else {
            // The claim worked but its jobs could not be prepared: pause as
            // after a failed claim.
            self.pause(
                "could not prepare the claimed jobs",
                &"queue names unreadable",
            );
        }
        // A full scan says more jobs may be waiting, even when named queues
        // let only a few through.
        let full = batch.candidates >= limit;
        self.backlog = full;
        // A job skipped because it changed under the claim is still
        // runnable: look again.
        let complete = batch.claimed >= batch.expected;
        self.exhausted = !full && complete && epoch == Some(self.wake_epoch);
        tracing::trace!(
            claimed = batch.jobs.len(),
            limit,
            buffered = self.buffer.len(),
            running = self.running.len(),
            "claim returned"
        );
        if !full {
            self.pace.caught_up();
        } else if self.buffer.is_empty()
            && self.running.len() < self.inner.concurrency
            && self.pace.finished_total > finished_before
        {
            // Jobs finished while this claim was in flight and left slots
            // idle: they are short.
            self.pace.starved(self.inner.concurrency);
        }
        lock_held(&self.held).extend(batch.jobs.iter().map(|j| j.id));
        for job in &batch.jobs {
            self.limits.took(&job.task_identifier);
        }
        buffer_in_order(&mut self.buffer, batch.jobs, Instant::now());
    }

    /// Hands back every job waiting in the local queue.
    pub(super) fn hand_back_waiting(&mut self) {
        let count = self.buffer.len();
        for (job, _) in self.buffer.drain(..) {
            self.limits.done(&job.task_identifier);
            self.completer
                .send(ClaimRef::of(&job), Outcome::Returned, true);
        }
        if count > 0 {
            self.inner
                .events
                .emit(|| WorkerEvent::JobsHandedBack { count });
        }
    }

    pub(super) fn start_job(&mut self, job: Job) {
        let (handler, limits) = match self.inner.tasks.get(&job.task_identifier) {
            Some((handler, policy)) => (
                Some(handler.clone()),
                JobLimits {
                    timeout: policy.timeout_limit().or(self.inner.job_timeout),
                    retry: policy.retry_policy().cloned(),
                    grace: self.inner.cancel_grace,
                },
            ),
            None => (None, JobLimits::default()),
        };
        let with = RunWith {
            handler,
            limits,
            cancellation: Some(self.inner.cancellations.register(job.id)),
            utils: self.inner.utils.clone(),
            cancel: self.cancel.subscribe(),
            aborts: (self.abort.subscribe(), self.inner.abort.subscribe()),
            data: self.inner.data.clone(),
            retry_undecodable: self.inner.retry_undecodable,
            events: self.inner.events.clone(),
            middleware: self.inner.middleware.clone(),
        };
        // Made before the task: a task dropped before its first poll drops
        // the guard too, which still reports the job.
        let guard = OutcomeGuard {
            claim: ClaimRef::of(&job),
            queued: job.queue_name.is_some(),
            completer: Some(self.completer.clone()),
        };
        let limited = self
            .limits
            .limits(&job.task_identifier)
            .then(|| job.task_identifier.clone());
        self.running.spawn(async move {
            let outcome = run_job(job, with).await;
            guard.send(outcome);
            limited
        });
    }

    /// Reaps finished jobs so their slots count as free.
    pub(super) fn reap(&mut self) {
        let mut finished = 0;
        while let Some(ended) = self.running.try_join_next() {
            finished += 1;
            self.job_ended(ended.ok().flatten().as_deref());
        }
        self.pace.record(finished);
    }

    /// A job of a task with a concurrency limit ended: its slot is free,
    /// and jobs of that task may be waiting in the table.
    pub(super) fn job_ended(&mut self, limited: Option<&str>) {
        if let Some(task) = limited
            && self.limits.done(task)
        {
            self.look_again();
        }
    }

    /// Starts waiting jobs in free slots.
    pub(super) fn start_waiting(&mut self) {
        while self.running.len() < self.inner.concurrency {
            let Some((job, _)) = self.buffer.pop_front() else {
                break;
            };
            self.start_job(job);
        }
    }

    /// Jobs that waited too long locally go back for others to take.
    pub(super) fn expire_waiting(&mut self) {
        if let Some((_, since)) = self.buffer.front()
            && since.elapsed() > LOCAL_TTL
        {
            self.hand_back_waiting();
            // The pace that filled the buffer is out of date: start again
            // from claiming for free slots only.
            self.pace.reset();
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
pub(in crate::worker) enum Claimed {
    /// `limit` is what was asked for, `slots` the free slots of limited
    /// tasks it was given; `epoch` the wake-up count when the
    /// claim started (`None` if it overlapped another), `finished_before`
    /// the count of finished jobs then, `generation` the heartbeat
    /// generation it was claimed in.
    Jobs {
        batch: ClaimBatch,
        limit: usize,
        slots: Slots,
        epoch: Option<u64>,
        finished_before: u64,
        generation: u64,
    },
    Failed {
        error: String,
        limit: usize,
        slots: Slots,
        may_have_locked: bool,
    },
    /// A reconciliation of held jobs ran.
    Reconciled(Result<(), String>),
}

/// How many times the worker reconciles after a claim that may have
/// committed unseen, and how far apart (growing: 1 s, 2 s, …).
const RECONCILE_ROUNDS: u32 = 4;
const RECONCILE_SPACING: Duration = Duration::from_secs(1);
