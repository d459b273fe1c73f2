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
    use crate::sched::testing::{flow, load, reals};

    #[test]
    fn table() {
        // (weights, [(active, inactive)], expected)
        let cases: &[(&[u32], &[(u32, u32)], Option<usize>)] = &[
            (&[1, 1, 1], &[(0, 0), (0, 0), (0, 0)], Some(0)),
            (&[1, 1, 1], &[(1, 0), (0, 5), (0, 3)], Some(2)),
            (&[1, 1], &[(0, 256), (1, 0)], Some(0)),
            (&[1, 1], &[(0, 257), (1, 0)], Some(1)),
            (&[9, 1], &[(2, 0), (1, 0)], Some(1)),
            (&[0, 1], &[(0, 0), (5, 0)], Some(1)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
        ];
        for (weights, counts, expected) in cases {
            let reals = reals(weights);
            let _held: Vec<_> = reals.iter().zip(*counts).flat_map(|(r, &(a, i))| load(r, a, i)).collect();
            assert_eq!(LeastConnection.pick(&reals, &flow()), *expected, "{weights:?} {counts:?}");
        }
    }
}
