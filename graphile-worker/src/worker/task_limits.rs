//! Per-task concurrency limits (`#[task(concurrency = N)]`): how many jobs
//! of each limited task this worker holds (waiting locally or running), and
//! how many slots the claims in flight have been given.
//!
//! A claim asks only for the free slots of each limited task (none at all
//! for a task at its limit), so a claimed job of a limited task always has
//! its slot and never waits in the local queue for one: it waits for a free
//! worker slot like any other job. When a job of a limited task ends, the
//! dispatcher looks again, since jobs of that task may be waiting in the
//! table.

use std::collections::HashMap;

/// The limited tasks of one dispatch loop.
#[derive(Debug, Default)]
pub(super) struct TaskLimits {
    limits: HashMap<String, Limit>,
}

#[derive(Debug)]
struct Limit {
    max: usize,
    /// Jobs held: waiting locally or running.
    held: usize,
    /// Slots given to claims in flight.
    reserved: usize,
}

/// Free slots per limited task, given to one claim.
pub(crate) type Slots = Vec<(String, usize)>;

impl TaskLimits {
    pub(super) fn new(limits: Vec<(String, usize)>) -> Self {
        Self {
            limits: limits
                .into_iter()
                .map(|(task, max)| {
                    let limit = Limit {
                        max,
                        held: 0,
                        reserved: 0,
                    };
                    (task, limit)
                })
                .collect(),
        }
    }

    /// Whether jobs of `task` are counted.
    pub(super) fn limits(&self, task: &str) -> bool {
        !self.limits.is_empty() && self.limits.contains_key(task)
    }

    /// The free slots of every limited task, reserved for a claim until
    /// [`release`](Self::release).
    pub(super) fn reserve(&mut self) -> Slots {
        self.limits
            .iter_mut()
            .map(|(task, limit)| {
                let free = limit.max.saturating_sub(limit.held + limit.reserved);
                limit.reserved += free;
                (task.clone(), free)
            })
            .collect()
    }

    /// A claim came back: its reservation ends.
    pub(super) fn release(&mut self, slots: &Slots) {
        for (task, free) in slots {
            if let Some(limit) = self.limits.get_mut(task) {
                limit.reserved = limit.reserved.saturating_sub(*free);
            }
        }
    }

    /// A job of `task` was claimed.
    pub(super) fn took(&mut self, task: &str) {
        if let Some(limit) = self.limits.get_mut(task) {
            limit.held += 1;
        }
    }

    /// A job of `task` ended or was handed back; true if `task` is limited.
    pub(super) fn done(&mut self, task: &str) -> bool {
        match self.limits.get_mut(task) {
            Some(limit) => {
                limit.held = limit.held.saturating_sub(1);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_get_only_free_slots() {
        let mut limits = TaskLimits::new(vec![("video".into(), 2)]);
        let first = limits.reserve();
        assert_eq!(first, vec![("video".to_owned(), 2)]);
        // A second claim in flight gets nothing for it.
        let second = limits.reserve();
        assert_eq!(second, vec![("video".to_owned(), 0)]);
        limits.release(&second);
        limits.release(&first);
        limits.took("video");
        assert_eq!(limits.reserve(), vec![("video".to_owned(), 1)]);
        assert!(limits.done("video"));
        assert!(!limits.done("email"));
    }
}
