//! The cache of `lblc` and `lblcr`: destination address → real (or set of reals), with the
//! kernel's expiry: every 60 s, when above 16384 entries, entries idle 6 min are trimmed; every
//! 30th check removes entries idle longer than `lblc_expiration` (24 h). Shared by every
//! worker and carried across reloads of the service.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU32, Ordering::Relaxed},
};

pub(super) use super::cache::Change;
use super::cache::ShardedCache;
use crate::clock::Millis;

/// `CHECK_EXPIRE_INTERVAL`.
const CHECK_INTERVAL_MS: u64 = 60_000;
/// `ENTRY_TIMEOUT`.
const ENTRY_TIMEOUT_MS: u64 = 6 * 60_000;
/// `lblc_expiration` / `lblcr_expiration` (sysctl default): idle time after which a full check
/// removes an entry, and age after which lblcr trims a set.
pub(super) const EXPIRATION_MS: u64 = 24 * 3_600_000;
/// `COUNT_FOR_FULL_EXPIRATION`.
const FULL_CHECK_EVERY: u32 = 30;
/// `max_size` = 16 × 1024.
const MAX_SIZE: usize = 16 * 1024;
/// Our hard cap.
const HARD_CAP: usize = 1 << 18;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    last_use: Millis,
}

/// Destination address → cached scheduling decision.
#[derive(Debug)]
pub(crate) struct LocalityTable<V> {
    cache: ShardedCache<Entry<V>>,
    checks: AtomicU32,
}

impl<V> LocalityTable<V> {
    pub(super) fn new() -> Self {
        Self {
            cache: ShardedCache::new(HARD_CAP, "the lblc/lblcr cache"),
            checks: AtomicU32::new(1),
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }

    /// Runs `f` on the entry for `key` (touched at `now`), or on `None`.
    pub(super) fn update<R>(
        &self,
        key: IpAddr,
        now: Millis,
        f: impl FnOnce(Option<&mut V>) -> (R, Change<V>),
    ) -> R {
        if self.cache.sweep_due(now, CHECK_INTERVAL_MS) {
            self.check(now);
        }
        self.cache.update(key, |entry| {
            let (result, change) = match entry {
                Some(entry) => {
                    entry.last_use = now;
                    f(Some(&mut entry.value))
                }
                None => f(None),
            };
            let change = match change {
                Change::Keep => Change::Keep,
                Change::Insert(value) => Change::Insert(Entry { value, last_use: now }),
            };
            (result, change)
        })
    }

    /// `ip_vs_lblc_check_expire`.
    fn check(&self, now: Millis) {
        let round = self.checks.fetch_add(1, Relaxed);
        let idle_for = |entry: &Entry<V>, ms: u64| now.0 >= entry.last_use.0 + ms;
        if round.is_multiple_of(FULL_CHECK_EVERY) {
            self.checks.store(1, Relaxed);
            self.cache
                .remove_where(usize::MAX, |entry| idle_for(entry, EXPIRATION_MS));
        } else if self.len() > MAX_SIZE {
            let goal = ((self.len() - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
            self.cache
                .remove_where(goal, |entry| idle_for(entry, ENTRY_TIMEOUT_MS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        std::net::Ipv4Addr::from(n).into()
    }

    #[test]
    fn full_check_removes_entries_idle_a_day() {
        let table = LocalityTable::<u32>::new();
        let minute = 60_000;
        table.update(ip(1), Millis(1), |_| ((), Change::Insert(7)));
        table.update(ip(2), Millis(1), |_| ((), Change::Insert(8)));
        assert_eq!(table.len(), 2);
        // Entry 2 stays in use; entry 1 idles. Checks run each minute; every 30th is full.
        for m in 1..=(24 * 60 + 31) {
            table.update(ip(2), Millis(m * minute), |_| ((), Change::Keep));
        }
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.update(ip(1), Millis(0), |value| (value.copied(), Change::Keep)),
            None
        );
    }

    #[test]
    fn the_hard_cap_stops_growth() {
        let table = LocalityTable::<u8>::new();
        for n in 0..(HARD_CAP as u32 + 10) {
            table.update(ip(n), Millis(1), |_| ((), Change::Insert(0)));
        }
        assert_eq!(table.len(), HARD_CAP);
    }
}
