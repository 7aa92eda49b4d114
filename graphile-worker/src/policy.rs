//! How a task's jobs run: a time limit, a retry policy and a concurrency
//! limit per task ([`TaskPolicy`]), and the retry delays ([`RetryPolicy`]).

use std::time::Duration;

use crate::backoff::random_fraction;

/// How the jobs of one task run: a time limit, a retry policy, and how many
/// may run at once on one worker. Every part is optional; what is left
/// unset falls back to the worker's settings
/// ([`WorkerOptions::job_timeout`](crate::WorkerOptions::job_timeout)) or
/// to graphile-worker's behaviour (no limit, Node's backoff).
///
/// `#[task(timeout = "30s", concurrency = 2, backoff(...))]` builds one
/// through [`Task::policy`](crate::Task::policy);
/// [`WorkerOptions::task_policy`](crate::WorkerOptions::task_policy)
/// overrides it per identifier.
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::{RetryPolicy, TaskPolicy};
///
/// let policy = TaskPolicy::new()
///     .timeout(Duration::from_secs(30))
///     .concurrency(2)
///     .retry(RetryPolicy::constant(Duration::from_secs(10)));
/// assert_eq!(policy.timeout_limit(), Some(Duration::from_secs(30)));
/// assert_eq!(policy.concurrency_limit(), Some(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskPolicy {
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    concurrency: Option<usize>,
}

impl TaskPolicy {
    /// A policy that sets nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time limit of one attempt. When it passes, the task is told
    /// (through [`JobContext::cancelled`](crate::JobContext::cancelled),
    /// with [`CancelReason::TimedOut`](crate::CancelReason::TimedOut)),
    /// gets the worker's
    /// [`cancel_grace_period`](crate::WorkerOptions::cancel_grace_period),
    /// and is then dropped; the job fails with `timed out after 30s` and is
    /// retried by its retry policy.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// How failed attempts are retried (see [`RetryPolicy`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// At most this many jobs of the task run at once on one worker (at
    /// least 1); the worker keeps claiming and running other tasks' jobs
    /// meanwhile. For a limit of one across every worker, use a named
    /// queue instead.
    pub fn concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = Some(jobs.max(1));
        self
    }

    /// The time limit, if set.
    pub fn timeout_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy, if set.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The concurrency limit, if set.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.concurrency
    }

    /// This policy with what `over` sets replacing its own settings.
    pub(crate) fn overridden_by(&self, over: &TaskPolicy) -> TaskPolicy {
        TaskPolicy {
            timeout: over.timeout.or(self.timeout),
            retry: over.retry.clone().or_else(|| self.retry.clone()),
            concurrency: over.concurrency.or(self.concurrency),
        }
    }
}

/// How long a job waits before its next attempt after a failure.
///
/// Without a policy, jobs keep graphile-worker's delay,
/// `exp(min(attempts, 10))` seconds (see [`retry_delay`](crate::retry_delay)),
/// computed by the database. A policy computes the delay in the worker
/// instead; the delay after the `n`-th failed attempt is
///
/// - constant: `delay`;
/// - linear: `base × n`;
/// - exponential: `base × factor^(n−1)`;
///
/// each capped at `cap` (if set) and then scaled by a random factor in
/// `[1 − jitter, 1 + jitter]`. Node workers failing the same task keep
/// Node's formula: the policy lives in the Rust worker's code, not in the
/// job.
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::RetryPolicy;
///
/// let policy = RetryPolicy::exponential(Duration::from_secs(1))
///     .factor(2.0)
///     .cap(Duration::from_secs(60));
/// assert_eq!(policy.delay(1), Duration::from_secs(1));
/// assert_eq!(policy.delay(3), Duration::from_secs(4));
/// assert_eq!(policy.delay(20), Duration::from_secs(60));
///
/// let linear = RetryPolicy::linear(Duration::from_secs(10));
/// assert_eq!(linear.delay(3), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    curve: Curve,
    cap: Option<Duration>,
    jitter: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Curve {
    Constant(Duration),
    Linear(Duration),
    Exponential { base: Duration, factor: f64 },
}

impl RetryPolicy {
    /// The same delay after every failure.
    pub fn constant(delay: Duration) -> Self {
        Self::with(Curve::Constant(delay))
    }

    /// `base × n` after the `n`-th failure.
    pub fn linear(base: Duration) -> Self {
        Self::with(Curve::Linear(base))
    }

