//! Crontab text: lines of `MIN HOUR DOM MON DOW task ?options {payload}`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::{ColumnError, CronField, CrontabError, CrontabErrorKind};
use super::pattern::{CronPattern, Token, char_len, check_characters, is_space, split_fields};
use super::zone::{CronTimeZone, CronTimeZoneError};
use crate::spec::JobKeyMode;

/// One recurring job: which task to run, when, and with what.
///
/// Usually read from crontab text with [`parse_crontab`]; build one in code
/// with [`CronItem::new`] and adjust its public fields.
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::{CronItem, CronPattern};
///
/// let mut item = CronItem::new("send_digest", CronPattern::parse("0 4 * * *").unwrap());
/// item.identifier = "daily_digest".into();
/// item.options.fill = Duration::from_secs(6 * 3600);
/// item.payload.insert("kind".into(), "daily".into());
/// assert_eq!(item.task, "send_digest");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CronItem {
    /// Names this schedule in the database (`_private_known_crontabs`), which
    /// is how every worker, Node or Rust, agrees that a minute has been
    /// scheduled. Defaults to the task identifier. Changing it makes the
    /// schedule "new": it is not backfilled, and during a rolling deploy old
    /// and new workers may both schedule the same minute.
    pub identifier: String,
    /// The task identifier the jobs are for.
    pub task: String,
    /// When it fires: UTC, or local time in
    /// [`options.time_zone`](CronOptions::time_zone).
    pub pattern: CronPattern,
    /// Backfill and job options.
    pub options: CronOptions,
    /// The job payload. Each job also gets a `_cron` key with the scheduled
    /// minute and whether it was backfilled, replacing any `_cron` here.
    pub payload: Map<String, Value>,
}

impl CronItem {
    /// An item for `task` firing on `pattern`, identified by the task name,
    /// with default options and an empty payload.
    ///
    /// ```
    /// use graphile_worker::{CronItem, CronPattern};
    /// let item = CronItem::new("cleanup", "*/5 * * * *".parse::<CronPattern>().unwrap());
    /// assert_eq!(item.identifier, "cleanup");
    /// assert!(item.payload.is_empty());
    /// ```
    pub fn new(task: impl Into<String>, pattern: CronPattern) -> Self {
        let task = task.into();
        CronItem {
            identifier: task.clone(),
            task,
            pattern,
            options: CronOptions::default(),
            payload: Map::new(),
        }
    }

    /// Whether the item fires in the UTC minute holding `minute`, reading
    /// its pattern in its time zone (UTC when it has none).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use graphile_worker::{CronItem, CronPattern};
    /// let item = CronItem::new("report", CronPattern::parse("0 9 * * *").unwrap());
    /// assert!(item.fires_at(Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap()));
    /// ```
    pub fn fires_at(&self, minute: DateTime<Utc>) -> bool {
        match &self.options.time_zone {
            Some(zone) => zone.fires(&self.pattern, minute),
            None => self.pattern.matches(minute),
        }
    }

    /// The first UTC minute strictly after `after` in which the item fires,
    /// in its time zone; `None` if it never fires again.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use graphile_worker::{CronItem, CronPattern};
    /// let item = CronItem::new("report", CronPattern::parse("0 9 * * *").unwrap());
    /// let after = Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap();
    /// assert_eq!(item.next_fire_after(after), Some(Utc.with_ymd_and_hms(2025, 6, 2, 9, 0, 0).unwrap()));
    /// ```
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.options.time_zone {
            Some(zone) => zone.next_after(&self.pattern, after),
            None => self.pattern.next_after(after),
        }
    }
}

