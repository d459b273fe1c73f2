//! Traffic rates, estimated as IPVS does: every 2 s the counters of every service and real are
//! sampled, and each rate is smoothed as `avg += (rate − avg) / 4` (about the last 8 s).

use std::{collections::HashMap, net::SocketAddr, sync::atomic::Ordering::Relaxed, time::Duration};

use crate::{
    api::{Counters, Rates},
    config::ServiceKey,
    table::{RealState, Service, ServiceTable},
};

/// How often the counters are sampled.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The counters of one real.
pub fn real_counters(state: &RealState) -> Counters {
    Counters {
        conns: state.conns.load(Relaxed),
        in_pkts: state.packets_in.load(Relaxed),
        out_pkts: state.packets_out.load(Relaxed),
        in_bytes: state.bytes_in.load(Relaxed),
        out_bytes: state.bytes_out.load(Relaxed),
    }
}

/// A service's counters: its flows, and its reals' (and sorry server's) traffic.
pub fn service_counters(service: &Service) -> Counters {
    let traffic = service
        .reals
        .iter()
        .chain(service.sorry.as_ref())
        .map(|real| real_counters(&real.state))
        .fold(Counters::default(), Counters::plus);
    Counters {
        conns: service.stats.conns.load(Relaxed),
        ..traffic
    }
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
            let points = std::iter::once((None, service_counters(service))).chain(
                service
                    .reals
                    .iter()
                    .map(|real| (Some(real.address), real_counters(&real.state))),
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
