//! Parser and matcher tests: next fire times for a table of expressions,
//! and every error with its line and column.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(&format!("{s}:00"), "%Y-%m-%d %H:%M:%S"))
        .unwrap_or_else(|e| panic!("bad time {s}: {e}"))
        .and_utc()
}

/// (pattern, after, next fire time)
const NEXT: &[(&str, &str, &str)] = &[
    // Plain daily, strictly after, seconds ignored.
    ("0 4 * * *", "2024-01-01 03:59:30", "2024-01-01 04:00"),
    ("0 4 * * *", "2024-01-01 04:00", "2024-01-02 04:00"),
    ("0 4 * * *", "2024-01-01 04:00:59", "2024-01-02 04:00"),
    ("* * * * *", "2024-12-31 23:59:59", "2025-01-01 00:00"),
    ("5-10 * * * *", "2024-01-01 04:10", "2024-01-01 05:05"),
    ("0,30 * * * *", "2024-01-01 04:00", "2024-01-01 04:30"),
    ("0 0 1 1 *", "2024-06-01 00:00", "2025-01-01 00:00"),
    ("0 0 1 1,7 *", "2024-01-01 00:00", "2024-07-01 00:00"),
    ("*/15 9-17 * * 1-5", "2024-01-05 17:45", "2024-01-08 09:00"),
    // Leap years: Feb 29 only in leap years, and 2100 is not one.
    ("0 0 29 2 *", "2023-01-01 00:00", "2024-02-29 00:00"),
    ("0 0 29 2 *", "2024-02-29 00:00", "2028-02-29 00:00"),
    ("0 0 29 2 *", "2096-03-01 00:00", "2104-02-29 00:00"),
    ("0 0 * 2 *", "2024-02-28 00:00", "2024-02-29 00:00"),
    ("0 0 * 2 *", "2023-02-28 00:00", "2024-02-01 00:00"),
    ("* * * * *", "2024-02-29 23:59", "2024-03-01 00:00"),
    // Month ends: the 31st skips short months.
    ("0 0 31 * *", "2024-01-31 00:00", "2024-03-31 00:00"),
    ("0 0 31 * *", "2024-03-31 00:00", "2024-05-31 00:00"),
    ("0 0 31 * *", "2024-07-31 00:00", "2024-08-31 00:00"),
    ("0 0 31 * *", "2024-08-31 00:00", "2024-10-31 00:00"),
    ("0 0 30 * *", "2024-01-30 00:00", "2024-03-30 00:00"),
    ("0 0 30 * *", "2023-01-30 00:00", "2023-03-30 00:00"),
    // Day of week: 0 and 7 are Sunday (2024-03-01 is a Friday).
    ("0 12 * * 0", "2024-03-01 00:00", "2024-03-03 12:00"),
    ("0 12 * * 7", "2024-03-01 00:00", "2024-03-03 12:00"),
    ("0 12 * * 5-7", "2024-03-02 12:00", "2024-03-03 12:00"),
    ("0 12 * * 6,7", "2024-03-03 12:00", "2024-03-09 12:00"),
    // Day of month and day of week both restricted: either one (the 13th
    // or a Friday; 2024-01-05 and 2024-01-12 are Fridays).
    ("0 0 13 * 5", "2024-01-01 00:00", "2024-01-05 00:00"),
    ("0 0 13 * 5", "2024-01-12 00:00", "2024-01-13 00:00"),
    ("0 0 13 * 5", "2024-01-13 00:00", "2024-01-19 00:00"),
    ("0 0 1 * 1", "2024-01-08 00:00", "2024-01-15 00:00"),
    // Only day of week restricted.
    ("0 0 * * 5", "2024-01-12 00:00", "2024-01-19 00:00"),
    // 1-7 is every day, so only day of month counts.
    ("0 0 13 * 1-7", "2024-01-01 00:00", "2024-01-13 00:00"),
    // */2 in day of week: Sun, Tue, Thu, Sat (2024-01-01 is a Monday).
    ("0 0 * * */2", "2024-01-01 00:00", "2024-01-02 00:00"),
    ("0 0 * * */2", "2024-01-02 00:00", "2024-01-04 00:00"),
    ("0 0 * * */2", "2024-01-04 00:00", "2024-01-06 00:00"),
    ("0 0 * * */2", "2024-01-06 00:00", "2024-01-07 00:00"),
    // */2 in day of month: 1, 3, ..., 31, then the 1st.
    ("0 0 */2 * *", "2024-01-31 00:00", "2024-02-01 00:00"),
    ("0 0 */2 * *", "2024-02-01 00:00", "2024-02-03 00:00"),
    // */1 is the full range everywhere, and counts as unrestricted.
    (
        "*/1 */1 */1 */1 */1",
        "2024-02-29 23:59",
        "2024-03-01 00:00",
    ),
    ("0 0 */1 * 1", "2024-01-01 00:00", "2024-01-08 00:00"),
    ("0 0 13 */1 */1", "2024-01-01 00:00", "2024-01-13 00:00"),
    // Impossible dates combined with a weekday still fire on the weekday.
    ("0 0 31 2 1", "2024-01-31 00:00", "2024-02-05 00:00"),
];

