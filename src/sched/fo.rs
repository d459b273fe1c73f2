//! `fo`, weighted failover (`ip_vs_fo.c`): the usable real with the highest weight; the first
//! in the list wins a tie.

use super::{Flow, Scheduler, common::heaviest};
use crate::live::Real;

/// Weighted failover.
#[derive(Debug)]
pub(super) struct Failover;

impl Scheduler for Failover {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        heaviest(reals, flow.now, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{Case, check};

    #[test]
    fn table() {
        check(
            &Failover,
            &[
                Case {
                    weights: &[1, 5, 3],
                    counts: &[(0, 0), (90, 0), (0, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[5, 5],
                    counts: &[(9, 0), (0, 0)],
                    expect: Some(0),
                },
                Case {
                    weights: &[0, 0],
                    counts: &[(0, 0), (0, 0)],
                    expect: None,
                },
            ],
        );
    }

    #[test]
    fn fails_over_when_the_heaviest_is_down() {
        let mut reals = crate::sched::testing::reals(&[1, 5, 3]);
        reals[1].up = false;
        assert_eq!(Failover.pick(&reals, &crate::sched::testing::flow()), Some(2));
    }
}
