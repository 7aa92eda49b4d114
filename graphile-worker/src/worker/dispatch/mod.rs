//! The dispatch loop of one run: claims jobs in the background, keeps a
//! small local queue, starts jobs in free slots, hands outcomes to the
//! writer, and winds down in order.
//!
//! What it guarantees, with the heartbeat ([`crate::heartbeat`]) and the
//! outcome writer ([`crate::outcome`]):
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
use super::local_queue::{LOCAL_TTL, Pace, Waiting};
use super::task_limits::TaskLimits;
use super::wind_down::WindDown;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::heartbeat::{self, Heartbeat, refresh_locks};
use crate::outcome::{Completer, HEARTBEAT_LOST_MESSAGE, HeldJobs, SHUTDOWN_MESSAGE};

mod jobs;

pub(in crate::worker) use jobs::Claimed;

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
    /// Running jobs; each ends with its task's identifier if that task has
    /// a concurrency limit.
    running: JoinSet<Option<String>>,
    /// Per-task concurrency limits.
    limits: TaskLimits,
    /// Cancellation and the hard stop for the jobs of this generation.
    cancel: watch::Sender<bool>,
    /// Set to the message recorded on the jobs it stops.
    abort: watch::Sender<Option<&'static str>>,
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
    // Claiming.
    /// No job was found at the last look; a wake-up or poll clears it.
    exhausted: bool,
    /// Outcomes written when the last claim started (`run_once` looks again
    /// when more land after it).
    written_at_claim: u64,
    backoff: Backoff,
    pace: Pace,
    /// Jobs asked for by the claims in flight.
    claiming_jobs: usize,
    paused_until: Option<tokio::time::Instant>,
    /// Counts events that make a claim's short result inconclusive:
    /// wake-ups (notifications, poll ticks), whose jobs a claim that started
    /// before them may not have seen, and overlapping claims.
    wake_epoch: u64,
    /// The last claim found as many jobs as it asked for.
    backlog: bool,
    next_poll: tokio::time::Instant,
    /// Claiming pauses while this many outcomes are unwritten.
    unwritten_limit: u64,
}

/// What the loop woke up for.
enum Event {
    Claimed(Result<Claimed, tokio::task::JoinError>),
    /// A job ended (with its task, if limited).
    Finished(Option<String>),
    Woken,
    Timer,
    Shutdown,
    /// Outcomes were written while claiming waited for them.
    Landed,
}

impl Dispatcher {
    fn start(inner: Arc<Inner>, once: bool) -> Result<Self, Error> {
        let held = HeldJobs::default();
        let (completer, writer) = Completer::start(
            inner.db.clone(),
            inner.pool_id.clone(),
            held.clone(),
            inner.wakeups.clone(),
            inner.events.clone(),
        );
        inner.health.reset();
        let (stop_background, background_stopped) = watch::channel(false);
        let mut heartbeat_done = None;
        let mut refresher = None;
        if inner.recovery {
            let beat = Heartbeat {
                db: inner.db.clone(),
                direct: inner.direct(),
                pool_id: inner.pool_id.clone(),
                metadata: inner.metadata.clone(),
                interval: inner.heartbeat_interval,
                stale_threshold: inner.stale_worker_threshold,
                health: inner.health.clone(),
                wakeups: inner.wakeups.clone(),
                events: inner.events.clone(),
            };
            heartbeat_done = Some(heartbeat::spawn(beat, background_stopped.clone()).map_err(
                |e| Error::Internal(format!("could not start the heartbeat thread: {e}")),
            )?);
            refresher = Some(tokio::spawn(refresh_locks(
                inner.db.clone(),
                inner.pool_id.clone(),
                held.clone(),
                inner.heartbeat_interval,
                background_stopped,
            )));
        }
        let generation = inner.health.standing(Instant::now()).generation;
        let limits = TaskLimits::new(inner.tasks.concurrency_limits());
        let poll_interval = inner.poll_interval;
        let unwritten_limit =
            u64::try_from((inner.concurrency + inner.local_queue_size).max(64)).unwrap_or(u64::MAX);
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
            limits,
            cancel: watch::channel(false).0,
            abort: watch::channel(None).0,
            generation,
            draining: false,
            reconcile_at: None,
            reconcile_rounds: 0,
            reconciling: false,
            exhausted: false,
            written_at_claim: 0,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(30)),
            pace: Pace::new(),
            claiming_jobs: 0,
            paused_until: None,
            wake_epoch: 0,
            backlog: false,
            next_poll: tokio::time::Instant::now() + poll_interval,
            unwritten_limit,
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
        let register = sqlx::query(self.inner.db.sql.workers.register_worker.clone())
            .bind(&self.inner.pool_id)
            .bind(self.inner.metadata.to_string())
            .execute(self.inner.db.exec());
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

