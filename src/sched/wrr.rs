//! `wrr`, weighted round robin (`ip_vs_wrr.c`): the kernel's gcd / max-weight walk. A round
//! lowers the current weight `cw` by the gcd of the weights each time the scan passes the end
//! of the list, and picks reals whose weight is at least `cw`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Flow, Scheduler};
use crate::live::Real;

/// Weighted round robin.
#[derive(Debug)]
pub(super) struct WeightedRoundRobin {
    /// The cursor (`cl`, low 32 bits: 0 = list head, `i + 1` = after `reals[i]`) and the
    /// current weight (`cw`, high 32 bits, signed), swapped together.
    state: AtomicU64,
    /// Max weight minus (gcd − 1); 0 when no real has a weight.
    mw: i32,
    /// The gcd of the positive weights.
    di: i32,
}

impl WeightedRoundRobin {
    pub(super) fn new(reals: &[Real]) -> Self {
        let weights = || {
            reals
                .iter()
                .filter(|real| real.up && real.weight > 0)
                .map(|real| real.weight as i32)
        };
        let di = weights().reduce(gcd).unwrap_or(1);
        let mw = weights().max().map_or(0, |max| max - (di - 1));
        Self {
            state: AtomicU64::new(pack(0, mw)),
            mw,
            di,
        }
    }

    /// One scheduling step from state `(cl, cw)`, exactly as `ip_vs_wrr_schedule`.
    /// Returns the choice and the next state.
    fn step(&self, reals: &[Real], flow: &Flow, cl: usize, mut cw: i32) -> (Option<usize>, usize, i32) {
        if self.mw == 0 {
            return (None, cl, cw);
        }
        let last = cl.min(reals.len());
        let mut from = last;
        let mut stop = None;
        let (mut last_pass, mut restarted) = (false, false);
        loop {
            for (i, real) in reals.iter().enumerate().skip(from) {
                if real.usable(flow.now) && real.weight as i32 >= cw {
                    return (Some(i), i + 1, cw);
                }
                if stop == Some(i + 1) {
                    return (None, cl, cw);
                }
            }
            from = 0;
            cw -= self.di;
            if cw <= 0 {
                cw = self.mw;
                if last_pass || last == 0 {
                    return (None, cl, cw);
                }
                restarted = true;
            }
            last_pass = cw <= self.di;
            if last_pass && restarted && last != 0 {
                stop = Some(last);
            }
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (cl, cw) = unpack(current);
            let (chosen, cl, cw) = self.step(reals, flow, cl, cw);
            match self.state.compare_exchange_weak(
                current,
                pack(cl, cw),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return chosen,
                Err(actual) => current = actual,
            }
        }
    }
}

fn pack(cl: usize, cw: i32) -> u64 {
    (u64::from(cw as u32) << 32) | (cl as u64 & 0xffff_ffff)
}

fn unpack(state: u64) -> (usize, i32) {
    ((state & 0xffff_ffff) as usize, (state >> 32) as u32 as i32)
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sched::testing::{load, picks, reals};

    fn sequence(weights: &[u32], n: usize) -> Vec<Option<usize>> {
        let reals = reals(weights);
        picks(&WeightedRoundRobin::new(&reals), &reals, n)
    }

    #[test]
    fn reference_example_4_3_2() {
        // IPVS's own example (ip_vs_wrr.c): A=4, B=3, C=2 gives A A B A B C A B C.
        assert_eq!(
            sequence(&[4, 3, 2], 18),
            [0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2].map(Some)
        );
    }

    #[test]
    fn gcd_steps() {
        // gcd 2: weights 4,2 behave as 2,1.
        assert_eq!(sequence(&[4, 2], 6), [0, 0, 1, 0, 0, 1].map(Some));
        assert_eq!(sequence(&[6, 4], 5), [0, 0, 1, 0, 1].map(Some));
    }

    #[test]
    fn weight_zero_is_skipped() {
        assert_eq!(sequence(&[0, 2, 1], 6), [1, 1, 2, 1, 1, 2].map(Some));
        assert_eq!(sequence(&[0, 0], 2), [None, None]);
        assert_eq!(sequence(&[], 1), [None]);
    }

    #[test]
    fn overloaded_real_is_skipped_and_others_keep_their_turns() {
        let reals = reals(&[3, 2, 1]);
        reals[0].state.set_thresholds(1, 0);
        let _held = load(&reals[0], 0, 1);
        let wrr = WeightedRoundRobin::new(&reals);
        let got = picks(&wrr, &reals, 6);
        assert!(
            got.iter().all(|pick| *pick == Some(1) || *pick == Some(2)),
            "{got:?}"
        );
        assert_eq!(got.iter().filter(|p| **p == Some(1)).count(), 4);
    }

    #[test]
    fn all_overloaded_fails_after_one_round() {
        let reals = reals(&[2, 1]);
        let mut held = Vec::new();
        for real in &reals {
            real.state.set_thresholds(1, 0);
            held.extend(load(real, 0, 1));
        }
        assert_eq!(picks(&WeightedRoundRobin::new(&reals), &reals, 2), [None, None]);
    }

    proptest! {
        #[test]
        fn one_cycle_gives_each_real_exactly_its_weight(weights in proptest::collection::vec(0u32..20, 1..12)) {
            let total: u32 = weights.iter().sum();
            let got = sequence(&weights, total as usize);
            for (i, weight) in weights.iter().enumerate() {
                let count = got.iter().filter(|pick| **pick == Some(i)).count() as u32;
                prop_assert_eq!(count, *weight, "real {} in {:?}", i, got);
            }
        }
    }
}
