//! Cron schedules in local time: which UTC minutes a pattern read in a time
//! zone fires in, across daylight-saving changes.
//!
//! The rules, chosen once and tested in `cron::tests` and
//! `tests/cron_time_zones.rs`:
//!
//! - **Skipped local times** (clocks go forward): a schedule whose local
//!   time falls in the gap fires once, in the first minute after it
//!   (`30 2 * * *` in Paris runs at 03:00 on the last Sunday of March). Any
//!   number of matches inside one gap make one run.
//! - **Repeated local times** (clocks go back): a schedule fires in the first
//!   pass only (`30 2 * * *` runs once, at 02:30 summer time).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::pattern::CronPattern;

/// An IANA time zone (`Europe/Paris`, `America/New_York`, `UTC`) in which a
/// cron schedule's fields are read.
///
/// Set with `?tz=Europe/Paris` on a crontab line, `#[task(cron = "...", tz =
/// "Europe/Paris")]`, or [`CronOptions::time_zone`](super::CronOptions).
/// Needs the crate's `tz` feature (chrono-tz's copy of the tz database);
/// without it [`CronTimeZone::parse`] says so. Node graphile-worker cannot
/// read the option, so time-zoned lines belong in crontabs only Rust workers
/// read.
///
/// When clocks go forward, a schedule inside the skipped stretch fires once
/// at the first minute after it; when they go back, a schedule inside the
/// repeated stretch fires in its first pass only.
///
/// ```
/// # #[cfg(feature = "tz")] {
/// use chrono::{TimeZone, Utc};
/// use graphile_worker::{CronPattern, CronTimeZone};
///
/// let paris = CronTimeZone::parse("Europe/Paris").unwrap();
/// let nine = CronPattern::parse("0 9 * * *").unwrap();
/// // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
/// let after = Utc.with_ymd_and_hms(2025, 1, 10, 12, 0, 0).unwrap();
/// assert_eq!(paris.next_after(&nine, after), Some(Utc.with_ymd_and_hms(2025, 1, 11, 8, 0, 0).unwrap()));
/// let after = Utc.with_ymd_and_hms(2025, 7, 10, 12, 0, 0).unwrap();
/// assert_eq!(paris.next_after(&nine, after), Some(Utc.with_ymd_and_hms(2025, 7, 11, 7, 0, 0).unwrap()));
/// # }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CronTimeZone {
    #[cfg(feature = "tz")]
    zone: chrono_tz::Tz,
    /// Without the `tz` feature no value can be made.
    #[cfg(not(feature = "tz"))]
    never: std::convert::Infallible,
}

/// Why a time zone name was refused.
///
/// ```
/// use graphile_worker::CronTimeZone;
/// let err = CronTimeZone::parse("Paris time").unwrap_err();
/// # #[cfg(feature = "tz")]
/// assert_eq!(
///     err.to_string(),
///     "unknown time zone \"Paris time\": use an IANA name such as \"Europe/Paris\" or \"UTC\" (names are case-sensitive)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronTimeZoneError {
    /// The name is not in the tz database.
    #[error(
        "unknown time zone {name:?}: use an IANA name such as \"Europe/Paris\" or \"UTC\" (names are case-sensitive)"
    )]
    Unknown {
        /// The name as given.
        name: String,
    },
    /// The crate was built without its `tz` feature.
    #[error(
        "time zone {name:?} needs the `tz` feature of the graphile-worker crate: add features = [\"tz\"] to its line in Cargo.toml"
    )]
    FeatureMissing {
        /// The name as given.
        name: String,
    },
}

impl CronTimeZone {
    /// Looks up an IANA time zone name (case-sensitive, as in the tz
    /// database).
    pub fn parse(name: &str) -> Result<CronTimeZone, CronTimeZoneError> {
        #[cfg(feature = "tz")]
        {
            name.parse::<chrono_tz::Tz>()
                .map(|zone| CronTimeZone { zone })
                .map_err(|_| CronTimeZoneError::Unknown {
                    name: name.to_owned(),
                })
        }
        #[cfg(not(feature = "tz"))]
        {
            Err(CronTimeZoneError::FeatureMissing {
                name: name.to_owned(),
            })
        }
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &'static str {
        #[cfg(feature = "tz")]
        {
            self.zone.name()
        }
        #[cfg(not(feature = "tz"))]
        {
            match self.never {}
        }
    }