/// How a cron item backfills and what its jobs look like; `None` means the
/// database default.
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::{CronJobKeyMode, CronOptions};
/// let mut options = CronOptions::default();
/// options.fill = Duration::from_secs(3600);
/// options.job_key = Some("digest".into());
/// assert_eq!(options.job_key_mode, CronJobKeyMode::Replace);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CronOptions {
    /// How far back to schedule missed runs when a worker starts (`fill=`).
    /// Only minutes after the identifier was first seen, and after its last
    /// scheduled run, are filled. Zero (the default) fills nothing.
    pub fill: Duration,
    /// `max_attempts` of the jobs (`max=`); at least 1.
    pub max_attempts: Option<i16>,
    /// Named queue of the jobs (`queue=`).
    pub queue_name: Option<String>,
    /// Priority of the jobs (`priority=`); smaller runs first.
    pub priority: Option<i16>,
    /// Job key (`jobKey=`): a new run replaces a pending one with this key.
    pub job_key: Option<String>,
    /// What replacing keeps (`jobKeyMode=`); only used with a job key.
    pub job_key_mode: CronJobKeyMode,
    /// The time zone the pattern is read in (`tz=`, such as
    /// `tz=Europe/Paris`); `None` reads it in UTC, as graphile-worker does.
    /// Node graphile-worker refuses crontab lines with `tz=`.
    pub time_zone: Option<CronTimeZone>,
}

/// The job-key modes a cron item may use. graphile-worker does not allow
/// `unsafe_dedupe` for cron, because it silently skips runs while a job with
/// the key exists.
///
/// ```
/// use graphile_worker::{CronJobKeyMode, JobKeyMode};
/// assert_eq!(CronJobKeyMode::PreserveRunAt.as_str(), "preserve_run_at");
/// assert_eq!(JobKeyMode::from(CronJobKeyMode::Replace), JobKeyMode::Replace);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CronJobKeyMode {
    /// Replace the pending job, including its `run_at` (the default).
    #[default]
    Replace,
    /// Replace the pending job but keep its `run_at`.
    PreserveRunAt,
}

impl CronJobKeyMode {
    /// The SQL spelling of the mode, as in a crontab's `jobKeyMode=`.
    pub fn as_str(self) -> &'static str {
        JobKeyMode::from(self).as_str()
    }
}

impl From<CronJobKeyMode> for JobKeyMode {
    fn from(mode: CronJobKeyMode) -> Self {
        match mode {
            CronJobKeyMode::Replace => JobKeyMode::Replace,
            CronJobKeyMode::PreserveRunAt => JobKeyMode::PreserveRunAt,
        }
    }
}

/// Reads crontab text exactly as graphile-worker does.
///
/// Each line is `MIN HOUR DOM MON DOW task [?options] [{payload}]`, fields
/// separated by any run of whitespace. Blank lines and lines starting with
/// `#` are skipped; `\n` and `\r\n` both end lines. Options are
/// URL-encoded `key=value` pairs joined by `&`: `id`, `fill` (such as `1h30m`;
/// `s`, `m`, `h`, `d` = 24 h, `w` = 7 d), `max`, `queue`, `priority`,
/// `jobKey`, `jobKeyMode` (`replace` or `preserve_run_at`), and `tz` (an
/// IANA time zone; Rust only). The payload is an object on the same line,
/// in JSON5 as graphile-worker for Node reads it (`{kind: 'daily',}`).
///
/// Every line that is not valid is refused with its line and column; so are
/// two items with one identifier, and values the database would refuse
/// (`max=0`, a priority outside -32768..=32767, a queue name or task over
/// 128 characters, an empty or over-long job key).
///
/// ```
/// use std::time::Duration;
/// use graphile_worker::parse_crontab;
///
/// let items = parse_crontab(
///     "# m h dom mon dow task\n\
///      0   4  *   *   *   send_digest ?fill=2h&max=3 {\"kind\":\"daily\"}\r\n\
///      */15 * * * 1-5 poll_feeds ?id=feeds&queue=feeds\n",
/// )
/// .unwrap();
/// assert_eq!(items.len(), 2);
/// assert_eq!(items[0].identifier, "send_digest");
/// assert_eq!(items[0].options.fill, Duration::from_secs(7200));
/// assert_eq!(items[0].options.max_attempts, Some(3));
/// assert_eq!(items[0].payload["kind"], "daily");
/// assert_eq!(items[1].identifier, "feeds");
/// assert_eq!(items[1].task, "poll_feeds");
///
/// let err = parse_crontab("0 4 * * * a\n0 4 1-10/2 * * b\n").unwrap_err();
/// assert_eq!(err.line(), Some(2));
/// assert_eq!(err.column(), 5);
/// ```
pub fn parse_crontab(text: &str) -> Result<Vec<CronItem>, CrontabError> {
    let mut items = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_matches(is_space);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (item, id_column) = parse_line(line, number)?;
        if let Some(&first_line) = seen.get(&item.identifier) {
            return Err(CrontabError::new(
                Some(number),
                id_column,
                CrontabErrorKind::DuplicateIdentifier {
                    identifier: item.identifier,
                    first_line,
                },
            ));
        }
        seen.insert(item.identifier.clone(), number);
        items.push(item);
    }
    Ok(items)
}

