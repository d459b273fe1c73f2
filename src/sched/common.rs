//! Pieces several schedulers share, each transcribed once from the kernel.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use super::Flow;
use crate::{clock::Millis, live::Real};

/// The multiplier of IPVS's multiplicative hashes (`2654435761`, Knuth's golden ratio).
pub(super) const GOLDEN: u32 = 2_654_435_761;

/// The weighted-least loop of `ip_vs_wlc_schedule` (also lblc's and lblcr's fallback, and sed
/// with another overhead): the first usable real with weight > 0 starts, then a usable real
/// replaces it when `overhead(best) * weight(real) > overhead(real) * weight(best)`. The
/// result is the earliest usable real with weight > 0 of the least `overhead / weight`.
///
/// Run as two interleaved scans (even and odd positions) merged at the end, preferring the
/// earlier real on a tie: the same result, but two independent chains of comparisons that
/// the CPU overlaps instead of one. (Reals of weight 0 are skipped; in the kernel's scan they
/// can never win a comparison.)
///
/// `lc` is the same search with every weight counted as 1: pass `weigh = |_| 1`.
pub(super) fn weighted_least(
    reals: &[Real],
    now: Millis,
    overhead: impl Fn(&Real) -> u64,
    weigh: impl Fn(&Real) -> u64,
) -> Option<usize> {
    #[derive(Clone, Copy)]
    struct Best {
        index: usize,
        overhead: u64,
        weight: u64,
    }
    let consider = |best: &mut Option<Best>, index: usize| {
        let real = &reals[index];
        if real.weight == 0 || !real.usable(now) {
            return;
        }
        let (overhead, weight) = (overhead(real), weigh(real));
        if best.is_none_or(|b| b.overhead * weight > overhead * b.weight) {
            *best = Some(Best {
                index,
                overhead,
                weight,
            });
        }
    };
    let (mut even, mut odd) = (None, None);
    let mut i = 0;
    while i + 1 < reals.len() {
        consider(&mut even, i);
        consider(&mut odd, i + 1);
        i += 2;
    }
    if i < reals.len() {
        consider(&mut even, i);
    }
    match (even, odd) {
        (Some(a), Some(b)) => {
            let (left, right) = (b.overhead * a.weight, a.overhead * b.weight);
            Some(if left < right || (left == right && b.index < a.index) {
                b.index
            } else {
                a.index
            })
        }
        (a, b) => a.or(b).map(|best| best.index),
    }
}

/// IPVS's connection overhead: `(ActiveConn << 8) + InActConn`.
pub(super) fn conn_overhead(real: &Real) -> u64 {
    real.state.overhead()
}

/// An address as the hash schedulers see it: IPv4 in host order, IPv6 as the XOR of its four
/// 32-bit words (the kernel's `addr_fold`, then `ntohl`).
pub(crate) fn fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (0..4)
                .map(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
                .fold(0, |a, w| a ^ w)
        }
    }
}

/// The hash schedulers' test for a real that may not take the flow: weight 0, or not usable
/// (IPVS: `weight <= 0 || OVERLOAD`).
pub(super) fn unavailable(real: &Real, now: Millis) -> bool {
    real.weight == 0 || !real.usable(now)
}

/// lblc / lblcr's own overload test: the real has more active flows than its weight while some
/// real of the service is under half its weight.
pub(super) fn locality_overloaded(real: &Real, reals: &[Real]) -> bool {
    u64::from(real.state.active()) > u64::from(real.weight)
        && reals
            .iter()
            .any(|other| u64::from(other.state.active()) * 2 < u64::from(other.weight))
}

/// The reals that are up, by index: the members of a hash table (a real that is down is, for
/// IPVS, a real removed from the service).
pub(super) fn up_members(reals: &[Real]) -> Vec<usize> {
    (0..reals.len()).filter(|&i| reals[i].up).collect()
}

/// The port the hash schedulers mix in: the client's with `sh-port` / `mh-port`, else 0.
pub(super) fn hashed_port(flow: &Flow, with_port: bool) -> u32 {
    if with_port {
        u32::from(flow.client.port())
    } else {
        0
    }
}

/// Real address → index in `reals`, for caches that remember reals by address.
pub(super) fn address_index(reals: &[Real]) -> HashMap<SocketAddr, usize> {
    reals
        .iter()
        .enumerate()
        .map(|(i, real)| (real.address, i))
        .collect()
}

/// The weight the weighted schedulers divide by: the real's own.
pub(super) fn own_weight(real: &Real) -> u64 {
    u64::from(real.weight)
}

/// The usable real with the highest weight (above 0) among those `eligible` allows; the first
/// in the list wins a tie. `fo` allows all; `ovf` only reals within their weight.
pub(super) fn heaviest(reals: &[Real], now: Millis, eligible: impl Fn(&Real) -> bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, real) in reals.iter().enumerate() {
        if real.usable(now) && eligible(real) && real.weight > best.map_or(0, |b| reals[b].weight) {
            best = Some(i);
        }
    }
    best
}