    /// `base × factor^(n−1)` after the `n`-th failure; the factor is 2
    /// unless [`factor`](Self::factor) says otherwise.
    pub fn exponential(base: Duration) -> Self {
        Self::with(Curve::Exponential { base, factor: 2.0 })
    }

    fn with(curve: Curve) -> Self {
        Self {
            curve,
            cap: None,
            jitter: 0.0,
        }
    }

    /// The growth factor of an exponential policy (at least 1; ignored by
    /// the others).
    pub fn factor(mut self, factor: f64) -> Self {
        if let Curve::Exponential { base, .. } = self.curve {
            let factor = if factor.is_finite() {
                factor.max(1.0)
            } else {
                1.0
            };
            self.curve = Curve::Exponential { base, factor };
        }
        self
    }

    /// The longest delay.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Spreads each delay randomly by up to this fraction either way (0 to
    /// 1), so that jobs failing together do not retry together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay after the `attempts`-th failed attempt, before jitter.
    pub fn delay(&self, attempts: i16) -> Duration {
        let n = f64::from(attempts.max(1));
        let seconds = match self.curve {
            Curve::Constant(delay) => delay.as_secs_f64(),
            Curve::Linear(base) => base.as_secs_f64() * n,
            Curve::Exponential { base, factor } => base.as_secs_f64() * factor.powf(n - 1.0),
        };
        let capped = match self.cap {
            Some(cap) => seconds.min(cap.as_secs_f64()),
            None => seconds,
        };
        duration_from_secs(capped)
    }

    /// The delay after the `attempts`-th failed attempt, jitter applied.
    pub(crate) fn jittered_delay(&self, attempts: i16) -> Duration {
        let delay = self.delay(attempts).as_secs_f64();
        let spread = self.jitter * (2.0 * random_fraction() - 1.0);
        duration_from_secs(delay * (1.0 + spread))
    }
}

/// The longest delay a job is put off by: beyond it a timestamp could
/// overflow.
const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 86_400);

fn duration_from_secs(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY)
    }
}

/// The text of a time limit in `last_error`: `timed out after 30s`,
/// `1m30s`, `1.5s`, `250ms`.
pub(crate) fn timed_out_message(limit: Duration) -> String {
    format!("timed out after {}", human_duration(limit))
}

/// A duration as people write it: `250ms`, `1.5s`, `30s`, `2m`, `1h30m`.
pub(crate) fn human_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    if !millis.is_multiple_of(1000) && millis < 60_000 {
        let text = format!("{:.3}", d.as_secs_f64());
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(RetryPolicy::constant(s(5)).delay(7), s(5));
        assert_eq!(RetryPolicy::linear(s(5)).delay(3), s(15));
        let exp = RetryPolicy::exponential(s(1)).factor(3.0).cap(s(20));
        assert_eq!(exp.delay(1), s(1));
        assert_eq!(exp.delay(2), s(3));
        assert_eq!(exp.delay(3), s(9));
        assert_eq!(exp.delay(4), s(20));
        assert_eq!(exp.delay(i16::MAX), s(20));
        // No cap: huge exponents stay finite.
        assert_eq!(
            RetryPolicy::exponential(s(1)).delay(i16::MAX),
            super::MAX_DELAY
        );
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let policy = RetryPolicy::constant(Duration::from_secs(100)).jitter(0.1);
        for _ in 0..1000 {
            let d = policy.jittered_delay(1).as_secs_f64();
            assert!((90.0..=110.0).contains(&d), "{d}");
        }
        assert_eq!(
            RetryPolicy::constant(Duration::from_secs(1))
                .jitter(5.0)
                .jitter,
            1.0
        );
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = TaskPolicy::new()
            .timeout(Duration::from_secs(1))
            .concurrency(3);
        let merged = base.overridden_by(&TaskPolicy::new().concurrency(1));
        assert_eq!(merged.timeout_limit(), Some(Duration::from_secs(1)));
        assert_eq!(merged.concurrency_limit(), Some(1));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(human_duration(ms(250)), "250ms");
        assert_eq!(human_duration(ms(1500)), "1.5s");
        assert_eq!(human_duration(ms(30_000)), "30s");
        assert_eq!(human_duration(ms(90_000)), "1m30s");
        assert_eq!(human_duration(ms(3_600_000)), "1h");
        assert_eq!(timed_out_message(ms(30_000)), "timed out after 30s");
    }
}
