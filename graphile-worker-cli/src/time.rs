//! Times and durations on the command line.

use chrono::{DateTime, Duration, Utc};

/// An RFC 3339 time (`2026-12-24T18:00:00Z`, `2026-12-24T19:00:00+01:00`),
/// or `now`.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if text == "now" {
        return Ok(Utc::now());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}; give an RFC 3339 time such as 2026-12-24T18:00:00Z, or now"))
}

/// A duration: numbers with units `ms`, `s`, `m`, `h`, `d`, run together
/// (`90s`, `1h30m`, `2d`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration; write it like 30s, 5m, 1h30m or 2d");
    let mut total = Duration::zero();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::try_milliseconds(number),
            "s" => Duration::try_seconds(number),
            "m" => Duration::try_minutes(number),
            "h" => Duration::try_hours(number),
            "d" => Duration::try_days(number),
            _ => None,
        }
        .ok_or_else(invalid)?;
        total = total.checked_add(&part).ok_or_else(invalid)?;
        rest = &rest[unit..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::days(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::milliseconds(250)));
        for bad in ["", "5", "m", "5x", "1h 30m", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn times_are_rfc_3339() {
        assert_eq!(
            parse_time("2026-12-24T19:00:00+01:00").map(|t| t.to_rfc3339()),
            Ok("2026-12-24T18:00:00+00:00".to_owned())
        );
        assert!(parse_time("tomorrow").unwrap_err().contains("RFC 3339"));
    }
}
