//! The jobs a worker holds locks on: claimed and not yet written back. The
//! claim adds them, the outcome writer releases them once written, the lock
//! refresher keeps their locks fresh meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Jobs this pool holds locks on (claimed and not yet written back), for the
/// heartbeat to keep their locks fresh.
pub(crate) type HeldJobs = Arc<Mutex<Held>>;

pub(crate) fn lock_held(held: &HeldJobs) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// Claimed job ids, counted: a job handed back can be claimed again before
/// the hand-back is written, and writing it must not drop the new claim.
#[derive(Debug, Default)]
pub(crate) struct Held(HashMap<i64, u32>);

impl Held {
    /// Counts a claim of each of `ids`.
    pub(crate) fn extend(&mut self, ids: impl IntoIterator<Item = i64>) {
        for id in ids {
            *self.0.entry(id).or_default() += 1;
        }
    }

    /// Forgets one claim of `id`, once its outcome is written.
    pub(crate) fn release(&mut self, id: i64) {
        if let Some(count) = self.0.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&id);
            }
        }
    }

    /// Every held id.
    pub(crate) fn ids(&self) -> Vec<i64> {
        self.0.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_claims_are_released_one_at_a_time() {
        let mut held = Held::default();
        held.extend([1, 1, 2]);
        held.release(1);
        let mut ids = held.ids();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        held.release(1);
        assert_eq!(held.ids(), vec![2]);
    }
}
