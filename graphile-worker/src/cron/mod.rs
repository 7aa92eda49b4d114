//! Recurring jobs: crontab parsing, minute matching and the scheduler that
//! turns each due minute into exactly one job across every worker.
//!
//! - [`pattern`]: the five time fields and how they match a UTC minute.
//! - [`crontab`]: crontab text, its options and payloads.
//! - [`scheduler`]: registration, backfill and the once-a-minute loop,
//!   coordinated through `_private_known_crontabs` as graphile-worker does.
//! - [`zone`]: patterns read in a time zone, across daylight-saving changes.
//! - [`clock`]: the wall clock the scheduler reads, replaceable in tests.

mod clock;
mod crontab;
mod error;
mod pattern;
mod scheduler;
mod zone;

#[cfg(test)]
mod tests;

pub use crontab::{CronItem, CronJobKeyMode, CronOptions, parse_crontab};
pub use error::{CronField, CrontabError, CrontabErrorKind};
pub use pattern::CronPattern;
pub use zone::{CronTimeZone, CronTimeZoneError};

// For the worker, which starts the scheduler.
pub(crate) use clock::Clock;
pub(crate) use crontab::duplicate_identifier;
pub(crate) use scheduler::run_scheduler;

/// Test support: drive the scheduler with a manual clock. Not public API.
#[doc(hidden)]
#[cfg(feature = "testing")]
pub mod testing {
    pub use super::clock::{Clock, ManualClock};
    pub use super::scheduler::{CronEvent, run_scheduler_for_tests};
}
