//! Schedulers: given the reals of a service (in IPVS's list order) and a new flow, pick the
//! real that gets it, with the kernel's exact rules.
//!
//! A scheduler is built from one snapshot of the reals and is replaced with it. Picks are pure:
//! no I/O, no clock reads (`now` comes in the [`Flow`]), no allocation, no lock; schedulers
//! with a cursor keep it in one atomic updated by compare-and-swap.
//!
//! Every scheduler treats a real that is not [`Real::usable`] (down, overloaded, in passive
//! back-off) as IPVS treats a real with the OVERLOAD flag.

mod cache;
mod common;
mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod locality;
mod mh;
mod nq;
mod ovf;
pub mod persistence;
mod rr;
mod sed;
mod sh;
pub mod slow_start;
mod twos;
mod wlc;
mod wrr;

pub(crate) use common::fold;
use std::{fmt, net::SocketAddr, sync::Arc};

use crate::{
    clock::Millis,
    config::{SchedulerFlag, SchedulerKind},
    live::Real,
};

/// What a scheduler knows of a new flow.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// The client's address and port.
    pub client: SocketAddr,
    /// Where the client sent it: the VIP in proxy mode, the packet's destination otherwise.
    pub destination: SocketAddr,
    /// The time of the decision.
    pub now: Millis,
}

/// A scheduling algorithm bound to one snapshot of a service's reals.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// The index in `reals` of the real that gets `flow`, or `None` when no real is available.
    /// `reals` is the slice the scheduler was built for.
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize>;

    /// State that outlives one snapshot (lblc / lblcr caches), handed to the scheduler built
    /// for the next snapshot of the same service when its kind did not change.
    fn shared_state(&self) -> Option<SharedState> {
        None
    }
}

/// Scheduling state carried from one snapshot of a service to the next (opaque).
#[derive(Debug, Clone)]
pub struct SharedState(Carried);

