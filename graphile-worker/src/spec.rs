//! Options for adding a job.

use chrono::{DateTime, Utc};

/// How `add_job` treats an existing job with the same [`JobSpec::job_key`].
///
/// These are graphile-worker's three modes; see the crate docs for the full
/// matrix of what each does to pending, retrying, failed and running jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobKeyMode {
    /// Replace the pending job's fields, including `run_at` (the default).
    #[default]
    Replace,
    /// Replace the pending job's fields but keep its `run_at`.
    PreserveRunAt,
    /// Keep the existing job untouched, whatever its state. Use with care: a
    /// running or permanently failed job is returned and nothing new runs.
    UnsafeDedupe,
}

impl JobKeyMode {
    /// The SQL spelling of the mode.
    ///
    /// ```
    /// assert_eq!(graphile_worker::JobKeyMode::PreserveRunAt.as_str(), "preserve_run_at");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            JobKeyMode::Replace => "replace",
            JobKeyMode::PreserveRunAt => "preserve_run_at",
            JobKeyMode::UnsafeDedupe => "unsafe_dedupe",
        }
    }
}

/// Everything about a job except its task and payload. Every field is
/// optional; `None` means the database default (no queue, now, 25 attempts,
/// no key, priority 0, no flags).
///
/// ```
/// use graphile_worker::JobSpec;
/// let spec = JobSpec {
///     queue_name: Some("emails".into()),
///     priority: Some(-1),
///     ..JobSpec::default()
/// };
/// assert_eq!(spec.max_attempts, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Named queue: jobs in one named queue run one at a time, in order.
    pub queue_name: Option<String>,
    /// Earliest time the job may run.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is permanently failed (at least 1).
    pub max_attempts: Option<i16>,
    /// Unique key: adding a job with a key that exists updates that job.
    /// Keys are global across tasks, so include the task name in them.
    pub job_key: Option<String>,
    /// What to do when a job with the key exists. Only meaningful with a key.
    pub job_key_mode: Option<JobKeyMode>,
    /// Smaller runs first; default 0.
    pub priority: Option<i16>,
    /// Flags a worker can refuse with its forbidden-flags option.
    pub flags: Option<Vec<String>>,
}

impl JobSpec {
    /// Fills every field that is `None` here from `defaults`.
    ///
    /// ```
    /// use graphile_worker::JobSpec;
    /// let defaults = JobSpec { queue_name: Some("q".into()), priority: Some(5), ..Default::default() };
    /// let spec = JobSpec { priority: Some(1), ..Default::default() }.or(&defaults);
    /// assert_eq!(spec.queue_name.as_deref(), Some("q"));
    /// assert_eq!(spec.priority, Some(1));
    /// ```
    pub fn or(mut self, defaults: &JobSpec) -> JobSpec {
        if self.queue_name.is_none() {
            self.queue_name.clone_from(&defaults.queue_name);
        }
        if self.run_at.is_none() {
            self.run_at = defaults.run_at;
        }
        if self.max_attempts.is_none() {
            self.max_attempts = defaults.max_attempts;
        }
        if self.job_key.is_none() {
            self.job_key.clone_from(&defaults.job_key);
        }
        if self.job_key_mode.is_none() {
            self.job_key_mode = defaults.job_key_mode;
        }
        if self.priority.is_none() {
            self.priority = defaults.priority;
        }
        if self.flags.is_none() {
            self.flags.clone_from(&defaults.flags);
        }
        self
    }
}