#[test]
fn next_fire_times() {
    for &(pattern, after, expected) in NEXT {
        let p = CronPattern::parse(pattern).unwrap();
        assert_eq!(
            p.next_after(t(after)),
            Some(t(expected)),
            "{pattern} after {after}"
        );
        assert!(p.matches(t(expected)), "{pattern} matches {expected}");
    }
}

#[test]
fn impossible_dates_never_fire() {
    for pattern in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"] {
        let p = CronPattern::parse(pattern).unwrap();
        assert_eq!(p.next_after(t("2024-01-01 00:00")), None, "{pattern}");
    }
}

#[test]
fn next_after_agrees_with_minute_by_minute_matching() {
    let patterns = [
        "* * * * *",
        "7 * * * *",
        "*/7 */5 * * *",
        "0 0 31 * *",
        "0 12 * * 0",
        "30 6 13 * 5",
        "0 0 */3 * */2",
        "15,45 1-3 1-10 * 1",
        "59 23 28-31 * *",
        "0 0 29 2 1-7",
    ];
    let starts = [
        "2023-12-30 22:58:10",
        "2024-02-27 23:59",
        "2024-07-31 23:30",
    ];
    let window = TimeDelta::days(40);
    for pattern in patterns {
        let p = CronPattern::parse(pattern).unwrap();
        for start in starts {
            let start = t(start);
            let mut minute = super::pattern::floor_to_minute(start) + TimeDelta::minutes(1);
            let brute = loop {
                if minute > start + window {
                    break None;
                }
                if p.matches(minute) {
                    break Some(minute);
                }
                minute += TimeDelta::minutes(1);
            };
            match brute {
                Some(expected) => assert_eq!(p.next_after(start), Some(expected), "{pattern}"),
                None => assert!(p.next_after(start).is_none_or(|n| n > start + window)),
            }
        }
    }
}

#[test]
fn patterns_compare_by_the_minutes_they_match() {
    let a = CronPattern::parse("*/1 * 1-31 * 0-6").unwrap();
    let b = CronPattern::parse("* * * * 7,1-6").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "*/1 * 1-31 * 0-6");
    assert_ne!(a, CronPattern::parse("* * * * 1").unwrap());
}

#[test]
fn whole_crontab_with_every_option() {
    let text = "\u{FEFF}# comment\r\n\
                \r\n\
                \t  0\t4 * *  *   daily_report\r\n\
                */5 * * * 1-5 poll:feeds/rss ?id=feeds&fill=1w2d3h4m5s&max=3&queue=q_1:a-b&priority=-5&jobKey=k%2Fa+b&jobKeyMode=preserve_run_at {\"a\": [1, 2], \"_cron\": 0}\n\
                   # indented comment\n\
                0 0 1 1 * new_year ?jobKey=ny\n";
    let items = parse_crontab(text).unwrap();
    assert_eq!(items.len(), 3);

    let daily = &items[0];
    assert_eq!(daily.identifier, "daily_report");
    assert_eq!(daily.task, "daily_report");
    assert_eq!(daily.pattern, CronPattern::parse("0 4 * * *").unwrap());
    assert_eq!(daily.options, CronOptions::default());
    assert!(daily.payload.is_empty());

    let feeds = &items[1];
    assert_eq!(feeds.identifier, "feeds");
    assert_eq!(feeds.task, "poll:feeds/rss");
    assert_eq!(
        feeds.options.fill,
        Duration::from_secs(7 * 86400 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5)
    );
    assert_eq!(feeds.options.max_attempts, Some(3));
    assert_eq!(feeds.options.queue_name.as_deref(), Some("q_1:a-b"));
    assert_eq!(feeds.options.priority, Some(-5));
    assert_eq!(feeds.options.job_key.as_deref(), Some("k/a b"));
    assert_eq!(feeds.options.job_key_mode, CronJobKeyMode::PreserveRunAt);
    assert_eq!(
        serde_json::Value::Object(feeds.payload.clone()),
        serde_json::json!({"a": [1, 2], "_cron": 0})
    );

    let new_year = &items[2];
    assert_eq!(new_year.options.job_key.as_deref(), Some("ny"));
    assert_eq!(new_year.options.job_key_mode, CronJobKeyMode::Replace);
}

