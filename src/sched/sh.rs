//! `sh`, source hashing (`ip_vs_sh.c`): 256 buckets, each real taking `weight` consecutive
//! buckets per pass (at least one); the client's address (and port, with `sh-port`) picks the
//! bucket. Without `sh-fallback` an unavailable real gives no result; with it, the search goes
//! on through the table until an available real or an empty bucket.

use super::{
    Flow, Scheduler,
    common::{GOLDEN, fold, hashed_port, unavailable, up_members},
};
use crate::live::Real;

/// Table size: `CONFIG_IP_VS_SH_TAB_BITS` = 8.
const BUCKETS: usize = 256;

/// Source hashing.
#[derive(Debug)]
pub(super) struct SourceHash {
    buckets: Vec<Option<usize>>,
    fallback: bool,
    port: bool,
}

impl SourceHash {
    pub(super) fn new(reals: &[Real], fallback: bool, port: bool) -> Self {
        let members = up_members(reals);
        let mut buckets = Vec::with_capacity(BUCKETS);
        let (mut member, mut taken) = (0, 0);
        for _ in 0..BUCKETS {
            if members.is_empty() {
                buckets.push(None);
                continue;
            }
            let real = members[member % members.len()];
            buckets.push(Some(real));
            taken += 1;
            if taken >= reals[real].weight.max(1) {
                member += 1;
                taken = 0;
            }
        }
        Self {
            buckets,
            fallback,
            port,
        }
    }

    fn hash(&self, flow: &Flow, offset: u32) -> usize {
        let port = hashed_port(flow, self.port);
        (offset.wrapping_add(port.wrapping_add(fold(flow.client.ip())).wrapping_mul(GOLDEN)) as usize)
            & (BUCKETS - 1)
    }
}

impl Scheduler for SourceHash {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let first = self.hash(flow, 0);
        let real = self.buckets[first]?;
        if !unavailable(&reals[real], flow.now) {
            return Some(real);
        }
        if !self.fallback {
            return None;
        }
        for offset in 0..BUCKETS {
            let roffset = ((offset + first) % BUCKETS) as u32;
            let real = self.buckets[self.hash(flow, roffset)]?;
            if !unavailable(&reals[real], flow.now) {
                return Some(real);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sched::testing::{flow, reals};

    fn from(client: [u8; 4], port: u16) -> Flow {
        Flow {
            client: (client, port).into(),
            ..flow()
        }
    }

    #[test]
    fn each_real_takes_weight_consecutive_buckets() {
        let reals = reals(&[3, 1, 0]);
        let sh = SourceHash::new(&reals, false, false);
        assert_eq!(&sh.buckets[..10], &[0, 0, 0, 1, 2, 0, 0, 0, 1, 2].map(Some));
    }

    #[test]
    fn port_is_hashed_only_with_sh_port() {
        let reals = reals(&[1; 8]);
        let plain = SourceHash::new(&reals, false, false);
        let by_port = SourceHash::new(&reals, false, true);
        let picks: std::collections::HashSet<_> = (1000..1032)
            .map(|p| plain.pick(&reals, &from([10, 0, 0, 9], p)))
            .collect();
        assert_eq!(picks.len(), 1, "one source, one real");
        let picks: std::collections::HashSet<_> = (1000..1032)
            .map(|p| by_port.pick(&reals, &from([10, 0, 0, 9], p)))
            .collect();
        assert!(picks.len() > 1, "sh-port spreads one source's ports");
    }

    #[test]
    fn fallback_finds_another_real() {
        let mut reals = reals(&[1, 1, 1]);
        let client = from([192, 0, 2, 77], 0);
        let strict = SourceHash::new(&reals, false, false);
        let lenient = SourceHash::new(&reals, true, false);
        let home = strict.pick(&reals, &client).unwrap();
        reals[home].weight = 0;
        assert_eq!(strict.pick(&reals, &client), None);
        let other = lenient.pick(&reals, &client).unwrap();
        assert_ne!(other, home);
    }

    proptest! {
        #[test]
        fn same_source_same_real(a in any::<u8>(), b in any::<u8>(), port in any::<u16>(), n in 1usize..20) {
            let reals = reals(&vec![1; n]);
            let sh = SourceHash::new(&reals, false, false);
            let first = sh.pick(&reals, &from([10, a, b, 1], port));
            prop_assert!(first.is_some());
            prop_assert_eq!(sh.pick(&reals, &from([10, a, b, 1], port.wrapping_add(1))), first);
        }
    }
}
