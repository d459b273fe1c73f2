//! `lc`, least connection (`ip_vs_lc.c`): the usable real with weight > 0 and the smallest
//! overhead `(ActiveConn << 8) + InActConn`; the first in the list wins a tie.

use super::{Flow, Scheduler};
use crate::table::Real;

/// Least connection.
#[derive(Debug)]
pub(super) struct LeastConnection;

impl Scheduler for LeastConnection {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, real) in reals.iter().enumerate() {
            if real.weight == 0 || !real.usable(flow.now) {
                continue;
            }
            let overhead = real.state.overhead();
            if least.is_none_or(|(_, least_overhead)| overhead < least_overhead) {
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
            &LeastConnection,
            &[
                Case {
                    weights: &[1, 1, 1],
                    counts: &[(0, 0), (0, 0), (0, 0)],
                    expect: Some(0),
                },
                Case {
                    weights: &[1, 1, 1],
                    counts: &[(1, 0), (0, 5), (0, 3)],
                    expect: Some(2),
                },
                Case {
                    weights: &[1, 1],
                    counts: &[(0, 256), (1, 0)],
                    expect: Some(0),
                },
                Case {
                    weights: &[1, 1],
                    counts: &[(0, 257), (1, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[9, 1],
                    counts: &[(2, 0), (1, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[0, 1],
                    counts: &[(0, 0), (5, 0)],
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
