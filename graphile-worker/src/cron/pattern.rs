//! The five time fields of a crontab line: parsing, matching a minute, and
//! finding the next minute that matches.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};

use super::error::{ColumnError, CronField, CrontabError, CrontabErrorKind};

/// When a cron item fires: minute, hour, day of month, month and day of week,
/// matched against UTC time, exactly as graphile-worker reads them.
///
/// Each field is a comma-separated list of `N`, `a-b` (b greater than a),
/// `*` or `*/n` (every n-th value counted from the field's minimum). Day of
/// week runs 0–6 from Sunday, and 7 is Sunday too. When both day of month
/// and day of week are restricted, a day matching either one fires (classic
/// cron); `*/1` counts as unrestricted.
///
/// Steps on ranges (`1-10/2`), names (`MON`), macros (`@daily`), seconds and
/// `L`/`W`/`#` are not supported, as in graphile-worker, and are refused.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use graphile_worker::CronPattern;
///
/// // 04:00 UTC on the 1st of the month, and every Monday.
/// let pattern = CronPattern::parse("0 4 1 * 1").unwrap();
/// let monday = Utc.with_ymd_and_hms(2024, 1, 8, 4, 0, 0).unwrap();
/// assert!(pattern.matches(monday));
/// let next = pattern.next_after(monday).unwrap();
/// assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 15, 4, 0, 0).unwrap());
/// ```
#[derive(Clone, Debug)]
pub struct CronPattern {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    text: String,
}

const ALL_DAYS: u32 = 0xFFFF_FFFE;
const ALL_WEEKDAYS: u8 = 0x7F;

impl CronPattern {
    /// Parses the five time fields, separated by whitespace.
    ///
    /// ```
    /// use graphile_worker::CronPattern;
    /// assert!(CronPattern::parse("*/15 9-17 * * 1-5").is_ok());
    ///
    /// let err = CronPattern::parse("0 4 * * MON").unwrap_err();
    /// assert_eq!(err.column(), 9);
    /// assert!(err.to_string().starts_with("column 9 of cron pattern: unsupported character 'M'"));
    /// ```
    pub fn parse(text: &str) -> Result<CronPattern, CrontabError> {
        let tokens = split_fields(text, 6);
        if tokens.len() != 5 {
            let column = tokens.get(5).map_or(char_len(text) + 1, |t| t.column);
            return Err(CrontabError::new(
                None,
                column,
                CrontabErrorKind::PatternFieldCount {
                    found: split_fields(text, usize::MAX).len(),
                },
            ));
        }
        let fields: Vec<(&str, usize)> = tokens.iter().map(|t| (t.text, t.column)).collect();
        Self::from_fields(&fields, None)
    }

    /// Parses five `(text, column)` fields of a crontab line.
    pub(crate) fn from_fields(
        fields: &[(&str, usize)],
        line: Option<usize>,
    ) -> Result<CronPattern, CrontabError> {
        let mut masks = [0u64; 5];
        for ((mask, field), &(text, column)) in masks.iter_mut().zip(CronField::ALL).zip(fields) {
            *mask = parse_field(field, text, column)
                .map_err(|(column, kind)| CrontabError::new(line, column, kind))?;
        }
        let text = fields.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(" ");
        // The masks only have bits inside each field's range, so the
        // narrowing conversions below lose nothing.
        Ok(CronPattern {
            minutes: masks[0],
            hours: masks[1] as u32,
            days: masks[2] as u32,
            months: masks[3] as u16,
            weekdays: masks[4] as u8,
            text,
        })
    }

    /// Whether the pattern fires in the minute holding `time` (UTC; seconds
    /// are ignored).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use graphile_worker::CronPattern;
    /// // Sunday may be written 0 or 7.
    /// let sunday = Utc.with_ymd_and_hms(2024, 3, 3, 12, 0, 30).unwrap();
    /// assert!(CronPattern::parse("0 12 * * 0").unwrap().matches(sunday));
    /// assert!(CronPattern::parse("0 12 * * 7").unwrap().matches(sunday));
    /// assert!(!CronPattern::parse("0 12 * * 1").unwrap().matches(sunday));
    /// ```
    pub fn matches(&self, time: DateTime<Utc>) -> bool {
        self.minutes & (1 << time.minute()) != 0
            && self.hours & (1 << time.hour()) != 0
            && self.months & (1 << time.month()) != 0
            && self.day_matches(time.date_naive())
    }

