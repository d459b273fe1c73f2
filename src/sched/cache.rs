//! A sharded map from address to scheduling state, shared by every worker: a lookup locks one
//! of its shards, never the whole map. Bounded by a hard cap (a warning is logged once when
//! it is reached, and nothing more is cached). The lblc / lblcr caches and persistence
//! templates are built on it; each brings its own expiry rule.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use crate::clock::Millis;

const SHARDS: usize = 16;

/// What to do with an entry after looking at it.
pub(super) enum Change<V> {
    /// Leave it (it may have been changed in place).
    Keep,
    /// Create it with this value, or replace it.
    Insert(V),
}

/// The sharded map.
#[derive(Debug)]
pub(crate) struct ShardedCache<V> {
    shards: Vec<Mutex<HashMap<IpAddr, V, ahash::RandomState>>>,
    entries: AtomicUsize,
    cap: usize,
    what: &'static str,
    cap_logged: AtomicBool,
    next_sweep: AtomicU64,
}

impl<V> ShardedCache<V> {
    /// An empty map holding at most `cap` entries; `what` names it in the log.
    pub(super) fn new(cap: usize, what: &'static str) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            entries: AtomicUsize::new(0),
            cap,
            what,
            cap_logged: AtomicBool::new(false),
            next_sweep: AtomicU64::new(0),
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Relaxed)
    }

    /// Runs `f` on the entry for `key` (or `None`) under its shard's lock, then applies the
    /// change it returns.
    pub(super) fn update<R>(&self, key: IpAddr, f: impl FnOnce(Option<&mut V>) -> (R, Change<V>)) -> R {
        let mut shard = self.shards[super::common::fold(key) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (result, change) = f(shard.get_mut(&key));
        match change {
            Change::Keep => {}
            Change::Insert(value) => {
                let full = self.len() >= self.cap;
                match shard.entry(key) {
                    Entry::Occupied(mut entry) => {
                        entry.insert(value);
                    }
                    Entry::Vacant(_) if full => {
                        if !self.cap_logged.swap(true, Relaxed) {
                            tracing::warn!(
                                entries = self.cap,
                                "{} is full; new clients are scheduled without an entry",
                                self.what
                            );
                        }
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(value);
                        self.entries.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        result
    }

    /// Whether a periodic sweep is due at `now` (every `interval_ms`); true for exactly one
    /// caller per interval. The first call only arms it.
    pub(super) fn sweep_due(&self, now: Millis, interval_ms: u64) -> bool {
        let due = self.next_sweep.load(Relaxed);
        if now.0 < due
            || self
                .next_sweep
                .compare_exchange(due, now.0 + interval_ms, Relaxed, Relaxed)
                .is_err()
        {
            return false;
        }
        due != 0
    }

    /// Removes entries for which `expired` holds, at most `goal` of them.
    pub(super) fn remove_where(&self, mut goal: usize, mut expired: impl FnMut(&V) -> bool) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, value| {
                let remove = goal > 0 && expired(value);
                goal -= usize::from(remove);
                !remove
            });
            self.entries.fetch_sub(before - shard.len(), Relaxed);
            if goal == 0 {
                return;
            }
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
    fn the_cap_stops_growth_but_not_replacement() {
        let cache = ShardedCache::<u8>::new(3, "test cache");
        for n in 0..10 {
            cache.update(ip(n), |_| ((), Change::Insert(1)));
        }
        assert_eq!(cache.len(), 3);
        cache.update(ip(0), |_| ((), Change::Insert(2)));
        assert_eq!(cache.update(ip(0), |v| (v.copied(), Change::Keep)), Some(2));
    }

    #[test]
    fn sweeps_are_due_once_per_interval() {
        let cache = ShardedCache::<u8>::new(3, "test cache");
        assert!(!cache.sweep_due(Millis(5), 100), "the first call arms");
        assert!(!cache.sweep_due(Millis(50), 100));
        assert!(cache.sweep_due(Millis(105), 100));
        assert!(!cache.sweep_due(Millis(106), 100));
    }
}
