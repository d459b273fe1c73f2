//! Who may open a flow to a service: its `allow` and `deny` networks (looked up in O(log n),
//! see [`Prefixes`](crate::config::Prefixes)) and its caps per source (`source_limits`): flows
//! held at once and new flows per second, per client address or client network.
//!
//! The caps' counts live in shards of a hash map, each behind its own mutex held for a few
//! instructions per new flow; a source's entry goes when its last flow ends (or, with a rate
//! cap, once its bucket is full again and room is needed). The map is bounded: when a shard is
//! full of sources that hold flows, a new source is refused (`source_rate`) rather than
//! letting a flood of addresses grow it without end.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use super::Refusal;
use crate::{clock::Millis, config::SourceLimits};

/// Shards of the source map.
const SHARDS: usize = 64;
/// Sources one service tracks at most (each entry is a few dozen bytes).
pub const MAX_SOURCES: usize = 262_144;
/// A token, in thousandths: buckets refill by `rate` thousandths per millisecond.
const TOKEN: u64 = 1_000;

/// The per-source counts of one service, shared by every snapshot with the same caps.
#[derive(Debug)]
pub struct SourceCounts {
    limits: SourceLimits,
    shards: Box<[Mutex<HashMap<SourceKey, SourceEntry, ahash::RandomState>>]>,
    hasher: ahash::RandomState,
}

/// A source: its family and its address masked to the caps' prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SourceKey {
    ipv6: bool,
    network: u128,
}

#[derive(Debug)]
struct SourceEntry {
    /// Flows it holds now.
    flows: u32,
    /// Its bucket, in thousandths of a new flow.
    tokens: u64,
    /// When the bucket was last filled up to now.
    refilled: Millis,
}

/// A flow's place in its source's count, given back when the flow ends (dropped).
#[derive(Debug)]
pub struct SourceHold {
    counts: Arc<SourceCounts>,
    key: SourceKey,
}

