//! `lblc`, locality-based least connection (`ip_vs_lblc.c`): a destination address keeps the
//! real it was last given while that real is available, has weight > 0 and is not overloaded in
//! lblc's sense; otherwise wlc picks a real and the cache entry is replaced.
//!
//! Built for transparent cache farms, it keys on the destination the client wanted: in proxy
//! mode that is always the VIP, so the whole service shares one entry.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    Flow, Scheduler,
    common::{address_index, conn_overhead, locality_overloaded, own_weight, weighted_least},
    locality::{Change, LocalityTable},
};
use crate::live::Real;

/// Locality-based least connection.
#[derive(Debug)]
pub(super) struct Lblc {
    table: Arc<LocalityTable<SocketAddr>>,
    index: HashMap<SocketAddr, usize>,
}

impl Lblc {
    pub(super) fn new(reals: &[Real], table: Option<Arc<LocalityTable<SocketAddr>>>) -> Self {
        let index = address_index(reals);
        Self {
            table: table.unwrap_or_else(|| Arc::new(LocalityTable::new())),
            index,
        }
    }
}

impl Scheduler for Lblc {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        self.table.update(flow.destination.ip(), flow.now, |cached| {
            let keep = cached
                .and_then(|address| self.index.get(address).copied())
                .filter(|&i| {
                    let real = &reals[i];
                    real.available(flow.now) && real.weight > 0 && !locality_overloaded(real, reals)
                });
            if let Some(i) = keep {
                return (Some(i), Change::Keep);
            }
            match weighted_least(reals, flow.now, conn_overhead, own_weight) {
                Some(i) => (Some(i), Change::Insert(reals[i].address)),
                None => (None, Change::Keep),
            }
        })
    }

    fn shared_state(&self) -> Option<super::SharedState> {
        Some(super::SharedState(super::Carried::Lblc(Arc::clone(&self.table))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{flow, load, reals};

    fn to(last: u8) -> Flow {
        Flow {
            destination: ([10, 9, 9, last], 80).into(),
            ..flow()
        }
    }

    #[test]
    fn a_destination_sticks_to_its_real() {
        let reals = reals(&[1, 1, 1]);
        let lblc = Lblc::new(&reals, None);
        let first = lblc.pick(&reals, &to(1)).unwrap();
        assert_eq!(first, 0, "wlc on idle reals: the first");
        let _busy = load(&reals[0], 1, 0);
        assert_eq!(
            lblc.pick(&reals, &to(1)),
            Some(0),
            "cached, though wlc would pick another now"
        );
        assert_eq!(
            lblc.pick(&reals, &to(2)),
            Some(1),
            "a new destination goes by wlc"
        );
    }

    #[test]
    fn an_overloaded_cached_real_is_replaced() {
        let reals = reals(&[1, 4]);
        let lblc = Lblc::new(&reals, None);
        assert_eq!(lblc.pick(&reals, &to(1)), Some(0));
        // Real 0: 2 active > weight 1, and real 1 is under half its weight: overloaded.
        let _busy = load(&reals[0], 2, 0);
        assert_eq!(lblc.pick(&reals, &to(1)), Some(1));
        assert_eq!(
            lblc.pick(&reals, &to(1)),
            Some(1),
            "the entry now points to real 1"
        );
    }

    #[test]
    fn a_down_cached_real_is_replaced() {
        let mut reals = reals(&[1, 1]);
        let lblc = Lblc::new(&reals, None);
        assert_eq!(lblc.pick(&reals, &to(1)), Some(0));
        reals[0].up = false;
        assert_eq!(lblc.pick(&reals, &to(1)), Some(1));
    }
}
