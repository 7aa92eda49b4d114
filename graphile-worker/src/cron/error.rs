//! Why a crontab or a cron pattern was refused.

use std::fmt;

/// One of the five time fields of a cron pattern.
///
/// ```
/// use graphile_worker::CronField;
/// assert_eq!(CronField::DayOfWeek.to_string(), "days of week");
/// assert_eq!(CronField::Minute.range(), (0, 59));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Minute, 0–59.
    Minute,
    /// Hour, 0–23.
    Hour,
    /// Day of the month, 1–31.
    DayOfMonth,
    /// Month, 1–12.
    Month,
    /// Day of the week, 0–6 with Sunday as 0; 7 is also Sunday.
    DayOfWeek,
}

impl CronField {
    /// The five fields in the order they appear in a pattern.
    pub(crate) const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    /// The smallest and largest value the field takes. Day of week also
    /// accepts 7, which means Sunday (0).
    ///
    /// ```
    /// use graphile_worker::CronField;
    /// assert_eq!(CronField::DayOfMonth.range(), (1, 31));
    /// assert_eq!(CronField::DayOfWeek.range(), (0, 6));
    /// ```
    pub fn range(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 6),
        }
    }

    /// The name graphile-worker uses for the field in its messages.
    fn node_name(self) -> &'static str {
        match self {
            CronField::Minute => "minutes",
            CronField::Hour => "hours",
            CronField::DayOfMonth => "dates",
            CronField::Month => "months",
            CronField::DayOfWeek => "days of week",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.node_name())
    }
}

/// A crontab line, or a cron pattern, that was refused, with where it
/// went wrong.
///
/// Lines and columns count from 1; columns count characters of the line as
/// written, leading whitespace included. A pattern parsed on its own with
/// [`CronPattern::parse`](crate::CronPattern::parse) has no line.
///
/// ```
/// use graphile_worker::{parse_crontab, CrontabErrorKind};
/// let err = parse_crontab("# nightly\n0 4 * * * report\n0 60 * * * broken\n").unwrap_err();
/// assert_eq!(err.line(), Some(3));
/// assert_eq!(err.column(), 3);
/// assert!(matches!(err.kind(), CrontabErrorKind::TooLarge { .. }));
/// assert_eq!(
///     err.to_string(),
///     "line 3, column 3 of crontab: too large value '60' in hours range: expected values in the range 0-23"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {kind}", Location { line: self.line, column: self.column })]
pub struct CrontabError {
    line: Option<usize>,
    column: usize,
    kind: CrontabErrorKind,
}

impl CrontabError {
    pub(crate) fn new(line: Option<usize>, column: usize, kind: CrontabErrorKind) -> Self {
        Self { line, column, kind }
    }

    /// The line of the crontab (from 1), or `None` for a pattern parsed on
    /// its own.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The column (from 1, in characters) where the problem starts.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong.
    pub fn kind(&self) -> &CrontabErrorKind {
        &self.kind
    }
}

/// What is wrong and the column where it starts, before the line is known.
pub(crate) type ColumnError = (usize, CrontabErrorKind);

struct Location {
    line: Option<usize>,
    column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}, column {} of crontab", self.column),
            None => write!(f, "column {} of cron pattern", self.column),
        }
    }
}

