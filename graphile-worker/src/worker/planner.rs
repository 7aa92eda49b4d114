//! When to claim and how many: a pure function of what the dispatcher holds,
//! so the rules can be read, and tested, without a database.
//!
//! The worker keeps `concurrency` jobs running and, beyond them, a lookahead
//! of claimed jobs sized by the pace ([`super::local_queue::Pace`]). It
//! refills when half the lookahead is used up. When jobs run faster than one
//! connection claims them, the local queue empties while a claim is in
//! flight: then a second claim for the other half starts beside it, so two
//! connections claim at once — but only after a claim came back full (a
//! backlog), or every claim would overlap the previous one and none would
//! ever prove the queue empty.

/// At most this many claims are in flight at once.
pub(super) const MAX_CLAIMS: usize = 2;

/// A claim starts beside one in flight only when it asks for this many jobs.
pub(super) const OVERLAP_MIN: usize = 500;

/// What the planner looks at.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ClaimView {
    /// Jobs that may run at once.
    pub(super) concurrency: usize,
    /// Jobs running now.
    pub(super) running: usize,
    /// Claimed jobs waiting in the local queue.
    pub(super) waiting: usize,
    /// Claims in flight, and the jobs they asked for.
    pub(super) in_flight: usize,
    pub(super) asked: usize,
    /// How many jobs to hold beyond the running ones (the lookahead).
    pub(super) ahead: usize,
    /// The last claim came back full: more jobs are probably waiting.
    pub(super) backlog: bool,
    /// Jobs announced by notifications since the last claim.
    pub(super) announced: u64,
    /// Something forbids claiming now (a pause after an error, the queue
    /// found empty, backpressure, a stale heartbeat, a reconciliation, old
    /// jobs still stopping).
    pub(super) blocked: bool,
}

/// How many jobs to claim now, if any.
pub(super) fn claim_limit(view: &ClaimView) -> Option<usize> {
    if view.blocked {
        return None;
    }
    let asked = if view.in_flight == 0 { 0 } else { view.asked };
    let have = view.running + view.waiting + asked;
    let want = (view.concurrency + view.ahead).saturating_sub(have);
    let refill = if view.in_flight == 0 {
        want > 0 && view.waiting <= view.ahead / 2
    } else {
        view.backlog && view.in_flight < MAX_CLAIMS && want >= (view.ahead / 2).max(OVERLAP_MIN)
    };
    if !refill {
        return None;
    }
    // Half the lookahead at a time keeps two claims in turn.
    let batch = want.min((view.ahead / 2).max(view.concurrency));
    // An idle worker woken by a notification asks for what was announced.
    Some(if view.announced > 0 && have == 0 {
        batch.min(usize::try_from(view.announced).unwrap_or(usize::MAX).max(1))
    } else {
        batch
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(concurrency: usize) -> ClaimView {
        ClaimView {
            concurrency,
            ..ClaimView::default()
        }
    }

    #[test]
    fn an_idle_worker_claims_for_its_free_slots() {
        assert_eq!(claim_limit(&idle(4)), Some(4));
        let busy = ClaimView {
            running: 3,
            ..idle(4)
        };
        assert_eq!(claim_limit(&busy), Some(1));
        let full = ClaimView {
            running: 4,
            ..idle(4)
        };
        assert_eq!(claim_limit(&full), None);
    }

    #[test]
    fn nothing_is_claimed_while_blocked() {
        let view = ClaimView {
            blocked: true,
            ..idle(4)
        };
        assert_eq!(claim_limit(&view), None);
    }

    #[test]
    fn a_notification_sizes_the_claim_of_an_idle_worker() {
        let view = ClaimView {
            announced: 1,
            ..idle(8)
        };
        assert_eq!(claim_limit(&view), Some(1));
        // Not when jobs are held already: then slots are what counts.
        let busy = ClaimView {
            announced: 1,
            running: 2,
            ..idle(8)
        };
        assert_eq!(claim_limit(&busy), Some(6));
    }

    #[test]
    fn the_lookahead_is_refilled_by_halves() {
        let view = ClaimView {
            running: 24,
            waiting: 600,
            ahead: 1000,
            ..idle(24)
        };
        // More than half the lookahead still waits.
        assert_eq!(claim_limit(&view), None);
        let drained = ClaimView {
            waiting: 400,
            ..view
        };
        assert_eq!(claim_limit(&drained), Some(500));
    }

    #[test]
    fn a_second_claim_overlaps_only_in_a_backlog_and_never_a_third() {
        let view = ClaimView {
            running: 24,
            waiting: 0,
            ahead: 2000,
            in_flight: 1,
            asked: 1000,
            ..idle(24)
        };
        assert_eq!(claim_limit(&view), None, "no backlog seen yet");
        let backlog = ClaimView {
            backlog: true,
            ..view
        };
        assert_eq!(claim_limit(&backlog), Some(1000));
        let two = ClaimView {
            in_flight: 2,
            ..backlog
        };
        assert_eq!(claim_limit(&two), None);
        let small = ClaimView {
            ahead: 400,
            asked: 200,
            ..backlog
        };
        assert_eq!(claim_limit(&small), None, "too small to overlap");
    }
}
