//! Growing, jittered delays for retrying database work, and the job retry
//! delay formula.

use std::time::Duration;

/// Delays that grow ×1.5 from `min` up to `max`, each scaled by a random
/// factor in [0.5, 1.5).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.min.as_secs_f64() * 1.5f64.powi(self.attempt.min(60) as i32);
        self.attempt = self.attempt.saturating_add(1);
        let capped = base.min(self.max.as_secs_f64());
        let factor = 0.5 + random_fraction();
        Duration::from_secs_f64(capped * factor)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A random number in [0, 1), good enough for jitter and ids.
pub(crate) fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// 64 random bits from the standard library's randomly keyed hasher.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

/// How long graphile-worker waits before retrying a job after its
/// `attempts`-th failed attempt: `exp(min(attempts, 10))` seconds.
///
/// ```
/// use graphile_worker::retry_delay;
/// assert_eq!(retry_delay(1).as_millis(), 2718);
/// assert_eq!(retry_delay(2).as_millis(), 7389);
/// assert_eq!(retry_delay(10), retry_delay(25));
/// ```
pub fn retry_delay(attempts: i16) -> Duration {
    Duration::from_secs_f64((f64::from(attempts.clamp(0, 10))).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(150));
        for _ in 0..20 {
            assert!(b.next_delay() < Duration::from_millis(1500));
        }
    }

    #[test]
    fn random_fraction_is_in_range() {
        for _ in 0..1000 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
