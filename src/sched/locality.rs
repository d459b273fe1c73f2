//! The cache of `lblc` and `lblcr`: destination address → real (or set of reals), with the
//! kernel's expiry. It is shared by every worker and carried across reloads of the service,
//! so it is sharded: a pick locks one shard, never the whole table.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use crate::clock::Millis;

/// `CHECK_EXPIRE_INTERVAL`: how often the table is checked.
const CHECK_INTERVAL_MS: u64 = 60_000;
/// `ENTRY_TIMEOUT`: idle time after which an entry may go when the table is too large.
const ENTRY_TIMEOUT_MS: u64 = 6 * 60_000;
/// `lblc_expiration` / `lblcr_expiration` (sysctl default): idle time after which a full check
/// removes an entry, and age after which lblcr trims a set.
pub(super) const EXPIRATION_MS: u64 = 24 * 3_600_000;
/// `COUNT_FOR_FULL_EXPIRATION`: every 30th check is a full one.
const FULL_CHECK_EVERY: u32 = 30;
/// `max_size` = 16 × 1024: above it, idle entries are trimmed.
const MAX_SIZE: usize = 16 * 1024;
/// Our hard cap: beyond it no new entry is made (flows are still scheduled).
const HARD_CAP: usize = 1 << 18;
const SHARDS: usize = 16;

/// A cached value and when it was last used.
#[derive(Debug)]
pub(super) struct Entry<V> {
    pub(super) value: V,
    pub(super) last_use: Millis,
}

/// Destination address → cached scheduling decision.
#[derive(Debug)]
pub(crate) struct LocalityTable<V> {
    shards: Vec<Mutex<HashMap<IpAddr, Entry<V>, ahash::RandomState>>>,
    entries: AtomicUsize,
    next_check: AtomicU64,
    checks: AtomicU32,
    cap_logged: AtomicBool,
}

impl<V> LocalityTable<V> {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            entries: AtomicUsize::new(0),
            next_check: AtomicU64::new(0),
            checks: AtomicU32::new(1),
            cap_logged: AtomicBool::new(false),
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Relaxed)
    }

    fn shard(&self, key: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry<V>, ahash::RandomState>> {
        let index = super::common::fold(key) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the entry for `key` (touched at `now`), or on `None`; `f` may create,
    /// change or remove it by returning the new state.
    pub(super) fn update<R>(
        &self,
        key: IpAddr,
        now: Millis,
        f: impl FnOnce(Option<&mut V>) -> (R, Change<V>),
    ) -> R {
        self.maybe_check(now);
        let mut shard = self.shard(key);
        let entry = shard.get_mut(&key);
        let (result, change) = match entry {
            Some(entry) => {
                entry.last_use = now;
                f(Some(&mut entry.value))
            }
            None => f(None),
        };
        if let Change::Insert(value) = change {
            if self.entries.load(Relaxed) >= HARD_CAP {
                if !self.cap_logged.swap(true, Relaxed) {
                    tracing::warn!(
                        entries = HARD_CAP,
                        "lblc/lblcr cache is full; new destinations are scheduled without caching"
                    );
                }
            } else if shard.insert(key, Entry { value, last_use: now }).is_none() {
                self.entries.fetch_add(1, Relaxed);
            }
        }
        result
    }

    /// The kernel's periodic expiry, run by the first pick after each interval.
    fn maybe_check(&self, now: Millis) {
        let due = self.next_check.load(Relaxed);
        if now.0 < due
            || self
                .next_check
                .compare_exchange(due, now.0 + CHECK_INTERVAL_MS, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        if due == 0 {
            return; // The first pick only arms the check.
        }
        let round = self.checks.fetch_add(1, Relaxed);
        if round.is_multiple_of(FULL_CHECK_EVERY) {
            self.checks.store(1, Relaxed);
            self.remove_idle(now, EXPIRATION_MS, usize::MAX);
        } else if self.len() > MAX_SIZE {
            let goal = ((self.len() - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
            self.remove_idle(now, ENTRY_TIMEOUT_MS, goal);
        }
    }

    fn remove_idle(&self, now: Millis, idle_ms: u64, mut goal: usize) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, entry| {
                let keep = goal == 0 || now.0 < entry.last_use.0 + idle_ms;
                if !keep {
                    goal -= 1;
                }
                keep
            });
            self.entries.fetch_sub(before - shard.len(), Relaxed);
            if goal == 0 {
                return;
            }
        }
    }
}

/// What to do with an entry after a pick.
pub(super) enum Change<V> {
    /// Leave it as it is (touched).
    Keep,
    /// Create it with this value (or replace it).
    Insert(V),
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
        // Keep entry 2 in use; entry 1 idles. Checks run each minute; the 30th is full.
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
