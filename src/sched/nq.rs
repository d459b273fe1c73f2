//! `nq`, never queue (`ip_vs_nq.c`): the first usable real with weight > 0 and no active flow
//! gets it at once; when every real is busy, sed's rule `(ActiveConn + 1) / weight` decides.

use super::{Flow, Scheduler};
use crate::live::Real;

/// Never queue.
#[derive(Debug)]
pub(super) struct NeverQueue;

impl Scheduler for NeverQueue {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, real) in reals.iter().enumerate() {
            if real.weight == 0 || !real.usable(flow.now) {
                continue;
            }
            let active = real.state.active();
            if active == 0 {
                return Some(i);
            }
            let overhead = u64::from(active) + 1;
            let better = least.is_none_or(|(best, best_overhead)| {
                best_overhead * u64::from(real.weight) > overhead * u64::from(reals[best].weight)
            });
            if better {
                least = Some((i, overhead));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{Case, check};

    #[test]
    fn table() {
        check(
            &NeverQueue,
            &[
                // The first idle real wins even against a much heavier busy one.
                Case {
                    weights: &[9, 1],
                    counts: &[(3, 0), (0, 50)],
                    expect: Some(1),
                },
                Case {
                    weights: &[1, 1, 1],
                    counts: &[(1, 0), (0, 0), (0, 0)],
                    expect: Some(1),
                },
                // All busy: (1+1)/1 = 2 vs (2+1)/3 = 1.
                Case {
                    weights: &[1, 3],
                    counts: &[(1, 0), (2, 0)],
                    expect: Some(1),
                },
                // An idle real with weight 0 does not count.
                Case {
                    weights: &[0, 2],
                    counts: &[(0, 0), (4, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[0],
                    counts: &[(0, 0)],
                    expect: None,
                },
            ],
        );
    }
}
