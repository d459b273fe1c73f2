//! The proxy data plane: TCP and UDP flows terminated by lbd and re-originated to the real
//! server the scheduler picks.
//!
//! Each worker thread runs its own single-threaded runtime with its own `SO_REUSEPORT` socket
//! per service ([`worker`]), so a flow lives on one thread from accept to close. Per flow, the
//! data plane reads the current [`ServiceTable`](crate::table::ServiceTable) snapshot once, and
//! updates per-real counters with atomic adds; it takes no lock shared between workers. It does
//! not parse config or decide health.

pub mod flows;
mod pool;
mod relay;
pub mod socket;
mod stream;
mod tcp;
mod udp;
pub mod worker;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use self::flows::FlowGuard;
pub use self::flows::FlowTracker;
use crate::{
    clock::Millis,
    config::ServiceKey,
    sched::{Flow, persistence::TemplateHold},
    table::{FlowBinding, Service, TableHandle},
};

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The service table.
    pub table: Arc<TableHandle>,
    /// Flows in progress, for draining.
    pub flows: FlowTracker,
}

/// A flow bound to the real chosen for it.
#[derive(Debug)]
struct Scheduled {
    /// Where the flow goes.
    address: SocketAddr,
    /// Its place in the real's ActiveConn / InActConn.
    binding: FlowBinding,
    /// Its hold on the client's persistence template, if the service is persistent.
    _template: Option<TemplateHold>,
}

impl Scheduled {
    /// Records that the real refused or did not answer. When the service checks its reals,
    /// the checker hears of it at once (`fall` failed connects in a row take the real down);
    /// otherwise the real enters passive back-off. Returns the real's consecutive failures.
    fn failed(&self, table: &TableHandle, service: &ServiceKey, now: Millis) -> u32 {
        let snapshot = table.load();
        let real = snapshot
            .service(service)
            .and_then(|service| service.real(self.address));
        match real.and_then(|real| real.check.as_ref()) {
            Some(check) => {
                let streak = self.binding.real().count_failure();
                check.note_passive_failure(streak);
                streak
            }
            None => self.binding.real().record_failure(now),
        }
    }
}

/// Schedules `flow` in `service` (through its persistence templates, if any). When no real can
/// take it, the flow goes to the sorry server if there is one; otherwise it is refused:
/// `None`, counted as unavailable.
fn schedule(service: &Service, flow: &Flow) -> Option<Scheduled> {
    let chosen = match &service.persistence {
        Some(persistence) => persistence
            .schedule(
                &service.reals,
                |address| service.position(address),
                service.scheduler.as_ref(),
                flow,
            )
            .map(|(index, hold)| (index, Some(hold))),
        None => service
            .scheduler
            .pick(&service.reals, flow)
            .map(|index| (index, None)),
    };
    let Some((index, template)) = chosen else {
        if let Some(sorry) = &service.sorry {
            return Some(Scheduled {
                address: sorry.address,
                binding: sorry.state.bind(),
                _template: None,
            });
        }
        service.stats.unavailable.fetch_add(1, Relaxed);
        tracing::debug!(service = service.name(), client = %flow.client, "no real server available");
        return None;
    };
    let real = &service.reals[index];
    Some(Scheduled {
        address: real.address,
        binding: real.state.bind(),
        _template: template,
    })
}