#[test]
fn empty_and_comment_only_crontabs_have_no_items() {
    assert_eq!(parse_crontab("").unwrap(), vec![]);
    assert_eq!(parse_crontab("\n\r\n  # x\n#y").unwrap(), vec![]);
}

#[test]
fn node_edge_cases_that_parse() {
    // Options with an empty pair and a value-less key that is allowed to be
    // empty are not accepted; but `&&` between pairs is skipped.
    let items = parse_crontab("* * * * * t ?id=a&&max=2").unwrap();
    assert_eq!(items[0].identifier, "a");
    assert_eq!(items[0].options.max_attempts, Some(2));
    // A payload right after the task.
    let items = parse_crontab("* * * * * t {\"x\":1}").unwrap();
    assert_eq!(items[0].payload["x"], 1);
    // Invalid percent escapes stay as written.
    let items = parse_crontab("* * * * * t ?jobKey=100%25%zz").unwrap();
    assert_eq!(items[0].options.job_key.as_deref(), Some("100%%zz"));
    // Leading zeros are fine.
    assert!(parse_crontab("00 04 01 01 00 t").is_ok());
}

/// (crontab, line, column, message after the location)
const ERRORS: &[(&str, usize, usize, &str)] = &[
    (
        "0 60 * * * task",
        1,
        3,
        "too large value '60' in hours range: expected values in the range 0-23",
    ),
    (
        "60 * * * * task",
        1,
        1,
        "too large value '60' in minutes range: expected values in the range 0-59",
    ),
    (
        "* * 0 * * task",
        1,
        5,
        "too small value '0' in dates range: expected values in the range 1-31",
    ),
    (
        "* * * 0-3 * task",
        1,
        7,
        "too small value '0' in months range: expected values in the range 1-12",
    ),
    (
        "* * * 13 * task",
        1,
        7,
        "too large value '13' in months range: expected values in the range 1-12",
    ),
    (
        "* * * * 8 task",
        1,
        9,
        "too large value '8' in days of week range: expected values in the range 0-6",
    ),
    (
        "* * * * 5-9 task",
        1,
        9,
        "too large value '8' in days of week range: expected values in the range 0-6",
    ),
    (
        "50-70 * * * * task",
        1,
        1,
        "too large value '60' in minutes range: expected values in the range 0-59",
    ),
    (
        "1,2,99999999999999999999 * * * * task",
        1,
        5,
        "too large value '99999999999999999999' in minutes range: expected values in the range 0-59",
    ),
    (
        "* 5-3 * * * task",
        1,
        3,
        "invalid range '5-3' in hours range: destination is not larger than source",
    ),
    (
        "* 3-3 * * * task",
        1,
        3,
        "invalid range '3-3' in hours range: destination is not larger than source",
    ),
    (
        "*/0 * * * * task",
        1,
        1,
        "invalid wildcard expression '*/0' in minutes range: divisor '0' expected to be greater than zero",
    ),
    (
        "1-10/2 * * * * task",
        1,
        1,
        "unsupported syntax '1-10/2' in minutes range: this doesn't appear to be a number, range or wildcard (steps are only allowed on '*', as in graphile-worker; list the values instead)",
    ),
    (
        "1,,2 * * * * task",
        1,
        3,
        "unsupported syntax '' in minutes range: this doesn't appear to be a number, range or wildcard",
    ),
    (
        "* * * * -1 task",
        1,
        9,
        "unsupported syntax '-1' in days of week range: this doesn't appear to be a number, range or wildcard",
    ),
    (
        "* * * * MON task",
        1,
        9,
        "unsupported character 'M' in days of week field: only digits, '*', '/', ',' and '-' are allowed (names such as MON, macros such as @daily, and L, W or # are not supported)",
    ),
    (
        "@daily task",
        1,
        1,
        "unsupported character '@' in minutes field: only digits, '*', '/', ',' and '-' are allowed (names such as MON, macros such as @daily, and L, W or # are not supported)",
    ),
    (
        "* * * * *",
        1,
        10,
        "could not process line: expected five time fields (minute, hour, day of month, month, day of week) followed by a task identifier, found 5 field(s)",
    ),
    (
        "* * * * task",
        1,
        13,
        "could not process line: expected five time fields (minute, hour, day of month, month, day of week) followed by a task identifier, found 5 field(s)",
    ),
    (
        "* * * * * 1task",
        1,
        11,
        "invalid command specification '1task': expected a task identifier (letters, digits, '_', ':', '/', '-'; not starting with a digit), then optionally whitespace and ?options without spaces, then optionally whitespace and a {...} JSON5 payload",
    ),
    (
        "* * * * * task? ",
        1,
        11,
        "invalid command specification 'task?': expected a task identifier (letters, digits, '_', ':', '/', '-'; not starting with a digit), then optionally whitespace and ?options without spaces, then optionally whitespace and a {...} JSON5 payload",
    ),
    (
        "* * * * * task ?",
        1,
        11,
        "invalid command specification 'task ?': expected a task identifier (letters, digits, '_', ':', '/', '-'; not starting with a digit), then optionally whitespace and ?options without spaces, then optionally whitespace and a {...} JSON5 payload",
    ),
    (
        "* * * * * task {\"a\":1} ?id=x",
        1,
        11,
        "invalid command specification 'task {\"a\":1} ?id=x': expected a task identifier (letters, digits, '_', ':', '/', '-'; not starting with a digit), then optionally whitespace and ?options without spaces, then optionally whitespace and a {...} JSON5 payload",
    ),
    (
        "* * * * * task ?foo=1",
        1,
        17,
        "options contain unsupported key 'foo'; supported keys are: 'id', 'fill', 'max', 'queue', 'jobKey', 'jobKeyMode', 'priority'",
    ),
    (
        "* * * * * task ?job_key=1",
        1,
        17,
        "options contain unsupported key 'job_key'; supported keys are: 'id', 'fill', 'max', 'queue', 'jobKey', 'jobKeyMode', 'priority'",
    ),
    (
        "* * * * * task ?id=a&id=b",
        1,
        22,
        "options contain invalid value for 'id', did you specify it more than once?",
    ),
    (
        "* * * * * task ?max=0",
        1,
        17,
        "options contain invalid value for 'max', value '0' is not compatible with this option: expected a whole number of attempts from 1 to 32767",
    ),
    (
        "* * * * * task ?max=40000",
        1,
        17,
        "options contain invalid value for 'max', value '40000' is not compatible with this option: expected a whole number of attempts from 1 to 32767",
    ),
    (
        "* * * * * task ?priority=1.5",
        1,
        17,
        "options contain invalid value for 'priority', value '1.5' is not compatible with this option: expected a whole number from -32768 to 32767",
    ),
    (
        "* * * * * task ?id=1a",
        1,
        17,
        "options contain invalid value for 'id', value '1a' is not compatible with this option: expected letters, digits, '_' and '-', starting with a letter or '_'",
    ),
    (
        "* * * * * task ?queue=a%20b",
        1,
        17,
        "options contain invalid value for 'queue', value 'a b' is not compatible with this option: expected a queue name of at most 128 letters, digits, '-', '_' and ':'",
    ),
    (
        "* * * * * task ?jobKey=",
        1,
        17,
        "options contain invalid value for 'jobKey', value '' is not compatible with this option: expected a job key of 1 to 512 characters without line breaks",
    ),
    (
        "* * * * * task ?jobKey=a&jobKeyMode=unsafe_dedupe",
        1,
        26,
        "options contain invalid value for 'jobKeyMode', value 'unsafe_dedupe' is not compatible with this option: expected 'replace' or 'preserve_run_at' ('unsafe_dedupe' is not allowed for cron)",
    ),
    (
        "* * * * * task ?fill=1h30",
        1,
        17,
        "invalid time phrase '1h30', did not understand '30': expected groups of a number and one of s, m, h, d, w such as 1h30m",
    ),
    (
        "* * * * * task ?fill=2y",
        1,
        17,
        "invalid time phrase '2y', did not understand '2y': expected groups of a number and one of s, m, h, d, w such as 1h30m",
    ),
    (
        "* * * * * task {a: }",
        1,
        20,
        "failed to parse JSON5 payload: expected array, boolean, null, number, object, or string",
    ),
    (
        "# ok\n0 4 * * * a\r\n   0 60 * * * b\r\n",
        3,
        6,
        "too large value '60' in hours range: expected values in the range 0-23",
    ),
    (
        "* * * * * a\n0 * * * * a",
        2,
        11,
        "duplicate identifier 'a', also used on line 1; please use '?id=...' to specify unique identifiers for your cron items",
    ),
    (
        "* * * * * a ?id=x\n\n* * * * * b ?max=1&id=x",
        3,
        20,
        "duplicate identifier 'x', also used on line 1; please use '?id=...' to specify unique identifiers for your cron items",
    ),
];