    /// The first minute strictly after `time` in which the pattern fires, or
    /// `None` if it never fires again (such as `0 0 30 2 *`, which
    /// graphile-worker accepts but never runs) within 400 years.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use graphile_worker::CronPattern;
    /// let leap_day = CronPattern::parse("0 0 29 2 *").unwrap();
    /// let after = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    /// assert_eq!(leap_day.next_after(after), Some(Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap()));
    /// assert_eq!(CronPattern::parse("0 0 30 2 *").unwrap().next_after(after), None);
    /// ```
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = floor_to_minute(time).checked_add_signed(TimeDelta::minutes(1))?;
        let (mut year, mut month) = (start.year(), start.month());
        for months_ahead in 0..=400 * 12 {
            let first_month = months_ahead == 0;
            if self.months & (1 << month) != 0 {
                let first_day = if first_month { start.day() } else { 1 };
                for day in first_day..=days_in_month(year, month) {
                    let date = NaiveDate::from_ymd_opt(year, month, day)?;
                    if !self.day_matches(date) {
                        continue;
                    }
                    let start_day = first_month && day == start.day();
                    let first_hour = if start_day { start.hour() } else { 0 };
                    for hour in first_hour..24 {
                        if self.hours & (1 << hour) == 0 {
                            continue;
                        }
                        let first_minute = if start_day && hour == start.hour() {
                            start.minute()
                        } else {
                            0
                        };
                        let later = self.minutes >> first_minute;
                        if later != 0 {
                            let minute = first_minute + later.trailing_zeros();
                            return Some(date.and_hms_opt(hour, minute, 0)?.and_utc());
                        }
                    }
                }
            }
            if month == 12 {
                month = 1;
                year += 1;
            } else {
                month += 1;
            }
        }
        None
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days != ALL_DAYS, self.weekdays != ALL_WEEKDAYS) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }
}

impl PartialEq for CronPattern {
    /// Patterns are equal when they fire at the same minutes, however they
    /// are written.
    fn eq(&self, other: &Self) -> bool {
        (
            self.minutes,
            self.hours,
            self.days,
            self.months,
            self.weekdays,
        ) == (
            other.minutes,
            other.hours,
            other.days,
            other.months,
            other.weekdays,
        )
    }
}

impl Eq for CronPattern {}

impl fmt::Display for CronPattern {
    /// The five fields as written, separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronPattern {
    type Err = CrontabError;

    /// Same as [`CronPattern::parse`].
    ///
    /// ```
    /// let pattern: graphile_worker::CronPattern = "0 4 * * *".parse().unwrap();
    /// assert_eq!(pattern.to_string(), "0 4 * * *");
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronPattern::parse(s)
    }
}

/// Rounds down to the start of the minute.
pub(crate) fn floor_to_minute(time: DateTime<Utc>) -> DateTime<Utc> {
    let ms = time.timestamp_millis();
    let floored = ms - ms.rem_euclid(60_000);
    DateTime::from_timestamp_millis(floored).unwrap_or(time)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

/// Whitespace as JavaScript's `\s` and `trim()` see it.
pub(crate) fn is_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{FEFF}'
}

pub(crate) fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// A whitespace-separated token of a line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub(crate) text: &'a str,
    /// Byte offset in the line.
    pub(crate) start: usize,
    /// Column (from 1, in characters) in the line.
    pub(crate) column: usize,
}

/// Splits `line` on runs of whitespace into at most `max` tokens.
pub(crate) fn split_fields(line: &str, max: usize) -> Vec<Token<'_>> {
    let mut tokens: Vec<Token<'_>> = Vec::new();
    // (byte offset, column) of the token being read.
    let mut current: Option<(usize, usize)> = None;
    for (column, (i, c)) in line.char_indices().enumerate() {
        match (current, is_space(c)) {
            (Some((start, col)), true) => {
                tokens.push(Token {
                    text: &line[start..i],
                    start,
                    column: col,
                });
                current = None;
            }
            (None, false) => {
                if tokens.len() == max {
                    break;
                }
                current = Some((i, column + 1));
            }
            _ => {}
        }
    }
    if let Some((start, column)) = current {
        tokens.push(Token {
            text: &line[start..],
            start,
            column,
        });
    }
    tokens
}

/// A run of decimal digits, compared by value however long it is.
#[derive(Clone, Copy)]
struct Number<'a> {
    /// Without leading zeros ("" for zero).
    digits: &'a str,
}

impl<'a> Number<'a> {
    fn new(text: &'a str) -> Self {
        Number {
            digits: text.trim_start_matches('0'),
        }
    }

    /// The value if it fits, else `u32::MAX`, which is out of every range.
    fn value(self) -> u32 {
        self.digits
            .parse()
            .unwrap_or(if self.digits.is_empty() { 0 } else { u32::MAX })
    }

