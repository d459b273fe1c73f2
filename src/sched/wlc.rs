//! `wlc`, weighted least connection (`ip_vs_wlc.c`, IPVS's default): start from the first
//! usable real with weight > 0, then keep the real with the smallest overhead / weight,
//! compared by cross-multiplication; the earlier real wins a tie.

use super::{Flow, Scheduler};
use crate::table::Real;

/// Weighted least connection.
#[derive(Debug)]
pub(super) struct WeightedLeastConnection;

impl Scheduler for WeightedLeastConnection {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let first = reals.iter().position(|real| real.weight > 0 && real.usable(flow.now))?;
        let (mut least, mut least_overhead) = (first, reals[first].state.overhead());
        for (i, real) in reals.iter().enumerate().skip(first + 1) {
            if !real.usable(flow.now) {
                continue;
            }
            let overhead = real.state.overhead();
            if least_overhead * u64::from(real.weight) > overhead * u64::from(reals[least].weight) {
                (least, least_overhead) = (i, overhead);
            }
        }
        Some(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{flow, load, reals};

    #[test]
    fn table() {
        let cases: &[(&[u32], &[(u32, u32)], Option<usize>)] = &[
            // Idle: the first one.
            (&[1, 3], &[(0, 0), (0, 0)], Some(0)),
            // 1 active on weight 1 (256) vs 2 active on weight 3 (512/3 ≈ 170.7).
            (&[1, 3], &[(1, 0), (2, 0)], Some(1)),
            // 1/1 vs 3/3: a tie keeps the earlier.
            (&[1, 3], &[(1, 0), (3, 0)], Some(0)),
            // Inactive flows weigh 1/256 of an active one.
            (&[2, 2], &[(1, 10), (1, 9)], Some(1)),
            // Weight 0 never wins, even idle.
            (&[0, 1], &[(0, 0), (4, 0)], Some(1)),
            (&[1, 0], &[(4, 0), (0, 0)], Some(0)),
            (&[0, 0], &[(0, 0), (0, 0)], None),
        ];
        for (weights, counts, expected) in cases {
            let reals = reals(weights);
            let _held: Vec<_> = reals.iter().zip(*counts).flat_map(|(r, &(a, i))| load(r, a, i)).collect();
            assert_eq!(WeightedLeastConnection.pick(&reals, &flow()), *expected, "{weights:?} {counts:?}");
        }
    }

    #[test]
    fn overloaded_and_down_reals_are_skipped() {
        let mut reals = reals(&[1, 1, 1]);
        reals[0].up = false;
        reals[1].state.set_thresholds(1, 0);
        let _held = load(&reals[1], 0, 1);
        let _busy = load(&reals[2], 5, 0);
        assert_eq!(WeightedLeastConnection.pick(&reals, &flow()), Some(2));
    }
}