impl SourceCounts {
    /// Empty counts for `limits`.
    pub fn new(limits: SourceLimits) -> Self {
        Self {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The caps these counts enforce.
    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    /// Counts a new flow of `client` at `now`, or says which cap refuses it.
    pub fn take(self: &Arc<Self>, client: IpAddr, now: Millis) -> Result<SourceHold, Refusal> {
        let key = self.key(client);
        let mut shard = self.shard(&key);
        let capacity = self
            .limits
            .new_flows_per_second
            .map(|rate| u64::from(rate) * TOKEN);
        if !shard.contains_key(&key) && shard.len() >= MAX_SOURCES / SHARDS {
            shard.retain(|_, entry| !entry.idle(capacity, &self.limits, now));
            if shard.len() >= MAX_SOURCES / SHARDS {
                return Err(Refusal::SourceRate);
            }
        }
        let entry = shard.entry(key).or_insert(SourceEntry {
            flows: 0,
            tokens: capacity.unwrap_or(0),
            refilled: now,
        });
        if self.limits.max_flows.is_some_and(|max| entry.flows >= max) {
            return Err(Refusal::SourceFlows);
        }
        if let (Some(rate), Some(capacity)) = (self.limits.new_flows_per_second, capacity) {
            entry.refill(rate, capacity, now);
            if entry.tokens < TOKEN {
                return Err(Refusal::SourceRate);
            }
            entry.tokens -= TOKEN;
        }
        entry.flows += 1;
        Ok(SourceHold {
            counts: Arc::clone(self),
            key,
        })
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn key(&self, client: IpAddr) -> SourceKey {
        let (value, width, prefix) = match client.to_canonical() {
            IpAddr::V4(ip) => (u128::from(u32::from(ip)), 32, self.limits.ipv4_prefix),
            IpAddr::V6(ip) => (u128::from(ip), 128, self.limits.ipv6_prefix),
        };
        let host_bits = u32::from(width - prefix.min(width));
        let network = if host_bits >= 128 {
            0
        } else {
            value >> host_bits << host_bits
        };
        SourceKey {
            ipv6: width == 128,
            network,
        }
    }

    fn shard(
        &self,
        key: &SourceKey,
    ) -> std::sync::MutexGuard<'_, HashMap<SourceKey, SourceEntry, ahash::RandomState>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SourceEntry {
    /// Fills the bucket by what `rate` gave since it was last filled, up to `capacity`.
    fn refill(&mut self, rate: u32, capacity: u64, now: Millis) {
        let elapsed = now.0.saturating_sub(self.refilled.0);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(capacity);
        self.refilled = now;
    }

    /// Whether forgetting this entry changes nothing: no flows, and a full bucket by now.
    fn idle(&self, capacity: Option<u64>, limits: &SourceLimits, now: Millis) -> bool {
        if self.flows > 0 {
            return false;
        }
        match (capacity, limits.new_flows_per_second) {
            (Some(capacity), Some(rate)) => {
                let elapsed = now.0.saturating_sub(self.refilled.0);
                self.tokens
                    .saturating_add(elapsed.saturating_mul(u64::from(rate)))
                    >= capacity
            }
            _ => true,
        }
    }
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        let mut shard = self.counts.shard(&self.key);
        if let Some(entry) = shard.get_mut(&self.key) {
            entry.flows = entry.flows.saturating_sub(1);
            // Without a rate cap nothing else is remembered: the entry goes with its last flow.
            if entry.flows == 0 && self.counts.limits.new_flows_per_second.is_none() {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_flows: Option<u32>, rate: Option<u32>, ipv4_prefix: u8) -> Arc<SourceCounts> {
        Arc::new(SourceCounts::new(SourceLimits {
            max_flows,
            new_flows_per_second: rate,
            ipv4_prefix,
            ipv6_prefix: 64,
        }))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_holds_at_most_max_flows_and_gets_them_back_as_flows_end() {
        let counts = limits(Some(2), None, 32);
        let now = Millis(1_000);
        let first = counts.take(ip("10.0.0.1"), now).unwrap();
        let _second = counts.take(ip("10.0.0.1"), now).unwrap();
        assert_eq!(
            counts.take(ip("10.0.0.1"), now).unwrap_err(),
            Refusal::SourceFlows
        );
        let _other = counts.take(ip("10.0.0.2"), now).unwrap();
        drop(first);
        let _third = counts.take(ip("10.0.0.1"), now).unwrap();
        drop((_second, _third, _other));
        assert_eq!(counts.sources(), 0, "entries go with their last flow");
    }

    #[test]
    fn new_flows_per_second_is_a_bucket_of_one_seconds_worth() {
        let counts = limits(None, Some(10), 32);
        let at = |ms: u64| Millis(1_000_000 + ms);
        let held: Vec<SourceHold> = (0..10)
            .map(|_| counts.take(ip("10.0.0.1"), at(0)).unwrap())
            .collect();
        assert_eq!(
            counts.take(ip("10.0.0.1"), at(0)).unwrap_err(),
            Refusal::SourceRate
        );
        // 100 ms later one token is back; ending flows gives none.
        drop(held);
        assert_eq!(
            counts.take(ip("10.0.0.1"), at(50)).unwrap_err(),
            Refusal::SourceRate
        );
        let _one = counts.take(ip("10.0.0.1"), at(100)).unwrap();
        assert_eq!(
            counts.take(ip("10.0.0.1"), at(100)).unwrap_err(),
            Refusal::SourceRate
        );
        // Another source has its own bucket.
        assert!(counts.take(ip("10.0.0.2"), at(100)).is_ok());
    }

    #[test]
    fn a_prefix_makes_a_network_one_source() {
        let counts = limits(Some(1), None, 24);
        let _held = counts.take(ip("192.0.2.1"), Millis(0)).unwrap();
        assert_eq!(
            counts.take(ip("192.0.2.200"), Millis(0)).unwrap_err(),
            Refusal::SourceFlows
        );
        assert!(counts.take(ip("192.0.3.1"), Millis(0)).is_ok());
        let _v6 = counts.take(ip("2001:db8::1"), Millis(0)).unwrap();
        assert_eq!(
            counts.take(ip("2001:db8::ffff"), Millis(0)).unwrap_err(),
            Refusal::SourceFlows,
            "one /64"
        );
        // An IPv4 client of a dual-stack socket is its IPv4 address.
        assert_eq!(
            counts.take(ip("::ffff:192.0.2.9"), Millis(0)).unwrap_err(),
            Refusal::SourceFlows
        );
    }

    #[test]
    fn a_flood_of_sources_is_bounded() {
        let counts = limits(Some(1), None, 32);
        let held: Vec<SourceHold> = (0..MAX_SOURCES as u32 + 1_000)
            .filter_map(|i| counts.take(IpAddr::from(i.to_be_bytes()), Millis(0)).ok())
            .collect();
        assert!(held.len() <= MAX_SOURCES && counts.sources() <= MAX_SOURCES);
        assert!(held.len() > MAX_SOURCES * 9 / 10, "{}", held.len());
        drop(held);
        assert_eq!(counts.sources(), 0);
        // Idle rate entries make room when it is needed.
        let rated = limits(None, Some(1), 32);
        for i in 0..MAX_SOURCES as u32 + 1_000 {
            drop(rated.take(IpAddr::from(i.to_be_bytes()), Millis(u64::from(i) * 2)));
        }
        assert!(rated.sources() <= MAX_SOURCES);
        assert!(rated.take(ip("203.0.113.1"), Millis(10_000_000)).is_ok());
    }
}