/// The first identifier used by more than one item, if any.
pub(crate) fn duplicate_identifier(items: &[CronItem]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .map(|item| item.identifier.as_str())
        .find(|id| !seen.insert(*id))
}

/// Parses one non-blank, non-comment line; also returns the column where
/// its identifier is written.
fn parse_line(line: &str, number: usize) -> Result<(CronItem, usize), CrontabError> {
    let at_line = |(column, kind): ColumnError| CrontabError::new(Some(number), column, kind);
    let tokens = split_fields(line, 6);
    if tokens.len() < 6 {
        return Err(at_line(missing_fields(&tokens)));
    }
    let fields: Vec<(&str, usize)> = tokens[..5].iter().map(|t| (t.text, t.column)).collect();
    let pattern = CronPattern::from_fields(&fields, Some(number))?;
    let command = Command {
        text: line[tokens[5].start..].trim_end_matches(is_space),
        column: tokens[5].column,
    };
    command.parse(pattern).map_err(at_line)
}

/// Why a line of fewer than six tokens was refused.
fn missing_fields(tokens: &[Token<'_>]) -> ColumnError {
    // Say what is wrong with a time field when there is one (such as
    // `@daily task`); the last token may be the task, so it is not
    // checked.
    let fields = &tokens[..tokens.len().saturating_sub(1)];
    fields
        .iter()
        .zip(CronField::ALL)
        .find_map(|(token, field)| check_characters(field, token.text, token.column).err())
        .unwrap_or_else(|| {
            let column = tokens.last().map_or(1, |t| t.column + char_len(t.text));
            let found = tokens.len();
            (column, CrontabErrorKind::MissingFields { found })
        })
}

/// What follows the time fields: `task[ ?options][ {payload}]`.
struct Command<'a> {
    /// Without trailing whitespace.
    text: &'a str,
    /// Where the command starts in the line.
    column: usize,
}

impl Command<'_> {
    /// Reads the item firing on `pattern`; also returns the column where
    /// its identifier is written.
    fn parse(&self, pattern: CronPattern) -> Result<(CronItem, usize), ColumnError> {
        let parts = split_command(self.text).ok_or_else(|| {
            let command = self.text.to_owned();
            (self.column, CrontabErrorKind::InvalidCommand { command })
        })?;
        let task = &self.text[..parts.task_end];
        if char_len(task) > 128 {
            let task = task.to_owned();
            return Err((self.column, CrontabErrorKind::TaskTooLong { task }));
        }
        let mut item = CronItem::new(task, pattern);
        let mut id_column = self.column;
        if let Some(start) = parts.options_start {
            let options = &self.text[start..parts.options_end];
            let column_of = |offset| self.column_of(start + offset);
            if let Some(id_at) = parse_options(options, &mut item, column_of)? {
                id_column = id_at;
            }
        }
        if let Some(start) = parts.payload_start {
            item.payload = self.parse_payload(start)?;
        }
        Ok((item, id_column))
    }

    /// The payload starting at byte `start`, read as JSON5 as Node graphile-worker reads it
    /// (comments, unquoted keys, single quotes, trailing commas, hex
    /// numbers), so a crontab shared with Node means the same on both
    /// sides.
    fn parse_payload(&self, start: usize) -> Result<Map<String, Value>, ColumnError> {
        let payload = &self.text[start..];
        json5::from_str::<Map<String, Value>>(payload).map_err(|e| {
            let json5::Error::Message { msg, location } = e;
            // The parser counts characters from 1 within the payload; its
            // long report ends with the line that says what it expected.
            let column = self.column_of(start) + location.map_or(0, |l| l.column.saturating_sub(1));
            let message = msg
                .lines()
                .last()
                .map(|l| l.trim_start_matches([' ', '=']).trim())
                .filter(|l| !l.is_empty())
                .unwrap_or(&msg)
                .to_owned();
            (column, CrontabErrorKind::InvalidPayload { message })
        })
    }

    /// The column of the line where byte `byte` of the command is.
    fn column_of(&self, byte: usize) -> usize {
        self.column + char_len(&self.text[..byte])
    }
}

