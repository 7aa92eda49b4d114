//! Printing: tables that fit the terminal, or one JSON value.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use graphile_worker::{Job, JobEntry, JobState};
use serde_json::{Value, json};

/// Where data goes: text tables, or JSON (`--json`).
pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints one JSON value on stdout.
    pub(crate) fn json(&self, value: &Value) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
        let _ = writeln!(std::io::stdout(), "{text}");
    }

    /// Prints a line of text on stdout (text mode only).
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            let _ = writeln!(std::io::stdout(), "{}", text.as_ref());
        }
    }
}

/// The terminal's width: `COLUMNS`, or 120.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 40)
        .unwrap_or(120)
}

/// Cuts `text` to `max` characters, ending with `…` when cut; newlines
/// become spaces.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Prints a table whose total width fits the terminal: the widest columns
/// give way first.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let budget = width().saturating_sub(2 * widths.len().saturating_sub(1));
    while widths.iter().sum::<usize>() > budget {
        let Some((widest, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w) else {
            break;
        };
        if w <= 8 {
            break;
        }
        widths[widest] = w - 1;
    }
    let mut out = std::io::stdout().lock();
    let render = |cells: &mut dyn Iterator<Item = String>| {
        cells
            .enumerate()
            .map(|(i, cell)| {
                let w = widths.get(i).copied().unwrap_or(0);
                let cell = clip(&cell, w);
                let pad = w.saturating_sub(cell.chars().count());
                format!("{cell}{}", " ".repeat(pad))
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        render(&mut headers.iter().map(|h| h.to_uppercase()))
    );
    for row in rows {
        let _ = writeln!(out, "{}", render(&mut row.iter().cloned()));
    }
}

/// A time for a table: `2026-12-02 16:07:31`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time for a table; `-` when absent.
pub(crate) fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// A job as JSON: the `jobs` view's columns, the payload, and its state.
pub(crate) fn job_json(job: &Job, state: JobState) -> Value {
    json!({
        "id": job.id,
        "queue_name": job.queue_name,
        "task_identifier": job.task_identifier,
        "payload": job.payload,
        "priority": job.priority,
        "run_at": job.run_at,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "last_error": job.last_error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "key": job.key,
        "locked_at": job.locked_at,
        "locked_by": job.locked_by,
        "revision": job.revision,
        "flags": job.flags,
        "state": state,
    })
}

/// An entry as JSON.
pub(crate) fn entry_json(entry: &JobEntry) -> Value {
    job_json(&entry.job, entry.state)
}

/// One table row for a job.
pub(crate) fn job_row(job: &Job, state: JobState) -> Vec<String> {
    vec![
        job.id.to_string(),
        state.to_string(),
        job.task_identifier.clone(),
        job.queue_name.clone().unwrap_or_else(|| "-".to_owned()),
        time(job.run_at),
        format!("{}/{}", job.attempts, job.max_attempts),
        job.key.clone().unwrap_or_else(|| "-".to_owned()),
        job.last_error
            .as_deref()
            .map_or_else(|| "-".to_owned(), |e| clip(e, 60)),
    ]
}

/// The headers of [`job_row`].
pub(crate) const JOB_HEADERS: [&str; 8] = [
    "id",
    "state",
    "task",
    "queue",
    "run at",
    "attempts",
    "key",
    "last error",
];

/// Prints jobs as a table, or as a JSON array.
pub(crate) fn jobs(out: &Out, entries: &[JobEntry]) {
    if out.json {
        out.json(&Value::Array(entries.iter().map(entry_json).collect()));
    } else if entries.is_empty() {
        out.line("no jobs");
    } else {
        let rows: Vec<_> = entries.iter().map(|e| job_row(&e.job, e.state)).collect();
        table(&JOB_HEADERS, &rows);
    }
}
