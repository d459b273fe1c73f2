//! Traffic rates, estimated as IPVS does: every 2 s the counters of every service and real are
//! sampled, and each rate is smoothed as `avg += (rate − avg) / 4` (about the last 8 s).

use std::{collections::HashMap, net::SocketAddr, sync::atomic::Ordering::Relaxed, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    config::ServiceKey,
    table::{RealState, Service, ServiceTable},
};

/// How often the counters are sampled.
pub const PERIOD: Duration = Duration::from_secs(2);

/// ipvsadm's counters (`--stats`): flows, packets and bytes each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Flows.
    pub conns: u64,
    /// Packets client → real (proxy mode: UDP datagrams; TCP is counted in bytes only).
    pub in_pkts: u64,
    /// Packets real → client.
    pub out_pkts: u64,
    /// Bytes client → real.
    pub in_bytes: u64,
    /// Bytes real → client.
    pub out_bytes: u64,
}

impl Counters {
    /// The counters of one real.
    pub fn of(state: &RealState) -> Self {
        Self {
            conns: state.conns.load(Relaxed),
            in_pkts: state.packets_in.load(Relaxed),
            out_pkts: state.packets_out.load(Relaxed),
            in_bytes: state.bytes_in.load(Relaxed),
            out_bytes: state.bytes_out.load(Relaxed),
        }
    }

    /// A service's counters: its flows, and its reals' (and sorry server's) traffic.
    pub fn of_service(service: &Service) -> Self {
        let traffic = service
            .reals
            .iter()
            .chain(service.sorry.as_ref())
            .map(|real| Self::of(&real.state))
            .fold(Self::default(), |sum, real| sum.plus(real));
        Self {
            conns: service.stats.conns.load(Relaxed),
            ..traffic
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            conns: self.conns + other.conns,
            in_pkts: self.in_pkts + other.in_pkts,
            out_pkts: self.out_pkts + other.out_pkts,
            in_bytes: self.in_bytes + other.in_bytes,
            out_bytes: self.out_bytes + other.out_bytes,
        }
    }

    fn values(self) -> [u64; 5] {
        [
            self.conns,
            self.in_pkts,
            self.out_pkts,
            self.in_bytes,
            self.out_bytes,
        ]
    }
}

/// ipvsadm's rates (`--rate`), per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Flows per second.
    pub cps: u64,
    /// Packets per second, client → real.
    pub in_pps: u64,
    /// Packets per second, real → client.
    pub out_pps: u64,
    /// Bytes per second, client → real.
    pub in_bps: u64,
    /// Bytes per second, real → client.
    pub out_bps: u64,
}

/// The estimates of every service (`None`) and real (`Some(address)`).
#[derive(Debug, Default)]
pub struct Estimator {
    entries: HashMap<(ServiceKey, Option<SocketAddr>), Estimate>,
}

#[derive(Debug, Default)]
struct Estimate {
    last: Counters,
    average: [f64; 5],
}

impl Estimator {
    /// Samples every counter of `table`, `elapsed` after the previous sample.
    pub fn sample(&mut self, table: &ServiceTable, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64().max(0.001);
        let mut seen = HashMap::with_capacity(self.entries.len());
        for service in table.services() {
            let points = std::iter::once((None, Counters::of_service(service))).chain(
                service
                    .reals
                    .iter()
                    .map(|real| (Some(real.address), Counters::of(&real.state))),
            );
            for (real, now) in points {
                let id = (service.key, real);
                let estimate = self.entries.remove(&id).unwrap_or(Estimate {
                    last: now,
                    average: [0.0; 5],
                });
                let mut next = Estimate {
                    last: now,
                    average: estimate.average,
                };
                for ((average, now), before) in next
                    .average
                    .iter_mut()
                    .zip(now.values())
                    .zip(estimate.last.values())
                {
                    // Counters zeroed meanwhile count as a fresh start.
                    let rate = now.saturating_sub(before) as f64 / seconds;
                    *average += (rate - *average) / 4.0;
                }
                seen.insert(id, next);
            }
        }
        self.entries = seen;
    }

    /// The current estimate for a service (`real: None`) or one of its reals.
    pub fn rates(&self, service: &ServiceKey, real: Option<SocketAddr>) -> Rates {
        let Some(estimate) = self.entries.get(&(*service, real)) else {
            return Rates::default();
        };
        let [cps, in_pps, out_pps, in_bps, out_bps] = estimate.average.map(|value| value.round() as u64);
        Rates {
            cps,
            in_pps,
            out_pps,
            in_bps,
            out_bps,
        }
    }

    /// Forgets the estimates of a service and its reals (after `zero`).
    pub fn reset(&mut self, service: &ServiceKey) {
        self.entries.retain(|(key, _), _| key != service);
    }
}