    /// The jobs held so far may have been recovered by a peer: stop the
    /// running ones (cancellation, then a hard stop), hand back the waiting
    /// ones, and start nothing until the running ones have ended.
    fn lose_generation(&mut self, generation: u64) {
        self.generation = generation;
        self.pace.reset();
        self.hand_back_waiting();
        self.cancel.send_replace(true);
        let abort = std::mem::replace(&mut self.abort, watch::channel(None).0);
        self.cancel = watch::channel(false).0;
        let grace = self
            .inner
            .shutdown_grace
            .min(self.inner.stale_worker_threshold / 4);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abort.send_replace(Some(HEARTBEAT_LOST_MESSAGE));
        });
        self.draining = !self.running.is_empty();
    }

    /// The loop: claim, start, and wait, until shutdown (or, for `run_once`,
    /// until nothing is left to run). Each turn applies what the state
    /// allows, then waits for one event.
    async fn run(&mut self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let timer = tokio::time::sleep_until(self.next_poll);
        tokio::pin!(timer);
        loop {
            self.reap();
            if *shutdown.borrow() {
                break;
            }
            let standing = self.inner.health.standing(Instant::now());
            if standing.generation != self.generation {
                self.lose_generation(standing.generation);
            }
            if self.draining && self.running.is_empty() {
                self.draining = false;
            }
            let may_start = standing.fresh && !self.draining;
            if may_start {
                self.start_waiting();
            }
            self.expire_waiting();
            self.maybe_reconcile();
            let backpressured = self.completer.unwritten() >= self.unwritten_limit;
            self.maybe_claim(may_start, backpressured);
            if self.once && self.idle() {
                // Outcomes still being written may unlock more work (the
                // next job of a named queue): look once more after they land.
                if self.completer.settled_since(self.written_at_claim).await {
                    self.exhausted = false;
                    continue;
                }
                break;
            }
            let deadline = self.deadline(standing.next_change);
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let event = tokio::select! {
                Some(claimed) = self.claims.join_next(), if !self.claims.is_empty() => {
                    Event::Claimed(claimed)
                }
                Some(ended) = self.running.join_next(), if !self.running.is_empty() => {
                    Event::Finished(ended.ok().flatten())
                }
                _ = self.inner.wakeups.notify.notified() => Event::Woken,
                () = &mut timer => Event::Timer,
                _ = shutdown.wait_for(|s| *s), if !self.once => Event::Shutdown,
                () = self.completer.landed(), if backpressured => Event::Landed,
            };
            match event {
                Event::Claimed(Ok(claimed)) => self.on_claimed(claimed),
                Event::Claimed(Err(e)) => self.on_claim_task_failed(&e),
                Event::Finished(limited) => {
                    self.pace.record(1);
                    self.job_ended(limited.as_deref());
                }
                Event::Woken => self.look_again(),
                Event::Timer => self.on_timer(),
                Event::Shutdown | Event::Landed => {}
            }
        }
    }

    /// `run_once` is done: nothing waits, runs, or is being claimed.
    fn idle(&self) -> bool {
        self.exhausted
            && self.buffer.is_empty()
            && self.running.is_empty()
            && self.claims.is_empty()
            && self.reconcile_at.is_none()
    }

    /// One timer for everything timed: the end of a pause after a failed
    /// claim, the oldest waiting job's time limit, the next change of the
    /// heartbeat's standing, the next reconciliation, and the next poll.
    fn deadline(&self, standing_changes: Option<Instant>) -> tokio::time::Instant {
        let mut deadline = if self.once {
            // run_once never polls.
            tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
        } else {
            self.next_poll
        };
        let instants = [
            self.buffer.front().map(|(_, since)| *since + LOCAL_TTL),
            standing_changes,
            self.reconcile_at,
        ];
        for at in instants.into_iter().flatten() {
            deadline = deadline.min(at.into());
        }
        if let Some(until) = self.paused_until {
            deadline = deadline.min(until);
        }
        if self.draining {
            // Old jobs ending lift this.
            deadline = deadline.min(tokio::time::Instant::now() + DRAINING_CHECK);
        }
        deadline
    }

    /// Something may have become runnable: a claim may find it.
    fn look_again(&mut self) {
        self.exhausted = false;
        self.wake_epoch += 1;
    }

    fn on_timer(&mut self) {
        let now = tokio::time::Instant::now();
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
        if !self.once && self.next_poll <= now {
            self.look_again();
            self.next_poll = now + self.inner.poll_interval;
        }
        // Waiting jobs past their time limit are handed back at the top of
        // the loop.
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
                    self.abort.send_replace(Some(SHUTDOWN_MESSAGE));
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

/// How often a worker whose old jobs are still stopping looks again.
const DRAINING_CHECK: Duration = Duration::from_millis(50);