    fn is_greater_than(self, other: Number<'_>) -> bool {
        (self.digits.len(), self.digits) > (other.digits.len(), other.digits)
    }

    fn display(self) -> String {
        if self.digits.is_empty() {
            "0".to_owned()
        } else {
            self.digits.to_owned()
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses one field into a bit mask; errors carry the column.
fn parse_field(field: CronField, text: &str, column: usize) -> Result<u64, ColumnError> {
    check_characters(field, text, column)?;
    let (min, max) = field.range();
    let mut mask = 0u64;
    let mut part_column = column;
    for text in text.split(',') {
        let part = FieldPart {
            field,
            text,
            column: part_column,
        };
        part_column += text.len() + 1;
        let (first, last, step) = part.values()?;
        for n in (first..=last).step_by(step) {
            // Day of week 7 is Sunday, 0.
            mask |= 1 << if n > max { min } else { n };
        }
    }
    Ok(mask)
}

/// Refuses the first character that no field may contain, such as the `M`
/// of `MON`.
pub(crate) fn check_characters(
    field: CronField,
    text: &str,
    column: usize,
) -> Result<(), ColumnError> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| !matches!(c, '0'..='9' | '*' | '/' | ',' | '-'))
    {
        Some((i, character)) => Err((
            column + i,
            CrontabErrorKind::InvalidCharacter { field, character },
        )),
        None => Ok(()),
    }
}

/// One comma-separated part of a field: `N`, `a-b`, `*` or `*/n`.
#[derive(Clone, Copy)]
struct FieldPart<'a> {
    field: CronField,
    text: &'a str,
    /// Where the part starts; every error about it points here.
    column: usize,
}

impl FieldPart<'_> {
    /// The values the part selects: first, last and step.
    fn values(self) -> Result<(u32, u32, usize), ColumnError> {
        if all_digits(self.text) {
            let n = self.in_range(Number::new(self.text))?;
            Ok((n, n, 1))
        } else if let Some((a, b)) = self.text.split_once('-') {
            self.range(a, b)
        } else if let Some(rest) = self.text.strip_prefix('*') {
            self.every(rest)
        } else {
            Err(self.unsupported())
        }
    }

    /// `a-b`, checked as graphile-worker does.
    fn range(self, a: &str, b: &str) -> Result<(u32, u32, usize), ColumnError> {
        if !all_digits(a) || !all_digits(b) {
            return Err(self.unsupported());
        }
        let (a, b) = (Number::new(a), Number::new(b));
        if !b.is_greater_than(a) {
            return Err(self.error(CrontabErrorKind::InvalidRange {
                field: self.field,
                part: self.text.to_owned(),
            }));
        }
        // The first value that graphile-worker would refuse, walking from a
        // to b.
        let first = self.in_range(a)?;
        let top = self.top();
        if b.value() > top {
            let value = (top + 1).to_string();
            return Err(self.error(CrontabErrorKind::TooLarge {
                field: self.field,
                value,
            }));
        }
        Ok((first, b.value(), 1))
    }

    /// `*` or `*/n`, given what follows the `*`.
    fn every(self, rest: &str) -> Result<(u32, u32, usize), ColumnError> {
        let (min, max) = self.field.range();
        let step = match rest.strip_prefix('/') {
            None if rest.is_empty() => 1,
            Some(divisor) if all_digits(divisor) => match Number::new(divisor).value() {
                0 => {
                    return Err(self.error(CrontabErrorKind::ZeroDivisor {
                        field: self.field,
                        part: self.text.to_owned(),
                    }));
                }
                step => step,
            },
            _ => return Err(self.unsupported()),
        };
        Ok((min, max, step as usize))
    }

    /// The value of `n`, if the field accepts it.
    fn in_range(self, n: Number<'_>) -> Result<u32, ColumnError> {
        let (min, _) = self.field.range();
        if n.value() >= min && n.value() <= self.top() {
            return Ok(n.value());
        }
        let (field, value) = (self.field, n.display());
        Err(self.error(if n.value() < min {
            CrontabErrorKind::TooSmall { field, value }
        } else {
            CrontabErrorKind::TooLarge { field, value }
        }))
    }

    /// The largest value the field accepts: day of week also takes 7,
    /// meaning 0.
    fn top(self) -> u32 {
        let (_, max) = self.field.range();
        if self.field == CronField::DayOfWeek {
            max + 1
        } else {
            max
        }
    }

    fn unsupported(self) -> ColumnError {
        self.error(CrontabErrorKind::UnsupportedSyntax {
            field: self.field,
            part: self.text.to_owned(),
        })
    }

    fn error(self, kind: CrontabErrorKind) -> ColumnError {
        (self.column, kind)
    }
}