#[test]
fn every_error_names_its_line_and_column() {
    for &(text, line, column, message) in ERRORS {
        let err = parse_crontab(text).expect_err(text);
        assert_eq!(
            (err.line(), err.column()),
            (Some(line), column),
            "position for {text:?}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("line {line}, column {column} of crontab: {message}"),
            "message for {text:?}"
        );
    }
}

#[test]
fn the_first_bad_line_is_reported_not_skipped() {
    let err = parse_crontab("* * * * * a\n1-10/2 * * * * b\n* * * * * c\n").unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(matches!(
        err.kind(),
        CrontabErrorKind::UnsupportedSyntax { field: CronField::Minute, part } if part == "1-10/2"
    ));
}

#[test]
fn payload_errors_point_into_the_payload() {
    let err = parse_crontab("* * * * * t {\"a\": tru}").unwrap_err();
    assert!(err.column() > 13, "{err}");
    assert!(matches!(
        err.kind(),
        CrontabErrorKind::InvalidPayload { .. }
    ));
    // A payload must be an object.
    assert!(parse_crontab("* * * * * t [1]").is_err());
}

#[test]
fn patterns_on_their_own() {
    let err = CronPattern::parse("* * * *").unwrap_err();
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "column 8 of cron pattern: expected exactly five time fields (minute, hour, day of month, month, day of week), found 4"
    );
    let err = CronPattern::parse("* * * * * *").unwrap_err();
    assert_eq!(err.column(), 11);
    let err = CronPattern::parse("  * 24 * * *").unwrap_err();
    assert_eq!(err.column(), 5);
    assert!(CronPattern::parse(" 0\t4  * * * ").is_ok());
}