impl SharedState {
    /// Whether both are the very same state (not merely equal).
    #[cfg(test)]
    pub(crate) fn is(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Carried::Lblc(a), Carried::Lblc(b)) => Arc::ptr_eq(a, b),
            (Carried::Lblcr(a), Carried::Lblcr(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
enum Carried {
    Lblc(Arc<locality::LocalityTable<SocketAddr>>),
    Lblcr(Arc<locality::LocalityTable<lblcr::DestSet>>),
}

/// Builds the scheduler `kind` for `reals`, reusing the state of the scheduler it replaces
/// (see [`Scheduler::shared_state`]) when that one had the same kind. `seed` starts `twos`'
/// random draws (the caller's: schedulers read no clock and no random source).
pub fn build(
    kind: SchedulerKind,
    flags: &[SchedulerFlag],
    reals: &[Real],
    previous: Option<SharedState>,
    seed: u64,
) -> Box<dyn Scheduler> {
    let has = |flag| flags.contains(&flag);
    match kind {
        SchedulerKind::Rr => Box::new(rr::RoundRobin::new()),
        SchedulerKind::Wrr => Box::new(wrr::WeightedRoundRobin::new(reals)),
        SchedulerKind::Lc => Box::new(lc::LeastConnection),
        SchedulerKind::Wlc => Box::new(wlc::WeightedLeastConnection),
        SchedulerKind::Sed => Box::new(sed::ShortestExpectedDelay),
        SchedulerKind::Nq => Box::new(nq::NeverQueue),
        SchedulerKind::Fo => Box::new(fo::Failover),
        SchedulerKind::Ovf => Box::new(ovf::Overflow),
        SchedulerKind::Twos => Box::new(twos::TwoChoices::new(seed)),
        SchedulerKind::Dh => Box::new(dh::DestinationHash::new(reals)),
        SchedulerKind::Sh => Box::new(sh::SourceHash::new(
            reals,
            has(SchedulerFlag::ShFallback),
            has(SchedulerFlag::ShPort),
        )),
        SchedulerKind::Mh => Box::new(mh::Maglev::new(
            reals,
            has(SchedulerFlag::MhFallback),
            has(SchedulerFlag::MhPort),
        )),
        SchedulerKind::Lblc => Box::new(lblc::Lblc::new(
            reals,
            match previous {
                Some(SharedState(Carried::Lblc(table))) => Some(table),
                _ => None,
            },
        )),
        SchedulerKind::Lblcr => Box::new(lblcr::Lblcr::new(
            reals,
            match previous {
                Some(SharedState(Carried::Lblcr(table))) => Some(table),
                _ => None,
            },
        )),
    }
}

/// Helpers for scheduler unit tests and benchmarks: compiled for tests, and for the
/// benchmarks with the `test-util` feature (`cargo bench --features test-util`).
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use std::sync::Arc;

    use super::Flow;
    use crate::{
        clock::Millis,
        live::{Real, RealState},
    };

    /// Reals `10.0.0.1`, `10.0.0.2`, … with these weights, in list order.
    pub fn reals(weights: &[u32]) -> Vec<Real> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let address = std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, (i & 0xff) as u8 + 1], 80));
                let state = Arc::new(RealState::new(0, 0));
                state.note_weight(weight);
                Real::new(address, weight, state)
            })
            .collect()
    }

    /// Sets a real's ActiveConn and InActConn by binding flows; keep the bindings alive.
    pub fn load(real: &Real, active: u32, inactive: u32) -> Vec<crate::live::FlowBinding> {
        (0..active + inactive)
            .map(|i| {
                let mut flow = real.state.bind();
                flow.set_active(i < active);
                flow
            })
            .collect()
    }

    /// A flow from 192.0.2.1 at time 0.
    pub fn flow() -> Flow {
        Flow {
            client: ([192, 0, 2, 1], 40_000).into(),
            destination: ([198, 51, 100, 1], 80).into(),
            now: Millis(0),
        }
    }

    /// One row of a table-driven scheduler test: weights and (ActiveConn, InActConn) per real
    /// in list order, and the index the scheduler must pick.
    #[derive(Debug)]
    pub struct Case {
        /// Weights, in list order.
        pub weights: &'static [u32],
        /// (ActiveConn, InActConn) of each real.
        pub counts: &'static [(u32, u32)],
        /// The expected pick.
        pub expect: Option<usize>,
    }

    /// Asserts every case's pick.
    pub fn check(scheduler: &dyn super::Scheduler, cases: &[Case]) {
        for case in cases {
            let reals = reals(case.weights);
            let _held: Vec<_> = reals
                .iter()
                .zip(case.counts)
                .flat_map(|(real, &(a, i))| load(real, a, i))
                .collect();
            assert_eq!(scheduler.pick(&reals, &flow()), case.expect, "{case:?}");
        }
    }

    /// `n` picks in a row.
    pub fn picks(scheduler: &dyn super::Scheduler, reals: &[Real], n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| scheduler.pick(reals, &flow())).collect()
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::{build, testing};
    use crate::config::SchedulerKind;

    fn loaded(
        weights: &[u32],
        counts: &[(u32, u32)],
    ) -> (Vec<crate::live::Real>, Vec<crate::live::FlowBinding>) {
        let reals = testing::reals(weights);
        let held = reals
            .iter()
            .zip(counts)
            .flat_map(|(real, &(a, i))| testing::load(real, a, i))
            .collect();
        (reals, held)
    }

    proptest! {
        /// lc never picks a real whose overhead another eligible real beats.
        #[test]
        fn lc_is_never_beaten(cases in proptest::collection::vec((0u32..4, 0u32..5, 0u32..300), 1..16)) {
            let weights: Vec<u32> = cases.iter().map(|c| c.0).collect();
            let counts: Vec<(u32, u32)> = cases.iter().map(|c| (c.1, c.2)).collect();
            let (reals, _held) = loaded(&weights, &counts);
            let pick = build(SchedulerKind::Lc, &[], &reals, None, 1).pick(&reals, &testing::flow());
            let eligible: Vec<_> = reals.iter().filter(|r| r.weight > 0).collect();
            match pick {
                None => prop_assert!(eligible.is_empty()),
                Some(p) => {
                    prop_assert!(reals[p].weight > 0);
                    for other in eligible {
                        prop_assert!(reals[p].state.overhead() <= other.state.overhead());
                    }
                }
            }
        }

        /// wlc never picks a real whose overhead / weight another eligible real beats.
        #[test]
        fn wlc_is_never_beaten(cases in proptest::collection::vec((0u32..6, 0u32..5, 0u32..300), 1..16)) {
            let weights: Vec<u32> = cases.iter().map(|c| c.0).collect();
            let counts: Vec<(u32, u32)> = cases.iter().map(|c| (c.1, c.2)).collect();
            let (reals, _held) = loaded(&weights, &counts);
            let pick = build(SchedulerKind::Wlc, &[], &reals, None, 1).pick(&reals, &testing::flow());
            let eligible: Vec<_> = reals.iter().filter(|r| r.weight > 0).collect();
            match pick {
                None => prop_assert!(eligible.is_empty()),
                Some(p) => {
                    let best = &reals[p];
                    prop_assert!(best.weight > 0);
                    for other in eligible {
                        prop_assert!(
                            best.state.overhead() * u64::from(other.weight)
                                <= other.state.overhead() * u64::from(best.weight)
                        );
                    }
                }
            }
        }

        /// dh, sh and mh map one key to one real while the set of reals is unchanged.
        #[test]
        fn hash_schedulers_are_stable(n in 1usize..40, key in any::<u32>(), port in any::<u16>()) {
            let reals = testing::reals(&vec![1; n]);
            let ip = std::net::Ipv4Addr::from(key);
            let flow = super::Flow {
                client: (ip, port).into(),
                destination: (ip, 80).into(),
                now: crate::clock::Millis(0),
            };
            for kind in [SchedulerKind::Dh, SchedulerKind::Sh, SchedulerKind::Mh] {
                let first = build(kind, &[], &reals, None, 1).pick(&reals, &flow);
                prop_assert!(first.is_some());
                // A scheduler rebuilt for the same reals agrees, pick after pick.
                let again = build(kind, &[], &reals, None, 1);
                for _ in 0..3 {
                    prop_assert_eq!(again.pick(&reals, &flow), first, "{:?}", kind);
                }
            }
        }
    }
}