/// Byte offsets of the parts of a command.
struct CommandParts {
    task_end: usize,
    options_start: Option<usize>,
    options_end: usize,
    payload_start: Option<usize>,
}

fn is_task_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '/' | '-')
}

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// Splits `task[ ?options][ {payload}]`; `None` if the command has another
/// shape.
fn split_command(command: &str) -> Option<CommandParts> {
    let first = command.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let task_end = command.find(|c| !is_task_char(c)).unwrap_or(command.len());
    let mut parts = CommandParts {
        task_end,
        options_start: None,
        options_end: task_end,
        payload_start: None,
    };
    let mut rest = &command[task_end..];
    if rest.is_empty() {
        return Some(parts);
    }
    let skip_space = |s: &str| -> Option<usize> {
        let trimmed = s.trim_start_matches(is_space);
        (trimmed.len() < s.len()).then_some(s.len() - trimmed.len())
    };
    let mut at = task_end + skip_space(rest)?;
    rest = &command[at..];
    if let Some(options) = rest.strip_prefix('?') {
        let len = options.find(is_space).unwrap_or(options.len());
        if len == 0 {
            return None;
        }
        parts.options_start = Some(at + 1);
        parts.options_end = at + 1 + len;
        rest = &options[len..];
        if rest.is_empty() {
            return Some(parts);
        }
        at = parts.options_end + skip_space(rest)?;
        rest = &command[at..];
    }
    if rest.starts_with('{') && rest.ends_with('}') && !rest.contains(is_line_terminator) {
        parts.payload_start = Some(at);
        return Some(parts);
    }
    None
}