#[test]
fn duplicate_identifiers_in_item_lists() {
    let p = CronPattern::parse("* * * * *").unwrap();
    let a = CronItem::new("a", p.clone());
    let b = CronItem::new("b", p);
    assert_eq!(duplicate_identifier(&[a.clone(), b.clone()]), None);
    assert_eq!(duplicate_identifier(&[a.clone(), b, a]), Some("a"));
}

/// The UTC minutes from `from` (inclusive) to `to` (exclusive) in which
/// `item` fires, found one minute at a time.
#[cfg(feature = "tz")]
fn fires_between(item: &CronItem, from: &str, to: &str) -> Vec<String> {
    let (mut minute, to) = (t(from), t(to));
    let mut fired = Vec::new();
    while minute < to {
        if item.fires_at(minute) {
            fired.push(minute.format("%Y-%m-%d %H:%M").to_string());
        }
        minute += TimeDelta::minutes(1);
    }
    fired
}

#[cfg(feature = "tz")]
fn zoned(pattern: &str, zone: &str) -> CronItem {
    let mut item = CronItem::new("t", CronPattern::parse(pattern).unwrap());
    item.options.time_zone = Some(CronTimeZone::parse(zone).unwrap());
    item
}

/// (zone, pattern, UTC window, the UTC minutes it fires in)
#[cfg(feature = "tz")]
type ZonedCase = (
    &'static str,
    &'static str,
    (&'static str, &'static str),
    &'static [&'static str],
);