/// What is wrong with a crontab line. The messages follow graphile-worker's
/// wording where it has one.
///
/// ```
/// use graphile_worker::{CronPattern, CronField, CrontabErrorKind};
/// let err = CronPattern::parse("*/0 * * * *").unwrap_err();
/// assert_eq!(
///     err.kind(),
///     &CrontabErrorKind::ZeroDivisor { field: CronField::Minute, part: "*/0".into() }
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrontabErrorKind {
    /// The line does not have five time fields followed by a task.
    #[error(
        "could not process line: expected five time fields (minute, hour, day of month, month, day of week) followed by a task identifier, found {found} field(s)"
    )]
    MissingFields {
        /// How many whitespace-separated fields the line has (the task
        /// included).
        found: usize,
    },

    /// A pattern parsed on its own does not have exactly five fields.
    #[error(
        "expected exactly five time fields (minute, hour, day of month, month, day of week), found {found}"
    )]
    PatternFieldCount {
        /// How many whitespace-separated fields the pattern has.
        found: usize,
    },

    /// A time field contains something other than digits, `*`, `/`, `,` and
    /// `-`.
    #[error(
        "unsupported character '{character}' in {field} field: only digits, '*', '/', ',' and '-' are allowed (names such as MON, macros such as @daily, and L, W or # are not supported)"
    )]
    InvalidCharacter {
        /// The field.
        field: CronField,
        /// The first character that is not allowed.
        character: char,
    },

    /// A value above the field's range.
    #[error(
        "too large value '{value}' in {field} range: expected values in the range {min}-{max}",
        min = field.range().0,
        max = field.range().1
    )]
    TooLarge {
        /// The field.
        field: CronField,
        /// The value as a decimal number.
        value: String,
    },

    /// A value below the field's range.
    #[error(
        "too small value '{value}' in {field} range: expected values in the range {min}-{max}",
        min = field.range().0,
        max = field.range().1
    )]
    TooSmall {
        /// The field.
        field: CronField,
        /// The value as a decimal number.
        value: String,
    },

    /// A range `a-b` whose end is not after its start.
    #[error("invalid range '{part}' in {field} range: destination is not larger than source")]
    InvalidRange {
        /// The field.
        field: CronField,
        /// The range as written.
        part: String,
    },

    /// `*/0`.
    #[error(
        "invalid wildcard expression '{part}' in {field} range: divisor '{divisor}' expected to be greater than zero",
        divisor = part.get(2..).unwrap_or_default()
    )]
    ZeroDivisor {
        /// The field.
        field: CronField,
        /// The expression as written.
        part: String,
    },

    /// A list element that is not `N`, `a-b`, `*` or `*/n`.
    #[error(
        "unsupported syntax '{part}' in {field} range: this doesn't appear to be a number, range or wildcard{}",
        if part.contains('/') && !part.starts_with('*') {
            " (steps are only allowed on '*', as in graphile-worker; list the values instead)"
        } else {
            ""
        }
    )]
    UnsupportedSyntax {
        /// The field.
        field: CronField,
        /// The list element as written.
        part: String,
    },

    /// The text after the time fields is not `task [?options] [{payload}]`.
    #[error(
        "invalid command specification '{command}': expected a task identifier (letters, digits, '_', ':', '/', '-'; not starting with a digit), then optionally whitespace and ?options without spaces, then optionally whitespace and a {{...}} JSON5 payload"
    )]
    InvalidCommand {
        /// The command as written.
        command: String,
    },

    /// The task identifier is longer than the database accepts.
    #[error("task identifier '{task}' is longer than 128 characters, which the database refuses")]
    TaskTooLong {
        /// The task identifier.
        task: String,
    },

    /// An option has a value the option does not accept.
    #[error(
        "options contain invalid value for '{key}', value '{value}' is not compatible with this option: expected {expected}"
    )]
    InvalidOptionValue {
        /// The option.
        key: String,
        /// The value after URL-decoding.
        value: String,
        /// What the option accepts.
        expected: &'static str,
    },

    /// An option given more than once.
    #[error("options contain invalid value for '{key}', did you specify it more than once?")]
    RepeatedOption {
        /// The option.
        key: String,
    },

    /// An option graphile-worker does not know.
    #[error(
        "options contain unsupported key '{key}'; supported keys are: 'id', 'fill', 'max', 'queue', 'jobKey', 'jobKeyMode', 'priority'"
    )]
    UnknownOption {
        /// The option as written (URL-decoded).
        key: String,
    },

    /// A `fill=` value that is not a time phrase such as `4w3d2h1m`.
    #[error(
        "invalid time phrase '{phrase}', did not understand '{rest}': expected groups of a number and one of s, m, h, d, w such as 1h30m"
    )]
    InvalidTimePhrase {
        /// The whole phrase.
        phrase: String,
        /// The part that could not be read.
        rest: String,
    },

    /// The payload is not a JSON5 object.
    #[error("failed to parse JSON5 payload: {message}")]
    InvalidPayload {
        /// What the JSON5 parser said.
        message: String,
    },

    /// Two lines share one identifier.
    #[error(
        "duplicate identifier '{identifier}', also used on line {first_line}; please use '?id=...' to specify unique identifiers for your cron items"
    )]
    DuplicateIdentifier {
        /// The identifier.
        identifier: String,
        /// The line that used it first.
        first_line: usize,
    },
}
