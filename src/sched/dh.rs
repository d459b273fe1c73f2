//! `dh`, destination hashing (`ip_vs_dh.c`): 256 buckets filled round robin, one bucket per
//! real per pass, weights ignored; the flow's destination address picks the bucket. An
//! unavailable real gives no result: there is no fallback.
//!
//! In proxy mode the destination is always the VIP, so every flow of a service lands in the
//! same bucket: dh (like lblc and lblcr) is meant for the packet modes, where the destination
//! is the address the client wanted to reach.

use super::{
    Flow, Scheduler,
    common::{GOLDEN, fold, unavailable, up_members},
};
use crate::live::Real;

/// Table size: `CONFIG_IP_VS_DH_TAB_BITS` = 8.
const BUCKETS: usize = 256;

/// Destination hashing.
#[derive(Debug)]
pub(super) struct DestinationHash {
    buckets: Vec<Option<usize>>,
}

impl DestinationHash {
    pub(super) fn new(reals: &[Real]) -> Self {
        let members = up_members(reals);
        let buckets = (0..BUCKETS)
            .map(|b| (!members.is_empty()).then(|| members[b % members.len()]))
            .collect();
        Self { buckets }
    }
}

impl Scheduler for DestinationHash {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let bucket = (fold(flow.destination.ip()).wrapping_mul(GOLDEN) as usize) & (BUCKETS - 1);
        self.buckets[bucket].filter(|&i| !unavailable(&reals[i], flow.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{flow, reals};

    fn to(destination: [u8; 4]) -> Flow {
        Flow {
            destination: (destination, 80).into(),
            ..flow()
        }
    }

    #[test]
    fn buckets_cycle_over_the_reals_ignoring_weights() {
        let reals = reals(&[5, 1, 1]);
        let dh = DestinationHash::new(&reals);
        assert_eq!(&dh.buckets[..6], &[0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn same_destination_same_real_and_no_fallback() {
        let mut reals = reals(&[1, 1, 1, 1]);
        let dh = DestinationHash::new(&reals);
        let first = dh.pick(&reals, &to([10, 1, 2, 3]));
        assert!(first.is_some());
        for _ in 0..5 {
            assert_eq!(dh.pick(&reals, &to([10, 1, 2, 3])), first);
        }
        // The kernel's hash: (0x0a010203 * 2654435761) & 255.
        assert_eq!(
            first,
            Some(((0x0a01_0203u32.wrapping_mul(GOLDEN) & 255) % 4) as usize)
        );
        reals[first.unwrap()].weight = 0;
        assert_eq!(dh.pick(&reals, &to([10, 1, 2, 3])), None);
    }
}