#[cfg(feature = "tz")]
const ZONED: &[ZonedCase] = &[
    // Paris, 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00 UTC). A time in
    // the gap fires once, at the first minute after it.
    (
        "Europe/Paris",
        "30 2 * * *",
        ("2025-03-29 00:00", "2025-04-01 00:00"),
        &["2025-03-29 01:30", "2025-03-30 01:00", "2025-03-31 00:30"],
    ),
    // However many times a schedule matches inside the gap: once.
    (
        "Europe/Paris",
        "*/15 2 * * *",
        ("2025-03-30 00:00", "2025-03-30 03:00"),
        &["2025-03-30 01:00"],
    ),
    // A match in the gap and one right after it make one run.
    (
        "Europe/Paris",
        "0 2,3 * * *",
        ("2025-03-30 00:00", "2025-03-30 03:00"),
        &["2025-03-30 01:00"],
    ),
    // Times outside the gap are untouched by it.
    (
        "Europe/Paris",
        "0 1,4 * * *",
        ("2025-03-30 00:00", "2025-03-30 03:00"),
        &["2025-03-30 00:00", "2025-03-30 02:00"],
    ),
    // Paris, 2025-10-26: 03:00 CEST goes back to 02:00 CET (01:00 UTC). A
    // repeated time fires in its first pass only.
    (
        "Europe/Paris",
        "30 2 * * *",
        ("2025-10-25 00:00", "2025-10-28 00:00"),
        &["2025-10-25 00:30", "2025-10-26 00:30", "2025-10-27 01:30"],
    ),
    // An every-30-minutes schedule pauses for the repeated hour.
    (
        "Europe/Paris",
        "*/30 * * * *",
        ("2025-10-25 23:30", "2025-10-26 02:31"),
        &[
            "2025-10-25 23:30",
            "2025-10-26 00:00",
            "2025-10-26 00:30",
            "2025-10-26 02:00",
            "2025-10-26 02:30",
        ],
    ),
    // New York, 2025-03-09 and 2025-11-02, at 2 am local.
    (
        "America/New_York",
        "0 2 * * *",
        ("2025-03-08 00:00", "2025-03-11 00:00"),
        &["2025-03-08 07:00", "2025-03-09 07:00", "2025-03-10 06:00"],
    ),
    (
        "America/New_York",
        "0 1 * * *",
        ("2025-11-01 00:00", "2025-11-04 00:00"),
        &["2025-11-01 05:00", "2025-11-02 05:00", "2025-11-03 06:00"],
    ),
    // Lord Howe moves by 30 minutes: 02:00 becomes 02:30 on 2025-10-05
    // (15:30 UTC the day before).
    (
        "Australia/Lord_Howe",
        "15 2 * * *",
        ("2025-10-04 00:00", "2025-10-06 00:00"),
        &["2025-10-04 15:30", "2025-10-05 15:15"],
    ),
    // Samoa skipped 2011-12-30 whole: a job for noon that day ran at the
    // first minute of the 31st, once.
    (
        "Pacific/Apia",
        "0 12 30 12 *",
        ("2011-12-29 00:00", "2012-01-01 00:00"),
        &["2011-12-30 10:00"],
    ),
    // Day of week and month follow the local date: Monday 00:30 in Tokyo
    // is Sunday 15:30 UTC.
    (
        "Asia/Tokyo",
        "30 0 * * 1",
        ("2025-06-01 00:00", "2025-06-03 00:00"),
        &["2025-06-01 15:30"],
    ),
    // UTC as a zone changes nothing.
    (
        "UTC",
        "0 4 * * *",
        ("2025-03-30 00:00", "2025-03-31 00:00"),
        &["2025-03-30 04:00"],
    ),
];

#[cfg(feature = "tz")]
#[test]
fn zoned_schedules_across_daylight_saving_changes() {
    for &(zone, pattern, (from, to), expected) in ZONED {
        let item = zoned(pattern, zone);
        let mut fired = fires_between(&item, from, to);
        fired.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(fired, expected, "{pattern} in {zone}");
    }
}

#[cfg(feature = "tz")]
#[test]
fn zoned_next_fire_agrees_with_minute_by_minute_firing() {
    for &(zone, pattern, (from, to), _) in ZONED {
        let item = zoned(pattern, zone);
        let fired = fires_between(&item, from, to);
        let mut walked = Vec::new();
        let mut after = t(from) - TimeDelta::minutes(1);
        while let Some(next) = item.next_fire_after(after) {
            if next >= t(to) {
                break;
            }
            walked.push(next.format("%Y-%m-%d %H:%M").to_string());
            after = next;
        }
        assert_eq!(walked, fired, "{pattern} in {zone}");
    }
    // From inside the second pass of a repeated hour, the next run is the
    // next day's, not the first pass behind us.
    let item = zoned("30 2 * * *", "Europe/Paris");
    assert_eq!(
        item.next_fire_after(t("2025-10-26 01:10")),
        Some(t("2025-10-27 01:30"))
    );
    // Every five minutes, asked from the second pass: every candidate up to
    // the end of the fold maps back into the first pass; the answer is 03:00
    // local, 02:00 UTC.
    let item = zoned("*/5 * * * *", "Europe/Paris");
    assert_eq!(
        item.next_fire_after(t("2025-10-26 01:10")),
        Some(t("2025-10-26 02:00"))
    );
}

