//! `lblcr`, locality-based least connection with replication (`ip_vs_lblcr.c`): a destination
//! keeps a *set* of reals; the least loaded member serves it, a new member is added (by wlc)
//! when that one is overloaded, and the most loaded member is dropped once the set has not
//! changed for `lblcr_expiration` (24 h).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::{
    Flow, Scheduler,
    common::{address_index, conn_overhead, locality_overloaded, own_weight, weighted_least},
    locality::{Change, EXPIRATION_MS, LocalityTable},
};
use crate::{clock::Millis, live::Real};

/// The reals serving one destination, most recently added first, and when it last changed.
#[derive(Debug, Clone)]
pub(crate) struct DestSet {
    members: Vec<SocketAddr>,
    last_mod: Millis,
}

/// Locality-based least connection with replication.
#[derive(Debug)]
pub(super) struct Lblcr {
    table: Arc<LocalityTable<DestSet>>,
    index: HashMap<SocketAddr, usize>,
}

impl Lblcr {
    pub(super) fn new(reals: &[Real], table: Option<Arc<LocalityTable<DestSet>>>) -> Self {
        let index = address_index(reals);
        Self {
            table: table.unwrap_or_else(|| Arc::new(LocalityTable::new())),
            index,
        }
    }

    fn members<'a>(&'a self, set: &'a DestSet) -> impl Iterator<Item = usize> + 'a {
        set.members
            .iter()
            .filter_map(|address| self.index.get(address).copied())
    }

    /// `ip_vs_dest_set_min`: the weighted least loaded usable member.
    fn least(&self, set: &DestSet, reals: &[Real], now: Millis) -> Option<usize> {
        let mut members = self.members(set).filter(|&i| reals[i].usable(now));
        let mut least = members.find(|&i| reals[i].weight > 0)?;
        for i in members {
            if conn_overhead(&reals[least]) * u64::from(reals[i].weight)
                > conn_overhead(&reals[i]) * u64::from(reals[least].weight)
            {
                least = i;
            }
        }
        Some(least)
    }

    /// `ip_vs_dest_set_max`: the weighted most loaded member with weight > 0.
    fn most(&self, set: &DestSet, reals: &[Real]) -> Option<usize> {
        let mut members = self.members(set);
        let mut most = members.find(|&i| reals[i].weight > 0)?;
        for i in members {
            if reals[i].weight > 0
                && conn_overhead(&reals[most]) * u64::from(reals[i].weight)
                    < conn_overhead(&reals[i]) * u64::from(reals[most].weight)
            {
                most = i;
            }
        }
        Some(most)
    }
}

impl Scheduler for Lblcr {
    fn pick(&self, reals: &[Real], flow: &Flow) -> Option<usize> {
        let now = flow.now;
        self.table.update(flow.destination.ip(), now, |cached| {
            let Some(set) = cached else {
                return match weighted_least(reals, now, conn_overhead, own_weight) {
                    Some(i) => (
                        Some(i),
                        Change::Insert(DestSet {
                            members: vec![reals[i].address],
                            last_mod: now,
                        }),
                    ),
                    None => (None, Change::Keep),
                };
            };
            let least = self.least(set, reals, now);
            if set.members.len() > 1
                && now.0 > set.last_mod.0.saturating_add(EXPIRATION_MS)
                && let Some(most) = self.most(set, reals)
            {
                set.members.retain(|address| *address != reals[most].address);
            }
            if let Some(i) = least.filter(|&i| !locality_overloaded(&reals[i], reals)) {
                return (Some(i), Change::Keep);
            }
            let chosen = weighted_least(reals, now, conn_overhead, own_weight);
            if let Some(i) = chosen
                && !set.members.contains(&reals[i].address)
            {
                set.members.insert(0, reals[i].address);
                set.last_mod = now;
            }
            (chosen, Change::Keep)
        })
    }

    fn shared_state(&self) -> Option<super::SharedState> {
        Some(super::SharedState(super::Carried::Lblcr(Arc::clone(&self.table))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::{flow, load, reals};

    fn to(last: u8, now: u64) -> Flow {
        Flow {
            destination: ([10, 9, 9, last], 80).into(),
            now: Millis(now),
            ..flow()
        }
    }

    #[test]
    fn the_set_grows_under_load_and_shrinks_after_expiration() {
        let reals = reals(&[1, 4, 4]);
        let lblcr = Lblcr::new(&reals, None);
        assert_eq!(lblcr.pick(&reals, &to(1, 0)), Some(0));
        // Real 0 overloaded (2 active > weight 1 while others are idle): wlc adds real 1.
        let _busy = load(&reals[0], 2, 0);
        assert_eq!(lblcr.pick(&reals, &to(1, 10)), Some(1));
        let set = lblcr.table.update(to(1, 0).destination.ip(), Millis(10), |s| {
            (s.cloned().unwrap(), Change::Keep)
        });
        assert_eq!(set.members, [reals[1].address, reals[0].address]);
        // Still the least loaded member of the set (real 1) serves.
        assert_eq!(lblcr.pick(&reals, &to(1, 20)), Some(1));
        // After lblcr_expiration without change, the most loaded member (real 0) is dropped.
        assert_eq!(lblcr.pick(&reals, &to(1, EXPIRATION_MS + 11)), Some(1));
        let set = lblcr
            .table
            .update(to(1, 0).destination.ip(), Millis(EXPIRATION_MS + 12), |s| {
                (s.cloned().unwrap(), Change::Keep)
            });
        assert_eq!(set.members, [reals[1].address]);
    }
}
