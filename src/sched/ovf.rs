//! `ovf`, weighted overflow (`ip_vs_ovf.c`): the highest-weight usable real whose active flows
//! do not exceed its weight; traffic spills to the next weight once they do.

use super::{Flow, Scheduler, common::heaviest};
use crate::live::Real;

/// Weighted overflow.
#[derive(Debug)]
pub(super) struct Overflow;

impl Scheduler for Overflow {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        heaviest(reals, flow.now, |real| real.state.active() <= real.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{Case, check};

    #[test]
    fn table() {
        check(
            &Overflow,
            &[
                Case {
                    weights: &[2, 5],
                    counts: &[(0, 0), (5, 0)],
                    expect: Some(1),
                },
                // 6 active > weight 5: spill to the next weight.
                Case {
                    weights: &[2, 5],
                    counts: &[(0, 0), (6, 0)],
                    expect: Some(0),
                },
                Case {
                    weights: &[2, 5],
                    counts: &[(3, 0), (6, 0)],
                    expect: None,
                },
                // Inactive flows never spill.
                Case {
                    weights: &[2, 5],
                    counts: &[(0, 0), (0, 999)],
                    expect: Some(1),
                },
            ],
        );
    }
}
