//! The wall clock cron reads: the system clock, or a manual one that tests
//! move by hand so they never wait for real minutes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// Where the cron scheduler gets the time from. Cron always uses the
/// client's clock, in UTC, as graphile-worker does.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use chrono::{TimeZone, Utc};
/// use graphile_worker::testing::{Clock, ManualClock};
///
/// let manual = ManualClock::new(Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap());
/// let clock = Clock::Manual(manual.clone());
/// manual.advance(std::time::Duration::from_secs(90));
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2024, 1, 1, 4, 1, 30).unwrap());
/// # }
/// ```
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(ManualClock),
}

impl Clock {
    /// The current time, to the millisecond (as JavaScript dates are, so
    /// that timestamps written by Rust and Node workers compare alike).
    pub fn now(&self) -> DateTime<Utc> {
        let now = match self {
            Clock::System => Utc::now(),
            Clock::Manual(manual) => manual.now(),
        };
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    /// Waits until the clock shows `target` or later. The system clock uses
    /// a timer for the remaining time, like graphile-worker's `setTimeout`:
    /// if the wall clock jumps meanwhile the caller finds out on waking. A
    /// manual clock returns as soon as it is moved to `target` or later.
    pub(crate) async fn sleep_until(&self, target: DateTime<Utc>) {
        match self {
            Clock::System => {
                let wait = (target - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_millis(1));
                tokio::time::sleep(wait).await;
            }
            Clock::Manual(manual) => {
                let mut now = manual.now.subscribe();
                // The sender lives as long as `manual`, so this only fails if
                // it is gone, and then the time can never come.
                if now.wait_for(|now| *now >= target).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// A clock for tests: it starts where it is told and moves only by
/// [`set`](ManualClock::set) and [`advance`](ManualClock::advance), waking
/// whatever waits on it. Clones share one time.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use chrono::{TimeZone, Utc};
/// use graphile_worker::testing::ManualClock;
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
/// clock.set(Utc.with_ymd_and_hms(2023, 12, 31, 23, 0, 0).unwrap()); // backwards is fine
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2023, 12, 31, 23, 0, 0).unwrap());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))]
impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    /// Moves it to `time`, forwards or backwards.
    pub fn set(&self, time: DateTime<Utc>) {
        self.now.send_replace(time);
    }

    /// Moves it forwards by `by`.
    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        self.now.send_modify(|now| {
            *now = now
                .checked_add_signed(by)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        });
    }
}
