//! `sed`, shortest expected delay (`ip_vs_sed.c`): wlc's loop with overhead
//! `ActiveConn + 1`; inactive flows do not count.

use super::{
    Flow, Scheduler,
    common::{own_weight, weighted_least},
};
use crate::live::Real;

/// Shortest expected delay.
#[derive(Debug)]
pub(super) struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        weighted_least(
            reals,
            flow.now,
            |real| u64::from(real.state.active()) + 1,
            own_weight,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{Case, check};

    #[test]
    fn table() {
        check(
            &ShortestExpectedDelay,
            &[
                Case {
                    weights: &[1, 1],
                    counts: &[(0, 0), (0, 0)],
                    expect: Some(0),
                },
                // (0+1)/1 vs (1+1)/3: the heavier real wins although it is busier.
                Case {
                    weights: &[1, 3],
                    counts: &[(0, 0), (1, 0)],
                    expect: Some(1),
                },
                // Inactive flows are ignored.
                Case {
                    weights: &[1, 1],
                    counts: &[(0, 900), (1, 0)],
                    expect: Some(0),
                },
                // (1+1)/2 vs (2+1)/3 = 1 vs 1: a tie keeps the first.
                Case {
                    weights: &[2, 3],
                    counts: &[(1, 0), (2, 0)],
                    expect: Some(0),
                },
                Case {
                    weights: &[0, 1],
                    counts: &[(0, 0), (7, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[0, 0],
                    counts: &[(0, 0), (0, 0)],
                    expect: None,
                },
            ],
        );
    }
}
