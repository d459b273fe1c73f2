//! `rr`, round robin (`ip_vs_rr.c`): walk on from the last real chosen, wrapping once, and take
//! the first usable real with weight > 0.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Flow, Scheduler};
use crate::live::Real;

/// Round robin.
#[derive(Debug)]
pub(super) struct RoundRobin {
    /// 0 = the list head (nothing chosen yet), `i + 1` = `reals[i]` was chosen last.
    cursor: AtomicUsize,
}

impl RoundRobin {
    pub(super) fn new() -> Self {
        Self {
            cursor: AtomicUsize::new(0),
        }
    }
}

impl Scheduler for RoundRobin {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        loop {
            let start = if cursor > reals.len() { 0 } else { cursor };
            // After the cursor to the end, then from the head up to and including the cursor.
            let chosen = (start..reals.len())
                .chain(0..start)
                .find(|&i| reals[i].weight > 0 && reals[i].usable(flow.now))?;
            match self
                .cursor
                .compare_exchange_weak(cursor, chosen + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(chosen),
                Err(actual) => cursor = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{load, picks, reals};

    #[test]
    fn cycles_in_list_order() {
        let reals = reals(&[1, 1, 1]);
        let rr = RoundRobin::new();
        assert_eq!(picks(&rr, &reals, 7), [0, 1, 2, 0, 1, 2, 0].map(Some));
    }

    #[test]
    fn skips_weight_zero_and_overloaded() {
        let mut reals = reals(&[1, 0, 1, 1]);
        reals[2].state.set_thresholds(1, 0);
        let _held = load(&reals[2], 0, 1);
        let rr = RoundRobin::new();
        assert_eq!(picks(&rr, &reals, 4), [0, 3, 0, 3].map(Some));
        reals[3].up = false;
        assert_eq!(picks(&rr, &reals, 2), [0, 0].map(Some));
    }

    #[test]
    fn weights_do_not_matter_beyond_zero() {
        let reals = reals(&[5, 1]);
        assert_eq!(picks(&RoundRobin::new(), &reals, 4), [0, 1, 0, 1].map(Some));
    }

    #[test]
    fn nothing_available() {
        assert_eq!(picks(&RoundRobin::new(), &reals(&[0, 0]), 1), [None]);
        assert_eq!(picks(&RoundRobin::new(), &reals(&[]), 1), [None]);
    }
}
