//! `wlc`, weighted least connection (`ip_vs_wlc.c`, IPVS's default): start from the first
//! usable real with weight > 0, then keep the real with the smallest overhead / weight,
//! compared by cross-multiplication; the earlier real wins a tie.

use super::{
    Flow, Scheduler,
    common::{conn_overhead, own_weight, weighted_least},
};
use crate::live::Real;

/// Weighted least connection.
#[derive(Debug)]
pub(super) struct WeightedLeastConnection;

impl Scheduler for WeightedLeastConnection {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        weighted_least(reals, flow.now, conn_overhead, own_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{Case, check, flow, load, reals};

    #[test]
    fn table() {
        check(
            &WeightedLeastConnection,
            &[
                // Idle: the first one.
                Case {
                    weights: &[1, 3],
                    counts: &[(0, 0), (0, 0)],
                    expect: Some(0),
                },
                // 1 active on weight 1 (256) vs 2 active on weight 3 (512/3 ≈ 170.7).
                Case {
                    weights: &[1, 3],
                    counts: &[(1, 0), (2, 0)],
                    expect: Some(1),
                },
                // 1/1 vs 3/3: a tie keeps the earlier.
                Case {
                    weights: &[1, 3],
                    counts: &[(1, 0), (3, 0)],
                    expect: Some(0),
                },
                // Inactive flows weigh 1/256 of an active one.
                Case {
                    weights: &[2, 2],
                    counts: &[(1, 10), (1, 9)],
                    expect: Some(1),
                },
                // Weight 0 never wins, even idle.
                Case {
                    weights: &[0, 1],
                    counts: &[(0, 0), (4, 0)],
                    expect: Some(1),
                },
                Case {
                    weights: &[1, 0],
                    counts: &[(4, 0), (0, 0)],
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
    fn overloaded_and_down_reals_are_skipped() {
        let mut reals = reals(&[1, 1, 1]);
        reals[0].up = false;
        reals[1].state.set_thresholds(1, 0);
        let _held = load(&reals[1], 0, 1);
        let _busy = load(&reals[2], 5, 0);
        assert_eq!(WeightedLeastConnection.pick(&reals, &flow()), Some(2));
    }
}