    /// Whether `pattern`, read in this zone, fires in the UTC minute holding
    /// `minute` (seconds are ignored).
    ///
    /// ```
    /// # #[cfg(feature = "tz")] {
    /// use chrono::{TimeZone, Utc};
    /// use graphile_worker::{CronPattern, CronTimeZone};
    /// let paris = CronTimeZone::parse("Europe/Paris").unwrap();
    /// let half_past_two = CronPattern::parse("30 2 * * *").unwrap();
    /// // 2025-03-30: Paris skips from 02:00 to 03:00 (01:00 UTC).
    /// assert!(paris.fires(&half_past_two, Utc.with_ymd_and_hms(2025, 3, 30, 1, 0, 0).unwrap()));
    /// // 2025-10-26: Paris repeats 02:00-02:59; only the first 02:30 fires.
    /// assert!(paris.fires(&half_past_two, Utc.with_ymd_and_hms(2025, 10, 26, 0, 30, 0).unwrap()));
    /// assert!(!paris.fires(&half_past_two, Utc.with_ymd_and_hms(2025, 10, 26, 1, 30, 0).unwrap()));
    /// # }
    /// ```
    pub fn fires(&self, pattern: &CronPattern, minute: DateTime<Utc>) -> bool {
        #[cfg(feature = "tz")]
        {
            local::fires(self.zone, pattern, minute)
        }
        #[cfg(not(feature = "tz"))]
        {
            let _ = (pattern, minute);
            match self.never {}
        }
    }

    /// The first UTC minute strictly after `after` in which `pattern`, read
    /// in this zone, fires; `None` if it never fires again.
    pub fn next_after(&self, pattern: &CronPattern, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        #[cfg(feature = "tz")]
        {
            local::next_after(self.zone, pattern, after)
        }
        #[cfg(not(feature = "tz"))]
        {
            let _ = (pattern, after);
            match self.never {}
        }
    }
}

impl fmt::Debug for CronTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronTimeZone({})", self.name())
    }
}

impl fmt::Display for CronTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CronTimeZone {
    type Err = CronTimeZoneError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CronTimeZone::parse(name)
    }
}

#[cfg(feature = "tz")]
mod local {
    use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
    use chrono_tz::Tz;

    use super::super::pattern::{CronPattern, floor_to_minute};

    const ONE_MINUTE: TimeDelta = TimeDelta::minutes(1);
    /// The longest stretch of local time a zone has skipped at once (Samoa
    /// skipped 2011-12-30 entirely), with room to spare.
    const LONGEST_GAP_MINUTES: i32 = 3 * 24 * 60;

    fn local_of(zone: Tz, minute: DateTime<Utc>) -> NaiveDateTime {
        minute.with_timezone(&zone).naive_local()
    }

    pub(super) fn fires(zone: Tz, pattern: &CronPattern, minute: DateTime<Utc>) -> bool {
        let minute = floor_to_minute(minute);
        let local = local_of(zone, minute);
        if pattern.matches(local.and_utc()) {
            // In a repeated stretch, only the first pass fires.
            return match zone.from_local_datetime(&local) {
                LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc) == minute,
                _ => true,
            };
        }
        // Right after a skipped stretch, the local minutes skipped fire here.
        let Some(before) = minute.checked_sub_signed(ONE_MINUTE) else {
            return false;
        };
        let mut skipped = local_of(zone, before) + ONE_MINUTE;
        while skipped < local {
            if pattern.matches(skipped.and_utc()) {
                return true;
            }
            skipped += ONE_MINUTE;
        }
        false
    }

    pub(super) fn next_after(
        zone: Tz,
        pattern: &CronPattern,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut local = local_of(zone, after);
        // A candidate can map to a time not after `after` only in a repeated
        // stretch, and each round moves at least a minute: enough rounds to
        // walk out of the longest fold (a few hours) every minute.
        for _ in 0..(4 * 60 + 1) {
            let candidate = pattern.next_after(local.and_utc())?.naive_utc();
            let at = earliest_at_or_after(zone, candidate)?;
            if at > after {
                return Some(at);
            }
            local = candidate;
        }
        None
    }

    /// The UTC instant of local time `local`: its first pass if repeated,
    /// the first minute after the gap if skipped.
    fn earliest_at_or_after(zone: Tz, mut local: NaiveDateTime) -> Option<DateTime<Utc>> {
        for _ in 0..=LONGEST_GAP_MINUTES {
            match zone.from_local_datetime(&local) {
                LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                    return Some(at.with_timezone(&Utc));
                }
                LocalResult::None => local += ONE_MINUTE,
            }
        }
        None
    }
}