/// Decodes a query-string component as Node's `querystring` does: `+` is a
/// space, valid `%XX` escapes are bytes, anything else stays as written.
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |j: usize| bytes.get(j).and_then(|&h| (h as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
                    // Two hex digits make one byte.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Applies `?options` to `item`. `column_of` maps a byte offset in
/// `options` to a column of the line. Returns the column of `id=` if given.
fn parse_options(
    options: &str,
    item: &mut CronItem,
    column_of: impl Fn(usize) -> usize,
) -> Result<Option<usize>, ColumnError> {
    let mut id_column = None;
    for (key, mut values) in group_options(options, column_of) {
        if let Some(&(_, again)) = values.get(1) {
            return Err((again, CrontabErrorKind::RepeatedOption { key }));
        }
        let (value, column) = values.swap_remove(0);
        if key == "id" {
            id_column = Some(column);
        }
        apply_option(item, OptionValue { key, value, column })?;
    }
    Ok(id_column)
}

/// The decoded `key=value` pairs of `options`: keys in order of first
/// appearance, each with every (value, column) given for it.
fn group_options(
    options: &str,
    column_of: impl Fn(usize) -> usize,
) -> Vec<(String, Vec<(String, usize)>)> {
    let mut pairs: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    let mut offset = 0;
    for pair in options.split('&') {
        let column = column_of(offset);
        offset += pair.len() + 1;
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (url_decode(key), url_decode(value));
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push((value, column)),
            None => pairs.push((key, vec![(value, column)])),
        }
    }
    pairs
}

/// Sets the option `option.key` of `item`.
fn apply_option(item: &mut CronItem, option: OptionValue) -> Result<(), ColumnError> {
    let options = &mut item.options;
    match option.key.as_str() {
        "id" => {
            item.identifier = option.text_if(
                is_identifier,
                "letters, digits, '_' and '-', starting with a letter or '_'",
            )?;
        }
        "fill" => {
            options.fill =
                parse_time_phrase(&option.value).map_err(|kind| (option.column, kind))?;
        }
        "max" => {
            let expected = "a whole number of attempts from 1 to 32767";
            options.max_attempts = Some(option.smallint(1, expected)?);
        }
        "queue" => {
            let expected = "a queue name of at most 128 letters, digits, '-', '_' and ':'";
            options.queue_name = Some(option.text_if(is_queue_name, expected)?);
        }
        "jobKey" => {
            let expected = "a job key of 1 to 512 characters without line breaks";
            options.job_key = Some(option.text_if(is_job_key, expected)?);
        }
        "jobKeyMode" => options.job_key_mode = option.job_key_mode()?,
        "priority" => {
            let expected = "a whole number from -32768 to 32767";
            options.priority = Some(option.smallint(i16::MIN, expected)?);
        }
        "tz" => options.time_zone = Some(option.time_zone()?),
        _ => {
            let key = option.key;
            return Err((option.column, CrontabErrorKind::UnknownOption { key }));
        }
    }
    Ok(())
}

/// One option as given, decoded, with the column of its `key=value` pair.
struct OptionValue {
    key: String,
    value: String,
    column: usize,
}

impl OptionValue {
    /// The value, if `valid` accepts it.
    fn text_if(
        self,
        valid: fn(&str) -> bool,
        expected: &'static str,
    ) -> Result<String, ColumnError> {
        if valid(&self.value) {
            Ok(self.value)
        } else {
            Err(self.invalid(expected))
        }
    }

    /// The value as a smallint of at least `min`.
    fn smallint(self, min: i16, expected: &'static str) -> Result<i16, ColumnError> {
        match parse_i16(&self.value) {
            Some(n) if n >= min => Ok(n),
            _ => Err(self.invalid(expected)),
        }
    }

    fn job_key_mode(self) -> Result<CronJobKeyMode, ColumnError> {
        match self.value.as_str() {
            "replace" => Ok(CronJobKeyMode::Replace),
            "preserve_run_at" => Ok(CronJobKeyMode::PreserveRunAt),
            _ => Err(self.invalid(
                "'replace' or 'preserve_run_at' ('unsafe_dedupe' is not allowed for cron)",
            )),
        }
    }

    fn time_zone(self) -> Result<CronTimeZone, ColumnError> {
        match CronTimeZone::parse(&self.value) {
            Ok(zone) => Ok(zone),
            Err(CronTimeZoneError::FeatureMissing { .. }) => Err(self
                .invalid("a time zone, which needs the `tz` feature of the graphile-worker crate")),
            Err(_) => Err(self.invalid(
                "an IANA time zone name such as 'Europe/Paris' or 'UTC' (case-sensitive)",
            )),
        }
    }

    fn invalid(self, expected: &'static str) -> ColumnError {
        let OptionValue { key, value, column } = self;
        (
            column,
            CrontabErrorKind::InvalidOptionValue {
                key,
                value,
                expected,
            },
        )
    }
}

/// A letter or `_`, then letters, digits, `_` and `-`.
fn is_identifier(value: &str) -> bool {
    let mut chars = value.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// 1 to 128 letters, digits, `-`, `_` and `:`.
fn is_queue_name(value: &str) -> bool {
    !value.is_empty()
        && char_len(value) <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
}

/// 1 to 512 characters on one line.
fn is_job_key(value: &str) -> bool {
    !value.is_empty() && char_len(value) <= 512 && !value.contains(is_line_terminator)
}

/// An optional `-` and digits, within the range of a PostgreSQL smallint.
fn parse_i16(value: &str) -> Option<i16> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Reads a time phrase such as `4w3d2h1m`.
fn parse_time_phrase(phrase: &str) -> Result<Duration, CrontabErrorKind> {
    let mut rest = phrase;
    let mut total: u64 = 0;
    let bad = |rest: &str| CrontabErrorKind::InvalidTimePhrase {
        phrase: phrase.to_owned(),
        rest: rest.to_owned(),
    };
    if phrase.is_empty() {
        return Err(bad(phrase));
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit = match rest[digits..].chars().next() {
            Some('s') if digits > 0 => 1,
            Some('m') if digits > 0 => 60,
            Some('h') if digits > 0 => 3600,
            Some('d') if digits > 0 => 86_400,
            Some('w') if digits > 0 => 604_800,
            _ => return Err(bad(rest)),
        };
        let too_long = || CrontabErrorKind::InvalidOptionValue {
            key: "fill".to_owned(),
            value: phrase.to_owned(),
            expected: "a backfill period that fits in 64 bits of seconds",
        };
        let quantity: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        total = quantity
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(too_long)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}