#[cfg(feature = "tz")]
#[test]
fn crontab_tz_option() {
    let items = parse_crontab("0 9 * * 1-5 standup ?tz=Europe%2FParis&id=standup\n").unwrap();
    assert_eq!(
        items[0].options.time_zone.map(|z| z.name()),
        Some("Europe/Paris")
    );
    let items = parse_crontab("0 9 * * * report ?tz=America/New_York").unwrap();
    assert_eq!(
        items[0].options.time_zone.map(|z| z.to_string()),
        Some("America/New_York".into())
    );
    // Lines without the option stay in UTC.
    assert_eq!(
        parse_crontab("0 9 * * * report").unwrap()[0]
            .options
            .time_zone,
        None
    );

    let err = parse_crontab("0 9 * * * report ?tz=Paris").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 19 of crontab: options contain invalid value for 'tz', value 'Paris' is not compatible with this option: expected an IANA time zone name such as 'Europe/Paris' or 'UTC' (case-sensitive)"
    );
    let err = parse_crontab("0 9 * * * report ?tz=europe/paris").unwrap_err();
    assert!(err.to_string().contains("value 'europe/paris'"), "{err}");
    let err = parse_crontab("0 9 * * * report ?tz=UTC&tz=UTC").unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
}

#[cfg(not(feature = "tz"))]
#[test]
fn tz_option_without_the_feature_says_which_feature() {
    let err = parse_crontab("0 9 * * * report ?tz=Europe/Paris").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 19 of crontab: options contain invalid value for 'tz', value 'Europe/Paris' is not compatible with this option: expected a time zone, which needs the `tz` feature of the graphile-worker crate"
    );
    assert_eq!(
        CronTimeZone::parse("UTC").unwrap_err().to_string(),
        "time zone \"UTC\" needs the `tz` feature of the graphile-worker crate: add features = [\"tz\"] to its line in Cargo.toml"
    );
}

#[test]
fn payloads_are_json5_as_in_node() {
    // (payload as written, what the job gets)
    let cases: &[(&str, serde_json::Value)] = &[
        (
            "{isMinutely: true}",
            serde_json::json!({"isMinutely": true}),
        ),
        (
            "{'single': 'quotes'}",
            serde_json::json!({"single": "quotes"}),
        ),
        (
            "{a: 1, b: [1, 2,],}",
            serde_json::json!({"a": 1, "b": [1, 2]}),
        ),
        (
            "{/* inline */ a: 'x' /* comments */}",
            serde_json::json!({"a": "x"}),
        ),
        (
            "{hex: 0x1F, half: .5, plus: +3}",
            serde_json::json!({"hex": 31, "half": 0.5, "plus": 3}),
        ),
        (
            "{\"plain\": \"json\", \"n\": null}",
            serde_json::json!({"plain": "json", "n": null}),
        ),
        (
            "{nested: {deep: ['a', \"b\"]}}",
            serde_json::json!({"nested": {"deep": ["a", "b"]}}),
        ),
        (
            "{'it\\'s': \"quoted \\\"twice\\\"\"}",
            serde_json::json!({"it's": "quoted \"twice\""}),
        ),
    ];
    for (payload, expected) in cases {
        let line = format!("0 4 * * * digest ?id=d {payload}");
        let items = parse_crontab(&line).unwrap_or_else(|e| panic!("{payload}: {e}"));
        assert_eq!(
            serde_json::Value::Object(items[0].payload.clone()),
            *expected,
            "{payload}"
        );
    }
    // Still an object (an array does not even look like a payload, as in
    // Node), and still an error that points into the payload.
    let err = parse_crontab("0 4 * * * digest ['a']").unwrap_err();
    assert!(err.to_string().contains("a {...} JSON5 payload"), "{err}");
    let err = parse_crontab("0 4 * * * digest {a: 'unterminated}").unwrap_err();
    assert!(err.column() >= 18, "{err}");
}
