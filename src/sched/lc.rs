//! `lc`, least connection (`ip_vs_lc.c`): the usable real with weight > 0 and the smallest
//! overhead `(ActiveConn << 8) + InActConn`; the first in the list wins a tie. It is wlc's
//! search with every weight counted as 1.

use super::{
    Flow, Scheduler,
    common::{conn_overhead, weighted_least},
};
use crate::live::Real;

/// Least connection.
#[derive(Debug)]
pub(super) struct LeastConnection;

impl Scheduler for LeastConnection {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        weighted_least(reals, flow.now, conn_overhead, |_| 1)
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
