//! The proxy data plane: TCP and UDP flows terminated by lbd and re-originated to the real
//! server the scheduler picks.
//!
//! Each worker thread runs its own single-threaded runtime with its own `SO_REUSEPORT` socket
//! per service ([`worker`]), so a flow lives on one thread from accept to close. Per flow, the
//! data plane reads the current [`ServiceTable`](crate::table::ServiceTable) snapshot once, and
//! updates per-real counters with atomic adds; it takes no lock shared between workers. It does
//! not parse config or decide health.

pub(crate) mod flows;
mod linger;
mod pool;
mod relay;
pub(crate) mod socket;
mod stream;
mod tcp;
mod udp;
pub(crate) mod worker;

use std::sync::Arc;

use self::flows::FlowGuard;
pub(crate) use self::flows::FlowTracker;
use crate::{
    clock::Millis,
    config::ServiceKey,
    table::{Scheduled, TableHandle},
};

/// What every worker shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// The service table.
    pub table: Arc<TableHandle>,
    /// Flows in progress, for draining.
    pub flows: FlowTracker,
    /// The descriptors flows may hold; a flow takes its share before it opens a socket.
    pub descriptors: Arc<crate::host::Descriptors>,
    /// Where finished flows are logged (`access_log:`).
    pub access_log: crate::access_log::AccessLog,
}

/// Passive failure reporting for a flow's real.
trait Failed {
    fn failed(&self, table: &TableHandle, service: &ServiceKey, now: Millis) -> u32;
}

impl Failed for Scheduled {
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
